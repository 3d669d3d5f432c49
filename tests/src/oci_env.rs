//! The environment OCI end-to-end tests share: a private containerd and a
//! local registry with the busybox images pushed, `shturman up` on that
//! containerd, and what went on for a failure message.

use crate::Up;
pub use crate::api::is_running_and_ready;
use crate::containerd::{CRI_NAMESPACE, Containerd, tail};
use crate::oci_image;
use crate::registry::Registry;

/// Restart and pull back-off base for these tests (kubelet's is 10 s).
pub const BACKOFF_MS: &str = "500";

/// A private containerd and registry with the busybox images pushed.
pub struct OciEnv {
    // Dropped after the cluster (declared before it), registry first.
    pub registry: Registry,
    pub containerd: Containerd,
    /// `127.0.0.1:PORT/busybox-httpd:1`.
    pub httpd: String,
    /// `127.0.0.1:PORT/busybox:1`.
    pub busybox: String,
    _images: tempfile::TempDir,
}

impl OciEnv {
    /// With an open registry.
    pub fn start() -> OciEnv {
        OciEnv::start_with(None)
    }

    /// With an open registry, or one that wants `creds` (user, password).
    pub fn start_with(creds: Option<(&str, &str)>) -> OciEnv {
        let containerd = Containerd::start().expect("private containerd");
        let registry = match creds {
            Some((u, p)) => Registry::start_with_auth(u, p),
            None => Registry::start(),
        }
        .expect("private registry");
        containerd
            .trust_plain_http(&registry.host())
            .expect("hosts.toml for the registry");
        let images = tempfile::tempdir().expect("temp dir");
        let httpd = oci_image::busybox_httpd(&images.path().join("httpd")).expect("busybox-httpd layout");
        let httpd = registry
            .push_layout(&httpd.dir, "busybox-httpd:1")
            .expect("push busybox-httpd");
        let busybox = oci_image::busybox(&images.path().join("busybox")).expect("busybox layout");
        let busybox = registry
            .push_layout(&busybox.dir, "busybox:1")
            .expect("push busybox");
        OciEnv {
            registry,
            containerd,
            httpd,
            busybox,
            _images: images,
        }
    }

    /// `shturman up` with its agent on this containerd.
    pub fn up(&self, node: &str) -> Up {
        let socket = self.containerd.socket().display().to_string();
        Up::start_with_env(
            Some(node),
            &["--containerd-socket", &socket],
            &[("SHTURMAN_RESTART_BACKOFF_BASE_MS", BACKOFF_MS)],
        )
        .expect("shturman up")
    }

    /// What went on, for a failure message.
    pub fn logs(&self, up: &Up) -> String {
        format!(
            "--- shturman up ---\n{}\n--- containerd (tail) ---\n{}\n--- registry (tail) ---\n{}",
            up.log_text(),
            tail(&self.containerd.log_text(), 40),
            tail(&self.registry.log_text(), 20),
        )
    }

    /// The host pid of a container's process (`ctr tasks ls` in `k8s.io`).
    pub fn pid_of(&self, container_id: &str) -> u32 {
        let id = container_id.trim_start_matches("containerd://");
        let tasks = self
            .containerd
            .ctr_ok(&["-n", CRI_NAMESPACE, "tasks", "ls"])
            .expect("ctr tasks ls");
        tasks
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(id)).then(|| f.next()?.parse().ok()).flatten()
            })
            .unwrap_or_else(|| panic!("no task {id} in:\n{tasks}"))
    }
}

/// The admin bearer token `shturman up` wrote into its `admin.conf`.
pub fn admin_token(up: &Up) -> String {
    std::fs::read_to_string(up.admin_conf())
        .expect("admin.conf")
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .expect("a token in admin.conf")
}
