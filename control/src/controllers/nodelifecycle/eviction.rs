//! Taint-based eviction, pure: when a pod bound to a node must leave it,
//! given the node's `NoExecute` taints and the pod's tolerations, plus the
//! default tolerations Kubernetes' `DefaultTolerationSeconds` admission
//! plugin would have given it (applied here, in the decision, rather than
//! written into pods).

use chrono::{DateTime, TimeDelta, Utc};
use shturman_api::core::{Pod, Taint, TaintEffect, Toleration, TolerationOperator};

use super::health::{TAINT_NOT_READY, TAINT_UNREACHABLE};

/// When a pod must be evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Every `NoExecute` taint is tolerated for good (or there is none).
    Never,
    /// A `NoExecute` taint is not tolerated.
    Now,
    /// The earliest end of a timed toleration.
    At(DateTime<Utc>),
}

/// The tolerations the pod is treated as having: its own, plus
/// `{key, operator: Exists, effect: NoExecute, tolerationSeconds}` for the
/// not-ready and unreachable taints it does not tolerate by its own
/// (a toleration of that key, or with an empty key, for `NoExecute` or any
/// effect counts, as in Kubernetes).
pub fn effective_tolerations(own: &[Toleration], default_secs: i64) -> Vec<Toleration> {
    let mut out = own.to_vec();
    for key in [TAINT_NOT_READY, TAINT_UNREACHABLE] {
        let covered = own.iter().any(|t| {
            let key_matches = t.key.as_deref().is_none_or(|k| k.is_empty() || k == key);
            key_matches && matches!(t.effect, None | Some(TaintEffect::NoExecute))
        });
        if !covered {
            out.push(Toleration {
                key: Some(key.to_string()),
                operator: Some(TolerationOperator::Exists),
                value: None,
                effect: Some(TaintEffect::NoExecute),
                toleration_seconds: Some(default_secs),
            });
        }
    }
    out
}

