//! The decisions behind `shturman rollout`, as pure functions over JSON
//! objects: a deployment's rollout status message (kubectl's
//! `DeploymentStatusViewer`), its revision history from the ReplicaSets it
//! owns, and which revision `undo` goes back to and with what template.

use serde_json::{Map, Value};

use crate::value::{at, int_at, list_at, str_at};

/// On a Deployment and its ReplicaSets: the rollout revision number.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// On a ReplicaSet (copied from the Deployment): why this revision was made.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The label a ReplicaSet's template carries to tell its pods apart.
pub const TEMPLATE_HASH: &str = "pod-template-hash";
/// The template annotation `rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Deployment annotations `undo` keeps rather than taking the ReplicaSet's (as kubectl).
const KEEP_ON_UNDO: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Still going; the message says what it waits for.
    Waiting(String),
    /// Finished: `deployment "web" successfully rolled out`.
    Done(String),
}

/// Why a rollout cannot finish (or is not the one asked about).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("deployment \"{0}\" exceeded its progress deadline")]
    DeadlineExceeded(String),
    #[error("desired revision ({wanted}) is different from the running revision ({running})")]
    OtherRevision { wanted: i64, running: i64 },
}

/// An annotation's value, or `""` (keys hold dots, so no dotted path).
pub fn annotation<'a>(obj: &'a Value, key: &str) -> &'a str {
    at(obj, "metadata.annotations")
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The revision number in an object's annotations: 0 when absent, `None` when unreadable.
pub fn revision_of(obj: &Value) -> Option<i64> {
    match at(obj, "metadata.annotations").get(REVISION) {
        None => Some(0),
        Some(v) => v.as_str().and_then(|s| s.trim().parse().ok()),
    }
}

/// kubectl's `DeploymentStatusViewer.Status`: judge only once the controller
/// has observed the current generation; then the Progressing condition's
/// deadline, new replicas, old replicas, availability, in that order.
pub fn deployment_status(d: &Value, revision: Option<i64>) -> Result<Rollout, RolloutError> {
    let name = str_at(d, "metadata.name");
    if let Some(wanted) = revision.filter(|r| *r > 0) {
        let running = revision_of(d).unwrap_or(0);
        if running != wanted {
            return Err(RolloutError::OtherRevision { wanted, running });
        }
    }
    if int_at(d, "metadata.generation") > int_at(d, "status.observedGeneration") {
        return Ok(Rollout::Waiting(
            "Waiting for deployment spec update to be observed...".to_string(),
        ));
    }
    let progressing = list_at(d, "status.conditions")
        .iter()
        .find(|c| str_at(c, "type") == "Progressing");
    if progressing.is_some_and(|c| str_at(c, "reason") == "ProgressDeadlineExceeded") {
        return Err(RolloutError::DeadlineExceeded(name.to_string()));
    }
    // The API defaults spec.replicas to 1.
    let desired = at(d, "spec.replicas").as_i64().unwrap_or(1);
    let replicas = int_at(d, "status.replicas");
    let updated = int_at(d, "status.updatedReplicas");
    let available = int_at(d, "status.availableReplicas");
    let waiting = |what: String| {
        Ok(Rollout::Waiting(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {what}..."
        )))
    };
    if updated < desired {
        return waiting(format!(
            "{updated} out of {desired} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return waiting(format!(
            "{} old replicas are pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return waiting(format!("{available} of {updated} updated replicas are available"));
    }
    Ok(Rollout::Done(format!(
        "deployment \"{name}\" successfully rolled out"
    )))
}

/// Whether `obj`'s controlling owner is the object with `uid`.
pub fn controlled_by(obj: &Value, uid: &str) -> bool {
    !uid.is_empty()
        && list_at(obj, "metadata.ownerReferences")
            .iter()
            .any(|o| at(o, "controller").as_bool() == Some(true) && str_at(o, "uid") == uid)
}

/// The deployment's ReplicaSets by revision, oldest first. ReplicaSets it does
/// not control, or with an unreadable revision, are left out; when two claim
/// the same revision the later one in `replicasets` wins (as kubectl's map).
pub fn revisions(deployment: &Value, replicasets: &[Value]) -> Vec<(i64, Value)> {
    let uid = str_at(deployment, "metadata.uid");
    let mut out: Vec<(i64, Value)> = Vec::new();
    for rs in replicasets.iter().filter(|rs| controlled_by(rs, uid)) {
        let Some(rev) = revision_of(rs) else { continue };
        out.retain(|(r, _)| *r != rev);
        out.push((rev, rs.clone()));
    }
    out.sort_by_key(|(r, _)| *r);
    out
}

/// The `REVISION  CHANGE-CAUSE` table (kubectl's tabwriter: two spaces of padding).
pub fn history_table(revs: &[(i64, Value)]) -> String {
    if revs.is_empty() {
        return "No rollout history found.\n".to_string();
    }
    let rows: Vec<(String, &str)> = revs
        .iter()
        .map(|(r, rs)| {
            let cause = annotation(rs, CHANGE_CAUSE);
            (r.to_string(), if cause.is_empty() { "<none>" } else { cause })
        })
        .collect();
    let width = rows
        .iter()
        .map(|(r, _)| r.chars().count())
        .chain(std::iter::once("REVISION".len()))
        .max()
        .unwrap_or(0);
    let mut out = format!("{:<width$}  CHANGE-CAUSE\n", "REVISION");
    for (r, cause) in rows {
        out.push_str(&format!("{r:<width$}  {cause}\n"));
    }
    out
}

/// The pod template of a revision as `history --revision` shows it: the
/// ReplicaSet's template with its change-cause added to the annotations.
pub fn revision_template(rs: &Value) -> Value {
    let mut template = at(rs, "spec.template").clone();
    let cause = annotation(rs, CHANGE_CAUSE);
    if !cause.is_empty()
        && let Some(t) = template.as_object_mut()
    {
        let meta = t.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            let ann = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(ann) = ann.as_object_mut() {
                ann.insert(CHANGE_CAUSE.into(), Value::String(cause.to_string()));
            }
        }
    }
    template
}

