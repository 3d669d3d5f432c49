//! Wasm modules from an OCI registry, end to end: the real registry
//! (`docker-registry`, tests/src/registry.rs) on loopback, the `hello`
//! example published to it as a CNCF Wasm OCI artifact
//! (tests/src/wasm_artifact.rs), and the real `shturman up` whose local
//! agent pulls it with its own registry client (not containerd) and runs it
//! with `runtimeClassName: wasmtime`: by tag and by digest from an open
//! registry; from a registry behind htpasswd auth, `ErrImagePull` then
//! `ImagePullBackOff` naming the 401 without credentials, and a run with a
//! `kubernetes.io/dockerconfigjson` Secret in `imagePullSecrets`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use shturman_e2e::api::{Api, eventually};
use shturman_e2e::registry::Registry;
use shturman_e2e::wasm_artifact::{Published, publish};
use shturman_e2e::{Up, stderr, stdout, workspace_root};

/// Restart and pull back-off base (kubelet's is 10 s).
const BACKOFF_MS: &str = "500";
const WAIT: Duration = Duration::from_secs(90);

/// A built example module; scripts/test.sh builds them first.
fn example(name: &str, target: &str) -> Vec<u8> {
    let p: PathBuf = workspace_root().join(format!(
        "wasm-examples/{name}/target/{target}/release/{name}.wasm"
    ));
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-wasm-examples.sh (scripts/test.sh does)",
        p.display()
    );
    std::fs::read(&p).unwrap()
}

fn up() -> Up {
    tokio::task::block_in_place(|| {
        Up::start_with_env(
            Some("edge-reg"),
            &["--containerd-socket", "none"],
            &[("SHTURMAN_RESTART_BACKOFF_BASE_MS", BACKOFF_MS)],
        )
    })
    .expect("shturman up")
}

fn token(up: &Up) -> String {
    std::fs::read_to_string(up.admin_conf())
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .unwrap()
}

/// A run-to-completion `hello` pod of `image`, with extra spec lines.
fn hello_pod(name: &str, image: &str, extra_spec: &str, pull_policy: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  runtimeClassName: wasmtime
  restartPolicy: Never
{extra_spec}  containers:
  - name: hello
    image: {image}
    imagePullPolicy: {pull_policy}
    env:
    - name: GREETING_TARGET
      value: registry
"
    )
}

