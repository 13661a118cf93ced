//! How WebAssembly types are shown: value type names, function signatures,
//! and the one description of extern types (functions, memories, tables,
//! globals, tags) that `GET /modules/{name}`, `/inspect`, instances and link
//! errors all use, so a type reads the same everywhere.

use std::borrow::Cow;

use serde::Serialize;
use wasmtime::{ExternType, FuncType, HeapType, Module, Mutability, RefType, ValType};

/// The short name of a value type as used in signatures and `result_types`.
pub fn type_name(ty: &ValType) -> String {
    value_type_name(ty).into_owned()
}

/// [`type_name`] without an allocation for the number types: every result
/// of every call is named (`result_types`), and `Display` would run a
/// formatter for each.
pub fn value_type_name(ty: &ValType) -> Cow<'static, str> {
    Cow::Borrowed(match ty {
        ValType::I32 => "i32",
        ValType::I64 => "i64",
        ValType::F32 => "f32",
        ValType::F64 => "f64",
        ValType::V128 => "v128",
        ValType::Ref(r) => return Cow::Owned(ref_type_name(r)),
    })
}

pub fn ref_type_name(r: &RefType) -> String {
    match (r.is_nullable(), r.heap_type()) {
        (true, HeapType::Func) => "funcref".into(),
        (true, HeapType::Extern) => "externref".into(),
        (true, HeapType::Any) => "anyref".into(),
        (true, HeapType::Exn) => "exnref".into(),
        _ => r.to_string(),
    }
}

/// Formats a function type as `(i32, i64) -> (f32)`.
pub fn signature(ty: &FuncType) -> String {
    let list = |it: &mut dyn Iterator<Item = ValType>| it.map(|t| type_name(&t)).collect::<Vec<_>>().join(", ");
    format!("({}) -> ({})", list(&mut ty.params()), list(&mut ty.results()))
}

fn limits_text(min: u64, max: Option<u64>, unit: &str) -> String {
    match max {
        Some(max) => format!("{min}..{max} {unit}"),
        None => format!("{min}.. {unit}"),
    }
}

/// The kind of an extern (`func`, `memory`, `table`, `global`, `tag`).
pub fn kind(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Func(_) => "func",
        ExternType::Memory(_) => "memory",
        ExternType::Table(_) => "table",
        ExternType::Global(_) => "global",
        ExternType::Tag(_) => "tag",
    }
}

/// The type of an extern without its kind: `(i32) -> (i32)`,
/// `1..2 pages i64 shared`, `funcref 1.. elements`, `mut i32`, `tag`.
pub fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => signature(f),
        ExternType::Memory(m) => format!(
            "{}{}{}",
            limits_text(m.minimum(), m.maximum(), "pages"),
            if m.is_64() { " i64" } else { "" },
            if m.is_shared() { " shared" } else { "" }
        ),
        ExternType::Table(t) => format!(
            "{} {}",
            type_name(&ValType::Ref(t.element().clone())),
            limits_text(t.minimum(), t.maximum(), "elements")
        ),
        ExternType::Global(g) => format!(
            "{}{}",
            if g.mutability() == Mutability::Var { "mut " } else { "" },
            type_name(g.content())
        ),
        ExternType::Tag(_) => "tag".into(),
    }
}

/// `kind type`, as link errors show an import or export: `func (i32) -> (i32)`.
pub fn describe_with_kind(ty: &ExternType) -> String {
    match ty {
        ExternType::Tag(_) => "tag".into(),
        other => format!("{} {}", kind(other), describe(other)),
    }
}

/// A module's exports and imports.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModuleInterface {
    pub exports: Vec<ExternDesc>,
    pub imports: Vec<ExternDesc>,
}

impl ModuleInterface {
    pub fn of(module: &Module) -> Self {
        ModuleInterface {
            exports: module
                .exports()
                .map(|e| ExternDesc::new(None, e.name(), &e.ty()))
                .collect(),
            imports: module
                .imports()
                .map(|i| ExternDesc::new(Some(i.module()), i.name(), &i.ty()))
                .collect(),
        }
    }
}

impl ModuleInterface {
    /// The interface of a module known to another engine than wasmtime,
    /// from its exports' and imports' types.
    pub(crate) fn of_exports(exports: Vec<(&str, ExternType)>, imports: Vec<(String, String, ExternType)>) -> Self {
        ModuleInterface {
            exports: exports
                .iter()
                .map(|(name, ty)| ExternDesc::new(None, name, ty))
                .collect(),
            imports: imports
                .iter()
                .map(|(module, name, ty)| ExternDesc::new(Some(module), name, ty))
                .collect(),
        }
    }
}

/// One export or import and its type.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExternDesc {
    /// The module an import comes from (absent for exports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    pub name: String,
    /// `func`, `memory`, `table`, `global` or `tag`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// For functions, `(i32, i32) -> (i64)`; for others a short description.
    #[serde(rename = "type")]
    pub ty: String,
    /// For functions, the param types.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<String>>,
    /// For functions, the result types.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<String>>,
}

impl ExternDesc {
    fn new(module: Option<&str>, name: &str, ty: &ExternType) -> Self {
        let (params, results) = match ty {
            ExternType::Func(f) => (
                Some(f.params().map(|t| type_name(&t)).collect()),
                Some(f.results().map(|t| type_name(&t)).collect()),
            ),
            _ => (None, None),
        };
        ExternDesc {
            module: module.map(str::to_string),
            name: name.to_string(),
            kind: kind(ty),
            ty: describe(ty),
            params,
            results,
        }
    }
}
