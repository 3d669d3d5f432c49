//! What `get` shows for each kind: the headers and one row per object,
//! computed from the object's JSON with kubectl's rules (pod STATUS, node
//! ROLES, service PORT(S), endpoints ENDPOINTS…).

use chrono::{DateTime, Utc};
use serde_json::Value;
use shturman_api::Kind;

use crate::table::age;
use crate::value::{at, int_at, joined_map, list_at, map_at, or_none, str_at, str_or};

/// The column headers for `kind` (without NAMESPACE / LABELS, which `get` adds).
pub fn headers(kind: Kind, wide: bool) -> Vec<String> {
    let (base, extra): (&[&str], &[&str]) = match kind {
        Kind::Pod => (&["NAME", "READY", "STATUS", "RESTARTS", "AGE"], &["IP", "NODE"]),
        Kind::Deployment => (
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        Kind::ReplicaSet => (
            &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        Kind::Service => (
            &["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
            &["SELECTOR"],
        ),
        Kind::Endpoints => (&["NAME", "ENDPOINTS", "AGE"], &[]),
        Kind::ConfigMap => (&["NAME", "DATA", "AGE"], &[]),
        Kind::Secret => (&["NAME", "TYPE", "DATA", "AGE"], &[]),
        Kind::Node => (
            &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            &[
                "INTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
                "ARCH",
            ],
        ),
        Kind::Event => (&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &[]),
        Kind::Namespace => (&["NAME", "STATUS", "AGE"], &[]),
    };
    let mut h: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    if wide {
        h.extend(extra.iter().map(|s| s.to_string()));
    }
    h
}

/// Index of the column holding the object's name (events have none: `None`).
pub fn name_column(kind: Kind) -> Option<usize> {
    (kind != Kind::Event).then_some(0)
}

/// One row for `obj`, matching [`headers`].
pub fn row(kind: Kind, obj: &Value, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let name = str_at(obj, "metadata.name").to_string();
    let created = age(str_at(obj, "metadata.creationTimestamp"), now);
    let (base, extra): (Vec<String>, Vec<String>) = match kind {
        Kind::Pod => pod_row(obj, name, created),
        Kind::Deployment => (
            vec![
                name,
                format!(
                    "{}/{}",
                    int_at(obj, "status.readyReplicas"),
                    int_at(obj, "spec.replicas")
                ),
                int_at(obj, "status.updatedReplicas").to_string(),
                int_at(obj, "status.availableReplicas").to_string(),
                created,
            ],
            template_columns(obj),
        ),
        Kind::ReplicaSet => (
            vec![
                name,
                int_at(obj, "spec.replicas").to_string(),
                int_at(obj, "status.replicas").to_string(),
                int_at(obj, "status.readyReplicas").to_string(),
                created,
            ],
            template_columns(obj),
        ),
        Kind::Service => (
            vec![
                name,
                str_or(obj, "spec.type", "ClusterIP").to_string(),
                str_or(obj, "spec.clusterIP", "<none>").to_string(),
                external_ips(obj),
                or_none(service_ports(obj), "<none>"),
                created,
            ],
            vec![or_none(joined_map(obj, "spec.selector"), "<none>")],
        ),
        Kind::Endpoints => (vec![name, format_endpoints(obj, None), created], vec![]),
        Kind::ConfigMap => {
            let n = map_at(obj, "data").len() + map_at(obj, "binaryData").len();
            (vec![name, n.to_string(), created], vec![])
        }
        Kind::Secret => {
            let n = map_at(obj, "data").len();
            let ty = str_or(obj, "type", "Opaque").to_string();
            (vec![name, ty, n.to_string(), created], vec![])
        }
        Kind::Node => node_row(obj, name, created),
        Kind::Event => (event_row(obj, now), vec![]),
        Kind::Namespace => (
            vec![name, str_or(obj, "status.phase", "Active").to_string(), created],
            vec![],
        ),
    };
    let mut r = base;
    if wide {
        r.extend(extra);
    }
    r
}

fn pod_row(obj: &Value, name: String, created: String) -> (Vec<String>, Vec<String>) {
    let statuses = list_at(obj, "status.containerStatuses");
    let total = list_at(obj, "spec.containers").len().max(statuses.len());
    let ready = statuses
        .iter()
        .filter(|s| at(s, "ready").as_bool() == Some(true))
        .count();
    let restarts: i64 = statuses.iter().map(|s| int_at(s, "restartCount")).sum();
    (
        vec![
            name,
            format!("{ready}/{total}"),
            pod_status(obj),
            restarts.to_string(),
            created,
        ],
        vec![
            str_or(obj, "status.podIP", "<none>").to_string(),
            str_or(obj, "spec.nodeName", "<none>").to_string(),
        ],
    )
}

/// kubectl's pod STATUS: Terminating, a container's waiting/terminated
/// reason, the pod's reason, else its phase.
pub fn pod_status(obj: &Value) -> String {
    if !str_at(obj, "metadata.deletionTimestamp").is_empty() {
        return "Terminating".into();
    }
    let mut status = str_or(obj, "status.reason", str_or(obj, "status.phase", "Pending")).to_string();
    for cs in list_at(obj, "status.initContainerStatuses") {
        let waiting = str_at(cs, "state.waiting.reason");
        let code = int_at(cs, "state.terminated.exitCode");
        if !waiting.is_empty() && waiting != "PodInitializing" {
            return format!("Init:{waiting}");
        }
        if !at(cs, "state.terminated").is_null() && code != 0 {
            return format!("Init:{}", str_or(cs, "state.terminated.reason", "Error"));
        }
    }
    for cs in list_at(obj, "status.containerStatuses").iter().rev() {
        let waiting = str_at(cs, "state.waiting.reason");
        let terminated = str_at(cs, "state.terminated.reason");
        if !waiting.is_empty() {
            status = waiting.to_string();
        } else if !terminated.is_empty() {
            status = terminated.to_string();
        } else if !at(cs, "state.terminated").is_null() {
            let code = int_at(cs, "state.terminated.exitCode");
            status = format!("ExitCode:{code}");
        }
    }
    status
}

fn template_columns(obj: &Value) -> Vec<String> {
    let containers = list_at(obj, "spec.template.spec.containers");
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "image")).collect();
    vec![
        or_none(names.join(","), "<none>"),
        or_none(images.join(","), "<none>"),
        or_none(selector_text(obj), "<none>"),
    ]
}

/// A label selector (`spec.selector`) as text: `app=web,tier in (a,b)`.
pub fn selector_text(obj: &Value) -> String {
    let mut parts: Vec<String> = map_at(obj, "spec.selector.matchLabels")
        .into_iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    for e in list_at(obj, "spec.selector.matchExpressions") {
        let key = str_at(e, "key");
        let values: Vec<&str> = list_at(e, "values").iter().filter_map(Value::as_str).collect();
        parts.push(match str_at(e, "operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op} ({})", values.join(",")),
        });
    }
    parts.join(",")
}

