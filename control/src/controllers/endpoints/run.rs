//! The endpoints controller's executor: wires [`plan`] to the runtime.
//!
//! Keyed by Service (`namespace/name`, the Endpoints' name too). A key is
//! queued when its Service changes, when its Endpoints change (a managed
//! Endpoints someone edited or deleted is written again), and when a pod
//! changes that the Service selects — or that its Endpoints list (a pod
//! whose labels no longer match must leave). A pass reads the caches,
//! plans, writes (create, replace on the version it read, or delete), and
//! waits until the Endpoints informer shows its write, so the next pass
//! never plans from a stale cache.

use std::time::Duration;

use shturman_api::core::{Endpoints, Pod, Service};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Action as Planned, plan, selects};
use crate::client::Client;
use crate::controllers::replicaset::run::Written;
use crate::runtime::{Action, Controller, Informer, ObjectKey};
use crate::server::error::ApiError;

/// Why a pass failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("endpoints {key}: {what}: {source}")]
    Api {
        key: ObjectKey,
        what: &'static str,
        source: ApiError,
    },
}

/// Starts the endpoints controller with `workers` passes at a time; it
/// stops when `stop` is cancelled.
pub fn start(
    client: Client,
    services: &Informer<Service>,
    endpoints: &Informer<Endpoints>,
    pods: &Informer<Pod>,
    workers: usize,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run(
        client,
        services.clone(),
        endpoints.clone(),
        pods.clone(),
        workers,
        stop,
    ))
}

/// Runs the endpoints controller until `stop` is cancelled.
pub async fn run(
    client: Client,
    services: Informer<Service>,
    endpoints: Informer<Endpoints>,
    pods: Informer<Pod>,
    workers: usize,
    stop: CancellationToken,
) {
    let synced = async {
        services.wait_synced().await;
        endpoints.wait_synced().await;
        pods.wait_synced().await;
    };
    tokio::select! {
        () = synced => {}
        () = stop.cancelled() => return,
    }
    let controller = Controller::new("endpoint-controller", stop);
    controller.watches(&services, |s: &Service| vec![ObjectKey::of(s)]);
    controller.watches(&endpoints, |e: &Endpoints| vec![ObjectKey::of(e)]);
    let (svcs, eps) = (services.clone(), endpoints.clone());
    controller.watches(&pods, move |p: &Pod| keys_for_pod(&svcs, &eps, p));
    let handle = controller.handle();
    for s in services.list() {
        handle.add(ObjectKey::of(&*s));
    }
    // Managed Endpoints whose Service went while the controller was away.
    for e in endpoints.filter(|e| e.is_managed()) {
        handle.add(ObjectKey::of(&*e));
    }
    let inner = std::sync::Arc::new(Inner {
        client,
        services,
        endpoints,
        pods,
    });
    controller
        .run(workers, move |key: ObjectKey| {
            let inner = inner.clone();
            async move { inner.reconcile(&key).await }
        })
        .await;
}

/// The Services a pod change concerns: those of its namespace that select
/// it now, and those whose Endpoints list it (it may have left).
fn keys_for_pod(services: &Informer<Service>, endpoints: &Informer<Endpoints>, pod: &Pod) -> Vec<ObjectKey> {
    let ns = pod.metadata.namespace();
    let mut keys: Vec<ObjectKey> = services
        .list_in(ns)
        .iter()
        .filter(|s| {
            let sel = &s.spec.selector;
            !sel.is_empty() && sel.iter().all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
        })
        .map(|s| ObjectKey::of(&**s))
        .collect();
    let name = pod.metadata.name.as_deref();
    for e in endpoints.list_in(ns).iter().filter(|e| e.is_managed()) {
        let lists = e
            .subsets
            .iter()
            .flat_map(|s| s.addresses.iter().chain(&s.not_ready_addresses))
            .any(|a| a.target_ref.as_ref().and_then(|r| r.name.as_deref()) == name);
        let key = ObjectKey::of(&**e);
        if lists && !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

struct Inner {
    client: Client,
    services: Informer<Service>,
    endpoints: Informer<Endpoints>,
    pods: Informer<Pod>,
}

impl Inner {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, EndpointsError> {
        let service = self.services.get(key);
        let existing = self.endpoints.get(key);
        let pods: Vec<_> = match &service {
            Some(svc) => self
                .pods
                .list_in(&key.namespace)
                .into_iter()
                .filter(|p| selects(svc, p))
                .collect(),
            None => Vec::new(),
        };
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
        let Some(action) = plan(service.as_deref(), existing.as_deref(), &pod_refs) else {
            return Ok(Action::Done);
        };
        let err = |what: &'static str| {
            let key = key.clone();
            move |source| EndpointsError::Api { key, what, source }
        };
        let mut written = Written::<Endpoints>::default();
        match action {
            Planned::Create(e) => match self.client.create(&*e).await {
                Ok(created) => written.wrote(&created),
                // Written meanwhile (by a user, or an earlier pass not yet
                // cached): look again once the cache has it.
                Err(e) if e.is_already_exists() => {
                    return Ok(Action::RequeueAfter(Duration::from_millis(200)));
                }
                Err(e) => return Err(err("create")(e)),
            },
            Planned::Update(e) => match self.client.replace(&*e).await {
                Ok(replaced) => written.wrote(&replaced),
                Err(e) if e.is_conflict() || e.is_not_found() => {
                    return Ok(Action::RequeueAfter(Duration::from_millis(200)));
                }
                Err(e) => return Err(err("update")(e)),
            },
            Planned::Delete { uid } => {
                if self
                    .client
                    .delete::<Endpoints>(key.ns(), &key.name, None)
                    .await
                    .map_err(err("delete"))?
                {
                    written.deleted(key.clone(), uid);
                }
            }
        }
        if !written.settle(&self.endpoints).await {
            tracing::warn!(service = %key, "the Endpoints cache did not show this pass's write in time");
        }
        Ok(Action::Done)
    }
}
