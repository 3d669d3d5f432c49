//! Read-your-writes for one pass (Kubernetes' expectations): what a pass
//! wrote of one kind, and a wait until the informer of that kind shows it.

use std::marker::PhantomData;
use std::time::Duration;

use shturman_api::meta::{Object, ObjectMeta};
use tokio::sync::broadcast::error::RecvError;

use crate::runtime::{Informer, ObjectKey};
use crate::store::Revision;

/// How long a pass waits for the informers to show its own writes.
pub(crate) const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The revision an object was read or written at.
pub(crate) fn revision_of(meta: &ObjectMeta) -> Option<Revision> {
    meta.resource_version.as_deref().and_then(|v| v.parse().ok())
}

/// What a pass wrote of one kind, to wait for before it ends.
pub(crate) struct Written<T> {
    /// The highest revision written (0: none).
    revision: Revision,
    /// Objects deleted: their keys and uids.
    gone: Vec<(ObjectKey, Option<String>)>,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Default for Written<T> {
    fn default() -> Self {
        Written {
            revision: 0,
            gone: Vec::new(),
            _kind: PhantomData,
        }
    }
}

impl<T: Object + Send + Sync + 'static> Written<T> {
    /// Notes a created or updated object, as the API returned it.
    pub(crate) fn wrote(&mut self, obj: &T) {
        if let Some(rev) = revision_of(obj.metadata()) {
            self.revision = self.revision.max(rev);
        }
    }

    /// Notes a deleted object.
    pub(crate) fn deleted(&mut self, key: ObjectKey, uid: Option<String>) {
        self.gone.push((key, uid));
    }

    /// Waits (up to [`SETTLE_TIMEOUT`]) until `informer` shows every write:
    /// its revision reached, each deleted object gone (or terminating, or
    /// replaced by another uid). Whether it got there.
    pub(crate) async fn settle(&self, informer: &Informer<T>) -> bool {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        let mut changes = informer.subscribe();
        if self.revision > 0 && !informer.wait_seen(self.revision, SETTLE_TIMEOUT).await {
            return false;
        }
        let mut pending: Vec<&(ObjectKey, Option<String>)> = self.gone.iter().collect();
        loop {
            pending.retain(|(key, uid)| {
                informer.get(key).is_some_and(|o| {
                    let m = o.metadata();
                    m.deletion_timestamp.is_none() && (uid.is_none() || m.uid == *uid)
                })
            });
            if pending.is_empty() {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) | Ok(Err(RecvError::Closed)) => return false,
                Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            }
        }
    }
}
