//! A private containerd (1.6, config version 2) with the CRI plugin, CNI bridge networking and a locally built pause image, started per test in its own temp dir and torn down without leftovers.
//!
//! Layout of the temp dir (`/tmp/ctdXXXXXX`, short: unix socket paths are
//! limited to 107 bytes):
//!
//! ```text
//! c.sock, t.sock      gRPC and ttrpc sockets (no debug or metrics listener)
//! config.toml         the config (see `config_toml`)
//! containerd.log      containerd's stdout and stderr
//! root/ state/        containerd's root and state (pod netns mounts under state/)
//! runc/               runc's state (`--runc-root` for ctr, `Root` for CRI)
//! opt/                the `io.containerd.internal.v1.opt` dir (else /opt/containerd)
//! cni/net.d/          bridge + host-local + portmap conflist; cni/ipam: host-local's data
//! certs.d/            registry hosts dir (`registry.config_path`)
//! images/             the pause image (and others imported): OCI layouts and archives
//! ```
//!
//! Cgroups, as found on the CI/dev machines (a Firecracker VM, kernel 6.18):
//! there is no `/sys/fs/cgroup/cgroup.controllers`: the machine runs cgroup v1
//! in *hybrid* mode (v1 controllers under `/sys/fs/cgroup/<ctrl>`, an empty
//! cgroup2 at `/sys/fs/cgroup/unified`), with `cpu` and `cpuacct` mounted as
//! separate hierarchies rather than the usual co-mounted `cpu,cpuacct`.
//! containerd 1.6.20 + runc 1.1.5 with the cgroupfs driver
//! (`SystemdCgroup = false`; there is no systemd) work on it as they are:
//! runc finds each controller from mountinfo. Nothing in the config is
//! v1-specific, so a cgroup v2 host should work too (not tried: no such
//! machine here). [`cgroup_mode`] reports which one a machine has.
//!
//! Capabilities: we are root, but the bounding set lacks CAP_SYS_RESOURCE,
//! so nothing may lower its `oom_score_adj`; hence
//! `restrict_oom_score_adj = true` (see the config).
//!
//! What is left outside the temp dir while it runs, and how it is cleaned:
//! shim sockets in `/run/containerd/s/` (fixed path in containerd 1.6; the
//! shims remove them when their task is deleted), ctr's IO fifos in
//! `/run/containerd/fifo/`, cgroups under `/sys/fs/cgroup/*/`
//! (`ctr` via [`Containerd::run_flags`] and CRI pods given
//! [`Containerd::cgroup_parent`] use `/<temp dir name>/<id>`; removed on
//! drop), the CNI bridge (deleted on drop), libcni's result cache
//! `/var/lib/cni/results/{<network>,cni-loopback}-<sandbox>-<if>` (deleted on
//! drop), and a claim file for the network id in `$TMPDIR/shturman-cni-claims/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::oci_image::{self, OciLayout};
use crate::wait_for;

/// The CRI plugin's containerd namespace (kubelet's, and the agent's).
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The namespace `ctr` uses by default (the `ctr run` baselines).
pub const CTR_NAMESPACE: &str = "default";
/// Where Debian's containernetworking-plugins installs the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// How long a `ctr` command may take before it is killed.
const CTR_TIMEOUT: Duration = Duration::from_secs(180);

/// Which cgroup hierarchy a machine has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v2 only (`/sys/fs/cgroup/cgroup.controllers` exists).
    Unified,
    /// cgroup v1 controllers plus a cgroup2 mount at `/sys/fs/cgroup/unified`.
    Hybrid,
    /// cgroup v1 only.
    Legacy,
}

/// The cgroup mode of this machine.
pub fn cgroup_mode() -> CgroupMode {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        CgroupMode::Unified
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        CgroupMode::Hybrid
    } else {
        CgroupMode::Legacy
    }
}

