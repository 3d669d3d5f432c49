//! An acknowledged write survives `kill -9` of the control plane in the middle
//! of many concurrent writes, and revisions never go backwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use shturman_e2e::{ControlPlane, wait_for};

const WRITERS: usize = 16;
const PER_WRITER: usize = 400;
const KILL_AFTER: usize = 800;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut cp = tokio::task::block_in_place(ControlPlane::start).expect("control plane");
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<HashMap<String, (u64, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{}/api/v1/namespaces/default/configmaps", cp.url);

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, acked, stop, url, token) = (
            client.clone(),
            acked.clone(),
            stop.clone(),
            url.clone(),
            cp.token.clone(),
        );
        writers.push(tokio::spawn(async move {
            for n in 0..PER_WRITER {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let name = format!("cm-{w}-{n}");
                let payload = format!("value of {name}");
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": name}, "data": {"k": payload}});
                let Ok(resp) = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                else {
                    return; // the server is gone: this write was never acknowledged
                };
                if resp.status().as_u16() != 201 {
                    return;
                }
                let Ok(obj) = resp.json::<Value>().await else {
                    return;
                };
                let rv: u64 = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                acked.lock().unwrap().insert(name, (rv, payload));
            }
        }));
    }

    // Kill while writes are in flight.
    let a = acked.clone();
    tokio::task::block_in_place(|| {
        wait_for("enough acknowledged writes", Duration::from_secs(120), || {
            (a.lock().unwrap().len() >= KILL_AFTER).then_some(())
        })
    })
    .expect("writes");
    cp.kill9().expect("kill -9");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let max_rv = acked.values().map(|(rv, _)| *rv).max().unwrap();
    assert!(acked.len() >= KILL_AFTER);

    tokio::task::block_in_place(|| cp.spawn()).expect("restart on the same data dir");
    let list: Value = client
        .get(&url)
        .bearer_auth(&cp.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: HashMap<String, String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                o["data"]["k"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let lost: Vec<&String> = acked.keys().filter(|k| !stored.contains_key(*k)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    for (name, (_, payload)) in &acked {
        assert_eq!(&stored[name], payload, "{name} came back with other data");
    }
    let list_rv: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(list_rv >= max_rv, "revision went backwards: {list_rv} < {max_rv}");

    // The next write gets a later revision than any acknowledged before the crash.
    let resp = client
        .post(&url)
        .bearer_auth(&cp.token)
        .json(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-crash"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let obj: Value = resp.json().await.unwrap();
    let rv: u64 = obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv > max_rv, "new revision {rv} not after {max_rv}");
}
