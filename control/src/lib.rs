//! Shturman's control plane.
//!
//! - [`store`]: the `Store` trait, its backends (sled by default, memory for
//!   tests) and the conformance suite every backend passes.
//! - [`server`]: the Kubernetes-shaped REST API (axum).
//! - [`controllers`]: ReplicaSet, Deployment, garbage collection and node
//!   lifecycle: pure `plan` functions and the executors that run them.
//! - [`manager`]: starts the informers, controllers and scheduler.
//! - [`client`]: a typed in-process client of that API, for controllers.
//! - [`runtime`]: informers, work queues and the controller loop.
//! - [`scheduler`]: filter, score and bind pods to nodes.
//! - [`broker`]: the embedded MQTT broker (rumqttd), or an external one's URL.
//! - [`gateway`]: the node gateway: desired pods out to agents over MQTT,
//!   joins, heartbeats and pod reports in.
//! - [`tokens`]: join tokens (`shturman token create`), after Kubernetes'
//!   bootstrap tokens.
//!
//! Start one with [`Control::start`]; the `shturman control` command is a thin
//! shell around it.

pub mod broker;
pub mod client;
pub mod controllers;
pub mod gateway;
pub mod manager;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use broker::MqttChoice;
pub use server::alloc::{NodePortRange, RangeError, ServiceCidr, ServiceNetwork};

/// Which store backend to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    /// sled in `<data-dir>/store` (the default).
    Sled,
    /// In memory, lost on exit (tests and benchmarks).
    Memory,
    /// An etcd cluster (`--store etcd --etcd-endpoints …`). One control
    /// plane per prefix: the controllers do not elect a leader.
    Etcd(store::EtcdConfig),
}

/// How to run the control plane.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the store, the admin token and `admin.conf` live.
    pub data_dir: PathBuf,
    /// Where the API listens; port 0 picks a free one.
    pub api_addr: SocketAddr,
    pub store: StoreChoice,
    /// The control loops' settings.
    pub controllers: manager::ControllerSettings,
    /// The MQTT broker: embedded (the default, on 127.0.0.1:1883), external,
    /// or none.
    pub mqtt: MqttChoice,
    /// Where Services' cluster IPs (`--service-cidr`, 10.43.0.0/16) and
    /// node ports (`--service-node-port-range`, 30000-32767) come from.
    pub services: ServiceNetwork,
}

impl Default for Config {
    /// `shturman control`'s defaults: `./shturman-data`, API on
    /// 127.0.0.1:7443, sled, controllers on, embedded broker on
    /// 127.0.0.1:1883, services from 10.43.0.0/16 and ports 30000-32767. Tests override with `Config { …, ..Config::default() }`.
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./shturman-data"),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 7443)),
            store: StoreChoice::Sled,
            controllers: manager::ControllerSettings::default(),
            mqtt: MqttChoice::Embedded(SocketAddr::from(([127, 0, 0, 1], 1883))),
            services: ServiceNetwork::default(),
        }
    }
}

/// Why the control plane could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}; pick another address with --api-addr")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("the API server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Mqtt(#[from] broker::BrokerError),
    #[error("cannot create the {namespace} namespace: {message}")]
    Namespace { namespace: String, message: String },
}

/// A started control plane.
pub struct Control {
    /// The API's base URL, e.g. `http://127.0.0.1:7443`.
    pub url: String,
    /// Where the admin client configuration was written.
    pub admin_conf: PathBuf,
    /// The MQTT broker agents dial (`mqtt://host:port`), when MQTT is on.
    pub mqtt_url: Option<String>,
    /// The embedded broker's address (its real port when 0 was asked for).
    pub mqtt_addr: Option<SocketAddr>,
    server: server::Running,
}

impl Control {
    /// Opens the store, binds the API and starts serving.
    pub async fn start(config: Config) -> Result<Control, Error> {
        let server = server::start(config).await?;
        Ok(Control {
            url: server.url.clone(),
            admin_conf: server.admin_conf.clone(),
            mqtt_url: server.mqtt.url.clone(),
            mqtt_addr: server.mqtt.broker.as_ref().map(broker::EmbeddedBroker::addr),
            server,
        })
    }

    /// Serves until `shutdown` resolves, then drains and closes the store.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        self.server.run_until(shutdown).await
    }
}
