//! The registry of kinds Shturman serves: their names, API groups, plurals,
//! short names and scope, and the strict decoder that turns a positioned
//! document into a validated object in canonical JSON.

use crate::apps::{Deployment, ReplicaSet};
use crate::core::node::Node as NodeObject;
use crate::core::{ConfigMap, Endpoints, Event, Namespace, Pod, Secret, Service};
use crate::manifest::{self, ManifestError, ManifestErrors, Node};
use crate::meta::Object;
use crate::validate::FieldError;

/// Every kind of object the API serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    Service,
    Endpoints,
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
        Kind::Endpoints,
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
            Kind::Endpoints => "Endpoints",
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
            Kind::Endpoints => "endpoints",
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
            Kind::Endpoints => "endpoints",
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
            Kind::Endpoints => &["ep"],
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
        !matches!(
            self,
            Kind::ConfigMap | Kind::Secret | Kind::Event | Kind::Endpoints
        )
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
        match self {
            Kind::Namespace => decode_value::<Namespace>(source, doc),
            Kind::Node => decode_value::<NodeObject>(source, doc),
            Kind::Pod => decode_value::<Pod>(source, doc),
            Kind::Service => decode_value::<Service>(source, doc),
            Kind::Endpoints => decode_value::<Endpoints>(source, doc),
            Kind::ConfigMap => decode_value::<ConfigMap>(source, doc),
            Kind::Secret => decode_value::<Secret>(source, doc),
            Kind::Event => decode_value::<Event>(source, doc),
            Kind::Deployment => decode_value::<Deployment>(source, doc),
            Kind::ReplicaSet => decode_value::<ReplicaSet>(source, doc),
        }
    }

    /// Strictly decodes an object of this kind from JSON (a request body, the
    /// result of a PATCH, a status update), fills in `apiVersion`/`kind` when
    /// missing, applies defaults, validates, and returns canonical JSON.
    pub fn normalize(self, value: serde_json::Value) -> Result<serde_json::Value, Vec<FieldError>> {
        match self {
            Kind::Namespace => normalize_value::<Namespace>(value),
            Kind::Node => normalize_value::<NodeObject>(value),
            Kind::Pod => normalize_value::<Pod>(value),
            Kind::Service => normalize_value::<Service>(value),
            Kind::Endpoints => normalize_value::<Endpoints>(value),
            Kind::ConfigMap => normalize_value::<ConfigMap>(value),
            Kind::Secret => normalize_value::<Secret>(value),
            Kind::Event => normalize_value::<Event>(value),
            Kind::Deployment => normalize_value::<Deployment>(value),
            Kind::ReplicaSet => normalize_value::<ReplicaSet>(value),
        }
    }
}

/// Checks an object's `apiVersion` and `kind` against its type, filling them in when empty.
pub fn check_type_meta<T: Object>(obj: &mut T) -> Vec<FieldError> {
    let (api_version, kind) = obj.type_meta();
    let errs = type_errors(T::KIND, api_version, kind);
    if errs.is_empty() {
        obj.set_type_meta();
    }
    errs
}

/// Errors for an `apiVersion` / `kind` (empty means unset) that are not `want`'s.
fn type_errors(want: Kind, api_version: &str, kind: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (want_version, want_kind) = (want.api_version(), want.name());
    if !api_version.is_empty() && api_version != want_version {
        errs.push(
            FieldError::new(
                "apiVersion",
                format!("apiVersion {api_version:?} does not serve {want_kind}"),
            )
            .hint(format!("use apiVersion: {want_version}")),
        );
    }
    if !kind.is_empty() && kind != want_kind {
        errs.push(
            FieldError::new(
                "kind",
                format!("kind {kind:?} was sent where a {want_kind} is expected"),
            )
            .hint(format!(
                "use kind: {want_kind}, or send the object to the endpoint for its kind"
            )),
        );
    }
    errs
}

/// Type meta, defaults and validation: what every decode path runs after parsing.
fn finish<T: Object>(obj: &mut T) -> Vec<FieldError> {
    let errs = check_type_meta(obj);
    if !errs.is_empty() {
        return errs;
    }
    obj.apply_defaults();
    obj.validate()
}

/// Strictly decodes a positioned document as `T`, defaulted and validated.
pub fn decode_object<T: Object>(source: &str, doc: &Node) -> Result<T, ManifestErrors> {
    let mut obj: T = manifest::decode(source, doc)?;
    let errs = finish(&mut obj);
    if errs.is_empty() {
        Ok(obj)
    } else {
        Err(ManifestErrors(
            errs.into_iter()
                .map(|e| ManifestError {
                    source: source.to_string(),
                    mark: doc.locate(&e.path),
                    path: e.path,
                    message: e.message,
                    hint: e.hint,
                })
                .collect(),
        ))
    }
}

