//! OCI pod networking and registry credentials end to end: the real
//! `shturman up`, its local agent on a private containerd
//! (tests/src/containerd.rs; CNI `bridge` + `host-local` + `portmap`), the
//! busybox images from a private registry (tests/src/registry.rs).
//!
//! - a `containerPort` with a `hostPort` is reachable on the node: CRI port
//!   mappings → CNI `portmap` → iptables DNAT, on `127.0.0.1:<hostPort>` and
//!   on the node's InternalIP; deleting the pod takes its rules away;
//! - the containers of a pod share its network namespace: a sidecar reaches
//!   the web container on `127.0.0.1:80` and its logs show the page;
//! - `imagePullSecrets`: from a registry that wants credentials, a pod
//!   without them ends `ErrImagePull`/`ImagePullBackOff` with the
//!   registry's 401, one with a `kubernetes.io/dockerconfigjson` Secret runs.
//!
//! Needs root, containerd, runc, the CNI plugins (and iptables, which
//! `portmap` runs), docker-registry, skopeo and busybox-static
//! (scripts/setup.sh installs them).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use shturman_e2e::api::{Api, eventually};
use shturman_e2e::oci_env::{OciEnv, admin_token, is_running_and_ready};
use shturman_e2e::{free_port, stderr, stdout};

const PAGE: &str = "Hello from a Shturman OCI pod";

/// `GET http://addr/`: the body of a 200 answer.
fn http_get(addr: &str) -> Option<String> {
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    (status.starts_with("HTTP/1.") && status.contains(" 200 ")).then(|| body.to_string())
}

