//! The pod manager's pure core: compare what the node must run (the desired
//! set from the control plane or the journal) with what it runs, and say what
//! to do. No I/O, no clock; the executor in [`crate::manager`] applies it.
//!
//! A pod is unchanged when it has the same uid and the same spec hash: a new
//! resourceVersion (a status write, a label change) restarts nothing.
//!
//! A node's [`PodSet`] prunes the desired set: [`outside_set`] says which
//! held pods were deleted (perhaps while the node was away), [`awaited`]
//! which listed pods have not arrived yet.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};
use shturman_api::core::Pod;
use shturman_api::wire::{DesiredPod, PodSet};

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

/// The held pods `set` says to drop: not listed with their uid, and not
/// newer than the set (a set computed before a pod was sent to the node
/// says nothing about it; the next set will).
pub fn outside_set(set: &PodSet, held: &BTreeMap<PodKey, DesiredPod>) -> Vec<PodKey> {
    held.iter()
        .filter(|(k, d)| {
            let m = &d.pod.metadata;
            let uid = m.uid.as_deref().unwrap_or_default();
            !set.contains(&k.namespace, &k.name, uid) && set.covers(m.resource_version.as_deref())
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The pods `set` lists that the node does not hold (or holds with another
/// uid): their own messages are still to come.
pub fn awaited(set: &PodSet, held: &BTreeMap<PodKey, DesiredPod>) -> Vec<PodKey> {
    set.pods
        .iter()
        .map(|r| PodKey::new(r.namespace.clone(), r.name.clone()))
        .zip(&set.pods)
        .filter(|(k, r)| held.get(k).and_then(|d| d.pod.metadata.uid.as_deref()) != Some(r.uid.as_str()))
        .map(|(k, _)| k)
        .collect()
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

    fn versioned(name: &str, uid: &str, rv: &str) -> DesiredPod {
        let mut d = pod(name, uid, "x");
        d.pod.metadata.resource_version = Some(rv.into());
        d
    }

    fn pod_set(revision: u64, pods: &[(&str, &str)]) -> PodSet {
        PodSet {
            revision,
            pods: pods
                .iter()
                .map(|(name, uid)| shturman_api::wire::PodRef {
                    namespace: "default".into(),
                    name: (*name).into(),
                    uid: (*uid).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_pod_set_drops_what_it_covers_and_lacks() {
        let held = set(&[
            versioned("kept", "1", "10"),
            versioned("deleted", "2", "11"),
            versioned("reborn", "3", "12"),
            versioned("newer-than-set", "4", "99"),
        ]);
        let ps = pod_set(50, &[("kept", "1"), ("reborn", "30"), ("coming", "5")]);
        assert_eq!(
            outside_set(&ps, &held),
            vec![key("deleted"), key("reborn")],
            "by uid; a pod newer than the set stays"
        );
        assert_eq!(awaited(&ps, &held), vec![key("reborn"), key("coming")]);
        // The empty set of an up-to-date control plane drops everything it covers.
        assert_eq!(outside_set(&pod_set(99, &[]), &held).len(), 4);
        // A set listing everything drops nothing and waits for nothing.
        let all = pod_set(
            99,
            &[
                ("kept", "1"),
                ("deleted", "2"),
                ("reborn", "3"),
                ("newer-than-set", "4"),
            ],
        );
        assert!(outside_set(&all, &held).is_empty());
        assert!(awaited(&all, &held).is_empty());
        // With the drops applied, the plan stops exactly those pods.
        let mut desired = held.clone();
        for k in outside_set(&ps, &held) {
            desired.remove(&k);
        }
        let actual: BTreeMap<PodKey, RunningPod> = held
            .iter()
            .map(|(k, d)| (k.clone(), RunningPod::of(&d.pod)))
            .collect();
        assert_eq!(
            plan(&desired, &actual),
            vec![PodAction::Stop(key("deleted")), PodAction::Stop(key("reborn"))]
        );
    }

    #[test]
    fn spec_hash_is_stable_and_sensitive() {
        let a = pod("a", "1", "x");
        assert_eq!(spec_hash(&a.pod), spec_hash(&a.clone().pod));
        assert_eq!(spec_hash(&a.pod).len(), 32);
        assert_ne!(spec_hash(&a.pod), spec_hash(&pod("a", "1", "y").pod));
    }
}
