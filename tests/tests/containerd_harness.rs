//! The containerd + registry harness against the real parts: a private containerd with CRI, locally built OCI images, a loopback registry with and without auth, and a teardown that leaves nothing behind.
//!
//! Needs root and scripts/setup.sh's packages; each test says what is missing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use shturman_e2e::containerd::{
    self, CRI_NAMESPACE, CTR_NAMESPACE, Containerd, check_output, ctr_run_latency, mounts_under,
};
use shturman_e2e::oci_image::{self, INDEX_HTML, ImageSpec, Platform};
use shturman_e2e::registry::Registry;
use shturman_e2e::{stderr, stdout, wait_for};

/// Image references listed in `namespace`.
fn images(c: &Containerd, namespace: &str) -> Vec<String> {
    c.ctr_ok(&["-n", namespace, "images", "ls", "-q"])
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The manifest digest `ctr images ls` shows for `reference`.
fn image_digest(c: &Containerd, namespace: &str, reference: &str) -> Option<String> {
    let out = c.ctr_ok(&["-n", namespace, "images", "ls"]).unwrap();
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(reference))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("sha256:")))
        .map(str::to_string)
}

#[test]
fn containerd_starts_answers_and_serves_cri() -> Result<()> {
    let c = Containerd::start()?;
    assert!(
        c.socket().as_os_str().len() < 100,
        "socket path too long for unix sockets: {}",
        c.socket().display()
    );
    let v = c.ctr_ok(&["version"])?;
    assert!(v.contains("Server:"), "{v}");
    let plugins = c.ctr_ok(&["plugins", "ls"])?;
    let cri = plugins
        .lines()
        .find(|l| l.contains("io.containerd.grpc.v1") && l.split_whitespace().nth(1) == Some("cri"))
        .with_context(|| format!("no CRI plugin in:\n{plugins}"))?;
    assert!(
        cri.trim_end().ends_with("ok"),
        "CRI plugin not ok: {cri}\n{}",
        c.log_text()
    );
    let overlay = plugins
        .lines()
        .find(|l| l.contains("io.containerd.snapshotter.v1") && l.contains("overlayfs"))
        .context("no overlayfs snapshotter")?;
    assert!(overlay.trim_end().ends_with("ok"), "{overlay}");
    // The sandbox image is there for the CRI plugin, under the configured name.
    assert!(
        images(&c, CRI_NAMESPACE).contains(&c.pause_image()),
        "pause image missing: {:?}",
        images(&c, CRI_NAMESPACE)
    );
    // The CRI plugin found the CNI conflist (else it logs "no network config found").
    let log = c.log_text();
    assert!(!log.contains("no network config found"), "{log}");
    eprintln!("cgroup mode: {:?}", containerd::cgroup_mode());
    Ok(())
}

/// `ctr run OPTS [harness flags] IMAGE ID ARGS…` in the `default` namespace.
fn ctr_run(c: &Containerd, opts: &[&str], image: &str, id: &str, args: &[&str]) -> std::process::Output {
    let flags = c.run_flags(id);
    let mut all = vec!["run"];
    all.extend(opts);
    all.extend(flags.iter().map(String::as_str));
    all.push(image);
    all.push(id);
    all.extend(args);
    c.ctr(&all)
}

