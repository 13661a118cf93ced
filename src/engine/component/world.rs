//! A component's world as the API shows it, and how a request names one of
//! its exported functions.
//!
//! Functions are exported at the world level (`add`) or inside exported
//! interfaces (`docs:calc/math@0.1.0` exporting `add`). A request may name
//! an interface function the ways users of `wasmtime run --invoke` and of
//! WIT write it (see [`ComponentWorld::find`] and docs/API.md).

use serde::Serialize;
use utoipa::ToSchema;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Type};

use super::json::type_name;
use crate::engine::error::EngineError;
use crate::engine::types::ModuleInterface;

/// The interface a WASI 0.2 command exports, run when a request names no
/// function (as `_start` is for a preview 1 program).
pub const WASI_RUN: &str = "wasi:cli/run";

/// What code imports and exports: a core module's interface, or a
/// component's world (which says `"kind": "component"`). A module's shape is
/// the one it always had, so clients that know only modules read it as
/// before.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum CodeInterface {
    Module(ModuleInterface),
    Component(ComponentWorld),
}

/// A component's imports and exports.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ComponentWorld {
    /// Always `component`: tells a component's description from a module's.
    #[schema(value_type = String, example = "component")]
    pub kind: &'static str,
    /// Every exported function, world-level and in exported interfaces.
    pub exports: Vec<WorldFunction>,
    /// Every import, by name: interfaces (`wasi:cli/stdout@0.2.0`) and
    /// world-level functions.
    pub imports: Vec<WorldImport>,
    /// The world as WIT text, when the binary carries the type information
    /// to print it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wit: Option<String>,
}

/// One exported function.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorldFunction {
    /// The name to call it by: `func` for a world-level function,
    /// `interface#func` for one in an exported interface.
    pub name: String,
    /// The exported interface it belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Its own name.
    pub function: String,
    /// `func(a: u32, b: u32) -> u32`, types written out structurally.
    pub signature: String,
    pub params: Vec<WorldParam>,
    /// Result types (none or one in WIT).
    pub results: Vec<String>,
    #[serde(skip)]
    pub(crate) param_types: Vec<Type>,
    #[serde(skip)]
    pub(crate) result_types: Vec<Type>,
}

/// One param of an exported function.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorldParam {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

/// One import of a component.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorldImport {
    pub name: String,
    /// `interface`, `function`, `type`, `resource`, `module` or `component`.
    pub kind: &'static str,
}

impl WorldImport {
    /// Whether the server's WASI 0.2 provides it.
    pub fn is_wasi(&self) -> bool {
        self.name.starts_with("wasi:")
    }
}

