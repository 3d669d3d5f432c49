//! Scheduler throughput: the pure decision (filter + score + assume, no I/O)
//! for 10,000 pending pods from a few Deployments on 1,000 and 5,000
//! synthetic edge nodes (mixed arch, some tainted or cordoned, ten zones).
//!
//! The anchor is Kubernetes' published `scheduler_perf` floor (680–810
//! pods/s at 5,000 nodes on large machines) — a figure from Kubernetes'
//! performance dashboards, *not* measured here. The goal is 1,600
//! pods/s end to end on a 2-core machine with durable binding writes; the
//! pure decision must sit far above that so the binding writes dominate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use shturman_api::core::node::NodeRuntimeHandler;
use shturman_api::core::pod::{NodeAffinity, NodeSelectorOperator, NodeSelectorTerm};
use shturman_api::core::{
    Affinity, Container, Node, NodeCondition, NodeConditionType, NodeSelector, NodeSelectorRequirement,
    NodeStatus, NodeSystemInfo, Pod, ResourceRequirements, Taint, TaintEffect, Toleration,
    TolerationOperator,
};
use shturman_api::meta::{ConditionStatus, OwnerReference};
use shturman_control::scheduler::resources::quantities;
use shturman_control::scheduler::{ClusterSnapshot, Config, IMAGE_PLATFORMS_ANNOTATION, Scheduler};

use crate::report::{Report, Row};

/// Kubernetes' published scheduler_perf floor at 5,000 nodes (pods/s).
const KUBE_FLOOR: f64 = 810.0;
const KUBE_ANCHOR: &str = "kube-scheduler_perf floor (published)";
/// No measured loop runs longer than this.
const TIME_CAP: Duration = Duration::from_secs(120);
const MI: i64 = 1024 * 1024;
const GI: i64 = 1024 * MI;

/// Synthetic edge node `i`: 60% arm64 boards, 25% amd64 boxes, 15% 32-bit
/// Pis; ten zones; 10% dedicated to GPU work (NoSchedule), 5% on a flaky
/// link (PreferNoSchedule), 1% cordoned, 1% not ready, 10% without OCI.
pub fn synthetic_node(i: usize) -> Node {
    let (arch, milli_cpu, memory) = match i % 20 {
        0..12 => ("arm64", 4000, 8 * GI),
        12..17 => ("amd64", 8000, 16 * GI),
        _ => ("arm", 4000, 4 * GI),
    };
    let mut n = Node::default();
    n.metadata.name = Some(format!("edge-{i:05}"));
    n.metadata
        .labels
        .insert("topology.kubernetes.io/zone".into(), format!("zone-{}", i % 10));
    if i % 10 == 3 {
        n.spec
            .taints
            .push(taint("dedicated", "gpu", TaintEffect::NoSchedule));
    }
    if i % 20 == 7 {
        n.spec
            .taints
            .push(taint("flaky-link", "", TaintEffect::PreferNoSchedule));
    }
    n.spec.unschedulable = (i % 100 == 42).then_some(true);
    let mut handlers = vec![handler("wasmtime")];
    if i % 10 != 9 {
        handlers.push(handler("runc"));
    }
    n.status = Some(NodeStatus {
        allocatable: quantities(milli_cpu, memory, 110),
        conditions: vec![NodeCondition {
            type_: NodeConditionType::Ready,
            status: ConditionStatus::from_bool(i % 100 != 58),
            last_heartbeat_time: None,
            last_transition_time: None,
            reason: None,
            message: None,
        }],
        node_info: Some(NodeSystemInfo {
            architecture: arch.into(),
            operating_system: "linux".into(),
            ..NodeSystemInfo::default()
        }),
        runtime_handlers: handlers,
        ..NodeStatus::default()
    });
    n
}

fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
    Taint {
        key: key.into(),
        value: (!value.is_empty()).then(|| value.to_string()),
        effect,
        time_added: None,
    }
}

fn handler(name: &str) -> NodeRuntimeHandler {
    NodeRuntimeHandler {
        name: name.into(),
        version: None,
    }
}

