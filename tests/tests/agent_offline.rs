//! Deletions that happen while a node is offline: the real `shturman
//! control` (embedded broker) and a real `shturman-agent`. The pod is deleted
//! while the agent is stopped, then the control plane is killed (its
//! embedded broker loses every retained message and session, the empty
//! withdrawal included): the retained pod set published after the restart is
//! what tells the agent to drop it.

mod support;

use anyhow::{Context, Result};
use shturman_e2e::{ControlPlane, free_port, stderr, wait_for};
use support::{Agent, WAIT, bind_pod, is_ready, node, pod_uid, reported_reason, token};

#[test]
fn a_pod_deleted_while_the_node_was_away_is_dropped_from_its_journal() -> Result<()> {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cp = ControlPlane::start_with(&["--mqtt-addr", &addr])?;
    let mqtt = format!("mqtt://{addr}");
    let root = tempfile::tempdir()?;
    let tok = token(&cp)?;
    let mut a = Agent::start(&mqtt, "edge-o", &tok, root.path())?;
    wait_for("edge-o Ready", WAIT, || node(&cp, "edge-o").filter(is_ready)).with_context(|| a.log_text())?;
    let doomed = bind_pod(&cp, "doomed", "edge-o")?;
    let keeper = bind_pod(&cp, "keeper", "edge-o")?;
    wait_for("the agent's journal to hold both pods", WAIT, || {
        a.state_pods().filter(|p| p.len() == 2).map(drop)
    })
    .with_context(|| a.log_text())?;
    assert_eq!(a.journal_files(), ["default_doomed.json", "default_keeper.json"]);

    // The node goes away; the pod is deleted; the control plane (and its
    // broker, with every retained message) dies and comes back.
    let status = a.terminate()?;
    assert!(status.success(), "SIGTERM exit: {status}");
    let out = cp.cli(&["delete", "pod", "doomed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("doomed to be gone", WAIT, || {
        pod_uid(&cp, "doomed").is_none().then_some(())
    })?;
    cp.kill9()?;
    cp.spawn()?;
    a.spawn()?;

    // Back: the journal no longer holds it; the other pod is kept as is.
    let state = wait_for("the agent to drop the deleted pod", WAIT, || {
        a.state().filter(|s| {
            s["connected"] == true && s["epoch"] == 2 && s["pods"].as_array().is_some_and(|p| p.len() == 1)
        })
    })
    .with_context(|| format!("{}\ncontrol:\n{}", a.log_text(), cp.log_text()))?;
    assert_eq!(state["journalPods"], 2, "it came back from the journal first");
    assert_eq!(state["pods"][0]["name"], "keeper");
    assert_eq!(state["pods"][0]["uid"], keeper.as_str());
    assert_eq!(a.journal_files(), ["default_keeper.json"]);
    let log = a.log_text();
    assert!(log.contains("dropping pod default/doomed"), "{log}");
    assert!(!log.contains("replaced pod"), "{log}");
    assert!(!log.contains("dropping pod default/keeper"), "{log}");
    assert_eq!(log.matches("started pod default/keeper").count(), 2, "{log}");

    // The kept pod reports again; nothing about the deleted one arrives.
    wait_for("keeper's report after the restart", WAIT, || {
        reported_reason(&cp, "keeper").filter(|r| r == "RuntimeUnavailable")
    })?;
    assert_eq!(pod_uid(&cp, "keeper").as_deref(), Some(keeper.as_str()));
    assert!(pod_uid(&cp, "doomed").is_none(), "doomed ({doomed}) came back");
    wait_for("edge-o Ready again", WAIT, || {
        node(&cp, "edge-o").filter(is_ready)
    })?;
    Ok(())
}
