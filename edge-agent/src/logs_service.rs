//! Container logs for the control plane (`shturman logs`), served over the
//! node's own MQTT link so no port on the node is ever opened: a
//! [`LogRequest`] on `nodes/{node}/logs/request` is answered by signed
//! [`LogChunk`]s on `nodes/{node}/logs/reply/{id}`, read from the runtimes'
//! [`LogSource`]s: the Wasm runtime's [`LogStore`] (the ring of the current
//! run, or the previous run's) and the OCI runtime's CRI log files.
//!
//! One task per request, owned by the service's [`JoinSet`]; each holds a
//! cancel receiver whose sender sits in `active`: `nodes/{node}/logs/cancel/{id}`
//! fires it, [`LogService::shutdown`] drops them all. At most
//! [`LOG_REQUESTS_PER_NODE`] run at once; a follow stream ends after
//! [`LOG_FOLLOW_MAX`] or when its container's log is removed (pod deleted).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use shturman_api::meta::Time;
use shturman_api::wire::{
    DesiredPod, LOG_CHUNK_BYTES, LOG_FOLLOW_MAX, LOG_REQUESTS_PER_NODE, LogChunk, LogFailure,
    LogFailureReason, LogRequest, Topic, pack_lines,
};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinSet;

use crate::link::{LinkError, Publisher};
use crate::plan::PodKey;
use crate::sign;
use crate::wasm::logs::LogError;
use crate::wasm::{LogLine, LogStore};

/// A reply that cannot be queued within this long ends its stream (the
/// link is down; the control plane times out on its side).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for streams to send their last chunk.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Where one runtime's container logs are read from (the boundary between
/// the log service and the runtimes).
#[async_trait::async_trait]
pub trait LogSource: Send + Sync {
    /// Whether it holds logs of this pod's `container` (the first source
    /// that does serves a request).
    fn has(&self, pod: &PodKey, container: &str) -> bool;
    /// The last `tail` lines (all it keeps if `None`) of the current run,
    /// or of the previous one.
    async fn tail(
        &self,
        pod: &PodKey,
        container: &str,
        tail: Option<usize>,
        previous: bool,
    ) -> Result<Vec<LogLine>, LogError>;
    /// Lines written from now on; the stream closes when the pod's logs go
    /// away. Subscribe before [`tail`](Self::tail) to miss nothing (lines
    /// seen twice are dropped by time).
    async fn follow(&self, pod: &PodKey, container: &str) -> Result<broadcast::Receiver<LogLine>, LogError>;
}

#[async_trait::async_trait]
impl LogSource for LogStore {
    fn has(&self, pod: &PodKey, container: &str) -> bool {
        self.file(pod, container).is_ok()
    }

    async fn tail(
        &self,
        pod: &PodKey,
        container: &str,
        tail: Option<usize>,
        previous: bool,
    ) -> Result<Vec<LogLine>, LogError> {
        LogStore::tail(self, pod, container, tail, previous)
    }

    async fn follow(&self, pod: &PodKey, container: &str) -> Result<broadcast::Receiver<LogLine>, LogError> {
        LogStore::follow(self, pod, container)
    }
}

/// The agent's log server.
pub struct LogService {
    node: String,
    key: Vec<u8>,
    stores: Vec<Arc<dyn LogSource>>,
    /// Cancel senders of running requests, by id.
    active: HashMap<String, oneshot::Sender<()>>,
    tasks: JoinSet<()>,
}

fn failure(reason: LogFailureReason, message: String) -> LogFailure {
    LogFailure { reason, message }
}

