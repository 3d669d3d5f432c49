//! `shturman version`: the client's version, then the server's from `GET /version`.

use anyhow::Result;
use serde_json::Value;

use crate::client::Client;
use crate::value::str_at;

/// `v0.1.0`.
pub fn client_version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// The server line from a `/version` body.
pub fn server_line(v: &Value) -> String {
    let git = str_at(v, "gitVersion");
    let version = if git.is_empty() {
        format!("v{}.{}", str_at(v, "major"), str_at(v, "minor"))
    } else {
        git.to_string()
    };
    match str_at(v, "platform") {
        "" => format!("Server Version: {version}"),
        p => format!("Server Version: {version} ({p})"),
    }
}

pub async fn run(client: &Client) -> Result<()> {
    println!("Client Version: {}", client_version());
    let v = client.get("/version", &[]).await?;
    println!("{}", server_line(&v));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_lines() {
        let v = json!({"major": "0", "minor": "1", "gitVersion": "v0.1.0", "platform": "linux/arm64"});
        assert_eq!(server_line(&v), "Server Version: v0.1.0 (linux/arm64)");
        assert_eq!(
            server_line(&json!({"major": "0", "minor": "2"})),
            "Server Version: v0.2"
        );
        assert!(client_version().starts_with('v'));
    }
}
