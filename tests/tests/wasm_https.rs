//! Wasm modules over https, end to end: a real `openssl s_server -WWW`
//! serves the `hello` example with a throwaway CA's certificate, and the
//! real `shturman up` (control plane, broker, local agent) trusts that CA
//! through `SSL_CERT_FILE`, as curl and openssl would. A module whose
//! `#sha256=` pin does not match never runs and says why, naming both
//! digests; the right pin runs it; trusting another CA the pull fails and
//! says to set `SSL_CERT_FILE`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use shturman_e2e::api::{Api, eventually};
use shturman_e2e::tls::{HttpsServer, make_certs};
use shturman_e2e::{Up, stderr, stdout, workspace_root};

/// How long any one condition may take (a shared 2-core machine is slow).
const WAIT: Duration = Duration::from_secs(90);
/// The node `up` runs.
const NODE: &str = "edge-1";

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

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// An https server holding `hello.wasm`, a cluster (trusting the server's
/// CA when `trust`, another CA otherwise), and the module's real digest.
struct Setup {
    up: Up,
    api: Api,
    server: HttpsServer,
    hello_digest: String,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(trust: bool) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let certs = make_certs(&dir.path().join("pki")).expect("test certificates");
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        let hello = std::fs::read(example("hello")).unwrap();
        std::fs::write(www.join("hello.wasm"), &hello).unwrap();
        let server = HttpsServer::start(&www, &certs).expect("openssl s_server");
        // Untrusted: the node trusts another throwaway CA only (set
        // explicitly, so the machine's own SSL_CERT_FILE does not leak in).
        let ca = if trust {
            certs.ca_pem.display().to_string()
        } else {
            let other = make_certs(&dir.path().join("other-pki")).expect("other test CA");
            other.ca_pem.display().to_string()
        };
        let env = [
            ("SHTURMAN_RESTART_BACKOFF_BASE_MS", "1000"),
            ("SSL_CERT_FILE", ca.as_str()),
        ];
        let up =
            tokio::task::block_in_place(|| Up::start_with_env(Some(NODE), &[], &env)).expect("shturman up");
        let token = std::fs::read_to_string(up.admin_conf())
            .unwrap()
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
            .expect("admin.conf token");
        let api = Api::new(&up.url, &token);
        let s = Setup {
            up,
            api,
            server,
            hello_digest: sha256_hex(&hello),
            _dir: dir,
        };
        // Pods are bound to the local node only once it is Ready.
        eventually("the local node Ready", WAIT, || async {
            Ok(s.node_ready().await.then_some(()))
        })
        .await
        .unwrap_or_else(|e| s.fail(&e));
        s
    }

    /// Panics with `e`, the tail of what `up` logged and the server's log.
    fn fail(&self, e: &dyn std::fmt::Display) -> ! {
        let log = self.up.log_text();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{e}\n--- shturman up (last lines) ---\n{}\n--- openssl s_server ---\n{}",
            tail.join("\n"),
            self.server.log_text()
        )
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

    /// Applies a `restartPolicy: Never` pod running `image`.
    fn apply_pod(&self, name: &str, image: &str) {
        let manifest = format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  runtimeClassName: wasmtime
  restartPolicy: Never
  containers:
  - name: main
    image: {image}
    resources:
      limits:
        cpu: 200m
        memory: 32Mi
"
        );
        let out = self.up.cli_stdin(&["apply", "-f", "-"], Some(&manifest));
        assert!(
            out.status.success(),
            "apply failed: {}{}\n{manifest}",
            stdout(&out),
            stderr(&out)
        );
    }

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

    /// The agent's module cache (`<data>/agent/wasm/modules`), sorted.
    fn cached_modules(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.modules_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn modules_dir(&self) -> PathBuf {
        self.up.data_dir().join("agent/wasm/modules")
    }

    /// The node's log dir of pod `p` (it exists once a container ran).
    fn log_dir(&self, p: &Value) -> PathBuf {
        self.up.data_dir().join("agent/logs").join(format!(
            "default_{}_{}",
            p["metadata"]["name"].as_str().unwrap_or_default(),
            p["metadata"]["uid"].as_str().unwrap_or_default()
        ))
    }

    /// How many times the server sent `hello.wasm`.
    fn served(&self) -> usize {
        self.server.log_text().matches("FILE:hello.wasm").count()
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        tokio::task::block_in_place(|| self.up.cli(args))
    }

    /// Watches pod `name` until its container waits in ImagePullBackOff
    /// after at least two pulls from the server, asserting on every look
    /// that it never ran. Returns the last pod and the reasons seen.
    async fn watch_pull_failing(&self, name: &str) -> (Value, Vec<String>) {
        let began = Instant::now();
        let mut reasons: Vec<String> = Vec::new();
        let mut last = Value::Null;
        loop {
            if let Some(p) = self.pod(name).await.unwrap_or_else(|e| self.fail(&e)) {
                let st = p["status"]["containerStatuses"][0].clone();
                if !(st["state"]["running"].is_null() && st["state"]["terminated"].is_null())
                    || st["started"] == true
                    || st["restartCount"].as_i64().unwrap_or(0) != 0
                {
                    self.fail(&format!("pod {name}'s module ran: {st}"));
                }
                if let Some(r) = st["state"]["waiting"]["reason"].as_str()
                    && reasons.last().map(String::as_str) != Some(r)
                {
                    reasons.push(r.to_string());
                }
                last = p;
            }
            if reasons.last().map(String::as_str) == Some("ImagePullBackOff") && self.served() >= 2 {
                return (last, reasons);
            }
            if began.elapsed() > WAIT {
                self.fail(&format!(
                    "timed out waiting for pod {name} in ImagePullBackOff after 2 pulls; reasons {reasons:?}, served {}, last {}",
                    self.served(),
                    last["status"]
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Case 1: the right module over https, pinned to another digest: it is
/// downloaded (again at each retry) but never runs; the container waits in
/// ErrImagePull/ImagePullBackOff naming both digests, nothing is cached and
/// nothing is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_over_https_never_runs() {
    let s = Setup::start(true).await;
    let wrong = sha256_hex(&std::fs::read(example("ticker")).unwrap());
    assert_ne!(wrong, s.hello_digest);
    s.apply_pod(
        "wrong-pin",
        &format!("{}#sha256={wrong}", s.server.url("hello.wasm")),
    );
    let (last, reasons) = s.watch_pull_failing("wrong-pin").await;
    eprintln!("waiting reasons seen: {reasons:?}");
    assert!(reasons.iter().any(|r| r == "ErrImagePull"), "{reasons:?}");
    assert!(
        reasons.iter().all(|r| matches!(
            r.as_str(),
            "ContainerCreating" | "ErrImagePull" | "ImagePullBackOff"
        )),
        "{reasons:?}"
    );
    let st = &last["status"]["containerStatuses"][0];
    let msg = st["state"]["waiting"]["message"].as_str().unwrap_or_default();
    let (pinned, fetched) = (format!("sha256:{wrong}"), format!("sha256:{}", s.hello_digest));
    assert!(
        msg.contains("digest mismatch") && msg.contains(&pinned) && msg.contains(&fetched),
        "the message names both digests: {msg}"
    );
    eprintln!("pull error: {msg}");
    assert!(
        msg.contains(&s.server.url("hello.wasm")),
        "the message names the URL: {msg}"
    );
    assert_eq!(last["status"]["phase"], "Pending", "{}", last["status"]);

    // `describe pod` says the same.
    let out = s.cli(&["describe", "pod", "wrong-pin"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains(&pinned) && text.contains(&fetched),
        "describe names both digests:\n{text}"
    );
    // The module never printed anything: no log lines, no log dir on the node.
    let out = s.cli(&["logs", "wrong-pin"]);
    assert_eq!(stdout(&out).trim(), "", "no log lines; stderr: {}", stderr(&out));
    let logs = s.log_dir(&last);
    assert!(!logs.exists(), "{} exists", logs.display());
    // Nothing was kept: no module by either digest, no half-written download.
    let cached = s.cached_modules();
    assert!(
        cached
            .iter()
            .all(|n| !n.contains(&s.hello_digest) && !n.starts_with('.')),
        "{cached:?}"
    );
}

/// Case 2: the same URL with the right pin runs `hello` to completion, and
/// the module is kept by its digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_pin_over_https_runs() {
    let s = Setup::start(true).await;
    s.apply_pod(
        "right-pin",
        &format!("{}#sha256={}", s.server.url("hello.wasm"), s.hello_digest),
    );
    let last = std::cell::RefCell::new(Value::Null);
    eventually("pod right-pin Succeeded", WAIT, || async {
        let p = s.pod("right-pin").await?;
        if let Some(p) = &p {
            *last.borrow_mut() = p["status"].clone();
        }
        Ok(p.filter(|p| p["status"]["phase"] == "Succeeded"))
    })
    .await
    .unwrap_or_else(|e| s.fail(&format!("{e}\nlast status: {}", last.borrow())));
    let out = s.cli(&["logs", "right-pin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Hello from Wasm, Shturman!"),
        "hello's greeting in shturman logs:\n{}",
        stdout(&out)
    );
    assert!(s.served() >= 1, "served over https: {}", s.server.log_text());
    let cached = s.cached_modules();
    assert!(
        cached.contains(&format!("{}.wasm", s.hello_digest)),
        "kept by digest in {}: {cached:?}",
        s.modules_dir().display()
    );
    assert!(cached.iter().all(|n| !n.starts_with('.')), "{cached:?}");
}

/// Case 3: with `SSL_CERT_FILE` naming another CA the node does not trust
/// the server: the pull fails, and the message says what to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_says_to_set_ssl_cert_file() {
    let s = Setup::start(false).await;
    s.apply_pod(
        "untrusted",
        &format!("{}#sha256={}", s.server.url("hello.wasm"), s.hello_digest),
    );
    let msg = eventually("pod untrusted waiting with a pull error", WAIT, || async {
        let Some(p) = s.pod("untrusted").await? else {
            return Ok(None);
        };
        let st = &p["status"]["containerStatuses"][0];
        assert!(st["state"]["running"].is_null(), "it ran: {st}");
        let reason = st["state"]["waiting"]["reason"].as_str().unwrap_or_default();
        Ok(matches!(reason, "ErrImagePull" | "ImagePullBackOff").then(|| {
            st["state"]["waiting"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }))
    })
    .await
    .unwrap_or_else(|e| s.fail(&e));
    eprintln!("pull error: {msg}");
    assert!(msg.contains(&s.server.url("hello.wasm")), "{msg}");
    assert!(
        msg.contains("SSL_CERT_FILE"),
        "the message says what to set: {msg}"
    );
    assert_eq!(s.served(), 0, "nothing was served without trust");
}
