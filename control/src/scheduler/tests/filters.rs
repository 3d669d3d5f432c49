//! Every filter, alone: what passes, what fails, and the reason it gives.

use shturman_api::core::TaintEffect;
use shturman_api::core::pod::NodeSelectorOperator;
use shturman_api::core::pod_status::{PodPhase, PodStatus};

use super::*;
use crate::scheduler::{FilterReason, IMAGE_PLATFORMS_ANNOTATION, Runtime};

/// The single reason one node gives for rejecting `p`.
fn only_reason(p: &Pod, n: Node) -> Vec<FilterReason> {
    let err = place(p, &snap(&[n])).expect_err("the node should reject the pod");
    assert_eq!(err.nodes, 1);
    err.reasons
        .into_iter()
        .map(|(r, c)| {
            assert_eq!(c, 1);
            r
        })
        .collect()
}

#[test]
fn a_ready_node_with_room_takes_the_pod() {
    assert_eq!(place(&pod("p"), &snap(&[node("n1")])).unwrap(), "n1");
}

#[test]
fn not_ready_nodes_are_filtered() {
    assert_eq!(
        only_reason(&pod("p"), not_ready(node("n1"))),
        vec![FilterReason::NotReady]
    );
    let mut no_status = node("n1");
    no_status.status = None;
    assert_eq!(only_reason(&pod("p"), no_status), vec![FilterReason::NotReady]);
}

#[test]
fn cordoned_nodes_are_filtered_unless_the_cordon_is_tolerated() {
    assert_eq!(
        only_reason(&pod("p"), cordoned(node("n1"))),
        vec![FilterReason::Unschedulable]
    );
    let p = tolerating(
        pod("p"),
        "node.kubernetes.io/unschedulable",
        None,
        Some(TaintEffect::NoSchedule),
    );
    assert_eq!(place(&p, &snap(&[cordoned(node("n1"))])).unwrap(), "n1");
}

#[test]
fn no_schedule_and_no_execute_taints_need_a_toleration() {
    for effect in [TaintEffect::NoSchedule, TaintEffect::NoExecute] {
        let n = with_taint(node("n1"), "dedicated", "edge", effect);
        assert_eq!(
            only_reason(&pod("p"), n.clone()),
            vec![FilterReason::UntoleratedTaint {
                key: "dedicated".into(),
                value: "edge".into()
            }]
        );
        let equal = tolerating(pod("p"), "dedicated", Some("edge"), Some(effect));
        assert_eq!(place(&equal, &snap(std::slice::from_ref(&n))).unwrap(), "n1");
        let exists_any_effect = tolerating(pod("p"), "dedicated", None, None);
        assert_eq!(
            place(&exists_any_effect, &snap(std::slice::from_ref(&n))).unwrap(),
            "n1"
        );
        let wrong_value = tolerating(pod("p"), "dedicated", Some("cloud"), Some(effect));
        assert!(place(&wrong_value, &snap(&[n])).is_err());
    }
}

#[test]
fn a_toleration_for_another_effect_does_not_tolerate() {
    let n = with_taint(node("n1"), "dedicated", "edge", TaintEffect::NoExecute);
    let p = tolerating(pod("p"), "dedicated", Some("edge"), Some(TaintEffect::NoSchedule));
    assert!(place(&p, &snap(&[n])).is_err());
}

#[test]
fn the_first_untolerated_taint_is_reported_with_an_empty_value_shown_empty() {
    let n = with_taint(node("n1"), "gpu", "", TaintEffect::NoSchedule);
    let n = with_taint(n, "dedicated", "edge", TaintEffect::NoSchedule);
    let err = place(&pod("p"), &snap(&[n])).unwrap_err();
    assert_eq!(
        err.message,
        "0/1 nodes are available: 1 node(s) had untolerated taint {gpu: }."
    );
    let p = tolerating(pod("p"), "gpu", None, None);
    let n = with_taint(
        with_taint(node("n1"), "gpu", "", TaintEffect::NoSchedule),
        "dedicated",
        "edge",
        TaintEffect::NoSchedule,
    );
    assert_eq!(
        only_reason(&p, n),
        vec![FilterReason::UntoleratedTaint {
            key: "dedicated".into(),
            value: "edge".into()
        }]
    );
}

