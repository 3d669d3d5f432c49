//! How Wasm pods behave, end to end: the real `shturman up` (control plane,
//! broker and a local agent with the wasmtime runtime), one scenario per test,
//! each with its own `up`. Everything is asserted through the API (pod status)
//! and, where output matters, the container's log file on the node
//! (`<data>/agent/logs/<ns>_<pod>_<uid>/<container>.log`). Misbehaving modules
//! are written in WAT here; `hello` and `ticker` come from wasm-examples/
//! (scripts/build-wasm-examples.sh builds them; scripts/test.sh runs it).
//!
//! The agent's restart back-off base is shortened to 1 s through
//! `SHTURMAN_RESTART_BACKOFF_BASE_MS` (the default is kubelet's 10 s), so a
//! crash loop shows its doubling within seconds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use shturman_e2e::api::{Api, eventually};
use shturman_e2e::{Up, stderr, stdout, workspace_root};

/// How long any one condition may take (a shared 2-core machine is slow).
const WAIT: Duration = Duration::from_secs(60);
/// The node `up` runs.
const NODE: &str = "edge-1";
/// The restart back-off base the agent gets, in milliseconds.
const BACKOFF_BASE_MS: u64 = 1000;

/// A built example component; fails with the command that builds it.
fn example(name: &str) -> PathBuf {
    let p = workspace_root().join(format!(
        "wasm-examples/{name}/target/wasm32-wasip2/release/{name}.wasm"
    ));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-wasm-examples.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A WASI preview 1 command module: `_start` runs `body`; `$print(ptr, len)`
/// writes memory to stdout; `data` places strings (from offset 64).
fn wat_module(body: &str, data: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; iovec at 0, nwritten at 8, data from 64.
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  {data}
  (func (export "_start") {body}))"#
    );
    wat::parse_str(&text).expect("test module WAT")
}

/// Prints `crashing`, then traps on `unreachable`.
fn trapper() -> Vec<u8> {
    wat_module(
        r#"(call $print (i32.const 64) (i32.const 9)) unreachable"#,
        r#"(data (i32.const 64) "crashing\n")"#,
    )
}

/// Prints `growing`, then grows its memory 1 MiB at a time, forever.
fn grower() -> Vec<u8> {
    wat_module(
        r#"(call $print (i32.const 64) (i32.const 8))
    (loop $l (drop (memory.grow (i32.const 16))) (br $l))"#,
        r#"(data (i32.const 64) "growing\n")"#,
    )
}

/// Prints `spinning`, then spins forever without a single host call.
fn spinner() -> Vec<u8> {
    wat_module(
        r#"(call $print (i32.const 64) (i32.const 9))
    (loop $l (br $l))"#,
        r#"(data (i32.const 64) "spinning\n")"#,
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One `shturman up` with its API client and a scratch dir for modules.
struct Cluster {
    up: Up,
    api: Api,
    scratch: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let base = BACKOFF_BASE_MS.to_string();
        let up = tokio::task::block_in_place(|| {
            Up::start_with_env(Some(NODE), &[], &[("SHTURMAN_RESTART_BACKOFF_BASE_MS", &base)])
        })
        .expect("shturman up");
        let token = std::fs::read_to_string(up.admin_conf())
            .unwrap()
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
            .expect("admin.conf token");
        let api = Api::new(&up.url, &token);
        let c = Cluster {
            up,
            api,
            scratch: tempfile::tempdir().unwrap(),
        };
        // Pods are bound to the local node only once it is Ready.
        eventually("the local node Ready", WAIT, || async {
            Ok(c.node_ready().await.then_some(()))
        })
        .await
        .unwrap_or_else(|e| c.fail(&e));
        c
    }

    /// Panics with `e` and the tail of what `up` logged.
    fn fail(&self, e: &dyn std::fmt::Display) -> ! {
        let log = self.up.log_text();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!("{e}\n--- shturman up (last lines) ---\n{}", tail.join("\n"))
    }

    /// Writes `bytes` as a module in the scratch dir; returns its `file://` reference.
    fn module(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.scratch.path().join(format!("{name}.wasm"));
        std::fs::write(&path, bytes).unwrap();
        format!("file://{}", path.display())
    }

    fn apply(&self, manifest: &str) {
        let out = self.up.cli_stdin(&["apply", "-f", "-"], Some(manifest));
        assert!(
            out.status.success(),
            "apply failed: {}{}\n{manifest}",
            stdout(&out),
            stderr(&out)
        );
    }

    async fn node_ready(&self) -> bool {
        match self.api.get(&format!("/api/v1/nodes/{NODE}")).await {
            Ok((200, n)) => n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"),
            _ => false,
        }
    }

    /// The pod, or `None` once it is gone (404).
    async fn pod(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let (code, v) = self
            .api
            .get(&format!("/api/v1/namespaces/default/pods/{name}"))
            .await?;
        match code {
            200 => Ok(Some(v)),
            404 => Ok(None),
            _ => anyhow::bail!("GET pod {name}: {code} {v}"),
        }
    }

    /// Waits until pod `name` satisfies `ok`; fails with its last status.
    async fn wait_pod(&self, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let last = std::cell::RefCell::new(Value::Null);
        let r = eventually(&format!("pod {name}: {what}"), WAIT, || async {
            let p = self.pod(name).await?;
            if let Some(p) = &p {
                *last.borrow_mut() = p["status"].clone();
            }
            Ok(p.filter(|p| ok(p)))
        })
        .await;
        r.unwrap_or_else(|e| self.fail(&format!("{e}\nlast status: {}", last.borrow())))
    }

    /// The node's log file of `container` in pod `p`.
    fn log_file(&self, p: &Value, container: &str) -> PathBuf {
        self.up
            .data_dir()
            .join("agent/logs")
            .join(format!(
                "default_{}_{}",
                p["metadata"]["name"].as_str().unwrap(),
                p["metadata"]["uid"].as_str().unwrap()
            ))
            .join(format!("{container}.log"))
    }
}

/// The text of each line of a CRI-style log file (`<time> <stream> F <text>`).
fn log_lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
        .collect()
}

