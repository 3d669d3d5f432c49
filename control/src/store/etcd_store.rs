//! `EtcdStore`: objects in an etcd cluster, for control planes that outgrow
//! one machine's disk (the way k3s offers `--datastore-endpoint`).
//!
//! Each object is one etcd key, `{prefix}{resource}/{namespace}/{name}`
//! (`%` and `/` inside a part written `%25` and `%2F`), holding the same
//! bytes the other backends keep; the object's revision is
//! the key's `mod_revision`, so revisions are etcd's own (global, strictly
//! increasing, kept across restarts of either side). Conditional writes are
//! etcd transactions comparing `create_revision` or `mod_revision`; etcd
//! answers a write once its WAL entry is synced, which is this trait's
//! durability promise.
//!
//! Watches: one etcd watch over the whole prefix, from the revision read at
//! open, feeds the same history ring and watcher hub the other backends use
//! (`history::Hub`), so every watch has the same semantics whatever the
//! backend (replay from the ring, `Compacted` for a lagging watcher). If the
//! etcd watch breaks it is opened again after the last revision seen; when
//! etcd has compacted past that, every watch ends with `Compacted` and the
//! clients relist.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue, KvClient,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions,
};
use tokio_util::sync::CancellationToken;

use super::history::{Hub, StoreOptions};
use super::sled_format::{key_path, parse_key_path, prefix_path};
use super::{Event, EventKind, Key, Listing, Prefix, Revision, Store, StoreError, Versioned, Watch};

/// The key prefix when none is given: every key Shturman writes starts with it.
pub const DEFAULT_PREFIX: &str = "/shturman/";

/// How long one etcd request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How many keys one range request of a list reads.
const LIST_PAGE: i64 = 500;

/// The largest gRPC message accepted from etcd (a page of big objects).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Where to find etcd and which part of its key space is ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://10.0.0.5:2379`.
    pub endpoints: Vec<String>,
    /// The key prefix; ends with `/`.
    pub prefix: String,
}

impl EtcdConfig {
    /// The default prefix on these endpoints.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: DEFAULT_PREFIX.into(),
        }
    }
}

/// An etcd-backed [`Store`].
pub struct EtcdStore {
    kv: KvClient,
    prefix: String,
    endpoints: String,
    hub: Arc<Hub>,
    closed: AtomicBool,
    stop: CancellationToken,
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl EtcdStore {
    /// Connects with the default watch history.
    pub async fn connect(config: &EtcdConfig) -> Result<Self, StoreError> {
        Self::connect_with(config, StoreOptions::default()).await
    }

    /// Connects, reads the current revision and starts following changes.
    pub async fn connect_with(config: &EtcdConfig, options: StoreOptions) -> Result<Self, StoreError> {
        let endpoints = config.endpoints.join(",");
        if config.endpoints.is_empty() {
            return Err(StoreError::Io(
                "no etcd endpoint given: pass --etcd-endpoints http://HOST:2379".into(),
            ));
        }
        let prefix = if config.prefix.ends_with('/') {
            config.prefix.clone()
        } else {
            format!("{}/", config.prefix)
        };
        let unreachable = |e: etcd_client::Error| {
            StoreError::Io(format!(
                "cannot reach etcd at {endpoints}: {}; check that etcd runs there and --etcd-endpoints",
                root_cause(&e)
            ))
        };
        // A request etcd does not answer (no quorum, paused) fails after
        // REQUEST_TIMEOUT instead of holding its API call forever; the
        // timeout covers a watch's opening, not its stream.
        let options_connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(&config.endpoints, Some(options_connect))
            .await
            .map_err(unreachable)?;
        let mut kv = client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let start = tokio::time::timeout(Duration::from_secs(10), current_revision(&mut kv, &prefix))
            .await
            .map_err(|_| {
                StoreError::Io(format!(
                    "etcd at {endpoints} did not answer in 10 s; check that it runs there and has a quorum"
                ))
            })?
            .map_err(unreachable)?;
        let hub = Arc::new(Hub::new(start, options));
        let stop = CancellationToken::new();
        let pump = tokio::spawn(pump(
            client.watch_client(),
            kv.clone(),
            prefix.clone(),
            Arc::clone(&hub),
            start,
            stop.clone(),
        ));
        tracing::info!(%endpoints, %prefix, revision = start, "store: etcd");
        Ok(EtcdStore {
            kv,
            prefix,
            endpoints,
            hub,
            closed: AtomicBool::new(false),
            stop,
            pump: Mutex::new(Some(pump)),
        })
    }

    /// Refuses new work, stops following etcd and ends every watch.
    fn shut(&self) {
        self.closed.store(true, Ordering::Release);
        self.stop.cancel();
        self.hub.close();
    }

    fn client(&self) -> Result<KvClient, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(self.kv.clone())
    }

