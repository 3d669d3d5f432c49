//! Field errors and the validation rules every kind shares: DNS-1123 names,
//! label keys and values, port numbers and names, object metadata. Kind-specific
//! rules live in submodules: [`pod`] for pod specs and templates, [`container`],
//! [`service`], [`endpoints`], and [`workload`] for Deployments and ReplicaSets.
//!
//! Paths use `a.b[0].c` for fields and list items and `a.labels["key"]` for map
//! keys, the syntax `manifest::Node::locate` understands.

use std::collections::BTreeMap;
use std::fmt;

use crate::meta::ObjectMeta;
use crate::status::StatusCause;

pub mod container;
pub mod endpoints;
pub mod pod;
pub mod service;
pub mod workload;

/// One thing wrong with an object: where (`path`), what (`message`) and what to do (`hint`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Field path, e.g. `spec.template.spec.containers[0].image`.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint saying what to do.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

impl From<&FieldError> for StatusCause {
    fn from(e: &FieldError) -> Self {
        let message = match &e.hint {
            Some(h) => format!("{}; {h}", e.message),
            None => e.message.clone(),
        };
        StatusCause {
            reason: "FieldValueInvalid".into(),
            message,
            field: e.path.clone(),
        }
    }
}

/// A field path under construction: `Path::new("spec").field("containers").index(0)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn new(root: &str) -> Self {
        Path(root.to_string())
    }

    /// `self.name`
    pub fn field(&self, name: &str) -> Path {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    /// `self[i]`
    pub fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }

    /// `self["key"]`
    pub fn key(&self, key: &str) -> Path {
        Path(format!("{}[{key:?}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An error at this path.
    pub fn error(&self, message: impl Into<String>) -> FieldError {
        FieldError::new(self.0.clone(), message)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// A DNS-1123 label: ≤ 63 lower-case alphanumerics or `-`, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower)
}

/// A DNS-1123 subdomain: ≤ 253 characters, dot-separated DNS-1123 labels.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A DNS-1035 label (Service names): a DNS-1123 label that starts with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// An IANA service name (named ports): ≤ 15 of `a-z0-9-`, at least one letter,
/// no leading, trailing or double `-`.
pub fn is_iana_svc_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// The "name" part of a qualified name: ≤ 63 alphanumerics, `-`, `_`, `.`,
/// starting and ending alphanumeric.
fn is_qualified_name_part(s: &str) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(edge)
        && s.ends_with(edge)
}

/// A label or annotation key: `[prefix/]name`, prefix a DNS-1123 subdomain.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(s),
    }
}

/// A label value: empty, or ≤ 63 characters like a qualified name part.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name_part(s)
}

/// An environment variable name: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn is_env_var_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// A ConfigMap or Secret key: ≤ 253 of `-._a-zA-Z0-9`, not `.` or `..`.
pub fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks a name against DNS-1123 subdomain rules.
pub fn check_subdomain(path: &Path, value: &str, errs: &mut Vec<FieldError>) {
    if !is_dns1123_subdomain(value) {
        errs.push(path.error(format!("{value:?} is not a valid DNS-1123 subdomain")).hint(
            "use at most 253 lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, e.g. \"my-app.v1\"",
        ));
    }
}

/// Checks a name against DNS-1123 label rules.
pub fn check_label_name(path: &Path, value: &str, errs: &mut Vec<FieldError>) {
    if !is_dns1123_label(value) {
        errs.push(path.error(format!("{value:?} is not a valid DNS-1123 label")).hint(
            "use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit, e.g. \"web-1\"",
        ));
    }
}

/// Checks a port number is 1–65535.
pub fn check_port(path: &Path, port: i32, errs: &mut Vec<FieldError>) {
    if !(1..=65535).contains(&port) {
        errs.push(
            path.error(format!("port {port} is out of range"))
                .hint("use a port number between 1 and 65535"),
        );
    }
}

/// Checks a port name is a valid IANA service name.
pub fn check_port_name(path: &Path, name: &str, errs: &mut Vec<FieldError>) {
    if !is_iana_svc_name(name) {
        errs.push(path.error(format!("{name:?} is not a valid port name")).hint(
            "use at most 15 lower-case letters, digits and '-', with at least one letter, e.g. \"http\"",
        ));
    }
}

/// Checks label keys and values.
pub fn check_labels(path: &Path, labels: &BTreeMap<String, String>, errs: &mut Vec<FieldError>) {
    for (k, v) in labels {
        let p = path.key(k);
        check_key(&p, k, errs);
        if !is_label_value(v) {
            errs.push(p.error(format!("{v:?} is not a valid label value")).hint(
                "use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit (or an empty value)",
            ));
        }
    }
}

/// Checks a label, annotation or selector key.
pub fn check_key(path: &Path, key: &str, errs: &mut Vec<FieldError>) {
    if !is_qualified_name(key) {
        errs.push(path.error(format!("{key:?} is not a valid key")).hint(
            "use an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' and '.', e.g. \"app.kubernetes.io/name\"",
        ));
    }
}

/// How an object's name is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most kinds).
    Subdomain,
    /// DNS-1123 label (Namespaces).
    Label,
    /// DNS-1035 label (Services).
    Dns1035,
}

