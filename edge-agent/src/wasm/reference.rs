//! Module references: `file:///path.wasm` (or a bare absolute path) and
//! `http(s)://…` with an optional `#sha256=<hex>` pin, parsed by a pure
//! function, and the pin check every fetched module goes through.

use std::fmt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::sign::encode_hex;

/// Where a module comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file on the node.
    File(PathBuf),
    /// An `http://` or `https://` URL (without its `#sha256=` fragment).
    Http(String),
}

/// A parsed module reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleRef {
    pub source: Source,
    /// The pinned digest, 64 lowercase hex characters.
    pub sha256: Option<String>,
}

impl fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::File(p) => write!(f, "file://{}", p.display())?,
            Source::Http(u) => f.write_str(u)?,
        }
        match &self.sha256 {
            Some(d) => write!(f, "#sha256={d}"),
            None => Ok(()),
        }
    }
}

/// Why a reference is unusable or a module does not match its pin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error(
        "empty module reference: set the container's image to file:///path.wasm or https://…#sha256=<hex>"
    )]
    Empty,
    #[error(
        "{0:?} is not a Wasm module reference this node can fetch: use file:///path.wasm or https://host/m.wasm#sha256=<hex> (OCI registry references for Wasm are not supported yet)"
    )]
    Unsupported(String),
    #[error("{reference:?}: the file path must be absolute (file:///path.wasm)")]
    RelativePath { reference: String },
    #[error("{reference:?}: bad #sha256 pin {pin:?}: want 64 hex characters")]
    BadPin { reference: String, pin: String },
    #[error("{reference:?}: unknown fragment {fragment:?}: only #sha256=<hex> is understood")]
    BadFragment { reference: String, fragment: String },
    #[error("module digest mismatch: pinned sha256:{expected}, fetched sha256:{actual}")]
    DigestMismatch { expected: String, actual: String },
}

/// Parses a container's `image` as a module reference.
pub fn parse(image: &str) -> Result<ModuleRef, RefError> {
    let image = image.trim();
    if image.is_empty() {
        return Err(RefError::Empty);
    }
    let (base, fragment) = match image.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (image, None),
    };
    let sha256 = match fragment {
        None => None,
        Some(f) => {
            let Some(pin) = f.strip_prefix("sha256=") else {
                return Err(RefError::BadFragment {
                    reference: image.into(),
                    fragment: f.into(),
                });
            };
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(RefError::BadPin {
                    reference: image.into(),
                    pin: pin.into(),
                });
            }
            Some(pin.to_ascii_lowercase())
        }
    };
    let source = if let Some(path) = base.strip_prefix("file://") {
        // `file:///p` → `/p`; `file://localhost/p` → `/p`.
        let path = path.strip_prefix("localhost").unwrap_or(path);
        if !path.starts_with('/') {
            return Err(RefError::RelativePath {
                reference: image.into(),
            });
        }
        Source::File(PathBuf::from(path))
    } else if base.starts_with('/') {
        Source::File(PathBuf::from(base))
    } else if base.starts_with("http://") || base.starts_with("https://") {
        Source::Http(base.into())
    } else if base.ends_with(".wasm") && !base.contains("://") {
        return Err(RefError::RelativePath {
            reference: image.into(),
        });
    } else {
        return Err(RefError::Unsupported(image.into()));
    };
    Ok(ModuleRef { source, sha256 })
}

/// The lowercase hex sha256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    encode_hex(&Sha256::digest(bytes))
}

/// Checks `bytes` against the reference's pin; returns their digest.
pub fn verify(reference: &ModuleRef, bytes: &[u8]) -> Result<String, RefError> {
    check_pin(reference.sha256.as_deref(), digest(bytes))
}

/// Checks a digest computed elsewhere (a download hashes as it streams)
/// against `pin`; returns the digest.
pub fn check_pin(pin: Option<&str>, actual: String) -> Result<String, RefError> {
    match pin {
        Some(expected) if expected != actual => Err(RefError::DigestMismatch {
            expected: expected.to_string(),
            actual,
        }),
        _ => Ok(actual),
    }
}

/// What kind of Wasm binary `bytes` hold, from the 8-byte preamble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// A core module: a WASI preview 1 command (`_start`).
    CoreModule,
    /// A component: a WASI preview 2 `wasi:cli/command`.
    Component,
}

/// Detects a core module or a component; `None` when `bytes` are not Wasm.
pub fn flavor(bytes: &[u8]) -> Option<Flavor> {
    let (magic, version) = (bytes.get(0..4)?, bytes.get(4..8)?);
    if magic != b"\0asm" {
        return None;
    }
    match version {
        [1, 0, 0, 0] => Some(Flavor::CoreModule),
        // Component binaries: version 0x0d (pre-1.0 encoding), layer 1.
        [_, _, 1, 0] => Some(Flavor::Component),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_references() {
        assert_eq!(
            parse("file:///opt/m.wasm").unwrap(),
            ModuleRef {
                source: Source::File("/opt/m.wasm".into()),
                sha256: None
            }
        );
        assert_eq!(
            parse("/opt/m.wasm").unwrap().source,
            Source::File("/opt/m.wasm".into())
        );
        let r = parse(&format!("https://h/m.wasm#sha256={}", PIN.to_uppercase())).unwrap();
        assert_eq!(r.source, Source::Http("https://h/m.wasm".into()));
        assert_eq!(r.sha256.as_deref(), Some(PIN));
        assert_eq!(r.to_string(), format!("https://h/m.wasm#sha256={PIN}"));
    }

    #[test]
    fn rejects_bad_references() {
        assert_eq!(parse(" "), Err(RefError::Empty));
        assert!(matches!(parse("ghcr.io/x/app:1"), Err(RefError::Unsupported(_))));
        assert!(matches!(parse("m.wasm"), Err(RefError::RelativePath { .. })));
        assert!(matches!(
            parse("file://m.wasm"),
            Err(RefError::RelativePath { .. })
        ));
        assert!(matches!(
            parse("https://h/m.wasm#sha256=zz"),
            Err(RefError::BadPin { .. })
        ));
        assert!(matches!(
            parse("https://h/m.wasm#md5=00"),
            Err(RefError::BadFragment { .. })
        ));
    }

    #[test]
    fn verifies_pins_naming_both_digests() {
        let r = parse(&format!("file:///m.wasm#sha256={PIN}")).unwrap();
        assert_eq!(verify(&r, b"").unwrap(), PIN);
        let err = verify(&r, b"x").unwrap_err();
        let text = err.to_string();
        assert!(text.contains(PIN) && text.contains(&digest(b"x")), "{text}");
    }

    #[test]
    fn detects_flavor() {
        assert_eq!(flavor(b"\0asm\x01\0\0\0"), Some(Flavor::CoreModule));
        assert_eq!(flavor(b"\0asm\x0d\0\x01\0"), Some(Flavor::Component));
        assert_eq!(flavor(b"\0asm"), None);
        assert_eq!(flavor(b"#!/bin/sh\n"), None);
    }
}
