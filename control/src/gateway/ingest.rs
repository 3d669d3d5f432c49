//! What agents send, turned into store writes: joins (register the node and
//! its secret, answer), heartbeats (Node status and labels), the online
//! flag (a dropped link marks the node Unknown at once) and pod reports
//! (Pod status), and the proxy counters (kept for `/metrics`, see
//! [`super::proxy_stats`]). Everything but a join must be [`Signed`] with the node's
//! secret; anything malformed, unsigned, wrongly signed or stale is logged
//! and dropped.
//!
//! Heartbeats are not all written. Like the kubelet, which writes its
//! NodeStatus only when it changed or every few minutes (liveness goes
//! through a cheap Lease), a heartbeat is written to the Node only when
//! what it says differs from the stored status (anything but the
//! heartbeat times: a condition, capacity, addresses, labels…) or when the
//! stored `lastHeartbeatTime` is older than [`refresh_after`]: every second
//! beat, so the stored time is at most about two of the node's periods old
//! (the node lifecycle controller, which judges by that time with a grace
//! of four periods by convention, never sees a live node go stale), and
//! at least every `status_refresh`. The decision is made against the stored Node, read
//! each beat, so a status someone else changed (the lifecycle controller's
//! `Unknown`, a restart, an edited label) is written back at the next beat.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use chrono::Utc;
use serde::de::DeserializeOwned;
use shturman_api::core::{Node, NodeCondition, NodeConditionType, NodeStatus, Pod};
use shturman_api::meta::{ConditionStatus, ObjectMeta, Time};
use shturman_api::wire::{Heartbeat, JoinRequest, JoinResult, ONLINE_FALSE, PodReport, Signed, Stamp, Topic};

use super::Shared;
use super::auth::{self, NODE_SECRET_PREFIX, valid_node_name, valid_node_secret};
use super::sign;
use crate::runtime::ObjectKey;

/// At most this many offline-log lines of one heartbeat become Events.
const OFFLINE_EVENTS: usize = 20;
use crate::server::error::ApiError;
use crate::tokens::{self, SYSTEM_NAMESPACE, constant_time_eq};

/// How often a status write is retried after a conflict.
const CONFLICT_RETRIES: usize = 3;

fn parse<T: DeserializeOwned>(bytes: &[u8], what: &str, node: &str) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(node, "dropping a malformed {what}: {e}");
            None
        }
    }
}

impl Shared {
    /// Handles one message from an agent.
    pub(super) async fn ingest(&self, topic: Topic, payload: &[u8]) {
        let result = match &topic {
            Topic::Join { node } => {
                self.join(node, payload).await;
                Ok(())
            }
            Topic::NodeStatus { node } => match self.open(node, payload, "heartbeat") {
                Some(body) => self.heartbeat(node, &body).await,
                None => Ok(()),
            },
            Topic::NodeOnline { node } => match self.open(node, payload, "online flag") {
                Some(body) if body.trim() == ONLINE_FALSE => self.link_dropped(node).await,
                _ => Ok(()),
            },
            Topic::PodStatus {
                node,
                namespace,
                name,
            } => match self.open(node, payload, "pod report") {
                Some(body) => self.pod_report(node, namespace, name, &body).await,
                None => Ok(()),
            },
            Topic::ProxyStats { node } => {
                if let Some(body) = self.open(node, payload, "proxy counters") {
                    self.proxy_stats(node, &body);
                }
                Ok(())
            }
            Topic::DesiredPod { .. }
            | Topic::PodSet { .. }
            | Topic::Joined { .. }
            | Topic::LogRequest { .. }
            | Topic::LogCancel { .. }
            | Topic::LogReply { .. } => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(topic = %topic.name(), error = %e, "could not apply an agent's message");
        }
    }

    /// The body of a signed message from `node`, if its MAC checks out
    /// against the node's registered secret.
    pub(super) fn open(&self, node: &str, payload: &[u8], what: &str) -> Option<String> {
        if payload.is_empty() {
            return None;
        }
        let signed: Signed = parse(payload, what, node)?;
        let key = ObjectKey::new(SYSTEM_NAMESPACE, format!("{NODE_SECRET_PREFIX}{node}"));
        let Some(secret) = self.secrets.get(&key).and_then(|s| auth::secret_of(&s)) else {
            tracing::warn!(
                node,
                "dropping a {what} from a node that has not joined (no node secret)"
            );
            return None;
        };
        if !sign::verify(&signed, &secret) {
            tracing::warn!(
                node,
                "dropping a {what} with a wrong signature (not from that node)"
            );
            return None;
        }
        Some(signed.body)
    }

