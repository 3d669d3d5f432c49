//! Conformance tests of the Wasm runtime against fixtures written in WAT
//! (WASI preview 1 modules), plus a preview 2 component from
//! `wasm-examples/` when it has been built. Every wait has a deadline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shturman_api::core::container::KeySelector;
use shturman_api::core::pod::{ConfigMapVolumeSource, EmptyDirVolumeSource};
use shturman_api::core::{
    ConfigMap, Container, ContainerStatus, EnvVar, EnvVarSource, Pod, PodPhase, PodSpec, PodStatus,
    RestartPolicy, Secret, Volume, VolumeMount,
};
use shturman_api::meta::ObjectMeta;
use shturman_api::quantity::Quantity;
use shturman_api::wire::DesiredPod;

use super::lifecycle::{Backoff, CRASH_LOOP_BACK_OFF, ERR_IMAGE_PULL, IMAGE_PULL_BACK_OFF};
use super::runtime::{WasmOptions, WasmRuntime};
use crate::plan::PodKey;
use crate::runtime::Runtime;

const DEADLINE: Duration = Duration::from_secs(30);

/// The WASI preview 1 imports the fixtures use, a `$print` helper and memory.
fn module(body: &str, data: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; iovec at 0, nwritten at 8, scratch 16..64, data from 64, buffers from 1024.
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  ;; Sleeps $ns nanoseconds: one relative clock subscription at 128, event at 192.
  (func $sleep (param $ns i64)
    (i64.store (i32.const 128) (i64.const 0))
    (i32.store8 (i32.const 136) (i32.const 0))
    (i32.store (i32.const 144) (i32.const 1))
    (i64.store (i32.const 152) (local.get $ns))
    (i64.store (i32.const 160) (i64.const 0))
    (i32.store16 (i32.const 168) (i32.const 0))
    (drop (call $poll_oneoff (i32.const 128) (i32.const 192) (i32.const 1) (i32.const 240))))
  {data}
  (func (export "_start") {body}))"#
    );
    wat::parse_str(&text).expect("fixture WAT")
}

fn hello() -> Vec<u8> {
    module(
        r#"(call $print (i32.const 64) (i32.const 6))"#,
        r#"(data (i32.const 64) "hello\n")"#,
    )
}

fn exits(code: i32) -> Vec<u8> {
    module(&format!("(call $proc_exit (i32.const {code}))"), "")
}

fn traps() -> Vec<u8> {
    module(
        r#"(call $print (i32.const 64) (i32.const 9)) unreachable"#,
        r#"(data (i32.const 64) "crashing\n")"#,
    )
}

/// Grows memory by 1 MiB at a time, forever.
fn grows() -> Vec<u8> {
    module("(loop $l (drop (memory.grow (i32.const 16))) (br $l))", "")
}

fn spins() -> Vec<u8> {
    module("(loop $l (br $l))", "")
}

/// Prints `tick` every 20 ms, forever.
fn ticker() -> Vec<u8> {
    module(
        r#"(loop $l (call $print (i32.const 64) (i32.const 5)) (call $sleep (i64.const 20000000)) (br $l))"#,
        r#"(data (i32.const 64) "tick\n")"#,
    )
}

