//! A store under limits: the per-store host state, the resource limiter,
//! the epoch callback that enforces wall-clock time, and arming a request's
//! one fuel and time budget.
//!
//! Fuel bounds the work a guest does; the epoch deadline bounds wall-clock
//! time (fuel alone cannot: a guest may be slow for reasons that cost no
//! fuel); the limiter bounds what it allocates. A budget is armed once per
//! request: a one-shot execution spends one budget on instantiation (start
//! functions, `_initialize`) and the call together, as docs/API.md says.

use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use super::error::{LimitHit, LimitKind};
use super::limits::{ExecLimits, StoreLimiter};
use super::wasi::{ComponentWasi, WasiConfig, WasiState};

/// Per-store host state: limits and, for WASI programs, their context.
pub struct StoreState {
    limiter: StoreLimiter,
    deadline: Instant,
    timeout_ms: u64,
    /// The fuel armed for the current request, to compute what it used.
    armed_fuel: u64,
    /// Whether the guest runs synchronously on the thread that took the
    /// request, which cannot yield (see [`call`]).
    sync_call: bool,
    pub(crate) wasi: Option<Box<WasiState>>,
    /// A component's WASI 0.2 world; every component store has one (its
    /// imports of `wasi:` interfaces resolve against it).
    pub(crate) component_wasi: Option<Box<ComponentWasi>>,
}

impl wasmtime_wasi::WasiView for StoreState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        let wasi = self
            .component_wasi
            .get_or_insert_with(|| Box::new(ComponentWasi::new(WasiConfig::default(), 0)));
        wasmtime_wasi::WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

impl StoreState {
    /// The WASI context; a store whose graph imports WASI always has one.
    pub(crate) fn wasi_ctx(&mut self) -> &mut wasmtime_wasi::p1::WasiP1Ctx {
        &mut self
            .wasi
            .get_or_insert_with(|| WasiState::new(WasiConfig::default(), 0))
            .ctx
    }

    /// Bytes of linear memory the store's instances hold together.
    pub(crate) fn memory_in_use(&self) -> u64 {
        self.limiter.memory_in_use()
    }

    /// Limits the guest ran into without being stopped (a `memory.grow` or
    /// `table.grow` that returned -1 because of our limit) since the last
    /// [`arm`]; reported in `stats.limits_hit`.
    pub(crate) fn take_limits_hit(&mut self) -> Vec<&'static str> {
        self.limiter.take_hits().into_iter().map(LimitKind::as_str).collect()
    }

    /// The limits hit since the last [`arm`], and the linear memory in use
    /// (its peak: memories never shrink), for `stats`.
    pub(crate) fn limit_report(&mut self) -> (Vec<&'static str>, u64) {
        (self.take_limits_hit(), self.limiter.memory_in_use())
    }
}

