//! `get -w`: follow a collection from the listed resourceVersion, printing a
//! row per event; a 410 Gone (the version is too old) means relist, print
//! what changed meanwhile, and watch again from the new version.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use serde_json::Value;
use shturman_api::status::Status;

use crate::client::{ApiError, Client};
use crate::get::Printer;
use crate::output::list_items;
use crate::value::str_at;

/// What is being watched.
pub struct Watching {
    /// Collection path.
    pub path: String,
    /// Selectors, as for the list.
    pub query: Vec<(&'static str, String)>,
    /// Only these names, when given.
    pub names: Vec<String>,
}

/// `namespace/name`, the identity of an object within one kind.
fn key(obj: &Value) -> String {
    format!(
        "{}/{}",
        str_at(obj, "metadata.namespace"),
        str_at(obj, "metadata.name")
    )
}

/// Objects in `fresh` that are new or changed against `seen`, then those in
/// `seen` that are gone (as last seen).
pub fn relist_changes(seen: &HashMap<String, Value>, fresh: &[Value]) -> Vec<Value> {
    let rv = |o: &Value| str_at(o, "metadata.resourceVersion").to_string();
    let mut out: Vec<Value> = fresh
        .iter()
        .filter(|o| seen.get(&key(o)).is_none_or(|old| rv(old) != rv(o)))
        .cloned()
        .collect();
    let fresh_keys: Vec<String> = fresh.iter().map(key).collect();
    let mut gone: Vec<(&String, &Value)> = seen.iter().filter(|(k, _)| !fresh_keys.contains(k)).collect();
    gone.sort_by(|a, b| a.0.cmp(b.0));
    out.extend(gone.into_iter().map(|(_, v)| v.clone()));
    out
}

fn emit(printer: &mut Printer, obj: &Value) -> Result<()> {
    let text = printer.event(obj, Utc::now());
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

pub async fn run(
    client: &Client,
    w: &Watching,
    mut rv: String,
    initial: Vec<Value>,
    printer: &mut Printer,
) -> Result<()> {
    let wanted =
        |obj: &Value| w.names.is_empty() || w.names.iter().any(|n| n == str_at(obj, "metadata.name"));
    let mut seen: HashMap<String, Value> = initial.into_iter().map(|o| (key(&o), o)).collect();
    loop {
        let mut query = w.query.clone();
        query.push(("watch", "true".into()));
        query.push(("allowWatchBookmarks", "true".into()));
        if !rv.is_empty() {
            query.push(("resourceVersion", rv.clone()));
        }
        let mut gone = false;
        let mut events = 0usize;
        match client.watch(&w.path, &query).await {
            Err(e) if e.is_gone() => gone = true,
            Err(e) => return Err(e.into()),
            Ok(mut stream) => {
                while let Some(ev) = stream.next().await? {
                    events += 1;
                    let obj_rv = str_at(&ev.object, "metadata.resourceVersion").to_string();
                    match ev.kind.as_str() {
                        "BOOKMARK" => rv = obj_rv,
                        "ERROR" => {
                            let status: Status = serde_json::from_value(ev.object).unwrap_or_default();
                            if status.code == 410 || status.reason == "Expired" || status.reason == "Gone" {
                                gone = true;
                                break;
                            }
                            return Err(ApiError::Server(status).into());
                        }
                        kind => {
                            if !obj_rv.is_empty() {
                                rv = obj_rv;
                            }
                            if !wanted(&ev.object) {
                                continue;
                            }
                            if kind == "DELETED" {
                                seen.remove(&key(&ev.object));
                            } else {
                                seen.insert(key(&ev.object), ev.object.clone());
                            }
                            emit(printer, &ev.object)?;
                        }
                    }
                }
            }
        }
        if gone {
            let list = client.get(&w.path, &w.query).await?;
            rv = str_at(&list, "metadata.resourceVersion").to_string();
            let fresh: Vec<Value> = list_items(printer.kind, &list)
                .into_iter()
                .filter(|o| wanted(o))
                .collect();
            for obj in relist_changes(&seen, &fresh) {
                emit(printer, &obj)?;
            }
            seen = fresh.into_iter().map(|o| (key(&o), o)).collect();
        } else if events == 0 {
            // The server closed an idle stream; don't spin.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, rv: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "d", "resourceVersion": rv}})
    }

    #[test]
    fn relist_reports_new_changed_and_gone() {
        let seen: HashMap<String, Value> = [obj("a", "1"), obj("b", "2"), obj("c", "3")]
            .into_iter()
            .map(|o| (key(&o), o))
            .collect();
        let fresh = vec![obj("a", "1"), obj("b", "5"), obj("d", "6")];
        let names: Vec<String> = relist_changes(&seen, &fresh)
            .iter()
            .map(|o| str_at(o, "metadata.name").to_string())
            .collect();
        assert_eq!(names, ["b", "d", "c"]);
    }
}