/// The first container's status.
fn container(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

fn condition(p: &Value, kind: &str) -> Option<String> {
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

fn is_running(p: &Value) -> bool {
    phase(p) == "Running" && container(p)["state"]["running"].is_object()
}

/// A pod running the `ticker` example on the node.
fn ticker_pod(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  runtimeClassName: wasmtime
  containers:
  - name: ticker
    image: file://{}
    env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    resources:
      limits:
        cpu: 100m
        memory: 16Mi
",
        example("ticker").display()
    )
}

/// A single-container Wasm pod running `image`.
fn simple_pod(name: &str, image: &str, policy: &str, limits: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  runtimeClassName: wasmtime
  restartPolicy: {policy}
  containers:
  - name: main
    image: {image}
    resources:
      limits:
{limits}
"
    )
}

/// Starts the ticker pod and waits for its first line; returns its log file.
async fn running_ticker(c: &Cluster, name: &str) -> PathBuf {
    c.apply(&ticker_pod(name));
    let p = c.wait_pod(name, "Running", is_running).await;
    let file = c.log_file(&p, "ticker");
    eventually("the ticker's first line", WAIT, || async {
        Ok((!log_lines(&file).is_empty()).then_some(()))
    })
    .await
    .unwrap_or_else(|e| c.fail(&e));
    file
}

/// Waits until the ticker's log holds `more` lines beyond `from`.
async fn ticker_grows(c: &Cluster, file: &Path, from: usize, more: usize, what: &str) {
    eventually(what, Duration::from_secs(30), || async {
        Ok((log_lines(file).len() >= from + more).then_some(()))
    })
    .await
    .unwrap_or_else(|e| c.fail(&format!("{e}; ticker log: {:?}", log_lines(file))));
}

/// `hello` with a ConfigMap volume and an env var from a Secret prints both,
/// and nothing of the agent's own environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_prints_a_mounted_config_map_and_a_secret() {
    let hello = example("hello");
    let c = Cluster::start().await;
    c.apply(&format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: hello-config
data:
  greeting.txt: |
    Greetings from a ConfigMap.
    A second line.
---
apiVersion: v1
kind: Secret
metadata:
  name: hello-secret
type: Opaque
stringData:
  target: s3cr3t-edge-fleet
---
apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  runtimeClassName: wasmtime
  restartPolicy: Never
  containers:
  - name: hello
    image: file://{}
    args: [\"--from\", \"e2e\"]
    env:
    - name: GREETING_TARGET
      valueFrom:
        secretKeyRef:
          name: hello-secret
          key: target
    volumeMounts:
    - name: config
      mountPath: /config
      readOnly: true
  volumes:
  - name: config
    configMap:
      name: hello-config
",
        hello.display()
    ));
    let p = c
        .wait_pod("hello", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let st = container(&p);
    let t = &st["state"]["terminated"];
    assert_eq!(t["exitCode"], 0, "{st}");
    assert_eq!(t["reason"], "Completed", "{st}");
    assert_eq!(st["restartCount"], 0, "{st}");
    assert_eq!(st["ready"], false, "{st}");
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"), "{p}");
    assert_eq!(condition(&p, "PodScheduled").as_deref(), Some("True"), "{p}");
    assert_eq!(p["spec"]["nodeName"], NODE);

    // Its output is written before the run is reported ended.
    let lines = log_lines(&c.log_file(&p, "hello"));
    let text = lines.join("\n");
    for want in [
        "Hello from Wasm, s3cr3t-edge-fleet!",
        "arg[0]=hello",
        "arg[1]=--from",
        "arg[2]=e2e",
        "env GREETING_TARGET=s3cr3t-edge-fleet",
        "config /config/greeting.txt: Greetings from a ConfigMap.",
        "config /config/greeting.txt: A second line.",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want:?} not in:\n{text}");
    }
    // The environment is the pod spec's only: nothing inherited from the agent.
    let env: Vec<&String> = lines.iter().filter(|l| l.starts_with("env ")).collect();
    assert_eq!(env, ["env GREETING_TARGET=s3cr3t-edge-fleet"], "{text}");
}

