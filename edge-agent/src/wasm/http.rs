//! HTTP pods: a Wasm container whose component exports
//! `wasi:http/incoming-handler` is served, not run. The agent listens on
//! `<pod IP>:<containerPort>` and speaks HTTP/1.1 with hyper; every request
//! gets a fresh instance (from the HTTP engine's pooling allocator, see
//! [`super::engine`]), as `wasmtime serve` does, with the container's
//! argv, env, preopened volumes and memory limit. Per pod:
//!
//! - at most [`HttpOptions::max_concurrency`] instances live at once (more
//!   requests wait for a slot, up to their timeout, then get `503`), and at
//!   most [`HttpOptions::max_connections`] connections are open (more wait
//!   in the listen backlog);
//! - each request has [`HttpOptions::request_timeout`] from its arrival to
//!   its instance's end (`504` when no response was sent by then; a body
//!   still streaming is cut);
//! - `resources.limits.cpu` is one budget ([`PodCpu`]) shared by all the
//!   pod's instances, charged at the engine's epoch ticks (the mechanism
//!   commands' [`super::limits::CpuThrottle`] uses): the pod as a whole gets
//!   its share, however many requests run;
//! - `resources.limits.memory` caps each instance; an instance growing past
//!   it is stopped and the request answered `500` (the pod stays up);
//! - one access-log line per request goes to the container's log (what
//!   `shturman logs` shows): `<client> "<METHOD> <target> HTTP/1.1" <status> <bytes> <ms>ms [note]`.
//!
//! Outbound: `wasi:sockets` stays off (as for every Wasm pod) and
//! `wasi:http/outgoing-handler` refuses every request ([`OutboundPolicy::Deny`])
//! unless the pod is annotated `shturman.io/allow-outbound: services`: then
//! plain `http://` requests to an address of the node's `--service-cidr`
//! (Services' ClusterIPs) are sent, and nothing else ([`OutboundPolicy::check`],
//! pure). Host names are not resolved (there is no cluster DNS yet), and
//! there is no TLS client: a ClusterIP is reached over plain HTTP.
//!
//! Stopping: the listener closes at once, open connections are asked to
//! close after their current request (hyper's graceful shutdown), and
//! in-flight requests get up to their timeout to finish; the runtime's
//! stop grace bounds the whole.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Scheme, Uri};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme as WasiScheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::lifecycle::{self, Exit};
use super::limits::{Limits, MemoryLimiter};
use super::logs::{LogSink, Stream};
use super::volumes::Preopen;
use crate::podip;

/// The annotation a pod opts in to outbound requests with.
pub const ALLOW_OUTBOUND_ANNOTATION: &str = "shturman.io/allow-outbound";
/// Its one accepted value: Services' ClusterIPs.
pub const ALLOW_OUTBOUND_SERVICES: &str = "services";

/// Serving settings (per agent; each HTTP pod gets its own slots).
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// From a request's arrival to its instance's end.
    pub request_timeout: Duration,
    /// Instances (requests) of one pod alive at once.
    pub max_concurrency: usize,
    /// Open connections of one pod.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (also how
    /// long an idle keep-alive connection stays open).
    pub header_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            request_timeout: Duration::from_secs(30),
            max_concurrency: 32,
            max_connections: 256,
            header_timeout: Duration::from_secs(30),
        }
    }
}

/// Store data of one request's instance.
pub struct HttpState {
    ctx: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: Outbound,
    limiter: MemoryLimiter,
}

impl WasiView for HttpState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

// ---------------------------------------------------------------------------
// Outbound policy (pure).

/// Where a pod's instances may send HTTP requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboundPolicy {
    /// Nowhere (the default).
    Deny,
    /// Addresses in these CIDRs only (the service CIDR).
    Services(Vec<(IpAddr, u8)>),
}

/// Why an outbound request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "outbound requests are off for this pod (annotate it {ALLOW_OUTBOUND_ANNOTATION}: {ALLOW_OUTBOUND_SERVICES} to reach Services)"
    )]
    Off,
    #[error("only http:// is supported for outbound requests (Services are reached over plain HTTP)")]
    Scheme,
    #[error(
        "{host:?} is not an IP address: outbound requests go to Service ClusterIPs, host names are not resolved"
    )]
    NotAnAddress { host: String },
    #[error("{ip} is not a Service ClusterIP (allowed: {allowed})")]
    NotAService { ip: IpAddr, allowed: String },
}

