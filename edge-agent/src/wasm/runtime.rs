//! [`WasmRuntime`]: the agent's [`Runtime`] for Wasm pods. Each container is
//! supervised by a task on the runtime's own tokio executor (never the
//! agent's): fetch and compile its module, resolve env and volumes, run an
//! instance, record how it ended, and restart it per `restartPolicy` with
//! kubelet's back-off. `status` assembles the pod's status from those records.
//!
//! Probes ([`crate::probe`]): each run of a container with probes gets a
//! probe task; its view gives the container's `started` and `ready`, and a
//! failed liveness or startup probe kills the instance, which then restarts
//! through the same back-off path as a crash (last state `terminated`,
//! reason `Error`, exit code 137, the probe's message). `httpGet` and
//! `tcpSocket` checks of an HTTP container go to the pod's IP (where it
//! listens); a command container cannot listen (no sockets), so its checks
//! go to the node's loopback, [`PROBE_HOST`]. A probe naming a `host` goes
//! there.
//! `exec` probes cannot run in a Wasm instance: they are accepted (as
//! Kubernetes would) and every check fails with [`EXEC_UNSUPPORTED`].
//!
//! Pod IPs ([`crate::podip`]): with `--pod-cidr` every Wasm pod gets its own
//! address from it (released when the pod stops), else the node's
//! InternalIP; `status` reports it as `podIP`/`podIPs`.
//!
//! HTTP pods ([`super::http`]): a container whose component exports
//! `wasi:http/incoming-handler` is served on `<pod IP>:<its first TCP
//! containerPort>` instead of run. It waits with `CreateContainerConfigError`
//! without such a port (or with a bad `shturman.io/allow-outbound`), with
//! [`PORT_CONFLICT`] while the address and port are taken (pods share the
//! node's IP without `--pod-cidr`). It is `running` while the listener is
//! up and ready through its readiness probe, or as soon as it listens
//! without one. A failed liveness probe closes the listener and serves
//! again after the restart back-off, as a crash would.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shturman_api::core::pod_status::PodIp;
use shturman_api::core::{Container, ContainerState, ContainerStatus, PodStatus, Protocol, RestartPolicy};
use shturman_api::meta::Time;
use shturman_api::wire::DesiredPod;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::podip::{self, NetworkSettings, PodIpAllocator, Ports};
use crate::probe::check::{Target, Unsupported};
use crate::probe::{self, ProbeSet, ProbeView};

use super::engine::{Compiled, EngineOptions, RunSpec, WasmEngine};
use super::http::{self, HttpOptions, OutboundPolicy, ServeSpec};
use super::lifecycle::{self, Backoff, Exit};
use super::limits::Limits;
use super::logs::{LogLimits, LogStore};
use super::modules::{LoadError, ModuleCache};
use super::reference::{self, ModuleRef};
use super::{env, volumes};
use crate::plan::PodKey;
use crate::runtime::{PodClass, Runtime, RuntimeError, WASMTIME};

/// Settings of the Wasm runtime.
#[derive(Clone, Debug)]
pub struct WasmOptions {
    /// The agent's data dir: modules under `wasm/modules`, pod volumes under
    /// `wasm/pods`, logs under `logs`.
    pub data_dir: PathBuf,
    /// Restart back-off (kubelet's 10 s doubling to 5 min by default).
    pub backoff: Backoff,
    pub engine: EngineOptions,
    pub logs: LogLimits,
    /// Executor threads (default: the number of cores).
    pub worker_threads: Option<usize>,
    /// Raised whenever a container's status changes (see [`crate::runtime::Runtimes::changed`]).
    pub changed: Arc<tokio::sync::Notify>,
    /// Pod IPs and the outbound allow-list (`--pod-cidr`, `--node-ip`, `--service-cidr`).
    pub network: NetworkSettings,
    /// How HTTP pods are served.
    pub http: HttpOptions,
    /// Registries whose Wasm artifacts are pulled over plain http
    /// (`--insecure-registries`; loopback registries always are).
    pub insecure_registries: Vec<String>,
}

pub use super::lifecycle::{BACKOFF_BASE_ENV, backoff_with_base};

impl WasmOptions {
    /// Defaults, but for the back-off's base from [`BACKOFF_BASE_ENV`] when set.
    pub fn new(data_dir: impl Into<PathBuf>) -> WasmOptions {
        WasmOptions {
            data_dir: data_dir.into(),
            backoff: backoff_with_base(std::env::var(BACKOFF_BASE_ENV).ok().as_deref()),
            engine: EngineOptions::default(),
            logs: LogLimits::default(),
            worker_threads: None,
            changed: Arc::default(),
            network: NetworkSettings::default(),
            http: HttpOptions::default(),
            insecure_registries: Vec::new(),
        }
    }
}

