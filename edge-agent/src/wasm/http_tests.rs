//! HTTP pods in the Wasm runtime: the built `wasm-examples/http-hello`
//! component served on a loopback pod IP (`127.42.N.0/24`, one N per test
//! so tests can run at once), answered per request by fresh instances,
//! concurrently, within each instance's memory limit and the request
//! timeout; outbound requests only to the service CIDR and only when the
//! pod opts in; `PortConflict` when pods share the node's IP. Skipped with
//! a note when `scripts/build-wasm-examples.sh` has not run. Every wait has
//! a deadline.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shturman_api::core::container::{ContainerPort, HttpGetAction, ObjectFieldSelector, Probe};
use shturman_api::core::pod::EmptyDirVolumeSource;
use shturman_api::core::{
    Container, EnvVar, EnvVarSource, Pod, PodPhase, PodSpec, PodStatus, RestartPolicy, Volume, VolumeMount,
};
use shturman_api::intstr::IntOrString;
use shturman_api::meta::ObjectMeta;
use shturman_api::quantity::Quantity;
use shturman_api::wire::DesiredPod;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::http::{ALLOW_OUTBOUND_ANNOTATION, HttpOptions};
use super::lifecycle::{Backoff, CREATE_CONTAINER_CONFIG_ERROR};
use super::runtime::{PORT_CONFLICT, WasmOptions, WasmRuntime};
use crate::config::parse_cidr;
use crate::plan::PodKey;
use crate::podip::NetworkSettings;
use crate::runtime::Runtime;

const DEADLINE: Duration = Duration::from_secs(30);

fn http_hello() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../wasm-examples/http-hello/target/wasm32-wasip2/release/http_hello.wasm");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipped: {} not built (scripts/build-wasm-examples.sh)",
            path.display()
        );
        None
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    rt: WasmRuntime,
}

impl Fixture {
    fn new(network: NetworkSettings, http: HttpOptions) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = WasmOptions::new(dir.path().join("data"));
        opts.backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
            reset_after: Duration::from_secs(60),
        };
        opts.worker_threads = Some(2);
        opts.network = network;
        opts.http = http;
        let rt = WasmRuntime::new(opts).unwrap();
        Fixture { _dir: dir, rt }
    }

    /// Pods get `127.42.<n>.0/24` addresses.
    fn with_cidr(n: u8) -> Fixture {
        Fixture::new(
            NetworkSettings {
                pod_cidr: Some(parse_cidr(&format!("127.42.{n}.0/24")).unwrap()),
                service_cidr: parse_cidr(&format!("127.43.{n}.0/24")).unwrap(),
                ..NetworkSettings::default()
            },
            HttpOptions::default(),
        )
    }

    async fn wait(&self, key: &PodKey, what: &str, ok: impl Fn(&PodStatus) -> bool) -> PodStatus {
        let start = Instant::now();
        loop {
            let st = self.rt.status(key).await;
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

    /// Waits until the pod is Running and Ready; its address.
    async fn serving(&self, name: &str, port: u16) -> SocketAddr {
        let st = self
            .wait(&key(name), "Running and Ready", |s| {
                s.phase == Some(PodPhase::Running) && s.is_ready()
            })
            .await;
        let ip: IpAddr = st.pod_ip.as_deref().unwrap().parse().unwrap();
        assert_eq!(st.pod_ips.len(), 1);
        assert_eq!(st.pod_ips[0].ip, ip.to_string());
        SocketAddr::new(ip, port)
    }

    fn lines(&self, name: &str) -> Vec<String> {
        self.rt
            .logs()
            .tail(&key(name), "web", None, false)
            .map(|v| v.into_iter().map(|l| l.text).collect())
            .unwrap_or_default()
    }
}

fn key(name: &str) -> PodKey {
    PodKey::new("default", name)
}

/// An http-hello pod: `POD_NAME` from the downward API, an emptyDir at
/// `/data` for its counter, listening on `port`.
fn pod(name: &str, image: &Path, port: Option<i32>) -> DesiredPod {
    let web = Container {
        name: "web".into(),
        image: format!("file://{}", image.display()),
        env: vec![EnvVar {
            name: "POD_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        }],
        ports: port
            .map(|p| ContainerPort {
                container_port: p,
                ..ContainerPort::default()
            })
            .into_iter()
            .collect(),
        volume_mounts: vec![VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            ..VolumeMount::default()
        }],
        ..Container::default()
    };
    DesiredPod {
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            spec: PodSpec {
                containers: vec![web],
                restart_policy: Some(RestartPolicy::Always),
                runtime_class_name: Some("wasmtime".into()),
                volumes: vec![Volume {
                    name: "data".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                }],
                ..PodSpec::default()
            },
            ..Pod::default()
        },
        config_maps: Vec::new(),
        secrets: Vec::new(),
    }
}

/// `GET path` over a fresh connection: status and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, body.to_string())
    };
    tokio::time::timeout(DEADLINE, go).await.expect("GET timed out")
}