/// Whether this process runs as root (effective uid 0, from /proc).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Whether `program` is found on `PATH` (or is an existing path).
pub fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Fails with a clear message when this machine cannot run the harness:
/// not root, or a package missing.
pub fn preflight() -> Result<()> {
    if !is_root() {
        bail!(
            "the containerd harness needs root (containerd, runc, mounts, network namespaces); run the tests as root"
        );
    }
    let needs: [(&str, &str); 11] = [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("runc", "runc"),
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("/usr/lib/cni/host-local", "containernetworking-plugins"),
        ("/usr/lib/cni/loopback", "containernetworking-plugins"),
        ("/usr/lib/cni/portmap", "containernetworking-plugins"),
        (oci_image::BUSYBOX, "busybox-static"),
        ("ip", "iproute2"),
        ("umount", "mount"),
    ];
    let missing: Vec<String> = needs
        .iter()
        .filter(|(p, _)| !on_path(p))
        .map(|(p, pkg)| format!("{p} (Debian package {pkg})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the containerd harness is missing: {}; scripts/setup.sh installs them",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Runs `cmd` (stdin null, stdout and stderr captured) and kills it if it
/// is still running after `timeout`; then its stderr says so.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Readers on threads: a chatty child must not block on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    // Poll every millisecond for the first half second (callers time short
    // commands: `ctr_run_latency` must not be quantised by the poll), then
    // every 10 ms.
    let start = Instant::now();
    let deadline = start + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        let ms = if start.elapsed() < Duration::from_millis(500) {
            1
        } else {
            10
        };
        std::thread::sleep(Duration::from_millis(ms));
    };
    let stdout = out_t.join().unwrap_or_default();
    let mut stderr = err_t.join().unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(format!("\n[killed: still running after {timeout:?}]\n").as_bytes());
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Output of a command that must have succeeded, as text; the error quotes
/// what it printed.
pub fn check_output(what: &str, out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The CNI network of one harness: a bridge and a /24 in 10.128.0.0/10,
/// unique among live harnesses on this machine.
#[derive(Debug)]
pub struct CniNetwork {
    /// The network name (`shturman-e2e-<id>`).
    pub name: String,
    /// The bridge interface (`shtc<id>`, ≤ 15 bytes), created by the bridge
    /// plugin with the first pod, deleted on drop.
    pub bridge: String,
    /// `10.a.b.0/24`.
    pub subnet: String,
    /// `10.a.b.1`, the bridge's address (the pods' gateway).
    pub gateway: String,
    claim: PathBuf,
}

static NETWORK_SEQ: AtomicU32 = AtomicU32::new(0);

impl CniNetwork {
    /// Claims an id: a claim file per id (taken over when its owner process
    /// is gone), and neither the bridge nor the subnet may be in use.
    fn claim() -> Result<CniNetwork> {
        const IDS: u32 = 1 << 14;
        let claims = std::env::temp_dir().join("shturman-cni-claims");
        std::fs::create_dir_all(&claims)?;
        let routes = Command::new("ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            + &Command::new("ip")
                .args(["-4", "route", "show", "table", "all"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
        let me = std::process::id();
        let base = me
            .wrapping_mul(31)
            .wrapping_add(NETWORK_SEQ.fetch_add(1, Ordering::Relaxed).wrapping_mul(7));
        for k in 0..IDS {
            let id = (base.wrapping_add(k)) % IDS;
            let bridge = format!("shtc{id:04x}");
            let (a, b) = (128 + id / 256, id % 256);
            let prefix = format!("10.{a}.{b}.");
            if Path::new("/sys/class/net").join(&bridge).exists() || routes.contains(&prefix) {
                continue;
            }
            let claim = claims.join(format!("{id}"));
            let taken = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim)
            {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A claim of a process that is gone is stale: take it over.
                    let owner = std::fs::read_to_string(&claim).unwrap_or_default();
                    let owner = owner.trim();
                    !owner.is_empty()
                        && owner != me.to_string()
                        && !Path::new("/proc").join(owner).exists()
                        && std::fs::remove_file(&claim).is_ok()
                        && std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&claim)
                            .is_ok()
                }
                Err(e) => return Err(e).context("claiming a CNI network id"),
            };
            if !taken {
                continue;
            }
            std::fs::write(&claim, me.to_string())?;
            return Ok(CniNetwork {
                name: format!("shturman-e2e-{id}"),
                bridge,
                subnet: format!("{prefix}0/24"),
                gateway: format!("{prefix}1"),
                claim,
            });
        }
        bail!("no free CNI network id in 10.128.0.0/10 (stale shtc* bridges? `ip link` lists them)")
    }

    /// The conflist: bridge + host-local (IPAM state under `ipam_dir`), no
    /// masquerading (loopback-only tests need none, and it would leave
    /// iptables rules), and portmap for `hostPort`s (containerd hands it the
    /// sandbox's port mappings; with none it touches nothing).
    fn conflist(&self, ipam_dir: &Path) -> String {
        let v = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": self.subnet, "gateway": self.gateway }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": ipam_dir,
                    },
                },
                { "type": "portmap", "capabilities": { "portMappings": true } },
            ],
        });
        serde_json::to_string_pretty(&v).expect("json")
    }
}

