//! OCI pod start latency through Shturman next to bare containerd, on the
//! same private containerd (`shturman_e2e::containerd`: containerd 1.6 with
//! its CRI plugin, CNI bridge + host-local + portmap, runc, overlayfs) with
//! the same image: the busybox httpd image `shturman_e2e::oci_image` builds,
//! imported into `k8s.io` (and `default`, for ctr) before anything is
//! timed, so no pull is measured.
//!
//! - **Shturman**: the real release `shturman control` (sled store,
//!   embedded broker) and one real `shturman-agent --containerd-socket …`.
//!   Pods are created one at a time already bound (`spec.nodeName`, so the
//!   scheduler is not in the measurement; `imagePullPolicy: IfNotPresent`,
//!   the image present). The clock runs from the create call's response to
//!   the moment a pod watch, opened before the loop, delivers the event
//!   whose container has `state.running`: API write, MQTT to the agent,
//!   sandbox (pause container, CNI), container, and the status back to the
//!   API. Each pod is then deleted (not timed) and the next one waits until
//!   the agent has torn it down (its pod dir is gone).
//! - **CRI anchor** (the fair one: Shturman's pods also get a sandbox with
//!   networking): `RunPodSandbox` + `CreateContainer` + `StartContainer`
//!   straight against containerd's CRI service with the generated `k8s-cri`
//!   client, as kubelet would send them; the sandbox removed after (untimed).
//! - **`ctr run -d` anchor** (issue 6's wording): `ctr run -d` of the same
//!   image in the `default` namespace. It returns once the task has started
//!   (RUNNING; checked after, untimed); no sandbox, no CNI, ctr's own
//!   process start included, as a user's command would.
//!
//! The three are interleaved (one of each per round, after one untimed
//! warm-up of each), so drift on a shared machine hits them alike.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use serde_json::{Value, json};
use shturman_e2e::api::Api;
use shturman_e2e::containerd::{CRI_NAMESPACE, CTR_NAMESPACE, Containerd, check_output, preflight};
use shturman_e2e::oci_image;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::podwatch::PodWatch;
use crate::report::{Report, Row};
use crate::spawn::{Agent, Control};
use crate::wasm_start::pct_ms;

/// Measured starts of each kind (after one untimed warm-up).
const PODS: usize = 30;
/// No pod waits longer than this to run.
const START_CAP: Duration = Duration::from_secs(60);
/// Nor longer than this to be torn down by the agent after its delete.
const STOP_CAP: Duration = Duration::from_secs(30);
/// The whole measured loop stops after this, whatever the count.
const LOOP_CAP: Duration = Duration::from_secs(600);
/// Label of every pod this scenario creates.
const LABEL: &str = "bench=oci-start";
/// The node name of the scenario's agent.
const NODE: &str = "bench-oci";
/// The goal: Shturman's start within this factor of bare containerd's.
const GOAL: f64 = 1.2;

/// The private containerd with the image imported in both namespaces.
struct Setup {
    containerd: Containerd,
    /// `shturman.local/busybox-httpd:latest`.
    image: String,
}

impl Setup {
    /// Starts containerd and imports the image (blocking).
    fn start() -> Result<Setup> {
        let t = Instant::now();
        let containerd = Containerd::start().context("starting the private containerd")?;
        let layout = oci_image::busybox_httpd(&containerd.dir().join("images").join("httpd"))
            .context("building the busybox-httpd OCI image")?;
        containerd
            .import_layout(CRI_NAMESPACE, &layout)
            .context("importing busybox-httpd into k8s.io")?;
        containerd
            .import_layout(CTR_NAMESPACE, &layout)
            .context("importing busybox-httpd into default")?;
        eprintln!(
            "  private containerd up with {} in {:.1} s",
            layout.reference(),
            t.elapsed().as_secs_f64()
        );
        Ok(Setup {
            containerd,
            image: layout.reference(),
        })
    }
}

/// A bound httpd pod.
fn pod(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "oci-start"}},
        "spec": {
            "nodeName": NODE,
            // busybox httpd is PID 1 and ignores SIGTERM: keep the untimed
            // teardown short.
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "httpd",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
            }],
        },
    })
}

