//! Probes of OCI pods end to end: the real `shturman up`, its local agent on
//! a private containerd (tests/src/containerd.rs), the busybox images from a
//! private registry (tests/src/registry.rs). An `httpGet` readiness probe on
//! port 80 makes a Deployment's pods Ready (and its Service's endpoints
//! ready); a `tcpSocket` readiness probe on a closed port keeps its pod
//! Running but unready (under `notReadyAddresses`); an `exec` liveness
//! probe (`cat /tmp/healthy`, through CRI `ExecSync`) restarts the container
//! once its command removes the file, `lastState.terminated` carrying the
//! probe's message.
//!
//! Needs root, containerd, runc, the CNI plugins, docker-registry, skopeo
//! and busybox-static (scripts/setup.sh installs them).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use shturman_e2e::api::{Api, eventually};
use shturman_e2e::oci_env::{OciEnv, admin_token, is_running_and_ready};
use shturman_e2e::{stderr, stdout};

/// The status of the pod condition `kind` (`"True"`, `"False"`, or `""`).
fn condition(p: &Value, kind: &str) -> String {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn pod_ip(p: &Value) -> String {
    p["status"]["podIP"].as_str().unwrap_or_default().to_string()
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

/// Whether `ip:80` serves the busybox httpd image's page.
fn serves_page(ip: &str) -> bool {
    let Ok(addr) = format!("{ip}:80").parse() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let status = buf.lines().next().unwrap_or_default();
    status.starts_with("HTTP/1.") && status.contains(" 200 ") && buf.contains("Hello from a Shturman OCI pod")
}

/// Endpoint IPs of the Service's Endpoints under `field` (`addresses` or
/// `notReadyAddresses`), sorted.
fn endpoint_ips(ep: &Value, field: &str) -> Vec<String> {
    let mut v: Vec<String> = ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s[field].as_array().into_iter().flatten())
        .filter_map(|a| a["ip"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_readiness_makes_pods_ready_and_a_closed_port_keeps_one_unready() {
    let env = tokio::task::block_in_place(OciEnv::start);
    let up = tokio::task::block_in_place(|| env.up("edge-probes"));
    let api = Api::new(&up.url, &admin_token(&up));
    let manifest = format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
        tier: front
    spec:
      containers:
      - name: httpd
        image: {httpd}
        ports:
        - containerPort: 80
          name: http
        readinessProbe:
          httpGet:
            path: /
            port: http
          periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: closed
  labels:
    app: closed
    tier: front
spec:
  containers:
  - name: httpd
    image: {httpd}
    readinessProbe:
      tcpSocket:
        port: 8081
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata:
  name: front
spec:
  selector:
    tier: front
  ports:
  - port: 80
",
        httpd = env.httpd
    );
    let out = up.cli_stdin(&["apply", "-f", "-"], Some(&manifest));
    assert!(out.status.success(), "{}", stderr(&out));

    // The Deployment's pods turn Ready once their httpGet probe passes:
    // the container is ready, and so are ContainersReady and Ready.
    let pods = eventually(
        "2 web pods Running and Ready",
        Duration::from_secs(120),
        || async {
            let pods = api
                .items("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
                .await?;
            Ok((pods.len() == 2 && pods.iter().all(is_running_and_ready)).then_some(pods))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    for p in &pods {
        assert_eq!(condition(p, "ContainersReady"), "True", "{p}");
        let c = &p["status"]["containerStatuses"][0];
        assert_eq!(c["ready"], true, "{c}");
        assert_eq!(c["started"], true, "{c}");
        assert_eq!(c["restartCount"], 0, "{c}");
        let ip = pod_ip(p);
        assert!(
            tokio::task::block_in_place(|| serves_page(&ip)),
            "{} serves on {ip}",
            name(p)
        );
    }
    eventually(
        "the web Deployment 2/2 available",
        Duration::from_secs(60),
        || async {
            let (_, d) = api
                .get("/apis/apps/v1/namespaces/default/deployments/web")
                .await?;
            Ok((d["status"]["availableReplicas"] == 2).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));

    // The pod probed on a closed port runs but never turns ready.
    let closed = eventually("the closed pod Running", Duration::from_secs(60), || async {
        let (_, p) = api.get("/api/v1/namespaces/default/pods/closed").await?;
        let c = &p["status"]["containerStatuses"][0];
        Ok((p["status"]["phase"] == "Running" && c["state"]["running"].is_object()).then_some(p))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    // Several probe periods later it is still unready, and never restarted
    // (a readiness probe does not kill).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, p) = api.get("/api/v1/namespaces/default/pods/closed").await.unwrap();
    assert_eq!(p["status"]["phase"], "Running", "{p}");
    assert_eq!(condition(&p, "Ready"), "False", "{}", p["status"]);
    assert_eq!(condition(&p, "ContainersReady"), "False", "{}", p["status"]);
    let c = &p["status"]["containerStatuses"][0];
    assert_eq!(c["ready"], false, "{c}");
    assert_eq!(c["started"], true, "{c}");
    assert_eq!(c["restartCount"], 0, "{c}");
    assert_eq!(
        c["containerID"], closed["status"]["containerStatuses"][0]["containerID"],
        "the same container"
    );
    // It serves on port 80 all the same: only the probe says it is not ready.
    let ip = pod_ip(&p);
    assert!(tokio::task::block_in_place(|| serves_page(&ip)));
    let out = up.cli(&["get", "pods"]);
    let row = stdout(&out)
        .lines()
        .find(|l| l.starts_with("closed "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        row.contains(" 0/1 ") && row.contains("Running"),
        "{}",
        stdout(&out)
    );

    // The Service's endpoints follow readiness: the web pods ready, the
    // closed one not.
    let mut web_ips: Vec<String> = pods.iter().map(pod_ip).collect();
    web_ips.sort();
    eventually(
        "the front endpoints split by readiness",
        Duration::from_secs(30),
        || {
            let (api, web_ips, ip) = (&api, &web_ips, &ip);
            async move {
                let (code, ep) = api.get("/api/v1/namespaces/default/endpoints/front").await?;
                Ok((code == 200
                    && endpoint_ips(&ep, "addresses") == *web_ips
                    && endpoint_ips(&ep, "notReadyAddresses") == [ip.clone()])
                .then_some(()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_liveness_probe_restarts_the_container_with_the_probes_message() {
    let env = tokio::task::block_in_place(OciEnv::start);
    let up = tokio::task::block_in_place(|| env.up("edge-liveness"));
    let api = Api::new(&up.url, &admin_token(&up));
    // Healthy for 6 s, then the file goes and `cat` fails. The sleep is
    // PID 1 of its PID namespace and ignores SIGTERM: the probe's 2 s grace
    // period ends in SIGKILL (exit 137), long before the pod's 30 s.
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: flaky
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: app
    image: {bb}
    command: [\"sh\", \"-c\", \"echo up; touch /tmp/healthy; sleep 6; rm -f /tmp/healthy; echo unhealthy; exec sleep 600\"]
    livenessProbe:
      exec:
        command: [\"cat\", \"/tmp/healthy\"]
      periodSeconds: 1
      failureThreshold: 2
      timeoutSeconds: 5
      terminationGracePeriodSeconds: 2
",
        bb = env.busybox
    );
    let out = up.cli_stdin(&["apply", "-f", "-"], Some(&manifest));
    assert!(out.status.success(), "{}", stderr(&out));

    let first = eventually(
        "the flaky pod Running and Ready",
        Duration::from_secs(90),
        || async {
            let (_, p) = api.get("/api/v1/namespaces/default/pods/flaky").await?;
            Ok(is_running_and_ready(&p).then_some(p))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    let first_id = first["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(first_id.starts_with("containerd://"), "{first}");

    // The passing exec probe leaves it alone while the file is there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, p) = api.get("/api/v1/namespaces/default/pods/flaky").await.unwrap();
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0, "{p}");

    // Then the probe fails twice, the container is stopped and restarted.
    let restarted = eventually(
        "the flaky container restarted by its liveness probe",
        Duration::from_secs(90),
        || async {
            let (_, p) = api.get("/api/v1/namespaces/default/pods/flaky").await?;
            let c = &p["status"]["containerStatuses"][0];
            Ok((c["restartCount"].as_i64().unwrap_or(0) >= 1
                && c["state"]["running"].is_object()
                && c["lastState"]["terminated"].is_object())
            .then_some(p))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs(&up)));
    let c = &restarted["status"]["containerStatuses"][0];
    let t = &c["lastState"]["terminated"];
    let message = t["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Liveness probe failed: ") && message.contains("exited with 1"),
        "{t}"
    );
    assert_eq!(t["exitCode"], 137, "SIGKILL after the probe's grace: {t}");
    assert_eq!(t["reason"], "Error", "{t}");
    assert_eq!(t["containerID"].as_str(), Some(first_id.as_str()), "{t}");
    assert_ne!(
        c["containerID"].as_str(),
        Some(first_id.as_str()),
        "a new container: {c}"
    );
    // The probe's 2 s grace, not the pod's 30 s: the first run ended within
    // a few seconds of the file going (6 s + 2 failures + 2 s grace).
    let ran = |t: &Value| -> Option<i64> {
        let at = |k: &str| chrono::DateTime::parse_from_rfc3339(t[k].as_str()?).ok();
        Some((at("finishedAt")? - at("startedAt")?).num_seconds())
    };
    let secs = ran(t).unwrap_or_else(|| panic!("start and finish times: {t}"));
    assert!((7..=20).contains(&secs), "the first run lasted {secs}s: {t}");
    // The logs of the killed run are still there.
    let out = tokio::task::block_in_place(|| up.cli(&["logs", "flaky", "--previous"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "up\nunhealthy\n");
}
