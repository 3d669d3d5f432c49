//! Decoding in rounds so one pass reports many errors: each round decodes the
//! (repaired) tree, records the error, repairs a copy — drops an unknown field,
//! drops a wrongly typed value, or moves a mis-indented field back where it
//! belongs — and decodes again. Errors come back sorted by position.

use serde::de::DeserializeOwned;

use super::de::{Ctx, De};
use super::error::{DeError, ErrKind, Loc};
use super::node::{Entry, Node, Value};
use super::path::{Step, format_path};
use super::{ManifestError, ManifestErrors};

/// Most decoding passes per document.
const MAX_ROUNDS: usize = 48;
/// Most errors reported per document.
const MAX_ERRORS: usize = 20;

/// An unknown field taken out of the tree, kept in case it is mis-indented.
struct Removed {
    /// The map it was found in.
    parent: Vec<Step>,
    entry: Entry,
    /// Its report in `found`.
    report: usize,
}

struct Rounds<'s> {
    source: &'s str,
    tree: Node,
    ctx: Ctx,
    found: Vec<ManifestError>,
    removed: Vec<Removed>,
    /// Paths (in the repaired tree) of values this pass took out.
    pruned: Vec<Vec<Step>>,
}

/// Strictly decodes one document into `T`, collecting as many errors as it can.
pub fn decode<T: DeserializeOwned>(source: &str, doc: &Node) -> Result<T, ManifestErrors> {
    let ctx = Ctx::default();
    let first = match T::deserialize(De::root(doc, &ctx)) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let mut rounds = Rounds {
        source,
        tree: doc.clone(),
        ctx,
        found: Vec::new(),
        removed: Vec::new(),
        pruned: Vec::new(),
    };
    let mut next = Some(first);
    for _ in 0..MAX_ROUNDS {
        let Some(err) = next.take() else {
            break;
        };
        if rounds.found.len() >= MAX_ERRORS || !rounds.handle(err) {
            break;
        }
        rounds.ctx.fields.borrow_mut().clear();
        next = T::deserialize(De::root(&rounds.tree, &rounds.ctx)).err();
    }
    let mut found = rounds.found;
    found.sort_by_key(|e| e.mark);
    Err(ManifestErrors(found))
}

impl Rounds<'_> {
    fn report(&mut self, loc: &Loc, path: String, message: String, hint: Option<String>) -> Option<usize> {
        let dup = self.found.iter().any(|f| f.path == path && f.message == message);
        if dup {
            return None;
        }
        self.found.push(ManifestError {
            source: self.source.into(),
            mark: loc.mark,
            path,
            message,
            hint,
        });
        Some(self.found.len() - 1)
    }

    /// Records `err` and repairs the tree; `false` when decoding cannot go on.
    fn handle(&mut self, err: DeError) -> bool {
        let loc = err.loc.map_or_else(
            || Loc {
                steps: Vec::new(),
                shown: Vec::new(),
                mark: self.tree.mark,
            },
            |l| *l,
        );
        match err.kind {
            ErrKind::UnknownField(_) => {
                let Some(report) = self.report(&loc, format_path(&loc.shown), err.message, err.hint) else {
                    return false;
                };
                let Some((_, parent)) = loc.steps.split_last() else {
                    return false;
                };
                match take(&mut self.tree, &loc.steps, &mut self.ctx) {
                    Some(Taken::Entry(entry)) => {
                        if let Some(owner) = self.ancestor_accepting(parent, &entry.key) {
                            let shown = loc.shown.get(..owner.len()).unwrap_or_default().to_vec();
                            return self.misindented(&owner, &shown, parent, entry, report);
                        }
                        self.removed.push(Removed {
                            parent: parent.to_vec(),
                            entry,
                            report,
                        });
                        true
                    }
                    _ => false,
                }
            }
            ErrKind::MissingField(field) => self.missing(&loc, field, err.message, err.hint),
            ErrKind::Value => {
                if self
                    .report(&loc, format_path(&loc.shown), err.message, err.hint)
                    .is_none()
                {
                    return false;
                }
                self.prune(&loc.steps)
            }
        }
    }

    fn prune(&mut self, steps: &[Step]) -> bool {
        if steps.is_empty() || take(&mut self.tree, steps, &mut self.ctx).is_none() {
            return false;
        }
        self.pruned.push(steps.to_vec());
        true
    }

    fn missing(&mut self, loc: &Loc, field: String, message: String, hint: Option<String>) -> bool {
        let mut wanted = loc.steps.clone();
        wanted.push(Step::Key(field.clone()));
        // We took that value out ourselves (it had the wrong type): already reported.
        if self.pruned.contains(&wanted) {
            return self.prune(&loc.steps);
        }
        // An unknown field of this name was found deeper under this map: it is
        // mis-indented. Move it here and keep decoding.
        let found = self.removed.iter().position(|r| {
            r.entry.key == field && r.parent.len() > loc.steps.len() && r.parent.starts_with(&loc.steps)
        });
        if let Some(i) = found {
            let r = self.removed.swap_remove(i);
            return self.misindented(&loc.steps, &loc.shown, &r.parent, r.entry, r.report);
        }
        if self
            .report(loc, format_path_with(&loc.shown, &field), message, hint)
            .is_none()
        {
            return false;
        }
        self.prune(&loc.steps)
    }
}

