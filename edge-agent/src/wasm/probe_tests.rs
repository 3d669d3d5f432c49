//! Probes on Wasm pods, end to end through [`WasmRuntime`]: a module that
//! loops forever, probed over the node's loopback by a listener or HTTP
//! server the test controls. Periods are 1 s (the smallest Kubernetes
//! allows); every wait polls with a deadline.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use shturman_api::core::container::{ExecAction, HttpGetAction, Probe, TcpSocketAction};
use shturman_api::core::{
    Container, ContainerPort, ContainerStatus, Pod, PodConditionType, PodPhase, PodSpec, PodStatus,
    RestartPolicy,
};
use shturman_api::intstr::IntOrString;
use shturman_api::meta::ObjectMeta;
use shturman_api::wire::DesiredPod;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::lifecycle::Backoff;
use super::runtime::{EXEC_UNSUPPORTED, WasmOptions, WasmRuntime};
use crate::plan::PodKey;
use crate::runtime::Runtime;

const DEADLINE: Duration = Duration::from_secs(20);

/// Sleeps 20 ms (one relative clock subscription to `poll_oneoff`), forever.
fn sleeper() -> Vec<u8> {
    wat::parse_str(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $l
      (i64.store (i32.const 128) (i64.const 0))
      (i32.store8 (i32.const 136) (i32.const 0))
      (i32.store (i32.const 144) (i32.const 1))
      (i64.store (i32.const 152) (i64.const 20000000))
      (i64.store (i32.const 160) (i64.const 0))
      (i32.store16 (i32.const 168) (i32.const 0))
      (drop (call $poll_oneoff (i32.const 128) (i32.const 192) (i32.const 1) (i32.const 240)))
      (br $l))))"#,
    )
    .expect("fixture WAT")
}

