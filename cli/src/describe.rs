//! `shturman describe`: kubectl-like human text for objects — common
//! metadata, a kind-specific body (see `describe_kinds`), then `Events:`.
//! Text is built with [`Doc`], which aligns `Label:  value` runs.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde_json::Value;
use shturman_api::Kind;

use crate::AlreadyReported;
use crate::apply_plan::LAST_APPLIED;
use crate::args::DescribeArgs;
use crate::client::Client;
use crate::describe_kinds;
use crate::get::list_query;
use crate::output::list_items;
use crate::table::{self, age};
use crate::targets::{item_path, parse_targets};
use crate::value::{int_at, list_at, map_at, scalar_text, str_at};

/// One line of a description.
enum Line {
    /// `Label:  value` (value may span lines; continuations align under it).
    Field(usize, String, String),
    /// `Label:` heading a nested block.
    Section(usize, String),
    /// Literal text (tables), indented.
    Raw(usize, String),
}

/// A description being built.
#[derive(Default)]
pub struct Doc {
    lines: Vec<Line>,
}

impl Doc {
    pub fn field(&mut self, indent: usize, label: &str, value: impl Into<String>) {
        let v: String = value.into();
        let v = if v.is_empty() { "<none>".to_string() } else { v };
        self.lines.push(Line::Field(indent, label.to_string(), v));
    }

    pub fn section(&mut self, indent: usize, label: &str) {
        self.lines.push(Line::Section(indent, label.to_string()));
    }

    pub fn raw(&mut self, indent: usize, text: impl Into<String>) {
        self.lines.push(Line::Raw(indent, text.into()));
    }

    /// A `k=v` map, one per line, or `<none>`.
    pub fn map_field(&mut self, indent: usize, label: &str, v: &Value, path: &str, skip: &[&str]) {
        let pairs: Vec<String> = map_at(v, path)
            .into_iter()
            .filter(|(k, _)| !skip.contains(k))
            .map(|(k, v)| format!("{k}={}", scalar_text(v)))
            .collect();
        self.field(indent, label, pairs.join("\n"));
    }

    /// A small table under a heading, kubectl style (`----` underlines).
    pub fn table(&mut self, indent: usize, headers: &[&str], rows: &[Vec<String>]) {
        let h: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
        let underline: Vec<String> = headers.iter().map(|s| "-".repeat(s.chars().count())).collect();
        let mut all = vec![underline];
        all.extend(rows.iter().cloned());
        let text = table::render(&h, &all);
        for l in text.lines() {
            self.raw(indent, l.trim_end());
        }
    }

    /// Label widths: a field aligns with the fields at its indent until a
    /// shallower line (or a section at its indent) ends the run; deeper lines
    /// in between do not break it.
    fn widths(&self) -> Vec<usize> {
        let indent_of = |l: &Line| match l {
            Line::Field(i, _, _) | Line::Section(i, _) | Line::Raw(i, _) => *i,
        };
        let mut widths = vec![0; self.lines.len()];
        for k in 0..self.lines.len() {
            let Line::Field(indent, _, _) = &self.lines[k] else {
                continue;
            };
            if widths[k] != 0 {
                continue;
            }
            let mut members = Vec::new();
            for (j, line) in self.lines.iter().enumerate().skip(k) {
                match line {
                    Line::Field(i, label, _) if i == indent => {
                        members.push((j, label.chars().count() + 1));
                    }
                    l if indent_of(l) > *indent => {}
                    _ => break,
                }
            }
            let width = members.iter().map(|m| m.1).max().unwrap_or(0);
            for (j, _) in members {
                widths[j] = width;
            }
        }
        widths
    }

    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut out = String::new();
        for (line, width) in self.lines.iter().zip(widths) {
            match line {
                Line::Field(indent, label, value) => {
                    let head = format!("{}{label}:", " ".repeat(*indent));
                    let col = indent + width + 2;
                    for (n, part) in value.split('\n').enumerate() {
                        if n == 0 {
                            out.push_str(&format!("{head:<col$}{part}\n"));
                        } else {
                            out.push_str(&format!("{:col$}{part}\n", ""));
                        }
                    }
                }
                Line::Section(indent, label) => {
                    out.push_str(&format!("{}{label}:\n", " ".repeat(*indent)));
                }
                Line::Raw(indent, text) => {
                    out.push_str(&format!("{}{text}\n", " ".repeat(*indent)));
                }
            }
        }
        out
    }
}

/// The common header every kind starts with.
fn common(doc: &mut Doc, kind: Kind, obj: &Value) {
    doc.field(0, "Name", str_at(obj, "metadata.name"));
    if kind.namespaced() {
        doc.field(0, "Namespace", str_at(obj, "metadata.namespace"));
    }
    doc.map_field(0, "Labels", obj, "metadata.labels", &[]);
    doc.map_field(0, "Annotations", obj, "metadata.annotations", &[LAST_APPLIED]);
    doc.field(0, "CreationTimestamp", str_at(obj, "metadata.creationTimestamp"));
    if let Some(owner) = list_at(obj, "metadata.ownerReferences")
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
    {
        doc.field(
            0,
            "Controlled By",
            format!("{}/{}", str_at(owner, "kind"), str_at(owner, "name")),
        );
    }
}