impl Drop for CniNetwork {
    fn drop(&mut self) {
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // libcni's result cache: files named <network>-<container id>-<ifname>.
        if let Ok(rd) = std::fs::read_dir("/var/lib/cni/results") {
            let prefix = format!("{}-", self.name);
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_file(&self.claim);
    }
}

/// A private containerd with the CRI plugin.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    network: CniNetwork,
    pause: OciLayout,
}

impl Containerd {
    /// Starts containerd, waits (with a deadline) until it answers on its
    /// socket, and imports the pause image into `k8s.io`.
    pub fn start() -> Result<Containerd> {
        preflight()?;
        let dir = tempfile::Builder::new()
            .prefix("ctd")
            .tempdir()
            .context("creating the containerd temp dir")?;
        let network = CniNetwork::claim()?;
        let d = dir.path();
        for sub in [
            "root",
            "state",
            "runc",
            "opt",
            "cni/net.d",
            "cni/ipam",
            "certs.d",
            "images",
        ] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        let socket = d.join("c.sock");
        let pause = oci_image::pause(&d.join("images/pause"))?;
        std::fs::write(
            d.join("cni/net.d/10-shturman.conflist"),
            network.conflist(&d.join("cni/ipam")),
        )?;
        std::fs::write(d.join("config.toml"), config_toml(d, &pause.reference()))?;
        let log = d.join("containerd.log");
        let file = std::fs::File::create(&log)?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting containerd")?;
        let mut c = Containerd {
            child: Some(child),
            socket,
            log,
            network,
            pause,
            dir,
        };
        c.wait_ready()?;
        let archive = c.dir.path().join("images/pause.tar");
        c.pause.write_archive(&archive)?;
        c.import_archive(CRI_NAMESPACE, &archive)?;
        Ok(c)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let socket = self.socket.clone();
        wait_for(
            "containerd to answer on its socket",
            Duration::from_secs(30),
            || {
                if let Some(c) = self.child.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    return Some(Err(anyhow::anyhow!(
                        "containerd exited early: {status}\n--- containerd.log ---\n{}",
                        self.log_text()
                    )));
                }
                if !socket.exists() {
                    return None;
                }
                let out = run_with_timeout(
                    Command::new("ctr").arg("--address").arg(&socket).arg("version"),
                    Duration::from_secs(5),
                )
                .ok()?;
                out.status.success().then_some(Ok(()))
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}\n--- containerd.log ---\n{}", self.log_text()))?
    }

