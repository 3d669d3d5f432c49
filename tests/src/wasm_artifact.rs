//! Publishes a Wasm module to an OCI registry as a CNCF Wasm OCI artifact
//! (what `wkg oci push` writes: config `application/vnd.wasm.config.v0+json`
//! with `architecture: wasm`, `os: wasip1|wasip2` and the layer digests, one
//! `application/wasm` layer), through the registry's HTTP API: each blob a
//! monolithic upload (`POST /v2/<name>/blobs/uploads/`, then
//! `PUT <location>?digest=…`), then `PUT /v2/<name>/manifests/<tag>`.
//! Basic auth on every request when credentials are given (what
//! distribution's htpasswd auth asks for). Loopback, plain http.

use anyhow::{Context, Result, bail};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The CNCF Wasm OCI artifact's config media type.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The CNCF Wasm OCI artifact's layer media type.
pub const WASM_LAYER: &str = "application/wasm";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What [`publish`] pushed.
#[derive(Clone, Debug)]
pub struct Published {
    /// `HOST/REPOSITORY:TAG`.
    pub tag_ref: String,
    /// `HOST/REPOSITORY@sha256:<manifest digest>`.
    pub digest_ref: String,
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// The module's sha256, hex (its file name in the agent's module cache).
    pub module_sha256: String,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Pushes `module` to `http://HOST/v2/REPOSITORY` as a Wasm artifact tagged
/// `tag`, with Basic `creds` if given.
pub async fn publish(
    host: &str,
    repository: &str,
    tag: &str,
    module: &[u8],
    creds: Option<(&str, &str)>,
) -> Result<Published> {
    let client = reqwest::Client::new();
    let base = format!("http://{host}/v2/{repository}");
    // A component (preview 2) has layer 1 in its preamble; a core module version 1.
    let os = if module.get(6..8) == Some(&[1, 0]) {
        "wasip2"
    } else {
        "wasip1"
    };
    let module_digest = sha256_digest(module);
    let config = serde_json::to_vec(&json!({
        "created": chrono::Utc::now().to_rfc3339(),
        "architecture": "wasm",
        "os": os,
        "layerDigests": [module_digest],
    }))?;
    let config_digest = upload_blob(&client, &base, &config, creds).await?;
    let layer_digest = upload_blob(&client, &base, module, creds).await?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": WASM_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": WASM_LAYER, "digest": layer_digest, "size": module.len()}],
    }))?;
    let manifest_digest = sha256_digest(&manifest);
    let url = format!("{base}/manifests/{tag}");
    let response = with_auth(client.put(&url), creds)
        .header(CONTENT_TYPE, OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    expect(response, 201, &format!("PUT {url}")).await?;
    Ok(Published {
        tag_ref: format!("{host}/{repository}:{tag}"),
        digest_ref: format!("{host}/{repository}@{manifest_digest}"),
        manifest_digest,
        module_sha256: module_digest.trim_start_matches("sha256:").to_string(),
    })
}

/// A monolithic blob upload; returns the blob's digest.
async fn upload_blob(
    client: &reqwest::Client,
    base: &str,
    bytes: &[u8],
    creds: Option<(&str, &str)>,
) -> Result<String> {
    let digest = sha256_digest(bytes);
    let start = format!("{base}/blobs/uploads/");
    let response = with_auth(client.post(&start), creds)
        .header(reqwest::header::CONTENT_LENGTH, 0)
        .send()
        .await
        .with_context(|| format!("POST {start}"))?;
    let response = expect(response, 202, &format!("POST {start}")).await?;
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("the upload answer has no Location")?
        .to_string();
    // Location may be absolute or relative to the registry.
    let location = if location.starts_with("http://") || location.starts_with("https://") {
        location
    } else {
        let origin = base.split("/v2/").next().unwrap_or(base);
        format!("{origin}{location}")
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let url = format!("{location}{sep}digest={digest}");
    let response = with_auth(client.put(&url), creds)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    expect(response, 201, "PUT the blob").await?;
    Ok(digest)
}

fn with_auth(r: reqwest::RequestBuilder, creds: Option<(&str, &str)>) -> reqwest::RequestBuilder {
    match creds {
        Some((u, p)) => r.basic_auth(u, Some(p)),
        None => r,
    }
}

async fn expect(response: reqwest::Response, status: u16, what: &str) -> Result<reqwest::Response> {
    if response.status().as_u16() == status {
        return Ok(response);
    }
    let got = response.status();
    let body = response.text().await.unwrap_or_default();
    bail!("{what}: HTTP {got} (want {status}): {body}")
}
