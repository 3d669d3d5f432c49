//! Wasm modules from OCI registries: a small client of the OCI distribution
//! protocol on the same blocking `ureq` client as `fetch.rs` (run from
//! `spawn_blocking`), and the on-disk cache that lets a pod start without
//! the network.
//!
//! A pull: `GET /v2/<name>/manifests/<tag|digest>` with the Accept headers
//! of OCI and Docker manifests and indexes; a `401` answers the registry's
//! `WWW-Authenticate` challenge once, `Bearer realm=…,service=…,scope=…`
//! (a token from the realm, anonymous or with Basic credentials from the
//! pod's `imagePullSecrets`, or with an identity token) or `Basic` (the
//! credentials directly); an index is resolved to its `wasm` entry (os
//! `wasip2`, `wasip1` or `wasi`, or its only entry); the manifest's Wasm layer
//! is then `GET /v2/<name>/blobs/<digest>` into the module cache through
//! [`fetch::store_response`]: hashed while it streams, size-capped, kept as
//! `<sha256>.wasm` only if it matches the manifest's digest. Manifests
//! fetched by digest are checked against it too.
//!
//! Layouts: the CNCF Wasm OCI artifact (config
//! `application/vnd.wasm.config.v0+json`, one `application/wasm` layer:
//! `wkg oci push`, wasmtime and wasmCloud tooling), the older wasm-to-oci
//! artifact (`application/vnd.wasm.content.layer.v1+wasm`), and images whose
//! one Wasm layer uses runwasi's or wasmCloud's media type. A container image
//! (tar layers) is refused, naming the media types it has.
//!
//! Scheme: plain `http` for loopback registries and for those the agent lists
//! in `--insecure-registries`; `https` (trusting what `fetch.rs` trusts)
//! otherwise. Docker Hub (`docker.io`) is reached at `registry-1.docker.io`.
//!
//! Cache (`<cache>/refs/<sha256 of the reference>.json`, next to the
//! modules): which module a reference resolved to. A digest reference found
//! there needs no network; a tag is re-resolved at each start under
//! `imagePullPolicy: Always`, and taken from the cache under `IfNotPresent`
//! (and `Never`, which fails when it is not there).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use shturman_api::core::container::ImagePullPolicy;

use super::fetch::{self, FetchError};
use super::reference::OciReference;
use crate::fsutil::write_atomic;
use crate::registry_auth::Credentials;
use crate::sign::encode_hex;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest (Wasm artifacts use it too).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's multi-platform manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker's image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The short-lived OCI 1.1-rc artifact manifest (`blobs` instead of `layers`).
pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";
/// The CNCF Wasm OCI artifact's config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The CNCF Wasm OCI artifact's layer.
pub const WASM_LAYER: &str = "application/wasm";
/// wasm-to-oci's layer (its config is `application/vnd.wasm.config.v1+json`).
pub const WASM_TO_OCI_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Layers that are one Wasm binary, byte for byte: the CNCF artifact's,
/// wasm-to-oci's, runwasi's and wasmCloud's (krustlet's).
pub const WASM_LAYER_TYPES: &[&str] = &[
    WASM_LAYER,
    WASM_TO_OCI_LAYER,
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];
/// The manifest types a pull accepts, best first.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.artifact.manifest.v1+json";
/// Manifests larger than this are refused (the distribution spec suggests 4 MiB).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// How much of an error or token answer is read.
const MAX_SMALL_BODY: u64 = 64 << 10;
/// Docker Hub's API host.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Where reference → module mappings are kept, under the module cache.
const REFS_DIR: &str = "refs";

/// What a pull may use, besides the reference: the container's
/// `imagePullPolicy`, the pod's credentials for the registry, and the
/// node's insecure (plain http) registries.
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// `None`: `IfNotPresent`.
    pub policy: Option<ImagePullPolicy>,
    pub credentials: Option<Credentials>,
    /// `host[:port]` entries reached over plain http (`--insecure-registries`).
    pub insecure_registries: Vec<String>,
}