impl ComponentWorld {
    /// Describes `component`, whose binary is `wasm`.
    pub(crate) fn of(engine: &wasmtime::Engine, component: &Component, wasm: &[u8]) -> Self {
        let ty = component.component_type();
        let mut exports = Vec::new();
        for (name, item) in ty.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(f) => exports.push(function(None, name, &f)),
                ComponentItem::ComponentInstance(instance) => {
                    for (func_name, inner) in instance.exports(engine) {
                        if let ComponentItem::ComponentFunc(f) = inner.ty {
                            exports.push(function(Some(name), func_name, &f));
                        }
                    }
                }
                _ => {}
            }
        }
        let imports = ty
            .imports(engine)
            .map(|(name, item)| WorldImport {
                name: name.to_string(),
                kind: kind(&item.ty),
            })
            .collect();
        ComponentWorld {
            kind: "component",
            exports,
            imports,
            wit: wit_text(wasm),
        }
    }

    /// The exported function `name` names. Accepted spellings of a function
    /// `f` in interface `ns:pkg/iface@1.0.0`: `ns:pkg/iface@1.0.0#f`,
    /// `ns:pkg/iface#f`, `ns:pkg/iface.f` and `ns:pkg/iface.f@1.0.0` (the
    /// `wasmtime run --invoke` form), `ns:pkg/iface@1.0.0.f`, `iface#f` and
    /// `iface.f`; a world-level function by its name. A spelling that fits
    /// more than one function is refused, listing them.
    pub fn find(&self, name: &str) -> Result<&WorldFunction, EngineError> {
        if let Some(f) = self
            .exports
            .iter()
            .find(|f| f.interface.is_none() && f.function == name)
        {
            return Ok(f);
        }
        let matches: Vec<&WorldFunction> = self
            .exports
            .iter()
            .filter(|f| spellings(f).iter().any(|s| s == name))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(EngineError::FunctionNotFound(format!(
                "the component exports no function `{name}`; it exports {}",
                self.listing()
            ))),
            many => Err(EngineError::FunctionNotFound(format!(
                "`{name}` could be any of {}; name one in full",
                many.iter()
                    .map(|f| format!("`{}`", f.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The `run` function of an exported `wasi:cli/run`, if there is one.
    pub fn command(&self) -> Option<&WorldFunction> {
        self.exports.iter().find(|f| {
            f.function == "run"
                && f.interface
                    .as_deref()
                    .is_some_and(|i| i == WASI_RUN || i.starts_with(&format!("{WASI_RUN}@")))
        })
    }

    /// The exported functions with their signatures, for messages.
    pub fn listing(&self) -> String {
        if self.exports.is_empty() {
            return "no functions".into();
        }
        self.exports
            .iter()
            .map(|f| format!("`{}` {}", f.name, f.signature))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether the component imports any WASI interface (its calls then
    /// report stdout, stderr and an exit code).
    pub fn imports_wasi(&self) -> bool {
        self.imports.iter().any(WorldImport::is_wasi)
    }
}

fn function(interface: Option<&str>, name: &str, ty: &wasmtime::component::types::ComponentFunc) -> WorldFunction {
    let (params, param_types): (Vec<WorldParam>, Vec<Type>) = ty
        .params()
        .map(|(n, t)| {
            let param = WorldParam {
                name: n.to_string(),
                ty: type_name(&t),
            };
            (param, t)
        })
        .unzip();
    let result_types: Vec<Type> = ty.results().collect();
    let results: Vec<String> = result_types.iter().map(type_name).collect();
    let shown: Vec<String> = params.iter().map(|p| format!("{}: {}", p.name, p.ty)).collect();
    let mut signature = format!("func({})", shown.join(", "));
    if let Some(result) = results.first() {
        signature.push_str(&format!(" -> {result}"));
    }
    WorldFunction {
        name: match interface {
            Some(i) => format!("{i}#{name}"),
            None => name.to_string(),
        },
        interface: interface.map(str::to_string),
        function: name.to_string(),
        signature,
        params,
        results,
        param_types,
        result_types,
    }
}

/// Every way a request may spell `f` (see [`ComponentWorld::find`]).
fn spellings(f: &WorldFunction) -> Vec<String> {
    let Some(interface) = &f.interface else {
        return vec![f.function.clone()];
    };
    let func = &f.function;
    let (base, version) = match interface.rsplit_once('@') {
        Some((base, version)) => (base, Some(version)),
        None => (interface.as_str(), None),
    };
    let short = base.rsplit('/').next().unwrap_or(base);
    let mut names = vec![
        format!("{interface}#{func}"),
        format!("{interface}.{func}"),
        format!("{base}#{func}"),
        format!("{base}.{func}"),
        format!("{short}#{func}"),
        format!("{short}.{func}"),
    ];
    if let Some(version) = version {
        names.push(format!("{base}.{func}@{version}"));
    }
    names
}

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) | ComponentItem::CoreFunc(_) => "function",
        ComponentItem::ComponentInstance(_) => "interface",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
    }
}

/// The component's world as WIT text, decoded from its type information.
fn wit_text(wasm: &[u8]) -> Option<String> {
    let wit_component::DecodedWasm::Component(resolve, world) = wit_component::decode(wasm).ok()? else {
        return None;
    };
    let package = resolve.worlds[world].package?;
    // The interfaces it imports and exports are in packages of their own
    // (`wasi:cli`, `test:calc`); they are printed after the world's.
    let nested: Vec<_> = resolve
        .packages
        .iter()
        .map(|(id, _)| id)
        .filter(|id| *id != package)
        .collect();
    let mut printer = wit_component::WitPrinter::default();
    printer.print(&resolve, package, &nested).ok()?;
    Some(printer.output.to_string())
}