impl Denied {
    /// The `wasi:http` error the guest sees.
    fn code(&self) -> HttpError {
        match self {
            Denied::Off | Denied::Scheme => HttpError::HttpRequestDenied,
            Denied::NotAnAddress { .. } => HttpError::DestinationNotFound,
            Denied::NotAService { .. } => HttpError::DestinationIpProhibited,
        }
    }
}

impl OutboundPolicy {
    /// The policy of a pod with `annotations`, on a node whose Services
    /// come from `service_cidr`; an unknown annotation value is an error.
    pub fn of(
        annotations: &BTreeMap<String, String>,
        service_cidr: (IpAddr, u8),
    ) -> Result<OutboundPolicy, String> {
        match annotations.get(ALLOW_OUTBOUND_ANNOTATION).map(|v| v.trim()) {
            None | Some("" | "none") => Ok(OutboundPolicy::Deny),
            Some(ALLOW_OUTBOUND_SERVICES) => Ok(OutboundPolicy::Services(vec![service_cidr])),
            Some(other) => Err(format!(
                "annotation {ALLOW_OUTBOUND_ANNOTATION}: {other:?} is not supported: use {ALLOW_OUTBOUND_SERVICES:?} (Service ClusterIPs) or leave it out (no outbound requests)"
            )),
        }
    }

