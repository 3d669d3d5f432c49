//! `shturman cordon|uncordon|drain NODE`. Cordoning patches
//! `spec.unschedulable`; draining cordons, lists the node's pods across
//! namespaces, lets [`crate::drain_plan`] decide which may go, deletes those
//! (printing kubectl's eviction lines) and polls until they are gone.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};
use shturman_api::Kind;
use tokio::time::Instant;

use crate::args::{DrainArgs, NodeArgs};
use crate::client::Client;
use crate::drain_plan::{DrainOptions, PodRef, plan};
use crate::output::list_items;
use crate::targets::item_path;
use crate::value::{at, str_at};

/// How often drain checks whether evicted pods are gone.
const POLL: Duration = Duration::from_millis(500);

/// The merge patch that (un)cordons: `false` removes the field, as Kubernetes stores it.
pub fn cordon_patch(on: bool) -> Value {
    json!({"spec": {"unschedulable": if on { Value::Bool(true) } else { Value::Null }}})
}

/// Sets `spec.unschedulable`; returns kubectl's line (`node/n1 cordoned`).
async fn set_unschedulable(client: &Client, node: &str, on: bool) -> Result<String> {
    let path = item_path(Kind::Node, "", node);
    let n = client.get(&path, &[]).await?;
    let current = at(&n, "spec.unschedulable").as_bool().unwrap_or(false);
    let word = if on { "cordoned" } else { "uncordoned" };
    let q = Kind::Node.qualified_singular();
    if current == on {
        return Ok(format!("{q}/{node} already {word}"));
    }
    client.patch(&path, &cordon_patch(on)).await?;
    Ok(format!("{q}/{node} {word}"))
}

pub async fn cordon(args: &NodeArgs, client: &Client, on: bool) -> Result<()> {
    println!("{}", set_unschedulable(client, &args.node, on).await?);
    Ok(())
}

/// The DeleteOptions an eviction sends.
pub fn eviction_options(grace_period: i64) -> Value {
    let mut body = json!({"kind": "DeleteOptions", "apiVersion": "v1"});
    if grace_period >= 0 {
        body["gracePeriodSeconds"] = json!(grace_period);
    }
    body
}

pub async fn drain(args: &DrainArgs, client: &Client) -> Result<()> {
    let node = &args.node;
    println!("{}", set_unschedulable(client, node, true).await?);
    let list = client
        .get(
            &Kind::Pod.collection_path(None),
            &[("fieldSelector", format!("spec.nodeName={node}"))],
        )
        .await?;
    let pods = list_items(Kind::Pod, &list);
    let opts = DrainOptions {
        ignore_daemonsets: args.ignore_daemonsets,
        delete_emptydir_data: args.delete_emptydir_data,
        force: args.force,
    };
    let decided = plan(&pods, opts);
    if !decided.errors.is_empty() {
        bail!("unable to drain node \"{node}\": {}", decided.errors.join("; "));
    }
    for w in &decided.warnings {
        eprintln!("Warning: {w}");
    }
    let deadline = (!args.timeout.is_zero()).then(|| Instant::now() + args.timeout);
    let body = eviction_options(args.grace_period);
    let mut pending: Vec<PodRef> = Vec::new();
    for pod in decided.evict {
        println!("evicting pod {}", pod.key());
        match client
            .delete(&item_path(Kind::Pod, &pod.namespace, &pod.name), &body)
            .await
        {
            Ok(_) => pending.push(pod),
            Err(e) if e.is_not_found() => println!("pod/{} evicted", pod.name),
            Err(e) => {
                return Err(anyhow!(
                    "error when evicting pods/\"{}\" -n \"{}\": {e}",
                    pod.name,
                    pod.namespace
                ));
            }
        }
    }
    while !pending.is_empty() {
        let mut left = Vec::new();
        for pod in pending {
            let current = client
                .get_opt(&item_path(Kind::Pod, &pod.namespace, &pod.name))
                .await?;
            // Gone, or replaced by a new pod of the same name.
            let gone = current.is_none_or(|p| !pod.uid.is_empty() && str_at(&p, "metadata.uid") != pod.uid);
            if gone {
                println!("pod/{} evicted", pod.name);
            } else {
                left.push(pod);
            }
        }
        pending = left;
        if pending.is_empty() {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let keys: Vec<String> = pending.iter().map(PodRef::key).collect();
            bail!(
                "unable to drain node \"{node}\": timed out after {:?} waiting for pods to terminate: {}",
                args.timeout,
                keys.join(", ")
            );
        }
        tokio::time::sleep(POLL).await;
    }
    println!("{}/{node} drained", Kind::Node.qualified_singular());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_and_options() {
        assert_eq!(cordon_patch(true), json!({"spec": {"unschedulable": true}}));
        assert_eq!(cordon_patch(false), json!({"spec": {"unschedulable": null}}));
        assert_eq!(
            eviction_options(-1),
            json!({"kind": "DeleteOptions", "apiVersion": "v1"})
        );
        assert_eq!(eviction_options(0)["gracePeriodSeconds"], 0);
    }
}
