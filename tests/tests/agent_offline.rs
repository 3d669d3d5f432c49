//! Deletions that happen while a node is offline: the real `shturman
//! control` (embedded broker) and a real `shturman-agent` running the real
//! `ticker` module (scripts/build-wasm-examples.sh) in two pods. One pod is
//! deleted while the agent is stopped, then the control plane is killed (its
//! embedded broker loses every retained message and session, the empty
//! withdrawal included): the retained pod set published after the restart is
//! what tells the agent to drop it. The other pod keeps its uid and runs
//! again.

mod support;

use anyhow::{Context, Result};
use chrono::{TimeDelta, Utc};
use shturman_e2e::{ControlPlane, free_port, stderr, wait_for};
use support::{
    Agent, RUN_WAIT, WAIT, bind_pod, container_status, is_ready, log_time, node, pod_log, pod_uid,
    running_pod, start_agent, started_at, token,
};

#[test]
fn a_pod_deleted_while_the_node_was_away_is_dropped_from_its_journal() -> Result<()> {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cp = ControlPlane::start_with(&["--mqtt-addr", &addr])?;
    let mqtt = format!("mqtt://{addr}");
    let root = tempfile::tempdir()?;
    let tok = token(&cp)?;
    let mut a = start_agent(&mqtt, "edge-o", &tok, root.path())?;
    let logs =
        |a: &Agent, cp: &ControlPlane| format!("agent:\n{}\ncontrol:\n{}", a.log_text(), cp.log_text());
    wait_for("edge-o Ready", WAIT, || node(&cp, "edge-o").filter(is_ready)).with_context(|| a.log_text())?;
    let doomed = bind_pod(&cp, "doomed", "edge-o")?;
    let keeper = bind_pod(&cp, "keeper", "edge-o")?;
    wait_for("the agent's journal to hold both pods", WAIT, || {
        a.state_pods().filter(|p| p.len() == 2).map(drop)
    })
    .with_context(|| a.log_text())?;
    assert_eq!(a.journal_files(), ["default_doomed.json", "default_keeper.json"]);

    // Both modules run: reported Running and Ready, writing their logs.
    let (_, kept) = wait_for("both pods Running and Ready", RUN_WAIT, || {
        Some((running_pod(&cp, "doomed")?, running_pod(&cp, "keeper")?))
    })
    .with_context(|| logs(&a, &cp))?;
    assert_eq!(container_status(&kept)["restartCount"], 0, "{kept}");
    let first_start = started_at(&kept).with_context(|| format!("no startedAt: {kept}"))?;
    for (name, uid) in [("doomed", &doomed), ("keeper", &keeper)] {
        wait_for("the module's output", WAIT, || {
            (!pod_log(&a, name, uid).is_empty()).then_some(())
        })
        .with_context(|| format!("{name}: {}", logs(&a, &cp)))?;
    }

    // The node goes away (its in-process modules end with it); the pod is
    // deleted; the control plane (and its broker, with every retained
    // message) dies and comes back.
    let status = a.terminate()?;
    assert!(status.success(), "SIGTERM exit: {status}");
    let down = Utc::now();
    let out = cp.cli(&["delete", "pod", "doomed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("doomed to be gone", WAIT, || {
        pod_uid(&cp, "doomed").is_none().then_some(())
    })?;
    cp.kill9()?;
    cp.spawn()?;
    // Reported start times are whole seconds: let the clock leave the first
    // run's second, so the next run's startedAt is later.
    wait_for("the clock to pass keeper's first start", WAIT, || {
        (Utc::now() >= first_start + TimeDelta::seconds(1)).then_some(())
    })?;
    a.spawn()?;

    // Back: the journal no longer holds it; the other pod is kept as is.
    let state = wait_for("the agent to drop the deleted pod", WAIT, || {
        a.state().filter(|s| {
            s["connected"] == true && s["epoch"] == 2 && s["pods"].as_array().is_some_and(|p| p.len() == 1)
        })
    })
    .with_context(|| logs(&a, &cp))?;
    assert_eq!(state["journalPods"], 2, "it came back from the journal first");
    assert_eq!(state["pods"][0]["name"], "keeper");
    assert_eq!(state["pods"][0]["uid"], keeper.as_str());
    assert_eq!(a.journal_files(), ["default_keeper.json"]);
    let log = a.log_text();
    assert!(!log.contains("replaced pod"), "{log}");
    assert!(!log.contains("dropping pod default/keeper"), "{log}");
    assert_eq!(log.matches("started pod default/keeper").count(), 2, "{log}");
    // The restarted agent resumed both journalled pods before it could hear
    // of the deletion (it runs offline from its journal); the pod set then
    // dropped doomed and stopped it, and nothing started it after that.
    assert_eq!(log.matches("started pod default/doomed").count(), 2, "{log}");
    let dropped = log
        .find("dropping pod default/doomed")
        .with_context(|| format!("doomed was not dropped:\n{log}"))?;
    let since = &log[dropped..];
    assert!(since.contains("stopped pod default/doomed"), "{log}");
    assert!(!since.contains("started pod default/doomed"), "{log}");
    // Its module wrote nothing after that stop. (The dropped pod's log
    // folder itself may stay: when the agent stops the resumed run before
    // it opens a new log, the old run's file is left behind.)
    let stopped = since
        .lines()
        .find(|l| l.contains("stopped pod default/doomed"))
        .and_then(log_time)
        .with_context(|| format!("no time on the stop line:\n{log}"))?;
    let doomed_output_after = |t| {
        pod_log(&a, "doomed", &doomed)
            .into_iter()
            .filter(|l| log_time(l).is_none_or(|at| at > t))
            .collect::<Vec<_>>()
    };
    assert_eq!(doomed_output_after(stopped), Vec::<String>::new());

    // The kept pod runs again under the same uid: the new agent started its
    // module afresh, so the report is a new run (a later startedAt, a log
    // written after the old agent was gone), Running and Ready. Its
    // restartCount is 0: the count belongs to the runtime's supervisor
    // (restarts within one agent process, kept in memory like the module
    // itself), and an agent restart ends the in-process module with the
    // process, so the new process starts a first run rather than restarting
    // a crashed one.
    let back = wait_for("keeper's new run reported Running and Ready", RUN_WAIT, || {
        running_pod(&cp, "keeper").filter(|p| started_at(p).is_some_and(|t| t > first_start))
    })
    .with_context(|| logs(&a, &cp))?;
    assert_eq!(back["metadata"]["uid"], keeper.as_str());
    assert_eq!(back["spec"]["nodeName"], "edge-o");
    let c = container_status(&back);
    assert_eq!(c["ready"], true, "{c}");
    assert_eq!(c["restartCount"], 0, "{c}");
    wait_for("keeper's module output after the restart", WAIT, || {
        pod_log(&a, "keeper", &keeper)
            .iter()
            .any(|l| log_time(l).is_some_and(|t| t > down))
            .then_some(())
    })
    .with_context(|| logs(&a, &cp))?;
    wait_for("edge-o Ready again", WAIT, || {
        node(&cp, "edge-o").filter(is_ready)
    })?;

    // Nothing about the deleted pod came back, on either side.
    assert_eq!(pod_uid(&cp, "keeper").as_deref(), Some(keeper.as_str()));
    assert!(pod_uid(&cp, "doomed").is_none(), "doomed ({doomed}) came back");
    assert_eq!(a.state_pods(), Some(vec!["keeper".to_string()]));
    assert_eq!(a.journal_files(), ["default_keeper.json"]);
    assert_eq!(
        a.log_text().matches("started pod default/doomed").count(),
        2,
        "{}",
        a.log_text()
    );
    assert_eq!(
        doomed_output_after(stopped),
        Vec::<String>::new(),
        "doomed ran again"
    );
    Ok(())
}