/// The `Events:` section for `events` (already filtered to the object).
pub fn events_section(doc: &mut Doc, events: Option<&[Value]>, now: DateTime<Utc>) {
    let Some(events) = events else { return };
    if events.is_empty() {
        doc.field(0, "Events", "<none>");
        return;
    }
    doc.section(0, "Events");
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let last = ["lastTimestamp", "eventTime", "firstTimestamp"]
                .iter()
                .map(|p| str_at(e, p))
                .find(|s| !s.is_empty())
                .unwrap_or("");
            let count = int_at(e, "count");
            let when = if count > 1 {
                format!(
                    "{} (x{count} over {})",
                    age(last, now),
                    age(str_at(e, "firstTimestamp"), now)
                )
            } else {
                age(last, now)
            };
            let from = match str_at(e, "source.component") {
                "" => str_at(e, "reportingComponent"),
                c => c,
            };
            vec![
                str_at(e, "type").to_string(),
                str_at(e, "reason").to_string(),
                when,
                from.to_string(),
                str_at(e, "message").trim().to_string(),
            ]
        })
        .collect();
    doc.table(2, &["Type", "Reason", "Age", "From", "Message"], &rows);
}

/// The full description of one object (without a Service's endpoints).
#[cfg(test)]
pub fn describe(kind: Kind, obj: &Value, events: Option<&[Value]>, now: DateTime<Utc>) -> String {
    describe_with(kind, obj, None, events, now)
}

/// The full description of one object; a Service's shows `endpoints`
/// (its Endpoints object) per port.
pub fn describe_with(
    kind: Kind,
    obj: &Value,
    endpoints: Option<&Value>,
    events: Option<&[Value]>,
    now: DateTime<Utc>,
) -> String {
    let mut doc = Doc::default();
    common(&mut doc, kind, obj);
    describe_kinds::body(&mut doc, kind, obj, endpoints);
    events_section(&mut doc, events, now);
    doc.render()
}

/// A Service's Endpoints (same name and namespace), if there are any.
async fn endpoints_for(client: &Client, kind: Kind, obj: &Value) -> Option<Value> {
    if kind != Kind::Service {
        return None;
    }
    let path = item_path(
        Kind::Endpoints,
        str_at(obj, "metadata.namespace"),
        str_at(obj, "metadata.name"),
    );
    client.get(&path, &[]).await.ok()
}

/// Events about one object; `None` when the server cannot say.
async fn events_for(client: &Client, kind: Kind, obj: &Value) -> Option<Vec<Value>> {
    let name = str_at(obj, "metadata.name");
    let ns = str_at(obj, "metadata.namespace");
    let path = Kind::Event.collection_path((!ns.is_empty()).then_some(ns));
    let field = format!("involvedObject.name={name}");
    let list = client.get(&path, &list_query(None, Some(&field))).await.ok()?;
    let mut events: Vec<Value> = list_items(Kind::Event, &list)
        .into_iter()
        .filter(|e| {
            let k = str_at(e, "involvedObject.kind");
            str_at(e, "involvedObject.name") == name && (k.is_empty() || k == kind.name())
        })
        .collect();
    events.sort_by(|a, b| str_at(a, "lastTimestamp").cmp(str_at(b, "lastTimestamp")));
    Some(events)
}

pub async fn run(args: &DescribeArgs, client: &Client) -> Result<()> {
    let targets = parse_targets(&args.targets)?;
    let ns = client.config.namespace.clone();
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for t in &targets {
        if t.names.is_empty() {
            let list = client
                .get(
                    &t.kind.collection_path(Some(&ns)),
                    &list_query(args.selector.as_deref(), None),
                )
                .await?;
            objects.extend(list_items(t.kind, &list).into_iter().map(|o| (t.kind, o)));
        } else {
            for name in &t.names {
                match client.get(&item_path(t.kind, &ns, name), &[]).await {
                    Ok(o) => objects.push((t.kind, o)),
                    Err(e) if e.is_not_found() => errors.push(e),
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let now = Utc::now();
    let mut first = true;
    for (kind, obj) in &objects {
        let events = events_for(client, *kind, obj).await;
        let endpoints = endpoints_for(client, *kind, obj).await;
        if !first {
            println!();
        }
        first = false;
        print!(
            "{}",
            describe_with(*kind, obj, endpoints.as_ref(), events.as_deref(), now)
        );
    }
    for e in &errors {
        eprintln!("{e}");
    }
    if !errors.is_empty() {
        return Err(AlreadyReported.into());
    }
    if objects.is_empty() {
        let kinds: Vec<Kind> = targets.iter().map(|t| t.kind).collect();
        eprintln!("{}", crate::get::none_found(&kinds, Some(&ns)));
    }
    Ok(())
}