/// Opens `path` relative to fd 3 (the first preopen), prints its contents,
/// then prints the environment; exits with the errno if the open fails.
fn reader(path: &str) -> Vec<u8> {
    let len = path.len();
    module(
        &format!(
            r#"(local $err i32)
    (local.set $err (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const {len})
        (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16)))
    (if (local.get $err) (then (call $proc_exit (local.get $err))))
    (i32.store (i32.const 20) (i32.const 1024))
    (i32.store (i32.const 24) (i32.const 1024))
    (drop (call $fd_read (i32.load (i32.const 16)) (i32.const 20) (i32.const 1) (i32.const 28)))
    (call $print (i32.const 1024) (i32.load (i32.const 28)))
    (drop (call $environ_sizes_get (i32.const 32) (i32.const 36)))
    (drop (call $environ_get (i32.const 4096) (i32.const 8192)))
    (call $print (i32.const 8192) (i32.load (i32.const 36)))"#
        ),
        &format!(r#"(data (i32.const 64) "{path}")"#),
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    rt: WasmRuntime,
}

impl Fixture {
    fn new(threads: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = WasmOptions::new(dir.path().join("data"));
        opts.backoff = Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(400),
            reset_after: Duration::from_secs(60),
        };
        opts.worker_threads = Some(threads);
        let rt = WasmRuntime::new(opts).unwrap();
        Fixture { dir, rt }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.wasm"));
        std::fs::write(&p, bytes).unwrap();
        p
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
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn lines(&self, key: &PodKey) -> Vec<String> {
        self.rt
            .logs()
            .tail(key, "main", None, false)
            .map(|v| v.into_iter().map(|l| l.text).collect())
            .unwrap_or_default()
    }
}

fn pod(name: &str, image: &Path, policy: RestartPolicy) -> DesiredPod {
    DesiredPod {
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            spec: PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: format!("file://{}", image.display()),
                    ..Container::default()
                }],
                restart_policy: Some(policy),
                runtime_class_name: Some("wasmtime".into()),
                ..PodSpec::default()
            },
            ..Pod::default()
        },
        config_maps: Vec::new(),
        secrets: Vec::new(),
    }
}

fn key(name: &str) -> PodKey {
    PodKey::new("default", name)
}

fn main(s: &PodStatus) -> &ContainerStatus {
    &s.container_statuses[0]
}

fn terminated(s: &PodStatus) -> Option<(i32, String, String)> {
    let t = main(s).state.as_ref()?.terminated.as_ref()?;
    Some((
        t.exit_code,
        t.reason.clone().unwrap_or_default(),
        t.message.clone().unwrap_or_default(),
    ))
}

fn waiting_reason(s: &PodStatus) -> Option<String> {
    main(s).state.as_ref()?.waiting.as_ref()?.reason.clone()
}

#[tokio::test]
async fn prints_and_completes() {
    let f = Fixture::new(2);
    let m = f.write("hello", &hello());
    f.rt.start(&pod("hello", &m, RestartPolicy::Never)).await.unwrap();
    let s = f
        .wait(&key("hello"), "Succeeded", |s| {
            s.phase == Some(PodPhase::Succeeded)
        })
        .await;
    assert_eq!(terminated(&s), Some((0, "Completed".into(), String::new())));
    assert_eq!(f.lines(&key("hello")), ["hello"]);
    // Unchanged pods give identical statuses (nothing to report again).
    assert_eq!(f.rt.status(&key("hello")).await, Some(s.clone()));
    assert!(main(&s).image_id.as_deref().unwrap().starts_with("sha256:"));
}

#[tokio::test]
async fn reports_exit_codes() {
    let f = Fixture::new(2);
    let m = f.write("exit3", &exits(3));
    f.rt.start(&pod("exit3", &m, RestartPolicy::Never)).await.unwrap();
    let s = f
        .wait(&key("exit3"), "Failed", |s| s.phase == Some(PodPhase::Failed))
        .await;
    assert_eq!(terminated(&s).map(|t| (t.0, t.1)), Some((3, "Error".into())));
}

#[tokio::test]
async fn traps_restart_with_back_off() {
    let f = Fixture::new(2);
    let m = f.write("trap", &traps());
    f.rt.start(&pod("trap", &m, RestartPolicy::OnFailure))
        .await
        .unwrap();
    let s = f
        .wait(&key("trap"), "two restarts in back-off", |s| {
            main(s).restart_count >= 2 && waiting_reason(s).as_deref() == Some(CRASH_LOOP_BACK_OFF)
        })
        .await;
    let last = main(&s).last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.reason.as_deref(), Some("Error"));
    let message = last.message.as_deref().unwrap();
    assert!(message.contains("unreachable"), "{last:?}");
    assert!(!message.contains("wasm trap: wasm trap"), "{last:?}");
    assert_eq!(s.phase, Some(PodPhase::Running));
    // The previous run's output is kept for `logs --previous`.
    let prev = f.rt.logs().tail(&key("trap"), "main", None, true).unwrap();
    assert_eq!(prev[0].text, "crashing");
}

