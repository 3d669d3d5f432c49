//! Endpoints rules, as Kubernetes' `validateEndpointSubsets`: each subset
//! has addresses (ready or not), every address is an IP with a valid node
//! name and hostname, every port is in range and named when a subset has
//! several.

use super::{FieldError, Path, check_label_name, check_port, check_subdomain};
use crate::core::endpoints::{EndpointAddress, EndpointSubset};

pub fn check_subsets(subsets: &[EndpointSubset], errs: &mut Vec<FieldError>) {
    let path = Path::new("subsets");
    for (i, s) in subsets.iter().enumerate() {
        let sp = path.index(i);
        if s.addresses.is_empty() && s.not_ready_addresses.is_empty() {
            errs.push(
                sp.error("a subset needs addresses or notReadyAddresses")
                    .hint("list at least one address, or remove the subset"),
            );
        }
        for (j, a) in s.addresses.iter().enumerate() {
            check_address(&sp.field("addresses").index(j), a, errs);
        }
        for (j, a) in s.not_ready_addresses.iter().enumerate() {
            check_address(&sp.field("notReadyAddresses").index(j), a, errs);
        }
        for (j, p) in s.ports.iter().enumerate() {
            let pp = sp.field("ports").index(j);
            check_port(&pp.field("port"), p.port, errs);
            match &p.name {
                Some(name) => check_label_name(&pp.field("name"), name, errs),
                None if s.ports.len() > 1 => errs.push(
                    pp.field("name")
                        .error("ports must be named when a subset has more than one")
                        .hint("name each port after the Service port it backs"),
                ),
                None => {}
            }
        }
    }
}

fn check_address(path: &Path, a: &EndpointAddress, errs: &mut Vec<FieldError>) {
    if a.ip.parse::<std::net::IpAddr>().is_err() {
        errs.push(
            path.field("ip")
                .error(format!("{:?} is not an IP address", a.ip))
                .hint("write the backend's address, e.g. 10.0.0.5"),
        );
    }
    if let Some(h) = &a.hostname {
        check_label_name(&path.field("hostname"), h, errs);
    }
    if let Some(n) = &a.node_name {
        check_subdomain(&path.field("nodeName"), n, errs);
    }
}

#[cfg(test)]
mod tests {
    use crate::core::Endpoints;
    use crate::meta::Object;
    use serde_json::json;

    fn errors(subsets: serde_json::Value) -> Vec<String> {
        let mut e: Endpoints =
            serde_json::from_value(json!({"metadata": {"name": "web"}, "subsets": subsets})).unwrap();
        e.apply_defaults();
        e.validate().into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn defaults_and_round_trip() {
        let v = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "web", "namespace": "default"},
        "subsets": [{
            "addresses": [{"ip": "10.0.0.5", "nodeName": "pi-1",
                           "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-a", "uid": "u1"}}],
            "notReadyAddresses": [{"ip": "10.0.0.6", "nodeName": "pi-2"}],
            "ports": [{"name": "http", "port": 8080}]
        }]});
        let mut e: Endpoints = serde_json::from_value(v).unwrap();
        e.apply_defaults();
        assert!(e.validate().is_empty(), "{:?}", e.validate());
        let out = serde_json::to_value(&e).unwrap();
        assert_eq!(out["subsets"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(out["subsets"][0]["addresses"][0]["targetRef"]["name"], "web-a");
        assert_eq!(e.ready_count(), 1);
        assert!(!e.is_managed());
    }

    #[test]
    fn rules() {
        assert!(errors(json!([])).is_empty());
        assert_eq!(errors(json!([{"ports": [{"port": 80}]}])), ["subsets[0]"]);
        assert_eq!(
            errors(json!([{"addresses": [{"ip": "ten"}], "ports": [{"port": 80}]}])),
            ["subsets[0].addresses[0].ip"]
        );
        assert_eq!(
            errors(json!([{"notReadyAddresses": [{"ip": "10.0.0.1", "nodeName": "Bad_Node"}]}])),
            ["subsets[0].notReadyAddresses[0].nodeName"]
        );
        assert_eq!(
            errors(json!([{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 0}, {"port": 80}]}])),
            [
                "subsets[0].ports[0].port",
                "subsets[0].ports[0].name",
                "subsets[0].ports[1].name"
            ]
        );
        // A headless Service's subsets may have no ports.
        assert!(errors(json!([{"addresses": [{"ip": "fd00::1"}]}])).is_empty());
    }
}