fn external_ips(obj: &Value) -> String {
    let mut ips: Vec<String> = list_at(obj, "status.loadBalancer.ingress")
        .iter()
        .map(|i| str_or(i, "ip", str_at(i, "hostname")).to_string())
        .filter(|s| !s.is_empty())
        .collect();
    ips.extend(
        list_at(obj, "spec.externalIPs")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string),
    );
    if ips.is_empty() {
        if str_at(obj, "spec.type") == "LoadBalancer" {
            "<pending>".into()
        } else {
            "<none>".into()
        }
    } else {
        ips.join(",")
    }
}

/// `80/TCP,443:30443/TCP`.
pub fn service_ports(obj: &Value) -> String {
    list_at(obj, "spec.ports")
        .iter()
        .map(|p| {
            let proto = str_or(p, "protocol", "TCP");
            match int_at(p, "nodePort") {
                0 => format!("{}/{proto}", int_at(p, "port")),
                np => format!("{}:{np}/{proto}", int_at(p, "port")),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// kubectl's ENDPOINTS: `ip:port` for each ready address and port (of the
/// port named `port` only, when given), the first three, then `+ N more...`;
/// `<none>` when there are none.
pub fn format_endpoints(obj: &Value, port: Option<&str>) -> String {
    const MAX: usize = 3;
    let mut shown: Vec<String> = Vec::new();
    let mut count = 0usize;
    for subset in list_at(obj, "subsets") {
        let addresses = list_at(subset, "addresses");
        let ip = |a: &Value| str_at(a, "ip").to_string();
        let ports = list_at(subset, "ports");
        if ports.is_empty() {
            // A headless Service without ports: bare addresses.
            count += addresses.len();
            shown.extend(addresses.iter().map(ip).take(MAX.saturating_sub(shown.len())));
            continue;
        }
        for p in ports
            .iter()
            .filter(|p| port.is_none_or(|n| str_at(p, "name") == n))
        {
            count += addresses.len();
            let n = int_at(p, "port");
            shown.extend(
                addresses
                    .iter()
                    .map(|a| host_port(&ip(a), n))
                    .take(MAX.saturating_sub(shown.len())),
            );
        }
    }
    if shown.is_empty() {
        return "<none>".into();
    }
    let text = shown.join(",");
    if count > shown.len() {
        format!("{text} + {} more...", count - shown.len())
    } else {
        text
    }
}

/// `ip:port`, with brackets for IPv6 (`[fd00::1]:80`).
fn host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn node_row(obj: &Value, name: String, created: String) -> (Vec<String>, Vec<String>) {
    let ready = list_at(obj, "status.conditions")
        .iter()
        .find(|c| str_at(c, "type") == "Ready")
        .map(|c| str_at(c, "status"));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if at(obj, "spec.unschedulable").as_bool() == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let internal_ip = list_at(obj, "status.addresses")
        .iter()
        .find(|a| str_at(a, "type") == "InternalIP")
        .map(|a| str_at(a, "address").to_string())
        .unwrap_or_else(|| "<none>".into());
    let info = |f: &str| str_or(obj, &format!("status.nodeInfo.{f}"), "<unknown>").to_string();
    (
        vec![
            name,
            status,
            or_none(node_roles(obj), "<none>"),
            created,
            str_at(obj, "status.nodeInfo.kubeletVersion").to_string(),
        ],
        vec![
            internal_ip,
            info("osImage"),
            info("kernelVersion"),
            info("containerRuntimeVersion"),
            info("architecture"),
        ],
    )
}

/// Roles from `node-role.kubernetes.io/<role>` labels, comma-separated.
pub fn node_roles(obj: &Value) -> String {
    map_at(obj, "metadata.labels")
        .into_iter()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

fn event_row(obj: &Value, now: DateTime<Utc>) -> Vec<String> {
    let when = [
        "lastTimestamp",
        "eventTime",
        "firstTimestamp",
        "metadata.creationTimestamp",
    ]
    .into_iter()
    .map(|p| str_at(obj, p))
    .find(|s| !s.is_empty())
    .unwrap_or("");
    vec![
        age(when, now),
        str_at(obj, "type").to_string(),
        str_at(obj, "reason").to_string(),
        format!(
            "{}/{}",
            str_at(obj, "involvedObject.kind").to_ascii_lowercase(),
            str_at(obj, "involvedObject.name")
        ),
        str_at(obj, "message").trim().to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .expect("ts")
            .with_timezone(&Utc)
    }

    #[test]
    fn pod_rows() {
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2024-05-01T11:59:55Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "pi-1"},
            "status": {"phase": "Running", "podIP": "10.1.0.4", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        assert_eq!(
            row(Kind::Pod, &pod, true, now()),
            ["web-1", "1/2", "CrashLoopBackOff", "3", "5s", "10.1.0.4", "pi-1"]
        );
        let bare = json!({"metadata": {"name": "p"}});
        assert_eq!(
            row(Kind::Pod, &bare, true, now()),
            ["p", "0/0", "Pending", "0", "<unknown>", "<none>", "<none>"]
        );
        let deleting = json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status(&deleting), "Terminating");
    }

    #[test]
    fn workload_rows() {
        let d = json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            row(Kind::Deployment, &d, true, now()),
            ["web", "2/3", "3", "2", "<unknown>", "web", "nginx", "app=web"]
        );
        assert_eq!(headers(Kind::Deployment, true).len(), 8);
        assert_eq!(headers(Kind::Deployment, false).len(), 5);
    }

    #[test]
    fn service_and_node_rows() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.9",
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}});
        assert_eq!(
            row(Kind::Service, &svc, false, now()),
            [
                "web",
                "NodePort",
                "10.96.0.9",
                "<none>",
                "80:30080/TCP,53/UDP",
                "<unknown>"
            ]
        );
        let node = json!({"metadata": {"name": "pi-1", "labels": {"node-role.kubernetes.io/edge": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.20"}],
                       "nodeInfo": {"kubeletVersion": "v0.1.0", "architecture": "arm64"}}});
        assert_eq!(
            row(Kind::Node, &node, true, now()),
            [
                "pi-1",
                "Ready,SchedulingDisabled",
                "edge",
                "<unknown>",
                "v0.1.0",
                "192.168.1.20",
                "<unknown>",
                "<unknown>",
                "<unknown>",
                "arm64"
            ]
        );
    }

    #[test]
    fn endpoints_rows_show_three_then_count_the_rest() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.5"}, {"ip": "10.0.0.6"}], "notReadyAddresses": [{"ip": "10.0.0.9"}],
             "ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]},
            {"addresses": [{"ip": "fd00::7"}], "ports": [{"name": "http", "port": 8080}]}]});
        assert_eq!(
            row(Kind::Endpoints, &ep, false, now()),
            [
                "web",
                "10.0.0.5:80,10.0.0.6:80,10.0.0.5:9090 + 2 more...",
                "<unknown>"
            ]
        );
        assert_eq!(
            format_endpoints(&ep, Some("http")),
            "10.0.0.5:80,10.0.0.6:80,[fd00::7]:8080"
        );
        assert_eq!(format_endpoints(&ep, Some("dns")), "<none>");
        let none = json!({"metadata": {"name": "web"}});
        assert_eq!(format_endpoints(&none, None), "<none>");
        let not_ready =
            json!({"subsets": [{"notReadyAddresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 80}]}]});
        assert_eq!(format_endpoints(&not_ready, None), "<none>");
        let headless = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}]});
        assert_eq!(format_endpoints(&headless, None), "10.0.0.1,10.0.0.2");
        assert_eq!(headers(Kind::Endpoints, true), ["NAME", "ENDPOINTS", "AGE"]);
    }

    #[test]
    fn misc_rows() {
        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        assert_eq!(row(Kind::ConfigMap, &cm, false, now()), ["c", "2", "<unknown>"]);
        let ev = json!({"type": "Normal", "reason": "Scheduled", "message": "ok\n",
            "lastTimestamp": "2024-05-01T11:58:00Z", "involvedObject": {"kind": "Pod", "name": "web-1"}});
        assert_eq!(
            row(Kind::Event, &ev, false, now()),
            ["2m", "Normal", "Scheduled", "pod/web-1", "ok"]
        );
        let sel = json!({"spec": {"selector": {"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "x", "operator": "DoesNotExist"}]}}});
        assert_eq!(selector_text(&sel), "tier in (a,b),!x");
    }
}
