//! `proxy` (issue 7): the agent's userspace L4 Service proxy next to
//! HAProxy, same backends, same load generator, same machine, loopback only.
//!
//! - **Backends**: 3 handwritten HTTP/1.1 keep-alive responders (a fixed
//!   13-byte body) on `127.0.0.1` free ports, on their own 1-thread tokio
//!   runtime in this process, the same for every target.
//! - **Shturman**: the agent's real proxy (`shturman_agent::proxy::Proxy`)
//!   fed a ClusterIP route as the agent feeds it (the MQTT payload), its
//!   control task on a 2-worker runtime like the agent's
//!   (`edge-agent/src/main.rs`) and its data plane on its own threads, one
//!   per core as in the agent,
//!   default policy (least connections by two random choices), listening on
//!   a cluster IP in `127/8` (no interface to manage).
//! - **HAProxy**: Debian's `haproxy`, started here with a generated config
//!   (`mode tcp`, `balance leastconn`, the same backends, default
//!   `nbthread` = one thread per core = 2 here, no stats, `-db`: not a
//!   daemon), on a free loopback port; killed at the end.
//! - **Load**: `wrk -t2 -c32 -d10s --latency` against each of direct (the
//!   first backend: the baseline), HAProxy and Shturman, interleaved, 5
//!   rounds (the order rotates each round); medians reported, with each
//!   proxy's requests per CPU-second (steadier on a shared machine).
//!
//! Goal: Shturman's requests/s ≥ 1.0× HAProxy's, and its added p99 (via −
//! direct) no worse than HAProxy's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use shturman_agent::proxy::{Proxy, ProxyConfig};
use shturman_api::core::{Protocol, ServiceType, SessionAffinity};
use shturman_api::intstr::IntOrString;
use shturman_api::wire::{RouteEndpoint, RoutePort, ServiceRoute, ServiceTopic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::procfs;
use crate::report::{Report, Row};

const BACKENDS: usize = 3;
const ROUNDS: usize = 5;
pub const WRK_THREADS: u32 = 2;
pub const WRK_CONNS: u32 = 32;
const WRK_SECS: u64 = 10;
/// The proxy's threads (its control runtime here, and its data-plane
/// threads) carry this name, so their CPU time can be summed.
const PROXY_THREAD: &str = shturman_agent::proxy::workers::THREAD_NAME;
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n";

/// One wrk run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// CPU used by the proxy during the run, % of one core (0 for direct).
    proxy_cpu: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Direct,
    Haproxy,
    Shturman,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Haproxy => "haproxy",
            Target::Shturman => "shturman",
        }
    }
}

