//! The REST verbs over one kind: list, get, create, update, patch, delete.
//! Handlers only parse; this module executes typed commands against the store.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use rand::Rng;
use serde_json::{Value, json};
use shturman_api::Kind;
use shturman_api::manifest::{self, Limits};
use shturman_api::selector::{FieldSelector, Selector};

use super::State;
use super::error::ApiError;
use super::object::{self, CreateFacts};
use crate::store::{Key, Listing, Prefix, Revision, StoreError, Versioned};

/// How a PATCH body is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Merge,
}

impl PatchType {
    pub fn from_content_type(ct: Option<&str>) -> Result<PatchType, ApiError> {
        match ct.map(|c| c.split(';').next().unwrap_or("").trim()) {
            Some("application/merge-patch+json") => Ok(PatchType::Merge),
            Some(other) => Err(ApiError::unsupported_media(format!(
                "patch type {other} is not supported; send a JSON merge patch (Content-Type: application/merge-patch+json, \
                 kubectl patch --type merge)"
            ))),
            None => Err(ApiError::unsupported_media(
                "a PATCH needs Content-Type: application/merge-patch+json",
            )),
        }
    }
}

/// Which objects of a listing a client asked for.
#[derive(Default)]
pub struct Selection {
    labels: Option<Selector>,
    fields: Option<FieldSelector>,
}

impl Selection {
    /// Reads `labelSelector` and `fieldSelector` query parameters.
    pub fn from_query(q: &HashMap<String, String>) -> Result<Selection, ApiError> {
        let labels =
            match q.get("labelSelector").map(String::as_str) {
                None | Some("") => None,
                Some(s) => Some(Selector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse labelSelector \"{s}\": {e}"))
                })?),
            };
        let fields =
            match q.get("fieldSelector").map(String::as_str) {
                None | Some("") => None,
                Some(s) => Some(FieldSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse fieldSelector \"{s}\": {e}"))
                })?),
            };
        Ok(Selection { labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(sel) = &self.labels {
            let labels: BTreeMap<String, String> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            if !sel.matches(&labels) {
                return false;
            }
        }
        self.fields.as_ref().is_none_or(|f| f.matches(obj))
    }
}

/// The store key of an object.
pub fn key(kind: Kind, namespace: Option<&str>, name: &str) -> Key {
    Key::new(kind.plural(), namespace.unwrap_or(""), name)
}

/// Decodes a stored value and stamps its revision.
pub fn materialize(v: &Versioned) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&v.value)
        .map_err(|e| ApiError::internal(format!("a stored object is unreadable: {e}")))?;
    object::set_resource_version(&mut obj, v.revision);
    Ok(obj)
}

fn encode(obj: &Value) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(obj).map_err(|e| ApiError::internal(e.to_string()))
}

/// Decodes a request body (JSON or YAML) strictly as one `kind` object.
pub fn decode_body(kind: Kind, body: &Bytes) -> Result<Value, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    let docs = manifest::parse_documents("request body", text, &Limits::default())
        .map_err(|e| ApiError::invalid(kind, "", &e))?;
    let [doc] = docs.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "the request body must hold exactly one object, found {}",
            docs.len()
        )));
    };
    kind.decode("request body", doc)
        .map_err(|e| ApiError::invalid(kind, "", &e))
}

/// Re-checks an object built on the server (a patched one, or one from an
/// in-process client) with the same types, defaults and rules as manifests.
pub fn revalidate(kind: Kind, obj: Value) -> Result<Value, ApiError> {
    let name = object::name_of(&obj).to_string();
    kind.normalize(obj)
        .map_err(|errs| ApiError::invalid_fields(kind, &name, &errs))
}

/// The finalizer the garbage collector honours for `Foreground` deletes.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer the garbage collector honours for `Orphan` deletes.
pub const ORPHAN_FINALIZER: &str = "orphan";

fn check_preconditions(
    kind: Kind,
    name: &str,
    options: &Value,
    obj: &Value,
    revision: Revision,
) -> Result<(), ApiError> {
    if let Some(rv) = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        && rv != revision.to_string()
    {
        return Err(ApiError::conflict(
            kind,
            name,
            &format!("Precondition failed: ResourceVersion: Expected {rv}, Actual {revision}"),
        ));
    }
    if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str)
        && Some(uid) != obj.pointer("/metadata/uid").and_then(Value::as_str)
    {
        return Err(ApiError::conflict(
            kind,
            name,
            &format!("Precondition failed: UID {uid}"),
        ));
    }
    Ok(())
}

