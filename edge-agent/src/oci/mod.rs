//! OCI pods through containerd's CRI service (`runtime.v1`), kubelet's
//! route: containerd makes the sandboxes (pause container, network
//! namespace, CNI), pulls images, sets cgroups and writes logs; the agent
//! drives it and maps what it reports to Kubernetes statuses. Feature `oci`.
//!
//! - [`spec`]: a pod as CRI sandbox and container configs (pure);
//! - [`image`]: registries, pull policies, `imagePullSecrets` credentials (pure);
//! - [`status`]: CRI statuses as Kubernetes container states and pod IPs (pure);
//! - [`files`]: the pod's log dirs and volumes on the node;
//! - [`logs`]: the CRI log files as a [`LogSource`](crate::logs_service::LogSource);
//! - [`client`]: the CRI connection (lazy, reconnecting, timeouts);
//! - [`runtime`]: [`OciRuntime`], the agent's [`Runtime`](crate::runtime::Runtime) for OCI pods.

pub mod client;
pub mod files;
pub mod image;
pub mod logs;
pub mod runtime;
pub mod spec;
pub mod status;

pub use runtime::{ExecOutput, OciError, OciExec, OciOptions, OciRuntime};
