//! The [`Signed`] envelope every agent → control plane message (but the join
//! request) travels in: `body` is the inner message's JSON text, `mac` the
//! lowercase hex HMAC-SHA256 of that text keyed by the node secret's *text*
//! as bytes (not hex-decoded), as `shturman_api::wire::Signed` specifies.

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use shturman_api::wire::{ONLINE_FALSE, ONLINE_TRUE, Signed};

type HmacSha256 = Hmac<Sha256>;

/// The HMAC key for a node secret: its text as bytes.
pub fn mac_key(node_secret: &str) -> Vec<u8> {
    node_secret.as_bytes().to_vec()
}

/// The signed payload of `nodes/{node}/online` (`true` / `false`).
pub fn online_payload(key: &[u8], online: bool) -> Vec<u8> {
    let body = if online { ONLINE_TRUE } else { ONLINE_FALSE };
    let signed = Signed {
        mac: mac(key, body),
        body: body.to_string(),
    };
    serde_json::to_vec(&signed).unwrap_or_default()
}

/// The hex MAC of `body`.
pub fn mac(key: &[u8], body: &str) -> String {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(body.as_bytes());
    encode_hex(&m.finalize().into_bytes())
}

/// Wraps `msg` in a [`Signed`] envelope.
pub fn seal<T: Serialize>(key: &[u8], msg: &T) -> Result<Signed, serde_json::Error> {
    let body = serde_json::to_string(msg)?;
    Ok(Signed {
        mac: mac(key, &body),
        body,
    })
}

/// Whether `signed.mac` matches its body (constant-time comparison).
pub fn verify(key: &[u8], signed: &Signed) -> bool {
    let Some(given) = decode_hex(&signed.mac) else {
        return false;
    };
    let Ok(mut m) = <HmacSha256 as KeyInit>::new_from_slice(key) else {
        return false;
    };
    m.update(signed.body.as_bytes());
    m.verify_slice(&given).is_ok()
}

/// Lowercase hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Decodes hex (either case); `None` if it is not hex.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| {
            let hi = char::from(p[0]).to_digit(16)?;
            let lo = char::from(p[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::wire::{Heartbeat, Stamp};

    #[test]
    fn rfc4231_case_2() {
        // HMAC-SHA256 test vector: key "Jefe".
        assert_eq!(
            mac(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn envelope_round_trip_and_tamper() {
        let key = mac_key(&"ab".repeat(32));
        assert_eq!(key.len(), 64);
        let hb = Heartbeat {
            node: "pi-1".into(),
            stamp: Stamp { epoch: 1, seq: 2 },
            ..Heartbeat::default()
        };
        let s = seal(&key, &hb).unwrap();
        assert!(verify(&key, &s));
        let back: Heartbeat = serde_json::from_str(&s.body).unwrap();
        assert_eq!(back, hb);
        let mut t = s.clone();
        t.body = t.body.replace("pi-1", "pi-2");
        assert!(!verify(&key, &t));
        assert!(!verify(&mac_key(&"cd".repeat(32)), &s));
        assert!(!verify(
            &key,
            &Signed {
                mac: "zz".into(),
                body: s.body
            }
        ));
    }

    #[test]
    fn hex() {
        assert_eq!(encode_hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(decode_hex("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(mac_key("abcd"), b"abcd".to_vec());
    }

    #[test]
    fn online_flag_is_signed() {
        let key = mac_key("feed");
        let s: Signed = serde_json::from_slice(&online_payload(&key, false)).unwrap();
        assert_eq!(s.body, "false");
        assert!(verify(&key, &s));
    }
}
