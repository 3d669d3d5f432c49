//! A node's health, pure: is it heartbeating, and what does it say about
//! itself; which conditions to mark `Unknown` when it went silent; which of
//! the controller's taints it should carry.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use shturman_api::core::{Node, NodeCondition, NodeConditionType, NodeStatus, Taint, TaintEffect};
use shturman_api::meta::{ConditionStatus, Time};

/// The taint a node gets when its agent stops heartbeating.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint a node gets when its agent reports `Ready=False`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

/// What the controller makes of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeVerdict {
    /// Heartbeating and `Ready=True`; it goes stale at `stale_at`.
    Ready { stale_at: DateTime<Utc> },
    /// Heartbeating but not ready (`Ready=False`, or no `Ready` condition
    /// yet); it goes stale at `stale_at`.
    NotReady { stale_at: DateTime<Utc> },
    /// Heartbeating with `Ready=Unknown` as its own report.
    Unknown { stale_at: DateTime<Utc> },
    /// No heartbeat within the grace period.
    Stale,
}

impl NodeVerdict {
    pub fn is_ready(self) -> bool {
        matches!(self, NodeVerdict::Ready { .. })
    }

    /// When to look again if nothing changes.
    pub fn stale_at(self) -> Option<DateTime<Utc>> {
        match self {
            NodeVerdict::Ready { stale_at }
            | NodeVerdict::NotReady { stale_at }
            | NodeVerdict::Unknown { stale_at } => Some(stale_at),
            NodeVerdict::Stale => None,
        }
    }

    /// The controller's taint key this verdict calls for.
    pub fn taint_key(self) -> Option<&'static str> {
        match self {
            NodeVerdict::Ready { .. } => None,
            NodeVerdict::NotReady { .. } => Some(TAINT_NOT_READY),
            NodeVerdict::Unknown { .. } | NodeVerdict::Stale => Some(TAINT_UNREACHABLE),
        }
    }
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.condition(NodeConditionType::Ready))
}

/// Judges a node at `now`: its last heartbeat is the `Ready` condition's
/// `lastHeartbeatTime` (the node's creation when it never reported); after
/// `grace` without one it is stale.
pub fn node_health(node: &Node, now: DateTime<Utc>, grace: Duration) -> NodeVerdict {
    let ready = ready_condition(node);
    let heartbeat = ready
        .and_then(|c| c.last_heartbeat_time)
        .or(node.metadata.creation_timestamp);
    let grace = TimeDelta::from_std(grace).unwrap_or(TimeDelta::MAX);
    let Some(stale_at) = heartbeat.and_then(|t| t.0.checked_add_signed(grace)) else {
        // No heartbeat at all, or a grace so long it never ends.
        return match heartbeat {
            None => NodeVerdict::Stale,
            Some(_) => by_status(ready, DateTime::<Utc>::MAX_UTC),
        };
    };
    if now > stale_at {
        NodeVerdict::Stale
    } else {
        by_status(ready, stale_at)
    }
}

fn by_status(ready: Option<&NodeCondition>, stale_at: DateTime<Utc>) -> NodeVerdict {
    match ready.map(|c| c.status) {
        Some(ConditionStatus::True) => NodeVerdict::Ready { stale_at },
        Some(ConditionStatus::Unknown) => NodeVerdict::Unknown { stale_at },
        Some(ConditionStatus::False) | None => NodeVerdict::NotReady { stale_at },
    }
}

/// The status of a node that went silent: every condition `Unknown` (the
/// heartbeat time kept), or a `Ready=Unknown` condition when it never
/// reported. `None` when it already says so.
pub fn mark_unknown(status: Option<&NodeStatus>, now: DateTime<Utc>) -> Option<NodeStatus> {
    let mut status = status.cloned().unwrap_or_default();
    let mut changed = false;
    if status.condition(NodeConditionType::Ready).is_none() {
        status.conditions.push(NodeCondition {
            type_: NodeConditionType::Ready,
            status: ConditionStatus::Unknown,
            last_heartbeat_time: None,
            last_transition_time: Some(Time(now)),
            reason: Some("NodeStatusNeverUpdated".into()),
            message: Some("Agent never posted node status.".into()),
        });
        changed = true;
    }
    for c in &mut status.conditions {
        if c.status != ConditionStatus::Unknown {
            c.status = ConditionStatus::Unknown;
            c.last_transition_time = Some(Time(now));
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Agent stopped posting node status.".into());
            changed = true;
        }
    }
    changed.then_some(status)
}

fn ours(t: &Taint) -> bool {
    (t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY)
        && matches!(t.effect, TaintEffect::NoExecute | TaintEffect::NoSchedule)
}

