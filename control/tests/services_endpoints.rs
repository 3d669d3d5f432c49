//! The endpoints controller against the real API state in-process (memory
//! store): Endpoints follow pods becoming ready and not ready, pods leaving
//! the selector, pods deleted and terminating, Services deleted; a
//! Service without a selector keeps the Endpoints its user writes; an edit
//! of managed Endpoints is undone. Every wait is on a condition with a
//! deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shturman_api::core::{Endpoints, Pod, Service};
use shturman_api::meta::DeletionPropagation;
use shturman_control::client::Client;
use shturman_control::controllers::endpoints;
use shturman_control::runtime::Informer;
use shturman_control::server::State;
use shturman_control::store::memory::MemoryStore;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const NS: Option<&str> = Some("default");

struct Env {
    client: Client,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn cluster() -> Env {
    let state = State::new(Arc::new(MemoryStore::new()), "test-token".to_string());
    state.ensure_default_namespace().await.unwrap();
    let client = Client::new(state);
    let stop = CancellationToken::new();
    let services = Informer::<Service>::start(client.clone(), stop.clone());
    let eps = Informer::<Endpoints>::start(client.clone(), stop.clone());
    let pods = Informer::<Pod>::start(client.clone(), stop.clone());
    endpoints::run::start(client.clone(), &services, &eps, &pods, 2, stop.clone());
    Env { client, stop }
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let polled = async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(WAIT, polled).await.is_err() {
        panic!("timed out waiting for {what}");
    }
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

impl Env {
    async fn service(&self, name: &str, spec: Value) {
        let s: Service = from(json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}));
        self.client.create(&s).await.unwrap();
    }

