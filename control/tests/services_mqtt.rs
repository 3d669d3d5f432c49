//! Services reach every agent over MQTT, end to end in one process: a
//! control plane with the memory store, its controllers and the embedded
//! broker on port 0; rumqttc clients play agents. A subscriber sees each
//! Service's retained route (cluster IP, node ports, its pod as a ready
//! backend) and the service set, then the withdrawal when the Service is
//! deleted; an agent that connects afterwards gets only what exists.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde_json::{Value, json};
use shturman_api::wire::{self, ServiceRoute, ServiceSet, ServiceTopic};
use shturman_control::tokens::JoinToken;
use shturman_control::{Config, Control, MqttChoice, StoreChoice};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(15);

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
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let code = resp.status().as_u16();
        Ok((code, resp.json::<Value>().await.unwrap_or(Value::Null)))
    }

    async fn create(&self, path: &str, body: Value) -> Result<Value> {
        let (code, v) = self.call(reqwest::Method::POST, path, Some(body)).await?;
        if code != 201 {
            bail!("POST {path}: {code} {v}");
        }
        Ok(v)
    }

    /// A join token: what an agent connects with before it has joined.
    async fn join_token(&self) -> Result<String> {
        let t = JoinToken::random();
        self.create(
            "/api/v1/namespaces/shturman-system/secrets",
            serde_json::to_value(t.to_secret(None))?,
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

/// An MQTT client subscribed to the service topics, as an agent's proxy is.
struct Listener {
    incoming: mpsc::UnboundedReceiver<Publish>,
    /// Received, not taken by a wait yet.
    backlog: Vec<Publish>,
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    async fn connect(cp: &Cp, node: &str) -> Result<Listener> {
        let token = cp.join_token().await?;
        let mut o = MqttOptions::new(format!("test-{node}"), cp.mqtt.ip().to_string(), cp.mqtt.port());
        o.set_credentials(node, token);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(wire::MAX_PACKET_BYTES, wire::MAX_PACKET_BYTES);
        let (client, mut events) = AsyncClient::new(o, 64);
        loop {
            match tokio::time::timeout(DEADLINE, events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("CONNECT refused: {e}"),
                Err(_) => bail!("no CONNACK"),
            }
        }
        for f in wire::services_filters() {
            client.subscribe(f, QoS::AtLeastOnce).await?;
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
        Ok(Listener {
            incoming,
            backlog: Vec::new(),
            _client: client,
            task,
        })
    }

    /// The first message on `topic` that passes `ok` (the payload; empty =
    /// withdrawn), among those not taken yet: messages on other topics are
    /// kept for later waits (the broker delivers topics in any order).
    async fn until(&mut self, topic: &str, ok: impl Fn(&[u8]) -> bool) -> Result<Publish> {
        let hit = |p: &Publish| p.topic == topic && ok(&p.payload);
        if let Some(i) = self.backlog.iter().position(hit) {
            return Ok(self.backlog.remove(i));
        }
        let wait = async {
            while let Some(p) = self.incoming.recv().await {
                if hit(&p) {
                    return Some(p);
                }
                self.backlog.push(p);
            }
            None
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .map_err(|_| anyhow!("timed out waiting for the expected message on {topic}"))?
            .ok_or_else(|| anyhow!("the connection ended"))
    }

    async fn route_until(&mut self, topic: &str, ok: impl Fn(&ServiceRoute) -> bool) -> Result<ServiceRoute> {
        let p = self
            .until(topic, |b| {
                serde_json::from_slice::<ServiceRoute>(b).is_ok_and(|r| ok(&r))
            })
            .await?;
        Ok(serde_json::from_slice(&p.payload)?)
    }

    async fn set_until(&mut self, ok: impl Fn(&ServiceSet) -> bool) -> Result<ServiceSet> {
        let p = self
            .until(&ServiceTopic::Set.name(), |b| {
                serde_json::from_slice::<ServiceSet>(b).is_ok_and(|s| ok(&s))
            })
            .await?;
        Ok(serde_json::from_slice(&p.payload)?)
    }
}

fn route_topic(name: &str) -> String {
    ServiceTopic::Route {
        namespace: "default".into(),
        name: name.into(),
    }
    .name()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_gets_each_service_retained_and_its_withdrawal() -> Result<()> {
    let cp = Cp::start().await?;
    let svc = cp
        .create(
            "/api/v1/namespaces/default/services",
            json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        )
        .await?;
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .context("a cluster IP")?
        .to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .context("a node port")?;
    // A Wasm pod, bound and reported ready: the agent gives only its hostIP.
    // (Its node must exist, or the node lifecycle controller collects it.)
    cp.create("/api/v1/nodes", json!({"metadata": {"name": "pi-1"}}))
        .await?;
    cp.create(
        "/api/v1/namespaces/default/pods",
        json!({"metadata": {"name": "web-a", "labels": {"app": "web"}},
            "spec": {"nodeName": "pi-1", "runtimeClassName": "wasmtime", "containers": [{"name": "app",
                "image": "file:///opt/web.wasm", "ports": [{"name": "http", "containerPort": 8080}]}]}}),
    )
    .await?;
    let (code, mut pod) = cp
        .call(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/web-a",
            None,
        )
        .await?;
    assert_eq!(code, 200, "{pod}");
    pod["status"] = json!({"phase": "Running", "hostIP": "192.168.1.20",
        "conditions": [{"type": "Ready", "status": "True"}]});
    let (code, v) = cp
        .call(
            reqwest::Method::PUT,
            "/api/v1/namespaces/default/pods/web-a/status",
            Some(pod),
        )
        .await?;
    assert_eq!(code, 200, "{v}");

    let mut agent = Listener::connect(&cp, "pi-1").await?;
    let route = agent
        .route_until(&route_topic("web"), |r| r.backends("http").count() == 1)
        .await?;
    assert_eq!(route.cluster_ip.as_deref(), Some(cluster_ip.as_str()));
    assert_eq!(route.ports[0].node_port, Some(i32::try_from(node_port)?));
    assert_eq!(
        route.backends("http").collect::<Vec<_>>(),
        [("192.168.1.20", 8080)]
    );
    assert_eq!(route.endpoints[0].node.as_deref(), Some("pi-1"));
    assert_eq!(route.endpoints[0].pod.as_deref(), Some("web-a"));
    let set = agent
        .set_until(|s| s.contains("default", "web", &route.uid))
        .await
        .context("the first agent's set listing web")?;
    assert!(set.covers(route.revision));

    // A second Service; then the first goes: withdrawn, and the set says so.
    cp.create(
        "/api/v1/namespaces/default/services",
        json!({"metadata": {"name": "api"}, "spec": {"ports": [{"port": 8080}]}}),
    )
    .await?;
    agent.route_until(&route_topic("api"), |_| true).await?;
    let (code, _) = cp
        .call(
            reqwest::Method::DELETE,
            "/api/v1/namespaces/default/services/web",
            None,
        )
        .await?;
    assert_eq!(code, 200);
    agent.until(&route_topic("web"), <[u8]>::is_empty).await?;
    let set = agent
        .set_until(|s| {
            let has = |n: &str| s.services.iter().any(|r| r.name == n);
            has("api") && !has("web")
        })
        .await
        .context("the first agent's set without web")?;
    assert!(set.services.iter().any(|r| r.name == "api"), "{set:?}");

    // An agent that connects now gets the current set and routes only.
    let mut late = Listener::connect(&cp, "pi-2").await?;
    let set = late
        .set_until(|_| true)
        .await
        .context("the late agent's retained set")?;
    let names: Vec<&str> = set.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api"]);
    late.route_until(&route_topic("api"), |r| r.cluster_ip.is_some())
        .await?;
    let web = route_topic("web");
    let stray = tokio::time::timeout(Duration::from_millis(500), late.until(&web, |_| true)).await;
    assert!(
        !matches!(stray, Ok(Ok(_))),
        "a deleted Service's route was still retained: {stray:?}"
    );
    Ok(())
}
