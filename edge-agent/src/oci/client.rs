//! The connection to containerd's CRI service (`runtime.v1.RuntimeService`
//! and `ImageService`) over its unix socket: connected on first use (so the
//! agent starts before containerd does), dropped after a transport failure
//! and dialled again on the next call, every call bounded by a timeout.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    AuthConfig, ContainerConfig, ContainerFilter, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ExecSyncResponse, ImageSpec, ImageStatusRequest,
    ListContainersRequest, ListPodSandboxRequest, PodSandbox, PodSandboxConfig, PodSandboxFilter,
    PodSandboxStatus, PodSandboxStatusRequest, PullImageRequest, RemoveContainerRequest,
    RemovePodSandboxRequest, ReopenContainerLogRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use tokio::net::UnixStream;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

/// Timeouts of CRI calls.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Dialling the socket.
    pub connect: Duration,
    /// Status and list calls.
    pub query: Duration,
    /// Calls that change something (kubelet's `--runtime-request-timeout`).
    pub mutate: Duration,
    /// An image pull.
    pub pull: Duration,
    /// Added to a StopContainer's grace period.
    pub stop_slack: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            query: Duration::from_secs(15),
            mutate: Duration::from_secs(120),
            pull: Duration::from_secs(900),
            stop_slack: Duration::from_secs(30),
        }
    }
}

/// A CRI call that failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error(
        "cannot reach containerd's CRI service at {socket}: {message} (is containerd running, and is its cri plugin enabled? check --containerd-socket)"
    )]
    Connect { socket: String, message: String },
    #[error(
        "containerd at {socket} does not serve CRI runtime.v1 ({message}); containerd 1.6 or newer with the cri plugin is needed"
    )]
    NoCriV1 { socket: String, message: String },
    #[error("{call} did not answer within {}s", timeout.as_secs())]
    Timeout { call: &'static str, timeout: Duration },
    #[error("{call}: {message}")]
    Status {
        call: &'static str,
        code: Code,
        message: String,
    },
}