#[test]
fn prefer_no_schedule_taints_do_not_filter() {
    let n = with_taint(node("n1"), "flaky-link", "", TaintEffect::PreferNoSchedule);
    assert_eq!(place(&pod("p"), &snap(&[n])).unwrap(), "n1");
}

#[test]
fn node_selector_must_match_every_label() {
    let n = with_label(with_label(node("n1"), "site", "depot"), "tier", "edge");
    assert_eq!(
        place(
            &selecting(pod("p"), "site", "depot"),
            &snap(std::slice::from_ref(&n))
        )
        .unwrap(),
        "n1"
    );
    let both = selecting(selecting(pod("p"), "site", "depot"), "tier", "edge");
    assert_eq!(place(&both, &snap(std::slice::from_ref(&n))).unwrap(), "n1");
    let one_wrong = selecting(selecting(pod("p"), "site", "depot"), "tier", "core");
    assert_eq!(
        only_reason(&one_wrong, n.clone()),
        vec![FilterReason::NodeAffinity]
    );
    assert_eq!(
        only_reason(&selecting(pod("p"), "absent", "x"), n),
        vec![FilterReason::NodeAffinity]
    );
}

#[test]
fn arch_and_os_selectors_use_the_reported_system_info_when_labels_are_missing() {
    let amd = node("amd");
    let arm = with_arch(node("arm"), "arm64");
    let s = snap(&[amd, arm]);
    assert_eq!(
        place(&selecting(pod("p"), "kubernetes.io/arch", "arm64"), &s).unwrap(),
        "arm"
    );
    assert_eq!(
        place(&selecting(pod("p"), "kubernetes.io/arch", "amd64"), &s).unwrap(),
        "amd"
    );
    assert!(place(&selecting(pod("p"), "kubernetes.io/os", "linux"), &s).is_ok());
    let err = place(&selecting(pod("p"), "kubernetes.io/os", "windows"), &s).unwrap_err();
    assert_eq!(err.count(&FilterReason::NodeAffinity), 2);
}

#[test]
fn a_label_the_node_carries_wins_over_system_info() {
    let n = with_label(node("n1"), "kubernetes.io/arch", "arm64");
    assert_eq!(
        place(&selecting(pod("p"), "kubernetes.io/arch", "arm64"), &snap(&[n])).unwrap(),
        "n1"
    );
}

#[test]
fn the_hostname_label_is_derived_from_the_name() {
    let s = snap(&[node("a"), node("b")]);
    assert_eq!(
        place(&selecting(pod("p"), "kubernetes.io/hostname", "b"), &s).unwrap(),
        "b"
    );
}

#[test]
fn required_node_affinity_must_match() {
    let n = with_label(node("n1"), "site", "depot");
    let ok = requiring(pod("p"), "site", NodeSelectorOperator::In, &["depot", "farm"]);
    assert_eq!(place(&ok, &snap(std::slice::from_ref(&n))).unwrap(), "n1");
    let not_in = requiring(pod("p"), "site", NodeSelectorOperator::NotIn, &["depot"]);
    assert_eq!(only_reason(&not_in, n.clone()), vec![FilterReason::NodeAffinity]);
    let missing = requiring(pod("p"), "gpu", NodeSelectorOperator::Exists, &[]);
    assert_eq!(only_reason(&missing, n), vec![FilterReason::NodeAffinity]);
}

#[test]
fn wasm_pods_need_wasmtime() {
    let oci_only = with_runtimes(node("n1"), &["runc"]);
    assert_eq!(
        only_reason(&wasm(pod("p")), oci_only),
        vec![FilterReason::MissingRuntime(Runtime::Wasmtime)]
    );
    let mut by_image = pod("p");
    by_image.spec.containers[0].image = "ghcr.io/acme/hello.wasm".into();
    assert_eq!(
        only_reason(&by_image, with_runtimes(node("n1"), &["runc"])),
        vec![FilterReason::MissingRuntime(Runtime::Wasmtime)]
    );
    assert!(
        place(
            &wasm(pod("p")),
            &snap(&[with_runtimes(node("n1"), &["wasmtime"])])
        )
        .is_ok()
    );
}

