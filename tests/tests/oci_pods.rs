//! OCI pods end to end: the real `shturman up`, its local agent pointed at a
//! private containerd (CRI + CNI bridge, tests/src/containerd.rs) and images
//! from a private registry (tests/src/registry.rs) built as OCI layouts
//! without Docker (tests/src/oci_image.rs). The seed Deployment
//! (examples/nginx-deployment.yaml with the busybox httpd image) reaches 3/3,
//! every pod serves its page on its own IP, a killed container is
//! restarted, a rollout to a missing image stalls with `ImagePullBackOff`
//! while the old pods keep serving; a 32Mi memory limit ends a memory hog
//! `OOMKilled`; `shturman logs` reads the CRI log files (current, tail,
//! previous, follow).
//!
//! Needs root, containerd, runc, the CNI plugins, docker-registry, skopeo
//! and busybox-static (scripts/setup.sh installs them).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use shturman_e2e::api::{Api, eventually};
use shturman_e2e::oci_env::{OciEnv, admin_token, is_running_and_ready};
use shturman_e2e::{binary, stderr, stdout, workspace_root};

/// `GET http://ip:80/`: the body of a 200 answer.
fn http_get(ip: &str) -> Option<String> {
    let addr = format!("{ip}:80").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then_some(())?;
    head.split_whitespace()
        .nth(1)
        .filter(|code| *code == "200")
        .map(|_| body.to_string())
}

/// Whether `ip` serves the busybox httpd image's page.
fn serves_page(ip: &str) -> bool {
    http_get(ip).is_some_and(|b| b.contains("Hello from a Shturman OCI pod"))
}

