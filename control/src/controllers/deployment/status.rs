//! Deployment status and conditions, after Kubernetes' `progress.go` and
//! `sync.go`: counts from the ReplicaSets' pods, `Available`
//! (MinimumReplicasAvailable/Unavailable), `Progressing` (created, found,
//! updated, available, paused, resumed, deadline exceeded), `ReplicaFailure`
//! copied from the ReplicaSets, and when to look again.

use std::time::Duration;

use chrono::DateTime;
use shturman_api::apps::{
    DeploymentCondition, DeploymentConditionType, DeploymentStatus, ReplicaSetConditionType,
};
use shturman_api::meta::{ConditionStatus, Time};

use super::{Action, Sync, util};

pub(crate) const PROGRESSING: DeploymentConditionType = DeploymentConditionType::Progressing;
const AVAILABLE: DeploymentConditionType = DeploymentConditionType::Available;

pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// Kubernetes' `SetDeploymentCondition`: no change when status and reason
/// match; the transition time is kept when only the reason changes.
fn set(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(cur) = status.condition(cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time;
        }
    }
    status.conditions.retain(|c| c.type_ != cond.type_);
    status.conditions.push(cond);
}

fn remove(status: &mut DeploymentStatus, t: DeploymentConditionType) {
    status.conditions.retain(|c| c.type_ != t);
}

fn condition(
    t: DeploymentConditionType,
    s: ConditionStatus,
    reason: &str,
    message: String,
    now: Time,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: t,
        status: s,
        last_update_time: Some(now),
        last_transition_time: Some(now),
        reason: Some(reason.to_string()),
        message: Some(message),
    }
}

fn reason_is(status: &DeploymentStatus, t: DeploymentConditionType, reason: &str) -> bool {
    status
        .condition(t)
        .is_some_and(|c| c.reason.as_deref() == Some(reason))
}

impl Sync {
    fn now_time(&self) -> Time {
        Time(self.now)
    }

    /// Sets a condition on the working status (`true` → True, else False).
    pub(super) fn set_condition(&mut self, t: DeploymentConditionType, ok: bool, reason: &str, msg: String) {
        let c = condition(t, ConditionStatus::from_bool(ok), reason, msg, self.now_time());
        set(&mut self.status, c);
    }

    /// Kubernetes' `checkPausedConditions`: Progressing Unknown with
    /// DeploymentPaused / DeploymentResumed, unless it already timed out.
    pub(super) fn check_paused_conditions(&mut self) {
        if !util::has_progress_deadline(&self.d) || reason_is(&self.status, PROGRESSING, TIMED_OUT) {
            return;
        }
        let paused = self.d.spec.paused == Some(true);
        let paused_cond = reason_is(&self.status, PROGRESSING, PAUSED);
        let (reason, msg) = match (paused, paused_cond) {
            (true, false) => (PAUSED, "Deployment is paused"),
            (false, true) => (RESUMED, "Deployment is resumed"),
            _ => return,
        };
        let c = condition(
            PROGRESSING,
            ConditionStatus::Unknown,
            reason,
            msg.into(),
            self.now_time(),
        );
        set(&mut self.status, c);
    }

