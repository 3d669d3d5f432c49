//! One probe check, bounded by its timeout, as kubelet runs it:
//!
//! - `tcpSocket`: a TCP connect (tokio), closed at once;
//! - `httpGet`: a minimal HTTP/1.1 `GET` written by hand over a tokio
//!   `TcpStream` (`Host`, `User-Agent: shturman-probe/<version>`,
//!   `Accept: */*`, `Connection: close`, then the probe's `httpHeaders`, which
//!   may replace the first three). Only the status line and headers are read;
//!   any body is ignored. 200–399 passes. Redirects (301, 302, 303, 307, 308)
//!   are followed up to 10 times while they stay on the same host name; one
//!   to another host is not followed and passes with a warning, as kubelet
//!   does. `HTTPS` does not verify the server's certificate (kubelet does not
//!   either); it uses rustls, so it needs the agent's `wasm` feature (which
//!   brings rustls) and is reported as unsupported without it;
//! - `exec`: through the [`Exec`] trait the runtime implements (the OCI
//!   runtime's ExecSync; the Wasm runtime cannot exec and says so);
//! - `grpc`: not supported yet, an [`Outcome::Unknown`] (never counted).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Handler, HttpGet, Outcome, Scheme};

/// The `User-Agent` of HTTP probes.
pub const USER_AGENT: &str = concat!("shturman-probe/", env!("CARGO_PKG_VERSION"));
/// Redirects followed at most (as Go's HTTP client, which kubelet uses).
pub const MAX_REDIRECTS: usize = 10;
/// The most bytes of status line and headers read from a response.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Runs a command in a container, for `exec` probes. The runtime implements
/// it (containerd's ExecSync for OCI containers).
#[async_trait::async_trait]
pub trait Exec: Send + Sync {
    /// Runs `argv` in `container`, within `timeout`: its exit code, or why
    /// it could not run.
    async fn exec(&self, container: &str, argv: &[String], timeout: Duration) -> Result<i32, String>;
}

/// An [`Exec`] for runtimes that cannot run commands in their containers:
/// every `exec` probe fails with this message.
#[derive(Clone, Copy, Debug)]
pub struct Unsupported(pub &'static str);

#[async_trait::async_trait]
impl Exec for Unsupported {
    async fn exec(&self, _: &str, _: &[String], _: Duration) -> Result<i32, String> {
        Err(self.0.to_string())
    }
}

/// Where a container's checks go.
#[derive(Clone)]
pub struct Target {
    /// The host of `httpGet` and `tcpSocket` checks without their own
    /// `host`: the pod's IP (`127.0.0.1` for Wasm pods, which share the
    /// node's network).
    pub host: String,
    /// The container's name (for `exec`).
    pub container: String,
    /// Runs `exec` checks.
    pub exec: Arc<dyn Exec>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

/// Runs one check of `handler` against `target`, within `timeout`.
pub async fn check(handler: &Handler, timeout: Duration, target: &Target) -> Outcome {
    match handler {
        Handler::Exec { command } => exec(target.exec.as_ref(), &target.container, command, timeout).await,
        Handler::HttpGet(get) => http_get(get, &target.host, timeout).await,
        Handler::TcpSocket { host, port } => {
            tcp_socket(host.as_deref().unwrap_or(&target.host), *port, timeout).await
        }
        Handler::Grpc { port, .. } => Outcome::Unknown(format!(
            "gRPC probes are not supported yet (port {port}); use tcpSocket or httpGet"
        )),
        Handler::Invalid(message) => Outcome::Unknown(message.clone()),
    }
}

/// An `exec` check: exit 0 passes.
pub async fn exec(runner: &dyn Exec, container: &str, command: &[String], timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, runner.exec(container, command, timeout)).await {
        Ok(Ok(0)) => Outcome::Success,
        Ok(Ok(code)) => Outcome::Failure(format!("command {command:?} exited with {code}")),
        Ok(Err(message)) => Outcome::Failure(message),
        Err(_) => Outcome::Failure(format!("command {command:?} timed out after {timeout:?}")),
    }
}

/// `host` without IPv6 brackets.
fn bare(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `host:port`, with brackets around an IPv6 address.
fn join_host_port(host: &str, port: u16) -> String {
    let host = bare(host);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A `tcpSocket` check: the connect succeeds.
pub async fn tcp_socket(host: &str, port: u16, timeout: Duration) -> Outcome {
    let addr = join_host_port(host, port);
    match tokio::time::timeout(timeout, TcpStream::connect((bare(host), port))).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: {e}")),
        Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout after {timeout:?}")),
    }
}

/// An absolute http(s) URL, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl Url {
    fn default_port(scheme: Scheme) -> u16 {
        match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// The `Host` header: `host:port` (as Go's client sends it).
    fn authority(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// Parses an absolute `http://` or `https://` URL (user info and
    /// fragment dropped); `None` for anything else.
    pub fn parse(text: &str) -> Option<Url> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return None,
        };
        Url::with_scheme(scheme, rest)
    }

    /// `authority[/path][?query]` under `scheme`.
    fn with_scheme(scheme: Scheme, rest: &str) -> Option<Url> {
        let rest = rest.split('#').next().unwrap_or(rest);
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return None;
        }
        let port = match port {
            None | Some("") => Url::default_port(scheme),
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0)?,
        };
        let target = if target.starts_with('/') {
            target.to_string()
        } else {
            format!("/{target}")
        };
        Some(Url {
            scheme,
            host: host.to_string(),
            port,
            target,
        })
    }

    /// A `Location` header resolved against this URL.
    pub fn join(&self, location: &str) -> Option<Url> {
        let location = location.trim();
        let location = location.split('#').next().unwrap_or(location);
        if location.contains("://") {
            return Url::parse(location);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Url::with_scheme(self.scheme, rest);
        }
        let target = if location.starts_with('/') {
            location.to_string()
        } else {
            let path = self.target.split('?').next().unwrap_or("/");
            if location.starts_with('?') {
                format!("{path}{location}")
            } else if location.is_empty() {
                self.target.clone()
            } else {
                let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
                format!("{dir}{location}")
            }
        };
        Some(Url {
            target,
            ..self.clone()
        })
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.target
        )
    }
}