/// Checks a request against the pods this node holds (pure).
pub fn check(node: &str, req: &LogRequest, desired: &BTreeMap<PodKey, DesiredPod>) -> Result<(), LogFailure> {
    let key = PodKey::new(req.namespace.clone(), req.name.clone());
    let held = desired
        .get(&key)
        .filter(|d| req.uid.is_empty() || d.pod.metadata.uid.as_deref() == Some(req.uid.as_str()));
    let Some(d) = held else {
        return Err(failure(
            LogFailureReason::NotFound,
            format!("pod {key} is not running on node {node}"),
        ));
    };
    if !d.pod.spec.containers.iter().any(|c| c.name == req.container) {
        return Err(failure(
            LogFailureReason::BadRequest,
            format!("container {} is not valid for pod {}", req.container, req.name),
        ));
    }
    Ok(())
}

/// A [`LogError`] of the store, in kubelet's words.
fn store_failure(e: &LogError, req: &LogRequest) -> LogFailure {
    let (c, p) = (&req.container, &req.name);
    match e {
        LogError::NotFound { .. } => failure(
            LogFailureReason::BadRequest,
            format!("container \"{c}\" in pod \"{p}\" is waiting to start: it has written no output yet"),
        ),
        LogError::NoPrevious { .. } => failure(
            LogFailureReason::BadRequest,
            format!("previous terminated container \"{c}\" in pod \"{p}\" not found"),
        ),
    }
}

impl LogService {
    /// Serves the logs in `stores`, signing replies with `key` (the node secret's).
    pub fn new(node: String, key: Vec<u8>, stores: Vec<Arc<dyn LogSource>>) -> LogService {
        LogService {
            node,
            key,
            stores,
            active: HashMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Forgets finished requests.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                tracing::error!(error = %e, "a log stream task panicked");
            }
        }
        self.active.retain(|_, tx| !tx.is_closed());
    }

    /// Requests being served.
    pub fn active(&mut self) -> usize {
        self.reap();
        self.active.len()
    }

    /// A message on `nodes/{node}/logs/request`.
    pub fn on_request(
        &mut self,
        payload: &[u8],
        desired: &BTreeMap<PodKey, DesiredPod>,
        publisher: Publisher,
    ) {
        self.reap();
        let req: LogRequest = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "malformed log request dropped");
                return;
            }
        };
        if !shturman_api::wire::valid_segment(&req.id) || self.active.contains_key(&req.id) {
            tracing::warn!(id = %req.id, "log request with an unusable or duplicate id dropped");
            return;
        }
        let replies = Replies {
            publisher,
            key: self.key.clone(),
            topic: Topic::LogReply {
                node: self.node.clone(),
                id: req.id.clone(),
            }
            .name(),
            id: req.id.clone(),
            seq: 0,
        };
        let refused = if self.active.len() >= LOG_REQUESTS_PER_NODE {
            Some(failure(
                LogFailureReason::TooManyRequests,
                format!(
                    "node {} already serves {LOG_REQUESTS_PER_NODE} log requests; try again when one ends",
                    self.node
                ),
            ))
        } else {
            check(&self.node, &req, desired).err()
        };
        if let Some(f) = refused {
            tracing::info!(id = %req.id, pod = %format!("{}/{}", req.namespace, req.name), "log request refused: {}", f.message);
            self.tasks.spawn(async move {
                let mut replies = replies;
                let _ = replies.fail(f).await;
            });
            return;
        }
        let key = PodKey::new(req.namespace.clone(), req.name.clone());
        let store = self
            .stores
            .iter()
            .find(|s| s.has(&key, &req.container))
            .or(self.stores.first())
            .cloned();
        let Some(store) = store else {
            let f = failure(
                LogFailureReason::BadRequest,
                format!(
                    "node {} keeps no container logs for this pod's runtime",
                    self.node
                ),
            );
            self.tasks.spawn(async move {
                let mut replies = replies;
                let _ = replies.fail(f).await;
            });
            return;
        };
        tracing::info!(id = %req.id, pod = %key, container = %req.container, follow = req.follow,
            tail = ?req.tail_lines, previous = req.previous, "serving a log request");
        let (tx, rx) = oneshot::channel();
        self.active.insert(req.id.clone(), tx);
        self.tasks.spawn(serve(req, store, replies, rx));
    }

    /// A message on `nodes/{node}/logs/cancel/{id}`.
    pub fn on_cancel(&mut self, id: &str) {
        if let Some(tx) = self.active.remove(id) {
            let _ = tx.send(());
        }
        self.reap();
    }

    /// Ends every stream (each sends a last chunk, briefly) and waits for them.
    pub async fn shutdown(&mut self) {
        self.active.clear();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            self.tasks.abort_all();
        }
    }
}

