//! The two rollout strategies, after Kubernetes' `rolling.go` and
//! `recreate.go`. RollingUpdate grows the new ReplicaSet within
//! `replicas + maxSurge` and shrinks old ones only while
//! `available >= replicas - maxUnavailable` holds (unhealthy old replicas
//! first); Recreate scales every old ReplicaSet to 0, waits until none of
//! their pods runs, then scales the new one up.

use super::{Halt, Sync, util};

impl Sync {
    /// Kubernetes' `rolloutRolling`: scale up if we can, else scale down if
    /// we can, else clean up history once complete; then the rollout status.
    pub(super) fn rollout_rolling(&mut self) -> Result<(), Halt> {
        let complete_before = self.complete(&self.status.clone());
        self.resolve_new(true)?;
        let Some(new) = self.new else {
            self.sync_rollout_status();
            return Ok(());
        };
        if self.reconcile_new(new) || self.reconcile_old(new) {
            self.sync_rollout_status();
            return Ok(());
        }
        if complete_before {
            self.cleanup_history();
        }
        self.sync_rollout_status();
        Ok(())
    }

    /// Kubernetes' `reconcileNewReplicaSet`.
    fn reconcile_new(&mut self, new: usize) -> bool {
        let desired = util::desired_replicas(&self.d);
        let current = self.rss[new].replicas();
        if current == desired {
            return false;
        }
        if current > desired {
            return self.scale_and_record(new, desired);
        }
        let target = self.new_rs_new_replicas(new);
        self.scale_and_record(new, target)
    }

    /// Kubernetes' `reconcileOldReplicaSets`: how far old ReplicaSets may
    /// shrink without dropping below `replicas - maxUnavailable`, counting
    /// the new RS's not-yet-available pods as unavailable.
    fn reconcile_old(&mut self, new: usize) -> bool {
        let old: Vec<usize> = self
            .old()
            .into_iter()
            .filter(|i| self.rss[*i].replicas() > 0)
            .collect();
        if self.total_replicas(old.iter().copied()) == 0 {
            return false;
        }
        let all = self.total_replicas(0..self.rss.len());
        let min_available = util::desired_replicas(&self.d) - util::max_unavailable(&self.d);
        let new_unavailable = self.rss[new].replicas() - self.rss[new].capped_available();
        let max_scaled_down = all - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let cleaned = self.cleanup_unhealthy(&old, max_scaled_down);
        let scaled = self.scale_down_old_for_rolling(&old);
        cleaned + scaled > 0
    }

    /// Kubernetes' `cleanupUnhealthyReplicas`: drop old replicas that are not
    /// available anyway (the RS deletes its not-ready pods first).
    fn cleanup_unhealthy(&mut self, old: &[usize], max_cleanup: i32) -> i32 {
        let mut total = 0;
        for &i in old {
            if total >= max_cleanup {
                break;
            }
            let replicas = self.rss[i].replicas();
            let available = self.rss[i].capped_available();
            if replicas == 0 || replicas == available {
                continue;
            }
            let count = (max_cleanup - total).min(replicas - available);
            self.scale_and_record(i, replicas - count);
            total += count;
        }
        total
    }

    /// Kubernetes' `scaleDownOldReplicaSetsForRollingUpdate`: shrink the
    /// oldest first by as many pods as are available above the floor.
    fn scale_down_old_for_rolling(&mut self, old: &[usize]) -> i32 {
        let min_available = util::desired_replicas(&self.d) - util::max_unavailable(&self.d);
        let available = self
            .rss
            .iter()
            .fold(0i32, |n, r| n.saturating_add(r.capped_available()));
        if available <= min_available {
            return 0;
        }
        let budget = available - min_available;
        let mut total = 0;
        for &i in old {
            if total >= budget {
                break;
            }
            let replicas = self.rss[i].replicas();
            if replicas == 0 {
                continue;
            }
            let count = replicas.min(budget - total);
            self.scale_and_record(i, replicas - count);
            total += count;
        }
        total
    }

    /// Kubernetes' `rolloutRecreate`.
    pub(super) fn rollout_recreate(&mut self) -> Result<(), Halt> {
        let complete_before = self.complete(&self.status.clone());
        // Find, but do not create, the new RS: nothing scales up before old pods are gone.
        self.resolve_new(false)?;
        let mut scaled_down = false;
        for i in self.old() {
            if self.rss[i].replicas() > 0 {
                scaled_down |= self.scale_and_record(i, 0);
            }
        }
        if scaled_down || self.old_pods_running() {
            self.sync_rollout_status();
            return Ok(());
        }
        if self.new.is_none() {
            self.resolve_new(true)?;
        }
        if let Some(new) = self.new {
            let desired = util::desired_replicas(&self.d);
            self.scale_and_record(new, desired);
        }
        if complete_before {
            self.cleanup_history();
        }
        self.sync_rollout_status();
        Ok(())
    }
}