/// A module that traps is restarted (restartPolicy Always) with a doubling
/// back-off shown as `CrashLoopBackOff`, its trap in `lastState`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_module_restarts_with_growing_back_off() {
    let c = Cluster::start().await;
    let image = c.module("trap", &trapper());
    c.apply(&simple_pod("crasher", &image, "Always", "        memory: 16Mi"));

    // Poll the status, noting when restartCount changes and every back-off seen.
    let began = Instant::now();
    let mut changes: Vec<(i64, Instant)> = Vec::new();
    let mut back_offs: Vec<String> = Vec::new();
    let mut last = Value::Null;
    let mut count = 0;
    while changes.len() < 3 {
        if began.elapsed() > WAIT {
            c.fail(&format!(
                "timed out waiting for 3 restarts: changes at {:?}, back-offs {back_offs:?}, last status {}",
                changes
                    .iter()
                    .map(|(n, t)| (n, t.duration_since(began)))
                    .collect::<Vec<_>>(),
                last["status"]
            ));
        }
        if let Some(p) = c.pod("crasher").await.unwrap() {
            let st = container(&p);
            let n = st["restartCount"].as_i64().unwrap_or(0);
            if n != count {
                assert_eq!(n, count + 1, "restartCount went from {count} to {n}: {st}");
                changes.push((n, Instant::now()));
                count = n;
            }
            let w = &st["state"]["waiting"];
            if w["reason"] == "CrashLoopBackOff" {
                assert_eq!(phase(&p), "Running", "a crash-looping pod is Running: {p}");
                assert_eq!(st["ready"], false, "{st}");
                let m = w["message"].as_str().unwrap_or_default().to_string();
                if back_offs.last() != Some(&m) {
                    back_offs.push(m);
                }
                let lt = &st["lastState"]["terminated"];
                assert_eq!(lt["reason"], "Error", "{st}");
                assert_eq!(lt["exitCode"], 1, "{st}");
                let msg = lt["message"].as_str().unwrap_or_default();
                assert!(
                    msg.starts_with("wasm trap: ")
                        && msg.contains("unreachable")
                        && !msg.contains("wasm trap: wasm trap"),
                    "trap message: {st}"
                );
            }
            last = p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gaps: Vec<Duration> = changes.windows(2).map(|w| w[1].1 - w[0].1).collect();
    let at: Vec<Duration> = changes.iter().map(|(_, t)| *t - began).collect();
    eprintln!("restartCount 1, 2, 3 seen at {at:?}; gaps {gaps:?}; back-offs {back_offs:?}");
    // Base 1 s doubling: restart 2 comes ~2 s after restart 1, restart 3 ~4 s after that.
    assert!(gaps[1] > gaps[0], "the back-off did not grow: restarts at {at:?}");
    assert!(
        gaps[0] >= Duration::from_millis(BACKOFF_BASE_MS),
        "second back-off too short: restarts at {at:?}"
    );
    // Every back-off was shown, each longer than the one before.
    for want in ["back-off 1s ", "back-off 2s ", "back-off 4s "] {
        assert!(
            back_offs.iter().any(|m| m.starts_with(want)),
            "{want:?} not among {back_offs:?}"
        );
    }
    assert!(
        back_offs.iter().all(|m| m.contains("container=main pod=crasher")),
        "{back_offs:?}"
    );
    // Each run printed before trapping; the current run's file holds its line.
    let file = c.log_file(&last, "main");
    assert!(
        log_lines(&file).iter().all(|l| l == "crashing"),
        "{:?}",
        log_lines(&file)
    );
}

/// Growing memory past `limits.memory: 64Mi` ends the pod `OOMKilled`
/// (restartPolicy Never: Failed) while the agent, its node and a ticker run on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_past_the_limit_is_oom_killed_and_the_agent_runs_on() {
    let c = Cluster::start().await;
    let ticker = running_ticker(&c, "ticker").await;
    let image = c.module("grow", &grower());
    c.apply(&simple_pod("grower", &image, "Never", "        memory: 64Mi"));
    let p = c.wait_pod("grower", "Failed", |p| phase(p) == "Failed").await;
    let st = container(&p);
    let t = &st["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{st}");
    assert_eq!(t["exitCode"], 137, "{st}");
    let msg = t["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("memory limit") && msg.contains(&(64u64 << 20).to_string()),
        "OOM message names the limit: {st}"
    );
    assert_eq!(st["restartCount"], 0, "{st}");
    assert!(st["lastState"]["terminated"].is_null(), "never restarted: {st}");
    assert_eq!(log_lines(&c.log_file(&p, "main")), ["growing"]);

    // The agent stays up: its node stays Ready and the ticker keeps ticking.
    let from = log_lines(&ticker).len();
    ticker_grows(&c, &ticker, from, 2, "the ticker to tick on after the OOM").await;
    assert!(c.node_ready().await, "node {NODE} not Ready after the OOM");
    let t = c.pod("ticker").await.unwrap().expect("ticker pod");
    assert!(is_running(&t), "{}", t["status"]);
    assert_eq!(container(&t)["restartCount"], 0, "{}", t["status"]);
}

