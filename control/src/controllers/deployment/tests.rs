//! Unit tests of the Deployment planner: one rule each.

const NO_PODS: &[Pod] = &[];

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use shturman_api::apps::{
    Deployment, DeploymentConditionType, DeploymentStatus, DeploymentStrategy, DeploymentStrategyType,
    ReplicaSet, RollingUpdateDeployment,
};
use shturman_api::core::{Container, Pod, PodCondition, PodConditionType, PodPhase, PodStatus};
use shturman_api::intstr::IntOrString;
use shturman_api::meta::{ConditionStatus, OwnerReference, Time};

use super::util::*;
use super::*;

pub(super) fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0)
        .single()
        .unwrap_or_default()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn deploy(replicas: i32, image: &str) -> Deployment {
    let mut d = Deployment::default();
    d.metadata.name = Some("web".into());
    d.metadata.namespace = Some("default".into());
    d.metadata.uid = Some("d-uid".into());
    d.metadata.generation = Some(1);
    d.spec.replicas = Some(replicas);
    d.spec.selector.match_labels = labels(&[("app", "web")]);
    d.spec.template.metadata.labels = labels(&[("app", "web")]);
    d.spec.template.spec.containers.push(Container {
        name: "c".into(),
        image: image.into(),
        ..Default::default()
    });
    d.spec.apply_defaults();
    d
}

fn rolling(d: &mut Deployment, surge: impl Into<IntOrString>, unavailable: impl Into<IntOrString>) {
    d.spec.strategy = Some(DeploymentStrategy {
        type_: Some(DeploymentStrategyType::RollingUpdate),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(surge.into()),
            max_unavailable: Some(unavailable.into()),
        }),
    });
}

/// A ReplicaSet as the controller would have made it for `image`.
fn rs_for(d: &Deployment, image: &str, replicas: i32, revision: i64, created: i64) -> ReplicaSet {
    let mut template = d.spec.template.clone();
    template.spec.containers[0].image = image.into();
    let hash = template_hash(&template);
    template
        .metadata
        .labels
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut rs = ReplicaSet::default();
    rs.metadata.name = Some(format!("web-{hash}"));
    rs.metadata.namespace = Some("default".into());
    rs.metadata.uid = Some(format!("uid-{image}"));
    rs.metadata.creation_timestamp = Some(Time(t(created)));
    rs.metadata.owner_references = vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
        uid: "d-uid".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    rs.metadata.labels = template.metadata.labels.clone();
    rs.metadata
        .annotations
        .insert(REVISION.into(), revision.to_string());
    let desired = desired_replicas(d);
    set_replicas_annotations(&mut rs, desired, desired.saturating_add(max_surge(d)));
    rs.spec.replicas = Some(replicas);
    rs.spec.selector = d.spec.selector.clone();
    rs.spec
        .selector
        .match_labels
        .insert(POD_TEMPLATE_HASH.into(), hash);
    rs.spec.template = template;
    rs
}

/// `ready` ready pods and `unready` pending ones of `rs`.
fn pods_of(rs: &ReplicaSet, ready: usize, unready: usize) -> Vec<Pod> {
    (0..ready + unready)
        .map(|i| {
            let mut p = Pod::default();
            p.metadata.name = Some(format!("{}-{i}", rs.metadata.name()));
            p.metadata.namespace = Some("default".into());
            p.metadata.labels = rs.spec.template.metadata.labels.clone();
            p.metadata.owner_references = vec![OwnerReference {
                uid: rs.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                ..Default::default()
            }];
            let is_ready = i < ready;
            p.status = Some(PodStatus {
                phase: Some(if is_ready {
                    PodPhase::Running
                } else {
                    PodPhase::Pending
                }),
                conditions: vec![PodCondition {
                    type_: PodConditionType::Ready,
                    status: ConditionStatus::from_bool(is_ready),
                    last_probe_time: None,
                    last_transition_time: Some(Time(t(0))),
                    reason: None,
                    message: None,
                }],
                ..Default::default()
            });
            p
        })
        .collect()
}

