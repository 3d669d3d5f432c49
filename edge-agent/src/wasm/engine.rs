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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{self, ResourceTable};
use wasmtime::{Config, Engine, InstancePre, Linker, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

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
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Epoch period: how often running instances yield (and are charged CPU).
    pub tick: Duration,
    /// Use the pooling allocator with this many instance slots (64-bit only).
    pub pooling_slots: Option<u32>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            tick: Duration::from_millis(10),
            pooling_slots: None,
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
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop, tick) = (engine.clone(), stop_ticker.clone(), opts.tick);
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| format!("starting the epoch ticker: {e}"))?
        };
        Ok(WasmEngine {
            engine,
            p1,
            p2,
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

    /// Runs one instance to its end. Dropping the future stops it at its
    /// next epoch tick or host call.
    pub async fn run(&self, compiled: &Compiled, spec: RunSpec) -> Result<Exit, String> {
        let ctx = wasi_ctx(&spec)?;
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

fn wasi_ctx(spec: &RunSpec) -> Result<Ctx, String> {
    let mut b = WasiCtxBuilder::new();
    b.args(&spec.argv)
        .envs(&spec.env)
        .stdout(spec.output.stream(Stream::Stdout))
        .stderr(spec.output.stream(Stream::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for p in &spec.preopens {
        let perms = if p.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(&p.host, &p.guest, perms)
            .map_err(|e| format!("mounting {} at {}: {e}", p.host.display(), p.guest))?;
    }
    Ok(Ctx(b))
}