/// Pending pod `i` of five Deployments: web (OCI, amd64+arm64 images, 40%),
/// functions (Wasm, 30%), ml (OCI amd64-only, tolerates the GPU taint,
/// 10%), collector (nodeSelector arch=arm64, 10%), cache (required
/// affinity to zones 0–4, 10%).
pub fn synthetic_pod(i: usize) -> Pod {
    let (owner, milli_cpu, memory) = match i % 10 {
        0..4 => ("web", 100, 128 * MI),
        4..7 => ("functions", 50, 32 * MI),
        7 => ("ml", 500, GI),
        8 => ("collector", 100, 64 * MI),
        _ => ("cache", 250, 256 * MI),
    };
    let mut p = Pod::default();
    p.metadata.name = Some(format!("{owner}-{i:05}"));
    p.metadata.namespace = Some("default".into());
    p.metadata.owner_references.push(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: format!("{owner}-rs"),
        uid: format!("uid-{owner}"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    });
    let mut resources = ResourceRequirements::default();
    for (k, v) in quantities(milli_cpu, memory, 0) {
        if k != "pods" {
            resources.requests.insert(k, v);
        }
    }
    p.spec.containers.push(Container {
        name: "main".into(),
        image: format!("registry.example/{owner}:1.0"),
        resources,
        ..Container::default()
    });
    let annotations = &mut p.metadata.annotations;
    match owner {
        "web" => {
            annotations.insert(
                IMAGE_PLATFORMS_ANNOTATION.into(),
                "linux/amd64,linux/arm64".into(),
            );
        }
        "functions" => p.spec.runtime_class_name = Some("wasmtime".into()),
        "ml" => {
            annotations.insert(IMAGE_PLATFORMS_ANNOTATION.into(), "linux/amd64".into());
            p.spec.tolerations.push(Toleration {
                key: Some("dedicated".into()),
                operator: Some(TolerationOperator::Equal),
                value: Some("gpu".into()),
                effect: Some(TaintEffect::NoSchedule),
                toleration_seconds: None,
            });
        }
        "collector" => {
            p.spec.node_selector = BTreeMap::from([("kubernetes.io/arch".into(), "arm64".into())]);
        }
        _ => {
            p.spec.affinity = Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: vec![NodeSelectorRequirement {
                                key: "topology.kubernetes.io/zone".into(),
                                operator: NodeSelectorOperator::In,
                                values: (0..5).map(|z| format!("zone-{z}")).collect(),
                            }],
                        }],
                    }),
                }),
            });
        }
    }
    p
}

struct Figures {
    pods_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    placed: usize,
    unschedulable: usize,
    snapshot_ms: f64,
}

/// Schedules every pod against a fresh snapshot of `nodes`, assuming each.
fn decide_all(nodes: &[Node], pods: &[Pod], config: Config) -> Result<Figures> {
    let t = Instant::now();
    let mut snap = ClusterSnapshot::new(nodes, &[]);
    let snapshot_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut sched = Scheduler::new(config);
    let mut hist = Histogram::<u64>::new(3)?;
    let (mut placed, mut unschedulable) = (0, 0);
    let started = Instant::now();
    for pod in pods {
        if started.elapsed() > TIME_CAP {
            break;
        }
        let t = Instant::now();
        let r = sched.schedule_and_assume(pod, &mut snap);
        hist.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1))?;
        match r {
            Ok(_) => placed += 1,
            Err(_) => unschedulable += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    Ok(Figures {
        pods_per_sec: hist.len() as f64 / secs,
        p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
        placed,
        unschedulable,
        snapshot_ms,
    })
}

/// Runs the pure-decision scenario for each node count and adds its rows.
pub fn run_pure(report: &mut Report, node_counts: &[usize], pods: usize) -> Result<()> {
    let pending: Vec<Pod> = (0..pods).map(synthetic_pod).collect();
    for &n in node_counts {
        let nodes: Vec<Node> = (0..n).map(synthetic_node).collect();
        eprintln!("scheduler: {pods} pending pods on {n} nodes (pure decision)");
        let adaptive = decide_all(&nodes, &pending, Config::default())?;
        let exhaustive = decide_all(
            &nodes,
            &pending,
            Config {
                percentage_of_nodes_to_score: Some(100),
                ..Config::default()
            },
        )?;
        let scenario = format!("scheduler decision, {n} nodes, {pods} pods");
        report.push(
            Row {
                scenario: scenario.clone(),
                metric: "pods/s".into(),
                shturman: adaptive.pods_per_sec,
                anchor_name: KUBE_ANCHOR.into(),
                anchor: Some(KUBE_FLOOR),
                goal: format!(
                    "far above 1,600 (anchor: Kubernetes' published figure, not measured here); \
                 {} placed, {} unschedulable; snapshot built in {:.1} ms",
                    adaptive.placed, adaptive.unschedulable, adaptive.snapshot_ms
                ),
                higher_is_better: true,
            }
            .check(crate::report::Goal::AtLeast(1600.0)),
        );
        report.push(Row {
            scenario: scenario.clone(),
            metric: "p50 µs per decision".into(),
            shturman: adaptive.p50_us,
            anchor_name: "same, every node scored".into(),
            anchor: Some(exhaustive.p50_us),
            goal: "informational".into(),
            higher_is_better: false,
        });
        report.push(Row {
            scenario: scenario.clone(),
            metric: "p99 µs per decision".into(),
            shturman: adaptive.p99_us,
            anchor_name: "same, every node scored".into(),
            anchor: Some(exhaustive.p99_us),
            goal: "informational".into(),
            higher_is_better: false,
        });
        report.push(Row {
            scenario: format!("scheduler decision, every node scored, {n} nodes, {pods} pods"),
            metric: "pods/s".into(),
            shturman: exhaustive.pods_per_sec,
            anchor_name: KUBE_ANCHOR.into(),
            anchor: Some(KUBE_FLOOR),
            goal: format!(
                "reference for percentageOfNodesToScore; {} placed, {} unschedulable",
                exhaustive.placed, exhaustive.unschedulable
            ),
            higher_is_better: true,
        });
    }
    Ok(())
}
