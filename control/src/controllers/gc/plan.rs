//! The garbage collector's decisions, pure: how an owner reference resolves,
//! what becomes of a dependent given its owners, what an owner being deleted
//! in the foreground still waits for, and the metadata patches that drop an
//! owner reference or a finalizer. No I/O; the executor feeds in what it
//! read (cache first, a live read to confirm absence).

use serde_json::{Value, json};
use shturman_api::meta::{DeletionPropagation, ObjectMeta, OwnerReference};

use crate::server::handlers::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};

/// What an owner reference points at, as Kubernetes' GC classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists (and is not waiting for its dependents to go).
    Solid,
    /// No object of that name, or one with another uid: the owner is gone.
    Dangling,
    /// The owner is being deleted in the foreground and waits for its
    /// dependents.
    WaitingForDependents,
}

/// Classifies one reference given the object found under the owner's name
/// (`None` when there is none).
pub fn owner_state(reference: &OwnerReference, found: Option<&ObjectMeta>) -> OwnerState {
    match found {
        Some(m) if m.uid.as_deref() == Some(reference.uid.as_str()) => {
            if waits_for_dependents(m) {
                OwnerState::WaitingForDependents
            } else {
                OwnerState::Solid
            }
        }
        _ => OwnerState::Dangling,
    }
}

/// Whether an object is being deleted and holds the `foregroundDeletion`
/// finalizer.
pub fn waits_for_dependents(m: &ObjectMeta) -> bool {
    m.deletion_timestamp.is_some() && m.finalizers.iter().any(|f| f == FOREGROUND_FINALIZER)
}

/// Whether an object is being deleted and holds the `orphan` finalizer.
pub fn orphans_dependents(m: &ObjectMeta) -> bool {
    m.deletion_timestamp.is_some() && m.finalizers.iter().any(|f| f == ORPHAN_FINALIZER)
}

/// What to do with a dependent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DependentVerdict {
    /// At least one owner remains; drop the references (by uid) to owners
    /// that are gone or waiting for their dependents (empty: nothing to do).
    Keep { drop_refs: Vec<String> },
    /// No owner remains: delete the dependent with this propagation.
    Delete(DeletionPropagation),
}

/// Decides a dependent's fate from its references and their states (same
/// order). `has_dependents`: whether the dependent owns anything itself, in
/// which case an owner deleting in the foreground makes it go in the
/// foreground too (so the owner waits for the whole tree).
pub fn dependent_verdict(
    refs: &[OwnerReference],
    states: &[OwnerState],
    has_dependents: bool,
) -> DependentVerdict {
    let solid = states.contains(&OwnerState::Solid);
    // A reference without a state (a caller bug) counts as solid: never
    // delete on what was not checked.
    if solid || refs.is_empty() || states.len() != refs.len() {
        let drop_refs = if states.len() == refs.len() {
            refs.iter()
                .zip(states)
                .filter(|(_, s)| **s != OwnerState::Solid)
                .map(|(r, _)| r.uid.clone())
                .collect()
        } else {
            Vec::new()
        };
        return DependentVerdict::Keep { drop_refs };
    }
    if has_dependents && states.contains(&OwnerState::WaitingForDependents) {
        DependentVerdict::Delete(DeletionPropagation::Foreground)
    } else {
        DependentVerdict::Delete(DeletionPropagation::Background)
    }
}

/// One dependent of an owner, as the foreground plan sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependentView<K> {
    /// Where the dependent lives (kind and key), for the executor.
    pub key: K,
    /// Its reference to the owner.
    pub reference: OwnerReference,
    /// Whether the dependent is being deleted already.
    pub deleting: bool,
}

/// What an owner deleting in the foreground does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForegroundPlan<K> {
    /// Dependents to delete (those not already going).
    pub delete: Vec<K>,
    /// Whether the owner may go now: no dependent with
    /// `blockOwnerDeletion: true` remains.
    pub release: bool,
}

/// Plans a foreground delete from the owner's remaining dependents.
pub fn foreground_plan<K: Clone>(dependents: &[DependentView<K>]) -> ForegroundPlan<K> {
    ForegroundPlan {
        delete: dependents
            .iter()
            .filter(|d| !d.deleting)
            .map(|d| d.key.clone())
            .collect(),
        release: !dependents
            .iter()
            .any(|d| d.reference.block_owner_deletion == Some(true)),
    }
}

/// The merge patch that removes the references to `uids` from `meta`
/// (`None` when it holds none), guarded by its resourceVersion.
pub fn drop_owner_refs_patch(meta: &ObjectMeta, uids: &[String]) -> Option<Value> {
    let kept: Vec<&OwnerReference> = meta
        .owner_references
        .iter()
        .filter(|r| !uids.contains(&r.uid))
        .collect();
    if kept.len() == meta.owner_references.len() {
        return None;
    }
    Some(json!({"metadata": {
        "ownerReferences": kept,
        "resourceVersion": meta.resource_version,
    }}))
}