impl Rounds<'_> {
    /// The nearest ancestor of `parent` whose type accepts `field` and that
    /// does not have it yet: where a mis-indented field belongs.
    fn ancestor_accepting(&self, parent: &[Step], field: &str) -> Option<Vec<Step>> {
        let known = self.ctx.fields.try_borrow().ok()?;
        (0..parent.len()).rev().find_map(|len| {
            let owner = parent.get(..len)?;
            let accepts = known.get(owner).is_some_and(|f| f.contains(&field));
            let node = walk(&self.tree, owner)?;
            let free = matches!(node.value, Value::Map(_)) && node.get(field).is_none();
            (accepts && free).then(|| owner.to_vec())
        })
    }

    /// `entry` was found under `found_in` but belongs to the map at `owner`:
    /// amends the unknown-field report, reports the field as missing where it
    /// belongs, and moves it there so decoding continues inside it.
    fn misindented(
        &mut self,
        owner: &[Step],
        owner_shown: &[Step],
        found_in: &[Step],
        entry: Entry,
        report: usize,
    ) -> bool {
        let field = entry.key.clone();
        let under = step_name(found_in.last());
        let belongs = step_name(owner.last());
        let sibling = step_name(found_in.get(owner.len()));
        let sibling_steps = found_in.get(..=owner.len()).unwrap_or(found_in);
        let sibling_line = self.tree.locate_steps(sibling_steps).line;
        if let Some(r) = self.found.get_mut(report) {
            r.hint = Some(format!(
                "`{field}` is indented under `{under}`; it belongs to `{belongs}` — move it left to line up with `{sibling}` (line {sibling_line})"
            ));
        }
        let loc = Loc {
            steps: owner.to_vec(),
            shown: owner_shown.to_vec(),
            mark: self.tree.locate_steps(owner),
        };
        let message = format!("missing field `{field}`: it is indented under `{under}` instead");
        let hint = format!(
            "move `{field}` (line {}) left to line up with `{sibling}`",
            entry.key_mark.line
        );
        if self
            .report(&loc, format_path_with(owner_shown, &field), message, Some(hint))
            .is_none()
        {
            return false;
        }
        insert(&mut self.tree, owner, entry)
    }
}

fn walk<'t>(mut node: &'t Node, steps: &[Step]) -> Option<&'t Node> {
    for step in steps {
        node = match step {
            Step::Key(k) => node.get(k)?,
            Step::Index(i) => node.item(*i)?,
        };
    }
    Some(node)
}

fn step_name(step: Option<&Step>) -> String {
    match step {
        Some(Step::Key(k)) => k.clone(),
        Some(Step::Index(i)) => format!("item {i}"),
        None => "the top level".into(),
    }
}

fn format_path_with(shown: &[Step], field: &str) -> String {
    let mut steps = shown.to_vec();
    steps.push(Step::Key(field.into()));
    format_path(&steps)
}

enum Taken {
    Entry(Entry),
    Item,
}

fn walk_mut<'t>(mut node: &'t mut Node, steps: &[Step]) -> Option<&'t mut Node> {
    for step in steps {
        node = match (&mut node.value, step) {
            (Value::Map(entries), Step::Key(k)) => &mut entries.iter_mut().find(|e| &e.key == k)?.value,
            (Value::Seq(items), Step::Index(i)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Takes the value at `steps` out of the tree.
fn take(tree: &mut Node, steps: &[Step], ctx: &mut Ctx) -> Option<Taken> {
    let (last, parent_steps) = steps.split_last()?;
    let parent = walk_mut(tree, parent_steps)?;
    match (&mut parent.value, last) {
        (Value::Map(entries), Step::Key(k)) => {
            let i = entries.iter().position(|e| &e.key == k)?;
            Some(Taken::Entry(entries.remove(i)))
        }
        (Value::Seq(items), Step::Index(i)) if *i < items.len() => {
            let len = items.len();
            items.remove(*i);
            let origins = ctx
                .seq_origins
                .entry(parent_steps.to_vec())
                .or_insert_with(|| (0..len).collect());
            if *i < origins.len() {
                origins.remove(*i);
            }
            Some(Taken::Item)
        }
        _ => None,
    }
}

/// Puts `entry` into the map at `steps`.
fn insert(tree: &mut Node, steps: &[Step], entry: Entry) -> bool {
    match walk_mut(tree, steps) {
        Some(Node {
            value: Value::Map(entries),
            ..
        }) => {
            entries.push(entry);
            true
        }
        Some(node) if node.is_null() => {
            node.value = Value::Map(vec![entry]);
            true
        }
        _ => false,
    }
}
