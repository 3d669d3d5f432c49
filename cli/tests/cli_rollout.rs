//! End-to-end tests of `scale`, `rollout …`, `cordon`, `uncordon` and `drain`:
//! a control plane in-process on port 0 (memory store, no controllers), objects
//! created through the API with the fields controllers would set, and the real
//! `shturman` binary run against it.

use std::io::{BufRead, BufReader};

use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
mod common;

use common::Cluster;

const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const RSS: &str = "/apis/apps/v1/namespaces/default/replicasets";
const PODS: &str = "/api/v1/namespaces/default/pods";
const NODES: &str = "/api/v1/nodes";

fn template(image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": image}]},
    })
}

fn deployment(name: &str, replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(image),
        },
    })
}

/// A ReplicaSet as the deployment controller makes it: owned by the
/// deployment, revision annotation, template with the pod-template-hash label.
fn replicaset(owner: &Value, hash: &str, revision: u32, cause: Option<&str>, image: &str) -> Value {
    let owner_name = owner["metadata"]["name"].as_str().expect("name");
    let mut annotations = json!({"deployment.kubernetes.io/revision": revision.to_string()});
    if let Some(c) = cause {
        annotations["kubernetes.io/change-cause"] = json!(c);
    }
    let mut tmpl = template(image);
    tmpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{owner_name}-{hash}"),
            "labels": {"app": "web", "pod-template-hash": hash},
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": owner_name,
                "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": hash}},
            "template": tmpl,
        },
    })
}

fn pod(name: &str, node: &str, owner: Option<&Value>) -> Value {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "web", "image": "nginx:1.25"}]},
    });
    if let Some(rs) = owner {
        p["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs["metadata"]["name"],
            "uid": rs["metadata"]["uid"], "controller": true,
        }]);
    }
    p
}

fn image_of(d: &Value) -> &str {
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or("")
}

#[test]
fn scale_pause_resume_restart() {
    let c = Cluster::start();
    let web = c.create(DEPLOYS, deployment("web", 2, "nginx:1.25"));
    assert_eq!(
        c.ok(&["scale", "deployment", "web", "--replicas", "3"]),
        "deployment.apps/web scaled\n"
    );
    assert_eq!(c.get(&format!("{DEPLOYS}/web"))["spec"]["replicas"], 3);
    assert_eq!(
        c.fails(&[
            "scale",
            "deploy/web",
            "--replicas",
            "1",
            "--current-replicas",
            "5"
        ]),
        "error: Expected replicas to be 5, was 3\n"
    );
    assert_eq!(
        c.ok(&[
            "scale",
            "deploy/web",
            "--replicas",
            "1",
            "--current-replicas",
            "3"
        ]),
        "deployment.apps/web scaled\n"
    );
    assert_eq!(c.get(&format!("{DEPLOYS}/web"))["spec"]["replicas"], 1);
    assert_eq!(
        c.fails(&["scale", "deployment", "nope", "--replicas", "1"]),
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );
    assert!(
        c.fails(&["scale", "deploy", "web", "--replicas=-1"])
            .contains("greater than or equal to 0")
    );
    let rs = c.create(RSS, replicaset(&web, "abc12", 1, None, "nginx:1.25"));
    let rs_name = rs["metadata"]["name"].as_str().expect("name");
    assert_eq!(
        c.ok(&["scale", "replicaset", rs_name, "--replicas", "0"]),
        format!("replicaset.apps/{rs_name} scaled\n")
    );

    assert_eq!(
        c.ok(&["rollout", "pause", "deployment", "web"]),
        "deployment.apps/web paused\n"
    );
    assert_eq!(c.get(&format!("{DEPLOYS}/web"))["spec"]["paused"], true);
    assert_eq!(
        c.fails(&["rollout", "pause", "deployment/web"]),
        "error: deployments.apps \"web\" is already paused\n"
    );
    assert!(
        c.fails(&["rollout", "restart", "deployment", "web"])
            .contains("paused"),
        "restart refuses a paused deployment"
    );
    assert_eq!(
        c.ok(&["rollout", "resume", "deploy/web"]),
        "deployment.apps/web resumed\n"
    );
    assert_eq!(
        c.fails(&["rollout", "resume", "deployment", "web"]),
        "error: deployments.apps \"web\" is not paused\n"
    );

    let before = c.get(&format!("{DEPLOYS}/web"));
    assert_eq!(
        c.ok(&["rollout", "restart", "deployment", "web"]),
        "deployment.apps/web restarted\n"
    );
    let after = c.get(&format!("{DEPLOYS}/web"));
    let stamp = &after["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"];
    assert!(stamp.as_str().is_some_and(|s| s.ends_with('Z')), "{after}");
    assert!(after["metadata"]["generation"].as_i64() > before["metadata"]["generation"].as_i64());
    assert!(
        c.fails(&["rollout", "pause", "rs", "x"])
            .contains("only deployments have rollouts"),
        "rollout on a replicaset"
    );
}