fn pod_ip(p: &Value) -> String {
    p["status"]["podIP"].as_str().unwrap_or_default().to_string()
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

/// examples/nginx-deployment.yaml with `image` in place of nginx.
fn seed_manifest(image: &str) -> String {
    let seed = std::fs::read_to_string(workspace_root().join("examples/nginx-deployment.yaml"))
        .expect("examples/nginx-deployment.yaml");
    assert!(
        seed.contains("image: nginx:1.14.2"),
        "the seed example changed:\n{seed}"
    );
    seed.replace("image: nginx:1.14.2", &format!("image: {image}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_deployment_serves_restarts_and_stalls_on_a_missing_image() {
    let env = tokio::task::block_in_place(OciEnv::start);
    let mut up = tokio::task::block_in_place(|| env.up("edge-oci"));
    let api = Api::new(&up.url, &admin_token(&up));

    let out = up.cli_stdin(&["apply", "-f", "-"], Some(&seed_manifest(&env.httpd)));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "deployment.apps/nginx-deployment created");

    // 3/3 Running and Ready, each with its own IP.
    let pods = eventually(
        "3 nginx pods Running and Ready",
        Duration::from_secs(120),
        || async {
            let pods = api
                .items("/api/v1/namespaces/default/pods?labelSelector=app%3Dnginx")
                .await?;
            Ok((pods.len() == 3 && pods.iter().all(is_running_and_ready)).then_some(pods))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    let ips: BTreeSet<String> = pods.iter().map(pod_ip).collect();
    assert_eq!(ips.len(), 3, "three distinct pod IPs: {ips:?}");
    let subnet = env.containerd.network().subnet.clone();
    let prefix = subnet.trim_end_matches("0/24");
    for p in &pods {
        assert_eq!(p["spec"]["nodeName"], "edge-oci");
        let ip = pod_ip(p);
        assert!(ip.starts_with(prefix), "{ip} is in the CNI subnet {subnet}");
        assert_eq!(p["status"]["podIPs"][0]["ip"], ip.as_str());
        let c = &p["status"]["containerStatuses"][0];
        assert!(
            c["containerID"]
                .as_str()
                .unwrap_or_default()
                .starts_with("containerd://"),
            "{c}"
        );
        assert!(
            c["imageID"].as_str().unwrap_or_default().contains("sha256:"),
            "{c}"
        );
    }
    let out = up.cli(&["get", "deploy", "nginx-deployment"]);
    assert!(stdout(&out).contains("3/3"), "{}", stdout(&out));

    // Each pod serves its page on its own IP, from the node.
    for ip in &ips {
        let ip = ip.clone();
        eventually(&format!("the page on {ip}:80"), Duration::from_secs(30), || {
            let ip = ip.clone();
            async move { Ok(tokio::task::block_in_place(|| serves_page(&ip)).then_some(())) }
        })
        .await
        .unwrap();
    }

    // The workloads survive a restart of `shturman up` (agent included): the
    // restarted agent adopts the running sandboxes and containers.
    let before: Vec<(String, String)> = pods
        .iter()
        .map(|p| {
            let c = &p["status"]["containerStatuses"][0];
            (name(p), c["containerID"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    let status = tokio::task::block_in_place(|| up.terminate()).expect("shturman up stops");
    assert!(status.success(), "{status}");
    for ip in &ips {
        assert!(
            tokio::task::block_in_place(|| serves_page(ip)),
            "{ip} serves while the agent is down"
        );
    }
    tokio::task::block_in_place(|| up.spawn()).expect("shturman up again");
    let api = Api::new(&up.url, &admin_token(&up));
    let pods = eventually(
        "the same 3 pods adopted, Running and Ready",
        Duration::from_secs(90),
        || async {
            let pods = api
                .items("/api/v1/namespaces/default/pods?labelSelector=app%3Dnginx")
                .await?;
            let now: Vec<(String, String)> = pods
                .iter()
                .map(|p| {
                    let c = &p["status"]["containerStatuses"][0];
                    (name(p), c["containerID"].as_str().unwrap_or_default().to_string())
                })
                .collect();
            let same = now.len() == 3 && before.iter().all(|b| now.contains(b));
            Ok((same && pods.iter().all(is_running_and_ready)).then_some(pods))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    for p in &pods {
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0, "{p}");
        assert!(ips.contains(&pod_ip(p)), "same IP after adoption: {p}");
    }

    // Killing a container's process restarts it, in the same sandbox (same IP).
    let victim = pods[0].clone();
    let victim_name = name(&victim);
    let victim_ip = pod_ip(&victim);
    let cid = victim["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = tokio::task::block_in_place(|| env.pid_of(&cid));
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let restarted = eventually("the killed container restarted", Duration::from_secs(60), || {
        let api = &api;
        let path = format!("/api/v1/namespaces/default/pods/{victim_name}");
        async move {
            let (_, p) = api.get(&path).await?;
            let c = &p["status"]["containerStatuses"][0];
            Ok(
                (c["restartCount"] == 1 && c["state"]["running"].is_object() && is_running_and_ready(&p))
                    .then_some(p),
            )
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    let c = &restarted["status"]["containerStatuses"][0];
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 137, "{c}");
    assert_ne!(c["containerID"].as_str(), Some(cid.as_str()), "a new container");
    assert_eq!(pod_ip(&restarted), victim_ip);
    let ip = victim_ip.clone();
    eventually("the restarted pod serves again", Duration::from_secs(30), || {
        let ip = ip.clone();
        async move { Ok(tokio::task::block_in_place(|| serves_page(&ip)).then_some(())) }
    })
    .await
    .unwrap();

    // A rollout to an image the registry does not have stalls: the new pod
    // waits in ErrImagePull/ImagePullBackOff with the registry's message,
    // the three old pods keep running and serving.
    let missing = env.httpd.replace("busybox-httpd:1", "busybox-httpd:missing");
    let out = up.cli_stdin(&["apply", "-f", "-"], Some(&seed_manifest(&missing)));
    assert!(out.status.success(), "{}", stderr(&out));
    let old: BTreeSet<String> = pods.iter().map(name).collect();
    let stuck = eventually(
        "the new pod in ImagePullBackOff",
        Duration::from_secs(90),
        || async {
            let pods = api
                .items("/api/v1/namespaces/default/pods?labelSelector=app%3Dnginx")
                .await?;
            Ok(pods.into_iter().find(|p| {
                p["spec"]["containers"][0]["image"] == missing.as_str()
                    && p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
            }))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    let waiting = &stuck["status"]["containerStatuses"][0]["state"]["waiting"];
    let message = waiting["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("busybox-httpd:missing") && message.contains("not found"),
        "the registry's answer: {waiting}"
    );
    assert_eq!(stuck["status"]["phase"], "Pending");
    // A few back-off rounds later nothing has moved on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let now = api
        .items("/api/v1/namespaces/default/pods?labelSelector=app%3Dnginx")
        .await
        .unwrap();
    let running: Vec<&Value> = now.iter().filter(|p| old.contains(&name(p))).collect();
    assert_eq!(running.len(), 3, "the old pods are all still there");
    for p in running {
        assert!(is_running_and_ready(p), "{p}");
        let ip = pod_ip(p);
        assert!(
            tokio::task::block_in_place(|| serves_page(&ip)),
            "old pod {} still serves on {ip}",
            name(p)
        );
    }
    let (_, d) = api
        .get("/apis/apps/v1/namespaces/default/deployments/nginx-deployment")
        .await
        .unwrap();
    assert_eq!(d["status"]["availableReplicas"], 3, "{}", d["status"]);
    assert_eq!(d["status"]["updatedReplicas"], 1, "{}", d["status"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_ends_oom_killed_and_logs_come_from_cri_files() {
    let env = tokio::task::block_in_place(OciEnv::start);
    let up = tokio::task::block_in_place(|| env.up("edge-oci-2"));
    let api = Api::new(&up.url, &admin_token(&up));
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: hog
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: {bb}
    command: [\"sh\", \"-c\", \"echo allocating; x=0123456789; while :; do x=$x$x; done\"]
    resources:
      limits:
        memory: 32Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: chatter
spec:
  containers:
  - name: chatter
    image: {bb}
    command: [\"sh\", \"-c\"]
    args: [\"echo run of $(GREETING); i=0; while [ $i -lt 3 ]; do echo line $i; i=$((i+1)); sleep 0.2; done; while :; do echo tick; sleep 0.3; done\"]
    env:
    - name: GREETING
      value: chatter
",
        bb = env.busybox
    );
    let out = up.cli_stdin(&["apply", "-f", "-"], Some(&manifest));
    assert!(out.status.success(), "{}", stderr(&out));

    // The memory cgroup's OOM killer ends the hog: OOMKilled, exit 137, Failed.
    let hog = eventually("the hog OOMKilled", Duration::from_secs(90), || async {
        let (_, p) = api.get("/api/v1/namespaces/default/pods/hog").await?;
        let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        Ok((t["reason"] == "OOMKilled").then_some(p))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    let t = &hog["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 137, "{t}");
    let hog = eventually("the hog pod Failed", Duration::from_secs(30), || async {
        let (_, p) = api.get("/api/v1/namespaces/default/pods/hog").await?;
        Ok((p["status"]["phase"] == "Failed").then_some(p))
    })
    .await
    .unwrap();
    assert_eq!(hog["status"]["containerStatuses"][0]["restartCount"], 0);
    let out = tokio::task::block_in_place(|| up.cli(&["logs", "hog"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "allocating\n");

    // The chatter's lines, from containerd's CRI log file, with $(VAR) expanded.
    eventually("the chatter's first lines", Duration::from_secs(60), || async {
        let out = tokio::task::block_in_place(|| up.cli(&["logs", "chatter"]));
        Ok(stdout(&out)
            .starts_with("run of chatter\nline 0\nline 1\nline 2\ntick\n")
            .then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    let out = tokio::task::block_in_place(|| up.cli(&["logs", "chatter", "--tail", "1"]));
    assert_eq!(stdout(&out), "tick\n");
    let out = tokio::task::block_in_place(|| up.cli(&["logs", "chatter", "--previous"]));
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        r#"Error from server (BadRequest): previous terminated container "chatter" in pod "chatter" not found"#
    );

    // -f streams new lines as containerd writes them.
    let mut child = Command::new(binary("shturman"))
        .arg("--config")
        .arg(up.admin_conf())
        .args(["logs", "-f", "chatter", "--tail", "1"])
        .env_remove("SHTURMAN_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shturman logs -f");
    let child_out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(child_out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while lines.len() < 4 && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    assert!(
        lines.len() >= 4 && lines.iter().all(|l| l == "tick"),
        "the tail line and 3 new ones within 20s: {lines:?}\n{}",
        env.logs(&up)
    );

    // After a restart, --previous reads the run before.
    let (_, p) = api.get("/api/v1/namespaces/default/pods/chatter").await.unwrap();
    let cid = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = tokio::task::block_in_place(|| env.pid_of(&cid));
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    eventually("the chatter restarted", Duration::from_secs(60), || async {
        let (_, p) = api.get("/api/v1/namespaces/default/pods/chatter").await?;
        let c = &p["status"]["containerStatuses"][0];
        Ok((c["restartCount"] == 1 && c["state"]["running"].is_object()).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    let out = tokio::task::block_in_place(|| up.cli(&["logs", "chatter", "--previous"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("run of chatter\nline 0\n"),
        "{}",
        stdout(&out)
    );
}
