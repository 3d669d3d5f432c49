//! The kind-specific parts of `describe`: pod containers and conditions,
//! deployment rollout state, service ports (with their endpoints), endpoints
//! subsets, node capacity and system info, configmap data.

use serde_json::Value;
use shturman_api::Kind;

use crate::columns::{format_endpoints, node_roles, pod_status, selector_text};
use crate::describe::Doc;
use crate::value::{at, int_at, list_at, map_at, scalar_text, str_at, str_or};

/// Appends the body for `kind` to `doc`. `endpoints` is a Service's
/// Endpoints object, when fetched.
pub fn body(doc: &mut Doc, kind: Kind, obj: &Value, endpoints: Option<&Value>) {
    match kind {
        Kind::Pod => pod(doc, obj),
        Kind::Deployment => deployment(doc, obj),
        Kind::ReplicaSet => replicaset(doc, obj),
        Kind::Service => service(doc, obj, endpoints),
        Kind::Endpoints => endpoints_body(doc, obj),
        Kind::Node => node(doc, obj),
        Kind::ConfigMap => configmap(doc, obj),
        Kind::Secret => secret(doc, obj),
        Kind::Namespace => doc.field(0, "Status", str_or(obj, "status.phase", "Active")),
        Kind::Event => event(doc, obj),
    }
}

fn pod(doc: &mut Doc, obj: &Value) {
    doc.field(0, "Node", str_at(obj, "spec.nodeName"));
    if let Some(rc) = at(obj, "spec.runtimeClassName").as_str() {
        doc.field(0, "Runtime Class Name", rc);
    }
    doc.field(0, "Start Time", str_at(obj, "status.startTime"));
    doc.field(0, "Status", pod_status(obj));
    doc.field(0, "IP", str_at(obj, "status.podIP"));
    let statuses = list_at(obj, "status.containerStatuses");
    containers(doc, list_at(obj, "spec.containers"), Some(statuses));
    conditions(doc, obj, &["Type", "Status"], &["type", "status"]);
    doc.map_field(0, "Node-Selectors", obj, "spec.nodeSelector", &[]);
}

/// `Containers:` with one block per container; `statuses` adds runtime state.
fn containers(doc: &mut Doc, list: &[Value], statuses: Option<&[Value]>) {
    if list.is_empty() {
        doc.field(0, "Containers", "<none>");
        return;
    }
    let base = if statuses.is_some() { 0 } else { 2 };
    doc.section(base, "Containers");
    for c in list {
        let name = str_at(c, "name");
        doc.section(base + 2, name);
        doc.field(base + 4, "Image", str_at(c, "image"));
        let ports: Vec<String> = list_at(c, "ports")
            .iter()
            .map(|p| format!("{}/{}", int_at(p, "containerPort"), str_or(p, "protocol", "TCP")))
            .collect();
        doc.field(base + 4, "Port", ports.join(", "));
        if !list_at(c, "command").is_empty() {
            doc.field(base + 4, "Command", strings(list_at(c, "command")).join("\n"));
        }
        if !list_at(c, "args").is_empty() {
            doc.field(base + 4, "Args", strings(list_at(c, "args")).join("\n"));
        }
        if let Some(statuses) = statuses {
            let st = statuses.iter().find(|s| str_at(s, "name") == name);
            let st = st.unwrap_or(&Value::Null);
            container_state(doc, base + 4, "State", at(st, "state"));
            if !at(st, "lastState").as_object().is_none_or(|m| m.is_empty()) {
                container_state(doc, base + 4, "Last State", at(st, "lastState"));
            }
            let ready = at(st, "ready").as_bool().unwrap_or(false);
            doc.field(base + 4, "Ready", ready.to_string());
            doc.field(base + 4, "Restart Count", int_at(st, "restartCount").to_string());
        }
        resources(doc, base + 4, "Limits", c, "resources.limits");
        resources(doc, base + 4, "Requests", c, "resources.requests");
        let env: Vec<String> = list_at(c, "env")
            .iter()
            .map(|e| {
                let value = match at(e, "value") {
                    Value::Null if !at(e, "valueFrom").is_null() => "<set from valueFrom>".to_string(),
                    v => scalar_text(v),
                };
                format!("{}:  {value}", str_at(e, "name"))
            })
            .collect();
        if env.is_empty() {
            doc.field(base + 4, "Environment", "<none>");
        } else {
            doc.section(base + 4, "Environment");
            for line in env {
                doc.raw(base + 6, line);
            }
        }
    }
}

