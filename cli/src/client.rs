//! The HTTP client for the API server: bearer auth, timeouts, and the mapping
//! of every failure to a message a user can act on (unreachable server, bad
//! token, Kubernetes `Status` errors), plus the newline-delimited watch stream.

use std::error::Error as _;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use shturman_api::status::Status;

use crate::config::Resolved;

/// How long to wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an ordinary (non-watch) request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The only PATCH flavour the API server accepts.
const MERGE_PATCH: &str = "application/merge-patch+json";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "cannot reach the Shturman API at {url}: {why}; is `shturman control` running? pass --server or set SHTURMAN_CONFIG"
    )]
    Unreachable { url: String, why: String },
    #[error(
        "the API server at {url} refused the request (401 Unauthorized): the token is {problem}; {looked}"
    )]
    Unauthorized {
        url: String,
        problem: &'static str,
        looked: String,
    },
    /// A Kubernetes `Status` failure; printed like kubectl.
    #[error("{}", server_line(.0))]
    Server(Status),
    #[error("unexpected answer from {url}: {why}")]
    Protocol { url: String, why: String },
}

impl ApiError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Server(s) if s.code == 404 || s.reason == "NotFound")
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, ApiError::Server(s) if s.code == 409)
    }

    pub fn is_gone(&self) -> bool {
        matches!(self, ApiError::Server(s) if s.code == 410 || s.reason == "Expired" || s.reason == "Gone")
    }
}

/// `Error from server (NotFound): pods "x" not found`.
pub fn server_line(s: &Status) -> String {
    if s.reason.is_empty() {
        format!("Error from server: {}", s.message)
    } else {
        format!("Error from server ({}): {}", s.reason, s.message)
    }
}

/// Turns a non-success response body into a `Status`, synthesizing one when
/// the body is not a Status (a proxy's error page, an unknown route).
pub fn status_from_body(code: u16, body: &[u8]) -> Status {
    if let Ok(s) = serde_json::from_slice::<Status>(body)
        && (!s.message.is_empty() || !s.reason.is_empty())
    {
        return Status {
            code: if s.code == 0 { code } else { s.code },
            ..s
        };
    }
    let reason = match code {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    let text = String::from_utf8_lossy(body).trim().to_string();
    let message = if text.is_empty() {
        match code {
            404 => "the server could not find the requested resource".to_string(),
            _ => format!("the server answered HTTP {code}"),
        }
    } else {
        text
    };
    Status::failure(code, reason, message)
}

/// Why a connection could not be made, in a few words.
pub fn describe_send_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return format!("timed out (connect timeout {}s)", CONNECT_TIMEOUT.as_secs());
    }
    let mut source = err.source();
    let mut innermost = err.to_string();
    let mut dns = false;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::TimedOut => return "connection timed out".into(),
                _ => {}
            }
        }
        let text = s.to_string();
        dns |= text.contains("dns error") || text.contains("failed to lookup address");
        innermost = text;
        source = s.source();
    }
    if dns {
        let host = err.url().and_then(|u| u.host_str()).unwrap_or("the host");
        format!("DNS lookup of {host} failed ({innermost})")
    } else {
        innermost
    }
}

/// One event of a watch stream.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub kind: String,
    pub object: Value,
}

/// Parses one line of a watch stream.
pub fn parse_watch_line(line: &[u8]) -> Result<WatchEvent, String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("bad watch event: {e}"))?;
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or("watch event without a type")?
        .to_string();
    let object = v.get("object").cloned().unwrap_or(Value::Null);
    Ok(WatchEvent { kind, object })
}

/// A client for one API server.
pub struct Client {
    http: reqwest::Client,
    pub config: Resolved,
}

