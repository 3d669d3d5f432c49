//! The runtime plug-in boundary, kept small (after runwasi's): a [`Runtime`]
//! starts, stops and reports the pods of one [`PodClass`]. The Wasm runtime
//! (wasmtime, in-process) and the OCI runtime (containerd) plug in here; until
//! one is present, pods of its class stay `Pending` (see [`crate::manager`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use shturman_api::core::{PodSpec, PodStatus};
use shturman_api::wire::DesiredPod;

use crate::config::Config;
use crate::logs_service::LogSource;
use crate::plan::PodKey;

/// Which kind of runtime a pod needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PodClass {
    /// WebAssembly modules, run by wasmtime.
    Wasm,
    /// OCI images, run by containerd and runc.
    Oci,
}

impl PodClass {
    /// A Wasm pod has `runtimeClassName: wasmtime` or images that are `.wasm`
    /// modules (`file:///m.wasm`, `https://…/m.wasm#sha256=…`); else OCI.
    pub fn of(spec: &PodSpec) -> PodClass {
        let wasm_image = |image: &str| {
            let path = image.split(['#', '?']).next().unwrap_or(image);
            path.ends_with(".wasm")
        };
        if spec.runtime_class_name.as_deref() == Some(WASMTIME)
            || (!spec.containers.is_empty() && spec.containers.iter().all(|c| wasm_image(&c.image)))
        {
            PodClass::Wasm
        } else {
            PodClass::Oci
        }
    }

    /// The runtime handler name a node offers for this class.
    pub fn handler(self) -> &'static str {
        match self {
            PodClass::Wasm => WASMTIME,
            PodClass::Oci => CONTAINERD,
        }
    }
}

/// Handler name of the Wasm runtime.
pub const WASMTIME: &str = "wasmtime";
/// Handler name of the OCI runtime.
pub const CONTAINERD: &str = "containerd";

/// Why a runtime could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct RuntimeError {
    /// Kubernetes-style reason, e.g. `ErrImagePull`, `CreateContainerError`.
    pub reason: String,
    pub message: String,
}

/// One runtime. Implementations own their pods' processes or sandboxes and
/// must not block the async runtime.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// The handler name (`wasmtime`, `containerd`).
    fn name(&self) -> &'static str;
    /// The pods it runs.
    fn class(&self) -> PodClass;
    /// Starts `pod` (its ConfigMaps and Secrets come with it).
    async fn start(&self, pod: &DesiredPod) -> Result<(), RuntimeError>;
    /// Stops a pod, giving it `grace` to exit.
    async fn stop(&self, key: &PodKey, grace: Duration) -> Result<(), RuntimeError>;
    /// The pod's current status; `None` if the runtime does not know it.
    async fn status(&self, key: &PodKey) -> Option<PodStatus>;
    /// Its containers' logs (`shturman logs`), if it keeps them in a [`LogStore`](crate::wasm::LogStore).
    fn logs(&self) -> Option<crate::wasm::LogStore> {
        None
    }
    /// Where `shturman logs` reads its containers' logs: by default its
    /// [`logs`](Self::logs) store; runtimes whose logs live elsewhere (the
    /// OCI runtime's CRI log files) return their own source.
    fn log_source(&self) -> Option<Arc<dyn LogSource>> {
        self.logs().map(|s| Arc::new(s) as Arc<dyn LogSource>)
    }
}

/// The runtimes this agent has, and the signal they raise when a pod's
/// status changes, so the agent reports it at once instead of at its next
/// poll.
#[derive(Clone, Default)]
pub struct Runtimes {
    list: Vec<Arc<dyn Runtime>>,
    changed: Arc<Notify>,
}

impl Runtimes {
    /// These runtimes; each raises `changed` when a status changes.
    pub fn new(list: Vec<Arc<dyn Runtime>>, changed: Arc<Notify>) -> Runtimes {
        Runtimes { list, changed }
    }

