//! `shturman rollout history|undo|pause|resume|restart deployment NAME`
//! (`status` lives in [`crate::rollout_status`]). Each reads the deployment
//! (and for history/undo the ReplicaSets it controls), decides with
//! [`crate::rollout_plan`], and writes with a merge patch or a PUT carrying
//! the resourceVersion it read, so a concurrent change is not overwritten.

use anyhow::{Result, anyhow, bail};
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use shturman_api::Kind;

use crate::args::{RolloutCommand, RolloutHistoryArgs, RolloutUndoArgs};
use crate::client::Client;
use crate::describe::Doc;
use crate::describe_kinds::pod_template;
use crate::output::list_items;
use crate::rollout_plan::{
    RESTARTED_AT, history_table, revision_template, revisions, rolled_back, same_template, undo_target,
};
use crate::targets::{item_path, parse_targets};
use crate::value::{at, str_at};
use crate::{AlreadyReported, report, rollout_status};

pub async fn run(cmd: &RolloutCommand, client: &Client) -> Result<()> {
    match cmd {
        RolloutCommand::Status(a) => rollout_status::run(a, client).await,
        RolloutCommand::History(a) => each(&a.targets, |name| history(client, name, a)).await,
        RolloutCommand::Undo(a) => each(&a.targets, |name| undo(client, name, a)).await,
        RolloutCommand::Pause(a) => each(&a.targets, |name| set_paused(client, name, true)).await,
        RolloutCommand::Resume(a) => each(&a.targets, |name| set_paused(client, name, false)).await,
        RolloutCommand::Restart(a) => each(&a.targets, |name| restart(client, name)).await,
    }
}

/// The deployment names in `deployment NAME…` / `deployment/NAME…`.
pub fn deployment_names(targets: &[String]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for t in parse_targets(targets)? {
        if t.kind != Kind::Deployment {
            bail!(
                "rollout is not supported for {}: only deployments have rollouts",
                t.kind.plural()
            );
        }
        if t.names.is_empty() {
            bail!("required resource not specified: name the deployment, e.g. `deployment/web`");
        }
        names.extend(t.names);
    }
    Ok(names)
}

/// Runs `one` for every named deployment, printing its output; failures are
/// reported one by one and make the command fail at the end.
async fn each<F, Fut>(targets: &[String], one: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<String>>,
{
    let mut failed = false;
    for name in deployment_names(targets)? {
        match one(name).await {
            Ok(text) => print!("{text}"),
            Err(e) => {
                report(&e);
                failed = true;
            }
        }
    }
    if failed {
        Err(AlreadyReported.into())
    } else {
        Ok(())
    }
}

/// `deployment.apps/web`.
fn qualified(name: &str) -> String {
    format!("{}/{name}", Kind::Deployment.qualified_singular())
}

fn path(client: &Client, name: &str) -> String {
    item_path(Kind::Deployment, &client.config.namespace, name)
}

fn is_paused(d: &Value) -> bool {
    at(d, "spec.paused").as_bool().unwrap_or(false)
}

/// The deployment and its revisions (ReplicaSets it controls), oldest first.
async fn with_revisions(client: &Client, name: &str) -> Result<(Value, Vec<(i64, Value)>)> {
    let d = client.get(&path(client, name), &[]).await?;
    let list = client
        .get(
            &Kind::ReplicaSet.collection_path(Some(&client.config.namespace)),
            &[],
        )
        .await?;
    let revs = revisions(&d, &list_items(Kind::ReplicaSet, &list));
    Ok((d, revs))
}

async fn history(client: &Client, name: String, args: &RolloutHistoryArgs) -> Result<String> {
    let (_, revs) = with_revisions(client, &name).await?;
    match args.revision.filter(|r| *r > 0) {
        None => Ok(format!("{}\n{}\n", qualified(&name), history_table(&revs))),
        Some(want) => {
            let (_, rs) = revs
                .iter()
                .find(|(r, _)| *r == want)
                .ok_or_else(|| anyhow!("unable to find the specified revision"))?;
            let mut doc = Doc::default();
            pod_template(&mut doc, &json!({"spec": {"template": revision_template(rs)}}));
            Ok(format!(
                "{} with revision #{want}\n{}\n",
                qualified(&name),
                doc.render()
            ))
        }
    }
}

async fn undo(client: &Client, name: String, args: &RolloutUndoArgs) -> Result<String> {
    let (d, revs) = with_revisions(client, &name).await?;
    if is_paused(&d) {
        bail!(
            "you cannot rollback a paused deployment; resume it first with 'shturman rollout resume deployment/{name}' and try again"
        );
    }
    let (rev, rs) = undo_target(&name, &revs, args.to_revision)?;
    if same_template(at(&d, "spec.template"), at(rs, "spec.template")) {
        return Ok(format!(
            "{} skipped rollback (current template already matches revision {rev})\n",
            qualified(&name)
        ));
    }
    // The body keeps the resourceVersion read above: a PUT over a newer
    // version is refused (409) rather than silently undoing someone's change.
    client
        .put(&path(client, &name), &rolled_back(&d, rs))
        .await
        .map_err(|e| anyhow!("failed restoring revision {rev}: {e}"))?;
    Ok(format!("{} rolled back\n", qualified(&name)))
}

async fn set_paused(client: &Client, name: String, pause: bool) -> Result<String> {
    let p = path(client, &name);
    let d = client.get(&p, &[]).await?;
    let plural = Kind::Deployment.qualified_plural();
    match (pause, is_paused(&d)) {
        (true, true) => bail!("{plural} \"{name}\" is already paused"),
        (false, false) => bail!("{plural} \"{name}\" is not paused"),
        _ => {}
    }
    let patch = json!({
        "metadata": {"resourceVersion": str_at(&d, "metadata.resourceVersion")},
        "spec": {"paused": pause},
    });
    client.patch(&p, &patch).await?;
    let word = if pause { "paused" } else { "resumed" };
    Ok(format!("{} {word}\n", qualified(&name)))
}

/// The patch `rollout restart` sends: a new template annotation, hence a new rollout.
pub fn restart_patch(now: &str) -> Value {
    json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}})
}

async fn restart(client: &Client, name: String) -> Result<String> {
    let p = path(client, &name);
    let d = client.get(&p, &[]).await?;
    if is_paused(&d) {
        bail!("can't restart paused deployment (run rollout resume first)");
    }
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    client.patch(&p, &restart_patch(&now)).await?;
    Ok(format!("{} restarted\n", qualified(&name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_named_deployments() {
        assert_eq!(
            deployment_names(&args(&["deploy", "a", "b"])).expect("ok"),
            ["a", "b"]
        );
        assert_eq!(deployment_names(&args(&["deployment/web"])).expect("ok"), ["web"]);
        assert!(deployment_names(&args(&["deployment"])).is_err());
        let err = deployment_names(&args(&["rs", "x"])).expect_err("rs").to_string();
        assert!(err.contains("replicasets"), "{err}");
    }

    #[test]
    fn restart_sets_the_template_annotation() {
        let p = restart_patch("2025-01-01T00:00:00Z");
        assert_eq!(
            p["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
            "2025-01-01T00:00:00Z"
        );
    }
}