impl Client {
    pub fn new(config: Resolved) -> anyhow::Result<Client> {
        let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        let loopback = reqwest::Url::parse(&config.server)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .is_some_and(|h| h == "localhost" || h.starts_with("127.") || h == "[::1]");
        if loopback {
            builder = builder.no_proxy();
        }
        let http = builder.build()?;
        Ok(Client { http, config })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.server)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: bool,
    ) -> Result<reqwest::Response, ApiError> {
        let url = self.url(path);
        let method_is_patch = method == Method::PATCH;
        let mut req = self
            .http
            .request(method, &url)
            .query(query)
            .header(reqwest::header::ACCEPT, "application/json");
        if timeout {
            req = req.timeout(REQUEST_TIMEOUT);
        }
        if let Some(token) = &self.config.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            if method_is_patch {
                // Set before `json`, which only adds a content type when none is set.
                req = req.header(reqwest::header::CONTENT_TYPE, MERGE_PATCH);
            }
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| ApiError::Unreachable {
            url: self.config.server.clone(),
            why: describe_send_error(&e),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status();
        if code == StatusCode::UNAUTHORIZED {
            return Err(ApiError::Unauthorized {
                url: self.config.server.clone(),
                problem: if self.config.token.is_some() {
                    "wrong or expired"
                } else {
                    "missing (no token configured)"
                },
                looked: self.config.looked_summary(),
            });
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        Err(ApiError::Server(status_from_body(code.as_u16(), &bytes)))
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let resp = self.send(method, path, query, body, true).await?;
        let bytes = resp.bytes().await.map_err(|e| ApiError::Protocol {
            url: self.url(path),
            why: e.to_string(),
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Protocol {
            url: self.url(path),
            why: format!("not JSON: {e}"),
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        self.json(Method::GET, path, query, None).await
    }

    /// GET that maps NotFound to `None`.
    pub async fn get_opt(&self, path: &str) -> Result<Option<Value>, ApiError> {
        match self.get(path, &[]).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.json(Method::POST, path, &[], Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.json(Method::PUT, path, &[], Some(body)).await
    }

    /// JSON merge patch (RFC 7386); a `metadata.resourceVersion` in it is a precondition.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.json(Method::PATCH, path, &[], Some(body)).await
    }

    pub async fn delete(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.json(Method::DELETE, path, &[], Some(body)).await
    }

    /// A GET whose body is read by the caller as it arrives (logs);
    /// `bounded` applies the ordinary request timeout.
    pub async fn get_stream(
        &self,
        path: &str,
        query: &[(&str, String)],
        bounded: bool,
    ) -> Result<reqwest::Response, ApiError> {
        self.send(Method::GET, path, query, None, bounded).await
    }

    /// Starts a watch; `query` should carry `watch=true` and a `resourceVersion`.
    pub async fn watch(&self, path: &str, query: &[(&str, String)]) -> Result<Watch, ApiError> {
        let resp = self.send(Method::GET, path, query, None, false).await?;
        Ok(Watch {
            resp,
            buf: Vec::new(),
            url: self.url(path),
        })
    }
}

/// An open watch stream, read one event at a time.
pub struct Watch {
    resp: reqwest::Response,
    buf: Vec<u8>,
    url: String,
}

impl Watch {
    /// The next event, or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ApiError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return parse_watch_line(&line)
                    .map(Some)
                    .map_err(|why| ApiError::Protocol {
                        url: self.url.clone(),
                        why,
                    });
            }
            let chunk = self.resp.chunk().await.map_err(|e| ApiError::Protocol {
                url: self.url.clone(),
                why: format!("watch stream broke: {}", describe_send_error(&e)),
            })?;
            match chunk {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None if self.buf.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                None => self.buf.push(b'\n'),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_print_like_kubectl() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"x\" not found","reason":"NotFound","code":404}"#;
        let s = status_from_body(404, body);
        assert_eq!(
            server_line(&s),
            r#"Error from server (NotFound): pods "x" not found"#
        );
        let err = ApiError::Server(s);
        assert!(err.is_not_found());
    }

    #[test]
    fn non_status_bodies_get_a_synthesized_status() {
        let s = status_from_body(404, b"");
        assert_eq!(s.reason, "NotFound");
        assert_eq!(s.message, "the server could not find the requested resource");
        let s = status_from_body(500, b"boom\n");
        assert_eq!(server_line(&s), "Error from server (InternalError): boom");
        assert!(ApiError::Server(status_from_body(409, b"{}")).is_conflict());
    }

    #[test]
    fn watch_lines_parse() {
        let ev = parse_watch_line(br#"{"type":"ADDED","object":{"metadata":{"name":"a"}}}"#).expect("parses");
        assert_eq!(ev.kind, "ADDED");
        assert_eq!(ev.object["metadata"]["name"], "a");
        assert!(parse_watch_line(b"{\"object\":{}}").is_err());
        assert!(parse_watch_line(b"not json").is_err());
    }

    #[tokio::test]
    async fn a_closed_port_reads_connection_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let client = Client::new(Resolved {
            server: format!("http://{addr}"),
            namespace: "default".into(),
            ..Resolved::default()
        })
        .expect("client");
        let err = client.get("/version", &[]).await.expect_err("nothing listens");
        let text = err.to_string();
        assert!(text.contains("connection refused"), "{text}");
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("shturman control"), "{text}");
    }
}