/// Kills HAProxy when dropped.
struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn run(report: &mut Report) -> Result<()> {
    eprintln!(
        "proxy: Shturman's Service proxy next to HAProxy (wrk -t{WRK_THREADS} -c{WRK_CONNS} -d{WRK_SECS}s)"
    );
    for tool in ["wrk", "haproxy"] {
        if which(tool).is_none() {
            bail!("proxy: `{tool}` not found (scripts/setup.sh installs it)");
        }
    }

    // Backends on their own runtime, the same for every target.
    let backend_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-backend")
        .enable_all()
        .build()?;
    let mut backends = Vec::new();
    for _ in 0..BACKENDS {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.set_nonblocking(true)?;
        backends.push(l.local_addr()?);
        backend_rt.spawn(serve_backend(l));
    }

    // Shturman's proxy on a 2-worker runtime, as in the agent.
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(PROXY_THREAD)
        .enable_all()
        .build()?;
    let cluster = SocketAddr::from(([127, 78, 0, 1], free_port([127, 78, 0, 1])?));
    let proxy = {
        let _in = proxy_rt.enter();
        Proxy::start(ProxyConfig::default())
    };
    let r = route(cluster, &backends);
    proxy.on_message(
        &ServiceTopic::Route {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        },
        &serde_json::to_vec(&r)?,
    );
    wait_for("the Shturman proxy listening", || {
        proxy.listening().contains(&cluster)
    })
    .await?;

    // HAProxy.
    let ha_addr = SocketAddr::from(([127, 0, 0, 1], free_port([127, 0, 0, 1])?));
    let haproxy = start_haproxy(ha_addr, &backends)?;
    let ha_pid = haproxy.child.id();
    wait_for_connect(ha_addr)
        .await
        .context("HAProxy did not start listening")?;
    eprintln!(
        "  backends {backends:?}; HAProxy {} pid {ha_pid} on {ha_addr}; Shturman proxy on {cluster}",
        haproxy_version()
    );

    let targets = [
        (Target::Direct, backends[0]),
        (Target::Haproxy, ha_addr),
        (Target::Shturman, cluster),
    ];
    // Warm-up: a short untimed run through each.
    for (t, addr) in targets {
        wrk(addr, 2)
            .await
            .with_context(|| format!("warm-up of {}", t.name()))?;
    }
    let hz = procfs::clock_ticks();
    let mut samples: BTreeMap<Target, Vec<Sample>> = BTreeMap::new();
    for round in 0..ROUNDS {
        for i in 0..targets.len() {
            let (t, addr) = targets[(i + round) % targets.len()];
            let cpu0 = proxy_cpu_ticks(t, ha_pid);
            let at0 = Instant::now();
            let mut s = wrk(addr, WRK_SECS)
                .await
                .with_context(|| format!("wrk through {}", t.name()))?;
            let secs = at0.elapsed().as_secs_f64();
            let cpu1 = proxy_cpu_ticks(t, ha_pid);
            #[allow(clippy::cast_precision_loss)]
            {
                s.proxy_cpu = (cpu1.saturating_sub(cpu0) as f64 / hz) / secs * 100.0;
            }
            eprintln!(
                "  round {} {:>8}: {:>9.0} req/s, p50 {:.3} ms, p99 {:.3} ms, errors {}, proxy CPU {:.0}%",
                round + 1,
                t.name(),
                s.rps,
                s.p50_ms,
                s.p99_ms,
                s.errors,
                s.proxy_cpu
            );
            samples.entry(t).or_default().push(s);
        }
    }
    drop(haproxy);
    proxy.shutdown();
    drop(proxy);
    proxy_rt.shutdown_background();
    backend_rt.shutdown_background();

    let med = |t: Target, f: fn(&Sample) -> f64| median(samples[&t].iter().map(f).collect());
    let (d_rps, h_rps, s_rps) = (
        med(Target::Direct, |s| s.rps),
        med(Target::Haproxy, |s| s.rps),
        med(Target::Shturman, |s| s.rps),
    );
    let (d_p99, h_p99, s_p99) = (
        med(Target::Direct, |s| s.p99_ms),
        med(Target::Haproxy, |s| s.p99_ms),
        med(Target::Shturman, |s| s.p99_ms),
    );
    let (h_cpu, s_cpu) = (
        med(Target::Haproxy, |s| s.proxy_cpu),
        med(Target::Shturman, |s| s.proxy_cpu),
    );
    // Requests per second of the proxy's own CPU: steadier than requests/s
    // on a shared machine, where wrk, the backends and the proxy take turns
    // on the same cores.
    let per_cpu = |s: &Sample| {
        if s.proxy_cpu > 0.0 {
            s.rps / (s.proxy_cpu / 100.0)
        } else {
            f64::NAN
        }
    };
    let (h_eff, s_eff) = (med(Target::Haproxy, per_cpu), med(Target::Shturman, per_cpu));
    let errors: u64 = samples.values().flatten().map(|s| s.errors).sum();
    let (h_add, s_add) = (h_p99 - d_p99, s_p99 - d_p99);
    let rps_met = s_rps >= h_rps;
    let p99_met = s_add <= h_add;
    eprintln!(
        "  medians of {ROUNDS}: direct {d_rps:.0} req/s p99 {d_p99:.3} ms; HAProxy {h_rps:.0} req/s p99 {h_p99:.3} ms (+{h_add:.3}), CPU {h_cpu:.0}%; \
         Shturman {s_rps:.0} req/s p99 {s_p99:.3} ms (+{s_add:.3}), CPU {s_cpu:.0}%; Shturman/HAProxy rps {:.2}x: {}; added p99 {}; socket errors {errors}",
        s_rps / h_rps,
        if rps_met { "met" } else { "missed" },
        if p99_met { "met" } else { "missed" },
    );
    let anchor = format!("HAProxy {} tcp leastconn, 2 threads", haproxy_version_short());
    let load = format!("wrk -t{WRK_THREADS} -c{WRK_CONNS} -d{WRK_SECS}s, median of {ROUNDS}");
    report.push(
        Row {
            scenario: "proxy".into(),
            metric: format!("requests/s via the proxy ({load})"),
            shturman: s_rps,
            anchor_name: anchor.clone(),
            anchor: Some(h_rps),
            goal: format!(">= 1.0x HAProxy: {}", if rps_met { "met" } else { "missed" }),
            higher_is_better: true,
        }
        .check(crate::report::Goal::RatioAtLeast(1.0)),
    );
    report.push(
        Row {
            scenario: "proxy".into(),
            metric: "added p99 latency, ms (via - direct)".into(),
            shturman: s_add,
            anchor_name: anchor.clone(),
            anchor: Some(h_add),
            goal: format!("<= HAProxy's: {}", if p99_met { "met" } else { "missed" }),
            higher_is_better: false,
        }
        .check(crate::report::Goal::AtMostAnchorPlus(0.0)),
    );
    report.push(Row {
        scenario: "proxy".into(),
        metric: "p99 latency via the proxy, ms".into(),
        shturman: s_p99,
        anchor_name: anchor.clone(),
        anchor: Some(h_p99),
        goal: "informational".into(),
        higher_is_better: false,
    });
    report.push(Row {
        scenario: "proxy".into(),
        metric: "requests per CPU-second of the proxy".into(),
        shturman: s_eff,
        anchor_name: anchor.clone(),
        anchor: Some(h_eff),
        goal: "informational".into(),
        higher_is_better: true,
    });
    report.push(Row {
        scenario: "proxy".into(),
        metric: "proxy CPU during the run, % of one core".into(),
        shturman: s_cpu,
        anchor_name: anchor,
        anchor: Some(h_cpu),
        goal: "informational".into(),
        higher_is_better: false,
    });
    report.push(Row {
        scenario: "proxy".into(),
        metric: format!("direct to one backend: requests/s (p99 {d_p99:.3} ms)"),
        shturman: d_rps,
        anchor_name: "-".into(),
        anchor: None,
        goal: "informational (baseline)".into(),
        higher_is_better: true,
    });
    if errors > 0 {
        eprintln!("  warning: wrk reported {errors} socket errors or non-2xx answers in total");
    }
    Ok(())
}