/// Checks `metadata`: the name (or generateName), the namespace if set, labels
/// and annotation keys. `namespaced` says whether the kind lives in a namespace.
pub fn check_object_meta(meta: &ObjectMeta, rule: NameRule, namespaced: bool, errs: &mut Vec<FieldError>) {
    let path = Path::new("metadata");
    match (&meta.name, &meta.generate_name) {
        (None, None) => errs.push(
            path.field("name")
                .error("name is required")
                .hint("set metadata.name (or metadata.generateName for a generated name)"),
        ),
        (Some(name), _) => check_name(&path.field("name"), name, rule, errs),
        (None, Some(prefix)) => {
            // generateName gets a random suffix, so only its characters are checked.
            let trimmed = prefix.trim_end_matches('-');
            if !trimmed.is_empty() {
                check_name(&path.field("generateName"), trimmed, rule, errs);
            }
        }
    }
    if let Some(ns) = &meta.namespace {
        if namespaced {
            check_label_name(&path.field("namespace"), ns, errs);
        } else if !ns.is_empty() {
            errs.push(
                path.field("namespace")
                    .error("this kind is cluster-scoped and has no namespace")
                    .hint("remove metadata.namespace"),
            );
        }
    }
    check_labels(&path.field("labels"), &meta.labels, errs);
    let annotations = path.field("annotations");
    let mut total = 0usize;
    for (k, v) in &meta.annotations {
        check_key(&annotations.key(k), k, errs);
        total = total.saturating_add(k.len()).saturating_add(v.len());
    }
    if total > 256 * 1024 {
        errs.push(
            annotations
                .error(format!("annotations total {total} bytes, more than 256 KiB"))
                .hint("store large data in a ConfigMap instead"),
        );
    }
    for (i, r) in meta.owner_references.iter().enumerate() {
        let p = path.field("ownerReferences").index(i);
        if r.name.is_empty() || r.kind.is_empty() || r.api_version.is_empty() || r.uid.is_empty() {
            errs.push(
                p.error("an owner reference needs apiVersion, kind, name and uid")
                    .hint("copy them from the owner object"),
            );
        }
    }
    let controllers = meta
        .owner_references
        .iter()
        .filter(|r| r.controller == Some(true))
        .count();
    if controllers > 1 {
        errs.push(
            path.field("ownerReferences")
                .error("only one owner reference can have controller: true")
                .hint("set controller: true on a single owner"),
        );
    }
}

fn check_name(path: &Path, name: &str, rule: NameRule, errs: &mut Vec<FieldError>) {
    match rule {
        NameRule::Subdomain => check_subdomain(path, name, errs),
        NameRule::Label => check_label_name(path, name, errs),
        NameRule::Dns1035 => {
            if !is_dns1035_label(name) {
                errs.push(path.error(format!("{name:?} is not a valid DNS-1035 label")).hint(
                    "use at most 63 lower-case letters, digits and '-', starting with a letter and ending with a letter or digit, e.g. \"web\"",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns1123_label("web-1"));
        assert!(!is_dns1123_label("Web"));
        assert!(!is_dns1123_label("-web"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(is_dns1035_label("web"));
        assert!(!is_dns1035_label("1web"));
        assert!(is_iana_svc_name("http"));
        assert!(!is_iana_svc_name("8080"));
        assert!(!is_iana_svc_name("a--b"));
        assert!(!is_iana_svc_name("abcdefghijklmnop"));
    }

    #[test]
    fn keys_and_values() {
        assert!(is_qualified_name("app"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("/name"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(!is_qualified_name("-a"));
        assert!(is_label_value(""));
        assert!(is_label_value("v1.2_3"));
        assert!(!is_label_value("a b"));
        assert!(is_env_var_name("MY_VAR"));
        assert!(!is_env_var_name("1VAR"));
        assert!(!is_env_var_name("A=B"));
        assert!(is_config_key("app.properties"));
        assert!(!is_config_key(".."));
    }

    #[test]
    fn paths() {
        let p = Path::new("metadata").field("labels").key("app");
        assert_eq!(p.as_str(), "metadata.labels[\"app\"]");
        let p = Path::new("spec").field("containers").index(0).field("image");
        assert_eq!(p.to_string(), "spec.containers[0].image");
    }

    #[test]
    fn object_meta_rules() {
        let mut meta = ObjectMeta::default();
        let mut errs = Vec::new();
        check_object_meta(&meta, NameRule::Subdomain, true, &mut errs);
        assert_eq!(errs[0].path, "metadata.name");
        meta.name = Some("Bad_Name".into());
        meta.labels.insert("app".into(), "bad value".into());
        meta.labels.insert("-x".into(), "ok".into());
        let mut errs = Vec::new();
        check_object_meta(&meta, NameRule::Subdomain, true, &mut errs);
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "metadata.name",
                "metadata.labels[\"-x\"]",
                "metadata.labels[\"app\"]"
            ]
        );
        meta.name = Some("n".into());
        meta.labels.clear();
        meta.namespace = Some("default".into());
        let mut errs = Vec::new();
        check_object_meta(&meta, NameRule::Label, false, &mut errs);
        assert_eq!(errs[0].path, "metadata.namespace");
    }
}

#[cfg(test)]
mod rule_tests;
