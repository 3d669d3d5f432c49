//! The controllers' pure decision cores: each is a `plan` function over a
//! snapshot (the object, what it owns, `now`) that returns typed actions, with
//! no I/O and no clock. An executor reads the informer caches, calls `plan`,
//! and performs the actions in order, stopping at the first failure (events
//! follow the action they describe, so they are only recorded once it worked).
//!
//! - [`replicaset`]: keeps N pods of a template (create, delete by Kubernetes'
//!   ranking, adopt, release, status);
//! - [`deployment`]: rolls a pod template out through ReplicaSets (rolling
//!   update, recreate, proportional scaling, history, progress conditions);
//! - [`endpoints`]: lists each Service's ready and not-ready pods, with the
//!   ports they serve, in the Service's Endpoints.

pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod nodelifecycle;
pub mod replicaset;

use shturman_api::core::EventType;

/// An event to record about the object being reconciled, as Kubernetes words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub type_: EventType,
    /// Short CamelCase reason, e.g. `ScalingReplicaSet`.
    pub reason: String,
    pub message: String,
}

impl EventRecord {
    pub fn normal(reason: &str, message: impl Into<String>) -> Self {
        EventRecord {
            type_: EventType::Normal,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub fn warning(reason: &str, message: impl Into<String>) -> Self {
        EventRecord {
            type_: EventType::Warning,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}
