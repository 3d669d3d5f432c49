//! The agent's idle footprint: the real release `shturman-agent` joined to a
//! real `shturman control`, no pods, default 10 s heartbeats; its resident
//! memory (`VmRSS` of `/proc/PID/status`) sampled every second while it
//! settles, the figure taken after several heartbeats. (Binary sizes are
//! the `sizes` scenario's.)
//!
//! The anchor from the same run: the idle RSS of containerd (the private one
//! of `shturman_e2e::containerd`: 1.6 with its CRI plugin loaded, the pause
//! and busybox images imported, no containers), which is what a Kubernetes
//! node runs besides the kubelet before any pod.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::containerd_anchor::Anchor;
use crate::procfs::{self, mib};
use crate::report::{Report, Row};
use crate::spawn::{Agent, Control};

/// Idle RSS goal for the agent, MiB.
const GOAL_RSS_MIB: f64 = 20.0;

/// RSS samples of `pid`, one a second for `window`: (last, max), in KiB.
async fn settle(pid: u32, window: Duration) -> Result<(u64, u64)> {
    let started = Instant::now();
    let (mut last, mut max) = (0, 0);
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = procfs::rss_kib(pid)?;
        max = max.max(last);
    }
    Ok((last, max))
}

/// Runs the scenario and adds its rows.
pub async fn run(report: &mut Report, window: Duration) -> Result<()> {
    eprintln!(
        "footprint: idle agent (joined, no pods, 10 s heartbeats), RSS over {} s",
        window.as_secs()
    );
    let (rss, max, hwm) = {
        let control = Control::start("sled").await?;
        let agent = Agent::start(&control, "bench-idle", &[]).await?;
        let (rss, max) = settle(agent.pid(), window).await?;
        let hwm = procfs::status_kib(agent.pid(), "VmHWM:")?;
        (rss, max, hwm)
    };
    eprintln!(
        "  agent VmRSS {:.1} MiB (max while settling {:.1}, VmHWM {:.1})",
        mib(rss),
        mib(max),
        mib(hwm)
    );

    eprintln!("footprint anchor: idle private containerd (CRI plugin, 2 images, no containers)");
    let ctd = tokio::task::spawn_blocking(move || -> Result<u64> {
        let a = Anchor::start()?;
        let pid = a.containerd_pid()?;
        let started = Instant::now();
        let mut last = 0;
        while started.elapsed() < window.min(Duration::from_secs(15)) {
            std::thread::sleep(Duration::from_secs(1));
            last = procfs::rss_kib(pid)?;
        }
        Ok(last)
    })
    .await
    .context("the containerd anchor panicked")?;
    let (ctd_mib, ctd_name) = match ctd {
        Ok(kib) => {
            eprintln!("  containerd VmRSS {:.1} MiB", mib(kib));
            (
                Some(mib(kib)),
                "containerd 1.6 idle (CRI plugin, no containers)".to_string(),
            )
        }
        Err(e) => {
            eprintln!("  anchor not measured: {e:#}");
            (None, format!("containerd idle (not measured: {e})"))
        }
    };
    report.push(
        Row {
            scenario: "agent idle (joined, no pods)".into(),
            metric: "RSS MiB".into(),
            shturman: mib(rss),
            anchor_name: ctd_name,
            anchor: ctd_mib,
            goal: format!("<= {GOAL_RSS_MIB} MiB"),
            higher_is_better: false,
        }
        .check(crate::report::Goal::AtMost(GOAL_RSS_MIB)),
    );

    Ok(())
}
