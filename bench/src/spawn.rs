//! Starting the real `shturman control` (release build) for a benchmark, on
//! free loopback ports (API and embedded MQTT broker) and its own temp dir.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The directory of this executable: the release binaries sit beside it.
fn bin(name: &str) -> Result<PathBuf> {
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
        let dir = tempfile::tempdir_in(std::env::temp_dir())?;
        let (port, mqtt_port) = free_ports()?;
        let data = dir.path().join("data");
        let child = Command::new(bin("shturman")?)
            .args(["control", "--store", store, "--data-dir"])
            .arg(&data)
            .args(["--api-addr", &format!("127.0.0.1:{port}")])
            .args(["--mqtt-addr", &format!("127.0.0.1:{mqtt_port}")])
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
