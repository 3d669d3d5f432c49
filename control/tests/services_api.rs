//! Services through the API server on a real loopback port: cluster IPs and
//! node ports granted at create time from the configured ranges, requested
//! ones checked for range and conflicts (422 with the field path), the
//! cluster IP immutable, values kept across updates and given back on
//! delete, never handed out twice (also under concurrent creates), and the
//! registries kept in the store across a restart (sled), with leaks
//! repaired at start-up. Endpoints are served as a kind.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use shturman_control::server::alloc::PoolId;
use shturman_control::server::{self, State};
use shturman_control::store::memory::MemoryStore;
use shturman_control::store::{SledStore, Store};
use shturman_control::{ServiceCidr, ServiceNetwork};

const TOKEN: &str = "test-token";
const SVCS: &str = "/api/v1/namespaces/default/services";

struct Api {
    url: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve_state(state: Arc<State>) -> Api {
    state.ensure_default_namespace().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = server::router(state);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Api {
        url,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        _stop: tx,
    }
}

async fn api_with(network: ServiceNetwork) -> Api {
    let state = State::with_service_network(Arc::new(MemoryStore::new()), TOKEN.into(), network);
    serve_state(state).await
}

async fn api() -> Api {
    api_with(ServiceNetwork::default()).await
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let patch = method == reqwest::Method::PATCH;
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            let ct = if patch {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            r = r.header("content-type", ct).body(serde_json::to_vec(&b).unwrap());
        }
        let resp = r.send().await.unwrap();
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn create(&self, body: Value) -> Value {
        let (code, v) = self.send(reqwest::Method::POST, SVCS, Some(body)).await;
        assert_eq!(code, 201, "{v}");
        v
    }

    async fn refused(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let (code, v) = self.send(method, path, Some(body)).await;
        assert_eq!(code, 422, "{v}");
        assert_eq!(v["reason"], "Invalid", "{v}");
        v
    }
}

fn svc(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

fn web(name: &str) -> Value {
    svc(
        name,
        json!({"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}),
    )
}

fn cluster_ip(v: &Value) -> &str {
    v["spec"]["clusterIP"].as_str().unwrap_or("")
}

fn cidr(s: &str) -> ServiceCidr {
    s.parse().unwrap()
}

#[tokio::test]
async fn cluster_ips_and_node_ports_are_granted_from_the_ranges() {
    let api = api().await;
    let a = api.create(web("a")).await;
    let ip: std::net::Ipv4Addr = cluster_ip(&a).parse().unwrap();
    assert!(cidr("10.43.0.0/16").contains(ip), "{ip}");
    assert_eq!(a["spec"]["clusterIPs"], json!([cluster_ip(&a)]));
    // What the API returned is what is stored.
    let (_, got) = api.send(reqwest::Method::GET, &format!("{SVCS}/a"), None).await;
    assert_eq!(cluster_ip(&got), cluster_ip(&a));

    let np = api
        .create(svc(
            "np",
            json!({"type": "NodePort", "selector": {"app": "np"}, "ports": [
                {"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53}]}),
        ))
        .await;
    let ports: Vec<i64> = (0..3)
        .map(|i| np["spec"]["ports"][i]["nodePort"].as_i64().unwrap())
        .collect();
    assert!(ports.iter().all(|p| (30000..=32767).contains(p)), "{ports:?}");
    assert_ne!(ports[0], ports[1]);
    assert_eq!(ports[1], ports[2], "TCP and UDP of one port share a node port");

    let fixed = api
        .create(svc(
            "fixed",
            json!({"type": "NodePort", "clusterIP": "10.43.0.10", "ports": [{"port": 80, "nodePort": 30080}]}),
        ))
        .await;
    assert_eq!(cluster_ip(&fixed), "10.43.0.10");
    assert_eq!(fixed["spec"]["ports"][0]["nodePort"], 30080);

    let headless = api
        .create(svc("db", json!({"clusterIP": "None", "selector": {"app": "db"}})))
        .await;
    assert_eq!(cluster_ip(&headless), "None");
}

#[tokio::test]
async fn requested_values_are_checked_for_range_and_conflicts() {
    let api = api().await;
    api.create(svc(
        "dns",
        json!({"type": "NodePort", "clusterIP": "10.43.0.10", "ports": [{"port": 53, "nodePort": 30053}]}),
    ))
    .await;
    let post = reqwest::Method::POST;
    let v = api
        .refused(
            post.clone(),
            SVCS,
            svc("b", json!({"clusterIP": "10.43.0.10", "ports": [{"port": 80}]})),
        )
        .await;
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("provided IP is already allocated"), "{msg}");
    assert!(msg.contains("default/dns"), "{msg}");
    assert_eq!(v["details"]["causes"][0]["field"], "spec.clusterIP");
    let v = api
        .refused(
            post.clone(),
            SVCS,
            svc("b", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]})),
        )
        .await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("The range of valid IPs is 10.43.0.0/16"),
        "{v}"
    );
    let v = api
        .refused(
            post.clone(),
            SVCS,
            svc(
                "b",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30053}]}),
            ),
        )
        .await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("provided port is already allocated"),
        "{v}"
    );
    assert_eq!(v["details"]["causes"][0]["field"], "spec.ports[0].nodePort");
    let v = api
        .refused(
            post.clone(),
            SVCS,
            svc(
                "b",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]}),
            ),
        )
        .await;
    assert!(v["message"].as_str().unwrap().contains("30000-32767"), "{v}");
    // A refused create took nothing: the same request with free values works,
    // and its cluster IP was not left taken by the failed attempt.
    let v = api
        .refused(
            post,
            SVCS,
            svc(
                "c",
                json!({"type": "NodePort", "clusterIP": "10.43.0.11", "ports": [{"port": 80, "nodePort": 30053}]}),
            ),
        )
        .await;
    assert!(v["message"].as_str().unwrap().contains("port"), "{v}");
    let c = api
        .create(svc(
            "c",
            json!({"type": "NodePort", "clusterIP": "10.43.0.11", "ports": [{"port": 80, "nodePort": 30054}]}),
        ))
        .await;
    assert_eq!(cluster_ip(&c), "10.43.0.11");
    // A name taken: 409, and the values it would have had are free again.
    let (code, _) = api
        .send(
            reqwest::Method::POST,
            SVCS,
            Some(svc(
                "c",
                json!({"clusterIP": "10.43.0.12", "ports": [{"port": 80}]}),
            )),
        )
        .await;
    assert_eq!(code, 409);
    let d = api
        .create(svc(
            "d",
            json!({"clusterIP": "10.43.0.12", "ports": [{"port": 80}]}),
        ))
        .await;
    assert_eq!(cluster_ip(&d), "10.43.0.12");
}