/// Why every `exec` probe of a Wasm container fails.
pub const EXEC_UNSUPPORTED: &str = "exec probes are not supported for Wasm containers";

/// Where probes of command (non-HTTP) Wasm containers connect: the node's
/// loopback (they cannot listen themselves; a probe checks the node).
pub const PROBE_HOST: &str = "127.0.0.1";

/// Waiting reason of an HTTP pod whose address and port are taken.
pub const PORT_CONFLICT: &str = "PortConflict";

/// The runtime could not be created.
#[derive(Debug, thiserror::Error)]
#[error("starting the Wasm runtime: {0}")]
pub struct WasmError(String);

/// One container's record, shared by its supervisor and `status`.
#[derive(Debug, Default)]
struct Record {
    status: ContainerStatus,
    /// Finished for good: it will not be restarted.
    done: bool,
    /// The current run's probe view, while a run with probes lasts.
    probes: Option<watch::Receiver<ProbeView>>,
}

impl Record {
    /// The status, with `started` and `ready` from the probes while they run.
    fn status(&self) -> ContainerStatus {
        let mut s = self.status.clone();
        if let Some(rx) = &self.probes {
            let v = rx.borrow();
            s.started = Some(v.started);
            s.ready = v.ready;
        }
        s
    }
}

type Shared = Arc<Mutex<Record>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A pod this runtime runs.
struct PodRun {
    uid: String,
    /// Its IP (from `--pod-cidr`, else the node's).
    ip: IpAddr,
    dir: PathBuf,
    start_time: Time,
    /// Readiness last reported and since when (a stable transition time).
    ready: Mutex<(bool, Time)>,
    records: Vec<Shared>,
    cancel: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct Inner {
    opts: WasmOptions,
    engine: Arc<WasmEngine>,
    modules: ModuleCache,
    logs: LogStore,
    exec: tokio::runtime::Handle,
    /// The node's InternalIP: every pod's IP without `--pod-cidr`.
    node_ip: IpAddr,
    net: Mutex<Net>,
}

/// Who has which address and port.
#[derive(Debug, Default)]
struct Net {
    /// `--pod-cidr`'s addresses, when set.
    ips: Option<PodIpAllocator>,
    ports: Ports,
    /// Pod IPs this runtime added to the host (removed when released).
    added: HashSet<IpAddr>,
}

/// The Wasm runtime (wasmtime, in-process).
pub struct WasmRuntime {
    inner: Arc<Inner>,
    pods: Mutex<HashMap<PodKey, PodRun>>,
    /// Owns the executor; shut down in the background on drop.
    executor: Option<tokio::runtime::Runtime>,
}

impl WasmRuntime {
    /// Creates the engine, its epoch ticker and the executor.
    pub fn new(opts: WasmOptions) -> Result<WasmRuntime, WasmError> {
        let threads = opts
            .worker_threads
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1)
            .max(1);
        let executor = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasm-exec")
            .enable_all()
            .build()
            .map_err(|e| WasmError(format!("wasm executor: {e}")))?;
        let ips = opts
            .network
            .pod_cidr
            .map(PodIpAllocator::new)
            .transpose()
            .map_err(|e| WasmError(e.to_string()))?;
        let node_ip = opts.network.node_ip.unwrap_or_else(|| {
            crate::facts::internal_ip()
                .parse()
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        });
        let engine = Arc::new(WasmEngine::new(&opts.engine).map_err(WasmError)?);
        let modules = ModuleCache::new(opts.data_dir.join("wasm").join("modules"), engine.clone())
            .with_insecure_registries(opts.insecure_registries.clone());
        let logs = LogStore::new(opts.data_dir.join("logs"), opts.logs.clone());
        Ok(WasmRuntime {
            inner: Arc::new(Inner {
                opts,
                engine,
                modules,
                logs,
                exec: executor.handle().clone(),
                node_ip,
                net: Mutex::new(Net {
                    ips,
                    ..Net::default()
                }),
            }),
            pods: Mutex::default(),
            executor: Some(executor),
        })
    }

    /// The containers' logs (tail, previous, follow).
    pub fn logs(&self) -> LogStore {
        self.inner.logs.clone()
    }

