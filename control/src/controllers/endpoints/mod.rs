//! The endpoints controller's decision core, after Kubernetes'
//! `endpoints_controller.go`: for a Service with a selector, the Endpoints
//! of the same name list every matching pod that has an address — ready
//! pods under `addresses`, the others under `notReadyAddresses` — with its
//! node and a reference to the pod, grouped into subsets of addresses that
//! serve the same ports.
//!
//! - A port's `targetPort` is a number, or the name of a container port of
//!   the same protocol: resolved per pod, and a pod that lacks the named
//!   port is left out of that port (Kubernetes' `FindPort`).
//! - Terminating pods (`deletionTimestamp`) and finished ones (Succeeded,
//!   Failed) are left out; so are pods without an address. A Wasm pod
//!   shares its node's network: without a `podIP` its `hostIP` is its
//!   address.
//! - A Service without a selector keeps the Endpoints its user writes; the
//!   controller never touches them. Endpoints the controller writes carry
//!   [`MANAGED_BY_LABEL`] and go when their Service goes.
//!
//! [`plan`] is pure; [`run`] executes it.

pub mod run;

use std::collections::BTreeMap;

use shturman_api::core::endpoints::{HEADLESS_LABEL, MANAGED_BY_CONTROLLER, MANAGED_BY_LABEL};
use shturman_api::core::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, PodPhase, Protocol,
    Service, ServicePort,
};
use shturman_api::intstr::IntOrString;
use shturman_api::meta::{Object, ObjectMeta};

/// What the executor does for one Service key.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create these Endpoints (none exist).
    Create(Box<Endpoints>),
    /// Replace the Endpoints with these (they carry the version they replace).
    Update(Box<Endpoints>),
    /// Delete the managed Endpoints of a Service that is gone.
    Delete { uid: Option<String> },
}

/// Plans one pass for the Service key `namespace/name`: `service` and
/// `existing` Endpoints as cached (`None`: absent), `pods` the pods of the
/// namespace. `None`: nothing to do.
pub fn plan(service: Option<&Service>, existing: Option<&Endpoints>, pods: &[&Pod]) -> Option<Action> {
    let Some(svc) = service else {
        return existing.filter(|e| e.is_managed()).map(|e| Action::Delete {
            uid: e.metadata.uid.clone(),
        });
    };
    if svc.spec.selector.is_empty() {
        return None;
    }
    let subsets = subsets(svc, pods);
    let labels = labels(svc);
    match existing {
        Some(e) if e.subsets == subsets && e.metadata.labels == labels => None,
        Some(e) => {
            let mut next = e.clone();
            next.subsets = subsets;
            next.metadata.labels = labels;
            Some(Action::Update(Box::new(next)))
        }
        None => {
            let mut e = Endpoints {
                metadata: ObjectMeta {
                    name: svc.metadata.name.clone(),
                    namespace: svc.metadata.namespace.clone(),
                    labels,
                    ..ObjectMeta::default()
                },
                subsets,
                ..Endpoints::default()
            };
            e.set_type_meta();
            Some(Action::Create(Box::new(e)))
        }
    }
}

/// The Endpoints' labels: the Service's, the managed-by mark and, for a
/// headless Service, the headless mark.
pub fn labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone();
    l.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_CONTROLLER.into());
    if svc.spec.is_headless() {
        l.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        l.remove(HEADLESS_LABEL);
    }
    l
}

/// The address of a pod that can serve: its `podIP`, or for a Wasm pod
/// (which shares its node's network) its `hostIP`.
pub fn pod_address(pod: &Pod) -> Option<&str> {
    fn nonempty(s: &Option<String>) -> Option<&str> {
        s.as_deref().filter(|s| !s.is_empty())
    }
    let status = pod.status.as_ref()?;
    nonempty(&status.pod_ip).or_else(|| {
        if pod.is_wasm() {
            nonempty(&status.host_ip)
        } else {
            None
        }
    })
}

