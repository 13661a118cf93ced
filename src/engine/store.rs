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
