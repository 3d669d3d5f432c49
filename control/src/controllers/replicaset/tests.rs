//! Unit tests of the ReplicaSet planner: one rule each.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use shturman_api::apps::{ReplicaSet, ReplicaSetStatus};
use shturman_api::core::{ContainerStatus, Pod, PodCondition, PodConditionType, PodPhase, PodStatus};
use shturman_api::meta::{ConditionStatus, OwnerReference, Time};

use super::*;

fn t(secs: i64) -> DateTime<Utc> {
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

fn rs(replicas: i32) -> ReplicaSet {
    let mut rs = ReplicaSet::default();
    rs.metadata.name = Some("web-abc".into());
    rs.metadata.namespace = Some("default".into());
    rs.metadata.uid = Some("rs-uid".into());
    rs.metadata.generation = Some(2);
    rs.spec.replicas = Some(replicas);
    rs.spec.selector.match_labels = labels(&[("app", "web")]);
    rs.spec.template.metadata.labels = labels(&[("app", "web"), ("tier", "front")]);
    rs.spec.template.metadata.annotations = labels(&[("note", "x")]);
    rs.spec
        .template
        .spec
        .containers
        .push(shturman_api::core::Container {
            name: "c".into(),
            image: "nginx".into(),
            ..Default::default()
        });
    rs
}

fn owner(uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "x".into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A running, ready, owned pod created at `t(created)`.
fn pod(name: &str, created: i64) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.labels = labels(&[("app", "web"), ("tier", "front")]);
    p.metadata.creation_timestamp = Some(Time(t(created)));
    p.metadata.owner_references = vec![owner("rs-uid")];
    p.spec.node_name = Some("n1".into());
    p.status = Some(PodStatus {
        phase: Some(PodPhase::Running),
        conditions: vec![ready_cond(true, created)],
        ..Default::default()
    });
    p
}

fn ready_cond(ready: bool, at: i64) -> PodCondition {
    PodCondition {
        type_: PodConditionType::Ready,
        status: ConditionStatus::from_bool(ready),
        last_probe_time: None,
        last_transition_time: Some(Time(t(at))),
        reason: None,
        message: None,
    }
}

fn with_phase(mut p: Pod, phase: PodPhase) -> Pod {
    if let Some(s) = p.status.as_mut() {
        s.phase = Some(phase);
    }
    p
}

fn not_ready(mut p: Pod) -> Pod {
    if let Some(s) = p.status.as_mut() {
        s.conditions = vec![ready_cond(false, 0)];
    }
    p
}

fn names() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("s{n:04}")
    }
}

fn run(rs: &ReplicaSet, pods: &[Pod]) -> Vec<Action> {
    plan(rs, pods, t(1000), &mut names())
}

fn created(actions: &[Action]) -> Vec<&Pod> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CreatePod(p) => Some(&**p),
            _ => None,
        })
        .collect()
}