/// Sends one request's chunks, numbered.
struct Replies {
    publisher: Publisher,
    key: Vec<u8>,
    topic: String,
    id: String,
    seq: u64,
}

/// Why a reply could not go out.
#[derive(Debug, thiserror::Error)]
enum ReplyError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("cannot encode a log chunk: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the link has been down for {}s", PUBLISH_TIMEOUT.as_secs())]
    Stalled,
}

impl Replies {
    async fn send(&mut self, data: String, end: bool, error: Option<LogFailure>) -> Result<(), ReplyError> {
        let chunk = LogChunk {
            id: self.id.clone(),
            seq: self.seq,
            data,
            end,
            error,
        };
        self.seq += 1;
        let bytes = serde_json::to_vec(&sign::seal(&self.key, &chunk)?)?;
        tokio::time::timeout(PUBLISH_TIMEOUT, self.publisher.publish(self.topic.clone(), bytes))
            .await
            .map_err(|_| ReplyError::Stalled)??;
        Ok(())
    }

    async fn fail(&mut self, f: LogFailure) -> Result<(), ReplyError> {
        self.send(String::new(), true, Some(f)).await
    }
}

/// How a follow stream ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The control plane sent a cancel.
    Cancelled,
    /// The agent is stopping.
    Shutdown,
    /// The log is gone (pod removed) or the time limit passed.
    Done,
}

/// Serves one request until its end, a cancel or shutdown.
async fn serve(
    req: LogRequest,
    store: Arc<dyn LogSource>,
    mut out: Replies,
    mut cancel: oneshot::Receiver<()>,
) {
    let ended = tokio::select! {
        r = stream(&req, store.as_ref(), &mut out) => match r {
            Ok(()) => Ended::Done,
            Err(e) => {
                tracing::warn!(id = %req.id, error = %e, "log stream ended: cannot send");
                return;
            }
        },
        c = &mut cancel => if c.is_ok() { Ended::Cancelled } else { Ended::Shutdown },
    };
    match ended {
        Ended::Cancelled => {
            tracing::info!(id = %req.id, pod = %format!("{}/{}", req.namespace, req.name), "log stream cancelled by the control plane");
        }
        Ended::Shutdown => {
            let f = failure(LogFailureReason::Internal, "the node's agent is stopping".into());
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, out.fail(f)).await;
        }
        Ended::Done => {}
    }
}

