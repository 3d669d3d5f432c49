//! Wasm pods: containers that are WebAssembly modules, run in-process by
//! wasmtime. The pure parts build without wasmtime (feature `wasm` off):
//!
//! - [`reference`]: `file://` / `https://…#sha256=` / registry references, pin checks, p1/p2 detection;
//! - [`env`]: a container's environment from the pod spec, ConfigMaps and Secrets;
//! - [`volumes`]: volumes as WASI preopens (emptyDir, hostPath, configMap, secret);
//! - [`limits`]: memory limiter and CPU token bucket;
//! - [`lifecycle`]: exits → container states, restart policy, back-off, phase;
//! - [`logs`]: stdout/stderr in a ring and a capped file, `--previous`, follow.
//!
//! With the `wasm` feature:
//!
//! - `engine`: the wasmtime engine, epoch ticker, linkers, running one instance;
//! - `http`: serving `wasi:http/incoming-handler` components, one instance per request;
//! - `modules`: module fetch and cache by digest (bytes on disk, compiled in memory);
//! - `registry`: Wasm artifacts pulled from OCI registries (distribution protocol, token auth);
//! - `runtime`: [`WasmRuntime`], the agent's [`Runtime`](crate::runtime::Runtime) for Wasm pods.

pub mod env;
pub mod lifecycle;
pub mod limits;
pub mod logs;
pub mod reference;
pub mod volumes;

#[cfg(feature = "wasm")]
pub mod engine;
#[cfg(feature = "wasm")]
mod fetch;
#[cfg(feature = "wasm")]
pub mod http;
#[cfg(all(test, feature = "wasm"))]
mod http_tests;
#[cfg(feature = "wasm")]
pub mod modules;
#[cfg(all(test, feature = "wasm"))]
mod probe_tests;
#[cfg(feature = "wasm")]
pub mod registry;
#[cfg(feature = "wasm")]
pub mod runtime;
#[cfg(all(test, feature = "wasm"))]
mod tests;

pub use logs::{LogLine, LogStore, Stream};
#[cfg(feature = "wasm")]
pub use runtime::{WasmError, WasmOptions, WasmRuntime};
