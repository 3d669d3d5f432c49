//! Module distribution and caching: fetch a [`ModuleRef`] (a file on the
//! node, a download by [`fetch`], or a pull from an OCI registry by
//! [`registry`], per the container's `imagePullPolicy` and with the pod's
//! `imagePullSecrets`), verify its digest (a `#sha256` pin, or the registry
//! manifest's layer digest), keep the bytes under
//! `<data-dir>/wasm/modules/<sha256>.wasm`, and keep the compiled, linked form
//! in memory by digest so a restart or a second replica never compiles again.
//!
//! Why compiled code is not cached on disk: loading precompiled code
//! (`Module::deserialize_file`) is `unsafe` in wasmtime (the bytes are
//! trusted machine code) and the workspace forbids `unsafe`. wasmtime's own
//! `cache` feature would do it safely for us, at the cost of zstd and a
//! config file in the agent binary; left for later. After an agent restart
//! each module compiles once more.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use shturman_api::core::Container;
use shturman_api::core::container::ImagePullPolicy;
use shturman_api::wire::DesiredPod;
use tokio::sync::OnceCell;

use super::engine::{Compiled, WasmEngine};
use super::fetch;
use super::reference::{ModuleRef, RefError, Source, verify};
use super::registry::{self, Image, PullOptions};
use crate::fsutil::write_atomic;
use crate::registry_auth::{Credentials, pull_credentials, pull_policy};

/// Modules larger than this are refused.
const MAX_MODULE_BYTES: u64 = 256 << 20;

/// Why a module could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not fetched or not matching its pin (`ErrImagePull`).
    #[error("{0}")]
    Fetch(String),
    /// Fetched but not compilable or linkable (`CreateContainerError`).
    #[error("{0}")]
    Compile(String),
}

/// A module ready to instantiate.
#[derive(Clone)]
pub struct Loaded {
    pub digest: String,
    pub compiled: Compiled,
}

/// What the pod says about pulling one container's module from a registry.
#[derive(Clone, Debug, Default)]
pub struct Pull {
    /// `None`: `IfNotPresent`.
    pub policy: Option<ImagePullPolicy>,
    /// The matching `imagePullSecrets` entry, if any.
    pub credentials: Option<Credentials>,
}

impl Pull {
    /// Container `c`'s pull policy (or Kubernetes' default) and the pod's
    /// credentials for its image's registry.
    pub fn of(pod: &DesiredPod, c: &Container) -> Pull {
        Pull {
            policy: Some(pull_policy(c)),
            credentials: pull_credentials(pod, &c.image),
        }
    }
}

/// The node's module cache.
pub struct ModuleCache {
    dir: PathBuf,
    engine: Arc<WasmEngine>,
    compiled: Mutex<HashMap<String, Arc<OnceCell<Compiled>>>>,
    /// Registries reached over plain http (`--insecure-registries`).
    insecure_registries: Vec<String>,
}

impl ModuleCache {
    pub fn new(dir: PathBuf, engine: Arc<WasmEngine>) -> ModuleCache {
        // Downloads a killed agent left half done.
        fetch::remove_partials(&dir);
        ModuleCache {
            dir,
            engine,
            compiled: Mutex::default(),
            insecure_registries: Vec::new(),
        }
    }

    /// Reaches these registries (`host[:port]`, or `host` for any port)
    /// over plain http; loopback registries always are.
    #[must_use]
    pub fn with_insecure_registries(mut self, registries: Vec<String>) -> ModuleCache {
        self.insecure_registries = registries;
        self
    }

    /// Fetches, verifies and compiles (each at most once per digest), a
    /// registry module anonymously and per `IfNotPresent`.
    pub async fn load(&self, reference: &ModuleRef) -> Result<Loaded, LoadError> {
        self.load_for(reference, Pull::default()).await
    }