    /// Kubernetes' `calculateStatus`.
    fn calculate_status(&self) -> DeploymentStatus {
        let sum = |f: &dyn Fn(&super::Rs) -> i32| self.rss.iter().fold(0i32, |n, r| n.saturating_add(f(r)));
        let available = sum(&|r| r.available);
        let total = sum(&|r| r.replicas());
        let desired = util::desired_replicas(&self.d);
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation.or(self.status.observed_generation),
            replicas: Some(sum(&|r| r.actual)),
            updated_replicas: Some(self.new.map_or(0, |i| self.rss[i].actual)),
            ready_replicas: Some(sum(&|r| r.ready)),
            available_replicas: Some(available),
            unavailable_replicas: Some(total.saturating_sub(available).max(0)),
            conditions: self.status.conditions.clone(),
            collision_count: self.status.collision_count,
        };
        let c = if available >= desired - util::max_unavailable(&self.d) {
            condition(
                AVAILABLE,
                ConditionStatus::True,
                MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                self.now_time(),
            )
        } else {
            condition(
                AVAILABLE,
                ConditionStatus::False,
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                self.now_time(),
            )
        };
        set(&mut status, c);
        status
    }

    /// Kubernetes' `syncDeploymentStatus`: counts only, no progress estimate.
    pub(super) fn sync_deployment_status(&mut self) {
        self.status = self.calculate_status();
        self.requeue_for_availability();
    }

    /// Kubernetes' `syncRolloutStatus`: counts plus the Progressing estimate.
    pub(super) fn sync_rollout_status(&mut self) {
        let mut new = self.calculate_status();
        let deadline = util::has_progress_deadline(&self.d);
        if !deadline {
            remove(&mut new, PROGRESSING);
        }
        let current = self.status.condition(PROGRESSING).cloned();
        let complete_before = new.replicas == new.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
        let rs_name = self.new.map(|i| self.rss[i].name().to_string());
        let subject = match &rs_name {
            Some(n) => format!("ReplicaSet {n:?}"),
            None => format!("Deployment {:?}", self.d.metadata.name()),
        };
        if deadline && !complete_before {
            if self.complete(&new) {
                let msg = format!("{subject} has successfully progressed.");
                set(
                    &mut new,
                    condition(
                        PROGRESSING,
                        ConditionStatus::True,
                        NEW_RS_AVAILABLE,
                        msg,
                        self.now_time(),
                    ),
                );
            } else if self.progressing(&new) {
                let msg = format!("{subject} is progressing.");
                let mut c = condition(
                    PROGRESSING,
                    ConditionStatus::True,
                    RS_UPDATED,
                    msg,
                    self.now_time(),
                );
                if let Some(cur) = &current {
                    if cur.status == ConditionStatus::True {
                        c.last_transition_time = cur.last_transition_time;
                    }
                    remove(&mut new, PROGRESSING);
                }
                set(&mut new, c);
            } else if self.timed_out(&new) {
                let msg = format!("{subject} has timed out progressing.");
                set(
                    &mut new,
                    condition(
                        PROGRESSING,
                        ConditionStatus::False,
                        TIMED_OUT,
                        msg,
                        self.now_time(),
                    ),
                );
            }
        }
        self.copy_replica_failure(&mut new);
        if let Some(after) = self.stuck_requeue(&new) {
            self.actions.push(Action::RequeueAfter(after));
        }
        self.status = new;
        self.requeue_for_availability();
    }

    /// Kubernetes' `DeploymentComplete`.
    pub(super) fn complete(&self, s: &DeploymentStatus) -> bool {
        let desired = Some(util::desired_replicas(&self.d));
        s.updated_replicas == desired
            && s.replicas == desired
            && s.available_replicas == desired
            && s.observed_generation >= self.d.metadata.generation
    }

    /// Kubernetes' `DeploymentProgressing`: more updated, fewer old, more
    /// ready or more available pods than the last status said.
    fn progressing(&self, new: &DeploymentStatus) -> bool {
        let old = &self.status;
        let n = |v: Option<i32>| v.unwrap_or(0);
        let old_old = n(old.replicas) - n(old.updated_replicas);
        let new_old = n(new.replicas) - n(new.updated_replicas);
        n(new.updated_replicas) > n(old.updated_replicas)
            || new_old < old_old
            || n(new.ready_replicas) > n(old.ready_replicas)
            || n(new.available_replicas) > n(old.available_replicas)
    }

    /// Kubernetes' `DeploymentTimedOut`: no progress for progressDeadlineSeconds.
    fn timed_out(&self, new: &DeploymentStatus) -> bool {
        let Some(c) = new.condition(PROGRESSING) else {
            return false;
        };
        match c.reason.as_deref() {
            Some(NEW_RS_AVAILABLE) => false,
            Some(TIMED_OUT) => true,
            _ => c.last_update_time.is_some_and(|from| {
                let secs = i64::from(self.d.spec.progress_deadline_seconds.unwrap_or(0));
                from.0 + chrono::Duration::seconds(secs) < self.now
            }),
        }
    }

    /// Kubernetes' `requeueStuckDeployment`: when the deadline will pass.
    fn stuck_requeue(&self, new: &DeploymentStatus) -> Option<Duration> {
        let cur = self.status.condition(PROGRESSING)?;
        let settled = matches!(cur.reason.as_deref(), Some(TIMED_OUT | NEW_RS_AVAILABLE));
        if !util::has_progress_deadline(&self.d) || self.complete(new) || settled {
            return None;
        }
        let from = cur.last_update_time?;
        let secs = i64::from(self.d.spec.progress_deadline_seconds.unwrap_or(0));
        let at = from.0 + chrono::Duration::seconds(secs);
        // Never sooner than a second: a passed deadline is handled this pass.
        Some(until(at, self.now).max(Duration::from_secs(1)))
    }

    /// Looks again when a waiting pod becomes available (minReadySeconds).
    fn requeue_for_availability(&mut self) {
        if let Some(at) = self.rss.iter().filter_map(|r| r.next_available).min() {
            self.actions
                .push(Action::RequeueAfter(until(at, self.now) + Duration::from_secs(1)));
        }
    }

    /// Kubernetes' `getReplicaFailures`: the new RS's ReplicaFailure, else an old one's.
    fn copy_replica_failure(&self, new: &mut DeploymentStatus) {
        let order = self.new.into_iter().chain(self.old());
        let failure = order
            .filter_map(|i| self.rss[i].rs.status.as_ref())
            .flat_map(|s| s.conditions.iter())
            .find(|c| c.type_ == ReplicaSetConditionType::ReplicaFailure);
        match failure {
            Some(f) => set(
                new,
                DeploymentCondition {
                    type_: DeploymentConditionType::ReplicaFailure,
                    status: f.status,
                    last_update_time: f.last_transition_time,
                    last_transition_time: f.last_transition_time,
                    reason: f.reason.clone(),
                    message: f.message.clone(),
                },
            ),
            None => remove(new, DeploymentConditionType::ReplicaFailure),
        }
    }
}

fn until(at: DateTime<chrono::Utc>, now: DateTime<chrono::Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}