/// The taints a node should carry for `verdict`: other taints kept (a
/// `NoExecute` one without `timeAdded` gets `now`, as Kubernetes' API server
/// stamps it, since eviction deadlines count from it), the controller's own
/// taint for the verdict (`NoExecute` and `NoSchedule`) kept or added at
/// `now`, the other one removed. `None` when nothing changes.
pub fn desired_taints(current: &[Taint], verdict: NodeVerdict, now: DateTime<Utc>) -> Option<Vec<Taint>> {
    let wanted = verdict.taint_key();
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !ours(t) || Some(t.key.as_str()) == wanted)
        .cloned()
        .map(|mut t| {
            if t.effect == TaintEffect::NoExecute && t.time_added.is_none() {
                t.time_added = Some(Time(now));
            }
            t
        })
        .collect();
    if let Some(key) = wanted {
        for effect in [TaintEffect::NoExecute, TaintEffect::NoSchedule] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                out.push(Taint {
                    key: key.to_string(),
                    value: None,
                    effect,
                    time_added: Some(Time(now)),
                });
            }
        }
    }
    (out != current).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::meta::ObjectMeta;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn node(ready: Option<(ConditionStatus, i64)>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("pi-1".into()),
                creation_timestamp: Some(Time(at(0))),
                ..ObjectMeta::default()
            },
            status: ready.map(|(status, hb)| NodeStatus {
                conditions: vec![NodeCondition {
                    type_: NodeConditionType::Ready,
                    status,
                    last_heartbeat_time: Some(Time(at(hb))),
                    last_transition_time: None,
                    reason: None,
                    message: None,
                }],
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    const GRACE: Duration = Duration::from_secs(40);

    #[test]
    fn a_heartbeating_node_is_judged_by_what_it_reports() {
        let n = node(Some((ConditionStatus::True, 100)));
        assert_eq!(
            node_health(&n, at(120), GRACE),
            NodeVerdict::Ready { stale_at: at(140) }
        );
        assert_eq!(
            node_health(&n, at(140), GRACE),
            NodeVerdict::Ready { stale_at: at(140) }
        );
        let n = node(Some((ConditionStatus::False, 100)));
        assert_eq!(
            node_health(&n, at(101), GRACE),
            NodeVerdict::NotReady { stale_at: at(140) }
        );
        let n = node(Some((ConditionStatus::Unknown, 100)));
        assert_eq!(
            node_health(&n, at(101), GRACE),
            NodeVerdict::Unknown { stale_at: at(140) }
        );
    }

    #[test]
    fn a_silent_node_goes_stale_after_the_grace() {
        let n = node(Some((ConditionStatus::True, 100)));
        assert_eq!(node_health(&n, at(141), GRACE), NodeVerdict::Stale);
        // Never reported: counted from its creation, not ready meanwhile.
        let n = node(None);
        assert_eq!(
            node_health(&n, at(10), GRACE),
            NodeVerdict::NotReady { stale_at: at(40) }
        );
        assert_eq!(node_health(&n, at(41), GRACE), NodeVerdict::Stale);
        let mut n = node(None);
        n.metadata.creation_timestamp = None;
        assert_eq!(node_health(&n, at(0), GRACE), NodeVerdict::Stale);
        // An absurd grace never overflows.
        let n = node(Some((ConditionStatus::True, 100)));
        assert!(node_health(&n, at(1_000_000), Duration::MAX).is_ready());
    }

    #[test]
    fn silence_marks_every_condition_unknown_once() {
        let n = node(Some((ConditionStatus::True, 100)));
        let s = mark_unknown(n.status.as_ref(), at(150)).unwrap();
        let c = s.condition(NodeConditionType::Ready).unwrap();
        assert_eq!(c.status, ConditionStatus::Unknown);
        assert_eq!(c.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(c.message.as_deref(), Some("Agent stopped posting node status."));
        assert_eq!(c.last_heartbeat_time, Some(Time(at(100))), "heartbeat kept");
        assert_eq!(c.last_transition_time, Some(Time(at(150))));
        assert_eq!(mark_unknown(Some(&s), at(160)), None);
        let s = mark_unknown(None, at(150)).unwrap();
        assert_eq!(
            s.condition(NodeConditionType::Ready).unwrap().reason.as_deref(),
            Some("NodeStatusNeverUpdated")
        );
    }

    fn taint(key: &str, effect: TaintEffect, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect,
            time_added: added.map(|s| Time(at(s))),
        }
    }

    #[test]
    fn taints_follow_the_verdict_and_keep_their_time() {
        let user = taint("example.com/gpu", TaintEffect::NoSchedule, None);
        let t = desired_taints(std::slice::from_ref(&user), NodeVerdict::Stale, at(5)).unwrap();
        assert_eq!(
            t,
            vec![
                user.clone(),
                taint(TAINT_UNREACHABLE, TaintEffect::NoExecute, Some(5)),
                taint(TAINT_UNREACHABLE, TaintEffect::NoSchedule, Some(5)),
            ]
        );
        assert_eq!(desired_taints(&t, NodeVerdict::Stale, at(9)), None, "time kept");
        let nr = desired_taints(&t, NodeVerdict::NotReady { stale_at: at(50) }, at(9)).unwrap();
        assert_eq!(
            nr,
            vec![
                user.clone(),
                taint(TAINT_NOT_READY, TaintEffect::NoExecute, Some(9)),
                taint(TAINT_NOT_READY, TaintEffect::NoSchedule, Some(9)),
            ]
        );
        let ready = desired_taints(&nr, NodeVerdict::Ready { stale_at: at(50) }, at(9)).unwrap();
        assert_eq!(ready, vec![user.clone()]);
        assert_eq!(
            desired_taints(&ready, NodeVerdict::Ready { stale_at: at(50) }, at(9)),
            None
        );
    }

    #[test]
    fn a_no_execute_taint_gets_its_time_stamped() {
        let t = [taint("example.com/maint", TaintEffect::NoExecute, None)];
        let out = desired_taints(&t, NodeVerdict::Ready { stale_at: at(50) }, at(7)).unwrap();
        assert_eq!(
            out,
            vec![taint("example.com/maint", TaintEffect::NoExecute, Some(7))]
        );
    }
}
