//! Shturman's edge agent (`shturman-agent`): one per node. It dials out to the
//! control plane's MQTT broker, joins with a token, heartbeats real figures,
//! receives its desired pods, keeps them in an offline journal and runs them
//! through pluggable runtimes, reporting their status. It depends on
//! `shturman-api` alone, never on the control plane: it ships to 1 GB boards.
//!
//! Layout:
//! - [`config`]: flags / env / config file → [`Config`], one pure function;
//! - [`identity`]: node secret, start epoch, joined flag (`<data-dir>/identity`);
//! - [`journal`]: the desired set on disk (`<data-dir>/journal/`);
//! - [`sign`]: the HMAC [`Signed`](shturman_api::wire::Signed) envelope;
//! - [`facts`]: sysinfo → capacity, allocatable, usage, node info, labels;
//! - [`plan`]: the pure reconcile `plan(desired, actual) -> Vec<PodAction>`;
//! - [`podip`]: Wasm pods' own IPs from `--pod-cidr` (pure allocator) and making them local;
//! - [`runtime`]: the small [`Runtime`](runtime::Runtime) trait runtimes implement;
//! - [`manager`]: applies plans through runtimes and tracks pod statuses;
//! - [`link`]: the MQTT connection (rumqttc), reconnecting forever;
//! - [`logs_service`]: container logs for `shturman logs`, over the link;
//! - [`proxy`]: the Service proxy (userspace L4 load balancer) and
//!   [`netif`], cluster IPs on the dummy interface `shturman0`;
//! - [`state`]: `<data-dir>/state.json` and the offline log;
//! - [`agent`]: the run loop tying them together;
//! - [`registry_auth`]: image references, pull policies and `imagePullSecrets` credentials (both runtimes);
//! - [`wasm`]: the Wasm runtime (wasmtime, feature `wasm`) and its pure parts;
//! - `oci`: the OCI runtime through containerd's CRI service (feature `oci`).

pub mod agent;
pub mod config;
pub mod facts;
mod fsutil;
pub mod identity;
pub mod journal;
pub mod link;
pub mod logs_service;
pub mod manager;
pub mod netif;
#[cfg(feature = "oci")]
pub mod oci;
pub mod plan;
pub mod podip;
pub mod probe;
pub mod proxy;
pub mod registry_auth;
pub mod runtime;
pub mod sign;
pub mod state;
pub mod wasm;

pub use agent::{AgentError, run};
pub use config::Config;
