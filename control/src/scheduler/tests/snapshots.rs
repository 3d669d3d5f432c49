//! Building the snapshot, effective requests, assume() and forget().

use shturman_api::core::pod_status::{PodPhase, PodStatus};
use shturman_api::meta::Time;
use shturman_api::quantity::Quantity;

use super::*;
use crate::scheduler::resources::{DEFAULT_MEMORY_REQUEST, DEFAULT_MILLI_CPU_REQUEST, allocatable};
use crate::scheduler::{PodRequests, Resources, SnapshotError};

#[test]
fn effective_requests_sum_containers_and_take_limits_without_requests() {
    let mut p = requesting("p", 250, 64 * MI);
    let mut second = p.spec.containers[0].clone();
    second.name = "sidecar".into();
    second.resources.requests.clear();
    second
        .resources
        .limits
        .insert("cpu".into(), Quantity::from_milli(500));
    second
        .resources
        .limits
        .insert("memory".into(), Quantity::from_bytes(32 * MI));
    p.spec.containers.push(second);
    let r = PodRequests::of(&p);
    assert_eq!(
        r.exact,
        Resources {
            milli_cpu: 750,
            memory: 96 * MI,
            pods: 1
        }
    );
    assert_eq!(r.non_zero, r.exact);
}

#[test]
fn zero_requests_are_zero_for_fitting_and_defaults_for_scoring() {
    let r = PodRequests::of(&requesting("p", 0, 0));
    assert_eq!(
        r.exact,
        Resources {
            milli_cpu: 0,
            memory: 0,
            pods: 1
        }
    );
    assert_eq!(
        r.non_zero,
        Resources {
            milli_cpu: DEFAULT_MILLI_CPU_REQUEST,
            memory: DEFAULT_MEMORY_REQUEST,
            pods: 1
        }
    );
    let mut empty = Pod::default();
    assert_eq!(PodRequests::of(&empty).exact.pods, 1, "a pod always takes a slot");
    empty.spec.containers.clear();
    assert_eq!(PodRequests::of(&empty).non_zero.milli_cpu, 0);
}

#[test]
fn negative_or_huge_quantities_do_not_panic() {
    let mut p = requesting("p", 0, 0);
    let req = &mut p.spec.containers[0].resources.requests;
    req.insert("cpu".into(), Quantity::parse("-5").unwrap());
    req.insert("memory".into(), Quantity::parse("9E").unwrap());
    let mut twice = p.clone();
    let c = twice.spec.containers[0].clone();
    twice.spec.containers.push(c);
    let r = PodRequests::of(&twice);
    assert_eq!(r.exact.milli_cpu, 0);
    assert_eq!(r.exact.memory, i64::MAX, "saturates");
    assert!(place(&twice, &snap(&[node("n1")])).is_err());
}

#[test]
fn allocatable_falls_back_to_capacity_then_zero() {
    let mut n = node("n1");
    assert_eq!(
        allocatable(&n),
        Resources {
            milli_cpu: 4000,
            memory: 8 * GI,
            pods: 110
        }
    );
    let st = status(&mut n);
    st.capacity = st.allocatable.clone();
    st.allocatable.remove("pods");
    assert_eq!(allocatable(&n).pods, 110);
    status(&mut n).capacity.clear();
    assert_eq!(allocatable(&n).pods, 0);
    n.status = None;
    assert_eq!(allocatable(&n), Resources::default());
}

#[test]
fn bound_pods_are_counted_on_their_node_only() {
    let nodes = [node("a"), node("b")];
    let mut finished = bound(requesting("done", 1000, GI), "a");
    finished.status = Some(PodStatus {
        phase: Some(PodPhase::Succeeded),
        ..PodStatus::default()
    });
    let pods = [
        bound(requesting("x", 300, GI), "a"),
        bound(requesting("y", 200, GI), "a"),
        bound(requesting("ghost", 200, GI), "gone"),
        requesting("pending", 999, GI),
        finished,
    ];
    let s = ClusterSnapshot::new(&nodes, &pods);
    let a = s.node("a").unwrap();
    assert_eq!(
        a.requested.exact,
        Resources {
            milli_cpu: 500,
            memory: 2 * GI,
            pods: 2
        }
    );
    assert_eq!(s.node("b").unwrap().pod_count(), 0);
    assert!(s.node("gone").is_none());
}

