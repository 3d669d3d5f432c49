//! Component tests of the proxy with real loopback sockets: backends on
//! `127.0.0.x`, a cluster IP in `127/8` (nothing to add to an interface),
//! routes fed as the agent feeds them (MQTT payloads).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shturman_api::core::{Protocol, ServiceType, SessionAffinity};
use shturman_api::intstr::IntOrString;
use shturman_api::wire::{RouteEndpoint, RoutePort, ServiceRef, ServiceRoute, ServiceSet, ServiceTopic};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::table::PortKey;
use super::{Proxy, ProxyConfig};

/// A line server: answers each line with `<id> <line>`, and `bye <id>` at
/// the client's EOF, then closes.
struct Backend {
    id: String,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn backend(id: &str, ip: [u8; 4]) -> Backend {
    let l = TcpListener::bind(SocketAddr::from((ip, 0))).await.unwrap();
    let addr = l.local_addr().unwrap();
    let name = id.to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let name = name.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if w.write_all(format!("{name} {line}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = w.write_all(format!("bye {name}\n").as_bytes()).await;
            });
        }
    });
    Backend {
        id: id.to_string(),
        addr,
        task,
    }
}

/// A free port on `ip` (bound, then released).
fn free_port(ip: [u8; 4]) -> u16 {
    std::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn route(
    cluster: SocketAddr,
    node_port: Option<u16>,
    backends: &[SocketAddr],
    revision: u64,
) -> ServiceRoute {
    ServiceRoute {
        namespace: "default".into(),
        name: "web".into(),
        uid: "u1".into(),
        revision: 1,
        endpoints_revision: revision,
        type_: if node_port.is_some() {
            ServiceType::NodePort
        } else {
            ServiceType::ClusterIP
        },
        cluster_ip: Some(cluster.ip().to_string()),
        session_affinity: SessionAffinity::None,
        client_ip_timeout_seconds: None,
        ports: vec![RoutePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: i32::from(cluster.port()),
            node_port: node_port.map(i32::from),
            target_port: IntOrString::String("http".into()),
        }],
        endpoints: backends
            .iter()
            .map(|b| RouteEndpoint {
                ip: b.ip().to_string(),
                ready: true,
                ports: BTreeMap::from([("http".to_string(), i32::from(b.port()))]),
                ..RouteEndpoint::default()
            })
            .collect(),
    }
}

fn send(proxy: &Proxy, r: &ServiceRoute) {
    let topic = ServiceTopic::Route {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
    };
    proxy.on_message(&topic, &serde_json::to_vec(r).unwrap());
}

