//! JSON round trips of full objects of every kind, defaults, and strictness
//! (unknown and unsupported fields are errors).

use serde_json::{Value, json};

use crate::Kind;
use crate::apps::Deployment;
use crate::core::{Node, Pod, PodPhase, Service};

/// Decodes, re-encodes and checks the JSON is unchanged (fields already canonical).
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(v: Value) {
    let typed: T = serde_json::from_value(v.clone()).expect("decodes");
    assert_eq!(serde_json::to_value(&typed).expect("encodes"), v);
}

fn full_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-7d4b9c-x2x9z", "generateName": "web-7d4b9c-", "namespace": "default",
            "labels": {"app": "web"}, "annotations": {"note": "x"},
            "uid": "5f0c", "resourceVersion": "42", "generation": 1,
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "deletionTimestamp": "2026-01-02T03:05:05Z", "deletionGracePeriodSeconds": 30,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
                                 "uid": "9a1", "controller": true, "blockOwnerDeletion": true}],
            "finalizers": ["example.com/x"]
        },
        "spec": {
            "containers": [{
                "name": "web", "image": "nginx:1.27", "command": ["nginx"], "args": ["-g", "daemon off;"],
                "workingDir": "/srv",
                "env": [
                    {"name": "A", "value": "1"},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "b", "optional": true}}},
                    {"name": "C", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "c"}}},
                    {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP", "apiVersion": "v1"}}}
                ],
                "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "sec", "optional": false}}],
                "ports": [{"name": "http", "containerPort": 80, "hostPort": 8080, "protocol": "TCP"},
                          {"containerPort": 53, "protocol": "UDP"}],
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true, "subPath": "x"}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "host": "127.0.0.1", "scheme": "HTTPS"},
                                  "initialDelaySeconds": 5, "periodSeconds": 10, "timeoutSeconds": 1,
                                  "successThreshold": 1, "failureThreshold": 3},
                "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "startupProbe": {"exec": {"command": ["cat", "/tmp/ok"]}, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "imagePullPolicy": "IfNotPresent"
            }],
            "volumes": [
                {"name": "data", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
                {"name": "host", "hostPath": {"path": "/var/log", "type": "Directory"}},
                {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "a.conf", "mode": 420}],
                                              "defaultMode": 420, "optional": true}},
                {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 256}}
            ],
            "restartPolicy": "Always", "nodeName": "pi-1", "nodeSelector": {"kubernetes.io/arch": "arm64"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
            ]}}},
            "tolerations": [{"key": "edge", "operator": "Equal", "value": "true", "effect": "NoExecute", "tolerationSeconds": 60}],
            "runtimeClassName": "wasmtime", "terminationGracePeriodSeconds": 30,
            "imagePullSecrets": [{"name": "regcred"}], "hostname": "web", "serviceAccountName": "default"
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T03:04:06Z"}],
            "message": "ok", "reason": "Started", "hostIP": "10.0.0.2", "podIP": "10.42.0.5",
            "podIPs": [{"ip": "10.42.0.5"}], "startTime": "2026-01-02T03:04:05Z",
            "containerStatuses": [{
                "name": "web", "ready": true, "restartCount": 2, "image": "nginx:1.27",
                "imageID": "sha256:abc", "containerID": "containerd://123", "started": true,
                "state": {"running": {"startedAt": "2026-01-02T03:04:06Z"}},
                "lastState": {"terminated": {"exitCode": 137, "signal": 9, "reason": "OOMKilled",
                              "startedAt": "2026-01-02T03:00:00Z", "finishedAt": "2026-01-02T03:04:00Z",
                              "containerID": "containerd://122"}}
            }]
        }
    })
}

#[test]
fn pod_round_trips() {
    round_trip::<Pod>(full_pod());
    let pod: Pod = serde_json::from_value(full_pod()).unwrap();
    assert_eq!(pod.phase(), PodPhase::Running);
    assert!(pod.status.as_ref().unwrap().is_ready());
    assert!(pod.is_wasm());
    // Already defaulted and valid, so normalizing changes nothing.
    assert_eq!(Kind::Pod.normalize(full_pod()).unwrap(), full_pod());
}