    /// Where a request for `uri` may go, or why it may not.
    pub fn check(&self, uri: &Uri) -> Result<SocketAddr, Denied> {
        let OutboundPolicy::Services(allowed) = self else {
            return Err(Denied::Off);
        };
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(Denied::Scheme);
        }
        let host = uri.host().unwrap_or_default();
        let ip: IpAddr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| Denied::NotAnAddress { host: host.into() })?;
        if !allowed.iter().any(|c| podip::contains(*c, ip)) {
            return Err(Denied::NotAService {
                ip,
                allowed: allowed
                    .iter()
                    .map(|c| podip::cidr_text(*c))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(SocketAddr::new(ip, uri.port_u16().unwrap_or(80)))
    }
}

/// The `wasi:http` hooks of one instance: outbound requests per the policy.
struct Outbound {
    policy: Arc<OutboundPolicy>,
    /// Denials are written to the container's stderr.
    log: LogSink,
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        drop(fut);
        let target = self.policy.check(request.uri());
        if let Err(d) = &target {
            self.log
                .stream(Stream::Stderr)
                .write(format!("shturman: outbound request to {} refused: {d}\n", request.uri()).as_bytes());
        }
        Box::new(async move {
            match target {
                Ok(addr) => send_plain(request, addr, options).await,
                Err(d) => Err(d.code()),
            }
        })
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

/// Sends `request` over plain HTTP/1.1 to `addr` (a checked ClusterIP).
async fn send_plain(
    mut request: Request<WasiBody>,
    addr: SocketAddr,
    options: Option<RequestOptions>,
) -> Result<(Response<WasiBody>, IoFuture), HttpError> {
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    let connect_timeout = options.and_then(|o| o.connect_timeout).unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    // Origin form on the wire: the scheme and authority are in the Host header.
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;
    // Drive the connection while waiting for the response head; a server
    // that answers and closes may end the connection first.
    let mut conn = Box::pin(conn);
    let send = tokio::time::timeout(first_byte_timeout, sender.send_request(request));
    let mut send = std::pin::pin!(send);
    let (response, conn) = tokio::select! {
        r = send.as_mut() => (r, Some(conn)),
        c = conn.as_mut() => {
            c?;
            (send.await, None)
        }
    };
    let response = response.map_err(|_| HttpError::ConnectionReadTimeout)??;
    let io: IoFuture = match conn {
        Some(conn) => Box::new(async move { conn.await.map_err(HttpError::from) }),
        None => Box::new(async { Ok(()) }),
    };
    Ok((response.map(|b| b.map_err(HttpError::from).boxed_unsync()), io))
}

// ---------------------------------------------------------------------------
// CPU: one bucket per pod.

/// The pod's CPU share (`resources.limits.cpu`), one budget for all its
/// live instances (a virtual clock, as GCRA's): each instance is charged,
/// at each of its epoch ticks, the time since its previous tick (at most
/// two ticks, so time blocked in a host call is not charged); a charge of
/// `c` moves the pod's paid-up time forward by `c` divided by its share,
/// and an instance whose tick finds it ahead of the wall clock sleeps until
/// then. The paid-up time lags the clock by at most ten ticks (the burst a
/// pod idle for a while may use at once). So the pod's instances together
/// get the share, however many run at once.
#[derive(Debug)]
pub struct PodCpu {
    millis: u64,
    tick: Duration,
    burst: Duration,
    /// Until when the pod's CPU use is paid up.
    paid: Mutex<Instant>,
}

impl PodCpu {
    /// `None` without a limit.
    pub fn new(millis: Option<u64>, tick: Duration, now: Instant) -> Option<Arc<PodCpu>> {
        let millis = millis.filter(|m| *m > 0)?;
        Some(Arc::new(PodCpu {
            millis,
            tick,
            burst: tick.saturating_mul(10),
            paid: Mutex::new(now),
        }))
    }

    /// An instance's tick at `now`; `last` is its previous tick (updated).
    /// How long it must sleep before resuming, if at all.
    pub fn on_tick(&self, last: &mut Instant, now: Instant) -> Option<Duration> {
        let charged = now
            .saturating_duration_since(*last)
            .min(self.tick.saturating_mul(2));
        *last = now;
        let nanos = charged.as_nanos().saturating_mul(1000) / u128::from(self.millis);
        let cost = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let mut paid = self
            .paid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let floor = now.checked_sub(self.burst).unwrap_or(now);
        *paid = (*paid).max(floor).checked_add(cost).unwrap_or(*paid);
        let sleep = paid.saturating_duration_since(now);
        if sleep.is_zero() {
            return None;
        }
        *last = *paid;
        Some(sleep)
    }
}

// ---------------------------------------------------------------------------
// Serving.

/// Everything one container's server needs.
pub struct ServeSpec {
    pub pre: ProxyPre<HttpState>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub preopens: Vec<Preopen>,
    pub limits: Limits,
    /// The container's log: instances' stdout/stderr and the access log.
    pub output: LogSink,
    pub outbound: OutboundPolicy,
    pub options: HttpOptions,
    /// The engine's epoch period.
    pub tick: Duration,
    /// The node-wide pool slots, when the engine pools instances.
    pub pool: Option<Arc<Semaphore>>,
}

/// Why the listener cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("port {port} on {ip} is already in use on this node")]
    InUse { ip: IpAddr, port: u16 },
    #[error("cannot listen on {ip}:{port}: {source}")]
    Other {
        ip: IpAddr,
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// Opens the pod's listener on `ip:port` (within the runtime's executor).
pub fn bind(ip: IpAddr, port: u16) -> Result<TcpListener, BindError> {
    let other = |source| BindError::Other { ip, port, source };
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(other)?;
    // Rebinding right after a restart must not wait for TIME_WAIT.
    socket.set_reuseaddr(true).map_err(other)?;
    socket.bind(SocketAddr::new(ip, port)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            BindError::InUse { ip, port }
        } else {
            other(e)
        }
    })?;
    socket.listen(1024).map_err(other)
}

/// One pod's server, shared by its connections.
struct Server {
    spec: ServeSpec,
    outbound: Arc<OutboundPolicy>,
    cpu: Option<Arc<PodCpu>>,
    slots: Arc<Semaphore>,
}

/// Serves `listener` until `stop` turns true, then drains (see the module
/// docs) and returns [`Exit::Killed`].
pub async fn serve(listener: TcpListener, spec: ServeSpec, mut stop: watch::Receiver<bool>) -> Exit {
    let server = Arc::new(Server {
        outbound: Arc::new(spec.outbound.clone()),
        cpu: PodCpu::new(spec.limits.cpu_millis, spec.tick, Instant::now()),
        slots: Arc::new(Semaphore::new(spec.options.max_concurrency.max(1))),
        spec,
    });
    let max_connections = server.spec.options.max_connections.max(1);
    let (drain, draining) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = turns_true(&mut stop) => break,
            accepted = listener.accept(), if conns.len() < max_connections => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(connection(server.clone(), stream, peer, draining.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = drain.send(true);
    let grace = server.spec.options.request_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    server.spec.output.finish();
    Exit::Killed
}

/// Resolves once the flag is true (or its sender is gone).
async fn turns_true(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// One connection: HTTP/1.1 with keep-alive until the client, an error or
/// a drain ends it.
async fn connection(
    server: Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    mut draining: watch::Receiver<bool>,
) {
    let header_timeout = server.spec.options.header_timeout;
    let service = hyper::service::service_fn(move |req| handle(server.clone(), req, peer));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(Some(header_timeout));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = turns_true(&mut draining) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// How a request's instance ended.
#[derive(Debug)]
enum End {
    Done,
    Trap(String),
    OutOfMemory(String),
    TimedOut,
}

/// A request that got no response from its instance.
struct Failure {
    status: StatusCode,
    note: String,
}

impl Failure {
    fn new(status: StatusCode, note: impl Into<String>) -> Failure {
        Failure {
            status,
            note: note.into(),
        }
    }

    fn of(end: End) -> Failure {
        match end {
            End::Done => Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the component returned without setting a response",
            ),
            End::Trap(m) => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, lifecycle::short(&m)),
            End::OutOfMemory(m) => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, m),
            End::TimedOut => Failure::new(StatusCode::GATEWAY_TIMEOUT, "request timed out"),
        }
    }
}

type Reply = Response<LoggedBody>;

/// Answers one request (never fails: failures are answered too).
async fn handle(server: Arc<Server>, req: Request<Incoming>, peer: SocketAddr) -> Result<Reply, Infallible> {
    let arrived = Instant::now();
    let line = format!(
        "{peer} \"{} {} {:?}\"",
        req.method(),
        req.uri().path_and_query().map_or("/", |p| p.as_str()),
        req.version()
    );
    let log = AccessLog {
        line,
        arrived,
        sink: server.spec.output.clone(),
    };
    let deadline = tokio::time::Instant::from_std(arrived + server.spec.options.request_timeout);
    let mut response = match dispatch(&server, req, deadline).await {
        Ok((response, task)) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, LoggedBody::new(body, log, task, None))
        }
        Err(f) => {
            let text = format!("{}\n", f.status.canonical_reason().unwrap_or("error"));
            let body = Full::new(Bytes::from(text))
                .map_err(|never: Infallible| match never {})
                .boxed_unsync();
            let mut response = Response::new(LoggedBody::new(body, log, None, Some(f.note)));
            *response.status_mut() = f.status;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            response
        }
    };
    // The access log reports the status sent.
    let status = response.status();
    response.body_mut().status = Some(status);
    Ok(response)
}

