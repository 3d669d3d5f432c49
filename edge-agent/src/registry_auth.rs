//! Image references, pull policies and `imagePullSecrets` credentials,
//! pure and shared by both runtimes that pull from OCI registries: the OCI
//! runtime (containerd pulls, with these credentials) and the Wasm runtime
//! (its own registry client, `wasm/registry.rs`). Which registry an image
//! lives in (Docker's rules: the first path component is a registry when it
//! has a `.` or a `:` or is `localhost`, else Docker Hub), the effective
//! `imagePullPolicy` (Kubernetes' default: `Always` for `:latest` or no tag,
//! else `IfNotPresent`), and the credentials of the pod's `imagePullSecrets`
//! (`kubernetes.io/dockerconfigjson` or the older `kubernetes.io/dockercfg`)
//! that match the image's registry.

use shturman_api::core::config::{base64_decode, base64_encode};
use shturman_api::core::container::{ImagePullPolicy, is_latest_image};
use shturman_api::core::{Container, Secret};
use shturman_api::wire::DesiredPod;

use crate::wasm::env::{secret, secret_value};

/// Docker Hub's canonical registry host.
pub const DOCKER_HUB: &str = "docker.io";

/// The effective pull policy of a container (its own, or Kubernetes' default).
pub fn pull_policy(c: &Container) -> ImagePullPolicy {
    c.image_pull_policy.unwrap_or_else(|| {
        if is_latest_image(&c.image) {
            ImagePullPolicy::Always
        } else {
            ImagePullPolicy::IfNotPresent
        }
    })
}

/// The registry host of an image reference and the repository path in it
/// (`localhost:5000/a/b:1` → (`localhost:5000`, `a/b`); `nginx` →
/// (`docker.io`, `library/nginx`)).
pub fn registry_and_path(image: &str) -> (String, String) {
    let name = strip_tag_and_digest(image);
    let (host, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_ascii_lowercase(), rest.to_string())
        }
        Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
        None => (DOCKER_HUB.to_string(), format!("library/{name}")),
    };
    (canonical_host(&host), path)
}

/// The reference without its `@digest` and `:tag`.
fn strip_tag_and_digest(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    }
}

/// Docker Hub's aliases are one registry.
fn canonical_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.into(),
        h => h.to_string(),
    }
}

/// Credentials for one registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The registry (as matched: host, maybe with a path prefix).
    pub server: String,
    pub username: String,
    pub password: String,
    /// `base64(username:password)` when the secret only had that.
    pub auth: String,
    pub identity_token: String,
}

impl Credentials {
    /// The value of an `Authorization: Basic …` header, when there is a
    /// user name (an identity token alone is not a password).
    pub fn basic_header(&self) -> Option<String> {
        if self.username.is_empty() {
            return None;
        }
        Some(format!(
            "Basic {}",
            base64_encode(format!("{}:{}", self.username, self.password).as_bytes())
        ))
    }
}

/// Never prints the secrets themselves (they end up in logs otherwise).
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("auth", &set(&self.auth))
            .field("identity_token", &set(&self.identity_token))
            .finish()
    }
}

/// A key of a docker config (`https://registry:5000/v1/`, `registry:5000`,
/// `*.example.com/team`) as (host pattern, path prefix).
fn parse_key(key: &str) -> (String, String) {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let path = path.trim_matches('/');
    // `/v1/`, `/v2/` are API paths, not repository prefixes.
    let path = if matches!(path, "v1" | "v2") { "" } else { path };
    (canonical_host(&host.to_ascii_lowercase()), path.to_string())
}

/// Whether a key's host pattern (`*.example.com` globs one label) matches `host`.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// The entries of one pull secret: `(key, entry)` pairs from
/// `.dockerconfigjson` (`{"auths": {…}}`) or `.dockercfg` (`{…}`).
fn entries(s: &Secret) -> Vec<(String, serde_json::Value)> {
    let parse =
        |key: &str| secret_value(s, key).and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let map = if let Some(v) = parse(".dockerconfigjson") {
        v.get("auths").cloned()
    } else {
        parse(".dockercfg")
    };
    match map {
        Some(serde_json::Value::Object(m)) => m.into_iter().collect(),
        _ => Vec::new(),
    }
}