    /// The gRPC socket (what `ctr --address` and a CRI client dial).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The harness's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// runc's state dir for this harness (pass as `ctr run --runc-root`).
    pub fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }

    /// The cgroup parent of this harness's containers (`/ctdXXXXXX`, named
    /// after the temp dir): `ctr run --cgroup PARENT/ID` (see
    /// [`Containerd::run_flags`]), and the pod sandboxes' `cgroup_parent`
    /// in CRI requests. Removed from every hierarchy on drop. Without it,
    /// ctr puts containers under `/<namespace>/<id>` and leaves the shared
    /// `/<namespace>` dirs behind.
    pub fn cgroup_parent(&self) -> String {
        let name = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        format!("/{}", name.unwrap_or_default())
    }

    /// `ctr run` flags that keep container `id`'s runc state and cgroup
    /// inside this harness: `--runc-root DIR/runc --cgroup PARENT/ID`.
    pub fn run_flags(&self, id: &str) -> Vec<String> {
        vec![
            "--runc-root".into(),
            self.runc_root().display().to_string(),
            "--cgroup".into(),
            format!("{}/{id}", self.cgroup_parent()),
        ]
    }

    /// The CNI network pods get.
    pub fn network(&self) -> &CniNetwork {
        &self.network
    }

    /// The sandbox image reference the CRI plugin is configured with.
    pub fn pause_image(&self) -> String {
        self.pause.reference()
    }

    /// What containerd logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `ctr --address SOCK ARGS…` (killed after 3 minutes).
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_within(args, CTR_TIMEOUT)
    }

    fn ctr_within(&self, args: &[&str], timeout: Duration) -> Output {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .args(args)
            .env_remove("CONTAINERD_NAMESPACE");
        run_with_timeout(&mut cmd, timeout).expect("spawning ctr")
    }

    /// [`Containerd::ctr`] that must succeed; returns its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<String> {
        check_output(&format!("ctr {}", args.join(" ")), self.ctr(args))
    }

    /// `ctr -n NAMESPACE images import` of an OCI archive (unpacked for overlayfs).
    pub fn import_archive(&self, namespace: &str, archive: &Path) -> Result<()> {
        let a = archive.to_string_lossy();
        self.ctr_ok(&["-n", namespace, "images", "import", &a])?;
        Ok(())
    }

    /// Imports an OCI layout (written as an archive next to it) into `namespace`.
    pub fn import_layout(&self, namespace: &str, layout: &OciLayout) -> Result<()> {
        let archive = self
            .dir
            .path()
            .join("images")
            .join(format!("{}.tar", layout.descriptor.hex()));
        layout.write_archive(&archive)?;
        self.import_archive(namespace, &archive)
    }

    /// Lets containerd (the CRI plugin, and ctr with `--hosts-dir`) pull from
    /// the plain-http registry at `host` (`127.0.0.1:PORT`): writes
    /// `certs.d/HOST/hosts.toml`. The CRI plugin reads it at every pull.
    pub fn trust_plain_http(&self, host: &str) -> Result<()> {
        let d = self.dir.path().join("certs.d").join(host);
        std::fs::create_dir_all(&d)?;
        std::fs::write(
            d.join("hosts.toml"),
            format!(
                "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
            ),
        )?;
        Ok(())
    }

    /// The registry hosts dir (for `ctr images pull --hosts-dir`).
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// Kills and deletes every task and container in every namespace;
    /// returns the container ids.
    fn remove_tasks(&self) -> Vec<String> {
        // Short deadlines: this runs in drop, also after a failed start.
        let t = Duration::from_secs(20);
        let lines = |args: &[&str]| -> Vec<String> {
            let out = self.ctr_within(args, t);
            if !out.status.success() {
                return Vec::new();
            }
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        };
        let mut ids = Vec::new();
        for ns in lines(&["namespaces", "ls", "-q"]) {
            for task in lines(&["-n", &ns, "tasks", "ls", "-q"]) {
                let _ = self.ctr_within(&["-n", &ns, "tasks", "kill", "-a", "-s", "SIGKILL", &task], t);
                let _ = self.ctr_within(&["-n", &ns, "tasks", "delete", "-f", &task], t);
            }
            for c in lines(&["-n", &ns, "containers", "ls", "-q"]) {
                let _ = self.ctr_within(&["-n", &ns, "containers", "rm", &c], t);
                ids.push(c);
            }
        }
        ids
    }

    /// Stops everything: tasks, containerd, stray shims and their children,
    /// mounts under the temp dir (rootfs, shm, pod netns), cgroups, and
    /// libcni's cache entries of pods that never got a CNI DEL.
    fn shutdown(&mut self) {
        let mut ids = Vec::new();
        if self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        {
            ids = self.remove_tasks();
        }
        if let Some(mut c) = self.child.take() {
            let _ = crate::terminate(&mut c, Duration::from_secs(10));
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        let dir = self.dir.path().to_string_lossy().into_owned();
        kill_shims(&dir);
        unmount_under(self.dir.path());
        remove_cgroups(&self.cgroup_parent());
        // `<network>-<sandbox id>-<ifname>`, including the CRI plugin's own
        // `cni-loopback-<sandbox id>-lo` (CniNetwork's drop clears the rest).
        if let Ok(rd) = std::fs::read_dir("/var/lib/cni/results") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if ids.iter().any(|id| name.contains(&format!("-{id}-"))) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.shutdown();
        // The network (bridge, claim) and the temp dir go with the fields.
    }
}