#[test]
fn assume_and_forget_are_inverse() {
    let mut s = snap(&[with_zone(node("a"), "z1"), node("b")]);
    let p = owned(requesting("p", 300, GI), "rs-1");
    s.assume(&p, "a").unwrap();
    let owner = s.owner_id("rs-1").unwrap();
    let a = s.nodes().iter().position(|n| n.name == "a").unwrap();
    assert_eq!(s.owner_on_node(owner, a), 1);
    assert_eq!(s.owner_in_zone(owner, s.node("a").unwrap().zone.unwrap()), 1);
    assert_eq!(s.node("a").unwrap().requested.exact.milli_cpu, 300);
    s.forget(&p, "a").unwrap();
    assert_eq!(s.owner_on_node(owner, a), 0);
    assert_eq!(s.owner_in_zone(owner, 0), 0);
    assert_eq!(s.node("a").unwrap().requested, PodRequests::default());
    assert_eq!(
        s.assume(&p, "nope"),
        Err(SnapshotError::UnknownNode("nope".into()))
    );
    assert!(s.forget(&p, "nope").is_err());
    s.forget(&owned(pod("never"), "rs-unknown"), "b").unwrap();
    assert!(s.owner_id("rs-unknown").is_none(), "forgetting never interns");
}

#[test]
fn pods_being_deleted_hold_resources_but_do_not_count_for_spreading() {
    let mut p = bound(owned(requesting("p", 300, GI), "rs-1"), "a");
    p.metadata.deletion_timestamp = Some(Time::parse("2025-01-01T00:00:00Z").unwrap());
    let s = ClusterSnapshot::new(&[node("a")], &[p]);
    assert_eq!(s.node("a").unwrap().requested.exact.milli_cpu, 300);
    assert!(s.owner_id("rs-1").is_none());
}

#[test]
fn pods_without_a_controller_do_not_spread() {
    let mut p = owned(pod("p"), "rs-1");
    p.metadata.owner_references[0].controller = None;
    let s = ClusterSnapshot::new(&[node("a")], &[bound(p, "a")]);
    assert!(s.owner_id("rs-1").is_none());
}

#[test]
fn node_facts_are_precomputed() {
    let n = with_taint(
        with_taint(
            with_zone(with_runtimes(node("pi"), &["wasmtime", "kata"]), "farm"),
            "a",
            "1",
            shturman_api::core::TaintEffect::PreferNoSchedule,
        ),
        "b",
        "2",
        shturman_api::core::TaintEffect::NoExecute,
    );
    let n = with_arch(n, "aarch64");
    let s = snap(&[n.clone(), n]);
    assert_eq!(s.len(), 1, "a duplicate name keeps the first node");
    let info = s.node("pi").unwrap();
    assert_eq!(info.arch, "arm64");
    assert_eq!(info.os, "linux");
    assert_eq!(
        info.labels.get("kubernetes.io/hostname").map(String::as_str),
        Some("pi")
    );
    assert_eq!(s.zones(), ["farm"]);
    assert_eq!(info.zone, Some(0));
    assert_eq!(info.prefer_taints.len(), 1);
    assert_eq!(info.hard_taints.len(), 1);
    assert!(info.runtimes.contains(crate::scheduler::Runtime::Wasmtime));
    assert!(!info.runtimes.contains(crate::scheduler::Runtime::Containerd));
    assert!(info.ready && !info.unschedulable);
}

#[test]
fn build_takes_references_from_shared_caches() {
    let nodes = [std::sync::Arc::new(node("a"))];
    let pods = [std::sync::Arc::new(bound(pod("x"), "a"))];
    let s = ClusterSnapshot::build(nodes.iter().map(|n| &**n), pods.iter().map(|p| &**p));
    assert_eq!(s.node("a").unwrap().pod_count(), 1);
}