    fn io(&self, what: &str, e: &etcd_client::Error) -> StoreError {
        StoreError::Io(format!(
            "etcd at {} failed {what}: {}",
            self.endpoints,
            root_cause(e)
        ))
    }

    fn raw_key(&self, key: &Key) -> String {
        key_path(&self.prefix, key)
    }

    /// Runs `then` on an existing `key` (at revision `expected`, if given);
    /// otherwise fails with `Conflict` or `NotFound`, from etcd's answer.
    async fn guarded(
        &self,
        key: &Key,
        raw: &str,
        expected: Option<Revision>,
        then: TxnOp,
    ) -> Result<TxnResponse, StoreError> {
        let compare = match expected {
            Some(e) => Compare::mod_revision(raw, CompareOp::Equal, etcd_revision(e)),
            None => Compare::create_revision(raw, CompareOp::Greater, 0),
        };
        let resp = self.txn(raw, compare, then).await?;
        if resp.succeeded() {
            return Ok(resp);
        }
        let now = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().map(versioned),
            _ => None,
        });
        Err(match (now, expected) {
            (Some(now), Some(expected)) => StoreError::Conflict {
                key: key.clone(),
                expected,
                actual: now.revision,
            },
            _ => StoreError::NotFound { key: key.clone() },
        })
    }

    /// Runs a transaction: `compare`, then `then` if it holds, else a read
    /// of the key (to say why it did not).
    async fn txn(&self, raw: &str, compare: Compare, then: TxnOp) -> Result<TxnResponse, StoreError> {
        let txn = Txn::new()
            .when([compare])
            .and_then([then])
            .or_else([TxnOp::get(raw, None)]);
        self.client()?.txn(txn).await.map_err(|e| self.io("writing", &e))
    }
}

/// What went wrong at the bottom of a gRPC error's chain ("Connection
/// refused"), or the error itself: the layers above repeat it.
fn root_cause(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return e.to_string();
    };
    let mut cause: &dyn std::error::Error = status;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if std::ptr::addr_eq(cause, status) {
        status.message().to_string()
    } else {
        format!("{}: {cause}", status.message())
    }
}

fn versioned(kv: &KeyValue) -> Versioned {
    Versioned {
        value: kv.value().to_vec(),
        revision: revision_of(kv.mod_revision()),
    }
}

fn revision_of(r: i64) -> Revision {
    Revision::try_from(r).unwrap_or(0)
}

fn etcd_revision(r: Revision) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

fn header_revision(resp: &TxnResponse) -> Revision {
    resp.header().map_or(0, |h| revision_of(h.revision()))
}

/// etcd's current revision (read on our prefix, counting only).
async fn current_revision(kv: &mut KvClient, prefix: &str) -> Result<Revision, etcd_client::Error> {
    let resp = kv
        .get(prefix, Some(GetOptions::new().with_prefix().with_count_only()))
        .await?;
    Ok(resp.header().map_or(0, |h| revision_of(h.revision())))
}

