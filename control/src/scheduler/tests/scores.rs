//! Every score: least-allocated, spreading across nodes and zones, and
//! `PreferNoSchedule` taints.

use std::collections::BTreeMap;

use shturman_api::core::TaintEffect;

use super::*;
use crate::scheduler::Resources;
use crate::scheduler::score::{MAX_NODE_SCORE, least_allocated};

fn res(milli_cpu: i64, memory: i64) -> Resources {
    Resources {
        milli_cpu,
        memory,
        pods: 0,
    }
}

#[test]
fn least_allocated_is_the_mean_free_share_after_placing() {
    assert_eq!(
        least_allocated(res(4000, 8 * GI), res(0, 0), res(1000, 2 * GI)),
        75
    );
    assert_eq!(
        least_allocated(res(4000, 8 * GI), res(1000, 0), res(1000, 2 * GI)),
        (50 + 75) / 2
    );
    assert_eq!(
        least_allocated(res(4000, 8 * GI), res(0, 0), res(0, 0)),
        MAX_NODE_SCORE
    );
    assert_eq!(
        least_allocated(res(4000, 8 * GI), res(4000, 0), res(1, 0)),
        50,
        "over-full cpu scores 0"
    );
    assert_eq!(
        least_allocated(res(0, 0), res(0, 0), res(1, 1)),
        0,
        "nothing allocatable scores 0"
    );
    assert_eq!(
        least_allocated(res(i64::MAX, i64::MAX), res(i64::MAX, 0), res(i64::MAX, 0)),
        50,
        "no overflow"
    );
}

#[test]
fn the_emptier_node_wins() {
    let nodes = [node("busy"), node("idle")];
    let s = ClusterSnapshot::new(&nodes, &[bound(requesting("a", 2000, 4 * GI), "busy")]);
    assert_eq!(place(&pod("p"), &s).unwrap(), "idle");
}

#[test]
fn a_bigger_node_wins_when_both_are_empty() {
    let nodes = [
        with_alloc(node("small"), 1000, 2 * GI, 110),
        with_alloc(node("big"), 8000, 16 * GI, 110),
    ];
    assert_eq!(place(&requesting("p", 500, GI), &snap(&nodes)).unwrap(), "big");
}

#[test]
fn best_effort_pods_spread_by_the_default_requests() {
    let mut s = snap(&[node("a"), node("b")]);
    let mut sched = exhaustive();
    let first = sched
        .schedule_and_assume(&requesting("p1", 0, 0), &mut s)
        .unwrap();
    let second = sched
        .schedule_and_assume(&requesting("p2", 0, 0), &mut s)
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(
        s.node(&first).unwrap().requested.exact.milli_cpu,
        0,
        "fit still counts zero"
    );
    assert_eq!(s.node(&first).unwrap().requested.non_zero.milli_cpu, 100);
}

#[test]
fn untolerated_prefer_no_schedule_taints_lower_the_score() {
    let nodes = [
        with_taint(node("tainted"), "flaky-link", "", TaintEffect::PreferNoSchedule),
        node("clean"),
    ];
    // The tainted node is emptier, yet the taint (weight 3) outweighs it.
    let s = ClusterSnapshot::new(&nodes, &[bound(requesting("a", 1000, 2 * GI), "clean")]);
    assert_eq!(place(&pod("p"), &s).unwrap(), "clean");
    let tolerant = tolerating(pod("p"), "flaky-link", None, Some(TaintEffect::PreferNoSchedule));
    assert_eq!(place(&tolerant, &s).unwrap(), "tainted");
}

#[test]
fn more_prefer_taints_score_lower() {
    let one = with_taint(node("one"), "a", "", TaintEffect::PreferNoSchedule);
    let two = with_taint(
        with_taint(node("two"), "a", "", TaintEffect::PreferNoSchedule),
        "b",
        "",
        TaintEffect::PreferNoSchedule,
    );
    assert_eq!(place(&pod("p"), &snap(&[two.clone(), one])).unwrap(), "one");
    assert_eq!(
        place(&pod("p"), &snap(&[two])).unwrap(),
        "two",
        "a preference, not a filter"
    );
}

