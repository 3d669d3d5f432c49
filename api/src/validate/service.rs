//! Service rules: ports (unique, in range, named when several), target ports,
//! node ports (30000–32767, only with `type: NodePort`), selector and cluster IP.

use std::collections::BTreeSet;

use super::pod::check_probe_port;
use super::{FieldError, Path, check_labels, check_port, check_port_name};
use crate::core::service::{ServiceSpec, ServiceType};

/// The node port range, as Kubernetes' default.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<i32> = 30000..=32767;

pub fn check_service_spec(spec: &ServiceSpec, errs: &mut Vec<FieldError>) {
    let path = Path::new("spec");
    let ports = path.field("ports");
    if spec.ports.is_empty() {
        errs.push(
            ports
                .error("a Service needs at least one port")
                .hint("add a port, e.g. ports: [{port: 80, targetPort: 8080}]"),
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
            } else if !NODE_PORT_RANGE.contains(&np) {
                errs.push(
                    np_path
                        .error(format!("node port {np} is outside 30000-32767"))
                        .hint("pick a port between 30000 and 32767, or leave it unset to get one assigned"),
                );
            }
            if !node_ports.insert(np) {
                errs.push(
                    np_path
                        .error(format!("node port {np} is used twice"))
                        .hint("give each port its own nodePort"),
                );
            }
        }
    }
    check_labels(&path.field("selector"), &spec.selector, errs);
    if let Some(ip) = &spec.cluster_ip
        && !ip.is_empty()
        && ip != "None"
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        errs.push(
            path.field("clusterIP")
                .error(format!("{ip:?} is not an IP address"))
                .hint("leave clusterIP unset to get one assigned, or use \"None\" for a headless Service"),
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

    #[test]
    fn defaults() {
        let mut s: Service = serde_json::from_value(json!({
            "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}
        }))
        .unwrap();
        s.apply_defaults();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["spec"]["type"], "ClusterIP");
        assert_eq!(v["spec"]["sessionAffinity"], "None");
        assert_eq!(v["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(v["status"], json!({"loadBalancer": {}}));
        assert!(s.validate().is_empty());
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
        let e = errors(json!({"ports": [{"port": 80, "nodePort": 30080}]}));
        assert!(e[0].1.contains("not NodePort"), "{e:?}");
        let e = errors(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}));
        assert_eq!(e[0].0, "spec.ports[0].nodePort");
        assert!(errors(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]})).is_empty());
        let e = errors(json!({"ports": [{"port": 80, "targetPort": "Not_A_Name"}]}));
        assert_eq!(e[0].0, "spec.ports[0].targetPort");
        let e = errors(json!({"ports": []}));
        assert_eq!(e[0].0, "spec.ports");
        let e = errors(json!({"ports": [{"port": 80}], "clusterIP": "10.0.0"}));
        assert_eq!(e[0].0, "spec.clusterIP");
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
