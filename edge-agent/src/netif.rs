//! Cluster IPs as local addresses: before the proxy can accept on a
//! Service's cluster IP, the node must own that address. Addresses in
//! `127.0.0.0/8` (and `::1`) need nothing — Linux routes all of `127/8` to
//! `lo`. Any other cluster IP is added as a `/32` (`/128`) to a dummy
//! interface, [`IFACE`], created when missing, with iproute2's `ip` command:
//!
//! ```sh
//! ip link add shturman0 type dummy && ip link set shturman0 up
//! ip addr replace 10.43.0.17/32 dev shturman0
//! ```
//!
//! A kernel without the `dummy` driver (some minimal VM and board kernels
//! answer `Unknown device type`) gets IPv4 cluster IPs on `lo` instead,
//! labelled [`LO_LABEL`] so they are told apart from the host's own:
//! `ip addr replace 10.43.0.17/32 dev lo label lo:shturman`.
//!
//! Every step is idempotent (`replace`; an address or link that already
//! exists, or is already gone, is fine). Needs root or `CAP_NET_ADMIN`;
//! the caller logs one clear warning per Service when it fails and keeps
//! serving the rest. [`IFACE`] and the [`LO_LABEL`] addresses belong to
//! Shturman: those no Service wants are removed ([`addresses`] lists them).

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// The dummy interface holding cluster IPs.
pub const IFACE: &str = "shturman0";
/// The label of cluster IPs on `lo` when there is no dummy interface.
pub const LO_LABEL: &str = "lo:shturman";

/// Where cluster IPs go on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Device {
    /// The dummy interface [`IFACE`].
    Dummy,
    /// `lo`, labelled [`LO_LABEL`] (IPv4 only).
    Loopback,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Dummy => IFACE,
            Device::Loopback => LO_LABEL,
        })
    }
}
/// How long one `ip` command may take.
const IP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an address could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    #[error("cannot run `ip` ({0}); install iproute2")]
    Spawn(std::io::Error),
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("`{0}` did not finish within 5s")]
    Timeout(String),
}

/// Whether an address must be added to [`IFACE`] before it can be served.
pub fn needs_interface(ip: IpAddr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified())
}

/// What to tell a person when adding a cluster IP failed.
pub fn advice(ip: IpAddr) -> String {
    format!(
        "run the agent as root (or with CAP_NET_ADMIN) with iproute2 installed, or add the address yourself: \
         `ip link add {IFACE} type dummy; ip link set {IFACE} up; ip addr add {ip}/{} dev {IFACE}` \
         (on a kernel without dummy interfaces: `ip addr add {ip}/{} dev lo label {LO_LABEL}`)",
        prefix(ip),
        prefix(ip)
    )
}

fn prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// Runs `ip args…`; `Ok(None)` on success, `Ok(Some(stderr))` when it ran
/// and failed.
async fn ip(args: &[&str]) -> Result<Option<String>, NetifError> {
    let command = format!("ip {}", args.join(" "));
    let child = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(IP_TIMEOUT, child)
        .await
        .map_err(|_| NetifError::Timeout(command))?
        .map_err(NetifError::Spawn)?;
    Ok((!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).trim().to_string()))
}

async fn ip_ok(args: &[&str], tolerated: &[&str]) -> Result<(), NetifError> {
    match ip(args).await? {
        None => Ok(()),
        Some(stderr) if tolerated.iter().any(|t| stderr.contains(t)) => Ok(()),
        Some(stderr) => Err(NetifError::Failed {
            command: format!("ip {}", args.join(" ")),
            stderr,
        }),
    }
}

/// Creates [`IFACE`] if missing and brings it up.
pub async fn ensure_interface() -> Result<(), NetifError> {
    if ip(&["link", "show", "dev", IFACE]).await?.is_some() {
        ip_ok(&["link", "add", IFACE, "type", "dummy"], &["File exists"]).await?;
    }
    ip_ok(&["link", "set", IFACE, "up"], &[]).await
}