#[tokio::test]
async fn memory_past_the_limit_is_oom_killed_and_others_run_on() {
    let f = Fixture::new(2);
    let t = f.write("ticker", &ticker());
    f.rt.start(&pod("ticker", &t, RestartPolicy::Always))
        .await
        .unwrap();
    let m = f.write("grow", &grows());
    let mut p = pod("grow", &m, RestartPolicy::Never);
    p.pod.spec.containers[0]
        .resources
        .limits
        .insert("memory".into(), Quantity::parse("64Mi").unwrap());
    f.rt.start(&p).await.unwrap();
    let s = f
        .wait(&key("grow"), "OOMKilled", |s| terminated(s).is_some())
        .await;
    let (code, reason, message) = terminated(&s).unwrap();
    assert_eq!((code, reason.as_str()), (137, "OOMKilled"));
    assert!(message.contains("67108864"), "{message}");
    let before = f.lines(&key("ticker")).len();
    f.wait(&key("ticker"), "ticker still ticking", |_| {
        f.lines(&key("ticker")).len() > before + 2
    })
    .await;
}

#[tokio::test]
async fn a_spinning_module_does_not_starve_others_and_stops() {
    // One executor thread: only epoch yields let the ticker run at all.
    let f = Fixture::new(1);
    let s = f.write("spin", &spins());
    let mut p = pod("spin", &s, RestartPolicy::Always);
    p.pod.spec.containers[0]
        .resources
        .limits
        .insert("cpu".into(), Quantity::parse("500m").unwrap());
    f.rt.start(&p).await.unwrap();
    f.rt.start(&pod("spin-free", &s, RestartPolicy::Always))
        .await
        .unwrap();
    let t = f.write("ticker", &ticker());
    f.rt.start(&pod("ticker", &t, RestartPolicy::Always))
        .await
        .unwrap();
    f.wait(&key("ticker"), "ten ticks beside two spinners", |_| {
        f.lines(&key("ticker")).len() >= 10
    })
    .await;
    assert_eq!(
        f.rt.compiled_modules(),
        2,
        "the spinner compiled once for two pods"
    );
    let began = Instant::now();
    f.rt.stop(&key("spin-free"), Duration::from_secs(5))
        .await
        .unwrap();
    f.rt.stop(&key("spin"), Duration::from_secs(5)).await.unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        began.elapsed()
    );
    assert!(f.rt.status(&key("spin")).await.is_none());
    let before = f.lines(&key("ticker")).len();
    f.wait(&key("ticker"), "ticker still ticking", |_| {
        f.lines(&key("ticker")).len() > before + 2
    })
    .await;
}