/// An HTTP/1.1 keep-alive responder: one fixed answer per request head
/// (requests without bodies, as wrk's GETs), pipelining included.
async fn serve_backend(l: std::net::TcpListener) {
    let Ok(l) = TcpListener::from_std(l) else { return };
    loop {
        let Ok((s, _)) = l.accept().await else { return };
        tokio::spawn(serve_conn(s));
    }
}

async fn serve_conn(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    let mut have = 0usize;
    let mut out = Vec::with_capacity(RESPONSE.len() * 4);
    loop {
        match s.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
        let mut start = 0;
        while let Some(end) = find_head_end(&buf[start..have]) {
            out.extend_from_slice(RESPONSE);
            start += end;
        }
        buf.copy_within(start..have, 0);
        have -= start;
        if have == buf.len() {
            return; // a head larger than 16 KiB: not ours
        }
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// The length of the first request head in `b`, through its blank line.
fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn route(cluster: SocketAddr, backends: &[SocketAddr]) -> ServiceRoute {
    ServiceRoute {
        namespace: "bench".into(),
        name: "web".into(),
        uid: "bench-proxy".into(),
        revision: 1,
        endpoints_revision: 1,
        type_: ServiceType::ClusterIP,
        cluster_ip: Some(cluster.ip().to_string()),
        session_affinity: SessionAffinity::None,
        client_ip_timeout_seconds: None,
        ports: vec![RoutePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: i32::from(cluster.port()),
            node_port: None,
            target_port: IntOrString::String("http".into()),
        }],
        endpoints: backends
            .iter()
            .map(|b| RouteEndpoint {
                ip: b.ip().to_string(),
                ready: true,
                ports: BTreeMap::from([("http".to_string(), i32::from(b.port()))]),
                ..RouteEndpoint::default()
            })
            .collect(),
    }
}

fn start_haproxy(addr: SocketAddr, backends: &[SocketAddr]) -> Result<Haproxy> {
    let dir = tempfile::tempdir()?;
    let mut cfg = String::from(
        "global\n  maxconn 4096\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\n",
    );
    cfg.push_str(&format!("listen bench\n  bind {addr}\n  balance leastconn\n"));
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!("  server b{i} {b}\n"));
    }
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-q")
        .arg("-f")
        .arg(&path)
        .status()?;
    if !check.success() {
        bail!("haproxy rejected the generated config {}", path.display());
    }
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting haproxy")?;
    Ok(Haproxy { child, _dir: dir })
}