/// A module spinning forever (`limits.cpu: 500m`) does not stop a ticker on
/// the same node; deleting it stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_module_does_not_starve_a_ticker_and_stops_on_delete() {
    let c = Cluster::start().await;
    let ticker = running_ticker(&c, "ticker").await;
    let image = c.module("spin", &spinner());
    c.apply(&simple_pod("spinner", &image, "Always", "        cpu: 500m"));
    let p = c.wait_pod("spinner", "Running", is_running).await;
    let spin_log = c.log_file(&p, "main");
    eventually("the spinner to start spinning", WAIT, || async {
        Ok((log_lines(&spin_log) == ["spinning"]).then_some(()))
    })
    .await
    .unwrap_or_else(|e| c.fail(&e));

    let from = log_lines(&ticker).len();
    ticker_grows(&c, &ticker, from, 3, "3 more ticker lines beside the spinner").await;
    let p = c.pod("spinner").await.unwrap().expect("spinner pod");
    assert!(is_running(&p), "the spinner still runs: {}", p["status"]);
    assert_eq!(container(&p)["restartCount"], 0, "{}", p["status"]);
    assert!(c.node_ready().await, "node {NODE} not Ready beside the spinner");

    // Delete it: the pod goes away and the agent says it stopped it.
    let deleted = Instant::now();
    let (code, body) = c
        .api
        .delete("/api/v1/namespaces/default/pods/spinner")
        .await
        .unwrap();
    assert!((200..300).contains(&code), "delete: {code} {body}");
    eventually("the spinner pod to be gone", WAIT, || async {
        Ok(c.pod("spinner").await?.is_none().then_some(()))
    })
    .await
    .unwrap_or_else(|e| c.fail(&e));
    eventually("the agent to log that it stopped the spinner", WAIT, || async {
        Ok(c.up
            .log_text()
            .contains("stopped pod default/spinner")
            .then_some(()))
    })
    .await
    .unwrap_or_else(|e| c.fail(&e));
    eprintln!("spinner stopped {:?} after delete", deleted.elapsed());
    // Its files go with it, and the ticker ticks on.
    assert!(
        !spin_log.parent().unwrap().exists(),
        "{} left behind",
        spin_log.display()
    );
    let from = log_lines(&ticker).len();
    ticker_grows(&c, &ticker, from, 2, "the ticker to tick on after the delete").await;
}

/// A module reading `/etc/passwd` without a volume (and one climbing out of
/// its volume with `..`) is denied, and no line of the file leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_etc_passwd_without_a_volume_is_denied() {
    let hello = example("hello");
    let host: Vec<String> = std::fs::read_to_string("/etc/passwd")
        .expect("this test needs /etc/passwd on the host")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    assert!(!host.is_empty(), "/etc/passwd is empty on this host");
    let c = Cluster::start().await;
    // `hello` prints the file named by $CONFIG_FILE (or why it cannot).
    c.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: snoop