/// Shturman's side: the control plane, the agent on the private
/// containerd, and a watch on the scenario's pods.
struct Cluster {
    api: Api,
    agent: Agent,
    watch: PodWatch,
    _control: Control,
}

impl Cluster {
    async fn start(socket: &Path) -> Result<Cluster> {
        let control = Control::start("sled").await?;
        let socket = socket.display().to_string();
        let agent = Agent::start(&control, NODE, &["--containerd-socket", &socket]).await?;
        let api = Api::new(&control.url, &control.token);
        let watch = PodWatch::start(&control, LABEL).await?;
        Ok(Cluster {
            api,
            agent,
            watch,
            _control: control,
        })
    }

    /// One start: create, then wait for the running event. Returns (latency
    /// to running, latency to the node's first status report, uid).
    async fn start_one(&mut self, name: &str, image: &str) -> Result<(Duration, Option<Duration>, String)> {
        let (code, created) = self
            .api
            .post("/api/v1/namespaces/default/pods", &pod(name, image))
            .await?;
        let t0 = Instant::now();
        if code != 201 {
            bail!("creating pod {name} answered {code}: {created}");
        }
        let uid = created["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut reported = None;
        loop {
            let ev = tokio::time::timeout(START_CAP.saturating_sub(t0.elapsed()), self.watch.events.recv())
                .await
                .with_context(|| format!("pod {name} not running after {START_CAP:?}"))?
                .context("the pod watch ended")?;
            if ev.name != name {
                continue;
            }
            if ev.reported && reported.is_none() {
                reported = Some(ev.at.saturating_duration_since(t0));
            }
            if ev.running {
                return Ok((ev.at.saturating_duration_since(t0), reported, uid));
            }
        }
    }

    /// Deletes a pod and waits until the agent has torn it down (sandbox
    /// stopped and removed, then its pod dir). Whether it saw that in time.
    async fn delete_and_wait(&self, name: &str, uid: &str) -> Result<bool> {
        let (code, body) = self
            .api
            .delete(&format!("/api/v1/namespaces/default/pods/{name}"))
            .await?;
        if code != 200 {
            bail!("deleting pod {name} answered {code}: {body}");
        }
        let dir = self
            .agent
            .data
            .join("oci")
            .join("pods")
            .join(format!("default_{name}_{uid}"));
        let t = Instant::now();
        while t.elapsed() < STOP_CAP {
            if !dir.exists() {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(false)
    }
}

/// Dials containerd's socket for the CRI anchor (the URI is a placeholder:
/// the connector ignores it).
async fn connect(socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    Ok(Endpoint::from_static("http://containerd.invalid")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await?)
}

/// The CRI anchor: kubelet's three calls for a one-container pod.
struct Cri {
    rt: RuntimeServiceClient<Channel>,
    /// Where the anchor's sandboxes keep their logs.
    logs: PathBuf,
    image: String,
}

impl Cri {
    async fn new(setup: &Setup) -> Result<Cri> {
        let c = &setup.containerd;
        Ok(Cri {
            rt: RuntimeServiceClient::new(connect(c.socket()).await?),
            logs: c.dir().join("anchor-pods"),
            image: setup.image.clone(),
        })
    }

    /// A sandbox config as kubelet sends it, and as the agent does: its own
    /// network and IPC namespaces, a PID namespace per container, and
    /// containerd's default cgroup parent (what the agent leaves it at).
    fn sandbox_config(&self, name: &str) -> Result<PodSandboxConfig> {
        let uid = format!("anchor-{name}-{}", std::process::id());
        let logs = self.logs.join(&uid);
        std::fs::create_dir_all(&logs)?;
        Ok(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..NamespaceOption::default()
                    }),
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        })
    }

