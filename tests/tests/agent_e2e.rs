//! End-to-end tests of the edge agent: the real `shturman control` (with its
//! embedded MQTT broker on a free loopback port) and real `shturman-agent`
//! processes, each with its own node name and data dir.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use shturman_e2e::{Agent, ControlPlane, free_port, stderr, stdout, ticker_wasm, wait_for};

const WAIT: Duration = Duration::from_secs(30);
/// Deadline for a Wasm pod to run: the debug-built agent compiles the module first.
const RUN_WAIT: Duration = Duration::from_secs(90);

/// Starts an agent (data under `root/name`) labelled `test/agent=<name>`,
/// heartbeating every second.
fn start_agent(mqtt: &str, name: &str, token: &str, root: &Path) -> Result<Agent> {
    let label = format!("test/agent={name}");
    Agent::start(
        mqtt,
        name,
        token,
        root,
        &["--labels", &label, "--heartbeat-interval", "1s"],
    )
}

fn control_plane() -> Result<(ControlPlane, String)> {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cp = ControlPlane::start_with(&["--mqtt-addr", &addr])?;
    Ok((cp, format!("mqtt://{addr}")))
}

fn token(cp: &ControlPlane) -> Result<String> {
    let out = cp.cli(&["token", "create"]);
    if !out.status.success() {
        bail!("token create failed: {}", stderr(&out));
    }
    Ok(stdout(&out).trim().to_string())
}

