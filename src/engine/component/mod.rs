//! Components: WebAssembly binaries with WIT-typed imports and exports
//! (the component model), called with JSON or WAVE values.
//!
//! A component goes where a core module goes (inline, registered, `/inspect`)
//! but through its own path: wasmtime's `component` API, a component linker
//! with WASI 0.2, and values converted by the export's WIT types. It shares
//! the rest with core modules: the store and its limits (fuel, the epoch
//! deadline, the resource limiter that counts every core memory and table
//! inside the component), the compile permits, the error kinds.
//!
//! - [`compiled`] — a compiled component and its world;
//! - [`json`] — JSON ⇄ component values, with paths in errors;
//! - [`world`] — what a component imports and exports, with WIT types, and
//!   how a request names an export;
//! - [`resources`] — the resources a live instance holds for its client;
//! - [`run`] — the steps of a call: checking it, converting its params,
//!   instantiating (with the registered components it imports), calling;
//! - [`instance`] — a component in a store of its own, called once or, as a
//!   live instance, many times.

pub mod compiled;
pub mod instance;
pub mod json;
pub mod resources;
pub mod run;
pub mod world;

pub use compiled::{CompiledComponent, LinkedComponent, compile_blocking};
pub use instance::ComponentInstance;
pub use run::{ComponentCall, ComponentParams, check_imports};
pub use world::{CodeInterface, ComponentWorld, WorldFunction, WorldImport};

/// Whether `wasm` is a component (its header's layer field), not a core
/// module. Text is turned into a binary first, so this is the one check.
pub fn is_component(wasm: &[u8]) -> bool {
    wasmparser::Parser::is_component(wasm)
}
