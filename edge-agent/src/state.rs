//! What the agent shows about itself: `<data-dir>/state.json` (rewritten on
//! every change: link up or down, pods admitted, their phases), for people,
//! packaging health checks and tests; and the bounded offline log, the events
//! of a disconnected spell sent in the next heartbeat.

use std::collections::VecDeque;

use serde::Serialize;
use shturman_api::meta::Time;

/// File name inside the data dir.
pub const FILE: &str = "state.json";
/// Most entries the offline log keeps (the oldest go first).
pub const OFFLINE_LOG_MAX: usize = 100;

/// The state file's content.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    pub node: String,
    pub epoch: u64,
    pub joined: bool,
    pub connected: bool,
    /// Pods read from the journal at start.
    pub journal_pods: usize,
    pub pods: Vec<PodState>,
    pub updated_at: Option<Time>,
}

/// One admitted pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Events while the link is down, bounded.
#[derive(Debug, Default)]
pub struct OfflineLog {
    entries: VecDeque<String>,
    dropped: usize,
}

impl OfflineLog {
    /// Records `what` at `at`.
    pub fn push(&mut self, at: Time, what: impl AsRef<str>) {
        if self.entries.len() == OFFLINE_LOG_MAX {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(format!("{at} {}", what.as_ref()));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Everything recorded (and a line saying how much was dropped), emptied.
    pub fn take(&mut self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.entries.len() + 1);
        if self.dropped > 0 {
            out.push(format!("({} earlier entries dropped)", self.dropped));
        }
        out.extend(self.entries.drain(..));
        self.dropped = 0;
        out
    }

    /// Puts back entries [`take`](Self::take) returned when sending them failed.
    pub fn restore(&mut self, entries: Vec<String>) {
        for e in entries.into_iter().rev() {
            if self.entries.len() == OFFLINE_LOG_MAX {
                self.dropped += 1;
            } else {
                self.entries.push_front(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_log_is_bounded_and_drains() {
        let at = Time(chrono::Utc::now());
        let mut log = OfflineLog::default();
        assert!(log.take().is_empty());
        for i in 0..OFFLINE_LOG_MAX + 5 {
            log.push(at, format!("event {i}"));
        }
        let out = log.take();
        assert_eq!(out.len(), OFFLINE_LOG_MAX + 1);
        assert_eq!(out[0], "(5 earlier entries dropped)");
        assert!(out[1].ends_with("event 5"));
        assert!(log.is_empty());
        log.push(at, "x");
        let taken = log.take();
        log.restore(taken);
        assert_eq!(log.take().len(), 1);
    }

    #[test]
    fn state_is_camel_case_json() {
        let s = AgentState {
            node: "pi-1".into(),
            journal_pods: 2,
            ..AgentState::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["journalPods"], 2);
    }
}
