//! Harness for end-to-end tests: each test gets its own temp dir and free
//! loopback ports, and starts the real `shturman` binary built by the same
//! `cargo build` as the tests. Every wait has a deadline; nothing sleeps for luck.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod api;
pub mod containerd;
pub mod etcd;
pub mod oci_env;
pub mod oci_image;
pub mod registry;
pub mod service_client;
pub mod sim;
pub mod tls;
pub mod wasm_artifact;

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

/// The `ticker` example component (prints a numbered line a second,
/// forever), built by scripts/build-wasm-examples.sh (scripts/test.sh runs
/// it first).
pub fn ticker_wasm() -> PathBuf {
    let p = workspace_root().join("wasm-examples/ticker/target/wasm32-wasip2/release/ticker.wasm");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-wasm-examples.sh (scripts/test.sh does)",
        p.display()
    );
    p
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
            .env("RUST_LOG", log_filter())
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

/// Kubernetes' name (`kubernetes.io/arch`) for the architecture these tests run on.
pub fn kube_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Opens (appending) a log file for a child's stdout and stderr.
fn log_stdio(log: &Path) -> Result<(Stdio, Stdio)> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    Ok((file.try_clone()?.into(), file.into()))
}

/// Sends SIGTERM to `child` and waits for it to exit.
pub fn terminate(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .context("running kill -TERM")?;
    if !status.success() {
        bail!("kill -TERM {} failed: {status}", child.id());
    }
    wait_for("the process to exit after SIGTERM", timeout, || {
        child.try_wait().ok().flatten()
    })
}