fn deleted(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::DeletePod { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

fn status(actions: &[Action]) -> Option<&ReplicaSetStatus> {
    actions.iter().find_map(|a| match a {
        Action::UpdateStatus(s) => Some(s),
        _ => None,
    })
}

#[test]
fn creates_missing_pods_from_the_template_with_a_controller_ref() {
    let actions = run(&rs(3), &[pod("web-abc-1", 0)]);
    let new = created(&actions);
    assert_eq!(new.len(), 2);
    let p = new[0];
    assert_eq!(p.metadata.name(), "web-abc-s0001");
    assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
    assert_eq!(p.metadata.namespace(), "default");
    assert_eq!(p.metadata.labels, labels(&[("app", "web"), ("tier", "front")]));
    assert_eq!(p.metadata.annotations.get("note").map(String::as_str), Some("x"));
    assert_eq!((p.api_version.as_str(), p.kind.as_str()), ("v1", "Pod"));
    assert_eq!(p.spec.containers[0].image, "nginx");
    let r = &p.metadata.owner_references[0];
    assert_eq!(
        (r.kind.as_str(), r.name.as_str(), r.uid.as_str()),
        ("ReplicaSet", "web-abc", "rs-uid")
    );
    assert_eq!((r.controller, r.block_owner_deletion), (Some(true), Some(true)));
    assert!(actions.contains(&Action::Event(EventRecord::normal(
        "SuccessfulCreate",
        "Created pod: web-abc-s0001"
    ))));
}

#[test]
fn generated_names_avoid_existing_pods_and_long_prefixes_are_cut() {
    let mut r = rs(2);
    let mut existing = pod("web-abc-s0001", 0);
    existing.metadata.owner_references = vec![owner("someone-else")];
    let actions = plan(&r, &[existing], t(0), &mut names());
    let got: Vec<_> = created(&actions)
        .iter()
        .map(|p| p.metadata.name().to_string())
        .collect();
    assert_eq!(got, ["web-abc-s0002", "web-abc-s0003"]);

    r.metadata.name = Some("a".repeat(80));
    let actions = plan(&r, &[] as &[Pod], t(0), &mut names());
    let p = created(&actions)[0];
    assert_eq!(p.metadata.generate_name.as_deref().map(str::len), Some(58));
    assert_eq!(p.metadata.name().len(), 63);
}

#[test]
fn random_suffixes_use_the_safe_alphabet() {
    let mut suffixes = RandomSuffix(rand::rng());
    for _ in 0..20 {
        let s = suffixes.suffix();
        assert_eq!(s.len(), 5);
        assert!(s.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{s}");
    }
}

#[test]
fn inactive_pods_do_not_count_and_failed_ones_are_deleted() {
    let mut terminating = pod("term", 0);
    terminating.metadata.deletion_timestamp = Some(Time(t(5)));
    let pods = [
        pod("ok", 0),
        terminating,
        with_phase(pod("failed", 0), PodPhase::Failed),
        with_phase(pod("done", 0), PodPhase::Succeeded),
    ];
    let actions = run(&rs(2), &pods);
    assert_eq!(created(&actions).len(), 1);
    assert_eq!(deleted(&actions), ["failed"]);
    assert_eq!(status(&actions).map(|s| s.replicas), Some(1));
}

#[test]
fn deletes_extras_in_kubernetes_order() {
    let mut unassigned = pod("unassigned", 50);
    unassigned.spec.node_name = None;
    let pending = with_phase(not_ready(pod("pending", 1)), PodPhase::Pending);
    let unknown = with_phase(pod("unknown", 1), PodPhase::Unknown);
    let notready = not_ready(pod("notready", 1));
    let mut restarts = pod("restarts", 1);
    if let Some(s) = restarts.status.as_mut() {
        s.container_statuses.push(ContainerStatus {
            name: "c".into(),
            restart_count: 4,
            ..Default::default()
        });
    }
    let newer = pod("newer", 20);
    let older = pod("older", 1);
    let pods = [
        older.clone(),
        newer,
        restarts,
        notready,
        unknown,
        pending,
        unassigned,
    ];
    let order = |n: i32| {
        deleted(&run(&rs(7 - n), &pods))
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(order(1), ["unassigned"]);
    assert_eq!(order(2), ["unassigned", "pending"]);
    assert_eq!(order(3), ["unassigned", "pending", "unknown"]);
    assert_eq!(order(4), ["unassigned", "pending", "unknown", "notready"]);
    // Both ready: the one ready more recently goes first.
    assert_eq!(order(5)[4], "newer");
    assert_eq!(order(6)[5], "restarts");
    assert_eq!(order(7).len(), 7);
}

#[test]
fn restarts_then_age_break_ties_and_deletion_cost_wins() {
    let mut a = pod("a", 1);
    let mut b = pod("b", 1);
    for (p, n) in [(&mut a, 1), (&mut b, 3)] {
        if let Some(s) = p.status.as_mut() {
            s.container_statuses.push(ContainerStatus {
                name: "c".into(),
                restart_count: n,
                ..Default::default()
            });
        }
    }
    assert_eq!(deleted(&run(&rs(1), &[a.clone(), b.clone()])), ["b"]);
    a.metadata
        .annotations
        .insert(pods::POD_DELETION_COST.into(), "-5".into());
    assert_eq!(deleted(&run(&rs(1), &[a, b])), ["a"]);
    // Same ready time: newer creation first.
    let mut x = pod("x", 1);
    let mut y = pod("y", 9);
    y.status = x.status.clone();
    x.metadata.creation_timestamp = Some(Time(t(1)));
    assert_eq!(deleted(&run(&rs(1), &[x, y])), ["y"]);
}

#[test]
fn doubled_up_pods_go_first() {
    let a = pod("a", 1);
    let b = pod("b", 1);
    let mut c = pod("c", 1);
    c.spec.node_name = Some("n2".into());
    let actions = run(&rs(2), &[c, a, b]);
    assert_eq!(deleted(&actions), ["a"]);
}

#[test]
fn adopts_matching_orphans_and_releases_mismatched_pods() {
    let mut orphan = pod("orphan", 0);
    orphan.metadata.owner_references.clear();
    let mut stray = pod("stray", 0);
    stray.metadata.labels = labels(&[("app", "other")]);
    let mut foreign = pod("foreign", 0);
    foreign.metadata.owner_references = vec![owner("other-uid")];
    let mut unrelated = pod("unrelated", 0);
    unrelated.metadata.owner_references.clear();
    unrelated.metadata.labels = labels(&[("app", "db")]);
    let mut other_ns = pod("elsewhere", 0);
    other_ns.metadata.namespace = Some("kube-system".into());
    other_ns.metadata.owner_references.clear();
    let actions = run(&rs(1), &[orphan, stray, foreign, unrelated, other_ns]);
    let patches: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::PatchOwner { pod, change, .. } => Some((pod.as_str(), change)),
            _ => None,
        })
        .collect();
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].0, "orphan");
    assert!(matches!(patches[0].1, OwnerChange::Adopt(r) if r.uid == "rs-uid" && r.controller == Some(true)));
    assert_eq!(
        patches[1],
        (
            "stray",
            &OwnerChange::Release {
                owner_uid: "rs-uid".into()
            }
        )
    );
    // The adopted pod fills the one replica.
    assert!(created(&actions).is_empty());
    assert_eq!(status(&actions).map(|s| s.replicas), Some(1));
}

