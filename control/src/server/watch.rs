//! Watch streams: newline-delimited JSON events (`ADDED`, `MODIFIED`,
//! `DELETED`, `BOOKMARK`, `ERROR`) from a store watch, filtered by the
//! client's selectors; an expired revision ends in an `ERROR` carrying 410.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use shturman_api::Kind;
use tokio::sync::mpsc;

use super::State;
use super::error::ApiError;
use super::handlers::{Selection, materialize};
use crate::store::{EventKind, Prefix, Revision, StoreError, Versioned};

/// What a watch request asked for.
pub struct WatchRequest {
    pub kind: Kind,
    pub namespace: Option<String>,
    /// Only this object (a watch on `fieldSelector=metadata.name=…` or a name).
    pub selection: Selection,
    /// `None` or 0: start with the current state as `ADDED` events.
    pub from: Option<Revision>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
}

/// How often an idle watch sends a `BOOKMARK` (when asked for them).
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn error_line(err: &ApiError) -> Bytes {
    line("ERROR", &serde_json::to_value(&*err.0).unwrap_or(Value::Null))
}

/// Starts a watch and returns the streaming response.
pub async fn serve(state: Arc<State>, req: WatchRequest) -> Result<Response, ApiError> {
    let kind = req.kind;
    let prefix = Prefix::new(kind.plural(), req.namespace.clone());
    // The initial state, for watches that start "now".
    let (initial, from) = match req.from {
        Some(rev) if rev > 0 => (Vec::new(), rev),
        _ => {
            let listing = state
                .store
                .list(&prefix)
                .await
                .map_err(|e| ApiError::from_store(e, kind, ""))?;
            (listing.items, listing.revision)
        }
    };
    let mut events = match state.store.watch(&prefix, from).await {
        Ok(w) => w,
        Err(StoreError::Compacted { requested, oldest }) => {
            // As Kubernetes: the stream opens and says 410 in an ERROR event.
            let err = ApiError::from_store(StoreError::Compacted { requested, oldest }, kind, "");
            return Ok(ndjson(Body::from(error_line(&err))));
        }
        Err(e) => return Err(ApiError::from_store(e, kind, "")),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let mut shutdown = state.stop.subscribe();
    state.metrics.watchers.fetch_add(1, Ordering::Relaxed);
    let owner = state.clone();
    tokio::spawn(async move {
        let _guard = WatcherGuard(owner);
        for (_, v) in &initial {
            let Ok(obj) = materialize(v) else { continue };
            if req.selection.matches(&obj) && tx.send(Ok(line("ADDED", &obj))).await.is_err() {
                return;
            }
        }
        let mut last = from;
        let deadline = req.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut bookmark = tokio::time::interval(BOOKMARK_EVERY);
        bookmark.tick().await;
        loop {
            let until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return };
                    let out = match ev {
                        Ok(ev) => {
                            last = ev.revision;
                            let Ok(obj) = materialize(&Versioned { value: ev.value, revision: ev.revision }) else { continue };
                            if !req.selection.matches(&obj) {
                                continue;
                            }
                            let t = match ev.kind {
                                EventKind::Added => "ADDED",
                                EventKind::Modified => "MODIFIED",
                                EventKind::Deleted => "DELETED",
                            };
                            line(t, &obj)
                        }
                        Err(e) => {
                            let _ = tx.send(Ok(error_line(&ApiError::from_store(e, kind, "")))).await;
                            return;
                        }
                    };
                    if tx.send(Ok(out)).await.is_err() {
                        return;
                    }
                }
                _ = bookmark.tick(), if req.bookmarks => {
                    let mark = json!({
                        "apiVersion": kind.api_version(),
                        "kind": kind.name(),
                        "metadata": {"resourceVersion": last.to_string()},
                    });
                    if tx.send(Ok(line("BOOKMARK", &mark))).await.is_err() {
                        return;
                    }
                }
                _ = until_deadline => return,
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(ndjson(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

fn ndjson(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Keeps the open-watch gauge right however the stream ends.
struct WatcherGuard(Arc<State>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.metrics.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}
