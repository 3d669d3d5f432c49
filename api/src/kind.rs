//! The registry of kinds Shturman serves: their names, API groups, plurals,
//! short names and scope, and the strict decoder that turns a positioned
//! document into a validated object in canonical JSON.

use crate::manifest::{ManifestErrors, Node};

/// Every kind of object the API serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    Service,
    ConfigMap,
    Secret,
    Event,
    Deployment,
    ReplicaSet,
}

impl Kind {
    /// All kinds, in the order `get all`-style listings use.
    pub const ALL: &'static [Kind] = &[
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Service,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Event,
        Kind::Deployment,
        Kind::ReplicaSet,
    ];

    /// The `kind` field, e.g. `Deployment`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Event => "Event",
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
        }
    }

    /// API group: `""` for the core group, `apps` for workloads.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::ReplicaSet => "apps",
            _ => "",
        }
    }

    /// The `apiVersion` field, e.g. `apps/v1`.
    pub fn api_version(self) -> &'static str {
        match self.group() {
            "apps" => "apps/v1",
            _ => "v1",
        }
    }

    /// The resource name in URLs, e.g. `deployments`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Node => "nodes",
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
            Kind::Event => "events",
            Kind::Deployment => "deployments",
            Kind::ReplicaSet => "replicasets",
        }
    }

    /// Lower-case singular, e.g. `deployment`.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Node => "node",
            Kind::Pod => "pod",
            Kind::Service => "service",
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
            Kind::Event => "event",
            Kind::Deployment => "deployment",
            Kind::ReplicaSet => "replicaset",
        }
    }

    /// kubectl's short names.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace => &["ns"],
            Kind::Node => &["no"],
            Kind::Pod => &["po"],
            Kind::Service => &["svc"],
            Kind::ConfigMap => &["cm"],
            Kind::Secret => &[],
            Kind::Event => &["ev"],
            Kind::Deployment => &["deploy"],
            Kind::ReplicaSet => &["rs"],
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// Whether the kind has a `status` subresource.
    pub fn has_status(self) -> bool {
        !matches!(self, Kind::ConfigMap | Kind::Secret | Kind::Event)
    }

    /// How kubectl names the resource in messages: `deployment.apps`, `pod`.
    pub fn qualified_singular(self) -> String {
        match self.group() {
            "" => self.singular().to_string(),
            g => format!("{}.{g}", self.singular()),
        }
    }

    /// How Kubernetes names the resource in API errors: `deployments.apps`, `pods`.
    pub fn qualified_plural(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            g => format!("{}.{g}", self.plural()),
        }
    }

    /// The URL path of the collection, e.g. `/apis/apps/v1/namespaces/default/deployments`.
    /// `namespace` is ignored for cluster-scoped kinds; `None` lists across namespaces.
    pub fn collection_path(self, namespace: Option<&str>) -> String {
        let prefix = match self.group() {
            "" => "/api/v1".to_string(),
            g => format!("/apis/{g}/v1"),
        };
        match (self.namespaced(), namespace) {
            (true, Some(ns)) => format!("{prefix}/namespaces/{ns}/{}", self.plural()),
            _ => format!("{prefix}/{}", self.plural()),
        }
    }

    /// Finds the kind for an object's `apiVersion` and `kind`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == kind && k.api_version() == api_version)
    }

    /// Finds the kind a user means on the command line: plural, singular, short
    /// name, kind name, or `plural.group` (`deployments.apps`), any case.
    pub fn from_user(word: &str) -> Option<Kind> {
        let w = word.to_ascii_lowercase();
        let (base, group) = match w.split_once('.') {
            Some((b, g)) => (b.to_string(), Some(g.to_string())),
            None => (w.clone(), None),
        };
        Kind::ALL.iter().copied().find(|k| {
            let names = base == k.plural()
                || base == k.singular()
                || k.short_names().contains(&base.as_str())
                || base == k.name().to_ascii_lowercase();
            let group_ok = match &group {
                None => true,
                Some(g) => g == k.group() || (g.is_empty() && k.group().is_empty()),
            };
            names && group_ok
        })
    }

    /// Finds the kind served at a URL resource segment (`pods`, `deployments`).
    pub fn from_plural(plural: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.plural() == plural)
    }

    /// Strictly decodes `doc` as an object of this kind, applies defaults and
    /// validates it; returns it in canonical JSON. Errors carry positions in `source`.
    pub fn decode(self, source: &str, doc: &Node) -> Result<serde_json::Value, ManifestErrors> {
        // Filled in by the object-model work: dispatch to the typed decoder.
        let _ = (source, doc);
        Ok(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_words_find_kinds() {
        assert_eq!(Kind::from_user("po"), Some(Kind::Pod));
        assert_eq!(Kind::from_user("Deployments.apps"), Some(Kind::Deployment));
        assert_eq!(Kind::from_user("deploy"), Some(Kind::Deployment));
        assert_eq!(Kind::from_user("svc"), Some(Kind::Service));
        assert_eq!(Kind::from_user("widgets"), None);
        assert_eq!(Kind::from_type("apps/v1", "ReplicaSet"), Some(Kind::ReplicaSet));
        assert_eq!(Kind::from_type("v1", "Deployment"), None);
    }

    #[test]
    fn paths_follow_kubernetes() {
        assert_eq!(
            Kind::Deployment.collection_path(Some("default")),
            "/apis/apps/v1/namespaces/default/deployments"
        );
        assert_eq!(Kind::Node.collection_path(Some("default")), "/api/v1/nodes");
        assert_eq!(Kind::Pod.collection_path(None), "/api/v1/pods");
    }
}
