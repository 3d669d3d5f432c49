//! The Namespace object: a scope for names, with its finalizers and phase.

use serde::{Deserialize, Serialize};

use crate::kind::Kind;
use crate::meta::{Object, ObjectMeta, object_accessors};
use crate::validate::{self, FieldError, NameRule};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "NamespaceSpec::is_empty")]
    pub spec: NamespaceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NamespaceStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

impl NamespaceSpec {
    pub fn is_empty(&self) -> bool {
        self.finalizers.is_empty()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<NamespacePhase>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NamespacePhase {
    #[default]
    Active,
    Terminating,
}

impl Object for Namespace {
    const KIND: Kind = Kind::Namespace;
    object_accessors!();

    /// A new namespace is `Active`.
    fn apply_defaults(&mut self) {
        self.status
            .get_or_insert_with(NamespaceStatus::default)
            .phase
            .get_or_insert(NamespacePhase::Active);
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate::check_object_meta(&self.metadata, NameRule::Label, false, &mut errs);
        errs
    }
}