/// Runs the request's instance; its response (the instance may still be
/// streaming the body) or why there is none.
async fn dispatch(
    server: &Arc<Server>,
    req: Request<Incoming>,
    deadline: tokio::time::Instant,
) -> Result<(Response<HyperOutgoingBody>, Option<JoinHandle<End>>), Failure> {
    let busy = || Failure::new(StatusCode::SERVICE_UNAVAILABLE, "no instance slot free in time");
    let permit = tokio::time::timeout_at(deadline, server.slots.clone().acquire_owned())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let pooled = match &server.spec.pool {
        Some(pool) => Some(
            tokio::time::timeout_at(deadline, pool.clone().acquire_owned())
                .await
                .map_err(|_| busy())?
                .map_err(|_| busy())?,
        ),
        None => None,
    };
    let mut store = new_store(server).map_err(|m| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, m))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut view = store.data_mut().http();
    let req = view
        .new_incoming_request(WasiScheme::Http, req)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let out = view
        .new_response_outparam(tx)
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let pre = server.spec.pre.clone();
    let task = tokio::spawn(async move {
        let _slots = (permit, pooled);
        let run = async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        };
        let result = tokio::time::timeout_at(deadline, run).await;
        let oom = store.data_mut().limiter.oom.take();
        match (result, oom) {
            (_, Some(m)) => End::OutOfMemory(m),
            (Err(_), None) => End::TimedOut,
            (Ok(Ok(())), None) => End::Done,
            (Ok(Err(e)), None) => End::Trap(match e.downcast_ref::<wasmtime::Trap>() {
                Some(t) => t.to_string(),
                None => format!("{e:#}"),
            }),
        }
    });
    let mut task = AbortOnDrop(Some(task));
    match rx.await {
        // The instance may still be writing the body: the body owns it now.
        Ok(Ok(response)) => Ok((response, task.0.take())),
        Ok(Err(code)) => Err(Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the component answered with an error: {code:?}"),
        )),
        // The instance ended (its store is gone) without a response.
        Err(_) => {
            let end = match task.0.as_mut() {
                Some(t) => t.await.unwrap_or_else(|e| End::Trap(e.to_string())),
                None => End::Done,
            };
            Err(Failure::of(end))
        }
    }
}