struct Fixture {
    _dir: tempfile::TempDir,
    module: PathBuf,
    rt: WasmRuntime,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = WasmOptions::new(dir.path().join("data"));
        opts.backoff = Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
            reset_after: Duration::from_secs(60),
        };
        opts.worker_threads = Some(2);
        let rt = WasmRuntime::new(opts).unwrap();
        let module = dir.path().join("sleeper.wasm");
        std::fs::write(&module, sleeper()).unwrap();
        Fixture {
            _dir: dir,
            module,
            rt,
        }
    }

    fn pod(&self, name: &str, c: impl FnOnce(&mut Container)) -> DesiredPod {
        let mut container = Container {
            name: "main".into(),
            image: format!("file://{}", self.module.display()),
            ..Container::default()
        };
        c(&mut container);
        DesiredPod {
            pod: Pod {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("default".into()),
                    uid: Some(format!("uid-{name}")),
                    ..ObjectMeta::default()
                },
                spec: PodSpec {
                    containers: vec![container],
                    restart_policy: Some(RestartPolicy::Always),
                    runtime_class_name: Some("wasmtime".into()),
                    ..PodSpec::default()
                },
                ..Pod::default()
            },
            config_maps: Vec::new(),
            secrets: Vec::new(),
        }
    }

    async fn wait(&self, name: &str, what: &str, ok: impl Fn(&PodStatus) -> bool) -> PodStatus {
        let key = PodKey::new("default", name);
        let start = Instant::now();
        loop {
            let st = self.rt.status(&key).await;
            if let Some(s) = st.as_ref().filter(|s| ok(s)) {
                return s.clone();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}: {st:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn main(s: &PodStatus) -> &ContainerStatus {
    &s.container_statuses[0]
}

fn running(s: &PodStatus) -> bool {
    main(s).state.as_ref().is_some_and(|st| st.running.is_some())
}

fn condition(s: &PodStatus, t: PodConditionType) -> bool {
    s.condition(t).is_some_and(|c| c.status.is_true())
}

/// A probe every second, failing or passing at the first result.
fn quick(probe: Probe) -> Probe {
    Probe {
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..probe
    }
}

fn tcp_probe(port: u16) -> Probe {
    quick(Probe {
        tcp_socket: Some(TcpSocketAction {
            port: IntOrString::Int(i32::from(port)),
            host: None,
        }),
        ..Probe::default()
    })
}

/// A loopback port that nothing listens on (yet).
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Listens on `port`, accepting and dropping connections, until dropped.
struct Listener(tokio::task::JoinHandle<()>);

impl Listener {
    async fn on(port: u16) -> Listener {
        let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        Listener(tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        }))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn readiness_follows_a_tcp_listener() {
    let f = Fixture::new();
    let port = free_port().await;
    f.rt.start(&f.pod("ready", |c| c.readiness_probe = Some(tcp_probe(port))))
        .await
        .unwrap();
    let s = f.wait("ready", "running, not ready", running).await;
    assert!(!main(&s).ready && !s.is_ready(), "{s:#?}");
    assert_eq!(main(&s).started, Some(true));
    assert_eq!(s.phase, Some(PodPhase::Running));
    let listener = Listener::on(port).await;
    let s = f.wait("ready", "ready", |s| main(s).ready && s.is_ready()).await;
    assert!(condition(&s, PodConditionType::ContainersReady));
    drop(listener);
    let s = f
        .wait("ready", "not ready again", |s| !main(s).ready && !s.is_ready())
        .await;
    assert!(!condition(&s, PodConditionType::ContainersReady));
    assert!(
        running(&s) && main(&s).restart_count == 0,
        "readiness never restarts: {s:#?}"
    );
}

#[tokio::test]
async fn startup_probe_gates_started_and_ready() {
    let f = Fixture::new();
    let port = free_port().await;
    let pod = f.pod("startup", |c| {
        c.startup_probe = Some(Probe {
            failure_threshold: Some(30),
            ..tcp_probe(port)
        });
    });
    f.rt.start(&pod).await.unwrap();
    let s = f.wait("startup", "running, not started", running).await;
    assert_eq!((main(&s).started, main(&s).ready), (Some(false), false), "{s:#?}");
    let _listener = Listener::on(port).await;
    let s = f.wait("startup", "started and ready", |s| main(s).ready).await;
    assert_eq!(main(&s).started, Some(true));
    assert!(s.is_ready());
}

/// Serves `GET` with the status in `code` (changeable), on loopback.
async fn http_server(code: Arc<AtomicU16>) -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let code = code.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let reply = format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\n\r\nok");
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn liveness_failure_restarts_with_back_off() {
    let f = Fixture::new();
    let code = Arc::new(AtomicU16::new(200));
    let (port, server) = http_server(code.clone()).await;
    let pod = f.pod("live", |c| {
        c.ports.push(ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(port),
            ..ContainerPort::default()
        });
        c.liveness_probe = Some(quick(Probe {
            http_get: Some(HttpGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::String("http".into()),
                ..HttpGetAction::default()
            }),
            ..Probe::default()
        }));
    });
    f.rt.start(&pod).await.unwrap();
    let s = f
        .wait("live", "running and ready", |s| running(s) && s.is_ready())
        .await;
    assert_eq!(main(&s).restart_count, 0);
    code.store(500, Ordering::SeqCst);
    let s = f
        .wait("live", "two restarts", |s| main(s).restart_count >= 2)
        .await;
    let last = main(&s).last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (137, Some("Error")));
    assert_eq!(
        last.message.as_deref(),
        Some("Liveness probe failed: HTTP probe failed with statuscode: 500")
    );
    assert_eq!(s.phase, Some(PodPhase::Running));
    // Healthy again: the next run stays up and ready.
    code.store(200, Ordering::SeqCst);
    f.wait("live", "running and ready again", |s| running(s) && s.is_ready())
        .await;
    server.abort();
}

#[tokio::test]
async fn exec_probes_fail_on_wasm_and_say_why() {
    let f = Fixture::new();
    let pod = f.pod("exec", |c| {
        c.liveness_probe = Some(quick(Probe {
            exec: Some(ExecAction {
                command: vec!["cat".into(), "/tmp/healthy".into()],
            }),
            ..Probe::default()
        }));
    });
    f.rt.start(&pod).await.unwrap();
    let s = f.wait("exec", "a restart", |s| main(s).restart_count >= 1).await;
    let last = main(&s).last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        last.message.as_deref(),
        Some(format!("Liveness probe failed: {EXEC_UNSUPPORTED}").as_str())
    );
}