spec:
  runtimeClassName: wasmtime
  restartPolicy: Never
  containers:
  - name: direct
    image: file://{hello}
    env:
    - name: CONFIG_FILE
      value: /etc/passwd
  - name: escape
    image: file://{hello}
    env:
    - name: CONFIG_FILE
      value: /data/../../../../etc/passwd
    volumeMounts:
    - name: scratch
      mountPath: /data
  volumes:
  - name: scratch
    emptyDir: {{}}
",
        hello = hello.display()
    ));
    let p = c
        .wait_pod("snoop", "finished", |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        })
        .await;
    for (i, (name, path)) in [
        ("direct", "/etc/passwd"),
        ("escape", "/data/../../../../etc/passwd"),
    ]
    .into_iter()
    .enumerate()
    {
        let st = &p["status"]["containerStatuses"][i];
        assert_eq!(st["name"], name, "{}", p["status"]);
        let t = &st["state"]["terminated"];
        assert!(t.is_object(), "{name} ended: {st}");
        let lines = log_lines(&c.log_file(&p, name));
        let text = lines.join("\n");
        eprintln!("{name}: exit {} ; output:\n{text}", t["exitCode"]);
        // Denied: hello says the file is not readable (or it failed with the error).
        let denied = lines
            .iter()
            .any(|l| l.starts_with(&format!("config {path}: not readable (")));
        assert!(
            denied || t["exitCode"] != 0,
            "{name}: the open was not denied: {st}\n{text}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with(&format!("config {path}: ")) && !l.contains("not readable")),
            "{name}: read the file:\n{text}"
        );
        for h in &host {
            assert!(!text.contains(h.as_str()), "{name}: {h:?} leaked:\n{text}");
        }
    }
}

/// A module whose `#sha256=` pin does not match never runs: the container
/// waits in `ErrImagePull`/`ImagePullBackOff` naming both digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sha256_pin_never_runs_and_says_why() {
    let hello = example("hello");
    let actual = sha256_hex(&std::fs::read(&hello).unwrap());
    // Pinned to the ticker: a different module than the file holds.
    let pinned = sha256_hex(&std::fs::read(example("ticker")).unwrap());
    assert_ne!(actual, pinned);
    let c = Cluster::start().await;
    c.apply(&simple_pod(
        "pinned",
        &format!("file://{}#sha256={pinned}", hello.display()),
        "Always",
        "        memory: 16Mi",
    ));
    // Watch it through a few pull attempts (the back-off base is 1 s): it
    // must never start, and end up in ImagePullBackOff.
    let began = Instant::now();
    let mut reasons: Vec<String> = Vec::new();
    let mut last = Value::Null;
    loop {
        if let Some(p) = c.pod("pinned").await.unwrap() {
            let st = container(&p).clone();
            assert!(
                st["state"]["running"].is_null() && st["state"]["terminated"].is_null(),
                "a mismatching module ran: {st}"
            );
            assert!(
                st["started"] != true && st["restartCount"].as_i64().unwrap_or(0) == 0,
                "{st}"
            );
            if let Some(r) = st["state"]["waiting"]["reason"].as_str()
                && reasons.last().map(String::as_str) != Some(r)
            {
                reasons.push(r.to_string());
            }
            last = p;
        }
        if reasons.last().map(String::as_str) == Some("ImagePullBackOff")
            && began.elapsed() > Duration::from_millis(BACKOFF_BASE_MS * 4)
        {
            break;
        }
        if began.elapsed() > WAIT {
            c.fail(&format!(
                "timed out waiting for ImagePullBackOff; reasons {reasons:?}, last {}",
                last["status"]
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("waiting reasons seen: {reasons:?}");
    assert!(reasons.iter().any(|r| r == "ErrImagePull"), "{reasons:?}");
    assert!(
        reasons.iter().all(|r| matches!(
            r.as_str(),
            "ContainerCreating" | "ErrImagePull" | "ImagePullBackOff"
        )),
        "{reasons:?}"
    );
    let st = container(&last);
    let msg = st["state"]["waiting"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("sha256:{pinned}")) && msg.contains(&format!("sha256:{actual}")),
        "the message names both digests: {msg}"
    );
    assert!(msg.contains("digest mismatch"), "{msg}");
    assert_eq!(phase(&last), "Pending", "{}", last["status"]);
    assert_eq!(
        condition(&last, "Ready").as_deref(),
        Some("False"),
        "{}",
        last["status"]
    );
    // Nothing ran, so nothing was logged.
    let file = c.log_file(&last, "main");
    assert!(!file.exists(), "{} exists", file.display());
    assert!(
        !file.parent().unwrap().exists(),
        "{} exists",
        file.parent().unwrap().display()
    );
}