    async fn join(&self, node: &str, payload: &[u8]) {
        let Some(req) = parse::<JoinRequest>(payload, "join request", node) else {
            return;
        };
        let result = match self.register(node, &req).await {
            Ok(()) => {
                tracing::info!(node, agent = %req.agent_version, "node joined");
                JoinResult {
                    accepted: true,
                    message: format!("node {node} joined"),
                }
            }
            Err(message) => {
                tracing::warn!(node, "join refused: {message}");
                JoinResult {
                    accepted: false,
                    message,
                }
            }
        };
        let topic = Topic::Joined { node: node.into() }.name();
        match serde_json::to_vec(&result) {
            Ok(bytes) => {
                if let Err(e) = self
                    .mqtt
                    .publish(topic, rumqttc::QoS::AtLeastOnce, false, bytes)
                    .await
                {
                    tracing::warn!(node, error = %e, "could not answer a join request");
                }
            }
            Err(e) => tracing::error!(node, error = %e, "could not encode a join answer"),
        }
    }

    /// Checks a join request and records the node; `Err` is the refusal's
    /// message for the agent's user.
    async fn register(&self, node: &str, req: &JoinRequest) -> Result<(), String> {
        if req.node != node {
            return Err(format!(
                "the join request names node {:?} but was sent on node {node:?}'s topic",
                req.node
            ));
        }
        if !valid_node_name(node) {
            return Err(format!(
                "{node:?} is not a valid node name: use at most 241 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
            ));
        }
        if !valid_node_secret(&req.node_secret) {
            return Err("the node secret must be 64 or more lowercase hex digits (32 random bytes)".into());
        }
        let unavailable =
            |e: ApiError| format!("the control plane could not read its store ({e}); try again");
        if req.token.is_empty() {
            let known = auth::registered_secret(&self.client, node)
                .await
                .map_err(unavailable)?;
            if !known.is_some_and(|k| constant_time_eq(k.as_bytes(), req.node_secret.as_bytes())) {
                return Err(format!(
                    "node {node} is not registered with this secret; join with a token: create one with `shturman token create`"
                ));
            }
        } else {
            tokens::check(&self.client, &req.token, Utc::now())
                .await
                .map_err(unavailable)?
                .map_err(|e| e.to_string())?;
        }
        self.store_secret(node, &req.node_secret)
            .await
            .map_err(|e| format!("the control plane could not record the node ({e}); try again"))?;
        self.ensure_node(node)
            .await
            .map_err(|e| format!("the control plane could not create Node {node} ({e}); try again"))
    }

    async fn store_secret(&self, node: &str, secret: &str) -> Result<(), ApiError> {
        let mut obj = auth::node_secret_object(node, secret);
        let name = format!("{NODE_SECRET_PREFIX}{node}");
        let written = match self
            .client
            .get::<shturman_api::core::Secret>(Some(SYSTEM_NAMESPACE), &name)
            .await?
        {
            Some(old) if auth::secret_of(&old).as_deref() == Some(secret) => old,
            Some(old) => {
                tracing::info!(node, "node joined again with a new secret; replacing the old one");
                obj.metadata.resource_version = old.metadata.resource_version;
                obj.metadata.uid = old.metadata.uid;
                self.client.replace(&obj).await?
            }
            None => self.client.create(&obj).await?,
        };
        // Later messages from the node are checked against the informer's
        // cache: let it catch up with this write first.
        if let Some(rev) = written.metadata.resource_version.and_then(|r| r.parse().ok()) {
            self.secrets.wait_seen(rev, Duration::from_secs(5)).await;
        }
        Ok(())
    }

