//! What the API server does to an object's metadata on create and update:
//! server-owned fields (uid, creationTimestamp, generation, resourceVersion),
//! status kept apart from spec, JSON merge patch. Pure functions over JSON.

use serde_json::{Map, Value};
use shturman_api::Kind;

use super::error::ApiError;

/// Server-set facts for a create.
pub struct CreateFacts<'a> {
    pub uid: &'a str,
    /// RFC 3339, seconds.
    pub now: &'a str,
    /// Five characters for `generateName`.
    pub suffix: &'a str,
}

/// Kinds whose `spec` changes bump `metadata.generation`.
fn has_generation(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::ConfigMap | Kind::Secret | Kind::Event | Kind::Endpoints
    )
}

fn meta_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the object must be a JSON/YAML map"))?;
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    meta.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be a map"))
}

/// `metadata.name`, or "".
pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.namespace`, or "".
pub fn namespace_of(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.resourceVersion` parsed, if present and non-empty.
pub fn resource_version_of(obj: &Value) -> Result<Option<u64>, ApiError> {
    match obj.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "metadata.resourceVersion \"{s}\" is not one this server issued; GET the object and use its resourceVersion"
            ))
        }),
    }
}

/// Checks the object's namespace against the URL's and fills it in.
pub fn settle_namespace(kind: Kind, obj: &mut Value, url_ns: Option<&str>) -> Result<(), ApiError> {
    let meta = meta_mut(obj)?;
    let body_ns = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !kind.namespaced() {
        if !body_ns.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{} objects are cluster-scoped; remove metadata.namespace \"{body_ns}\"",
                kind.name()
            )));
        }
        meta.remove("namespace");
        return Ok(());
    }
    let Some(url_ns) = url_ns else {
        return Err(ApiError::bad_request(format!(
            "{} objects are namespaced; use /namespaces/{{ns}}/{} in the path",
            kind.name(),
            kind.plural()
        )));
    };
    if !body_ns.is_empty() && body_ns != url_ns {
        return Err(ApiError::bad_request(format!(
            "the namespace of the object ({body_ns}) does not match the namespace in the request ({url_ns})"
        )));
    }
    meta.insert("namespace".into(), Value::String(url_ns.to_string()));
    Ok(())
}

/// Prepares a validated object for its first write.
pub fn prepare_create(kind: Kind, mut obj: Value, facts: &CreateFacts<'_>) -> Result<Value, ApiError> {
    let meta = meta_mut(&mut obj)?;
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    if name.is_empty() {
        let prefix = meta.get("generateName").and_then(Value::as_str).unwrap_or("");
        if prefix.is_empty() {
            return Err(ApiError::bad_request(
                "metadata.name is required (or metadata.generateName for a generated one)",
            ));
        }
        meta.insert("name".into(), Value::String(format!("{prefix}{}", facts.suffix)));
    }
    meta.insert("uid".into(), Value::String(facts.uid.to_string()));
    meta.insert("creationTimestamp".into(), Value::String(facts.now.to_string()));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    if has_generation(kind) {
        meta.insert("generation".into(), Value::from(1));
    } else {
        meta.remove("generation");
    }
    if let Some(map) = obj.as_object_mut() {
        match kind {
            // As Kubernetes: a new pod is Pending whatever the body said.
            Kind::Pod => {
                map.insert("status".into(), serde_json::json!({"phase": "Pending"}));
            }
            // Nodes report their own status at registration.
            Kind::Node => {}
            Kind::Namespace => {
                map.insert("status".into(), serde_json::json!({"phase": "Active"}));
            }
            k if k.has_status() => {
                map.remove("status");
            }
            _ => {}
        }
    }
    Ok(obj)
}

/// Merges an update into the stored object. A main-resource update keeps the
/// stored status; a status update keeps everything but the status.
/// Server-owned metadata is always kept.
pub fn prepare_update(kind: Kind, old: &Value, mut new: Value, status_only: bool) -> Result<Value, ApiError> {
    if old.get("immutable").and_then(Value::as_bool) == Some(true) && !status_only {
        let changed = ["data", "binaryData", "stringData"]
            .iter()
            .any(|f| old.get(*f) != new.get(*f))
            || new.get("immutable").and_then(Value::as_bool) != Some(true);
        if changed {
            return Err(ApiError::forbidden(
                kind,
                name_of(old),
                "field is immutable when `immutable` is set; delete and recreate the object to change it",
            ));
        }
    }
    if status_only {
        let mut merged = old.clone();
        if let Some(map) = merged.as_object_mut() {
            match new.get("status") {
                Some(s) => map.insert("status".into(), s.clone()),
                None => map.remove("status"),
            };
        }
        strip_resource_version(&mut merged);
        return Ok(merged);
    }
    {
        let old_meta = old.get("metadata").and_then(Value::as_object);
        let meta = meta_mut(&mut new)?;
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.and_then(|m| m.get(field)) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        meta.remove("resourceVersion");
    }
    if has_generation(kind) && old.get("spec") != new.get("spec") {
        let gen_now = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut new)?.insert("generation".into(), Value::from(gen_now + 1));
    }
    if kind.has_status()
        && let Some(map) = new.as_object_mut()
    {
        match old.get("status") {
            Some(s) => map.insert("status".into(), s.clone()),
            None => map.remove("status"),
        };
    }
    Ok(new)
}