/// The config.toml of a harness in `dir` with sandbox image `pause`.
fn config_toml(dir: &Path, pause: &str) -> String {
    let d = dir.display();
    format!(
        r#"# Private containerd for Shturman's end-to-end tests (tests/src/containerd.rs).
version = 2
root = "{d}/root"
state = "{d}/state"
oom_score = 0
# Snapshotters that cannot work here (no btrfs/zfs file system, no
# devicemapper pool, aufs is gone from modern kernels) and tracing.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{d}/c.sock"

[ttrpc]
  address = "{d}/t.sock"

# Empty addresses: no debug or metrics listeners.
[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{pause}"
    # Port 0: each harness's streaming server (exec/attach/port-forward) on
    # its own free loopback port; the default 10010 would clash.
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    # No systemd here: cgroupfs driver.
    systemd_cgroup = false
    enable_selinux = false
    # Pod network namespaces under state/, not /var/run/netns.
    netns_mounts_under_state_dir = true
    max_container_log_line_size = 16384
    # These machines drop CAP_SYS_RESOURCE (CapBnd lacks bit 24), so no
    # process may lower its oom_score_adj: without this, runc fails on the
    # sandbox's -998 ("failed to update /proc/self/oom_score_adj: Permission
    # denied", surfacing as "can't get final child's PID from pipe: EOF").
    # With it, adjustments below containerd's own score are clamped to it.
    restrict_oom_score_adj = true

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "{d}/runc"

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{cni}"
      conf_dir = "{d}/cni/net.d"
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".registry]
      # hosts.toml per registry: certs.d/127.0.0.1:PORT/hosts.toml for plain http.
      config_path = "{d}/certs.d"
"#,
        cni = CNI_BIN_DIR,
    )
}

/// Parent pid of `pid`, from /proc/PID/stat.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills (SIGKILL) shims whose command line mentions `dir`, and all their
/// descendants first (a shim's children would otherwise outlive it).
fn kill_shims(dir: &str) {
    let pids = all_pids();
    let shims: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains("containerd-shim") && cmdline.contains(dir)
        })
        .collect();
    if shims.is_empty() {
        return;
    }
    let parents: Vec<(u32, u32)> = pids
        .iter()
        .filter_map(|&p| parent_of(p).map(|pp| (p, pp)))
        .collect();
    let mut doomed: Vec<u32> = Vec::new();
    let mut frontier = shims.clone();
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parents {
            if parent == p && !doomed.contains(&child) {
                doomed.push(child);
                frontier.push(child);
            }
        }
    }
    for p in doomed.iter().rev().chain(shims.iter()) {
        let _ = Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let _ = wait_for("stray shims to exit", Duration::from_secs(5), || {
        shims
            .iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
            .then_some(())
    });
}

/// Mount points at or under `dir`, deepest first (from /proc/self/mountinfo;
/// octal escapes such as `\040` decoded).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(n) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(n);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything at or under `dir` (lazily when busy).
fn unmount_under(dir: &Path) {
    for _ in 0..3 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let ok = Command::new("umount")
                .arg(&m)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&m)
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Removes the cgroup `path` (absolute, e.g. `/ctdXXXXXX`) and the empty
/// cgroups under it from every mounted hierarchy (v1 and v2), deepest first.
fn remove_cgroups(path: &str) {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2") {
            remove_dir_tree(&Path::new(&unescape_mount(f[1])).join(rel));
        }
    }
}

/// rmdir of a cgroup tree (cgroup dirs hold only control files, which go with rmdir).
fn remove_dir_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dir_tree(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}

/// Times `n` sequential `ctr run --rm [run_flags] IMAGE ID true` in the
/// `default` namespace (unique ids; `image` must be imported there; the
/// time includes ctr's own start, as a user's command would): the anchor the
/// Wasm pod-start benchmark compares against. Panics on a failed run.
pub fn ctr_run_latency(c: &Containerd, image: &str, n: usize) -> Vec<Duration> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    (0..n)
        .map(|_| {
            let id = format!(
                "bench-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            let flags = c.run_flags(&id);
            let mut args = vec!["-n", CTR_NAMESPACE, "run", "--rm"];
            args.extend(flags.iter().map(String::as_str));
            args.extend([image, &id, "true"]);
            let t = Instant::now();
            let out = c.ctr(&args);
            let took = t.elapsed();
            if let Err(e) = check_output(&format!("ctr run --rm {image} {id} true"), out) {
                panic!("{e}\n--- containerd.log (tail) ---\n{}", tail(&c.log_text(), 40));
            }
            took
        })
        .collect()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
