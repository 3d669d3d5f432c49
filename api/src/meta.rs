//! Object metadata shared by every kind: `ObjectMeta`, owner references,
//! timestamps (`Time`), `ConditionStatus`, delete options, and the [`Object`]
//! trait every top-level type implements.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::kind::Kind;
use crate::validate::FieldError;

/// A timestamp, serialized as RFC 3339 in UTC with second precision
/// (`2026-01-02T03:04:05Z`), as Kubernetes does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub DateTime<Utc>);

impl Time {
    /// Parses an RFC 3339 timestamp with any offset.
    pub fn parse(s: &str) -> Result<Time, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Time(t.with_timezone(&Utc)))
            .map_err(|e| {
                format!("{s:?} is not an RFC 3339 timestamp ({e}); write it like 2026-01-02T03:04:05Z")
            })
    }
}

impl From<DateTime<Utc>> for Time {
    fn from(t: DateTime<Utc>) -> Self {
        Time(t)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Time::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Metadata every object carries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Prefix for a server-generated name when `name` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Opaque version string set by the store; compare for equality only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Incremented by the server on every spec change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

impl ObjectMeta {
    /// The name, or `""` when unset.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The namespace, or `""` when unset.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    /// The owner reference with `controller: true`, if any.
    pub fn controller_ref(&self) -> Option<&OwnerReference> {
        self.owner_references.iter().find(|r| r.controller == Some(true))
    }
}

/// A reference from a dependent to its owner, for garbage collection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

/// The status of a condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

impl ConditionStatus {
    pub fn from_bool(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }

    pub fn is_true(self) -> bool {
        self == ConditionStatus::True
    }
}

/// What happens to an object's dependents when it is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeletionPropagation {
    /// Delete dependents first, then the owner.
    Foreground,
    /// Delete the owner now; the garbage collector deletes dependents.
    #[default]
    Background,
    /// Delete the owner and leave dependents without it.
    Orphan,
}

/// The body of a DELETE request, as kubectl sends it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_policy: Option<DeletionPropagation>,
    /// Deprecated form of `propagationPolicy: Orphan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan_dependents: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preconditions: Option<Preconditions>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<String>,
}

/// Preconditions a delete must meet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Preconditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// Implemented by every top-level object type (Pod, Deployment, …).
pub trait Object: Serialize + DeserializeOwned + Clone + fmt::Debug {
    /// The kind this type is.
    const KIND: Kind;
    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    /// The `apiVersion` and `kind` fields as written.
    fn type_meta(&self) -> (&str, &str);
    /// Sets `apiVersion` and `kind` to this type's.
    fn set_type_meta(&mut self);
    /// Fills in Kubernetes' defaults for unset fields.
    fn apply_defaults(&mut self);
    /// Every rule the object breaks; empty when valid.
    fn validate(&self) -> Vec<FieldError>;
}

/// Writes the accessor part of an [`Object`] impl for a struct with
/// `api_version`, `kind` and `metadata` fields.
macro_rules! object_accessors {
    () => {
        fn metadata(&self) -> &$crate::meta::ObjectMeta {
            &self.metadata
        }
        fn metadata_mut(&mut self) -> &mut $crate::meta::ObjectMeta {
            &mut self.metadata
        }
        fn type_meta(&self) -> (&str, &str) {
            (&self.api_version, &self.kind)
        }
        fn set_type_meta(&mut self) {
            self.api_version = Self::KIND.api_version().to_string();
            self.kind = Self::KIND.name().to_string();
        }
    };
}
pub(crate) use object_accessors;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_in_kubernetes_format() {
        let t: Time = serde_json::from_value(serde_json::json!("2026-01-02T03:04:05Z")).unwrap();
        assert_eq!(serde_json::to_value(t).unwrap(), "2026-01-02T03:04:05Z");
        let t = Time::parse("2026-01-02T05:04:05.5+02:00").unwrap();
        assert_eq!(t.to_string(), "2026-01-02T03:04:05Z");
        assert!(Time::parse("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn meta_is_compact_and_strict() {
        let m: ObjectMeta = serde_json::from_value(serde_json::json!({"name": "a"})).unwrap();
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"name": "a"})
        );
        let bad = serde_json::from_value::<ObjectMeta>(serde_json::json!({"nmae": "a"}));
        assert!(bad.unwrap_err().to_string().contains("unknown field `nmae`"));
    }
}
