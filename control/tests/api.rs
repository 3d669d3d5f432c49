//! The API server on a real loopback port (port 0), driven over HTTP.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use shturman_control::server::{self, State};
use shturman_control::store::Store;
use shturman_control::store::memory::MemoryStore;

const TOKEN: &str = "test-token";

struct Api {
    url: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(store: Arc<dyn Store>) -> Api {
    let state = State::new(store, TOKEN.to_string());
    state.ensure_default_namespace().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = server::router(state);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Api {
        url,
        http: reqwest::Client::new(),
        _stop: tx,
    }
}

async fn api() -> Api {
    serve(Arc::new(MemoryStore::new())).await
}

impl Api {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": labels},
           "spec": {"containers": [{"name": "app", "image": "example.org/app:1"}]}})
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn every_request_needs_the_token() {
    let a = api().await;
    let r = a.http.get(format!("{}{PODS}", a.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");
    let r = a
        .http
        .get(format!("{}{PODS}", a.url))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = a.http.get(format!("{}/version", a.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Liveness and readiness stay open for probes.
    let r = a.http.get(format!("{}/healthz", a.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = a.http.get(format!("{}/readyz", a.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn create_get_list_and_kubernetes_errors() {
    let a = api().await;
    let (code, created) = a
        .send(
            reqwest::Method::POST,
            PODS,
            Some(pod("web-1", json!({"app": "web"}))),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_eq!(created["status"]["phase"], "Pending");
    assert!(created["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    let (code, again) = a
        .send(reqwest::Method::POST, PODS, Some(pod("web-1", json!({}))))
        .await;
    assert_eq!(code, 409);
    assert_eq!(again["reason"], "AlreadyExists");
    assert_eq!(again["message"], "pods \"web-1\" already exists");

    let (code, got) = a.send(reqwest::Method::GET, &format!("{PODS}/web-1"), None).await;
    assert_eq!(code, 200);
    assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"]);
    let (code, missing) = a.send(reqwest::Method::GET, &format!("{PODS}/nope"), None).await;
    assert_eq!(code, 404);
    assert_eq!(missing["reason"], "NotFound");
    assert_eq!(missing["message"], "pods \"nope\" not found");

    a.send(
        reqwest::Method::POST,
        PODS,
        Some(pod("db-1", json!({"app": "db"}))),
    )
    .await;
    let (_, list) = a
        .send(
            reqwest::Method::GET,
            &format!("{PODS}?labelSelector=app%3Dweb"),
            None,
        )
        .await;
    assert_eq!(list["kind"], "PodList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1"]);
    assert!(list["items"][0]["metadata"]["resourceVersion"].is_string());
    // Nothing selected: still a whole list, with its version.
    let (code, none) = a
        .send(
            reqwest::Method::GET,
            &format!("{PODS}?labelSelector=app%3Dnothing"),
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(none["kind"], "PodList");
    assert_eq!(none["apiVersion"], "v1");
    assert_eq!(none["items"], json!([]));
    assert!(rv(&none) >= rv(&created));
    let (_, list) = a
        .send(
            reqwest::Method::GET,
            "/api/v1/pods?fieldSelector=metadata.name%3Ddb-1",
            None,
        )
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, list) = a
        .send(
            reqwest::Method::GET,
            "/api/v1/pods?fieldSelector=status.phase%3DPending",
            None,
        )
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(rv(&list) >= rv(&created));

    let (code, bad) = a
        .send(
            reqwest::Method::POST,
            "/api/v1/namespaces/nowhere/pods",
            Some(pod("x", json!({}))),
        )
        .await;
    assert_eq!(code, 404);
    assert_eq!(bad["message"], "namespaces \"nowhere\" not found");
    let (code, _) = a.send(reqwest::Method::GET, "/api/v1/widgets", None).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn invalid_objects_get_422_with_field_paths() {
    let a = api().await;
    let mut p = pod("web", json!({}));
    p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 70000}]);
    p["spec"]["bogus"] = json!(true);
    let (code, status) = a.send(reqwest::Method::POST, PODS, Some(p)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"spec.bogus"), "{status}");
    let (code, status) = a
        .send(reqwest::Method::POST, PODS, Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "a", "image": "i"}]}})))
        .await;
    assert_eq!(code, 422, "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("metadata.name"),
        "{status}"
    );
}

#[tokio::test]
async fn updates_conflict_on_stale_versions_and_keep_status_apart() {
    let a = api().await;
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "example.org/app:1"}]}}}});
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let (code, created) = a.send(reqwest::Method::POST, path, Some(dep.clone())).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    let first_rv = created["metadata"]["resourceVersion"].clone();

    let mut v2 = created.clone();
    v2["spec"]["replicas"] = json!(3);
    v2["status"] = json!({"replicas": 99});
    let (code, updated) = a
        .send(reqwest::Method::PUT, &format!("{path}/web"), Some(v2.clone()))
        .await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["spec"]["replicas"], 3);
    assert_eq!(updated["metadata"]["generation"], 2);
    assert!(
        updated.get("status").is_none_or(|s| s.get("replicas").is_none()),
        "main PUT must not set status"
    );

    // The same stale resourceVersion again: conflict, nothing lost.
    v2["metadata"]["resourceVersion"] = first_rv;
    v2["spec"]["replicas"] = json!(7);
    let (code, conflict) = a
        .send(reqwest::Method::PUT, &format!("{path}/web"), Some(v2))
        .await;
    assert_eq!(code, 409);
    assert_eq!(conflict["reason"], "Conflict");
    let (_, now) = a.send(reqwest::Method::GET, &format!("{path}/web"), None).await;
    assert_eq!(now["spec"]["replicas"], 3);

    // Status subresource changes status only.
    let mut st = now.clone();
    st["spec"]["replicas"] = json!(50);
    st["status"] = json!({"replicas": 3, "readyReplicas": 2});
    let (code, after) = a
        .send(reqwest::Method::PUT, &format!("{path}/web/status"), Some(st))
        .await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["status"]["readyReplicas"], 2);
    assert_eq!(after["spec"]["replicas"], 3);
    assert_eq!(after["metadata"]["generation"], 2);

    // Merge patch.
    let r = a
        .req(reqwest::Method::PATCH, &format!("{path}/web"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"spec":{"replicas":4},"metadata":{"labels":{"tier":"front"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["spec"]["replicas"], 4);
    assert_eq!(patched["metadata"]["labels"]["tier"], "front");
    assert_eq!(patched["status"]["readyReplicas"], 2);
    let r = a
        .req(reqwest::Method::PATCH, &format!("{path}/web"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"spec":{"replicas":-1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422, "a patch is validated like a create");
    let r = a
        .req(reqwest::Method::PATCH, &format!("{path}/web"))
        .header("content-type", "application/strategic-merge-patch+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
}

#[tokio::test]
async fn bodies_over_3_mib_get_413() {
    let a = api().await;
    let big = "x".repeat(3 * 1024 * 1024 + 1);
    let r = a
        .req(reqwest::Method::POST, "/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["reason"], "RequestEntityTooLarge");
}

async fn next_event(
    lines: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
) -> Value {
    loop {
        if let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            return serde_json::from_str(&line).unwrap();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await
            .expect("watch event within 10s")
            .expect("stream open")
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn watch_replays_from_a_revision_then_follows_in_order() {
    let a = api().await;
    let mut rvs = Vec::new();
    for i in 0..3 {
        let (_, p) = a
            .send(
                reqwest::Method::POST,
                PODS,
                Some(pod(&format!("p{i}"), json!({"n": i.to_string()}))),
            )
            .await;
        rvs.push(rv(&p));
    }
    let r = a
        .req(
            reqwest::Method::GET,
            &format!("{PODS}?watch=true&resourceVersion={}", rvs[0]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    for expected in &rvs[1..] {
        let ev = next_event(&mut stream, &mut buf).await;
        assert_eq!(ev["type"], "ADDED");
        assert_eq!(rv(&ev["object"]), *expected);
    }
    let (_, _) = a.send(reqwest::Method::DELETE, &format!("{PODS}/p1"), None).await;
    let (_, p3) = a
        .send(reqwest::Method::POST, PODS, Some(pod("p3", json!({}))))
        .await;
    let ev = next_event(&mut stream, &mut buf).await;
    assert_eq!(ev["type"], "DELETED");
    assert_eq!(ev["object"]["metadata"]["name"], "p1");
    let ev = next_event(&mut stream, &mut buf).await;
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(rv(&ev["object"]), rv(&p3));

    // Label-selected watch from "now" starts with the current matching state.
    let r = a
        .req(
            reqwest::Method::GET,
            &format!("{PODS}?watch=1&labelSelector=n%3D2"),
        )
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let ev = next_event(&mut stream, &mut buf).await;
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["metadata"]["name"], "p2");
}

#[tokio::test]
async fn watch_from_a_compacted_revision_says_410() {
    use shturman_control::store::StoreOptions;
    let store = MemoryStore::with_options(StoreOptions {
        history: 5,
        ..StoreOptions::default()
    });
    let a = serve(Arc::new(store)).await;
    for i in 0..20 {
        a.send(
            reqwest::Method::POST,
            PODS,
            Some(pod(&format!("p{i}"), json!({}))),
        )
        .await;
    }
    let r = a
        .req(
            reqwest::Method::GET,
            &format!("{PODS}?watch=true&resourceVersion=2"),
        )
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let ev = next_event(&mut stream, &mut buf).await;
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
}

#[tokio::test]
async fn namespaces_guard_their_objects() {
    let a = api().await;
    let (code, ns) = a
        .send(
            reqwest::Method::POST,
            "/api/v1/namespaces",
            Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}})),
        )
        .await;
    assert_eq!(code, 201, "{ns}");
    assert_eq!(ns["status"]["phase"], "Active");
    let (code, _) = a
        .send(
            reqwest::Method::POST,
            "/api/v1/namespaces/dev/pods",
            Some(pod("a", json!({}))),
        )
        .await;
    assert_eq!(code, 201);
    let (code, _) = a
        .send(reqwest::Method::DELETE, "/api/v1/namespaces/dev", None)
        .await;
    assert_eq!(code, 200);
    let (code, _) = a
        .send(reqwest::Method::GET, "/api/v1/namespaces/dev/pods/a", None)
        .await;
    assert_eq!(code, 404, "a namespace's objects go with it");
    let (code, st) = a
        .send(reqwest::Method::DELETE, "/api/v1/namespaces/default", None)
        .await;
    assert_eq!(code, 403, "{st}");
}

#[tokio::test]
async fn version_metrics_and_discovery() {
    let a = api().await;
    let (code, v) = a.send(reqwest::Method::GET, "/version", None).await;
    assert_eq!(code, 200);
    assert!(v["gitVersion"].as_str().unwrap().starts_with('v'));
    a.send(reqwest::Method::POST, PODS, Some(pod("m", json!({}))))
        .await;
    let text = a
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("shturman_apiserver_requests_total{verb=\"create\",resource=\"pods\",code=\"201\"} 1"),
        "{text}"
    );
    assert!(text.contains("shturman_store_revision"));
    let (_, res) = a.send(reqwest::Method::GET, "/apis/apps/v1", None).await;
    assert_eq!(res["resources"][0]["kind"], "Deployment");
}
