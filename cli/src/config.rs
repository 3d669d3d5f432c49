//! Client configuration: where the API server is and which token to send.
//! Resolution is a pure function over the flags, the environment and a file
//! reader, so tests drive it without touching the disk. Config files are
//! kubeconfigs, so kubectl can use them too.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use shturman_api::manifest::{self, Limits};

/// The API address used when nothing else is configured (`shturman control`'s default).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7443";
/// Written by `shturman control` in its default data dir; the quick start's config.
pub const QUICKSTART_CONFIG: &str = "./shturman-data/admin.conf";

/// The parts of a kubeconfig Shturman reads; other fields are ignored.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct KubeConfig {
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(default, rename = "current-context")]
    pub current_context: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Cluster {
    pub server: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct NamedUser {
    pub name: String,
    #[serde(default)]
    pub user: User,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct User {
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct NamedContext {
    pub name: String,
    pub context: ContextSpec,
}

/// A kubeconfig context: which cluster, which user, which namespace.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ContextSpec {
    pub cluster: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// What a kubeconfig's current context points at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selected {
    pub server: String,
    pub token: Option<String>,
    pub namespace: Option<String>,
}

/// Parses a kubeconfig (YAML or JSON) read from `source`.
pub fn parse_kubeconfig(source: &str, text: &str) -> Result<KubeConfig> {
    let value = match manifest::parse_documents(source, text, &Limits::default()) {
        Ok(docs) => {
            let doc = docs
                .first()
                .ok_or_else(|| anyhow!("{source}: the config file is empty"))?;
            manifest::decode::<serde_json::Value>(source, doc).map_err(|e| anyhow!("{e}"))?
        }
        // JSON is YAML; this fallback only matters while the YAML parser is young.
        Err(errors) => serde_json::from_str(text).map_err(|_| anyhow!("{errors}"))?,
    };
    serde_json::from_value(value)
        .with_context(|| format!("{source}: not a kubeconfig (clusters, users, contexts, current-context)"))
}

impl KubeConfig {
    /// Follows `current-context` (or the only context) to a server, token and namespace.
    pub fn select(&self, source: &str) -> Result<Selected> {
        let ctx = match &self.current_context {
            Some(name) if !name.is_empty() => self
                .contexts
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| anyhow!("{source}: current-context {name:?} is not among its contexts"))?,
            _ => match self.contexts.as_slice() {
                [only] => only,
                [] => bail!("{source}: the config has no contexts"),
                _ => bail!("{source}: the config has several contexts but no current-context"),
            },
        };
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| {
                anyhow!(
                    "{source}: context {:?} names cluster {:?}, which is not among its clusters",
                    ctx.name,
                    ctx.context.cluster
                )
            })?;
        let token = self
            .users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .and_then(|u| u.user.token.clone());
        Ok(Selected {
            server: cluster.cluster.server.clone(),
            token,
            namespace: ctx.context.namespace.clone().filter(|n| !n.is_empty()),
        })
    }
}

/// Everything resolution looks at, gathered by `main` from flags and the environment.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub flag_server: Option<String>,
    pub flag_token: Option<String>,
    pub flag_config: Option<PathBuf>,
    pub flag_namespace: Option<String>,
    /// `$SHTURMAN_CONFIG`.
    pub env_config: Option<String>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
}

/// The resolved client configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    /// Base URL without a trailing slash.
    pub server: String,
    pub token: Option<String>,
    /// The namespace to use when none is given on an object.
    pub namespace: String,
    /// Whether the namespace came from `-n` (an object's differing namespace is then an error).
    pub namespace_explicit: bool,
    /// Where configuration was looked for, for messages such as a 401's.
    pub looked: Vec<String>,
}

impl Resolved {
    /// One line describing where the configuration came from.
    pub fn looked_summary(&self) -> String {
        format!("configuration: {}", self.looked.join("; "))
    }
}

/// Resolves the client configuration. `read` reads a file (a fake in tests).
pub fn resolve(inputs: &Inputs, read: &dyn Fn(&Path) -> io::Result<String>) -> Result<Resolved> {
    let mut looked = Vec::new();
    let mut file: Option<(PathBuf, String)> = None;
    if let Some(path) = &inputs.flag_config {
        let text = read(path).with_context(|| format!("cannot read --config {}", path.display()))?;
        looked.push(format!("--config {}", path.display()));
        file = Some((path.clone(), text));
    } else if let Some(env) = inputs.env_config.as_deref().filter(|s| !s.is_empty()) {
        let path = PathBuf::from(env);
        let text = read(&path).with_context(|| {
            format!("cannot read $SHTURMAN_CONFIG={env}; fix or unset it, or pass --config")
        })?;
        looked.push(format!("$SHTURMAN_CONFIG={env}"));
        file = Some((path, text));
    } else {
        let mut candidates = Vec::new();
        if let Some(home) = &inputs.home {
            candidates.push(home.join(".shturman").join("config"));
        }
        candidates.push(PathBuf::from(QUICKSTART_CONFIG));
        for path in candidates {
            match read(&path) {
                Ok(text) => {
                    looked.push(format!("{} (used)", path.display()));
                    file = Some((path, text));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    looked.push(format!("{} (not found)", path.display()));
                }
                Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
            }
        }
    }
    let selected = match &file {
        Some((path, text)) => {
            let name = path.display().to_string();
            parse_kubeconfig(&name, text)?.select(&name)?
        }
        None => Selected::default(),
    };
    let server = match (&inputs.flag_server, selected.server.is_empty()) {
        (Some(s), _) => {
            looked.push(format!("--server {s}"));
            s.clone()
        }
        (None, false) => selected.server,
        (None, true) => {
            looked.push(format!("no server configured, tried {DEFAULT_SERVER}"));
            DEFAULT_SERVER.to_string()
        }
    };
    let token = match &inputs.flag_token {
        Some(t) => {
            looked.push("token from --token/$SHTURMAN_TOKEN".into());
            Some(t.clone())
        }
        None => selected.token,
    };
    let (namespace, namespace_explicit) = match &inputs.flag_namespace {
        Some(ns) => (ns.clone(), true),
        None => (selected.namespace.unwrap_or_else(|| "default".into()), false),
    };
    Ok(Resolved {
        server: normalize_server(&server),
        token: token.filter(|t| !t.is_empty()),
        namespace,
        namespace_explicit,
        looked,
    })
}

