//! End-to-end tests of `shturman up`: the real binary (control plane,
//! embedded broker and a local agent in one process) plus real
//! `shturman-agent` processes joined with `shturman token create` tokens.
//! Each test has its own temp dir and free loopback ports; every wait has a
//! deadline; processes are killed when the test ends.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use shturman_e2e::{Agent, Up, kube_arch, stderr, stdout, wait_for, workspace_root};

/// Deadline for things that take a few heartbeats.
const WAIT: Duration = Duration::from_secs(60);
/// The grace and toleration `up` is started with here.
const GRACE: &str = "2s";
const TOLERATION: &str = "2";
/// Deadline for Wasm pods to run: each debug-built agent compiles the module first.
const RUN_WAIT: Duration = Duration::from_secs(90);
/// The manifest `up`'s next steps apply.
const TICKER_MANIFEST: &str = "wasm-examples/manifests/ticker-deployment.yaml";

/// `get KIND -o json` items.
fn items(up: &Up, kind: &str) -> Vec<Value> {
    let out = up.cli(&["get", kind, "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or_default()
}

/// A node's Ready condition status: `True`, `False` or `Unknown`.
fn ready(node: &Value) -> &str {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
}

/// The pods of the ticker Deployment that are not being deleted.
fn live_pods(up: &Up) -> Vec<Value> {
    let out = up.cli(&["get", "pods", "-l", "app=ticker", "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or_default()
}

/// Phase Running, condition Ready=True and the first container running.
fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["containerStatuses"][0]["state"]["running"].is_object()
        && pod["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Every one of `want` pods bound to a node in `nodes` and reported by it
/// Running and Ready.
fn bound_and_running(up: &Up, want: usize, nodes: &[&str]) -> Option<Vec<Value>> {
    let pods = live_pods(up);
    let ok = pods.len() == want
        && pods
            .iter()
            .all(|p| nodes.contains(&node_of(p)) && running_and_ready(p));
    ok.then_some(pods)
}

/// The ticker Deployment users are told to apply
/// (wasm-examples/manifests/ticker-deployment.yaml), with its module path
/// (`file:///opt/shturman/wasm/ticker.wasm`, where users copy it) replaced by
/// the module scripts/build-wasm-examples.sh built.
fn ticker_manifest() -> Result<String> {
    const MODULE: &str = "file:///opt/shturman/wasm/ticker.wasm";
    let wasm = workspace_root().join("wasm-examples/ticker/target/wasm32-wasip2/release/ticker.wasm");
    if !wasm.exists() {
        bail!(
            "{} is missing: run scripts/build-wasm-examples.sh (scripts/test.sh does)",
            wasm.display()
        );
    }
    let path = workspace_root().join(TICKER_MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    if text.matches(MODULE).count() != 1 {
        bail!("{} does not name {MODULE} once:\n{text}", path.display());
    }
    Ok(text.replace(MODULE, &format!("file://{}", wasm.display())))
}

fn logs(up: &Up, agents: &[&Agent]) -> String {
    let mut s = format!("== shturman up\n{}", up.log_text());
    for a in agents {
        s.push_str(&format!("\n== {}\n{}", a.name, a.log_text()));
    }
    s
}

#[test]
fn up_and_two_agents_make_a_cluster_that_moves_pods_off_a_dead_node() -> Result<()> {
    let up = Up::start(
        Some("up-local"),
        &[
            "--node-monitor-grace-period",
            GRACE,
            "--default-toleration-seconds",
            TOLERATION,
        ],
    )?;
    // The banner tells a new user where things are and how to join nodes.
    let banner = up.log_text();
    for want in [
        format!("API server:   {}", up.url),
        format!("admin config: {}", up.admin_conf().display()),
        format!("MQTT broker:  {} (embedded)", up.mqtt_url),
        "local node:   up-local".to_string(),
        "./scripts/build-wasm-examples.sh".to_string(),
        "cp wasm-examples/ticker/target/wasm32-wasip2/release/ticker.wasm /opt/shturman/wasm/".to_string(),
        format!("shturman apply -f {TICKER_MANIFEST}"),
        "shturman get pods -o wide".to_string(),
        "shturman logs -f <pod>".to_string(),
        "shturman get nodes".to_string(),
        "TOKEN=$(shturman token create)".to_string(),
        format!(
            "shturman-agent --mqtt-url {} --token \"$TOKEN\" --node-name <name> --data-dir /var/lib/shturman --heartbeat-interval 500ms",
            up.mqtt_url
        ),
    ] {
        assert!(banner.contains(&want), "banner lacks {want:?}:\n{banner}");
    }

    let root = tempfile::tempdir()?;
    let hb = ["--heartbeat-interval", "1s"];
    let mut a = Agent::start(&up.mqtt_url, "edge-a", &up.token()?, root.path(), &hb)?;
    let b = Agent::start(&up.mqtt_url, "edge-b", &up.token()?, root.path(), &hb)?;
    let all = ["up-local", "edge-a", "edge-b"];

    // Three Ready nodes with this machine's figures.
    wait_for("three Ready nodes", WAIT, || {
        let nodes = items(&up, "nodes");
        (nodes.len() == 3 && nodes.iter().all(|n| ready(n) == "True")).then_some(())
    })
    .with_context(|| logs(&up, &[&a, &b]))?;
    let wide = stdout(&up.cli(&["get", "nodes", "-o", "wide"]));
    for n in all {
        let line = wide
            .lines()
            .find(|l| l.split_whitespace().next() == Some(n))
            .with_context(|| format!("{n} missing from\n{wide}"))?;
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.get(1), Some(&"Ready"), "{line}");
        assert!(cols.contains(&kube_arch()), "{line}");
    }
    let nodes = items(&up, "nodes");
    for n in &nodes {
        let who = name(n);
        assert!(all.contains(&who), "unexpected node {who}");
        assert_eq!(
            n["metadata"]["labels"]["kubernetes.io/arch"],
            kube_arch(),
            "{who}"
        );
        assert_eq!(n["status"]["nodeInfo"]["architecture"], kube_arch(), "{who}");
        let cap = &n["status"]["capacity"];
        for res in ["cpu", "memory"] {
            let q = cap[res].as_str().unwrap_or("0");
            assert!(
                !q.is_empty() && !q.starts_with('0'),
                "{who}: capacity.{res} = {q:?}"
            );
        }
    }

    // Three replicas of the real ticker module, spread over the nodes, and
    // each node runs its own.
    assert!(
        !banner.contains("RuntimeUnavailable"),
        "the next steps still promise Pending pods:\n{banner}"
    );
    let out = up.cli_stdin(&["apply", "-f", "-"], Some(&ticker_manifest()?));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("deployment.apps/ticker created"),
        "{}",
        stdout(&out)
    );
    let pods = wait_for("3 ticker pods bound, Running and Ready", RUN_WAIT, || {
        bound_and_running(&up, 3, &all)
    })
    .with_context(|| logs(&up, &[&a, &b]))?;
    let spread: BTreeSet<&str> = pods.iter().map(node_of).collect();
    assert_eq!(spread.len(), 3, "one replica per node: {spread:?}");
    let moved: BTreeSet<String> = pods
        .iter()
        .filter(|p| node_of(p) == "edge-a")
        .map(|p| name(p).to_string())
        .collect();

    // kill -9 edge-a: its node turns NotReady (Ready=Unknown) …
    a.kill9()?;
    let killed = Instant::now();
    wait_for("edge-a NotReady", Duration::from_secs(30), || {
        items(&up, "nodes")
            .iter()
            .any(|n| name(n) == "edge-a" && ready(n) == "Unknown")
            .then_some(())
    })
    .with_context(|| logs(&up, &[&a, &b]))?;
    let not_ready_after = killed.elapsed();
    let wide = stdout(&up.cli(&["get", "nodes", "-o", "wide"]));
    let line = wide
        .lines()
        .find(|l| l.starts_with("edge-a "))
        .context(wide.clone())?;
    assert!(line.contains("NotReady"), "{line}");

    // … and after the toleration its pod is replaced on the other nodes,
    // where it runs.
    let after = wait_for("the pods to move off edge-a and run", RUN_WAIT, || {
        bound_and_running(&up, 3, &["up-local", "edge-b"])
    })
    .with_context(|| logs(&up, &[&a, &b]))?;
    let names: BTreeSet<String> = after.iter().map(|p| name(p).to_string()).collect();
    assert!(
        moved.is_disjoint(&names),
        "edge-a's pods {moved:?} were replaced, not kept: {names:?}"
    );
    eprintln!(
        "edge-a NotReady {not_ready_after:?} after kill -9 (grace {GRACE}); pods moved after {:?}",
        killed.elapsed()
    );
    wait_for("the Deployment to count 3/3 ready again", WAIT, || {
        let out = stdout(&up.cli(&["get", "deploy", "ticker"]));
        out.lines()
            .any(|l| l.starts_with("ticker ") && l.contains(" 3/3 "))
            .then_some(())
    })
    .with_context(|| stdout(&up.cli(&["get", "deploy", "ticker"])))?;
    drop(b);
    Ok(())
}

#[test]
fn up_names_the_node_after_the_host_and_stops_cleanly() -> Result<()> {
    let mut up = Up::start(None, &["--store", "sled"])?;
    let log = up.log_text();
    let node = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("local node:   "))
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("no local node line in\n{log}"))?
        .to_string();
    wait_for("the local node Ready", WAIT, || {
        items(&up, "nodes")
            .iter()
            .any(|n| name(n) == node && ready(n) == "True")
            .then_some(())
    })
    .with_context(|| up.log_text())?;
    wait_for("up to say the local node is Ready", WAIT, || {
        up.log_text()
            .contains(&format!("local node {node} is Ready"))
            .then_some(())
    })?;
    // The local agent's join token is gone once it has joined.
    let out = up.cli(&["get", "secrets", "-n", "shturman-system", "-o", "name"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("bootstrap-token-"), "{}", stdout(&out));

    // SIGTERM: the agent says goodbye, then the control plane stops; exit 0.
    let status = up.terminate()?;
    let log = up.log_text();
    if !status.success() {
        bail!("shturman up exited with {status}:\n{log}");
    }
    assert!(
        log.contains(&format!("stopped: local node {node} is offline")),
        "{log}"
    );

    // Started again on the same data dir, the node comes back under its own
    // secret (a fresh token is made, and dropped again).
    up.spawn()?;
    wait_for("the local node Ready again", WAIT, || {
        items(&up, "nodes")
            .iter()
            .any(|n| name(n) == node && ready(n) == "True")
            .then_some(())
    })
    .with_context(|| up.log_text())?;
    assert_eq!(items(&up, "nodes").len(), 1);
    Ok(())
}

#[test]
fn a_silent_agent_turns_not_ready_after_the_grace_and_ready_when_it_speaks_again() -> Result<()> {
    let up = Up::start(Some("up-local"), &["--node-monitor-grace-period", GRACE])?;
    let root = tempfile::tempdir()?;
    let a = Agent::start(
        &up.mqtt_url,
        "edge-quiet",
        &up.token()?,
        root.path(),
        &["--heartbeat-interval", "500ms"],
    )?;
    let state_of = |up: &Up| -> String {
        items(up, "nodes")
            .iter()
            .find(|n| name(n) == "edge-quiet")
            .map(|n| ready(n).to_string())
            .unwrap_or_default()
    };
    wait_for("edge-quiet Ready", WAIT, || {
        (state_of(&up) == "True").then_some(())
    })
    .with_context(|| logs(&up, &[&a]))?;

    // SIGSTOP: the link stays open (no last will), only the heartbeats stop.
    a.signal("STOP")?;
    let stopped = Instant::now();
    wait_for("edge-quiet NotReady", Duration::from_secs(30), || {
        (state_of(&up) == "Unknown").then_some(())
    })
    .with_context(|| logs(&up, &[&a]))?;
    let after = stopped.elapsed();
    // The last heartbeat may be 500 ms old at SIGSTOP, and heartbeat times
    // are whole seconds (as Kubernetes' metav1.Time): the earliest the
    // 2 s grace can run out is 0.5 s after the stop.
    assert!(
        after >= Duration::from_millis(500),
        "NotReady after {after:?}, before the {GRACE} grace could pass"
    );
    eprintln!("edge-quiet NotReady {after:?} after SIGSTOP (grace {GRACE})");

    a.signal("CONT")?;
    wait_for("edge-quiet Ready again", WAIT, || {
        (state_of(&up) == "True").then_some(())
    })
    .with_context(|| logs(&up, &[&a]))?;
    Ok(())
}
