//! Join tokens, after Kubernetes' bootstrap tokens: `abcdef.0123456789abcdef`
//! (a 6-character public id, a dot, a 16-character secret, both
//! `[a-z0-9]`), kept as a Secret `bootstrap-token-<id>` of type
//! `bootstrap.kubernetes.io/token` in the `shturman-system` namespace, with
//! `token-id`, `token-secret` and an optional `expiration` (RFC 3339).
//!
//! Making a token and judging one are pure: [`JoinToken::generate`] takes
//! the random source, [`validate`] the Secrets and the time. The callers
//! (`shturman token create`, the broker's CONNECT check, the node gateway)
//! do the I/O.

use chrono::{DateTime, Utc};
use rand::Rng;
use shturman_api::core::config::base64_encode;
use shturman_api::core::{Namespace, Secret};
use shturman_api::meta::ObjectMeta;

use crate::client::Client;
use crate::server::error::ApiError;

/// Where the control plane keeps its own objects (join tokens, node secrets).
pub const SYSTEM_NAMESPACE: &str = "shturman-system";
/// The Secret type of a join token (Kubernetes' name).
pub const TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Join token Secrets are named this plus the token's id.
pub const TOKEN_SECRET_PREFIX: &str = "bootstrap-token-";

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// What a person should do about a refused token.
const HOW_TO_FIX: &str = "create one with `shturman token create` on the control plane";

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret half.
        write!(f, "JoinToken({}.****)", self.id)
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

fn well_formed(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl JoinToken {
    /// Parses `id.secret`; `None` when it does not have the token's shape.
    pub fn parse(token: &str) -> Option<JoinToken> {
        let (id, secret) = token.trim().split_once('.')?;
        (well_formed(id, ID_LEN) && well_formed(secret, SECRET_LEN)).then(|| JoinToken {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// A fresh random token.
    pub fn generate(rng: &mut impl Rng) -> JoinToken {
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect()
        };
        JoinToken {
            id: pick(ID_LEN),
            secret: pick(SECRET_LEN),
        }
    }

    /// A fresh token from the thread's random source.
    pub fn random() -> JoinToken {
        JoinToken::generate(&mut rand::rng())
    }

    /// The name of the Secret that holds this token.
    pub fn secret_name(&self) -> String {
        format!("{TOKEN_SECRET_PREFIX}{}", self.id)
    }

    /// The Secret that makes this token valid until `expires` (or forever).
    pub fn to_secret(&self, expires: Option<DateTime<Utc>>) -> Secret {
        let mut data = std::collections::BTreeMap::new();
        data.insert("token-id".to_string(), base64_encode(self.id.as_bytes()));
        data.insert("token-secret".to_string(), base64_encode(self.secret.as_bytes()));
        data.insert(
            "usage-bootstrap-authentication".to_string(),
            base64_encode(b"true"),
        );
        if let Some(t) = expires {
            let text = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            data.insert("expiration".to_string(), base64_encode(text.as_bytes()));
        }
        Secret {
            api_version: "v1".into(),
            kind: "Secret".into(),
            metadata: ObjectMeta {
                name: Some(self.secret_name()),
                namespace: Some(SYSTEM_NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            type_: Some(TOKEN_SECRET_TYPE.into()),
            data,
            ..Secret::default()
        }
    }
}

/// Why a join token was refused. The messages are for the person holding it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the join token is malformed: expected six lowercase letters or digits, a dot, then sixteen (like abcdef.0123456789abcdef); {HOW_TO_FIX}"
    )]
    Malformed,
    #[error("the join token is wrong or expired; {HOW_TO_FIX}")]
    WrongToken,
    #[error("the join token {id}.… expired at {at}; {HOW_TO_FIX}")]
    Expired { id: String, at: String },
    #[error(
        "the join token {id}.… has an unreadable expiration {value:?} in Secret {SYSTEM_NAMESPACE}/{TOKEN_SECRET_PREFIX}{id}; fix or delete that Secret and {HOW_TO_FIX}"
    )]
    BadExpiration { id: String, value: String },
}

fn decoded_text(s: &Secret, key: &str) -> Option<String> {
    s.decoded(key).and_then(|b| String::from_utf8(b).ok())
}

