//! Amounts the scheduler adds and compares: a pod's effective requests and a
//! node's allocatable, as whole integers (millicores, bytes, pods).

use std::collections::BTreeMap;

use shturman_api::core::{Node, Pod};
use shturman_api::quantity::Quantity;

/// CPU Kubernetes assumes, for scoring only, for a container that requests none
/// (`DefaultMilliCPURequest`), so best-effort pods still spread.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory Kubernetes assumes, for scoring only, for a container that requests
/// none (`DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// CPU, memory and a pod count: what a pod asks for or a node offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub milli_cpu: i64,
    /// Bytes.
    pub memory: i64,
    /// Pods.
    pub pods: i64,
}

impl Resources {
    /// `self + other`, saturating (quantities are user input).
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_add(other.milli_cpu),
            memory: self.memory.saturating_add(other.memory),
            pods: self.pods.saturating_add(other.pods),
        }
    }

    /// `self - other`, saturating.
    pub fn minus(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_sub(other.milli_cpu),
            memory: self.memory.saturating_sub(other.memory),
            pods: self.pods.saturating_sub(other.pods),
        }
    }
}

/// What one pod asks of a node: the exact requests (for fitting) and the
/// requests with Kubernetes' non-zero defaults (for least-allocated scoring).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodRequests {
    /// Sum of the containers' requests; `pods` is always 1.
    pub exact: Resources,
    /// As `exact`, but a container requesting no cpu (memory) counts
    /// [`DEFAULT_MILLI_CPU_REQUEST`] ([`DEFAULT_MEMORY_REQUEST`]).
    pub non_zero: Resources,
}

impl PodRequests {
    /// Kubernetes' effective requests: the sum over containers, where a
    /// container with a limit and no request requests its limit (api
    /// defaulting already does this; repeated here so undefaulted pods agree).
    /// A zero request counts as zero; the pod always counts as one pod.
    pub fn of(pod: &Pod) -> PodRequests {
        let mut exact = Resources {
            pods: 1,
            ..Resources::default()
        };
        let mut non_zero = exact;
        for c in &pod.spec.containers {
            let amount = |name: &str| {
                c.resources
                    .requests
                    .get(name)
                    .or_else(|| c.resources.limits.get(name))
            };
            let cpu = amount("cpu").map_or(0, |q| non_negative(q.milli_value()));
            let memory = amount("memory").map_or(0, |q| non_negative(q.value()));
            exact.milli_cpu = exact.milli_cpu.saturating_add(cpu);
            exact.memory = exact.memory.saturating_add(memory);
            let cpu_nz = if cpu == 0 { DEFAULT_MILLI_CPU_REQUEST } else { cpu };
            let memory_nz = if memory == 0 {
                DEFAULT_MEMORY_REQUEST
            } else {
                memory
            };
            non_zero.milli_cpu = non_zero.milli_cpu.saturating_add(cpu_nz);
            non_zero.memory = non_zero.memory.saturating_add(memory_nz);
        }
        PodRequests { exact, non_zero }
    }

    /// `self + other`, field by field.
    pub fn plus(self, other: PodRequests) -> PodRequests {
        PodRequests {
            exact: self.exact.plus(other.exact),
            non_zero: self.non_zero.plus(other.non_zero),
        }
    }

    /// `self - other`, field by field.
    pub fn minus(self, other: PodRequests) -> PodRequests {
        PodRequests {
            exact: self.exact.minus(other.exact),
            non_zero: self.non_zero.minus(other.non_zero),
        }
    }
}

/// A node's allocatable cpu, memory and pods. A resource missing from
/// `status.allocatable` falls back to `status.capacity`, and to 0 when the
/// node reports neither (so a node that reports nothing takes no pods, as in
/// Kubernetes).
pub fn allocatable(node: &Node) -> Resources {
    let Some(status) = &node.status else {
        return Resources::default();
    };
    let get = |name: &str| -> Option<&Quantity> {
        status.allocatable.get(name).or_else(|| status.capacity.get(name))
    };
    Resources {
        milli_cpu: get("cpu").map_or(0, |q| non_negative(q.milli_value())),
        memory: get("memory").map_or(0, |q| non_negative(q.value())),
        pods: get("pods").map_or(0, |q| non_negative(q.value())),
    }
}

fn non_negative(v: i64) -> i64 {
    v.max(0)
}

/// Builds a `{cpu, memory, pods}` quantity map (tests and benchmarks).
pub fn quantities(milli_cpu: i64, memory: i64, pods: i64) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), Quantity::from_milli(milli_cpu)),
        ("memory".to_string(), Quantity::from_bytes(memory)),
        ("pods".to_string(), Quantity::from_value(pods)),
    ])
}
