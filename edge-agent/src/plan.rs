//! The pod manager's pure core: compare what the node must run (the desired
//! set from the control plane or the journal) with what it runs, and say what
//! to do. No I/O, no clock; the executor in [`crate::manager`] applies it.
//!
//! A pod is unchanged when it has the same uid and the same spec hash: a new
//! resourceVersion (a status write, a label change) restarts nothing.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};
use shturman_api::core::Pod;
use shturman_api::wire::DesiredPod;

use crate::sign::encode_hex;

/// A pod's namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> PodKey {
        PodKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a pod object (namespace `default` when unset).
    pub fn of(pod: &Pod) -> PodKey {
        let ns = pod.metadata.namespace();
        PodKey::new(if ns.is_empty() { "default" } else { ns }, pod.metadata.name())
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the plan needs to know about a pod the node runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunningPod {
    pub uid: String,
    pub spec_hash: String,
}

impl RunningPod {
    pub fn of(pod: &Pod) -> RunningPod {
        RunningPod {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            spec_hash: spec_hash(pod),
        }
    }
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodAction {
    /// Not running yet: start it.
    Start(PodKey),
    /// No longer desired: stop it.
    Stop(PodKey),
    /// Running, but as another pod (new uid) or another spec: stop, then start.
    Replace(PodKey),
}

/// A stable hash of the pod's spec (hex, 16 bytes): same spec, same hash,
/// across agent restarts and versions of serde_json (maps are ordered).
pub fn spec_hash(pod: &Pod) -> String {
    let text = serde_json::to_string(&pod.spec).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    encode_hex(&digest[..16])
}

/// What to do so that `actual` becomes `desired`: stops first (freeing
/// resources), then replacements, then starts, each in key order. A desired
/// pod already marked for deletion counts as not desired.
pub fn plan(desired: &BTreeMap<PodKey, DesiredPod>, actual: &BTreeMap<PodKey, RunningPod>) -> Vec<PodAction> {
    let wanted = |k: &PodKey| {
        desired
            .get(k)
            .filter(|d| d.pod.metadata.deletion_timestamp.is_none())
    };
    let mut stops = Vec::new();
    let mut replaces = Vec::new();
    let mut starts = Vec::new();
    for (key, running) in actual {
        match wanted(key) {
            None => stops.push(PodAction::Stop(key.clone())),
            Some(d) if RunningPod::of(&d.pod) != *running => replaces.push(PodAction::Replace(key.clone())),
            Some(_) => {}
        }
    }
    for key in desired.keys() {
        if wanted(key).is_some() && !actual.contains_key(key) {
            starts.push(PodAction::Start(key.clone()));
        }
    }
    stops.into_iter().chain(replaces).chain(starts).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::core::Container;
    use shturman_api::meta::Time;

    fn pod(name: &str, uid: &str, image: &str) -> DesiredPod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(uid.into());
        p.spec.containers.push(Container {
            name: "main".into(),
            image: image.into(),
            ..Container::default()
        });
        DesiredPod {
            pod: p,
            ..DesiredPod::default()
        }
    }

    fn set(pods: &[DesiredPod]) -> BTreeMap<PodKey, DesiredPod> {
        pods.iter().map(|d| (PodKey::of(&d.pod), d.clone())).collect()
    }

    fn running(pods: &[DesiredPod]) -> BTreeMap<PodKey, RunningPod> {
        pods.iter()
            .map(|d| (PodKey::of(&d.pod), RunningPod::of(&d.pod)))
            .collect()
    }

    fn key(name: &str) -> PodKey {
        PodKey::new("default", name)
    }

    #[test]
    fn empty_and_converged_do_nothing() {
        assert!(plan(&BTreeMap::new(), &BTreeMap::new()).is_empty());
        let pods = [pod("a", "1", "a.wasm"), pod("b", "2", "nginx")];
        assert!(plan(&set(&pods), &running(&pods)).is_empty());
    }

    #[test]
    fn new_version_of_the_same_pod_restarts_nothing() {
        let before = pod("a", "1", "a.wasm");
        let mut after = before.clone();
        after.pod.metadata.resource_version = Some("42".into());
        after.pod.metadata.labels.insert("x".into(), "y".into());
        assert!(plan(&set(&[after]), &running(&[before])).is_empty());
    }

    #[test]
    fn starts_stops_and_replaces_in_order() {
        let actual = running(&[
            pod("gone", "1", "x"),
            pod("respec", "2", "v1"),
            pod("reborn", "3", "x"),
        ]);
        let desired = set(&[
            pod("respec", "2", "v2"),
            pod("reborn", "4", "x"),
            pod("new", "5", "x"),
        ]);
        assert_eq!(
            plan(&desired, &actual),
            vec![
                PodAction::Stop(key("gone")),
                PodAction::Replace(key("reborn")),
                PodAction::Replace(key("respec")),
                PodAction::Start(key("new")),
            ]
        );
    }

    #[test]
    fn terminating_pods_stop_and_do_not_start() {
        let mut d = pod("a", "1", "x");
        d.pod.metadata.deletion_timestamp = Some(Time(chrono::Utc::now()));
        assert_eq!(
            plan(&set(&[d.clone()]), &running(&[d.clone()])),
            vec![PodAction::Stop(key("a"))]
        );
        assert!(plan(&set(&[d]), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn spec_hash_is_stable_and_sensitive() {
        let a = pod("a", "1", "x");
        assert_eq!(spec_hash(&a.pod), spec_hash(&a.clone().pod));
        assert_eq!(spec_hash(&a.pod).len(), 32);
        assert_ne!(spec_hash(&a.pod), spec_hash(&pod("a", "1", "y").pod));
    }
}
