//! Container logs: each container's stdout and stderr, split into lines,
//! kept in a bounded in-memory ring and appended to a size-capped file
//! `<data-dir>/logs/<ns>_<pod>_<uid>/<container>.log` (rotated to `.log.1` at
//! the cap). The previous run's lines are kept for `--previous`; followers
//! subscribe to a broadcast channel. File writes happen on the Wasm executor
//! threads, never on the agent's runtime.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use shturman_api::meta::Time;
use tokio::sync::broadcast;

use crate::plan::PodKey;

/// A partial line longer than this is emitted as a line of its own.
const MAX_LINE: usize = 16 * 1024;

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub time: Time,
    pub stream: Stream,
    pub text: String,
}

/// Why logs cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("no logs for container {container:?} of pod {pod}")]
    NotFound { pod: String, container: String },
    #[error("container {container:?} of pod {pod} has no previous run")]
    NoPrevious { pod: String, container: String },
}

/// Bounds of the log store.
#[derive(Clone, Debug)]
pub struct LogLimits {
    /// Lines kept in memory per container run.
    pub ring_lines: usize,
    /// Bytes per log file before it rotates to `.log.1`.
    pub file_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            ring_lines: 1000,
            file_bytes: 10 << 20,
        }
    }
}

type Entry = Arc<Mutex<ContainerLog>>;

/// Every container's logs on this node (cheap to clone).
#[derive(Clone)]
pub struct LogStore {
    root: PathBuf,
    limits: LogLimits,
    logs: Arc<Mutex<BTreeMap<(PodKey, String), Entry>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LogStore {
    /// Logs under `root` (`<data-dir>/logs`).
    pub fn new(root: PathBuf, limits: LogLimits) -> LogStore {
        LogStore {
            root,
            limits,
            logs: Arc::default(),
        }
    }

    /// The last `tail` lines (all kept lines if `None`) of the current run,
    /// or of the previous one.
    pub fn tail(
        &self,
        pod: &PodKey,
        container: &str,
        tail: Option<usize>,
        previous: bool,
    ) -> Result<Vec<LogLine>, LogError> {
        let entry = self.entry(pod, container)?;
        let log = lock(&entry);
        let ring = if previous {
            log.previous.as_ref().ok_or_else(|| LogError::NoPrevious {
                pod: pod.to_string(),
                container: container.into(),
            })?
        } else {
            &log.ring
        };
        let skip = tail.map_or(0, |n| ring.len().saturating_sub(n));
        Ok(ring.iter().skip(skip).cloned().collect())
    }

    /// New lines as they are written (`shturman logs -f`): read [`tail`](Self::tail)
    /// after subscribing to miss nothing.
    pub fn follow(&self, pod: &PodKey, container: &str) -> Result<broadcast::Receiver<LogLine>, LogError> {
        let entry = self.entry(pod, container)?;
        let rx = lock(&entry).tx.subscribe();
        Ok(rx)
    }

    /// The log file of the current run.
    pub fn file(&self, pod: &PodKey, container: &str) -> Result<PathBuf, LogError> {
        let entry = self.entry(pod, container)?;
        let path = lock(&entry).path.clone();
        Ok(path)
    }

    fn entry(&self, pod: &PodKey, container: &str) -> Result<Entry, LogError> {
        lock(&self.logs)
            .get(&(pod.clone(), container.to_string()))
            .cloned()
            .ok_or_else(|| LogError::NotFound {
                pod: pod.to_string(),
                container: container.into(),
            })
    }

    /// Starts a run of a container: the current lines become the previous
    /// run's and a new file is opened. Blocking file I/O.
    pub fn open_run(&self, pod: &PodKey, uid: &str, container: &str) -> LogSink {
        let entry = lock(&self.logs)
            .entry((pod.clone(), container.to_string()))
            .or_insert_with(|| {
                let dir = self.root.join(format!("{}_{}_{}", pod.namespace, pod.name, uid));
                Arc::new(Mutex::new(ContainerLog::new(
                    dir.join(format!("{container}.log")),
                    self.limits.clone(),
                )))
            })
            .clone();
        lock(&entry).new_run();
        LogSink {
            log: entry,
            stream: Stream::Stdout,
        }
    }

    /// Forgets a pod's logs and removes its files (pod deleted). Blocking.
    pub fn remove_pod(&self, pod: &PodKey) {
        let mut logs = lock(&self.logs);
        let keys: Vec<_> = logs.keys().filter(|(p, _)| p == pod).cloned().collect();
        for k in keys {
            if let Some(e) = logs.remove(&k) {
                let log = lock(&e);
                if let Some(dir) = log.path.parent() {
                    let _ = fs::remove_dir_all(dir);
                }
            }
        }
    }
}

/// One container's logs.
struct ContainerLog {
    path: PathBuf,
    limits: LogLimits,
    ring: VecDeque<LogLine>,
    previous: Option<VecDeque<LogLine>>,
    runs: u32,
    file: Option<File>,
    written: u64,
    partial: [Vec<u8>; 2],
    tx: broadcast::Sender<LogLine>,
}

impl ContainerLog {
    fn new(path: PathBuf, limits: LogLimits) -> ContainerLog {
        let (tx, _) = broadcast::channel(256);
        ContainerLog {
            path,
            limits,
            ring: VecDeque::new(),
            previous: None,
            runs: 0,
            file: None,
            written: 0,
            partial: [Vec::new(), Vec::new()],
            tx,
        }
    }

