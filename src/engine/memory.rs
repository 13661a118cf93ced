//! Reading and writing guest linear memory on behalf of a request.
//!
//! A memory is named the way the API names it: absent means the module's
//! `memory` export (or its only exported memory); `name` is another export of
//! the module; `host:name` is an export of a linked host module. Every access
//! is bounds-checked against the memory's current size, and the error says
//! what that size is.

use wasmtime::{Extern, Instance, Memory, Store};

use super::error::EngineError;
use super::store::StoreState;

/// Bytes to put into memory before the call.
#[derive(Debug, Clone)]
pub struct MemoryWrite {
    pub memory: Option<String>,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// A range to read out of memory after the call.
#[derive(Debug, Clone)]
pub struct MemoryRead {
    pub memory: Option<String>,
    pub offset: u64,
    pub length: u64,
}

/// Finds the memory `name` among the root instance's exports or, for
/// `host:export`, a host module's.
pub(crate) fn resolve(
    store: &mut Store<StoreState>,
    root: Instance,
    hosts: &[(String, Instance)],
    name: Option<&str>,
) -> Result<(String, Memory), EngineError> {
    let not_found = |what: String| EngineError::MemoryAccess(what);
    match name {
        None => default_memory(store, root).ok_or_else(no_default_memory),
        Some(name) => {
            let (instance, export, shown) = match name.split_once(':') {
                Some((host, export)) => {
                    let instance = hosts
                        .iter()
                        .find(|(n, _)| n == host)
                        .map(|(_, i)| *i)
                        .ok_or_else(|| not_a_host(host))?;
                    (instance, export, name.to_string())
                }
                None => (root, name, name.to_string()),
            };
            match instance.get_export(&mut *store, export) {
                Some(Extern::Memory(m)) => Ok((shown, m)),
                Some(Extern::SharedMemory(_)) => Err(not_found(format!(
                    "memory `{shown}` is shared; shared memories cannot be accessed"
                ))),
                _ => Err(no_memory_named(&shown)),
            }
        }
    }
}

fn default_memory(store: &mut Store<StoreState>, root: Instance) -> Option<(String, Memory)> {
    if let Some(memory) = root.get_memory(&mut *store, "memory") {
        return Some(("memory".into(), memory));
    }
    let mut found = None;
    let exports: Vec<(String, Extern)> = root
        .exports(&mut *store)
        .map(|e| (e.name().to_string(), e.into_extern()))
        .collect();
    for (name, ext) in exports {
        if let Extern::Memory(m) = ext {
            if found.is_some() {
                return None;
            }
            found = Some((name, m));
        }
    }
    found
}

/// The module has no memory a request without `memory` could mean.
pub(crate) fn no_default_memory() -> EngineError {
    EngineError::MemoryAccess(
        "the module exports no memory named `memory` (and not exactly one memory); name one in `memory`, or a host module's as `host:export`".into(),
    )
}

/// `host:export` names a module that is not a host module here.
pub(crate) fn not_a_host(host: &str) -> EngineError {
    EngineError::MemoryAccess(format!("`{host}` is not a host module of this execution"))
}

/// No exported memory has the name the request gave.
pub(crate) fn no_memory_named(shown: &str) -> EngineError {
    EngineError::MemoryAccess(format!("no exported memory named `{shown}`"))
}

/// The byte range `offset..offset + length` of a memory of `size` bytes,
/// or an error saying the memory's size.
fn range(shown: &str, size: usize, offset: u64, length: u64) -> Result<std::ops::Range<usize>, EngineError> {
    let end = offset.checked_add(length);
    match end {
        Some(end) if end <= size as u64 => Ok(offset as usize..end as usize),
        _ => Err(EngineError::MemoryAccess(format!(
            "{length} bytes at offset {offset} are outside memory `{shown}`, which is {size} bytes ({} pages)",
            size / 65536
        ))),
    }
}

/// Writes `data` at `offset` of `memory`.
pub(crate) fn write(
    store: &mut Store<StoreState>,
    shown: &str,
    memory: Memory,
    offset: u64,
    data: &[u8],
) -> Result<(), EngineError> {
    copy_in(shown, memory.data_mut(&mut *store), offset, data)
}

/// Reads `length` bytes at `offset` of `memory`.
pub(crate) fn read(
    store: &Store<StoreState>,
    shown: &str,
    memory: Memory,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, EngineError> {
    copy_out(shown, memory.data(store), offset, length)
}

/// Copies `data` into a memory's bytes at `offset`, bounds-checked; both
/// tiers write guest memory through this.
pub(crate) fn copy_in(shown: &str, memory: &mut [u8], offset: u64, data: &[u8]) -> Result<(), EngineError> {
    let r = range(shown, memory.len(), offset, data.len() as u64)?;
    memory[r].copy_from_slice(data);
    Ok(())
}

/// Copies `length` bytes at `offset` out of a memory's bytes,
/// bounds-checked; both tiers read guest memory through this.
pub(crate) fn copy_out(shown: &str, memory: &[u8], offset: u64, length: u64) -> Result<Vec<u8>, EngineError> {
    let r = range(shown, memory.len(), offset, length)?;
    Ok(memory[r].to_vec())
}
