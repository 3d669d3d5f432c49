//! The loader: runs saphyr-parser's event parser over YAML or JSON text and
//! builds positioned [`Node`] trees, one per document, enforcing [`Limits`]
//! (bytes, depth, nodes after alias expansion, alias uses), rejecting
//! duplicate keys, merge keys and unknown tags, and turning parser errors into
//! plain-words [`ManifestError`]s.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Tag};

use super::node::{Entry, Node, Scalar, Value};
use super::path::{Step, format_path};
use super::syntax::scan_error;
use super::{Limits, ManifestError, ManifestErrors, Mark};

pub(super) fn mark_of(m: &Marker) -> Mark {
    Mark {
        line: m.line(),
        column: m.col() + 1,
    }
}

/// A collection being built.
struct Frame {
    mark: Mark,
    anchor: usize,
    /// Where this collection sits in its parent (for error paths).
    step: Option<Step>,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<Entry>,
        seen: HashMap<String, Mark>,
        key: Option<(String, Mark)>,
    },
}

/// An anchored node kept for later aliases, with its size and depth.
struct Anchored {
    node: Node,
    count: usize,
    depth: usize,
}

struct Loader<'l> {
    source: &'l str,
    limits: &'l Limits,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    nodes: usize,
    aliases: usize,
    /// Nodes copied to keep anchors; bounded like `nodes`.
    copied: usize,
    root: Option<Node>,
    errors: Vec<ManifestError>,
}

impl<'l> Loader<'l> {
    fn error(&self, mark: Mark, message: String, hint: Option<String>) -> ManifestError {
        ManifestError {
            source: self.source.into(),
            mark,
            path: self.path(),
            message,
            hint,
        }
    }

    fn path(&self) -> String {
        format_path(&self.steps())
    }

    fn steps(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = self.stack.iter().filter_map(|f| f.step.clone()).collect();
        if let Some(Frame {
            kind: FrameKind::Map {
                key: Some((k, _)), ..
            },
            ..
        }) = self.stack.last()
        {
            steps.push(Step::Key(k.clone()));
        }
        steps
    }

    fn start_document(&mut self) {
        self.stack.clear();
        self.anchors.clear();
        self.nodes = 0;
        self.aliases = 0;
        self.copied = 0;
        self.root = None;
    }

    fn count_nodes(&mut self, n: usize, mark: Mark) -> Result<(), ManifestError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            return Err(self.error(
                mark,
                format!(
                    "the document is too large: more than {} values once aliases are expanded",
                    self.limits.max_nodes
                ),
                Some("split it into smaller documents, or use fewer `*alias` references".into()),
            ));
        }
        Ok(())
    }

    /// Where the next node goes in its parent.
    fn next_step(&self) -> Option<Step> {
        match &self.stack.last()?.kind {
            FrameKind::Seq(items) => Some(Step::Index(items.len())),
            FrameKind::Map {
                key: Some((k, _)), ..
            } => Some(Step::Key(k.clone())),
            FrameKind::Map { key: None, .. } => None,
        }
    }

    fn open(&mut self, mark: Mark, anchor: usize, tag: Option<&Tag>, seq: bool) -> Result<(), ManifestError> {
        if self.is_key_position() {
            let what = if seq { "a list" } else { "a map" };
            return Err(self.error(
                mark,
                format!("a key must be text, found {what}"),
                Some("write keys as plain words, e.g. `name: value`".into()),
            ));
        }
        self.check_tag(mark, tag, if seq { "seq" } else { "map" });
        self.count_nodes(1, mark)?;
        if self.stack.len() >= self.limits.max_depth {
            return Err(self.error(
                mark,
                format!("the document nests deeper than {} levels", self.limits.max_depth),
                Some("flatten the structure; real manifests never nest this deep".into()),
            ));
        }
        let step = self.next_step();
        let kind = if seq {
            FrameKind::Seq(Vec::new())
        } else {
            FrameKind::Map {
                entries: Vec::new(),
                seen: HashMap::new(),
                key: None,
            }
        };
        self.stack.push(Frame {
            mark,
            anchor,
            step,
            kind,
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), ManifestError> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        let value = match frame.kind {
            FrameKind::Seq(items) => Value::Seq(items),
            FrameKind::Map { entries, .. } => Value::Map(entries),
        };
        let node = Node {
            mark: frame.mark,
            value,
        };
        self.finish(node, frame.anchor)
    }

    fn is_key_position(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                kind: FrameKind::Map { key: None, .. },
                ..
            })
        )
    }

    /// Records an anchor (if any) and attaches a finished node to its parent.
    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), ManifestError> {
        if anchor != 0 {
            let count = node.count();
            self.copied = self.copied.saturating_add(count);
            if self.copied > self.limits.max_nodes {
                return Err(self.error(
                    node.mark,
                    "the document defines too many nested `&anchors`".into(),
                    None,
                ));
            }
            let depth = node.depth();
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    count,
                    depth,
                },
            );
        }
        self.attach(node)
    }

    fn attach(&mut self, node: Node) -> Result<(), ManifestError> {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        let (entries, seen, key) = match &mut frame.kind {
            FrameKind::Seq(items) => {
                items.push(node);
                return Ok(());
            }
            FrameKind::Map { entries, seen, key } => (entries, seen, key),
        };
        let Some((k, key_mark)) = key.take() else {
            let Value::Scalar(s) = node.value else {
                return Err(self.error(node.mark, "a key must be text".into(), None));
            };
            let merge = s.plain && s.text == "<<";
            *key = Some((s.text, node.mark));
            if merge {
                let err = self.error(
                    node.mark,
                    "merge keys (`<<`) are not supported".into(),
                    Some("write the fields out in full instead of merging an `*alias`".into()),
                );
                self.errors.push(err);
            }
            return Ok(());
        };
        let Some(&first) = seen.get(&k) else {
            seen.insert(k.clone(), key_mark);
            entries.push(Entry {
                key: k,
                key_mark,
                value: node,
            });
            return Ok(());
        };
        let mut err = self.error(
            key_mark,
            format!(
                "duplicate key `{k}`: it is already set at line {}, column {}",
                first.line, first.column
            ),
            Some("remove one of the two; a map holds one value per key".into()),
        );
        let mut steps = self.steps();
        steps.push(Step::Key(k));
        err.path = format_path(&steps);
        self.errors.push(err);
        Ok(())
    }

    fn check_tag(&mut self, mark: Mark, tag: Option<&Tag>, expected: &str) {
        let Some(tag) = tag else {
            return;
        };
        let ok = if tag.is_yaml_core_schema() {
            match expected {
                "scalar" => matches!(tag.suffix.as_str(), "str" | "int" | "float" | "bool" | "null"),
                other => tag.suffix == other,
            }
        } else {
            tag.handle == "!" && tag.suffix.is_empty()
        };
        if !ok {
            let err = self.error(
                mark,
                format!("the tag `{tag}` is not supported here"),
                Some("remove the tag; Shturman reads plain YAML values".into()),
            );
            self.errors.push(err);
        }
    }

    fn scalar(
        &mut self,
        text: Cow<'_, str>,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<&Tag>,
        mark: Mark,
    ) -> Result<(), ManifestError> {
        self.count_nodes(1, mark)?;
        self.check_tag(mark, tag, "scalar");
        let plain = match tag {
            Some(t) if t.is_yaml_core_schema() => t.suffix != "str",
            Some(_) => false,
            None => style == ScalarStyle::Plain,
        };
        let node = Node {
            mark,
            value: Value::Scalar(Scalar {
                text: text.into_owned(),
                plain,
            }),
        };
        self.finish(node, anchor)
    }

    fn alias(&mut self, id: usize, mark: Mark) -> Result<(), ManifestError> {
        self.aliases += 1;
        if self.aliases > self.limits.max_aliases {
            return Err(self.error(
                mark,
                format!(
                    "the document uses more than {} `*alias` references",
                    self.limits.max_aliases
                ),
                Some("write the values out, or split the document".into()),
            ));
        }
        let Some(anchored) = self.anchors.get(&id) else {
            return Err(self.error(
                mark,
                "this `*alias` refers to a node that contains it".into(),
                Some("an alias can only repeat a value that is complete before it".into()),
            ));
        };
        let (count, depth) = (anchored.count, anchored.depth);
        if self.stack.len() + depth > self.limits.max_depth {
            return Err(self.error(
                mark,
                format!(
                    "the document nests deeper than {} levels once aliases are expanded",
                    self.limits.max_depth
                ),
                None,
            ));
        }
        self.count_nodes(count, mark)?;
        let mut node = match self.anchors.get(&id) {
            Some(a) => a.node.clone(),
            None => return Ok(()),
        };
        node.mark = mark;
        if self.is_key_position() && !matches!(node.value, Value::Scalar(_)) {
            return Err(self.error(
                mark,
                "a key must be text, found an alias to a collection".into(),
                None,
            ));
        }
        self.attach(node)
    }
}

