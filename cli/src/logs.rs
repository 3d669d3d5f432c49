//! `shturman logs POD [-c C] [-f] [--tail N] [--previous]`: prints a
//! container's output as it arrives from
//! `GET /api/v1/namespaces/{ns}/pods/{name}/log` (the API server fetches it
//! from the pod's node over MQTT). `-f` streams until Ctrl-C.

use std::io::Write;

use anyhow::{Context, bail};

use crate::args::LogsArgs;
use crate::client::{Client, describe_send_error};

/// The pod's name from `NAME` or `pod/NAME` (pure).
pub fn pod_name(arg: &str) -> anyhow::Result<&str> {
    let name = match arg.split_once('/') {
        None => arg,
        Some(("pod" | "pods" | "po", name)) => name,
        Some((kind, _)) => bail!("shturman logs reads pods only, not {kind}: use `shturman logs POD`"),
    };
    if name.is_empty() {
        bail!("a pod name is required: `shturman logs POD`");
    }
    Ok(name)
}

/// The query Kubernetes' log endpoint takes (pure).
pub fn query(a: &LogsArgs) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(c) = &a.container {
        q.push(("container", c.clone()));
    }
    if a.follow {
        q.push(("follow", "true".to_string()));
    }
    if a.tail >= 0 {
        q.push(("tailLines", a.tail.to_string()));
    }
    if a.previous {
        q.push(("previous", "true".to_string()));
    }
    q
}

pub async fn run(a: &LogsArgs, client: &Client) -> anyhow::Result<()> {
    let name = pod_name(&a.pod)?;
    let ns = &client.config.namespace;
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}/log");
    let mut resp = client.get_stream(&path, &query(a), !a.follow).await?;
    let copy = async {
        let mut out = std::io::stdout();
        loop {
            let chunk = resp
                .chunk()
                .await
                .map_err(|e| anyhow::anyhow!("the log stream broke: {}", describe_send_error(&e)))?;
            let Some(bytes) = chunk else { return Ok(()) };
            out.write_all(&bytes).context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
        }
    };
    tokio::select! {
        r = copy => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names() {
        assert_eq!(pod_name("web").unwrap(), "web");
        assert_eq!(pod_name("pod/web").unwrap(), "web");
        assert_eq!(pod_name("pods/web").unwrap(), "web");
        assert!(pod_name("deploy/web").is_err());
        assert!(pod_name("pod/").is_err());
    }

    #[test]
    fn queries() {
        let mut a = LogsArgs {
            pod: "web".into(),
            container: None,
            follow: false,
            tail: -1,
            previous: false,
        };
        assert!(query(&a).is_empty());
        a.container = Some("app".into());
        a.follow = true;
        a.tail = 2;
        a.previous = true;
        assert_eq!(
            query(&a),
            [
                ("container", "app".to_string()),
                ("follow", "true".to_string()),
                ("tailLines", "2".to_string()),
                ("previous", "true".to_string())
            ]
        );
    }
}
