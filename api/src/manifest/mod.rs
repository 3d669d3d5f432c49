//! Manifests: YAML (multi-document) and JSON text turned into positioned
//! documents, then strictly decoded into typed objects with errors that say
//! `file:line:column`, the field path, what was wrong and how to fix it.
//!
//! - [`parse_documents`] reads text into positioned trees ([`Node`]), bounded
//!   by [`Limits`] (`load.rs`; JSON goes through the same YAML 1.2 parser);
//! - [`decode`] turns one tree into any `T: DeserializeOwned` with a strict
//!   deserializer (`de.rs`), collecting many errors in repair rounds
//!   (`repair.rs`), each with its position and path;
//! - [`Node::locate`] maps a field path such as `spec.template.spec.containers[0].image`
//!   back to a position, so validation errors get positions too
//!   ([`ManifestError::at`] builds one);
//! - [`parse_manifests`] does all of it for a file: documents → `apiVersion`/`kind`
//!   → [`Kind::decode`] (`manifests.rs`).

mod access;
mod de;
mod error;
mod load;
mod manifests;
mod node;
mod path;
mod repair;
mod syntax;

use std::fmt;

use serde::de::DeserializeOwned;

use crate::kind::Kind;

pub use node::{Entry, Node, Scalar, Typed, Value};
pub use path::{Step, format_path, parse_path};

/// A position in a source text, 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

/// Bounds on what the parser accepts, so hostile input fails fast.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest input, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of maps and lists.
    pub max_depth: usize,
    /// Most nodes in one document after aliases are expanded.
    pub max_nodes: usize,
    /// Most alias uses in one document.
    pub max_aliases: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 3 * 1024 * 1024,
            max_depth: 64,
            max_nodes: 200_000,
            max_aliases: 1_000,
        }
    }
}

/// One thing wrong with a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// File name (or `<stdin>`, `request body`).
    pub source: String,
    pub mark: Mark,
    /// Field path, e.g. `spec.selector.template`; empty for the document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.source, self.mark.line, self.mark.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl ManifestError {
    /// An error about the value at `path` in `doc` (e.g. from validation),
    /// positioned with [`Node::locate`].
    pub fn at(source: &str, doc: &Node, path: &str, message: impl Into<String>) -> ManifestError {
        ManifestError {
            source: source.into(),
            mark: doc.locate(path),
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    /// The same error with a hint saying what to do.
    pub fn with_hint(mut self, hint: impl Into<String>) -> ManifestError {
        self.hint = Some(hint.into());
        self
    }
}

/// Every error found in one manifest source, in source order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// One decoded, validated object from a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub kind: Kind,
    /// The object in canonical Kubernetes JSON.
    pub object: serde_json::Value,
    /// Where its document starts.
    pub source: String,
    pub mark: Mark,
}

/// Reads every document in `text` (YAML, multi-document, or JSON). An empty
/// document is returned as a null node.
pub fn parse_documents(source: &str, text: &str, limits: &Limits) -> Result<Vec<Node>, ManifestErrors> {
    load::load(source, text, limits)
}

/// Strictly decodes one document into `T`, reporting every error it can find
/// (unknown fields, wrong types, missing and mis-indented fields), sorted by position.
pub fn decode<T: DeserializeOwned>(source: &str, doc: &Node) -> Result<T, ManifestErrors> {
    repair::decode(source, doc)
}

/// Parses, decodes and validates every object in `text`: documents are split on
/// `---`, empty ones skipped and `kind: List` expanded; each is checked for
/// `apiVersion` and `kind` and handed to [`Kind::decode`]. Errors from every
/// document come back together, in source order.
pub fn parse_manifests(source: &str, text: &str) -> Result<Vec<Manifest>, ManifestErrors> {
    manifests::parse(source, text, &Limits::default())
}
