//! The wasmtime side: one [`Engine`] with epoch interruption (a ticker
//! thread advances the epoch every `tick`), the WASI preview 1 and preview 2
//! linkers, compiling bytes into an instance-ready [`Compiled`], and running
//! one instance to its [`Exit`] with its capabilities and limits.
//!
//! Instance allocation: on-demand by default. The pooling allocator reserves
//! a fixed slot of virtual memory per instance up front (with guard pages,
//! gigabytes each): that does not fit 32-bit armv7 boards at all, and on a
//! 1 GB Pi it trades the per-pod memory limits (which vary per pod) for one
//! node-wide slot size. [`EngineOptions::pooling_slots`] turns it on for
//! 64-bit nodes that run many small pods; the per-pod [`MemoryLimiter`]
//! applies either way.
//!
//! HTTP components (those exporting `wasi:http/incoming-handler`, told
//! apart by reading the component's exports before compiling it) get a
//! second engine: they are instantiated once per request, which is what the
//! pooling allocator is for (`wasmtime serve` does the same), so on 64-bit
//! nodes that engine pools [`EngineOptions::http_pool_slots`] instances
//! (default [`DEFAULT_HTTP_POOL_SLOTS`]): that many requests run at once on
//! the node, whatever the number of HTTP pods ([`WasmEngine::http_slots`]
//! makes the others wait). The pool is only address space until used (about
//! 4 GiB reserved per memory slot); where it cannot be reserved (a 32-bit
//! board, or a kernel with a small address space) the engine says so and
//! allocates on demand.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{self, ResourceTable};
use wasmtime::{Config, Engine, InstancePre, Linker, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::http::HttpState;
use super::lifecycle::Exit;
use super::limits::{CpuThrottle, Limits, MemoryLimiter};
use super::logs::{LogSink, Stream};
use super::reference::{Flavor, flavor};
use super::volumes::Preopen;

/// Store data of a preview 1 module.
pub struct P1State {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

/// Store data of a preview 2 component.
pub struct P2State {
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
}

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// A compiled and linked module, cheap to clone (shared by every replica).
#[derive(Clone)]
pub enum Compiled {
    Core(InstancePre<P1State>),
    Component(CommandPre<P2State>),
    /// A `wasi:http/incoming-handler` component: served, one instance per
    /// request ([`super::http`]), never run as a command.
    Http(ProxyPre<HttpState>),
}

/// Instance slots of the HTTP engine's pool by default (64-bit nodes).
pub const DEFAULT_HTTP_POOL_SLOTS: u32 = 64;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Epoch period: how often running instances yield (and are charged CPU).
    pub tick: Duration,
    /// Use the pooling allocator with this many instance slots (64-bit only).
    pub pooling_slots: Option<u32>,
    /// Pool this many instances for HTTP components (`None`: on demand).
    pub http_pool_slots: Option<u32>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            tick: Duration::from_millis(10),
            pooling_slots: None,
            http_pool_slots: cfg!(target_pointer_width = "64").then_some(DEFAULT_HTTP_POOL_SLOTS),
        }
    }
}

/// What one run gets: its argv, environment, directories, limits and output.
pub struct RunSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub preopens: Vec<Preopen>,
    pub limits: Limits,
    pub output: LogSink,
}

