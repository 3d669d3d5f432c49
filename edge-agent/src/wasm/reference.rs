//! Module references: `file:///path.wasm` (or a bare absolute path),
//! `http(s)://…` with an optional `#sha256=<hex>` pin, and OCI registry
//! references (`registry.example:5000/ns/app:1.0`, `…@sha256:<hex>`, Docker
//! Hub short names normalised as Docker does: `app` is
//! `docker.io/library/app:latest`), parsed by a pure function; and the pin
//! check every fetched module goes through.

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
    /// A Wasm artifact in an OCI registry (`wasm/registry.rs` pulls it).
    Registry {
        /// The registry host (`docker.io` for Docker Hub), with its port if any.
        registry: String,
        /// The repository path in it (`library/app` for a Docker Hub short name).
        repository: String,
        reference: OciReference,
    },
}

/// What a registry reference names in its repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OciReference {
    /// A tag (`latest` when the reference has none): resolved to a digest
    /// per `imagePullPolicy`.
    Tag(String),
    /// A manifest digest, `sha256:<64 lowercase hex>`: immutable.
    Digest(String),
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OciReference::Tag(t) => write!(f, ":{t}"),
            OciReference::Digest(d) => write!(f, "@{d}"),
        }
    }
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
            Source::Registry {
                registry,
                repository,
                reference,
            } => write!(f, "{registry}/{repository}{reference}")?,
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
        "{0:?} is not a Wasm module reference this node can fetch: use file:///path.wasm, https://host/m.wasm#sha256=<hex> or an OCI registry reference (registry.example/ns/app:1.0 or …@sha256:<hex>)"
    )]
    Unsupported(String),
    #[error("{reference:?} is not a valid OCI registry reference: {reason}")]
    BadRegistryRef { reference: String, reason: String },
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
    } else if base.contains("://") {
        return Err(RefError::Unsupported(image.into()));
    } else if base.ends_with(".wasm") && !names_a_registry(base) {
        return Err(RefError::RelativePath {
            reference: image.into(),
        });
    } else {
        if fragment.is_some() {
            return Err(RefError::BadRegistryRef {
                reference: image.into(),
                reason: "a registry reference is pinned by its manifest digest: write registry/repository@sha256:<hex>, not #sha256="
                    .into(),
            });
        }
        parse_registry(base)?
    };
    Ok(ModuleRef { source, sha256 })
}

/// Whether the first path component of `name` is a registry host (Docker's
/// rule: it has a `.` or a `:`, or is `localhost`), so `ghcr.io/o/app.wasm`
/// is a repository while `dir/app.wasm` and `./app.wasm` are relative paths.
fn names_a_registry(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => {
            !matches!(first, "." | "..") && (first.contains(['.', ':']) || first == "localhost")
        }
        None => false,
    }
}

/// Most characters in a tag (the distribution spec's limit).
const MAX_TAG: usize = 128;

/// A registry reference: `[host[:port]/]path[:tag][@sha256:<hex>]`,
/// normalised as Docker does (no host: `docker.io`; a one-component path on
/// Docker Hub: `library/…`; no tag and no digest: `latest`; a digest wins
/// over a tag).
fn parse_registry(image: &str) -> Result<Source, RefError> {
    let bad = |reason: String| RefError::BadRegistryRef {
        reference: image.into(),
        reason,
    };
    if image.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains white space".into()));
    }
    let (name_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(parse_digest(d).map_err(bad)?)),
        None => (image, None),
    };
    let last = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag.get(last..).and_then(|c| c.rfind(':')) {
        Some(colon) => (
            name_tag.get(..last + colon).unwrap_or_default(),
            name_tag.get(last + colon + 1..),
        ),
        None => (name_tag, None),
    };
    if let Some(t) = tag {
        let ok = t.len() <= MAX_TAG
            && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(bad(format!(
                "bad tag {t:?}: use letters, digits, '_', '.' and '-' (at most {MAX_TAG}, not starting with '.' or '-')"
            )));
        }
    }
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err(bad(
            "the repository name is missing or has an empty path component".into(),
        ));
    }
    if names_a_registry(name) {
        let host = name.split('/').next().unwrap_or_default();
        if !valid_host(host) {
            return Err(bad(format!(
                "bad registry host {host:?}: write host or host:port (e.g. registry.example:5000)"
            )));
        }
    }
    let (registry, repository) = crate::registry_auth::registry_and_path(name);
    if let Some(c) = repository.split('/').find(|c| !valid_path_component(c)) {
        return Err(bad(format!(
            "bad repository path component {c:?}: use lowercase letters and digits, separated by '.', '_', '__' or '-'"
        )));
    }
    let reference = match (digest, tag) {
        (Some(d), _) => OciReference::Digest(d),
        (None, Some(t)) => OciReference::Tag(t.into()),
        (None, None) => OciReference::Tag("latest".into()),
    };
    Ok(Source::Registry {
        registry,
        repository,
        reference,
    })
}

/// `sha256:<64 hex>` → the same, hex in lowercase.
fn parse_digest(d: &str) -> Result<String, String> {
    match d.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
        }
        Some(("sha256", _)) => Err(format!("bad digest {d:?}: want sha256:<64 hex characters>")),
        Some((algo, _)) => Err(format!(
            "digest algorithm {algo:?} is not supported: use a sha256 digest"
        )),
        None => Err(format!("bad digest {d:?}: want sha256:<64 hex characters>")),
    }
}