/// A registry reference, parsed.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
    pub reference: &'a OciReference,
}

impl std::fmt::Display for Image<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}{}", self.registry, self.repository, self.reference)
    }
}

/// Why a pull failed; each message names the image and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("pulling {image}: {source}")]
    Fetch {
        image: String,
        #[source]
        source: FetchError,
    },
    #[error("pulling {image}: GET {url}: HTTP {status}{detail}: {hint}")]
    Status {
        image: String,
        url: String,
        status: String,
        /// The registry's own words, ` (CODE: message)`, if it said any.
        detail: String,
        hint: String,
    },
    #[error("pulling {image}: getting a token from {realm}: {reason}")]
    Token {
        image: String,
        realm: String,
        reason: String,
    },
    #[error("pulling {image}: {reason}")]
    Manifest { image: String, reason: String },
    #[error(
        "pulling {image}: the registry served {what} with digest {actual}, not the {expected} asked for; nothing was kept"
    )]
    Digest {
        image: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error(
        "pulling {image}: the module is {size} bytes, more than the {limit}-byte limit; publish a smaller module"
    )]
    TooLarge { image: String, size: u64, limit: u64 },
    #[error(
        "pulling {image}: the module is not on this node and imagePullPolicy is Never; set imagePullPolicy to IfNotPresent, or pull it once with another pod"
    )]
    NeverPull { image: String },
}

/// The module an image reference names: from the cache when the policy
/// allows (see the module docs), else from the registry. Returns the
/// module's sha256 and bytes, kept as `<dir>/<sha256>.wasm`. Blocking.
pub fn pull(
    dir: &Path,
    image: &Image<'_>,
    opts: &PullOptions,
    limit: u64,
) -> Result<(String, Vec<u8>), RegistryError> {
    let key = image.to_string();
    let mapping = mapping_path(dir, &key);
    let policy = opts.policy.unwrap_or(ImagePullPolicy::IfNotPresent);
    let cached_ok = matches!(image.reference, OciReference::Digest(_)) || policy != ImagePullPolicy::Always;
    if cached_ok && let Some(found) = cached(dir, &mapping, &key, limit) {
        return Ok(found);
    }
    if policy == ImagePullPolicy::Never {
        return Err(RegistryError::NeverPull { image: key });
    }
    let mut client = Client::new(image, opts)?;
    let (manifest, layer) = client.resolve()?;
    let hex = layer.hex().to_string();
    if layer.size > limit {
        return Err(RegistryError::TooLarge {
            image: key,
            size: layer.size,
            limit,
        });
    }
    // Re-resolving a tag to the same module needs no second download.
    let module = match read_verified(&dir.join(format!("{hex}.wasm")), &hex, limit) {
        Some(bytes) => (hex, bytes),
        None => client.blob(dir, &layer, limit)?,
    };
    let entry = Mapping {
        reference: key,
        manifest,
        module: module.0.clone(),
    };
    if let Err(e) = std::fs::create_dir_all(dir.join(REFS_DIR)).and_then(|()| {
        let json = serde_json::to_vec_pretty(&entry).map_err(std::io::Error::other)?;
        write_atomic(&mapping, &json, 0o644)
    }) {
        // The module is in hand: only the next start's shortcut is lost.
        tracing::warn!(file = %mapping.display(), "cannot remember which module {} is: {e}", entry.reference);
    }
    Ok(module)
}

/// Which module a reference resolved to (`<cache>/refs/<sha256>.json`).
#[derive(Debug, Serialize, Deserialize)]
struct Mapping {
    /// The normalised reference (`registry/repository:tag` or `…@sha256:…`).
    reference: String,
    /// The digest of the manifest (or index) the reference named.
    manifest: String,
    /// The module's sha256 (hex): `<cache>/<module>.wasm`.
    module: String,
}