/// Finds where cluster IPs go: [`IFACE`] (created when missing), or `lo`
/// when the kernel cannot make a dummy interface. `Err` when neither can
/// be used (not root, no iproute2): the dummy interface's error.
pub async fn prepare() -> Result<Device, NetifError> {
    match ensure_interface().await {
        Ok(()) => Ok(Device::Dummy),
        Err(NetifError::Failed { stderr, .. }) if stderr.contains("Unknown device type") => {
            Ok(Device::Loopback)
        }
        Err(e) => Err(e),
    }
}

/// Adds `ip` to `device` (IPv6 never goes to `lo`: it has no labels there).
pub async fn add(ip_addr: IpAddr, device: Device) -> Result<(), NetifError> {
    let cidr = format!("{ip_addr}/{}", prefix(ip_addr));
    match device {
        Device::Dummy => ip_ok(&["addr", "replace", &cidr, "dev", IFACE], &[]).await,
        Device::Loopback if ip_addr.is_ipv4() => {
            ip_ok(&["addr", "replace", &cidr, "dev", "lo", "label", LO_LABEL], &[]).await
        }
        Device::Loopback => Err(NetifError::Failed {
            command: format!("ip link add {IFACE} type dummy"),
            stderr: "this kernel has no dummy interfaces, and IPv6 cluster IPs are not put on lo".into(),
        }),
    }
}

/// Removes `ip` from `device`; already gone is fine.
pub async fn remove(ip_addr: IpAddr, device: Device) -> Result<(), NetifError> {
    let cidr = format!("{ip_addr}/{}", prefix(ip_addr));
    let dev = match device {
        Device::Dummy => IFACE,
        Device::Loopback => "lo",
    };
    ip_ok(
        &["addr", "del", &cidr, "dev", dev],
        &[
            "Cannot assign requested address",
            "Address not found",
            "Cannot find device",
            "does not exist",
        ],
    )
    .await
}

/// The cluster IPs found on [`IFACE`] and on `lo` with [`LO_LABEL`].
pub async fn addresses() -> Result<Vec<(IpAddr, Device)>, NetifError> {
    let mut found = Vec::new();
    for (args, device) in [
        (&["-o", "addr", "show", "dev", IFACE][..], Device::Dummy),
        (
            &["-o", "addr", "show", "dev", "lo", "label", LO_LABEL][..],
            Device::Loopback,
        ),
    ] {
        let out = tokio::time::timeout(
            IP_TIMEOUT,
            Command::new("ip")
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| NetifError::Timeout(format!("ip {}", args.join(" "))))?
        .map_err(NetifError::Spawn)?;
        if out.status.success() {
            found.extend(
                parse_addresses(&String::from_utf8_lossy(&out.stdout))
                    .into_iter()
                    .map(|ip| (ip, device)),
            );
        }
    }
    Ok(found)
}

/// The addresses in `ip -o addr show` output (pure).
pub fn parse_addresses(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            let cidr = words.next()?;
            cidr.split('/').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_loopback_addresses_need_the_interface() {
        assert!(!needs_interface("127.43.0.10".parse().unwrap()));
        assert!(!needs_interface("::1".parse().unwrap()));
        assert!(!needs_interface("0.0.0.0".parse().unwrap()));
        assert!(needs_interface("10.43.0.10".parse().unwrap()));
        assert!(needs_interface("fd00::10".parse().unwrap()));
    }

    #[test]
    fn parses_ip_o_addr_show() {
        let text = "7: shturman0    inet 10.43.0.17/32 scope global shturman0\\       valid_lft forever preferred_lft forever\n\
                    7: shturman0    inet 10.43.0.9/32 scope global shturman0\\       valid_lft forever preferred_lft forever\n\
                    7: shturman0    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever\n";
        let got = parse_addresses(text);
        assert_eq!(
            got,
            [
                "10.43.0.17".parse::<IpAddr>().unwrap(),
                "10.43.0.9".parse().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert!(parse_addresses("").is_empty());
        assert!(parse_addresses("garbage inet").is_empty());
    }

    #[test]
    fn advice_names_the_commands() {
        let a = advice("10.43.0.17".parse().unwrap());
        assert!(a.contains("ip addr add 10.43.0.17/32 dev shturman0"), "{a}");
    }
}
