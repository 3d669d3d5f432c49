//! Whole manifest files: split into documents, skip empty ones, expand
//! `kind: List`, check `apiVersion` and `kind` against the kinds Shturman
//! serves, hand each object to [`Kind::decode`], and gather every error.

use super::error::did_you_mean;
use super::node::{Node, Value, clip};
use super::{Limits, Manifest, ManifestError, ManifestErrors, load};
use crate::kind::Kind;

/// `kind: List` inside `kind: List` inside … stops here.
const MAX_LIST_NESTING: usize = 4;

struct Gather<'s> {
    source: &'s str,
    manifests: Vec<Manifest>,
    errors: Vec<ManifestError>,
}

/// See [`super::parse_manifests`].
pub fn parse(source: &str, text: &str, limits: &Limits) -> Result<Vec<Manifest>, ManifestErrors> {
    let docs = load::load(source, text, limits)?;
    let mut g = Gather {
        source,
        manifests: Vec::new(),
        errors: Vec::new(),
    };
    for doc in &docs {
        g.object(doc, "", 0);
    }
    if g.errors.is_empty() {
        Ok(g.manifests)
    } else {
        g.errors.sort_by_key(|e| e.mark);
        Err(ManifestErrors(g.errors))
    }
}

fn supported_kinds() -> String {
    let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    format!("supported kinds: {}", names.join(", "))
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty() || path.starts_with('[')) {
        (true, _) => path.to_string(),
        (false, true) => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

impl Gather<'_> {
    fn error(&mut self, mark: super::Mark, path: String, message: String, hint: Option<String>) {
        self.errors.push(ManifestError {
            source: self.source.into(),
            mark,
            path,
            message,
            hint,
        });
    }

    /// One object (a document, or an item of a `List`); `prefix` is its path.
    fn object(&mut self, doc: &Node, prefix: &str, nesting: usize) {
        if doc.is_null() {
            return;
        }
        if !matches!(doc.value, Value::Map(_)) {
            self.error(
                doc.mark,
                prefix.into(),
                format!(
                    "expected an object (a map with `apiVersion`, `kind` and `metadata`), found {}",
                    doc.describe()
                ),
                None,
            );
            return;
        }
        let Some(kind_node) = doc.get("kind") else {
            self.error(
                doc.mark,
                join(prefix, "kind"),
                "missing `kind`: every object says what it is".into(),
                Some(format!(
                    "add e.g. `apiVersion: apps/v1` and `kind: Deployment`; {}",
                    supported_kinds()
                )),
            );
            return;
        };
        let Some(name) = kind_node.as_str() else {
            self.error(
                kind_node.mark,
                join(prefix, "kind"),
                format!("`kind` must be text, found {}", kind_node.describe()),
                Some(supported_kinds()),
            );
            return;
        };
        let api = doc.get("apiVersion");
        if name == "List" && api.and_then(Node::as_str).is_none_or(|v| v == "v1") {
            self.list(doc, prefix, nesting);
            return;
        }
        let Some(kind) = Kind::ALL.iter().copied().find(|k| k.name() == name) else {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            let hint = match did_you_mean(name, &names) {
                Some(dym) => format!("{dym} ({})", supported_kinds()),
                None => supported_kinds(),
            };
            self.error(
                kind_node.mark,
                join(prefix, "kind"),
                format!("unknown kind `{}`", clip(name)),
                Some(hint),
            );
            return;
        };
        let want = kind.api_version();
        match api {
            None => self.error(
                doc.mark,
                join(prefix, "apiVersion"),
                format!("missing `apiVersion`; kind {name} is served at apiVersion {want}"),
                Some(format!("add `apiVersion: {want}`")),
            ),
            Some(v) if v.as_str() != Some(want) => self.error(
                v.mark,
                join(prefix, "apiVersion"),
                format!(
                    "kind {name} is served at apiVersion {want}, not {}",
                    v.as_str().map_or_else(|| v.describe(), clip)
                ),
                Some(format!("write `apiVersion: {want}`")),
            ),
            Some(_) => match kind.decode(self.source, doc) {
                Ok(object) => self.manifests.push(Manifest {
                    kind,
                    object,
                    source: self.source.into(),
                    mark: doc.mark,
                }),
                Err(errs) => self.errors.extend(errs.0.into_iter().map(|mut e| {
                    e.path = join(prefix, &e.path);
                    e
                })),
            },
        }
    }

    fn list(&mut self, doc: &Node, prefix: &str, nesting: usize) {
        if nesting >= MAX_LIST_NESTING {
            self.error(
                doc.mark,
                prefix.into(),
                "a `List` nests other Lists too deeply".into(),
                None,
            );
            return;
        }
        match doc.get("items") {
            Some(Node {
                value: Value::Seq(items),
                ..
            }) => {
                for (i, item) in items.iter().enumerate() {
                    self.object(item, &join(prefix, &format!("items[{i}]")), nesting + 1);
                }
            }
            Some(n) if n.is_null() => {}
            Some(n) => self.error(
                n.mark,
                join(prefix, "items"),
                format!("expected a list of objects, found {}", n.describe()),
                Some("write each object as a `- ` item under `items:`".into()),
            ),
            None => self.error(
                doc.mark,
                join(prefix, "items"),
                "a `List` needs `items:`, a list of objects".into(),
                None,
            ),
        }
    }
}
