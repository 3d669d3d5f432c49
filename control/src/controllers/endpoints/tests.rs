//! The endpoints planner, pure: which pods are listed, where, on which
//! ports; when it writes, and when it leaves Endpoints alone.

use serde_json::{Value, json};
use shturman_api::core::endpoints::MANAGED_BY_LABEL;
use shturman_api::core::{Endpoints, Pod, Service};
use shturman_api::meta::{Object, Time};

use super::*;

fn service(spec: Value) -> Service {
    let mut s: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "svc-1", "labels": {"team": "a"}},
        "spec": spec
    }))
    .unwrap();
    s.apply_defaults();
    assert!(s.validate().is_empty(), "{:?}", s.validate());
    s
}

fn web() -> Service {
    service(json!({"selector": {"app": "web"}, "ports": [
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "metrics", "port": 9090}]}))
}

/// A Running pod with `app: web`, a named `http` port on 8080, on `node`.
fn pod(name: &str, ip: &str, ready: bool, node: &str) -> Pod {
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "i",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
    .unwrap();
    p.apply_defaults();
    p
}

fn ips(addrs: &[EndpointAddress]) -> Vec<&str> {
    addrs.iter().map(|a| a.ip.as_str()).collect()
}

#[test]
fn lists_ready_and_not_ready_pods_with_node_and_reference() {
    let (a, b, c) = (
        pod("web-a", "10.0.0.5", true, "pi-1"),
        pod("web-b", "10.0.0.6", true, "pi-2"),
        pod("web-c", "10.0.0.7", false, "pi-2"),
    );
    let subsets = subsets(&web(), &[&b, &c, &a]);
    assert_eq!(subsets.len(), 1);
    let s = &subsets[0];
    assert_eq!(ips(&s.addresses), ["10.0.0.5", "10.0.0.6"]);
    assert_eq!(ips(&s.not_ready_addresses), ["10.0.0.7"]);
    assert_eq!(s.addresses[0].node_name.as_deref(), Some("pi-1"));
    let r = s.addresses[0].target_ref.as_ref().unwrap();
    assert_eq!(
        (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
        (Some("Pod"), Some("web-a"), Some("uid-web-a"))
    );
    let ports: Vec<_> = s.ports.iter().map(|p| (p.name(), p.port, p.protocol)).collect();
    assert_eq!(
        ports,
        [
            ("http", 8080, Some(Protocol::Tcp)),
            ("metrics", 9090, Some(Protocol::Tcp))
        ]
    );
}

#[test]
fn named_target_ports_resolve_per_pod_and_pods_without_them_are_left_out() {
    let a = pod("web-a", "10.0.0.5", true, "pi-1");
    let mut other = pod("web-b", "10.0.0.6", true, "pi-1");
    other.spec.containers[0].ports[0].container_port = 8443;
    let mut bare = pod("web-c", "10.0.0.7", true, "pi-1");
    bare.spec.containers[0].ports.clear();
    let mut udp = pod("web-d", "10.0.0.8", true, "pi-1");
    udp.spec.containers[0].ports[0].protocol = Some(Protocol::Udp);
    let subsets = subsets(&web(), &[&a, &other, &bare, &udp]);
    type Summary<'a> = (Vec<&'a str>, Vec<(&'a str, i32)>);
    let summary: Vec<Summary> = subsets
        .iter()
        .map(|s| {
            (
                ips(&s.addresses),
                s.ports.iter().map(|p| (p.name(), p.port)).collect(),
            )
        })
        .collect();
    // Every pod serves metrics on 9090; http is on 8080 for a, 8443 for b,
    // and absent for c and d (no TCP port named http).
    assert!(
        summary.contains(&(vec!["10.0.0.5"], vec![("http", 8080)])),
        "{summary:?}"
    );
    assert!(
        summary.contains(&(vec!["10.0.0.6"], vec![("http", 8443)])),
        "{summary:?}"
    );
    assert!(
        summary.contains(&(
            vec!["10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8"],
            vec![("metrics", 9090)]
        )),
        "{summary:?}"
    );
    assert_eq!(summary.len(), 3);
    // A Service whose only port is named and missing lists nothing for that pod.
    let only_http =
        service(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}));
    let s = super::subsets(&only_http, &[&bare]);
    assert!(s.is_empty(), "{s:?}");
}