fn mapping_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(REFS_DIR)
        .join(format!("{}.json", encode_hex(&Sha256::digest(key.as_bytes()))))
}

/// The module a cached mapping names, if the mapping and the module are
/// there and intact (a damaged module is removed, and pulled again).
fn cached(dir: &Path, mapping: &Path, key: &str, limit: u64) -> Option<(String, Vec<u8>)> {
    let m: Mapping = serde_json::from_slice(&std::fs::read(mapping).ok()?).ok()?;
    let hex_ok = m.module.len() == 64 && m.module.bytes().all(|b| b.is_ascii_hexdigit());
    if m.reference != key || !hex_ok {
        return None;
    }
    let bytes = read_verified(&dir.join(format!("{}.wasm", m.module)), &m.module, limit)?;
    Some((m.module, bytes))
}

/// A cached module's bytes, when it exists, fits and matches its digest;
/// a damaged one is removed.
fn read_verified(path: &Path, hex: &str, limit: u64) -> Option<Vec<u8>> {
    if std::fs::metadata(path).ok()?.len() > limit {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    if encode_hex(&Sha256::digest(&bytes)) == hex {
        return Some(bytes);
    }
    tracing::warn!(file = %path.display(), "cached module does not match its digest; pulling it again");
    let _ = std::fs::remove_file(path);
    None
}

/// A layer of a manifest: `sha256:<hex>`, its size and media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

impl Layer {
    /// The digest's hex part.
    fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }
}

/// A manifest or index as served: its digest, media type and JSON.
struct Fetched {
    digest: String,
    media_type: String,
    json: Value,
}

/// One pull's conversation with a registry: the client, where the
/// registry is, and the `Authorization` it earned.
struct Client {
    agent: ureq::Agent,
    /// Where the trusted CAs came from (for TLS error messages).
    roots: String,
    /// `https://host[:port]` (or `http://` for loopback and insecure registries).
    base: String,
    image: String,
    repository: String,
    reference: OciReference,
    credentials: Option<Credentials>,
    authorization: Option<String>,
    /// A challenge was answered already: a second 401 is final.
    challenged: bool,
}

impl Client {
    fn new(image: &Image<'_>, opts: &PullOptions) -> Result<Client, RegistryError> {
        let base = base_url(image.registry, &opts.insecure_registries);
        let (agent, roots) = fetch::agent(&base).map_err(|source| RegistryError::Fetch {
            image: image.to_string(),
            source,
        })?;
        Ok(Client {
            agent,
            roots,
            base,
            image: image.to_string(),
            repository: image.repository.to_string(),
            reference: image.reference.clone(),
            credentials: opts.credentials.clone(),
            authorization: None,
            challenged: false,
        })
    }

    /// The digest of what the reference names (a manifest or an index) and
    /// the module layer it leads to.
    fn resolve(&mut self) -> Result<(String, Layer), RegistryError> {
        let (name, expected) = match &self.reference {
            OciReference::Tag(t) => (t.clone(), None),
            OciReference::Digest(d) => (d.clone(), Some(d.clone())),
        };
        let top = self.manifest(&name, expected.as_deref())?;
        let named = top.digest.clone();
        let manifest = if is_index(&top.media_type, &top.json) {
            let digest = pick_platform(&top.json).map_err(|reason| self.manifest_error(reason))?;
            let m = self.manifest(&digest, Some(&digest))?;
            if is_index(&m.media_type, &m.json) {
                return Err(self.manifest_error(format!(
                    "the index entry {digest} is itself an index; publish the Wasm artifact's manifest in the index"
                )));
            }
            m
        } else {
            top
        };
        let layer =
            wasm_layer(&manifest.media_type, &manifest.json).map_err(|reason| self.manifest_error(reason))?;
        Ok((named, layer))
    }

    fn manifest_error(&self, reason: String) -> RegistryError {
        RegistryError::Manifest {
            image: self.image.clone(),
            reason,
        }
    }