fn decode_value<T: Object>(source: &str, doc: &Node) -> Result<serde_json::Value, ManifestErrors> {
    let obj: T = decode_object(source, doc)?;
    serde_json::to_value(&obj).map_err(|e| {
        ManifestErrors(vec![ManifestError {
            source: source.to_string(),
            mark: doc.mark,
            path: String::new(),
            message: format!("cannot encode the object: {e}"),
            hint: None,
        }])
    })
}

/// Strictly decodes JSON as `T`, defaulted and validated.
pub fn normalize_object<T: Object>(value: serde_json::Value) -> Result<T, Vec<FieldError>> {
    // A wrong kind is reported as such, not as the unknown fields it brings.
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let errs = type_errors(T::KIND, field("apiVersion"), field("kind"));
    if !errs.is_empty() {
        return Err(errs);
    }
    let mut obj: T = match T::deserialize(&value) {
        Ok(obj) => obj,
        Err(e) => return Err(vec![json_error::<T>(&value, &e)]),
    };
    let errs = finish(&mut obj);
    if errs.is_empty() { Ok(obj) } else { Err(errs) }
}

fn normalize_value<T: Object>(value: serde_json::Value) -> Result<serde_json::Value, Vec<FieldError>> {
    let obj: T = normalize_object(value)?;
    serde_json::to_value(&obj)
        .map_err(|e| vec![FieldError::new("", format!("cannot encode the object: {e}"))])
}

/// Turns a serde_json error into a field error, asking the manifest decoder
/// (which tracks paths) where it is when it can tell.
fn json_error<T: Object>(value: &serde_json::Value, e: &serde_json::Error) -> FieldError {
    let located = serde_json::to_string(value).ok().and_then(|text| {
        let docs = manifest::parse_documents("request body", &text, &manifest::Limits::default()).ok()?;
        let doc = docs.first()?;
        let errs = manifest::decode::<T>("request body", doc).err()?;
        errs.0.into_iter().find(|m| !m.path.is_empty())
    });
    match located {
        Some(m) => FieldError {
            path: m.path,
            message: m.message,
            hint: m.hint,
        },
        None => FieldError::new("", format!("invalid {}: {e}", T::KIND.name()))
            .hint("remove fields Shturman does not support and check value types"),
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
        assert_eq!(Kind::from_user("ep"), Some(Kind::Endpoints));
        assert_eq!(Kind::from_user("endpoints"), Some(Kind::Endpoints));
        assert_eq!(Kind::from_type("v1", "Endpoints"), Some(Kind::Endpoints));
        assert!(!Kind::Endpoints.has_status() && Kind::Endpoints.namespaced());
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

    fn doc(text: &str) -> Node {
        let docs = manifest::parse_documents("app.yaml", text, &manifest::Limits::default()).expect("parses");
        docs.into_iter().next().expect("one document")
    }

    const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: -1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        resources:
          limits: {cpu: 500m}
          requests: {cpu: \"2\"}
";

    #[test]
    fn decode_defaults_and_reports_positions() {
        let text = DEPLOYMENT
            .replace("replicas: -1", "replicas: 2")
            .replace("{cpu: \"2\"}", "{cpu: 0.25}");
        let v = Kind::Deployment.decode("app.yaml", &doc(&text)).expect("valid");
        assert_eq!(v["spec"]["replicas"], 2);
        assert_eq!(v["spec"]["revisionHistoryLimit"], 10);
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["requests"]["cpu"], "250m");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");

        let errs = Kind::Deployment
            .decode("app.yaml", &doc(DEPLOYMENT))
            .expect_err("invalid");
        let got: Vec<(String, usize)> = errs.0.iter().map(|e| (e.path.clone(), e.mark.line)).collect();
        assert_eq!(
            got,
            [
                ("spec.replicas".to_string(), 6),
                (
                    "spec.template.spec.containers[0].resources.requests[\"cpu\"]".to_string(),
                    18
                ),
            ]
        );
        assert!(errs.0.iter().all(|e| e.source == "app.yaml" && e.hint.is_some()));
    }

    #[test]
    fn decode_rejects_unknown_fields_and_wrong_kinds() {
        let text = DEPLOYMENT.replace("  replicas: -1", "  replicaz: 1");
        let errs = Kind::Deployment
            .decode("app.yaml", &doc(&text))
            .expect_err("unknown field");
        assert_eq!(errs.0[0].path, "spec.replicaz");
        let errs = Kind::Pod
            .decode(
                "app.yaml",
                &doc("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers: []\n"),
            )
            .expect_err("initContainers is unsupported");
        assert_eq!(errs.0[0].path, "spec.initContainers");
        let errs = Kind::Pod
            .decode("app.yaml", &doc("apiVersion: v2\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\n"))
            .expect_err("wrong apiVersion");
        assert_eq!(errs.0[0].path, "apiVersion");
    }

    #[test]
    fn normalize_fills_type_meta() {
        let v = Kind::ConfigMap
            .normalize(serde_json::json!({"metadata": {"name": "c"}}))
            .expect("valid");
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
        );
    }
}
