//! `shturman-oci-image`: writes the agent's OCI image — one manifest per
//! architecture and a multi-arch index over them — as an OCI image layout
//! and an OCI archive for `ctr images import`, without Docker. The layout
//! writer is the end-to-end harness's (`shturman_e2e::oci_image`: fixed
//! mtimes, numeric root owners, digests that depend on the inputs only).
//!
//! ```text
//! shturman-oci-image --out DIR [--archive FILE] [--name NAME] [--tag TAG]
//!                    [--config FILE] [--ca-bundle FILE]
//!                    --binary ARCH=PATH [--binary ARCH=PATH]...
//! ```
//!
//! ARCH is a Debian architecture (`amd64`, `arm64`, `armhf`). A statically
//! linked agent (the musl builds) is the whole image; a glibc build brings
//! its ELF interpreter and the shared libraries it needs (found with
//! `readelf`: this host's for its own architecture, the Debian cross
//! toolchain's `/usr/<triple>/lib` for the others).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use shturman_e2e::oci_image::{self, ImageSpec, Layer, Platform};

/// Where the agent sits in the image.
const AGENT: &str = "usr/bin/shturman-agent";
/// Where the image's default config file sits (mount your own over it).
const CONFIG: &str = "etc/shturman/agent.yaml";
/// The CA bundle path the agent reads for https module downloads.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

const USAGE: &str = "usage: shturman-oci-image --out DIR [--archive FILE] [--name NAME] [--tag TAG] \
[--config FILE] [--ca-bundle FILE] --binary ARCH=PATH [--binary ARCH=PATH]...";

/// The command line.
#[derive(Debug, Default)]
struct Args {
    out: Option<PathBuf>,
    archive: Option<PathBuf>,
    name: Option<String>,
    tag: Option<String>,
    config: Option<PathBuf>,
    ca_bundle: Option<PathBuf>,
    binaries: Vec<(Arch, PathBuf)>,
}

/// The architectures the agent is packaged for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arch {
    Amd64,
    Arm64,
    Armhf,
}

impl Arch {
    fn parse(s: &str) -> Result<Arch> {
        Ok(match s {
            "amd64" => Arch::Amd64,
            "arm64" => Arch::Arm64,
            "armhf" => Arch::Armhf,
            other => bail!("unknown architecture {other:?}: use amd64, arm64 or armhf"),
        })
    }

    /// The OCI platform (`arm` gets containerd's `v7` variant).
    fn platform(self) -> Platform {
        Platform::linux(match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Armhf => "arm",
        })
    }

    /// Debian's multiarch triple (the cross toolchain's sysroot name).
    fn triple(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-linux-gnu",
            Arch::Arm64 => "aarch64-linux-gnu",
            Arch::Armhf => "arm-linux-gnueabihf",
        }
    }

    /// Where this host keeps shared libraries for `self`.
    fn lib_dirs(self) -> Vec<PathBuf> {
        let t = self.triple();
        if self.platform() == Platform::host() {
            ["/lib", "/usr/lib", "/lib64"]
                .iter()
                .flat_map(|d| [Path::new(d).join(t), PathBuf::from(d)])
                .collect()
        } else {
            vec![PathBuf::from(format!("/usr/{t}/lib"))]
        }
    }
}

fn parse_args(argv: &[String]) -> Result<Args> {
    let mut a = Args::default();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--out" => a.out = Some(value()?.into()),
            "--archive" => a.archive = Some(value()?.into()),
            "--name" => a.name = Some(value()?),
            "--tag" => a.tag = Some(value()?),
            "--config" => a.config = Some(value()?.into()),
            "--ca-bundle" => a.ca_bundle = Some(value()?.into()),
            "--binary" => {
                let v = value()?;
                let (arch, path) = v.split_once('=').with_context(|| {
                    format!(
                        "--binary {v:?}: write ARCH=PATH, e.g. arm64=target/cross/arm64-musl/shturman-agent"
                    )
                })?;
                let arch = Arch::parse(arch)?;
                if a.binaries.iter().any(|(a, _)| *a == arch) {
                    bail!(
                        "--binary {v:?}: {arch:?} is given twice; an image has one manifest per architecture"
                    );
                }
                a.binaries.push((arch, path.into()));
            }
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if a.binaries.is_empty() {
        bail!("give at least one --binary ARCH=PATH\n{USAGE}");
    }
    Ok(a)
}

/// The ELF interpreter and the `NEEDED` libraries of `file`, from `readelf`.
fn elf_deps(file: &Path) -> Result<(Option<String>, Vec<String>)> {
    let out = Command::new("readelf")
        .args(["-W", "-l", "-d"])
        .arg(file)
        .output()
        .context("running readelf (Debian package binutils)")?;
    if !out.status.success() {
        bail!(
            "readelf {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let interp = text.lines().find_map(|l| {
        l.split_once("[Requesting program interpreter: ")
            .and_then(|(_, r)| r.strip_suffix(']'))
            .map(str::to_string)
    });
    let needed = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split_once("[").and_then(|(_, r)| r.strip_suffix(']')))
        .map(str::to_string)
        .collect();
    Ok((interp, needed))
}