/// `host`, `host:port`, `[v6]:port`: DNS labels of letters, digits and
/// '-' (or an IPv6 address in brackets), a port of digits.
fn valid_host(h: &str) -> bool {
    let (host_ok, port) = if let Some(v6) = h.strip_prefix('[') {
        let Some((addr, rest)) = v6.split_once(']') else {
            return false;
        };
        let port = match rest {
            "" => None,
            r => match r.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (addr.parse::<std::net::Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        (host.split('.').all(label_ok), port)
    };
    host_ok
        && port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0))
}

/// One repository path component: `[a-z0-9]+` runs joined by `.`, `_`,
/// `__` or any number of `-` (the distribution spec's grammar).
fn valid_path_component(c: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if !b.first().is_some_and(alnum) || !b.last().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while let Some(x) = b.get(i) {
        if alnum(x) {
            i += 1;
            continue;
        }
        // A separator (`.`, `_`, `__` or `-+`), then [a-z0-9].
        let x = *x;
        let run = b.iter().skip(i).take_while(|&&y| y == x).count();
        let ok = match x {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        } && b.get(i + run).is_some_and(alnum);
        if !ok {
            return false;
        }
        i += run;
    }
    true
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
        assert!(matches!(
            parse("oci://ghcr.io/x/app:1"),
            Err(RefError::Unsupported(_))
        ));
        assert!(matches!(parse("dir/m.wasm"), Err(RefError::RelativePath { .. })));
        assert!(matches!(parse("./m.wasm"), Err(RefError::RelativePath { .. })));
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

    fn registry(image: &str) -> (String, String, OciReference) {
        match parse(image).unwrap_or_else(|e| panic!("{image}: {e}")) {
            ModuleRef {
                source:
                    Source::Registry {
                        registry,
                        repository,
                        reference,
                    },
                sha256: None,
            } => (registry, repository, reference),
            other => panic!("{image}: not a registry reference: {other:?}"),
        }
    }

    #[test]
    fn parses_registry_references_as_docker_does() {
        let tag = |t: &str| OciReference::Tag(t.into());
        let r = |h: &str, p: &str, re: OciReference| (h.to_string(), p.to_string(), re);
        assert_eq!(
            registry("registry.example:5000/ns/app:1.0"),
            r("registry.example:5000", "ns/app", tag("1.0"))
        );
        assert_eq!(registry("hello"), r("docker.io", "library/hello", tag("latest")));
        assert_eq!(registry("user/app:v2"), r("docker.io", "user/app", tag("v2")));
        assert_eq!(
            registry("index.docker.io/library/x:1"),
            r("docker.io", "library/x", tag("1"))
        );
        assert_eq!(
            registry("localhost/wasm/hello"),
            r("localhost", "wasm/hello", tag("latest"))
        );
        assert_eq!(
            registry("127.0.0.1:5000/wasm/hello:1"),
            r("127.0.0.1:5000", "wasm/hello", tag("1"))
        );
        assert_eq!(
            registry("[::1]:5000/a/b-c__d.e:x"),
            r("[::1]:5000", "a/b-c__d.e", tag("x"))
        );
        assert_eq!(
            registry("ghcr.io/org/app.wasm"),
            r("ghcr.io", "org/app.wasm", tag("latest"))
        );
        assert_eq!(
            registry("GHCR.io/org/app:1"),
            r("ghcr.io", "org/app", tag("1")),
            "hosts are case-insensitive"
        );
        // A digest wins over a tag; its hex is lowercased.
        let digest = format!("sha256:{PIN}");
        for image in [
            format!("ghcr.io/o/a@sha256:{}", PIN.to_uppercase()),
            format!("ghcr.io/o/a:1@{digest}"),
        ] {
            assert_eq!(
                registry(&image),
                r("ghcr.io", "o/a", OciReference::Digest(digest.clone()))
            );
        }
        assert_eq!(
            parse("127.0.0.1:5000/wasm/hello:1").unwrap().to_string(),
            "127.0.0.1:5000/wasm/hello:1"
        );
        assert_eq!(
            parse("hello").unwrap().to_string(),
            "docker.io/library/hello:latest"
        );
        assert_eq!(
            parse(&format!("h.io/a@{digest}")).unwrap().to_string(),
            format!("h.io/a@{digest}")
        );
        // The same registry and path as the credentials lookup finds.
        for image in [
            "nginx",
            "bitnami/redis:7",
            "localhost:5000/a/b:1",
            "index.docker.io/x/y",
        ] {
            let (host, path, _) = registry(image);
            assert_eq!((host, path), crate::registry_auth::registry_and_path(image));
        }
    }

    #[test]
    fn rejects_bad_registry_references() {
        for (image, want) in [
            ("ghcr.io/Org/app:1", "repository path component \"Org\""),
            ("ghcr.io/o/app:-1", "bad tag"),
            ("ghcr.io/o/app:", "bad tag"),
            ("ghcr.io/o//app", "empty path component"),
            ("ghcr.io/o/app/", "empty path component"),
            ("ghcr.io/o/a..b", "repository path component"),
            ("ghcr.io/o/a._b", "repository path component"),
            ("ghcr.io/o/a@sha256:abc", "64 hex"),
            ("ghcr.io/o/a@sha512:abc", "\"sha512\" is not supported"),
            ("ghcr.io/o/a@abc", "want sha256"),
            ("bad_host.io:5000/a", "bad registry host"),
            ("host.io:99999/a", "bad registry host"),
            ("my app", "white space"),
        ] {
            match parse(image) {
                Err(e @ RefError::BadRegistryRef { .. }) => {
                    assert!(e.to_string().contains(want), "{image}: {e}");
                }
                other => panic!("{image}: {other:?}"),
            }
        }
        let e = parse(&format!("ghcr.io/o/a:1#sha256={PIN}")).unwrap_err();
        assert!(e.to_string().contains("@sha256:<hex>"), "{e}");
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