#[test]
fn a_deleting_rs_neither_adopts_nor_scales_but_reports_status() {
    let mut r = rs(3);
    r.metadata.deletion_timestamp = Some(Time(t(0)));
    let mut orphan = pod("orphan", 0);
    orphan.metadata.owner_references.clear();
    let actions = run(&r, &[pod("a", 0), orphan]);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::CreatePod(_) | Action::PatchOwner { .. }))
    );
    assert_eq!(status(&actions).map(|s| s.replicas), Some(1));
}

#[test]
fn empty_selector_or_missing_uid_never_creates() {
    let mut r = rs(2);
    r.spec.selector.match_labels.clear();
    assert!(created(&run(&r, &[])).is_empty());
    let mut r = rs(2);
    r.metadata.uid = None;
    assert!(created(&run(&r, &[])).is_empty());
}

#[test]
fn status_counts_labels_ready_and_available_with_min_ready_seconds() {
    let mut r = rs(4);
    r.spec.min_ready_seconds = Some(30);
    let mut partial = pod("partial", 0);
    partial.metadata.labels.remove("tier");
    let fresh = {
        let mut p = pod("fresh", 990);
        p.status = Some(PodStatus {
            phase: Some(PodPhase::Running),
            conditions: vec![ready_cond(true, 990)],
            ..Default::default()
        });
        p
    };
    let pods = [pod("old", 0), partial, fresh, not_ready(pod("nr", 0))];
    let actions = plan(&r, &pods, t(1000), &mut names());
    let s = status(&actions).cloned().unwrap_or_default();
    assert_eq!(s.replicas, 4);
    assert_eq!(s.fully_labeled_replicas, Some(3));
    assert_eq!(s.ready_replicas, Some(3));
    // "partial" is not fully labelled but still matches the selector, so it counts.
    assert_eq!(s.available_replicas, Some(2));
    assert_eq!(s.observed_generation, Some(2));
    // "fresh" becomes available at 990 + 30: look again then.
    assert!(actions.contains(&Action::RequeueAfter(Duration::from_secs(21))));
}

#[test]
fn no_status_write_when_nothing_changed() {
    let mut r = rs(1);
    let pods = [pod("a", 0)];
    let s = status(&run(&r, &pods)).cloned();
    r.status = s;
    assert_eq!(run(&r, &pods), Vec::new());
}

#[test]
fn negative_or_huge_replicas_do_not_panic() {
    let actions = run(&rs(-3), &[pod("a", 0)]);
    assert_eq!(deleted(&actions), ["a"]);
    let actions = run(&rs(i32::MAX), &[]);
    assert_eq!(created(&actions).len(), BURST_REPLICAS);
}