/// Follows etcd's changes under `prefix` from after `from` into the hub.
async fn pump(
    mut watch: WatchClient,
    mut kv: KvClient,
    prefix: String,
    hub: Arc<Hub>,
    mut seen: Revision,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(etcd_revision(seen + 1));
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            w = watch.watch(prefix.as_str(), Some(opts)) => w,
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch etcd; retrying in {backoff:?}");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return,
                m = stream.message() => m,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => {
                    tracing::warn!("etcd ended the store's watch; watching again");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the store's etcd watch failed; watching again");
                    break;
                }
            };
            backoff = Duration::from_millis(100);
            if resp.compact_revision() > 0 {
                // etcd no longer has what came after `seen`: nobody can be
                // served without a gap; every watcher relists.
                let now = match current_revision(&mut kv, &prefix).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read etcd's revision after a compaction");
                        break;
                    }
                };
                tracing::warn!(
                    seen,
                    compacted = resp.compact_revision(),
                    now,
                    "etcd compacted past the store's watch; every watch starts over"
                );
                hub.restart_at(now);
                seen = now;
                break;
            }
            if resp.canceled() {
                tracing::warn!(reason = resp.cancel_reason(), "etcd cancelled the store's watch");
                break;
            }
            let mut events = Vec::with_capacity(resp.events().len());
            for e in resp.events() {
                let Some(kv) = e.kv() else { continue };
                let revision = revision_of(kv.mod_revision());
                let Some(key) = parse_key_path(&prefix, kv.key()) else {
                    tracing::debug!(key = %String::from_utf8_lossy(kv.key()), "a key under the prefix that is not an object; ignored");
                    continue;
                };
                if revision <= seen {
                    continue;
                }
                let (kind, value) = match e.event_type() {
                    EventType::Delete => (
                        EventKind::Deleted,
                        e.prev_kv().map(|p| p.value().to_vec()).unwrap_or_default(),
                    ),
                    EventType::Put if kv.create_revision() == kv.mod_revision() => {
                        (EventKind::Added, kv.value().to_vec())
                    }
                    EventType::Put => (EventKind::Modified, kv.value().to_vec()),
                };
                seen = revision;
                events.push(Event {
                    kind,
                    key,
                    value,
                    revision,
                });
            }
            hub.publish(events);
        }
        // The stream ended or was cancelled: pause before watching again,
        // so an etcd that keeps refusing is not asked in a tight loop.
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        let resp = self
            .client()?
            .get(self.raw_key(key), None)
            .await
            .map_err(|e| self.io("reading", &e))?;
        Ok(resp.kvs().first().map(versioned))
    }

    async fn list(&self, prefix: &Prefix) -> Result<Listing, StoreError> {
        let start = prefix_path(&self.prefix, prefix);
        // The end of the range: the prefix with its last byte ('/') raised.
        let mut end = start.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut client = self.client()?;
        let mut items = Vec::new();
        let mut from = start.into_bytes();
        let mut at = 0;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(LIST_PAGE);
            if at > 0 {
                opts = opts.with_revision(etcd_revision(at));
            }
            let resp = client
                .get(from.clone(), Some(opts))
                .await
                .map_err(|e| self.io("listing", &e))?;
            if at == 0 {
                at = resp.header().map_or(0, |h| revision_of(h.revision()));
            }
            for kv in resp.kvs() {
                if let Some(key) = parse_key_path(&self.prefix, kv.key()) {
                    items.push((key, versioned(kv)));
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        // etcd orders by bytes; the trait orders by (resource, namespace, name).
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Listing { items, revision: at })
    }

    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision, StoreError> {
        let raw = self.raw_key(key);
        let resp = self
            .txn(
                &raw,
                Compare::create_revision(raw.as_str(), CompareOp::Equal, 0),
                TxnOp::put(raw.as_str(), value, None),
            )
            .await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists { key: key.clone() });
        }
        Ok(header_revision(&resp))
    }

    async fn update(
        &self,
        key: &Key,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        let raw = self.raw_key(key);
        let resp = self
            .guarded(key, &raw, expected, TxnOp::put(raw.as_str(), value, None))
            .await?;
        Ok(header_revision(&resp))
    }

    async fn delete(
        &self,
        key: &Key,
        expected: Option<Revision>,
    ) -> Result<(Revision, Versioned), StoreError> {
        let raw = self.raw_key(key);
        let resp = self
            .guarded(
                key,
                &raw,
                expected,
                TxnOp::delete(raw.as_str(), Some(DeleteOptions::new().with_prev_key())),
            )
            .await?;
        let last = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().map(versioned),
            _ => None,
        });
        match last {
            Some(last) => Ok((header_revision(&resp), last)),
            // Deleted by someone else between the compare and the read.
            None => Err(StoreError::NotFound { key: key.clone() }),
        }
    }

    async fn watch(&self, prefix: &Prefix, from: Revision) -> Result<Watch, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.hub.subscribe(prefix, from)
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        let mut client = self.client()?;
        current_revision(&mut client, &self.prefix)
            .await
            .map_err(|e| self.io("reading its revision", &e))
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.shut();
        let pump = self.pump.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(pump) = pump {
            let _ = pump.await;
        }
        Ok(())
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.shut();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_foreign_keys_are_refused() {
        let p = DEFAULT_PREFIX;
        let k = Key::new("deployments.apps", "default", "web");
        assert_eq!(key_path(p, &k), "/shturman/deployments.apps/default/web");
        assert_eq!(parse_key_path(p, key_path(p, &k).as_bytes()), Some(k));
        let node = Key::new("nodes", "", "edge-1");
        assert_eq!(parse_key_path(p, key_path(p, &node).as_bytes()), Some(node));
        let odd = Key::new("pods", "a", "p/2%");
        assert_eq!(key_path(p, &odd), "/shturman/pods/a/p%2F2%25");
        assert_eq!(parse_key_path(p, key_path(p, &odd).as_bytes()), Some(odd));
        for foreign in [
            &b"/other/pods/default/a"[..],
            b"/shturman/pods/default",
            b"/shturman/pods/a/b/c",
            b"/shturman/pods/a/b%41",
            b"/shturman/pods/a/b%2",
            &[0xff, 0xfe],
        ] {
            assert_eq!(
                parse_key_path(p, foreign),
                None,
                "{}",
                String::from_utf8_lossy(foreign)
            );
        }
    }
}
