//! Rollout history for `rollout history` and `rollout undo`: one entry per
//! ReplicaSet revision, with its change-cause and template (hash label
//! removed, ready to copy back into the deployment).

use shturman_api::apps::{PodTemplateSpec, ReplicaSet};

use super::util::{CHANGE_CAUSE, POD_TEMPLATE_HASH, revision};

/// One revision of a deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct RevisionEntry {
    pub revision: i64,
    /// The ReplicaSet holding this revision.
    pub replica_set: String,
    /// The `kubernetes.io/change-cause` annotation, if set.
    pub change_cause: Option<String>,
    /// The pod template without the `pod-template-hash` label.
    pub template: PodTemplateSpec,
}

/// The revisions of a deployment's ReplicaSets, oldest first. ReplicaSets
/// with no (or an unreadable) revision are left out.
pub fn rollout_history(rss: &[ReplicaSet]) -> Vec<RevisionEntry> {
    let mut entries: Vec<RevisionEntry> = rss
        .iter()
        .filter_map(|rs| {
            let revision = revision(&rs.metadata).filter(|r| *r > 0)?;
            let mut template = rs.spec.template.clone();
            template.metadata.labels.remove(POD_TEMPLATE_HASH);
            Some(RevisionEntry {
                revision,
                replica_set: rs.metadata.name().to_string(),
                change_cause: rs.metadata.annotations.get(CHANGE_CAUSE).cloned(),
                template,
            })
        })
        .collect();
    entries.sort_by(|a, b| (a.revision, &a.replica_set).cmp(&(b.revision, &b.replica_set)));
    entries
}

/// What `rollout undo` copies into the deployment: the template of
/// `to_revision`, or of the revision before the latest when `None` (as
/// kubectl does). `None` when there is no such revision.
pub fn template_for_undo(rss: &[ReplicaSet], to_revision: Option<i64>) -> Option<RevisionEntry> {
    let history = rollout_history(rss);
    match to_revision {
        Some(r) => history.into_iter().find(|e| e.revision == r),
        None => {
            let len = history.len();
            if len < 2 {
                return None;
            }
            history.into_iter().nth(len - 2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::deployment::util::REVISION;

    fn rs(name: &str, rev: Option<&str>, cause: Option<&str>, image: &str) -> ReplicaSet {
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some(name.into());
        if let Some(r) = rev {
            rs.metadata.annotations.insert(REVISION.into(), r.into());
        }
        if let Some(c) = cause {
            rs.metadata.annotations.insert(CHANGE_CAUSE.into(), c.into());
        }
        rs.spec
            .template
            .metadata
            .labels
            .insert("app".into(), "web".into());
        rs.spec
            .template
            .metadata
            .labels
            .insert(POD_TEMPLATE_HASH.into(), "abc".into());
        rs.spec
            .template
            .spec
            .containers
            .push(shturman_api::core::Container {
                name: "c".into(),
                image: image.into(),
                ..Default::default()
            });
        rs
    }

    #[test]
    fn history_is_sorted_by_revision_and_strips_the_hash() {
        let rss = [
            rs("web-b", Some("3"), Some("set image v3"), "v3"),
            rs("web-a", Some("1"), None, "v1"),
            rs("web-x", None, None, "vx"),
            rs("web-y", Some("garbage"), None, "vy"),
            rs("web-c", Some("2"), Some("set image v2"), "v2"),
        ];
        let h = rollout_history(&rss);
        let revs: Vec<_> = h.iter().map(|e| (e.revision, e.replica_set.as_str())).collect();
        assert_eq!(revs, [(1, "web-a"), (2, "web-c"), (3, "web-b")]);
        assert_eq!(h[1].change_cause.as_deref(), Some("set image v2"));
        assert!(!h[0].template.metadata.labels.contains_key(POD_TEMPLATE_HASH));
        assert_eq!(
            h[0].template.metadata.labels.get("app").map(String::as_str),
            Some("web")
        );
    }

    #[test]
    fn undo_picks_the_previous_or_the_named_revision() {
        let rss = [
            rs("a", Some("1"), None, "v1"),
            rs("b", Some("2"), None, "v2"),
            rs("c", Some("4"), None, "v4"),
        ];
        assert_eq!(template_for_undo(&rss, None).map(|e| e.revision), Some(2));
        assert_eq!(
            template_for_undo(&rss, Some(1)).map(|e| e.replica_set),
            Some("a".into())
        );
        assert_eq!(template_for_undo(&rss, Some(3)), None);
        assert_eq!(template_for_undo(&rss[..1], None), None);
        assert_eq!(template_for_undo(&[], None), None);
    }
}
