//! A watch on pods through the real API (`?watch=true`, newline-delimited
//! events), read by a task that timestamps each event the moment its line
//! arrives and hands it on, so a scenario measures "the API said so" without
//! polling.

use std::time::Instant;

use anyhow::{Result, bail};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::spawn::Control;

/// One pod event, as the watch delivered it.
#[derive(Clone, Debug)]
pub struct PodEvent {
    /// When its line was read.
    pub at: Instant,
    /// `ADDED`, `MODIFIED`, `DELETED`, `ERROR`, …
    pub kind: String,
    pub name: String,
    /// `status.phase` (empty when unset).
    pub phase: String,
    /// Whether the first container's `state.running` is set.
    pub running: bool,
    /// Whether the node has reported any container status yet.
    pub reported: bool,
}

impl PodEvent {
    fn of(at: Instant, v: &Value) -> PodEvent {
        let obj = &v["object"];
        let c = &obj["status"]["containerStatuses"][0];
        PodEvent {
            at,
            kind: v["type"].as_str().unwrap_or_default().to_string(),
            name: obj["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            phase: obj["status"]["phase"].as_str().unwrap_or_default().to_string(),
            running: c["state"]["running"].is_object(),
            reported: c.is_object(),
        }
    }
}

/// A running watch; the task ends with the stream or when this is dropped.
pub struct PodWatch {
    pub events: mpsc::UnboundedReceiver<PodEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl PodWatch {
    /// Watches pods in `default` matching `label_selector` (e.g. `bench=x`),
    /// from now (the current pods come first as `ADDED`).
    pub async fn start(control: &Control, label_selector: &str) -> Result<PodWatch> {
        let resp = reqwest::Client::new()
            .get(format!(
                "{}/api/v1/namespaces/default/pods?watch=true&labelSelector={}",
                control.url,
                label_selector.replace('=', "%3D")
            ))
            .bearer_auth(&control.token)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("watch answered {}", resp.status());
        }
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                let at = Instant::now();
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    if tx.send(PodEvent::of(at, &v)).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(PodWatch { events, task })
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
