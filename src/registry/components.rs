//! Registered components: telling them from core modules, compiling them,
//! and the graph of registered components a component imports from.
//!
//! Components are stored like modules (same records, same store, same
//! quotas); their compiled form lives in the engine's memory only (no
//! artifact is kept), so the first call after a restart compiles them.

use std::sync::Arc;

use super::{Entry, Registry, RegistryError, ResolvedComponent, verify_digest};
use crate::engine::{CacheOutcome, CompiledComponent, EngineError, LimitKind, LinkedComponent, is_component};

impl Registry {
    /// Whether the entry `name` is a component: known from registration, or
    /// from the compile caches, else read from its binary's header once.
    pub(super) async fn entry_is_component(&self, name: &str, entry: &Entry) -> Result<bool, RegistryError> {
        if let Some(known) = entry.component.get() {
            return Ok(*known);
        }
        let known = if self.engine.is_compiled(&entry.digest) {
            false
        } else if self.engine.cached_component(&entry.digest).is_some() {
            true
        } else {
            is_component(&self.wasm(name).await?)
        };
        let _ = entry.component.set(known);
        Ok(known)
    }

    /// The component registered as `name`, with its graph (what a call
    /// needs); `None` when `name` is a core module.
    pub async fn component(&self, name: &str) -> Result<Option<ResolvedComponent>, RegistryError> {
        let entry = self.lookup(name).await?;
        if !self.entry_is_component(name, &entry).await? {
            return Ok(None);
        }
        self.component_of(name, &entry).await.map(Some)
    }

    /// The component `entry` (known to be one), compiled, with its graph.
    pub(super) async fn component_of(&self, name: &str, entry: &Entry) -> Result<ResolvedComponent, RegistryError> {
        let (compiled, compile) = self.compiled_component(name, entry).await?;
        let graph = self.component_graph(&entry.record.host_modules).await?;
        Ok(ResolvedComponent {
            compiled,
            compile,
            graph,
        })
    }

    /// The component registered as `name`, without its graph (what
    /// describing it needs); `None` when `name` is a core module.
    pub async fn component_alone(&self, name: &str) -> Result<Option<Arc<CompiledComponent>>, RegistryError> {
        let entry = self.lookup(name).await?;
        if !self.entry_is_component(name, &entry).await? {
            return Ok(None);
        }
        Ok(Some(self.compiled_component(name, &entry).await?.0))
    }

    async fn compiled_component(
        &self,
        name: &str,
        entry: &Entry,
    ) -> Result<(Arc<CompiledComponent>, CacheOutcome), RegistryError> {
        if let Some(hit) = self.engine.cached_component(&entry.digest) {
            return Ok((hit, CacheOutcome::Cached));
        }
        let (compiled, outcome) = self.engine.compile_component(self.wasm(name).await?).await?;
        verify_digest(name, entry, compiled.sha256())?;
        Ok((compiled, outcome))
    }

    /// The registered components `hosts` names, with every component they
    /// import from, each once, dependencies first. A host that is a core
    /// module is a link error: a component imports only from components.
    pub async fn component_graph(&self, hosts: &[String]) -> Result<Vec<LinkedComponent>, RegistryError> {
        let max = self.engine.settings().max_link_instances;
        let mut graph: Vec<LinkedComponent> = Vec::new();
        // Depth-first, children before their parent; `true` once a name's
        // own hosts are on the stack.
        let mut stack: Vec<(String, bool)> = hosts.iter().rev().map(|h| (h.clone(), false)).collect();
        while let Some((name, expanded)) = stack.pop() {
            if graph.iter().any(|l| l.name == name) {
                continue;
            }
            let entry = match self.lookup(&name).await {
                Err(RegistryError::NotFound(_)) => return Err(RegistryError::HostModuleNotFound(name)),
                other => other?,
            };
            if expanded {
                let (compiled, _) = self.compiled_component(&name, &entry).await?;
                graph.push(LinkedComponent { name, compiled });
                if graph.len() > max {
                    return Err(EngineError::LimitExceeded {
                        kind: LimitKind::Instances,
                        message: format!(
                            "the component links more than {max} registered components (--max-link-instances)"
                        ),
                    }
                    .into());
                }
                continue;
            }
            if !self.entry_is_component(&name, &entry).await? {
                return Err(EngineError::Link(format!(
                    "host module `{name}` is a core module; a component imports only from registered components"
                ))
                .into());
            }
            stack.push((name, true));
            stack.extend(entry.record.host_modules.iter().rev().map(|h| (h.clone(), false)));
        }
        Ok(graph)
    }
}