/// The answer: the kept lines, then (following) new ones; ends with an
/// `end` chunk unless cancelled.
async fn stream(req: &LogRequest, store: &dyn LogSource, out: &mut Replies) -> Result<(), ReplyError> {
    let key = PodKey::new(req.namespace.clone(), req.name.clone());
    let follow = req.follow && !req.previous;
    // Subscribe before reading the ring so no line falls between them.
    let mut rx = if follow {
        match store.follow(&key, &req.container).await {
            Ok(rx) => Some(rx),
            Err(e) => return out.fail(store_failure(&e, req)).await,
        }
    } else {
        None
    };
    let tail = req.tail_lines.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let lines = match store.tail(&key, &req.container, tail, req.previous).await {
        Ok(l) => l,
        Err(e) => return out.fail(store_failure(&e, req)).await,
    };
    let seen: Option<Time> = lines.last().map(|l| l.time);
    let chunks = pack_lines(lines.iter().map(|l| l.text.as_str()), LOG_CHUNK_BYTES);
    let last = chunks.len().saturating_sub(1);
    if chunks.is_empty() {
        // The first chunk always comes at once: the control plane is waiting.
        out.send(String::new(), !follow, None).await?;
    }
    for (i, data) in chunks.into_iter().enumerate() {
        out.send(data, !follow && i == last, None).await?;
    }
    let Some(rx) = rx.as_mut() else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + LOG_FOLLOW_MAX;
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let mut batch: Vec<String> = Vec::new();
        match first {
            Ok(line) => push_new(&mut batch, line, seen.as_ref()),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                batch.push(format!("[shturman: {n} lines skipped: the reader fell behind]"));
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
        // Whatever else is already there goes in the same chunks.
        let mut bytes: usize = batch.iter().map(String::len).sum();
        while bytes < LOG_CHUNK_BYTES {
            match rx.try_recv() {
                Ok(line) => {
                    bytes += line.text.len() + 1;
                    push_new(&mut batch, line, seen.as_ref());
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    batch.push(format!("[shturman: {n} lines skipped: the reader fell behind]"));
                }
                Err(_) => break,
            }
        }
        for data in pack_lines(batch.iter().map(String::as_str), LOG_CHUNK_BYTES) {
            out.send(data, false, None).await?;
        }
    }
    out.send(String::new(), true, None).await
}