    /// RunPodSandbox + CreateContainer + StartContainer, timed; then the
    /// sandbox is stopped and removed (untimed).
    async fn start_one(&mut self, name: &str) -> Result<Duration> {
        let config = self.sandbox_config(name)?;
        let t = Instant::now();
        let sandbox = self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .context("RunPodSandbox")?
            .into_inner()
            .pod_sandbox_id;
        let container = self
            .rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "httpd".into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: self.image.clone(),
                        ..ImageSpec::default()
                    }),
                    log_path: "httpd.log".into(),
                    linux: Some(LinuxContainerConfig::default()),
                    ..ContainerConfig::default()
                }),
                sandbox_config: Some(config),
            })
            .await
            .context("CreateContainer")?
            .into_inner()
            .container_id;
        self.rt
            .start_container(StartContainerRequest {
                container_id: container,
            })
            .await
            .context("StartContainer")?;
        let took = t.elapsed();
        self.rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: sandbox.clone(),
            })
            .await
            .context("StopPodSandbox")?;
        self.rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: sandbox,
            })
            .await
            .context("RemovePodSandbox")?;
        Ok(took)
    }
}

/// The `ctr run -d` anchor: one detached start, timed; checked RUNNING and
/// removed after (untimed). Blocking.
fn ctr_run_one(c: &Containerd, image: &str, id: &str) -> Result<Duration> {
    let flags = c.run_flags(id);
    let mut args = vec!["-n", CTR_NAMESPACE, "run", "-d"];
    args.extend(flags.iter().map(String::as_str));
    args.extend([image, id]);
    let t = Instant::now();
    let out = c.ctr(&args);
    let took = t.elapsed();
    check_output(&format!("ctr run -d {image} {id}"), out)?;
    let tasks = c.ctr_ok(&["-n", CTR_NAMESPACE, "tasks", "ls"])?;
    let running = tasks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.first() == Some(&id) && f.last() == Some(&"RUNNING")
    });
    let _ = c.ctr(&["-n", CTR_NAMESPACE, "tasks", "kill", "-s", "SIGKILL", id]);
    let _ = c.ctr(&["-n", CTR_NAMESPACE, "tasks", "delete", "-f", id]);
    let _ = c.ctr(&["-n", CTR_NAMESPACE, "containers", "rm", id]);
    if !running {
        bail!("ctr run -d returned but task {id} is not RUNNING:\n{tasks}");
    }
    Ok(took)
}

/// What one run measured (each sorted).
struct Figures {
    shturman: Vec<Duration>,
    first_report: Vec<Duration>,
    cri: Vec<Duration>,
    ctr: Vec<Duration>,
    slow_stops: usize,
}

