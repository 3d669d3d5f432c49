//! What the Service end-to-end tests do from outside: plain HTTP/1.0 GETs
//! through a Service address, how requests spread over the pods behind it,
//! the ready pods an Endpoints object names, and what each agent's proxy
//! logged about a Service port.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// `GET /` through `addr` with `Host: host`: the body of a 200 answer, trimmed.
pub fn get(addr: SocketAddr, host: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    read_answer(&mut s)
}

/// The body of a 200 answer read to its end, trimmed.
pub fn read_answer(s: &mut TcpStream) -> Result<String, String> {
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| format!("read: {e}"))?;
    let (head, body) = buf
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {buf:?}"))?;
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(format!("not a 200: {head}"));
    }
    Ok(body.trim().to_string())
}

/// `n` requests through `addr`, counted by what `key` makes of each body;
/// any failure is an error naming the request.
pub fn spread(
    addr: SocketAddr,
    host: &str,
    n: usize,
    key: impl Fn(&str) -> Result<String, String>,
) -> Result<BTreeMap<String, usize>, String> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let k = get(addr, host)
            .and_then(|body| key(&body))
            .map_err(|e| format!("request {i} to {addr}: {e}"))?;
        *seen.entry(k).or_insert(0) += 1;
    }
    Ok(seen)
}

/// The pod names behind an Endpoints object's ready addresses.
pub fn ready_endpoints(ep: &Value) -> BTreeSet<String> {
    ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["targetRef"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Removes terminal colour codes (in case a log is coloured).
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The endpoint count of the last "service endpoints updated" line a proxy
/// logged for `service_port` (`namespace/name:port`).
pub fn proxy_endpoints(log: &str, service_port: &str) -> Option<usize> {
    plain(log)
        .lines()
        .rfind(|l| l.contains("service endpoints updated") && l.contains(service_port))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("endpoints="))?
        .parse()
        .ok()
}
