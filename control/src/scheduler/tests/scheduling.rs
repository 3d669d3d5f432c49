//! The decision loop: how many nodes are examined, rotation, tie-breaking,
//! and scheduling a batch with assume().

use super::*;
use crate::scheduler::{FilterReason, num_feasible_nodes_to_find};

fn many(n: usize) -> Vec<Node> {
    (0..n).map(|i| node(&format!("n{i:04}"))).collect()
}

fn index_of(name: &str) -> usize {
    name[1..].parse().unwrap()
}

#[test]
fn the_share_of_nodes_examined_follows_kubernetes() {
    assert_eq!(num_feasible_nodes_to_find(None, 0), 0);
    assert_eq!(num_feasible_nodes_to_find(None, 5), 5);
    assert_eq!(num_feasible_nodes_to_find(None, 99), 99);
    assert_eq!(num_feasible_nodes_to_find(None, 100), 100);
    assert_eq!(num_feasible_nodes_to_find(None, 250), 120, "48%");
    assert_eq!(num_feasible_nodes_to_find(None, 1000), 420, "42%");
    assert_eq!(num_feasible_nodes_to_find(None, 5000), 500, "10%");
    assert_eq!(num_feasible_nodes_to_find(None, 5625), 281, "5% floor");
    assert_eq!(num_feasible_nodes_to_find(None, 20_000), 1000, "5% floor");
    assert_eq!(num_feasible_nodes_to_find(Some(100), 5000), 5000);
    assert_eq!(num_feasible_nodes_to_find(Some(10), 2000), 200);
    assert_eq!(
        num_feasible_nodes_to_find(Some(1), 1000),
        100,
        "never fewer than 100"
    );
    assert_eq!(num_feasible_nodes_to_find(Some(0), 1000), 420, "0 means adaptive");
    assert_eq!(
        num_feasible_nodes_to_find(Some(200), 1000),
        1000,
        "capped at 100%"
    );
}

#[test]
fn each_decision_starts_where_the_previous_one_stopped() {
    let s = snap(&many(250));
    let mut sched = Scheduler::new(Config {
        percentage_of_nodes_to_score: Some(40),
        ..Config::default()
    });
    let first = index_of(&sched.schedule(&pod("a"), &s).unwrap());
    let second = index_of(&sched.schedule(&pod("b"), &s).unwrap());
    let third = index_of(&sched.schedule(&pod("c"), &s).unwrap());
    assert!(first < 100, "{first}");
    assert!((100..200).contains(&second), "{second}");
    assert!(!(50..200).contains(&third), "wraps around: {third}");
}

#[test]
fn infeasible_nodes_do_not_count_toward_the_share() {
    let mut nodes = many(300);
    for n in nodes.iter_mut().take(200) {
        n.spec.unschedulable = Some(true);
    }
    let s = snap(&nodes);
    let mut sched = Scheduler::new(Config {
        percentage_of_nodes_to_score: Some(10),
        ..Config::default()
    });
    let chosen = index_of(&sched.schedule(&pod("a"), &s).unwrap());
    assert!(chosen >= 200, "{chosen}");
}

#[test]
fn the_same_seed_gives_the_same_placements() {
    let run = |seed: u64| -> Vec<String> {
        let mut s = snap(&many(30));
        let mut sched = Scheduler::new(Config {
            seed,
            ..Config::default()
        });
        (0..40)
            .map(|i| {
                sched
                    .schedule_and_assume(&requesting(&format!("p{i}"), 0, 0), &mut s)
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(run(7), run(7));
    assert_eq!(run(0), run(0));
    assert_ne!(run(1), run(2), "different seeds break ties differently");
}

#[test]
fn ties_are_broken_among_all_equal_nodes() {
    let s = snap(&many(8));
    let chosen: std::collections::BTreeSet<String> = (0..64)
        .map(|seed| {
            Scheduler::new(Config {
                seed,
                ..Config::default()
            })
            .schedule(&pod("p"), &s)
            .unwrap()
        })
        .collect();
    assert!(chosen.len() >= 6, "ties reach most nodes: {chosen:?}");
}

#[test]
fn schedule_leaves_the_snapshot_alone_and_assume_fills_it() {
    let s0 = snap(&[with_alloc(node("n1"), 4000, 8 * GI, 2)]);
    let mut s = s0.clone();
    let mut sched = exhaustive();
    assert_eq!(sched.schedule(&pod("a"), &s).unwrap(), "n1");
    assert_eq!(sched.schedule(&pod("b"), &s).unwrap(), "n1");
    assert_eq!(
        sched.schedule(&pod("c"), &s).unwrap(),
        "n1",
        "nothing assumed yet"
    );
    sched.schedule_and_assume(&pod("a"), &mut s).unwrap();
    sched.schedule_and_assume(&pod("b"), &mut s).unwrap();
    let err = sched.schedule_and_assume(&pod("c"), &mut s).unwrap_err();
    assert_eq!(err.reasons, vec![(FilterReason::TooManyPods, 1)]);
    assert_eq!(s.node("n1").unwrap().pod_count(), 2);
    assert_eq!(s0.node("n1").unwrap().pod_count(), 0);
}

#[test]
fn a_batch_fills_the_cluster_and_then_reports_why() {
    let nodes = [
        with_alloc(node("a"), 1000, 8 * GI, 110),
        with_alloc(node("b"), 1000, 8 * GI, 110),
    ];
    let mut s = snap(&nodes);
    let mut sched = Scheduler::default();
    let placed: Vec<_> = (0..5)
        .map(|i| sched.schedule_and_assume(&requesting(&format!("p{i}"), 500, GI), &mut s))
        .collect();
    assert!(placed[..4].iter().all(Result::is_ok));
    assert_eq!(
        placed[4].as_ref().unwrap_err().message,
        "0/2 nodes are available: 2 Insufficient cpu."
    );
}