fn scales(actions: &[Action]) -> Vec<(String, i32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ScaleReplicaSet { name, replicas, .. } => Some((name.clone(), *replicas)),
            _ => None,
        })
        .collect()
}

fn created(actions: &[Action]) -> Option<&ReplicaSet> {
    actions.iter().find_map(|a| match a {
        Action::CreateReplicaSet(rs) => Some(&**rs),
        _ => None,
    })
}

fn status(actions: &[Action]) -> Option<&DeploymentStatus> {
    actions.iter().find_map(|a| match a {
        Action::UpdateDeploymentStatus(s) => Some(s),
        _ => None,
    })
}

fn events(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some(e.message.clone()),
            _ => None,
        })
        .collect()
}

fn reason(s: &DeploymentStatus, t: DeploymentConditionType) -> Option<String> {
    s.condition(t).and_then(|c| c.reason.clone())
}

#[test]
fn fenceposts_round_surge_up_and_unavailable_down() {
    let mut d = deploy(10, "v1");
    assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
    rolling(&mut d, "0%", "0%");
    assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 1));
    rolling(&mut d, 0, 0);
    assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 1));
    rolling(&mut d, "bogus", 20);
    assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 10));
    rolling(&mut d, -4, "15%");
    assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 1));
    d.spec.replicas = Some(0);
    assert_eq!(max_unavailable(&d), 0);
    let mut r = deploy(10, "v1");
    r.spec.strategy = Some(DeploymentStrategy {
        type_: Some(DeploymentStrategyType::Recreate),
        rolling_update: None,
    });
    assert_eq!((max_surge(&r), max_unavailable(&r)), (0, 0));
}

#[test]
fn first_sync_creates_the_hashed_replica_set_and_revision_1() {
    let d = deploy(4, "v1");
    let actions = plan(&d, &[], NO_PODS, t(0));
    let rs = created(&actions).cloned().unwrap_or_default();
    let hash = template_hash(&d.spec.template);
    assert_eq!(rs.metadata.name(), format!("web-{hash}"));
    assert_eq!(
        rs.spec.template.metadata.labels.get(POD_TEMPLATE_HASH),
        Some(&hash)
    );
    assert_eq!(rs.spec.selector.match_labels.get(POD_TEMPLATE_HASH), Some(&hash));
    assert_eq!(rs.metadata.labels.get(POD_TEMPLATE_HASH), Some(&hash));
    assert_eq!(rs.spec.replicas, Some(4));
    assert_eq!(rs.metadata.owner_references[0].uid, "d-uid");
    let a = &rs.metadata.annotations;
    assert_eq!(a.get(REVISION).map(String::as_str), Some("1"));
    assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("4"));
    assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("5"));
    assert_eq!(
        events(&actions),
        [format!("Scaled up replica set web-{hash} from 0 to 4")]
    );
    assert!(actions.contains(&Action::UpdateDeploymentAnnotations { revision: "1".into() }));
    let s = status(&actions).cloned().unwrap_or_default();
    assert_eq!(
        reason(&s, DeploymentConditionType::Progressing).as_deref(),
        Some("NewReplicaSetCreated")
    );
    assert_eq!(
        reason(&s, DeploymentConditionType::Available).as_deref(),
        Some("MinimumReplicasUnavailable")
    );
    assert_eq!(s.observed_generation, Some(1));
}

#[test]
fn change_cause_is_copied_to_the_new_replica_set() {
    let mut d = deploy(1, "v1");
    d.metadata
        .annotations
        .insert(CHANGE_CAUSE.into(), "kubectl set image".into());
    d.metadata.annotations.insert(REVISION.into(), "9".into());
    let rs = created(&plan(&d, &[], NO_PODS, t(0)))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        rs.metadata.annotations.get(CHANGE_CAUSE).map(String::as_str),
        Some("kubectl set image")
    );
    assert_eq!(
        rs.metadata.annotations.get(REVISION).map(String::as_str),
        Some("1")
    );
}