/// Why `undo` has nothing to go back to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UndoError {
    #[error("no rollout history found for deployment \"{0}\"")]
    NoHistory(String),
    #[error("unable to find specified revision {0} in history")]
    NoSuchRevision(i64),
}

/// kubectl's choice of the ReplicaSet to roll back to: revision `to` when
/// given (and positive), else the second-newest revision.
pub fn undo_target<'a>(
    name: &str,
    revs: &'a [(i64, Value)],
    to: Option<i64>,
) -> Result<&'a (i64, Value), UndoError> {
    match to.filter(|r| *r > 0) {
        Some(want) => revs
            .iter()
            .find(|(r, _)| *r == want)
            .ok_or(UndoError::NoSuchRevision(want)),
        None => match revs {
            [.., previous, _latest] => Ok(previous),
            _ => Err(UndoError::NoHistory(name.to_string())),
        },
    }
}

/// A template with the `pod-template-hash` label removed (and an emptied
/// label map dropped), as it belongs in a Deployment.
pub fn template_without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
        let now_empty = match meta.get_mut("labels").and_then(Value::as_object_mut) {
            Some(labels) => {
                labels.remove(TEMPLATE_HASH);
                labels.is_empty()
            }
            None => false,
        };
        if now_empty {
            meta.remove("labels");
        }
    }
    t
}

/// kubectl's `equalIgnoreHash`: the templates match but for the hash label.
pub fn same_template(a: &Value, b: &Value) -> bool {
    template_without_hash(a) == template_without_hash(b)
}

