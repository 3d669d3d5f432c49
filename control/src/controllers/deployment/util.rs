//! Kubernetes' `deployment/util`: annotation keys, revisions, the
//! desired/max replicas annotations, maxSurge/maxUnavailable fenceposts and
//! template equality ignoring the hash label.

use std::collections::BTreeMap;

use shturman_api::apps::{Deployment, DeploymentStrategyType, PodTemplateSpec, ReplicaSet};
use shturman_api::intstr::IntOrString;
use shturman_api::meta::ObjectMeta;

/// The label (and RS name suffix) that ties a ReplicaSet to one template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The revision of a ReplicaSet (and of its deployment: the current one).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a reused (rolled-back-to) ReplicaSet had, comma-separated.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The deployment's replicas + maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Why a revision was made; copied from the deployment to its ReplicaSets.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// Kubernetes keeps the revision-history annotation under this many characters.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// The deployment's replicas after defaults, never negative.
pub fn desired_replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1).max(0)
}

/// A ReplicaSet's `spec.replicas`, never negative.
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0).max(0)
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec.strategy_type() == DeploymentStrategyType::RollingUpdate
}

/// Kubernetes' `ResolveFenceposts`: surge rounds up, unavailable rounds down,
/// and when both come to 0 unavailable becomes 1. Unset means 25%; a value
/// that is not a number or percentage counts as 0.
fn fenceposts(d: &Deployment) -> (i32, i32) {
    let desired = desired_replicas(d);
    let ru = d.spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
    let default = IntOrString::from("25%");
    let scaled = |v: Option<&IntOrString>, up: bool| {
        v.unwrap_or(&default)
            .scaled_value(desired, up)
            .unwrap_or(0)
            .max(0)
    };
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), true);
    let mut unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// How many pods above `replicas` a rolling update may run (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

/// How many of `replicas` may be unavailable during a rolling update (0 for
/// Recreate or 0 replicas; never more than `replicas`).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let desired = desired_replicas(d);
    if !is_rolling(d) || desired == 0 {
        return 0;
    }
    fenceposts(d).1.min(desired)
}

/// Whether the deployment has a progress deadline (unset or `i32::MAX`: none).
pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec.progress_deadline_seconds.is_some_and(|s| s != i32::MAX)
}

/// Two templates are the same revision when equal apart from the hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        t.metadata.labels.remove(POD_TEMPLATE_HASH);
        t
    };
    strip(a) == strip(b)
}

/// The revision annotation: 0 when absent, `None` when not a number.
pub fn revision(meta: &ObjectMeta) -> Option<i64> {
    match meta.annotations.get(REVISION) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

/// The highest revision among `rss` (unreadable revisions are skipped).
pub fn max_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rss.into_iter()
        .filter_map(|rs| revision(&rs.metadata))
        .max()
        .unwrap_or(0)
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.get(key).and_then(|v| v.parse().ok())
}

/// The `desired-replicas` annotation, if readable.
pub fn desired_annotation(rs: &ReplicaSet) -> Option<i32> {
    int_annotation(rs, DESIRED_REPLICAS)
}

/// The `max-replicas` annotation, if readable.
pub fn max_annotation(rs: &ReplicaSet) -> Option<i32> {
    int_annotation(rs, MAX_REPLICAS)
}

/// Whether the replicas annotations differ from `desired` / `max`.
pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    let a = &rs.metadata.annotations;
    a.get(DESIRED_REPLICAS) != Some(&desired.to_string()) || a.get(MAX_REPLICAS) != Some(&max.to_string())
}

/// Sets the replicas annotations; whether anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    if !replicas_annotations_need_update(rs, desired, max) {
        return false;
    }
    let a = &mut rs.metadata.annotations;
    a.insert(DESIRED_REPLICAS.into(), desired.to_string());
    a.insert(MAX_REPLICAS.into(), max.to_string());
    true
}

fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// Copies the deployment's own annotations (e.g. change-cause) onto the RS.
fn copy_deployment_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    for (k, v) in &d.metadata.annotations {
        if skip_copy(k) || rs.metadata.annotations.get(k) == Some(v) {
            continue;
        }
        rs.metadata.annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Kubernetes' `SetNewReplicaSetAnnotations`: copy the deployment's
/// annotations, raise the revision to `new_revision` (keeping the old one in
/// the revision history when the RS is reused by a rollback), and for an RS
/// about to be created set the replicas annotations. Whether anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
    let mut changed = copy_deployment_annotations(d, rs);
    let old = rs.metadata.annotations.get(REVISION).cloned();
    let old_revision = match old.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            // An unreadable revision is left alone, as Kubernetes does.
            Err(_) => return changed,
        },
    };
    if old_revision < new_revision {
        let annotations = &mut rs.metadata.annotations;
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = annotations.get(REVISION_HISTORY).cloned().unwrap_or_default();
            let mut entries: Vec<&str> = history.split(',').filter(|s| !s.is_empty()).collect();
            entries.push(&old);
            while entries.join(",").len() > MAX_REVISION_HISTORY_CHARS && entries.len() > 1 {
                entries.remove(0);
            }
            let joined = entries.join(",");
            annotations.insert(REVISION_HISTORY.into(), joined);
        }
    }
    if !exists {
        let desired = desired_replicas(d);
        changed |= set_replicas_annotations(rs, desired, desired.saturating_add(max_surge(d)));
    }
    changed
}

/// `labels` with `pod-template-hash: hash` added.
pub fn with_hash_label(labels: &BTreeMap<String, String>, hash: &str) -> BTreeMap<String, String> {
    let mut l = labels.clone();
    l.insert(POD_TEMPLATE_HASH.into(), hash.into());
    l
}
