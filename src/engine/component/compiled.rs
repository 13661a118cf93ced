//! A compiled component and what the API shows of it.

use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};

use super::world::ComponentWorld;
use crate::engine::compile::{Sha256Digest, compiled_weight};
use crate::engine::error::{EngineError, chain_text};
use crate::engine::store::StoreState;
use crate::engine::values::encode_hex;

/// A validated, compiled component, shared by every call that uses it.
pub struct CompiledComponent {
    sha256: Sha256Digest,
    /// `sha256` as lowercase hex, made once: every response names it.
    sha256_hex: String,
    size: usize,
    component: Component,
    world: ComponentWorld,
    /// Ready to instantiate when every import is WASI 0.2 (the common
    /// case): import resolution is done once, not per call.
    pre: Option<InstancePre<StoreState>>,
    /// Why the WASI 0.2 linker alone cannot instantiate it, when every
    /// import is a `wasi:` one (an interface this server does not provide,
    /// such as `wasi:http`, or a version it does not have).
    wasi_gap: Option<String>,
}

impl CompiledComponent {
    pub fn sha256(&self) -> &Sha256Digest {
        &self.sha256
    }

    pub fn sha256_hex(&self) -> &str {
        &self.sha256_hex
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// What keeping it in memory costs, in bytes (see [`compiled_weight`]).
    pub(crate) fn weight(&self) -> usize {
        compiled_weight(self.component.image_range(), self.size)
    }

    /// Its imports and exports with their WIT types.
    pub fn world(&self) -> &ComponentWorld {
        &self.world
    }

    pub(crate) fn component(&self) -> &Component {
        &self.component
    }

    pub(crate) fn pre(&self) -> Option<&InstancePre<StoreState>> {
        self.pre.as_ref()
    }

    /// Why WASI 0.2 does not cover its imports, when they are all WASI and
    /// it does not.
    pub(crate) fn wasi_gap(&self) -> Option<&str> {
        self.wasi_gap.as_deref()
    }
}

/// Compiles `wasm` (already known to be a component) on the calling thread:
/// the caller runs this on the blocking pool under a compile permit.
pub fn compile_blocking(
    engine: &wasmtime::Engine,
    wasi_linker: &wasmtime::component::Linker<StoreState>,
    sha256: Sha256Digest,
    wasm: &[u8],
) -> Result<CompiledComponent, EngineError> {
    let component = Component::new(engine, wasm)
        .map_err(|e| EngineError::InvalidModule(format!("invalid component: {}", chain_text(&e))))?;
    let world = ComponentWorld::of(engine, &component, wasm);
    let (pre, wasi_gap) = match world.imports.iter().all(|i| i.is_wasi()) {
        true => match wasi_linker.instantiate_pre(&component) {
            Ok(pre) => (Some(pre), None),
            Err(e) => (None, Some(chain_text(&e))),
        },
        false => (None, None),
    };
    Ok(CompiledComponent {
        sha256,
        sha256_hex: encode_hex(sha256),
        size: wasm.len(),
        component,
        world,
        pre,
        wasi_gap,
    })
}

/// A registered component a call links, under its registry name, with the
/// interfaces it exports.
#[derive(Clone)]
pub struct LinkedComponent {
    pub name: String,
    pub compiled: Arc<CompiledComponent>,
}