#[tokio::test]
async fn serves_http_hello_on_its_own_pod_ip_with_a_counter_and_access_log() {
    let Some(wasm) = http_hello() else { return };
    let f = Fixture::with_cidr(201);
    f.rt.start(&pod("web-a", &wasm, Some(8080))).await.unwrap();
    f.rt.start(&pod("web-b", &wasm, Some(8080))).await.unwrap();
    let a = f.serving("web-a", 8080).await;
    let b = f.serving("web-b", 8080).await;
    // Each pod its own address (network and gateway skipped), same port.
    assert_eq!(a, "127.42.201.2:8080".parse().unwrap());
    assert_eq!(b, "127.42.201.3:8080".parse().unwrap());
    let st = f.rt.status(&key("web-a")).await.unwrap();
    let c = &st.container_statuses[0];
    assert!(c.state.as_ref().unwrap().running.is_some(), "{c:?}");
    assert_eq!((c.ready, c.started), (true, Some(true)));

    // Fresh instances per request; the counter lives in the emptyDir.
    assert_eq!(get(a, "/").await, (200, "hello from web-a (request #1)\n".into()));
    assert_eq!(get(a, "/").await, (200, "hello from web-a (request #2)\n".into()));
    assert_eq!(get(b, "/").await, (200, "hello from web-b (request #1)\n".into()));

    // One access-log line per request in the container's log.
    let lines = f.lines("web-a");
    let access: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("\"GET / HTTP/1.1\" 200"))
        .collect();
    assert_eq!(access.len(), 2, "{lines:#?}");
    assert!(access[0].starts_with("127.0.0.1:"), "{}", access[0]);
    assert!(access[0].contains(" 200 30 "), "status, bytes: {}", access[0]);

    // Stopping releases the address: the next pod gets the next free one,
    // never one in use.
    f.rt.stop(&key("web-a"), Duration::from_secs(1)).await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(a).await.is_err(),
        "listener closed"
    );
    f.rt.start(&pod("web-c", &wasm, Some(8080))).await.unwrap();
    let c = f.serving("web-c", 8080).await;
    assert_eq!(c.ip().to_string(), "127.42.201.4");
    assert_eq!(get(c, "/x").await.0, 200);
}

#[tokio::test]
async fn concurrent_requests_each_get_an_instance_and_readiness_probes_hit_the_pod_ip() {
    let Some(wasm) = http_hello() else { return };
    let f = Fixture::new(
        NetworkSettings {
            pod_cidr: Some(parse_cidr("127.42.202.0/24").unwrap()),
            ..NetworkSettings::default()
        },
        HttpOptions {
            max_concurrency: 4,
            ..HttpOptions::default()
        },
    );
    let mut p = pod("busy", &wasm, Some(8080));
    p.pod.spec.containers[0].readiness_probe = Some(Probe {
        http_get: Some(HttpGetAction {
            path: Some("/ready".into()),
            port: IntOrString::Int(8080),
            ..HttpGetAction::default()
        }),
        period_seconds: Some(1),
        ..Probe::default()
    });
    f.rt.start(&p).await.unwrap();
    let addr = f.serving("busy", 8080).await;
    let n = 24;
    let started = Instant::now();
    let replies = futures_join(
        (0..n)
            .map(|i| async move {
                // Some spin a little, so requests really overlap.
                let path = if i % 3 == 0 {
                    "/spin/100".to_string()
                } else {
                    "/".to_string()
                };
                get(addr, &path).await
            })
            .collect(),
    )
    .await;
    for (status, body) in &replies {
        assert_eq!(*status, 200, "{body}");
    }
    let hellos = replies
        .iter()
        .filter(|(_, b)| b.starts_with("hello from busy"))
        .count();
    assert_eq!(hellos, n - n / 3);
    assert!(started.elapsed() < DEADLINE);
    // Every request appended to the counter (the probe's too): a request
    // now sees all of them.
    let (_, body) = get(addr, "/").await;
    let count: usize = body
        .trim_end()
        .trim_end_matches(')')
        .rsplit('#')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(count > hellos, "{body}");
    let probes = f
        .lines("busy")
        .iter()
        .filter(|l| l.contains("\"GET /ready HTTP/1.1\" 200"))
        .count();
    assert!(
        probes >= 1,
        "the readiness probe reached the pod IP: {:#?}",
        f.lines("busy")
    );
}

