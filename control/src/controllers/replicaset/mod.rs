//! The ReplicaSet controller's decision core: given a ReplicaSet and the pods
//! it owns or could adopt, decide which pods to adopt, release, create and
//! delete, and what its status is — as Kubernetes' `replica_set.go` does.

pub mod pods;
pub mod run;

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use shturman_api::apps::{ReplicaSet, ReplicaSetStatus};
use shturman_api::core::{Pod, PodPhase};
use shturman_api::meta::{ObjectMeta, OwnerReference};

use super::EventRecord;

/// Kubernetes' alphabet for generated suffixes (no vowels, no look-alikes).
pub const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// A generated name's prefix is cut to this length (63 minus a 5-char suffix).
const MAX_GENERATED_PREFIX: usize = 58;
/// At most this many pods are created or deleted in one pass (Kubernetes' burstReplicas).
pub const BURST_REPLICAS: usize = 500;

/// What the executor does, in order; stop at the first failure and requeue.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Take or give up ownership of an existing pod.
    PatchOwner {
        pod: String,
        pod_uid: Option<String>,
        change: OwnerChange,
    },
    /// Create this pod (its name is already chosen).
    CreatePod(Box<Pod>),
    /// Delete a pod, with its uid as a precondition when known.
    DeletePod { name: String, uid: Option<String> },
    /// Write the ReplicaSet's status (only emitted when it changed).
    UpdateStatus(ReplicaSetStatus),
    /// Record an event on the ReplicaSet.
    Event(EventRecord),
    /// Look again after this long (a pod becomes available after minReadySeconds).
    RequeueAfter(Duration),
}

/// An ownership change for [`Action::PatchOwner`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerChange {
    /// Add this controller reference (the pod is an orphan matching the selector).
    Adopt(OwnerReference),
    /// Remove the controller reference with this owner uid (labels no longer match).
    Release { owner_uid: String },
}

/// Supplies the random suffix of new pod names (5 chars of [`SAFE_ALPHABET`]).
pub trait NameSuffix {
    fn suffix(&mut self) -> String;
}

/// Suffixes from a random number generator.
pub struct RandomSuffix<R: Rng>(pub R);

impl<R: Rng> NameSuffix for RandomSuffix<R> {
    fn suffix(&mut self) -> String {
        (0..5)
            .map(|_| {
                let i = self.0.random_range(0..SAFE_ALPHABET.len());
                char::from(SAFE_ALPHABET.get(i).copied().unwrap_or(b'x'))
            })
            .collect()
    }
}

impl<F: FnMut() -> String> NameSuffix for F {
    fn suffix(&mut self) -> String {
        self()
    }
}