#[test]
fn template_change_surges_the_new_replica_set_within_max_surge() {
    let mut d = deploy(4, "v2");
    rolling(&mut d, 1, 1);
    let old = rs_for(&d, "v1", 4, 1, 0);
    let pods = pods_of(&old, 4, 0);
    let actions = plan(&d, std::slice::from_ref(&old), &pods, t(100));
    let new = created(&actions).cloned().unwrap_or_default();
    assert_eq!(new.spec.replicas, Some(1));
    assert_eq!(
        new.metadata.annotations.get(REVISION).map(String::as_str),
        Some("2")
    );
    // The new RS's pods are not there yet: only maxUnavailable of the old may go.
    assert_eq!(scales(&actions), [(old.metadata.name().to_string(), 3)]);
    assert!(events(&actions).contains(&format!(
        "Scaled down replica set {} from 4 to 3",
        old.metadata.name()
    )));
}

#[test]
fn old_replicas_stay_at_the_floor_while_new_pods_are_not_ready() {
    let mut d = deploy(4, "v2");
    rolling(&mut d, 1, 1);
    let old = rs_for(&d, "v1", 3, 1, 0);
    let new = rs_for(&d, "v2", 2, 2, 10);
    let mut pods = pods_of(&old, 3, 0);
    pods.extend(pods_of(&new, 0, 2));
    let actions = plan(&d, &[old, new], &pods, t(100));
    assert_eq!(scales(&actions), []);
    assert!(created(&actions).is_none());
}

#[test]
fn unhealthy_old_replicas_are_cleaned_up_first() {
    let mut d = deploy(4, "v3");
    rolling(&mut d, 1, 1);
    let a = rs_for(&d, "v1", 3, 1, 0);
    let b = rs_for(&d, "v2", 2, 2, 10);
    let c = rs_for(&d, "v3", 0, 3, 20);
    let mut pods = pods_of(&a, 3, 0);
    pods.extend(pods_of(&b, 0, 2));
    let actions = plan(&d, &[a.clone(), b.clone(), c], &pods, t(100));
    // Total 5 = max: no room for the new RS; b's unready pods go first.
    assert_eq!(scales(&actions), [(b.metadata.name().to_string(), 0)]);
}

#[test]
fn new_replica_set_above_replicas_is_scaled_down() {
    let mut d = deploy(2, "v1");
    rolling(&mut d, 1, 1);
    let rs = rs_for(&d, "v1", 5, 1, 0);
    let pods = pods_of(&rs, 5, 0);
    // The desired-replicas annotation says 2, so this is not a scaling event.
    let actions = plan(&d, std::slice::from_ref(&rs), &pods, t(0));
    assert_eq!(scales(&actions), [(rs.metadata.name().to_string(), 2)]);
}

#[test]
fn proportional_scaling_matches_the_kubernetes_docs_example() {
    // 10 replicas, maxSurge 3, maxUnavailable 2; rollout stuck at old 8 / new 5.
    let mut d = deploy(10, "v2");
    rolling(&mut d, 3, 2);
    let old = rs_for(&d, "v1", 8, 1, 0);
    let new = rs_for(&d, "v2", 5, 2, 10);
    let mut pods = pods_of(&old, 8, 0);
    pods.extend(pods_of(&new, 0, 5));
    d.spec.replicas = Some(15);
    let actions = plan(&d, &[old.clone(), new.clone()], &pods, t(100));
    let mut got = scales(&actions);
    got.sort();
    let mut want = vec![
        (old.metadata.name().to_string(), 11),
        (new.metadata.name().to_string(), 7),
    ];
    want.sort();
    assert_eq!(got, want);
    // Both carry the new desired/max annotations.
    assert!(actions.iter().all(|a| match a {
        Action::ScaleReplicaSet { annotations, .. } =>
            annotations.get(DESIRED_REPLICAS).map(String::as_str) == Some("15")
                && annotations.get(MAX_REPLICAS).map(String::as_str) == Some("18"),
        _ => true,
    }));
}