/// The image's root file system for one architecture.
fn agent_layer(arch: Arch, agent: &Path, config: &[u8], ca_bundle: Option<&Path>) -> Result<Layer> {
    let (interp, needed) = elf_deps(agent)?;
    // Every file of the image, by path; directories are derived from them.
    let mut files: Vec<(String, u32, Vec<u8>)> = vec![
        (AGENT.into(), 0o755, read(agent)?),
        (CONFIG.into(), 0o600, config.to_vec()),
    ];
    if let Some(ca) = ca_bundle {
        files.push((CA_BUNDLE.into(), 0o644, read(ca)?));
    }
    let mut links = Vec::new();
    if let Some(interp) = &interp {
        // The libraries go to /lib (always on ld.so's search path); the
        // interpreter also answers at the path the binary asks for.
        let dirs = arch.lib_dirs();
        let mut todo: Vec<String> = needed;
        let mut seen = BTreeSet::new();
        let interp_name = interp.rsplit('/').next().unwrap_or(interp).to_string();
        todo.push(interp_name.clone());
        while let Some(lib) = todo.pop() {
            if !seen.insert(lib.clone()) {
                continue;
            }
            let found = dirs.iter().map(|d| d.join(&lib)).find(|p| p.exists()).with_context(|| {
                format!(
                    "{} needs {lib}, not found in {}; for another architecture install the cross libc (libc6-{}-cross) or use the static musl build",
                    agent.display(),
                    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
                    format!("{arch:?}").to_lowercase()
                )
            })?;
            let (_, more) = elf_deps(&found)?;
            todo.extend(more);
            files.push((format!("lib/{lib}"), 0o755, read(&found)?));
        }
        let interp_path = interp.trim_start_matches('/');
        if interp_path != format!("lib/{interp_name}") {
            let depth = interp_path.matches('/').count();
            links.push((
                interp_path.to_string(),
                format!("{}lib/{interp_name}", "../".repeat(depth)),
            ));
        }
    }
    // Directories: the two the agent writes to, and every file's parents.
    let mut dirs = BTreeSet::new();
    let own = ["tmp", "var/lib/shturman"];
    let paths = files
        .iter()
        .map(|f| f.0.as_str())
        .chain(links.iter().map(|l| l.0.as_str()));
    for p in own.into_iter().chain(paths) {
        if own.contains(&p) {
            dirs.insert(p.to_string());
        }
        let mut d = Path::new(p).parent();
        while let Some(x) = d.filter(|x| !x.as_os_str().is_empty()) {
            dirs.insert(x.display().to_string());
            d = x.parent();
        }
    }
    // Sorted entries: parents before children, the same order every time.
    let mut entries: Vec<(String, Entry)> = dirs
        .into_iter()
        .map(|d| {
            let mode = match d.as_str() {
                "tmp" => 0o1777,
                "var/lib/shturman" | "etc/shturman" => 0o700,
                _ => 0o755,
            };
            (d, Entry::Dir(mode))
        })
        .collect();
    entries.extend(files.into_iter().map(|(p, m, data)| (p, Entry::File(m, data))));
    entries.extend(links.into_iter().map(|(p, t)| (p, Entry::Link(t))));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut layer = Layer::new();
    for (path, e) in entries {
        layer = match e {
            Entry::Dir(mode) => layer.dir(&path, mode),
            Entry::File(mode, data) => layer.file(&path, mode, data),
            Entry::Link(target) => layer.symlink(&path, &target),
        };
    }
    Ok(layer)
}

/// One entry of the image's file system, before it joins the layer.
enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Link(String),
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

fn run(args: Args) -> Result<()> {
    let out = args.out.context("--out DIR is required")?;
    let name = args
        .name
        .unwrap_or_else(|| "shturman.local/shturman-agent".into());
    let tag = args.tag.unwrap_or_else(|| env!("CARGO_PKG_VERSION").into());
    let config = match &args.config {
        Some(p) => read(p)?,
        None => Vec::new(),
    };
    if out.join("index.json").exists() {
        bail!(
            "{} already holds an image layout; remove it first (blobs of an older build would stay behind)",
            out.display()
        );
    }
    let mut specs = Vec::new();
    for (arch, bin) in &args.binaries {
        let layer = agent_layer(*arch, bin, &config, args.ca_bundle.as_deref())
            .with_context(|| format!("the {arch:?} image from {}", bin.display()))?;
        specs.push(
            ImageSpec::new(layer)
                .platform(arch.platform())
                .entrypoint(&[&format!("/{AGENT}")])
                .cmd(&["--config", &format!("/{CONFIG}")]),
        );
    }
    let layout = oci_image::write_multi_arch(&out, &name, &tag, &specs)?;
    println!(
        "{}\t{}\t{}",
        out.display(),
        layout.reference(),
        layout.descriptor.digest
    );
    if let Some(archive) = &args.archive {
        layout.write_archive(archive)?;
        println!("{}", archive.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&argv).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shturman-oci-image: {e:#}");
            ExitCode::from(2)
        }
    }
}
