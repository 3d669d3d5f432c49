//! What each node must run, pure: where a pod's [`DesiredPod`] goes, what
//! it carries (the pod without its status, and the ConfigMaps and Secrets
//! it refers to), a content hash so unchanged content is not sent again,
//! and each node's complete [`PodSet`].

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use shturman_api::core::{ConfigMap, Pod, PodSpec, Secret};
use shturman_api::wire::{DesiredPod, PodRef, PodSet, Topic, valid_segment};

/// The ConfigMaps and Secrets a pod refers to, by name, in its namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refs {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

/// Every ConfigMap and Secret `spec` refers to: volumes, `env[].valueFrom`,
/// `envFrom`, and `imagePullSecrets` (an OCI node needs them to pull).
pub fn references(spec: &PodSpec) -> Refs {
    let mut r = Refs::default();
    for v in &spec.volumes {
        if let Some(c) = &v.config_map {
            r.config_maps.insert(c.name.clone());
        }
        if let Some(s) = &v.secret {
            r.secrets.insert(s.secret_name.clone());
        }
    }
    for c in &spec.containers {
        for e in c.env.iter().filter_map(|e| e.value_from.as_ref()) {
            if let Some(k) = &e.config_map_key_ref {
                r.config_maps.insert(k.name.clone());
            }
            if let Some(k) = &e.secret_key_ref {
                r.secrets.insert(k.name.clone());
            }
        }
        for e in &c.env_from {
            if let Some(k) = &e.config_map_ref {
                r.config_maps.insert(k.name.clone());
            }
            if let Some(k) = &e.secret_ref {
                r.secrets.insert(k.name.clone());
            }
        }
    }
    for s in &spec.image_pull_secrets {
        r.secrets.insert(s.name.clone());
    }
    r
}

/// Where `pod` must be published: bound, not being deleted, and with names
/// that can stand in a topic. `None` means "nowhere" (withdraw it).
pub fn target(pod: &Pod) -> Option<Topic> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let node = pod.spec.node_name.as_deref()?;
    let (ns, name) = (pod.metadata.namespace(), pod.metadata.name());
    [node, ns, name]
        .iter()
        .all(|s| valid_segment(s))
        .then(|| Topic::DesiredPod {
            node: node.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
        })
}

/// The node `pod` must be published to (see [`target`]).
pub fn target_node(pod: &Pod) -> Option<&str> {
    target(pod).and(pod.spec.node_name.as_deref())
}

/// The complete set of pods `node` must run, out of `pods` (any pods: those
/// not targeted at `node` are left out), stamped with the store `revision`
/// the caller's cache was at *before* it read `pods`. Exactly the pods
/// [`target`] publishes to that node, sorted.
pub fn pod_set<'a>(node: &str, pods: impl IntoIterator<Item = &'a Pod>, revision: u64) -> PodSet {
    let mut refs: Vec<PodRef> = pods
        .into_iter()
        .filter(|p| target_node(p) == Some(node))
        .map(|p| PodRef {
            namespace: p.metadata.namespace().to_string(),
            name: p.metadata.name().to_string(),
            uid: p.metadata.uid.clone().unwrap_or_default(),
        })
        .collect();
    refs.sort();
    PodSet { revision, pods: refs }
}

/// The message for `pod`, with the referenced objects that exist (missing
/// ones are left out: the node reports the pod as waiting for them, as a
/// kubelet does). The pod's status is the node's to report, not sent.
pub fn desired_pod(
    pod: &Pod,
    config_map: impl Fn(&str) -> Option<ConfigMap>,
    secret: impl Fn(&str) -> Option<Secret>,
) -> DesiredPod {
    let refs = references(&pod.spec);
    let mut pod = pod.clone();
    pod.status = None;
    DesiredPod {
        pod,
        config_maps: refs.config_maps.iter().filter_map(|n| config_map(n)).collect(),
        secrets: refs.secrets.iter().filter_map(|n| secret(n)).collect(),
    }
}

