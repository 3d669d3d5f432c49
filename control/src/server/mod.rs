//! The API server: Kubernetes paths over the store, bearer-token auth,
//! watches, health, version and metrics.
//!
//! - [`route`] parses a path into a typed target (pure);
//! - [`handlers`] executes list/get/create/update/patch/delete;
//! - [`object`] owns server-set metadata and merge patch (pure);
//! - [`alloc`] gives Services their cluster IPs and node ports (kept in the store);
//! - [`watch`] streams changes; [`logs`] fetches container logs from nodes; [`error`] maps every failure to a `Status`;
//! - [`auth`] the admin token and `admin.conf`; [`metrics`] `/metrics`;
//!   [`discovery`] `/api`, `/apis`.

pub mod alloc;
pub mod auth;
pub mod discovery;
pub mod error;
pub mod handlers;
pub mod logs;
pub mod metrics;
pub mod object;
pub mod route;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, Request};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use self::error::ApiError;
use self::handlers::{PatchType, Selection};
use self::route::{RouteError, Target};
use crate::store::Store;
use crate::store::etcd_store::EtcdStore;
use crate::store::memory::MemoryStore;
use crate::store::sled_store::SledStore;
use crate::{Config, Error, StoreChoice};

/// Largest request body accepted (Kubernetes' own limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Everything a request handler needs.
pub struct State {
    pub store: Arc<dyn Store>,
    token: String,
    pub metrics: metrics::Metrics,
    /// Flips to `true` when the server stops; open watches end on it.
    stop: tokio::sync::watch::Sender<bool>,
    /// Open log requests to nodes (the node gateway answers them).
    pub logs: Arc<crate::gateway::logs::LogHub>,
    /// The nodes' Service proxy counters (the gateway fills it, `/metrics` reads it).
    pub proxy_stats: Arc<crate::gateway::proxy_stats::ProxyStatsHub>,
    /// Where Services' cluster IPs and node ports come from.
    pub service_network: alloc::ServiceNetwork,
}

impl State {
    /// Request state over `store`, accepting `token` as the admin bearer
    /// token, with the default service network.
    pub fn new(store: Arc<dyn Store>, token: String) -> Arc<State> {
        State::with_service_network(store, token, alloc::ServiceNetwork::default())
    }

    /// As [`State::new`], with Services' addresses and node ports from `network`.
    pub fn with_service_network(
        store: Arc<dyn Store>,
        token: String,
        network: alloc::ServiceNetwork,
    ) -> Arc<State> {
        Arc::new(State {
            store,
            token,
            metrics: metrics::Metrics::default(),
            stop: tokio::sync::watch::channel(false).0,
            logs: Arc::default(),
            proxy_stats: Arc::default(),
            service_network: network,
        })
    }

    /// Ends open watches (the server is stopping).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// A bound, ready server.
pub struct Running {
    pub url: String,
    pub admin_conf: PathBuf,
    listener: TcpListener,
    router: Router,
    state: Arc<State>,
    manager: crate::manager::Manager,
    /// The embedded broker (if any) and the gateway's way to the broker.
    pub mqtt: crate::broker::Mqtt,
}

/// Opens the store, writes the admin config and binds the API.
pub async fn start(config: Config) -> Result<Running, Error> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| Error::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let store: Arc<dyn Store> = match config.store {
        StoreChoice::Memory => Arc::new(MemoryStore::new()),
        StoreChoice::Sled => {
            let dir = data_dir.join("store");
            let opened = tokio::task::spawn_blocking(move || SledStore::open(&dir))
                .await
                .map_err(|e| Error::Serve(std::io::Error::other(e)))??;
            Arc::new(opened)
        }
        StoreChoice::Etcd(etcd) => Arc::new(EtcdStore::connect(&etcd).await?),
    };
    let token = auth::load_or_create_token(&data_dir).map_err(|source| Error::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let listener = TcpListener::bind(config.api_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: config.api_addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(Error::Serve)?;
    let url = format!("http://{addr}");
    let admin_conf = auth::write_admin_conf(&data_dir, &url, &token).map_err(|source| Error::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let state = State::with_service_network(store, token, config.services);
    state.ensure_default_namespace().await?;
    state.repair_service_allocations().await?;
    let client = crate::client::Client::new(state.clone());
    crate::tokens::ensure_system_namespace(&client)
        .await
        .map_err(|e| Error::Namespace {
            namespace: crate::tokens::SYSTEM_NAMESPACE.into(),
            message: e.to_string(),
        })?;
    let mqtt = crate::broker::setup(&config.mqtt, client).await?;
    let manager =
        crate::manager::Manager::start_with(state.clone(), &config.controllers, mqtt.gateway.clone());
    let router = router(state.clone());
    tracing::info!(%url, admin_conf = %admin_conf.display(), "API server ready");
    Ok(Running {
        url,
        admin_conf,
        listener,
        router,
        state,
        manager,
        mqtt,
    })
}

impl Running {
    /// Serves until `shutdown` resolves; open watches are ended, in-flight
    /// requests finish, then the store is closed.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let state = self.state.clone();
        let serve = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            shutdown.await;
            state.stop();
        });
        let served = serve.await.map_err(Error::Serve);
        self.manager.shutdown().await;
        if let Some(b) = self.mqtt.broker {
            b.shutdown().await;
        }
        // Every acknowledged write is on disk before the process goes.
        let closed = self.state.store.close().await.map_err(Error::Store);
        served.and(closed)
    }
}

