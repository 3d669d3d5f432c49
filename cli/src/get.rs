//! `shturman get`: list or fetch objects and print them as kubectl does
//! (tables, `-o wide|json|yaml|name`), then optionally watch.

use std::io::Write;

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde_json::Value;
use shturman_api::Kind;

use crate::AlreadyReported;
use crate::args::{GetArgs, OutputFormat};
use crate::client::Client;
use crate::columns;
use crate::output::{json_text, list_items, name_line, with_type, wrap, yaml_text};
use crate::table;
use crate::targets::{item_path, parse_targets};
use crate::value::{joined_map, or_none, str_at};
use crate::watch;

/// Query parameters for a list: selectors are passed through to the server as given.
pub fn list_query(label: Option<&str>, field: Option<&str>) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(l) = label.filter(|s| !s.is_empty()) {
        q.push(("labelSelector", l.to_string()));
    }
    if let Some(f) = field.filter(|s| !s.is_empty()) {
        q.push(("fieldSelector", f.to_string()));
    }
    q
}

/// How rows of one kind are printed; keeps column widths across watch events.
pub struct Printer {
    pub kind: Kind,
    pub format: Option<OutputFormat>,
    pub all_namespaces: bool,
    pub show_labels: bool,
    /// Prefix names with the kind (`deployment.apps/web`) when several kinds are shown.
    pub qualify: bool,
    /// Widths of the table printed so far (empty until a header was printed).
    pub widths: Vec<usize>,
    /// Objects printed in yaml so far (for `---` separators).
    pub printed: usize,
}

impl Printer {
    pub fn headers(&self) -> Vec<String> {
        let wide = self.format == Some(OutputFormat::Wide);
        let mut h = Vec::new();
        if self.all_namespaces && self.kind.namespaced() {
            h.push("NAMESPACE".to_string());
        }
        h.extend(columns::headers(self.kind, wide));
        if self.show_labels {
            h.push("LABELS".to_string());
        }
        h
    }

    pub fn row(&self, obj: &Value, now: DateTime<Utc>) -> Vec<String> {
        let wide = self.format == Some(OutputFormat::Wide);
        let mut r = Vec::new();
        if self.all_namespaces && self.kind.namespaced() {
            r.push(str_at(obj, "metadata.namespace").to_string());
        }
        let mut cells = columns::row(self.kind, obj, wide, now);
        if self.qualify
            && let Some(i) = columns::name_column(self.kind)
            && let Some(cell) = cells.get_mut(i)
        {
            *cell = format!("{}/{cell}", self.kind.qualified_singular());
        }
        r.extend(cells);
        if self.show_labels {
            r.push(or_none(joined_map(obj, "metadata.labels"), "<none>"));
        }
        r
    }

    /// The whole table for `items`.
    pub fn table(&mut self, items: &[Value], now: DateTime<Utc>) -> String {
        let headers = self.headers();
        let rows: Vec<Vec<String>> = items.iter().map(|o| self.row(o, now)).collect();
        self.widths = table::widths(&headers, &rows);
        table::render(&headers, &rows)
    }

    /// Text for one object arriving on a watch.
    pub fn event(&mut self, obj: &Value, now: DateTime<Utc>) -> String {
        let obj = with_type(self.kind, obj.clone());
        match self.format {
            Some(OutputFormat::Json) => json_text(&obj),
            Some(OutputFormat::Yaml) => {
                self.printed += 1;
                let sep = if self.printed > 1 { "---\n" } else { "" };
                format!("{sep}{}", yaml_text(&obj))
            }
            Some(OutputFormat::Name) => format!("{}\n", name_line(self.kind, &obj)),
            _ => {
                let row = self.row(&obj, now);
                let mut out = String::new();
                if self.widths.is_empty() {
                    let headers = self.headers();
                    self.widths = table::widths(&headers, std::slice::from_ref(&row));
                    out.push_str(&table::line(&self.widths, &headers));
                    out.push('\n');
                }
                out.push_str(&table::line(&self.widths, &row));
                out.push('\n');
                out
            }
        }
    }
}

/// `No resources found in default namespace.`
pub fn none_found(kinds: &[Kind], namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if kinds.iter().any(|k| k.namespaced()) => {
            format!("No resources found in {ns} namespace.")
        }
        _ => "No resources found".to_string(),
    }
}

