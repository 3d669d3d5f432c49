//! ConfigMap and Secret: key/value data for pods, with Secret's base64
//! handling (`stringData` folded into `data` on defaults, as Kubernetes does).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::kind::Kind;
use crate::meta::{Object, ObjectMeta, object_accessors};
use crate::validate::{self, FieldError, NameRule, Path};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMap {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Base64-encoded binary values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `Opaque` by default; other Kubernetes types are accepted as labels only.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Base64-encoded values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Plain-text values; write-only, merged into `data` by defaulting.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

impl Secret {
    /// The decoded value of `key`, if present and valid base64.
    pub fn decoded(&self, key: &str) -> Option<Vec<u8>> {
        self.data.get(key).and_then(|v| base64_decode(v).ok())
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = usize::try_from((n >> (18 - 6 * i)) & 63).unwrap_or(0);
                out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding required, whitespace not allowed).
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err("its length is not a multiple of 4".into());
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (ci, chunk) in bytes.chunks(4).enumerate() {
        let mut n: u32 = 0;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if ci + 1 == chunks && i >= 2 => {
                    pad += 1;
                    0
                }
                _ => return Err(format!("character {:?} is not base64", char::from(c))),
            };
            if pad > 0 && c != b'=' {
                return Err("padding '=' is only allowed at the end".into());
            }
            n = (n << 6) | u32::from(v);
        }
        let [_, a, b, c] = n.to_be_bytes();
        out.push(a);
        if pad < 2 {
            out.push(b);
        }
        if pad < 1 {
            out.push(c);
        }
    }
    Ok(out)
}

fn check_keys<'a>(path: &Path, keys: impl Iterator<Item = &'a String>, errs: &mut Vec<FieldError>) {
    for k in keys {
        if !validate::is_config_key(k) {
            errs.push(
                path.key(k)
                    .error(format!("{k:?} is not a valid key"))
                    .hint("use at most 253 letters, digits, '-', '_' and '.', e.g. \"app.properties\""),
            );
        }
    }
}

impl Object for ConfigMap {
    const KIND: Kind = Kind::ConfigMap;
    object_accessors!();

    fn apply_defaults(&mut self) {}

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate::check_object_meta(&self.metadata, NameRule::Subdomain, true, &mut errs);
        check_keys(&Path::new("data"), self.data.keys(), &mut errs);
        check_keys(&Path::new("binaryData"), self.binary_data.keys(), &mut errs);
        for (k, v) in &self.binary_data {
            let p = Path::new("binaryData").key(k);
            if self.data.contains_key(k) {
                errs.push(
                    p.error(format!("key {k:?} is in both data and binaryData"))
                        .hint("keep each key in only one of them"),
                );
            }
            if let Err(e) = base64_decode(v) {
                errs.push(
                    p.error(format!("value is not valid base64: {e}"))
                        .hint("base64-encode the bytes (e.g. `base64 -w0 file`), or put text under data"),
                );
            }
        }
        errs
    }
}

impl Object for Secret {
    const KIND: Kind = Kind::Secret;
    object_accessors!();

    /// `type` Opaque; `stringData` is base64-encoded into `data` and cleared.
    fn apply_defaults(&mut self) {
        self.type_.get_or_insert_with(|| "Opaque".to_string());
        for (k, v) in std::mem::take(&mut self.string_data) {
            self.data.insert(k, base64_encode(v.as_bytes()));
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate::check_object_meta(&self.metadata, NameRule::Subdomain, true, &mut errs);
        check_keys(&Path::new("data"), self.data.keys(), &mut errs);
        check_keys(&Path::new("stringData"), self.string_data.keys(), &mut errs);
        for (k, v) in &self.data {
            if let Err(e) = base64_decode(v) {
                errs.push(
                    Path::new("data")
                        .key(k)
                        .error(format!("value is not valid base64: {e}"))
                        .hint("base64-encode the value (e.g. `printf %s value | base64`), or put plain text under stringData"),
                );
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
            ("hello, world", "aGVsbG8sIHdvcmxk"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9v!", "=Zm9"] {
            assert!(base64_decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_defaults_fold_string_data() {
        let mut s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"},
            "stringData": {"password": "hunter2"}
        }))
        .unwrap();
        s.apply_defaults();
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert!(s.string_data.is_empty());
        assert_eq!(s.decoded("password").unwrap(), b"hunter2");
        assert!(s.validate().is_empty());
    }

    #[test]
    fn secret_data_must_be_base64() {
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"}, "data": {"k": "not base64!"}
        }))
        .unwrap();
        let errs = s.validate();
        assert_eq!(errs[0].path, "data[\"k\"]");
        assert!(errs[0].hint.as_deref().unwrap().contains("stringData"));
    }

    #[test]
    fn config_map_keys_and_binary_data() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"},
            "data": {"a b": "x", "dup": "1"},
            "binaryData": {"dup": "AAAA", "bin": "???"}
        }))
        .unwrap();
        let paths: Vec<_> = cm.validate().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            ["data[\"a b\"]", "binaryData[\"bin\"]", "binaryData[\"dup\"]"]
        );
    }
}