    /// `GET /v2/<name>/manifests/<reference>`, checked against `expected`.
    fn manifest(&mut self, reference: &str, expected: Option<&str>) -> Result<Fetched, RegistryError> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let response = self.get(&path, Some(MANIFEST_ACCEPT))?;
        let content_type = header(&response, "content-type")
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let url = format!("{}{path}", self.base);
        let body = response
            .into_body()
            .with_config()
            .limit(MAX_MANIFEST_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => self.manifest_error(format!(
                    "the manifest at {url} is larger than {MAX_MANIFEST_BYTES} bytes; this is not a Wasm artifact"
                )),
                e => self.transport(&url, &e),
            })?;
        let digest = format!("sha256:{}", encode_hex(&Sha256::digest(&body)));
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(RegistryError::Digest {
                image: self.image.clone(),
                what: "a manifest",
                expected: expected.to_string(),
                actual: digest,
            });
        }
        let json: Value = serde_json::from_slice(&body).map_err(|e| {
            self.manifest_error(format!(
                "the manifest at {url} is not JSON ({e}); is this an OCI registry?"
            ))
        })?;
        let media_type = json
            .get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(content_type);
        Ok(Fetched {
            digest,
            media_type,
            json,
        })
    }

    /// `GET /v2/<name>/blobs/<digest>` into the cache, verified.
    fn blob(&mut self, dir: &Path, layer: &Layer, limit: u64) -> Result<(String, Vec<u8>), RegistryError> {
        let path = format!("/v2/{}/blobs/{}", self.repository, layer.digest);
        let url = format!("{}{path}", self.base);
        let response = self.get(&path, None)?;
        fetch::store_response(dir, &url, response, Some(layer.hex()), limit).map_err(|e| match e {
            FetchError::Pin { source, .. } => {
                let actual = match source {
                    super::reference::RefError::DigestMismatch { actual, .. } => format!("sha256:{actual}"),
                    other => other.to_string(),
                };
                RegistryError::Digest {
                    image: self.image.clone(),
                    what: "a module layer",
                    expected: layer.digest.clone(),
                    actual,
                }
            }
            source => RegistryError::Fetch {
                image: self.image.clone(),
                source,
            },
        })
    }

    /// A GET on the registry, answering one authentication challenge.
    fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let url = format!("{}{path}", self.base);
        let mut response = self.send(&url, accept)?;
        if response.status().as_u16() == 401 && !self.challenged {
            self.challenged = true;
            let challenges: Vec<String> = response
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect();
            if self.authenticate(&challenges)? {
                response = self.send(&url, accept)?;
            }
        }
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(self.status_error(&url, response))
        }
    }

    fn send(
        &self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let mut request = self.agent.get(url);
        if let Some(a) = accept {
            request = request.header("Accept", a);
        }
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        request.call().map_err(|e| self.transport(url, &e))
    }

    fn transport(&self, url: &str, e: &ureq::Error) -> RegistryError {
        RegistryError::Fetch {
            image: self.image.clone(),
            source: fetch::transport_error(url, e, &self.roots),
        }
    }

    /// Earns an `Authorization` for the challenges of a 401; false when
    /// there is nothing to answer with (the 401 then stands).
    fn authenticate(&mut self, challenges: &[String]) -> Result<bool, RegistryError> {
        let parsed: Vec<Challenge> = challenges.iter().filter_map(|c| parse_challenge(c)).collect();
        if let Some(bearer) = parsed.iter().find(|c| c.scheme.eq_ignore_ascii_case("bearer")) {
            let token = self.token(bearer)?;
            self.authorization = Some(format!("Bearer {token}"));
            return Ok(true);
        }
        if parsed.iter().any(|c| c.scheme.eq_ignore_ascii_case("basic")) {
            self.authorization = self.credentials.as_ref().and_then(Credentials::basic_header);
            return Ok(self.authorization.is_some());
        }
        Ok(false)
    }

    /// A bearer token from the challenge's realm: with an identity token
    /// (OAuth2 refresh grant, POST), else a GET, Basic-authenticated when
    /// the pod has credentials, anonymous otherwise.
    fn token(&self, challenge: &Challenge) -> Result<String, RegistryError> {
        let err = |realm: &str, reason: String| RegistryError::Token {
            image: self.image.clone(),
            realm: realm.to_string(),
            reason,
        };
        let realm = challenge.param("realm").unwrap_or_default();
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(err(
                realm,
                "the registry's Bearer challenge has no http(s) realm; it cannot be answered".into(),
            ));
        }
        // Credentials never travel in clear from a registry reached over https.
        if self.base.starts_with("https://") && realm.starts_with("http://") && !is_loopback_url(realm) {
            return Err(err(
                realm,
                "the token service is plain http while the registry is https; refusing to use it".into(),
            ));
        }
        let service = challenge.param("service");
        let default_scope = format!("repository:{}:pull", self.repository);
        let scope = challenge.param("scope").unwrap_or(&default_scope);
        let creds = self.credentials.as_ref();
        let identity = creds.map(|c| c.identity_token.as_str()).filter(|t| !t.is_empty());
        let response = match identity {
            Some(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("client_id", "shturman"),
                    ("refresh_token", refresh),
                    ("scope", scope),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                self.agent.post(realm).send_form(form)
            }
            None => {
                let mut request = self.agent.get(realm);
                if let Some(s) = service {
                    request = request.query("service", s);
                }
                for s in scope.split(' ').filter(|s| !s.is_empty()) {
                    request = request.query("scope", s);
                }
                if let Some(basic) = creds.and_then(Credentials::basic_header) {
                    request = request.header("Authorization", basic);
                }
                request.call()
            }
        };
        let response = response.map_err(|e| RegistryError::Fetch {
            image: self.image.clone(),
            source: fetch::transport_error(realm, &e, &self.roots),
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .with_config()
            .limit(MAX_SMALL_BODY)
            .read_to_vec()
            .unwrap_or_default();
        if !status.is_success() {
            let hint = match (status.as_u16(), creds.is_some()) {
                (401 | 403, true) => format!(
                    "the credentials from the pod's imagePullSecrets were refused; {}",
                    self.check_secret_hint()
                ),
                (401 | 403, false) => self.needs_credentials_hint(),
                _ => "the pull is retried with back-off".into(),
            };
            return Err(err(
                realm,
                format!("HTTP {}{}: {hint}", status_text(status), registry_detail(&body)),
            ));
        }
        let json: Value =
            serde_json::from_slice(&body).map_err(|e| err(realm, format!("the answer is not JSON ({e})")))?;
        ["token", "access_token"]
            .iter()
            .find_map(|k| json.get(*k).and_then(Value::as_str).filter(|t| !t.is_empty()))
            .map(str::to_string)
            .ok_or_else(|| err(realm, "the answer has no token".into()))
    }

    fn needs_credentials_hint(&self) -> String {
        let registry = self.image.split('/').next().unwrap_or_default();
        format!(
            "the registry needs credentials: create a kubernetes.io/dockerconfigjson Secret for {registry} and list it in the pod's imagePullSecrets"
        )
    }

    fn check_secret_hint(&self) -> String {
        let server = self
            .credentials
            .as_ref()
            .map(|c| c.server.as_str())
            .unwrap_or_default();
        format!("check the user name and password of the {server:?} entry in the Secret")
    }

    /// The error for a final non-2xx answer, with the registry's message.
    fn status_error(&self, url: &str, response: ureq::http::Response<ureq::Body>) -> RegistryError {
        let status = response.status();
        let body = response
            .into_body()
            .with_config()
            .limit(MAX_SMALL_BODY)
            .read_to_vec()
            .unwrap_or_default();
        let blob = url.contains("/blobs/");
        let hint = match status.as_u16() {
            401 if self.credentials.is_some() => {
                format!(
                    "the registry refused the pod's credentials; {}",
                    self.check_secret_hint()
                )
            }
            401 => self.needs_credentials_hint(),
            403 => "access denied: the credentials have no pull access to this repository".into(),
            404 if blob => "the registry lacks a blob its manifest names; push the artifact again".into(),
            404 => format!(
                "no such manifest: check the image's repository and {} and that the artifact is pushed there",
                if matches!(self.reference, OciReference::Digest(_)) {
                    "digest"
                } else {
                    "tag"
                }
            ),
            429 => "the registry is rate limiting; the pull is retried with back-off".into(),
            s if s >= 500 => "the registry failed; the pull is retried with back-off".into(),
            _ => "check the image reference".into(),
        };
        RegistryError::Status {
            image: self.image.clone(),
            url: url.to_string(),
            status: status_text(status),
            detail: registry_detail(&body),
            hint,
        }
    }
}