pub async fn run(args: &GetArgs, client: &Client) -> Result<()> {
    let targets = parse_targets(&args.targets)?;
    let scope = (!args.all_namespaces).then(|| client.config.namespace.clone());
    let has_names = targets.iter().any(|t| !t.names.is_empty());
    if args.all_namespaces && has_names {
        bail!("a resource cannot be retrieved by name across all namespaces");
    }
    if args.watch && targets.len() != 1 {
        bail!("you may only specify a single resource type with --watch");
    }
    let query = list_query(args.selector.as_deref(), args.field_selector.as_deref());
    let mut found: Vec<(Kind, Vec<Value>)> = Vec::new();
    let mut errors = Vec::new();
    let mut list_rv = String::new();
    for t in &targets {
        let mut items = Vec::new();
        if t.names.is_empty() {
            let list = client
                .get(&t.kind.collection_path(scope.as_deref()), &query)
                .await?;
            list_rv = str_at(&list, "metadata.resourceVersion").to_string();
            items = list_items(t.kind, &list);
        } else {
            let ns = scope.as_deref().unwrap_or("default");
            for name in &t.names {
                match client.get(&item_path(t.kind, ns, name), &[]).await {
                    Ok(obj) => {
                        list_rv = str_at(&obj, "metadata.resourceVersion").to_string();
                        items.push(with_type(t.kind, obj));
                    }
                    Err(e) if e.is_not_found() => errors.push(e),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        found.push((t.kind, items));
    }

    let now = Utc::now();
    let mut out = String::new();
    let total: usize = found.iter().map(|(_, items)| items.len()).sum();
    let mut printers = Vec::new();
    match args.output {
        Some(f @ (OutputFormat::Json | OutputFormat::Yaml)) => {
            let single = targets.len() == 1 && targets[0].names.len() == 1;
            let all: Vec<Value> = found.iter().flat_map(|(_, i)| i.iter().cloned()).collect();
            if !(single && all.is_empty()) {
                let v = wrap(all, single);
                out = if f == OutputFormat::Json {
                    json_text(&v)
                } else {
                    yaml_text(&v)
                };
            }
        }
        Some(OutputFormat::Name) => {
            for (kind, items) in &found {
                for obj in items {
                    out.push_str(&name_line(*kind, obj));
                    out.push('\n');
                }
            }
        }
        _ => {
            for (kind, items) in &found {
                let mut p = Printer {
                    kind: *kind,
                    format: args.output,
                    all_namespaces: args.all_namespaces,
                    show_labels: args.show_labels,
                    qualify: targets.len() > 1,
                    widths: Vec::new(),
                    printed: 0,
                };
                if !items.is_empty() {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(&p.table(items, now));
                }
                printers.push(p);
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    drop(stdout);
    let human = !matches!(args.output, Some(OutputFormat::Json | OutputFormat::Yaml));
    if total == 0 && errors.is_empty() && human && !args.watch {
        let kinds: Vec<Kind> = targets.iter().map(|t| t.kind).collect();
        eprintln!("{}", none_found(&kinds, scope.as_deref()));
    }
    for e in &errors {
        eprintln!("{e}");
    }
    if !errors.is_empty() {
        return Err(AlreadyReported.into());
    }
    if args.watch {
        let target = &targets[0];
        let mut printer = printers.pop().unwrap_or(Printer {
            kind: target.kind,
            format: args.output,
            all_namespaces: args.all_namespaces,
            show_labels: args.show_labels,
            qualify: false,
            widths: Vec::new(),
            printed: total,
        });
        let seen = found.pop().map(|(_, items)| items).unwrap_or_default();
        let w = watch::Watching {
            path: target.kind.collection_path(scope.as_deref()),
            query,
            names: target.names.clone(),
        };
        watch::run(client, &w, list_rv, seen, &mut printer).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn printer(kind: Kind) -> Printer {
        Printer {
            kind,
            format: None,
            all_namespaces: true,
            show_labels: true,
            qualify: false,
            widths: Vec::new(),
            printed: 0,
        }
    }

    #[test]
    fn selectors_pass_through_encoded() {
        let q = list_query(Some("app in (web,api),tier!=db"), Some("spec.nodeName=pi-1"));
        let url = reqwest::Url::parse_with_params("http://h/api/v1/pods", &q).expect("url");
        assert_eq!(
            url.query(),
            Some("labelSelector=app+in+%28web%2Capi%29%2Ctier%21%3Ddb&fieldSelector=spec.nodeName%3Dpi-1")
        );
        let back: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(back[0].1, "app in (web,api),tier!=db");
        assert!(list_query(Some(""), None).is_empty());
    }

    #[test]
    fn all_namespaces_and_labels_columns() {
        let now = Utc::now();
        let mut p = printer(Kind::ConfigMap);
        let items =
            vec![json!({"metadata": {"name": "c", "namespace": "edge", "labels": {"a": "b"}}, "data": {}})];
        assert_eq!(
            p.table(&items, now),
            "NAMESPACE   NAME   DATA   AGE         LABELS\nedge        c      0      <unknown>   a=b\n"
        );
        // Cluster-scoped kinds get no NAMESPACE column even with -A.
        let p = printer(Kind::Node);
        assert_eq!(p.headers()[0], "NAME");
    }

    #[test]
    fn watch_rows_reuse_the_widths() {
        let now = Utc::now();
        let mut p = printer(Kind::Namespace);
        p.all_namespaces = false;
        p.show_labels = false;
        let first = p.event(&json!({"metadata": {"name": "a"}}), now);
        assert_eq!(first, "NAME   STATUS   AGE\na      Active   <unknown>\n");
        let next = p.event(
            &json!({"metadata": {"name": "b"}, "status": {"phase": "Terminating"}}),
            now,
        );
        assert_eq!(next, "b      Terminating   <unknown>\n");
        p.format = Some(OutputFormat::Yaml);
        let y1 = p.event(&json!({"metadata": {"name": "a"}}), now);
        let y2 = p.event(&json!({"metadata": {"name": "b"}}), now);
        assert!(y1.starts_with("apiVersion: v1\n"), "{y1}");
        assert!(y2.starts_with("---\n"), "{y2}");
    }

    #[test]
    fn empty_messages() {
        assert_eq!(
            none_found(&[Kind::Pod], Some("default")),
            "No resources found in default namespace."
        );
        assert_eq!(none_found(&[Kind::Node], Some("default")), "No resources found");
        assert_eq!(none_found(&[Kind::Pod], None), "No resources found");
    }
}
