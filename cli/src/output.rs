//! Machine-readable output: `-o json` (one object, or a Kubernetes `List`),
//! `-o yaml` and `-o name`.

use serde_json::{Value, json};
use shturman_api::Kind;

use crate::value::str_at;
use crate::yaml::to_yaml;

/// Items from a list response, with `kind`/`apiVersion` filled in (the API
/// omits them on list items, as Kubernetes does).
pub fn list_items(kind: Kind, list: &Value) -> Vec<Value> {
    list.get("items")
        .and_then(Value::as_array)
        .map(|items| items.iter().map(|i| with_type(kind, i.clone())).collect())
        .unwrap_or_default()
}

/// `obj` with `apiVersion` and `kind` set when missing.
pub fn with_type(kind: Kind, mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.entry("apiVersion")
            .or_insert_with(|| Value::String(kind.api_version().into()));
        m.entry("kind")
            .or_insert_with(|| Value::String(kind.name().into()));
    }
    obj
}

/// One object as is when `single`, else `{"apiVersion":"v1","kind":"List","items":[…]}`.
pub fn wrap(items: Vec<Value>, single: bool) -> Value {
    if single && items.len() == 1 {
        items.into_iter().next().unwrap_or(Value::Null)
    } else {
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
    }
}

/// Pretty JSON with a trailing newline.
pub fn json_text(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into());
    s.push('\n');
    s
}

pub fn yaml_text(v: &Value) -> String {
    to_yaml(v)
}

/// `deployment.apps/web`.
pub fn name_line(kind: Kind, obj: &Value) -> String {
    format!("{}/{}", kind.qualified_singular(), str_at(obj, "metadata.name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_wrap_several_objects() {
        let a = json!({"metadata": {"name": "a"}});
        assert_eq!(wrap(vec![a.clone()], true), a);
        let l = wrap(vec![a.clone(), a.clone()], true);
        assert_eq!(l["kind"], "List");
        assert_eq!(l["apiVersion"], "v1");
        assert_eq!(l["items"].as_array().map(Vec::len), Some(2));
        assert_eq!(wrap(vec![a], false)["kind"], "List");
        assert_eq!(wrap(vec![], true)["items"], json!([]));
    }

    #[test]
    fn list_items_get_their_type() {
        let list = json!({"items": [{"metadata": {"name": "web"}}, {"kind": "Deployment", "apiVersion": "apps/v1"}]});
        let items = list_items(Kind::Deployment, &list);
        assert_eq!(items[0]["kind"], "Deployment");
        assert_eq!(items[0]["apiVersion"], "apps/v1");
        assert_eq!(name_line(Kind::Deployment, &items[0]), "deployment.apps/web");
        assert!(list_items(Kind::Pod, &json!({})).is_empty());
    }
}