fn header<'a>(r: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

fn status_text(status: ureq::http::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// ` (CODE: message; …)` from a registry's JSON error body, or a short
/// text body; empty when there is none.
pub fn registry_detail(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let errors = v.get("errors")?.as_array()?;
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
                match (field("code"), field("message")) {
                    ("", m) => m.to_string(),
                    (c, "") => c.to_string(),
                    (c, m) => format!("{c}: {m}"),
                }
            })
            .filter(|p| !p.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    });
    let text = from_json.unwrap_or_else(|| {
        let t = String::from_utf8_lossy(body);
        let t = t.trim();
        if t.starts_with('{') || t.starts_with('<') {
            String::new()
        } else {
            t.chars().take(200).collect()
        }
    });
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

/// `http://` for a loopback registry or one listed as insecure (an entry
/// `host:port` matches that registry, an entry `host` any of its ports),
/// else `https://`; Docker Hub at its API host.
pub fn base_url(registry: &str, insecure: &[String]) -> String {
    let host = if registry == crate::registry_auth::DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    };
    let name = host_name(host);
    let listed = insecure
        .iter()
        .any(|e| e.eq_ignore_ascii_case(host) || e.eq_ignore_ascii_case(name));
    let scheme = if listed || is_loopback(name) {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{host}")
}