#[test]
fn history_and_undo() {
    let c = Cluster::start();
    let web = c.create(DEPLOYS, {
        let mut d = deployment("web", 2, "nginx:1.27");
        d["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "3"});
        d
    });
    c.create(
        RSS,
        replicaset(&web, "aaaaa", 1, Some("first release"), "nginx:1.25"),
    );
    c.create(RSS, replicaset(&web, "bbbbb", 2, None, "nginx:1.26"));
    c.create(RSS, replicaset(&web, "ccccc", 3, None, "nginx:1.27"));
    let other = c.create(DEPLOYS, deployment("other", 1, "busybox"));
    c.create(RSS, replicaset(&other, "zzzzz", 9, None, "busybox"));

    assert_eq!(
        c.ok(&["rollout", "history", "deployment", "web"]),
        "deployment.apps/web\nREVISION  CHANGE-CAUSE\n1         first release\n2         <none>\n3         <none>\n\n"
    );
    let rev2 = c.ok(&["rollout", "history", "deploy/web", "--revision", "2"]);
    assert!(
        rev2.starts_with("deployment.apps/web with revision #2\nPod Template:\n"),
        "{rev2}"
    );
    assert!(rev2.contains("pod-template-hash=bbbbb"), "{rev2}");
    assert!(rev2.contains("Image:") && rev2.contains("nginx:1.26"), "{rev2}");
    let rev1 = c.ok(&["rollout", "history", "deploy/web", "--revision", "1"]);
    assert!(
        rev1.contains("kubernetes.io/change-cause: first release"),
        "{rev1}"
    );
    assert_eq!(
        c.fails(&["rollout", "history", "deployment", "web", "--revision", "7"]),
        "error: unable to find the specified revision\n"
    );

    // Undo to the previous revision (2).
    let gen_before = c.get(&format!("{DEPLOYS}/web"))["metadata"]["generation"].clone();
    assert_eq!(
        c.ok(&["rollout", "undo", "deployment", "web"]),
        "deployment.apps/web rolled back\n"
    );
    let d = c.get(&format!("{DEPLOYS}/web"));
    assert_eq!(image_of(&d), "nginx:1.26");
    assert_eq!(d["spec"]["template"]["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert!(d["metadata"]["generation"].as_i64() > gen_before.as_i64());
    assert_eq!(
        c.ok(&["rollout", "undo", "deployment", "web", "--to-revision", "2"]),
        "deployment.apps/web skipped rollback (current template already matches revision 2)\n"
    );
    assert_eq!(
        c.ok(&["rollout", "undo", "deploy/web", "--to-revision", "1"]),
        "deployment.apps/web rolled back\n"
    );
    let d = c.get(&format!("{DEPLOYS}/web"));
    assert_eq!(image_of(&d), "nginx:1.25");
    assert_eq!(
        d["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "first release"
    );
    assert_eq!(
        c.fails(&["rollout", "undo", "deployment", "web", "--to-revision", "7"]),
        "error: unable to find specified revision 7 in history\n"
    );

    // One revision is no history to go back to.
    assert_eq!(
        c.fails(&["rollout", "undo", "deployment", "other"]),
        "error: no rollout history found for deployment \"other\"\n"
    );
    c.create(DEPLOYS, deployment("lonely", 1, "busybox"));
    assert_eq!(
        c.ok(&["rollout", "history", "deployment", "lonely"]),
        "deployment.apps/lonely\nNo rollout history found.\n\n"
    );
    assert_eq!(
        c.fails(&["rollout", "history", "deployment", "ghost"]),
        "Error from server (NotFound): deployments.apps \"ghost\" not found\n"
    );
}

#[test]
fn status_follows_the_rollout_and_fails_on_deadline() {
    let c = Cluster::start();
    c.create(DEPLOYS, deployment("web", 3, "nginx:1.25"));
    let path = format!("{DEPLOYS}/web");
    assert_eq!(
        c.ok(&["rollout", "status", "deployment", "web", "--watch=false"]),
        "Waiting for deployment spec update to be observed...\n"
    );

    let mut child = c
        .command(&["rollout", "status", "deployment/web", "--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || {
        rx.recv_timeout(Duration::from_secs(15))
            .expect("a status line within 15s")
    };
    assert_eq!(
        next_line(),
        "Waiting for deployment spec update to be observed..."
    );
    c.set_status(
        &path,
        json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 1}),
    );
    assert_eq!(
        next_line(),
        "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
    );
    c.set_status(
        &path,
        json!({"observedGeneration": 1, "replicas": 4, "updatedReplicas": 3}),
    );
    assert_eq!(
        next_line(),
        "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
    );
    c.set_status(
        &path,
        json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
    );
    assert_eq!(
        next_line(),
        "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available..."
    );
    c.set_status(
        &path,
        json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3, "readyReplicas": 3}),
    );
    assert_eq!(next_line(), "deployment \"web\" successfully rolled out");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "rollout status did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    assert_eq!(
        c.ok(&["rollout", "status", "deployment", "web"]),
        "deployment \"web\" successfully rolled out\n"
    );

    // A progress deadline exceeded fails the command.
    c.set_status(
        &path,
        json!({
            "observedGeneration": 1, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2,
            "conditions": [{
                "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"web-abc12\" has timed out progressing.",
            }],
        }),
    );
    assert_eq!(
        c.fails(&["rollout", "status", "deployment", "web"]),
        "error: deployment \"web\" exceeded its progress deadline\n"
    );

    // Stuck, with a timeout.
    c.set_status(
        &path,
        json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 1}),
    );
    let started = Instant::now();
    assert_eq!(
        c.fails(&["rollout", "status", "deployment", "web", "--timeout", "1s"]),
        "error: timed out waiting for the condition\n"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        c.fails(&["rollout", "status", "deployment", "ghost"]),
        "Error from server (NotFound): deployments.apps \"ghost\" not found\n"
    );
}