impl CriError {
    /// The thing asked for does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            CriError::Status {
                code: Code::NotFound,
                ..
            }
        )
    }

    /// The runtime's own words, without the call's name (for statuses).
    pub fn message(&self) -> String {
        match self {
            CriError::Status { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// Whether the connection itself failed (it is dialled again next time).
    fn is_transport(&self) -> bool {
        match self {
            CriError::Connect { .. } | CriError::Timeout { .. } => true,
            // containerd answers most failures with `Unknown`: only
            // `Unavailable` means the connection is gone.
            CriError::Status { code, .. } => *code == Code::Unavailable,
            CriError::NoCriV1 { .. } => false,
        }
    }
}

/// The CRI client.
pub struct CriClient {
    socket: PathBuf,
    timeouts: Timeouts,
    channel: tokio::sync::Mutex<Option<Channel>>,
}

/// Dials `socket` (any URI works: the connector ignores it).
async fn dial(socket: &Path, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    Endpoint::from_static("http://containerd.invalid")
        .connect_timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

impl CriClient {
    /// A client for `socket`; nothing is dialled yet.
    pub fn new(socket: impl Into<PathBuf>, timeouts: Timeouts) -> CriClient {
        CriClient {
            socket: socket.into(),
            timeouts,
            channel: tokio::sync::Mutex::new(None),
        }
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The call timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn socket_name(&self) -> String {
        self.socket.display().to_string()
    }

    /// The channel, dialled (and checked for CRI v1) when there is none.
    async fn channel(&self) -> Result<Channel, CriError> {
        let mut slot = self.channel.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let channel = dial(&self.socket, self.timeouts.connect)
            .await
            .map_err(|e| CriError::Connect {
                socket: self.socket_name(),
                message: error_chain(&e),
            })?;
        let mut rt = RuntimeServiceClient::new(channel.clone());
        let version = tokio::time::timeout(self.timeouts.query, rt.version(VersionRequest::default())).await;
        match version {
            Ok(Ok(v)) => {
                let v = v.into_inner();
                tracing::info!(socket = %self.socket.display(), runtime = %v.runtime_name,
                    version = %v.runtime_version, cri = %v.runtime_api_version, "connected to the CRI service");
            }
            Ok(Err(s)) if s.code() == Code::Unimplemented => {
                return Err(CriError::NoCriV1 {
                    socket: self.socket_name(),
                    message: s.message().to_string(),
                });
            }
            Ok(Err(s)) => {
                return Err(CriError::Connect {
                    socket: self.socket_name(),
                    message: s.message().to_string(),
                });
            }
            Err(_) => {
                return Err(CriError::Connect {
                    socket: self.socket_name(),
                    message: "Version did not answer".into(),
                });
            }
        }
        *slot = Some(channel.clone());
        Ok(channel)
    }

    async fn forget(&self) {
        *self.channel.lock().await = None;
    }

    async fn runtime(&self) -> Result<RuntimeServiceClient<Channel>, CriError> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }

    async fn images(&self) -> Result<ImageServiceClient<Channel>, CriError> {
        Ok(ImageServiceClient::new(self.channel().await?))
    }

    /// Runs one call with `timeout`; a transport failure drops the channel.
    async fn call<T>(
        &self,
        call: &'static str,
        timeout: Duration,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CriError> {
        let result = match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(CriError::Status {
                call,
                code: s.code(),
                message: s.message().to_string(),
            }),
            Err(_) => Err(CriError::Timeout { call, timeout }),
        };
        if let Err(e) = &result
            && e.is_transport()
        {
            self.forget().await;
        }
        result
    }

    /// Checks the connection (dials it if needed).
    pub async fn connect(&self) -> Result<(), CriError> {
        self.channel().await.map(drop)
    }

    /// The image's id (`sha256:…`) if it is present on the node.
    pub async fn image_present(&self, image: &str) -> Result<Option<String>, CriError> {
        let mut c = self.images().await?;
        let req = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..ImageSpec::default()
            }),
            verbose: false,
        };
        let r = self
            .call("ImageStatus", self.timeouts.query, c.image_status(req))
            .await?;
        Ok(r.image.map(|i| i.id))
    }

    /// Pulls an image; returns its reference (`sha256:…`).
    pub async fn pull(
        &self,
        image: ImageSpec,
        auth: Option<AuthConfig>,
        sandbox: Option<PodSandboxConfig>,
    ) -> Result<String, CriError> {
        let mut c = self.images().await?;
        let req = PullImageRequest {
            image: Some(image),
            auth,
            sandbox_config: sandbox,
        };
        let r = self
            .call("PullImage", self.timeouts.pull, c.pull_image(req))
            .await?;
        Ok(r.image_ref)
    }

    /// Creates and starts a sandbox; returns its id.
    pub async fn run_sandbox(&self, config: PodSandboxConfig) -> Result<String, CriError> {
        let mut c = self.runtime().await?;
        let req = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        let r = self
            .call("RunPodSandbox", self.timeouts.mutate, c.run_pod_sandbox(req))
            .await?;
        Ok(r.pod_sandbox_id)
    }

    /// A sandbox's status.
    pub async fn sandbox_status(&self, id: &str) -> Result<Option<PodSandboxStatus>, CriError> {
        let mut c = self.runtime().await?;
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        let r = self
            .call("PodSandboxStatus", self.timeouts.query, c.pod_sandbox_status(req))
            .await?;
        Ok(r.status)
    }

    /// The sandboxes carrying all of `labels`.
    pub async fn sandboxes(&self, labels: HashMap<String, String>) -> Result<Vec<PodSandbox>, CriError> {
        let mut c = self.runtime().await?;
        let req = ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: labels,
                ..PodSandboxFilter::default()
            }),
        };
        let r = self
            .call("ListPodSandbox", self.timeouts.query, c.list_pod_sandbox(req))
            .await?;
        Ok(r.items)
    }

    /// Stops a sandbox (its containers are killed, its network torn down).
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime().await?;
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call("StopPodSandbox", self.timeouts.mutate, c.stop_pod_sandbox(req))
            .await
            .map(drop)
    }

    /// Removes a stopped sandbox and its containers.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime().await?;
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call(
            "RemovePodSandbox",
            self.timeouts.mutate,
            c.remove_pod_sandbox(req),
        )
        .await
        .map(drop)
    }

    /// Creates a container in a sandbox; returns its id.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox: PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut c = self.runtime().await?;
        let req = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox),
        };
        let r = self
            .call("CreateContainer", self.timeouts.mutate, c.create_container(req))
            .await?;
        Ok(r.container_id)
    }

    /// Starts a created container.
    pub async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime().await?;
        let req = StartContainerRequest {
            container_id: id.to_string(),
        };
        self.call("StartContainer", self.timeouts.mutate, c.start_container(req))
            .await
            .map(drop)
    }

    /// Stops a container: SIGTERM (or the image's stop signal), SIGKILL
    /// after `grace`.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), CriError> {
        let mut c = self.runtime().await?;
        let req = StopContainerRequest {
            container_id: id.to_string(),
            timeout: i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
        };
        let timeout = grace.saturating_add(self.timeouts.stop_slack);
        self.call("StopContainer", timeout, c.stop_container(req))
            .await
            .map(drop)
    }

    /// Removes a container.
    pub async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime().await?;
        let req = RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.call("RemoveContainer", self.timeouts.mutate, c.remove_container(req))
            .await
            .map(drop)
    }

    /// A container's status.
    pub async fn container_status(&self, id: &str) -> Result<Option<ContainerStatus>, CriError> {
        let mut c = self.runtime().await?;
        let req = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        let r = self
            .call("ContainerStatus", self.timeouts.query, c.container_status(req))
            .await?;
        Ok(r.status)
    }

    /// The containers of a sandbox.
    pub async fn containers(&self, sandbox_id: &str) -> Result<Vec<k8s_cri::v1::Container>, CriError> {
        let mut c = self.runtime().await?;
        let req = ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: sandbox_id.to_string(),
                ..ContainerFilter::default()
            }),
        };
        let r = self
            .call("ListContainers", self.timeouts.query, c.list_containers(req))
            .await?;
        Ok(r.containers)
    }

    /// Asks the runtime to reopen a container's log file (after a rotation).
    pub async fn reopen_log(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime().await?;
        let req = ReopenContainerLogRequest {
            container_id: id.to_string(),
        };
        self.call(
            "ReopenContainerLog",
            self.timeouts.query,
            c.reopen_container_log(req),
        )
        .await
        .map(drop)
    }

    /// Runs `cmd` in a container and waits up to `timeout` for it (exec probes).
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecSyncResponse, CriError> {
        let mut c = self.runtime().await?;
        let req = ExecSyncRequest {
            container_id: id.to_string(),
            cmd,
            timeout: i64::try_from(timeout.as_secs().max(1)).unwrap_or(i64::MAX),
        };
        let bound = timeout.saturating_add(self.timeouts.query);
        self.call("ExecSync", bound, c.exec_sync(req)).await
    }
}

/// An error and its sources, in one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_a_clear_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let client = CriClient::new(dir.path().join("none.sock"), Timeouts::default());
        let e = client.connect().await.unwrap_err();
        assert!(matches!(e, CriError::Connect { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("none.sock") && text.contains("--containerd-socket"),
            "{text}"
        );
        assert!(!e.is_not_found());
        let nf = CriError::Status {
            call: "ContainerStatus",
            code: Code::NotFound,
            message: "container \"x\" in namespace \"k8s.io\": not found".into(),
        };
        assert!(nf.is_not_found());
        assert_eq!(nf.message(), "container \"x\" in namespace \"k8s.io\": not found");
    }
}