#[test]
fn oci_pods_need_containerd_reported_as_runc_or_containerd() {
    assert_eq!(
        only_reason(&pod("p"), with_runtimes(node("n1"), &["wasmtime"])),
        vec![FilterReason::MissingRuntime(Runtime::Containerd)]
    );
    assert_eq!(
        only_reason(&pod("p"), with_runtimes(node("n1"), &[])),
        vec![FilterReason::MissingRuntime(Runtime::Containerd)]
    );
    assert!(place(&pod("p"), &snap(&[with_runtimes(node("n1"), &["containerd"])])).is_ok());
    assert!(place(&pod("p"), &snap(&[with_runtimes(node("n1"), &["runc"])])).is_ok());
}

#[test]
fn oci_pods_go_only_where_their_images_run() {
    let s = snap(&[
        node("amd"),
        with_arch(node("arm"), "arm64"),
        with_arch(node("pi"), "arm"),
    ]);
    let arm64 = annotated(pod("p"), IMAGE_PLATFORMS_ANNOTATION, "linux/arm64");
    assert_eq!(place(&arm64, &s).unwrap(), "arm");
    let armv7 = annotated(pod("p"), IMAGE_PLATFORMS_ANNOTATION, "linux/arm/v7");
    assert_eq!(place(&armv7, &s).unwrap(), "pi");
    let riscv = annotated(pod("p"), IMAGE_PLATFORMS_ANNOTATION, "linux/riscv64");
    let err = place(&riscv, &s).unwrap_err();
    assert_eq!(
        err.message,
        "0/3 nodes are available: 3 node(s) didn't match the image's platforms."
    );
    let windows = annotated(pod("p"), IMAGE_PLATFORMS_ANNOTATION, "windows/amd64");
    assert_eq!(
        place(&windows, &s)
            .unwrap_err()
            .count(&FilterReason::PlatformMismatch),
        3
    );
}

#[test]
fn a_node_of_unknown_arch_does_not_take_a_pod_with_known_platforms() {
    let mut n = node("n1");
    status(&mut n).node_info = None;
    let p = annotated(pod("p"), IMAGE_PLATFORMS_ANNOTATION, "linux/amd64");
    assert_eq!(only_reason(&p, n.clone()), vec![FilterReason::PlatformMismatch]);
    assert!(
        place(&pod("q"), &snap(&[n])).is_ok(),
        "unknown platforms go anywhere"
    );
}

#[test]
fn wasm_pods_are_arch_neutral() {
    let s = snap(&[with_arch(node("riscv"), "riscv64")]);
    let p = annotated(wasm(pod("p")), IMAGE_PLATFORMS_ANNOTATION, "linux/amd64");
    assert_eq!(place(&p, &s).unwrap(), "riscv");
}

#[test]
fn an_invalid_platform_annotation_is_reported_not_ignored() {
    let p = annotated(pod("p"), IMAGE_PLATFORMS_ANNOTATION, "amd64");
    let err = place(&p, &snap(&[node("n1"), node("n2")])).unwrap_err();
    assert!(err.pod_problem.is_some());
    assert!(err.reasons.is_empty());
    assert!(
        err.message
            .starts_with("0/2 nodes are available: invalid platform \"amd64\": it has no architecture;"),
        "{}",
        err.message
    );
    assert!(err.message.ends_with('.'));
}

#[test]
fn cpu_memory_and_pod_count_must_fit() {
    let small = with_alloc(node("n1"), 500, GI, 2);
    assert_eq!(
        only_reason(&requesting("p", 600, MI), small.clone()),
        vec![FilterReason::InsufficientCpu]
    );
    assert_eq!(
        only_reason(&requesting("p", 100, 2 * GI), small.clone()),
        vec![FilterReason::InsufficientMemory]
    );
    assert_eq!(
        only_reason(&requesting("p", 600, 2 * GI), small.clone()),
        vec![FilterReason::InsufficientCpu, FilterReason::InsufficientMemory]
    );
    assert_eq!(
        place(&requesting("p", 500, GI), &snap(std::slice::from_ref(&small))).unwrap(),
        "n1",
        "an exact fit fits"
    );
    let full = with_alloc(node("n1"), 500, GI, 0);
    assert_eq!(
        only_reason(&requesting("p", 600, 2 * GI), full),
        vec![
            FilterReason::InsufficientCpu,
            FilterReason::InsufficientMemory,
            FilterReason::TooManyPods
        ],
        "all three count, listed by text"
    );
}

