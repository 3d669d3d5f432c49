//! The kinds the garbage collector watches, behind one object-safe trait so
//! the collector itself is not generic: each watched kind is an informer
//! (its cache of metadata) plus the typed client calls the collector makes
//! on that kind. Owners of kinds the collector does not watch are still
//! resolved, by a live read ([`live_meta`]).

use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use shturman_api::apps::{Deployment, ReplicaSet};
use shturman_api::core::{ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service};
use shturman_api::kind::Kind;
use shturman_api::meta::{DeletionPropagation, Object, ObjectMeta};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::client::Client;
use crate::runtime::{Change, Informer, ObjectKey};
use crate::server::error::ApiError;

/// One watched kind, type-erased.
#[async_trait]
pub(super) trait Watched: Send + Sync {
    fn kind(&self) -> Kind;
    /// The cached metadata of one object.
    fn cached(&self, key: &ObjectKey) -> Option<ObjectMeta>;
    /// Cached objects with an owner reference to `uid`.
    fn dependents_of(&self, uid: &str) -> Vec<ObjectMeta>;
    /// Every cached key.
    fn keys(&self) -> Vec<ObjectKey>;
    /// Objects with an owner reference to `uid`, listed live from the store
    /// (in `namespace`, or everywhere): for decisions a lagging cache must
    /// not make, such as releasing an orphaning owner.
    async fn live_dependents_of(
        &self,
        client: &Client,
        namespace: Option<&str>,
        uid: &str,
    ) -> Result<Vec<ObjectMeta>, ApiError>;
    async fn wait_synced(&self);
    /// The object's metadata, read live (`None` when absent).
    async fn live(&self, client: &Client, key: &ObjectKey) -> Result<Option<ObjectMeta>, ApiError>;
    async fn delete(
        &self,
        client: &Client,
        key: &ObjectKey,
        propagation: DeletionPropagation,
    ) -> Result<bool, ApiError>;
    async fn merge_patch(&self, client: &Client, key: &ObjectKey, patch: &Value) -> Result<(), ApiError>;
    /// Subscribes now and returns the task that feeds the informer's changes
    /// to the collector until `stop`.
    fn route(&self, gc: Arc<Shared>, stop: CancellationToken) -> BoxFuture<'static, ()>;
}

/// A watched kind backed by its informer.
pub(super) struct Typed<T> {
    pub(super) informer: Informer<T>,
}

#[async_trait]
impl<T: Object + Send + Sync + 'static> Watched for Typed<T> {
    fn kind(&self) -> Kind {
        T::KIND
    }

    fn cached(&self, key: &ObjectKey) -> Option<ObjectMeta> {
        self.informer.get(key).map(|o| o.metadata().clone())
    }

    fn dependents_of(&self, uid: &str) -> Vec<ObjectMeta> {
        self.informer
            .filter(|o| o.metadata().owner_references.iter().any(|r| r.uid == uid))
            .iter()
            .map(|o| o.metadata().clone())
            .collect()
    }

    fn keys(&self) -> Vec<ObjectKey> {
        self.informer.list().iter().map(|o| ObjectKey::of(&**o)).collect()
    }

    async fn wait_synced(&self) {
        self.informer.wait_synced().await;
    }

    async fn live_dependents_of(
        &self,
        client: &Client,
        namespace: Option<&str>,
        uid: &str,
    ) -> Result<Vec<ObjectMeta>, ApiError> {
        let ns = namespace.filter(|_| T::KIND.namespaced());
        let (objs, _) = client.list::<T>(ns).await?;
        Ok(objs
            .into_iter()
            .filter(|o| o.metadata().owner_references.iter().any(|r| r.uid == uid))
            .map(|o| o.metadata().clone())
            .collect())
    }

    async fn live(&self, client: &Client, key: &ObjectKey) -> Result<Option<ObjectMeta>, ApiError> {
        Ok(client
            .get::<T>(key.ns(), &key.name)
            .await?
            .map(|o| o.metadata().clone()))
    }

    async fn delete(
        &self,
        client: &Client,
        key: &ObjectKey,
        propagation: DeletionPropagation,
    ) -> Result<bool, ApiError> {
        client.delete::<T>(key.ns(), &key.name, Some(propagation)).await
    }

    async fn merge_patch(&self, client: &Client, key: &ObjectKey, patch: &Value) -> Result<(), ApiError> {
        client
            .merge_patch::<T>(key.ns(), &key.name, patch, false)
            .await
            .map(|_| ())
    }

    fn route(&self, gc: Arc<Shared>, stop: CancellationToken) -> BoxFuture<'static, ()> {
        let mut rx = self.informer.subscribe();
        async move {
            loop {
                let change = tokio::select! {
                    c = rx.recv() => c,
                    () = stop.cancelled() => return,
                };
                match change {
                    Ok(Change::Applied(o)) => gc.on_change(T::KIND, o.metadata(), false),
                    Ok(Change::Deleted(o)) => gc.on_change(T::KIND, o.metadata(), true),
                    Ok(Change::Resynced) | Err(broadcast::error::RecvError::Lagged(_)) => gc.resync(),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
        .boxed()
    }
}

/// The kind an owner reference's `kind` names, if Shturman serves it.
pub(super) fn kind_named(name: &str) -> Option<Kind> {
    Kind::ALL.iter().copied().find(|k| k.name() == name)
}

async fn meta_of<T: Object>(client: &Client, key: &ObjectKey) -> Result<Option<ObjectMeta>, ApiError> {
    Ok(client
        .get::<T>(key.ns(), &key.name)
        .await?
        .map(|o| o.metadata().clone()))
}

/// Reads any kind's metadata live, for owners of kinds nobody watches.
pub(super) async fn live_meta(
    client: &Client,
    kind: Kind,
    key: &ObjectKey,
) -> Result<Option<ObjectMeta>, ApiError> {
    match kind {
        Kind::Namespace => meta_of::<Namespace>(client, key).await,
        Kind::Node => meta_of::<Node>(client, key).await,
        Kind::Pod => meta_of::<Pod>(client, key).await,
        Kind::Service => meta_of::<Service>(client, key).await,
        Kind::Endpoints => meta_of::<Endpoints>(client, key).await,
        Kind::ConfigMap => meta_of::<ConfigMap>(client, key).await,
        Kind::Secret => meta_of::<Secret>(client, key).await,
        Kind::Event => meta_of::<Event>(client, key).await,
        Kind::Deployment => meta_of::<Deployment>(client, key).await,
        Kind::ReplicaSet => meta_of::<ReplicaSet>(client, key).await,
    }
}