#[tokio::test]
async fn files_outside_volumes_are_denied() {
    let f = Fixture::new(2);
    // No volume at all: there is no directory to open anything in.
    let m = f.write("passwd", &reader("/etc/passwd"));
    f.rt.start(&pod("passwd", &m, RestartPolicy::Never))
        .await
        .unwrap();
    let s = f
        .wait(&key("passwd"), "Failed", |s| s.phase == Some(PodPhase::Failed))
        .await;
    assert_ne!(terminated(&s).unwrap().0, 0);
    // With a volume, `..` cannot climb out of it.
    let m = f.write("escape", &reader("../../../../etc/passwd"));
    let mut p = pod("escape", &m, RestartPolicy::Never);
    p.pod.spec.volumes.push(Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    p.pod.spec.containers[0].volume_mounts.push(VolumeMount {
        name: "scratch".into(),
        mount_path: "/data".into(),
        ..VolumeMount::default()
    });
    f.rt.start(&p).await.unwrap();
    let s = f
        .wait(&key("escape"), "Failed", |s| s.phase == Some(PodPhase::Failed))
        .await;
    assert_ne!(terminated(&s).unwrap().0, 0);
    assert!(f.lines(&key("escape")).iter().all(|l| !l.contains("root:")));
}

#[tokio::test]
async fn reads_a_mounted_config_file_and_env() {
    let f = Fixture::new(2);
    let m = f.write("reader", &reader("greeting.txt"));
    let mut p = pod("reader", &m, RestartPolicy::Never);
    let mut cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("cfg".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    cm.data
        .insert("greeting.txt".into(), "from the configmap\n".into());
    p.config_maps.push(cm);
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some("creds".into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    secret.string_data.insert("token".into(), "s3cret".into());
    p.secrets.push(secret);
    p.pod.spec.volumes.push(Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    let c = &mut p.pod.spec.containers[0];
    c.volume_mounts.push(VolumeMount {
        name: "config".into(),
        mount_path: "/config".into(),
        ..VolumeMount::default()
    });
    c.env.push(EnvVar {
        name: "TOKEN".into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(KeySelector {
                name: "creds".into(),
                key: "token".into(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    });
    f.rt.start(&p).await.unwrap();
    let s = f
        .wait(&key("reader"), "Succeeded", |s| {
            s.phase == Some(PodPhase::Succeeded)
        })
        .await;
    assert_eq!(terminated(&s).unwrap().0, 0);
    let lines = f.lines(&key("reader"));
    assert_eq!(lines[0], "from the configmap");
    assert!(lines[1].contains("TOKEN=s3cret"), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("PATH=")),
        "no inherited env: {lines:?}"
    );
}

#[tokio::test]
async fn a_wrong_pin_never_runs_and_says_why() {
    let f = Fixture::new(2);
    let m = f.write("pinned", &hello());
    let wrong = "0".repeat(64);
    let mut p = pod("pinned", &m, RestartPolicy::Always);
    p.pod.spec.containers[0].image = format!("file://{}#sha256={wrong}", m.display());
    f.rt.start(&p).await.unwrap();
    let s = f
        .wait(&key("pinned"), "image pull back-off", |s| {
            waiting_reason(s).as_deref() == Some(IMAGE_PULL_BACK_OFF)
                || waiting_reason(s).as_deref() == Some(ERR_IMAGE_PULL)
        })
        .await;
    let msg = main(&s)
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap();
    let actual = super::reference::digest(&hello());
    assert!(msg.contains(&wrong) && msg.contains(&actual), "{msg}");
    assert_eq!(s.phase, Some(PodPhase::Pending));
    assert!(f.lines(&key("pinned")).is_empty());
    assert!(main(&s).started.is_none());
}

fn example(name: &str, target: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../wasm-examples/{name}/target/{target}/release/{name}.wasm"
    ));
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

/// The Rust `hello` example as a preview 2 component and a preview 1
/// module, with args, env and a mounted config file; skipped with a note
/// when `scripts/build-wasm-examples.sh` has not run.
#[tokio::test]
async fn runs_the_hello_example_as_component_and_module() {
    let f = Fixture::new(2);
    for target in ["wasm32-wasip2", "wasm32-wasip1"] {
        let Some(path) = example("hello", target) else {
            continue;
        };
        let name = format!("hello-{}", &target[7..]);
        let mut p = pod(&name, &path, RestartPolicy::Never);
        let mut cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("cfg".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        cm.data.insert("greeting.txt".into(), "from the configmap".into());
        p.config_maps.push(cm);
        p.pod.spec.volumes.push(Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "cfg".into(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        let c = &mut p.pod.spec.containers[0];
        c.args = vec!["--flag".into()];
        c.env.push(EnvVar {
            name: "GREETING_TARGET".into(),
            value: Some("edge".into()),
            value_from: None,
        });
        c.volume_mounts.push(VolumeMount {
            name: "config".into(),
            mount_path: "/config".into(),
            ..VolumeMount::default()
        });
        f.rt.start(&p).await.unwrap();
        let s = f
            .wait(&key(&name), "Succeeded", |s| s.phase == Some(PodPhase::Succeeded))
            .await;
        assert_eq!(terminated(&s).unwrap().0, 0);
        let text = f.lines(&key(&name)).join("\n");
        for want in [
            "Hello from Wasm, edge!",
            "arg[1]=--flag",
            "env GREETING_TARGET=edge",
            "config /config/greeting.txt: from the configmap",
        ] {
            assert!(text.contains(want), "{target}: {want:?} not in {text}");
        }
    }
}

/// The Rust `ticker` component runs until stopped and its lines can be followed.
#[tokio::test]
async fn follows_the_ticker_example() {
    let Some(path) = example("ticker", "wasm32-wasip2") else {
        return;
    };
    let f = Fixture::new(2);
    f.rt.start(&pod("ticker", &path, RestartPolicy::Always))
        .await
        .unwrap();
    f.wait(&key("ticker"), "Running", |s| s.phase == Some(PodPhase::Running))
        .await;
    let mut rx = f.rt.logs().follow(&key("ticker"), "main").unwrap();
    let line = tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap().unwrap();
    assert!(line.text.contains("tick"), "{line:?}");
    f.rt.stop(&key("ticker"), Duration::from_secs(5)).await.unwrap();
    assert!(f.rt.status(&key("ticker")).await.is_none());
}

/// The shipped manifests parse and validate.
#[test]
fn example_manifests_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasm-examples/manifests");
    for name in ["ticker-deployment.yaml", "hello-pod.yaml", "seed-deployment.yaml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let docs = shturman_api::manifest::parse_manifests(name, &text);
        assert!(docs.is_ok(), "{name}: {docs:?}");
    }
}

/// The pooling allocator (opt-in, 64-bit) runs modules and components too.
#[tokio::test]
async fn runs_with_the_pooling_allocator() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = WasmOptions::new(dir.path().join("data"));
    opts.engine.pooling_slots = Some(8);
    let rt = WasmRuntime::new(opts).unwrap();
    let f = Fixture { dir, rt };
    let m = f.write("hello", &hello());
    let mut images = vec![m];
    images.extend(example("hello", "wasm32-wasip2"));
    for (i, image) in images.iter().enumerate() {
        let name = format!("pooled-{i}");
        f.rt.start(&pod(&name, image, RestartPolicy::Never))
            .await
            .unwrap();
        f.wait(&key(&name), "Succeeded", |s| s.phase == Some(PodPhase::Succeeded))
            .await;
    }
}

/// Spins, printing a line every 2^22 loop iterations.
fn counter() -> Vec<u8> {
    module(
        r#"(local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (if (i32.eqz (i32.and (local.get $i) (i32.const 0x3fffff)))
        (then (call $print (i32.const 64) (i32.const 2))))
      (br $l))"#,
        r#"(data (i32.const 64) "x\n")"#,
    )
}

/// A 100m CPU limit holds a spinner well below an unlimited one beside it.
#[tokio::test]
async fn cpu_limits_throttle_a_spinner() {
    let f = Fixture::new(2);
    let m = f.write("counter", &counter());
    let mut limited = pod("limited", &m, RestartPolicy::Always);
    limited.pod.spec.containers[0]
        .resources
        .limits
        .insert("cpu".into(), Quantity::parse("100m").unwrap());
    f.rt.start(&limited).await.unwrap();
    f.rt.start(&pod("free", &m, RestartPolicy::Always)).await.unwrap();
    f.wait(&key("free"), "40 lines from the unlimited spinner", |_| {
        f.lines(&key("free")).len() >= 40
    })
    .await;
    let (free, limited) = (f.lines(&key("free")).len(), f.lines(&key("limited")).len());
    eprintln!("cpu: limited {limited} lines, unlimited {free}");
    assert!(limited * 2 < free, "limited {limited} lines vs unlimited {free}");
}

/// The back-off's base can be shortened (for tests); anything else keeps kubelet's.
#[test]
fn back_off_base_from_the_environment() {
    use super::runtime::backoff_with_base;
    assert_eq!(backoff_with_base(None), Backoff::default());
    let short = backoff_with_base(Some("500"));
    assert_eq!(short.base, Duration::from_millis(500));
    assert_eq!(
        (short.max, short.reset_after),
        (Backoff::default().max, Backoff::default().reset_after)
    );
    for bad in ["", "0", "-5", "10s"] {
        assert_eq!(backoff_with_base(Some(bad)), Backoff::default(), "{bad:?}");
    }
}
