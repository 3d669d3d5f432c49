//! The etcd store backend against a real etcd (Debian's `etcd-server`, one
//! private member per test): the store conformance suite every backend
//! passes, then the control plane on etcd end to end.

use std::sync::Arc;

use shturman_control::store::conformance::Factory;
use shturman_control::store::{EtcdConfig, EtcdStore, StoreOptions};
use shturman_e2e::etcd::Etcd;

/// Runs `fut` to completion from inside the test's multi-thread runtime
/// (the conformance factory's methods are synchronous).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(fut))
}

/// A private etcd; later opens reconnect to the same one and prefix.
pub struct EtcdFactory {
    etcd: Arc<Etcd>,
}

impl EtcdFactory {
    fn new() -> Self {
        let etcd = block_on(Etcd::start()).expect("starting etcd");
        EtcdFactory { etcd: Arc::new(etcd) }
    }
}

impl Factory for EtcdFactory {
    type Store = EtcdStore;
    fn open(&mut self, options: StoreOptions) -> EtcdStore {
        let config = EtcdConfig::new(vec![self.etcd.url.clone()]);
        block_on(EtcdStore::connect_with(&config, options))
            .unwrap_or_else(|e| panic!("connecting to etcd: {e}; etcd said: {}", self.etcd.log_tail()))
    }
    fn persistent(&self) -> bool {
        true
    }
}

mod conformance {
    shturman_control::store_conformance_tests!(super::EtcdFactory::new());
}

/// The control plane on etcd, end to end: `shturman control --store etcd`.
mod control_plane {
    use std::process::Command;
    use std::time::Duration;

    use anyhow::{Context, Result};
    use serde_json::Value;
    use shturman_e2e::etcd::Etcd;
    use shturman_e2e::{ControlPlane, binary, free_port, stderr, stdout, wait_for};

    const WAIT: Duration = Duration::from_secs(30);

    const MANIFEST: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: edge
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ticker
spec:
  replicas: 3
  selector:
    matchLabels:
      app: ticker
  template:
    metadata:
      labels:
        app: ticker
    spec:
      runtimeClassName: wasmtime
      containers:
      - name: ticker
        image: file:///opt/shturman/wasm/ticker.wasm
";

    fn start_etcd() -> Result<Etcd> {
        tokio::runtime::Runtime::new()?.block_on(Etcd::start())
    }

    fn get_json(cp: &ControlPlane, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = cp.cli(&all);
        out.status
            .success()
            .then(|| serde_json::from_str(&stdout(&out)).ok())?
    }

    /// The names of the Deployment's pods.
    fn ticker_pods(cp: &ControlPlane) -> Option<Vec<String>> {
        let list = get_json(cp, &["pods", "-l", "app=ticker"])?;
        let mut names: Vec<String> = list["items"]
            .as_array()?
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .collect();
        names.sort();
        Some(names)
    }