/// `host` of `host:port`, `[v6]:port` (without brackets), `host`.
fn host_name(registry: &str) -> &str {
    if let Some(v6) = registry.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    registry.split(':').next().unwrap_or_default()
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    is_loopback(host_name(authority))
}

/// One `WWW-Authenticate` challenge: its scheme and parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `Bearer realm="https://auth/token",service="reg",scope="repository:a:pull,push"`
/// (quoted values may hold commas and `\"`; unquoted ones end at a comma).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.split_once(char::is_whitespace) {
        Some((s, r)) => (s, r),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ',') {
            key.push(c);
        }
        let key = key.trim().to_string();
        if key.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            // A token68 or a bare word: nothing we use.
            continue;
        }
        while chars.next_if(|c| *c == ' ').is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
            value = value.trim().to_string();
        }
        params.push((key, value));
    }
    Some(Challenge {
        scheme: scheme.to_string(),
        params,
    })
}

/// Whether a fetched document is an index (by media type, or by shape
/// when the registry did not say).
fn is_index(media_type: &str, json: &Value) -> bool {
    match media_type {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST | OCI_ARTIFACT => false,
        _ => json.get("manifests").is_some_and(Value::is_array) && json.get("layers").is_none(),
    }
}

/// The operating systems of Wasm entries in an index, preferred first.
const WASM_OSES: &[&str] = &["wasip2", "wasip1", "wasi"];