    /// A pod with `labels`, a container port named `http` on 8080, reported
    /// Running at `ip` and ready or not.
    async fn pod(&self, name: &str, labels: Value, ip: &str, ready: bool) {
        let p: Pod = from(json!({
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"nodeName": "pi-1", "containers": [{"name": "app", "image": "i",
                "ports": [{"name": "http", "containerPort": 8080}]}]}
        }));
        self.client.create(&p).await.unwrap();
        self.status(name, ip, ready).await;
    }

    async fn status(&self, name: &str, ip: &str, ready: bool) {
        let patch = json!({"status": {"phase": "Running", "podIP": ip, "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
        self.client
            .merge_patch::<Pod>(NS, name, &patch, true)
            .await
            .unwrap();
    }

    async fn endpoints(&self, name: &str) -> Option<Endpoints> {
        self.client.get::<Endpoints>(NS, name).await.unwrap()
    }

    /// `(ready ips, not-ready ips)` of `name`'s Endpoints, sorted; `None` when absent.
    async fn addresses(&self, name: &str) -> Option<(Vec<String>, Vec<String>)> {
        let e = self.endpoints(name).await?;
        let mut ready: Vec<String> = Vec::new();
        let mut not_ready: Vec<String> = Vec::new();
        for s in &e.subsets {
            ready.extend(s.addresses.iter().map(|a| a.ip.clone()));
            not_ready.extend(s.not_ready_addresses.iter().map(|a| a.ip.clone()));
        }
        ready.sort();
        ready.dedup();
        not_ready.sort();
        not_ready.dedup();
        Some((ready, not_ready))
    }

    async fn wait_addresses(&self, name: &str, ready: &[&str], not_ready: &[&str]) {
        let want = Some((
            ready.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            not_ready.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ));
        wait_for(&format!("{name}'s endpoints to be {want:?}"), || async {
            self.addresses(name).await == want
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_the_pods_a_service_selects() {
    let env = cluster().await;
    env.service(
        "web",
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
    )
    .await;
    env.wait_addresses("web", &[], &[]).await;
    let e = env.endpoints("web").await.unwrap();
    assert!(e.is_managed());
    env.pod("web-a", json!({"app": "web"}), "10.0.0.5", true).await;
    env.pod("web-b", json!({"app": "web"}), "10.0.0.6", false).await;
    env.pod("db", json!({"app": "db"}), "10.0.0.9", true).await;
    env.wait_addresses("web", &["10.0.0.5"], &["10.0.0.6"]).await;
    let e = env.endpoints("web").await.unwrap();
    let s = &e.subsets[0];
    assert_eq!(s.ports[0].port, 8080, "the named target port resolved: {e:?}");
    assert_eq!(s.ports[0].name.as_deref(), Some("http"));
    assert_eq!(s.addresses[0].node_name.as_deref(), Some("pi-1"));
    let r = s.addresses[0].target_ref.as_ref().unwrap();
    assert_eq!(r.name.as_deref(), Some("web-a"));

    // Ready again; then a pod that leaves the selector leaves the Endpoints.
    env.status("web-b", "10.0.0.6", true).await;
    env.wait_addresses("web", &["10.0.0.5", "10.0.0.6"], &[]).await;
    env.client
        .merge_patch::<Pod>(
            NS,
            "web-a",
            &json!({"metadata": {"labels": {"app": "other"}}}),
            false,
        )
        .await
        .unwrap();
    env.wait_addresses("web", &["10.0.0.6"], &[]).await;

    // A terminating pod (finalizer holds it) leaves at once; a deleted one too.
    env.pod("web-c", json!({"app": "web"}), "10.0.0.7", true).await;
    env.wait_addresses("web", &["10.0.0.6", "10.0.0.7"], &[]).await;
    env.client
        .merge_patch::<Pod>(
            NS,
            "web-c",
            &json!({"metadata": {"finalizers": ["test/hold"]}}),
            false,
        )
        .await
        .unwrap();
    env.client.delete::<Pod>(NS, "web-c", None).await.unwrap();
    env.wait_addresses("web", &["10.0.0.6"], &[]).await;
    env.client
        .delete::<Pod>(NS, "web-b", Some(DeletionPropagation::Background))
        .await
        .unwrap();
    env.wait_addresses("web", &[], &[]).await;

    // An edit of managed Endpoints is undone.
    env.pod("web-d", json!({"app": "web"}), "10.0.0.8", true).await;
    env.wait_addresses("web", &["10.0.0.8"], &[]).await;
    let mut edited = env.endpoints("web").await.unwrap();
    edited.subsets.clear();
    env.client.replace(&edited).await.unwrap();
    env.wait_addresses("web", &["10.0.0.8"], &[]).await;

    // The Service goes: so do its Endpoints.
    env.client.delete::<Service>(NS, "web", None).await.unwrap();
    wait_for("web's endpoints to go", || async {
        env.endpoints("web").await.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_a_selector_keeps_its_users_endpoints() {
    let env = cluster().await;
    env.service("ext", json!({"ports": [{"port": 5432}]})).await;
    let user: Endpoints = from(json!({"metadata": {"name": "ext", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "192.168.1.50"}], "ports": [{"port": 5432}]}]}));
    env.client.create(&user).await.unwrap();
    // A pod and a selector-bearing neighbour make the controller busy.
    env.service(
        "web",
        json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}),
    )
    .await;
    env.pod("web-a", json!({"app": "web"}), "10.0.0.5", true).await;
    env.wait_addresses("web", &["10.0.0.5"], &[]).await;
    assert_eq!(
        env.addresses("ext").await,
        Some((vec!["192.168.1.50".to_string()], vec![]))
    );
    assert!(!env.endpoints("ext").await.unwrap().is_managed());
    // Deleting that Service leaves the user's Endpoints in place.
    env.client.delete::<Service>(NS, "ext", None).await.unwrap();
    env.client.delete::<Service>(NS, "web", None).await.unwrap();
    wait_for("web's endpoints to go", || async {
        env.endpoints("web").await.is_none()
    })
    .await;
    assert!(env.endpoints("ext").await.is_some());
}
