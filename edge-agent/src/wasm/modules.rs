//! Module distribution and caching: fetch a [`ModuleRef`], verify its
//! `#sha256` pin (every source), keep the bytes under
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
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::engine::{Compiled, WasmEngine};
use super::reference::{ModuleRef, RefError, Source, verify};
use crate::fsutil::write_atomic;

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

/// The node's module cache.
pub struct ModuleCache {
    dir: PathBuf,
    engine: Arc<WasmEngine>,
    compiled: Mutex<HashMap<String, Arc<OnceCell<Compiled>>>>,
}

impl ModuleCache {
    pub fn new(dir: PathBuf, engine: Arc<WasmEngine>) -> ModuleCache {
        ModuleCache {
            dir,
            engine,
            compiled: Mutex::default(),
        }
    }

    /// Fetches, verifies and compiles (each at most once per digest).
    pub async fn load(&self, reference: &ModuleRef) -> Result<Loaded, LoadError> {
        let (dir, r) = (self.dir.clone(), reference.clone());
        let (digest, bytes) = tokio::task::spawn_blocking(move || fetch(&dir, &r))
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

/// Reads a module, checks its pin, stores it by digest. Blocking.
fn fetch(dir: &std::path::Path, r: &ModuleRef) -> Result<(String, Vec<u8>), LoadError> {
    let bytes = match &r.source {
        Source::File(path) => read_capped(path)?,
        Source::Http(url) => match &r.sha256 {
            // A pinned module already in the cache needs no network.
            Some(pin) if dir.join(format!("{pin}.wasm")).is_file() => {
                read_capped(&dir.join(format!("{pin}.wasm")))?
            }
            _ => {
                return Err(LoadError::Fetch(format!(
                    "fetching {url}: http(s) module download is not implemented yet; copy the module to the node and use file:///path.wasm#sha256=<hex>"
                )));
            }
        },
    };
    let digest = verify(r, &bytes).map_err(|e: RefError| LoadError::Fetch(format!("{r}: {e}")))?;
    let cached = dir.join(format!("{digest}.wasm"));
    if !cached.is_file() {
        std::fs::create_dir_all(dir)
            .and_then(|()| write_atomic(&cached, &bytes, 0o644))
            .map_err(|e| LoadError::Fetch(format!("caching module {}: {e}", cached.display())))?;
    }
    Ok((digest, bytes))
}

fn read_capped(path: &std::path::Path) -> Result<Vec<u8>, LoadError> {
    let err = |e: std::io::Error| LoadError::Fetch(format!("reading {}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(err)?.len();
    if len > MAX_MODULE_BYTES {
        return Err(LoadError::Fetch(format!(
            "{}: {len} bytes is more than the {MAX_MODULE_BYTES}-byte module limit",
            path.display()
        )));
    }
    std::fs::read(path).map_err(err)
}
