//! The controller runtime every controller shares, after kube-runtime's
//! shape: informers (list + watch → a local cache, relisting when the watch
//! expires), a deduplicating work queue keyed by object, a bounded number of
//! workers, and requeue-after or back-off as the value a reconcile returns.
//! Controllers read from the caches (level-triggered), never from event
//! payloads, so a crash or a lost event is healed on the next pass.

pub mod clock;
pub mod controller;
pub mod events;
pub mod informer;
pub mod queue;

pub use clock::{Clock, SystemClock};
pub use controller::{Action, Controller};
pub use events::Recorder;
pub use informer::{Change, Informer};
pub use queue::ObjectKey;