async fn measure(setup: &Setup, n: usize) -> Result<Figures> {
    let mut cluster = Cluster::start(setup.containerd.socket()).await?;
    let mut cri = Cri::new(setup).await?;
    let mut f = Figures {
        shturman: Vec::with_capacity(n),
        first_report: Vec::with_capacity(n),
        cri: Vec::with_capacity(n),
        ctr: Vec::with_capacity(n),
        slow_stops: 0,
    };
    let result = async {
        let started = Instant::now();
        // Round 0 is the untimed warm-up of each.
        for i in 0..=n {
            if started.elapsed() > LOOP_CAP {
                eprintln!(
                    "  stopping after {} rounds: {LOOP_CAP:?} elapsed",
                    i.saturating_sub(1)
                );
                break;
            }
            let name = format!("oci-{i}");
            let (d, rep, uid) = cluster.start_one(&name, &setup.image).await?;
            f.slow_stops += usize::from(!cluster.delete_and_wait(&name, &uid).await?);
            let a = cri.start_one(&format!("anchor-{i}")).await?;
            let id = format!("oci-bench-{}-{i}", std::process::id());
            let b = tokio::task::block_in_place(|| ctr_run_one(&setup.containerd, &setup.image, &id))?;
            if i == 0 {
                eprintln!(
                    "  warm-up: Shturman {:.0} ms, CRI {:.0} ms, ctr run -d {:.0} ms",
                    d.as_secs_f64() * 1e3,
                    a.as_secs_f64() * 1e3,
                    b.as_secs_f64() * 1e3
                );
                continue;
            }
            f.shturman.push(d);
            f.first_report.extend(rep);
            f.cri.push(a);
            f.ctr.push(b);
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("agent log (tail):\n{}", cluster.agent.log_tail(40));
        eprintln!(
            "containerd log (tail):\n{}",
            shturman_e2e::containerd::tail(&setup.containerd.log_text(), 20)
        );
        return Err(e);
    }
    for v in [&mut f.shturman, &mut f.first_report, &mut f.cri, &mut f.ctr] {
        v.sort();
    }
    Ok(f)
}

fn summary(name: &str, v: &[Duration]) {
    eprintln!(
        "  {name}: n={} min {:.1} p50 {:.1} p99 {:.1} max {:.1} ms",
        v.len(),
        pct_ms(v, 0.0),
        pct_ms(v, 50.0),
        pct_ms(v, 99.0),
        pct_ms(v, 100.0)
    );
}

/// Runs the scenario and adds its rows. Skipped (with why) where the
/// private containerd cannot run (not root, packages missing).
pub async fn run(report: &mut Report) -> Result<()> {
    eprintln!(
        "oci-start: {PODS} bound busybox-httpd pods through Shturman, next to CRI and `ctr run -d` starts of the same image"
    );
    if let Err(e) = preflight() {
        eprintln!("  oci-start skipped: {e:#}");
        return Ok(());
    }
    let setup = tokio::task::spawn_blocking(Setup::start)
        .await
        .context("setting up containerd panicked")??;
    let f = measure(&setup, PODS).await;
    // The harness tears down (blocking) off the async path.
    let _ = tokio::task::spawn_blocking(move || drop(setup)).await;
    let f = f?;
    if f.slow_stops > 0 {
        eprintln!(
            "  note: {} pods were not torn down by the agent within {STOP_CAP:?} of their delete",
            f.slow_stops
        );
    }
    summary("Shturman, create → running seen through the API", &f.shturman);
    summary("Shturman, create → node's first status report", &f.first_report);
    summary("CRI RunPodSandbox + CreateContainer + StartContainer", &f.cri);
    summary("ctr run -d", &f.ctr);
    let (p50, p99) = (pct_ms(&f.shturman, 50.0), pct_ms(&f.shturman, 99.0));
    let (cri50, cri99) = (pct_ms(&f.cri, 50.0), pct_ms(&f.cri, 99.0));
    let (ctr50, ctr99) = (pct_ms(&f.ctr, 50.0), pct_ms(&f.ctr, 99.0));
    let n = f.shturman.len();
    let scenario = format!("OCI pod start, bound → running, n={n}");
    let cri_name = format!(
        "CRI RunPodSandbox+CreateContainer+StartContainer, same containerd, n={}",
        f.cri.len()
    );
    let ctr_name = format!("ctr run -d, same image, n={}", f.ctr.len());
    let goal = format!("<= {GOAL}x bare containerd");
    let (checked, info) = (
        crate::report::Goal::RatioAtMost(GOAL),
        crate::report::Goal::Informational,
    );
    for (metric, ours, anchor_name, anchor, goal, check) in [
        ("p50 ms", p50, &cri_name, cri50, goal.clone(), checked),
        ("p99 ms", p99, &cri_name, cri99, "informational".to_string(), info),
        ("p50 ms", p50, &ctr_name, ctr50, goal.clone(), checked),
        ("p99 ms", p99, &ctr_name, ctr99, "informational".to_string(), info),
    ] {
        report.push(
            Row {
                scenario: scenario.clone(),
                metric: metric.into(),
                shturman: ours,
                anchor_name: anchor_name.clone(),
                anchor: Some(anchor),
                goal,
                higher_is_better: false,
            }
            .check(check),
        );
    }
    report.push(Row {
        scenario: "OCI pod start, bound → node's first status report".into(),
        metric: "p50 ms".into(),
        shturman: pct_ms(&f.first_report, 50.0),
        anchor_name: "-".into(),
        anchor: None,
        goal: "informational (where the time goes)".into(),
        higher_is_better: false,
    });
    for (what, anchor) in [("CRI sequence", cri50), ("ctr run -d", ctr50)] {
        let ratio = p50 / anchor;
        eprintln!(
            "  ratio Shturman p50 / {what} p50 = {ratio:.2} (goal <= {GOAL}): {}",
            if ratio <= GOAL { "met" } else { "MISSED" }
        );
    }
    Ok(())
}