#[tokio::test]
async fn updates_keep_values_the_ip_is_immutable_and_deletes_give_back() {
    let api = api().await;
    let a = api
        .create(svc(
            "a",
            json!({"type": "NodePort", "selector": {"app": "a"}, "ports": [{"name": "http", "port": 80}]}),
        ))
        .await;
    let (ip, np) = (
        cluster_ip(&a).to_string(),
        a["spec"]["ports"][0]["nodePort"].clone(),
    );
    let path = format!("{SVCS}/a");
    // A PUT of the original manifest (no clusterIP, no nodePort) keeps both.
    let (code, put) = api
        .send(
            reqwest::Method::PUT,
            &path,
            Some(svc(
                "a",
                json!({"type": "NodePort", "selector": {"app": "a2"}, "ports": [{"name": "http", "port": 80}]}),
            )),
        )
        .await;
    assert_eq!(code, 200, "{put}");
    assert_eq!(cluster_ip(&put), ip);
    assert_eq!(put["spec"]["ports"][0]["nodePort"], np);
    assert_eq!(put["spec"]["selector"]["app"], "a2");
    // Changing the address is refused.
    let v = api
        .refused(
            reqwest::Method::PATCH,
            &path,
            json!({"spec": {"clusterIP": "10.43.0.99", "clusterIPs": ["10.43.0.99"]}}),
        )
        .await;
    assert!(v["message"].as_str().unwrap().contains("immutable"), "{v}");
    assert_eq!(v["details"]["causes"][0]["field"], "spec.clusterIP");
    // NodePort → ClusterIP drops the node port, and another Service may take it.
    let (code, plain) = api
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"spec": {"type": "ClusterIP"}})),
        )
        .await;
    assert_eq!(code, 200, "{plain}");
    assert!(plain["spec"]["ports"][0].get("nodePort").is_none(), "{plain}");
    assert_eq!(cluster_ip(&plain), ip);
    let b = api
        .create(svc(
            "b",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": np.clone()}]}),
        ))
        .await;
    assert_eq!(b["spec"]["ports"][0]["nodePort"], np);
    // Back to NodePort: a new node port is granted.
    let (code, again) = api
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"spec": {"type": "NodePort"}})),
        )
        .await;
    assert_eq!(code, 200, "{again}");
    let np2 = &again["spec"]["ports"][0]["nodePort"];
    assert!(np2.is_i64() && *np2 != np, "{again}");
    // Deleting gives the address back.
    let (code, _) = api.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(code, 200);
    let c = api
        .create(svc(
            "c",
            json!({"clusterIP": ip.clone(), "ports": [{"port": 80}]}),
        ))
        .await;
    assert_eq!(cluster_ip(&c), ip);
    // A Service deleted with its namespace gives its values back too.
    let (code, _) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": "tmp"}})),
        )
        .await;
    assert_eq!(code, 201);
    let (code, t) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/namespaces/tmp/services",
            Some(svc(
                "t",
                json!({"clusterIP": "10.43.0.77", "ports": [{"port": 80}]}),
            )),
        )
        .await;
    assert_eq!(code, 201, "{t}");
    let (code, _) = api
        .send(reqwest::Method::DELETE, "/api/v1/namespaces/tmp", None)
        .await;
    assert_eq!(code, 200);
    api.create(svc(
        "u",
        json!({"clusterIP": "10.43.0.77", "ports": [{"port": 80}]}),
    ))
    .await;
}