    /// How many distinct modules are compiled and cached in memory.
    pub fn compiled_modules(&self) -> usize {
        self.inner.modules.compiled_count()
    }
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        for (_, run) in lock(&self.pods).drain() {
            run.task.abort();
        }
        for ip in lock(&self.inner.net).added.drain() {
            podip::host::remove(ip);
        }
        if let Some(rt) = self.executor.take() {
            rt.shutdown_background();
        }
    }
}

#[async_trait::async_trait]
impl Runtime for WasmRuntime {
    fn name(&self) -> &'static str {
        WASMTIME
    }

    fn class(&self) -> PodClass {
        PodClass::Wasm
    }

    fn logs(&self) -> Option<LogStore> {
        Some(self.inner.logs.clone())
    }

    async fn start(&self, pod: &DesiredPod) -> Result<(), RuntimeError> {
        let key = PodKey::of(&pod.pod);
        let uid = pod.pod.metadata.uid.clone().unwrap_or_default();
        let refs = pod
            .pod
            .spec
            .containers
            .iter()
            .map(|c| reference::parse(&c.image))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RuntimeError {
                reason: "InvalidImageName".into(),
                message: e.to_string(),
            })?;
        let existing = lock(&self.pods).get(&key).map(|r| r.uid.clone());
        match existing {
            Some(u) if u == uid => return Ok(()),
            Some(_) => self.stop(&key, Duration::ZERO).await?,
            None => {}
        }
        let ip = {
            let mut net = lock(&self.inner.net);
            match net.ips.as_mut() {
                Some(ips) => ips.allocate(&key.to_string()).map_err(|e| RuntimeError {
                    reason: "FailedCreatePodSandBox".into(),
                    message: e.to_string(),
                })?,
                None => self.inner.node_ip,
            }
        };
        let dir = self
            .inner
            .opts
            .data_dir
            .join("wasm")
            .join("pods")
            .join(super::logs::pod_dir_name(&key, &uid));
        let records: Vec<Shared> = pod
            .pod
            .spec
            .containers
            .iter()
            .map(|c| {
                Arc::new(Mutex::new(Record {
                    status: ContainerStatus {
                        name: c.name.clone(),
                        image: c.image.clone(),
                        state: Some(ContainerState::waiting(lifecycle::CONTAINER_CREATING, None)),
                        ..ContainerStatus::default()
                    },
                    done: false,
                    probes: None,
                }))
            })
            .collect();
        let (cancel, cancel_rx) = watch::channel(false);
        let task = self.inner.exec.spawn(run_pod(
            self.inner.clone(),
            Arc::new(pod.clone()),
            key.clone(),
            dir.clone(),
            ip,
            refs,
            records.clone(),
            cancel_rx,
        ));
        lock(&self.pods).insert(
            key,
            PodRun {
                uid,
                ip,
                dir,
                start_time: now(),
                ready: Mutex::new((false, now())),
                records,
                cancel,
                task,
            },
        );
        Ok(())
    }

    async fn stop(&self, key: &PodKey, grace: Duration) -> Result<(), RuntimeError> {
        let Some(mut run) = lock(&self.pods).remove(key) else {
            return Ok(());
        };
        // WASI has no signals: a stop interrupts the instance at its next
        // epoch tick or host call; `grace` bounds how long we wait for that.
        let _ = run.cancel.send(true);
        if tokio::time::timeout(grace.max(Duration::from_secs(1)), &mut run.task)
            .await
            .is_err()
        {
            tracing::warn!(pod = %key, "wasm pod did not stop within its grace period; aborting");
            run.task.abort();
        }
        // Its address and ports are free again; an address added to the
        // host for it goes.
        let owner = key.to_string();
        let remove_ip = {
            let mut net = lock(&self.inner.net);
            net.ports.release_all(&owner);
            let released = net.ips.as_mut().and_then(|ips| ips.release(&owner));
            released.filter(|ip| net.added.remove(ip))
        };
        let (logs, key, dir) = (self.inner.logs.clone(), key.clone(), run.dir);
        let _ = self
            .inner
            .exec
            .spawn_blocking(move || {
                logs.remove_pod(&key);
                let _ = std::fs::remove_dir_all(dir);
                if let Some(ip) = remove_ip {
                    podip::host::remove(ip);
                }
            })
            .await;
        Ok(())
    }

    async fn status(&self, key: &PodKey) -> Option<PodStatus> {
        let pods = lock(&self.pods);
        let run = pods.get(key)?;
        let views: Vec<(ContainerStatus, bool)> = run
            .records
            .iter()
            .map(|r| {
                let r = lock(r);
                (r.status(), r.done)
            })
            .collect();
        let statuses: Vec<ContainerStatus> = views.iter().map(|(s, _)| s.clone()).collect();
        let ready_changed = {
            let mut r = lock(&run.ready);
            let ready = lifecycle::all_ready(&statuses);
            if r.0 != ready {
                *r = (ready, now());
            }
            r.1
        };
        Some(PodStatus {
            phase: Some(lifecycle::phase(&views)),
            conditions: lifecycle::conditions(&statuses, run.start_time, ready_changed),
            start_time: Some(run.start_time),
            container_statuses: statuses,
            pod_ip: Some(run.ip.to_string()),
            pod_ips: vec![PodIp {
                ip: run.ip.to_string(),
            }],
            ..PodStatus::default()
        })
    }
}

