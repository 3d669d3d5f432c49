//! `shturman control`: start the control plane, say where it serves and where
//! the admin config is, and run until Ctrl-C or SIGTERM.

use std::path::Path;

use anyhow::{Result, anyhow};
use shturman_control::manager::ControllerSettings;
use shturman_control::{Config, Control, MqttChoice, ServiceNetwork};

use crate::args::ControlArgs;

/// The control-plane configuration for these flags.
pub fn config(args: &ControlArgs) -> Result<Config> {
    Ok(Config {
        data_dir: args.data_dir.clone(),
        api_addr: args.api_addr,
        store: args.store.choice()?,
        controllers: ControllerSettings {
            node_monitor_grace: args.node_monitor_grace_period,
            default_toleration_seconds: i64::from(args.default_toleration_seconds),
            ..ControllerSettings::default()
        },
        mqtt: match &args.mqtt_url {
            Some(url) => MqttChoice::External(url.clone()),
            None => MqttChoice::Embedded(args.mqtt_addr),
        },
        services: ServiceNetwork {
            cidr: args.service_cidr,
            node_ports: args.service_node_port_range,
        },
    })
}

/// The MQTT line of the start banner.
pub fn mqtt_line(mqtt_url: Option<&str>, embedded: bool) -> String {
    match (mqtt_url, embedded) {
        (Some(u), true) => format!(
            "MQTT broker (embedded) listening at {u}; join nodes with: shturman-agent --mqtt-url {u} --token $(shturman token create) …\n"
        ),
        (Some(u), false) => format!("MQTT broker (external) at {u}\n"),
        (None, _) => String::new(),
    }
}

/// The lines printed on start.
pub fn banner(url: &str, admin_conf: &Path, absolute: &Path, store: &str) -> String {
    format!(
        "shturman control v{}: API serving at {url} (store: {store})\n\
         admin config written to {}; use it with: export SHTURMAN_CONFIG={}\n",
        env!("CARGO_PKG_VERSION"),
        admin_conf.display(),
        absolute.display()
    )
}

/// Resolves when the process is asked to stop.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

pub async fn run(args: &ControlArgs) -> Result<()> {
    // The control plane's errors already name their cause; one line, no chain.
    let control = Control::start(config(args)?)
        .await
        .map_err(|e| anyhow!("the control plane could not start: {e}"))?;
    let absolute = std::path::absolute(&control.admin_conf).unwrap_or(control.admin_conf.clone());
    print!(
        "{}{}",
        banner(&control.url, &control.admin_conf, &absolute, &args.store.label()),
        mqtt_line(control.mqtt_url.as_deref(), control.mqtt_addr.is_some())
    );
    tracing::info!(url = %control.url, "control plane started");
    control
        .run_until(shutdown_signal())
        .await
        .map_err(|e| anyhow!("the control plane stopped with an error: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_says_where() {
        let b = banner(
            "http://127.0.0.1:7443",
            Path::new("./shturman-data/admin.conf"),
            Path::new("/srv/shturman-data/admin.conf"),
            "sled",
        );
        assert!(b.contains("API serving at http://127.0.0.1:7443"), "{b}");
        let m = mqtt_line(Some("mqtt://127.0.0.1:1883"), true);
        assert!(
            m.contains("MQTT broker (embedded) listening at mqtt://127.0.0.1:1883"),
            "{m}"
        );
        assert!(b.contains(
            "admin config written to ./shturman-data/admin.conf; use it with: export SHTURMAN_CONFIG=/srv/shturman-data/admin.conf"
        ), "{b}");
    }
}