#[tokio::test]
async fn concurrent_creates_never_share_an_address_and_a_full_range_says_so() {
    // A /27: 30 addresses, every one reachable by random allocation.
    let network = ServiceNetwork {
        cidr: cidr("10.43.0.0/27"),
        ..ServiceNetwork::default()
    };
    let api = Arc::new(api_with(network).await);
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move { cluster_ip(&api.create(web(&format!("s{i}"))).await).to_string() })
        })
        .collect();
    let mut ips = BTreeSet::new();
    for t in tasks {
        assert!(ips.insert(t.await.unwrap()), "an address was handed out twice");
    }
    assert_eq!(ips.len(), 30);
    let v = api
        .refused(reqwest::Method::POST, SVCS, web("one-too-many"))
        .await;
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("every IP in 10.43.0.0/27 is in use"), "{msg}");
    // Headless Services need no address.
    api.create(svc("headless", json!({"clusterIP": "None"}))).await;
}

#[tokio::test]
async fn endpoints_are_served() {
    let api = api().await;
    let path = "/api/v1/namespaces/default/endpoints";
    let (code, v) = api
        .send(
            reqwest::Method::POST,
            path,
            Some(
                json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext"},
                "subsets": [{"addresses": [{"ip": "192.168.1.50"}], "ports": [{"port": 5432}]}]}),
            ),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["subsets"][0]["ports"][0]["protocol"], "TCP");
    assert!(v["metadata"].get("generation").is_none(), "{v}");
    let (code, v) = api
        .send(
            reqwest::Method::POST,
            path,
            Some(json!({"metadata": {"name": "bad"}, "subsets": [{"addresses": [{"ip": "nope"}]}]})),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["details"]["causes"][0]["field"], "subsets[0].addresses[0].ip");
    let (code, list) = api.send(reqwest::Method::GET, "/api/v1/endpoints", None).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "EndpointsList");
    let (_, disco) = api.send(reqwest::Method::GET, "/api/v1", None).await;
    let ep = disco["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "endpoints")
        .cloned()
        .unwrap();
    assert_eq!(ep["shortNames"], json!(["ep"]));
}

async fn registry(store: &Arc<dyn Store>, pool: PoolId) -> Value {
    let v = store.get(&pool.key()).await.unwrap().expect("a registry");
    serde_json::from_slice(&v.value).unwrap()
}