fn now() -> Time {
    Time(chrono::Utc::now())
}

/// Resolves once the pod is told to stop (or its runtime is gone).
async fn cancelled(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Sleeps `d`; false when cancelled first.
async fn pause(d: Duration, cancel: &watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = cancelled(cancel.clone()) => false,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_pod(
    inner: Arc<Inner>,
    pod: Arc<DesiredPod>,
    key: PodKey,
    dir: PathBuf,
    ip: IpAddr,
    refs: Vec<ModuleRef>,
    records: Vec<Shared>,
    cancel: watch::Receiver<bool>,
) {
    let (d, p) = (dir.clone(), pod.clone());
    let made = tokio::task::spawn_blocking(move || volumes::materialize(&d, &p))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    if let Err(message) = made {
        for r in &records {
            lock(r).status.state = Some(ContainerState::waiting(
                lifecycle::CREATE_CONTAINER_CONFIG_ERROR,
                Some(message.clone()),
            ));
        }
        inner.opts.changed.notify_one();
        return;
    }
    let mut set = JoinSet::new();
    for ((c, r), rec) in pod.pod.spec.containers.iter().zip(refs).zip(records) {
        set.spawn(supervise(
            inner.clone(),
            pod.clone(),
            key.clone(),
            dir.clone(),
            ip,
            c.clone(),
            r,
            rec,
            cancel.clone(),
        ));
    }
    while set.join_next().await.is_some() {}
}

/// Runs one container until it is done for good or the pod stops.
#[allow(clippy::too_many_arguments)]
async fn supervise(
    inner: Arc<Inner>,
    pod: Arc<DesiredPod>,
    key: PodKey,
    dir: PathBuf,
    ip: IpAddr,
    c: Container,
    r: ModuleRef,
    rec: Shared,
    cancel: watch::Receiver<bool>,
) {
    let policy = pod.pod.spec.restart_policy.unwrap_or(RestartPolicy::Always);
    let backoff = inner.opts.backoff;
    let uid = pod.pod.metadata.uid.clone().unwrap_or_default();
    let (mut crashes, mut setup_failures) = (0u32, 0u32);
    let changed = inner.opts.changed.clone();
    let set_state = |state: ContainerState| {
        lock(&rec).status.state = Some(state);
        changed.notify_one();
    };
    loop {
        // Fetch and compile; failures wait with back-off, as kubelet's pulls.
        let prepared = tokio::select! {
            p = prepare(&inner, &pod, &dir, &c, &r) => p,
            () = cancelled(cancel.clone()) => return,
        };
        let (loaded, spec_parts) = match prepared {
            Ok(p) => p,
            Err((reason, message)) => {
                setup_failures = setup_failures.saturating_add(1);
                let reason = if reason == lifecycle::ERR_IMAGE_PULL && setup_failures > 1 {
                    lifecycle::IMAGE_PULL_BACK_OFF
                } else {
                    reason
                };
                tracing::warn!(pod = %key, container = %c.name, %reason, %message, "wasm container not started");
                set_state(ContainerState::waiting(reason, Some(message)));
                if !pause(backoff.delay(setup_failures), &cancel).await {
                    return;
                }
                continue;
            }
        };
        // An HTTP component listens before it counts as running.
        let http = match &loaded.compiled {
            Compiled::Http(pre) => match listen(&inner, &pod, &key, ip, &c).await {
                Ok((listener, port, outbound)) => Some((pre.clone(), listener, port, outbound)),
                Err((reason, message)) => {
                    setup_failures = setup_failures.saturating_add(1);
                    tracing::warn!(pod = %key, container = %c.name, %reason, %message, "wasm HTTP container not serving");
                    set_state(ContainerState::waiting(reason, Some(message)));
                    if !pause(backoff.delay(setup_failures), &cancel).await {
                        return;
                    }
                    continue;
                }
            },
            _ => None,
        };
        setup_failures = 0;
        let output = inner.logs.open_run(&key, &uid, &c.name);
        let sink = output.stream(super::logs::Stream::Stdout);
        let started_at = now();
        // No probes, no task: started and ready while it runs.
        let mut probes = probe::run::spawn(
            ProbeSet::of(&c),
            Target {
                host: if http.is_some() {
                    ip.to_string()
                } else {
                    PROBE_HOST.into()
                },
                container: c.name.clone(),
                exec: Arc::new(Unsupported(EXEC_UNSUPPORTED)),
            },
            changed.clone(),
            &key.to_string(),
        );
        {
            let mut g = lock(&rec);
            g.status.state = Some(ContainerState::running(Some(started_at)));
            g.status.image_id = Some(format!("sha256:{}", loaded.digest));
            g.status.container_id = Some(format!("wasm://{uid}/{}", c.name));
            let view = probes
                .as_ref()
                .map_or(ProbeView::NO_PROBES, probe::run::ProbeRun::view);
            g.status.ready = view.ready;
            g.status.started = Some(view.started);
            g.probes = probes.as_ref().map(probe::run::ProbeRun::subscribe);
        }
        changed.notify_one();
        let (argv, env, preopens) = spec_parts;
        let began = Instant::now();
        let exit = match http {
            Some((pre, listener, port, outbound)) => {
                let spec = ServeSpec {
                    pre,
                    argv,
                    env,
                    preopens,
                    limits: Limits::of(&c),
                    output,
                    outbound,
                    options: inner.opts.http.clone(),
                    tick: inner.engine.tick(),
                    pool: inner.engine.http_slots(),
                };
                tracing::info!(pod = %key, container = %c.name, address = %std::net::SocketAddr::new(ip, port), "wasm HTTP container serving");
                let exit = tokio::select! {
                    e = http::serve(listener, spec, cancel.clone()) => Ok(e),
                    r = probe::run::restart_requested(probes.as_mut()) => {
                        sink.finish();
                        Ok(Exit::Unhealthy(r.message))
                    }
                };
                lock(&inner.net).ports.release(ip, port, &key.to_string());
                exit
            }
            None => {
                let spec = RunSpec {
                    argv,
                    env,
                    preopens,
                    limits: Limits::of(&c),
                    output,
                };
                tokio::select! {
                    e = inner.engine.run(&loaded.compiled, spec) => e,
                    () = cancelled(cancel.clone()) => Ok(Exit::Killed),
                    r = probe::run::restart_requested(probes.as_mut()) => {
                        // Dropping the run stops the instance; keep its last partial line.
                        sink.finish();
                        Ok(Exit::Unhealthy(r.message))
                    }
                }
            }
        };
        // The run is over: so is its probing (not running: neither started nor ready).
        drop(probes);
        {
            let mut g = lock(&rec);
            g.probes = None;
            g.status.ready = false;
            g.status.started = Some(false);
        }
        let exit = match exit {
            Ok(exit) => exit,
            Err(message) => {
                // The instance could not be set up (e.g. a preopen failed).
                setup_failures = setup_failures.saturating_add(1);
                lock(&rec).status.ready = false;
                set_state(ContainerState::waiting(
                    lifecycle::CREATE_CONTAINER_ERROR,
                    Some(message),
                ));
                if !pause(backoff.delay(setup_failures), &cancel).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(pod = %key, container = %c.name, ?exit, "wasm container ended");
        let terminated = exit.terminated(Some(started_at), Some(now()));
        let restart = should_continue(policy, &exit, &cancel);
        {
            let mut g = lock(&rec);
            g.status.ready = false;
            g.status.started = Some(false);
            g.status.state = Some(terminated.clone());
            g.done = !restart;
        }
        changed.notify_one();
        if !restart {
            return;
        }
        crashes = backoff.next_crashes(crashes, began.elapsed());
        let delay = backoff.delay(crashes);
        {
            let mut g = lock(&rec);
            g.status.last_state = Some(terminated);
            g.status.state = Some(lifecycle::back_off_state(delay, &c.name, &key.name));
        }
        changed.notify_one();
        if !pause(delay, &cancel).await {
            return;
        }
        {
            let mut g = lock(&rec);
            g.status.restart_count = g.status.restart_count.saturating_add(1);
        }
        changed.notify_one();
    }
}

fn should_continue(policy: RestartPolicy, exit: &Exit, cancel: &watch::Receiver<bool>) -> bool {
    !*cancel.borrow() && lifecycle::should_restart(policy, exit)
}

type Parts = (Vec<String>, Vec<(String, String)>, Vec<volumes::Preopen>);

/// The port an HTTP container listens on: its first TCP `containerPort`.
pub fn http_port(c: &Container) -> Result<u16, String> {
    let port = c
        .ports
        .iter()
        .find(|p| p.protocol.unwrap_or_default() == Protocol::Tcp)
        .ok_or_else(|| {
            format!(
                "container {:?} is an HTTP component (it exports wasi:http/incoming-handler) and needs a TCP containerPort to listen on, e.g. ports: [{{containerPort: 8080}}]",
                c.name
            )
        })?;
    u16::try_from(port.container_port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("containerPort {} is not a port (1-65535)", port.container_port))
}

/// Makes an HTTP container's address local, claims its port and opens
/// its listener; or a waiting reason and message.
async fn listen(
    inner: &Inner,
    pod: &DesiredPod,
    key: &PodKey,
    ip: IpAddr,
    c: &Container,
) -> Result<(tokio::net::TcpListener, u16, OutboundPolicy), (&'static str, String)> {
    let config_error = |m: String| (lifecycle::CREATE_CONTAINER_CONFIG_ERROR, m);
    let port = http_port(c).map_err(config_error)?;
    let outbound = OutboundPolicy::of(&pod.pod.metadata.annotations, inner.opts.network.service_cidr)
        .map_err(config_error)?;
    let shared_ip = inner.opts.network.pod_cidr.is_none();
    let hint = if shared_ip {
        " (without --pod-cidr Wasm pods share the node's IP: give the agent a --pod-cidr so each pod gets its own)"
    } else {
        ""
    };
    let owner = key.to_string();
    lock(&inner.net)
        .ports
        .claim(ip, port, &owner)
        .map_err(|e| (PORT_CONFLICT, format!("{e}{hint}")))?;
    let release = || lock(&inner.net).ports.release(ip, port, &owner);
    if !shared_ip {
        let ensured = tokio::task::spawn_blocking(move || podip::host::ensure(ip))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match ensured {
            Ok(true) => {
                lock(&inner.net).added.insert(ip);
            }
            Ok(false) => {}
            Err(message) => {
                release();
                return Err((lifecycle::CREATE_CONTAINER_ERROR, message));
            }
        }
    }
    match http::bind(ip, port) {
        Ok(listener) => Ok((listener, port, outbound)),
        Err(e) => {
            release();
            Err(match e {
                http::BindError::InUse { .. } => (PORT_CONFLICT, format!("{e}{hint}")),
                http::BindError::Other { .. } => (lifecycle::CREATE_CONTAINER_ERROR, e.to_string()),
            })
        }
    }
}

/// Everything a run needs, or a waiting reason and message.
async fn prepare(
    inner: &Inner,
    pod: &Arc<DesiredPod>,
    dir: &std::path::Path,
    c: &Container,
    r: &ModuleRef,
) -> Result<(super::modules::Loaded, Parts), (&'static str, String)> {
    let pull = super::modules::Pull::of(pod, c);
    let loaded = inner.modules.load_for(r, pull).await.map_err(|e| match e {
        LoadError::Fetch(m) => (lifecycle::ERR_IMAGE_PULL, m),
        LoadError::Compile(m) => (lifecycle::CREATE_CONTAINER_ERROR, m),
    })?;
    let config_error = |m: String| (lifecycle::CREATE_CONTAINER_CONFIG_ERROR, m);
    let env = env::resolve(c, pod).map_err(|e| config_error(e.to_string()))?;
    let (d, p, cc) = (dir.to_path_buf(), pod.clone(), c.clone());
    let preopens = tokio::task::spawn_blocking(move || volumes::preopens(&d, &p, &cc))
        .await
        .map_err(|e| config_error(e.to_string()))?
        .map_err(|e| config_error(e.to_string()))?;
    Ok((loaded, (argv(c), env, preopens)))
}

/// `command` + `args`; without a command, argv[0] is the container's name.
pub fn argv(c: &Container) -> Vec<String> {
    let head = if c.command.is_empty() {
        vec![c.name.clone()]
    } else {
        c.command.clone()
    };
    head.into_iter().chain(c.args.iter().cloned()).collect()
}