/// Escapes what may not appear raw in a request target (spaces, controls,
/// non-ASCII, `"<>\^`{|}`), so a path can never split the request.
fn escape_target(target: &str) -> String {
    let mut out = String::with_capacity(target.len());
    for b in target.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn valid_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// The request for `url`; `host` replaces the `Host` header.
fn request(url: &Url, headers: &[(String, String)], host: Option<&str>) -> String {
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut req = format!("GET {} HTTP/1.1\r\n", escape_target(&url.target));
    let host = host.map_or_else(|| url.authority(), str::to_string);
    req.push_str(&format!("Host: {host}\r\n"));
    if !has("user-agent") {
        req.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    req.push_str("Connection: close\r\n");
    for (name, value) in headers {
        if ["host", "connection"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            continue;
        }
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// The part of a response a probe looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub location: Option<String>,
}

/// Parses a response head (status line and headers, without the blank line).
pub fn parse_head(head: &str) -> Result<Head, String> {
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_ascii_whitespace();
    let version = parts.next().unwrap_or("");
    let status = parts
        .next()
        .filter(|c| c.len() == 3)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..=999).contains(c));
    let Some(status) = status.filter(|_| version.starts_with("HTTP/1.")) else {
        return Err(format!("malformed HTTP status line {:?}", truncate(status_line)));
    };
    let location = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("location")
            .then(|| value.trim().to_string())
    });
    Ok(Head { status, location })
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The end of the head in `buf` (after the blank line), if it is all there.
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, i + 4));
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// An `httpGet` check against its host (or `default_host`).
pub async fn http_get(get: &HttpGet, default_host: &str, timeout: Duration) -> Outcome {
    let host = get.host.as_deref().unwrap_or(default_host);
    let url = Url {
        scheme: get.scheme,
        host: bare(host).to_string(),
        port: get.port,
        target: get.path.clone(),
    };
    if let Some((name, _)) = get.headers.iter().find(|(n, v)| !valid_header(n, v)) {
        return Outcome::Unknown(format!("invalid HTTP header {name:?} in httpHeaders"));
    }
    match tokio::time::timeout(timeout, follow(url.clone(), &get.headers)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failure(format!(
            "Get \"{url}\": timeout after {timeout:?} awaiting response headers"
        )),
    }
}