    async fn ensure_node(&self, node: &str) -> Result<(), ApiError> {
        if self.client.get::<Node>(None, node).await?.is_some() {
            return Ok(());
        }
        let obj = Node {
            api_version: "v1".into(),
            kind: "Node".into(),
            metadata: ObjectMeta {
                name: Some(node.into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        match self.client.create(&obj).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn heartbeat(&self, node: &str, body: &str) -> Result<(), ApiError> {
        let Some(hb) = parse::<Heartbeat>(body.as_bytes(), "heartbeat", node) else {
            return Ok(());
        };
        if hb.node != node {
            tracing::warn!(node, claimed = %hb.node, "dropping a heartbeat that names another node");
            return Ok(());
        }
        let last = self.node_stamps().get(node).copied();
        if last.is_some_and(|l| l.stamp >= hb.stamp) {
            tracing::debug!(node, stamp = ?hb.stamp, "dropping a stale or repeated heartbeat");
            return Ok(());
        }
        let now = Time(Utc::now());
        let beat = hb.sent_at.unwrap_or(now);
        // The node's own period, from its previous beat of the same run.
        let period = last
            .filter(|l| l.stamp.epoch == hb.stamp.epoch)
            .and_then(|l| (beat.0 - l.sent.0).to_std().ok());
        let refresh = refresh_after(period, self.status_refresh);
        for _ in 0..CONFLICT_RETRIES {
            let Some(mut current) = self.client.get::<Node>(None, node).await? else {
                tracing::warn!(
                    node,
                    "heartbeat from a node without a Node object; the agent must join again"
                );
                return Ok(());
            };
            let Some(status) = merge_heartbeat(current.status.as_ref(), &hb, now) else {
                tracing::debug!(node, "dropping a heartbeat older than the node's last one");
                return Ok(());
            };
            let missing = hb
                .labels
                .iter()
                .any(|(k, v)| current.metadata.labels.get(k) != Some(v));
            if !missing
                && hb.offline_log.is_empty()
                && !status_write_due(current.status.as_ref(), &status, refresh)
            {
                // Nothing new, and the stored beat is fresh enough: keep it
                // in memory only (the next beats decide again).
                self.node_stamps()
                    .insert(node.to_string(), LastBeat::new(hb.stamp, beat));
                return Ok(());
            }
            if missing {
                let patch = serde_json::json!({
                    "metadata": {"labels": hb.labels, "resourceVersion": current.metadata.resource_version}
                });
                match self.client.merge_patch::<Node>(None, node, &patch, false).await {
                    Ok(n) => current = n,
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e),
                }
            }
            current.status = Some(status);
            match self.client.replace_status(&current).await {
                Ok(written) => {
                    self.node_stamps()
                        .insert(node.to_string(), LastBeat::new(hb.stamp, beat));
                    // What the node did while its link was down, as Events on
                    // the Node (`describe node`, `get events`), bounded.
                    for line in hb.offline_log.iter().take(OFFLINE_EVENTS) {
                        self.recorder.normal(&written, "WhileOffline", line).await;
                    }
                    return Ok(());
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::internal(format!(
            "node {node} kept changing; heartbeat dropped"
        )))
    }

    /// The last will: the node's link is gone. Ready becomes Unknown now, so
    /// the node lifecycle controller taints it without waiting for the grace.
    async fn link_dropped(&self, node: &str) -> Result<(), ApiError> {
        for _ in 0..CONFLICT_RETRIES {
            let Some(mut current) = self.client.get::<Node>(None, node).await? else {
                return Ok(());
            };
            let Some(status) = mark_link_dropped(current.status.as_ref(), Time(Utc::now())) else {
                return Ok(());
            };
            tracing::info!(node, "the node's MQTT link dropped; marking it Unknown");
            current.status = Some(status);
            match self.client.replace_status(&current).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn pod_report(&self, node: &str, namespace: &str, name: &str, body: &str) -> Result<(), ApiError> {
        let Some(report) = parse::<PodReport>(body.as_bytes(), "pod report", node) else {
            return Ok(());
        };
        if report.node != node || report.namespace != namespace || report.name != name {
            tracing::warn!(node, pod = %format!("{namespace}/{name}"), "dropping a pod report whose names do not match its topic");
            return Ok(());
        }
        let key = ObjectKey::new(namespace, name);
        if self
            .pod_stamps()
            .get(&key)
            .is_some_and(|(uid, s)| *uid == report.uid && *s >= report.stamp)
        {
            tracing::debug!(pod = %key, stamp = ?report.stamp, "dropping a stale pod report");
            return Ok(());
        }
        for _ in 0..CONFLICT_RETRIES {
            let Some(mut pod) = self.client.get::<Pod>(Some(namespace), name).await? else {
                return Ok(());
            };
            if pod.metadata.uid.as_deref() != Some(report.uid.as_str()) {
                tracing::debug!(pod = %key, "dropping a report about an older pod of the same name");
                return Ok(());
            }
            if pod.spec.node_name.as_deref() != Some(node) {
                tracing::warn!(pod = %key, node, "dropping a report from a node the pod is not bound to");
                return Ok(());
            }
            pod.status = Some(report.status.clone());
            match self.client.replace_status(&pod).await {
                Ok(_) => {
                    self.pod_stamps().insert(key, (report.uid.clone(), report.stamp));
                    return Ok(());
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::internal(format!(
            "pod {key} kept changing; report dropped"
        )))
    }
}

/// A node's last applied heartbeat (written or not): its stamp and when
/// the node sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastBeat {
    pub stamp: Stamp,
    pub sent: Time,
}

impl LastBeat {
    fn new(stamp: Stamp, sent: Time) -> LastBeat {
        LastBeat { stamp, sent }
    }
}

/// How old the stored `lastHeartbeatTime` may be when a heartbeat that
/// changes nothing else arrives and is still not written: one and a half
/// of the node's periods, so every second beat is written and the stored
/// time is never more than about two periods old (the lifecycle grace is
/// four by convention: `shturman up` heartbeats at a quarter of it, the
/// agent's default is 10 s against 40 s); at most `cap`; every beat is
/// written while the period is unknown.
pub fn refresh_after(period: Option<Duration>, cap: Duration) -> Duration {
    period.map_or(Duration::ZERO, |p| (p * 3 / 2).min(cap))
}

/// Whether `new` must be written over `stored`: it says something else
/// (heartbeat times aside), or the stored beat is `refresh` old or older
/// by `new`'s beat.
pub fn status_write_due(stored: Option<&NodeStatus>, new: &NodeStatus, refresh: Duration) -> bool {
    let Some(stored) = stored else { return true };
    if fingerprint(stored) != fingerprint(new) {
        return true;
    }
    let beat = |s: &NodeStatus| ready(Some(s)).and_then(|c| c.last_heartbeat_time);
    match (beat(stored), beat(new)) {
        (Some(old), Some(now)) => (now.0 - old.0).to_std().is_ok_and(|age| age >= refresh),
        _ => true,
    }
}

/// A hash of what a status says, heartbeat times left out.
fn fingerprint(status: &NodeStatus) -> u64 {
    let mut s = status.clone();
    for c in &mut s.conditions {
        c.last_heartbeat_time = None;
    }
    let mut h = DefaultHasher::new();
    // Serialised: NodeStatus is not Hash (quantities, maps of them).
    serde_json::to_vec(&s).unwrap_or_default().hash(&mut h);
    h.finish()
}

fn ready(status: Option<&NodeStatus>) -> Option<&NodeCondition> {
    status.and_then(|s| s.condition(NodeConditionType::Ready))
}

/// The node status a heartbeat makes: the agent's, with the Ready
/// condition's `lastHeartbeatTime` from the agent (its `sentAt`, else `now`)
/// and transition times kept while a condition's status does not change.
/// `None` when the heartbeat is older than the one already applied.
pub fn merge_heartbeat(old: Option<&NodeStatus>, hb: &Heartbeat, now: Time) -> Option<NodeStatus> {
    let mut status = hb.status.clone();
    let beat = hb.sent_at.unwrap_or(now);
    if !status
        .conditions
        .iter()
        .any(|c| c.type_ == NodeConditionType::Ready)
    {
        status.conditions.push(NodeCondition {
            type_: NodeConditionType::Ready,
            status: ConditionStatus::True,
            last_heartbeat_time: None,
            last_transition_time: None,
            reason: Some("AgentReady".into()),
            message: Some("the agent is heartbeating".into()),
        });
    }
    for c in &mut status.conditions {
        let before = old.and_then(|s| s.condition(c.type_));
        if c.last_heartbeat_time.is_none() {
            c.last_heartbeat_time = Some(beat);
        }
        if c.last_transition_time.is_none() {
            c.last_transition_time = match before {
                Some(b) if b.status == c.status => b.last_transition_time.or(Some(now)),
                _ => Some(now),
            };
        }
    }
    let old_beat = ready(old).and_then(|c| c.last_heartbeat_time);
    let new_beat = ready(Some(&status)).and_then(|c| c.last_heartbeat_time);
    if old_beat.is_some_and(|o| new_beat.is_some_and(|n| n < o)) {
        return None;
    }
    Some(status)
}

/// The node status after its link dropped: Ready `Unknown`; `None` when it
/// already is.
pub fn mark_link_dropped(old: Option<&NodeStatus>, now: Time) -> Option<NodeStatus> {
    let mut status = old.cloned().unwrap_or_default();
    if ready(Some(&status)).is_some_and(|c| c.status == ConditionStatus::Unknown) {
        return None;
    }
    let unknown = NodeCondition {
        type_: NodeConditionType::Ready,
        status: ConditionStatus::Unknown,
        last_heartbeat_time: ready(Some(&status)).and_then(|c| c.last_heartbeat_time),
        last_transition_time: Some(now),
        reason: Some("NodeStatusUnknown".into()),
        message: Some("the node's MQTT link dropped".into()),
    };
    status.conditions.retain(|c| c.type_ != NodeConditionType::Ready);
    status.conditions.insert(0, unknown);
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use shturman_api::wire::Stamp;

    fn t(s: &str) -> Time {
        Time(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }

    fn hb(sent: &str) -> Heartbeat {
        Heartbeat {
            node: "pi-1".into(),
            stamp: Stamp { epoch: 1, seq: 1 },
            sent_at: Some(t(sent)),
            ..Heartbeat::default()
        }
    }

    #[test]
    fn heartbeat_sets_ready_with_the_agents_time_and_keeps_transitions() {
        let now = t("2026-05-01T12:00:05Z");
        let first = merge_heartbeat(None, &hb("2026-05-01T12:00:00Z"), now).unwrap();
        let r = first.condition(NodeConditionType::Ready).unwrap();
        assert!(r.status.is_true());
        assert_eq!(r.last_heartbeat_time, Some(t("2026-05-01T12:00:00Z")));
        assert_eq!(r.last_transition_time, Some(now));
        let later = t("2026-05-01T12:00:15Z");
        let second = merge_heartbeat(Some(&first), &hb("2026-05-01T12:00:10Z"), later).unwrap();
        let r = second.condition(NodeConditionType::Ready).unwrap();
        assert_eq!(
            r.last_transition_time,
            Some(now),
            "no transition while Ready stays True"
        );
        assert_eq!(
            merge_heartbeat(Some(&second), &hb("2026-05-01T11:59:00Z"), later),
            None
        );
    }

    #[test]
    fn a_quiet_heartbeat_is_written_only_when_the_stored_one_grows_old() {
        let period = Some(Duration::from_secs(10));
        let refresh = refresh_after(period, Duration::from_secs(300));
        assert_eq!(refresh, Duration::from_secs(15));
        assert_eq!(refresh_after(None, Duration::from_secs(300)), Duration::ZERO);
        assert_eq!(
            refresh_after(Some(Duration::from_secs(600)), Duration::from_secs(300)),
            Duration::from_secs(300)
        );
        let now = t("2026-05-01T12:00:05Z");
        let stored = merge_heartbeat(None, &hb("2026-05-01T12:00:00Z"), now).unwrap();
        assert!(status_write_due(None, &stored, refresh), "no stored status");
        let next = |sent| merge_heartbeat(Some(&stored), &hb(sent), now).unwrap();
        assert!(!status_write_due(
            Some(&stored),
            &next("2026-05-01T12:00:10Z"),
            refresh
        ));
        assert!(status_write_due(
            Some(&stored),
            &next("2026-05-01T12:00:20Z"),
            refresh
        ));
        assert!(status_write_due(
            Some(&stored),
            &next("2026-05-01T12:00:10Z"),
            Duration::ZERO
        ));
        // Anything else that changed is written at once.
        let mut changed = next("2026-05-01T12:00:10Z");
        changed.addresses.push(shturman_api::core::NodeAddress {
            type_: shturman_api::core::NodeAddressType::InternalIP,
            address: "10.0.0.9".into(),
        });
        assert!(status_write_due(Some(&stored), &changed, refresh));
        // A status someone else marked Unknown is written back.
        let unknown = mark_link_dropped(Some(&stored), now).unwrap();
        let back = merge_heartbeat(Some(&unknown), &hb("2026-05-01T12:00:10Z"), now).unwrap();
        assert!(status_write_due(Some(&unknown), &back, refresh));
    }

    #[test]
    fn link_drop_marks_unknown_once() {
        let now = t("2026-05-01T12:00:05Z");
        let s = merge_heartbeat(None, &hb("2026-05-01T12:00:00Z"), now).unwrap();
        let dropped = mark_link_dropped(Some(&s), now).unwrap();
        let r = dropped.condition(NodeConditionType::Ready).unwrap();
        assert_eq!(r.status, ConditionStatus::Unknown);
        assert_eq!(r.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(r.last_heartbeat_time, Some(t("2026-05-01T12:00:00Z")));
        assert_eq!(mark_link_dropped(Some(&dropped), now), None);
    }
}
