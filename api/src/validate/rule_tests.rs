//! Each validation rule, checked through `Kind::normalize` with the path it reports.

use serde_json::{Value, json};

use crate::Kind;

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
            }
        }
    })
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    })
}

/// Applies `edit` to a valid object and returns the errors' (path, message, hint).
fn errors(kind: Kind, mut base: Value, edit: impl FnOnce(&mut Value)) -> Vec<(String, String)> {
    edit(&mut base);
    match kind.normalize(base) {
        Ok(_) => Vec::new(),
        Err(errs) => errs
            .into_iter()
            .map(|e| {
                assert!(e.hint.is_some(), "every rule says what to do: {e}");
                (e.path, e.message)
            })
            .collect(),
    }
}

fn paths(errs: &[(String, String)]) -> Vec<&str> {
    errs.iter().map(|(p, _)| p.as_str()).collect()
}

const C0: &str = "spec.template.spec.containers[0]";

#[test]
fn valid_objects_pass() {
    assert!(errors(Kind::Deployment, deployment(), |_| {}).is_empty());
    assert!(errors(Kind::Pod, pod(), |_| {}).is_empty());
}

#[test]
fn metadata_rules() {
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["metadata"]["name"] = json!("Web_1")
    });
    assert_eq!(paths(&e), ["metadata.name"]);
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["metadata"]["namespace"] = json!("a.b")
    });
    assert_eq!(paths(&e), ["metadata.namespace"]);
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["metadata"]["labels"]["bad key"] = json!("x");
        d["metadata"]["labels"]["ok"] = json!("bad value!");
    });
    assert_eq!(
        paths(&e),
        ["metadata.labels[\"bad key\"]", "metadata.labels[\"ok\"]"]
    );
    let e = errors(Kind::Deployment, deployment(), |d| d["metadata"] = json!({}));
    assert_eq!(paths(&e), ["metadata.name"]);
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["metadata"] = json!({"generateName": "web-"})
    });
    assert!(e.is_empty());
}

#[test]
fn replicas_and_selector() {
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["spec"]["replicas"] = json!(-1)
    });
    assert_eq!(paths(&e), ["spec.replicas"]);
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["spec"]["selector"] = json!({})
    });
    assert_eq!(paths(&e), ["spec.selector"]);
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["spec"]["selector"]["matchLabels"]["tier"] = json!("front")
    });
    assert_eq!(paths(&e), ["spec.template.metadata.labels"]);
    assert!(e[0].1.contains("missing tier=front"), "{}", e[0].1);
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["spec"]["selector"]["matchExpressions"] =
            json!([{"key": "env", "operator": "In", "values": ["prod"]}])
    });
    assert_eq!(paths(&e), ["spec.template.metadata.labels"]);
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["spec"]["selector"]["matchExpressions"] = json!([{"key": "env", "operator": "In"}])
    });
    assert_eq!(
        paths(&e),
        [
            "spec.selector.matchExpressions[0].values",
            "spec.template.metadata.labels"
        ]
    );
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
        "spec": {"replicas": -2, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "c"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}
    });
    let e = errors(Kind::ReplicaSet, rs, |_| {});
    assert_eq!(paths(&e), ["spec.replicas", "spec.template.metadata.labels"]);
}

#[test]
fn template_restart_policy_must_be_always() {
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never")
    });
    assert_eq!(paths(&e), ["spec.template.spec.restartPolicy"]);
    let e = errors(Kind::Pod, pod(), |p| p["spec"]["restartPolicy"] = json!("Never"));
    assert!(e.is_empty());
}

#[test]
fn container_rules() {
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["spec"]["template"]["spec"]["containers"] = json!([])
    });
    assert_eq!(paths(&e), ["spec.template.spec.containers"]);
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "a", "image": "x:1"}, {"name": "a", "image": "y:1"}])
    });
    assert_eq!(paths(&e), ["spec.template.spec.containers[1].name"]);
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["spec"]["template"]["spec"]["containers"][0]["name"] = json!("Web")
    });
    assert_eq!(paths(&e), [format!("{C0}.name")]);
    let e = errors(Kind::Pod, pod(), |p| {
        p["spec"]["containers"][0]["image"] = json!("")
    });
    assert_eq!(paths(&e), ["spec.containers[0].image"]);
    let e = errors(Kind::Pod, pod(), |p| {
        p["spec"]["containers"] = json!([{"name": "c"}])
    });
    assert_eq!(paths(&e), ["spec.containers[0].image"]);
}

#[test]
fn port_rules() {
    let e = errors(Kind::Pod, pod(), |p| {
        p["spec"]["containers"][0]["ports"] = json!([
            {"containerPort": 0},
            {"containerPort": 80, "hostPort": 70000},
            {"containerPort": 81, "name": "Web_Port"},
            {"containerPort": 82, "name": "http"},
            {"containerPort": 83, "name": "http"},
        ])
    });
    assert_eq!(
        paths(&e),
        [
            "spec.containers[0].ports[0].containerPort",
            "spec.containers[0].ports[1].hostPort",
            "spec.containers[0].ports[2].name",
            "spec.containers[0].ports[4].name",
        ]
    );
}