/// The digest of an index's Wasm entry: architecture `wasm` with os
/// `wasip2`, `wasip1` or `wasi` (in that order of preference), else its
/// only entry (attestations aside). The error lists what the index has.
pub fn pick_platform(index: &Value) -> Result<String, String> {
    let entries: Vec<&Value> = index
        .get("manifests")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let platform = |e: &Value, k: &str| {
        e.get("platform")
            .and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    // BuildKit's attestation manifests are `unknown/unknown` entries.
    let attestation = |e: &Value| {
        e.get("annotations")
            .and_then(|a| a.get("vnd.docker.reference.type"))
            .is_some()
    };
    let images: Vec<&Value> = entries.iter().copied().filter(|e| !attestation(e)).collect();
    let chosen = WASM_OSES
        .iter()
        .find_map(|os| {
            images
                .iter()
                .find(|e| platform(e, "architecture") == "wasm" && platform(e, "os") == *os)
        })
        .copied()
        .or(match images.as_slice() {
            [only] => Some(*only),
            _ => None,
        });
    let Some(entry) = chosen else {
        let found: Vec<String> = images
            .iter()
            .map(|e| match (platform(e, "os"), platform(e, "architecture")) {
                (os, arch) if os.is_empty() && arch.is_empty() => "no platform".to_string(),
                (os, arch) => format!("{os}/{arch}"),
            })
            .collect();
        return Err(if found.is_empty() {
            "the image index is empty".to_string()
        } else {
            format!(
                "the image index has no Wasm entry (found {}): publish the module for platform wasip2/wasm or wasip1/wasm",
                found.join(", ")
            )
        });
    };
    let digest = entry.get("digest").and_then(Value::as_str).unwrap_or_default();
    check_digest(digest).map_err(|e| format!("the index entry's {e}"))?;
    Ok(digest.to_string())
}

/// `sha256:<64 lowercase hex>`, the only digests this node verifies.
fn check_digest(d: &str) -> Result<(), String> {
    match d.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "digest {d:?} is not sha256:<64 hex>; only sha256 digests are supported"
        )),
    }
}

/// The one Wasm layer of an image manifest, or why there is none: the
/// error names the config and layer media types found and the ones
/// supported.
pub fn wasm_layer(media_type: &str, manifest: &Value) -> Result<Layer, String> {
    if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
        return Err(
            "the image is a Docker schema 1 manifest, which this node cannot pull; push it again with a current tool"
                .into(),
        );
    }
    let layers: Vec<&Value> = ["layers", "blobs"]
        .iter()
        .find_map(|k| manifest.get(*k).and_then(Value::as_array))
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let media = |v: &Value| {
        v.get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let wasm: Vec<&&Value> = layers
        .iter()
        .filter(|l| WASM_LAYER_TYPES.contains(&media(l).as_str()))
        .collect();
    match wasm.as_slice() {
        [one] => {
            let digest = one.get("digest").and_then(Value::as_str).unwrap_or_default();
            check_digest(digest).map_err(|e| format!("the Wasm layer's {e}"))?;
            let size = one
                .get("size")
                .and_then(Value::as_u64)
                .ok_or("the Wasm layer has no size; the manifest is malformed")?;
            Ok(Layer {
                digest: digest.to_string(),
                size,
                media_type: media(one),
            })
        }
        [] => {
            let config = manifest.get("config").map(media).unwrap_or_default();
            let found: Vec<String> = layers.iter().map(|l| media(l)).collect();
            Err(format!(
                "no Wasm layer in the manifest (config {}, layers [{}]); this node runs Wasm artifacts: the CNCF Wasm OCI artifact (config {WASM_CONFIG}, one {WASM_LAYER} layer, as `wkg oci push` publishes) or a manifest with one layer of {}; a container image runs with the OCI runtime: drop runtimeClassName: wasmtime",
                if config.is_empty() { "none" } else { &config },
                found.join(", "),
                WASM_LAYER_TYPES.get(1..).unwrap_or_default().join(", ")
            ))
        }
        many => Err(format!(
            "the manifest has {} Wasm layers (a multi-component application?); a container runs one module: publish one module per artifact",
            many.len()
        )),
    }
}

#[cfg(test)]
mod tests;
