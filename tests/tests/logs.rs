//! `shturman logs` end to end: the real `shturman up` runs the `ticker`
//! Wasm module; its output travels node → MQTT → control plane → API → CLI.
//! One cluster for every case (starting one is the slow part).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use shturman_e2e::api::{Api, eventually};
use shturman_e2e::{Up, binary, stderr, stdout, ticker_wasm};

fn tick_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains(" tick ")).collect()
}

/// A metric's value from `/metrics` text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_travel_from_the_node_through_mqtt() {
    let wasm = ticker_wasm();
    let up = tokio::task::block_in_place(|| Up::start(Some("edge-1"), &[])).expect("shturman up");
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  runtimeClassName: wasmtime
  containers:
  - name: ticker
    image: file://{}
    resources:
      limits:
        cpu: 100m
        memory: 16Mi
",
        wasm.display()
    );
    let out = up.cli_stdin(&["apply", "-f", "-"], Some(&manifest));
    assert!(out.status.success(), "{}", stderr(&out));
    let token = std::fs::read_to_string(up.admin_conf())
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .unwrap();
    let api = Api::new(&up.url, &token);
    eventually("the ticker pod Running", Duration::from_secs(90), || async {
        let (_, p): (u16, Value) = api.get("/api/v1/namespaces/default/pods/ticker").await?;
        Ok((p["status"]["phase"] == "Running").then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", up.log_text()));

    // `shturman logs ticker` prints the ticker's lines (at least 3 once it ran 3 s).
    let all = eventually(
        "3 ticker lines from shturman logs",
        Duration::from_secs(30),
        || async {
            let out = tokio::task::block_in_place(|| up.cli(&["logs", "ticker"]));
            if !out.status.success() {
                anyhow::bail!("shturman logs failed: {}", stderr(&out));
            }
            let text = stdout(&out);
            Ok((tick_lines(&text).len() >= 3).then_some(text))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", up.log_text()));
    assert!(all.lines().next().unwrap().starts_with("ticker tick 1 "), "{all}");

    // --tail 2: exactly two lines, the newest.
    let out = tokio::task::block_in_place(|| up.cli(&["logs", "ticker", "--tail", "2"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert_eq!(tick_lines(&text).len(), 2, "{text}");

    // A pod that does not exist: kubectl's NotFound.
    let out = tokio::task::block_in_place(|| up.cli(&["logs", "nope"]));
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        r#"Error from server (NotFound): pods "nope" not found"#
    );

    // --previous on a container that never restarted: a clear BadRequest.
    let out = tokio::task::block_in_place(|| up.cli(&["logs", "ticker", "--previous"]));
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        r#"Error from server (BadRequest): previous terminated container "ticker" in pod "ticker" not found"#
    );

    // A container the pod does not have.
    let out = tokio::task::block_in_place(|| up.cli(&["logs", "ticker", "-c", "other"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("Error from server (BadRequest): container other is not valid for pod ticker"),
        "{err}"
    );

    // -f streams new lines as they come; killing the client cancels the
    // stream on the control plane and on the node.
    let mut child = Command::new(binary("shturman"))
        .arg("--config")
        .arg(up.admin_conf())
        .args(["logs", "-f", "ticker", "--tail", "1"])
        .env_remove("SHTURMAN_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shturman logs -f");
    let child_out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(child_out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while lines.len() < 4 && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    let _ = reader.join();
    assert!(
        lines.len() >= 4,
        "expected the tail line and 3 new ones within 20s, got {lines:?} (exit {status})\n{}",
        up.log_text()
    );
    let numbers: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.split(" tick ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(numbers.len(), lines.len(), "{lines:?}");
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "lines arrive in order, none lost or repeated: {lines:?}"
    );

    eventually(
        "the cancelled stream noticed",
        Duration::from_secs(15),
        || async {
            let resp = reqwest::Client::new()
                .get(format!("{}/metrics", up.url))
                .bearer_auth(&token)
                .send()
                .await?
                .text()
                .await?;
            let cancelled = metric(&resp, "shturman_log_streams_cancelled_total").unwrap_or(0.0);
            let open = metric(&resp, "shturman_log_streams_open").unwrap_or(-1.0);
            let agent_saw = up
                .log_text()
                .contains("log stream cancelled by the control plane");
            Ok((cancelled >= 1.0 && open == 0.0 && agent_saw).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", up.log_text()));
}