    /// Every runtime.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Runtime>> {
        self.list.iter()
    }

    /// Raised (a stored permit, never lost) when any pod's status changes.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// The runtimes this build offers, keeping their files under `data_dir`:
    /// wasmtime (with the default `wasm` feature). No OCI runtime: use
    /// [`Runtimes::for_config`] for an agent configured with containerd.
    pub fn standard(data_dir: &std::path::Path) -> Result<Runtimes, RuntimeError> {
        Self::build(data_dir, None, &[], crate::podip::NetworkSettings::default())
    }

    /// The runtimes of an agent with configuration `cfg`: wasmtime (feature
    /// `wasm`) and, when `--containerd-socket` is set, the OCI runtime
    /// through containerd's CRI service (feature `oci`; it connects lazily,
    /// so containerd may come up later).
    pub fn for_config(cfg: &Config) -> Result<Runtimes, RuntimeError> {
        Self::build(
            &cfg.data_dir,
            cfg.containerd_socket
                .as_deref()
                .map(|socket| (socket, cfg.node_name.as_str())),
            &cfg.insecure_registries,
            crate::podip::NetworkSettings::of(cfg),
        )
    }

    fn build(
        data_dir: &std::path::Path,
        containerd: Option<(&std::path::Path, &str)>,
        insecure_registries: &[String],
        network: crate::podip::NetworkSettings,
    ) -> Result<Runtimes, RuntimeError> {
        let changed = Arc::new(Notify::new());
        #[allow(unused_mut)]
        let mut list: Vec<Arc<dyn Runtime>> = Vec::new();
        #[cfg(feature = "wasm")]
        {
            let mut opts = crate::wasm::WasmOptions::new(data_dir);
            opts.changed = changed.clone();
            opts.insecure_registries = insecure_registries.to_vec();
            opts.network = network;
            let wasm = crate::wasm::WasmRuntime::new(opts).map_err(|e| RuntimeError {
                reason: "RuntimeUnavailable".into(),
                message: format!("the Wasm runtime cannot start: {e}"),
            })?;
            list.push(Arc::new(wasm));
        }
        #[cfg(feature = "oci")]
        if let Some((socket, node)) = containerd {
            let mut opts = crate::oci::OciOptions::new(data_dir, socket, node);
            opts.changed = changed.clone();
            let oci = crate::oci::OciRuntime::new(opts).map_err(|e| RuntimeError {
                reason: "RuntimeUnavailable".into(),
                message: format!("the OCI runtime cannot start: {e}"),
            })?;
            list.push(Arc::new(oci));
        }
        #[cfg(not(feature = "oci"))]
        if let Some((socket, _)) = containerd {
            tracing::warn!(
                socket = %socket.display(),
                "--containerd-socket is set but this agent was built without the `oci` feature: OCI pods will not run here"
            );
        }
        #[cfg(not(any(feature = "wasm", feature = "oci")))]
        let _ = data_dir;
        #[cfg(not(feature = "wasm"))]
        let _ = (insecure_registries, network);
        Ok(Runtimes::new(list, changed))
    }

    /// The log sources of every runtime that keeps logs (for the log service).
    pub fn log_stores(&self) -> Vec<Arc<dyn LogSource>> {
        self.list.iter().filter_map(|r| r.log_source()).collect()
    }

    /// The runtime for a class, if this agent has one.
    pub fn for_class(&self, class: PodClass) -> Option<&Arc<dyn Runtime>> {
        self.list.iter().find(|r| r.class() == class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::core::Container;

    fn spec(images: &[&str], class: Option<&str>) -> PodSpec {
        PodSpec {
            containers: images
                .iter()
                .map(|i| Container {
                    name: "c".into(),
                    image: (*i).into(),
                    ..Container::default()
                })
                .collect(),
            runtime_class_name: class.map(Into::into),
            ..PodSpec::default()
        }
    }

    #[test]
    fn classes() {
        assert_eq!(PodClass::of(&spec(&["nginx:1.27"], None)), PodClass::Oci);
        assert_eq!(
            PodClass::of(&spec(&["ghcr.io/x/app:1"], Some("wasmtime"))),
            PodClass::Wasm
        );
        assert_eq!(
            PodClass::of(&spec(&["file:///opt/hello.wasm"], None)),
            PodClass::Wasm
        );
        assert_eq!(
            PodClass::of(&spec(&["https://h/t.wasm#sha256=ab"], None)),
            PodClass::Wasm
        );
        assert_eq!(PodClass::of(&spec(&["a.wasm", "nginx"], None)), PodClass::Oci);
        assert_eq!(PodClass::Oci.handler(), "containerd");
    }
}
