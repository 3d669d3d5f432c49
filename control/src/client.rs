//! A typed, in-process client of the API: what controllers and the scheduler
//! use. Every write goes through the same defaults, validation and metadata
//! rules as an HTTP request, without the HTTP.

use std::sync::Arc;

use serde_json::Value;
use shturman_api::meta::{DeletionPropagation, Object};

use crate::server::State;
use crate::server::error::ApiError;
use crate::server::handlers::revalidate;
use crate::store::{Revision, Store};

/// Typed access to the API from inside the control plane.
#[derive(Clone)]
pub struct Client {
    state: Arc<State>,
}

fn from_value<T: Object>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::internal(format!("a stored {} does not decode: {e}", T::KIND.name())))
}

fn to_value<T: Object>(obj: &T) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(obj).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), Value::from(T::KIND.api_version()));
        m.insert("kind".into(), Value::from(T::KIND.name()));
    }
    Ok(v)
}

fn ns_of<T: Object>(obj: &T) -> Option<&str> {
    obj.metadata()
        .namespace
        .as_deref()
        .filter(|_| T::KIND.namespaced())
}

impl Client {
    pub fn new(state: Arc<State>) -> Client {
        Client { state }
    }

    /// The nodes' Service proxy counters.
    pub fn proxy_stats(&self) -> &Arc<crate::gateway::proxy_stats::ProxyStatsHub> {
        &self.state.proxy_stats
    }

    /// The store under the API (informers watch it directly).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.state.store
    }

    /// One object, or `None`.
    pub async fn get<T: Object>(&self, ns: Option<&str>, name: &str) -> Result<Option<T>, ApiError> {
        match self.state.get(T::KIND, ns, name).await {
            Ok(v) => from_value(v).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object of a kind (in one namespace, or all), with the list's revision.
    pub async fn list<T: Object>(&self, ns: Option<&str>) -> Result<(Vec<T>, Revision), ApiError> {
        // Straight from the stored bytes to `T`, one at a time: no
        // intermediate JSON values for the whole collection.
        let listing = self.state.list_stored(T::KIND, ns).await?;
        let objs = listing
            .items
            .iter()
            .map(|(_, v)| {
                let mut obj: T = serde_json::from_slice(&v.value).map_err(|e| {
                    ApiError::internal(format!("a stored {} does not decode: {e}", T::KIND.name()))
                })?;
                obj.metadata_mut().resource_version = Some(v.revision.to_string());
                Ok(obj)
            })
            .collect::<Result<Vec<T>, ApiError>>()?;
        Ok((objs, listing.revision))
    }

    /// Creates an object (defaults and validation applied).
    pub async fn create<T: Object>(&self, obj: &T) -> Result<T, ApiError> {
        let v = revalidate(T::KIND, to_value(obj)?)?;
        let ns = ns_of(obj).map(str::to_string);
        let mut v = v;
        crate::server::object::settle_namespace(T::KIND, &mut v, ns.as_deref())?;
        from_value(self.state.create_object(T::KIND, v).await?)
    }

    /// Replaces an object's spec and metadata; with `resourceVersion` set,
    /// only that version (else `Conflict`).
    pub async fn replace<T: Object>(&self, obj: &T) -> Result<T, ApiError> {
        let v = revalidate(T::KIND, to_value(obj)?)?;
        let name = obj.metadata().name.clone().unwrap_or_default();
        from_value(
            self.state
                .update_value(T::KIND, ns_of(obj), &name, false, v)
                .await?,
        )
    }

    /// Replaces an object's status (only that version, when set).
    pub async fn replace_status<T: Object>(&self, obj: &T) -> Result<T, ApiError> {
        let v = revalidate(T::KIND, to_value(obj)?)?;
        let name = obj.metadata().name.clone().unwrap_or_default();
        from_value(
            self.state
                .update_value(T::KIND, ns_of(obj), &name, true, v)
                .await?,
        )
    }

    /// Applies a JSON merge patch to an object (or, with `status`, its status).
    pub async fn merge_patch<T: Object>(
        &self,
        ns: Option<&str>,
        name: &str,
        patch: &Value,
        status: bool,
    ) -> Result<T, ApiError> {
        from_value(self.state.patch_value(T::KIND, ns, name, status, patch).await?)
    }

    /// Binds pod `ns/name` (uid `uid`) to `node` in one write; returns the
    /// write's revision.
    pub async fn bind_pod(&self, ns: &str, name: &str, uid: &str, node: &str) -> Result<Revision, ApiError> {
        self.state.bind_pod(ns, name, uid, node).await
    }

    /// Deletes an object; `Ok(false)` when it was already gone.
    pub async fn delete<T: Object>(
        &self,
        ns: Option<&str>,
        name: &str,
        propagation: Option<DeletionPropagation>,
    ) -> Result<bool, ApiError> {
        let body = match propagation {
            Some(p) => serde_json::to_vec(&serde_json::json!({"propagationPolicy": p}))
                .map_err(|e| ApiError::internal(e.to_string()))?,
            None => Vec::new(),
        };
        match self
            .state
            .delete(T::KIND, ns, name, &bytes::Bytes::from(body))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