/// The controller reference a ReplicaSet puts on its pods.
pub fn controller_ref(rs: &ReplicaSet) -> Option<OwnerReference> {
    let uid = rs.metadata.uid.clone().filter(|u| !u.is_empty())?;
    Some(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.metadata.name().to_string(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Plans one reconcile pass of `rs`. `pods` are the pods in its namespace it
/// owns or could adopt (others are ignored); `names` supplies pod name suffixes.
pub fn plan<P: std::borrow::Borrow<Pod>>(
    rs: &ReplicaSet,
    pods: &[P],
    now: DateTime<Utc>,
    names: &mut dyn NameSuffix,
) -> Vec<Action> {
    // Borrowed, never copied: the executor hands in its cache's shared pods.
    let pods: Vec<&Pod> = pods.iter().map(std::borrow::Borrow::borrow).collect();
    let mut actions = Vec::new();
    let uid = rs.metadata.uid.as_deref().unwrap_or("");
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let selector = &rs.spec.selector;
    // An empty selector would claim every pod in the namespace: never act on it.
    let can_claim = !uid.is_empty() && !selector.is_empty();

    // Claim: keep owned pods that match, release those that don't, adopt orphans.
    let mut claimed: Vec<&Pod> = Vec::new();
    for pod in pods
        .iter()
        .filter(|p| p.metadata.namespace() == rs.metadata.namespace())
    {
        match pods::controller_of(pod) {
            Some(r) if r.uid == uid && !uid.is_empty() => {
                if !pods::is_active(pod) {
                    if pod.phase() == PodPhase::Failed && pod.metadata.deletion_timestamp.is_none() {
                        // A failed pod is replaced; delete it so it does not pile up.
                        push_delete(&mut actions, pod);
                    }
                } else if selector.matches(&pod.metadata.labels) && !selector.is_empty() {
                    claimed.push(pod);
                } else if !deleting {
                    actions.push(Action::PatchOwner {
                        pod: pod.metadata.name().to_string(),
                        pod_uid: pod.metadata.uid.clone(),
                        change: OwnerChange::Release {
                            owner_uid: uid.to_string(),
                        },
                    });
                }
            }
            Some(_) => {}
            None => {
                if can_claim
                    && !deleting
                    && pods::is_active(pod)
                    && selector.matches(&pod.metadata.labels)
                    && let Some(owner) = controller_ref(rs)
                {
                    actions.push(Action::PatchOwner {
                        pod: pod.metadata.name().to_string(),
                        pod_uid: pod.metadata.uid.clone(),
                        change: OwnerChange::Adopt(owner),
                    });
                    claimed.push(pod);
                }
            }
        }
    }

    let desired = usize::try_from(rs.spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    if can_claim && !deleting {
        if claimed.len() < desired {
            let missing = (desired - claimed.len()).min(BURST_REPLICAS);
            let mut taken: Vec<String> = pods.iter().map(|p| p.metadata.name().to_string()).collect();
            for _ in 0..missing {
                let Some(pod) = new_pod(rs, names, &taken) else {
                    break;
                };
                let name = pod.metadata.name().to_string();
                taken.push(name.clone());
                actions.push(Action::CreatePod(Box::new(pod)));
                actions.push(Action::Event(EventRecord::normal(
                    "SuccessfulCreate",
                    format!("Created pod: {name}"),
                )));
            }
        } else if claimed.len() > desired {
            let extra = (claimed.len() - desired).min(BURST_REPLICAS);
            for pod in pods::pick_for_deletion(&claimed, extra) {
                push_delete(&mut actions, pod);
            }
        }
    }

    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    let status = compute_status(rs, &claimed, now);
    if rs.status.as_ref() != Some(&status) {
        actions.push(Action::UpdateStatus(status));
    }
    if let Some(after) = next_availability(&claimed, min_ready, now) {
        actions.push(Action::RequeueAfter(after));
    }
    actions
}

fn push_delete(actions: &mut Vec<Action>, pod: &Pod) {
    let name = pod.metadata.name().to_string();
    actions.push(Action::DeletePod {
        name: name.clone(),
        uid: pod.metadata.uid.clone(),
    });
    actions.push(Action::Event(EventRecord::normal(
        "SuccessfulDelete",
        format!("Deleted pod: {name}"),
    )));
}

/// A pod stamped from the template: labels and annotations from the template,
/// a `{rs}-{suffix}` name (and that prefix as `generateName`), the controller
/// reference. `None` when no fresh name could be found.
fn new_pod(rs: &ReplicaSet, names: &mut dyn NameSuffix, taken: &[String]) -> Option<Pod> {
    let owner = controller_ref(rs)?;
    let mut prefix = format!("{}-", rs.metadata.name());
    if prefix.len() > MAX_GENERATED_PREFIX {
        let mut cut = MAX_GENERATED_PREFIX;
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix.truncate(cut);
    }
    let name = (0..16)
        .map(|_| format!("{prefix}{}", names.suffix()))
        .find(|n| !taken.contains(n))?;
    let template = &rs.spec.template;
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(name),
            generate_name: Some(prefix),
            namespace: rs.metadata.namespace.clone(),
            labels: template.metadata.labels.clone(),
            annotations: template.metadata.annotations.clone(),
            finalizers: template.metadata.finalizers.clone(),
            owner_references: vec![owner],
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
        ..Default::default()
    };
    shturman_api::meta::Object::set_type_meta(&mut pod);
    Some(pod)
}

/// Kubernetes' `calculateStatus` over the claimed active pods.
pub fn compute_status(rs: &ReplicaSet, claimed: &[&Pod], now: DateTime<Utc>) -> ReplicaSetStatus {
    let template_labels = &rs.spec.template.metadata.labels;
    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    let count =
        |f: &dyn Fn(&Pod) -> bool| i32::try_from(claimed.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX);
    let old = rs.status.clone().unwrap_or_default();
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(count(&|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        })),
        ready_replicas: Some(count(&|p| pods::is_ready(p))),
        available_replicas: Some(count(&|p| pods::is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation.or(old.observed_generation),
        conditions: old.conditions,
    }
}

/// How long until the next ready pod becomes available, if one is waiting.
fn next_availability(claimed: &[&Pod], min_ready: i32, now: DateTime<Utc>) -> Option<Duration> {
    claimed
        .iter()
        .filter_map(|p| pods::available_at(p, min_ready).flatten())
        .filter(|at| *at >= now)
        .min()
        .map(|at| {
            let wait = (at - now).to_std().unwrap_or_default();
            // Availability needs strictly more than minReadySeconds.
            wait + Duration::from_secs(1)
        })
}

#[cfg(test)]
mod tests;
