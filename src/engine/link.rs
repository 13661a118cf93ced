//! Checking a module's imports against the exports of its host modules.
//!
//! A module may import only from the registered modules it lists as host
//! modules, and only what they export. There are no host functions: an
//! import nothing satisfies is an error here, before any guest code runs,
//! with a message that names the import and what was expected.

use std::sync::Arc;

use wasmtime::ExternType;

use super::EngineError;
use super::compile::CompiledModule;
use super::values::signature;

/// A registered module taking part in an execution, under its registry name.
#[derive(Clone)]
pub struct LinkedModule {
    /// The registry name, which is also the import module name others use.
    pub name: String,
    pub compiled: Arc<CompiledModule>,
}

fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => format!("func {}", signature(f)),
        ExternType::Memory(_) => "memory".into(),
        ExternType::Table(_) => "table".into(),
        ExternType::Global(_) => "global".into(),
        ExternType::Tag(_) => "tag".into(),
    }
}

/// Checks that every import of `module` (called `who` in messages) is an
/// export of matching kind and signature of one of `hosts`.
///
/// Memory, table and global types are checked in full by wasmtime when the
/// graph is instantiated; functions are checked here so that the message can
/// show both signatures.
pub fn check_imports(
    who: &str,
    module: &CompiledModule,
    hosts: &[LinkedModule],
) -> Result<(), EngineError> {
    for import in module.module().imports() {
        let wanted = import.ty();
        let shown = format!(
            "`{}`.`{}` ({})",
            import.module(),
            import.name(),
            describe(&wanted)
        );
        let Some(host) = hosts.iter().find(|h| h.name == import.module()) else {
            let listed = if hosts.is_empty() {
                "it lists no host modules".to_string()
            } else {
                let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
                format!("its host modules are [{}]", names.join(", "))
            };
            return Err(EngineError::Link(format!(
                "{who} imports {shown}, but no host module named `{}` is linked ({listed}); register a module under that name and list it in host_modules",
                import.module()
            )));
        };
        let Some(found) = host.compiled.module().get_export(import.name()) else {
            let exports: Vec<String> = host
                .compiled
                .module()
                .exports()
                .map(|e| e.name().to_string())
                .collect();
            return Err(EngineError::Link(format!(
                "{who} imports {shown}, but host module `{}` has no export named `{}` (it exports: {})",
                host.name,
                import.name(),
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            )));
        };
        let matches = match (&wanted, &found) {
            (ExternType::Func(want), ExternType::Func(have)) => have.matches(want),
            (ExternType::Memory(_), ExternType::Memory(_))
            | (ExternType::Table(_), ExternType::Table(_))
            | (ExternType::Global(_), ExternType::Global(_))
            | (ExternType::Tag(_), ExternType::Tag(_)) => true,
            _ => false,
        };
        if !matches {
            return Err(EngineError::Link(format!(
                "{who} imports {shown}, but host module `{}` exports `{}` as {}",
                host.name,
                import.name(),
                describe(&found)
            )));
        }
    }
    Ok(())
}
