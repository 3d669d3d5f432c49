//! Container logs over MQTT, the control plane's half: the API server opens
//! a [`LogStream`] through the [`LogHub`]; the hub publishes a
//! [`LogRequest`] on `nodes/{node}/logs/request`, the gateway's event loop
//! hands each verified [`LogChunk`] from `nodes/{node}/logs/reply/{id}` back
//! to it ([`Shared::log_reply`]), and the stream yields the chunks in
//! sequence order. Dropping a stream before its end (the HTTP client went
//! away) publishes `nodes/{node}/logs/cancel/{id}`.
//!
//! Bounds: at most [`LOG_REQUESTS_PER_NODE`] open requests per node; a
//! stream whose reader falls [`CHANNEL_CHUNKS`] chunks behind is ended
//! (and cancelled on the node) rather than let the event loop wait or
//! memory grow.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rumqttc::{AsyncClient, QoS};
use shturman_api::wire::{LOG_REQUESTS_PER_NODE, LogChunk, LogRequest, Topic};
use tokio::sync::mpsc;

use super::Shared;

/// Chunks buffered per stream between the event loop and the HTTP body.
pub const CHANNEL_CHUNKS: usize = 256;
/// Chunks held out of order before a stream is declared broken.
const REORDER_WINDOW: usize = 64;

/// Why a log stream could not be opened or broke.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogStreamError {
    #[error("the control plane has no MQTT link to the nodes (the node gateway is not running)")]
    NoGateway,
    #[error("node {node:?} already serves {limit} log requests; try again when one ends")]
    TooMany { node: String, limit: usize },
    #[error("cannot send the log request to node {node:?}: {why}")]
    Publish { node: String, why: String },
    #[error("the log stream from node {node:?} broke: {why}")]
    Broken { node: String, why: String },
}

/// Puts chunks back in `seq` order and drops duplicates (pure).
#[derive(Debug, Default)]
pub struct Reorder {
    next: u64,
    held: BTreeMap<u64, LogChunk>,
}

/// What [`Reorder::push`] made of a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Reordered {
    /// These chunks, in order (maybe none yet).
    Ready(Vec<LogChunk>),
    /// Too many chunks arrived ahead of a missing one.
    Gap { missing: u64 },
}

impl Reorder {
    /// Takes one chunk; returns those now deliverable in order.
    pub fn push(&mut self, chunk: LogChunk) -> Reordered {
        if chunk.seq < self.next || self.held.contains_key(&chunk.seq) {
            return Reordered::Ready(Vec::new());
        }
        self.held.insert(chunk.seq, chunk);
        let mut out = Vec::new();
        while let Some(c) = self.held.remove(&self.next) {
            self.next += 1;
            out.push(c);
        }
        if self.held.len() > REORDER_WINDOW {
            return Reordered::Gap { missing: self.next };
        }
        Reordered::Ready(out)
    }
}

/// One open request, as the hub sees it.
struct Pending {
    node: String,
    tx: mpsc::Sender<LogChunk>,
}

/// Log counters, served at `/metrics`.
#[derive(Debug, Default)]
pub struct LogMetrics {
    /// Requests sent to nodes.
    pub requests: AtomicU64,
    /// Streams ended early by the control plane (client gone, reader too slow).
    pub cancelled: AtomicU64,
}

/// The open log requests of the whole control plane (shared by the API
/// server and the gateway).
#[derive(Default)]
pub struct LogHub {
    /// Set while the gateway runs.
    mqtt: Mutex<Option<AsyncClient>>,
    pending: Mutex<HashMap<String, Pending>>,
    pub metrics: LogMetrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogHub {
    /// The gateway's MQTT client, while it runs.
    pub(super) fn attach(&self, mqtt: AsyncClient) {
        *lock(&self.mqtt) = Some(mqtt);
    }

    /// The gateway stopped: every open stream ends (broken).
    pub(super) fn detach(&self) {
        *lock(&self.mqtt) = None;
        lock(&self.pending).clear();
    }

    /// Streams open right now.
    pub fn open_streams(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Sends `req` to `node` and returns the stream of its answer.
    pub fn open(self: &Arc<Self>, node: &str, req: LogRequest) -> Result<LogStream, LogStreamError> {
        let mqtt = lock(&self.mqtt).clone().ok_or(LogStreamError::NoGateway)?;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        {
            let mut pending = lock(&self.pending);
            let open = pending.values().filter(|p| p.node == node).count();
            if open >= LOG_REQUESTS_PER_NODE {
                return Err(LogStreamError::TooMany {
                    node: node.into(),
                    limit: LOG_REQUESTS_PER_NODE,
                });
            }
            pending.insert(
                req.id.clone(),
                Pending {
                    node: node.into(),
                    tx,
                },
            );
        }
        let stream = LogStream {
            id: req.id.clone(),
            node: node.into(),
            rx,
            reorder: Reorder::default(),
            ready: std::collections::VecDeque::new(),
            finished: false,
            hub: self.clone(),
        };
        let publish = serde_json::to_vec(&req)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let topic = Topic::LogRequest { node: node.into() }.name();
                mqtt.try_publish(topic, QoS::AtLeastOnce, false, bytes)
                    .map_err(|e| e.to_string())
            });
        if let Err(why) = publish {
            // `stream` drops here and forgets the request.
            return Err(LogStreamError::Publish {
                node: node.into(),
                why,
            });
        }
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(node, id = %req.id, pod = %format!("{}/{}", req.namespace, req.name),
            container = %req.container, follow = req.follow, "log request sent");
        Ok(stream)
    }