/// Compares two byte strings in time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Judges `token` against the join token Secrets in `secrets` (others are
/// ignored) at `now`. Pure.
pub fn validate(token: &str, secrets: &[Secret], now: DateTime<Utc>) -> Result<JoinToken, TokenError> {
    let parsed = JoinToken::parse(token).ok_or(TokenError::Malformed)?;
    let name = parsed.secret_name();
    let found = secrets.iter().find(|s| {
        s.metadata.name.as_deref() == Some(name.as_str())
            && s.type_.as_deref() == Some(TOKEN_SECRET_TYPE)
            && decoded_text(s, "token-id").as_deref() == Some(parsed.id.as_str())
    });
    let Some(secret) = found else {
        return Err(TokenError::WrongToken);
    };
    let stored = decoded_text(secret, "token-secret").unwrap_or_default();
    if !constant_time_eq(stored.as_bytes(), parsed.secret.as_bytes()) {
        return Err(TokenError::WrongToken);
    }
    if let Some(exp) = decoded_text(secret, "expiration").filter(|e| !e.is_empty()) {
        let at = DateTime::parse_from_rfc3339(&exp).map_err(|_| TokenError::BadExpiration {
            id: parsed.id.clone(),
            value: exp.clone(),
        })?;
        if at.with_timezone(&Utc) <= now {
            return Err(TokenError::Expired {
                id: parsed.id.clone(),
                at: exp,
            });
        }
    }
    Ok(parsed)
}

/// Reads the Secret `token` names and judges it at `now`.
pub async fn check(
    client: &Client,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Result<JoinToken, TokenError>, ApiError> {
    let Some(parsed) = JoinToken::parse(token) else {
        return Ok(Err(TokenError::Malformed));
    };
    let secret = client
        .get::<Secret>(Some(SYSTEM_NAMESPACE), &parsed.secret_name())
        .await?;
    Ok(validate(token, secret.as_slice(), now))
}

/// Creates the `shturman-system` namespace if it is missing.
pub async fn ensure_system_namespace(client: &Client) -> Result<(), ApiError> {
    if client.get::<Namespace>(None, SYSTEM_NAMESPACE).await?.is_some() {
        return Ok(());
    }
    let ns = Namespace {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        metadata: ObjectMeta {
            name: Some(SYSTEM_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match client.create(&ns).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn generated_tokens_parse_and_round_trip() {
        let mut rng = rand::rng();
        for _ in 0..50 {
            let t = JoinToken::generate(&mut rng);
            let text = t.to_string();
            assert_eq!(text.len(), 23, "{text}");
            assert_eq!(JoinToken::parse(&text), Some(t.clone()));
            assert!(!format!("{t:?}").contains(&t.secret));
        }
    }

    #[test]
    fn malformed_tokens_are_named_so() {
        for bad in [
            "",
            "abc",
            "abcdef.0123",
            "ABCDEF.0123456789abcdef",
            "abcdef-0123456789abcdef",
            "abcdef.0123456789abcde!",
        ] {
            assert_eq!(validate(bad, &[], now()), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn right_wrong_and_expired() {
        let t = JoinToken::parse("abcdef.0123456789abcdef").unwrap();
        let forever = t.to_secret(None);
        assert_eq!(
            validate(&t.to_string(), std::slice::from_ref(&forever), now()),
            Ok(t.clone())
        );
        // Wrong secret half, unknown id.
        assert_eq!(
            validate(
                "abcdef.0123456789abcdeX".to_lowercase().as_str(),
                std::slice::from_ref(&forever),
                now()
            ),
            Err(TokenError::WrongToken)
        );
        assert_eq!(
            validate("zzzzzz.0123456789abcdef", &[forever], now()),
            Err(TokenError::WrongToken)
        );
        let soon = t.to_secret(Some(now() + TimeDelta::hours(1)));
        assert!(validate(&t.to_string(), std::slice::from_ref(&soon), now()).is_ok());
        let past = t.to_secret(Some(now() - TimeDelta::seconds(1)));
        let err = validate(&t.to_string(), &[past], now()).unwrap_err();
        assert!(matches!(err, TokenError::Expired { .. }));
        let msg = err.to_string();
        assert!(msg.contains("expired at 2026-05-01T11:59:59Z"), "{msg}");
        assert!(msg.contains("shturman token create"), "{msg}");
        assert!(!msg.contains(&t.secret), "never echoes the secret: {msg}");
    }

    #[test]
    fn other_secret_types_do_not_count() {
        let t = JoinToken::parse("abcdef.0123456789abcdef").unwrap();
        let mut s = t.to_secret(None);
        s.type_ = Some("Opaque".into());
        assert_eq!(validate(&t.to_string(), &[s], now()), Err(TokenError::WrongToken));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
