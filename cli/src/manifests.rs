//! Reading `-f FILE|DIR|-` inputs and parsing every manifest in them before
//! anything is sent, so one bad file means nothing is applied; also where each
//! object's namespace is settled (`-n`, the object's own, or the default).

use std::path::Path;

use anyhow::{Result, bail};
use serde_json::Value;
use shturman_api::Kind;
use shturman_api::manifest::{Manifest, ManifestError, parse_manifests};
use tokio::io::AsyncReadExt;

/// One manifest source, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// File path as given, or `<stdin>`.
    pub name: String,
    pub text: String,
}

const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// Reads every `-f` argument: files, directories (their manifest files,
/// sorted by name, not recursive) and `-` for stdin (at most once).
pub async fn read_inputs(args: &[String]) -> Result<Vec<Input>> {
    let mut inputs = Vec::new();
    let mut stdin_used = false;
    for arg in args {
        if arg == "-" {
            if stdin_used {
                bail!("-f - (stdin) can be given only once");
            }
            stdin_used = true;
            let mut text = String::new();
            tokio::io::stdin().read_to_string(&mut text).await?;
            inputs.push(Input {
                name: "<stdin>".into(),
                text,
            });
            continue;
        }
        let meta = match tokio::fs::metadata(arg).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("the path {arg:?} does not exist")
            }
            Err(e) => bail!("cannot read {arg:?}: {e}"),
        };
        if meta.is_dir() {
            let mut names = Vec::new();
            let mut dir = tokio::fs::read_dir(arg).await?;
            while let Some(entry) = dir.next_entry().await? {
                let path = entry.path();
                if has_manifest_extension(&path) && entry.file_type().await?.is_file() {
                    names.push(path);
                }
            }
            names.sort();
            if names.is_empty() {
                bail!("no manifest files (*.yaml, *.yml, *.json) in directory {arg:?}");
            }
            for path in names {
                let text = read_file(&path).await?;
                inputs.push(Input {
                    name: path.display().to_string(),
                    text,
                });
            }
        } else {
            let text = read_file(Path::new(arg)).await?;
            inputs.push(Input {
                name: arg.clone(),
                text,
            });
        }
    }
    Ok(inputs)
}

async fn read_file(path: &Path) -> Result<String> {
    match tokio::fs::read(path).await {
        Ok(bytes) => {
            String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))
        }
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    }
}

/// Whether a directory entry is a manifest by its extension.
pub fn has_manifest_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Parses every input; all errors of all inputs, or all manifests.
pub fn parse_all(inputs: &[Input]) -> Result<Vec<Manifest>, Vec<ManifestError>> {
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    for input in inputs {
        match parse_manifests(&input.name, &input.text) {
            Ok(ms) => manifests.extend(ms),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(manifests)
    } else {
        Err(errors)
    }
}

/// Settles an object's namespace as kubectl does: cluster-scoped kinds have
/// none; an object without one gets `namespace`; an object whose namespace
/// differs from an explicit `-n` is an error.
pub fn place_namespace(kind: Kind, obj: &mut Value, namespace: &str, explicit: bool) -> Result<(), String> {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Err("the object has no metadata".into());
    };
    if !kind.namespaced() {
        meta.remove("namespace");
        return Ok(());
    }
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() => {
            if explicit && ns != namespace {
                return Err(format!(
                    "the namespace from the provided object {ns:?} does not match the namespace {namespace:?}. You must pass '--namespace={ns}' to perform this operation."
                ));
            }
        }
        _ => {
            meta.insert("namespace".into(), Value::String(namespace.into()));
        }
    }
    Ok(())
}

/// `name` and namespace (empty for cluster-scoped) of an object.
pub fn name_and_namespace(obj: &Value) -> (String, String) {
    (
        crate::value::str_at(obj, "metadata.name").to_string(),
        crate::value::str_at(obj, "metadata.namespace").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespaces_are_placed_like_kubectl() {
        let mut o = json!({"metadata": {"name": "a"}});
        place_namespace(Kind::Deployment, &mut o, "edge", false).expect("ok");
        assert_eq!(o["metadata"]["namespace"], "edge");

        let mut o = json!({"metadata": {"name": "a", "namespace": "prod"}});
        place_namespace(Kind::Pod, &mut o, "default", false).expect("object's own wins");
        assert_eq!(o["metadata"]["namespace"], "prod");
        let err = place_namespace(Kind::Pod, &mut o, "edge", true).expect_err("conflict");
        assert!(err.contains("--namespace=prod"), "{err}");

        let mut n = json!({"metadata": {"name": "pi", "namespace": "x"}});
        place_namespace(Kind::Node, &mut n, "edge", true).expect("cluster-scoped");
        assert!(n["metadata"].get("namespace").is_none());
        assert!(place_namespace(Kind::Pod, &mut json!({}), "d", false).is_err());
    }

    #[test]
    fn directory_entries_by_extension() {
        assert!(has_manifest_extension(Path::new("a/web.yaml")));
        assert!(has_manifest_extension(Path::new("a/web.YML")));
        assert!(has_manifest_extension(Path::new("web.json")));
        assert!(!has_manifest_extension(Path::new("README.md")));
        assert!(!has_manifest_extension(Path::new("yaml")));
    }

    #[tokio::test]
    async fn directories_are_read_sorted() {
        let dir = std::env::temp_dir().join(format!("shturman-cli-test-{}", std::process::id()));
        tokio::fs::create_dir_all(&dir).await.expect("mkdir");
        for f in ["b.yaml", "a.json", "notes.txt"] {
            tokio::fs::write(dir.join(f), f).await.expect("write");
        }
        let arg = dir.display().to_string();
        let inputs = read_inputs(std::slice::from_ref(&arg)).await.expect("reads");
        let names: Vec<&str> = inputs.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(names, ["a.json", "b.yaml"]);
        let missing = read_inputs(&[format!("{arg}/nope.yaml")])
            .await
            .expect_err("missing");
        assert!(missing.to_string().contains("does not exist"));
        tokio::fs::remove_dir_all(&dir).await.expect("cleanup");
    }
}