/// Requests `url`, following same-host redirects.
async fn follow(mut url: Url, headers: &[(String, String)]) -> Outcome {
    let first_host = url.host.clone();
    // A `Host` from httpHeaders is kept through relative redirects only.
    let mut host_header = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone());
    let mut redirects = 0;
    loop {
        let head = match fetch_head(&url, headers, host_header.as_deref()).await {
            Ok(head) => head,
            Err(FetchError::Failed(e)) => return Outcome::Failure(format!("Get \"{url}\": {e}")),
            Err(FetchError::Unsupported(e)) => return Outcome::Unknown(e),
        };
        let redirect = matches!(head.status, 301 | 302 | 303 | 307 | 308);
        if let (true, Some(location)) = (redirect, &head.location) {
            let Some(next) = url.join(location) else {
                return Outcome::Failure(format!(
                    "Get \"{url}\": cannot follow redirect to {:?}",
                    truncate(location)
                ));
            };
            if !next.host.eq_ignore_ascii_case(&first_host) {
                return Outcome::Warning(format!(
                    "Probe terminated redirects: {} redirects to another host ({next})",
                    head.status
                ));
            }
            if redirects >= MAX_REDIRECTS {
                return Outcome::Failure(format!("Get \"{next}\": stopped after {MAX_REDIRECTS} redirects"));
            }
            redirects += 1;
            if location.contains("://") || location.trim_start().starts_with("//") {
                host_header = None;
            }
            url = next;
            continue;
        }
        return match head.status {
            200..=299 => Outcome::Success,
            300..=399 => Outcome::Warning(format!("Probe terminated redirects, status {}", head.status)),
            code => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
        };
    }
}

enum FetchError {
    /// The request failed (connect, I/O, malformed response).
    Failed(String),
    /// It cannot be made by this build (HTTPS without TLS support).
    #[cfg_attr(feature = "wasm", allow(dead_code))]
    Unsupported(String),
}

/// One request: connect, send, read the head.
async fn fetch_head(url: &Url, headers: &[(String, String)], host: Option<&str>) -> Result<Head, FetchError> {
    let failed = |e: String| FetchError::Failed(e);
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| failed(format!("dial tcp {}: {e}", url.authority())))?;
    let mut conn = match url.scheme {
        Scheme::Http => Conn::Plain(tcp),
        Scheme::Https => Conn::tls(tcp, &url.host)?,
    };
    let io = |e: std::io::Error| failed(e.to_string());
    conn.send(request(url, headers, host).as_bytes())
        .await
        .map_err(io)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some((end, after)) = head_end(&buf) {
            let text = String::from_utf8_lossy(&buf[..end]);
            let head = parse_head(&text).map_err(failed)?;
            // Interim 1xx responses come before the real one.
            if (100..200).contains(&head.status) && head.status != 101 {
                buf.drain(..after);
                continue;
            }
            return Ok(head);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(failed(format!(
                "response headers larger than {MAX_HEAD_BYTES} bytes"
            )));
        }
        if conn.recv(&mut buf).await.map_err(io)? == 0 {
            return Err(failed(if buf.is_empty() {
                "EOF: the server closed the connection without a response".into()
            } else {
                "malformed HTTP response: it ended within its headers".into()
            }));
        }
    }
}

/// A connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    #[cfg(feature = "wasm")]
    Tls(Box<tls::TlsConn>),
}

impl Conn {
    #[cfg(feature = "wasm")]
    fn tls(tcp: TcpStream, host: &str) -> Result<Conn, FetchError> {
        tls::TlsConn::new(tcp, host)
            .map(|c| Conn::Tls(Box::new(c)))
            .map_err(FetchError::Failed)
    }

    #[cfg(not(feature = "wasm"))]
    fn tls(_: TcpStream, _: &str) -> Result<Conn, FetchError> {
        Err(FetchError::Unsupported(
            "HTTPS probes need TLS support, which this agent was built without (feature `wasm`)".into(),
        ))
    }

    async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(tcp) => tcp.write_all(data).await,
            #[cfg(feature = "wasm")]
            Conn::Tls(c) => c.send(data).await,
        }
    }

    /// Appends what arrives to `out`; 0 at the end of the stream.
    async fn recv(&mut self, out: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Conn::Plain(tcp) => {
                let mut chunk = [0u8; 4096];
                let n = tcp.read(&mut chunk).await?;
                out.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            #[cfg(feature = "wasm")]
            Conn::Tls(c) => c.recv(out).await,
        }
    }
}