/// `127.0.0.1:7443/` → `http://127.0.0.1:7443`.
pub fn normalize_server(server: &str) -> String {
    let s = server.trim().trim_end_matches('/');
    if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ADMIN_JSON: &str = r#"{
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "shturman", "cluster": {"server": "http://10.0.0.5:7443", "insecure-skip-tls-verify": true}}],
        "users": [{"name": "admin", "user": {"token": "s3cret"}}],
        "contexts": [{"name": "admin@shturman", "context": {"cluster": "shturman", "user": "admin", "namespace": "edge"}}],
        "current-context": "admin@shturman",
        "preferences": {}
    }"#;

    fn fake_fs(files: &[(&str, &str)]) -> impl Fn(&Path) -> io::Result<String> {
        let map: HashMap<PathBuf, String> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        move |p: &Path| {
            map.get(p)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    #[test]
    fn kubeconfig_selects_current_context() {
        let cfg = parse_kubeconfig("admin.conf", ADMIN_JSON).expect("parses");
        let sel = cfg.select("admin.conf").expect("selects");
        assert_eq!(sel.server, "http://10.0.0.5:7443");
        assert_eq!(sel.token.as_deref(), Some("s3cret"));
        assert_eq!(sel.namespace.as_deref(), Some("edge"));
    }

    #[test]
    fn yaml_kubeconfig_as_the_server_writes_it() {
        let text = "apiVersion: v1\nkind: Config\nclusters:\n- name: shturman\n  cluster:\n    server: http://127.0.0.1:7443\n\
users:\n- name: admin\n  user:\n    token: abc123\ncontexts:\n- name: shturman\n  context:\n    cluster: shturman\n    user: admin\n\
current-context: shturman\n";
        let sel = parse_kubeconfig("admin.conf", text)
            .expect("parses")
            .select("admin.conf")
            .expect("selects");
        assert_eq!(sel.server, "http://127.0.0.1:7443");
        assert_eq!(sel.token.as_deref(), Some("abc123"));
        assert_eq!(sel.namespace, None);
    }

    #[test]
    fn kubeconfig_errors_name_the_problem() {
        let mut cfg = parse_kubeconfig("c", ADMIN_JSON).expect("parses");
        cfg.current_context = Some("other".into());
        let err = cfg.select("c").expect_err("missing context").to_string();
        assert!(err.contains("\"other\""), "{err}");
        cfg.current_context = None;
        cfg.contexts[0].context.cluster = "gone".into();
        let err = cfg.select("c").expect_err("missing cluster").to_string();
        assert!(err.contains("\"gone\""), "{err}");
        assert!(parse_kubeconfig("c", "{\"clusters\": 3}").is_err());
    }

    #[test]
    fn search_order_ends_with_the_quickstart_file() {
        let read = fake_fs(&[(QUICKSTART_CONFIG, ADMIN_JSON)]);
        let inputs = Inputs {
            home: Some("/home/u".into()),
            ..Inputs::default()
        };
        let r = resolve(&inputs, &read).expect("resolves");
        assert_eq!(r.server, "http://10.0.0.5:7443");
        assert_eq!(r.namespace, "edge");
        assert!(!r.namespace_explicit);
        assert!(r.looked[0].contains("/home/u/.shturman/config (not found)"));
        assert!(r.looked[1].contains("(used)"));
    }

    #[test]
    fn flags_override_the_file_and_env_config_must_exist() {
        let read = fake_fs(&[("/etc/sh.conf", ADMIN_JSON)]);
        let inputs = Inputs {
            env_config: Some("/etc/sh.conf".into()),
            flag_server: Some("127.0.0.1:9000/".into()),
            flag_token: Some("t2".into()),
            flag_namespace: Some("prod".into()),
            ..Inputs::default()
        };
        let r = resolve(&inputs, &read).expect("resolves");
        assert_eq!(r.server, "http://127.0.0.1:9000");
        assert_eq!(r.token.as_deref(), Some("t2"));
        assert_eq!(r.namespace, "prod");
        assert!(r.namespace_explicit);

        let missing = Inputs {
            env_config: Some("/nope".into()),
            ..Inputs::default()
        };
        let err = format!("{:#}", resolve(&missing, &read).expect_err("missing file"));
        assert!(err.contains("SHTURMAN_CONFIG=/nope"), "{err}");
    }

    #[test]
    fn nothing_configured_falls_back_to_the_default_address() {
        let r = resolve(&Inputs::default(), &fake_fs(&[])).expect("resolves");
        assert_eq!(r.server, DEFAULT_SERVER);
        assert_eq!(r.token, None);
        assert_eq!(r.namespace, "default");
    }
}
