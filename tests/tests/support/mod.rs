//! Shared by the agent end-to-end tests that live outside `agent_e2e.rs`:
//! a real `shturman-agent` process and a real Mosquitto broker, each killed
//! on drop, and pods that run the real `ticker` Wasm module (built by
//! scripts/build-wasm-examples.sh). The agent process itself is the
//! harness library's [`Agent`].

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde_json::Value;
use shturman_e2e::{ControlPlane, free_port, stderr, stdout, wait_for};

/// How long any one condition may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// How long a pod may take to reach Running: the agent is a debug build and
/// compiles the module first (wasm_pods.rs allows as much).
pub const RUN_WAIT: Duration = Duration::from_secs(90);

/// The harness's agent process, started here with one-second heartbeats.
pub use shturman_e2e::Agent;

/// Starts an agent (data under `root/name`) heartbeating every second.
pub fn start_agent(mqtt: &str, name: &str, token: &str, root: &Path) -> Result<Agent> {
    Agent::start(mqtt, name, token, root, &["--heartbeat-interval", "1s"])
}

/// The lines the current run of a [`bind_pod`] pod's container wrote
/// (`<time> <stream> F <text>`; the file starts afresh with each run);
/// empty while there is no file.
pub fn pod_log(a: &Agent, name: &str, uid: &str) -> Vec<String> {
    std::fs::read_to_string(a.pod_log_dir(name, uid).join(format!("{CONTAINER}.log")))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// When a container log line (`<time> <stream> F <text>`) was written.
pub fn log_time(line: &str) -> Option<DateTime<Utc>> {
    let t = line.split_whitespace().next()?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A fresh join token.
pub fn token(cp: &ControlPlane) -> Result<String> {
    let out = cp.cli(&["token", "create"]);
    if !out.status.success() {
        bail!("token create failed: {}", stderr(&out));
    }
    Ok(stdout(&out).trim().to_string())
}

/// One node as JSON, if it exists.
pub fn node(cp: &ControlPlane, name: &str) -> Option<Value> {
    let out = cp.cli(&["get", "node", name, "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// A node's Ready condition.
pub fn ready_condition(node: &Value) -> Option<Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
}

/// Whether a node is Ready.
pub fn is_ready(node: &Value) -> bool {
    ready_condition(node).is_some_and(|c| c["status"] == "True")
}

pub use shturman_e2e::ticker_wasm;

/// The container name of [`bind_pod`]'s pods.
pub const CONTAINER: &str = "main";

/// Applies a Pod named `name` bound to `node` that runs the real `ticker`
/// module on wasmtime (it reaches Running and Ready, and never exits);
/// returns its uid.
pub fn bind_pod(cp: &ControlPlane, name: &str, node: &str) -> Result<String> {
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  \
         runtimeClassName: wasmtime\n  containers:\n  - name: {CONTAINER}\n    image: file://{wasm}\n",
        wasm = ticker_wasm().display()
    );
    let out = cp.cli_stdin(&["apply", "-f", "-"], Some(&pod));
    if !out.status.success() {
        bail!("apply pod {name}: {}", stderr(&out));
    }
    pod_uid(cp, name).context("the applied pod has no uid")
}

/// A pod as JSON, if it exists.
pub fn pod(cp: &ControlPlane, name: &str) -> Option<Value> {
    let out = cp.cli(&["get", "pod", name, "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// A pod's uid, if the pod exists.
pub fn pod_uid(cp: &ControlPlane, name: &str) -> Option<String> {
    pod(cp, name)?["metadata"]["uid"].as_str().map(str::to_string)
}

/// Whether the reported status says phase Running, condition Ready True
/// and the first container running.
pub fn is_running_and_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
        && container_status(p)["state"]["running"].is_object()
}

/// The pod, when the agent has reported it Running and Ready.
pub fn running_pod(cp: &ControlPlane, name: &str) -> Option<Value> {
    pod(cp, name).filter(is_running_and_ready)
}

/// The reported status of the pod's (only) container.
pub fn container_status(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

/// When the container's current run started (`state.running.startedAt`,
/// whole seconds).
pub fn started_at(p: &Value) -> Option<DateTime<Utc>> {
    let t = container_status(p)["state"]["running"]["startedAt"].as_str()?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A real Mosquitto on two loopback ports of its own, configured the way
/// docs/MQTT.md recommends: an edge listener for agents (anonymous at the
/// MQTT level, each confined to its node's topics by an ACL; Shturman checks
/// join tokens and signatures itself) and a control-plane listener that
/// needs a password (the gateway's login).
/// Killed on drop.
pub struct Mosquitto {
    /// Agents dial this one.
    pub edge_port: u16,
    /// The control plane dials this one, with `user`/`password`.
    pub cp_port: u16,
    pub user: String,
    pub password: String,
    program: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// docs/MQTT.md's edge ACL (`%u`: the username, i.e. the node name).
const EDGE_ACL: &str = "\
pattern read  shturman/v1/nodes/%u/podset
pattern read  shturman/v1/nodes/%u/pods/#
pattern read  shturman/v1/nodes/%u/joined
pattern write shturman/v1/nodes/%u/join
pattern write shturman/v1/nodes/%u/status
pattern write shturman/v1/nodes/%u/online
pattern write shturman/v1/nodes/%u/podstatus/#
";

/// Where `name` is: on PATH, or in the sbin folders Debian installs
/// daemons to (often not on a user's PATH).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Mosquitto {
    /// Writes a config (and password file) under `dir`, starts
    /// `mosquitto -c <conf>` and waits until both listeners accept.
    pub fn start(dir: &Path) -> Result<Mosquitto> {
        let setup = "run scripts/setup.sh (it installs the Debian package `mosquitto`)";
        let Some(mosquitto) = find_program("mosquitto") else {
            bail!("mosquitto is not installed: {setup}");
        };
        let Some(passwd) = find_program("mosquitto_passwd") else {
            bail!("mosquitto_passwd is not installed: {setup}");
        };
        let dir = dir.join("mosquitto");
        std::fs::create_dir_all(&dir)?;
        let (user, password) = ("shturman-cp".to_string(), "cp-s3cret".to_string());
        let pw_file = dir.join("passwd");
        let out = Command::new(passwd)
            .arg("-b")
            .arg("-c")
            .arg(&pw_file)
            .args([&user, &password])
            .output()
            .context("running mosquitto_passwd")?;
        if !out.status.success() {
            bail!("mosquitto_passwd failed: {}", stderr(&out));
        }
        let (edge_port, cp_port) = (free_port(), free_port());
        // The ACL docs/MQTT.md recommends: each agent its own node's topics.
        let acl_file = dir.join("edge.acl");
        std::fs::write(&acl_file, EDGE_ACL)?;
        // Started as root, mosquitto drops to the `mosquitto` user, which
        // cannot read a private temp dir: stay root in tests.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| stdout(&o).trim() == "0");
        let conf = format!(
            "# Written by the Shturman test harness.\n\
             per_listener_settings true\n\
             persistence false\n\
             log_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\n\
             {user_line}\
             \n# Edge listener: agents (Shturman checks join tokens and signatures).\n\
             listener {edge_port} 127.0.0.1\n\
             allow_anonymous true\n\
             acl_file {acl}\n\
             \n# Control-plane listener: the gateway logs in.\n\
             listener {cp_port} 127.0.0.1\n\
             allow_anonymous false\n\
             password_file {pw}\n",
            user_line = if root { "user root\n" } else { "" },
            pw = pw_file.display(),
            acl = acl_file.display(),
        );
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf)?;
        let mut m = Mosquitto {
            edge_port,
            cp_port,
            user,
            password,
            program: mosquitto,
            conf: conf_path,
            log: dir.join("mosquitto.log"),
            child: None,
        };
        m.spawn()?;
        Ok(m)
    }

    /// Kills the broker (it keeps nothing: `persistence false`) and starts
    /// it again on the same ports.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting mosquitto")?;
        self.child = Some(child);
        let (edge_port, cp_port) = (self.edge_port, self.cp_port);
        let m = self;
        wait_for("mosquitto to listen", WAIT, || {
            if let Some(c) = m.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(Err(anyhow::anyhow!(
                    "mosquitto exited early: {status}\n{}",
                    m.log_text()
                )));
            }
            let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            (up(edge_port) && up(cp_port)).then_some(Ok(()))
        })?
    }

    /// The URL agents use.
    pub fn edge_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.edge_port)
    }

    /// The URL the control plane uses, with its login.
    pub fn cp_url(&self) -> String {
        format!(
            "mqtt://{}:{}@127.0.0.1:{}",
            self.user, self.password, self.cp_port
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