/// `metadata.finalizers`.
pub fn finalizers_of(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Sets `deletionTimestamp` (once) and the finalizers that hold the object.
pub fn mark_deleting(obj: &mut Value, finalizers: &[String], now: &str) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("deletionTimestamp")
            .or_insert_with(|| Value::String(now.to_string()));
        meta.entry("deletionGracePeriodSeconds").or_insert(Value::from(0));
        meta.insert("finalizers".into(), Value::from(finalizers.to_vec()));
    }
}

/// Whether a write leaves an object marked for deletion with no finalizer
/// left: then the write is the delete.
pub fn deletion_finished(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some() && finalizers_of(obj).is_empty()
}

/// Removes `metadata.resourceVersion` (the store's revision is the truth).
pub fn strip_resource_version(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
}

/// Sets `metadata.resourceVersion` to the store revision.
pub fn set_resource_version(obj: &mut Value, revision: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(revision.to_string()));
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_map) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                target_map.remove(k);
            } else {
                merge_patch(target_map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FACTS: CreateFacts<'static> = CreateFacts {
        uid: "u-1",
        now: "2026-01-01T00:00:00Z",
        suffix: "x7k2p",
    };

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_patch(&mut t, &json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
        let mut t = json!("x");
        merge_patch(&mut t, &json!({"a": {"b": null}}));
        assert_eq!(t, json!({"a": {}}));
    }

    #[test]
    fn create_sets_server_fields() {
        let obj = json!({"metadata": {"name": "web", "resourceVersion": "9", "uid": "mine"}, "spec": {}, "status": {"x": 1}});
        let out = prepare_create(Kind::Deployment, obj, &FACTS).unwrap();
        assert_eq!(out["metadata"]["uid"], "u-1");
        assert_eq!(out["metadata"]["generation"], 1);
        assert_eq!(out["metadata"]["creationTimestamp"], "2026-01-01T00:00:00Z");
        assert!(out["metadata"].get("resourceVersion").is_none());
        assert!(out.get("status").is_none());
        let pod = prepare_create(Kind::Pod, json!({"metadata": {"generateName": "web-"}}), &FACTS).unwrap();
        assert_eq!(pod["metadata"]["name"], "web-x7k2p");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert!(prepare_create(Kind::Pod, json!({"metadata": {}}), &FACTS).is_err());
    }

    #[test]
    fn update_keeps_server_fields_and_status() {
        let old = json!({"metadata": {"name": "web", "uid": "u-1", "generation": 3, "creationTimestamp": "t"},
                         "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let new = json!({"metadata": {"name": "web", "uid": "forged", "generation": 99},
                         "spec": {"replicas": 2}, "status": {"replicas": 7}});
        let out = prepare_update(Kind::Deployment, &old, new, false).unwrap();
        assert_eq!(out["metadata"]["uid"], "u-1");
        assert_eq!(out["metadata"]["generation"], 4);
        assert_eq!(out["status"]["replicas"], 1);
        let same_spec = json!({"metadata": {"name": "web", "labels": {"a": "b"}}, "spec": {"replicas": 1}});
        let out = prepare_update(Kind::Deployment, &old, same_spec, false).unwrap();
        assert_eq!(out["metadata"]["generation"], 3);
        assert_eq!(out["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn status_update_touches_only_status() {
        let old = json!({"metadata": {"name": "web", "generation": 3}, "spec": {"replicas": 1}});
        let new =
            json!({"metadata": {"name": "web"}, "spec": {"replicas": 5}, "status": {"readyReplicas": 1}});
        let out = prepare_update(Kind::Deployment, &old, new, true).unwrap();
        assert_eq!(out["spec"]["replicas"], 1);
        assert_eq!(out["status"]["readyReplicas"], 1);
        assert_eq!(out["metadata"]["generation"], 3);
    }

    #[test]
    fn immutable_configmaps_refuse_changes() {
        let old = json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "immutable": true});
        let new = json!({"metadata": {"name": "c"}, "data": {"a": "2"}, "immutable": true});
        assert_eq!(
            prepare_update(Kind::ConfigMap, &old, new, false)
                .unwrap_err()
                .code(),
            403
        );
        let labels_only =
            json!({"metadata": {"name": "c", "labels": {"x": "y"}}, "data": {"a": "1"}, "immutable": true});
        assert!(prepare_update(Kind::ConfigMap, &old, labels_only, false).is_ok());
    }

    #[test]
    fn namespaces_are_settled() {
        let mut o = json!({"metadata": {"name": "a"}});
        settle_namespace(Kind::Pod, &mut o, Some("dev")).unwrap();
        assert_eq!(o["metadata"]["namespace"], "dev");
        let mut o = json!({"metadata": {"name": "a", "namespace": "prod"}});
        assert!(settle_namespace(Kind::Pod, &mut o, Some("dev")).is_err());
        let mut o = json!({"metadata": {"name": "n", "namespace": "x"}});
        assert!(settle_namespace(Kind::Node, &mut o, None).is_err());
    }
}