    /// [`load`](Self::load) with a container's pull policy and credentials.
    pub async fn load_for(&self, reference: &ModuleRef, pull: Pull) -> Result<Loaded, LoadError> {
        let (dir, r) = (self.dir.clone(), reference.clone());
        let opts = PullOptions {
            policy: pull.policy,
            credentials: pull.credentials,
            insecure_registries: self.insecure_registries.clone(),
        };
        let (digest, bytes) = tokio::task::spawn_blocking(move || fetch(&dir, &r, &opts))
            .await
            .map_err(|e| LoadError::Fetch(format!("fetch task failed: {e}")))??;
        let cell = self
            .compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(digest.clone())
            .or_default()
            .clone();
        let engine = self.engine.clone();
        let compiled = cell
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || engine.compile(&bytes))
                    .await
                    .map_err(|e| format!("compile task failed: {e}"))?
            })
            .await
            .map_err(LoadError::Compile)?
            .clone();
        Ok(Loaded { digest, compiled })
    }

    /// How many distinct modules are compiled (for tests and metrics).
    pub fn compiled_count(&self) -> usize {
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|c| c.initialized())
            .count()
    }
}

/// Reads, downloads or pulls a module, checks its digest, stores it by
/// digest. Blocking.
fn fetch(dir: &Path, r: &ModuleRef, opts: &PullOptions) -> Result<(String, Vec<u8>), LoadError> {
    fetch_capped(dir, r, opts, MAX_MODULE_BYTES)
}

/// [`fetch`] with the size limit as a parameter (tests use a small one).
fn fetch_capped(
    dir: &Path,
    r: &ModuleRef,
    opts: &PullOptions,
    limit: u64,
) -> Result<(String, Vec<u8>), LoadError> {
    let url = match &r.source {
        Source::File(path) => return read_file(dir, r, path, limit),
        Source::Http(url) => url,
        Source::Registry {
            registry,
            repository,
            reference,
        } => {
            let image = Image {
                registry,
                repository,
                reference,
            };
            return registry::pull(dir, &image, opts, limit).map_err(|e| LoadError::Fetch(e.to_string()));
        }
    };
    // A pinned module already in the cache needs no network. A cached file
    // that no longer matches its name (a damaged disk) is removed and
    // fetched again.
    if let Some(pin) = &r.sha256 {
        let cached = dir.join(format!("{pin}.wasm"));
        if cached.is_file() {
            let bytes = read_capped(&cached, limit)?;
            match verify(r, &bytes) {
                Ok(digest) => return Ok((digest, bytes)),
                Err(e) => {
                    tracing::warn!(file = %cached.display(), "cached module is damaged ({e}); fetching {url} again");
                    let _ = std::fs::remove_file(&cached);
                }
            }
        }
    }
    // Unpinned: fetched at each pod start (like `:latest`); the same bytes
    // still find their compiled form by digest.
    fetch::download(dir, url, r.sha256.as_deref(), limit).map_err(|e| LoadError::Fetch(e.to_string()))
}

/// A `file://` module: read, checked against its pin, copied into the cache.
fn read_file(dir: &Path, r: &ModuleRef, path: &Path, limit: u64) -> Result<(String, Vec<u8>), LoadError> {
    let bytes = read_capped(path, limit)?;
    let digest = verify(r, &bytes).map_err(|e: RefError| LoadError::Fetch(format!("{r}: {e}")))?;
    let cached = dir.join(format!("{digest}.wasm"));
    if !cached.is_file() {
        std::fs::create_dir_all(dir)
            .and_then(|()| write_atomic(&cached, &bytes, 0o644))
            .map_err(|e| LoadError::Fetch(format!("caching module {}: {e}", cached.display())))?;
    }
    Ok((digest, bytes))
}

fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, LoadError> {
    let err = |e: std::io::Error| LoadError::Fetch(format!("reading {}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(err)?.len();
    if len > limit {
        return Err(LoadError::Fetch(format!(
            "{}: {len} bytes is more than the {limit}-byte module limit",
            path.display()
        )));
    }
    std::fs::read(path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::fetch::tests::{ok, serve};
    use super::*;
    use crate::wasm::engine::EngineOptions;
    use crate::wasm::reference::{digest, parse};

    /// A WASI command that does nothing.
    fn command(tag: &str) -> Vec<u8> {
        wat::parse_str(format!(r#"(module (func (export "_start")) (data "{tag}"))"#)).unwrap()
    }

    fn cache(dir: &Path) -> ModuleCache {
        let engine = WasmEngine::new(&EngineOptions::default()).unwrap();
        ModuleCache::new(dir.to_path_buf(), Arc::new(engine))
    }

    /// A URL on a loopback port nobody listens on.
    fn dead_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/m.wasm", l.local_addr().unwrap())
    }

    #[test]
    fn a_pinned_cached_module_needs_no_network() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = command("cached");
        let pin = digest(&bytes);
        std::fs::write(dir.path().join(format!("{pin}.wasm")), &bytes).unwrap();
        let r = parse(&format!("{}#sha256={pin}", dead_url())).unwrap();
        assert_eq!(
            fetch(dir.path(), &r, &PullOptions::default()).unwrap(),
            (pin, bytes)
        );
        // Without a pin the same URL must be fetched, and it cannot be.
        let r = parse(&dead_url()).unwrap();
        let Err(LoadError::Fetch(e)) = fetch(dir.path(), &r, &PullOptions::default()) else {
            panic!("an unpinned module must be fetched");
        };
        assert!(e.contains("check that the server is up"), "{e}");
    }

    #[test]
    fn a_damaged_cached_module_is_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = command("fresh");
        let pin = digest(&bytes);
        std::fs::write(dir.path().join(format!("{pin}.wasm")), b"damaged").unwrap();
        let (url, t) = serve(vec![ok(&bytes, true)]);
        let r = parse(&format!("{url}/m.wasm#sha256={pin}")).unwrap();
        assert_eq!(
            fetch(dir.path(), &r, &PullOptions::default()).unwrap(),
            (pin.clone(), bytes.clone())
        );
        t.join().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(format!("{pin}.wasm"))).unwrap(),
            bytes
        );
    }

    #[test]
    fn the_size_limit_holds_for_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let (url, t) = serve(vec![ok(&[0u8; 4096], false)]);
        let r = parse(&format!("{url}/big.wasm")).unwrap();
        let Err(LoadError::Fetch(e)) = fetch_capped(dir.path(), &r, &PullOptions::default(), 1024) else {
            panic!("an oversized module must be refused");
        };
        t.join().unwrap();
        assert!(e.contains("1024-byte limit"), "{e}");
    }

    #[tokio::test]
    async fn a_wrong_pin_is_a_pull_error_and_never_compiles() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = command("served");
        let wrong = digest(b"something else");
        let (url, t) = serve(vec![ok(&bytes, true)]);
        let modules = cache(dir.path());
        let r = parse(&format!("{url}/m.wasm#sha256={wrong}")).unwrap();
        let Err(LoadError::Fetch(e)) = modules.load(&r).await else {
            panic!("a mismatching module must be a pull error");
        };
        t.join().unwrap();
        assert!(
            e.contains(&format!("sha256:{wrong}")) && e.contains(&format!("sha256:{}", digest(&bytes))),
            "{e}"
        );
        assert_eq!(modules.compiled_count(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing is kept"
        );
    }

    #[tokio::test]
    async fn an_unpinned_url_is_fetched_each_time_and_compiled_once() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = command("latest");
        let (url, t) = serve(vec![ok(&bytes, true), ok(&bytes, false)]);
        let modules = cache(dir.path());
        let r = parse(&format!("{url}/m.wasm")).unwrap();
        let first = modules.load(&r).await.unwrap_or_else(|e| panic!("{e}"));
        let second = modules.load(&r).await.unwrap_or_else(|e| panic!("{e}"));
        // Both requests were served: the thread ends after the second.
        t.join().unwrap();
        assert_eq!(first.digest, digest(&bytes));
        assert_eq!(second.digest, first.digest);
        assert_eq!(modules.compiled_count(), 1);
    }
}
