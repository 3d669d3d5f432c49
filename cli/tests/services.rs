//! `shturman` and Services end to end: a Service applied (and applied
//! again) keeps the cluster IP and node port the server gave it; `get svc`,
//! `get endpoints` / `get ep` and `describe svc` print them as kubectl
//! does; `shturman control` refuses a bad `--service-cidr` and
//! `--service-node-port-range` before it starts.

mod common;

use common::Cluster;
use serde_json::json;

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: http
    nodePort: 30080
";

/// Only the lines of a table, columns split on runs of spaces.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[test]
fn services_and_endpoints_print_as_kubectl_does() {
    let c = Cluster::start();
    let file = c.write("svc.yaml", SERVICE);
    assert_eq!(c.ok(&["apply", "-f", &file]), "service/web created\n");
    let svc = c.get("/api/v1/namespaces/default/services/web");
    let ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("a cluster IP")
        .to_string();
    assert!(ip.starts_with("10.43."), "{ip}");
    // Applying the same manifest again changes nothing; a changed one keeps the address.
    assert_eq!(c.ok(&["apply", "-f", &file]), "service/web unchanged\n");
    c.write(
        "svc.yaml",
        &SERVICE.replace("{app: web}", "{app: web, tier: front}"),
    );
    assert_eq!(c.ok(&["apply", "-f", &file]), "service/web configured\n");
    let svc = c.get("/api/v1/namespaces/default/services/web");
    assert_eq!(svc["spec"]["clusterIP"], ip.as_str());
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);

    let table = rows(&c.ok(&["get", "svc"]));
    assert_eq!(
        table[0],
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    );
    assert_eq!(
        table[1][..5],
        ["web", "NodePort", ip.as_str(), "<none>", "80:30080/TCP"]
    );

    // The controllers are off here: Endpoints written by hand.
    c.create(
        "/api/v1/namespaces/default/endpoints",
        json!({"metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.5"}, {"ip": "10.0.0.6"}, {"ip": "10.0.0.7"}, {"ip": "10.0.0.8"}],
             "notReadyAddresses": [{"ip": "10.0.0.9"}],
             "ports": [{"name": "http", "port": 8080}]}]}),
    );
    for kind in ["endpoints", "ep"] {
        let table = rows(&c.ok(&["get", kind]));
        assert_eq!(table[0], ["NAME", "ENDPOINTS", "AGE"]);
        assert_eq!(
            table[1][..2],
            ["web", "10.0.0.5:8080,10.0.0.6:8080,10.0.0.7:8080 + 1 more..."]
        );
    }
    assert_eq!(c.ok(&["get", "ep", "web", "-o", "name"]), "endpoints/web\n");

    let text = c.ok(&["describe", "svc", "web"]);
    for line in [
        "Type:               NodePort",
        &format!("IP:                 {ip}"),
        "Port:               http  80/TCP",
        "TargetPort:         http/TCP",
        "NodePort:           http  30080/TCP",
        "Endpoints:          10.0.0.5:8080,10.0.0.6:8080,10.0.0.7:8080 + 1 more...",
        "Session Affinity:   None",
    ] {
        assert!(
            text.contains(&format!("{line}\n")),
            "missing {line:?} in:\n{text}"
        );
    }
    let text = c.ok(&["describe", "ep", "web"]);
    assert!(text.contains("NotReadyAddresses:  10.0.0.9\n"), "{text}");

    // A second Service may not take the node port; the error names the field.
    let other = c.write("other.yaml", &SERVICE.replace("name: web", "name: api"));
    let err = c.fails(&["apply", "-f", &other]);
    assert!(err.contains("provided port is already allocated"), "{err}");
    assert!(err.contains("spec.ports[0].nodePort"), "{err}");
}

#[test]
fn control_refuses_bad_service_ranges() {
    let c = Cluster::start();
    for (flag, value, says) in [
        ("--service-cidr", "10.43.0.0", "write it like 10.43.0.0/16"),
        ("--service-cidr", "fd00::/108", "IPv4 only"),
        ("--service-node-port-range", "32767-30000", "backwards"),
    ] {
        let out = c.run(&["control", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
    let help = c.ok(&["up", "--help"]);
    assert!(help.contains("--service-cidr <CIDR>"), "{help}");
    assert!(help.contains("[default: 10.43.0.0/16]"), "{help}");
    assert!(help.contains("--service-node-port-range <FIRST-LAST>"), "{help}");
}