#[test]
fn ctr_run_of_local_busybox() -> Result<()> {
    let c = Containerd::start()?;
    let layout = oci_image::busybox(&c.dir().join("images/busybox"))?;
    c.import_layout(CTR_NAMESPACE, &layout)?;
    let image = layout.reference();
    let out = ctr_run(&c, &["--rm"], &image, "t-true", &["true"]);
    assert!(
        out.status.success(),
        "ctr run true: {}\n{}",
        stderr(&out),
        c.log_text()
    );

    let out = ctr_run(&c, &["--rm"], &image, "t-echo", &["echo", "hi"]);
    assert!(out.status.success(), "ctr run echo: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "hi");

    // A failing command's exit code comes through.
    let out = ctr_run(&c, &["--rm"], &image, "t-exit", &["sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let times = ctr_run_latency(&c, &image, 5);
    assert_eq!(times.len(), 5);
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    eprintln!("ctr run --rm busybox true, 5 runs (ms, sorted): {ms:.1?}");
    // --rm cleaned up after every run.
    assert_eq!(c.ctr_ok(&["containers", "ls", "-q"])?.trim(), "");
    Ok(())
}

#[test]
fn image_pushed_to_registry_is_pulled_by_containerd() -> Result<()> {
    let c = Containerd::start()?;
    let reg = Registry::start()?;
    let layout = oci_image::busybox_httpd(&c.dir().join("images/httpd"))?;
    let reference = reg.push_layout(&layout.dir, "shturman/busybox-httpd:v1")?;
    assert_eq!(reference, format!("{}/shturman/busybox-httpd:v1", reg.host()));

    // ctr's own route to a plain-http registry…
    let out = c.ctr(&["-n", CRI_NAMESPACE, "images", "pull", "--plain-http", &reference]);
    check_output("ctr images pull --plain-http", out)?;
    // …pulled exactly what was built (skopeo kept the digests).
    assert_eq!(
        image_digest(&c, CRI_NAMESPACE, &reference).as_deref(),
        Some(layout.descriptor.digest.as_str())
    );
    // …and the CRI plugin's route: the hosts dir (certs.d/HOST/hosts.toml).
    c.trust_plain_http(&reg.host())?;
    let hosts = c.hosts_dir().display().to_string();
    c.ctr_ok(&["-n", CRI_NAMESPACE, "images", "rm", &reference])?;
    let out = c.ctr(&[
        "-n",
        CRI_NAMESPACE,
        "images",
        "pull",
        "--hosts-dir",
        &hosts,
        &reference,
    ]);
    check_output("ctr images pull --hosts-dir", out)?;
    assert!(images(&c, CRI_NAMESPACE).contains(&reference));

    // A multi-arch image (amd64 + arm64 under one index) goes up whole, and
    // containerd picks this host's platform from it.
    let specs: Vec<ImageSpec> = ["amd64", "arm64"]
        .iter()
        .map(|arch| {
            let layer = oci_image::Layer::new().file("arch", 0o644, *arch);
            ImageSpec::new(layer).platform(Platform::linux(arch))
        })
        .collect();
    let multi = oci_image::write_multi_arch(
        &c.dir().join("images/multi"),
        "shturman.local/multi",
        "v1",
        &specs,
    )?;
    let multi_ref = reg.push_layout(&multi.dir, "shturman/multi:v1")?;
    let out = c.ctr(&[
        "-n",
        CRI_NAMESPACE,
        "images",
        "pull",
        "--hosts-dir",
        &hosts,
        &multi_ref,
    ]);
    check_output("ctr images pull (multi-arch)", out)?;
    let listing = c.ctr_ok(&["-n", CRI_NAMESPACE, "images", "ls"])?;
    let line = listing
        .lines()
        .find(|l| l.starts_with(&multi_ref))
        .with_context(|| format!("{multi_ref} not listed:\n{listing}"))?;
    assert!(line.contains(&multi.descriptor.digest), "{line}");
    assert!(
        line.contains("linux/amd64") && line.contains("linux/arm64"),
        "{line}"
    );

    let plugins = c.ctr_ok(&["plugins", "ls"])?;
    assert!(
        plugins.lines().any(|l| l.contains("io.containerd.grpc.v1")
            && l.contains(" cri ")
            && l.trim_end().ends_with("ok")),
        "{plugins}"
    );
    Ok(())
}

#[test]
fn registry_auth_rejects_anonymous_pulls() -> Result<()> {
    let c = Containerd::start()?;
    let reg = Registry::start_with_auth("fleet", "s3cret-pass")?;
    assert_eq!(reg.v2_status(None), Some(401));
    assert_eq!(reg.v2_status(Some(("fleet", "wrong"))), Some(401));
    assert_eq!(reg.v2_status(Some(("fleet", "s3cret-pass"))), Some(200));

    let layout = oci_image::busybox(&c.dir().join("images/busybox"))?;
    let reference = reg.push_layout(&layout.dir, "private/busybox:1")?;

    let anon = c.ctr(&["-n", CRI_NAMESPACE, "images", "pull", "--plain-http", &reference]);
    assert!(
        !anon.status.success(),
        "anonymous pull succeeded: {}",
        stdout(&anon)
    );
    let why = stderr(&anon);
    assert!(
        why.contains("401") || why.to_lowercase().contains("unauthorized"),
        "{why}"
    );

    let out = c.ctr(&[
        "-n",
        CRI_NAMESPACE,
        "images",
        "pull",
        "--plain-http",
        "--user",
        "fleet:s3cret-pass",
        &reference,
    ]);
    check_output("credentialed pull", out)?;
    assert!(images(&c, CRI_NAMESPACE).contains(&reference));
    Ok(())
}

/// Dropping the harness kills containerd, its shims and their containers
/// (a ctr container and a CRI pod left running), unmounts everything under
/// its dir (rootfs, shm, the pod's netns), deletes the bridge, the cgroups
/// and the dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_leaves_nothing_behind() -> Result<()> {
    use k8s_cri::v1::RunPodSandboxRequest;
    use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;

    let c = Containerd::start()?;
    let layout = oci_image::busybox(&c.dir().join("images/busybox"))?;
    c.import_layout(CTR_NAMESPACE, &layout)?;
    let out = ctr_run(&c, &["-d"], &layout.reference(), "sleeper", &["sleep", "600"]);
    check_output("ctr run -d sleeper", out)?;
    let cgroup = c.cgroup_parent();
    let cgroup_dirs: Vec<PathBuf> = ["", "pids", "memory", "cpu", "unified"]
        .iter()
        .map(|h| Path::new("/sys/fs/cgroup").join(h).join(&cgroup[1..]))
        .collect();
    assert!(
        cgroup_dirs.iter().any(|d| d.join("sleeper").exists()),
        "the container's cgroup is not under {cgroup}"
    );
    // A pod sandbox (netns, veth on the bridge, shm mount), never stopped.
    let mut rt = RuntimeServiceClient::new(cri::connect(c.socket()).await?);
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cri::sandbox_config(&c, "left-running")?),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("RunPodSandbox: {e}\n{}", containerd::tail(&c.log_text(), 30)))?
        .into_inner()
        .pod_sandbox_id;
    let cni_cache = || -> Vec<String> {
        std::fs::read_dir("/var/lib/cni/results")
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(&pod))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(!cni_cache().is_empty(), "libcni cached no result for the pod");
    let bridge = c.network().bridge.clone();
    assert!(
        Path::new("/sys/class/net").join(&bridge).exists(),
        "no bridge {bridge}"
    );
    let dir = c.dir().to_path_buf();
    let dir_s = dir.display().to_string();
    let mounts = mounts_under(&dir);
    assert!(
        mounts.iter().any(|m| m.to_string_lossy().contains("/netns/")),
        "{mounts:?}"
    );
    assert!(!processes_mentioning(&dir_s).is_empty());
    drop(rt);
    drop(c);
    assert_eq!(processes_mentioning(&dir_s), Vec::<String>::new());
    assert_eq!(mounts_under(&dir), Vec::<PathBuf>::new());
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(
        !Path::new("/sys/class/net").join(&bridge).exists(),
        "bridge {bridge} left"
    );
    for d in &cgroup_dirs {
        assert!(!d.exists(), "cgroup {} left", d.display());
    }
    assert_eq!(cni_cache(), Vec::<String>::new(), "libcni cache entries left");
    // The containers' processes (sleep 600, the pause loop) are gone too.
    let sleepers: Vec<String> = processes_mentioning("sleep 600");
    assert!(sleepers.is_empty(), "{sleepers:?}");
    Ok(())
}

