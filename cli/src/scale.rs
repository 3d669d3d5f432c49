//! `shturman scale deployment|replicaset NAME… --replicas N`: a JSON merge
//! patch of `spec.replicas`; with `--current-replicas` the object is read
//! first and the patch carries its resourceVersion, so a concurrent change
//! fails the patch instead of being overwritten. Prints `deployment.apps/web scaled`.

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};
use shturman_api::Kind;

use crate::args::ScaleArgs;
use crate::client::Client;
use crate::targets::{item_path, parse_targets};
use crate::value::{at, str_at};
use crate::{AlreadyReported, report};

/// The replica count the API defaults a missing `spec.replicas` to.
const DEFAULT_REPLICAS: i64 = 1;

/// The kinds with a `spec.replicas` to scale.
fn scalable(kind: Kind) -> bool {
    matches!(kind, Kind::Deployment | Kind::ReplicaSet)
}

/// Checks `--replicas` as kubectl does and narrows it to the API's i32.
pub fn replicas_arg(n: i64) -> Result<i32> {
    if n < 0 {
        bail!("The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0");
    }
    i32::try_from(n).map_err(|_| anyhow!("--replicas={n} is too large (at most {})", i32::MAX))
}

/// The merge patch that sets the replicas, guarded by `resource_version` when given.
pub fn scale_patch(replicas: i32, resource_version: Option<&str>) -> Value {
    let mut patch = json!({"spec": {"replicas": replicas}});
    if let Some(rv) = resource_version {
        patch["metadata"] = json!({"resourceVersion": rv});
    }
    patch
}

async fn scale_one(
    client: &Client,
    kind: Kind,
    name: &str,
    replicas: i32,
    current: Option<i64>,
) -> Result<String> {
    let path = item_path(kind, &client.config.namespace, name);
    let patch = match current {
        None => scale_patch(replicas, None),
        Some(want) => {
            let obj = client.get(&path, &[]).await?;
            let have = at(&obj, "spec.replicas").as_i64().unwrap_or(DEFAULT_REPLICAS);
            if have != want {
                bail!("Expected replicas to be {want}, was {have}");
            }
            scale_patch(replicas, Some(str_at(&obj, "metadata.resourceVersion")))
        }
    };
    client.patch(&path, &patch).await?;
    Ok(format!("{}/{name} scaled", kind.qualified_singular()))
}

pub async fn run(args: &ScaleArgs, client: &Client) -> Result<()> {
    let replicas = replicas_arg(args.replicas)?;
    let mut work: Vec<(Kind, String)> = Vec::new();
    for t in parse_targets(&args.targets)? {
        if !scalable(t.kind) {
            bail!(
                "cannot scale {}: only deployments and replicasets have replicas",
                t.kind.plural()
            );
        }
        if t.names.is_empty() {
            bail!(
                "resource(s) were provided, but no name was specified; say which {} to scale",
                t.kind.plural()
            );
        }
        work.extend(t.names.into_iter().map(|n| (t.kind, n)));
    }
    let mut failed = false;
    for (kind, name) in work {
        match scale_one(client, kind, &name, replicas, args.current_replicas).await {
            Ok(line) => println!("{line}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_checked_and_patched() {
        assert_eq!(replicas_arg(3).expect("ok"), 3);
        let neg = replicas_arg(-1).expect_err("negative").to_string();
        assert!(neg.contains("greater than or equal to 0"), "{neg}");
        assert!(replicas_arg(i64::from(i32::MAX) + 1).is_err());
        assert_eq!(scale_patch(2, None), json!({"spec": {"replicas": 2}}));
        assert_eq!(
            scale_patch(0, Some("17")),
            json!({"spec": {"replicas": 0}, "metadata": {"resourceVersion": "17"}})
        );
        assert!(scalable(Kind::ReplicaSet) && !scalable(Kind::Pod));
    }
}