/// TLS for `HTTPS` probes: rustls (ring), driven by hand over a tokio
/// stream, accepting any server certificate as kubelet does (handshake
/// signatures are still checked against the certificate's key).
#[cfg(feature = "wasm")]
mod tls {
    use std::io::{self, Read, Write};
    use std::sync::{Arc, OnceLock};

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Accepts every certificate (kubelet's `InsecureSkipVerify`).
    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    fn config() -> Result<Arc<ClientConfig>, String> {
        static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS setup: {e}"))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                    .with_no_client_auth();
                Ok(Arc::new(config))
            })
            .clone()
    }

    pub(super) struct TlsConn {
        tcp: TcpStream,
        tls: ClientConnection,
        /// The peer sent `close_notify`.
        closed: bool,
    }

    impl TlsConn {
        pub(super) fn new(tcp: TcpStream, host: &str) -> Result<TlsConn, String> {
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| format!("TLS server name {host:?}: {e}"))?;
            let tls = ClientConnection::new(config()?, name).map_err(|e| format!("TLS: {e}"))?;
            Ok(TlsConn {
                tcp,
                tls,
                closed: false,
            })
        }

        async fn flush(&mut self) -> io::Result<()> {
            while self.tls.wants_write() {
                let mut out = Vec::new();
                self.tls.write_tls(&mut out)?;
                self.tcp.write_all(&out).await?;
            }
            Ok(())
        }

        /// Queues `data` (sent once the handshake is done) and writes what can go.
        pub(super) async fn send(&mut self, data: &[u8]) -> io::Result<()> {
            self.tls.writer().write_all(data)?;
            self.flush().await
        }

        /// Moves decrypted bytes to `out`; how many.
        fn drain(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
            let mut total = 0;
            let mut chunk = [0u8; 4096];
            loop {
                match self.tls.reader().read(&mut chunk) {
                    Ok(0) => {
                        self.closed = true;
                        return Ok(total);
                    }
                    Ok(n) => {
                        out.extend_from_slice(&chunk[..n]);
                        total += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        self.closed = true;
                        return Ok(total);
                    }
                    Err(e) => return Err(e),
                }
            }
        }

        pub(super) async fn recv(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
            let mut got = self.drain(out)?;
            while got == 0 && !self.closed {
                // Handshake messages (and the queued request) go out first.
                self.flush().await?;
                let mut chunk = [0u8; 8192];
                let n = self.tcp.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                let mut rest = &chunk[..n];
                while !rest.is_empty() {
                    if self.tls.read_tls(&mut rest)? == 0 {
                        break;
                    }
                    self.tls.process_new_packets().map_err(io::Error::other)?;
                    got += self.drain(out)?;
                }
            }
            Ok(got)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use tokio::net::TcpListener;

    use super::*;

    const T: Duration = Duration::from_secs(5);

    /// A loopback HTTP server: each connection's request head is recorded
    /// and answered with `respond(head, port)` (`None`: never answered).
    struct Server {
        port: u16,
        heads: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn serve(respond: impl Fn(&str, u16) -> Option<Vec<u8>> + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (h, respond) = (heads.clone(), Arc::new(respond));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let (h, respond) = (h.clone(), respond.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while head_end(&buf).is_none() {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    h.lock().unwrap().push(head.clone());
                    match respond(&head, port) {
                        Some(reply) => {
                            let _ = s.write_all(&reply).await;
                            let _ = s.shutdown().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        Server { port, heads, task }
    }

    fn status(code: u16) -> Vec<u8> {
        format!("HTTP/1.1 {code} Whatever\r\nContent-Length: 5\r\n\r\nhello").into_bytes()
    }

    fn get(port: u16, path: &str) -> HttpGet {
        HttpGet {
            scheme: Scheme::Http,
            host: None,
            port,
            path: path.into(),
            headers: Vec::new(),
        }
    }

    /// A port nothing listens on (bound, then closed).
    async fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn tcp_socket_connects_or_fails() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(tcp_socket("127.0.0.1", port, T).await, Outcome::Success);
        drop(l);
        let out = tcp_socket("127.0.0.1", port, T).await;
        let Outcome::Failure(m) = out else {
            panic!("{out:?}")
        };
        assert!(m.starts_with(&format!("dial tcp 127.0.0.1:{port}: ")), "{m}");
        // IPv6 literals, bracketed or not, print bracketed.
        assert_eq!(join_host_port("[::1]", 80), "[::1]:80");
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
    }

    #[tokio::test]
    async fn http_get_passes_on_2xx_and_3xx_and_fails_on_the_rest() {
        for (code, want) in [(200, true), (204, true), (399, true), (400, false), (500, false)] {
            let srv = serve(move |_, _| Some(status(code))).await;
            let out = http_get(&get(srv.port, "/healthz"), "127.0.0.1", T).await;
            assert_eq!(out.passed(), Some(want), "{code}: {out:?}");
            if code == 500 {
                assert_eq!(
                    out,
                    Outcome::Failure("HTTP probe failed with statuscode: 500".into())
                );
            }
        }
    }

    #[tokio::test]
    async fn http_get_sends_kubelets_request() {
        let srv = serve(|_, _| Some(status(200))).await;
        let mut g = get(srv.port, "/health z?x=1");
        g.headers = vec![
            ("X-Custom".into(), "yes".into()),
            ("Accept".into(), "application/json".into()),
        ];
        assert_eq!(http_get(&g, "127.0.0.1", T).await, Outcome::Success);
        let head = srv.heads.lock().unwrap()[0].clone();
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "GET /health%20z?x=1 HTTP/1.1");
        for want in [
            format!("Host: 127.0.0.1:{}", srv.port),
            format!("User-Agent: shturman-probe/{}", env!("CARGO_PKG_VERSION")),
            "Connection: close".into(),
            "X-Custom: yes".into(),
            "Accept: application/json".into(),
        ] {
            assert!(lines.contains(&want.as_str()), "{want:?} not in {head:?}");
        }
        assert!(!head.contains("Accept: */*"), "replaced: {head:?}");
        // A Host header sets the virtual host; the connection still goes to the IP.
        let mut g = get(srv.port, "/");
        g.headers = vec![
            ("Host".into(), "app.example".into()),
            ("User-Agent".into(), "mine".into()),
        ];
        assert_eq!(http_get(&g, "127.0.0.1", T).await, Outcome::Success);
        let head = srv.heads.lock().unwrap()[1].clone();
        assert!(head.contains("\r\nHost: app.example\r\n"), "{head:?}");
        assert!(
            head.contains("\r\nUser-Agent: mine\r\n") && !head.contains("shturman-probe"),
            "{head:?}"
        );
        // Headers that could split the request are refused, not sent.
        let mut g = get(srv.port, "/");
        g.headers = vec![("X".into(), "a\r\nInjected: 1".into())];
        assert!(matches!(http_get(&g, "127.0.0.1", T).await, Outcome::Unknown(_)));
        assert_eq!(srv.heads.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn http_get_follows_same_host_redirects_only() {
        let srv = serve(|head, port| {
            let path = head.split(' ').nth(1).unwrap_or("");
            Some(match path {
                "/old" => b"HTTP/1.1 301 Moved\r\nLocation: /new\r\n\r\n".to_vec(),
                "/new" => format!("HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{port}/final\r\n\r\n")
                    .into_bytes(),
                "/final" => status(200),
                "/broken" => b"HTTP/1.1 307 Temp\r\nLocation: /fails\r\n\r\n".to_vec(),
                "/away" => format!("HTTP/1.1 302 Found\r\nLocation: http://localhost:{port}/final\r\n\r\n")
                    .into_bytes(),
                "/loop" => b"HTTP/1.1 302 Found\r\nLocation: /loop\r\n\r\n".to_vec(),
                _ => status(503),
            })
        })
        .await;
        assert_eq!(
            http_get(&get(srv.port, "/old"), "127.0.0.1", T).await,
            Outcome::Success
        );
        assert_eq!(srv.heads.lock().unwrap().len(), 3);
        assert_eq!(
            http_get(&get(srv.port, "/broken"), "127.0.0.1", T).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        // To another host name: not followed, a warning (it passes).
        let out = http_get(&get(srv.port, "/away"), "127.0.0.1", T).await;
        assert!(
            matches!(&out, Outcome::Warning(m) if m.contains("localhost")),
            "{out:?}"
        );
        let out = http_get(&get(srv.port, "/loop"), "127.0.0.1", T).await;
        assert!(
            matches!(&out, Outcome::Failure(m) if m.ends_with("stopped after 10 redirects")),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn http_get_tolerates_bodies_and_interim_responses_and_rejects_garbage() {
        let srv = serve(|head, _| {
            Some(match head.split(' ').nth(1).unwrap_or("") {
                "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n".to_vec(),
                "/big" => {
                    let mut r = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
                    r.extend(std::iter::repeat_n(b'x', 1 << 20));
                    r
                }
                "/lf" => b"HTTP/1.1 200 OK\nX: y\n\n".to_vec(),
                "/garbage" => b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec(),
                "/cut" => b"HTTP/1.1 200 OK\r\nX-Partial".to_vec(),
                "/empty" => Vec::new(),
                _ => b"HTTP/1.1 200 OK\r\n"
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(b'h', 64 * 1024))
                    .collect(),
            })
        })
        .await;
        for path in ["/continue", "/big", "/lf"] {
            assert_eq!(
                http_get(&get(srv.port, path), "127.0.0.1", T).await,
                Outcome::Success,
                "{path}"
            );
        }
        for (path, want) in [
            ("/garbage", "malformed HTTP status line"),
            ("/cut", "ended within its headers"),
            ("/empty", "without a response"),
            ("/huge", "larger than"),
        ] {
            let out = http_get(&get(srv.port, path), "127.0.0.1", T).await;
            assert!(
                matches!(&out, Outcome::Failure(m) if m.contains(want)),
                "{path}: {out:?}"
            );
        }
    }

    #[tokio::test]
    async fn http_get_times_out_and_reports_refused_connections() {
        let srv = serve(|_, _| None).await;
        let began = Instant::now();
        let out = http_get(&get(srv.port, "/"), "127.0.0.1", Duration::from_millis(200)).await;
        assert!(
            matches!(&out, Outcome::Failure(m) if m.contains("timeout after 200ms")),
            "{out:?}"
        );
        assert!(began.elapsed() < Duration::from_secs(2), "{:?}", began.elapsed());
        let port = closed_port().await;
        let out = http_get(&get(port, "/"), "127.0.0.1", T).await;
        let want = format!("Get \"http://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}: ");
        assert!(
            matches!(&out, Outcome::Failure(m) if m.starts_with(&want)),
            "{out:?}"
        );
    }

    #[test]
    fn urls_and_redirect_locations() {
        let base = Url::parse("http://10.0.0.1:8080/a/b?q=1").unwrap();
        assert_eq!(base.to_string(), "http://10.0.0.1:8080/a/b?q=1");
        let join = |l: &str| base.join(l).map(|u| u.to_string());
        assert_eq!(join("/x").as_deref(), Some("http://10.0.0.1:8080/x"));
        assert_eq!(join("c#frag").as_deref(), Some("http://10.0.0.1:8080/a/c"));
        assert_eq!(join("?z=2").as_deref(), Some("http://10.0.0.1:8080/a/b?z=2"));
        assert_eq!(join("//other:9/p").as_deref(), Some("http://other:9/p"));
        assert_eq!(
            join("HTTPS://u:p@[::1]/s").as_deref(),
            Some("https://[::1]:443/s")
        );
        assert_eq!(join("https://h:x/"), None);
        assert_eq!(join("ftp://h/"), None);
        assert_eq!(Url::parse("http://h?x").map(|u| u.target), Some("/?x".into()));
        assert_eq!(Url::parse("http://:80/"), None);
    }

    #[test]
    fn response_heads() {
        assert_eq!(
            parse_head("HTTP/1.1 302 Found\r\nX: 1\r\nLOCATION:  /next \r\n"),
            Ok(Head {
                status: 302,
                location: Some("/next".into())
            })
        );
        assert_eq!(parse_head("HTTP/1.0 200").map(|h| h.status), Ok(200));
        assert!(parse_head("HTTP/2 200 OK").is_err());
        assert!(parse_head("HTTP/1.1 2000 OK").is_err());
        assert!(parse_head("").is_err());
        assert_eq!(escape_target("/a b\r\n\"é"), "/a%20b%0D%0A%22%C3%A9");
    }

    struct FakeExec(Result<i32, String>, Duration);

    #[async_trait::async_trait]
    impl Exec for FakeExec {
        async fn exec(&self, container: &str, argv: &[String], _: Duration) -> Result<i32, String> {
            assert_eq!(
                (container, argv),
                ("main", &["cat".to_string(), "/ok".to_string()][..])
            );
            tokio::time::sleep(self.1).await;
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn exec_checks_go_through_the_runtime() {
        let argv = ["cat".to_string(), "/ok".to_string()];
        let a = &argv;
        let run = |r: Result<i32, String>, d: Duration| async move {
            exec(&FakeExec(r, d), "main", a, Duration::from_millis(100)).await
        };
        assert_eq!(run(Ok(0), Duration::ZERO).await, Outcome::Success);
        assert_eq!(
            run(Ok(2), Duration::ZERO).await,
            Outcome::Failure("command [\"cat\", \"/ok\"] exited with 2".into())
        );
        assert_eq!(
            run(Err("no such container".into()), Duration::ZERO).await,
            Outcome::Failure("no such container".into())
        );
        let out = run(Ok(0), Duration::from_secs(30)).await;
        assert!(
            matches!(&out, Outcome::Failure(m) if m.contains("timed out after 100ms")),
            "{out:?}"
        );
        let target = Target {
            host: "127.0.0.1".into(),
            container: "main".into(),
            exec: Arc::new(Unsupported("exec probes are not supported here")),
        };
        let h = Handler::Exec {
            command: argv.to_vec(),
        };
        assert_eq!(
            check(&h, T, &target).await,
            Outcome::Failure("exec probes are not supported here".into())
        );
        let grpc = Handler::Grpc {
            port: 9000,
            service: None,
        };
        assert!(matches!(check(&grpc, T, &target).await, Outcome::Unknown(m) if m.contains("gRPC")));
        let bad = Handler::Invalid("the container has no port named \"x\"".into());
        assert!(matches!(check(&bad, T, &target).await, Outcome::Unknown(m) if m.contains("\"x\"")));
    }

    /// A throwaway self-signed certificate and key (P-256, CN=localhost,
    /// valid until 2126), for the HTTPS test server only.
    #[cfg(feature = "wasm")]
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBgDCCASWgAwIBAgIUBKOoa6Q7phd6NLuU1GxTb8w+Ns8wCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyODA5MjQxNloYDzIxMjYxMTA0
MDkyNDE2WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQ2QtSfyKxcKBb6Ro7VCGv418L177GihxsRD7BCjOM36QdnKzLhP3mF
Rg1XJg3ZO5U933qlAVz/JWRMeNDw+iumo1MwUTAdBgNVHQ4EFgQUrrXrDYLN7bH7
0U5NeMpUXn7M4LswHwYDVR0jBBgwFoAUrrXrDYLN7bH70U5NeMpUXn7M4LswDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAvHHIPGQKb5c99xuzY2X3
CmOoD/DRidgq+pDwXUr3HrUCIQCjl9ze0YkHXOWhfujFpy8wFn1O8jO04ZBL12bd
32HSMQ==
-----END CERTIFICATE-----
";
    #[cfg(feature = "wasm")]
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQge6Uy5aENuQm9Rqan
SbezyQBagWz4qYNfzpkkHImo4xOhRANCAAQ2QtSfyKxcKBb6Ro7VCGv418L177Gi
hxsRD7BCjOM36QdnKzLhP3mFRg1XJg3ZO5U933qlAVz/JWRMeNDw+ium
-----END PRIVATE KEY-----
";

    /// HTTPS against a self-signed certificate passes (no verification, as
    /// kubelet), and the status still decides.
    #[cfg(feature = "wasm")]
    #[tokio::test]
    async fn https_does_not_verify_the_certificate() {
        use std::io::{Read, Write};

        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap(),
                )
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for code in [200, 500] {
                let (tcp, _) = listener.accept().unwrap();
                tcp.set_read_timeout(Some(T)).unwrap();
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while head_end(&buf).is_none() {
                    let n = tls.read(&mut chunk).unwrap();
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                }
                heads.push(String::from_utf8_lossy(&buf).to_string());
                tls.write_all(&status(code)).unwrap();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
            heads
        });
        let mut g = get(port, "/secure");
        g.scheme = Scheme::Https;
        assert_eq!(http_get(&g, "127.0.0.1", T).await, Outcome::Success);
        assert_eq!(
            http_get(&g, "127.0.0.1", T).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        let heads = tokio::task::spawn_blocking(move || server.join().unwrap())
            .await
            .unwrap();
        assert!(heads[0].starts_with("GET /secure HTTP/1.1\r\n"), "{heads:?}");
    }
}
