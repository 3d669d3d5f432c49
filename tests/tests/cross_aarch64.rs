//! The cross-built arm64 agent end to end under emulation: the x86
//! `shturman up` of this machine (node `x86-node`) and the aarch64
//! `shturman-agent` as it ships, the size-tuned build `cross/build.sh`
//! leaves at `target/cross/arm64/shturman-agent`, run by `qemu-aarch64-static -L
//! /usr/aarch64-linux-gnu` (Debian's qemu-user-static and the arm64 cross
//! libc: no binfmt registration needed). The emulated node registers as
//! `arm64`, a `ticker` Wasm pod with `nodeSelector: kubernetes.io/arch:
//! arm64` is placed on it, reaches Running there (wasmtime and Cranelift
//! running as aarch64 code) and its logs come back through `shturman logs`.
//!
//! Both nodes run without containerd, with loopback node IPs, pod CIDRs and
//! Service CIDR, so no interface is touched; the addresses differ from the
//! other tests' so they can run side by side.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use shturman_e2e::api::{Api, eventually, is_ready, is_running_and_ready};
use shturman_e2e::oci_env::admin_token;
use shturman_e2e::{Up, bin_dir, kube_arch, log_filter, stderr, stdout, terminate, ticker_wasm};

const X86_NODE: &str = "x86-node";
const ARM_NODE: &str = "pi-emu";
const SERVICE_CIDR: &str = "127.48.0.0/16";

/// The command that builds the binary this test runs.
const BUILD_HINT: &str = "cross/build.sh --target aarch64 --agent-only";

/// Where `cross/build.sh` leaves the arm64 agent (under the target dir,
/// next to `target/debug`).
fn arm64_agent() -> PathBuf {
    let target = bin_dir().parent().expect("the target dir").to_path_buf();
    let p = target.join("cross/arm64/shturman-agent");
    assert!(
        p.exists(),
        "{} is missing: build it with `{BUILD_HINT}` (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The ELF machine of a binary (`e_machine`, little-endian).
fn elf_machine(path: &Path) -> u16 {
    let bytes = std::fs::read(path).expect("read the agent binary");
    assert_eq!(
        bytes.get(..4),
        Some(&b"\x7fELF"[..]),
        "{} is not an ELF file",
        path.display()
    );
    u16::from_le_bytes([bytes[18], bytes[19]])
}

/// The emulated agent: `qemu-aarch64-static` running the arm64 binary,
/// logging to `<dir>/agent.log`, killed on drop.
struct EmulatedAgent {
    child: Option<Child>,
    log: PathBuf,
}

impl EmulatedAgent {
    fn start(binary: &Path, mqtt_url: &str, token: &str, dir: &Path) -> Result<EmulatedAgent> {
        let log = dir.join("agent.log");
        let file = std::fs::File::create(&log)?;
        let child = Command::new("qemu-aarch64-static")
            .args(["-L", "/usr/aarch64-linux-gnu"])
            .arg(binary)
            .args(["--mqtt-url", mqtt_url, "--token", token, "--node-name", ARM_NODE])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--containerd-socket", "none", "--heartbeat-interval", "1s"])
            .args(["--node-ip", "127.0.0.32", "--pod-cidr", "127.49.2.0/24"])
            .args(["--service-cidr", SERVICE_CIDR])
            .env("RUST_LOG", log_filter())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting qemu-aarch64-static: install qemu-user-static (scripts/setup.sh does)")?;
        Ok(EmulatedAgent {
            child: Some(child),
            log,
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EmulatedAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_arm64_agent_runs_a_wasm_pod() {
    let agent_bin = arm64_agent();
    // EM_AARCH64: the file really is an arm64 build, not a copy of the host's.
    assert_eq!(
        elf_machine(&agent_bin),
        183,
        "{} is not an aarch64 binary",
        agent_bin.display()
    );
    let wasm = ticker_wasm();

    let up = tokio::task::block_in_place(|| {
        Up::start(
            Some(X86_NODE),
            &[
                "--containerd-socket",
                "none",
                "--node-ip",
                "127.0.0.31",
                "--pod-cidr",
                "127.49.1.0/24",
                "--service-cidr",
                SERVICE_CIDR,
            ],
        )
    })
    .expect("shturman up");
    let token = up.token().expect("a join token");
    let agent_dir = tempfile::tempdir().unwrap();
    let mut agent =
        EmulatedAgent::start(&agent_bin, &up.mqtt_url, &token, agent_dir.path()).expect("emulated agent");
    let logs = |agent: &EmulatedAgent| {
        format!(
            "--- shturman up ---\n{}\n--- emulated agent ---\n{}",
            up.log_text(),
            agent.log_text()
        )
    };
    let api = Api::new(&up.url, &admin_token(&up));

    // The emulated node joins, Ready, as arm64 (label and nodeInfo).
    let node = eventually("the emulated node Ready", Duration::from_secs(120), || async {
        let (code, n): (u16, Value) = api.get(&format!("/api/v1/nodes/{ARM_NODE}")).await?;
        Ok((code == 200 && is_ready(&n)).then_some(n))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&agent)));
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/arch"], "arm64",
        "{node}"
    );
    assert_eq!(node["status"]["nodeInfo"]["architecture"], "arm64", "{node}");
    let (_, host) = api.get(&format!("/api/v1/nodes/{X86_NODE}")).await.unwrap();
    assert_eq!(
        host["metadata"]["labels"]["kubernetes.io/arch"],
        kube_arch(),
        "{host}"
    );

    // A Wasm pod for arm64 nodes only: placed on the emulated one.
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  runtimeClassName: wasmtime
  nodeSelector:
    kubernetes.io/arch: arm64
  containers:
  - name: ticker
    image: file://{}
    resources:
      limits:
        cpu: 200m
        memory: 32Mi
",
        wasm.display()
    );
    let out = up.cli_stdin(&["apply", "-f", "-"], Some(&manifest));
    assert!(out.status.success(), "{}", stderr(&out));
    // Under emulation the agent compiles the component with an emulated
    // Cranelift: allow for it.
    let pod = eventually(
        "the ticker pod Running on the arm64 node",
        Duration::from_secs(240),
        || async {
            let (_, p): (u16, Value) = api.get("/api/v1/namespaces/default/pods/ticker").await?;
            Ok(is_running_and_ready(&p).then_some(p))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&agent)));
    assert_eq!(pod["spec"]["nodeName"], ARM_NODE, "{pod}");

    // Its output travels back: `shturman logs ticker` prints its ticks.
    let text = eventually(
        "2 ticker lines from shturman logs",
        Duration::from_secs(60),
        || async {
            let out = tokio::task::block_in_place(|| up.cli(&["logs", "ticker"]));
            if !out.status.success() {
                anyhow::bail!("shturman logs failed: {}", stderr(&out));
            }
            let text = stdout(&out);
            Ok((text.lines().filter(|l| l.contains(" tick ")).count() >= 2).then_some(text))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&agent)));
    assert!(
        text.lines().next().unwrap().starts_with("ticker tick 1 "),
        "{text}"
    );

    // The emulated agent stops cleanly on SIGTERM, as on a real board.
    let mut child = agent.child.take().expect("the agent is running");
    let status = tokio::task::block_in_place(|| terminate(&mut child, Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&agent)));
    assert!(status.success(), "agent exited with {status}\n{}", logs(&agent));
}