fn haproxy_version() -> String {
    Command::new("haproxy")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default()
}

fn haproxy_version_short() -> String {
    haproxy_version()
        .split_whitespace()
        .nth(2)
        .unwrap_or("?")
        .to_string()
}

/// CPU ticks used so far by the proxy under test: HAProxy's process, or the
/// threads of Shturman's proxy runtime in this process.
fn proxy_cpu_ticks(t: Target, ha_pid: u32) -> u64 {
    match t {
        Target::Direct => 0,
        Target::Haproxy => procfs::cpu_sample(ha_pid).map_or(0, |s| s.ticks),
        Target::Shturman => {
            let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
                return 0;
            };
            dir.flatten()
                .filter_map(|e| {
                    // The task's own stat: `/proc/TID/stat` is the whole process's.
                    let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
                    if comm.trim() != PROXY_THREAD {
                        return None;
                    }
                    let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
                })
                .sum()
        }
    }
}

/// Runs wrk against `addr` for `secs` and parses its report.
pub async fn wrk(addr: SocketAddr, secs: u64) -> Result<Sample> {
    let out = tokio::time::timeout(
        Duration::from_secs(secs + 30),
        tokio::process::Command::new("wrk")
            .arg(format!("-t{WRK_THREADS}"))
            .arg(format!("-c{WRK_CONNS}"))
            .arg(format!("-d{secs}s"))
            .arg("--timeout")
            .arg("5s")
            .arg("--latency")
            .arg(format!("http://{addr}/"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("wrk did not finish in time")??;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("cannot parse wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Sample> {
    let mut s = Sample::default();
    let (mut p50, mut p99, mut rps) = (None, None, None);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => p50 = parse_ms(v),
            ["99%", v] => p99 = parse_ms(v),
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["Socket", "errors:", rest @ ..] => {
                s.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => s.errors += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    s.p50_ms = p50?;
    s.p99_ms = p99?;
    s.rps = rps?;
    Some(s)
}

/// wrk's durations: `635.00us`, `1.23ms`, `2.00s`, `1.00m`.
fn parse_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => return None,
    })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

fn free_port(ip: [u8; 4]) -> Result<u16> {
    Ok(std::net::TcpListener::bind(SocketAddr::from((ip, 0)))?
        .local_addr()?
        .port())
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| Path::is_file(f))
    })
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn wait_for_connect(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk() {
        let out = "Running 10s test @ http://127.0.0.1:1/\n  2 threads and 32 connections\n  Latency Distribution\n     50%  635.00us\n     75%    1.00ms\n     90%    1.50ms\n     99%    2.34ms\n  123 requests in 10.00s, 1.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  12345.67\n";
        let s = parse_wrk(out).unwrap();
        assert!((s.p50_ms - 0.635).abs() < 1e-9);
        assert!((s.p99_ms - 2.34).abs() < 1e-9);
        assert!((s.rps - 12345.67).abs() < 1e-9);
        assert_eq!(s.errors, 3);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET"), Some(27));
        assert!((median(vec![3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
    }
}