#[test]
fn replicas_of_one_owner_spread_across_nodes() {
    let mut s = snap(&[node("a"), node("b"), node("c")]);
    let mut sched = exhaustive();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        let name = sched
            .schedule_and_assume(&owned(pod(&format!("web-{i}")), "rs-web"), &mut s)
            .unwrap();
        *per_node.entry(name).or_default() += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
}

#[test]
fn spreading_avoids_nodes_that_already_run_the_owner() {
    let nodes = [node("a"), node("b")];
    let running = [bound(owned(requesting("x", 0, 0), "rs-web"), "b")];
    // "b" is otherwise emptier (a holds another owner's big pod).
    let mut busy = bound(requesting("other", 1000, 2 * GI), "a");
    busy.metadata.name = Some("other".into());
    let s = ClusterSnapshot::new(&nodes, &[running[0].clone(), busy]);
    assert_eq!(place(&owned(pod("web-1"), "rs-web"), &s).unwrap(), "a");
    assert_eq!(
        place(&owned(pod("api-1"), "rs-api"), &s).unwrap(),
        "b",
        "another owner is not repelled"
    );
}

#[test]
fn the_second_replica_goes_to_the_other_zone_even_with_fewer_nodes_there() {
    let nodes = [
        with_zone(node("a1"), "zone-a"),
        with_zone(node("a2"), "zone-a"),
        with_zone(node("a3"), "zone-a"),
        with_zone(node("b1"), "zone-b"),
    ];
    for seed in 0..8 {
        let mut s = snap(&nodes);
        let mut sched = Scheduler::new(Config {
            percentage_of_nodes_to_score: Some(100),
            seed,
            ..Config::default()
        });
        let first = sched
            .schedule_and_assume(&owned(pod("web-0"), "rs-web"), &mut s)
            .unwrap();
        let second = sched
            .schedule_and_assume(&owned(pod("web-1"), "rs-web"), &mut s)
            .unwrap();
        assert_ne!(first[..1], second[..1], "seed {seed}: {first} then {second}");
    }
}

#[test]
fn replicas_even_out_over_zones_and_nodes() {
    let nodes = [
        with_zone(node("a1"), "zone-a"),
        with_zone(node("a2"), "zone-a"),
        with_zone(node("b1"), "zone-b"),
        with_zone(node("b2"), "zone-b"),
    ];
    let mut s = snap(&nodes);
    let mut sched = exhaustive();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..8 {
        let name = sched
            .schedule_and_assume(&owned(pod(&format!("web-{i}")), "rs-web"), &mut s)
            .unwrap();
        *per_node.entry(name).or_default() += 1;
        let zone_a: usize = per_node
            .iter()
            .filter(|(n, _)| n.starts_with('a'))
            .map(|(_, c)| c)
            .sum();
        let zone_b = i + 1 - zone_a;
        assert!(
            zone_a.abs_diff(zone_b) <= 1,
            "after {} replicas: {per_node:?}",
            i + 1
        );
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![2, 2, 2, 2]);
}

#[test]
fn zone_spreading_prefers_the_emptier_zone() {
    let nodes = [
        with_zone(node("a1"), "zone-a"),
        with_zone(node("a2"), "zone-a"),
        with_zone(node("b1"), "zone-b"),
        with_zone(node("b2"), "zone-b"),
    ];
    let s = ClusterSnapshot::new(&nodes, &[bound(owned(pod("web-0"), "rs-web"), "a1")]);
    let chosen = place(&owned(pod("web-1"), "rs-web"), &s).unwrap();
    assert!(chosen.starts_with('b'), "{chosen}");
}

#[test]
fn nodes_without_a_zone_still_spread_by_node() {
    let nodes = [with_zone(node("a1"), "zone-a"), node("plain")];
    let s = ClusterSnapshot::new(&nodes, &[bound(owned(pod("web-0"), "rs-web"), "plain")]);
    assert_eq!(place(&owned(pod("web-1"), "rs-web"), &s).unwrap(), "a1");
}