fn strings(list: &[Value]) -> Vec<String> {
    list.iter().map(scalar_text).collect()
}

fn container_state(doc: &mut Doc, indent: usize, label: &str, state: &Value) {
    let Some((name, detail)) = state.as_object().and_then(|m| m.iter().next()) else {
        doc.field(indent, label, "<unknown>");
        return;
    };
    let mut title = name.clone();
    if let Some(first) = title.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    doc.field(indent, label, title);
    for (k, label) in [
        ("reason", "Reason"),
        ("message", "Message"),
        ("exitCode", "Exit Code"),
        ("startedAt", "Started"),
        ("finishedAt", "Finished"),
    ] {
        let v = at(detail, k);
        if !v.is_null() {
            doc.field(indent + 2, label, scalar_text(v));
        }
    }
}

fn resources(doc: &mut Doc, indent: usize, label: &str, c: &Value, path: &str) {
    let pairs = map_at(c, path);
    if pairs.is_empty() {
        return;
    }
    doc.section(indent, label);
    for (k, v) in pairs {
        doc.field(indent + 2, k, scalar_text(v));
    }
}

/// `Conditions:` as a table of the given fields, or `<none>`.
fn conditions(doc: &mut Doc, obj: &Value, headers: &[&str], fields: &[&str]) {
    let conds = list_at(obj, "status.conditions");
    if conds.is_empty() {
        doc.field(0, "Conditions", "<none>");
        return;
    }
    doc.section(0, "Conditions");
    let rows: Vec<Vec<String>> = conds
        .iter()
        .map(|c| fields.iter().map(|f| str_at(c, f).to_string()).collect())
        .collect();
    doc.table(2, headers, &rows);
}

/// `Pod Template:` for an object with a `spec.template` (deployments,
/// replica sets, `rollout history --revision`).
pub fn pod_template(doc: &mut Doc, obj: &Value) {
    doc.section(0, "Pod Template");
    doc.map_field(2, "Labels", obj, "spec.template.metadata.labels", &[]);
    let annotations: Vec<String> = map_at(obj, "spec.template.metadata.annotations")
        .into_iter()
        .map(|(k, v)| format!("{k}: {}", scalar_text(v)))
        .collect();
    if !annotations.is_empty() {
        doc.field(2, "Annotations", annotations.join("\n"));
    }
    if let Some(rc) = at(obj, "spec.template.spec.runtimeClassName").as_str() {
        doc.field(2, "Runtime Class Name", rc);
    }
    containers(doc, list_at(obj, "spec.template.spec.containers"), None);
}

fn deployment(doc: &mut Doc, obj: &Value) {
    doc.field(0, "Selector", selector_text(obj));
    let desired = int_at(obj, "spec.replicas");
    doc.field(
        0,
        "Replicas",
        format!(
            "{desired} desired | {} updated | {} total | {} available | {} unavailable",
            int_at(obj, "status.updatedReplicas"),
            int_at(obj, "status.replicas"),
            int_at(obj, "status.availableReplicas"),
            int_at(obj, "status.unavailableReplicas"),
        ),
    );
    let strategy = str_or(obj, "spec.strategy.type", "RollingUpdate");
    doc.field(0, "StrategyType", strategy);
    doc.field(
        0,
        "MinReadySeconds",
        int_at(obj, "spec.minReadySeconds").to_string(),
    );
    if strategy == "RollingUpdate" {
        let ru = at(obj, "spec.strategy.rollingUpdate");
        let pick = |k: &str| match at(ru, k) {
            Value::Null => "25%".to_string(),
            v => scalar_text(v),
        };
        doc.field(
            0,
            "RollingUpdateStrategy",
            format!(
                "{} max unavailable, {} max surge",
                pick("maxUnavailable"),
                pick("maxSurge")
            ),
        );
    }
    pod_template(doc, obj);
    conditions(
        doc,
        obj,
        &["Type", "Status", "Reason"],
        &["type", "status", "reason"],
    );
}