/// Command lines of processes whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| {
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(needle).then_some(cmd)
        })
        .collect()
}

/// A CRI client (`runtime.v1`) on the harness's socket, as kubelet (and the
/// agent's OCI runtime) talks to containerd.
mod cri {
    use std::path::Path;

    use hyper_util::rt::TokioIo;
    use k8s_cri::v1::{
        LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
        PodSandboxMetadata,
    };
    use shturman_e2e::containerd::Containerd;
    use tokio::net::UnixStream;
    use tonic::transport::{Channel, Endpoint, Uri};

    /// Dials `socket` (the URI is a placeholder: the connector ignores it).
    pub async fn connect(socket: &Path) -> anyhow::Result<Channel> {
        let path = socket.to_path_buf();
        Ok(Endpoint::from_static("http://containerd.invalid")
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
            }))
            .await?)
    }

    /// A pod sandbox config as kubelet sends it: its own network, IPC and
    /// UTS namespaces, a PID namespace per container, logs under the
    /// harness's dir (`pods/<uid>`), and a cgroup under the harness's parent.
    pub fn sandbox_config(c: &Containerd, name: &str) -> anyhow::Result<PodSandboxConfig> {
        let uid = format!("uid-{name}-{}", std::process::id());
        let logs = c.dir().join("pods").join(&uid);
        std::fs::create_dir_all(&logs)?;
        Ok(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod{uid}", c.cgroup_parent()),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..NamespaceOption::default()
                    }),
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        })
    }
}