/// The nodes as JSON items, by name.
fn nodes(cp: &ControlPlane) -> Vec<Value> {
    let out = cp.cli(&["get", "nodes", "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

#[test]
fn two_agents_join_and_report_real_figures() -> Result<()> {
    let (cp, mqtt) = control_plane()?;
    let root = tempfile::tempdir()?;
    let tok = token(&cp)?;
    let a = start_agent(&mqtt, "edge-a", &tok, root.path())?;
    let b = start_agent(&mqtt, "edge-b", &tok, root.path())?;
    let ready = wait_for("both nodes Ready", WAIT, || {
        let ns = nodes(&cp);
        let ready: Vec<Value> = ns.into_iter().filter(is_ready).collect();
        (ready.len() == 2).then_some(ready)
    })
    .with_context(|| {
        format!(
            "agent logs:\n{}\n{}\ncontrol:\n{}",
            a.log_text(),
            b.log_text(),
            cp.log_text()
        )
    })?;
    for n in &ready {
        let name = n["metadata"]["name"].as_str().unwrap_or_default();
        let labels = &n["metadata"]["labels"];
        let arch = labels["kubernetes.io/arch"].as_str().unwrap_or_default();
        assert!(["amd64", "arm64", "arm"].contains(&arch), "{name}: arch {arch:?}");
        assert_eq!(labels["kubernetes.io/hostname"], name);
        assert_eq!(labels["test/agent"], name);
        let cap = &n["status"]["capacity"];
        let cpu = cap["cpu"].as_str().unwrap_or("0");
        assert!(cpu != "0" && !cpu.is_empty(), "{name}: cpu {cpu:?}");
        let mem = cap["memory"].as_str().unwrap_or("0");
        assert!(mem != "0" && !mem.is_empty(), "{name}: memory {mem:?}");
        assert_eq!(cap["pods"], "110");
        assert_eq!(n["status"]["nodeInfo"]["architecture"], arch);
        let handlers = n["status"]["runtimeHandlers"].to_string();
        assert!(handlers.contains("wasmtime"), "{handlers}");
    }
    let wide = stdout(&cp.cli(&["get", "nodes", "-o", "wide"]));
    for name in ["edge-a", "edge-b"] {
        let line = wide.lines().find(|l| l.starts_with(name)).context(wide.clone())?;
        assert!(line.contains(" Ready "), "{line}");
        assert!(
            ["amd64", "arm64", "arm"].iter().any(|a| line.contains(a)),
            "{line}"
        );
    }
    Ok(())
}

#[test]
fn a_wrong_token_is_refused_with_exit_code_2() -> Result<()> {
    let (cp, mqtt) = control_plane()?;
    let root = tempfile::tempdir()?;
    let mut a = start_agent(&mqtt, "edge-bad", "abcdef.0123456789abcdef", root.path())?;
    let status = a.wait_exit()?;
    let log = a.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("refused the join token"), "{log}");
    assert!(log.contains("shturman token create"), "{log}");
    assert!(nodes(&cp).is_empty());
    Ok(())
}

/// The pods as JSON items.
fn pods(cp: &ControlPlane) -> Vec<Value> {
    let out = cp.cli(&["get", "pods", "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

/// Phase Running, condition Ready=True and the container running.
fn is_running_and_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["containerStatuses"][0]["state"]["running"].is_object()
        && p["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// When the pod's (first) container last started, as the node reported it.
fn started_at(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn an_agent_restarted_without_its_control_plane_resumes_its_journal() -> Result<()> {
    let wasm = ticker_wasm();
    let (mut cp, mqtt) = control_plane()?;
    let root = tempfile::tempdir()?;
    let tok = token(&cp)?;
    let mut a = start_agent(&mqtt, "edge-j", &tok, root.path())?;
    wait_for("edge-j Ready", WAIT, || {
        nodes(&cp).iter().any(is_ready).then_some(())
    })
    .with_context(|| a.log_text())?;
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\nspec:\n  nodeName: edge-j\n  \
         runtimeClassName: wasmtime\n  containers:\n  - name: main\n    image: file://{}\n",
        wasm.display()
    );
    let out = cp.cli_stdin(&["apply", "-f", "-"], Some(&pod));
    assert!(out.status.success(), "{}", stderr(&out));

    // The agent runs the module: Running and Ready, from the first start.
    let first = wait_for("hello Running and Ready", RUN_WAIT, || {
        pods(&cp).into_iter().find(is_running_and_ready)
    })
    .with_context(|| format!("{}\n{}", a.log_text(), cp.log_text()))?;
    let uid = first["metadata"]["uid"].as_str().context("uid")?.to_string();
    let first_start = started_at(&first);
    assert!(!first_start.is_empty(), "{first}");
    assert_eq!(
        first["status"]["containerStatuses"][0]["restartCount"], 0,
        "{first}"
    );
    // Its output lands in the node's log: the module really runs.
    let log_file = a
        .dir
        .join("data/logs")
        .join(format!("default_hello_{uid}"))
        .join("main.log");
    // Whether the ticker printed its line `n` at or after `since` (lines are
    // `<time> stdout F ticker tick <n> at …`).
    let ticked = |n: u32, since: chrono::DateTime<chrono::Utc>| {
        let want = format!(" tick {n} at ");
        std::fs::read_to_string(&log_file).is_ok_and(|text| {
            text.lines().filter(|l| l.contains(&want)).any(|l| {
                l.split_whitespace()
                    .next()
                    .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                    .is_some_and(|at| at >= since)
            })
        })
    };
    // Its second line also puts a whole second between this start and the
    // next (startedAt has whole seconds).
    wait_for("the ticker's second line", WAIT, || {
        ticked(2, chrono::DateTime::UNIX_EPOCH).then_some(())
    })
    .with_context(|| a.log_text())?;

    // Control plane gone; agent restarted: it resumes the pod from its
    // journal and runs it again, offline.
    cp.kill9()?;
    let status = a.terminate()?;
    assert!(status.success(), "SIGTERM exit: {status}");
    let restarted = chrono::Utc::now();
    a.spawn()?;
    let state = wait_for("the restarted agent's state", WAIT, || {
        a.state()
            .filter(|s| s["epoch"] == 2 && s["pods"].as_array().is_some_and(|p| !p.is_empty()))
    })
    .with_context(|| a.log_text())?;
    assert_eq!(state["journalPods"], 1);
    assert_eq!(state["connected"], false);
    assert_eq!(state["pods"].as_array().map(Vec::len), Some(1), "{state}");
    assert_eq!(state["pods"][0]["name"], "hello");
    assert_eq!(state["pods"][0]["uid"], uid.as_str());
    assert!(
        a.log_text().contains("loaded the journal pods=1"),
        "{}",
        a.log_text()
    );
    // A Wasm module lives inside the agent's process: the agent's restart
    // ended the old instance, and the new agent starts a new one with no
    // control plane to ask: the pod's log has a first tick from after the
    // restart. (state.json keeps the phase the pod was admitted with until
    // the link returns: offline, the agent does not poll its runtimes.)
    wait_for("the ticker to count from 1 again, offline", RUN_WAIT, || {
        ticked(1, restarted).then_some(())
    })
    .with_context(|| {
        format!(
            "{}\n{:?}\n{}",
            a.log_text(),
            a.state(),
            std::fs::read_to_string(&log_file).unwrap_or_default()
        )
    })?;

    // The link returns: the same pod (no duplicate, not replaced) is
    // reported Running again, by the new instance.
    cp.spawn()?;
    wait_for("the agent to reconnect", WAIT, || {
        a.state().filter(|s| s["connected"] == true)
    })
    .with_context(|| a.log_text())?;
    wait_for("edge-j Ready again", WAIT, || {
        nodes(&cp).iter().any(is_ready).then_some(())
    })?;
    let again = wait_for("hello reported Running by the new instance", WAIT, || {
        let ps = pods(&cp);
        ps.iter()
            .find(|p| is_running_and_ready(p) && started_at(p) != first_start)
            .cloned()
            .map(|p| (ps.len(), p))
    })
    .with_context(|| format!("{}\n{}", a.log_text(), cp.log_text()))?;
    let (count, again) = again;
    assert_eq!(count, 1, "one pod, no duplicate");
    assert_eq!(again["metadata"]["uid"], uid.as_str(), "the same pod: {again}");
    assert_eq!(again["spec"]["nodeName"], "edge-j");
    assert!(started_at(&again) > first_start, "{first_start} -> {again}");
    // restartCount counts the runtime restarting a container that exited
    // (restartPolicy), kept in the agent's memory; the journal keeps the
    // desired pods, not their run history. The module did not exit: it was
    // ended with the agent's process and started afresh by the new one, so
    // the count starts over at 0 (the new startedAt above shows the restart).
    assert_eq!(
        again["status"]["containerStatuses"][0]["restartCount"], 0,
        "{again}"
    );
    let log = a.log_text();
    assert!(!log.contains("replaced pod"), "{log}");
    assert_eq!(log.matches("started pod default/hello").count(), 2, "{log}");
    Ok(())
}
