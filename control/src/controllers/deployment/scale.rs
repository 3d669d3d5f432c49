//! Scaling without rollout progress, after Kubernetes' `sync.go`: a paused
//! deployment or a change of `replicas` scales the ReplicaSets
//! proportionally (by their size and the `max-replicas` annotation they were
//! last scaled under); old ReplicaSets beyond `revisionHistoryLimit` go.

use super::{Halt, Sync, util};

impl Sync {
    /// Kubernetes' `isScalingEvent`: an active RS was scaled for another size.
    pub(super) fn is_scaling_event(&mut self) -> Result<bool, Halt> {
        self.resolve_new(false)?;
        let desired = util::desired_replicas(&self.d);
        Ok(self
            .rss
            .iter()
            .filter(|r| r.replicas() > 0)
            .filter_map(|r| util::desired_annotation(&r.rs))
            .any(|d| d != desired))
    }

    /// Kubernetes' `sync`: scale, prune history when paused, plain status.
    pub(super) fn sync(&mut self) -> Result<(), Halt> {
        self.resolve_new(false)?;
        self.scale();
        if self.d.spec.paused == Some(true) {
            self.cleanup_history();
        }
        self.sync_deployment_status();
        Ok(())
    }

    /// Kubernetes' `scale`.
    fn scale(&mut self) {
        let desired = util::desired_replicas(&self.d);
        let active: Vec<usize> = (0..self.rss.len())
            .filter(|i| self.rss[*i].replicas() > 0)
            .collect();
        // One active RS (or none: the newest) takes the whole size.
        let only = match active.as_slice() {
            [] => self.new.or_else(|| self.old().last().copied()),
            [one] => Some(*one),
            _ => None,
        };
        if let Some(i) = only {
            if self.rss[i].replicas() != desired {
                self.scale_and_record(i, desired);
            }
            return;
        }
        // A saturated new RS: old ones go to 0 (adoption during a finished rollout).
        if let Some(new) = self.new.filter(|n| self.saturated(*n)) {
            for i in active.into_iter().filter(|i| *i != new) {
                self.scale_and_record(i, 0);
            }
            return;
        }
        if self.d.spec.strategy_type() != shturman_api::apps::DeploymentStrategyType::RollingUpdate {
            return;
        }
        let total = self.total_replicas(active.iter().copied());
        let allowed = if desired > 0 {
            desired.saturating_add(util::max_surge(&self.d))
        } else {
            0
        };
        let to_add = allowed.saturating_sub(total);
        // Larger first; on equal size newer first when growing, older first when shrinking.
        let mut order = active;
        order.sort_by(|a, b| {
            let by_size = self.rss[*b].replicas().cmp(&self.rss[*a].replicas());
            by_size.then(if to_add > 0 { b.cmp(a) } else { a.cmp(b) })
        });
        let mut added = 0i32;
        let mut sizes: Vec<(usize, i32)> = Vec::new();
        for &i in &order {
            let proportion = if to_add != 0 {
                self.proportion(i, to_add, added)
            } else {
                0
            };
            added = added.saturating_add(proportion);
            sizes.push((i, self.rss[i].replicas().saturating_add(proportion)));
        }
        if let Some(first) = sizes.first_mut()
            && to_add != 0
        {
            first.1 = first.1.saturating_add(to_add.saturating_sub(added)).max(0);
        }
        for (i, size) in sizes {
            self.scale_rs(i, size);
        }
    }

    /// Kubernetes' `IsSaturated`: the new RS has all replicas, all available,
    /// and was scaled for the current size.
    fn saturated(&self, new: usize) -> bool {
        let desired = util::desired_replicas(&self.d);
        let r = &self.rss[new];
        util::desired_annotation(&r.rs) == Some(desired) && r.replicas() == desired && r.available == desired
    }

    /// Kubernetes' `GetProportion`: this RS's share of `to_add`, never more
    /// than what is left to add (or remove).
    fn proportion(&self, i: usize, to_add: i32, added: i32) -> i32 {
        let replicas = self.rss[i].replicas();
        if replicas == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(i);
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// Kubernetes' `getReplicaSetFraction`: the change that keeps this RS's
    /// share of the deployment's maximum size (rounded half away from zero).
    fn fraction(&self, i: usize) -> i32 {
        let desired = util::desired_replicas(&self.d);
        let replicas = self.rss[i].replicas();
        if desired == 0 {
            return -replicas;
        }
        let max_now = i128::from(desired.saturating_add(util::max_surge(&self.d)));
        let before = match util::max_annotation(&self.rss[i].rs) {
            Some(b) if b > 0 => i128::from(b),
            // No usable annotation: fall back to the deployment's current size.
            _ => i128::from(self.status.replicas.unwrap_or(0)),
        };
        if before <= 0 {
            return 0;
        }
        let scaled = (2 * i128::from(replicas) * max_now + before) / (2 * before);
        i32::try_from(scaled - i128::from(replicas)).unwrap_or(0)
    }

    /// Kubernetes' `cleanupDeployment`: delete the oldest old ReplicaSets
    /// beyond `revisionHistoryLimit`, only those with no replicas and no pods.
    pub(super) fn cleanup_history(&mut self) {
        let Some(limit) = self.d.spec.revision_history_limit.filter(|l| *l != i32::MAX) else {
            return;
        };
        let mut alive: Vec<usize> = self
            .old()
            .into_iter()
            .filter(|i| self.rss[*i].rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = usize::try_from(limit.max(0))
            .ok()
            .map_or(0, |l| alive.len().saturating_sub(l));
        if excess == 0 {
            return;
        }
        alive.sort_by_key(|i| {
            let rs = &self.rss[*i].rs;
            (
                util::revision(&rs.metadata).unwrap_or(0),
                rs.metadata.creation_timestamp,
                *i,
            )
        });
        for &i in alive.iter().take(excess) {
            let r = &self.rss[i];
            let status = r.rs.status.clone().unwrap_or_default();
            let unobserved = r.rs.metadata.generation > status.observed_generation;
            if r.replicas() != 0 || r.actual != 0 || r.running != 0 || status.replicas != 0 || unobserved {
                continue;
            }
            self.actions.push(super::Action::DeleteReplicaSet {
                name: r.name().to_string(),
                uid: r.rs.metadata.uid.clone(),
            });
        }
    }
}