/// Aborts the task when dropped (a request given up on).
struct AbortOnDrop(Option<JoinHandle<End>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

/// A fresh store for one request: the container's WASI context, memory
/// limit, the pod's CPU bucket and the outbound policy.
fn new_store(server: &Server) -> Result<Store<HttpState>, String> {
    let spec = &server.spec;
    let mut b = super::engine::wasi_builder(&spec.argv, &spec.env, &spec.preopens, &spec.output)?;
    let state = HttpState {
        ctx: b.build(),
        table: ResourceTable::new(),
        http: WasiHttpCtx::new(),
        hooks: Outbound {
            policy: server.outbound.clone(),
            log: spec.output.clone(),
        },
        limiter: MemoryLimiter::new(spec.limits.memory),
    };
    let mut store = Store::new(spec.pre.engine(), state);
    store.limiter(|s| &mut s.limiter);
    // Yield at every tick (so timeouts and stops take effect); sleep first
    // when the pod is over its CPU share.
    store.set_epoch_deadline(1);
    let cpu = server.cpu.clone();
    let mut last = Instant::now();
    store.epoch_deadline_callback(move |_| {
        let pause = cpu.as_ref().and_then(|c| c.on_tick(&mut last, Instant::now()));
        Ok(match pause {
            Some(d) => UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(d))),
            None => UpdateDeadline::Yield(1),
        })
    });
    Ok(store)
}

// ---------------------------------------------------------------------------
// The access log.

/// What the access-log line of one request says, written once.
struct AccessLog {
    /// `<client> "<METHOD> <target> <version>"`.
    line: String,
    arrived: Instant,
    sink: LogSink,
}

/// A response body that counts what it sends and writes the request's
/// access-log line when it ends (or is dropped: the client went away).
/// Dropped before its end, it stops the instance still writing it.
struct LoggedBody {
    inner: HyperOutgoingBody,
    status: Option<StatusCode>,
    sent: u64,
    log: Option<AccessLog>,
    note: Option<String>,
    task: Option<JoinHandle<End>>,
    ended: bool,
}

impl LoggedBody {
    fn new(
        inner: HyperOutgoingBody,
        log: AccessLog,
        task: Option<JoinHandle<End>>,
        note: Option<String>,
    ) -> LoggedBody {
        LoggedBody {
            inner,
            status: None,
            sent: 0,
            log: Some(log),
            note,
            task,
            ended: false,
        }
    }