/// The Deployment after rolling back to `rs`: its template (without the hash
/// label) and annotations, keeping the deployment's own bookkeeping ones.
pub fn rolled_back(deployment: &Value, rs: &Value) -> Value {
    let mut d = deployment.clone();
    let mut annotations = Map::new();
    for (k, v) in at(deployment, "metadata.annotations")
        .as_object()
        .into_iter()
        .flatten()
    {
        if KEEP_ON_UNDO.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in at(rs, "metadata.annotations").as_object().into_iter().flatten() {
        if !KEEP_ON_UNDO.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    let template = template_without_hash(at(rs, "spec.template"));
    if let Some(obj) = d.as_object_mut() {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("template".into(), template);
        }
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            if annotations.is_empty() {
                meta.remove("annotations");
            } else {
                meta.insert("annotations".into(), Value::Object(annotations));
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(generation: i64, observed: i64, replicas: i64, status: Value) -> Value {
        let mut d = json!({
            "metadata": {"name": "web", "generation": generation, "uid": "d-1"},
            "spec": {"replicas": replicas},
            "status": status,
        });
        d["status"]["observedGeneration"] = json!(observed);
        d
    }

    fn waiting(s: &str) -> Result<Rollout, RolloutError> {
        Ok(Rollout::Waiting(s.to_string()))
    }

    #[test]
    fn status_messages_follow_kubectl() {
        let d = deploy(
            2,
            1,
            3,
            json!({"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            deployment_status(&d, None),
            waiting("Waiting for deployment spec update to be observed...")
        );
        let d = deploy(2, 2, 3, json!({"replicas": 3, "updatedReplicas": 1}));
        assert_eq!(
            deployment_status(&d, None),
            waiting(
                "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
            )
        );
        let d = deploy(2, 2, 3, json!({"replicas": 4, "updatedReplicas": 3}));
        assert_eq!(
            deployment_status(&d, None),
            waiting(
                "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
            )
        );
        let d = deploy(
            2,
            2,
            3,
            json!({"replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
        );
        assert_eq!(
            deployment_status(&d, None),
            waiting(
                "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available..."
            )
        );
        let d = deploy(
            2,
            3,
            3,
            json!({"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            deployment_status(&d, None),
            Ok(Rollout::Done("deployment \"web\" successfully rolled out".into()))
        );
    }

    #[test]
    fn deadline_and_revision_errors() {
        let d = deploy(
            1,
            1,
            3,
            json!({"replicas": 3, "updatedReplicas": 1, "conditions": [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            ]}),
        );
        let err = deployment_status(&d, None).expect_err("deadline");
        assert_eq!(
            err.to_string(),
            "deployment \"web\" exceeded its progress deadline"
        );
        // Not judged before the controller has caught up.
        let mut newer = d.clone();
        newer["metadata"]["generation"] = json!(2);
        assert!(deployment_status(&newer, None).is_ok());

        let mut d = deploy(
            1,
            1,
            1,
            json!({"replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
        );
        d["metadata"]["annotations"] = json!({REVISION: "2"});
        assert!(matches!(deployment_status(&d, Some(2)), Ok(Rollout::Done(_))));
        assert_eq!(
            deployment_status(&d, Some(3)).expect_err("other").to_string(),
            "desired revision (3) is different from the running revision (2)"
        );
        // Missing fields: no panic, spec.replicas defaults to 1.
        assert!(matches!(
            deployment_status(&json!({}), None),
            Ok(Rollout::Waiting(_))
        ));
        assert!(matches!(
            deployment_status(&json!("x"), None),
            Ok(Rollout::Waiting(_))
        ));
    }

    fn rs(name: &str, owner: &str, rev: Option<&str>, cause: Option<&str>, image: &str) -> Value {
        let mut ann = Map::new();
        if let Some(r) = rev {
            ann.insert(REVISION.into(), json!(r));
        }
        if let Some(c) = cause {
            ann.insert(CHANGE_CAUSE.into(), json!(c));
        }
        json!({
            "metadata": {
                "name": name,
                "annotations": ann,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner, "controller": true}],
            },
            "spec": {"template": {
                "metadata": {"labels": {"app": "web", TEMPLATE_HASH: name}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            }},
        })
    }

    #[test]
    fn history_lists_owned_replicasets_by_revision() {
        let d = deploy(1, 1, 1, json!({}));
        let list = vec![
            rs(
                "web-b",
                "d-1",
                Some("2"),
                Some("kubectl set image web=nginx:1.26"),
                "nginx:1.26",
            ),
            rs("web-a", "d-1", Some("1"), None, "nginx:1.25"),
            rs("other", "d-2", Some("5"), None, "x"),
            rs("bad", "d-1", Some("two"), None, "x"),
        ];
        let revs = revisions(&d, &list);
        let names: Vec<&str> = revs.iter().map(|(_, r)| str_at(r, "metadata.name")).collect();
        assert_eq!(names, ["web-a", "web-b"]);
        assert_eq!(
            history_table(&revs),
            "REVISION  CHANGE-CAUSE\n1         <none>\n2         kubectl set image web=nginx:1.26\n"
        );
        assert_eq!(history_table(&[]), "No rollout history found.\n");
        let t = revision_template(&revs[1].1);
        assert_eq!(
            t["metadata"]["annotations"][CHANGE_CAUSE],
            "kubectl set image web=nginx:1.26"
        );
        assert!(revisions(&json!({"metadata": {}}), &list).is_empty());
    }

    #[test]
    fn undo_picks_previous_or_named_revision() {
        let d = deploy(1, 1, 1, json!({}));
        let list = vec![
            rs("web-a", "d-1", Some("1"), None, "nginx:1.25"),
            rs("web-b", "d-1", Some("2"), None, "nginx:1.26"),
            rs("web-c", "d-1", Some("3"), None, "nginx:1.27"),
        ];
        let revs = revisions(&d, &list);
        assert_eq!(undo_target("web", &revs, None).expect("previous").0, 2);
        assert_eq!(undo_target("web", &revs, Some(0)).expect("previous").0, 2);
        assert_eq!(undo_target("web", &revs, Some(1)).expect("named").0, 1);
        assert_eq!(
            undo_target("web", &revs, Some(7))
                .expect_err("missing")
                .to_string(),
            "unable to find specified revision 7 in history"
        );
        assert_eq!(
            undo_target("web", &revs[..1], None).expect_err("one").to_string(),
            "no rollout history found for deployment \"web\""
        );
        assert!(undo_target("web", &[], None).is_err());
    }

    #[test]
    fn rollback_copies_template_without_hash() {
        let mut d = deploy(3, 3, 1, json!({}));
        d["metadata"]["annotations"] = json!({REVISION: "3", "team": "edge"});
        d["spec"]["template"] = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
        });
        let old = rs("web-a", "d-1", Some("1"), Some("first"), "nginx:1.25");
        assert!(!same_template(&d["spec"]["template"], &old["spec"]["template"]));
        let back = rolled_back(&d, &old);
        assert_eq!(
            back["spec"]["template"],
            json!({
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]},
            })
        );
        assert_eq!(
            back["metadata"]["annotations"],
            json!({REVISION: "3", CHANGE_CAUSE: "first"})
        );
        assert!(same_template(&back["spec"]["template"], &old["spec"]["template"]));
        let bare = json!({"metadata": {"labels": {TEMPLATE_HASH: "x"}}});
        assert_eq!(template_without_hash(&bare), json!({"metadata": {}}));
    }
}