/// kubelet's route end to end: the CRI service pulls from the loopback
/// registry (hosts.toml for plain http, credentials in the request), runs a
/// pod sandbox (local pause image, CNI bridge, cgroup under the harness's
/// parent) and the busybox-httpd container in it, which serves its page on
/// port 80 of the pod IP; stopping and removing the pod leaves no netns
/// mount behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_runs_a_pod_from_the_registry() -> Result<()> {
    use k8s_cri::v1::image_service_client::ImageServiceClient;
    use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
    use k8s_cri::v1::{
        AuthConfig, ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec,
        LinuxContainerConfig, PodSandboxStatusRequest, PullImageRequest, RemovePodSandboxRequest,
        RunPodSandboxRequest, StartContainerRequest, StatusRequest, StopPodSandboxRequest, VersionRequest,
    };

    let c = Containerd::start()?;
    let reg = Registry::start_with_auth("kubelet", "pull-secret")?;
    let layout = oci_image::busybox_httpd(&c.dir().join("images/httpd"))?;
    let image = reg.push_layout(&layout.dir, "shturman/httpd:v1")?;
    c.trust_plain_http(&reg.host())?;

    let channel = cri::connect(c.socket()).await?;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    let mut images = ImageServiceClient::new(channel);
    let v = rt
        .version(VersionRequest { version: "v1".into() })
        .await?
        .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("containerd", "v1")
    );
    let status = rt.status(StatusRequest { verbose: false }).await?.into_inner();
    for cond in status.status.context("no runtime status")?.conditions {
        assert!(
            cond.status,
            "{} is not ready: {} {}",
            cond.r#type, cond.reason, cond.message
        );
    }

    let spec = ImageSpec {
        image: image.clone(),
        ..ImageSpec::default()
    };
    let anon = images
        .pull_image(PullImageRequest {
            image: Some(spec.clone()),
            ..PullImageRequest::default()
        })
        .await;
    assert!(
        anon.is_err(),
        "an anonymous CRI pull from the auth registry worked"
    );
    let image_ref = images
        .pull_image(PullImageRequest {
            image: Some(spec),
            auth: Some(AuthConfig {
                username: "kubelet".into(),
                password: "pull-secret".into(),
                ..AuthConfig::default()
            }),
            sandbox_config: None,
        })
        .await?
        .into_inner()
        .image_ref;
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");

    let sandbox_config = cri::sandbox_config(&c, "web")?;
    let logs = PathBuf::from(&sandbox_config.log_directory);
    let cgroup = sandbox_config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let started = std::time::Instant::now();
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("RunPodSandbox: {e}\n{}", containerd::tail(&c.log_text(), 30)))?
        .into_inner()
        .pod_sandbox_id;
    let container = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "httpd".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image_ref,
                    ..ImageSpec::default()
                }),
                log_path: "httpd_0.log".into(),
                linux: Some(LinuxContainerConfig::default()),
                ..ContainerConfig::default()
            }),
            sandbox_config: Some(sandbox_config),
        })
        .await?
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: container,
    })
    .await?;
    eprintln!(
        "CRI pod start (RunPodSandbox + CreateContainer + StartContainer): {:?}",
        started.elapsed()
    );

    let status = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .context("no sandbox status")?;
    let ip = status.network.context("no pod network")?.ip;
    let prefix = c.network().gateway.trim_end_matches('1').to_string();
    assert!(
        ip.starts_with(&prefix),
        "pod IP {ip} not in {}",
        c.network().subnet
    );
    let page = wait_for("httpd to answer on the pod IP", Duration::from_secs(20), || {
        let mut s = TcpStream::connect((ip.as_str(), 80)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
            .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        buf.starts_with("HTTP/1.").then_some(buf)
    })?;
    assert!(page.contains(" 200 ") && page.ends_with(INDEX_HTML), "{page}");
    assert!(logs.join("httpd_0.log").exists(), "no container log file");
    // The sandbox's cgroup sits under the harness's parent (v1: per controller).
    if containerd::cgroup_mode() != containerd::CgroupMode::Unified {
        let pod_cgroup = Path::new("/sys/fs/cgroup/pids").join(&cgroup[1..]);
        assert!(
            pod_cgroup.join(&pod).exists(),
            "no sandbox cgroup at {}",
            pod_cgroup.display()
        );
    }

    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
        .await?;
    let left: Vec<_> = mounts_under(c.dir())
        .into_iter()
        .filter(|m| m.to_string_lossy().contains("/netns/"))
        .collect();
    assert!(
        left.is_empty(),
        "netns mounts left after RemovePodSandbox: {left:?}"
    );
    Ok(())
}