#[test]
fn scaling_down_during_a_rollout_shrinks_older_first_on_ties() {
    let mut d = deploy(10, "v2");
    rolling(&mut d, 2, 0);
    let old = rs_for(&d, "v1", 6, 1, 0);
    let new = rs_for(&d, "v2", 6, 2, 10);
    d.spec.replicas = Some(0);
    let actions = plan(&d, &[old.clone(), new.clone()], NO_PODS, t(100));
    let mut got = scales(&actions);
    got.sort();
    let mut want = vec![
        (old.metadata.name().to_string(), 0),
        (new.metadata.name().to_string(), 0),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn single_active_replica_set_takes_the_whole_size() {
    let d0 = deploy(3, "v1");
    let rs = rs_for(&d0, "v1", 3, 1, 0);
    let mut d = d0.clone();
    d.spec.replicas = Some(7);
    let actions = plan(&d, std::slice::from_ref(&rs), &pods_of(&rs, 3, 0), t(0));
    assert_eq!(scales(&actions), [(rs.metadata.name().to_string(), 7)]);
    assert_eq!(
        events(&actions),
        [format!(
            "Scaled up replica set {} from 3 to 7",
            rs.metadata.name()
        )]
    );
}

#[test]
fn recreate_scales_old_down_then_waits_for_old_pods_then_creates_new() {
    let mut d = deploy(3, "v2");
    d.spec.strategy = Some(DeploymentStrategy {
        type_: Some(DeploymentStrategyType::Recreate),
        rolling_update: None,
    });
    let old = rs_for(&d, "v1", 3, 1, 0);
    let pods = pods_of(&old, 3, 0);
    let actions = plan(&d, std::slice::from_ref(&old), &pods, t(0));
    assert_eq!(scales(&actions), [(old.metadata.name().to_string(), 0)]);
    assert!(created(&actions).is_none());

    let mut old0 = old.clone();
    old0.spec.replicas = Some(0);
    let mut terminating = pods[0].clone();
    terminating.metadata.deletion_timestamp = Some(Time(t(1)));
    let actions = plan(&d, std::slice::from_ref(&old0), &[terminating], t(1));
    assert!(created(&actions).is_none(), "old pods still running");

    let actions = plan(&d, &[old0], NO_PODS, t(2));
    assert_eq!(created(&actions).and_then(|r| r.spec.replicas), Some(3));
}

#[test]
fn paused_deployment_does_not_roll_out_but_scales() {
    let mut d = deploy(4, "v2");
    d.spec.paused = Some(true);
    let old = rs_for(&d, "v1", 4, 1, 0);
    let pods = pods_of(&old, 4, 0);
    let actions = plan(&d, std::slice::from_ref(&old), &pods, t(0));
    assert!(created(&actions).is_none());
    assert_eq!(scales(&actions), []);
    let s = status(&actions).cloned().unwrap_or_default();
    let cond = s.condition(DeploymentConditionType::Progressing).cloned();
    assert_eq!(
        cond.as_ref().and_then(|c| c.reason.as_deref()),
        Some("DeploymentPaused")
    );
    assert_eq!(cond.map(|c| c.status), Some(ConditionStatus::Unknown));

    d.spec.replicas = Some(6);
    let actions = plan(&d, std::slice::from_ref(&old), &pods, t(0));
    assert_eq!(scales(&actions), [(old.metadata.name().to_string(), 6)]);

    // Resuming says so, then rolls out.
    d.spec.paused = Some(false);
    d.spec.replicas = Some(4);
    d.status = Some(s);
    let actions = plan(&d, &[old], &pods, t(5));
    assert!(created(&actions).is_some());
    let s = status(&actions).cloned().unwrap_or_default();
    assert_ne!(
        reason(&s, DeploymentConditionType::Progressing).as_deref(),
        Some("DeploymentPaused")
    );
}

#[test]
fn history_beyond_the_limit_is_deleted_oldest_revision_first() {
    let mut d = deploy(2, "v5");
    d.spec.revision_history_limit = Some(1);
    let rss: Vec<ReplicaSet> = (1..=4)
        .map(|i| rs_for(&d, &format!("v{i}"), 0, i, i * 10))
        .collect();
    let mut busy = rs_for(&d, "v0", 0, 0, 0);
    busy.metadata.uid = Some("busy".into());
    let current = rs_for(&d, "v5", 2, 5, 100);
    let mut all = rss.clone();
    all.push(current.clone());
    all.push(busy.clone());
    let mut pods = pods_of(&current, 2, 0);
    pods.extend(pods_of(&busy, 1, 0));
    let mut done = d.clone();
    done.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(2),
        updated_replicas: Some(2),
        available_replicas: Some(2),
        ..Default::default()
    });
    let actions = plan(&done, &all, &pods, t(200));
    let deleted: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::DeleteReplicaSet { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    // Five old: keep one; "busy" (revision 0, still has a pod) is skipped.
    assert_eq!(
        deleted,
        [
            rss[0].metadata.name(),
            rss[1].metadata.name(),
            rss[2].metadata.name()
        ]
    );
}

#[test]
fn undo_reuses_the_old_replica_set_with_a_new_revision() {
    let d = deploy(3, "v1");
    let v1 = rs_for(&d, "v1", 0, 1, 0);
    let v2 = rs_for(&d, "v2", 3, 2, 10);
    let pods = pods_of(&v2, 3, 0);
    let actions = plan(&d, &[v1.clone(), v2], &pods, t(100));
    assert!(created(&actions).is_none());
    let update = actions.iter().find_map(|a| match a {
        Action::ScaleReplicaSet {
            name, annotations, ..
        } if name == v1.metadata.name() => Some(annotations),
        _ => None,
    });
    let annotations = update.cloned().unwrap_or_default();
    assert_eq!(annotations.get(REVISION).map(String::as_str), Some("3"));
    assert_eq!(annotations.get(REVISION_HISTORY).map(String::as_str), Some("1"));
    assert!(actions.contains(&Action::UpdateDeploymentAnnotations { revision: "3".into() }));
}

#[test]
fn min_ready_seconds_is_synced_to_the_new_replica_set() {
    let mut d = deploy(1, "v1");
    d.spec.min_ready_seconds = Some(15);
    let rs = rs_for(&d, "v1", 1, 1, 0);
    let actions = plan(&d, &[rs], NO_PODS, t(0));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::ScaleReplicaSet {
            min_ready_seconds: Some(15),
            ..
        }
    )));
}