#[test]
fn deployment_round_trips_and_defaults() {
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "generation": 3},
        "spec": {
            "replicas": 3, "selector": {"matchLabels": {"app": "web"},
                                         "matchExpressions": [{"key": "tier", "operator": "Exists"}]},
            "template": {"metadata": {"labels": {"app": "web", "tier": "front"}},
                         "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
            "minReadySeconds": 5, "revisionHistoryLimit": 3, "paused": false, "progressDeadlineSeconds": 120
        },
        "status": {
            "observedGeneration": 3, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2,
            "availableReplicas": 2, "unavailableReplicas": 1, "collisionCount": 0,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                            "lastUpdateTime": "2026-01-02T03:04:05Z", "lastTransitionTime": "2026-01-02T03:04:05Z",
                            "message": "done"}]
        }
    });
    round_trip::<Deployment>(d);

    let minimal = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}
    });
    let v = Kind::Deployment.normalize(minimal).unwrap();
    assert_eq!(v["spec"]["replicas"], 1);
    assert_eq!(v["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(v["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(
        v["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    let pod = &v["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
    // Normalizing is idempotent.
    assert_eq!(Kind::Deployment.normalize(v.clone()).unwrap(), v);

    let recreate = json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "strategy": {"type": "Recreate"},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}
    });
    let v = Kind::Deployment.normalize(recreate).unwrap();
    assert_eq!(v["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(v["apiVersion"], "apps/v1");
    assert_eq!(v["kind"], "Deployment");
}

#[test]
fn service_round_trips() {
    round_trip::<Service>(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "NodePort", "selector": {"app": "web"},
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http", "nodePort": 30080},
                      {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 5353}],
            "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "sessionAffinity": "ClientIP"
        },
        "status": {"loadBalancer": {}}
    }));
}

#[test]
fn node_round_trips() {
    let n = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "pi-1", "labels": {"kubernetes.io/arch": "arm64"}},
        "spec": {"unschedulable": true, "podCIDR": "10.42.1.0/24", "providerID": "shturman://pi-1",
                 "taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute",
                             "timeAdded": "2026-01-02T03:04:05Z"},
                            {"key": "dedicated", "value": "edge", "effect": "PreferNoSchedule"}]},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "32Gi"},
            "allocatable": {"cpu": "3500m", "memory": "7Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady", "message": "ok",
                            "lastHeartbeatTime": "2026-01-02T03:04:05Z", "lastTransitionTime": "2026-01-02T03:00:00Z"},
                           {"type": "MemoryPressure", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.20"}, {"type": "Hostname", "address": "pi-1"}],
            "nodeInfo": {"architecture": "arm64", "operatingSystem": "linux", "kernelVersion": "6.6.0",
                         "osImage": "Debian 12", "machineID": "m", "bootID": "b",
                         "containerRuntimeVersion": "containerd://1.7", "kubeletVersion": "v0.1.0",
                         "agentVersion": "0.1.0"},
            "runtimeHandlers": [{"name": "wasmtime", "version": "30.0"}, {"name": "runc"}]
        }
    });
    round_trip::<Node>(n.clone());
    let node: Node = serde_json::from_value(n.clone()).unwrap();
    assert!(node.is_ready());
    assert!(node.is_unschedulable());
    assert_eq!(Kind::Node.normalize(n.clone()).unwrap(), n);
}

#[test]
fn other_kinds_normalize() {
    let ns = Kind::Namespace
        .normalize(json!({"metadata": {"name": "edge"}}))
        .unwrap();
    assert_eq!(ns["status"]["phase"], "Active");
    let ev = Kind::Event
        .normalize(json!({
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "1",
                               "apiVersion": "v1", "resourceVersion": "2", "fieldPath": "spec.containers{web}"},
            "reason": "Scheduled", "message": "assigned to pi-1", "type": "Normal",
            "firstTimestamp": "2026-01-02T03:04:05Z", "lastTimestamp": "2026-01-02T03:04:05Z",
            "source": {"component": "scheduler", "host": "cp"},
            "reportingComponent": "shturman-scheduler", "reportingInstance": "cp-1"
        }))
        .unwrap();
    assert_eq!(ev["count"], 1);
    let cm = Kind::ConfigMap
        .normalize(json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": "AAE="}, "immutable": true}))
        .unwrap();
    assert_eq!(cm["immutable"], true);
    let rs = Kind::ReplicaSet
        .normalize(json!({
            "metadata": {"name": "web-1"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "minReadySeconds": 0,
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "i:1"}]}}},
            "status": {"replicas": 1, "fullyLabeledReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                       "observedGeneration": 1, "conditions": [{"type": "ReplicaFailure", "status": "False"}]}
        }))
        .unwrap();
    assert_eq!(rs["spec"]["replicas"], 1);
}

#[test]
fn unknown_and_unsupported_fields_are_rejected() {
    for (kind, body, field) in [
        (
            Kind::Pod,
            json!({"metadata": {"name": "p"}, "spec": {"initContainers": [], "containers": []}}),
            "initContainers",
        ),
        (
            Kind::Pod,
            json!({"metadata": {"name": "p", "labelz": {}}}),
            "labelz",
        ),
        (
            Kind::Pod,
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "securityContext": {}}]}}),
            "securityContext",
        ),
        (
            Kind::Service,
            json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}}),
            "LoadBalancer",
        ),
        (
            Kind::Deployment,
            json!({"metadata": {"name": "d"}, "spec": {"strategy": {"type": "Canary"}}}),
            "Canary",
        ),
        (
            Kind::Pod,
            json!({"metadata": {"name": "p"}, "status": {"phase": "Sleeping"}}),
            "Sleeping",
        ),
    ] {
        let errs = kind.normalize(body).unwrap_err();
        assert!(errs[0].message.contains(field), "{field}: {:?}", errs);
    }
}
