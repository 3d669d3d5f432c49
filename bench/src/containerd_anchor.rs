//! The containerd + runc anchors, measured in the same run on the private
//! containerd of `shturman_e2e::containerd` (containerd 1.6 with its CRI
//! plugin, overlayfs, runc through `containerd-shim-runc-v2`; its own temp
//! dir, sockets and cgroup parent; everything removed when it drops), with
//! the busybox image `shturman_e2e::oci_image` builds as an OCI layout and
//! imports into the `default` namespace:
//!
//! - `ctr run --rm` latency (a whole container start to exit);
//! - containerd's own idle RSS;
//! - memory per idle container: `ctr run -d … sleep` containers, each its
//!   shim plus the container's process.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use shturman_e2e::containerd::{CTR_NAMESPACE, Containerd, ctr_run_latency};
use shturman_e2e::oci_image;

use crate::procfs;

/// A running private containerd with the busybox image imported.
pub struct Anchor {
    c: Containerd,
    image: String,
}

impl Anchor {
    /// Starts containerd and imports busybox (blocking; call off the async path).
    pub fn start() -> Result<Anchor> {
        let t = Instant::now();
        let c = Containerd::start().context("starting the private containerd")?;
        let layout = oci_image::busybox(&c.dir().join("images").join("busybox"))
            .context("building the busybox OCI image")?;
        c.import_layout(CTR_NAMESPACE, &layout)
            .context("importing busybox")?;
        eprintln!(
            "  private containerd up with {} in {:.1} s",
            layout.reference(),
            t.elapsed().as_secs_f64()
        );
        Ok(Anchor {
            c,
            image: layout.reference(),
        })
    }

    /// `n` sequential `ctr run --rm IMAGE ID true` (the harness's timing:
    /// ctr's own start included, as a user's command), sorted. Stops early
    /// (with what it has) after `cap`.
    pub fn ctr_run(&self, n: usize, cap: Duration) -> Result<Vec<Duration>> {
        let started = Instant::now();
        let mut out = Vec::with_capacity(n);
        // One untimed run first: the first start after import unpacks
        // nothing more, but warms containerd's and the kernel's caches.
        let _ = ctr_run_latency(&self.c, &self.image, 1);
        while out.len() < n && started.elapsed() < cap {
            // In batches of 10, so the time cap is checked between them.
            let batch = (n - out.len()).min(10);
            out.extend(ctr_run_latency(&self.c, &self.image, batch));
        }
        out.sort();
        Ok(out)
    }

    /// The containerd daemon's pid (the one whose command line names this
    /// harness's config).
    pub fn containerd_pid(&self) -> Result<u32> {
        let dir = self.c.dir().display().to_string();
        procfs::processes()
            .into_iter()
            .filter(|(_, comm)| comm == "containerd")
            .map(|(pid, _)| pid)
            .find(|pid| cmdline(*pid).contains(&dir))
            .context("the harness's containerd process was not found")
    }

    /// Starts `n` detached busybox `sleep` containers, lets them settle,
    /// and measures each container's shim + process tree; removes them
    /// before returning.
    pub fn idle_containers(&self, n: usize, settle: Duration) -> Result<ContainerMemory> {
        let ids: Vec<String> = (0..n)
            .map(|i| format!("idle-{}-{i}", std::process::id()))
            .collect();
        let result = (|| {
            let ctd = self.containerd_pid()?;
            let ctd_before = procfs::rss_kib(ctd)?;
            for id in &ids {
                let flags = self.c.run_flags(id);
                let mut args = vec!["-n", CTR_NAMESPACE, "run", "-d"];
                args.extend(flags.iter().map(String::as_str));
                args.extend([self.image.as_str(), id.as_str(), "sleep", "100000"]);
                self.c.ctr_ok(&args)?;
            }
            std::thread::sleep(settle);
            let mut m = ContainerMemory {
                n,
                ..ContainerMemory::default()
            };
            let procs = procfs::processes();
            for id in &ids {
                let shim = procs
                    .iter()
                    .filter(|(_, comm)| comm.starts_with("containerd-shim"))
                    .map(|(pid, _)| *pid)
                    .find(|pid| {
                        let cl = cmdline(*pid);
                        cl.split_whitespace().any(|a| a == id.as_str())
                    })
                    .with_context(|| format!("no shim found for container {id}"))?;
                for pid in tree(shim, &procs) {
                    m.rss_kib += procfs::rss_kib(pid).unwrap_or(0);
                    m.pss_kib += pss_kib(pid).unwrap_or(0);
                    m.processes += 1;
                }
            }
            m.containerd_delta_kib = procfs::rss_kib(ctd)?.saturating_sub(ctd_before);
            anyhow::Ok(m)
        })();
        for id in &ids {
            let _ = self
                .c
                .ctr(&["-n", CTR_NAMESPACE, "tasks", "kill", "-s", "SIGKILL", id]);
            let _ = self.c.ctr(&["-n", CTR_NAMESPACE, "tasks", "delete", "-f", id]);
            let _ = self.c.ctr(&["-n", CTR_NAMESPACE, "containers", "rm", id]);
        }
        result
    }
}

/// What `n` idle containers hold, summed over each one's shim and its
/// descendants (the container's processes).
#[derive(Clone, Copy, Debug, Default)]
pub struct ContainerMemory {
    pub n: usize,
    pub processes: usize,
    pub rss_kib: u64,
    /// Proportional set size: shared pages (the shim's binary, libc) split
    /// among the processes that map them.
    pub pss_kib: u64,
    /// containerd's own RSS growth over the same time.
    pub containerd_delta_kib: u64,
}

/// A process and all its descendants.
fn tree(root: u32, procs: &[(u32, String)]) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = procs
        .iter()
        .filter_map(|(p, _)| procfs::parent_pid(*p).map(|pp| (*p, pp)))
        .collect();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// `Pss:` of /proc/PID/smaps_rollup, in KiB.
fn pss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .context("no Pss")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(v)
}

/// `ctr run --rm` latencies on a fresh private containerd, sorted.
pub async fn ctr_run(n: usize) -> Result<Vec<Duration>> {
    tokio::task::spawn_blocking(move || {
        let a = Anchor::start()?;
        let d = a.ctr_run(n, Duration::from_secs(300))?;
        if d.is_empty() {
            bail!("no ctr run finished");
        }
        Ok(d)
    })
    .await
    .context("the ctr run anchor panicked")?
}
