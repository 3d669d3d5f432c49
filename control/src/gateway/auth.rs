//! Who may connect to the embedded broker, and the node secrets registry.
//!
//! At CONNECT the username is a node name and the password either a valid
//! join token or the secret that node registered when it joined. The
//! control plane's own client uses [`INTERNAL_USER`], which is not a valid
//! node name, with a random password made at start and kept in memory.
//!
//! Node secrets are kept durably as Secrets `node-secret-<node>` in
//! `shturman-system`; deleting one revokes the node (it must join again
//! with a token).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use rand::Rng;
use shturman_api::core::Secret;
use shturman_api::core::config::base64_encode;
use shturman_api::meta::ObjectMeta;
use shturman_api::validate::is_dns1123_subdomain;

use crate::broker::AuthFn;
use crate::client::Client;
use crate::server::error::ApiError;
use crate::tokens::{self, SYSTEM_NAMESPACE, constant_time_eq};

/// The control plane's own MQTT username (a colon: never a node name).
pub const INTERNAL_USER: &str = "shturman:control-plane";
/// Node secret Secrets are named this plus the node's name.
pub const NODE_SECRET_PREFIX: &str = "node-secret-";
/// Their type.
pub const NODE_SECRET_TYPE: &str = "shturman.io/node-secret";
/// The key holding the secret in their data.
pub const NODE_SECRET_KEY: &str = "secret";

/// A username and password for the broker.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ****)", self.username)
    }
}

impl Credentials {
    /// The internal credential with a fresh random password.
    pub fn internal() -> Credentials {
        let mut rng = rand::rng();
        let password = (0..32).fold(String::with_capacity(64), |mut s, _| {
            s.push_str(&format!("{:02x}", rng.random::<u8>()));
            s
        });
        Credentials {
            username: INTERNAL_USER.into(),
            password,
        }
    }
}

/// Whether `name` can be a node: a DNS-1123 subdomain short enough for its
/// secret's Secret name.
pub fn valid_node_name(name: &str) -> bool {
    is_dns1123_subdomain(name) && name.len() + NODE_SECRET_PREFIX.len() <= 253
}

/// Whether a node secret is acceptable: 64 or more lowercase hex digits.
pub fn valid_node_secret(s: &str) -> bool {
    s.len() >= 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The Secret holding `node`'s secret.
pub fn node_secret_object(node: &str, secret: &str) -> Secret {
    Secret {
        api_version: "v1".into(),
        kind: "Secret".into(),
        metadata: ObjectMeta {
            name: Some(format!("{NODE_SECRET_PREFIX}{node}")),
            namespace: Some(SYSTEM_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        type_: Some(NODE_SECRET_TYPE.into()),
        data: BTreeMap::from([(NODE_SECRET_KEY.to_string(), base64_encode(secret.as_bytes()))]),
        ..Secret::default()
    }
}

/// The secret stored in a node secret Secret.
pub fn secret_of(s: &Secret) -> Option<String> {
    (s.type_.as_deref() == Some(NODE_SECRET_TYPE))
        .then(|| s.decoded(NODE_SECRET_KEY))
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

/// Reads `node`'s registered secret.
pub async fn registered_secret(client: &Client, node: &str) -> Result<Option<String>, ApiError> {
    let s = client
        .get::<Secret>(Some(SYSTEM_NAMESPACE), &format!("{NODE_SECRET_PREFIX}{node}"))
        .await?;
    Ok(s.as_ref().and_then(secret_of))
}

/// Why a CONNECT was refused (logged on the control plane).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    BadUsername,
    Token(tokens::TokenError),
    Unavailable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::BadUsername => {
                f.write_str("the username is not a valid node name (a DNS-1123 subdomain)")
            }
            Refusal::Token(e) => write!(
                f,
                "neither the node's registered secret nor a valid join token: {e}"
            ),
            Refusal::Unavailable(e) => write!(f, "the store could not be read: {e}"),
        }
    }
}

/// Decides CONNECTs for the embedded broker.
#[derive(Clone)]
pub struct ConnectAuth {
    client: Client,
    internal: Credentials,
}

impl ConnectAuth {
    pub fn new(client: Client, internal: Credentials) -> ConnectAuth {
        ConnectAuth { client, internal }
    }

    /// Accepts the internal credential, a node's registered secret, or a
    /// valid join token (with any valid node name, to join).
    pub async fn check(&self, username: &str, password: &str) -> Result<(), Refusal> {
        if username == self.internal.username {
            return if constant_time_eq(password.as_bytes(), self.internal.password.as_bytes()) {
                Ok(())
            } else {
                Err(Refusal::Token(tokens::TokenError::WrongToken))
            };
        }
        if !valid_node_name(username) {
            return Err(Refusal::BadUsername);
        }
        let registered = registered_secret(&self.client, username)
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        if registered.is_some_and(|s| constant_time_eq(s.as_bytes(), password.as_bytes())) {
            return Ok(());
        }
        match tokens::check(&self.client, password, Utc::now()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Refusal::Token(e)),
            Err(e) => Err(Refusal::Unavailable(e.to_string())),
        }
    }

    /// The broker hook. rumqttd runs it on its own runtime; the check runs on
    /// the control plane's (the store lives there) and the answer comes back.
    pub fn hook(self, runtime: tokio::runtime::Handle) -> AuthFn {
        let me = Arc::new(self);
        Arc::new(move |client_id: String, username: String, password: String| {
            let me = me.clone();
            let task = runtime.spawn(async move {
                match me.check(&username, &password).await {
                    Ok(()) => true,
                    Err(why) => {
                        tracing::warn!(node = %username, %client_id, "MQTT CONNECT refused: {why}");
                        false
                    }
                }
            });
            Box::pin(async move { task.await.unwrap_or(false) })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_secrets() {
        assert!(valid_node_name("pi-1.lab"));
        assert!(!valid_node_name(INTERNAL_USER));
        assert!(!valid_node_name("Pi_1"));
        assert!(!valid_node_name(&"a".repeat(250)));
        assert!(valid_node_secret(&"ab".repeat(32)));
        assert!(!valid_node_secret(&"ab".repeat(31)));
        assert!(!valid_node_secret(&"AB".repeat(32)));
    }

    #[test]
    fn node_secret_round_trips() {
        let s = node_secret_object("pi-1", "feed");
        assert_eq!(s.metadata.name.as_deref(), Some("node-secret-pi-1"));
        assert_eq!(secret_of(&s).as_deref(), Some("feed"));
        let mut other = s.clone();
        other.type_ = Some("Opaque".into());
        assert_eq!(secret_of(&other), None);
    }
}
