//! A small async client of the API for tests: JSON in, (status, JSON) out,
//! and waiting on conditions with deadlines.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

/// The API of one control plane.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(url: &str, token: &str) -> Api {
        Api {
            url: url.to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value)> {
        let resp = req.bearer_auth(&self.token).send().await?;
        let code = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((code, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.send(self.http.get(format!("{}{path}", self.url))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.send(self.http.post(format!("{}{path}", self.url)).json(body))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.send(self.http.put(format!("{}{path}", self.url)).json(body))
            .await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.send(
            self.http
                .patch(format!("{}{path}", self.url))
                .header("content-type", "application/merge-patch+json")
                .json(body),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Result<(u16, Value)> {
        self.send(self.http.delete(format!("{}{path}", self.url))).await
    }

    /// `items` of a list.
    pub async fn items(&self, path: &str) -> Result<Vec<Value>> {
        let (code, v) = self.get(path).await?;
        if code != 200 {
            bail!("GET {path}: {code} {v}");
        }
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// A JSON stream of a watch, as (type, object) pairs.
    pub async fn watch(&self, path: &str) -> Result<reqwest::Response> {
        Ok(self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?)
    }
}

/// Polls `check` until it yields `Some`, failing after `timeout` with `what`
/// and the last state `check` described.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = String::new();
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = e.to_string(),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what} {last_err}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pod in phase Running with its Ready condition True.
pub fn is_running_and_ready(p: &serde_json::Value) -> bool {
    p["status"]["phase"] == "Running" && is_ready(p)
}

/// An object (a Node, a Pod) whose Ready condition is True.
pub fn is_ready(o: &serde_json::Value) -> bool {
    o["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}