/// Puts `condition` in `status.conditions`, replacing one of the same type.
fn set_pod_condition(pod: &mut Value, condition: Value) {
    let Some(obj) = pod.as_object_mut() else { return };
    let status = obj.entry("status").or_insert_with(|| json!({}));
    let Some(status) = status.as_object_mut() else {
        return;
    };
    let list = status.entry("conditions").or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        list.retain(|c| c.get("type") != condition.get("type"));
        list.push(condition);
    }
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl State {
    /// GET of one object.
    pub async fn get(&self, kind: Kind, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let k = key(kind, ns, name);
        match self
            .store
            .get(&k)
            .await
            .map_err(|e| ApiError::from_store(e, kind, name))?
        {
            Some(v) => materialize(&v),
            None => Err(ApiError::not_found(kind, name)),
        }
    }

    /// The stored objects of a collection, undecoded, with the listing's
    /// revision.
    pub async fn list_stored(&self, kind: Kind, ns: Option<&str>) -> Result<Listing, ApiError> {
        self.store
            .list(&Prefix::new(kind.plural(), ns.map(str::to_string)))
            .await
            .map_err(|e| ApiError::from_store(e, kind, ""))
    }

    /// The listing of a collection, as a Kubernetes `…List`, already
    /// encoded: each item is decoded, checked against the selection and
    /// written out before the next, so a list of 10,000 Nodes never holds
    /// 10,000 decoded objects at once (a `serde_json::Value` is several
    /// times the size of its JSON).
    pub async fn list(
        &self,
        kind: Kind,
        ns: Option<&str>,
        sel: &Selection,
    ) -> Result<(Vec<u8>, Revision), ApiError> {
        let listing = self.list_stored(kind, ns).await?;
        let raw: usize = listing.items.iter().map(|(_, v)| v.value.len()).sum();
        let mut out = Vec::with_capacity(raw + raw / 16 + 256);
        let head = json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.name()),
            "metadata": {"resourceVersion": listing.revision.to_string()},
        });
        let head = encode(&head)?;
        // `{…head fields…,"items":[` — the head without its closing brace.
        out.extend_from_slice(&head[..head.len() - 1]);
        out.extend_from_slice(b",\"items\":[");
        let mut first = true;
        for (_, v) in &listing.items {
            let obj = materialize(v)?;
            if !sel.matches(&obj) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out, &obj).map_err(|e| ApiError::internal(e.to_string()))?;
        }
        out.extend_from_slice(b"]}");
        Ok((out, listing.revision))
    }

    async fn require_namespace(&self, kind: Kind, ns: Option<&str>) -> Result<(), ApiError> {
        let Some(ns) = ns.filter(|_| kind.namespaced()) else {
            return Ok(());
        };
        let k = key(Kind::Namespace, None, ns);
        match self
            .store
            .get(&k)
            .await
            .map_err(|e| ApiError::from_store(e, kind, ns))?
        {
            Some(v) => {
                let obj = materialize(&v)?;
                if obj.pointer("/metadata/deletionTimestamp").is_some() {
                    return Err(ApiError::forbidden(
                        kind,
                        "",
                        &format!("namespace {ns} is being terminated; wait for it to go and create it again"),
                    ));
                }
                Ok(())
            }
            None => Err(ApiError::not_found(Kind::Namespace, ns)),
        }
    }

    /// POST: creates a validated object.
    pub async fn create(&self, kind: Kind, ns: Option<&str>, body: &Bytes) -> Result<Value, ApiError> {
        let mut obj = decode_body(kind, body)?;
        object::settle_namespace(kind, &mut obj, ns)?;
        self.create_object(kind, obj).await
    }

    /// Creates an already validated object whose namespace is settled.
    pub async fn create_object(&self, kind: Kind, obj: Value) -> Result<Value, ApiError> {
        let ns = object::namespace_of(&obj).to_string();
        let ns = (!ns.is_empty()).then_some(ns);
        self.require_namespace(kind, ns.as_deref()).await?;
        let uid = uuid::Uuid::new_v4().to_string();
        let now = now_rfc3339();
        let suffix = random_suffix();
        let facts = CreateFacts {
            uid: &uid,
            now: &now,
            suffix: &suffix,
        };
        let mut obj = object::prepare_create(kind, obj, &facts)?;
        let name = object::name_of(&obj).to_string();
        let claim = match kind {
            Kind::Service => Some(self.claim_for_create(&mut obj).await?),
            _ => None,
        };
        let created = self
            .store
            .create(&key(kind, ns.as_deref(), &name), encode(&obj)?)
            .await;
        if let Some(claim) = claim {
            self.settle(claim, created.is_ok()).await;
        }
        let rev = created.map_err(|e| ApiError::from_store(e, kind, &name))?;
        object::set_resource_version(&mut obj, rev);
        Ok(obj)
    }

    /// PUT of the object or its status.
    pub async fn update(
        &self,
        kind: Kind,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        body: &Bytes,
    ) -> Result<Value, ApiError> {
        let new = decode_body(kind, body)?;
        self.update_value(kind, ns, name, status_only, new).await
    }

    /// Replaces an object (or its status) with an already validated value.
    /// With `metadata.resourceVersion` set, only that version is replaced.
    pub async fn update_value(
        &self,
        kind: Kind,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        mut new: Value,
    ) -> Result<Value, ApiError> {
        object::settle_namespace(kind, &mut new, ns)?;
        let body_name = object::name_of(&new);
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name in the URL ({name})"
            )));
        }
        let wanted = object::resource_version_of(&new)?;
        self.rewrite(kind, ns, name, wanted, status_only, |_| Ok(new.clone()))
            .await
    }

    /// The read-modify-write under every update and patch: reads the object,
    /// checks the wanted version, builds the new state from the stored one
    /// with `build`, keeps server-owned fields (`prepare_update`), and writes
    /// it only over the version it read — or deletes it, when the write
    /// removes the last finalizer of an object being deleted. Without a
    /// wanted version, a race with another writer is retried.
    async fn rewrite(
        &self,
        kind: Kind,
        ns: Option<&str>,
        name: &str,
        wanted: Option<Revision>,
        status_only: bool,
        build: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let k = key(kind, ns, name);
        loop {
            let current = self
                .store
                .get(&k)
                .await
                .map_err(|e| ApiError::from_store(e, kind, name))?
                .ok_or_else(|| ApiError::not_found(kind, name))?;
            if let Some(w) = wanted
                && w != current.revision
            {
                return Err(ApiError::from_store(
                    StoreError::Conflict {
                        key: k.clone(),
                        expected: w,
                        actual: current.revision,
                    },
                    kind,
                    name,
                ));
            }
            let old = materialize(&current)?;
            let mut new = build(&old)?;
            let service_spec = kind == Kind::Service && !status_only;
            if service_spec {
                State::patch_update(&old, &mut new)?;
            }
            let mut merged = object::prepare_update(kind, &old, new, status_only)?;
            let finished = object::deletion_finished(&merged);
            let claim = match service_spec && !finished {
                true => Some(self.claim_for_update(&old, &mut merged).await?),
                false => None,
            };
            let written = if finished {
                self.store
                    .delete(&k, Some(current.revision))
                    .await
                    .map(|(rev, _)| rev)
            } else {
                self.store
                    .update(&k, encode(&merged)?, Some(current.revision))
                    .await
            };
            if let Some(claim) = claim {
                self.settle(claim, written.is_ok()).await;
            }
            if finished && kind == Kind::Service && written.is_ok() {
                self.service_deleted(&merged).await;
            }
            match written {
                Ok(rev) => {
                    object::set_resource_version(&mut merged, rev);
                    return Ok(merged);
                }
                Err(StoreError::Conflict { .. }) if wanted.is_none() => continue,
                Err(e) => return Err(ApiError::from_store(e, kind, name)),
            }
        }
    }

    /// PATCH (JSON merge patch) of the object or its status.
    pub async fn patch(
        &self,
        kind: Kind,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        body: &Bytes,
    ) -> Result<Value, ApiError> {
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
        self.patch_value(kind, ns, name, status_only, &patch).await
    }

    /// Applies a JSON merge patch to an object (or its status).
    pub async fn patch_value(
        &self,
        kind: Kind,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        if !patch.is_object() {
            return Err(ApiError::bad_request("a merge patch must be a JSON object"));
        }
        let wanted = object::resource_version_of(patch)?;
        self.rewrite(kind, ns, name, wanted, status_only, |old| {
            let mut patched = old.clone();
            object::merge_patch(&mut patched, patch);
            object::strip_resource_version(&mut patched);
            if kind == Kind::Service {
                super::alloc::service::drop_node_ports_on_type_change(old, &mut patched);
            }
            if object::name_of(&patched) != name || object::namespace_of(&patched) != ns.unwrap_or("") {
                return Err(ApiError::bad_request(
                    "a patch may not change metadata.name or metadata.namespace",
                ));
            }
            revalidate(kind, patched)
        })
        .await
    }

    /// DELETE of one object. Without finalizers it goes at once and its last
    /// state is returned; with finalizers (its own, or the one a
    /// `Foreground`/`Orphan` propagation policy adds for the garbage
    /// collector) it gets a `deletionTimestamp` and goes when the last
    /// finalizer is removed.
    pub async fn delete(
        &self,
        kind: Kind,
        ns: Option<&str>,
        name: &str,
        body: &Bytes,
    ) -> Result<Value, ApiError> {
        let options: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("DeleteOptions are not valid JSON: {e}")))?
        };
        let propagation = match options.get("propagationPolicy").and_then(Value::as_str) {
            None => None,
            Some(p @ ("Background" | "Foreground" | "Orphan")) => Some(p),
            Some(p) => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy \"{p}\" is not one of Background, Foreground, Orphan"
                )));
            }
        };
        let finalizer = match propagation {
            Some("Foreground") => Some(FOREGROUND_FINALIZER),
            Some("Orphan") => Some(ORPHAN_FINALIZER),
            _ => None,
        };
        let k = key(kind, ns, name);
        loop {
            let current = self
                .store
                .get(&k)
                .await
                .map_err(|e| ApiError::from_store(e, kind, name))?
                .ok_or_else(|| ApiError::not_found(kind, name))?;
            let mut obj = materialize(&current)?;
            check_preconditions(kind, name, &options, &obj, current.revision)?;
            if kind == Kind::Namespace {
                if name == "default" {
                    return Err(ApiError::forbidden(
                        kind,
                        name,
                        "this namespace may not be deleted",
                    ));
                }
                self.empty_namespace(name).await?;
            }
            let mut finalizers = object::finalizers_of(&obj);
            if let Some(f) = finalizer
                && !finalizers.iter().any(|x| x == f)
            {
                finalizers.push(f.to_string());
            }
            if finalizers.is_empty() {
                let (_, last) = self
                    .store
                    .delete(&k, Some(current.revision))
                    .await
                    .map_err(|e| ApiError::from_store(e, kind, name))?;
                let last = materialize(&last)?;
                if kind == Kind::Service {
                    self.service_deleted(&last).await;
                }
                return Ok(last);
            }
            // Mark for deletion; the finalizers' owners finish it.
            object::mark_deleting(&mut obj, &finalizers, &now_rfc3339());
            object::strip_resource_version(&mut obj);
            match self.store.update(&k, encode(&obj)?, Some(current.revision)).await {
                Ok(rev) => {
                    object::set_resource_version(&mut obj, rev);
                    return Ok(obj);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, kind, name)),
            }
        }
    }

    /// Deletes every object in namespace `ns` (before the namespace goes).
    async fn empty_namespace(&self, ns: &str) -> Result<(), ApiError> {
        for kind in Kind::ALL.iter().copied().filter(|k| k.namespaced()) {
            let listing = self
                .store
                .list(&Prefix::new(kind.plural(), Some(ns.to_string())))
                .await
                .map_err(|e| ApiError::from_store(e, kind, ns))?;
            for (k, _) in listing.items {
                match self.store.delete(&k, None).await {
                    Ok((_, last)) if kind == Kind::Service => {
                        self.service_deleted(&materialize(&last)?).await
                    }
                    Ok(_) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(ApiError::from_store(e, kind, &k.name)),
                }
            }
        }
        Ok(())
    }

    /// Binds a pod to a node in one write: `spec.nodeName` and the
    /// `PodScheduled=True` condition together (Kubernetes' `binding`
    /// subresource). Fails with a conflict when the pod was replaced (other
    /// uid) or is bound elsewhere already. Returns the write's revision.
    pub async fn bind_pod(&self, ns: &str, name: &str, uid: &str, node: &str) -> Result<Revision, ApiError> {
        let k = key(Kind::Pod, Some(ns), name);
        loop {
            let current = self
                .store
                .get(&k)
                .await
                .map_err(|e| ApiError::from_store(e, Kind::Pod, name))?
                .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
            let mut obj = materialize(&current)?;
            if obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
                return Err(ApiError::conflict(Kind::Pod, name, "the pod was replaced"));
            }
            match obj.pointer("/spec/nodeName").and_then(Value::as_str) {
                Some(n) if n == node => return Ok(current.revision),
                Some(n) => {
                    return Err(ApiError::conflict(
                        Kind::Pod,
                        name,
                        &format!("pod {name} is already assigned to node \"{n}\""),
                    ));
                }
                None => {}
            }
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("nodeName".into(), Value::from(node));
            }
            set_pod_condition(
                &mut obj,
                json!({"type": "PodScheduled", "status": "True",
                "lastTransitionTime": now_rfc3339()}),
            );
            object::strip_resource_version(&mut obj);
            match self.store.update(&k, encode(&obj)?, Some(current.revision)).await {
                Ok(rev) => return Ok(rev),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, Kind::Pod, name)),
            }
        }
    }

    /// Creates the `default` namespace on first start.
    pub async fn ensure_default_namespace(&self) -> Result<(), StoreError> {
        let k = key(Kind::Namespace, None, "default");
        if self.store.get(&k).await?.is_some() {
            return Ok(());
        }
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        match self.create_object(Kind::Namespace, obj).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == 409 => Ok(()),
            Err(e) => Err(StoreError::Io(e.0.message)),
        }
    }
}
