//! The interpreter's function types, shown as wasmtime's.
//!
//! The interpreter checks arguments and words its messages with the
//! compiled tier's types, so that both tiers answer alike. A wasmtime
//! `FuncType` is registered in the engine's type registry when made (a
//! lock, a hash and an allocation: about 4,000 instructions, a twentieth
//! of a never-seen module's whole request), yet the signatures modules use
//! are few: `(i32) -> i32` is most of them. So each is converted once and
//! kept, up to a bound that a flood of made-up signatures cannot pass;
//! past it a signature is converted afresh each time, as before.

use std::collections::HashMap;
use std::sync::RwLock;

use wasmtime::{FuncType, ValType};

/// Signatures kept at most. Real modules use tens; the bound only stops a
/// stream of modules with unique signatures from growing the map.
const MAX_KEPT: usize = 4096;

/// wasmi function types converted to wasmtime's, kept by signature.
pub(crate) struct FuncTypes {
    engine: wasmtime::Engine,
    kept: RwLock<HashMap<wasmi::FuncType, FuncType, foldhash::fast::RandomState>>,
}

impl FuncTypes {
    pub(crate) fn new(engine: &wasmtime::Engine) -> Self {
        FuncTypes {
            engine: engine.clone(),
            kept: RwLock::default(),
        }
    }

    /// `ty` as wasmtime's type: a reference count taken on the kept one
    /// when there is one.
    pub(crate) fn get(&self, ty: &wasmi::FuncType) -> FuncType {
        if let Some(kept) = self.kept.read().unwrap_or_else(|e| e.into_inner()).get(ty) {
            return kept.clone();
        }
        let converted = FuncType::new(
            &self.engine,
            ty.params().iter().map(to_wasmtime_type),
            ty.results().iter().map(to_wasmtime_type),
        );
        let mut kept = self.kept.write().unwrap_or_else(|e| e.into_inner());
        if kept.len() < MAX_KEPT {
            kept.insert(ty.clone(), converted.clone());
        }
        converted
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.kept.read().unwrap().len()
    }
}

/// A wasmi value type as wasmtime's.
pub(crate) fn to_wasmtime_type(ty: &wasmi::ValType) -> ValType {
    match ty {
        wasmi::ValType::I32 => ValType::I32,
        wasmi::ValType::I64 => ValType::I64,
        wasmi::ValType::F32 => ValType::F32,
        wasmi::ValType::F64 => ValType::F64,
        wasmi::ValType::V128 => ValType::V128,
        wasmi::ValType::FuncRef => ValType::FUNCREF,
        wasmi::ValType::ExternRef => ValType::EXTERNREF,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::types::signature;

    fn wasmi_type(params: &[wasmi::ValType], results: &[wasmi::ValType]) -> wasmi::FuncType {
        wasmi::FuncType::new(params.iter().copied(), results.iter().copied())
    }

    /// The `n`th list of number types, shortest first: every `n` its own
    /// list, and none longer than wasmi allows for a few thousand.
    fn nth_params(mut n: usize) -> Vec<wasmi::ValType> {
        use wasmi::ValType::{F32, F64, I32, I64};
        let mut len = 0;
        while n >= 4usize.pow(len) {
            n -= 4usize.pow(len);
            len += 1;
        }
        (0..len).map(|i| [I32, I64, F32, F64][(n >> (2 * i)) & 3]).collect()
    }

    /// A kept type is the same as a fresh conversion, and converting the
    /// same signature again keeps nothing new.
    #[test]
    fn a_signature_is_converted_once_and_kept() {
        let engine = wasmtime::Engine::default();
        let types = FuncTypes::new(&engine);
        let ty = wasmi_type(&[wasmi::ValType::I32, wasmi::ValType::F64], &[wasmi::ValType::I64]);
        let first = types.get(&ty);
        let again = types.get(&ty);
        assert_eq!(signature(&first), "(i32, f64) -> (i64)");
        assert!(FuncType::eq(&first, &again));
        assert_eq!(types.kept(), 1);
        let other = types.get(&wasmi_type(&[], &[wasmi::ValType::FuncRef]));
        assert_eq!(signature(&other), "() -> (funcref)");
        assert_eq!(types.kept(), 2);
    }

    /// Past the bound, signatures are still converted, and not kept.
    #[test]
    fn the_kept_signatures_are_bounded() {
        let engine = wasmtime::Engine::default();
        let types = FuncTypes::new(&engine);
        for n in 0..MAX_KEPT + 10 {
            let params = nth_params(n);
            assert_eq!(types.get(&wasmi_type(&params, &[])).params().len(), params.len());
        }
        assert_eq!(types.kept(), MAX_KEPT);
    }
}