fn replicaset(doc: &mut Doc, obj: &Value) {
    doc.field(0, "Selector", selector_text(obj));
    doc.field(
        0,
        "Replicas",
        format!(
            "{} current / {} desired",
            int_at(obj, "status.replicas"),
            int_at(obj, "spec.replicas")
        ),
    );
    doc.field(
        0,
        "Pods Status",
        format!(
            "{} Ready / {} Available",
            int_at(obj, "status.readyReplicas"),
            int_at(obj, "status.availableReplicas")
        ),
    );
    pod_template(doc, obj);
}

fn service(doc: &mut Doc, obj: &Value, endpoints: Option<&Value>) {
    doc.map_field(0, "Selector", obj, "spec.selector", &[]);
    doc.field(0, "Type", str_or(obj, "spec.type", "ClusterIP"));
    doc.field(0, "IP", str_at(obj, "spec.clusterIP"));
    let ips: Vec<&str> = list_at(obj, "spec.clusterIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !ips.is_empty() {
        doc.field(0, "IPs", ips.join(","));
    }
    for p in list_at(obj, "spec.ports") {
        let proto = str_or(p, "protocol", "TCP");
        let name = str_or(p, "name", "<unset>");
        doc.field(0, "Port", format!("{name}  {}/{proto}", int_at(p, "port")));
        let target = match at(p, "targetPort") {
            Value::Null => int_at(p, "port").to_string(),
            v => scalar_text(v),
        };
        doc.field(0, "TargetPort", format!("{target}/{proto}"));
        if let Some(np) = at(p, "nodePort").as_i64() {
            doc.field(0, "NodePort", format!("{name}  {np}/{proto}"));
        }
        let eps = endpoints.map_or_else(
            || "<none>".to_string(),
            |e| format_endpoints(e, Some(str_at(p, "name"))),
        );
        doc.field(0, "Endpoints", eps);
    }
    if list_at(obj, "spec.ports").is_empty() {
        let eps = endpoints.map_or_else(|| "<none>".to_string(), |e| format_endpoints(e, None));
        doc.field(0, "Endpoints", eps);
    }
    doc.field(0, "Session Affinity", str_or(obj, "spec.sessionAffinity", "None"));
    if let Some(t) = at(obj, "spec.sessionAffinityConfig.clientIP.timeoutSeconds").as_i64() {
        doc.field(0, "Session Affinity Timeout", format!("{t}s"));
    }
}

fn endpoints_body(doc: &mut Doc, obj: &Value) {
    let subsets = list_at(obj, "subsets");
    if subsets.is_empty() {
        doc.field(0, "Subsets", "<none>");
        return;
    }
    doc.section(0, "Subsets");
    let ips = |s: &Value, path: &str| -> String {
        list_at(s, path)
            .iter()
            .map(|a| str_at(a, "ip"))
            .collect::<Vec<_>>()
            .join(",")
    };
    for s in subsets {
        doc.field(2, "Addresses", ips(s, "addresses"));
        doc.field(2, "NotReadyAddresses", ips(s, "notReadyAddresses"));
        let rows: Vec<Vec<String>> = list_at(s, "ports")
            .iter()
            .map(|p| {
                vec![
                    str_or(p, "name", "<unset>").to_string(),
                    int_at(p, "port").to_string(),
                    str_or(p, "protocol", "TCP").to_string(),
                ]
            })
            .collect();
        if rows.is_empty() {
            doc.field(2, "Ports", "<none>");
        } else {
            doc.section(2, "Ports");
            doc.table(4, &["Name", "Port", "Protocol"], &rows);
        }
        doc.raw(0, "");
    }
}

