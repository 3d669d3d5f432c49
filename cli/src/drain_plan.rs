//! Which pods `shturman drain` evicts, skips or refuses, as kubectl's drain
//! filters decide it: DaemonSet-managed pods, mirror pods, pods with local
//! (emptyDir) storage, and pods no controller manages. Pure; tested alone.

use serde_json::Value;

use crate::value::{at, list_at, str_at};

/// The flags that loosen the filters.
#[derive(Clone, Copy, Debug, Default)]
pub struct DrainOptions {
    pub ignore_daemonsets: bool,
    pub delete_emptydir_data: bool,
    pub force: bool,
}

/// A pod to evict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    fn of(pod: &Value) -> PodRef {
        PodRef {
            namespace: str_at(pod, "metadata.namespace").to_string(),
            name: str_at(pod, "metadata.name").to_string(),
            uid: str_at(pod, "metadata.uid").to_string(),
        }
    }

    /// `default/web-abc12`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What drain will do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainPlan {
    /// Pods to evict, in listing order.
    pub evict: Vec<PodRef>,
    /// `Warning: …` lines (what the flags let through or skip).
    pub warnings: Vec<String>,
    /// Reasons the drain cannot go on; empty when it can.
    pub errors: Vec<String>,
}

/// The kinds of problem a pod can have, in kubectl's filter order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Problem {
    DaemonSet,
    LocalStorage,
    Unmanaged,
}

impl Problem {
    const ALL: [Problem; 3] = [Problem::DaemonSet, Problem::LocalStorage, Problem::Unmanaged];

    fn fatal(self) -> &'static str {
        match self {
            Problem::DaemonSet => "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)",
            Problem::LocalStorage => "Pods with local storage (use --delete-emptydir-data to override)",
            Problem::Unmanaged => "Pods that declare no controller (use --force to override)",
        }
    }

    fn warning(self) -> &'static str {
        match self {
            Problem::DaemonSet => "ignoring DaemonSet-managed Pods",
            Problem::LocalStorage => "deleting Pods with local storage",
            Problem::Unmanaged => "deleting Pods that declare no controller",
        }
    }
}

/// The pod's controlling owner reference, if any.
fn controller(pod: &Value) -> Option<&Value> {
    list_at(pod, "metadata.ownerReferences")
        .iter()
        .find(|o| at(o, "controller").as_bool() == Some(true))
}

fn finished(pod: &Value) -> bool {
    matches!(str_at(pod, "status.phase"), "Succeeded" | "Failed")
}

/// Decides what happens to each pod on the node.
pub fn plan(pods: &[Value], opts: DrainOptions) -> DrainPlan {
    let mut fatal: Vec<(Problem, Vec<String>)> = Vec::new();
    let mut warned: Vec<(Problem, Vec<String>)> = Vec::new();
    let note = |list: &mut Vec<(Problem, Vec<String>)>, p: Problem, key: String| match list
        .iter_mut()
        .find(|(q, _)| *q == p)
    {
        Some((_, keys)) => keys.push(key),
        None => list.push((p, vec![key])),
    };
    let mut out = DrainPlan::default();
    for pod in pods {
        // Not an object (a malformed listing), or a mirror pod: the node
        // itself owns those, and deleting them does nothing.
        if !pod.is_object()
            || at(pod, "metadata.annotations")
                .get("kubernetes.io/config.mirror")
                .is_some()
        {
            continue;
        }
        let r = PodRef::of(pod);
        let owner = controller(pod);
        if owner.is_some_and(|o| str_at(o, "kind") == "DaemonSet") {
            if opts.ignore_daemonsets {
                note(&mut warned, Problem::DaemonSet, r.key());
            } else {
                note(&mut fatal, Problem::DaemonSet, r.key());
            }
            continue;
        }
        let mut refused = false;
        let empty_dir = list_at(pod, "spec.volumes")
            .iter()
            .any(|v| !at(v, "emptyDir").is_null());
        if empty_dir && !finished(pod) {
            if opts.delete_emptydir_data {
                note(&mut warned, Problem::LocalStorage, r.key());
            } else {
                note(&mut fatal, Problem::LocalStorage, r.key());
                refused = true;
            }
        }
        if !refused && owner.is_none() && !finished(pod) {
            if opts.force {
                note(&mut warned, Problem::Unmanaged, r.key());
            } else {
                note(&mut fatal, Problem::Unmanaged, r.key());
                refused = true;
            }
        }
        if !refused {
            out.evict.push(r);
        }
    }
    for p in Problem::ALL {
        if let Some((_, keys)) = fatal.iter().find(|(q, _)| *q == p) {
            out.errors
                .push(format!("cannot delete {}: {}", p.fatal(), keys.join(", ")));
        }
        if let Some((_, keys)) = warned.iter().find(|(q, _)| *q == p) {
            out.warnings.push(format!("{}: {}", p.warning(), keys.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, owner_kind: Option<&str>, empty_dir: bool) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running"},
        });
        if let Some(kind) = owner_kind {
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": "o", "uid": "o-1", "controller": true}]);
        }
        if empty_dir {
            p["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
        }
        p
    }

    fn names(plan: &DrainPlan) -> Vec<String> {
        plan.evict.iter().map(PodRef::key).collect()
    }

    #[test]
    fn managed_pods_are_evicted_unmanaged_refused() {
        let pods = vec![pod("web-abc12", Some("ReplicaSet"), false), pod("x", None, false)];
        let p = plan(&pods, DrainOptions::default());
        assert_eq!(names(&p), ["default/web-abc12"]);
        assert_eq!(
            p.errors,
            ["cannot delete Pods that declare no controller (use --force to override): default/x"]
        );
        let forced = plan(
            &pods,
            DrainOptions {
                force: true,
                ..DrainOptions::default()
            },
        );
        assert!(forced.errors.is_empty());
        assert_eq!(names(&forced), ["default/web-abc12", "default/x"]);
        assert_eq!(
            forced.warnings,
            ["deleting Pods that declare no controller: default/x"]
        );
        assert_eq!(forced.evict[1].uid, "u-x");
    }

    #[test]
    fn daemonsets_and_local_storage() {
        let pods = vec![
            pod("ds-1", Some("DaemonSet"), false),
            pod("cache", Some("ReplicaSet"), true),
            pod("lone", None, true),
        ];
        let p = plan(&pods, DrainOptions::default());
        assert!(p.evict.is_empty());
        assert_eq!(
            p.errors,
            [
                "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): default/ds-1",
                "cannot delete Pods with local storage (use --delete-emptydir-data to override): default/cache, default/lone",
            ]
        );
        let all = DrainOptions {
            ignore_daemonsets: true,
            delete_emptydir_data: true,
            force: true,
        };
        let p = plan(&pods, all);
        assert!(p.errors.is_empty());
        assert_eq!(names(&p), ["default/cache", "default/lone"]);
        assert_eq!(
            p.warnings,
            [
                "ignoring DaemonSet-managed Pods: default/ds-1",
                "deleting Pods with local storage: default/cache, default/lone",
                "deleting Pods that declare no controller: default/lone",
            ]
        );
    }

    #[test]
    fn finished_and_mirror_pods() {
        let mut done = pod("job-x", None, true);
        done["status"]["phase"] = json!("Succeeded");
        let mut mirror = pod("static", None, false);
        mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "abc"});
        let p = plan(&[done, mirror, json!(null)], DrainOptions::default());
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        // A malformed entry is skipped, not a panic.
        assert_eq!(names(&p), ["default/job-x"]);
    }
}
