//! A live instance on either tier, behind one type: what the instance
//! table holds and calls, without knowing which engine runs it.
//!
//! An instance stays on the tier it was made on for its whole life (its
//! state lives in that engine's store); later instances of the same module
//! may run compiled once the module is (see [`super::tier`]).

use super::error::EngineError;
use super::exec::{CallFailure, CallOutcome, CallSpec, CompiledInstance, ExecStats, GlobalRead, Tier};
use super::interp::InterpInstance;

/// A module instantiated into a store of its own, ready for calls.
pub struct LiveInstance(Kind);

enum Kind {
    Compiled(CompiledInstance),
    /// Boxed: wasmi's store is large, and an instance lives long.
    Interpreted(Box<InterpInstance>),
}

impl From<CompiledInstance> for LiveInstance {
    fn from(live: CompiledInstance) -> Self {
        LiveInstance(Kind::Compiled(live))
    }
}

impl From<InterpInstance> for LiveInstance {
    fn from(live: InterpInstance) -> Self {
        LiveInstance(Kind::Interpreted(Box::new(live)))
    }
}

impl LiveInstance {
    /// The tier that runs this instance's calls.
    pub fn tier(&self) -> Tier {
        match &self.0 {
            Kind::Compiled(_) => Tier::Compiled,
            Kind::Interpreted(_) => Tier::Interpreter,
        }
    }

    /// The fuel and time instantiation took; afterwards calls report only
    /// their own (live instances report instantiation on creation).
    pub fn take_instantiation_stats(&mut self) -> ExecStats {
        match &mut self.0 {
            Kind::Compiled(live) => live.take_instantiation_stats(),
            Kind::Interpreted(live) => live.take_instantiation_stats(),
        }
    }

    /// Current size in bytes of the default memory, if there is one.
    pub fn memory_size(&mut self) -> Option<usize> {
        match &mut self.0 {
            Kind::Compiled(live) => live.memory_size(),
            Kind::Interpreted(live) => live.memory_size(),
        }
    }

    /// The current value of the exported global `name`.
    pub fn global(&mut self, name: &str) -> Result<GlobalRead, EngineError> {
        match &mut self.0 {
            Kind::Compiled(live) => live.global(name),
            Kind::Interpreted(live) => live.global(name),
        }
    }

    /// Calls one export as a request of its own, with a fresh budget.
    pub async fn call(&mut self, spec: CallSpec<'_>) -> Result<CallOutcome, CallFailure> {
        match &mut self.0 {
            Kind::Compiled(live) => live.call(spec).await,
            Kind::Interpreted(live) => live.call(spec).await,
        }
    }
}