/// Whether `pod` belongs in `svc`'s Endpoints at all: selected, not
/// terminating, not finished, with an address.
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    let sel = &svc.spec.selector;
    !sel.is_empty()
        && pod.metadata.namespace() == svc.metadata.namespace()
        && sel.iter().all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.phase(), PodPhase::Succeeded | PodPhase::Failed)
        && pod_address(pod).is_some()
}

/// The port `pod` serves `port` on: the target number, or the container
/// port of that name and protocol (`None` when the pod has none).
pub fn resolve_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match port.target() {
        IntOrString::Int(n) => Some(n),
        IntOrString::String(name) => pod
            .spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str()) && p.protocol.unwrap_or_default() == port.protocol()
            })
            .map(|p| p.container_port),
    }
}

fn protocol_key(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

/// A port's identity in a subset: `(name, port, protocol)`; `None` for the
/// port-less subset of a headless Service without ports.
type PortKey = Option<(String, i32, &'static str)>;
/// An address's identity: `(ip, pod name)`.
type AddrKey = (String, String);

/// The subsets `svc`'s Endpoints must hold, repacked as Kubernetes'
/// `RepackSubsets`: addresses that serve the same set of ports share a
/// subset. Sorted, so an unchanged set of pods gives equal subsets.
pub fn subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let mut addresses: BTreeMap<AddrKey, EndpointAddress> = BTreeMap::new();
    let mut by_port: BTreeMap<PortKey, BTreeMap<AddrKey, bool>> = BTreeMap::new();
    for pod in pods.iter().copied().filter(|p| selects(svc, p)) {
        let Some(ip) = pod_address(pod) else { continue };
        let key: AddrKey = (ip.to_string(), pod.metadata.name().to_string());
        let ready = pod.status.as_ref().is_some_and(|s| s.is_ready());
        let mut serves = false;
        if svc.spec.ports.is_empty() {
            by_port.entry(None).or_default().insert(key.clone(), ready);
            serves = true;
        }
        for sp in &svc.spec.ports {
            if let Some(n) = resolve_port(pod, sp) {
                let pk = Some((sp.name().to_string(), n, protocol_key(sp.protocol())));
                by_port.entry(pk).or_default().insert(key.clone(), ready);
                serves = true;
            }
        }
        if serves {
            addresses.insert(
                key,
                EndpointAddress {
                    ip: ip.to_string(),
                    hostname: None,
                    node_name: pod.spec.node_name.clone(),
                    target_ref: Some(ObjectReference {
                        kind: Some("Pod".into()),
                        namespace: pod.metadata.namespace.clone(),
                        name: pod.metadata.name.clone(),
                        uid: pod.metadata.uid.clone(),
                        ..ObjectReference::default()
                    }),
                },
            );
        }
    }
    // Ports grouped by the exact set of (address, ready) that serves them.
    let mut groups: BTreeMap<Vec<(AddrKey, bool)>, Vec<PortKey>> = BTreeMap::new();
    for (port, addrs) in by_port {
        groups.entry(addrs.into_iter().collect()).or_default().push(port);
    }
    groups
        .into_iter()
        .map(|(addrs, ports)| {
            let pick = |want: bool| -> Vec<EndpointAddress> {
                addrs
                    .iter()
                    .filter(|(_, ready)| *ready == want)
                    .filter_map(|(k, _)| addresses.get(k).cloned())
                    .collect()
            };
            EndpointSubset {
                addresses: pick(true),
                not_ready_addresses: pick(false),
                ports: ports
                    .into_iter()
                    .flatten()
                    .map(|(name, port, proto)| EndpointPort {
                        name: (!name.is_empty()).then_some(name),
                        port,
                        protocol: Some(if proto == "UDP" {
                            Protocol::Udp
                        } else {
                            Protocol::Tcp
                        }),
                        app_protocol: None,
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