#[test]
fn hash_collision_bumps_the_collision_count() {
    let d = deploy(1, "v2");
    let mut squatter = rs_for(&d, "v1", 0, 1, 0);
    squatter.metadata.name = Some(format!("web-{}", template_hash(&d.spec.template)));
    let actions = plan(&d, &[squatter], NO_PODS, t(0));
    assert!(created(&actions).is_none());
    assert_eq!(status(&actions).and_then(|s| s.collision_count), Some(1));
    let mut d2 = d.clone();
    d2.status = status(&actions).cloned();
    let mut squatter = rs_for(&d, "v1", 0, 1, 0);
    squatter.metadata.name = Some(format!("web-{}", template_hash(&d.spec.template)));
    let rs = created(&plan(&d2, &[squatter], NO_PODS, t(1)))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        rs.metadata.name(),
        format!("web-{}", compute_hash(&d.spec.template, Some(1)))
    );
}

#[test]
fn complete_rollout_reports_available_and_new_rs_available() {
    let d0 = deploy(2, "v1");
    let rs = rs_for(&d0, "v1", 2, 1, 0);
    let pods = pods_of(&rs, 2, 0);
    let mut d = d0.clone();
    d.metadata.annotations.insert(REVISION.into(), "1".into());
    let actions = plan(&d, std::slice::from_ref(&rs), &pods, t(50));
    let s = status(&actions).cloned().unwrap_or_default();
    assert_eq!(
        (
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas,
            s.unavailable_replicas
        ),
        (Some(2), Some(2), Some(2), Some(2), Some(0))
    );
    assert_eq!(
        reason(&s, DeploymentConditionType::Available).as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        reason(&s, DeploymentConditionType::Progressing).as_deref(),
        Some("NewReplicaSetAvailable")
    );
    // Stable: a second pass changes nothing.
    d.status = Some(s);
    assert_eq!(plan(&d, &[rs], &pods, t(60)), Vec::new());
}