fn key(cluster: SocketAddr) -> PortKey {
    PortKey {
        namespace: "default".into(),
        name: "web".into(),
        port: i32::from(cluster.port()),
    }
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One request through `addr`: the id of the backend that answered.
async fn request(addr: SocketAddr) -> Result<String, String> {
    let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (r, mut w) = s.into_split();
    w.write_all(b"hello\n").await.map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(r).lines();
    let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("closed without an answer")?;
    let (id, rest) = line.split_once(' ').ok_or(format!("odd answer {line:?}"))?;
    if rest != "hello" {
        return Err(format!("odd answer {line:?}"));
    }
    Ok(id.to_string())
}

async fn spread(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        match request(addr).await {
            Ok(id) => *seen.entry(id).or_insert(0) += 1,
            Err(e) => panic!("request {i} through {addr} failed: {e}"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_drains_and_retries_over_real_sockets() {
    let backends = [
        backend("b1", [127, 0, 0, 11]).await,
        backend("b2", [127, 0, 0, 12]).await,
        backend("b3", [127, 0, 0, 13]).await,
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let cluster = SocketAddr::from(([127, 77, 0, 1], free_port([127, 77, 0, 1])));
    let node_ip = [127, 0, 0, 15];
    let node_port = free_port(node_ip);
    let node_addr = SocketAddr::from((node_ip, node_port));
    let proxy = Proxy::start(ProxyConfig {
        node_ip: Some(IpAddr::from(node_ip)),
        ..ProxyConfig::default()
    });
    send(&proxy, &route(cluster, Some(node_port), &addrs, 1));
    eventually("the proxy listening on the cluster IP and the node port", || {
        let l = proxy.listening();
        (l.contains(&cluster) && l.contains(&node_addr)).then_some(())
    })
    .await;

    // 60 requests reach all 3 backends, on the cluster IP and the node port.
    let seen = spread(cluster, 60).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    let seen = spread(node_addr, 30).await;
    assert_eq!(seen.len(), 3, "{seen:?}");

    // A long-lived connection to some backend...
    let long = TcpStream::connect(cluster).await.unwrap();
    let (lr, mut lw) = long.into_split();
    let mut long_lines = BufReader::new(lr).lines();
    lw.write_all(b"first\n").await.unwrap();
    let first = long_lines.next_line().await.unwrap().unwrap();
    let (long_id, _) = first.split_once(' ').unwrap();
    let long_id = long_id.to_string();

    // ...survives an update that removes its very backend: new connections
    // never go there, and none fails after the update.
    let removed = backends.iter().find(|b| b.id == long_id).unwrap();
    let kept: Vec<SocketAddr> = addrs.iter().copied().filter(|a| *a != removed.addr).collect();
    send(&proxy, &route(cluster, Some(node_port), &kept, 2));
    eventually("the proxy to take the new endpoints", || {
        (proxy.backends(&key(cluster))? == kept).then_some(())
    })
    .await;
    let seen = spread(cluster, 60).await;
    assert!(!seen.contains_key(&long_id), "{long_id} was removed: {seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    lw.write_all(b"second\n").await.unwrap();
    assert_eq!(
        long_lines.next_line().await.unwrap().unwrap(),
        format!("{long_id} second")
    );
    // Half-close: the client's EOF reaches the backend, whose last words and
    // EOF come back.
    lw.shutdown().await.unwrap();
    assert_eq!(
        long_lines.next_line().await.unwrap().unwrap(),
        format!("bye {long_id}")
    );
    assert_eq!(long_lines.next_line().await.unwrap(), None);

    // A dead endpoint (connect refused) is retried on another: no request fails.
    let dead = SocketAddr::from(([127, 0, 0, 14], free_port([127, 0, 0, 14])));
    let mut with_dead = addrs.clone();
    with_dead.insert(0, dead);
    send(&proxy, &route(cluster, Some(node_port), &with_dead, 3));
    eventually("the proxy to take the dead endpoint", || {
        (proxy.backends(&key(cluster))?.len() == 4).then_some(())
    })
    .await;
    let seen = spread(cluster, 60).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 60);

    eventually("no connection left open", || {
        (proxy.stats()[0].active == 0).then_some(())
    })
    .await;
    let stats = proxy.stats();
    assert_eq!(stats.len(), 1, "{stats:?}");
    let s = &stats[0];
    assert_eq!((s.namespace.as_str(), s.name.as_str()), ("default", "web"));
    assert_eq!(s.accepted, 60 + 30 + 1 + 60 + 60);
    assert_eq!(s.failed, 0);
    assert!(s.bytes_in >= 211 * 6 && s.bytes_out >= 211 * 9, "{s:?}");

    // No ready endpoint: the connection is closed, and counted as failed.
    send(&proxy, &route(cluster, None, &[], 4));
    eventually("the node port to close", || {
        (!proxy.listening().contains(&node_addr)).then_some(())
    })
    .await;
    assert!(request(cluster).await.is_err());
    assert_eq!(proxy.stats()[0].failed, 1);

    // Withdrawn: the listener closes.
    proxy.on_message(
        &ServiceTopic::Route {
            namespace: "default".into(),
            name: "web".into(),
        },
        b"",
    );
    eventually("the listener to close", || {
        proxy.listening().is_empty().then_some(())
    })
    .await;
    assert!(proxy.stats().is_empty());
    // The accept tasks end on the proxy's worker threads, each in its own
    // time: connections are refused once the last one has let go.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(cluster).await.is_ok() {
        assert!(Instant::now() < deadline, "the withdrawn address still accepts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_and_service_sets() {
    let backends = [
        backend("b1", [127, 0, 0, 21]).await,
        backend("b2", [127, 0, 0, 22]).await,
        backend("b3", [127, 0, 0, 23]).await,
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let cluster = SocketAddr::from(([127, 77, 0, 2], free_port([127, 77, 0, 2])));
    let proxy = Proxy::start(ProxyConfig::default());
    let mut r = route(cluster, None, &addrs, 1);
    r.session_affinity = SessionAffinity::ClientIP;
    r.client_ip_timeout_seconds = Some(60);
    send(&proxy, &r);
    eventually("the listener", || {
        proxy.listening().contains(&cluster).then_some(())
    })
    .await;
    // One client IP: one backend.
    let seen = spread(cluster, 20).await;
    assert_eq!(seen.len(), 1, "{seen:?}");

    // Two agents on one machine both serve the same address (SO_REUSEPORT).
    let second = Proxy::start(ProxyConfig::default());
    send(&second, &r);
    eventually("the second listener", || {
        second.listening().contains(&cluster).then_some(())
    })
    .await;
    drop(second);

    // A service set that covers the route and lacks it drops it.
    let set = ServiceSet {
        revision: 5,
        services: vec![ServiceRef {
            namespace: "default".into(),
            name: "other".into(),
            uid: "u9".into(),
        }],
    };
    proxy.on_message(&ServiceTopic::Set, &serde_json::to_vec(&set).unwrap());
    eventually("the listener to close", || {
        proxy.listening().is_empty().then_some(())
    })
    .await;
    // The late route of the dropped Service is not taken again.
    send(&proxy, &r);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(proxy.listening().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transfer_is_copied_whole_both_ways() {
    // An echo backend: everything back, then EOF.
    let l = TcpListener::bind("127.0.0.31:0").await.unwrap();
    let echo = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let cluster = SocketAddr::from(([127, 77, 0, 3], free_port([127, 77, 0, 3])));
    let proxy = Proxy::start(ProxyConfig::default());
    send(&proxy, &route(cluster, None, &[echo], 1));
    eventually("the listener", || {
        proxy.listening().contains(&cluster).then_some(())
    })
    .await;
    let s = TcpStream::connect(cluster).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let data: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    server.await.unwrap();
    assert!(back == data, "{} bytes came back of {}", back.len(), data.len());
    let s = &proxy.stats()[0];
    assert_eq!((s.bytes_in, s.bytes_out), (data.len() as u64, data.len() as u64));
}
