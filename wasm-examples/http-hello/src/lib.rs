//! `http-hello`: a `wasi:http/incoming-handler` component (the
//! `wasi:http/proxy` world). The agent serves it on the pod's
//! `containerPort`, one fresh instance per request.
//!
//! - `GET /` (any other path): `hello from <POD_NAME> (request #<n>)`;
//! - `GET /healthz`: `ok` (for probes; not counted);
//! - `GET /alloc/<MiB>`: allocates and touches that much memory, then says
//!   so (shows the per-instance memory limit: over it, the instance is
//!   stopped and the agent answers 500);
//! - `GET /spin/<ms>`: spins the CPU that long, then says so (shows the CPU
//!   limit and the agent's per-request timeout);
//! - `GET /call/<ip:port>/<path>`: sends `GET http://<ip:port>/<path>` and
//!   answers with what came back (shows the outbound policy: refused unless
//!   the pod is annotated `shturman.io/allow-outbound: services` and the
//!   address is a Service ClusterIP).
//!
//! The counter: every request is a new instance, so nothing in memory
//! survives from one request to the next. `n` counts the pod's requests in
//! a file of the pod's own volume: each request appends one byte to
//! `$COUNTER_FILE` (default `/data/requests`, an `emptyDir` mounted at
//! `/data`) and reads its length back. Appends are atomic, so no request is
//! lost; two concurrent requests may both read the larger count. Without
//! the volume the answer says so and `n` is 1 (this instance's count).

use std::fs::OpenOptions;
use std::io::Write;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};
use wasip2::io::streams::StreamError;

struct HttpHello;

impl wasip2::exports::http::incoming_handler::Guest for HttpHello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = route(&path);
        respond(out, status, &body);
    }
}

wasip2::http::proxy::export!(HttpHello);

/// The status and body for a path.
fn route(path: &str) -> (u16, String) {
    let path = path.split('?').next().unwrap_or("/");
    if path == "/healthz" {
        return (200, "ok\n".into());
    }
    if let Some(mib) = path.strip_prefix("/alloc/") {
        return match mib.parse::<usize>() {
            Ok(mib) => {
                let bytes = mib.saturating_mul(1 << 20);
                let mut v: Vec<u8> = Vec::new();
                if v.try_reserve_exact(bytes).is_err() {
                    return (507, format!("cannot allocate {mib} MiB\n"));
                }
                v.resize(bytes, 1);
                let sum: usize = v.iter().step_by(4096).map(|b| usize::from(*b)).sum();
                (200, format!("allocated {mib} MiB ({sum} pages touched)\n"))
            }
            Err(_) => (400, "want /alloc/<MiB>\n".into()),
        };
    }
    if let Some(ms) = path.strip_prefix("/spin/") {
        return match ms.parse::<u64>() {
            Ok(ms) => {
                let clock = wasip2::clocks::monotonic_clock::now;
                let until = clock().saturating_add(ms.saturating_mul(1_000_000));
                let mut spins: u64 = 0;
                while clock() < until {
                    spins = spins.wrapping_add(1);
                }
                (200, format!("spun {ms} ms ({spins} spins)\n"))
            }
            Err(_) => (400, "want /spin/<ms>\n".into()),
        };
    }
    if let Some(rest) = path.strip_prefix("/call/") {
        let (authority, target) = match rest.split_once('/') {
            Some((a, t)) => (a, format!("/{t}")),
            None => (rest, "/".to_string()),
        };
        return match call(authority, &target) {
            Ok((status, body)) => (200, format!("{authority} answered {status}: {body}")),
            Err(e) => (502, format!("calling {authority}: {e}\n")),
        };
    }
    let name = std::env::var("POD_NAME").unwrap_or_else(|_| "http-hello".into());
    match count() {
        Some(n) => (200, format!("hello from {name} (request #{n})\n")),
        None => (
            200,
            format!("hello from {name} (request #1: no counter volume, each request is a fresh instance)\n"),
        ),
    }
}

/// `GET http://<authority><target>`: the status and body, or the error.
fn call(authority: &str, target: &str) -> Result<(u16, String), String> {
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| format!("bad address {authority:?}"))?;
    request
        .set_path_with_query(Some(target))
        .map_err(|()| format!("bad path {target:?}"))?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(format!("{e:?}")),
        Some(Err(())) | None => return Err("no response".into()),
    };
    let status = response.status();
    let body = response.consume().map_err(|()| "no body")?;
    let stream = body.stream().map_err(|()| "no body stream")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(4096) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(format!("reading the body: {e:?}")),
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Appends one byte to the counter file and returns its length.
fn count() -> Option<u64> {
    let path = std::env::var("COUNTER_FILE").unwrap_or_else(|_| "/data/requests".into());
    let mut f = OpenOptions::new().create(true).append(true).open(&path).ok()?;
    f.write_all(b".").ok()?;
    f.flush().ok()?;
    Some(f.metadata().ok()?.len())
}

fn respond(out: ResponseOutparam, status: u16, body: &str) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"text/plain; charset=utf-8".to_vec()),
        ("content-length".to_string(), body.len().to_string().into_bytes()),
    ]);
    let Ok(headers) = headers else { return };
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        // A write may take at most 4096 bytes at once.
        for chunk in body.as_bytes().chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
