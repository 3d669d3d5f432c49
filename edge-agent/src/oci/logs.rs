//! OCI containers' logs for `shturman logs`: containerd writes each run of a
//! container to `<pod dir>/logs/<container>/<restartCount>.log` in the CRI
//! format (`2016-10-06T00:17:09.669794202Z stdout F message`, `P` for a
//! partial line continued by the next record). [`CriLogs`] reads them as a
//! [`LogSource`]: the highest-numbered file is the current run, the one
//! before it the previous run (`--previous`); following polls the file and
//! moves on to the next run's file when the container restarts.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shturman_api::meta::Time;
use tokio::sync::broadcast;

use crate::logs_service::LogSource;
use crate::plan::PodKey;
use crate::wasm::logs::LogError;
use crate::wasm::{LogLine, Stream};

/// How often a followed file is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Most bytes read per poll of a followed file.
const FOLLOW_READ: u64 = 1 << 20;

/// One record of a CRI log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub time: Time,
    pub stream: Stream,
    /// `P`: the line continues in the next record of the same stream.
    pub partial: bool,
    pub text: String,
}

/// Parses one line of a CRI log file (without its newline); `None` when it
/// is not in that format.
pub fn parse_record(line: &str) -> Option<Record> {
    let mut parts = line.splitn(4, ' ');
    let time = chrono::DateTime::parse_from_rfc3339(parts.next()?).ok()?;
    let stream = match parts.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    // Tags are `:`-separated; the first is `P` (partial) or `F` (full).
    let tags = parts.next()?;
    let partial = tags.split(':').next() == Some("P");
    let text = parts.next().unwrap_or("").to_string();
    Some(Record {
        time: Time(time.with_timezone(&chrono::Utc)),
        stream,
        partial,
        text,
    })
}

/// Joins partial records into lines, per stream.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: [Option<Record>; 2],
}

impl Assembler {
    /// Feeds one line of the file; returns a complete log line when it ends one.
    pub fn push(&mut self, raw: &str) -> Option<LogLine> {
        let r = parse_record(raw.trim_end_matches('\r'))?;
        let i = usize::from(r.stream == Stream::Stderr);
        let joined = match self.pending[i].take() {
            Some(mut p) => {
                p.text.push_str(&r.text);
                p.partial = r.partial;
                p
            }
            None => r,
        };
        if joined.partial {
            self.pending[i] = Some(joined);
            None
        } else {
            Some(LogLine {
                time: joined.time,
                stream: joined.stream,
                text: joined.text,
            })
        }
    }

    /// Lines still partial (the run ended mid-line), oldest first.
    pub fn flush(&mut self) -> Vec<LogLine> {
        let mut out: Vec<LogLine> = self
            .pending
            .iter_mut()
            .filter_map(Option::take)
            .map(|r| LogLine {
                time: r.time,
                stream: r.stream,
                text: r.text,
            })
            .collect();
        out.sort_by_key(|l| l.time.0);
        out
    }
}

/// Every line of a CRI log text, partial records joined.
pub fn parse_lines(text: &str) -> Vec<LogLine> {
    let mut a = Assembler::default();
    let mut out: Vec<LogLine> = text.lines().filter_map(|l| a.push(l)).collect();
    out.extend(a.flush());
    out
}

/// The run files of a container (`<n>.log`), by run number.
pub fn runs(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name();
                    let n = name.to_str()?.strip_suffix(".log")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|(n, _)| *n);
    v
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The log files of the OCI runtime's pods (cheap to clone).
#[derive(Clone, Default)]
pub struct CriLogs {
    /// Each running pod's log directory.
    pods: Arc<Mutex<HashMap<PodKey, PathBuf>>>,
}

impl CriLogs {
    /// Registers a pod's log directory (pod started).
    pub fn add(&self, pod: PodKey, dir: PathBuf) {
        lock(&self.pods).insert(pod, dir);
    }

    /// Forgets a pod (stopped): its followers end.
    pub fn remove(&self, pod: &PodKey) {
        lock(&self.pods).remove(pod);
    }