#[test]
fn cordon_uncordon_and_drain() {
    let c = Cluster::start();
    for n in ["n1", "n2"] {
        c.create(
            NODES,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}}),
        );
    }
    assert_eq!(c.ok(&["cordon", "n1"]), "node/n1 cordoned\n");
    assert_eq!(c.get(&format!("{NODES}/n1"))["spec"]["unschedulable"], true);
    assert_eq!(c.ok(&["cordon", "n1"]), "node/n1 already cordoned\n");
    assert_eq!(c.ok(&["uncordon", "n1"]), "node/n1 uncordoned\n");
    assert!(c.get(&format!("{NODES}/n1"))["spec"]["unschedulable"].is_null());
    assert_eq!(c.ok(&["uncordon", "n1"]), "node/n1 already uncordoned\n");
    assert_eq!(
        c.fails(&["cordon", "nope"]),
        "Error from server (NotFound): nodes \"nope\" not found\n"
    );

    let web = c.create(DEPLOYS, deployment("web", 2, "nginx:1.25"));
    let rs = c.create(RSS, replicaset(&web, "abc12", 1, None, "nginx:1.25"));
    c.create(PODS, pod("web-abc12-a", "n1", Some(&rs)));
    c.create(PODS, pod("x", "n1", None));
    c.create(PODS, pod("web-abc12-b", "n2", Some(&rs)));

    // An unmanaged pod stops the drain (the node stays cordoned).
    let out = c.run(&["drain", "n1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "node/n1 cordoned\n");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        err,
        "error: unable to drain node \"n1\": cannot delete Pods that declare no controller (use --force to override): default/x\n"
    );
    assert!(c.exists(&format!("{PODS}/web-abc12-a")));
    assert!(c.exists(&format!("{PODS}/x")));

    // A node with only managed pods drains without --force.
    assert_eq!(
        c.ok(&["drain", "n2", "--timeout", "20s"]),
        "node/n2 cordoned\nevicting pod default/web-abc12-b\npod/web-abc12-b evicted\nnode/n2 drained\n"
    );
    assert!(!c.exists(&format!("{PODS}/web-abc12-b")));

    let out = c.run(&["drain", "n1", "--force", "--grace-period", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "node/n1 already cordoned\nevicting pod default/web-abc12-a\nevicting pod default/x\n\
         pod/web-abc12-a evicted\npod/x evicted\nnode/n1 drained\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Warning: deleting Pods that declare no controller: default/x\n"
    );
    assert!(!c.exists(&format!("{PODS}/web-abc12-a")));
    assert!(!c.exists(&format!("{PODS}/x")));
}
