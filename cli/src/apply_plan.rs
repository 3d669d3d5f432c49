//! The pure half of `apply`: the last-applied annotation, the decision
//! (create / unchanged / update) and the three-way merge that builds the
//! object sent on update, keeping what the server and other writers own.

use serde_json::{Map, Value};

/// Where `apply` records the manifest as last applied (kubectl's key, so the
/// two tools interoperate).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What `apply` does with one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Absent: POST this body.
    Create(Value),
    /// The live object was last applied from the same manifest: no write.
    Unchanged,
    /// PUT this body.
    Update(Value),
}

/// The manifest without `status` (the server owns it) and without any
/// last-applied annotation it may carry itself.
pub fn desired(manifest: &Value) -> Value {
    let mut d = manifest.clone();
    if let Some(obj) = d.as_object_mut() {
        obj.remove("status");
    }
    if let Some(ann) = d
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        ann.remove(LAST_APPLIED);
    }
    if let Some(meta) = d.get_mut("metadata").and_then(Value::as_object_mut)
        && meta
            .get("annotations")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    {
        meta.remove("annotations");
    }
    d
}

/// `desired` carrying its own canonical JSON in the last-applied annotation.
pub fn with_last_applied(desired: &Value) -> Value {
    let text = serde_json::to_string(desired).unwrap_or_default();
    let mut out = desired.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !ann.is_object() {
            *ann = Value::Object(Map::new());
        }
        if let Some(ann) = ann.as_object_mut() {
            ann.insert(LAST_APPLIED.into(), Value::String(text));
        }
    }
    out
}

/// The configuration recorded on a live object, if any (and if it parses).
pub fn last_applied_of(live: &Value) -> Option<Value> {
    let text = live
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    serde_json::from_str(text).ok()
}

/// Decides what to do with `manifest` given the live object (if any).
pub fn decide(manifest: &Value, live: Option<&Value>) -> Decision {
    let desired = desired(manifest);
    let body = with_last_applied(&desired);
    let Some(live) = live else {
        return Decision::Create(body);
    };
    let last = last_applied_of(live);
    if last.as_ref() == Some(&desired) {
        return Decision::Unchanged;
    }
    let mut merged = three_way(live, last.as_ref(), &body);
    if let (Some(rv), Some(meta)) = (
        live.pointer("/metadata/resourceVersion").cloned(),
        merged.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        meta.insert("resourceVersion".into(), rv);
    }
    Decision::Update(merged)
}

/// Three-way merge of maps: start from `live`; a key in `new` wins (maps are
/// merged recursively, lists and scalars replaced whole); a key that was in
/// `last` but is gone from `new` is removed; anything else in `live` (server
/// metadata, status, fields others set) is kept.
pub fn three_way(live: &Value, last: Option<&Value>, new: &Value) -> Value {
    match (live, new) {
        (Value::Object(l), Value::Object(n)) => {
            let mut out = l.clone();
            if let Some(Value::Object(last)) = last {
                for k in last.keys() {
                    if !n.contains_key(k) {
                        out.remove(k);
                    }
                }
            }
            for (k, nv) in n {
                let last_v = last.and_then(|x| x.get(k));
                let merged = match l.get(k) {
                    Some(lv) => three_way(lv, last_v, nv),
                    None => nv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "x"}},
               "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})
    }

    fn live_from(applied: &Value) -> Value {
        let mut live = with_last_applied(&desired(applied));
        let meta = live["metadata"].as_object_mut().expect("meta");
        meta.insert("uid".into(), json!("u-1"));
        meta.insert("resourceVersion".into(), json!("17"));
        meta.insert("creationTimestamp".into(), json!("2024-05-01T00:00:00Z"));
        meta["annotations"]["deployment.kubernetes.io/revision"] = json!("1");
        live["status"] = json!({"replicas": 2});
        live
    }

    #[test]
    fn absent_objects_are_created_with_the_annotation() {
        let Decision::Create(body) = decide(&manifest(), None) else {
            panic!("expected create")
        };
        let recorded: Value = serde_json::from_str(
            body["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .expect("annotation"),
        )
        .expect("json");
        assert_eq!(recorded, manifest());
    }

    #[test]
    fn same_manifest_is_unchanged() {
        let live = live_from(&manifest());
        assert_eq!(decide(&manifest(), Some(&live)), Decision::Unchanged);
        // A manifest that carries a stale annotation of its own still compares by content.
        let mut m = manifest();
        m["metadata"]["annotations"] = json!({LAST_APPLIED: "{}"});
        m["status"] = json!({"loadBalancer": {}});
        assert_eq!(decide(&m, Some(&live)), Decision::Unchanged);
    }

    #[test]
    fn changes_merge_three_ways() {
        let live = live_from(&manifest());
        let mut m = manifest();
        m["spec"]["replicas"] = json!(5);
        m["metadata"]["labels"] = json!({"app": "web"});
        let Decision::Update(body) = decide(&m, Some(&live)) else {
            panic!("expected update")
        };
        assert_eq!(body["spec"]["replicas"], 5);
        assert_eq!(
            body["metadata"]["labels"],
            json!({"app": "web"}),
            "removed label is dropped"
        );
        assert_eq!(body["metadata"]["uid"], "u-1");
        assert_eq!(body["metadata"]["resourceVersion"], "17");
        assert_eq!(body["metadata"]["creationTimestamp"], "2024-05-01T00:00:00Z");
        assert_eq!(
            body["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "1"
        );
        assert_eq!(body["status"], json!({"replicas": 2}));
        assert_eq!(last_applied_of(&body), Some(m));
    }

    #[test]
    fn objects_created_without_apply_are_configured_not_pruned() {
        let mut live = manifest();
        live["metadata"]["labels"]["extra"] = json!("kept");
        live["metadata"]["resourceVersion"] = json!("3");
        let Decision::Update(body) = decide(&manifest(), Some(&live)) else {
            panic!("expected update")
        };
        assert_eq!(body["metadata"]["labels"]["extra"], "kept");
        assert!(last_applied_of(&body).is_some());
    }

    #[test]
    fn lists_are_replaced_whole() {
        let live = json!({"a": [1, 2, 3], "m": {"x": 1}});
        let merged = three_way(&live, Some(&json!({"a": [1]})), &json!({"a": [9], "m": {"y": 2}}));
        assert_eq!(merged, json!({"a": [9], "m": {"x": 1, "y": 2}}));
    }
}
