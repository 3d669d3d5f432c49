//! End-to-end tests of the `shturman` binary against a control plane started
//! in-process on port 0 with the memory store.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shturman_control::{Config, Control, StoreChoice};

/// A running control plane and a scratch directory to run the CLI in.
struct Cluster {
    dir: tempfile::TempDir,
    admin_conf: PathBuf,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    fn start() -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: dir.path().join("data"),
            api_addr: "127.0.0.1:0".parse().expect("addr"),
            store: StoreChoice::Memory,
            // These tests drive objects by hand: no controllers.
            controllers: shturman_control::manager::ControllerSettings::disabled(),
            mqtt: shturman_control::MqttChoice::Off,
        };
        let control = runtime.block_on(Control::start(config)).expect("control starts");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let admin_conf = control.admin_conf.clone();
        let url = control.url.clone();
        runtime.spawn(control.run_until(async move {
            let _ = rx.await;
        }));
        Cluster {
            dir,
            admin_conf,
            url,
            stop: Some(tx),
            runtime,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shturman"));
        cmd.current_dir(self.dir.path())
            .env_remove("SHTURMAN_SERVER")
            .env_remove("SHTURMAN_TOKEN")
            .env_remove("RUST_LOG")
            .env("SHTURMAN_CONFIG", &self.admin_conf)
            .env("HOME", self.dir.path())
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("runs")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "shturman {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = &self.runtime;
    }
}

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