#[test]
fn volume_rules() {
    let e = errors(Kind::Pod, pod(), |p| {
        p["spec"]["volumes"] = json!([
            {"name": "none"},
            {"name": "two", "emptyDir": {}, "hostPath": {"path": "/x"}},
            {"name": "ok", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "../x"}]}},
            {"name": "rel", "hostPath": {"path": "data"}},
        ]);
        p["spec"]["containers"][0]["volumeMounts"] = json!([
            {"name": "ok", "mountPath": "/etc/cfg"},
            {"name": "missing", "mountPath": "/data"},
            {"name": "ok", "mountPath": "relative"},
        ]);
    });
    assert_eq!(
        paths(&e),
        [
            "spec.volumes[0]",
            "spec.volumes[1]",
            "spec.volumes[2].configMap.items[0].path",
            "spec.volumes[3].hostPath.path",
            "spec.containers[0].volumeMounts[1].name",
            "spec.containers[0].volumeMounts[2].mountPath",
        ]
    );
}

#[test]
fn env_rules() {
    let e = errors(Kind::Pod, pod(), |p| {
        p["spec"]["containers"][0]["env"] = json!([
            {"name": "1BAD", "value": "x"},
            {"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "B", "valueFrom": {}},
            {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}},
            {"name": "D", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ]);
        p["spec"]["containers"][0]["envFrom"] = json!([{"prefix": "X_"}]);
    });
    assert_eq!(
        paths(&e),
        [
            "spec.containers[0].env[0].name",
            "spec.containers[0].env[1].valueFrom",
            "spec.containers[0].env[2].valueFrom",
            "spec.containers[0].env[3].valueFrom.fieldRef.fieldPath",
            "spec.containers[0].envFrom[0]",
        ]
    );
}

#[test]
fn resource_rules() {
    let e = errors(Kind::Pod, pod(), |p| {
        p["spec"]["containers"][0]["resources"] = json!({
            "requests": {"cpu": "2", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "-1", "nvidia.com/gpu": 1}
        })
    });
    assert_eq!(
        paths(&e),
        [
            "spec.containers[0].resources.limits[\"memory\"]",
            "spec.containers[0].resources.limits[\"nvidia.com/gpu\"]",
            "spec.containers[0].resources.requests[\"cpu\"]",
            "spec.containers[0].resources.requests[\"memory\"]",
        ]
    );
    assert!(e[1].1.contains("nvidia.com/gpu"));
    assert!(
        e[2].1.contains("request 2 is more than the limit 500m"),
        "{}",
        e[2].1
    );
}

#[test]
fn probe_rules() {
    let e = errors(Kind::Pod, pod(), |p| {
        let c = &mut p["spec"]["containers"][0];
        c["livenessProbe"] = json!({"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}});
        c["readinessProbe"] = json!({"periodSeconds": 5});
        c["startupProbe"] = json!({"httpGet": {"port": 0}, "successThreshold": 2});
    });
    assert_eq!(
        paths(&e),
        [
            "spec.containers[0].livenessProbe",
            "spec.containers[0].readinessProbe",
            "spec.containers[0].startupProbe.httpGet.port",
            "spec.containers[0].startupProbe.successThreshold",
        ]
    );
    let e = errors(Kind::Pod, pod(), |p| {
        p["spec"]["containers"][0]["readinessProbe"] = json!({"grpc": {"port": 9090}});
    });
    assert_eq!(paths(&e), ["spec.containers[0].readinessProbe.grpc"]);
    assert!(e[0].1.contains("not supported"), "{e:?}");
}

#[test]
fn scheduling_rules() {
    let e = errors(Kind::Pod, pod(), |p| {
        p["spec"]["nodeSelector"] = json!({"kubernetes.io/arch": "arm 64"});
        p["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["x"]}]}]
        }}});
        p["spec"]["tolerations"] = json!([
            {"operator": "Exists", "key": "k", "value": "v"},
            {"value": "v"},
            {"key": "k", "operator": "Exists", "tolerationSeconds": 5, "effect": "NoSchedule"},
        ]);
    });
    assert_eq!(
        paths(&e),
        [
            "spec.nodeSelector[\"kubernetes.io/arch\"]",
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values",
            "spec.tolerations[0].value",
            "spec.tolerations[1].key",
            "spec.tolerations[2].tolerationSeconds",
        ]
    );
}

#[test]
fn strategy_rules() {
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})
    });
    assert_eq!(paths(&e), ["spec.strategy.rollingUpdate.maxUnavailable"]);
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": "x"}})
    });
    assert_eq!(
        paths(&e),
        [
            "spec.strategy.rollingUpdate",
            "spec.strategy.rollingUpdate.maxSurge"
        ]
    );
    let e = errors(Kind::Deployment, deployment(), |d| {
        d["spec"]["strategy"] = json!({"rollingUpdate": {"maxUnavailable": "150%"}})
    });
    assert_eq!(paths(&e), ["spec.strategy.rollingUpdate.maxUnavailable"]);
}

#[test]
fn type_meta_must_match() {
    let e = errors(Kind::Deployment, deployment(), |d| d["apiVersion"] = json!("v1"));
    assert_eq!(paths(&e), ["apiVersion"]);
    let e = errors(Kind::Pod, deployment(), |_| {});
    assert_eq!(paths(&e), ["apiVersion", "kind"]);
}