/// Reads every document in `text` into a tree. Empty documents are returned as
/// null scalars.
pub fn load(source: &str, text: &str, limits: &Limits) -> Result<Vec<Node>, ManifestErrors> {
    let too_big = |message: String| {
        Err(ManifestErrors(vec![ManifestError {
            source: source.into(),
            mark: Mark { line: 1, column: 1 },
            path: String::new(),
            message,
            hint: Some("split the file into smaller ones".into()),
        }]))
    };
    if text.len() > limits.max_bytes {
        return too_big(format!(
            "the manifest is {} bytes; the limit is {} bytes",
            text.len(),
            limits.max_bytes
        ));
    }
    let mut loader = Loader {
        source,
        limits,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        aliases: 0,
        copied: 0,
        root: None,
        errors: Vec::new(),
    };
    let mut docs = Vec::new();
    let mut doc_mark = Mark { line: 1, column: 1 };
    let mut parser = Parser::new_from_str(text);
    while let Some(event) = parser.next_event() {
        let (event, span) = match event {
            Ok(e) => e,
            Err(e) => {
                loader.errors.push(scan_error(source, text, &e));
                return Err(ManifestErrors(loader.errors));
            }
        };
        let mark = mark_of(&span.start);
        let step = match event {
            Event::StreamStart | Event::Nothing => Ok(()),
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                loader.start_document();
                doc_mark = mark;
                Ok(())
            }
            Event::DocumentEnd => {
                docs.push(loader.root.take().unwrap_or(Node::scalar(doc_mark, "", true)));
                Ok(())
            }
            Event::Alias(id) => loader.alias(id, mark),
            Event::Scalar(text, style, anchor, tag) => {
                loader.scalar(text, style, anchor, tag.as_deref(), mark)
            }
            Event::SequenceStart(anchor, tag) => loader.open(mark, anchor, tag.as_deref(), true),
            Event::MappingStart(anchor, tag) => loader.open(mark, anchor, tag.as_deref(), false),
            Event::SequenceEnd | Event::MappingEnd => loader.close(),
        };
        if let Err(e) = step {
            loader.errors.push(e);
            return Err(ManifestErrors(loader.errors));
        }
    }
    if loader.errors.is_empty() {
        Ok(docs)
    } else {
        Err(ManifestErrors(loader.errors))
    }
}
