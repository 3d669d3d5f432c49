//! Pod predicates both controllers share (active, ready, available after
//! `minReadySeconds`) and Kubernetes' ranking of which pods to delete first.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use shturman_api::core::{Pod, PodConditionType, PodPhase};
use shturman_api::meta::{OwnerReference, Time};

/// The annotation that lowers (or raises) a pod's rank for deletion.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Whether the pod counts towards replicas: not terminating, not finished.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !pod.phase().is_terminal()
}

/// Whether the pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| s.is_ready())
}

/// When the pod last became ready, if it is ready and says so.
pub fn ready_since(pod: &Pod) -> Option<Time> {
    let status = pod.status.as_ref()?;
    let cond = status.condition(PodConditionType::Ready)?;
    if cond.status.is_true() {
        cond.last_transition_time
    } else {
        None
    }
}

/// When a ready pod becomes available: `minReadySeconds` after it became
/// ready (immediately when 0). `None` when it is not ready, or ready without
/// a transition time while `minReadySeconds > 0` (never available, as in
/// Kubernetes).
pub fn available_at(pod: &Pod, min_ready_seconds: i32) -> Option<Option<DateTime<Utc>>> {
    if !is_ready(pod) {
        return None;
    }
    if min_ready_seconds <= 0 {
        return Some(None);
    }
    ready_since(pod).map(|t| Some(t.0 + Duration::seconds(i64::from(min_ready_seconds))))
}

/// Whether the pod has been ready for at least `minReadySeconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> bool {
    match available_at(pod, min_ready_seconds) {
        Some(None) => true,
        Some(Some(at)) => at < now,
        None => false,
    }
}

/// The pod's controller reference, if any.
pub fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata.controller_ref()
}

/// Whether the pod's controller is the object with `uid`.
pub fn is_controlled_by(pod: &Pod, uid: &str) -> bool {
    controller_of(pod).is_some_and(|r| r.uid == uid)
}

fn phase_ordinal(phase: PodPhase) -> u8 {
    match phase {
        PodPhase::Pending => 0,
        PodPhase::Unknown => 1,
        PodPhase::Running => 2,
        // Inactive pods never reach the ranking; keep them last if they do.
        PodPhase::Succeeded | PodPhase::Failed => 3,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .get(POD_DELETION_COST)
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.iter().map(|c| c.restart_count).max())
        .unwrap_or(0)
}

fn node(pod: &Pod) -> &str {
    pod.spec.node_name.as_deref().unwrap_or("")
}

/// Kubernetes' `afterOrZero`: a missing time sorts first, then the later one.
fn after_or_zero(a: Option<Time>, b: Option<Time>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x),
    }
}

/// Orders `a` before `b` when `a` should be deleted first (Kubernetes'
/// `ActivePodsWithRanks`): unassigned before assigned; Pending before Unknown
/// before Running; not ready before ready; lower deletion cost first; more
/// pods of the set on the same node first; ready more recently first; more
/// restarts first; newer first.
fn deletion_order(a: &Pod, b: &Pod, rank_a: usize, rank_b: usize) -> Ordering {
    let (na, nb) = (node(a), node(b));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    let by_phase = phase_ordinal(a.phase()).cmp(&phase_ordinal(b.phase()));
    if by_phase != Ordering::Equal {
        return by_phase;
    }
    let (ra, rb) = (is_ready(a), is_ready(b));
    if ra != rb {
        return if ra { Ordering::Greater } else { Ordering::Less };
    }
    let by_cost = deletion_cost(a).cmp(&deletion_cost(b));
    if by_cost != Ordering::Equal {
        return by_cost;
    }
    if rank_a != rank_b {
        return rank_b.cmp(&rank_a);
    }
    if ra && rb {
        let by_ready = after_or_zero(ready_since(a), ready_since(b));
        if by_ready != Ordering::Equal {
            return by_ready;
        }
    }
    let by_restarts = max_restarts(b).cmp(&max_restarts(a));
    if by_restarts != Ordering::Equal {
        return by_restarts;
    }
    after_or_zero(a.metadata.creation_timestamp, b.metadata.creation_timestamp)
        .then_with(|| a.metadata.name().cmp(b.metadata.name()))
}

/// The `count` pods to delete first out of `pods` (active pods of one set).
pub fn pick_for_deletion<'a>(pods: &[&'a Pod], count: usize) -> Vec<&'a Pod> {
    let mut on_node: BTreeMap<&str, usize> = BTreeMap::new();
    for p in pods {
        *on_node.entry(node(p)).or_default() += 1;
    }
    let mut ranked: Vec<(&Pod, usize)> = pods
        .iter()
        .map(|p| (*p, on_node.get(node(p)).copied().unwrap_or(0)))
        .collect();
    ranked.sort_by(|(a, ra), (b, rb)| deletion_order(a, b, *ra, *rb));
    ranked.into_iter().take(count).map(|(p, _)| p).collect()
}
