//! Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/apps/v1`), so
//! Kubernetes clients can find what this server serves.

use serde_json::{Value, json};
use shturman_api::Kind;

fn verbs(kind: Kind) -> Vec<&'static str> {
    vec!["create", "delete", "get", "list", "patch", "update", "watch"]
        .into_iter()
        .filter(|v| kind != Kind::Event || *v != "patch")
        .collect()
}

/// `/api`.
pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

/// `/apis/apps`: one group's description.
pub fn apps_group() -> Value {
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": "apps",
        "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
    })
}

/// `/apis`.
pub fn api_groups() -> Value {
    let mut apps = apps_group();
    if let Some(m) = apps.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [apps]})
}

/// `/api/v1` (group "") or `/apis/apps/v1` (group "apps").
pub fn resources(group: &str) -> Value {
    let mut resources = Vec::new();
    for kind in Kind::ALL.iter().copied().filter(|k| k.group() == group) {
        resources.push(json!({
            "name": kind.plural(),
            "singularName": kind.singular(),
            "namespaced": kind.namespaced(),
            "kind": kind.name(),
            "verbs": verbs(kind),
            "shortNames": kind.short_names(),
        }));
        if kind.has_status() {
            resources.push(json!({
                "name": format!("{}/status", kind.plural()),
                "singularName": "",
                "namespaced": kind.namespaced(),
                "kind": kind.name(),
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_each_group_once() {
        let core = resources("");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods") && names.contains(&"pods/status") && names.contains(&"configmaps"));
        assert!(!names.contains(&"deployments"));
        let apps = resources("apps");
        assert_eq!(apps["groupVersion"], "apps/v1");
        assert_eq!(apps["resources"][0]["name"], "deployments");
    }
}
