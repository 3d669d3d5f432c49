//! The delivery artifacts, built by the real scripts of `cross/package/` from the agent and CLI of this build: the `.deb` packages (contents, control fields, an install into a scratch root, the installed agent joining a control plane with the installed config, a purge) and the multi-arch OCI image (imported into a private containerd, run there).
//!
//! The packages need dpkg and binutils (both on every Debian); the image
//! test needs root and scripts/setup.sh's packages, as the containerd harness.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use shturman_e2e::containerd::{CTR_NAMESPACE, Containerd, check_output};
use shturman_e2e::{
    ControlPlane, bin_dir, binary, free_port, run_cli, stderr, stdout, terminate, wait_for, workspace_root,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// A node joins within a few heartbeats; the debug build is slow to start.
const JOIN_WAIT: Duration = Duration::from_secs(60);

/// Debian's name for this machine's architecture.
fn deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        other => panic!("no Debian package architecture for {other}"),
    }
}

/// Runs `cmd`, which must succeed; returns its output.
fn run(what: &str, cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    Ok(out)
}

/// A stripped copy of this build's binary `name` in `dir`: what
/// cross/build.sh hands the packaging scripts (and a tenth of the size).
fn stripped(name: &str, dir: &Path) -> Result<PathBuf> {
    let to = dir.join(name);
    run(
        "strip (Debian package binutils)",
        Command::new("strip").arg("-o").arg(&to).arg(binary(name)),
    )?;
    Ok(to)
}

/// `dpkg-deb -I DEB` control fields (continuation lines dropped).
fn control_fields(deb: &Path) -> Result<BTreeMap<String, String>> {
    let out = run("dpkg-deb -f", Command::new("dpkg-deb").arg("-f").arg(deb))?;
    Ok(stdout(&out)
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// `dpkg-deb -c DEB` as path → (mode string, owner/group).
fn contents(deb: &Path) -> Result<BTreeMap<String, (String, String)>> {
    let out = run("dpkg-deb -c", Command::new("dpkg-deb").arg("-c").arg(deb))?;
    stdout(&out)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [mode, owner, _size, _date, _time, path, ..] => {
                    Ok((path.to_string(), (mode.to_string(), owner.to_string())))
                }
                _ => bail!("unexpected dpkg-deb -c line {l:?}"),
            }
        })
        .collect()
}

/// A scratch root dpkg can install into: its database, holding this host's
/// entries for the libraries the packages depend on (so dpkg checks the
/// Depends versions against what the installed binaries will really load).
fn scratch_root(root: &Path) -> Result<()> {
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(d))?;
    }
    let libs = ["libc6", "libgcc-s1"];
    let out = run("dpkg-query -s", Command::new("dpkg-query").arg("-s").args(libs))?;
    std::fs::write(admin.join("status"), stdout(&out))?;
    std::fs::write(admin.join("available"), "")?;
    for l in libs {
        std::fs::write(admin.join("info").join(format!("{l}:{}.list", deb_arch())), "")?;
    }
    Ok(())
}

/// `dpkg --root ROOT ARGS…`, maintainer scripts run outside a chroot with
/// `DPKG_ROOT` set (the root has no shell of its own).
fn dpkg(root: &Path, args: &[&str]) -> Result<Output> {
    run(
        &format!("dpkg {}", args.join(" ")),
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .arg("--force-script-chrootless")
            .args(args),
    )
}

