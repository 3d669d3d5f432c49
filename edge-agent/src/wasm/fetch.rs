//! Module downloads over `http(s)://`: one blocking GET (run from
//! `spawn_blocking`), the body streamed into a temp file in the module cache
//! while it is hashed, the `#sha256=` pin checked, and the file renamed to
//! `<digest>.wasm`; plus the trust roots for https (the OS bundle, or
//! `$SSL_CERT_FILE`).
//!
//! The client is `ureq` 3: blocking (the agent downloads a module now and
//! then, from a blocking task, so an async client would buy nothing), no
//! connection machinery beyond HTTP/1.1, and rustls with the `ring` provider
//! passed in here (no OpenSSL, no aws-lc: the agent is cross-built for
//! armv7/aarch64 with a plain C toolchain), without bundled roots, gzip,
//! cookies or json.
//!
//! Limits: 10 s to connect (DNS and TLS included), 5 min for the whole
//! download, at most 5 redirects, and the body stops at the byte limit
//! whatever `Content-Length` says. An unpinned https module is not followed
//! to plain http. Nothing is kept unless it is complete and matches its pin.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use ureq::ResponseExt;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

use super::reference::{RefError, check_pin};
use crate::fsutil::sync_dir;
use crate::sign::encode_hex;

/// Time to open a connection, name lookup and TLS handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole download, redirects and body included.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(300);
/// Redirects followed before giving up.
const MAX_REDIRECTS: u32 = 5;
/// The environment variable naming a PEM bundle of trusted CAs (as for curl and openssl).
pub const CERT_FILE_ENV: &str = "SSL_CERT_FILE";
/// Where distributions keep their PEM bundle of trusted CAs, most common first.
const CA_BUNDLES: &[&str] = &[
    // Debian, Ubuntu, Raspberry Pi OS, Alpine, Arch (package ca-certificates).
    "/etc/ssl/certs/ca-certificates.crt",
    // Fedora, RHEL, CentOS.
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    // openSUSE.
    "/etc/ssl/ca-bundle.pem",
    // Alpine, OpenBSD, macOS.
    "/etc/ssl/cert.pem",
];
/// Prefix of the temp files downloads stream into (`.download-<pid>-<n>.tmp`).
pub const PARTIAL_PREFIX: &str = ".download-";

/// Why a download failed. Each message names the URL and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fetching {url}: the server answered HTTP {status}: {hint}")]
    Status {
        url: String,
        status: String,
        hint: &'static str,
    },
    #[error("fetching {url}: {reason}{hint}")]
    Transport {
        url: String,
        reason: String,
        hint: String,
    },
    #[error(
        "fetching {url}: the module is larger than the {limit}-byte limit (the download was stopped); publish a smaller module"
    )]
    TooLarge { url: String, limit: u64 },
    #[error(
        "fetching {url}: refused to follow a redirect from https to plain http ({to}) for a module without a #sha256= pin; serve it over https or pin it"
    )]
    Downgrade { url: String, to: String },
    #[error("fetching {url}: {source}")]
    Pin {
        url: String,
        #[source]
        source: RefError,
    },
    #[error(
        "fetching {url}: no trusted CA certificates: {detail}; install the ca-certificates package or set SSL_CERT_FILE to a PEM bundle of the CAs to trust"
    )]
    NoRoots { url: String, detail: String },
    #[error("fetching {url}: keeping the module in {dir}: {source}")]
    Cache {
        url: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Downloads `url` into `dir` (the module cache), checks it against `pin`,
/// and keeps it as `<dir>/<digest>.wasm`. Returns the digest and the bytes.
/// Blocking: call it from `spawn_blocking`.
pub fn download(
    dir: &Path,
    url: &str,
    pin: Option<&str>,
    limit: u64,
) -> Result<(String, Vec<u8>), FetchError> {
    let (agent, roots) = agent(url)?;
    let transport = |e: ureq::Error| transport_error(url, &e, &roots);
    let response = agent.get(url).call().map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(status_error(url, status));
    }
    let last = response.get_uri().to_string();
    if pin.is_none() && url.starts_with("https://") && last.starts_with("http://") {
        return Err(FetchError::Downgrade {
            url: url.into(),
            to: last,
        });
    }
    store_response(dir, url, response, pin, limit)
}

