//! `shturman apply -f …`: parse everything first, then create, update or
//! leave each object, printing `deployment.apps/web created|configured|unchanged`.

use anyhow::Result;
use shturman_api::manifest::Manifest;

use crate::AlreadyReported;
use crate::apply_plan::{Decision, decide};
use crate::args::ApplyArgs;
use crate::client::{ApiError, Client};
use crate::manifests::{name_and_namespace, parse_all, place_namespace, read_inputs};
use crate::targets::item_path;

/// How many times an update is retried after a 409 Conflict.
const CONFLICT_RETRIES: usize = 5;

/// Reads and checks every manifest; prints every problem and fails if any.
pub async fn load(files: &[String], client: &Client) -> Result<Vec<Manifest>> {
    let inputs = read_inputs(files).await?;
    let mut manifests = match parse_all(&inputs) {
        Ok(m) => m,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            let n = errors.len();
            eprintln!(
                "error: {n} problem{} in the manifests; nothing was sent to the server",
                if n == 1 { "" } else { "s" }
            );
            return Err(AlreadyReported.into());
        }
    };
    let mut bad = false;
    for m in &mut manifests {
        let ns = &client.config.namespace;
        if let Err(msg) = place_namespace(m.kind, &mut m.object, ns, client.config.namespace_explicit) {
            eprintln!("{}:{}:{}: {msg}", m.source, m.mark.line, m.mark.column);
            bad = true;
        }
    }
    if bad {
        eprintln!("error: nothing was sent to the server");
        return Err(AlreadyReported.into());
    }
    if manifests.is_empty() {
        anyhow::bail!("no objects passed to apply");
    }
    Ok(manifests)
}

pub async fn run(args: &ApplyArgs, client: &Client) -> Result<()> {
    let manifests = load(&args.files, client).await?;
    let mut failed = false;
    for m in &manifests {
        match apply_one(client, m).await {
            Ok(verb) => println!(
                "{}/{} {verb}",
                m.kind.qualified_singular(),
                name_and_namespace(&m.object).0
            ),
            Err(e @ (ApiError::Unreachable { .. } | ApiError::Unauthorized { .. })) => {
                return Err(e.into());
            }
            Err(ApiError::Server(s)) => {
                eprintln!(
                    "Error from server ({}): error when applying {:?}: {}",
                    s.reason, m.source, s.message
                );
                failed = true;
            }
            Err(e) => {
                eprintln!("error: when applying {:?}: {e}", m.source);
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

/// Applies one object; returns the verb to print.
async fn apply_one(client: &Client, m: &Manifest) -> Result<&'static str, ApiError> {
    let (name, ns) = name_and_namespace(&m.object);
    let path = item_path(m.kind, &ns, &name);
    let collection = m.kind.collection_path(Some(&ns));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let live = client.get_opt(&path).await?;
        let result = match decide(&m.object, live.as_ref()) {
            Decision::Unchanged => return Ok("unchanged"),
            Decision::Create(body) => client.post(&collection, &body).await.map(|_| "created"),
            Decision::Update(body) => client.put(&path, &body).await.map(|_| "configured"),
        };
        match result {
            Err(e) if e.is_conflict() && attempt <= CONFLICT_RETRIES => continue,
            other => return other,
        }
    }
}