    /// A verified chunk from `node`. Never waits: a reader too far behind
    /// loses its stream (and the node is told to stop).
    pub(super) fn deliver(&self, node: &str, chunk: LogChunk) {
        let overflow = {
            let mut pending = lock(&self.pending);
            let Some(p) = pending.get(&chunk.id) else {
                tracing::debug!(node, id = %chunk.id, "log chunk for no open request dropped");
                return;
            };
            if p.node != node {
                tracing::warn!(node, id = %chunk.id, "log chunk from the wrong node dropped");
                return;
            }
            let id = chunk.id.clone();
            match p.tx.try_send(chunk) {
                Ok(()) => false,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    pending.remove(&id);
                    false
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    pending.remove(&id);
                    true
                }
            }
        };
        if overflow {
            tracing::warn!(node, "a log reader fell behind; its stream is ended");
        }
    }

    /// Forgets `id`; with `tell_node`, asks the node to stop sending.
    fn close(&self, node: &str, id: &str, tell_node: bool) {
        let was_open = lock(&self.pending).remove(id).is_some();
        if !tell_node {
            return;
        }
        self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            node,
            id,
            was_open,
            "log stream closed before its end; asking the node to stop"
        );
        if let Some(mqtt) = lock(&self.mqtt).clone() {
            let topic = Topic::LogCancel {
                node: node.into(),
                id: id.into(),
            }
            .name();
            if let Err(e) = mqtt.try_publish(topic, QoS::AtLeastOnce, false, Vec::new()) {
                tracing::warn!(node, id, error = %e, "could not send a log cancel");
            }
        }
    }
}

/// The answer to one request, chunk by chunk in order. Dropping it before
/// the end cancels the request on the node.
pub struct LogStream {
    id: String,
    node: String,
    rx: mpsc::Receiver<LogChunk>,
    reorder: Reorder,
    ready: std::collections::VecDeque<LogChunk>,
    finished: bool,
    hub: Arc<LogHub>,
}

impl LogStream {
    /// The node serving it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The next chunk in order; `None` after the end chunk.
    pub async fn next(&mut self) -> Option<Result<LogChunk, LogStreamError>> {
        if self.finished {
            return None;
        }
        loop {
            if let Some(c) = self.ready.pop_front() {
                if c.end {
                    self.finished = true;
                    self.hub.close(&self.node, &self.id, false);
                }
                return Some(Ok(c));
            }
            let Some(chunk) = self.rx.recv().await else {
                self.finished = true;
                // The hub dropped it (gateway stopped, reader too slow).
                self.hub.close(&self.node, &self.id, true);
                return Some(Err(self.broken("the control plane stopped forwarding it")));
            };
            match self.reorder.push(chunk) {
                Reordered::Ready(v) => self.ready.extend(v),
                Reordered::Gap { missing } => {
                    self.finished = true;
                    self.hub.close(&self.node, &self.id, true);
                    return Some(Err(self.broken(&format!("chunk {missing} never arrived"))));
                }
            }
        }
    }

    fn broken(&self, why: &str) -> LogStreamError {
        LogStreamError::Broken {
            node: self.node.clone(),
            why: why.into(),
        }
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        if !self.finished {
            self.hub.close(&self.node, &self.id, true);
        }
    }
}