/// The HTTP surface.
pub fn router(state: Arc<State>) -> Router {
    let api = {
        let s = state.clone();
        move |method: Method,
              Path(rest): Path<String>,
              q: Query<HashMap<String, String>>,
              headers: HeaderMap,
              req: Request| {
            let s = s.clone();
            async move { resource(s, "", method, &rest, q.0, headers, req).await }
        }
    };
    let apis = {
        let s = state.clone();
        move |method: Method,
              Path((group, version, rest)): Path<(String, String, String)>,
              q: Query<HashMap<String, String>>,
              headers: HeaderMap,
              req: Request| {
            let s = s.clone();
            async move {
                if group != "apps" || version != "v1" {
                    return ApiError::no_route(&format!("/apis/{group}/{version}/{rest}")).into_response();
                }
                resource(s, "apps", method, &rest, q.0, headers, req).await
            }
        }
    };
    let metrics_state = state.clone();
    let ready_state = state.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let s = ready_state.clone();
                async move {
                    match s.store.revision().await {
                        Ok(_) => (StatusCode::OK, "ok").into_response(),
                        Err(e) => ApiError::unavailable(format!("store not ready: {e}")).into_response(),
                    }
                }
            }),
        )
        .route("/version", get(|| async { axum::Json(version()) }))
        .route(
            "/metrics",
            get(move || {
                let s = metrics_state.clone();
                async move {
                    let rev = s.store.revision().await.unwrap_or(0);
                    let logs = &s.logs.metrics;
                    #[allow(clippy::cast_precision_loss)]
                    let mut text = s.metrics.render(&[
                        (
                            "shturman_store_revision",
                            "The store's latest durable revision.",
                            rev as f64,
                        ),
                        (
                            "shturman_log_requests_total",
                            "Log requests sent to nodes.",
                            logs.requests.load(std::sync::atomic::Ordering::Relaxed) as f64,
                        ),
                        (
                            "shturman_log_streams_cancelled_total",
                            "Log streams the control plane cancelled (client gone, reader too slow).",
                            logs.cancelled.load(std::sync::atomic::Ordering::Relaxed) as f64,
                        ),
                        (
                            "shturman_log_streams_open",
                            "Log streams open right now.",
                            s.logs.open_streams() as f64,
                        ),
                    ]);
                    metrics::render_proxy(&mut text, &s.proxy_stats.snapshot(std::time::Instant::now()));
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
                }
            }),
        )
        .route("/api", get(|| async { axum::Json(discovery::api_versions()) }))
        .route("/apis", get(|| async { axum::Json(discovery::api_groups()) }))
        .route(
            "/apis/apps",
            get(|| async { axum::Json(discovery::apps_group()) }),
        )
        .route("/api/v1", get(|| async { axum::Json(discovery::resources("")) }))
        .route(
            "/apis/apps/v1",
            get(|| async { axum::Json(discovery::resources("apps")) }),
        )
        .route("/api/v1/{*rest}", axum::routing::any(api))
        .route("/apis/{group}/{version}/{*rest}", axum::routing::any(apis))
        .fallback(|req: Request| async move { ApiError::no_route(req.uri().path()).into_response() })
        .layer(middleware::from_fn_with_state(state, authenticate))
}

/// `/version`.
pub fn version() -> Value {
    let v = env!("CARGO_PKG_VERSION");
    let mut parts = v.split('.');
    json!({
        "major": parts.next().unwrap_or("0"),
        "minor": parts.next().unwrap_or("0"),
        "gitVersion": format!("v{v}"),
        "platform": format!("{}/{}", std::env::consts::OS, go_arch(std::env::consts::ARCH)),
    })
}

/// Kubernetes' names for architectures.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Every request but the health checks needs the admin bearer token.
async fn authenticate(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !auth::bearer_matches(header, &state.token) {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "true" || v == "1")
}