/// Joins futures (no `futures` dependency in the agent).
async fn futures_join<F: std::future::Future<Output = (u16, String)> + Send + 'static>(
    futs: Vec<F>,
) -> Vec<(u16, String)> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn memory_limit_applies_per_instance_and_timeouts_answer_504() {
    let Some(wasm) = http_hello() else { return };
    let f = Fixture::new(
        NetworkSettings {
            pod_cidr: Some(parse_cidr("127.42.203.0/24").unwrap()),
            ..NetworkSettings::default()
        },
        HttpOptions {
            request_timeout: Duration::from_secs(1),
            ..HttpOptions::default()
        },
    );
    let mut p = pod("small", &wasm, Some(8081));
    p.pod.spec.containers[0]
        .resources
        .limits
        .insert("memory".into(), Quantity::parse("32Mi").unwrap());
    f.rt.start(&p).await.unwrap();
    let addr = f.serving("small", 8081).await;
    assert_eq!(get(addr, "/alloc/8").await.0, 200);
    // Over the limit: that instance is stopped, the request answered 500 …
    let (status, _) = get(addr, "/alloc/64").await;
    assert_eq!(status, 500);
    // … and the next ones get fresh instances: 8 MiB fits again.
    assert_eq!(get(addr, "/alloc/8").await.0, 200);
    assert_eq!(get(addr, "/").await.0, 200);
    let line = f
        .lines("small")
        .into_iter()
        .find(|l| l.contains("/alloc/64"))
        .unwrap();
    assert!(
        line.contains("\" 500 ") && line.contains("memory limit exceeded"),
        "{line}"
    );

    // A request that runs past the timeout is stopped: 504, in about a second.
    let started = Instant::now();
    assert_eq!(get(addr, "/spin/10000").await.0, 504);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The pod never restarted.
    let st = f.rt.status(&key("small")).await.unwrap();
    assert_eq!(st.container_statuses[0].restart_count, 0);
    assert!(st.is_ready());
}

/// A tiny HTTP server on `addr` answering `hello` to anything.
async fn backend(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n")
                    .await;
            });
        }
    })
}

#[tokio::test]
async fn outbound_requests_reach_the_service_cidr_only_when_allowed() {
    let Some(wasm) = http_hello() else { return };
    let f = Fixture::with_cidr(204);
    // A "Service" inside the service CIDR (127.43.204.0/24), one outside.
    let service: SocketAddr = "127.43.204.10:18080".parse().unwrap();
    let outside: SocketAddr = "127.44.204.10:18080".parse().unwrap();
    let _s = backend(service).await;
    let _o = backend(outside).await;

    f.rt.start(&pod("closed", &wasm, Some(8080))).await.unwrap();
    let mut open = pod("open", &wasm, Some(8080));
    open.pod.metadata.annotations =
        BTreeMap::from([(ALLOW_OUTBOUND_ANNOTATION.to_string(), "services".to_string())]);
    f.rt.start(&open).await.unwrap();
    let closed = f.serving("closed", 8080).await;
    let open_addr = f.serving("open", 8080).await;

    let (status, body) = get(closed, &format!("/call/{service}/x")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert!(
        f.lines("closed")
            .iter()
            .any(|l| l.contains("outbound requests are off")),
        "the denial is in the pod's log: {:#?}",
        f.lines("closed")
    );

    let (status, body) = get(open_addr, &format!("/call/{service}/x")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "127.43.204.10:18080 answered 200: hello\n")
    );
    let (status, body) = get(open_addr, &format!("/call/{outside}/x")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("DestinationIpProhibited"), "{body}");
}

#[tokio::test]
async fn waits_without_a_port_and_on_a_port_conflict_without_a_pod_cidr() {
    let Some(wasm) = http_hello() else { return };
    // No --pod-cidr: pods share the node's IP (here 127.42.205.1).
    let f = Fixture::new(
        NetworkSettings {
            node_ip: Some("127.42.205.1".parse().unwrap()),
            ..NetworkSettings::default()
        },
        HttpOptions::default(),
    );
    f.rt.start(&pod("noport", &wasm, None)).await.unwrap();
    let st = f
        .wait(&key("noport"), "waiting for a port", |s| {
            s.container_statuses[0]
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some(CREATE_CONTAINER_CONFIG_ERROR))
        })
        .await;
    let w = st.container_statuses[0]
        .state
        .as_ref()
        .unwrap()
        .waiting
        .clone()
        .unwrap();
    assert!(w.message.unwrap().contains("containerPort"));

    f.rt.start(&pod("first", &wasm, Some(8082))).await.unwrap();
    let first = f.serving("first", 8082).await;
    assert_eq!(first, "127.42.205.1:8082".parse().unwrap());
    f.rt.start(&pod("second", &wasm, Some(8082))).await.unwrap();
    let st = f
        .wait(&key("second"), "PortConflict", |s| {
            s.container_statuses[0]
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some(PORT_CONFLICT))
        })
        .await;
    let message = st.container_statuses[0]
        .state
        .as_ref()
        .unwrap()
        .waiting
        .clone()
        .unwrap()
        .message
        .unwrap();
    assert!(
        message.contains("port 8082") && message.contains("default/first") && message.contains("--pod-cidr"),
        "{message}"
    );
    assert_eq!(st.pod_ip.as_deref(), Some("127.42.205.1"));
    // Once the first goes, the second serves (after its back-off).
    f.rt.stop(&key("first"), Duration::from_secs(1)).await.unwrap();
    let second = f.serving("second", 8082).await;
    assert_eq!(get(second, "/").await.1, "hello from second (request #1)\n");
}

/// The shipped manifest (Deployment + Service) parses and validates.
#[test]
fn the_http_hello_manifest_parses() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasm-examples/manifests/http-hello-deployment.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs = shturman_api::manifest::parse_manifests("http-hello-deployment.yaml", &text);
    assert!(docs.as_ref().is_ok_and(|d| d.len() == 2), "{docs:?}");
}
