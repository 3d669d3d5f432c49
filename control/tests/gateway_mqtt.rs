//! The node gateway end to end in one process: a control plane on port 0
//! with the memory store and the embedded broker on port 0, and rumqttc
//! clients playing agents. Every wait is on a condition with a deadline.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use serde_json::{Value, json};
use shturman_api::wire::{self, Heartbeat, JoinRequest, JoinResult, PodReport, Stamp, Topic};
use shturman_control::gateway::sign;
use shturman_control::tokens::JoinToken;
use shturman_control::{Config, Control, MqttChoice, StoreChoice};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(15);

/// A running control plane and an HTTP client for its API.
struct Cp {
    url: String,
    mqtt: std::net::SocketAddr,
    token: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Cp {
    async fn start() -> Result<Cp> {
        let dir = tempfile::tempdir()?;
        let config = Config {
            data_dir: dir.path().join("data"),
            api_addr: "127.0.0.1:0".parse()?,
            store: StoreChoice::Memory,
            mqtt: MqttChoice::Embedded("127.0.0.1:0".parse()?),
            ..Config::default()
        };
        let control = Control::start(config).await?;
        let mqtt = control.mqtt_addr.context("the embedded broker's address")?;
        assert_eq!(
            control.mqtt_url.as_deref(),
            Some(format!("mqtt://{mqtt}").as_str())
        );
        let token = shturman_control::server::auth::load_or_create_token(&dir.path().join("data"))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let url = control.url.clone();
        tokio::spawn(control.run_until(async move {
            let _ = rx.await;
        }));
        Ok(Cp {
            url,
            mqtt,
            token,
            http: reqwest::Client::builder().no_proxy().build()?,
            stop: Some(tx),
            _dir: dir,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let method_is_patch = method == reqwest::Method::PATCH;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            let ct = if method_is_patch {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            req = req.header("content-type", ct).body(serde_json::to_vec(&b)?);
        }
        let resp = req.send().await?;
        let code = resp.status().as_u16();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((code, v))
    }

    async fn get(&self, path: &str) -> Result<Option<Value>> {
        let (code, v) = self.call(reqwest::Method::GET, path, None).await?;
        Ok((code == 200).then_some(v))
    }

    async fn create(&self, path: &str, body: Value) -> Result<Value> {
        let (code, v) = self.call(reqwest::Method::POST, path, Some(body)).await?;
        if code != 201 {
            bail!("POST {path}: {code} {v}");
        }
        Ok(v)
    }

    /// A join token valid until `expires` (or forever).
    async fn token(&self, expires: Option<chrono::DateTime<chrono::Utc>>) -> Result<String> {
        let t = JoinToken::random();
        self.create(
            "/api/v1/namespaces/shturman-system/secrets",
            serde_json::to_value(t.to_secret(expires))?,
        )
        .await?;
        Ok(t.to_string())
    }
}

impl Drop for Cp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Polls `check` until it yields `Some`, or fails after the deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if started.elapsed() > DEADLINE {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A test MQTT client: publishes, and hands over what it receives.
struct Agent {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Publish>,
    task: tokio::task::JoinHandle<()>,
}

fn options(addr: std::net::SocketAddr, user: &str, pass: &str) -> MqttOptions {
    let mut o = MqttOptions::new(
        format!("test-{user}-{}", rand_suffix()),
        addr.ip().to_string(),
        addr.port(),
    );
    o.set_credentials(user, pass);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(wire::MAX_PACKET_BYTES, wire::MAX_PACKET_BYTES);
    o
}

fn rand_suffix() -> String {
    JoinToken::random().id
}

/// Polls until CONNACK; `Err` with the client's error when refused.
async fn connect(mut events: EventLoop) -> Result<EventLoop, rumqttc::ConnectionError> {
    loop {
        match tokio::time::timeout(DEADLINE, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(events),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(rumqttc::ConnectionError::NetworkTimeout),
        }
    }
}

impl Agent {
    async fn connect(
        addr: std::net::SocketAddr,
        user: &str,
        pass: &str,
        filters: &[String],
    ) -> Result<Agent> {
        let (client, events) = AsyncClient::new(options(addr, user, pass), 64);
        let mut events = connect(events)
            .await
            .map_err(|e| anyhow!("CONNECT refused: {e}"))?;
        for f in filters {
            client.subscribe(f.clone(), QoS::AtLeastOnce).await?;
        }
        let (tx, incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(ev) = events.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = ev
                    && tx.send(p).is_err()
                {
                    return;
                }
            }
        });
        Ok(Agent {
            client,
            incoming,
            task,
        })
    }

    /// The next message on `topic`.
    async fn next_on(&mut self, topic: &str) -> Result<Publish> {
        let wait = async {
            while let Some(p) = self.incoming.recv().await {
                if p.topic == topic {
                    return Some(p);
                }
            }
            None
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .map_err(|_| anyhow!("timed out waiting for a message on {topic}"))?
            .ok_or_else(|| anyhow!("the connection ended"))
    }

    /// Desired pods on `topic` until one passes `ok`.
    async fn desired_until(
        &mut self,
        topic: &str,
        ok: impl Fn(&wire::DesiredPod) -> bool,
    ) -> Result<wire::DesiredPod> {
        loop {
            let p = self.next_on(topic).await?;
            let d: wire::DesiredPod = serde_json::from_slice(&p.payload)?;
            if ok(&d) {
                return Ok(d);
            }
        }
    }

    /// Pod sets on `topic` until one passes `ok`.
    async fn pod_set_until(
        &mut self,
        topic: &str,
        ok: impl Fn(&wire::PodSet) -> bool,
    ) -> Result<wire::PodSet> {
        loop {
            let p = self.next_on(topic).await?;
            let s: wire::PodSet = serde_json::from_slice(&p.payload)?;
            if ok(&s) {
                return Ok(s);
            }
        }
    }

    async fn publish(&self, topic: Topic, retain: bool, body: Vec<u8>) -> Result<()> {
        self.client
            .publish(topic.name(), QoS::AtLeastOnce, retain, body)
            .await?;
        Ok(())
    }

    async fn signed(&self, topic: Topic, body: &impl serde::Serialize, secret: &str) -> Result<()> {
        let envelope = sign::sign(serde_json::to_string(body)?, secret);
        self.publish(topic, false, serde_json::to_vec(&envelope)?).await
    }

    /// Sends a join request and returns the answer.
    async fn join(&mut self, node: &str, token: &str, secret: &str) -> Result<JoinResult> {
        let req = JoinRequest {
            node: node.into(),
            token: token.into(),
            node_secret: secret.into(),
            agent_version: "test".into(),
            stamp: Stamp { epoch: 1, seq: 0 },
        };
        self.publish(
            Topic::Join { node: node.into() },
            false,
            serde_json::to_vec(&req)?,
        )
        .await?;
        let p = self.next_on(&Topic::Joined { node: node.into() }.name()).await?;
        Ok(serde_json::from_slice(&p.payload)?)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn node_secret(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// Connects with a token and joins.
async fn joined(cp: &Cp, node: &str, secret: &str) -> Result<Agent> {
    let token = cp.token(None).await?;
    let mut a = Agent::connect(cp.mqtt, node, &token, &wire::node_filters(node)).await?;
    let r = a.join(node, &token, secret).await?;
    assert!(r.accepted, "{r:?}");
    Ok(a)
}

fn heartbeat(node: &str, seq: u64, labels: Value) -> Result<Heartbeat> {
    Ok(serde_json::from_value(json!({
        "node": node,
        "stamp": {"epoch": 1, "seq": seq},
        "sentAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "nodeInfo": {"architecture": "arm64", "operatingSystem": "linux"}
        },
        "labels": labels,
    }))?)
}

fn ready(node: &Value) -> Option<&Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_heartbeat_and_link_drop() -> Result<()> {
    let cp = Cp::start().await?;
    let secret = node_secret('a');
    let agent = joined(&cp, "pi-1", &secret).await?;
    assert!(cp.get("/api/v1/nodes/pi-1").await?.is_some(), "the Node exists");
    assert!(
        cp.get("/api/v1/namespaces/shturman-system/secrets/node-secret-pi-1")
            .await?
            .is_some(),
        "the node secret is stored"
    );

    // Now the node can connect with its own secret instead of a token.
    let again = Agent::connect(cp.mqtt, "pi-1", &secret, &[]).await?;
    drop(again);

    // A signed heartbeat lands in the Node.
    let hb = heartbeat("pi-1", 1, json!({"kubernetes.io/arch": "arm64", "zone": "lab"}))?;
    agent
        .signed(Topic::NodeStatus { node: "pi-1".into() }, &hb, &secret)
        .await?;
    let node = eventually("the heartbeat in the Node", || async {
        Ok(cp
            .get("/api/v1/nodes/pi-1")
            .await?
            .filter(|n| n["metadata"]["labels"]["zone"] == "lab" && ready(n).is_some()))
    })
    .await?;
    assert_eq!(node["status"]["capacity"]["cpu"], "4");
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/arch"], "arm64");
    assert_eq!(ready(&node).unwrap()["status"], "True");

    // Unsigned, wrongly signed (another node's secret) and stale ones are
    // dropped; a later good one shows they were processed first.
    let other_secret = node_secret('b');
    let _pi2 = joined(&cp, "pi-2", &other_secret).await?;
    let evil = heartbeat("pi-1", 50, json!({"zone": "evil"}))?;
    agent
        .publish(
            Topic::NodeStatus { node: "pi-1".into() },
            false,
            serde_json::to_vec(&evil)?,
        )
        .await?;
    agent
        .signed(Topic::NodeStatus { node: "pi-1".into() }, &evil, &other_secret)
        .await?;
    agent
        .publish(
            Topic::NodeStatus { node: "pi-1".into() },
            false,
            b"{not json".to_vec(),
        )
        .await?;
    let mut old = heartbeat("pi-1", 1, json!({"zone": "stale"}))?;
    old.stamp = Stamp { epoch: 1, seq: 1 };
    agent
        .signed(Topic::NodeStatus { node: "pi-1".into() }, &old, &secret)
        .await?;
    let good = heartbeat("pi-1", 2, json!({"marker": "two"}))?;
    agent
        .signed(Topic::NodeStatus { node: "pi-1".into() }, &good, &secret)
        .await?;
    let node = eventually("the second heartbeat", || async {
        Ok(cp
            .get("/api/v1/nodes/pi-1")
            .await?
            .filter(|n| n["metadata"]["labels"]["marker"] == "two"))
    })
    .await?;
    assert_eq!(
        node["metadata"]["labels"]["zone"], "lab",
        "no forged or stale labels: {node}"
    );

    // What the node did while offline becomes Events on the Node.
    let mut back = heartbeat("pi-1", 3, json!({}))?;
    back.offline_log = vec!["restarted container default/web/app (exit 1)".into()];
    agent
        .signed(Topic::NodeStatus { node: "pi-1".into() }, &back, &secret)
        .await?;
    let event = eventually("the offline report as an Event", || async {
        let (_, list) = cp
            .call(reqwest::Method::GET, "/api/v1/namespaces/default/events", None)
            .await?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["reason"] == "WhileOffline")
            .cloned())
    })
    .await?;
    assert_eq!(event["involvedObject"]["kind"], "Node");
    assert_eq!(event["involvedObject"]["name"], "pi-1");
    assert_eq!(event["message"], "restarted container default/web/app (exit 1)");

    // The last will: the link dropped; Ready is Unknown at once.
    agent
        .signed(Topic::NodeOnline { node: "pi-1".into() }, &false, &secret)
        .await?;
    let node = eventually("Ready=Unknown", || async {
        Ok(cp
            .get("/api/v1/nodes/pi-1")
            .await?
            .filter(|n| ready(n).is_some_and(|r| r["status"] == "Unknown")))
    })
    .await?;
    let r = ready(&node).unwrap();
    assert_eq!(r["reason"], "NodeStatusUnknown");
    assert_eq!(r["message"], "the node's MQTT link dropped");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_last_will_marks_the_node_unknown() -> Result<()> {
    let cp = Cp::start().await?;
    let secret = node_secret('c');
    let token = cp.token(None).await?;
    // Join first (the will needs the node's secret to be signed).
    let mut a = Agent::connect(cp.mqtt, "pi-3", &token, &wire::node_filters("pi-3")).await?;
    assert!(a.join("pi-3", &token, &secret).await?.accepted);
    drop(a);
    let will_body = sign::sign(wire::ONLINE_FALSE.into(), &secret);
    let mut o = options(cp.mqtt, "pi-3", &secret);
    o.set_last_will(rumqttc::LastWill::new(
        Topic::NodeOnline { node: "pi-3".into() }.name(),
        serde_json::to_vec(&will_body)?,
        QoS::AtLeastOnce,
        true,
    ));
    let (client, events) = AsyncClient::new(o, 8);
    let events = connect(events).await?;
    let hb = heartbeat("pi-3", 1, json!({}))?;
    let env = sign::sign(serde_json::to_string(&hb)?, &secret);
    client
        .publish(
            Topic::NodeStatus { node: "pi-3".into() }.name(),
            QoS::AtLeastOnce,
            true,
            serde_json::to_vec(&env)?,
        )
        .await?;
    let mut events = events;
    let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    eventually("Ready=True", || async {
        Ok(cp
            .get("/api/v1/nodes/pi-3")
            .await?
            .filter(|n| ready(n).is_some_and(|r| r["status"] == "True")))
    })
    .await?;
    // Kill the link without DISCONNECT: the broker publishes the will.
    pump.abort();
    drop(client);
    eventually("the will to mark Ready=Unknown", || async {
        Ok(cp
            .get("/api/v1/nodes/pi-3")
            .await?
            .filter(|n| ready(n).is_some_and(|r| r["status"] == "Unknown")))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_expired_tokens_are_refused() -> Result<()> {
    let cp = Cp::start().await?;
    let expired = cp
        .token(Some(chrono::Utc::now() - chrono::TimeDelta::minutes(1)))
        .await?;
    // At CONNECT the embedded broker refuses bad credentials: rumqttd closes
    // the connection without a CONNACK, so the client sees the link end.
    for (what, pass) in [
        ("wrong", "abcdef.0123456789abcdef".to_string()),
        ("expired", expired.clone()),
        ("garbage", "letmein".to_string()),
    ] {
        let (_c, events) = AsyncClient::new(options(cp.mqtt, "pi-9", &pass), 8);
        match connect(events).await {
            Ok(_) => bail!("a {what} token was accepted at CONNECT"),
            Err(e) => {
                let text = e.to_string();
                assert!(
                    // rumqttc reports "Connection closed by peer abruptly".
                    matches!(
                        e,
                        rumqttc::ConnectionError::Io(_) | rumqttc::ConnectionError::MqttState(_)
                    ),
                    "{what}: {text}"
                );
            }
        }
    }
    // Past CONNECT (a good token), the gateway checks the join request's
    // token itself and answers with a message a person can act on.
    let good = cp.token(None).await?;
    let mut a = Agent::connect(cp.mqtt, "pi-9", &good, &wire::node_filters("pi-9")).await?;
    let r = a
        .join("pi-9", "abcdef.0123456789abcdef", &node_secret('d'))
        .await?;
    assert!(!r.accepted);
    assert!(r.message.contains("wrong or expired"), "{}", r.message);
    assert!(r.message.contains("shturman token create"), "{}", r.message);
    let r = a.join("pi-9", &expired, &node_secret('d')).await?;
    assert!(!r.accepted);
    assert!(r.message.contains("expired at"), "{}", r.message);
    let r = a.join("pi-9", "", &node_secret('d')).await?;
    assert!(!r.accepted, "no token and no registered secret");
    let r = a.join("pi-9", &good, "short").await?;
    assert!(!r.accepted);
    assert!(r.message.contains("64 or more"), "{}", r.message);
    assert!(
        cp.get("/api/v1/nodes/pi-9").await?.is_none(),
        "no Node for refused joins"
    );
    // A bad node name is refused at CONNECT already.
    let (_c, events) = AsyncClient::new(options(cp.mqtt, "Not_A_Node", &good), 8);
    assert!(connect(events).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_pods_and_pod_reports() -> Result<()> {
    let cp = Cp::start().await?;
    let secret = node_secret('e');
    let mut agent = joined(&cp, "pi-1", &secret).await?;
    cp.create(
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "web-config"}, "data": {"index.html": "hi"}}),
    )
    .await?;
    let pod = cp
        .create(
            "/api/v1/namespaces/default/pods",
            json!({
                "metadata": {"name": "web"},
                "spec": {
                    "nodeName": "pi-1",
                    "volumes": [
                        {"name": "c", "configMap": {"name": "web-config"}},
                        {"name": "s", "secret": {"secretName": "absent", "optional": true}}
                    ],
                    "containers": [{"name": "app", "image": "nginx"}]
                }
            }),
        )
        .await?;
    let uid = pod["metadata"]["uid"].as_str().context("uid")?.to_string();
    let topic = Topic::DesiredPod {
        node: "pi-1".into(),
        namespace: "default".into(),
        name: "web".into(),
    };
    // The caches of Pods and ConfigMaps are separate: the first message may
    // come before the ConfigMap is seen; it follows when it is.
    let d = agent
        .desired_until(&topic.name(), |d| !d.config_maps.is_empty())
        .await?;
    assert_eq!(d.pod.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(d.config_maps.len(), 1);
    assert_eq!(d.config_maps[0].data["index.html"], "hi");
    assert!(d.secrets.is_empty(), "an optional missing Secret is left out");

    // Retained: a node connecting later receives it at once.
    let mut late = Agent::connect(cp.mqtt, "pi-1", &secret, &wire::node_filters("pi-1")).await?;
    let r = late.next_on(&topic.name()).await?;
    assert!(r.retain, "delivered as a retained message");
    assert!(!r.payload.is_empty());

    // A changed ConfigMap is sent again.
    let (code, _) = cp
        .call(
            reqwest::Method::PATCH,
            "/api/v1/namespaces/default/configmaps/web-config",
            Some(json!({"data": {"index.html": "hello"}})),
        )
        .await?;
    assert_eq!(code, 200);
    agent
        .desired_until(&topic.name(), |d| d.config_maps[0].data["index.html"] == "hello")
        .await?;

    // Pod reports: applied when newer, for the right uid.
    let report = |seq: u64, phase: &str, uid: &str| -> Result<PodReport> {
        Ok(serde_json::from_value(json!({
            "node": "pi-1", "namespace": "default", "name": "web", "uid": uid,
            "stamp": {"epoch": 1, "seq": seq},
            "status": {"phase": phase, "message": format!("seq {seq}")}
        }))?)
    };
    let ps = Topic::PodStatus {
        node: "pi-1".into(),
        namespace: "default".into(),
        name: "web".into(),
    };
    agent
        .signed(ps.clone(), &report(5, "Running", &uid)?, &secret)
        .await?;
    eventually("the pod Running", || async {
        Ok(cp
            .get("/api/v1/namespaces/default/pods/web")
            .await?
            .filter(|p| p["status"]["phase"] == "Running"))
    })
    .await?;
    // A stale one, and one about another pod of that name, are ignored; a
    // heartbeat after them (same node, handled in order) marks the point.
    agent
        .signed(ps.clone(), &report(4, "Failed", &uid)?, &secret)
        .await?;
    agent
        .signed(ps.clone(), &report(9, "Failed", "other-uid")?, &secret)
        .await?;
    let hb = heartbeat("pi-1", 1, json!({"marker": "after-stale"}))?;
    agent
        .signed(Topic::NodeStatus { node: "pi-1".into() }, &hb, &secret)
        .await?;
    eventually("the marker heartbeat", || async {
        Ok(cp
            .get("/api/v1/nodes/pi-1")
            .await?
            .filter(|n| n["metadata"]["labels"]["marker"] == "after-stale"))
    })
    .await?;
    let pod = cp
        .get("/api/v1/namespaces/default/pods/web")
        .await?
        .context("pod")?;
    assert_eq!(pod["status"]["phase"], "Running", "stale reports ignored: {pod}");
    agent
        .signed(ps.clone(), &report(6, "Succeeded", &uid)?, &secret)
        .await?;
    eventually("the newer report", || async {
        Ok(cp
            .get("/api/v1/namespaces/default/pods/web")
            .await?
            .filter(|p| p["status"]["phase"] == "Succeeded"))
    })
    .await?;

    // The node's pod set lists it (retained, for a node that comes later).
    let set_topic = Topic::PodSet { node: "pi-1".into() }.name();
    let mut sets = Agent::connect(cp.mqtt, "pi-1", &secret, std::slice::from_ref(&set_topic)).await?;
    let set = sets
        .pod_set_until(&set_topic, |s| s.contains("default", "web", &uid))
        .await?;
    assert!(set.revision > 0, "{set:?}");

    // Deleting the pod withdraws it: an empty retained payload.
    let (code, _) = cp
        .call(
            reqwest::Method::DELETE,
            "/api/v1/namespaces/default/pods/web",
            None,
        )
        .await?;
    assert_eq!(code, 200);
    loop {
        let p = agent.next_on(&topic.name()).await?;
        if p.payload.is_empty() {
            break;
        }
    }
    // The pod set no longer lists it, and its revision covers the pod's.
    let rv: u64 = d
        .pod
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("0")
        .parse()?;
    let after = sets.pod_set_until(&set_topic, |s| s.pods.is_empty()).await?;
    assert!(after.revision > rv, "{after:?} vs {rv}");
    // And nothing is retained for a newcomer.
    let pods_filter = format!("{}/nodes/pi-1/pods/+/+", wire::PREFIX);
    let mut fresh = Agent::connect(cp.mqtt, "pi-1", &secret, &[pods_filter]).await?;
    let witness = Topic::DesiredPod {
        node: "pi-1".into(),
        namespace: "default".into(),
        name: "witness".into(),
    };
    cp.create(
        "/api/v1/namespaces/default/pods",
        json!({"metadata": {"name": "witness"}, "spec": {"nodeName": "pi-1", "containers": [{"name": "a", "image": "x"}]}}),
    )
    .await?;
    let first = tokio::time::timeout(DEADLINE, fresh.incoming.recv())
        .await?
        .context("a message")?;
    assert_eq!(first.topic, witness.name(), "the deleted pod is not retained");
    Ok(())
}