    fn container_dir(&self, pod: &PodKey, container: &str) -> Option<PathBuf> {
        lock(&self.pods).get(pod).map(|d| d.join(container))
    }

    fn not_found(pod: &PodKey, container: &str) -> LogError {
        LogError::NotFound {
            pod: pod.to_string(),
            container: container.into(),
        }
    }

    /// The file of the current (or previous) run.
    fn run_file(&self, pod: &PodKey, container: &str, previous: bool) -> Result<PathBuf, LogError> {
        let dir = self
            .container_dir(pod, container)
            .ok_or_else(|| Self::not_found(pod, container))?;
        let mut all = runs(&dir);
        let current = all.pop().ok_or_else(|| Self::not_found(pod, container))?;
        if !previous {
            return Ok(current.1);
        }
        all.pop().map(|(_, p)| p).ok_or_else(|| LogError::NoPrevious {
            pod: pod.to_string(),
            container: container.into(),
        })
    }
}

#[async_trait::async_trait]
impl LogSource for CriLogs {
    fn has(&self, pod: &PodKey, _container: &str) -> bool {
        lock(&self.pods).contains_key(pod)
    }

    async fn tail(
        &self,
        pod: &PodKey,
        container: &str,
        tail: Option<usize>,
        previous: bool,
    ) -> Result<Vec<LogLine>, LogError> {
        let path = self.run_file(pod, container, previous)?;
        let read = tokio::task::spawn_blocking(move || std::fs::read(&path)).await;
        let bytes = match read {
            Ok(Ok(b)) => b,
            _ => return Err(Self::not_found(pod, container)),
        };
        let lines = parse_lines(&String::from_utf8_lossy(&bytes));
        let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
        Ok(lines.into_iter().skip(skip).collect())
    }

    async fn follow(&self, pod: &PodKey, container: &str) -> Result<broadcast::Receiver<LogLine>, LogError> {
        let dir = self
            .container_dir(pod, container)
            .ok_or_else(|| Self::not_found(pod, container))?;
        let (run, path) = runs(&dir).pop().ok_or_else(|| Self::not_found(pod, container))?;
        // Start at the current end: what is there now comes from `tail`.
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        let (tx, rx) = broadcast::channel(256);
        let follower = Follower {
            logs: self.clone(),
            pod: pod.clone(),
            dir,
            run,
            path,
            offset,
            carry: Vec::new(),
            assembler: Assembler::default(),
            tx,
        };
        tokio::spawn(follower.run());
        Ok(rx)
    }
}

/// Follows one container's current run file, then its next runs.
struct Follower {
    logs: CriLogs,
    pod: PodKey,
    dir: PathBuf,
    run: u32,
    path: PathBuf,
    offset: u64,
    /// Bytes after the last newline read.
    carry: Vec<u8>,
    assembler: Assembler,
    tx: broadcast::Sender<LogLine>,
}

