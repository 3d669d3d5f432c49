//! The `pod-template-hash`: FNV-32a over the template's canonical JSON (and
//! the collision count, as Kubernetes' `ComputeHash` adds it), written in
//! Kubernetes' `SafeEncodeString` alphabet, e.g. `7d4b9c8f6`.

use shturman_api::apps::PodTemplateSpec;

use super::util::POD_TEMPLATE_HASH;
use crate::controllers::replicaset::SAFE_ALPHABET;

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

fn fnv32a(hash: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(hash, |h, b| (h ^ u32::from(*b)).wrapping_mul(FNV_PRIME))
}

/// The hash of a pod template, ignoring any `pod-template-hash` label on it,
/// so a ReplicaSet's template hashes like the deployment template it came from.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    compute_hash(template, None)
}

/// [`template_hash`] with the deployment's `status.collisionCount` mixed in
/// (as 8 bytes, the count little-endian), which moves a colliding name.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut t = template.clone();
    t.metadata.labels.remove(POD_TEMPLATE_HASH);
    // Serializing plain structs and BTreeMaps cannot fail; an empty body
    // would still give a stable (if shared) hash.
    let json = serde_json::to_vec(&t).unwrap_or_default();
    let mut h = fnv32a(FNV_OFFSET, &json);
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&c.to_le_bytes());
        h = fnv32a(h, &bytes);
    }
    safe_encode(&h.to_string())
}

/// Kubernetes' `rand.SafeEncodeString`: each byte mapped into the alphabet.
fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            let i = usize::from(b) % SAFE_ALPHABET.len();
            char::from(SAFE_ALPHABET.get(i).copied().unwrap_or(b'x'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv32a_matches_reference_vectors() {
        assert_eq!(fnv32a(FNV_OFFSET, b""), 0x811c_9dc5);
        assert_eq!(fnv32a(FNV_OFFSET, b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(FNV_OFFSET, b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn safe_encoding_maps_digits_like_kubernetes() {
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn hash_is_stable_ignores_the_hash_label_and_moves_on_collision() {
        let mut t = PodTemplateSpec::default();
        t.metadata.labels.insert("app".into(), "web".into());
        let h = template_hash(&t);
        assert_eq!(h, template_hash(&t.clone()));
        assert!(h.chars().all(|c| "456789bcdf".contains(c)), "{h}");
        let mut labelled = t.clone();
        labelled
            .metadata
            .labels
            .insert(POD_TEMPLATE_HASH.into(), h.clone());
        assert_eq!(template_hash(&labelled), h);
        assert_ne!(compute_hash(&t, Some(1)), h);
        assert_ne!(compute_hash(&t, Some(1)), compute_hash(&t, Some(2)));
        t.metadata.labels.insert("app".into(), "api".into());
        assert_ne!(template_hash(&t), h);
    }
}
