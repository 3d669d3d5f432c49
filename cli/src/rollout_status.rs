//! `shturman rollout status deployment NAME`: read the deployment, then watch
//! it (`fieldSelector=metadata.name=NAME` from the read resourceVersion) and
//! print kubectl's progress lines until it has rolled out, fails its progress
//! deadline, is deleted, or `--timeout` passes. A 410 Gone re-reads it.

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;
use shturman_api::Kind;
use shturman_api::status::Status;

use crate::args::RolloutStatusArgs;
use crate::client::{ApiError, Client};
use crate::rollout::deployment_names;
use crate::rollout_plan::{Rollout, deployment_status};
use crate::targets::item_path;
use crate::value::str_at;

/// Prints status lines, skipping a repeat of the line just printed.
struct Reporter {
    revision: Option<i64>,
    last: Option<String>,
}

impl Reporter {
    /// Judges one version of the deployment; `true` when the rollout is done.
    fn judge(&mut self, d: &Value) -> Result<bool> {
        let (line, done) = match deployment_status(d, self.revision)? {
            Rollout::Waiting(m) => (m, false),
            Rollout::Done(m) => (m, true),
        };
        if self.last.as_deref() != Some(line.as_str()) {
            println!("{line}");
            self.last = Some(line);
        }
        Ok(done)
    }
}

pub async fn run(args: &RolloutStatusArgs, client: &Client) -> Result<()> {
    let names = deployment_names(&args.targets)?;
    let [name] = names.as_slice() else {
        bail!("rollout status takes a single deployment; run it once for each");
    };
    let follow = follow(client, name, args.watch, args.revision);
    if args.timeout.is_zero() {
        return follow.await;
    }
    match tokio::time::timeout(args.timeout, follow).await {
        Ok(result) => result,
        Err(_) => bail!("timed out waiting for the condition"),
    }
}

async fn follow(client: &Client, name: &str, watch: bool, revision: Option<i64>) -> Result<()> {
    let ns = &client.config.namespace;
    let path = item_path(Kind::Deployment, ns, name);
    let collection = Kind::Deployment.collection_path(Some(ns));
    let mut reporter = Reporter { revision, last: None };
    let d = client.get(&path, &[]).await?;
    let mut rv = str_at(&d, "metadata.resourceVersion").to_string();
    if reporter.judge(&d)? || !watch {
        return Ok(());
    }
    loop {
        let query = vec![
            ("fieldSelector", format!("metadata.name={name}")),
            ("watch", "true".to_string()),
            ("allowWatchBookmarks", "true".to_string()),
            ("resourceVersion", rv.clone()),
        ];
        let mut gone = false;
        let mut events = 0usize;
        match client.watch(&collection, &query).await {
            Err(e) if e.is_gone() => gone = true,
            Err(e) => return Err(e.into()),
            Ok(mut stream) => {
                while let Some(ev) = stream.next().await? {
                    events += 1;
                    let obj_rv = str_at(&ev.object, "metadata.resourceVersion");
                    if !obj_rv.is_empty() {
                        rv = obj_rv.to_string();
                    }
                    match ev.kind.as_str() {
                        "BOOKMARK" => {}
                        "ERROR" => {
                            let status: Status = serde_json::from_value(ev.object).unwrap_or_default();
                            if status.code == 410 || status.reason == "Expired" || status.reason == "Gone" {
                                gone = true;
                                break;
                            }
                            return Err(ApiError::Server(status).into());
                        }
                        _ if str_at(&ev.object, "metadata.name") != name => {}
                        "DELETED" => bail!("object has been deleted"),
                        _ => {
                            if reporter.judge(&ev.object)? {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
        if gone {
            // Our version is too old to watch from: read the object afresh.
            let d = client.get(&path, &[]).await?;
            rv = str_at(&d, "metadata.resourceVersion").to_string();
            if reporter.judge(&d)? {
                return Ok(());
            }
        } else if events == 0 {
            // The server closed an idle stream; don't spin.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
