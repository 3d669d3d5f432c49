//! Service rules, as Kubernetes' `ValidateService`: ports (at least one
//! unless headless, in range, named and unique when several), target ports
//! (a number or a port name), node ports (only with `type: NodePort`; the
//! control plane checks them against its configured range and for
//! conflicts), the selector, the cluster IP (an address, or `None` for a
//! headless ClusterIP Service; `clusterIPs` single-stack and agreeing with
//! it), and session affinity.

use std::collections::BTreeSet;

use super::pod::check_probe_port;
use super::{FieldError, Path, check_labels, check_port, check_port_name};
use crate::core::service::{
    CLUSTER_IP_NONE, MAX_CLIENT_IP_TIMEOUT_SECONDS, ServiceSpec, ServiceType, SessionAffinity,
};

/// Kubernetes' default node port range (`--service-node-port-range`).
pub const DEFAULT_NODE_PORT_RANGE: std::ops::RangeInclusive<i32> = 30000..=32767;

pub fn check_service_spec(spec: &ServiceSpec, errs: &mut Vec<FieldError>) {
    let path = Path::new("spec");
    check_ports(&path, spec, errs);
    check_labels(&path.field("selector"), &spec.selector, errs);
    check_cluster_ip(&path, spec, errs);
    check_affinity(&path, spec, errs);
}

fn check_ports(path: &Path, spec: &ServiceSpec, errs: &mut Vec<FieldError>) {
    let ports = path.field("ports");
    if spec.ports.is_empty() && !spec.is_headless() {
        errs.push(
            ports
                .error("a Service needs at least one port")
                .hint("add a port, e.g. ports: [{port: 80, targetPort: 8080}] (only a headless Service, clusterIP: None, may have none)"),
        );
    }
    let node_port_type = spec.type_ == Some(ServiceType::NodePort);
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let pp = ports.index(i);
        check_port(&pp.field("port"), p.port, errs);
        match &p.name {
            Some(name) => {
                check_port_name(&pp.field("name"), name, errs);
                if !names.insert(name.as_str()) {
                    errs.push(
                        pp.field("name")
                            .error(format!("port name {name:?} is used twice"))
                            .hint("give each port a unique name"),
                    );
                }
            }
            None if spec.ports.len() > 1 => errs.push(
                pp.field("name")
                    .error("ports must be named when a Service has more than one")
                    .hint("add a name such as \"http\" to each port"),
            ),
            None => {}
        }
        if !numbers.insert((p.port, p.protocol.unwrap_or_default())) {
            errs.push(
                pp.field("port")
                    .error(format!("port {} is listed twice for the same protocol", p.port))
                    .hint("list each port once"),
            );
        }
        if let Some(t) = &p.target_port {
            check_probe_port(&pp.field("targetPort"), t, errs);
        }
        if let Some(np) = p.node_port {
            let np_path = pp.field("nodePort");
            if !node_port_type {
                errs.push(
                    np_path
                        .error("nodePort is set but the Service type is not NodePort")
                        .hint("set spec.type: NodePort, or remove nodePort"),
                );
            } else {
                // The range is the control plane's (--service-node-port-range):
                // it checks it, and conflicts, when it allocates.
                check_port(&np_path, np, errs);
            }
            if !node_ports.insert((np, p.protocol.unwrap_or_default())) {
                errs.push(
                    np_path
                        .error(format!("node port {np} is used twice"))
                        .hint("give each port its own nodePort"),
                );
            }
        }
    }
}

fn check_cluster_ip(path: &Path, spec: &ServiceSpec, errs: &mut Vec<FieldError>) {
    let ip_path = path.field("clusterIP");
    if let Some(ip) = &spec.cluster_ip
        && !ip.is_empty()
        && ip != CLUSTER_IP_NONE
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        errs.push(
            ip_path
                .error(format!("{ip:?} is not an IP address"))
                .hint("leave clusterIP unset to get one assigned, or use \"None\" for a headless Service"),
        );
    }
    if spec.is_headless() && spec.type_ == Some(ServiceType::NodePort) {
        errs.push(
            ip_path
                .error("a NodePort Service cannot be headless (clusterIP: None)")
                .hint("use type: ClusterIP for a headless Service, or leave clusterIP unset"),
        );
    }
    let ips = path.field("clusterIPs");
    if spec.cluster_ips.len() > 1 {
        errs.push(
            ips.error(format!(
                "{} addresses are listed; Shturman's Services are single-stack",
                spec.cluster_ips.len()
            ))
            .hint("list at most one address, the same as clusterIP"),
        );
    }
    if let (Some(ip), Some(first)) = (spec.cluster_ip.as_deref(), spec.cluster_ips.first())
        && !ip.is_empty()
        && ip != first
    {
        errs.push(
            ips.index(0)
                .error(format!("{first:?} differs from clusterIP {ip:?}"))
                .hint("make clusterIPs[0] equal to clusterIP, or leave clusterIPs out"),
        );
    }
}