#[test]
fn leaves_out_terminating_finished_unselected_and_addressless_pods() {
    let mut going = pod("going", "10.0.0.1", true, "pi-1");
    going.metadata.deletion_timestamp = Some(Time(chrono::Utc::now()));
    let mut done = pod("done", "10.0.0.2", false, "pi-1");
    done.status.as_mut().unwrap().phase = Some(PodPhase::Succeeded);
    let mut failed = pod("failed", "10.0.0.3", false, "pi-1");
    failed.status.as_mut().unwrap().phase = Some(PodPhase::Failed);
    let mut other = pod("other", "10.0.0.4", true, "pi-1");
    other.metadata.labels.insert("app".into(), "db".into());
    let mut pending = pod("pending", "", false, "pi-1");
    pending.status.as_mut().unwrap().pod_ip = None;
    let mut elsewhere = pod("elsewhere", "10.0.0.5", true, "pi-1");
    elsewhere.metadata.namespace = Some("prod".into());
    let pods = [&going, &done, &failed, &other, &pending, &elsewhere];
    assert!(subsets(&web(), &pods).is_empty());
}

#[test]
fn wasm_pods_use_their_node_address_until_they_report_a_pod_ip() {
    let mut w = pod("wasm", "", true, "pi-1");
    w.spec.runtime_class_name = Some("wasmtime".into());
    let st = w.status.as_mut().unwrap();
    st.pod_ip = None;
    st.host_ip = Some("192.168.1.20".into());
    assert_eq!(pod_address(&w), Some("192.168.1.20"));
    let mut oci = w.clone();
    oci.spec.runtime_class_name = None;
    assert_eq!(pod_address(&oci), None);
    w.status.as_mut().unwrap().pod_ip = Some("192.168.1.21".into());
    assert_eq!(pod_address(&w), Some("192.168.1.21"));
}

#[test]
fn headless_services_without_ports_list_bare_addresses() {
    let svc = service(json!({"clusterIP": "None", "selector": {"app": "web"}}));
    let a = pod("web-a", "10.0.0.5", true, "pi-1");
    let s = subsets(&svc, &[&a]);
    assert_eq!(s.len(), 1);
    assert!(s[0].ports.is_empty());
    assert_eq!(ips(&s[0].addresses), ["10.0.0.5"]);
    assert_eq!(labels(&svc).get(HEADLESS_LABEL).map(String::as_str), Some(""));
}

#[test]
fn plans_create_update_nothing_and_delete() {
    let svc = web();
    let a = pod("web-a", "10.0.0.5", true, "pi-1");
    let Some(Action::Create(created)) = plan(Some(&svc), None, &[&a]) else {
        panic!("creates")
    };
    assert_eq!(created.metadata.name(), "web");
    assert_eq!(created.metadata.namespace(), "default");
    assert_eq!(created.metadata.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(
        created.metadata.labels.get(MANAGED_BY_LABEL).map(String::as_str),
        Some("endpoint-controller")
    );
    assert!(created.validate().is_empty(), "{:?}", created.validate());
    // As stored (defaults applied, a version): unchanged pods, no write.
    let mut stored: Endpoints = (*created).clone();
    stored.apply_defaults();
    stored.metadata.resource_version = Some("7".into());
    stored.metadata.uid = Some("ep-1".into());
    assert_eq!(plan(Some(&svc), Some(&stored), &[&a]), None);
    // A pod turns not ready: an update on the version it read.
    let mut a2 = a.clone();
    a2.status.as_mut().unwrap().conditions[0].status = shturman_api::meta::ConditionStatus::False;
    let Some(Action::Update(next)) = plan(Some(&svc), Some(&stored), &[&a2]) else {
        panic!("updates")
    };
    assert_eq!(next.metadata.resource_version.as_deref(), Some("7"));
    assert!(next.subsets[0].addresses.is_empty());
    assert_eq!(ips(&next.subsets[0].not_ready_addresses), ["10.0.0.5"]);
    // No pods left: an Endpoints with no subsets.
    let Some(Action::Update(empty)) = plan(Some(&svc), Some(&stored), &[]) else {
        panic!("updates")
    };
    assert!(empty.subsets.is_empty());
    // The Service is gone: its managed Endpoints go too.
    assert_eq!(
        plan(None, Some(&stored), &[&a]),
        Some(Action::Delete {
            uid: Some("ep-1".into())
        })
    );
}

#[test]
fn user_managed_endpoints_are_left_alone() {
    let manual = service(json!({"ports": [{"port": 5432}]}));
    let user: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "192.168.1.50"}], "ports": [{"port": 5432}]}]
    }))
    .unwrap();
    let a = pod("web-a", "10.0.0.5", true, "pi-1");
    assert_eq!(plan(Some(&manual), Some(&user), &[&a]), None);
    assert_eq!(plan(Some(&manual), None, &[&a]), None);
    // Without its Service, an Endpoints the user wrote stays too.
    assert_eq!(plan(None, Some(&user), &[&a]), None);
}