/// The nat table's rules (`iptables -t nat -S`).
fn nat_rules() -> String {
    Command::new("iptables")
        .args(["-w", "5", "-t", "nat", "-S"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The nat rules that DNAT `port` (portmap's `CNI-DN-*` chains).
fn rules_for(port: u16) -> Vec<String> {
    let dport = format!("--dport {port} ");
    nat_rules()
        .lines()
        .filter(|l| l.contains(&dport) && l.contains("CNI-"))
        .map(str::to_string)
        .collect()
}

/// portmap's chains shared by all pods (it creates them with the first
/// host port and never removes them).
const SHARED: [&str; 3] = ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"];

/// `iptables -w 5 -t nat ARGS…`, best effort.
fn nat(args: &[&str]) {
    let _ = Command::new("iptables")
        .args(["-w", "5", "-t", "nat"])
        .args(args)
        .output();
}

/// Deletes every rule of the nat table that jumps to `chain`, by number
/// (rule specs hold quoted comments).
fn delete_jumps_to(chain: &str) {
    for parent in ["PREROUTING", "OUTPUT", "POSTROUTING", "CNI-HOSTPORT-DNAT"] {
        let listing = Command::new("iptables")
            .args(["-w", "5", "-t", "nat", "-L", parent, "-n", "--line-numbers"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut numbers: Vec<u32> = listing
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let n = f.next()?.parse().ok()?;
                (f.next()? == chain).then_some(n)
            })
            .collect();
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        for n in numbers {
            nat(&["-D", parent, &n.to_string()]);
        }
    }
}

/// Leaves the host's nat table as the test found it: removes portmap's
/// rules for a host port if a failed test left them (the pod's CNI DEL
/// normally does), and portmap's shared chains once no pod uses them, if
/// they were not there before.
struct HostPortRules {
    port: u16,
    shared_before: bool,
}

impl HostPortRules {
    fn new(port: u16) -> HostPortRules {
        HostPortRules {
            port,
            shared_before: nat_rules().contains("-N CNI-HOSTPORT-DNAT"),
        }
    }
}

impl Drop for HostPortRules {
    fn drop(&mut self) {
        let mut chains: Vec<String> = Vec::new();
        for r in rules_for(self.port) {
            let f: Vec<&str> = r.split_whitespace().collect();
            if let (Some(&"-A"), Some(chain)) = (f.first(), f.get(1))
                && chain.starts_with("CNI-DN-")
                && !chains.iter().any(|c| c == chain)
            {
                chains.push((*chain).to_string());
            }
        }
        for chain in &chains {
            delete_jumps_to(chain);
            nat(&["-F", chain]);
            nat(&["-X", chain]);
        }
        let in_use = nat_rules()
            .lines()
            .any(|l| l.starts_with("-A CNI-HOSTPORT-DNAT "));
        if self.shared_before || in_use {
            return;
        }
        for chain in SHARED {
            delete_jumps_to(chain);
        }
        for chain in SHARED {
            nat(&["-F", chain]);
            nat(&["-X", chain]);
        }
    }
}

/// The node's InternalIP, as its agent reported it.
async fn node_ip(api: &Api, node: &str) -> Option<String> {
    let (_, n) = api.get(&format!("/api/v1/nodes/{node}")).await.ok()?;
    n["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_reach_the_pod_and_its_containers_share_localhost() {
    let env = tokio::task::block_in_place(OciEnv::start);
    let up = tokio::task::block_in_place(|| env.up("edge-net"));
    let api = Api::new(&up.url, &admin_token(&up));
    let host_port = free_port();
    let _cleanup = HostPortRules::new(host_port);
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: hp
spec:
  containers:
  - name: httpd
    image: {httpd}
    ports:
    - containerPort: 80
      hostPort: {host_port}
  # busybox httpd is PID 1 and ignores SIGTERM: a short stop.
  terminationGracePeriodSeconds: 2
---
apiVersion: v1
kind: Pod
metadata:
  name: duo
spec:
  containers:
  - name: web
    image: {httpd}
  - name: sidecar
    image: {bb}
    command: [\"sh\", \"-c\", \"while :; do wget -qO- http://127.0.0.1:80/ && echo fetched; sleep 1; done\"]
",
        httpd = env.httpd,
        bb = env.busybox
    );
    let out = up.cli_stdin(&["apply", "-f", "-"], Some(&manifest));
    assert!(out.status.success(), "{}", stderr(&out));

    // hostPort: the node forwards its port to the pod's port 80.
    let hp = eventually(
        "the hp pod Running and Ready",
        Duration::from_secs(120),
        || async {
            let (_, p) = api.get("/api/v1/namespaces/default/pods/hp").await?;
            Ok(is_running_and_ready(&p).then_some(p))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    let local = format!("127.0.0.1:{host_port}");
    let page = eventually(&format!("the page on {local}"), Duration::from_secs(30), || {
        let local = local.clone();
        async move { Ok(tokio::task::block_in_place(|| http_get(&local))) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nnat rules:\n{}\n{}", nat_rules(), env.logs(&up)));
    assert!(page.contains(PAGE), "{page}");
    assert!(
        !rules_for(host_port).is_empty(),
        "portmap's DNAT rules for {host_port}:\n{}",
        nat_rules()
    );
    // Also on the node's own address (what other nodes would dial).
    if let Some(ip) = node_ip(&api, "edge-net").await {
        let addr = format!("{ip}:{host_port}");
        let page = tokio::task::block_in_place(|| http_get(&addr))
            .unwrap_or_else(|| panic!("no page on {addr}\nnat rules:\n{}", nat_rules()));
        assert!(page.contains(PAGE), "{page}");
    }
    // Nothing listens on the host port: it is iptables that forwards.
    let pod_ip = hp["status"]["podIP"].as_str().unwrap_or_default().to_string();
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", host_port)).is_ok(),
        "the host port is not bound by a process"
    );
    assert!(tokio::task::block_in_place(|| http_get(&format!("{pod_ip}:80"))).is_some());

    // Two containers of one pod share its network: the sidecar fetches the
    // web container's page from 127.0.0.1:80.
    eventually(
        "the duo pod Running and Ready",
        Duration::from_secs(120),
        || async {
            let (_, p) = api.get("/api/v1/namespaces/default/pods/duo").await?;
            Ok(is_running_and_ready(&p).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    let logs = eventually(
        "the sidecar's logs show the page",
        Duration::from_secs(60),
        || async {
            let out = tokio::task::block_in_place(|| up.cli(&["logs", "duo", "-c", "sidecar"]));
            let text = stdout(&out);
            Ok((text.contains(PAGE) && text.contains("fetched")).then_some(text))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    assert!(logs.contains("<h1>Hello from a Shturman OCI pod</h1>"), "{logs}");
    let out = tokio::task::block_in_place(|| up.cli(&["logs", "duo", "-c", "web"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(PAGE), "the web container logs nothing");

    // Deleting the pod tears its sandbox down (its pod dir goes last): CNI
    // DEL has removed the rules by then.
    let uid = hp["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let pod_dir = up
        .data_dir()
        .join("agent/oci/pods")
        .join(format!("default_hp_{uid}"));
    assert!(pod_dir.is_dir(), "{}", pod_dir.display());
    let out = up.cli(&["delete", "pod", "hp"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("the hp pod torn down", Duration::from_secs(60), || async {
        Ok((!pod_dir.exists()).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    assert_eq!(rules_for(host_port), Vec::<String>::new(), "{}", nat_rules());
    assert!(tokio::task::block_in_place(|| http_get(&local)).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_secrets_authenticate_pulls_from_a_private_registry() {
    let (user, pass) = ("fleet", "s3cret-pull-pass");
    let env = tokio::task::block_in_place(|| OciEnv::start_with(Some((user, pass))));
    let up = tokio::task::block_in_place(|| env.up("edge-auth"));
    let api = Api::new(&up.url, &admin_token(&up));
    let host = env.registry.host();

    // Without credentials the registry says 401: ErrImagePull, then
    // ImagePullBackOff, with its words. `Always`, so it keeps asking even
    // once another pod brought the image.
    let anon = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: anon
spec:
  containers:
  - name: httpd
    image: {httpd}
    imagePullPolicy: Always
",
        httpd = env.httpd
    );
    let out = up.cli_stdin(&["apply", "-f", "-"], Some(&anon));
    assert!(out.status.success(), "{}", stderr(&out));
    let waiting = eventually("anon in ImagePullBackOff", Duration::from_secs(90), || async {
        let (_, p) = api.get("/api/v1/namespaces/default/pods/anon").await?;
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        Ok((w["reason"] == "ImagePullBackOff").then(|| w.clone()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    let message = waiting["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("401") || message.to_lowercase().contains("unauthorized"),
        "the registry's answer: {waiting}"
    );
    assert!(message.contains(&env.httpd), "names the image: {waiting}");

    // With a dockerconfigjson Secret in imagePullSecrets it pulls and runs.
    let config = serde_json::json!({"auths": {host.clone(): {"username": user, "password": pass}}});
    let authed = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: regcred
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{config}'
---
apiVersion: v1
kind: Pod
metadata:
  name: authed
spec:
  imagePullSecrets:
  - name: regcred
  containers:
  - name: httpd
    image: {httpd}
    imagePullPolicy: Always
",
        httpd = env.httpd
    );
    let out = up.cli_stdin(&["apply", "-f", "-"], Some(&authed));
    assert!(out.status.success(), "{}", stderr(&out));
    let p = eventually("authed Running and Ready", Duration::from_secs(120), || async {
        let (_, p) = api.get("/api/v1/namespaces/default/pods/authed").await?;
        Ok(is_running_and_ready(&p).then_some(p))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    let ip = p["status"]["podIP"].as_str().unwrap_or_default().to_string();
    let page = eventually("the authed pod's page", Duration::from_secs(30), || {
        let addr = format!("{ip}:80");
        async move { Ok(tokio::task::block_in_place(|| http_get(&addr))) }
    })
    .await
    .unwrap();
    assert!(page.contains(PAGE), "{page}");
    let image_id = p["status"]["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap_or_default();
    assert!(image_id.contains("sha256:"), "{p}");

    // The credentials were that pod's only: anon still cannot pull.
    let (_, a) = api.get("/api/v1/namespaces/default/pods/anon").await.unwrap();
    let w = &a["status"]["containerStatuses"][0]["state"]["waiting"];
    assert!(
        w["reason"] == "ImagePullBackOff" || w["reason"] == "ErrImagePull",
        "{}",
        a["status"]
    );
    assert_eq!(a["status"]["phase"], "Pending");
    // The secret's password appears in no status or log line.
    let (_, all) = api.get("/api/v1/namespaces/default/pods").await.unwrap();
    assert!(!all.to_string().contains(pass));
    assert!(!up.log_text().contains(pass), "the agent logged the password");
}