fn check_affinity(path: &Path, spec: &ServiceSpec, errs: &mut Vec<FieldError>) {
    let Some(config) = &spec.session_affinity_config else {
        return;
    };
    let cfg_path = path.field("sessionAffinityConfig");
    if spec.session_affinity != Some(SessionAffinity::ClientIP) {
        errs.push(
            cfg_path
                .error("sessionAffinityConfig is set but sessionAffinity is not ClientIP")
                .hint("set sessionAffinity: ClientIP, or remove sessionAffinityConfig"),
        );
        return;
    }
    if let Some(t) = config.client_ip.as_ref().and_then(|c| c.timeout_seconds)
        && !(1..=MAX_CLIENT_IP_TIMEOUT_SECONDS).contains(&t)
    {
        errs.push(
            cfg_path
                .field("clientIP")
                .field("timeoutSeconds")
                .error(format!("timeout {t} s is out of range"))
                .hint(format!(
                    "use 1 to {MAX_CLIENT_IP_TIMEOUT_SECONDS} seconds (the default is 10800)"
                )),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::core::Service;
    use crate::meta::Object;
    use serde_json::json;

    fn errors(spec: serde_json::Value) -> Vec<(String, String)> {
        let mut s: Service =
            serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": spec})).unwrap();
        s.apply_defaults();
        s.validate().into_iter().map(|e| (e.path, e.message)).collect()
    }

    fn defaulted(spec: serde_json::Value) -> serde_json::Value {
        let mut s: Service =
            serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": spec})).unwrap();
        s.apply_defaults();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        serde_json::to_value(&s).unwrap()
    }

    #[test]
    fn defaults() {
        let v = defaulted(json!({"ports": [{"port": 80}], "selector": {"app": "web"}}));
        assert_eq!(v["spec"]["type"], "ClusterIP");
        assert_eq!(v["spec"]["sessionAffinity"], "None");
        assert!(v["spec"].get("sessionAffinityConfig").is_none());
        assert_eq!(v["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(v["status"], json!({"loadBalancer": {}}));
        let v = defaulted(
            json!({"ports": [{"port": 53, "protocol": "UDP", "targetPort": "dns"}],
                                  "sessionAffinity": "ClientIP", "clusterIP": "10.43.0.10"}),
        );
        assert_eq!(v["spec"]["ports"][0]["protocol"], "UDP");
        assert_eq!(v["spec"]["ports"][0]["targetPort"], "dns");
        assert_eq!(
            v["spec"]["sessionAffinityConfig"],
            json!({"clientIP": {"timeoutSeconds": 10800}})
        );
        assert_eq!(v["spec"]["clusterIPs"], json!(["10.43.0.10"]));
        let v = defaulted(json!({"ports": [{"port": 80}], "clusterIPs": ["10.43.0.11"]}));
        assert_eq!(v["spec"]["clusterIP"], "10.43.0.11");
        let v = defaulted(json!({"clusterIP": "None", "selector": {"app": "db"}}));
        assert_eq!(v["spec"]["clusterIPs"], json!(["None"]));
    }

    #[test]
    fn port_rules() {
        let e = errors(json!({"ports": [{"port": 0}]}));
        assert_eq!(e[0].0, "spec.ports[0].port");
        let e = errors(json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "a"}]}));
        let paths: Vec<_> = e.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(paths, ["spec.ports[1].name", "spec.ports[1].port"]);
        let e = errors(json!({"ports": [{"port": 80}, {"port": 81}]}));
        assert_eq!(e[0].0, "spec.ports[0].name");
        // The same number over TCP and UDP is two ports.
        assert!(
            errors(
                json!({"ports": [{"port": 53, "name": "a"}, {"port": 53, "name": "b", "protocol": "UDP"}]})
            )
            .is_empty()
        );
        let e = errors(json!({"ports": [{"port": 80, "nodePort": 30080}]}));
        assert!(e[0].1.contains("not NodePort"), "{e:?}");
        let e = errors(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 70000}]}));
        assert_eq!(e[0].0, "spec.ports[0].nodePort");
        // The range is the control plane's to check.
        assert!(errors(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]})).is_empty());
        assert!(errors(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]})).is_empty());
        let e = errors(json!({"type": "NodePort", "ports": [
            {"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30080}]}));
        assert_eq!(e[0].0, "spec.ports[1].nodePort");
        let e = errors(json!({"ports": [{"port": 80, "targetPort": "Not_A_Name"}]}));
        assert_eq!(e[0].0, "spec.ports[0].targetPort");
        let e = errors(json!({"ports": [{"port": 80, "targetPort": 0}]}));
        assert_eq!(e[0].0, "spec.ports[0].targetPort");
        let e = errors(json!({"ports": []}));
        assert_eq!(e[0].0, "spec.ports");
        assert!(errors(json!({"clusterIP": "None"})).is_empty());
    }

    #[test]
    fn cluster_ip_rules() {
        let e = errors(json!({"ports": [{"port": 80}], "clusterIP": "10.0.0"}));
        assert_eq!(e[0].0, "spec.clusterIP");
        let e = errors(json!({"type": "NodePort", "ports": [{"port": 80}], "clusterIP": "None"}));
        assert_eq!(e[0].0, "spec.clusterIP");
        assert!(e[0].1.contains("headless"), "{e:?}");
        let e =
            errors(json!({"ports": [{"port": 80}], "clusterIP": "10.43.0.1", "clusterIPs": ["10.43.0.2"]}));
        assert_eq!(e[0].0, "spec.clusterIPs[0]");
        let e = errors(json!({"ports": [{"port": 80}], "clusterIPs": ["10.43.0.2", "fd00::2"]}));
        assert_eq!(e[0].0, "spec.clusterIPs");
    }

    #[test]
    fn affinity_rules() {
        let e = errors(json!({"ports": [{"port": 80}],
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}));
        assert_eq!(e[0].0, "spec.sessionAffinityConfig");
        let e = errors(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}));
        assert_eq!(e[0].0, "spec.sessionAffinityConfig.clientIP.timeoutSeconds");
        assert!(
            errors(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}))
            .is_empty()
        );
    }

    #[test]
    fn service_names_are_dns1035() {
        let mut s: Service = serde_json::from_value(json!({
            "metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}
        }))
        .unwrap();
        s.apply_defaults();
        assert_eq!(s.validate()[0].path, "metadata.name");
    }
}