/// Keeps a followed line unless the ring read already had it.
fn push_new(batch: &mut Vec<String>, line: LogLine, seen: Option<&Time>) {
    if seen.is_none_or(|t| line.time.0 > t.0) {
        batch.push(line.text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::core::{Container, Pod};

    fn desired(uid: &str, containers: &[&str]) -> BTreeMap<PodKey, DesiredPod> {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some(uid.into());
        pod.spec.containers = containers
            .iter()
            .map(|n| Container {
                name: (*n).into(),
                ..Container::default()
            })
            .collect();
        BTreeMap::from([(
            PodKey::new("default", "web"),
            DesiredPod {
                pod,
                ..DesiredPod::default()
            },
        )])
    }

    fn req(uid: &str, container: &str) -> LogRequest {
        LogRequest {
            id: "r1".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: uid.into(),
            container: container.into(),
            ..LogRequest::default()
        }
    }

    #[test]
    fn requests_are_checked_against_held_pods() {
        let d = desired("u1", &["app"]);
        assert_eq!(check("n1", &req("u1", "app"), &d), Ok(()));
        let e = check("n1", &req("u2", "app"), &d).unwrap_err();
        assert_eq!(e.reason, LogFailureReason::NotFound);
        assert!(e.message.contains("not running on node n1"), "{}", e.message);
        let e = check("n1", &req("u1", "db"), &d).unwrap_err();
        assert_eq!(e.reason, LogFailureReason::BadRequest);
        assert!(e.message.contains("container db is not valid"), "{}", e.message);
    }

    #[test]
    fn store_errors_read_like_kubelet() {
        let r = req("u1", "app");
        let f = store_failure(
            &LogError::NoPrevious {
                pod: "default/web".into(),
                container: "app".into(),
            },
            &r,
        );
        assert_eq!(f.reason, LogFailureReason::BadRequest);
        assert_eq!(
            f.message,
            "previous terminated container \"app\" in pod \"web\" not found"
        );
    }

    #[test]
    fn followed_lines_already_read_are_skipped() {
        let t = |s: i64| Time(chrono::DateTime::from_timestamp(s, 0).unwrap());
        let line = |s, text: &str| LogLine {
            time: t(s),
            stream: crate::wasm::Stream::Stdout,
            text: text.into(),
        };
        let mut batch = Vec::new();
        push_new(&mut batch, line(1, "old"), Some(&t(2)));
        push_new(&mut batch, line(2, "same"), Some(&t(2)));
        push_new(&mut batch, line(3, "new"), Some(&t(2)));
        push_new(&mut batch, line(0, "any"), None);
        assert_eq!(batch, ["new", "any"]);
    }

    /// A store with one container run that wrote `lines`.
    fn store_with(dir: &std::path::Path, lines: &[&str]) -> (LogStore, crate::wasm::logs::LogSink) {
        let store = LogStore::new(dir.to_path_buf(), crate::wasm::logs::LogLimits::default());
        let sink = store.open_run(&PodKey::new("default", "web"), "u1", "app");
        for l in lines {
            sink.write(format!("{l}\n").as_bytes());
        }
        (store, sink)
    }

    /// A publisher whose event loop is polled by nobody: publishes queue up
    /// in the returned loop's request channel, where the test reads them.
    fn publisher() -> (Publisher, rumqttc::EventLoop) {
        let (client, events) = rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 64);
        (Publisher::for_tests(client), events)
    }

    fn sent(events: &mut rumqttc::EventLoop, key: &[u8]) -> Vec<LogChunk> {
        events.clean();
        let mut out = Vec::new();
        for r in events.pending.drain(..) {
            if let rumqttc::Request::Publish(p) = r {
                let s: shturman_api::wire::Signed = serde_json::from_slice(&p.payload).unwrap();
                assert!(sign::verify(key, &s));
                out.push(serde_json::from_str(&s.body).unwrap());
            }
        }
        out
    }

    #[tokio::test]
    async fn tail_then_end_and_errors_as_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _sink) = store_with(dir.path(), &["a", "b", "c"]);
        let key = sign::mac_key("secret");
        let (publisher, mut events) = publisher();
        let mut svc = LogService::new("n1".into(), key.clone(), vec![Arc::new(store)]);
        let d = desired("u1", &["app"]);
        let mut r = req("u1", "app");
        r.tail_lines = Some(2);
        svc.on_request(&serde_json::to_vec(&r).unwrap(), &d, publisher.clone());
        let mut r = req("u1", "app");
        r.id = "r2".into();
        r.previous = true;
        svc.on_request(&serde_json::to_vec(&r).unwrap(), &d, publisher.clone());
        while svc.tasks.join_next().await.is_some() {}
        let chunks = sent(&mut events, &key);
        let of = |id: &str| chunks.iter().filter(|c| c.id == id).cloned().collect::<Vec<_>>();
        let r1 = of("r1");
        assert_eq!(r1.len(), 1);
        assert_eq!((r1[0].seq, r1[0].data.as_str(), r1[0].end), (0, "b\nc\n", true));
        let r2 = of("r2");
        assert_eq!(r2.len(), 1);
        assert!(r2[0].end);
        assert_eq!(
            r2[0].error.as_ref().map(|e| e.reason),
            Some(LogFailureReason::BadRequest)
        );
        assert_eq!(svc.active(), 0);
    }

    #[tokio::test]
    async fn follow_streams_new_lines_until_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let (store, sink) = store_with(dir.path(), &["old"]);
        let key = sign::mac_key("secret");
        let (publisher, mut events) = publisher();
        let mut svc = LogService::new("n1".into(), key.clone(), vec![Arc::new(store)]);
        let mut r = req("u1", "app");
        r.follow = true;
        svc.on_request(
            &serde_json::to_vec(&r).unwrap(),
            &desired("u1", &["app"]),
            publisher,
        );
        assert_eq!(svc.active(), 1);
        let mut chunks = Vec::new();
        for _ in 0..100 {
            chunks.extend(sent(&mut events, &key));
            if !chunks.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(chunks[0].data, "old\n");
        sink.write(b"new\n");
        for _ in 0..100 {
            chunks.extend(sent(&mut events, &key));
            if chunks.len() > 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            (chunks[1].seq, chunks[1].data.as_str(), chunks[1].end),
            (1, "new\n", false)
        );
        svc.on_cancel("r1");
        while svc.tasks.join_next().await.is_some() {}
        assert_eq!(svc.active(), 0);
        assert!(sent(&mut events, &key).is_empty(), "no end chunk after a cancel");
    }
}