/// Streams a successful response's body into `dir` (the module cache),
/// hashing it on the way and stopping at `limit` bytes; checks the digest
/// against `pin` and keeps it as `<dir>/<digest>.wasm`. Nothing is kept on
/// any error. Shared by plain downloads and registry blob pulls.
pub(super) fn store_response(
    dir: &Path,
    url: &str,
    response: ureq::http::Response<ureq::Body>,
    pin: Option<&str>,
    limit: u64,
) -> Result<(String, Vec<u8>), FetchError> {
    let too_large = || FetchError::TooLarge {
        url: url.into(),
        limit,
    };
    if response.body().content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }

    let cache_err = |source: std::io::Error| FetchError::Cache {
        url: url.into(),
        dir: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(cache_err)?;
    let mut partial = Partial::create(dir).map_err(cache_err)?;
    let mut reader = response.into_body().into_reader();
    let mut hasher = Sha256::new();
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FetchError::Transport {
                    url: url.into(),
                    reason: format!("reading the body: {e}"),
                    hint: "; the pull is retried with back-off".into(),
                });
            }
        };
        if bytes.len() as u64 + n as u64 > limit {
            return Err(too_large());
        }
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        bytes.extend_from_slice(chunk);
        partial.file.write_all(chunk).map_err(cache_err)?;
    }
    // A mismatch drops `partial`: its file is removed, nothing is kept.
    let digest = check_pin(pin, encode_hex(&hasher.finalize())).map_err(|source| FetchError::Pin {
        url: url.into(),
        source,
    })?;
    partial
        .keep(&dir.join(format!("{digest}.wasm")))
        .map_err(cache_err)?;
    Ok((digest, bytes))
}

/// Removes temp files a killed agent left in `dir` (best effort; call it
/// when no download runs, i.e. at start).
pub fn remove_partials(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A temp file in the cache that is removed unless it is kept.
struct Partial {
    path: PathBuf,
    file: File,
    kept: bool,
}

impl Partial {
    fn create(dir: &Path) -> std::io::Result<Partial> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{PARTIAL_PREFIX}{}-{n}.tmp", std::process::id()));
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o644);
        }
        let file = opts.open(&path)?;
        Ok(Partial {
            path,
            file,
            kept: false,
        })
    }

    /// Flushes the file to disk and renames it to `target` atomically.
    fn keep(mut self, target: &Path) -> std::io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.path, target)?;
        self.kept = true;
        if let Some(dir) = target.parent() {
            sync_dir(dir);
        }
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A client for one download (or one registry pull): the limits above and
/// the trust roots (and where they came from, for error messages). An
/// `Authorization` header survives a redirect only to the same host (a
/// registry's blob redirect to object storage must not carry it).
pub(super) fn agent(url: &str) -> Result<(ureq::Agent, String), FetchError> {
    let (roots, source) = match load_roots() {
        Ok(found) => found,
        Err(detail) if url.starts_with("https://") => {
            return Err(FetchError::NoRoots {
                url: url.into(),
                detail,
            });
        }
        // Plain http needs no roots: a node without a CA bundle can still
        // pull a pinned module from an http server (a redirect to https
        // then fails its handshake, saying why).
        Err(detail) => (Vec::new(), format!("nowhere ({detail})")),
    };
    // TLS is always configured, even for an http URL: a redirect may lead to
    // https, and ureq has no provider or roots of its own here.
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::from(roots))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(MAX_REDIRECTS)
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(TOTAL_TIMEOUT))
        .user_agent(concat!("shturman-agent/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls);
    Ok((config.build().new_agent(), source))
}

/// The CAs to trust, and where they came from: `$SSL_CERT_FILE` when set,
/// else the first of the distributions' bundles that exists. The error says
/// what was tried.
fn load_roots() -> Result<(Vec<Certificate<'static>>, String), String> {
    if let Some(file) = std::env::var_os(CERT_FILE_ENV).filter(|f| !f.is_empty()) {
        let path = PathBuf::from(file);
        let from = format!("{CERT_FILE_ENV}={}", path.display());
        return match read_bundle(&path) {
            Ok(certs) => Ok((certs, from)),
            Err(e) => Err(format!("{from}: {e}")),
        };
    }
    match CA_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
        Some(path) => match read_bundle(path) {
            Ok(certs) => Ok((certs, path.display().to_string())),
            Err(e) => Err(format!("{}: {e}", path.display())),
        },
        None => Err(format!(
            "{CERT_FILE_ENV} is not set and none of {} exists",
            CA_BUNDLES.join(", ")
        )),
    }
}

