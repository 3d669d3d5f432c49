//! Harness for end-to-end tests: each test gets its own temp dir and free
//! loopback ports, and starts the real `shturman` binary built by the same
//! `cargo build` as the tests. Every wait has a deadline; nothing sleeps for luck.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod api;
pub mod sim;

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// Path of a workspace binary; fails with a hint when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The workspace root (for examples and fixtures).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A running `shturman control` in its own data dir.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub token: String,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    extra: Vec<String>,
}

impl ControlPlane {
    /// Starts `shturman control` with the sled store on a free loopback port.
    pub fn start() -> Result<ControlPlane> {
        Self::start_with(&[])
    }

    /// Starts `shturman control` with extra flags (timings for tests).
    pub fn start_with(extra: &[&str]) -> Result<ControlPlane> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let mut cp = ControlPlane {
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            port,
            child: None,
            log: dir.path().join("control.log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        cp.spawn()?;
        Ok(cp)
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The admin kubeconfig the server wrote.
    pub fn admin_conf(&self) -> PathBuf {
        self.data_dir().join("admin.conf")
    }

    /// (Re)starts the process on the same data dir and port; waits for /readyz.
    pub fn spawn(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(self.admin_conf());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(binary("shturman"))
            .args(["control", "--data-dir"])
            .arg(self.data_dir())
            .args(["--api-addr", &format!("127.0.0.1:{}", self.port)])
            // Parallel tests must not fight over MQTT's 1883.
            .args(if self.extra.iter().any(|a| a.starts_with("--mqtt")) {
                &[][..]
            } else {
                &["--mqtt-addr", "127.0.0.1:0"][..]
            })
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting shturman control")?;
        self.child = Some(child);
        let conf = self.admin_conf();
        let text = wait_for("admin.conf to be written", Duration::from_secs(30), || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(Err(anyhow::anyhow!(
                    "shturman control exited early: {status}\n{}",
                    self.log_text()
                )));
            }
            std::fs::read_to_string(&conf)
                .ok()
                .filter(|t| t.contains("current-context"))
                .map(Ok)
        })??;
        self.token = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .context("admin.conf has no token")?
            .to_string();
        let url = format!("{}/readyz", self.url);
        wait_for("the API to be ready", Duration::from_secs(30), || {
            probe::blocking_get_ok(&url).then_some(())
        })?;
        Ok(())
    }

    /// `kill -9` of the control plane.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?; // SIGKILL
            c.wait()?;
        }
        Ok(())
    }

    /// What the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the `shturman` CLI against this control plane.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_stdin(args, None)
    }

    /// Runs the CLI with `stdin` piped in.
    pub fn cli_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_cli(&self.admin_conf(), args, stdin)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `shturman` with `--config conf`.
pub fn run_cli(conf: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(binary("shturman"));
    cmd.arg("--config").arg(conf).args(args);
    cmd.env_remove("SHTURMAN_CONFIG")
        .env("HOME", conf.parent().unwrap_or(Path::new("/")));
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shturman");
    if let Some(input) = stdin
        && let Some(mut s) = child.stdin.take()
    {
        s.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait shturman")
}

/// Stdout of a finished command, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of a finished command, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Minimal blocking HTTP probes for readiness (std only, no client runtime).
pub mod probe {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// Whether `GET url` answers 200 (plain http on loopback only).
    pub fn blocking_get_ok(url: &str) -> bool {
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let Ok(mut s) = TcpStream::connect(host) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.1 200")
    }
}
