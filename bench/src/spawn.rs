//! Starting the real `shturman control` (release build) for a benchmark, on
//! free loopback ports (API and embedded MQTT broker) and its own temp dir,
//! and real `shturman-agent`s joined to it with a join token.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The directory of this executable: the release binaries sit beside it.
pub fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("exe dir")?.join(name);
    if !p.exists() {
        bail!(
            "{} is missing; build with `cargo build --release --workspace --bins`",
            p.display()
        );
    }
    Ok(p)
}

/// Two distinct free loopback ports (both held while picking, released
/// before the control plane binds them: a small race, fine on loopback).
fn free_ports() -> Result<(u16, u16)> {
    let a = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// A control plane started for a benchmark; killed on drop.
pub struct Control {
    child: Child,
    pub url: String,
    pub token: String,
    /// The embedded MQTT broker's loopback port.
    pub mqtt_port: u16,
    pid: u32,
    _dir: tempfile::TempDir,
}

impl Control {
    /// Starts `shturman control --store <store>` and waits for /readyz.
    pub async fn start(store: &str) -> Result<Control> {
        Control::start_with(store, &[]).await
    }

    /// [`Control::start`] with `extra` flags (e.g. `--service-cidr`).
    pub async fn start_with(store: &str, extra: &[&str]) -> Result<Control> {
        let dir = tempfile::tempdir_in(std::env::temp_dir())?;
        let (port, mqtt_port) = free_ports()?;
        let data = dir.path().join("data");
        let child = Command::new(bin("shturman")?)
            .args(["control", "--store", store, "--data-dir"])
            .arg(&data)
            .args(["--api-addr", &format!("127.0.0.1:{port}")])
            .args(["--mqtt-addr", &format!("127.0.0.1:{mqtt_port}")])
            .args(extra)
            // rumqttd logs ordinary disconnects as errors: keep it quiet.
            .env("RUST_LOG", "warn,rumqttd=off")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if let Ok(text) = std::fs::read_to_string(data.join("admin.conf"))
                && let Some(token) = text.lines().find_map(|l| l.trim().strip_prefix("token: "))
                && client
                    .get(format!("{url}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            {
                return Ok(Control {
                    child,
                    url,
                    token: token.to_string(),
                    mqtt_port,
                    pid,
                    _dir: dir,
                });
            }
            if Instant::now() > deadline {
                bail!("shturman control did not become ready in 30s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id (for /proc sampling).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resident memory of the process, in MiB (Linux).
    pub fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a join token the way `shturman token create` does (valid 1 h).
pub async fn join_token(control: &Control) -> Result<String> {
    use chrono::{TimeDelta, Utc};
    use shturman_control::tokens::{JoinToken, SYSTEM_NAMESPACE};
    let token = JoinToken::random();
    let secret = token.to_secret(Some(Utc::now() + TimeDelta::hours(1)));
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets",
            control.url
        ))
        .bearer_auth(&control.token)
        .json(&secret)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "creating the join token answered {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(token.to_string())
}

/// A real `shturman-agent` joined to a [`Control`]; killed on drop, its
/// temp dir (data dir and log) removed.
pub struct Agent {
    child: Child,
    pid: u32,
    pub name: String,
    /// Its `--data-dir`.
    pub data: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `shturman-agent` for node `name` against `control`'s embedded
    /// broker with a fresh join token and `extra` flags, logging at info
    /// (its default) to a file, and waits until its Node is Ready.
    pub async fn start(control: &Control, name: &str, extra: &[&str]) -> Result<Agent> {
        let token = join_token(control).await?;
        let dir = tempfile::tempdir_in(std::env::temp_dir())?;
        let data = dir.path().join("data");
        let log = dir.path().join("agent.log");
        let file = std::fs::File::create(&log)?;
        let child = Command::new(bin("shturman-agent")?)
            .args(["--mqtt-url", &format!("mqtt://127.0.0.1:{}", control.mqtt_port)])
            .args(["--token", &token, "--node-name", name, "--data-dir"])
            .arg(&data)
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting shturman-agent")?;
        let pid = child.id();
        let mut agent = Agent {
            child,
            pid,
            name: name.to_string(),
            data,
            log,
            _dir: dir,
        };
        agent.wait_ready(control, Duration::from_secs(60)).await?;
        Ok(agent)
    }

    /// Waits until the Node reports Ready=True through the API.
    async fn wait_ready(&mut self, control: &Control, timeout: Duration) -> Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("shturman-agent exited early: {status}\n{}", self.log_tail(30));
            }
            let node: Option<serde_json::Value> = match client
                .get(format!("{}/api/v1/nodes/{}", control.url, self.name))
                .bearer_auth(&control.token)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r.json().await.ok(),
                _ => None,
            };
            let ready = node.as_ref().is_some_and(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if ready {
                let handlers: Vec<&str> = node.as_ref().map_or(Vec::new(), |n| {
                    n["status"]["runtimeHandlers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|h| h["name"].as_str())
                        .collect()
                });
                // Every scenario runs (or stands for) the default build:
                // one without the Wasm runtime would measure something else.
                if !handlers.contains(&"wasmtime") {
                    bail!(
                        "node {} offers runtimes {handlers:?}, not wasmtime: {} was built without \
                         the `wasm` feature; rebuild it with `cargo build --release -p shturman-agent`",
                        self.name,
                        bin("shturman-agent")?.display()
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} was not Ready after {timeout:?}\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id (for /proc sampling).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `n` lines the agent logged.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