fn apply(up: &Up, manifest: &str) {
    let out = tokio::task::block_in_place(|| up.cli_stdin(&["apply", "-f", "-"], Some(manifest)));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Waits until pod `name` has Succeeded; returns it.
async fn succeeded(api: &Api, up: &Up, name: &str) -> Value {
    eventually(&format!("{name} Succeeded"), WAIT, || async {
        let (_, p) = api
            .get(&format!("/api/v1/namespaces/default/pods/{name}"))
            .await?;
        if p["status"]["phase"] == "Failed" {
            anyhow::bail!("{name} failed: {}", p["status"]);
        }
        Ok((p["status"]["phase"] == "Succeeded").then_some(p))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", up.log_text()))
}

/// `shturman logs NAME` shows the module's greeting.
fn assert_greets(up: &Up, name: &str) {
    let out = tokio::task::block_in_place(|| up.cli(&["logs", name]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Hello from Wasm, registry!"),
        "logs of {name}: {}",
        stdout(&out)
    );
}

fn cached(up: &Up, p: &Published) -> bool {
    up.data_dir()
        .join(format!("agent/wasm/modules/{}.wasm", p.module_sha256))
        .is_file()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_artifacts_run_by_tag_and_by_digest() {
    let registry = tokio::task::block_in_place(Registry::start).expect("registry");
    let host = registry.host();
    let p2 = publish(&host, "wasm/hello", "1", &example("hello", "wasm32-wasip2"), None)
        .await
        .expect("publish hello (wasip2)");
    let p1 = publish(
        &host,
        "wasm/hello",
        "p1",
        &example("hello", "wasm32-wasip1"),
        None,
    )
    .await
    .expect("publish hello (wasip1)");
    let up = up();
    let api = Api::new(&up.url, &token(&up));

    // By tag: `127.0.0.1:PORT/wasm/hello:1`.
    apply(&up, &hello_pod("by-tag", &p2.tag_ref, "", "IfNotPresent"));
    let pod = succeeded(&api, &up, "by-tag").await;
    assert_eq!(pod["spec"]["nodeName"], "edge-reg");
    let c = &pod["status"]["containerStatuses"][0];
    assert_eq!(c["state"]["terminated"]["exitCode"], 0, "{c}");
    assert_eq!(c["imageID"], format!("sha256:{}", p2.module_sha256), "{c}");
    assert_greets(&up, "by-tag");
    assert!(cached(&up, &p2), "the module is kept by digest");

    // By digest: `127.0.0.1:PORT/wasm/hello@sha256:…` (the preview 1 build).
    apply(&up, &hello_pod("by-digest", &p1.digest_ref, "", "IfNotPresent"));
    succeeded(&api, &up, "by-digest").await;
    assert_greets(&up, "by-digest");
    assert!(cached(&up, &p1));

    // A tag the registry does not have: ErrImagePull/ImagePullBackOff with its words.
    let missing = format!("{host}/wasm/hello:missing");
    apply(&up, &hello_pod("missing", &missing, "", "IfNotPresent"));
    let waiting = eventually("missing in ImagePullBackOff", WAIT, || async {
        let (_, p) = api.get("/api/v1/namespaces/default/pods/missing").await?;
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        Ok((w["reason"] == "ImagePullBackOff").then(|| w.clone()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", up.log_text()));
    let message = waiting["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("404") && message.contains("MANIFEST_UNKNOWN") && message.contains(&missing),
        "{waiting}"
    );
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_registry_needs_image_pull_secrets() {
    let (user, pass) = ("fleet", "wasm-pull-s3cret");
    let registry = tokio::task::block_in_place(|| Registry::start_with_auth(user, pass)).expect("registry");
    let host = registry.host();
    let published = publish(
        &host,
        "wasm/hello",
        "1",
        &example("hello", "wasm32-wasip2"),
        Some((user, pass)),
    )
    .await
    .expect("publish hello");
    let up = up();
    let api = Api::new(&up.url, &token(&up));

    // Without credentials: ErrImagePull, then ImagePullBackOff, naming the
    // 401. `Always`, so it keeps asking even once another pod brought the
    // module to the node.
    apply(&up, &hello_pod("anon", &published.tag_ref, "", "Always"));
    let reasons: std::sync::Mutex<Vec<String>> = std::sync::Mutex::default();
    let waiting = eventually("anon in ImagePullBackOff", WAIT, || {
        let (api, reasons) = (&api, &reasons);
        async move {
            let (_, p) = api.get("/api/v1/namespaces/default/pods/anon").await?;
            let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
            if let Some(r) = w["reason"].as_str() {
                let mut seen = reasons.lock().unwrap();
                if seen.last().map(String::as_str) != Some(r) {
                    seen.push(r.to_string());
                }
            }
            Ok((w["reason"] == "ImagePullBackOff").then(|| w.clone()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", up.log_text()));
    let message = waiting["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("401") && message.to_lowercase().contains("unauthorized"),
        "the registry's answer: {waiting}"
    );
    assert!(
        message.contains(&published.tag_ref) && message.contains("imagePullSecrets"),
        "names the image and the fix: {waiting}"
    );
    // The pod may be seen as ContainerCreating before the first pull fails;
    // from the first failure on it only alternates between the two.
    let reasons = reasons.into_inner().unwrap();
    let failures: Vec<&str> = reasons
        .iter()
        .map(String::as_str)
        .skip_while(|r| *r == "ContainerCreating")
        .collect();
    assert!(
        failures.first() == Some(&"ErrImagePull")
            && failures
                .iter()
                .all(|r| *r == "ErrImagePull" || *r == "ImagePullBackOff"),
        "{reasons:?}"
    );

    // With a dockerconfigjson Secret in imagePullSecrets it pulls and runs.
    let config = serde_json::json!({"auths": {host.clone(): {"username": user, "password": pass}}});
    let authed = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: regcred
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{config}'
---
{}",
        hello_pod(
            "authed",
            &published.tag_ref,
            "  imagePullSecrets:\n  - name: regcred\n",
            "Always"
        )
    );
    apply(&up, &authed);
    succeeded(&api, &up, "authed").await;
    assert_greets(&up, "authed");
    assert!(cached(&up, &published));

    // Those credentials were that pod's only: anon still cannot pull.
    let (_, a) = api.get("/api/v1/namespaces/default/pods/anon").await.unwrap();
    let w = &a["status"]["containerStatuses"][0]["state"]["waiting"];
    assert!(
        w["reason"] == "ImagePullBackOff" || w["reason"] == "ErrImagePull",
        "{}",
        a["status"]
    );
    assert_eq!(a["status"]["phase"], "Pending");
    // The password appears in no status and no log line.
    let (_, all) = api.get("/api/v1/namespaces/default/pods").await.unwrap();
    assert!(!all.to_string().contains(pass));
    assert!(!up.log_text().contains(pass));
    drop(registry);
}