    fn new_run(&mut self) {
        self.flush_partial();
        if self.runs > 0 {
            self.previous = Some(std::mem::take(&mut self.ring));
            let _ = fs::rename(&self.path, with_suffix(&self.path, ".previous"));
        }
        self.runs = self.runs.saturating_add(1);
        self.file = open_file(&self.path)
            .map_err(|e| tracing::warn!(path = %self.path.display(), error = %e, "cannot open log file"))
            .ok();
        self.written = 0;
    }

    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let i = usize::from(stream == Stream::Stderr);
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            let mut text = std::mem::take(&mut self.partial[i]);
            text.extend_from_slice(line);
            self.line(stream, &text);
            rest = tail.get(1..).unwrap_or_default();
        }
        self.partial[i].extend_from_slice(rest);
        if self.partial[i].len() >= MAX_LINE {
            let text = std::mem::take(&mut self.partial[i]);
            self.line(stream, &text);
        }
    }

    fn flush_partial(&mut self) {
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            if !self.partial[i].is_empty() {
                let text = std::mem::take(&mut self.partial[i]);
                self.line(stream, &text);
            }
        }
    }

    fn line(&mut self, stream: Stream, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes).trim_end_matches('\r').to_string();
        let line = LogLine {
            time: Time(chrono::Utc::now()),
            stream,
            text,
        };
        self.append_file(&line);
        let _ = self.tx.send(line.clone());
        if self.ring.len() >= self.limits.ring_lines.max(1) {
            self.ring.pop_front();
        }
        self.ring.push_back(line);
    }

    /// CRI-style `<time> <stream> F <text>`, rotated at the cap.
    fn append_file(&mut self, line: &LogLine) {
        let record = format!(
            "{} {} F {}\n",
            line.time.0.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            line.stream.as_str(),
            line.text
        );
        let len = u64::try_from(record.len()).unwrap_or(u64::MAX);
        if self.written.saturating_add(len) > self.limits.file_bytes && self.written > 0 {
            let _ = fs::rename(&self.path, with_suffix(&self.path, ".1"));
            self.file = open_file(&self.path).ok();
            self.written = 0;
        }
        if let Some(f) = &mut self.file
            && f.write_all(record.as_bytes()).is_ok()
        {
            self.written = self.written.saturating_add(len);
        }
    }
}

/// `<ns>_<pod>_<uid>`, safe as one path component whatever the names hold.
pub fn pod_dir_name(pod: &PodKey, uid: &str) -> String {
    format!(
        "{}_{}_{}",
        file_safe(&pod.namespace),
        file_safe(&pod.name),
        file_safe(uid)
    )
}

/// Keeps `[A-Za-z0-9._-]`, replaces anything else (and a leading dot) by `_`.
fn file_safe(s: &str) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| match c {
            '.' if i == 0 => '_',
            c if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') => c,
            _ => '_',
        })
        .collect()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn open_file(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    File::create(path)
}

/// The writer a run's stdout or stderr goes to (a WASI output stream).
#[derive(Clone)]
pub struct LogSink {
    log: Entry,
    stream: Stream,
}

impl LogSink {
    /// The same log, written as `stream`.
    pub fn stream(&self, stream: Stream) -> LogSink {
        LogSink {
            log: self.log.clone(),
            stream,
        }
    }

    /// Appends raw output bytes.
    pub fn write(&self, bytes: &[u8]) {
        lock(&self.log).write(self.stream, bytes);
    }

    /// Ends the run: a trailing partial line is kept as a line.
    pub fn finish(&self) {
        lock(&self.log).flush_partial();
    }
}

impl tokio::io::AsyncWrite for LogSink {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "wasm")]
impl wasmtime_wasi::cli::IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

#[cfg(feature = "wasm")]
impl wasmtime_wasi::cli::StdoutStream for LogSink {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_ring_previous_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(
            dir.path().to_path_buf(),
            LogLimits {
                ring_lines: 3,
                file_bytes: 200,
            },
        );
        let pod = PodKey::new("ns", "p");
        let out = store.open_run(&pod, "u1", "c");
        let mut rx = store.follow(&pod, "c").unwrap();
        out.write(b"one\ntw");
        out.stream(Stream::Stderr).write(b"err\n");
        out.write(b"o\nthree\nfour\npartial");
        out.finish();
        let texts = |v: Vec<LogLine>| v.into_iter().map(|l| l.text).collect::<Vec<_>>();
        assert_eq!(
            texts(store.tail(&pod, "c", None, false).unwrap()),
            ["three", "four", "partial"]
        );
        assert_eq!(texts(store.tail(&pod, "c", Some(1), false).unwrap()), ["partial"]);
        assert_eq!(rx.try_recv().unwrap().text, "one");
        assert_eq!(rx.try_recv().unwrap().stream, Stream::Stderr);
        assert!(store.tail(&pod, "c", None, true).is_err());
        // The file rotated at 200 bytes.
        let file = store.file(&pod, "c").unwrap();
        assert!(with_suffix(&file, ".1").exists());
        assert!(fs::metadata(&file).unwrap().len() <= 200);
        // A second run keeps the first for --previous.
        let again = store.open_run(&pod, "u1", "c");
        again.write(b"second\n");
        assert_eq!(
            texts(store.tail(&pod, "c", None, true).unwrap()),
            ["three", "four", "partial"]
        );
        assert_eq!(texts(store.tail(&pod, "c", None, false).unwrap()), ["second"]);
        assert_eq!(pod_dir_name(&PodKey::new("..", "a/b"), "u"), "_._a_b_u");
        store.remove_pod(&pod);
        assert!(store.tail(&pod, "c", None, false).is_err());
        assert!(!file.exists());
    }
}