/// A new store for one execution or live instance, with the limiter and
/// the epoch callback installed. Nothing is armed yet: see [`arm`].
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    limits: &ExecLimits,
    wasi: Option<Box<WasiState>>,
) -> Store<StoreState> {
    let state = StoreState {
        limiter: StoreLimiter::new(limits),
        deadline: Instant::now(),
        timeout_ms: limits.timeout_ms,
        armed_fuel: 0,
        sync_call: false,
        wasi,
        component_wasi: None,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(|ctx| {
        let state = ctx.data();
        if Instant::now() >= state.deadline {
            return Err(wasmtime::Error::new(LimitHit::time(state.timeout_ms)));
        }
        // Keep the ticker fast while this guest runs.
        super::epoch::guest_running();
        if state.sync_call {
            // A synchronous call cannot yield: give the thread back now;
            // the caller runs the call again on a fiber.
            return Err(wasmtime::Error::new(MustYield));
        }
        // Let other requests run on this worker thread, then go on.
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

/// Arms a request's budget: fills the fuel and starts the clock. Called once
/// per request, before the first guest instruction it runs. Returns the
/// moment the clock started, for a caller about to time the same work.
pub(crate) fn arm(store: &mut Store<StoreState>, limits: &ExecLimits) -> Instant {
    arm_at(store, limits, Instant::now())
}

/// [`arm`] with the clock read `now` the caller has just made.
pub(crate) fn arm_at(store: &mut Store<StoreState>, limits: &ExecLimits, now: Instant) -> Instant {
    // Fuel is enabled engine-wide, so setting it cannot fail.
    let _ = store.set_fuel(limits.fuel);
    let state = store.data_mut();
    state.deadline = now + Duration::from_millis(limits.timeout_ms);
    state.timeout_ms = limits.timeout_ms;
    state.armed_fuel = limits.fuel;
    state.limiter.take_hits();
    store.set_epoch_deadline(1);
    now
}

thread_local! {
    /// Whether this thread's stack has room for a guest's whole stack
    /// (`--max-stack-bytes`) below the server's own frames, so that a guest
    /// may run on it synchronously: a fiber's stack is sized for the guest,
    /// a thread's is not unless the server made it so
    /// ([`allow_sync_calls`]). Other threads (a test's, the main thread)
    /// always call on a fiber.
    static SYNC_CALLS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Native stack the server's worker threads get, and the most of it a
/// guest's stack may take for synchronous calls to run on them: the rest
/// is the server's own frames (a request's handler and the runtime's,
/// tens of kilobytes) with room to spare.
pub const WORKER_STACK_BYTES: usize = 4 << 20;
const SYNC_GUEST_STACK_MAX: usize = 2 << 20;

/// Called on each of the server's worker threads, whose stacks are
/// [`WORKER_STACK_BYTES`]: synchronous calls may run on this thread when
/// the guest's stack (`max_stack_bytes`) fits beside the server's frames.
pub fn allow_sync_calls(max_stack_bytes: usize) {
    SYNC_CALLS.set(max_stack_bytes <= SYNC_GUEST_STACK_MAX);
}

/// Calls begun synchronously and run again on a fiber, since start.
static RERUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many calls began synchronously and were run again on a fiber since
/// the process started (`wasm_exec_sync_calls_rerun_total` in `/metrics`).
pub fn sync_reruns() -> u64 {
    RERUNS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The epoch moved while a guest ran synchronously (see
/// [`call`]): the call was abandoned, to run again on a fiber.
#[derive(Debug)]
struct MustYield;

impl std::fmt::Display for MustYield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a synchronous call ran into an epoch and must yield")
    }
}

impl std::error::Error for MustYield {}

/// Calls `func` on a fiber that yields at every tick. A call that may
/// begin synchronously (`sync`: one of a stateless module's instance, see
/// `CompiledModule::sync_first`) first runs on the thread that took the
/// request, and only if the epoch moves while it runs (the guest has run
/// for up to a tick) again from the start on the fiber. Most calls end long
/// before a tick, and a synchronous call skips the switch onto and off a
/// fiber stack. Running it again is safe only because the instance has
/// nowhere to keep state: the abandoned attempt left nothing behind, and
/// the second attempt gets the request's whole fuel again (results and
/// `fuel_consumed` are then what one uninterrupted call gives), while its
/// time limit runs on from when the request was armed.
pub(crate) async fn call(
    mut store: impl wasmtime::AsContextMut<Data = StoreState>,
    func: wasmtime::Func,
    params: &[wasmtime::Val],
    results: &mut [wasmtime::Val],
    sync: Option<&SyncFirst>,
) -> wasmtime::Result<()> {
    let mut ctx = store.as_context_mut();
    if let Some(sync) = sync.filter(|sync| sync.now()) {
        match call_now(&mut ctx, func, None, params, results, sync) {
            Some(done) => return done,
            None => {
                let fuel = ctx.data().armed_fuel;
                let _ = ctx.set_fuel(fuel);
                ctx.set_epoch_deadline(1);
            }
        }
    }
    // Boxed: wasmtime's call future is large, and every future above this
    // one would otherwise carry it (and copy it when moved).
    Box::pin(func.call_async(&mut ctx, params, results)).await
}

/// The synchronous attempt of [`call`], for a caller that [`SyncFirst::now`]
/// let begin so and that may run the call again from the start: `None`
/// when the epoch moved while it ran (counted in [`sync_reruns`], and
/// remembered in `sync`); the store's fuel and epoch deadline are then the
/// abandoned attempt's, to be armed again. `ty`, when the caller has it,
/// is `func`'s type (see [`call_numbers`]).
pub(crate) fn call_now(
    mut store: impl wasmtime::AsContextMut<Data = StoreState>,
    func: wasmtime::Func,
    ty: Option<&wasmtime::FuncType>,
    params: &[wasmtime::Val],
    results: &mut [wasmtime::Val],
    sync: &SyncFirst,
) -> Option<wasmtime::Result<()>> {
    let mut ctx = store.as_context_mut();
    ctx.data_mut().sync_call = true;
    let first = match ty {
        Some(ty) if numbers_only(ty, params, results.len()) => call_numbers(&mut ctx, func, ty, params, results),
        _ => func.call(&mut ctx, params, results),
    };
    ctx.data_mut().sync_call = false;
    match first {
        Err(e) if e.is::<MustYield>() => {
            RERUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sync.ran_long();
            None
        }
        done => Some(done),
    }
}

/// Whether `params` are values of `ty`'s params, and `ty`'s params and
/// its `results` results are all numbers (no references).
fn numbers_only(ty: &wasmtime::FuncType, params: &[wasmtime::Val], results: usize) -> bool {
    use wasmtime::{Val, ValType};
    ty.params().len() == params.len()
        && ty.results().len() == results
        && ty.params().zip(params).all(|(ty, val)| {
            matches!(
                (ty, val),
                (ValType::I32, Val::I32(_))
                    | (ValType::I64, Val::I64(_))
                    | (ValType::F32, Val::F32(_))
                    | (ValType::F64, Val::F64(_))
                    | (ValType::V128, Val::V128(_))
            )
        })
        && ty.results().all(|ty| {
            matches!(
                ty,
                ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64 | ValType::V128
            )
        })
}

/// Parameters and results of a call of numbers passed on the stack; more
/// take a vector.
const RAW_ON_STACK: usize = 16;

/// `func.call` of a function of numbers only, through
/// `Func::call_unchecked` with the type the caller already holds.
///
/// Why: `Func::call` loads the function's type from the engine's type
/// registry twice per call (to check the arguments, then to read the
/// results), and each load takes the registry's read lock, clones the
/// `Engine` and counts a reference to the type: some sixteen atomic
/// writes per call on cache lines every core calling any module shares,
/// which kept two threads' calls from adding up (docs/BENCHMARKS.md).
fn call_numbers(
    ctx: &mut wasmtime::StoreContextMut<'_, StoreState>,
    func: wasmtime::Func,
    ty: &wasmtime::FuncType,
    params: &[wasmtime::Val],
    results: &mut [wasmtime::Val],
) -> wasmtime::Result<()> {
    use wasmtime::{Val, ValRaw, ValType};
    // The check `call_unchecked` leaves out, made where it costs nothing
    // that counts: in debug builds, that is in every test.
    debug_assert!(func.matches_ty(&*ctx, ty), "a call's type is not its function's");
    let len = params.len().max(results.len());
    let mut on_stack = [ValRaw::i32(0); RAW_ON_STACK];
    let mut on_heap = Vec::new();
    let raw: &mut [ValRaw] = if len <= RAW_ON_STACK {
        &mut on_stack[..len]
    } else {
        on_heap.resize(len, ValRaw::i32(0));
        &mut on_heap
    };
    for (slot, val) in raw.iter_mut().zip(params) {
        *slot = match *val {
            Val::I32(v) => ValRaw::i32(v),
            Val::I64(v) => ValRaw::i64(v),
            Val::F32(bits) => ValRaw::f32(bits),
            Val::F64(bits) => ValRaw::f64(bits),
            Val::V128(v) => ValRaw::v128(v.as_u128()),
            _ => unreachable!("numbers_only admits numbers only"),
        };
    }
    // SAFETY: `call_unchecked`'s contract, point by point:
    // - `raw` is a valid slice with room for every param and every result
    //   (`len` is the larger count);
    // - it holds the params, each of its type: `numbers_only` checked
    //   them against `ty`, which is `func`'s own type (the caller's
    //   `CompiledModule` recorded it for this export; the debug assertion
    //   above checks it in every test);
    // - no param or result is a reference, so none needs rooting or
    //   tracing by the store;
    // - the call is not made from within a `call_async` (nor from any host
    //   function): this is the synchronous attempt a worker thread makes
    //   before any fiber exists for the call, as `func.call` was, which
    //   checks that too.
    unsafe { func.call_unchecked(&mut *ctx, raw as *mut [ValRaw]) }?;
    for ((slot, raw), ty) in results.iter_mut().zip(raw.iter()).zip(ty.results()) {
        *slot = match ty {
            ValType::I32 => Val::I32(raw.get_i32()),
            ValType::I64 => Val::I64(raw.get_i64()),
            ValType::F32 => Val::F32(raw.get_f32()),
            ValType::F64 => Val::F64(raw.get_f64()),
            ValType::V128 => Val::V128(raw.get_v128().into()),
            _ => unreachable!("numbers_only admits numbers only"),
        };
    }
    Ok(())
}

/// How many times a module's calls are sent onto a fiber from the start
/// after one of its calls begun synchronously ran into an epoch (a call
/// may be asked twice: once before it is made without awaiting, once
/// before its fiber). A module whose calls run long (a `fib(27)`, a
/// benchmark loop) would otherwise lose up to a tick to every call's
/// abandoned first attempt, since the ticker is fast while such calls run:
/// `fib(27)`'s median call took 1.7 times the floor server's so
/// (BENCHMARKS.md, 2026-12-03, evening). Now it loses that once in 32 to
/// 64 calls.
const SYNC_SKIPS: u32 = 64;

/// Whether a stateless module's next call may begin synchronously (see
/// [`call`]): on a worker thread that allows it ([`allow_sync_calls`]),
/// unless one of its calls ran into an epoch within its last
/// [`SYNC_SKIPS`] calls. Read on every call, written only after a long
/// one, so that modules whose calls are short share no written cache line.
#[derive(Default)]
pub(crate) struct SyncFirst(std::sync::atomic::AtomicU32);

impl SyncFirst {
    /// Whether this call begins synchronously (one skipped counts).
    pub(crate) fn now(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if !SYNC_CALLS.get() {
            return false;
        }
        let skips = self.0.load(Relaxed);
        if skips == 0 {
            return true;
        }
        // Racing calls may count one skip twice; a skip more or less is
        // of no account.
        self.0.store(skips - 1, Relaxed);
        false
    }

    fn ran_long(&self) {
        self.0.store(SYNC_SKIPS, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Takes the exception a failed call left pending on the store, when
/// `error` is one no handler caught: it stays there until taken, and the
/// store's next call must not find it.
pub(crate) fn drop_uncaught(mut store: impl wasmtime::AsContextMut, error: &wasmtime::Error) {
    if error.is::<wasmtime::ThrownException>() {
        store.as_context_mut().take_pending_exception();
    }
}

/// Fuel used since the last [`arm`]. Compiled code keeps its fuel counter in
/// a register and writes it back at calls and returns; after a trap, or when
/// the time limit interrupts a tight loop, the last write-back may be old, so
/// this can undercount (documented in docs/API.md).
pub(crate) fn fuel_used(store: &Store<StoreState>) -> u64 {
    let armed = store.data().armed_fuel;
    armed.saturating_sub(store.get_fuel().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::{SYNC_SKIPS, SyncFirst, allow_sync_calls, arm, call_numbers, new_store, numbers_only};
    use crate::engine::limits::ExecLimits;
    use wasmtime::{AsContextMut, V128, Val};

    /// A call of numbers made unchecked answers, bit for bit, what
    /// `Func::call` answers (NaN payloads, -0, i64 extremes, v128); a
    /// function of references is not made so.
    #[test]
    fn a_call_of_numbers_answers_what_func_call_answers() {
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true).epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let wasm = wat::parse_str(
            r#"(module
                 (func (export "swap") (param i32 i64 f32 f64 v128) (result v128 f64 f32 i64 i32)
                   local.get 4 local.get 3 local.get 2 local.get 1 local.get 0)
                 (func (export "div") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
                 (func (export "refs") (param externref) (result externref) local.get 0))"#,
        )
        .unwrap();
        let module = wasmtime::Module::new(&engine, &wasm).unwrap();
        let limits = ExecLimits {
            fuel: 1_000_000,
            timeout_ms: 10_000,
            memory_bytes: 1 << 20,
            table_elements: 1000,
        };
        let mut store = new_store(&engine, &limits, None);
        arm(&mut store, &limits);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let swap = instance.get_func(&mut store, "swap").unwrap();
        let ty = swap.ty(&store);
        let params = [
            Val::I32(i32::MIN),
            Val::I64(i64::MAX),
            Val::F32(0xffc0_0001),
            Val::F64(1 << 63),
            Val::V128(V128::from(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210)),
        ];
        assert!(numbers_only(&ty, &params, 5));
        let (mut checked, mut unchecked) = (vec![Val::I32(0); 5], vec![Val::I32(0); 5]);
        swap.call(&mut store, &params, &mut checked).unwrap();
        call_numbers(&mut store.as_context_mut(), swap, &ty, &params, &mut unchecked).unwrap();
        let bits = |vals: &[Val]| -> Vec<u128> {
            vals.iter()
                .map(|v| match *v {
                    Val::I32(x) => x as u32 as u128,
                    Val::I64(x) => x as u64 as u128,
                    Val::F32(x) => x as u128,
                    Val::F64(x) => x as u128,
                    Val::V128(x) => x.as_u128(),
                    _ => panic!("not a number"),
                })
                .collect()
        };
        assert_eq!(bits(&unchecked), bits(&checked));
        assert_eq!(bits(&unchecked)[4], i32::MIN as u32 as u128);
        // A trap is the same error.
        let div = instance.get_func(&mut store, "div").unwrap();
        let div_ty = div.ty(&store);
        let mut out = [Val::I32(0)];
        let trap = call_numbers(
            &mut store.as_context_mut(),
            div,
            &div_ty,
            &[Val::I32(1), Val::I32(0)],
            &mut out,
        )
        .unwrap_err();
        assert_eq!(
            trap.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::IntegerDivisionByZero)
        );
        // Params of the wrong type, or references, are not for it.
        assert!(!numbers_only(&div_ty, &[Val::I64(1), Val::I32(0)], 1));
        assert!(!numbers_only(&div_ty, &[Val::I32(1)], 1));
        let refs = instance.get_func(&mut store, "refs").unwrap();
        assert!(!numbers_only(&refs.ty(&store), &[Val::ExternRef(None)], 1));
    }

    #[test]
    fn a_module_whose_call_ran_long_begins_its_next_calls_on_a_fiber() {
        let sync = SyncFirst::default();
        // A thread the server did not make never runs guest code
        // synchronously.
        assert!(!sync.now());
        allow_sync_calls(512 << 10);
        assert!(sync.now() && sync.now(), "short calls keep beginning synchronously");
        sync.ran_long();
        for skip in 0..SYNC_SKIPS {
            assert!(!sync.now(), "ask {skip} after a long call");
        }
        assert!(sync.now(), "then it is tried again");
        allow_sync_calls(4 << 20);
        assert!(
            !sync.now(),
            "not with a guest stack larger than the thread has room for"
        );
    }
}
