//! [`OciRuntime`]: the agent's [`Runtime`] for OCI pods, through containerd's
//! CRI service (kubelet's route). Per pod, a task on the runtime's own small
//! executor prepares the pod's files, runs (or, after an agent restart,
//! adopts) its sandbox, then supervises each container: pull its image per
//! `imagePullPolicy` (`ErrImagePull`, then `ImagePullBackOff`), create and
//! start it, poll its CRI status, map its exit to a `terminated` state and
//! restart it per `restartPolicy` with kubelet's back-off (`CrashLoopBackOff`).
//! Every change raises the runtimes' `changed` signal. A janitor removes
//! sandboxes labelled as this node's whose pod is no longer here.
//!
//! Probes ([`crate::probe`]), as kubelet runs them: each run of a container
//! with probes gets a probe task from the moment it is seen running.
//! `httpGet` and `tcpSocket` checks go to the pod's IP (from its sandbox)
//! unless the probe names a `host`; `exec` checks run through CRI
//! `ExecSync` ([`PodExec`]). The view gives the container's `started` and
//! `ready` (hence the pod's `Ready` and `ContainersReady`); a liveness or
//! startup probe failing past its threshold stops the container
//! (`StopContainer` with the probe's `terminationGracePeriodSeconds`, else
//! the pod's), which then restarts through the same back-off path as a
//! crash, its `lastState.terminated` carrying the probe's message.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_cri::v1::{ContainerState as CriState, PodSandboxConfig, PodSandboxState};
use shturman_api::core::container::ImagePullPolicy;
use shturman_api::core::pod_status::PodIp;
use shturman_api::core::{Container, ContainerState, ContainerStatus, PodStatus, RestartPolicy};
use shturman_api::meta::Time;
use shturman_api::wire::DesiredPod;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::client::{CriClient, CriError, Timeouts};
use super::files;
use super::image;
use super::logs::CriLogs;
use super::spec::{self, LABEL_CONTAINER, LABEL_NODE, LABEL_POD_UID, LABEL_SPEC_HASH, PodPaths};
use super::status::{self, Observed};
use crate::logs_service::LogSource;
use crate::plan::PodKey;
use crate::probe::check::{self as probe_check, Target};
use crate::probe::run::ProbeRun;
use crate::probe::{self, ProbeSet, ProbeView};
use crate::runtime::{CONTAINERD, PodClass, Runtime, RuntimeError};
use crate::wasm::lifecycle::{self, BACKOFF_BASE_ENV, Backoff, Exit, backoff_with_base};

/// Waiting reason when the sandbox (pause container, network) cannot be made.
pub const CREATE_POD_SANDBOX_ERROR: &str = "CreatePodSandboxError";
/// Waiting reason for an absent image with `imagePullPolicy: Never`.
pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
/// Grace given to containers of sandboxes the janitor removes.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// Settings of the OCI runtime.
#[derive(Clone, Debug)]
pub struct OciOptions {
    /// The agent's data dir: pod files under `oci/pods/<ns>_<name>_<uid>/`.
    pub data_dir: PathBuf,
    /// containerd's socket (its CRI service).
    pub socket: PathBuf,
    /// This node's name: the `io.shturman.node` label of its sandboxes.
    pub node: String,
    /// Restart and image-pull back-off (kubelet's 10 s doubling to 5 min).
    pub backoff: Backoff,
    /// How often a running container's status is polled.
    pub poll: Duration,
    pub timeouts: Timeouts,
    /// A container's log file is rotated past this size.
    pub log_max_bytes: u64,
    /// First janitor sweep after start, then every `janitor_every`.
    pub janitor_first: Duration,
    pub janitor_every: Duration,
    /// Raised whenever a container's status changes.
    pub changed: Arc<Notify>,
}

impl OciOptions {
    /// Defaults, with the back-off's base from [`BACKOFF_BASE_ENV`] when set.
    pub fn new(data_dir: &Path, socket: &Path, node: &str) -> OciOptions {
        OciOptions {
            data_dir: data_dir.to_path_buf(),
            socket: socket.to_path_buf(),
            node: node.to_string(),
            backoff: backoff_with_base(std::env::var(BACKOFF_BASE_ENV).ok().as_deref()),
            poll: Duration::from_secs(1),
            timeouts: Timeouts::default(),
            log_max_bytes: 10 << 20,
            janitor_first: Duration::from_secs(15),
            janitor_every: Duration::from_secs(60),
            changed: Arc::default(),
        }
    }
}

/// The runtime could not be created.
#[derive(Debug, thiserror::Error)]
#[error("starting the OCI runtime: {0}")]
pub struct OciError(String);