#[test]
fn bound_pods_use_up_room_and_finished_pods_do_not() {
    let n = with_alloc(node("n1"), 1000, 4 * GI, 110);
    let running = bound(requesting("a", 800, GI), "n1");
    let s = ClusterSnapshot::new(std::slice::from_ref(&n), std::slice::from_ref(&running));
    assert!(place(&requesting("p", 300, GI), &s).is_err());
    assert!(place(&requesting("p", 200, GI), &s).is_ok());
    for phase in [PodPhase::Succeeded, PodPhase::Failed] {
        let mut done = running.clone();
        done.status = Some(PodStatus {
            phase: Some(phase),
            ..PodStatus::default()
        });
        let s = ClusterSnapshot::new(std::slice::from_ref(&n), &[done]);
        assert!(place(&requesting("p", 1000, GI), &s).is_ok());
    }
}

#[test]
fn zero_requests_fit_an_overcommitted_node_but_still_take_a_pod_slot() {
    let n = with_alloc(node("n1"), 0, 0, 1);
    let best_effort = requesting("p", 0, 0);
    assert_eq!(
        place(&best_effort, &snap(std::slice::from_ref(&n))).unwrap(),
        "n1"
    );
    let s = ClusterSnapshot::new(&[n], &[bound(requesting("a", 0, 0), "n1")]);
    assert_eq!(
        place(&best_effort, &s).unwrap_err().reasons,
        vec![(FilterReason::TooManyPods, 1)]
    );
}

#[test]
fn a_limit_without_a_request_counts_as_the_request() {
    let mut p = requesting("p", 0, 0);
    let limits = &mut p.spec.containers[0].resources.limits;
    limits.insert("cpu".into(), shturman_api::quantity::Quantity::from_milli(2000));
    let n = with_alloc(node("n1"), 1000, 4 * GI, 110);
    assert_eq!(only_reason(&p, n), vec![FilterReason::InsufficientCpu]);
}

#[test]
fn filters_run_in_order_and_the_first_failure_decides() {
    // Not ready and cordoned and tainted and too small: only "not ready" counts.
    let n = with_alloc(
        with_taint(cordoned(not_ready(node("n1"))), "k", "v", TaintEffect::NoSchedule),
        1,
        1,
        0,
    );
    assert_eq!(only_reason(&pod("p"), n), vec![FilterReason::NotReady]);
    let n = with_alloc(
        with_taint(cordoned(node("n1")), "k", "v", TaintEffect::NoSchedule),
        1,
        1,
        0,
    );
    assert_eq!(only_reason(&pod("p"), n), vec![FilterReason::Unschedulable]);
    let n = with_alloc(
        with_runtimes(with_taint(node("n1"), "k", "v", TaintEffect::NoSchedule), &[]),
        1,
        1,
        0,
    );
    assert_eq!(
        only_reason(&selecting(pod("p"), "x", "y"), n),
        vec![FilterReason::UntoleratedTaint {
            key: "k".into(),
            value: "v".into()
        }]
    );
    let n = with_alloc(with_runtimes(node("n1"), &[]), 1, 1, 0);
    assert_eq!(
        only_reason(&selecting(pod("p"), "x", "y"), n),
        vec![FilterReason::NodeAffinity]
    );
    let n = with_alloc(with_runtimes(with_arch(node("n1"), "arm64"), &[]), 1, 1, 0);
    let p = annotated(pod("p"), IMAGE_PLATFORMS_ANNOTATION, "linux/amd64");
    assert_eq!(
        only_reason(&p, n),
        vec![FilterReason::MissingRuntime(Runtime::Containerd)]
    );
    let n = with_alloc(with_arch(node("n1"), "arm64"), 1, 1, 0);
    assert_eq!(only_reason(&p, n), vec![FilterReason::PlatformMismatch]);
}