/// A running `shturman up` (control plane, embedded broker, local agent) in
/// its own temp dir, with the API and the broker on free loopback ports.
pub struct Up {
    pub dir: tempfile::TempDir,
    /// The API's URL.
    pub url: String,
    /// The embedded broker's URL, for more agents.
    pub mqtt_url: String,
    args: Vec<String>,
    /// Extra environment for the process (e.g. test-only timings).
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Up {
    /// Starts `shturman up --node-name <node>` (none: the hostname's) with
    /// `extra` flags; waits until the API is ready and the banner is out.
    pub fn start(node: Option<&str>, extra: &[&str]) -> Result<Up> {
        Self::start_with_env(node, extra, &[])
    }

    /// As [`Up::start`], with `env` set for the process (and its local agent).
    pub fn start_with_env(node: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Result<Up> {
        let dir = tempfile::tempdir()?;
        let api = free_port();
        let mqtt = free_port();
        let mut args: Vec<String> = vec!["up".into(), "--data-dir".into()];
        args.push(dir.path().join("data").display().to_string());
        args.extend(["--api-addr".into(), format!("127.0.0.1:{api}")]);
        args.extend(["--mqtt-addr".into(), format!("127.0.0.1:{mqtt}")]);
        if let Some(n) = node {
            args.extend(["--node-name".into(), n.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut up = Up {
            url: format!("http://127.0.0.1:{api}"),
            mqtt_url: format!("mqtt://127.0.0.1:{mqtt}"),
            log: dir.path().join("up.log"),
            args,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            child: None,
            dir,
        };
        up.spawn()?;
        Ok(up)
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The admin kubeconfig `up` wrote.
    pub fn admin_conf(&self) -> PathBuf {
        self.data_dir().join("admin.conf")
    }

    /// (Re)starts the process on the same data dir and ports; waits for
    /// /readyz and the banner's last line.
    pub fn spawn(&mut self) -> Result<()> {
        let banners = self.log_text().matches("Ctrl-C stops").count();
        let (out, err) = log_stdio(&self.log)?;
        let child = Command::new(binary("shturman"))
            .args(&self.args)
            .env("RUST_LOG", log_filter())
            .env("NO_COLOR", "1")
            .env_remove("SHTURMAN_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting shturman up")?;
        self.child = Some(child);
        wait_for("shturman up to print its banner", Duration::from_secs(60), || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(Err(anyhow::anyhow!(
                    "shturman up exited early: {status}\n{}",
                    self.log_text()
                )));
            }
            (self.log_text().matches("Ctrl-C stops").count() > banners).then_some(Ok(()))
        })??;
        let url = format!("{}/readyz", self.url);
        wait_for("the API to be ready", Duration::from_secs(30), || {
            probe::blocking_get_ok(&url).then_some(())
        })?;
        Ok(())
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("shturman up is not running")?;
        terminate(&mut c, Duration::from_secs(30))
    }

    /// What the process printed and logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the `shturman` CLI against this cluster.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_cli(&self.admin_conf(), args, None)
    }

    /// Runs the CLI with `stdin` piped in.
    pub fn cli_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_cli(&self.admin_conf(), args, stdin)
    }

    /// `shturman token create`, as a user would run it.
    pub fn token(&self) -> Result<String> {
        let out = self.cli(&["token", "create"]);
        if !out.status.success() {
            bail!("token create failed: {}", stderr(&out));
        }
        Ok(stdout(&out).trim().to_string())
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running `shturman-agent` with its own node name and data dir
/// (`<root>/<name>/data`), logging to `<root>/<name>/agent.log`.
pub struct Agent {
    pub name: String,
    /// `<root>/<name>`: the data dir is `data/` inside it.
    pub dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Agent {
    /// Starts `shturman-agent --mqtt-url … --token … --node-name … --data-dir …` plus `extra`.
    pub fn start(mqtt_url: &str, name: &str, token: &str, root: &Path, extra: &[&str]) -> Result<Agent> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut args: Vec<String> = vec![
            "--mqtt-url".into(),
            mqtt_url.into(),
            "--token".into(),
            token.into(),
            "--node-name".into(),
            name.into(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = Agent {
            name: name.to_string(),
            log: dir.join("agent.log"),
            dir,
            args,
            child: None,
        };
        a.spawn()?;
        Ok(a)
    }

    /// (Re)starts the process with the same flags.
    pub fn spawn(&mut self) -> Result<()> {
        let (out, err) = log_stdio(&self.log)?;
        let child = Command::new(binary("shturman-agent"))
            .args(&self.args)
            .env("RUST_LOG", log_filter())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting shturman-agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9`: no goodbye, the broker's last will speaks for it.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Sends a signal (`STOP`, `CONT`, …) to the running agent. `STOP`
    /// silences it without closing its link, so only the missing
    /// heartbeats tell the control plane.
    pub fn signal(&self, sig: &str) -> Result<()> {
        let c = self.child.as_ref().context("the agent is not running")?;
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &c.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{sig} {} failed: {status}", c.id());
        }
        Ok(())
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("the agent is not running")?;
        terminate(&mut c, Duration::from_secs(30))
    }

    /// Waits for the process to end on its own.
    pub fn wait_exit(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("the agent is not running")?;
        wait_for("the agent to exit", Duration::from_secs(30), || {
            c.try_wait().ok().flatten()
        })
        .with_context(|| self.log_text())
    }

    /// The agent's `state.json`, once written.
    pub fn state(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("data").join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The pod names the state file lists.
    pub fn state_pods(&self) -> Option<Vec<String>> {
        let s = self.state()?;
        Some(
            s["pods"]
                .as_array()?
                .iter()
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect(),
        )
    }

    /// The journal's files (`{namespace}_{name}.json`), sorted.
    pub fn journal_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("data").join("journal"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The folder the Wasm runtime keeps a `default`-namespace pod's
    /// container logs in (`<data-dir>/logs/default_<name>_<uid>`); it is
    /// removed when the pod stops.
    pub fn pod_log_dir(&self, name: &str, uid: &str) -> PathBuf {
        self.dir
            .join("data")
            .join("logs")
            .join(format!("default_{name}_{uid}"))
    }

    /// What the agent logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The log filter of the binaries the tests start: `info`, or
/// `SHTURMAN_E2E_LOG` when set (e.g. `shturman_agent::proxy=debug,info`
/// to follow one subsystem through a failing test).
pub fn log_filter() -> String {
    std::env::var("SHTURMAN_E2E_LOG").unwrap_or_else(|_| "info".to_string())
}