/// The merge patch that removes `finalizer` from `meta` (`None` when it is
/// not there), guarded by its resourceVersion. Removing the last finalizer
/// of an object being deleted deletes it.
pub fn drop_finalizer_patch(meta: &ObjectMeta, finalizer: &str) -> Option<Value> {
    if !meta.finalizers.iter().any(|f| f == finalizer) {
        return None;
    }
    let kept: Vec<&String> = meta.finalizers.iter().filter(|f| *f != finalizer).collect();
    Some(json!({"metadata": {
        "finalizers": kept,
        "resourceVersion": meta.resource_version,
    }}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::meta::Time;

    fn oref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: block.then_some(true),
        }
    }

    fn meta(uid: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(format!("rs-{uid}")),
            uid: Some(uid.into()),
            resource_version: Some("7".into()),
            ..ObjectMeta::default()
        }
    }

    fn deleting(uid: &str, finalizer: &str) -> ObjectMeta {
        ObjectMeta {
            deletion_timestamp: Some(Time(chrono::Utc::now())),
            finalizers: vec![finalizer.to_string()],
            ..meta(uid)
        }
    }

    #[test]
    fn owner_with_another_uid_is_gone() {
        let r = oref("a", false);
        assert_eq!(owner_state(&r, None), OwnerState::Dangling);
        assert_eq!(owner_state(&r, Some(&meta("b"))), OwnerState::Dangling);
        assert_eq!(owner_state(&r, Some(&meta("a"))), OwnerState::Solid);
        assert_eq!(
            owner_state(&r, Some(&deleting("a", FOREGROUND_FINALIZER))),
            OwnerState::WaitingForDependents
        );
        // Orphaning owners stay solid: they release their dependents instead.
        assert_eq!(
            owner_state(&r, Some(&deleting("a", ORPHAN_FINALIZER))),
            OwnerState::Solid
        );
    }

    #[test]
    fn dependent_goes_only_when_every_owner_is_gone() {
        let refs = [oref("a", false), oref("b", false)];
        use OwnerState::*;
        assert_eq!(
            dependent_verdict(&refs, &[Dangling, Dangling], false),
            DependentVerdict::Delete(DeletionPropagation::Background)
        );
        assert_eq!(
            dependent_verdict(&refs, &[Solid, Dangling], false),
            DependentVerdict::Keep {
                drop_refs: vec!["b".into()]
            }
        );
        assert_eq!(
            dependent_verdict(&refs, &[Solid, Solid], false),
            DependentVerdict::Keep { drop_refs: vec![] }
        );
        assert_eq!(
            dependent_verdict(&[], &[], false),
            DependentVerdict::Keep { drop_refs: vec![] }
        );
        // A state missing for a reference never deletes.
        assert_eq!(
            dependent_verdict(&refs, &[Dangling], false),
            DependentVerdict::Keep { drop_refs: vec![] }
        );
    }

    #[test]
    fn foreground_owner_makes_owning_dependents_go_in_the_foreground() {
        let refs = [oref("a", true), oref("b", false)];
        use OwnerState::*;
        assert_eq!(
            dependent_verdict(&refs, &[WaitingForDependents, Dangling], true),
            DependentVerdict::Delete(DeletionPropagation::Foreground)
        );
        assert_eq!(
            dependent_verdict(&refs, &[WaitingForDependents, Dangling], false),
            DependentVerdict::Delete(DeletionPropagation::Background)
        );
        assert_eq!(
            dependent_verdict(&refs, &[WaitingForDependents, Solid], true),
            DependentVerdict::Keep {
                drop_refs: vec!["a".into()]
            }
        );
    }

    #[test]
    fn foreground_owner_waits_only_for_blocking_dependents() {
        let view = |k: u8, block: bool, deleting: bool| DependentView {
            key: k,
            reference: oref("o", block),
            deleting,
        };
        let plan = foreground_plan(&[view(1, true, false), view(2, false, true), view(3, false, false)]);
        assert_eq!(plan.delete, vec![1, 3]);
        assert!(!plan.release);
        let plan = foreground_plan(&[view(2, false, true), view(3, false, false)]);
        assert_eq!(plan.delete, vec![3]);
        assert!(plan.release, "no dependent blocks the owner");
        let plan = foreground_plan::<u8>(&[]);
        assert!(plan.delete.is_empty() && plan.release);
    }

    #[test]
    fn patches_drop_references_and_finalizers_under_the_version() {
        let mut m = meta("d");
        m.owner_references = vec![oref("a", false), oref("b", true)];
        let p = drop_owner_refs_patch(&m, &["a".into()]).unwrap();
        assert_eq!(p["metadata"]["resourceVersion"], "7");
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "b");
        assert_eq!(p["metadata"]["ownerReferences"].as_array().unwrap().len(), 1);
        assert_eq!(drop_owner_refs_patch(&m, &["zzz".into()]), None);
        let p = drop_owner_refs_patch(&m, &["a".into(), "b".into()]).unwrap();
        assert_eq!(p["metadata"]["ownerReferences"], json!([]));

        let mut m = deleting("o", ORPHAN_FINALIZER);
        m.finalizers.push("example.com/keep".into());
        let p = drop_finalizer_patch(&m, ORPHAN_FINALIZER).unwrap();
        assert_eq!(p["metadata"]["finalizers"], json!(["example.com/keep"]));
        assert_eq!(drop_finalizer_patch(&m, FOREGROUND_FINALIZER), None);
    }
}
