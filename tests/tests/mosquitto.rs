//! The link on a real Mosquitto (Debian package `mosquitto`, installed by
//! scripts/setup.sh; this test fails, never skips, without it): the real
//! `shturman control --mqtt-url` logged in on a password-protected listener,
//! and real agents on an anonymous edge listener of the same broker. The
//! bound pod runs the real `ticker` module (scripts/build-wasm-examples.sh).

mod support;

use anyhow::{Context, Result};
use shturman_e2e::{ControlPlane, wait_for};
use support::{
    Agent, Mosquitto, RUN_WAIT, WAIT, bind_pod, container_status, is_ready, node, pod_log, ready_condition,
    running_pod, start_agent, started_at, token,
};

/// Everything the processes logged, for a failure's message.
fn logs(a: &Agent, cp: &ControlPlane, mq: &Mosquitto) -> String {
    format!(
        "agent:\n{}\ncontrol:\n{}\nmosquitto:\n{}",
        a.log_text(),
        cp.log_text(),
        mq.log_text()
    )
}

#[test]
fn join_refusal_pods_and_last_will_on_mosquitto() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut mq = Mosquitto::start(root.path())?;
    let cp = ControlPlane::start_with(&["--mqtt-url", &mq.cp_url()])?;

    // A wrong token: the gateway answers JoinResult refused; exit code 2.
    let mut bad = start_agent(&mq.edge_url(), "edge-bad", "abcdef.0123456789abcdef", root.path())?;
    let status = bad.wait_exit().with_context(|| logs(&bad, &cp, &mq))?;
    assert_eq!(status.code(), Some(2), "{}", logs(&bad, &cp, &mq));
    let log = bad.log_text();
    assert!(log.contains("refused the join token"), "{log}");
    assert!(log.contains("shturman token create"), "{log}");
    assert!(cp.log_text().contains("join refused"), "{}", cp.log_text());
    assert!(node(&cp, "edge-bad").is_none());

    // A good one joins and is Ready.
    let tok = token(&cp)?;
    let mut a = start_agent(&mq.edge_url(), "edge-m", &tok, root.path())?;
    wait_for("edge-m Ready", WAIT, || node(&cp, "edge-m").filter(is_ready))
        .with_context(|| logs(&a, &cp, &mq))?;

    // A bound pod: the pod set and the desired pod reach the agent, the
    // module runs, and the agent's report (Running and Ready) comes back.
    let uid = bind_pod(&cp, "hello", "edge-m")?;
    wait_for("the agent to hold the pod", WAIT, || {
        a.state()
            .filter(|s| s["pods"][0]["uid"] == uid.as_str())
            .map(drop)
    })
    .with_context(|| logs(&a, &cp, &mq))?;
    wait_for("the pod set with the pod", WAIT, || {
        a.log_text()
            .lines()
            .any(|l| l.contains("pod set received") && l.contains("pods=1"))
            .then_some(())
    })
    .with_context(|| logs(&a, &cp, &mq))?;
    let pod = wait_for("hello Running and Ready", RUN_WAIT, || running_pod(&cp, "hello"))
        .with_context(|| logs(&a, &cp, &mq))?;
    assert_eq!(pod["metadata"]["uid"], uid.as_str());
    assert_eq!(pod["spec"]["nodeName"], "edge-m");
    let c = container_status(&pod);
    assert_eq!(c["ready"], true, "{c}");
    assert_eq!(c["restartCount"], 0, "{c}");
    let started = started_at(&pod).with_context(|| format!("no startedAt: {pod}"))?;
    // The module really runs: its log on the node has output.
    let first_line = wait_for("hello's module output", WAIT, || {
        pod_log(&a, "hello", &uid).first().cloned()
    })
    .with_context(|| logs(&a, &cp, &mq))?;
    assert!(first_line.contains(" tick 1 "), "{first_line}");

    // The broker restarts empty: the gateway and the agent reconnect, the
    // gateway republishes (a new pod set reaches the agent), nothing
    // restarts: the module ran on through the outage.
    let sets = |a: &Agent| a.log_text().matches("pod set received").count();
    let before = sets(&a);
    let lines_before = pod_log(&a, "hello", &uid).len();
    mq.restart()?;
    wait_for("the pod set republished after the broker restart", WAIT, || {
        (sets(&a) > before).then_some(())
    })
    .with_context(|| logs(&a, &cp, &mq))?;
    wait_for("edge-m Ready after the broker restart", WAIT, || {
        node(&cp, "edge-m").filter(is_ready)
    })
    .with_context(|| logs(&a, &cp, &mq))?;
    assert_eq!(a.log_text().matches("started pod default/hello").count(), 1);
    assert!(!a.log_text().contains("dropping pod"), "{}", a.log_text());
    let after = wait_for("hello Running and Ready after the broker restart", WAIT, || {
        running_pod(&cp, "hello")
    })
    .with_context(|| logs(&a, &cp, &mq))?;
    let c = container_status(&after);
    assert_eq!(c["restartCount"], 0, "{c}");
    assert_eq!(started_at(&after), Some(started), "the same run: {c}");
    // Same run, same log file (a new run would start it afresh), still growing.
    wait_for("hello's module output after the broker restart", WAIT, || {
        let lines = pod_log(&a, "hello", &uid);
        (lines.len() > lines_before).then_some(())
    })
    .with_context(|| logs(&a, &cp, &mq))?;
    assert_eq!(pod_log(&a, "hello", &uid).first(), Some(&first_line));

    // kill -9: Mosquitto publishes the last will; the node is Unknown at
    // once, long before any heartbeat grace.
    a.kill9()?;
    let cond = wait_for("edge-m's Ready to drop", WAIT, || {
        node(&cp, "edge-m")
            .as_ref()
            .and_then(ready_condition)
            .filter(|c| c["status"] != "True")
    })
    .with_context(|| logs(&a, &cp, &mq))?;
    assert_eq!(cond["status"], "Unknown", "{cond}");
    assert_eq!(cond["reason"], "NodeStatusUnknown", "{cond}");
    Ok(())
}
