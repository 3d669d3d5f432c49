//! What every agent's proxy must know about Services, pure: a Service and
//! its Endpoints as one [`ServiceRoute`], where it is published, a content
//! hash so an unchanged route is not sent again, and the [`ServiceSet`] of
//! every Service's key.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use shturman_api::core::{EndpointAddress, Endpoints, Service};
use shturman_api::wire::{
    RouteEndpoint, RoutePort, ServiceRef, ServiceRoute, ServiceSet, ServiceTopic, valid_segment,
};

/// Where `svc`'s route is published; `None` when its names cannot stand in
/// a topic (never for a valid Service).
pub fn target(svc: &Service) -> Option<ServiceTopic> {
    let (ns, name) = (svc.metadata.namespace(), svc.metadata.name());
    (valid_segment(ns) && valid_segment(name)).then(|| ServiceTopic::Route {
        namespace: ns.to_string(),
        name: name.to_string(),
    })
}

fn version(v: Option<&str>) -> u64 {
    v.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The route of `svc`, with the backends of `endpoints` (its Endpoints of
/// the same name, if any): one entry per address and readiness, holding
/// the port it serves for each Service port name.
pub fn route(svc: &Service, endpoints: Option<&Endpoints>) -> ServiceRoute {
    let spec = &svc.spec;
    let ports = spec
        .ports
        .iter()
        .map(|p| RoutePort {
            name: p.name().to_string(),
            protocol: p.protocol(),
            port: p.port,
            node_port: p.node_port.filter(|_| spec.needs_node_ports()),
            target_port: p.target(),
        })
        .collect();
    let mut backends: BTreeMap<(String, String, bool), RouteEndpoint> = BTreeMap::new();
    for subset in endpoints.map(|e| e.subsets.as_slice()).unwrap_or_default() {
        let listed = subset
            .addresses
            .iter()
            .map(|a| (a, true))
            .chain(subset.not_ready_addresses.iter().map(|a| (a, false)));
        for (addr, ready) in listed {
            let pod = pod_name(addr);
            let entry = backends
                .entry((addr.ip.clone(), pod.clone().unwrap_or_default(), ready))
                .or_insert_with(|| RouteEndpoint {
                    ip: addr.ip.clone(),
                    node: addr.node_name.clone(),
                    pod,
                    ready,
                    ports: BTreeMap::new(),
                });
            for p in &subset.ports {
                entry.ports.insert(p.name().to_string(), p.port);
            }
        }
    }
    ServiceRoute {
        namespace: svc.metadata.namespace().to_string(),
        name: svc.metadata.name().to_string(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        revision: version(svc.metadata.resource_version.as_deref()),
        endpoints_revision: endpoints.map_or(0, |e| version(e.metadata.resource_version.as_deref())),
        type_: spec.type_(),
        cluster_ip: spec.cluster_ip().map(str::to_string),
        session_affinity: spec.session_affinity(),
        client_ip_timeout_seconds: spec.client_ip_timeout(),
        ports,
        endpoints: backends.into_values().collect(),
    }
}

fn pod_name(addr: &EndpointAddress) -> Option<String> {
    addr.target_ref
        .as_ref()
        .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"))
        .and_then(|r| r.name.clone())
}

/// A hash of what matters in `route`: everything but the versions, so a
/// write that changes nothing an agent uses is not sent again.
pub fn content_hash(route: &ServiceRoute) -> u64 {
    let mut r = route.clone();
    r.revision = 0;
    r.endpoints_revision = 0;
    let mut h = DefaultHasher::new();
    serde_json::to_string(&r).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Every Service's key out of `services`, sorted, stamped with the store
/// `revision` the caller's Service cache was at *before* it read them.
pub fn service_set<'a>(services: impl IntoIterator<Item = &'a Service>, revision: u64) -> ServiceSet {
    let mut refs: Vec<ServiceRef> = services
        .into_iter()
        .filter(|s| target(s).is_some())
        .map(|s| ServiceRef {
            namespace: s.metadata.namespace().to_string(),
            name: s.metadata.name().to_string(),
            uid: s.metadata.uid.clone().unwrap_or_default(),
        })
        .collect();
    refs.sort();
    ServiceSet {
        revision,
        services: refs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shturman_api::core::{Protocol, ServiceType, SessionAffinity};
    use shturman_api::intstr::IntOrString;
    use shturman_api::meta::Object;

    fn svc() -> Service {
        let mut s: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "12"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.10", "selector": {"app": "web"},
                     "sessionAffinity": "ClientIP",
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353, "nodePort": 30053}]}
        }))
        .unwrap();
        s.apply_defaults();
        s
    }

    fn endpoints() -> Endpoints {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "15"},
            "subsets": [
                {"addresses": [{"ip": "10.0.0.5", "nodeName": "pi-1", "targetRef": {"kind": "Pod", "name": "web-a"}},
                               {"ip": "10.0.0.6", "nodeName": "pi-2", "targetRef": {"kind": "Pod", "name": "web-b"}}],
                 "notReadyAddresses": [{"ip": "10.0.0.7", "nodeName": "pi-2", "targetRef": {"kind": "Pod", "name": "web-c"}}],
                 "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}]},
                {"addresses": [{"ip": "10.0.0.8", "targetRef": {"kind": "Pod", "name": "web-d"}}],
                 "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}]}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn a_route_carries_the_service_and_every_backend() {
        let r = route(&svc(), Some(&endpoints()));
        assert_eq!((r.revision, r.endpoints_revision), (12, 15));
        assert_eq!(r.type_, ServiceType::NodePort);
        assert_eq!(r.cluster_ip.as_deref(), Some("10.43.0.10"));
        assert_eq!(r.session_affinity, SessionAffinity::ClientIP);
        assert_eq!(r.client_ip_timeout_seconds, Some(10800));
        assert_eq!(r.ports[0].node_port, Some(30080));
        assert_eq!(r.ports[0].target_port, IntOrString::String("http".into()));
        assert_eq!(r.ports[1].protocol, Protocol::Udp);
        let eps: Vec<_> = r
            .endpoints
            .iter()
            .map(|e| (e.ip.as_str(), e.pod.as_deref(), e.ready, e.ports.len()))
            .collect();
        assert_eq!(
            eps,
            [
                ("10.0.0.5", Some("web-a"), true, 2),
                ("10.0.0.6", Some("web-b"), true, 2),
                ("10.0.0.7", Some("web-c"), false, 2),
                ("10.0.0.8", Some("web-d"), true, 1)
            ]
        );
        assert_eq!(r.endpoints[0].node.as_deref(), Some("pi-1"));
        let http: Vec<_> = r.backends("http").collect();
        assert_eq!(http, [("10.0.0.5", 8080), ("10.0.0.6", 8080)]);
        assert_eq!(r.backends("dns").count(), 3);
        assert_eq!(target(&svc()).unwrap().name(), "shturman/v1/services/default/web");
    }

    #[test]
    fn headless_and_bare_services_have_no_address_or_backends() {
        let mut s = svc();
        s.spec.type_ = Some(ServiceType::ClusterIP);
        s.spec.cluster_ip = Some("None".into());
        let r = route(&s, None);
        assert_eq!(r.cluster_ip, None);
        assert!(r.endpoints.is_empty());
        // Node ports only count for NodePort Services.
        assert_eq!(r.ports[0].node_port, None);
        assert_eq!(r.endpoints_revision, 0);
    }

    #[test]
    fn hashes_ignore_versions_only() {
        let a = route(&svc(), Some(&endpoints()));
        let mut b = a.clone();
        b.revision = 99;
        b.endpoints_revision = 100;
        assert_eq!(content_hash(&a), content_hash(&b));
        b.endpoints[0].ready = false;
        assert_ne!(content_hash(&a), content_hash(&b));
    }

    #[test]
    fn sets_list_every_service_sorted() {
        let mut other = svc();
        other.metadata.name = Some("api".into());
        other.metadata.uid = Some("u2".into());
        let set = service_set([&svc(), &other], 40);
        assert_eq!(set.revision, 40);
        let names: Vec<_> = set
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.uid.as_str()))
            .collect();
        assert_eq!(names, [("api", "u2"), ("web", "u1")]);
    }
}