/// One request to a resource path: parse into a typed command, execute, record.
async fn resource(
    state: Arc<State>,
    group: &str,
    method: Method,
    rest: &str,
    q: HashMap<String, String>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let started = Instant::now();
    let target = match route::parse(group, rest) {
        Ok(t) => t,
        Err(RouteError::UnknownResource(r)) => {
            return ApiError::no_route(&format!("the server doesn't have a resource type \"{r}\""))
                .into_response();
        }
        Err(RouteError::BadPath) => return ApiError::no_route(req.uri().path()).into_response(),
    };
    let kind = target.kind();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return ApiError::too_large(MAX_BODY).into_response(),
    };
    let (verb, result) = execute(&state, target, &method, &q, &headers, body).await;
    let response = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    state
        .metrics
        .observe(verb, kind.plural(), response.status().as_u16(), started.elapsed());
    response
}

async fn execute(
    state: &Arc<State>,
    target: Target,
    method: &Method,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> (&'static str, Result<Response, ApiError>) {
    let json =
        |v: Result<Value, ApiError>, code: StatusCode| v.map(|v| (code, axum::Json(v)).into_response());
    match (target, method.clone()) {
        (Target::PodLog { namespace, name }, Method::GET) => {
            ("log", logs::serve(state, &namespace, &name, q).await)
        }
        (Target::Collection { kind, namespace }, Method::GET) => {
            let selection = match Selection::from_query(q) {
                Ok(s) => s,
                Err(e) => return ("list", Err(e)),
            };
            if flag(q, "watch") {
                let from = match q.get("resourceVersion").map(String::as_str) {
                    None | Some("") => None,
                    Some(s) => match s.parse() {
                        Ok(n) => Some(n),
                        Err(_) => {
                            return (
                                "watch",
                                Err(ApiError::bad_request(format!(
                                    "resourceVersion \"{s}\" is not a number"
                                ))),
                            );
                        }
                    },
                };
                let timeout = q
                    .get("timeoutSeconds")
                    .and_then(|s| s.parse().ok())
                    .map(Duration::from_secs);
                let req = watch::WatchRequest {
                    kind,
                    namespace,
                    selection,
                    from,
                    bookmarks: flag(q, "allowWatchBookmarks"),
                    timeout,
                };
                return ("watch", watch::serve(state.clone(), req).await);
            }
            (
                "list",
                state
                    .list(kind, namespace.as_deref(), &selection)
                    .await
                    .map(|(encoded, _)| {
                        ([(header::CONTENT_TYPE, "application/json")], encoded).into_response()
                    }),
            )
        }
        (Target::Collection { kind, namespace }, Method::POST) => {
            if kind.namespaced() && namespace.is_none() {
                return (
                    "create",
                    Err(ApiError::method_not_allowed(format!(
                        "create {} in a namespace: POST /…/namespaces/{{ns}}/{}",
                        kind.plural(),
                        kind.plural()
                    ))),
                );
            }
            (
                "create",
                json(
                    state.create(kind, namespace.as_deref(), &body).await,
                    StatusCode::CREATED,
                ),
            )
        }
        (
            Target::Object {
                kind,
                namespace,
                name,
                ..
            },
            Method::GET,
        ) if flag(q, "watch") => {
            let req = watch::WatchRequest {
                kind,
                namespace,
                selection: match Selection::from_query(&HashMap::from([(
                    "fieldSelector".to_string(),
                    format!("metadata.name={name}"),
                )])) {
                    Ok(s) => s,
                    Err(e) => return ("watch", Err(e)),
                },
                from: q.get("resourceVersion").and_then(|s| s.parse().ok()),
                bookmarks: flag(q, "allowWatchBookmarks"),
                timeout: q
                    .get("timeoutSeconds")
                    .and_then(|s| s.parse().ok())
                    .map(Duration::from_secs),
            };
            ("watch", watch::serve(state.clone(), req).await)
        }
        (
            Target::Object {
                kind,
                namespace,
                name,
                ..
            },
            Method::GET,
        ) => (
            "get",
            json(state.get(kind, namespace.as_deref(), &name).await, StatusCode::OK),
        ),
        (
            Target::Object {
                kind,
                namespace,
                name,
                status,
            },
            Method::PUT,
        ) => (
            "update",
            json(
                state
                    .update(kind, namespace.as_deref(), &name, status, &body)
                    .await,
                StatusCode::OK,
            ),
        ),
        (
            Target::Object {
                kind,
                namespace,
                name,
                status,
            },
            Method::PATCH,
        ) => {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
            if let Err(e) = PatchType::from_content_type(ct) {
                return ("patch", Err(e));
            }
            (
                "patch",
                json(
                    state
                        .patch(kind, namespace.as_deref(), &name, status, &body)
                        .await,
                    StatusCode::OK,
                ),
            )
        }
        (
            Target::Object {
                kind,
                namespace,
                name,
                status: false,
            },
            Method::DELETE,
        ) => (
            "delete",
            json(
                state.delete(kind, namespace.as_deref(), &name, &body).await,
                StatusCode::OK,
            ),
        ),
        (_, m) => (
            "other",
            Err(ApiError::method_not_allowed(format!(
                "{m} is not supported on this path"
            ))),
        ),
    }
}