/// The certificates of one PEM bundle; an error when it holds none.
fn read_bundle(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let pem = fs::read(path).map_err(|e| e.to_string())?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err("no PEM certificates in the file".into());
    }
    Ok(certs)
}

fn status_error(url: &str, status: ureq::http::StatusCode) -> FetchError {
    let hint = match status.as_u16() {
        404 | 410 => "no module at that URL; check the image URL and that the module is published there",
        401 | 403 => {
            "the server refused access; the agent sends no credentials, so use a URL that needs none"
        }
        429 => "the server is rate limiting; the pull is retried with back-off",
        s if s >= 500 => "the server failed; the pull is retried with back-off",
        s if (300..400).contains(&s) => "a redirect without a usable Location; use the module's final URL",
        _ => "check the image URL",
    };
    FetchError::Status {
        url: url.into(),
        status: match status.canonical_reason() {
            Some(reason) => format!("{} {reason}", status.as_u16()),
            None => status.as_u16().to_string(),
        },
        hint,
    }
}

/// A failed exchange, with a hint; `roots` says where the trusted CAs came from.
pub(super) fn transport_error(url: &str, e: &ureq::Error, roots: &str) -> FetchError {
    use ureq::Error as E;
    // rustls reports a failed handshake as an io::Error wrapping its error.
    let tls = match e {
        E::Tls(_) | E::Rustls(_) => true,
        E::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    };
    let hint = match e {
        _ if tls => format!(
            " (trusted CAs from {}); if the server's certificate is signed by a private CA, set {CERT_FILE_ENV} for the agent to a PEM bundle holding that CA",
            roots
        ),
        E::HostNotFound => "; check the host name and the node's DNS".into(),
        E::Timeout(_) => format!(
            "; the server did not answer in time (limits: {}s to connect, {}s in all)",
            CONNECT_TIMEOUT.as_secs(),
            TOTAL_TIMEOUT.as_secs()
        ),
        E::TooManyRedirects => format!("; more than {MAX_REDIRECTS} redirects: use the module's final URL"),
        E::BadUri(_) => "; fix the image URL".into(),
        E::Io(_) | E::ConnectionFailed => "; check that the server is up and reachable from the node".into(),
        _ => String::new(),
    };
    let reason = match e {
        // "io: invalid peer certificate: …" reads better as what it is.
        E::Io(io) if tls => format!("TLS: {io}"),
        _ => e.to_string(),
    };
    FetchError::Transport {
        url: url.into(),
        reason,
        hint,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use super::*;
    use crate::wasm::reference::digest;

    /// One canned HTTP/1.1 answer per connection, for `n` connections, on a
    /// loopback port. Returns the base URL and the thread (it ends after `n`).
    pub(crate) fn serve(answers: Vec<Vec<u8>>) -> (String, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let t = std::thread::spawn(move || {
            for answer in answers {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                // Read the request head, then answer and close.
                let mut reader = std::io::BufReader::new(s.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = s.write_all(&answer);
            }
        });
        (url, t)
    }

    /// `200 OK` with `body`; `Content-Length` only when `length`.
    pub(crate) fn ok(body: &[u8], length: bool) -> Vec<u8> {
        let mut a = b"HTTP/1.1 200 OK\r\nConnection: close\r\n".to_vec();
        if length {
            a.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        a.extend_from_slice(b"\r\n");
        a.extend_from_slice(body);
        a
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    const BODY: &[u8] = b"\0asm\x01\0\0\0 pretend module";

    #[test]
    fn a_pinned_module_is_kept_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let (url, t) = serve(vec![ok(BODY, true)]);
        let url = format!("{url}/m.wasm");
        let want = digest(BODY);
        let (got, bytes) = download(dir.path(), &url, Some(&want), 1 << 20).unwrap();
        t.join().unwrap();
        assert_eq!(got, want);
        assert_eq!(bytes, BODY);
        assert_eq!(files(dir.path()), vec![format!("{want}.wasm")]);
        assert_eq!(fs::read(dir.path().join(format!("{want}.wasm"))).unwrap(), BODY);
    }

    #[test]
    fn a_wrong_pin_keeps_nothing_and_names_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let (url, t) = serve(vec![ok(BODY, false)]);
        let url = format!("{url}/m.wasm");
        let wrong = digest(b"another module");
        let err = download(dir.path(), &url, Some(&wrong), 1 << 20).unwrap_err();
        t.join().unwrap();
        let text = err.to_string();
        assert!(matches!(err, FetchError::Pin { .. }), "{text}");
        assert!(text.contains(&format!("pinned sha256:{wrong}")), "{text}");
        assert!(
            text.contains(&format!("fetched sha256:{}", digest(BODY))),
            "{text}"
        );
        assert!(text.contains(&url), "{text}");
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_404_names_the_url_status_and_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let (url, t) = serve(vec![
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found".to_vec(),
        ]);
        let url = format!("{url}/missing.wasm");
        let err = download(dir.path(), &url, None, 1 << 20).unwrap_err();
        t.join().unwrap();
        let text = err.to_string();
        assert!(
            text.contains(&url) && text.contains("HTTP 404 Not Found"),
            "{text}"
        );
        assert!(text.contains("check the image URL"), "{text}");
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn an_oversized_body_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 8 << 10];
        // Announced (refused before reading) and close-delimited (stopped while streaming).
        let (url, t) = serve(vec![ok(&big, true), ok(&big, false)]);
        for _ in 0..2 {
            let err = download(dir.path(), &format!("{url}/big.wasm"), None, 1 << 10).unwrap_err();
            assert!(matches!(err, FetchError::TooLarge { limit: 1024, .. }), "{err}");
            assert!(err.to_string().contains("1024-byte limit"), "{err}");
        }
        t.join().unwrap();
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn an_unpinned_module_is_kept_by_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let (url, t) = serve(vec![ok(BODY, false), ok(BODY, true)]);
        for _ in 0..2 {
            let (got, bytes) = download(dir.path(), &format!("{url}/m.wasm"), None, 1 << 20).unwrap();
            assert_eq!((got.as_str(), bytes.as_slice()), (digest(BODY).as_str(), BODY));
        }
        t.join().unwrap();
        assert_eq!(files(dir.path()), vec![format!("{}.wasm", digest(BODY))]);
    }

    #[test]
    fn redirects_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (url, t) = serve(vec![
            b"HTTP/1.1 302 Found\r\nLocation: /real.wasm\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec(),
            ok(BODY, true),
        ]);
        let (got, _) = download(dir.path(), &format!("{url}/m.wasm"), None, 1 << 20).unwrap();
        t.join().unwrap();
        assert_eq!(got, digest(BODY));
    }

    #[test]
    fn a_redirect_from_http_to_https_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        // The "https" side is a plain http server: the handshake fails.
        let (plain, t2) = serve(vec![ok(BODY, true)]);
        let target = plain.replacen("http://", "https://", 1);
        let (url, t1) = serve(vec![
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {target}/m.wasm\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
        ]);
        let err = download(dir.path(), &format!("{url}/m.wasm"), None, 1 << 20).unwrap_err();
        t1.join().unwrap();
        t2.join().unwrap();
        assert!(matches!(err, FetchError::Transport { .. }), "{err}");
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_refused_connection_says_to_check_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/m.wasm", listener.local_addr().unwrap());
        drop(listener);
        let err = download(dir.path(), &url, None, 1 << 20).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&url) && text.contains("check that the server is up"),
            "{text}"
        );
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "not a certificate\n").unwrap();
        let err = read_bundle(&empty).err().unwrap();
        assert!(err.contains("no PEM certificates"), "{err}");
        assert!(read_bundle(&dir.path().join("missing.pem")).is_err());
    }

    #[test]
    fn leftover_partials_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{PARTIAL_PREFIX}1-0.tmp")), b"half").unwrap();
        fs::write(dir.path().join("abc.wasm"), b"kept").unwrap();
        remove_partials(dir.path());
        assert_eq!(files(dir.path()), vec!["abc.wasm".to_string()]);
    }
}