#[test]
fn stuck_rollout_times_out_after_the_deadline() {
    let mut d = deploy(2, "v2");
    d.spec.progress_deadline_seconds = Some(60);
    rolling(&mut d, 1, 0);
    let old = rs_for(&d, "v1", 2, 1, 0);
    let new = rs_for(&d, "v2", 1, 2, 10);
    let mut pods = pods_of(&old, 2, 0);
    pods.extend(pods_of(&new, 0, 1));
    let actions = plan(&d, &[old.clone(), new.clone()], &pods, t(10));
    let s = status(&actions).cloned().unwrap_or_default();
    assert_eq!(
        reason(&s, DeploymentConditionType::Progressing).as_deref(),
        Some("ReplicaSetUpdated")
    );
    d.status = Some(s);
    let actions = plan(&d, &[old.clone(), new.clone()], &pods, t(40));
    assert!(actions.contains(&Action::RequeueAfter(std::time::Duration::from_secs(30))));
    let actions = plan(&d, &[old, new], &pods, t(71));
    let s = status(&actions).cloned().unwrap_or_default();
    let c = s.condition(DeploymentConditionType::Progressing).cloned();
    assert_eq!(
        c.as_ref().and_then(|c| c.reason.as_deref()),
        Some("ProgressDeadlineExceeded")
    );
    assert_eq!(c.map(|c| c.status), Some(ConditionStatus::False));
    assert_eq!(scales(&actions), []);
}

#[test]
fn empty_selector_is_refused() {
    let mut d = deploy(1, "v1");
    d.spec.selector.match_labels.clear();
    let actions = plan(&d, &[], NO_PODS, t(0));
    assert!(created(&actions).is_none());
    assert!(events(&actions).iter().any(|m| m.contains("selecting all pods")));
}

#[test]
fn orphan_replica_sets_matching_the_selector_are_adopted() {
    let d = deploy(2, "v1");
    let mut orphan = rs_for(&d, "v1", 2, 1, 0);
    orphan.metadata.owner_references.clear();
    let mut foreign = rs_for(&d, "v0", 2, 1, 0);
    foreign.metadata.owner_references[0].uid = "other".into();
    let actions = plan(&d, &[orphan.clone(), foreign], &pods_of(&orphan, 2, 0), t(0));
    assert!(matches!(&actions[0], Action::AdoptReplicaSet { name, .. } if name == orphan.metadata.name()));
    assert!(created(&actions).is_none());
    assert_eq!(status(&actions).and_then(|s| s.replicas), Some(2));
}

#[test]
fn odd_inputs_do_not_panic() {
    let mut d = deploy(i32::MAX, "v2");
    rolling(&mut d, "100%", "100%");
    d.spec.progress_deadline_seconds = Some(i32::MAX);
    d.spec.revision_history_limit = Some(-1);
    let mut old = rs_for(&d, "v1", i32::MAX, 1, 0);
    old.metadata.annotations.insert(REVISION.into(), "x".into());
    old.metadata.annotations.insert(MAX_REPLICAS.into(), "-7".into());
    let mut neg = rs_for(&d, "v0", -5, i64::MAX, 0);
    neg.metadata.creation_timestamp = None;
    let _ = plan(&d, &[old.clone(), neg.clone()], NO_PODS, t(0));
    d.spec.replicas = Some(-1);
    let _ = plan(&d, &[old, neg], NO_PODS, t(0));
    let _ = plan(
        &Deployment::default(),
        &[ReplicaSet::default()],
        &[Pod::default()],
        t(0),
    );
}