fn node(doc: &mut Doc, obj: &Value) {
    doc.field(0, "Roles", node_roles(obj));
    let taints: Vec<String> = list_at(obj, "spec.taints")
        .iter()
        .map(|t| match str_at(t, "value") {
            "" => format!("{}:{}", str_at(t, "key"), str_at(t, "effect")),
            v => format!("{}={v}:{}", str_at(t, "key"), str_at(t, "effect")),
        })
        .collect();
    doc.field(0, "Taints", taints.join("\n"));
    let unsched = at(obj, "spec.unschedulable").as_bool().unwrap_or(false);
    doc.field(0, "Unschedulable", unsched.to_string());
    conditions(
        doc,
        obj,
        &["Type", "Status", "LastHeartbeatTime", "Reason", "Message"],
        &["type", "status", "lastHeartbeatTime", "reason", "message"],
    );
    doc.section(0, "Addresses");
    for a in list_at(obj, "status.addresses") {
        doc.field(2, str_at(a, "type"), str_at(a, "address"));
    }
    for (label, path) in [
        ("Capacity", "status.capacity"),
        ("Allocatable", "status.allocatable"),
    ] {
        doc.section(0, label);
        for (k, v) in map_at(obj, path) {
            doc.field(2, k, scalar_text(v));
        }
    }
    doc.section(0, "System Info");
    for (label, key) in [
        ("Machine ID", "machineID"),
        ("Kernel Version", "kernelVersion"),
        ("OS Image", "osImage"),
        ("Operating System", "operatingSystem"),
        ("Architecture", "architecture"),
        ("Container Runtime Version", "containerRuntimeVersion"),
        ("Kubelet Version", "kubeletVersion"),
    ] {
        doc.field(2, label, str_at(obj, &format!("status.nodeInfo.{key}")));
    }
}

fn configmap(doc: &mut Doc, obj: &Value) {
    doc.raw(0, "");
    doc.raw(0, "Data");
    doc.raw(0, "====");
    for (k, v) in map_at(obj, "data") {
        doc.raw(0, format!("{k}:"));
        doc.raw(0, "----");
        doc.raw(0, scalar_text(v).trim_end_matches('\n'));
        doc.raw(0, "");
    }
    doc.raw(0, "");
    doc.raw(0, "BinaryData");
    doc.raw(0, "====");
    for (k, v) in map_at(obj, "binaryData") {
        doc.raw(
            0,
            format!("{k}: {} bytes", v.as_str().map_or(0, |s| s.len() * 3 / 4)),
        );
    }
    doc.raw(0, "");
}

fn secret(doc: &mut Doc, obj: &Value) {
    doc.raw(0, "");
    doc.field(0, "Type", str_or(obj, "type", "Opaque"));
    doc.raw(0, "");
    doc.raw(0, "Data");
    doc.raw(0, "====");
    for (k, v) in map_at(obj, "data") {
        let bytes = v.as_str().map_or(0, |s| s.trim_end_matches('=').len() * 3 / 4);
        doc.field(0, k, format!("{bytes} bytes"));
    }
}

fn event(doc: &mut Doc, obj: &Value) {
    doc.field(
        0,
        "Involved Object",
        format!(
            "{}/{}",
            str_at(obj, "involvedObject.kind"),
            str_at(obj, "involvedObject.name")
        ),
    );
    doc.field(0, "Type", str_at(obj, "type"));
    doc.field(0, "Reason", str_at(obj, "reason"));
    doc.field(0, "Message", str_at(obj, "message").trim());
    doc.field(0, "Count", int_at(obj, "count").to_string());
    doc.field(0, "Last Seen", str_at(obj, "lastTimestamp"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::describe;
    use chrono::{DateTime, Utc};
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .expect("ts")
            .with_timezone(&Utc)
    }

    #[test]
    fn pod_description() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web", "hash": "1"},
                         "annotations": {crate::apply_plan::LAST_APPLIED: "{}"}},
            "spec": {"nodeName": "pi-1", "containers": [{"name": "web", "image": "nginx",
                "ports": [{"containerPort": 80}], "env": [{"name": "MODE", "value": "edge"}],
                "resources": {"limits": {"cpu": "500m"}}}]},
            "status": {"phase": "Running", "podIP": "10.1.0.4",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2024-05-01T11:00:00Z"}}}]}
        });
        let events = vec![
            json!({"type": "Normal", "reason": "Scheduled", "message": "assigned to pi-1",
            "lastTimestamp": "2024-05-01T11:59:00Z", "source": {"component": "scheduler"}}),
        ];
        let text = describe(Kind::Pod, &pod, Some(&events), now());
        let expected = "\
Name:               web-1
Namespace:          default
Labels:             app=web
                    hash=1