impl Shared {
    /// A message on `nodes/{node}/logs/reply/{id}`: checked (signature,
    /// shape, id) and handed to the waiting stream.
    pub(super) fn log_reply(&self, node: &str, id: &str, payload: &[u8]) {
        let Some(body) = self.open(node, payload, "log chunk") else {
            return;
        };
        match serde_json::from_str::<LogChunk>(&body) {
            Ok(chunk) if chunk.id == id => self.logs.deliver(node, chunk),
            Ok(_) => tracing::warn!(node, id, "dropping a log chunk whose id does not match its topic"),
            Err(e) => tracing::warn!(node, "dropping a malformed log chunk: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, end: bool) -> LogChunk {
        LogChunk {
            id: "r".into(),
            seq,
            data: format!("{seq}\n"),
            end,
            error: None,
        }
    }

    fn seqs(r: Reordered) -> Vec<u64> {
        match r {
            Reordered::Ready(v) => v.into_iter().map(|c| c.seq).collect(),
            Reordered::Gap { missing } => panic!("gap at {missing}"),
        }
    }

    #[test]
    fn chunks_come_out_in_order_without_duplicates() {
        let mut r = Reorder::default();
        assert_eq!(seqs(r.push(chunk(1, false))), Vec::<u64>::new());
        assert_eq!(seqs(r.push(chunk(0, false))), [0, 1]);
        assert_eq!(seqs(r.push(chunk(1, false))), Vec::<u64>::new(), "duplicate");
        assert_eq!(seqs(r.push(chunk(3, true))), Vec::<u64>::new());
        assert_eq!(seqs(r.push(chunk(3, true))), Vec::<u64>::new(), "held duplicate");
        assert_eq!(seqs(r.push(chunk(2, false))), [2, 3]);
    }

    #[test]
    fn a_missing_chunk_ends_the_stream_once_the_window_fills() {
        let mut r = Reorder::default();
        for seq in 1..=u64::try_from(REORDER_WINDOW).unwrap() {
            assert_eq!(seqs(r.push(chunk(seq, false))), Vec::<u64>::new());
        }
        assert_eq!(r.push(chunk(1000, false)), Reordered::Gap { missing: 0 });
    }

    fn hub() -> Arc<LogHub> {
        Arc::new(LogHub::default())
    }

    fn request(id: &str) -> LogRequest {
        LogRequest {
            id: id.into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: "u".into(),
            container: "c".into(),
            ..LogRequest::default()
        }
    }

    /// A hub with an MQTT client whose event loop never runs: publishes
    /// queue up (and are inspected through the returned event loop's queue).
    fn attached(h: &LogHub) -> rumqttc::EventLoop {
        let (client, events) = AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 64);
        h.attach(client);
        events
    }

    #[test]
    fn without_a_gateway_nothing_opens() {
        let h = hub();
        assert_eq!(h.open("n1", request("a")).err(), Some(LogStreamError::NoGateway));
    }

    #[tokio::test]
    async fn streams_deliver_in_order_and_cancel_when_dropped_early() {
        let h = hub();
        let _events = attached(&h);
        let mut s = h.open("n1", request("a")).unwrap();
        assert_eq!(h.open_streams(), 1);
        h.deliver("n2", chunk(0, false)); // wrong node: ignored
        let mut c1 = chunk(1, true);
        c1.id = "a".into();
        let mut c0 = chunk(0, false);
        c0.id = "a".into();
        h.deliver("n1", c1);
        h.deliver("n1", c0);
        assert_eq!(s.next().await.unwrap().unwrap().seq, 0);
        assert_eq!(s.next().await.unwrap().unwrap().seq, 1);
        assert!(s.next().await.is_none());
        drop(s);
        assert_eq!(h.open_streams(), 0);
        assert_eq!(
            h.metrics.cancelled.load(Ordering::Relaxed),
            0,
            "ended, not cancelled"
        );

        let s = h.open("n1", request("b")).unwrap();
        drop(s);
        assert_eq!(h.open_streams(), 0);
        assert_eq!(h.metrics.cancelled.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn requests_per_node_are_bounded() {
        let h = hub();
        let _events = attached(&h);
        let open: Vec<_> = (0..LOG_REQUESTS_PER_NODE)
            .map(|i| h.open("n1", request(&format!("r{i}"))).unwrap())
            .collect();
        assert!(matches!(
            h.open("n1", request("more")),
            Err(LogStreamError::TooMany { .. })
        ));
        assert!(h.open("n2", request("other")).is_ok());
        drop(open);
        assert!(h.open("n1", request("again")).is_ok());
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_loses_its_stream() {
        let h = hub();
        let _events = attached(&h);
        let mut s = h.open("n1", request("a")).unwrap();
        for seq in 0..=u64::try_from(CHANNEL_CHUNKS).unwrap() {
            let mut c = chunk(seq, false);
            c.id = "a".into();
            h.deliver("n1", c);
        }
        assert_eq!(h.open_streams(), 0);
        let mut got = 0;
        while let Some(r) = s.next().await {
            match r {
                Ok(_) => got += 1,
                Err(e) => {
                    assert!(matches!(e, LogStreamError::Broken { .. }), "{e}");
                    break;
                }
            }
        }
        assert_eq!(got, CHANNEL_CHUNKS);
        h.detach();
        assert_eq!(h.open("n1", request("x")).err(), Some(LogStreamError::NoGateway));
    }
}