/// The engine, its linkers and its epoch ticker.
pub struct WasmEngine {
    engine: Engine,
    p1: Linker<P1State>,
    p2: component::Linker<P2State>,
    /// HTTP components' engine and linker (WASI preview 2 and wasi:http).
    http_engine: Engine,
    http: component::Linker<HttpState>,
    /// The pool's slots, when the HTTP engine pools instances.
    http_slots: Option<Arc<Semaphore>>,
    tick: Duration,
    stop_ticker: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl WasmEngine {
    pub fn new(opts: &EngineOptions) -> Result<WasmEngine, String> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true);
        if let Some(slots) = opts.pooling_slots {
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_core_instances(slots.saturating_mul(4))
                .total_component_instances(slots)
                .total_memories(slots.saturating_mul(2))
                .total_tables(slots.saturating_mul(4))
                .total_stacks(slots);
            cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&cfg).map_err(|e| format!("wasmtime engine: {e}"))?;
        let mut p1 = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut p1, |s: &mut P1State| &mut s.wasi)
            .map_err(|e| format!("linking WASI preview 1: {e}"))?;
        let mut p2 = component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut p2)
            .map_err(|e| format!("linking WASI preview 2: {e}"))?;
        let (http_engine, http_slots) = http_engine(opts.http_pool_slots)?;
        // The whole command world (env, args, preopens …) plus wasi:http, as
        // `wasmtime serve -Scli`: HTTP pods get their env and volumes too.
        let mut http = component::Linker::new(&http_engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut http)
            .map_err(|e| format!("linking WASI preview 2 for HTTP: {e}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http)
            .map_err(|e| format!("linking wasi:http: {e}"))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engines = [engine.clone(), http_engine.clone()];
            let (stop, tick) = (stop_ticker.clone(), opts.tick);
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        for e in &engines {
                            e.increment_epoch();
                        }
                    }
                })
                .map_err(|e| format!("starting the epoch ticker: {e}"))?
        };
        Ok(WasmEngine {
            engine,
            p1,
            p2,
            http_engine,
            http,
            http_slots,
            tick: opts.tick,
            stop_ticker,
            ticker: Some(ticker),
        })
    }

    /// Compiles and links Wasm bytes (CPU-heavy: call from a blocking context).
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, String> {
        match flavor(bytes) {
            Some(Flavor::CoreModule) => {
                let module = wasmtime::Module::from_binary(&self.engine, bytes)
                    .map_err(|e| format!("compiling module: {e}"))?;
                if module.get_export("_start").is_none() {
                    return Err("the module exports no _start: not a WASI command".into());
                }
                let pre = self
                    .p1
                    .instantiate_pre(&module)
                    .map_err(|e| format!("linking module: {e}"))?;
                Ok(Compiled::Core(pre))
            }
            Some(Flavor::Component) if exports_http_handler(bytes) => {
                let c = component::Component::from_binary(&self.http_engine, bytes)
                    .map_err(|e| format!("compiling component: {e}"))?;
                let pre = self
                    .http
                    .instantiate_pre(&c)
                    .map_err(|e| format!("linking HTTP component: {e}"))?;
                let pre = ProxyPre::new(pre)
                    .map_err(|e| format!("not a wasi:http/incoming-handler component: {e}"))?;
                Ok(Compiled::Http(pre))
            }
            Some(Flavor::Component) => {
                let c = component::Component::from_binary(&self.engine, bytes)
                    .map_err(|e| format!("compiling component: {e}"))?;
                let pre = self
                    .p2
                    .instantiate_pre(&c)
                    .map_err(|e| format!("linking component: {e}"))?;
                let pre =
                    CommandPre::new(pre).map_err(|e| format!("not a wasi:cli/command component: {e}"))?;
                Ok(Compiled::Component(pre))
            }
            None => Err("not a WebAssembly module or component".into()),
        }
    }

    /// The epoch period.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// The HTTP engine's pool slots (`None`: it allocates on demand): an
    /// HTTP request holds one while its instance lives.
    pub fn http_slots(&self) -> Option<Arc<Semaphore>> {
        self.http_slots.clone()
    }

    /// Runs one instance to its end. Dropping the future stops it at its
    /// next epoch tick or host call. HTTP components are served, not run
    /// ([`super::http::serve`]).
    pub async fn run(&self, compiled: &Compiled, spec: RunSpec) -> Result<Exit, String> {
        let ctx = wasi_ctx(&spec.argv, &spec.env, &spec.preopens, &spec.output)?;
        let limiter = MemoryLimiter::new(spec.limits.memory);
        let throttle = CpuThrottle::new(spec.limits.cpu_millis, self.tick, Instant::now());
        let result = match compiled {
            Compiled::Core(pre) => {
                let state = P1State {
                    wasi: ctx.build_p1_from(),
                    limiter,
                };
                let mut store = Store::new(&self.engine, state);
                store.limiter(|s| &mut s.limiter);
                configure(&mut store, throttle);
                let r = async {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                    start.call_async(&mut store, ()).await
                }
                .await;
                (r.map(|()| true), store.data_mut().limiter.oom.take())
            }
            Compiled::Component(pre) => {
                let state = P2State {
                    ctx: ctx.build_p2(),
                    table: ResourceTable::new(),
                    limiter,
                };
                let mut store = Store::new(&self.engine, state);
                store.limiter(|s| &mut s.limiter);
                configure(&mut store, throttle);
                let r = async {
                    let cmd = pre.instantiate_async(&mut store).await?;
                    cmd.wasi_cli_run().call_run(&mut store).await
                }
                .await;
                (r.map(|ok| ok.is_ok()), store.data_mut().limiter.oom.take())
            }
            Compiled::Http(_) => {
                return Err("an HTTP component (wasi:http/incoming-handler) is served, not run".into());
            }
        };
        spec.output.finish();
        Ok(classify(result))
    }
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// The HTTP components' engine: pooling `slots` instances when given and
/// the pool can be reserved, else allocating on demand.
fn http_engine(slots: Option<u32>) -> Result<(Engine, Option<Arc<Semaphore>>), String> {
    if let Some(slots) = slots.filter(|n| *n > 0) {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        // A Rust wasm32-wasip2 component holds a handful of core instances
        // (its module, the preview 1 adapter, shims) and one or two memories.
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(8))
            .total_stacks(slots);
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&cfg) {
            Ok(engine) => {
                let permits = usize::try_from(slots).unwrap_or(usize::MAX);
                return Ok((engine, Some(Arc::new(Semaphore::new(permits)))));
            }
            Err(e) => tracing::warn!(
                slots,
                error = %e,
                "cannot reserve the pooling allocator for HTTP pods; allocating their instances on demand"
            ),
        }
    }
    let mut cfg = Config::new();
    cfg.epoch_interruption(true);
    let engine = Engine::new(&cfg).map_err(|e| format!("wasmtime engine for HTTP: {e}"))?;
    Ok((engine, None))
}