/// A hash of what matters in `d`: its content without resource versions, so
/// a status-only write to the pod does not resend it.
pub fn content_hash(d: &DesiredPod) -> u64 {
    let mut d = d.clone();
    d.pod.metadata.resource_version = None;
    for c in &mut d.config_maps {
        c.metadata.resource_version = None;
    }
    for s in &mut d.secrets {
        s.metadata.resource_version = None;
    }
    let mut h = DefaultHasher::new();
    serde_json::to_string(&d).unwrap_or_default().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn web() -> Pod {
        pod(json!({
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "5"},
            "spec": {
                "nodeName": "pi-1",
                "imagePullSecrets": [{"name": "regcred"}],
                "volumes": [
                    {"name": "c", "configMap": {"name": "cfg"}},
                    {"name": "s", "secret": {"secretName": "tls", "optional": true}}
                ],
                "containers": [{
                    "name": "app", "image": "nginx",
                    "env": [
                        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "a"}}},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "env-s", "key": "b"}}},
                        {"name": "C", "value": "plain"}
                    ],
                    "envFrom": [{"configMapRef": {"name": "all-cm"}}, {"secretRef": {"name": "all-s"}}]
                }]
            },
            "status": {"phase": "Running"}
        }))
    }

    #[test]
    fn finds_every_reference() {
        let r = references(&web().spec);
        assert_eq!(
            r.config_maps.into_iter().collect::<Vec<_>>(),
            ["all-cm", "cfg", "env-cm"]
        );
        assert_eq!(
            r.secrets.into_iter().collect::<Vec<_>>(),
            ["all-s", "env-s", "regcred", "tls"]
        );
    }

    #[test]
    fn targets_bound_live_pods_only() {
        let p = web();
        assert_eq!(
            target(&p).unwrap().name(),
            "shturman/v1/nodes/pi-1/pods/default/web"
        );
        let mut unbound = p.clone();
        unbound.spec.node_name = None;
        assert_eq!(target(&unbound), None);
        let mut going = p.clone();
        going.metadata.deletion_timestamp = Some(shturman_api::meta::Time(chrono::Utc::now()));
        assert_eq!(target(&going), None);
    }

    #[test]
    fn pod_sets_hold_exactly_the_node_s_live_pods() {
        let mk = |name: &str, node: Option<&str>, uid: &str| {
            let mut p = web();
            p.metadata.name = Some(name.into());
            p.metadata.uid = Some(uid.into());
            p.spec.node_name = node.map(str::to_string);
            p
        };
        let mut going = mk("going", Some("pi-1"), "u4");
        going.metadata.deletion_timestamp = Some(shturman_api::meta::Time(chrono::Utc::now()));
        let pods = [
            mk("web-b", Some("pi-1"), "u2"),
            mk("web-a", Some("pi-1"), "u1"),
            mk("other", Some("pi-2"), "u3"),
            mk("pending", None, "u5"),
            mk("bad/name", Some("pi-1"), "u6"),
            going,
        ];
        let set = pod_set("pi-1", &pods, 42);
        assert_eq!(set.revision, 42);
        let names: Vec<_> = set
            .pods
            .iter()
            .map(|r| (r.name.as_str(), r.uid.as_str()))
            .collect();
        assert_eq!(names, [("web-a", "u1"), ("web-b", "u2")]);
        assert_eq!(set.pods[0].namespace, "default");
        assert!(pod_set("pi-9", &pods, 42).pods.is_empty());
        assert_eq!(pod_set("pi-2", &pods, 1).pods.len(), 1);
        assert_eq!(target_node(&pods[0]), Some("pi-1"));
        assert_eq!(target_node(&pods[5]), None);
    }

    #[test]
    fn carries_what_exists_without_status_and_hashes_stably() {
        let cm = |n: &str| {
            (n == "cfg").then(|| ConfigMap {
                metadata: shturman_api::meta::ObjectMeta {
                    name: Some(n.into()),
                    ..Default::default()
                },
                ..Default::default()
            })
        };
        let d = desired_pod(&web(), cm, |_| None);
        assert_eq!(d.config_maps.len(), 1);
        assert!(d.secrets.is_empty());
        assert!(d.pod.status.is_none());
        let mut other = web();
        other.metadata.resource_version = Some("9".into());
        other.status = None;
        assert_eq!(content_hash(&d), content_hash(&desired_pod(&other, cm, |_| None)));
        other.spec.containers[0].image = "nginx:2".into();
        assert_ne!(content_hash(&d), content_hash(&desired_pod(&other, cm, |_| None)));
    }
}