/// What a command run in a container (`ExecSync`) gave back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// One container's record, shared by its supervisor and `status`.
#[derive(Debug, Default)]
struct Record {
    status: ContainerStatus,
    /// Finished for good: it will not be restarted.
    done: bool,
    /// The CRI id of its current run.
    id: Option<String>,
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

/// The pod's network, from its sandbox.
#[derive(Debug, Default)]
struct Net {
    ip: Option<String>,
    ips: Vec<PodIp>,
}

/// A pod this runtime runs.
struct PodRun {
    uid: String,
    /// The pod's own `terminationGracePeriodSeconds`, when it sets one.
    grace: Option<Duration>,
    paths: PodPaths,
    start_time: Time,
    ready: Mutex<(bool, Time)>,
    records: Vec<Shared>,
    net: Arc<Mutex<Net>>,
    cancel: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct Inner {
    opts: OciOptions,
    client: CriClient,
    logs: CriLogs,
    /// `<data-dir>/oci/pods`, absolute (containerd needs absolute paths).
    root: PathBuf,
    pods: Mutex<HashMap<PodKey, PodRun>>,
}

impl Inner {
    fn changed(&self) {
        self.opts.changed.notify_one();
    }
}

/// The OCI runtime (containerd's CRI service).
pub struct OciRuntime {
    inner: Arc<Inner>,
    exec: tokio::runtime::Handle,
    /// Owns the executor; shut down in the background on drop. Pods keep
    /// running: a restarted agent adopts them.
    executor: Option<tokio::runtime::Runtime>,
}

impl OciRuntime {
    /// Creates the runtime and its executor; nothing is dialled yet.
    pub fn new(opts: OciOptions) -> Result<OciRuntime, OciError> {
        let data_dir = std::path::absolute(&opts.data_dir)
            .map_err(|e| OciError(format!("data dir {}: {e}", opts.data_dir.display())))?;
        let executor = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("oci-exec")
            .enable_all()
            .build()
            .map_err(|e| OciError(format!("executor: {e}")))?;
        let inner = Arc::new(Inner {
            client: CriClient::new(&opts.socket, opts.timeouts),
            logs: CriLogs::default(),
            root: data_dir.join("oci").join("pods"),
            pods: Mutex::default(),
            opts,
        });
        executor.spawn(janitor(Arc::downgrade(&inner)));
        Ok(OciRuntime {
            exec: executor.handle().clone(),
            inner,
            executor: Some(executor),
        })
    }