/// Whether a component exports `wasi:http/incoming-handler` (any 0.2
/// version) at its top level: then it is served, not run. Reads the
/// export sections only (no compiling); a binary that does not parse is
/// not one (compiling it says why).
pub fn exports_http_handler(bytes: &[u8]) -> bool {
    use wasmtime::wasmparser::{Parser, Payload};
    let mut depth = 0u32;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else { return false };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports.into_iter().flatten() {
                    if is_http_handler(export.name.name) {
                        return true;
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// `wasi:http/incoming-handler` or `wasi:http/incoming-handler@0.2.x`.
fn is_http_handler(name: &str) -> bool {
    match name.strip_prefix("wasi:http/incoming-handler") {
        Some("") => true,
        Some(version) => version.starts_with("@0.2."),
        None => false,
    }
}

/// Yield at every tick; sleep first when over the CPU share.
fn configure<T: 'static>(store: &mut Store<T>, mut throttle: Option<CpuThrottle>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        let pause = throttle.as_mut().and_then(|t| t.on_tick(Instant::now()));
        Ok(match pause {
            Some(d) => UpdateDeadline::YieldCustom(1, Box::pin(async move { tokio::time::sleep(d).await })),
            None => UpdateDeadline::Yield(1),
        })
    });
}

/// How a run ended: `Ok(true)` ran to completion, `Ok(false)` a component's
/// `run` returned an error (exit 1).
fn classify((result, oom): (wasmtime::Result<bool>, Option<String>)) -> Exit {
    if let Some(m) = oom {
        return Exit::OomKilled(m);
    }
    match result {
        Ok(true) => Exit::Code(0),
        Ok(false) => Exit::Code(1),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => Exit::Code(*code),
            None => Exit::Trap(trap_text(&e)),
        },
    }
}

/// The trap's own words (`wasm trap: wasm `unreachable` instruction executed`:
/// wasmtime's `Trap` already says `wasm trap: `, so it is not added again).
fn trap_text(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => e.to_string(),
    }
}

/// The WASI context builder: argv, env, stdio to the logs, the preopens and
/// nothing else (no inherited env or stdio, no network).
struct Ctx(WasiCtxBuilder);

impl Ctx {
    fn build_p1_from(mut self) -> WasiP1Ctx {
        self.0.build_p1()
    }
    fn build_p2(mut self) -> WasiCtx {
        self.0.build()
    }
}

fn wasi_ctx(
    argv: &[String],
    env: &[(String, String)],
    preopens: &[Preopen],
    output: &LogSink,
) -> Result<Ctx, String> {
    wasi_builder(argv, env, preopens, output).map(Ctx)
}

/// The WASI context builder of one instance (also each HTTP request's).
pub(super) fn wasi_builder(
    argv: &[String],
    env: &[(String, String)],
    preopens: &[Preopen],
    output: &LogSink,
) -> Result<WasiCtxBuilder, String> {
    let mut b = WasiCtxBuilder::new();
    b.args(argv)
        .envs(env)
        .stdout(output.stream(Stream::Stdout))
        .stderr(output.stream(Stream::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for p in preopens {
        let perms = if p.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(&p.host, &p.guest, perms)
            .map_err(|e| format!("mounting {} at {}: {e}", p.host.display(), p.guest))?;
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_handler_export_names() {
        assert!(is_http_handler("wasi:http/incoming-handler@0.2.0"));
        assert!(is_http_handler("wasi:http/incoming-handler@0.2.12"));
        assert!(is_http_handler("wasi:http/incoming-handler"));
        assert!(!is_http_handler("wasi:http/incoming-handler@0.3.0-rc"));
        assert!(!is_http_handler("wasi:http/handler@0.3.0"));
        assert!(!is_http_handler("wasi:cli/run@0.2.0"));
    }

    #[test]
    fn detects_http_components_by_their_exports() {
        // A component exporting (an instance named) the handler interface.
        let http = wat::parse_str(
            r#"(component
                 (instance $i)
                 (export "wasi:http/incoming-handler@0.2.0" (instance $i)))"#,
        )
        .unwrap();
        assert!(exports_http_handler(&http));
        // A nested component's export does not count; nor does a command.
        let nested = wat::parse_str(
            r#"(component
                 (component $c
                   (instance $i)
                   (export "wasi:http/incoming-handler@0.2.0" (instance $i))))"#,
        )
        .unwrap();
        assert!(!exports_http_handler(&nested));
        let command =
            wat::parse_str(r#"(component (instance $i) (export "wasi:cli/run@0.2.0" (instance $i)))"#)
                .unwrap();
        assert!(!exports_http_handler(&command));
        assert!(!exports_http_handler(b"\0asm garbage"));
        assert!(!exports_http_handler(&wat::parse_str("(module)").unwrap()));
    }
}