#[tokio::test]
async fn allocations_survive_a_restart_and_leaks_are_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Arc<dyn Store> { Arc::new(SledStore::open(dir.path()).unwrap()) };
    let (ip_a, np_a) = {
        let store = open();
        let state = State::new(store.clone(), TOKEN.into());
        state.repair_service_allocations().await.unwrap();
        let api = serve_state(state).await;
        let a = api
            .create(svc("a", json!({"type": "NodePort", "ports": [{"port": 80}]})))
            .await;
        let (ip, np) = (
            cluster_ip(&a).to_string(),
            a["spec"]["ports"][0]["nodePort"].as_i64().unwrap(),
        );
        // A value granted to a Service that was never written (a crash
        // between the two writes), planted by hand.
        let mut ips = registry(&store, PoolId::ClusterIps).await;
        ips["allocated"]["10.43.0.200"] = json!({"service": "default/ghost", "uid": "ghost"});
        let rev = store
            .get(&PoolId::ClusterIps.key())
            .await
            .unwrap()
            .unwrap()
            .revision;
        store
            .update(
                &PoolId::ClusterIps.key(),
                serde_json::to_vec(&ips).unwrap(),
                Some(rev),
            )
            .await
            .unwrap();
        drop(api);
        store.close().await.unwrap();
        (ip, np)
    };
    let store = open();
    let before = registry(&store, PoolId::ClusterIps).await;
    assert_eq!(before["allocated"][&ip_a]["service"], "default/a", "{before}");
    let state = State::new(store.clone(), TOKEN.into());
    state.repair_service_allocations().await.unwrap();
    let ips = registry(&store, PoolId::ClusterIps).await;
    assert!(
        ips["allocated"].get("10.43.0.200").is_none(),
        "the leak is freed: {ips}"
    );
    assert_eq!(ips["allocated"][&ip_a]["service"], "default/a");
    let ports = registry(&store, PoolId::NodePorts).await;
    assert_eq!(
        ports["allocated"][np_a.to_string()]["service"],
        "default/a",
        "{ports}"
    );
    let api = serve_state(state).await;
    let v = api
        .refused(
            reqwest::Method::POST,
            SVCS,
            svc("b", json!({"clusterIP": ip_a.clone(), "ports": [{"port": 80}]})),
        )
        .await;
    assert!(
        v["message"].as_str().unwrap().contains("already allocated"),
        "{v}"
    );
    let v = api
        .refused(
            reqwest::Method::POST,
            SVCS,
            svc(
                "b",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": np_a}]}),
            ),
        )
        .await;
    assert!(
        v["message"].as_str().unwrap().contains("already allocated"),
        "{v}"
    );
    let ghost = api
        .create(svc(
            "ghost",
            json!({"clusterIP": "10.43.0.200", "ports": [{"port": 80}]}),
        ))
        .await;
    assert_eq!(cluster_ip(&ghost), "10.43.0.200");
    drop(api);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_changed_range_is_rebuilt_and_old_addresses_are_kept() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let state = State::new(store.clone(), TOKEN.into());
    let api = serve_state(state).await;
    let a = api.create(web("a")).await;
    let old_ip = cluster_ip(&a).to_string();
    drop(api);
    let moved = ServiceNetwork {
        cidr: cidr("10.96.0.0/24"),
        ..ServiceNetwork::default()
    };
    let state = State::with_service_network(store.clone(), TOKEN.into(), moved);
    state.repair_service_allocations().await.unwrap();
    let ips = registry(&store, PoolId::ClusterIps).await;
    assert_eq!(ips["range"], "10.96.0.0/24");
    assert!(ips["allocated"].as_object().unwrap().is_empty(), "{ips}");
    let api = serve_state(state).await;
    // The old Service keeps its address through updates.
    let (code, v) = api
        .send(
            reqwest::Method::PATCH,
            &format!("{SVCS}/a"),
            Some(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(cluster_ip(&v), old_ip);
    let b = api.create(web("b")).await;
    assert!(cluster_ip(&b).starts_with("10.96.0."), "{b}");
}