fn mode(p: &Path) -> Result<u32> {
    Ok(std::fs::metadata(p)
        .with_context(|| format!("{} is missing", p.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

/// Sets `key: VALUE` on the line that has `key: ""` (or `key: DEFAULT`), as
/// a person editing the installed config would.
fn set_key(text: &str, key: &str, value: &str) -> Result<String> {
    let prefix = format!("{key}: ");
    ensure!(
        text.lines().filter(|l| l.starts_with(&prefix)).count() == 1,
        "the packaged agent.yaml has no single `{key}:` line to fill in:\n{text}"
    );
    Ok(text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{value}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}

/// A child process killed when the test ends.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn debs_install_into_a_scratch_root_and_the_agent_joins_with_the_installed_config() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let bins = tmp.path().join("bin");
    std::fs::create_dir_all(&bins)?;
    let agent = stripped("shturman-agent", &bins)?;
    let cli = stripped("shturman", &bins)?;
    let debs = tmp.path().join("debs");
    let arch = deb_arch();
    // `none`: the test's time goes to checking, not to xz.
    let out = run(
        "cross/package/build-deb.sh",
        Command::new(workspace_root().join("cross/package/build-deb.sh"))
            .args(["--arch", arch, "--compression", "none", "--agent"])
            .arg(&agent)
            .arg("--cli")
            .arg(&cli)
            .arg("--out")
            .arg(&debs),
    )?;
    let agent_deb = debs.join(format!("shturman-agent_{VERSION}_{arch}.deb"));
    let cli_deb = debs.join(format!("shturman_{VERSION}_{arch}.deb"));
    assert!(
        agent_deb.exists() && cli_deb.exists(),
        "build-deb.sh said:\n{}",
        stdout(&out)
    );

    // Control fields.
    let f = control_fields(&agent_deb)?;
    assert_eq!(f["Package"], "shturman-agent");
    assert_eq!(f["Version"], VERSION, "the workspace version");
    assert_eq!(f["Architecture"], arch);
    assert!(
        f["Maintainer"].contains('<') && f["Maintainer"].ends_with('>'),
        "{f:?}"
    );
    assert!(f["Depends"].starts_with("libc6 (>= 2."), "{f:?}");
    assert!(f["Depends"].contains("libgcc-s1"), "{f:?}");
    assert!(f["Recommends"].contains("containerd"), "{f:?}");
    assert!(f["Description"].starts_with("Shturman edge agent"), "{f:?}");
    assert!(f["Installed-Size"].parse::<u64>()? > 1000, "{f:?}");
    let conffiles = run(
        "dpkg-deb --info conffiles",
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&agent_deb)
            .arg("conffiles"),
    )?;
    assert_eq!(stdout(&conffiles).trim(), "/etc/shturman/agent.yaml");
    let f = control_fields(&cli_deb)?;
    assert_eq!(
        (
            f["Package"].as_str(),
            f["Version"].as_str(),
            f["Architecture"].as_str()
        ),
        ("shturman", VERSION, arch)
    );

    // Contents: exactly these files, owned by root, with these modes.
    let c = contents(&agent_deb)?;
    let files: Vec<(&str, &str)> = c
        .iter()
        .filter(|(p, _)| !p.ends_with('/'))
        .map(|(p, (m, _))| (p.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        files,
        [
            ("./etc/shturman/agent.yaml", "-rw-------"),
            ("./usr/bin/shturman-agent", "-rwxr-xr-x"),
            ("./usr/lib/systemd/system/shturman-agent.service", "-rw-r--r--"),
            ("./usr/share/doc/shturman-agent/copyright", "-rw-r--r--"),
        ]
    );
    assert!(c.values().all(|(_, o)| o == "root/root"), "{c:?}");
    assert_eq!(c["./"].0, "drwxr-xr-x", "dpkg would give the root dir this mode");
    assert_eq!(c["./etc/shturman/"].0, "drwx------");
    let c = contents(&cli_deb)?;
    assert_eq!(c["./usr/bin/shturman"].0, "-rwxr-xr-x");

    // Install both into a scratch root.
    let root = tmp.path().join("root");
    scratch_root(&root)?;
    let agent_s = agent_deb.display().to_string();
    let cli_s = cli_deb.display().to_string();
    let out = dpkg(&root, &["-i", &agent_s, &cli_s])?;
    assert!(
        stdout(&out).contains("systemctl enable --now shturman-agent"),
        "postinst tells what to do next:\n{}",
        stdout(&out)
    );
    let status = run(
        "dpkg-query",
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", root.join("var/lib/dpkg").display()))
            .args(["-W", "-f", "${Package} ${Status}\n", "shturman-agent", "shturman"]),
    )?;
    assert_eq!(
        stdout(&status),
        "shturman install ok installed\nshturman-agent install ok installed\n"
    );
    assert_eq!(
        mode(&root.join("var/lib/shturman"))?,
        0o700,
        "postinst made the data dir"
    );
    assert_eq!(mode(&root.join("etc/shturman/agent.yaml"))?, 0o600);
    let installed_agent = root.join("usr/bin/shturman-agent");
    let installed_cli = root.join("usr/bin/shturman");
    let config = root.join("etc/shturman/agent.yaml");

    // The unit: what it promises, and systemd's own check where installed.
    let unit_path = root.join("usr/lib/systemd/system/shturman-agent.service");
    let unit = std::fs::read_to_string(&unit_path)?;
    for line in [
        "ExecStart=/usr/bin/shturman-agent --config /etc/shturman/agent.yaml",
        "Restart=always",
        "RestartPreventExitStatus=2",
        "KillMode=mixed",
        "After=network-online.target containerd.service",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line:?}:\n{unit}");
    }
    if shturman_e2e::containerd::on_path("systemd-analyze") {
        // Checked with the binary where the scratch root put it.
        let dir = tmp.path().join("unit");
        std::fs::create_dir_all(&dir)?;
        let copy = dir.join("shturman-agent.service");
        std::fs::write(
            &copy,
            unit.replace("/usr/bin/shturman-agent", &installed_agent.display().to_string()),
        )?;
        let out = run(
            "systemd-analyze verify",
            Command::new("systemd-analyze").arg("verify").arg(&copy),
        )?;
        assert_eq!(stderr(&out).trim(), "", "systemd-analyze verify warned");
    } else {
        eprintln!("systemd-analyze not installed: the unit's syntax was not checked by systemd");
    }

    // The installed agent reads the installed config: as shipped, it names
    // what is missing and exits 2 (the unit does not restart on 2).
    let out = Command::new(&installed_agent)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`mqttUrl` in a config file) is required"),
        "{}",
        stderr(&out)
    );

    // Filled in as the README says, it joins a control plane.
    let mqtt_addr = format!("127.0.0.1:{}", free_port());
    let cp = ControlPlane::start_with(&["--mqtt-addr", &mqtt_addr])?;
    let token = cp.cli(&["token", "create"]);
    ensure!(token.status.success(), "token create: {}", stderr(&token));
    let mut text = std::fs::read_to_string(&config)?;
    for (key, value) in [
        ("mqttUrl", format!("mqtt://{mqtt_addr}")),
        ("token", stdout(&token).trim().to_string()),
        ("nodeName", "pi-packaged".to_string()),
        // Not the host's /var/lib/shturman, nor its containerd.
        ("dataDir", root.join("var/lib/shturman").display().to_string()),
        ("containerdSocket", "none".to_string()),
    ] {
        text = set_key(&text, key, &value)?;
    }
    std::fs::write(&config, text)?;
    let log = tmp.path().join("agent.log");
    let file = std::fs::File::create(&log)?;
    let mut agent_proc = Guard(Some(
        Command::new(&installed_agent)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?,
    ));
    // `shturman get nodes` of the installed CLI shows it Ready.
    let admin = cp.admin_conf();
    let line = wait_for("the packaged agent's node to be Ready", JOIN_WAIT, || {
        let out = Command::new(&installed_cli)
            .arg("--config")
            .arg(&admin)
            .args(["get", "nodes"])
            .env_remove("SHTURMAN_CONFIG")
            .output()
            .ok()?;
        stdout(&out)
            .lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&"pi-packaged") && f.get(1) == Some(&"Ready")
            })
            .map(str::to_string)
    })
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    eprintln!("{line}");
    let wide = stdout(&run_cli(
        &admin,
        &["get", "nodes", "pi-packaged", "-o", "json"],
        None,
    ));
    let node: Value = serde_json::from_str(&wide)?;
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/arch"],
        shturman_e2e::kube_arch()
    );
    // It keeps its identity in the configured data dir.
    assert!(
        std::fs::read_dir(root.join("var/lib/shturman"))?.next().is_some(),
        "the data dir is empty"
    );
    let mut child = agent_proc.0.take().context("agent")?;
    let status = terminate(&mut child, Duration::from_secs(30))?;
    assert!(status.success(), "agent exit after SIGTERM: {status}");

    // Installed again (as an upgrade would): the filled-in conffile stays,
    // and postinst does not repeat the first-install advice.
    let filled = std::fs::read_to_string(&config)?;
    let out = dpkg(&root, &["-i", &agent_s])?;
    assert!(!stdout(&out).contains("systemctl enable"), "{}", stdout(&out));
    assert_eq!(
        std::fs::read_to_string(&config)?,
        filled,
        "dpkg replaced the edited config"
    );

    // Purge: the conffile, the data dir and /etc/shturman go; dpkg forgets it.
    dpkg(&root, &["--purge", "shturman-agent"])?;
    for gone in ["etc/shturman", "var/lib/shturman", "usr/bin/shturman-agent"] {
        assert!(!root.join(gone).exists(), "{gone} left after purge");
    }
    assert!(installed_cli.exists(), "the CLI package stays");
    dpkg(&root, &["--remove", "shturman"])?;
    assert!(!installed_cli.exists());
    Ok(())
}

