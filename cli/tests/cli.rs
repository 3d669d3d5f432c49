//! End-to-end tests of the `shturman` binary against a control plane started
//! in-process on port 0 with the memory store.

use std::io::{BufRead, BufReader};

use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::Cluster;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const APP: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: conf
data:
  mode: edge
";

#[test]
fn apply_get_describe_delete_round_trip() {
    let c = Cluster::start();
    let file = c.write("app.yaml", APP);
    assert_eq!(
        c.ok(&["apply", "-f", &file]),
        "deployment.apps/web created\nconfigmap/conf created\n"
    );
    assert_eq!(
        c.ok(&["apply", "-f", &file]),
        "deployment.apps/web unchanged\nconfigmap/conf unchanged\n"
    );
    c.write("app.yaml", &APP.replace("replicas: 2", "replicas: 3"));
    assert_eq!(
        c.ok(&["apply", "-f", c.path().to_str().expect("utf-8 path")]),
        "deployment.apps/web configured\nconfigmap/conf unchanged\n"
    );

    let table = c.ok(&["get", "deploy"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME   READY   UP-TO-DATE   AVAILABLE   AGE"),
        "{table}"
    );
    assert!(lines[1].starts_with("web    0/3"), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "deployment", "web", "-o", "json"])).expect("json");
    assert_eq!(json["kind"], "Deployment");
    assert_eq!(json["spec"]["replicas"], 3);
    let list: serde_json::Value = serde_json::from_str(&c.ok(&["get", "cm", "-o", "json"])).expect("json");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["kind"], "ConfigMap");
    assert!(
        c.ok(&["get", "cm/conf", "-o", "yaml"])
            .contains("data:\n  mode: edge\n")
    );
    assert_eq!(
        c.ok(&["get", "deployments.apps", "-o", "name"]),
        "deployment.apps/web\n"
    );

    let described = c.ok(&["describe", "configmap", "conf"]);
    assert!(described.starts_with("Name:"), "{described}");
    assert!(described.contains("mode:\n----\nedge\n"), "{described}");

    assert_eq!(c.ok(&["delete", "cm", "conf"]), "configmap \"conf\" deleted\n");
    let again = c.run(&["delete", "cm", "conf"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        stderr(&again),
        "Error from server (NotFound): configmaps \"conf\" not found\n"
    );
    assert_eq!(c.ok(&["delete", "cm", "conf", "--ignore-not-found"]), "");
    let empty = c.run(&["get", "cm"]);
    assert!(empty.status.success());
    assert_eq!(stderr(&empty), "No resources found in default namespace.\n");
}

#[test]
fn failures_say_what_and_where() {
    let c = Cluster::start();
    let missing = c.run(&["get", "pod", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing),
        "Error from server (NotFound): pods \"nope\" not found\n"
    );

    let bad_token = c.run(&["get", "pods", "--token", "wrong"]);
    assert_eq!(bad_token.status.code(), Some(1));
    assert!(
        stderr(&bad_token).contains("401 Unauthorized"),
        "{}",
        stderr(&bad_token)
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = listener.local_addr().expect("addr");
    drop(listener);
    let unreachable = c.run(&["get", "pods", "--server", &closed.to_string()]);
    assert_eq!(unreachable.status.code(), Some(1));
    let text = stderr(&unreachable);
    assert!(
        text.contains(&format!("http://{closed}")) && text.contains("connection refused"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");

    let bad = c.write(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\nbogus: 1\n",
    );
    let good = c.write(
        "good.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\n",
    );
    let out = c.run(&["apply", "-f", &good, "-f", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad.yaml:5:1: bogus"), "{}", stderr(&out));
    assert_eq!(
        c.run(&["get", "cm", "y"]).status.code(),
        Some(1),
        "nothing was applied"
    );

    let unknown = c.run(&["get", "widgets"]);
    assert!(stderr(&unknown).starts_with("error: the server doesn't have a resource type \"widgets\""));

    let version = c.ok(&["version"]);
    assert!(version.starts_with("Client Version: v"), "{version}");
    assert!(version.contains("Server Version: "), "{version}");
    assert!(c.url.starts_with("http://127.0.0.1:"));
}

#[test]
fn watch_streams_changes() {
    let c = Cluster::start();
    let first = c.write(
        "a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n",
    );
    c.ok(&["apply", "-f", &first]);
    let mut child = c
        .command(&["get", "cm", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(needle) => return,
                Ok(_) => {}
                Err(e) => panic!("no line starting with {needle:?}: {e}"),
            }
        }
    };
    wait_for("first");
    let second = c.write(
        "b.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: second\n",
    );
    c.ok(&["apply", "-f", &second]);
    wait_for("second");
    let _ = child.kill();
    let _ = child.wait();
}
