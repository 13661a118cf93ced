//! A live instance on either tier, or of a component, behind one type: what
//! the instance table holds and calls, without knowing which engine runs it.
//!
//! An instance stays on the tier it was made on for its whole life (its
//! state lives in that engine's store); later instances of the same module
//! may run compiled once the module is (see [`super::tier`]).

use super::component::ComponentInstance;
use super::error::EngineError;
use super::exec::{CallFailure, CallOutcome, CallSpec, CompiledInstance, ExecStats, GlobalRead, Tier};
use super::interp::InterpInstance;

/// A module instantiated into a store of its own, ready for calls.
pub struct LiveInstance(Kind);

enum Kind {
    Compiled(CompiledInstance),
    /// Boxed: wasmi's store is large, and an instance lives long.
    Interpreted(Box<InterpInstance>),
    /// A component: called by WIT-typed exports, holding resources.
    Component(Box<ComponentInstance>),
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

impl From<ComponentInstance> for LiveInstance {
    fn from(live: ComponentInstance) -> Self {
        LiveInstance(Kind::Component(Box::new(live)))
    }
}

impl LiveInstance {
    /// The tier that runs this instance's calls (components always run
    /// compiled).
    pub fn tier(&self) -> Tier {
        match &self.0 {
            Kind::Compiled(_) | Kind::Component(_) => Tier::Compiled,
            Kind::Interpreted(_) => Tier::Interpreter,
        }
    }

    /// The component instance, when this is one: its calls take WIT-typed
    /// values ([`ComponentInstance::call`]) instead of a [`CallSpec`].
    pub fn component(&mut self) -> Option<&mut ComponentInstance> {
        match &mut self.0 {
            Kind::Component(live) => Some(live),
            _ => None,
        }
    }

    /// The fuel and time instantiation took; afterwards calls report only
    /// their own (live instances report instantiation on creation).
    pub fn take_instantiation_stats(&mut self) -> ExecStats {
        match &mut self.0 {
            Kind::Compiled(live) => live.take_instantiation_stats(),
            Kind::Interpreted(live) => live.take_instantiation_stats(),
            Kind::Component(live) => live.take_instantiation_stats(),
        }
    }

    /// Current size in bytes of the default memory, if there is one.
    pub fn memory_size(&mut self) -> Option<usize> {
        match &mut self.0 {
            Kind::Compiled(live) => live.memory_size(),
            Kind::Interpreted(live) => live.memory_size(),
            // Its memories are its core instances' own, not exported.
            Kind::Component(_) => None,
        }
    }

    /// The current value of the exported global `name`.
    pub fn global(&mut self, name: &str) -> Result<GlobalRead, EngineError> {
        match &mut self.0 {
            Kind::Compiled(live) => live.global(name),
            Kind::Interpreted(live) => live.global(name),
            Kind::Component(_) => Err(EngineError::GlobalNotFound(format!(
                "a component exports no globals (`{name}` included): only its functions can be called"
            ))),
        }
    }

    /// Calls one export as a request of its own, with a fresh budget.
    pub async fn call(&mut self, spec: CallSpec<'_>) -> Result<CallOutcome, CallFailure> {
        match &mut self.0 {
            Kind::Compiled(live) => live.call(spec).await,
            Kind::Interpreted(live) => live.call(spec).await,
            // Callers ask for [`Self::component`] first.
            Kind::Component(_) => {
                Err(EngineError::Internal("a component instance was called as a core module".into()).into())
            }
        }
    }
}
