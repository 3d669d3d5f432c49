//! `shturman delete KIND NAME… | -f FILE`: DELETE with `DeleteOptions`
//! carrying the propagation policy; prints `deployment.apps "web" deleted`.

use anyhow::{Result, bail};
use serde_json::{Value, json};
use shturman_api::Kind;

use crate::AlreadyReported;
use crate::apply;
use crate::args::{Cascade, DeleteArgs};
use crate::client::{ApiError, Client};
use crate::manifests::name_and_namespace;
use crate::targets::{item_path, parse_targets};

/// The request body for a delete.
pub fn delete_options(cascade: Cascade) -> Value {
    json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": cascade.policy()})
}

/// `deployment.apps "web" deleted`.
pub fn deleted_line(kind: Kind, name: &str) -> String {
    format!("{} \"{name}\" deleted", kind.qualified_singular())
}

pub async fn run(args: &DeleteArgs, client: &Client) -> Result<()> {
    let mut work: Vec<(Kind, String, String)> = Vec::new();
    match (args.files.is_empty(), args.targets.is_empty()) {
        (false, false) => bail!("give either KIND NAME… or -f FILE, not both"),
        (true, true) => bail!("you must specify the type of resource and a name, or -f FILE"),
        (false, true) => {
            for m in apply::load(&args.files, client).await? {
                let (name, ns) = name_and_namespace(&m.object);
                work.push((m.kind, ns, name));
            }
        }
        (true, false) => {
            for t in parse_targets(&args.targets)? {
                if t.names.is_empty() {
                    bail!(
                        "resource(s) were provided, but no name was specified; say which {} to delete",
                        t.kind.plural()
                    );
                }
                for name in t.names {
                    work.push((t.kind, client.config.namespace.clone(), name));
                }
            }
        }
    }
    let body = delete_options(args.cascade);
    let mut failed = false;
    for (kind, ns, name) in work {
        match client.delete(&item_path(kind, &ns, &name), &body).await {
            Ok(_) => println!("{}", deleted_line(kind, &name)),
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e @ ApiError::Server(_)) => {
                eprintln!("{e}");
                failed = true;
            }
            Err(e) => return Err(e.into()),
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
    fn bodies_and_lines() {
        assert_eq!(
            delete_options(Cascade::Foreground),
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"})
        );
        assert_eq!(
            deleted_line(Kind::Deployment, "web"),
            "deployment.apps \"web\" deleted"
        );
        assert_eq!(deleted_line(Kind::ConfigMap, "c"), "configmap \"c\" deleted");
    }
}