impl Follower {
    async fn run(mut self) {
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            if self.tx.receiver_count() == 0 || !self.logs.has(&self.pod, "") {
                return; // the reader went away, or the pod stopped
            }
            let (path, offset) = (self.path.clone(), self.offset);
            let read = tokio::task::spawn_blocking(move || read_from(&path, offset)).await;
            if let Ok(Ok((bytes, restarted))) = read {
                if restarted {
                    // Rotated under the same name: start over at 0.
                    self.offset = 0;
                    self.carry.clear();
                    continue;
                }
                self.offset += u64::try_from(bytes.len()).unwrap_or(0);
                self.feed(&bytes);
                if !bytes.is_empty() {
                    continue;
                }
            }
            // Nothing new: has the container moved on to its next run?
            let dir = self.dir.clone();
            let next = tokio::task::spawn_blocking(move || runs(&dir))
                .await
                .unwrap_or_default()
                .into_iter()
                .find(|(n, _)| *n > self.run);
            if let Some((n, p)) = next {
                for line in self.assembler.flush() {
                    let _ = self.tx.send(line);
                }
                self.run = n;
                self.path = p;
                self.offset = 0;
                self.carry.clear();
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.carry.extend_from_slice(bytes);
        let Some(end) = self.carry.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.carry.drain(..=end).collect();
        for raw in String::from_utf8_lossy(&complete).lines() {
            if let Some(line) = self.assembler.push(raw) {
                let _ = self.tx.send(line);
            }
        }
    }
}

/// Up to [`FOLLOW_READ`] bytes of `path` from `offset`; `true` when the file
/// is now shorter than `offset` (rotated and reopened).
fn read_from(path: &Path, offset: u64) -> io::Result<(Vec<u8>, bool)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len < offset {
        return Ok((Vec::new(), true));
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(FOLLOW_READ).read_to_end(&mut buf)?;
    Ok((buf, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_partials_join() {
        let r = parse_record("2016-10-06T00:17:09.669794202Z stdout F hello world").unwrap();
        assert_eq!(r.stream, Stream::Stdout);
        assert!(!r.partial);
        assert_eq!(r.text, "hello world");
        assert_eq!(r.time.0.timestamp_nanos_opt(), Some(1_475_713_029_669_794_202));
        let empty = parse_record("2016-10-06T00:17:09Z stderr F").unwrap();
        assert_eq!((empty.stream, empty.text.as_str()), (Stream::Stderr, ""));
        assert!(
            parse_record("2016-10-06T00:17:09Z stdout P:x part")
                .unwrap()
                .partial
        );
        assert!(parse_record("garbage").is_none());
        assert!(parse_record("2016-10-06T00:17:09Z other F x").is_none());

        let text = "\
2024-01-01T00:00:00.1Z stdout P hel
2024-01-01T00:00:00.2Z stderr F oops
2024-01-01T00:00:00.3Z stdout F lo
2024-01-01T00:00:00.4Z stdout F  two  spaces
not a record
2024-01-01T00:00:00.5Z stderr P trailing";
        let lines = parse_lines(text);
        let v: Vec<(&str, Stream)> = lines.iter().map(|l| (l.text.as_str(), l.stream)).collect();
        assert_eq!(
            v,
            [
                ("oops", Stream::Stderr),
                ("hello", Stream::Stdout),
                (" two  spaces", Stream::Stdout),
                ("trailing", Stream::Stderr),
            ]
        );
    }

    #[tokio::test]
    async fn current_previous_and_follow_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let logs = CriLogs::default();
        let pod = PodKey::new("default", "web");
        let c = dir.path().join("app");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log"), "2024-01-01T00:00:00Z stdout F first run\n").unwrap();
        assert!(!logs.has(&pod, "app"));
        assert!(logs.tail(&pod, "app", None, false).await.is_err());
        logs.add(pod.clone(), dir.path().to_path_buf());
        assert!(logs.has(&pod, "app"));
        let texts = |v: Vec<LogLine>| v.into_iter().map(|l| l.text).collect::<Vec<_>>();
        assert_eq!(
            texts(logs.tail(&pod, "app", None, false).await.unwrap()),
            ["first run"]
        );
        assert_eq!(
            logs.tail(&pod, "app", None, true).await.unwrap_err(),
            LogError::NoPrevious {
                pod: "default/web".into(),
                container: "app".into()
            }
        );
        let mut rx = logs.follow(&pod, "app").await.unwrap();
        let append = |name: &str, text: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(c.join(name))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        append("0.log", "2024-01-01T00:00:01Z stdout P sec");
        append("0.log", "ond\n2024-01-01T00:00:01Z stdout F  line\n");
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.text, "second line");
        // The container restarts: run 1 begins; the follower moves on.
        append("1.log", "2024-01-01T00:00:02Z stderr F after restart\n");
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.text.as_str(), got.stream), ("after restart", Stream::Stderr));
        assert_eq!(
            texts(logs.tail(&pod, "app", Some(1), true).await.unwrap()),
            ["second line"]
        );
        assert_eq!(
            texts(logs.tail(&pod, "app", None, false).await.unwrap()),
            ["after restart"]
        );
        // The pod stops: the stream ends.
        logs.remove(&pod);
        let end = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert!(matches!(end, Err(broadcast::error::RecvError::Closed)));
    }
}