    /// The keys etcd holds under the cluster's prefix for one resource.
    fn etcd_keys(etcd: &Etcd, resource: &str) -> Result<Vec<String>> {
        tokio::runtime::Runtime::new()?.block_on(async {
            let mut c = etcd_client::Client::connect([etcd.url.as_str()], None).await?;
            let prefix = format!("/shturman/{resource}/");
            let resp = c
                .get(
                    prefix,
                    Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()),
                )
                .await?;
            Ok(resp
                .kvs()
                .iter()
                .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                .collect())
        })
    }

    #[test]
    fn objects_and_controllers_live_in_etcd_across_kill_9() -> Result<()> {
        let etcd = start_etcd()?;
        let mut cp = ControlPlane::start_with(&["--store", "etcd", "--etcd-endpoints", &etcd.url])?;
        let banner = cp.log_text();
        assert!(
            banner.contains(&format!("store: etcd at {}", etcd.url)),
            "{banner}"
        );

        let out = cp.cli_stdin(&["apply", "-f", "-"], Some(MANIFEST));
        assert!(out.status.success(), "{}", stderr(&out));
        // The controllers run on etcd's watch: Deployment → ReplicaSet → 3 pods.
        let pods = wait_for("the Deployment's 3 pods", WAIT, || {
            ticker_pods(&cp).filter(|p| p.len() == 3)
        })
        .with_context(|| cp.log_text())?;
        let cm = get_json(&cp, &["configmap", "settings"]).context("the ConfigMap")?;
        assert_eq!(cm["data"]["mode"], "edge");

        // They are etcd's keys, not a local file's.
        assert_eq!(
            etcd_keys(&etcd, "configmaps")?,
            ["/shturman/configmaps/default/settings"]
        );
        let mut pod_keys = etcd_keys(&etcd, "pods")?;
        pod_keys.sort();
        let want: Vec<String> = pods
            .iter()
            .map(|p| format!("/shturman/pods/default/{p}"))
            .collect();
        assert_eq!(pod_keys, want);
        assert!(!cp.data_dir().join("store").exists(), "no sled store beside etcd");

        // kill -9 and back: the same objects (uid and resourceVersion).
        cp.kill9()?;
        cp.spawn()?;
        let again = get_json(&cp, &["configmap", "settings"]).context("the ConfigMap after the restart")?;
        assert_eq!(again["metadata"]["uid"], cm["metadata"]["uid"]);
        assert_eq!(
            again["metadata"]["resourceVersion"],
            cm["metadata"]["resourceVersion"]
        );
        assert_eq!(
            ticker_pods(&cp),
            Some(pods.clone()),
            "the same pods after the restart"
        );

        // The restarted controllers keep working from etcd.
        let out = cp.cli(&["scale", "deployment", "ticker", "--replicas", "5"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let scaled = wait_for("5 pods after the scale", WAIT, || {
            ticker_pods(&cp).filter(|p| p.len() == 5)
        })
        .with_context(|| cp.log_text())?;
        assert!(pods.iter().all(|p| scaled.contains(p)), "{pods:?} ⊄ {scaled:?}");
        assert_eq!(etcd_keys(&etcd, "pods")?.len(), 5);
        Ok(())
    }

    #[test]
    fn a_paused_etcd_fails_writes_clearly_and_the_cluster_carries_on_after() -> Result<()> {
        let etcd = start_etcd()?;
        let cp = ControlPlane::start_with(&["--store", "etcd", "--etcd-endpoints", &etcd.url])?;
        let out = cp.cli_stdin(&["apply", "-f", "-"], Some(MANIFEST));
        assert!(out.status.success(), "{}", stderr(&out));
        wait_for("the Deployment's 3 pods", WAIT, || {
            ticker_pods(&cp).filter(|p| p.len() == 3)
        })
        .with_context(|| cp.log_text())?;

        // etcd stops answering: a write fails (after the store's request
        // timeout) and says where the trouble is.
        etcd.signal("STOP")?;
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: while-paused\n";
        let out = cp.cli_stdin(&["apply", "-f", "-"], Some(cm));
        etcd.signal("CONT")?;
        assert!(
            !out.status.success(),
            "a write acknowledged while etcd was paused"
        );
        let err = stderr(&out);
        assert!(err.contains(&format!("etcd at {}", etcd.url)), "{err}");

        // etcd is back: writes go through and the controllers still follow
        // its changes (the store's watch came back on its own).
        let out = cp.cli_stdin(&["apply", "-f", "-"], Some(cm));
        assert!(out.status.success(), "{}", stderr(&out));
        let out = cp.cli(&["scale", "deployment", "ticker", "--replicas", "4"]);
        assert!(out.status.success(), "{}", stderr(&out));
        wait_for("4 pods after the scale", WAIT, || {
            ticker_pods(&cp).filter(|p| p.len() == 4)
        })
        .with_context(|| cp.log_text())?;
        Ok(())
    }

    /// `shturman control` with these arguments, which must fail: its stderr.
    fn refused(args: &[&str]) -> Result<String> {
        let dir = tempfile::tempdir()?;
        let api = format!("127.0.0.1:{}", free_port());
        let out = Command::new(binary("shturman"))
            .args([
                "control",
                "--mqtt-addr",
                "127.0.0.1:0",
                "--api-addr",
                &api,
                "--data-dir",
            ])
            .arg(dir.path())
            .args(args)
            .output()?;
        assert!(!out.status.success(), "{args:?} started: {}", stdout(&out));
        Ok(stderr(&out))
    }

    #[test]
    fn a_wrong_etcd_setting_is_a_clear_error() -> Result<()> {
        let nobody = format!("http://127.0.0.1:{}", free_port());
        let err = refused(&["--store", "etcd", "--etcd-endpoints", &nobody])?;
        assert!(err.contains(&format!("cannot reach etcd at {nobody}")), "{err}");
        assert!(err.contains("--etcd-endpoints"), "{err}");
        let err = refused(&["--store", "etcd"])?;
        assert!(err.contains("--etcd-endpoints"), "{err}");
        let err = refused(&["--etcd-endpoints", &nobody])?;
        assert!(err.contains("only used with --store etcd"), "{err}");
        Ok(())
    }
}