/// The target directory's `cross/` (cross/build.sh's output).
fn cross_dir() -> PathBuf {
    bin_dir().parent().expect("target dir").join("cross")
}

#[test]
fn oci_image_imports_into_containerd_with_its_platforms_and_runs() -> Result<()> {
    let c = Containerd::start()?;
    let tmp = tempfile::tempdir()?;
    let host = deb_arch();
    let mut binaries = vec![format!(
        "{host}={}",
        stripped("shturman-agent", tmp.path())?.display()
    )];
    let mut platforms = vec![format!("linux/{}", shturman_e2e::kube_arch())];
    // The ARM images too, for each architecture cross/build.sh has built
    // (its static build first, as build-image.sh picks).
    for (arch, go_arch) in [("arm64", "arm64"), ("armhf", "arm")] {
        let built = [format!("{arch}-musl"), arch.to_string()]
            .iter()
            .map(|d| cross_dir().join(d).join("shturman-agent"))
            .find(|p| p.exists());
        if let Some(bin) = built.filter(|_| arch != host) {
            binaries.push(format!("{arch}={}", bin.display()));
            platforms.push(format!("linux/{go_arch}"));
        }
    }
    eprintln!("image platforms: {platforms:?}");
    let out_dir = tmp.path().join("image");
    let mut cmd = Command::new(workspace_root().join("cross/package/build-image.sh"));
    cmd.arg("--out")
        .arg(&out_dir)
        .arg("--tool")
        .arg(binary("shturman-oci-image"));
    for b in &binaries {
        cmd.args(["--binary", b]);
    }
    run("cross/package/build-image.sh", &mut cmd)?;
    let archive = out_dir.join(format!("shturman-agent_{VERSION}_oci.tar"));
    let reference = format!("shturman.local/shturman-agent:{VERSION}");

    // The layout: index.json tags an image index with one manifest per platform.
    let layout = out_dir.join("shturman-agent-oci");
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let top = &index["manifests"][0];
    assert_eq!(top["annotations"]["io.containerd.image.name"], reference.as_str());
    assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
    let digest = top["digest"].as_str().context("index digest")?;
    let blob = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let multi: Value = serde_json::from_slice(&std::fs::read(blob)?)?;
    let listed: Vec<String> = multi["manifests"]
        .as_array()
        .context("manifests")?
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or(""),
                m["platform"]["architecture"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(listed, platforms);

    // ctr imports every platform and lists them.
    let a = archive.display().to_string();
    c.ctr_ok(&["-n", CTR_NAMESPACE, "images", "import", "--all-platforms", &a])?;
    let ls = c.ctr_ok(&["-n", CTR_NAMESPACE, "images", "ls"])?;
    let row = ls
        .lines()
        .find(|l| l.split_whitespace().next() == Some(reference.as_str()))
        .with_context(|| format!("{reference} not in ctr images ls:\n{ls}"))?;
    assert!(row.contains(digest), "{row}");
    for p in &platforms {
        assert!(row.contains(p.as_str()), "{p} missing from {row}");
    }
    eprintln!("{row}");

    // The host's image runs: its entrypoint reads the image's config file
    // (as shipped: nothing filled in) and says what is missing.
    let id = "agent-image";
    let flags = c.run_flags(id);
    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend(flags.iter().map(String::as_str));
    args.extend([reference.as_str(), id]);
    let out = c.ctr(&args);
    assert_eq!(out.status.code(), Some(2), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("`mqttUrl` in a config file) is required"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let mut args: Vec<&str> = vec!["run", "--rm"];
    let flags = c.run_flags("agent-version");
    args.extend(flags.iter().map(String::as_str));
    args.extend([
        reference.as_str(),
        "agent-version",
        "/usr/bin/shturman-agent",
        "--version",
    ]);
    let version = check_output("ctr run shturman-agent --version", c.ctr(&args))?;
    assert_eq!(version.trim(), format!("shturman-agent {VERSION}"));

    // With a filled-in config and a data dir mounted, as cross/package/README.md
    // runs it, the agent in the image joins a control plane.
    let mqtt_addr = format!("127.0.0.1:{}", free_port());
    let cp = ControlPlane::start_with(&["--mqtt-addr", &mqtt_addr])?;
    let token = cp.cli(&["token", "create"]);
    ensure!(token.status.success(), "token create: {}", stderr(&token));
    let shipped = std::fs::read_to_string(workspace_root().join("cross/package/agent.yaml"))?;
    let mut text = shipped;
    for (key, value) in [
        ("mqttUrl", format!("mqtt://{mqtt_addr}")),
        ("token", stdout(&token).trim().to_string()),
        ("nodeName", "agent-in-image".to_string()),
        ("containerdSocket", "none".to_string()),
    ] {
        text = set_key(&text, key, &value)?;
    }
    let config = tmp.path().join("agent.yaml");
    std::fs::write(&config, text)?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    let mounts = [
        format!(
            "type=bind,src={},dst=/etc/shturman/agent.yaml,options=rbind:ro",
            config.display()
        ),
        format!(
            "type=bind,src={},dst=/var/lib/shturman,options=rbind:rw",
            data.display()
        ),
    ];
    let id = "agent-node";
    let flags = c.run_flags(id);
    let agent_log = tmp.path().join("agent-in-image.log");
    let log_uri = format!("file://{}", agent_log.display());
    let mut args: Vec<&str> = vec!["run", "-d", "--net-host", "--log-uri", &log_uri];
    for m in &mounts {
        args.extend(["--mount", m.as_str()]);
    }
    args.extend(flags.iter().map(String::as_str));
    args.extend([reference.as_str(), id]);
    c.ctr_ok(&args)?;
    wait_for("the image's agent to be Ready", JOIN_WAIT, || {
        let out = cp.cli(&["get", "nodes"]);
        stdout(&out)
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["agent-in-image", "Ready"]))
            .then_some(())
    })
    .with_context(|| {
        format!(
            "{}\n--- the agent's log ---\n{}",
            stdout(&cp.cli(&["get", "nodes"])),
            std::fs::read_to_string(&agent_log).unwrap_or_default()
        )
    })?;
    assert!(
        std::fs::read_dir(&data)?.next().is_some(),
        "the agent kept nothing in the mounted data dir"
    );
    Ok(())
}