    /// Runs `cmd` in a container of a pod (the hook for exec probes).
    pub fn exec(&self) -> OciExec {
        OciExec {
            inner: self.inner.clone(),
            exec: self.exec.clone(),
        }
    }
}

impl Drop for OciRuntime {
    fn drop(&mut self) {
        for (_, run) in lock(&self.inner.pods).drain() {
            run.task.abort();
        }
        if let Some(rt) = self.executor.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs commands in the OCI runtime's containers (`ExecSync`): what an
/// `exec` probe plugs into. Cheap to clone.
#[derive(Clone)]
pub struct OciExec {
    inner: Arc<Inner>,
    exec: tokio::runtime::Handle,
}

impl OciExec {
    /// Runs `cmd` in the current run of `container` of pod `key`, waiting
    /// up to `timeout`.
    pub async fn exec(
        &self,
        key: &PodKey,
        container: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let id = {
            let pods = lock(&self.inner.pods);
            let run = pods.get(key).ok_or_else(|| RuntimeError {
                reason: "NotFound".into(),
                message: format!("pod {key} is not running here"),
            })?;
            run.records
                .iter()
                .find_map(|r| {
                    let r = lock(r);
                    (r.status.name == container).then(|| r.id.clone())
                })
                .flatten()
                .ok_or_else(|| RuntimeError {
                    reason: "NotFound".into(),
                    message: format!("container {container:?} of pod {key} is not running"),
                })?
        };
        let inner = self.inner.clone();
        let r = self
            .exec
            .spawn(async move { inner.client.exec_sync(&id, cmd, timeout).await })
            .await
            .map_err(|e| RuntimeError {
                reason: "ExecError".into(),
                message: e.to_string(),
            })?
            .map_err(|e| RuntimeError {
                reason: "ExecError".into(),
                message: e.to_string(),
            })?;
        Ok(ExecOutput {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
        })
    }
}

impl OciExec {
    /// This exec scoped to pod `key`: the [`Exec`](probe_check::Exec) of its
    /// containers' `exec` probes.
    pub fn pod(&self, key: PodKey) -> PodExec {
        PodExec {
            exec: self.clone(),
            key,
        }
    }
}

/// [`OciExec`] for the containers of one pod: runs `exec` probes through
/// `ExecSync` in the container's current run. A command that runs gives
/// its exit code (non-zero fails the probe); one that cannot run (the
/// container is not running, containerd refuses) fails it with why.
#[derive(Clone)]
pub struct PodExec {
    exec: OciExec,
    key: PodKey,
}

#[async_trait::async_trait]
impl probe_check::Exec for PodExec {
    async fn exec(&self, container: &str, argv: &[String], timeout: Duration) -> Result<i32, String> {
        self.exec
            .exec(&self.key, container, argv.to_vec(), timeout)
            .await
            .map(|out| out.exit_code)
            .map_err(|e| e.message)
    }
}

#[async_trait::async_trait]
impl Runtime for OciRuntime {
    fn name(&self) -> &'static str {
        CONTAINERD
    }

    fn class(&self) -> PodClass {
        PodClass::Oci
    }

    fn log_source(&self) -> Option<Arc<dyn LogSource>> {
        Some(Arc::new(self.inner.logs.clone()))
    }

    async fn start(&self, pod: &DesiredPod) -> Result<(), RuntimeError> {
        let key = PodKey::of(&pod.pod);
        let uid = pod.pod.metadata.uid.clone().unwrap_or_default();
        if let Some(c) = pod.pod.spec.containers.iter().find(|c| c.image.trim().is_empty()) {
            return Err(RuntimeError {
                reason: "InvalidImageName".into(),
                message: format!("container {:?} has no image", c.name),
            });
        }
        let existing = lock(&self.inner.pods).get(&key).map(|r| r.uid.clone());
        match existing {
            Some(u) if u == uid => return Ok(()),
            Some(_) => self.stop(&key, Duration::ZERO).await?,
            None => {}
        }
        let paths = PodPaths::new(&self.inner.root, &key, &uid);
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
                        started: Some(false),
                        ..ContainerStatus::default()
                    },
                    ..Record::default()
                }))
            })
            .collect();
        let net = Arc::new(Mutex::new(Net::default()));
        let (cancel, cancel_rx) = watch::channel(false);
        self.inner.logs.add(key.clone(), paths.logs());
        // Registered before its task runs, so the janitor never takes its sandbox.
        let mut pods = lock(&self.inner.pods);
        let task = self.exec.spawn(run_pod(
            self.inner.clone(),
            Arc::new(pod.clone()),
            key.clone(),
            paths.clone(),
            records.clone(),
            net.clone(),
            cancel_rx,
        ));
        pods.insert(
            key,
            PodRun {
                uid,
                grace: pod
                    .pod
                    .spec
                    .termination_grace_period_seconds
                    .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
                paths,
                start_time: now(),
                ready: Mutex::new((false, now())),
                records,
                net,
                cancel,
                task,
            },
        );
        Ok(())
    }

    /// Stops the pod's containers with `grace`, or the pod's own
    /// `terminationGracePeriodSeconds` when that is shorter: a caller that
    /// no longer has the pod's spec (it was deleted) passes the 30 s
    /// default, while a pod that asked for 1 s gets 1 s, as with kubelet.
    async fn stop(&self, key: &PodKey, grace: Duration) -> Result<(), RuntimeError> {
        let Some(mut run) = lock(&self.inner.pods).remove(key) else {
            return Ok(());
        };
        let grace = run.grace.map_or(grace, |own| own.min(grace));
        let _ = run.cancel.send(true);
        if tokio::time::timeout(Duration::from_secs(5), &mut run.task)
            .await
            .is_err()
        {
            run.task.abort();
        }
        self.inner.logs.remove(key);
        let inner = self.inner.clone();
        let (uid, paths, key) = (run.uid, run.paths, key.clone());
        let done = self
            .exec
            .spawn(async move {
                let r = teardown(&inner, &uid, grace).await;
                let _ = tokio::task::spawn_blocking(move || files::remove_pod_dir(&paths)).await;
                r
            })
            .await;
        match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RuntimeError {
                reason: "KillPodSandboxError".into(),
                message: format!(
                    "stopping pod {key}: {e} (the janitor retries within {}s)",
                    self.inner.opts.janitor_every.as_secs()
                ),
            }),
            Err(e) => Err(RuntimeError {
                reason: "KillPodSandboxError".into(),
                message: format!("stopping pod {key}: {e}"),
            }),
        }
    }

    async fn status(&self, key: &PodKey) -> Option<PodStatus> {
        let pods = lock(&self.inner.pods);
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
        let net = lock(&run.net);
        Some(PodStatus {
            phase: Some(lifecycle::phase(&views)),
            conditions: lifecycle::conditions(&statuses, run.start_time, ready_changed),
            start_time: Some(run.start_time),
            pod_ip: net.ip.clone(),
            pod_ips: net.ips.clone(),
            container_statuses: statuses,
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

/// Everything a pod's container supervisors share.
struct PodCtx {
    inner: Arc<Inner>,
    pod: Arc<DesiredPod>,
    key: PodKey,
    paths: PodPaths,
    sandbox_id: String,
    sandbox: PodSandboxConfig,
    /// The pod's IP: where `httpGet` and `tcpSocket` probes connect.
    pod_ip: Option<String>,
    /// Runs `exec` probes in this pod's containers.
    exec: PodExec,
}

fn set_all(inner: &Inner, records: &[Shared], reason: &str, message: &str) {
    for r in records {
        lock(r).status.state = Some(ContainerState::waiting(reason, Some(message.to_string())));
    }
    inner.changed();
}

async fn run_pod(
    inner: Arc<Inner>,
    pod: Arc<DesiredPod>,
    key: PodKey,
    paths: PodPaths,
    records: Vec<Shared>,
    net: Arc<Mutex<Net>>,
    cancel: watch::Receiver<bool>,
) {
    let (p, d) = (paths.clone(), pod.clone());
    let made = tokio::task::spawn_blocking(move || files::prepare(&p, &d))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    if let Err(message) = made {
        tracing::warn!(pod = %key, %message, "pod files not prepared");
        set_all(
            &inner,
            &records,
            lifecycle::CREATE_CONTAINER_CONFIG_ERROR,
            &message,
        );
        return;
    }
    // The sandbox: retried with back-off (containerd down, CNI failing …).
    let mut failures = 0u32;
    let (sandbox_id, sandbox, adopted) = loop {
        let made = tokio::select! {
            r = ensure_sandbox(&inner, &pod, &paths) => r,
            () = cancelled(cancel.clone()) => return,
        };
        match made {
            Ok(s) => break s,
            Err(e) => {
                failures = failures.saturating_add(1);
                let message = format!("failed to create the pod sandbox: {}", e.message());
                tracing::warn!(pod = %key, %message, "sandbox not created");
                set_all(&inner, &records, CREATE_POD_SANDBOX_ERROR, &message);
                if !pause(inner.opts.backoff.delay(failures), &cancel).await {
                    return;
                }
            }
        }
    };
    let mut pod_ip = None;
    match inner.client.sandbox_status(&sandbox_id).await {
        Ok(Some(s)) => {
            let (ip, ips) = status::pod_ips(s.network.as_ref());
            pod_ip.clone_from(&ip);
            *lock(&net) = Net { ip, ips };
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(pod = %key, error = %e, "sandbox status unknown"),
    }
    inner.changed();
    // Containers of an adopted sandbox, newest run per name.
    let mut runs: HashMap<String, Adopted> = HashMap::new();
    if adopted {
        match inner.client.containers(&sandbox_id).await {
            Ok(list) => {
                for c in list {
                    let Some(name) = c.labels.get(LABEL_CONTAINER).cloned() else {
                        continue;
                    };
                    let attempt = c.metadata.as_ref().map_or(0, |m| m.attempt);
                    if runs.get(&name).is_none_or(|a| attempt > a.attempt) {
                        let restart_count = c
                            .annotations
                            .get(spec::ANNOTATION_RESTART_COUNT)
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        runs.insert(
                            name,
                            Adopted {
                                attempt,
                                restart_count,
                                id: c.id,
                                state: c.state,
                            },
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(pod = %key, error = %e, "cannot list the adopted sandbox's containers"),
        }
    }
    let exec = OciExec {
        inner: inner.clone(),
        exec: tokio::runtime::Handle::current(),
    }
    .pod(key.clone());
    let ctx = Arc::new(PodCtx {
        inner: inner.clone(),
        pod: pod.clone(),
        key: key.clone(),
        paths,
        sandbox_id,
        sandbox,
        pod_ip,
        exec,
    });
    let mut set = JoinSet::new();
    for (c, rec) in pod.pod.spec.containers.iter().zip(records) {
        set.spawn(supervise(
            ctx.clone(),
            c.clone(),
            rec,
            runs.remove(&c.name),
            cancel.clone(),
        ));
    }
    while set.join_next().await.is_some() {}
}

/// The pod's sandbox: an existing ready one of the same spec is adopted
/// (the agent restarted), others are removed, else a new one is run.
/// Returns its id, its config and whether it was adopted.
async fn ensure_sandbox(
    inner: &Arc<Inner>,
    pod: &DesiredPod,
    paths: &PodPaths,
) -> Result<(String, PodSandboxConfig, bool), CriError> {
    let uid = pod.pod.metadata.uid.clone().unwrap_or_default();
    let hash = crate::plan::spec_hash(&pod.pod);
    let existing = inner
        .client
        .sandboxes(spec::ownership_labels(&inner.opts.node, &uid))
        .await?;
    let mut next_attempt = 0;
    for sb in &existing {
        let attempt = sb.metadata.as_ref().map_or(0, |m| m.attempt);
        next_attempt = next_attempt.max(attempt.saturating_add(1));
        let ready = sb.state == PodSandboxState::SandboxReady as i32;
        if ready && sb.labels.get(LABEL_SPEC_HASH) == Some(&hash) {
            tracing::info!(pod = %PodKey::of(&pod.pod), sandbox = %sb.id, "adopting the running sandbox");
            let config = spec::sandbox_config(pod, &inner.opts.node, paths, attempt);
            return Ok((sb.id.clone(), config, true));
        }
    }
    for sb in &existing {
        remove_sandbox(inner, &sb.id, Duration::ZERO).await?;
    }
    let config = spec::sandbox_config(pod, &inner.opts.node, paths, next_attempt);
    let id = inner.client.run_sandbox(config.clone()).await?;
    Ok((id, config, false))
}

/// Stops every container of a sandbox (giving them `grace`), then the
/// sandbox, and removes it. A sandbox already gone is fine.
async fn remove_sandbox(inner: &Arc<Inner>, id: &str, grace: Duration) -> Result<(), CriError> {
    let ignore_gone = |r: Result<(), CriError>| match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    };
    let containers = match inner.client.containers(id).await {
        Ok(c) => c,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e),
    };
    // Concurrently: each gets the whole grace period, as with kubelet.
    let mut stops = JoinSet::new();
    for c in containers {
        if c.state == CriState::ContainerRunning as i32 || c.state == CriState::ContainerUnknown as i32 {
            let i = inner.clone();
            stops.spawn(async move { i.client.stop_container(&c.id, grace).await });
        }
    }
    while let Some(r) = stops.join_next().await {
        if let Ok(Err(e)) = r
            && !e.is_not_found()
        {
            tracing::warn!(sandbox = %id, error = %e, "stopping a container failed; the sandbox stop kills it");
        }
    }
    ignore_gone(inner.client.stop_sandbox(id).await)?;
    ignore_gone(inner.client.remove_sandbox(id).await)
}

/// Removes every sandbox of pod `uid` on this node.
async fn teardown(inner: &Arc<Inner>, uid: &str, grace: Duration) -> Result<(), CriError> {
    let sandboxes = inner
        .client
        .sandboxes(spec::ownership_labels(&inner.opts.node, uid))
        .await?;
    for sb in sandboxes {
        remove_sandbox(inner, &sb.id, grace).await?;
    }
    Ok(())
}

/// A container found in an adopted sandbox (its newest run).
struct Adopted {
    attempt: u32,
    restart_count: i32,
    id: String,
    state: i32,
}

/// Why a run could not begin: a waiting reason and message.
struct NotStarted {
    reason: &'static str,
    message: String,
}

/// Runs one container until it is done for good or the pod stops.
async fn supervise(
    ctx: Arc<PodCtx>,
    c: Container,
    rec: Shared,
    adopted: Option<Adopted>,
    cancel: watch::Receiver<bool>,
) {
    let inner = ctx.inner.clone();
    let policy = ctx.pod.pod.spec.restart_policy.unwrap_or(RestartPolicy::Always);
    let backoff = inner.opts.backoff;
    let (mut crashes, mut failures) = (0u32, 0u32);
    // Run numbers name the log files; they only grow.
    let mut attempt: u32 = 0;
    let mut current: Option<String> = None;
    let mut previous: Option<String> = None;
    if let Some(a) = adopted {
        attempt = a.attempt.saturating_add(1);
        lock(&rec).status.restart_count = a.restart_count;
        if a.state == CriState::ContainerRunning as i32 || a.state == CriState::ContainerExited as i32 {
            current = Some(a.id);
        } else {
            let _ = inner.client.remove_container(&a.id).await;
        }
    }
    let set_state = |state: ContainerState| {
        lock(&rec).status.state = Some(state);
        inner.changed();
    };
    loop {
        let id = match current.take() {
            Some(id) => id,
            None => {
                let made = tokio::select! {
                    r = create_and_start(&ctx, &c, attempt, &rec) => r,
                    () = cancelled(cancel.clone()) => return,
                };
                attempt = attempt.saturating_add(1);
                match made {
                    Ok(id) => id,
                    Err(NotStarted { reason, message }) => {
                        failures = failures.saturating_add(1);
                        let reason = if reason == lifecycle::ERR_IMAGE_PULL && failures > 1 {
                            lifecycle::IMAGE_PULL_BACK_OFF
                        } else {
                            reason
                        };
                        let message = if reason == lifecycle::IMAGE_PULL_BACK_OFF {
                            format!("Back-off pulling image {:?}: {message}", c.image)
                        } else {
                            message
                        };
                        tracing::warn!(pod = %ctx.key, container = %c.name, %reason, %message, "container not started");
                        set_state(ContainerState::waiting(reason, Some(message)));
                        if !pause(backoff.delay(failures), &cancel).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        failures = 0;
        lock(&rec).id = Some(id.clone());
        let began = Instant::now();
        let ended = watch_run(&ctx, &c, &id, &rec, &cancel).await;
        // The run is over, and so is its probing: neither started nor ready.
        {
            let mut g = lock(&rec);
            g.probes = None;
            g.status.ready = false;
            g.status.started = Some(false);
        }
        let Some((terminated, exit)) = ended else {
            return;
        };
        tracing::info!(pod = %ctx.key, container = %c.name, ?exit, "container ended");
        let restart = !*cancel.borrow() && lifecycle::should_restart(policy, &exit);
        {
            let mut g = lock(&rec);
            g.status.state = Some(terminated.clone());
            g.done = !restart;
        }
        inner.changed();
        // Keep this run (for --previous) and drop the one before it.
        if let Some(old) = previous.replace(id)
            && let Err(e) = inner.client.remove_container(&old).await
            && !e.is_not_found()
        {
            tracing::warn!(pod = %ctx.key, container = %c.name, error = %e, "cannot remove an old run");
        }
        let (paths, name, keep) = (ctx.paths.clone(), c.name.clone(), attempt.saturating_sub(2));
        let _ = tokio::task::spawn_blocking(move || files::prune_logs(&paths, &name, keep)).await;
        if !restart {
            return;
        }
        crashes = backoff.next_crashes(crashes, began.elapsed());
        let delay = backoff.delay(crashes);
        {
            let mut g = lock(&rec);
            g.status.last_state = Some(terminated);
            g.status.state = Some(lifecycle::back_off_state(delay, &c.name, &ctx.key.name));
        }
        inner.changed();
        if !pause(delay, &cancel).await {
            return;
        }
        {
            let mut g = lock(&rec);
            g.status.restart_count = g.status.restart_count.saturating_add(1);
        }
        inner.changed();
    }
}

/// Pulls the image if the policy says so, creates the container (run
/// `attempt`) and starts it; returns its id. A failed start is not an
/// error here: containerd reports the container exited with `StartError`.
async fn create_and_start(
    ctx: &PodCtx,
    c: &Container,
    attempt: u32,
    rec: &Shared,
) -> Result<String, NotStarted> {
    let inner = &ctx.inner;
    let image_ref = ensure_image(ctx, c).await?;
    let config_error = |message: String| NotStarted {
        reason: lifecycle::CREATE_CONTAINER_CONFIG_ERROR,
        message,
    };
    let env = spec::environment(&ctx.pod, c).map_err(|e| config_error(e.to_string()))?;
    let restart_count = lock(rec).status.restart_count;
    let config = spec::container_config(&ctx.pod, c, &ctx.paths, attempt, restart_count, &env)
        .map_err(|e| config_error(e.to_string()))?;
    let id = inner
        .client
        .create_container(&ctx.sandbox_id, config, ctx.sandbox.clone())
        .await
        .map_err(|e| NotStarted {
            reason: lifecycle::CREATE_CONTAINER_ERROR,
            message: e.message(),
        })?;
    {
        let mut g = lock(rec);
        g.status.container_id = Some(status::container_id(&id));
        g.status.image_id = image_ref;
    }
    // A failed start shows in the status poll: containerd marks the
    // container exited with `StartError` and the reason.
    if let Err(e) = inner.client.start_container(&id).await {
        tracing::warn!(pod = %ctx.key, container = %c.name, error = %e, "container did not start");
    }
    Ok(id)
}

/// Makes sure the image is there per `imagePullPolicy`; returns its id when known.
async fn ensure_image(ctx: &PodCtx, c: &Container) -> Result<Option<String>, NotStarted> {
    let client = &ctx.inner.client;
    let policy = image::pull_policy(c);
    let pull_error = |e: CriError| NotStarted {
        reason: lifecycle::ERR_IMAGE_PULL,
        message: e.message(),
    };
    if policy != ImagePullPolicy::Always {
        if let Some(id) = client.image_present(&c.image).await.map_err(pull_error)? {
            return Ok(Some(id));
        }
        if policy == ImagePullPolicy::Never {
            return Err(NotStarted {
                reason: ERR_IMAGE_NEVER_PULL,
                message: format!(
                    "Container image {:?} is not present with pull policy of Never",
                    c.image
                ),
            });
        }
    }
    let auth = image::pull_credentials(&ctx.pod, &c.image).map(|cr| spec::auth_config(&cr));
    tracing::info!(pod = %ctx.key, container = %c.name, image = %c.image, authenticated = auth.is_some(), "pulling image");
    let image_ref = client
        .pull(spec::image_spec(&c.image), auth, Some(ctx.sandbox.clone()))
        .await
        .map_err(pull_error)?;
    Ok((!image_ref.is_empty()).then_some(image_ref))
}

/// Polls a container until it exits (its `terminated` state and exit) or
/// the pod stops (`None`). Once it runs, its probes run too (a probe task
/// for this run, its view in the record); a liveness or startup probe
/// failing past its threshold stops it, and its exit then carries the
/// probe's message. Rotates its log file past the size cap.
async fn watch_run(
    ctx: &PodCtx,
    c: &Container,
    id: &str,
    rec: &Shared,
    cancel: &watch::Receiver<bool>,
) -> Option<(ContainerState, Exit)> {
    let inner = &ctx.inner;
    let mut started: Option<Time> = None;
    let mut polls: u64 = 0;
    let mut warned = false;
    // Dropped when this returns: that stops the probe task.
    let mut probes: Option<ProbeRun> = None;
    let mut kill = Kill::None;
    loop {
        match inner.client.container_status(id).await {
            Ok(Some(s)) => {
                warned = false;
                match status::observe(&s) {
                    Observed::Exited { state, exit } => {
                        return Some(match &kill {
                            Kill::Stopping(r) | Kill::Stopped(r) => {
                                status::killed_by_probe(state, exit, &r.message)
                            }
                            Kill::None => (state, exit),
                        });
                    }
                    Observed::Running { started: ns } => {
                        if started.is_none() {
                            started = status::time_of(ns).or_else(|| Some(now()));
                            probes = start_probes(ctx, c);
                            let view = probes.as_ref().map_or(ProbeView::NO_PROBES, ProbeRun::view);
                            let mut g = lock(rec);
                            g.status.state = Some(ContainerState::running(started));
                            g.status.container_id = Some(status::container_id(id));
                            if !s.image_ref.is_empty() {
                                g.status.image_id = Some(s.image_ref.clone());
                            }
                            // Without probes: started and ready while it runs.
                            g.status.ready = view.ready;
                            g.status.started = Some(view.started);
                            g.probes = probes.as_ref().map(ProbeRun::subscribe);
                            drop(g);
                            inner.changed();
                        }
                        polls = polls.wrapping_add(1);
                        if polls.is_multiple_of(10) {
                            rotate_log(inner, id, &s.log_path).await;
                        }
                    }
                    Observed::Created | Observed::Unknown => {}
                }
            }
            Ok(None) => return Some(status::lost(id, started, now())),
            Err(e) if e.is_not_found() => return Some(status::lost(id, started, now())),
            Err(e) => {
                if !warned {
                    tracing::warn!(pod = %ctx.key, container = %id, error = %e, "container status unknown; retrying");
                    warned = true;
                }
            }
        }
        kill = match kill {
            Kill::None => tokio::select! {
                () = tokio::time::sleep(inner.opts.poll) => Kill::None,
                () = cancelled(cancel.clone()) => return None,
                r = probe::run::restart_requested(probes.as_mut()) => {
                    stop_unhealthy(ctx, c, id, r, cancel).await?
                }
            },
            Kill::Stopping(r) => stop_unhealthy(ctx, c, id, r, cancel).await?,
            Kill::Stopped(r) => {
                if !pause(inner.opts.poll, cancel).await {
                    return None;
                }
                Kill::Stopped(r)
            }
        };
    }
}

/// Where a run stands after its liveness or startup probe asked for a
/// restart: the request (its message goes into the exit), and whether
/// containerd took the stop yet.
enum Kill {
    None,
    /// StopContainer failed: tried again after the next status poll.
    Stopping(probe::RestartRequest),
    /// Stopped (or stopping within its grace period): waiting for the exit.
    Stopped(probe::RestartRequest),
}

/// Starts the probe task of a container run that is now running (`None`
/// when it has no probes).
fn start_probes(ctx: &PodCtx, c: &Container) -> Option<ProbeRun> {
    probe::run::spawn(
        ProbeSet::of(c),
        Target {
            // No IP (the sandbox status could not be read): the checks fail
            // and say so, rather than probing the node.
            host: ctx.pod_ip.clone().unwrap_or_default(),
            container: c.name.clone(),
            exec: Arc::new(ctx.exec.clone()),
        },
        ctx.inner.opts.changed.clone(),
        &ctx.key.to_string(),
    )
}

/// Stops a container whose liveness or startup probe failed (SIGTERM, then
/// SIGKILL after the probe's grace period): [`Kill::Stopped`] once
/// containerd took the stop, [`Kill::Stopping`] if it failed (after a
/// pause), `None` when the pod stops meanwhile.
async fn stop_unhealthy(
    ctx: &PodCtx,
    c: &Container,
    id: &str,
    r: probe::RestartRequest,
    cancel: &watch::Receiver<bool>,
) -> Option<Kill> {
    let grace = spec::probe_kill_grace(&ctx.pod, c, r.probe);
    tracing::info!(pod = %ctx.key, container = %c.name, grace_secs = grace.as_secs(), message = %r.message, "stopping an unhealthy container");
    let stopped = tokio::select! {
        s = ctx.inner.client.stop_container(id, grace) => s,
        () = cancelled(cancel.clone()) => return None,
    };
    match stopped {
        Ok(()) => Some(Kill::Stopped(r)),
        Err(e) if e.is_not_found() => Some(Kill::Stopped(r)),
        Err(e) => {
            tracing::warn!(pod = %ctx.key, container = %c.name, error = %e, "cannot stop an unhealthy container; retrying");
            pause(ctx.inner.opts.poll, cancel)
                .await
                .then_some(Kill::Stopping(r))
        }
    }
}

/// Moves a log file past the cap aside (`<n>.log.1`) and has containerd reopen it.
async fn rotate_log(inner: &Inner, id: &str, path: &str) {
    if path.is_empty() {
        return;
    }
    let (p, cap) = (PathBuf::from(path), inner.opts.log_max_bytes);
    let rotated = tokio::task::spawn_blocking(move || {
        let big = std::fs::metadata(&p).is_ok_and(|m| m.len() > cap);
        big && std::fs::rename(&p, p.with_extension("log.1")).is_ok()
    })
    .await
    .unwrap_or(false);
    if rotated && let Err(e) = inner.client.reopen_log(id).await {
        tracing::warn!(container = %id, error = %e, "cannot reopen a rotated log");
    }
}

/// Removes, now and then, sandboxes labelled as this node's whose pod this
/// runtime does not run (deleted while the agent was down, or a stop that
/// failed), and pod dirs nobody owns.
async fn janitor(inner: std::sync::Weak<Inner>) {
    let Some(first) = inner.upgrade().map(|i| i.opts.janitor_first) else {
        return;
    };
    tokio::time::sleep(first).await;
    loop {
        let Some(i) = inner.upgrade() else { return };
        if let Err(e) = sweep(&i).await {
            tracing::debug!(error = %e, "janitor: containerd not reachable");
        }
        let every = i.opts.janitor_every;
        drop(i);
        tokio::time::sleep(every).await;
    }
}

async fn sweep(inner: &Arc<Inner>) -> Result<(), CriError> {
    let sandboxes = inner
        .client
        .sandboxes(HashMap::from([(LABEL_NODE.to_string(), inner.opts.node.clone())]))
        .await?;
    let (live, dirs): (HashSet<String>, HashSet<PathBuf>) = {
        let pods = lock(&inner.pods);
        (
            pods.values().map(|r| r.uid.clone()).collect(),
            pods.values().map(|r| r.paths.dir.clone()).collect(),
        )
    };
    for sb in sandboxes {
        let uid = sb.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
        if live.contains(&uid) {
            continue;
        }
        tracing::info!(sandbox = %sb.id, pod_uid = %uid, "removing a sandbox of a pod no longer on this node");
        if let Err(e) = remove_sandbox(inner, &sb.id, ORPHAN_GRACE).await {
            tracing::warn!(sandbox = %sb.id, error = %e, "cannot remove an orphaned sandbox");
        }
    }
    let root = inner.root.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !dirs.contains(&p) {
                let _ = std::fs::remove_dir_all(&p);
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_base_from_the_environment() {
        assert_eq!(backoff_with_base(None), Backoff::default());
        assert_eq!(backoff_with_base(Some("200")).base, Duration::from_millis(200));
        assert_eq!(backoff_with_base(Some("0")), Backoff::default());
        assert_eq!(backoff_with_base(Some("x")), Backoff::default());
    }

    #[tokio::test]
    async fn without_containerd_pods_wait_with_a_reason_and_stop_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = OciOptions::new(dir.path(), &dir.path().join("absent.sock"), "n1");
        opts.backoff = Backoff {
            base: Duration::from_millis(50),
            ..Backoff::default()
        };
        let changed = opts.changed.clone();
        let rt = OciRuntime::new(opts).unwrap();
        let mut pod = shturman_api::core::Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("u1".into());
        pod.spec.containers.push(Container {
            name: "httpd".into(),
            image: "127.0.0.1:5000/busybox-httpd:1".into(),
            ..Container::default()
        });
        let d = DesiredPod {
            pod,
            ..DesiredPod::default()
        };
        let key = PodKey::of(&d.pod);
        rt.start(&d).await.unwrap();
        let mut reason = None;
        for _ in 0..100 {
            let _ = tokio::time::timeout(Duration::from_millis(100), changed.notified()).await;
            let s = rt.status(&key).await.unwrap();
            let w = s.container_statuses[0]
                .state
                .as_ref()
                .and_then(|st| st.waiting.clone());
            if let Some(w) = w.filter(|w| w.reason.as_deref() == Some(CREATE_POD_SANDBOX_ERROR)) {
                reason = w.message;
                break;
            }
        }
        let message = reason.expect("a sandbox error");
        assert!(message.contains("absent.sock"), "{message}");
        assert_eq!(
            rt.status(&key).await.unwrap().phase,
            Some(shturman_api::core::PodPhase::Pending)
        );
        // An exec probe into a container that never ran fails, saying why.
        let exec = rt.exec().pod(key.clone());
        let argv = ["true".to_string()];
        let e = probe_check::Exec::exec(&exec, "httpd", &argv, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.contains("is not running"), "{e}");
        let outcome = probe_check::exec(&exec, "httpd", &argv, Duration::from_secs(1)).await;
        assert!(
            matches!(outcome, crate::probe::Outcome::Failure(_)),
            "{outcome:?}"
        );
        // The log source knows the pod while it is here.
        let logs = rt.log_source().unwrap();
        assert!(logs.has(&key, "httpd"));
        // Stopping cannot reach containerd: an error naming it, and the pod is gone.
        let e = rt.stop(&key, Duration::from_secs(1)).await.unwrap_err();
        assert!(e.message.contains("absent.sock"), "{}", e.message);
        assert!(rt.status(&key).await.is_none());
        assert!(!logs.has(&key, "httpd"));
        // An image-less container is refused up front.
        let mut bad = d.clone();
        bad.pod.spec.containers[0].image = String::new();
        assert_eq!(rt.start(&bad).await.unwrap_err().reason, "InvalidImageName");
    }
}