    fn write_log(&mut self) {
        let Some(log) = self.log.take() else { return };
        let ms = log.arrived.elapsed().as_secs_f64() * 1000.0;
        let status = self.status.map_or(0, |s| s.as_u16());
        let note = self.note.as_deref().map(|n| format!(" {n}")).unwrap_or_default();
        log.sink
            .write(format!("{} {status} {} {ms:.1}ms{note}\n", log.line, self.sent).as_bytes());
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                self.sent = self.sent.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
            }
            Poll::Ready(Some(Err(e))) => {
                self.note = Some(format!("body failed: {e}"));
                self.write_log();
            }
            Poll::Ready(None) => {
                self.ended = true;
                self.write_log();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if !self.ended
            && !self.inner.is_end_stream()
            && let Some(t) = self.task.take()
        {
            t.abort();
        }
        self.write_log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_cidr;

    fn annotations(v: Option<&str>) -> BTreeMap<String, String> {
        v.map(|v| (ALLOW_OUTBOUND_ANNOTATION.to_string(), v.to_string()))
            .into_iter()
            .collect()
    }

    #[test]
    fn outbound_is_off_unless_the_pod_opts_in() {
        let svc = parse_cidr("10.43.0.0/16").unwrap();
        let uri: Uri = "http://10.43.0.10:8080/x".parse().unwrap();
        let off = OutboundPolicy::of(&annotations(None), svc).unwrap();
        assert_eq!(off, OutboundPolicy::Deny);
        assert_eq!(off.check(&uri), Err(Denied::Off));
        assert_eq!(
            OutboundPolicy::of(&annotations(Some("none")), svc).unwrap(),
            OutboundPolicy::Deny
        );
        let e = OutboundPolicy::of(&annotations(Some("everything")), svc).unwrap_err();
        assert!(e.contains("\"everything\" is not supported"), "{e}");

        let on = OutboundPolicy::of(&annotations(Some("services")), svc).unwrap();
        assert_eq!(on.check(&uri), Ok("10.43.0.10:8080".parse().unwrap()));
        assert_eq!(
            on.check(&"http://10.43.255.1/".parse().unwrap()),
            Ok("10.43.255.1:80".parse().unwrap())
        );
        let outside = on.check(&"http://10.44.0.1/".parse().unwrap()).unwrap_err();
        assert_eq!(
            outside.to_string(),
            "10.44.0.1 is not a Service ClusterIP (allowed: 10.43.0.0/16)"
        );
        assert!(matches!(outside.code(), HttpError::DestinationIpProhibited));
        assert_eq!(
            on.check(&"https://10.43.0.10/".parse().unwrap()),
            Err(Denied::Scheme)
        );
        assert!(matches!(
            on.check(&"http://example.com/".parse().unwrap()),
            Err(Denied::NotAnAddress { .. })
        ));
        assert!(matches!(
            on.check(&"http://127.0.0.1:7443/".parse().unwrap()),
            Err(Denied::NotAService { .. })
        ));
        let v6 = OutboundPolicy::Services(vec![parse_cidr("fd00:43::/112").unwrap()]);
        assert_eq!(
            v6.check(&"http://[fd00:43::a]:81/".parse().unwrap()),
            Ok("[fd00:43::a]:81".parse().unwrap())
        );
    }

    /// `n` instances spinning at once, each ticking every `tick` while it
    /// runs: the pod as a whole gets its share.
    fn simulate(millis: u64, n: usize) -> f64 {
        let tick = Duration::from_millis(10);
        let t0 = Instant::now();
        let cpu = PodCpu::new(Some(millis), tick, t0).unwrap();
        let mut lasts = vec![t0; n];
        let mut wake = vec![t0; n];
        let mut ran = Duration::ZERO;
        let mut now = t0;
        while now < t0 + Duration::from_secs(20) {
            now += tick;
            for i in 0..n {
                // Epoch ticks are global: an instance awake at this one ran
                // since it woke or since the previous tick.
                if wake[i] > now {
                    continue;
                }
                ran += now - wake[i].max(now - tick);
                if let Some(s) = cpu.on_tick(&mut lasts[i], now) {
                    wake[i] = now + s;
                }
            }
        }
        ran.as_secs_f64() / 20.0
    }

    #[test]
    fn pod_cpu_bucket_is_shared_by_its_instances() {
        assert!(PodCpu::new(None, Duration::from_millis(10), Instant::now()).is_none());
        for (millis, n) in [(250, 1), (250, 4), (500, 8), (1500, 4)] {
            let cores = simulate(millis, n);
            let want = millis as f64 / 1000.0;
            assert!(
                (want * 0.85..want * 1.15).contains(&cores),
                "{millis}m with {n} instances: {cores:.3} cores"
            );
        }
        // Under the limit: never throttled.
        let cores = simulate(4000, 2);
        assert!((1.9..2.1).contains(&cores), "{cores}");
    }
}