Annotations:        <none>
CreationTimestamp:  <none>
Node:               pi-1
Start Time:         <none>
Status:             Running
IP:                 10.1.0.4
Containers:
  web:
    Image:          nginx
    Port:           80/TCP
    State:          Running
      Started:  2024-05-01T11:00:00Z
    Ready:          true
    Restart Count:  0
    Limits:
      cpu:  500m
    Environment:
      MODE:  edge
Conditions:
  Type    Status
  ----    ------
  Ready   True
Node-Selectors:  <none>
Events:
  Type     Reason      Age   From        Message
  ----     ------      ---   ----        -------
  Normal   Scheduled   60s   scheduler   assigned to pi-1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn other_kinds_do_not_panic_on_sparse_objects() {
        for kind in Kind::ALL {
            let text = describe(*kind, &json!({"metadata": {"name": "x"}}), None, now());
            assert!(text.starts_with("Name:"), "{kind:?}: {text}");
            let text = describe(*kind, &json!(null), Some(&[]), now());
            assert!(text.contains("Events:"), "{kind:?}: {text}");
        }
    }

    #[test]
    fn service_and_endpoints_descriptions() {
        let svc = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "clusterIP": "10.43.0.10",
                "clusterIPs": ["10.43.0.10"], "sessionAffinity": "None",
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "nodePort": 30080}]}});
        let ep = json!({"metadata": {"name": "web", "namespace": "default"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.5"}, {"ip": "10.0.0.6"}], "notReadyAddresses": [{"ip": "10.0.0.7"}],
             "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]});
        let text = crate::describe::describe_with(Kind::Service, &svc, Some(&ep), None, now());
        let expected = "\
Name:               web
Namespace:          default
Labels:             <none>
Annotations:        <none>
CreationTimestamp:  <none>
Selector:           app=web
Type:               NodePort
IP:                 10.43.0.10
IPs:                10.43.0.10
Port:               http  80/TCP
TargetPort:         http/TCP
NodePort:           http  30080/TCP
Endpoints:          10.0.0.5:8080,10.0.0.6:8080
Session Affinity:   None
";
        assert_eq!(text, expected);
        let text = describe(Kind::Service, &svc, None, now());
        assert!(text.contains("Endpoints:          <none>\n"), "{text}");
        let text = describe(Kind::Endpoints, &ep, Some(&[]), now());
        assert!(
            text.contains("Subsets:\n  Addresses:          10.0.0.5,10.0.0.6\n  NotReadyAddresses:  10.0.0.7\n  Ports:\n"),
            "{text}"
        );
        assert!(text.contains("    Name   Port   Protocol\n"), "{text}");
        assert!(text.contains("    http   8080   TCP\n"), "{text}");
    }

    #[test]
    fn deployment_and_configmap() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
            "status": {"updatedReplicas": 3, "replicas": 3, "availableReplicas": 2, "unavailableReplicas": 1}});
        let text = describe(Kind::Deployment, &d, None, now());
        assert!(
            text.contains(
                "Replicas:               3 desired | 3 updated | 3 total | 2 available | 1 unavailable\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge\n"),
            "{text}"
        );
        assert!(
            text.contains("Pod Template:\n  Labels:  app=web\n  Containers:\n    web:\n      Image:"),
            "{text}"
        );
        let cm = json!({"metadata": {"name": "c"}, "data": {"k": "v"}});
        let text = describe(Kind::ConfigMap, &cm, None, now());
        assert!(text.contains("Data\n====\nk:\n----\nv\n"), "{text}");
    }
}