fn field(v: &serde_json::Value, name: &str) -> String {
    v.get(name)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The credentials for `image` from the pod's `imagePullSecrets`: the most
/// specific matching entry (longest path prefix) of the first secret, in
/// the pod's order, that has one. `None`: pull anonymously.
pub fn pull_credentials(pod: &DesiredPod, image: &str) -> Option<Credentials> {
    let (host, path) = registry_and_path(image);
    for r in &pod.pod.spec.image_pull_secrets {
        let Some(s) = secret(pod, &r.name) else {
            continue;
        };
        let best = entries(s)
            .into_iter()
            .filter_map(|(key, v)| {
                let (pattern, prefix) = parse_key(&key);
                let path_ok = prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"));
                (host_matches(&pattern, &host) && path_ok).then_some((prefix.len(), key, v))
            })
            .max_by_key(|(len, _, _)| *len);
        if let Some((_, key, v)) = best {
            let mut c = Credentials {
                server: parse_key(&key).0,
                username: field(&v, "username"),
                password: field(&v, "password"),
                auth: field(&v, "auth"),
                identity_token: field(&v, "identitytoken"),
            };
            if c.username.is_empty()
                && let Some((u, p)) = base64_decode(&c.auth)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|t| t.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())))
            {
                c.username = u;
                c.password = p;
            }
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::core::pod::LocalObjectReference;
    use shturman_api::core::{Pod, Secret};
    use shturman_api::meta::ObjectMeta;

    #[test]
    fn registries_follow_dockers_rules() {
        let r = |i: &str| registry_and_path(i);
        assert_eq!(r("nginx"), ("docker.io".into(), "library/nginx".into()));
        assert_eq!(r("nginx:1.27"), ("docker.io".into(), "library/nginx".into()));
        assert_eq!(r("bitnami/redis:7"), ("docker.io".into(), "bitnami/redis".into()));
        assert_eq!(r("localhost:5000/a/b:1"), ("localhost:5000".into(), "a/b".into()));
        assert_eq!(r("localhost/x"), ("localhost".into(), "x".into()));
        assert_eq!(
            r("127.0.0.1:5000/busybox-httpd@sha256:abcd"),
            ("127.0.0.1:5000".into(), "busybox-httpd".into())
        );
        assert_eq!(
            r("ghcr.io/org/app:v1@sha256:ab"),
            ("ghcr.io".into(), "org/app".into())
        );
        assert_eq!(
            r("index.docker.io/library/x"),
            ("docker.io".into(), "library/x".into())
        );
    }

    #[test]
    fn pull_policy_defaults_as_kubernetes() {
        let c = |image: &str, p: Option<ImagePullPolicy>| Container {
            image: image.into(),
            image_pull_policy: p,
            ..Container::default()
        };
        assert_eq!(pull_policy(&c("nginx", None)), ImagePullPolicy::Always);
        assert_eq!(pull_policy(&c("nginx:latest", None)), ImagePullPolicy::Always);
        assert_eq!(pull_policy(&c("nginx:1.27", None)), ImagePullPolicy::IfNotPresent);
        assert_eq!(pull_policy(&c("localhost:5000/x", None)), ImagePullPolicy::Always);
        assert_eq!(
            pull_policy(&c("nginx@sha256:ab", None)),
            ImagePullPolicy::IfNotPresent
        );
        assert_eq!(
            pull_policy(&c("nginx", Some(ImagePullPolicy::Never))),
            ImagePullPolicy::Never
        );
    }

    fn pod_with(secrets: Vec<Secret>, refs: &[&str]) -> DesiredPod {
        let mut pod = Pod::default();
        pod.spec.image_pull_secrets = refs
            .iter()
            .map(|n| LocalObjectReference { name: (*n).into() })
            .collect();
        DesiredPod {
            pod,
            secrets,
            ..DesiredPod::default()
        }
    }

    fn docker_secret(name: &str, key: &str, json: &str) -> Secret {
        let mut s = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            ..Secret::default()
        };
        s.string_data.insert(key.into(), json.into());
        s
    }

    #[test]
    fn credentials_match_the_images_registry() {
        let json = r#"{"auths": {
            "https://127.0.0.1:5000/v2/": {"username": "u", "password": "p"},
            "ghcr.io/team": {"auth": "YWxpY2U6czNjcmV0"},
            "ghcr.io": {"username": "any", "password": "x"},
            "*.example.com": {"username": "w", "password": "y", "identitytoken": "t"}
        }}"#;
        let pod = pod_with(
            vec![docker_secret("regcred", ".dockerconfigjson", json)],
            &["missing", "regcred"],
        );
        let c = pull_credentials(&pod, "127.0.0.1:5000/busybox-httpd:1").unwrap();
        assert_eq!(
            (c.server.as_str(), c.username.as_str(), c.password.as_str()),
            ("127.0.0.1:5000", "u", "p")
        );
        // The longest matching path prefix wins; `auth` is decoded.
        let c = pull_credentials(&pod, "ghcr.io/team/app:1").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("alice", "s3cret"));
        assert_eq!(c.auth, "YWxpY2U6czNjcmV0");
        assert_eq!(
            pull_credentials(&pod, "ghcr.io/teams/app").unwrap().username,
            "any"
        );
        let c = pull_credentials(&pod, "r.example.com/x").unwrap();
        assert_eq!(c.identity_token, "t");
        assert!(pull_credentials(&pod, "a.b.example.com/x").is_none());
        assert!(pull_credentials(&pod, "nginx:1").is_none());
        assert!(pull_credentials(&pod, "127.0.0.1:5001/x").is_none());
        // Secrets not listed in imagePullSecrets are never used.
        let unlisted = pod_with(vec![docker_secret("regcred", ".dockerconfigjson", json)], &[]);
        assert!(pull_credentials(&unlisted, "127.0.0.1:5000/x").is_none());
    }

    #[test]
    fn legacy_dockercfg_and_docker_hub_aliases() {
        let json = r#"{"https://index.docker.io/v1/": {"username": "hub", "password": "pw"}}"#;
        let pod = pod_with(vec![docker_secret("old", ".dockercfg", json)], &["old"]);
        let c = pull_credentials(&pod, "nginx:1.27").unwrap();
        assert_eq!((c.server.as_str(), c.username.as_str()), ("docker.io", "hub"));
        let broken = pod_with(vec![docker_secret("b", ".dockerconfigjson", "{not json")], &["b"]);
        assert!(pull_credentials(&broken, "nginx").is_none());
    }
}
