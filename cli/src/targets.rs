//! What objects a command line names: `KIND [NAME…]`, `KIND/NAME…`, or
//! comma-separated kinds (`pods,svc`), resolved through `Kind::from_user`.

use anyhow::{Result, bail};
use shturman_api::Kind;

/// One kind and the names asked for (empty: all of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub names: Vec<String>,
}

/// What `get all` shows, as in kubectl: the workload kinds.
const ALL: &[Kind] = &[Kind::Pod, Kind::Service, Kind::Deployment, Kind::ReplicaSet];

/// Resolves a user's kind word, or explains which kinds exist.
pub fn kind_from_user(word: &str) -> Result<Kind> {
    match Kind::from_user(word) {
        Some(k) => Ok(k),
        None => {
            let valid: Vec<String> = Kind::ALL
                .iter()
                .map(|k| match k.short_names().first() {
                    Some(s) => format!("{} ({s})", k.plural()),
                    None => k.plural().to_string(),
                })
                .collect();
            bail!(
                "the server doesn't have a resource type {word:?}; valid types: {}",
                valid.join(", ")
            )
        }
    }
}

/// Parses `get`/`describe`/`delete` positional arguments.
pub fn parse_targets(args: &[String]) -> Result<Vec<Target>> {
    let Some(first) = args.first() else {
        bail!("you must specify the type of resource, e.g. `pods` or `deployments`");
    };
    if first.contains('/') {
        let mut out: Vec<Target> = Vec::new();
        for arg in args {
            let Some((kind, name)) = arg.split_once('/') else {
                bail!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (got {arg:?})"
                );
            };
            if name.is_empty() || name.contains('/') {
                bail!("{arg:?} is not KIND/NAME");
            }
            let kind = kind_from_user(kind)?;
            match out.iter_mut().find(|t| t.kind == kind) {
                Some(t) => t.names.push(name.to_string()),
                None => out.push(Target {
                    kind,
                    names: vec![name.to_string()],
                }),
            }
        }
        return Ok(out);
    }
    let mut kinds = Vec::new();
    for word in first.split(',').filter(|w| !w.is_empty()) {
        let found = if word.eq_ignore_ascii_case("all") {
            ALL.to_vec()
        } else {
            vec![kind_from_user(word)?]
        };
        for kind in found {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
    }
    if kinds.is_empty() {
        bail!("you must specify the type of resource");
    }
    let names: Vec<String> = args[1..].to_vec();
    if let Some(bad) = names.iter().find(|n| n.contains('/')) {
        bail!(
            "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (got {bad:?})"
        );
    }
    if kinds.len() > 1 && !names.is_empty() {
        bail!("names can only be given with a single resource type; use KIND/NAME for several kinds");
    }
    Ok(kinds
        .into_iter()
        .map(|kind| Target {
            kind,
            names: names.clone(),
        })
        .collect())
}

/// The URL path of one object.
pub fn item_path(kind: Kind, namespace: &str, name: &str) -> String {
    format!("{}/{name}", kind.collection_path(Some(namespace)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kind_and_names() {
        let t = parse_targets(&args(&["deploy", "web", "api"])).expect("ok");
        assert_eq!(
            t,
            vec![Target {
                kind: Kind::Deployment,
                names: args(&["web", "api"])
            }]
        );
        let t = parse_targets(&args(&["po,svc"])).expect("ok");
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].kind, Kind::Service);
        let t = parse_targets(&args(&["all,cm"])).expect("ok");
        let kinds: Vec<Kind> = t.iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Pod,
                Kind::Service,
                Kind::Deployment,
                Kind::ReplicaSet,
                Kind::ConfigMap
            ]
        );
    }

    #[test]
    fn slash_form_groups_by_kind() {
        let t = parse_targets(&args(&["pod/a", "svc/b", "po/c"])).expect("ok");
        assert_eq!(
            t[0],
            Target {
                kind: Kind::Pod,
                names: args(&["a", "c"])
            }
        );
        assert_eq!(
            t[1],
            Target {
                kind: Kind::Service,
                names: args(&["b"])
            }
        );
        assert!(parse_targets(&args(&["pod/a", "b"])).is_err());
        assert!(parse_targets(&args(&["pod", "svc/b"])).is_err());
    }

    #[test]
    fn unknown_kinds_list_the_valid_ones() {
        let err = parse_targets(&args(&["widgets"]))
            .expect_err("unknown")
            .to_string();
        assert!(
            err.starts_with("the server doesn't have a resource type \"widgets\""),
            "{err}"
        );
        assert!(err.contains("deployments (deploy)"), "{err}");
    }

    #[test]
    fn item_paths() {
        assert_eq!(
            item_path(Kind::Pod, "edge", "x"),
            "/api/v1/namespaces/edge/pods/x"
        );
        assert_eq!(item_path(Kind::Node, "edge", "pi"), "/api/v1/nodes/pi");
    }
}
