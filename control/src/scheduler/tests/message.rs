//! The `PodScheduled=False` message: wording, counting and order.

use std::collections::HashMap;

use shturman_api::core::TaintEffect;

use super::*;
use crate::scheduler::unschedulable::NO_NODES_MESSAGE;
use crate::scheduler::{FilterReason, REASON_UNSCHEDULABLE, Runtime, Unschedulable};

#[test]
fn every_reason_has_kubernetes_wording_or_ours() {
    let cases = [
        (FilterReason::InsufficientCpu, "Insufficient cpu"),
        (FilterReason::InsufficientMemory, "Insufficient memory"),
        (FilterReason::TooManyPods, "Too many pods"),
        (
            FilterReason::NodeAffinity,
            "node(s) didn't match Pod's node affinity/selector",
        ),
        (
            FilterReason::UntoleratedTaint {
                key: "dedicated".into(),
                value: "edge".into(),
            },
            "node(s) had untolerated taint {dedicated: edge}",
        ),
        (FilterReason::Unschedulable, "node(s) were unschedulable"),
        (FilterReason::NotReady, "node(s) were not ready"),
        (
            FilterReason::MissingRuntime(Runtime::Wasmtime),
            "node(s) don't offer the wasmtime runtime",
        ),
        (
            FilterReason::MissingRuntime(Runtime::Containerd),
            "node(s) don't offer the containerd runtime",
        ),
        (
            FilterReason::PlatformMismatch,
            "node(s) didn't match the image's platforms",
        ),
    ];
    for (reason, text) in cases {
        assert_eq!(reason.to_string(), text);
    }
    assert_eq!(REASON_UNSCHEDULABLE, "Unschedulable");
}

#[test]
fn the_issue_example_reads_as_written() {
    let small = |name: &str| with_alloc(node(name), 4000, GI, 110);
    let nodes = [
        small("a"),
        small("b"),
        small("c"),
        with_label(node("d"), "site", "farm"),
        with_label(node("e"), "site", "farm"),
    ];
    let nodes: Vec<Node> = nodes
        .into_iter()
        .enumerate()
        .map(|(i, n)| if i < 3 { with_label(n, "site", "depot") } else { n })
        .collect();
    let p = selecting(requesting("p", 100, 2 * GI), "site", "depot");
    let err = place(&p, &snap(&nodes)).unwrap_err();
    assert_eq!(
        err.message,
        "0/5 nodes are available: 3 Insufficient memory, 2 node(s) didn't match Pod's node affinity/selector."
    );
    assert_eq!(err.to_string(), err.message);
    assert_eq!(err.nodes, 5);
    assert_eq!(err.count(&FilterReason::InsufficientMemory), 3);
    assert_eq!(err.count(&FilterReason::NodeAffinity), 2);
    assert_eq!(err.count(&FilterReason::InsufficientCpu), 0);
}

#[test]
fn reasons_sort_by_count_then_text_and_ten_comes_before_nine() {
    let counts = HashMap::from([
        (FilterReason::NotReady, 9),
        (FilterReason::Unschedulable, 10),
        (FilterReason::InsufficientMemory, 2),
        (FilterReason::InsufficientCpu, 2),
        (FilterReason::NodeAffinity, 2),
        (FilterReason::TooManyPods, 1),
    ]);
    let err = Unschedulable::from_counts(20, counts);
    assert_eq!(
        err.message,
        "0/20 nodes are available: 10 node(s) were unschedulable, 9 node(s) were not ready, \
         2 Insufficient cpu, 2 Insufficient memory, 2 node(s) didn't match Pod's node affinity/selector, \
         1 Too many pods."
    );
    let order: Vec<usize> = err.reasons.iter().map(|(_, c)| *c).collect();
    assert_eq!(order, vec![10, 9, 2, 2, 2, 1]);
}

#[test]
fn distinct_taints_count_separately_and_a_node_short_of_both_counts_twice() {
    let nodes = [
        with_taint(node("a"), "dedicated", "edge", TaintEffect::NoSchedule),
        with_taint(node("b"), "dedicated", "edge", TaintEffect::NoExecute),
        with_taint(node("c"), "dedicated", "ml", TaintEffect::NoSchedule),
        with_alloc(node("d"), 100, MI, 110),
    ];
    let err = place(&requesting("p", 1000, GI), &snap(&nodes)).unwrap_err();
    assert_eq!(
        err.message,
        "0/4 nodes are available: 2 node(s) had untolerated taint {dedicated: edge}, 1 Insufficient cpu, \
         1 Insufficient memory, 1 node(s) had untolerated taint {dedicated: ml}."
    );
}

#[test]
fn every_node_counts_even_when_only_a_share_would_be_scored() {
    let nodes: Vec<Node> = (0..1000).map(|i| not_ready(node(&format!("n{i:04}")))).collect();
    let err = Scheduler::default()
        .schedule(&pod("p"), &snap(&nodes))
        .unwrap_err();
    assert_eq!(
        err.message,
        "0/1000 nodes are available: 1000 node(s) were not ready."
    );
}

#[test]
fn an_empty_cluster_says_so_as_kubernetes_does() {
    let err = place(&pod("p"), &snap(&[])).unwrap_err();
    assert_eq!(err.message, NO_NODES_MESSAGE);
    assert_eq!(err.message, "no nodes available to schedule pods");
    assert_eq!(err.nodes, 0);
}
