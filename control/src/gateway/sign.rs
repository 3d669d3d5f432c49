//! The [`Signed`] envelope: HMAC-SHA256 of the body keyed by the node's
//! secret (its text as bytes), hex in `mac`. Checking is constant-time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use shturman_api::wire::Signed;

type HmacSha256 = Hmac<Sha256>;

/// HMAC accepts keys of any length, so this is always `Some`.
fn mac_for(secret: &str) -> Option<HmacSha256> {
    HmacSha256::new_from_slice(secret.as_bytes()).ok()
}

/// Wraps `body` (JSON text) in an envelope signed with `secret`.
pub fn sign(body: String, secret: &str) -> Signed {
    let mac = mac_for(secret).map_or_else(String::new, |mut m| {
        m.update(body.as_bytes());
        hex(&m.finalize().into_bytes())
    });
    Signed { mac, body }
}

/// Whether `signed` carries a valid MAC for `secret`.
pub fn verify(signed: &Signed, secret: &str) -> bool {
    let Some(expected) = unhex(&signed.mac) else {
        return false;
    };
    let Some(mut m) = mac_for(secret) else {
        return false;
    };
    m.update(signed.body.as_bytes());
    m.verify_slice(&expected).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let s = sign("{\"a\":1}".into(), "k1");
        assert_eq!(s.mac.len(), 64);
        assert!(verify(&s, "k1"));
        assert!(!verify(&s, "k2"));
        let mut t = s.clone();
        t.body.push(' ');
        assert!(!verify(&t, "k1"));
        for bad in ["", "zz", "abc", &s.mac[..62]] {
            let u = Signed {
                mac: bad.into(),
                body: s.body.clone(),
            };
            assert!(!verify(&u, "k1"), "{bad}");
        }
    }

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2.
        let s = sign("what do ya want for nothing?".into(), "Jefe");
        assert_eq!(
            s.mac,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