/// When `pod` must leave a node with `taints`, `default_secs` being the
/// cluster's default `tolerationSeconds` for not-ready/unreachable.
///
/// Each `NoExecute` taint is looked at alone: untolerated, the pod goes now;
/// tolerated with `tolerationSeconds` (the smallest of the tolerations that
/// match, as Kubernetes takes), it goes that long after the taint's
/// `timeAdded` (a negative value counts as zero); tolerated only without
/// `tolerationSeconds`, never. A timed taint without `timeAdded` waits until
/// the controller has stamped one. The earliest answer wins.
pub fn eviction_deadline(pod: &Pod, taints: &[Taint], default_secs: i64) -> Eviction {
    let tolerations = effective_tolerations(&pod.spec.tolerations, default_secs);
    let mut earliest: Option<DateTime<Utc>> = None;
    for taint in taints.iter().filter(|t| t.effect == TaintEffect::NoExecute) {
        let mut matching = tolerations.iter().filter(|t| t.tolerates(taint)).peekable();
        if matching.peek().is_none() {
            return Eviction::Now;
        }
        let Some(secs) = matching.filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let Some(added) = taint.time_added else {
            continue;
        };
        let deadline = TimeDelta::try_seconds(secs.max(0)).and_then(|d| added.0.checked_add_signed(d));
        if let Some(d) = deadline {
            earliest = Some(earliest.map_or(d, |e| e.min(d)));
        }
    }
    earliest.map_or(Eviction::Never, Eviction::At)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::meta::Time;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn taint(key: &str, effect: TaintEffect, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect,
            time_added: added.map(|s| Time(at(s))),
        }
    }

    fn tol(key: Option<&str>, effect: Option<TaintEffect>, secs: Option<i64>) -> Toleration {
        Toleration {
            key: key.map(str::to_string),
            operator: Some(TolerationOperator::Exists),
            value: None,
            effect,
            toleration_seconds: secs,
        }
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        let mut p = Pod::default();
        p.spec.tolerations = tolerations;
        p
    }

    const NX: Option<TaintEffect> = Some(TaintEffect::NoExecute);

    #[test]
    fn no_taints_or_no_execute_ones_never_evict() {
        assert_eq!(eviction_deadline(&pod(vec![]), &[], 300), Eviction::Never);
        let t = [taint("example.com/x", TaintEffect::NoSchedule, Some(0))];
        assert_eq!(eviction_deadline(&pod(vec![]), &t, 300), Eviction::Never);
    }

    #[test]
    fn an_untolerated_no_execute_taint_evicts_now() {
        let t = [taint("example.com/x", TaintEffect::NoExecute, Some(0))];
        assert_eq!(eviction_deadline(&pod(vec![]), &t, 300), Eviction::Now);
        let other = tol(Some("example.com/y"), NX, None);
        assert_eq!(eviction_deadline(&pod(vec![other]), &t, 300), Eviction::Now);
    }

    #[test]
    fn default_tolerations_give_unreachable_pods_their_grace() {
        let t = [
            taint(TAINT_UNREACHABLE, TaintEffect::NoExecute, Some(10)),
            taint(TAINT_UNREACHABLE, TaintEffect::NoSchedule, Some(10)),
        ];
        assert_eq!(eviction_deadline(&pod(vec![]), &t, 300), Eviction::At(at(310)));
        assert_eq!(eviction_deadline(&pod(vec![]), &t, 1), Eviction::At(at(11)));
        assert_eq!(eviction_deadline(&pod(vec![]), &t, -5), Eviction::At(at(10)));
        let t = [taint(TAINT_NOT_READY, TaintEffect::NoExecute, Some(10))];
        assert_eq!(eviction_deadline(&pod(vec![]), &t, 60), Eviction::At(at(70)));
    }

    #[test]
    fn a_pods_own_toleration_replaces_the_default() {
        let t = [taint(TAINT_UNREACHABLE, TaintEffect::NoExecute, Some(10))];
        let forever = tol(Some(TAINT_UNREACHABLE), NX, None);
        assert_eq!(eviction_deadline(&pod(vec![forever]), &t, 300), Eviction::Never);
        let short = tol(Some(TAINT_UNREACHABLE), None, Some(2));
        assert_eq!(
            eviction_deadline(&pod(vec![short]), &t, 300),
            Eviction::At(at(12))
        );
        let everything = tol(None, None, None);
        assert_eq!(
            effective_tolerations(std::slice::from_ref(&everything), 300),
            vec![everything.clone()]
        );
        assert_eq!(
            eviction_deadline(&pod(vec![everything]), &t, 300),
            Eviction::Never
        );
        // A NoSchedule-only toleration does not count: the default is added.
        let no_schedule = tol(Some(TAINT_UNREACHABLE), Some(TaintEffect::NoSchedule), None);
        assert_eq!(
            eviction_deadline(&pod(vec![no_schedule]), &t, 30),
            Eviction::At(at(40))
        );
    }

    #[test]
    fn the_smallest_matching_seconds_and_the_earliest_taint_win() {
        let t = [
            taint("example.com/a", TaintEffect::NoExecute, Some(100)),
            taint("example.com/b", TaintEffect::NoExecute, Some(0)),
        ];
        let p = pod(vec![
            tol(Some("example.com/a"), NX, Some(5)),
            tol(Some("example.com/a"), NX, None),
            tol(Some("example.com/b"), NX, Some(50)),
        ]);
        assert_eq!(eviction_deadline(&p, &t, 300), Eviction::At(at(50)));
        let p = pod(vec![
            tol(Some("example.com/a"), NX, Some(5)),
            tol(Some("example.com/b"), NX, None),
        ]);
        assert_eq!(eviction_deadline(&p, &t, 300), Eviction::At(at(105)));
    }

    #[test]
    fn a_timed_taint_without_time_waits_and_huge_seconds_never_overflow() {
        let t = [taint(TAINT_UNREACHABLE, TaintEffect::NoExecute, None)];
        assert_eq!(eviction_deadline(&pod(vec![]), &t, 300), Eviction::Never);
        let t = [taint(TAINT_UNREACHABLE, TaintEffect::NoExecute, Some(0))];
        assert_eq!(eviction_deadline(&pod(vec![]), &t, i64::MAX), Eviction::Never);
    }
}
