//! The in-process cluster the CLI's end-to-end tests run the real binary
//! against: a control plane on port 0 with the memory store, no
//! controllers and no MQTT, an API client to set objects up, and a scratch
//! directory. Each test file uses what it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use shturman_control::{Config, Control, StoreChoice};

/// A running control plane, an API client for setting up objects, and a
/// scratch directory to run the CLI in.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub admin_conf: PathBuf,
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    pub fn start() -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: dir.path().join("data"),
            api_addr: "127.0.0.1:0".parse().expect("addr"),
            store: StoreChoice::Memory,
            // These tests drive objects by hand: no controllers.
            controllers: shturman_control::manager::ControllerSettings::disabled(),
            mqtt: shturman_control::MqttChoice::Off,
            services: shturman_control::ServiceNetwork::default(),
        };
        let control = runtime.block_on(Control::start(config)).expect("control starts");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let admin_conf = control.admin_conf.clone();
        let url = control.url.clone();
        runtime.spawn(control.run_until(async move {
            let _ = rx.await;
        }));
        let conf = std::fs::read_to_string(&admin_conf).expect("admin.conf");
        let token = conf
            .lines()
            .find_map(|l| l.trim().strip_prefix("token:"))
            .expect("a token in admin.conf")
            .trim()
            .to_string();
        let http = reqwest::Client::builder().no_proxy().build().expect("http");
        Cluster {
            dir,
            admin_conf,
            url,
            token,
            http,
            stop: Some(tx),
            runtime,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shturman"));
        cmd.current_dir(self.dir.path())
            .env_remove("SHTURMAN_SERVER")
            .env_remove("SHTURMAN_TOKEN")
            .env_remove("RUST_LOG")
            .env("SHTURMAN_CONFIG", &self.admin_conf)
            .env("HOME", self.dir.path())
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("runs")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "shturman {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and expects failure (exit 1); returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "shturman {args:?} should fail; stdout:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// One API request: the status code and the JSON body (`Null` when not JSON).
    pub fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.runtime.block_on(async {
            let mut req = self
                .http
                .request(method, format!("{}{path}", self.url))
                .bearer_auth(&self.token);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.expect("request");
            let code = resp.status().as_u16();
            let bytes = resp.bytes().await.expect("body");
            (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        })
    }

    pub fn get(&self, path: &str) -> Value {
        let (code, v) = self.request(reqwest::Method::GET, path, None);
        assert_eq!(code, 200, "GET {path}: {v}");
        v
    }

    pub fn exists(&self, path: &str) -> bool {
        self.request(reqwest::Method::GET, path, None).0 == 200
    }

    pub fn create(&self, collection: &str, obj: Value) -> Value {
        let (code, v) = self.request(reqwest::Method::POST, collection, Some(&obj));
        assert_eq!(code, 201, "POST {collection}: {v}");
        v
    }

    /// Replaces the status of the object at `path` (read, set, PUT /status).
    pub fn set_status(&self, path: &str, status: Value) {
        let mut obj = self.get(path);
        obj["status"] = status;
        let (code, v) = self.request(reqwest::Method::PUT, &format!("{path}/status"), Some(&obj));
        assert_eq!(code, 200, "PUT {path}/status: {v}");
    }

    /// Writes a file in the scratch directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    /// The scratch directory the CLI runs in.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
