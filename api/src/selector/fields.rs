//! Field selectors (`metadata.name=x,spec.nodeName!=y,status.phase=Running`):
//! parsing against the fields each kind supports, and evaluation against an
//! object's JSON.

use std::fmt;

use crate::kind::Kind;

/// `=`/`==` or `!=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldOp {
    Equals,
    NotEquals,
}

/// One `field=value` or `field!=value` requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted JSON path, e.g. `spec.nodeName`.
    pub field: String,
    pub op: FieldOp,
    pub value: String,
}

/// A parsed field selector: every requirement must hold. Empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

/// Why a field selector was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid field selector {input:?}: {message}")]
pub struct FieldSelectorError {
    pub input: String,
    pub message: String,
}

const COMMON: &[&str] = &["metadata.name", "metadata.namespace"];

/// The fields a kind can be selected by (beyond `metadata.name` and `metadata.namespace`).
pub fn kind_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Pod => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        ],
        Kind::Node => &["spec.unschedulable"],
        Kind::Namespace => &["status.phase"],
        Kind::Secret => &["type"],
        Kind::ReplicaSet => &["status.replicas"],
        Kind::Event => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "type",
        ],
        Kind::Service | Kind::Endpoints | Kind::ConfigMap | Kind::Deployment => &[],
    }
}

/// Every field any kind supports.
fn all_fields() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = COMMON.to_vec();
    for k in Kind::ALL {
        for f in kind_fields(*k) {
            if !v.contains(f) {
                v.push(f);
            }
        }
    }
    v
}

impl FieldSelector {
    /// Parses a selector accepting any field some kind supports.
    pub fn parse(input: &str) -> Result<FieldSelector, FieldSelectorError> {
        Self::parse_with(input, &all_fields(), "")
    }

    /// Parses a selector for one kind, rejecting fields that kind does not support.
    pub fn parse_for(kind: Kind, input: &str) -> Result<FieldSelector, FieldSelectorError> {
        let mut fields: Vec<&str> = COMMON.to_vec();
        fields.extend_from_slice(kind_fields(kind));
        Self::parse_with(input, &fields, kind.plural())
    }

    fn parse_with(input: &str, supported: &[&str], what: &str) -> Result<FieldSelector, FieldSelectorError> {
        let err = |message: String| FieldSelectorError {
            input: input.to_string(),
            message,
        };
        let mut requirements = Vec::new();
        for part in input.split(',') {
            let part = part.trim();
            if part.is_empty() {
                if input.trim().is_empty() {
                    continue;
                }
                return Err(err("empty requirement between commas".into()));
            }
            let (field, op, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, FieldOp::NotEquals, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, FieldOp::Equals, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, FieldOp::Equals, v)
            } else {
                return Err(err(format!(
                    "{part:?} has no operator; write field=value, field==value or field!=value"
                )));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                let scope = if what.is_empty() {
                    String::new()
                } else {
                    format!(" for {what}")
                };
                return Err(err(format!(
                    "field {field:?} is not supported{scope}; supported fields: {}",
                    supported.join(", ")
                )));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                op,
                value: value.trim().to_string(),
            });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `obj` (an object's JSON) satisfies every requirement. A missing
    /// field reads as `""`, so `spec.nodeName=` selects unscheduled pods.
    pub fn matches(&self, obj: &serde_json::Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = lookup(obj, &r.field);
            match r.op {
                FieldOp::Equals => actual == r.value,
                FieldOp::NotEquals => actual != r.value,
            }
        })
    }
}

fn lookup(obj: &serde_json::Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.op {
                FieldOp::Equals => "=",
                FieldOp::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", r.field, r.value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_matches() {
        let s = FieldSelector::parse("metadata.name=web, spec.nodeName!=n1,status.phase==Running").unwrap();
        assert_eq!(s.requirements.len(), 3);
        assert_eq!(
            s.to_string(),
            "metadata.name=web,spec.nodeName!=n1,status.phase=Running"
        );
        let pod =
            json!({"metadata": {"name": "web"}, "spec": {"nodeName": "n2"}, "status": {"phase": "Running"}});
        assert!(s.matches(&pod));
        let other =
            json!({"metadata": {"name": "web"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(!s.matches(&other));
        let unscheduled = FieldSelector::parse("spec.nodeName=").unwrap();
        assert!(unscheduled.matches(&json!({"spec": {}})));
        assert!(!unscheduled.matches(&pod));
        let node = FieldSelector::parse_for(Kind::Node, "spec.unschedulable=true").unwrap();
        assert!(node.matches(&json!({"spec": {"unschedulable": true}})));
        assert!(FieldSelector::parse("").unwrap().matches(&pod));
    }

    #[test]
    fn rejects_unsupported_fields() {
        let e = FieldSelector::parse("spec.replicas=3").unwrap_err();
        let msg = e.to_string();
        for f in [
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "status.phase",
        ] {
            assert!(msg.contains(f), "{msg}");
        }
        let e = FieldSelector::parse_for(Kind::Deployment, "spec.nodeName=a").unwrap_err();
        assert!(e.to_string().contains("for deployments"));
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert!(FieldSelector::parse("metadata.name=a,,status.phase=b").is_err());
    }
}
