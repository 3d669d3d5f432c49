//! Starts and stops the control loops: one informer per kind, shared, and
//! every controller and the scheduler reading from them.

use std::sync::Arc;
use std::time::Duration;

use shturman_api::apps::{Deployment, ReplicaSet};
use shturman_api::core::{ConfigMap, Endpoints, Node, Pod, Secret, Service};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::controllers::{deployment, endpoints, gc, nodelifecycle, replicaset};
use crate::gateway::{self, GatewayConfig};
use crate::runtime::{Clock, Informer, Recorder, SystemClock};
use crate::scheduler;
use crate::server::State;

/// How the control loops behave.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Run the controllers and the scheduler at all (tests of the bare API
    /// turn them off).
    pub enabled: bool,
    /// A node silent this long becomes `Unknown` and unreachable-tainted.
    pub node_monitor_grace: Duration,
    /// How long pods wait for an unreachable or not-ready node before they are
    /// evicted, unless they say otherwise (`tolerationSeconds`).
    pub default_toleration_seconds: i64,
    /// Reconciles each controller runs at once.
    pub workers: usize,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            enabled: true,
            node_monitor_grace: Duration::from_secs(40),
            default_toleration_seconds: 300,
            workers: 4,
        }
    }
}

impl ControllerSettings {
    /// No controllers: the API and the store only.
    pub fn disabled() -> Self {
        ControllerSettings {
            enabled: false,
            ..ControllerSettings::default()
        }
    }
}

/// The running control loops.
pub struct Manager {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Manager {
    /// Starts informers, controllers and the scheduler over `state`.
    pub fn start(state: Arc<State>, settings: &ControllerSettings) -> Manager {
        Manager::start_with(state, settings, None)
    }

    /// As [`Manager::start`], plus the node gateway when `gateway` says how
    /// to reach the MQTT broker.
    pub fn start_with(
        state: Arc<State>,
        settings: &ControllerSettings,
        gateway: Option<GatewayConfig>,
    ) -> Manager {
        let stop = CancellationToken::new();
        if !settings.enabled {
            return Manager {
                stop,
                tasks: Vec::new(),
            };
        }
        let logs = state.logs.clone();
        let client = Client::new(state);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let pods = Informer::<Pod>::start(client.clone(), stop.clone());
        let replicasets = Informer::<ReplicaSet>::start(client.clone(), stop.clone());
        let deployments = Informer::<Deployment>::start(client.clone(), stop.clone());
        let nodes = Informer::<Node>::start(client.clone(), stop.clone());
        let services = Informer::<Service>::start(client.clone(), stop.clone());
        let endpoints = Informer::<Endpoints>::start(client.clone(), stop.clone());
        let recorder = |component| Recorder::new(client.clone(), component, clock.clone());
        let workers = settings.workers.max(1);
        let tasks = vec![
            replicaset::run::start(
                client.clone(),
                &replicasets,
                &pods,
                recorder("replicaset-controller"),
                clock.clone(),
                workers,
                stop.clone(),
            ),
            deployment::run::start(
                client.clone(),
                &deployments,
                &replicasets,
                &pods,
                recorder("deployment-controller"),
                clock.clone(),
                workers,
                stop.clone(),
            ),
            gc::start(client.clone(), &deployments, &replicasets, &pods, stop.clone()),
            nodelifecycle::start(
                client.clone(),
                &nodes,
                &pods,
                clock.clone(),
                nodelifecycle::NodeLifecycleConfig {
                    node_grace: settings.node_monitor_grace,
                    default_toleration_seconds: settings.default_toleration_seconds,
                    workers,
                },
                stop.clone(),
            ),
            scheduler::run::start(
                client.clone(),
                &nodes,
                &pods,
                recorder("default-scheduler"),
                stop.clone(),
            ),
            endpoints::run::start(
                client.clone(),
                &services,
                &endpoints,
                &pods,
                workers,
                stop.clone(),
            ),
        ];
        let mut tasks = tasks;
        if let Some(config) = gateway {
            let config_maps = Informer::<ConfigMap>::start(client.clone(), stop.clone());
            let secrets = Informer::<Secret>::start(client.clone(), stop.clone());
            tasks.push(gateway::start(
                client.clone(),
                gateway::Inputs {
                    pods: pods.clone(),
                    config_maps,
                    secrets,
                    services,
                    endpoints,
                },
                config,
                logs,
                stop.clone(),
            ));
        }
        Manager { stop, tasks }
    }

    /// Stops every loop and waits (briefly) for them to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}
