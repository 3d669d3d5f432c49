//! The `sizes` scenario: the size of what a node installs, per target. Reads
//! the stripped binaries `cross/build.sh` leaves under
//! `target/cross/<arch>/` (`amd64` is the native build with the same
//! size-tuned profile; `arm64`, `armhf`, `arm64-musl`, `armhf-musl` the cross
//! builds; `shturman-agent-<features>` the agent built with fewer features)
//! and reports each in MiB. A size report, not a timed run: it measures files
//! already built (`scripts/bench.sh` builds the amd64 and arm64 agents
//! first); without any it says which command makes them.
//!
//! Goal: the arm64 agent with both runtimes (Wasm and OCI) at most 25 MiB.
//! Anchors: for builds of this machine's arch (the glibc one), what a node
//! installs to run OCI containers without Shturman, the `containerd`,
//! `containerd-shim-runc-v2` and `runc` binaries on this machine (Debian's,
//! already stripped), measured in the same run; for the others, whose
//! packages this machine cannot install, the published installed size of
//! the k3s package for armv7 (one binary that is both a k3s server and a
//! k3s agent), from the Alpine package index (see docs/BENCHMARKS.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::report::{Goal, Report, Row};

/// Stripped size goal for the arm64 agent with Wasm and OCI, MiB.
const GOAL_ARM64_AGENT_MIB: f64 = 25.0;

/// The ARM builds' anchor: k3s 1.35.0.1-r2, Alpine edge community, armv7,
/// installed size as published by pkgs.alpinelinux.org.
const K3S_ARMV7_INSTALLED_MIB: f64 = 187.7;
const K3S_ARMV7_NAME: &str = "k3s 1.35.0 armv7 package, installed (Alpine index, published)";

/// Installed size of containerd + its runc shim + runc, in bytes (from PATH).
fn containerd_binaries() -> Option<(u64, Vec<String>)> {
    let mut total = 0;
    let mut names = Vec::new();
    for name in ["containerd", "containerd-shim-runc-v2", "runc"] {
        let path = std::env::var_os("PATH").map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })??;
        total += std::fs::metadata(&path).ok()?.len();
        names.push(path.display().to_string());
    }
    Some((total, names))
}

/// This machine's architecture as `cross/build.sh` names its directories
/// (Debian's names): the builds whose anchor can be measured here.
fn debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        other => other,
    }
}

/// One built file: its arch directory, its name, its size in bytes.
struct Built {
    arch: String,
    name: String,
    bytes: u64,
}

/// The directory cargo builds into (`target/`, next to this binary's profile dir).
fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile = exe.parent().context("the bench binary's directory")?;
    Ok(profile.parent().context("the target directory")?.to_path_buf())
}

/// Every `shturman*` file under `<cross>/<arch>/`, sorted by arch then name.
fn scan(cross: &Path) -> Result<Vec<Built>> {
    let mut found = Vec::new();
    let Ok(arches) = std::fs::read_dir(cross) else {
        return Ok(found);
    };
    for arch in arches {
        let arch = arch?;
        if !arch.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(arch.path())? {
            let file = file?;
            let name = file.file_name().to_string_lossy().into_owned();
            // Skip the build script's in-flight temp copies (`.name.tmp`).
            if name.starts_with("shturman") && file.file_type()?.is_file() {
                found.push(Built {
                    arch: arch.file_name().to_string_lossy().into_owned(),
                    name,
                    bytes: file.metadata()?.len(),
                });
            }
        }
    }
    found.sort_by(|a, b| (&a.arch, &a.name).cmp(&(&b.arch, &b.name)));
    Ok(found)
}

/// Runs the scenario and adds its rows.
pub fn run(report: &mut Report) -> Result<()> {
    let cross = target_dir()?.join("cross");
    eprintln!("sizes: stripped binaries under {}", cross.display());
    let built = scan(&cross)?;
    if built.is_empty() {
        eprintln!(
            "  no cross builds found: run `cross/build.sh` (all targets) or \
             `cross/build.sh --target aarch64` first (see cross/README.md)"
        );
        return Ok(());
    }
    #[allow(clippy::cast_precision_loss)]
    let to_mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let native = containerd_binaries();
    for b in built {
        let full_agent = b.arch == "arm64" && b.name == "shturman-agent";
        let (anchor_name, anchor) = if b.arch == debian_arch() {
            native.as_ref().map_or_else(
                || ("containerd + shim + runc (not installed)".to_string(), None),
                |(bytes, names)| (format!("installed {}", names.join(" + ")), Some(to_mib(*bytes))),
            )
        } else {
            (K3S_ARMV7_NAME.to_string(), Some(K3S_ARMV7_INSTALLED_MIB))
        };
        let row = Row {
            scenario: format!("{} ({}), stripped", b.name, b.arch),
            metric: "size MiB".into(),
            shturman: to_mib(b.bytes),
            anchor_name,
            anchor,
            goal: if full_agent {
                format!("<= {GOAL_ARM64_AGENT_MIB} MiB (Wasm + OCI)")
            } else {
                "informational".into()
            },
            higher_is_better: false,
        };
        report.push(row.check(if full_agent {
            Goal::AtMost(GOAL_ARM64_AGENT_MIB)
        } else {
            Goal::Informational
        }));
    }
    Ok(())
}
