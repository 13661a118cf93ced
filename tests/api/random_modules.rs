//! Random valid modules, made by wasm-smith from fixed seeds, answer alike
//! on both tiers: every exported function called with values at the edges
//! of its types, first each call alone (`POST /`), then all of them in turn
//! on one live instance, so that what a call leaves in globals, memory and
//! tables meets the next. The hand-written corpus in `tiers.rs` reaches
//! the cases we thought of; these reach instruction mixes nobody wrote
//! (control flow, traps in the middle of stores, segments out of bounds,
//! memories and tables over the server's caps).
//!
//! Each module is made to terminate (wasm-smith's `ensure_termination`: a
//! counter in a global, decremented at every loop head and function entry,
//! traps when it runs out), so no call nears the fuel or time limit or
//! the stack's depth, the answers the tiers may give differently.

use arbitrary::Unstructured;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wasm_exec_api::engine::TierMode;
use wasmparser::{CompositeInnerType, ExternalKind, Parser, Payload, ValType};

use crate::helpers::{Rng, TestApp, tier_of};
use crate::tiers::{ask_both, comparable, f32_text, f64_text, server};

/// How many modules are made. Each is a few hundred bytes; both servers
/// run it, so the test takes seconds. (When it was written, 12,000 from
/// other seeds, some with functions of up to 200 instructions, agreed
/// too, once the differences they found were fixed: docs/DESIGN.md.)
const MODULES: u64 = 400;

/// Loop iterations and calls a module may make before its counter traps.
const TERMINATION_FUEL: u32 = 300;

/// The shapes wasm-smith may make: the features both tiers run (no SIMD,
/// threads, GC or exceptions, which run compiled only), no imports (a
/// module alone), no start function (the interpreter takes none), and
/// memories and tables up to a few times the servers' caps, so that some
/// are refused.
fn config() -> wasm_smith::Config {
    wasm_smith::Config {
        allow_start_export: false,
        max_imports: 0,
        min_funcs: 1,
        max_funcs: 6,
        min_exports: 1,
        max_exports: 6,
        export_everything: true,
        max_instructions: 60,
        max_memories: 1,
        max_memory32_bytes: 32 << 20,
        memory64_enabled: false,
        max_tables: 2,
        max_table_elements: 2000,
        max_data_segments: 4,
        max_element_segments: 4,
        max_globals: 6,
        max_types: 8,
        simd_enabled: false,
        relaxed_simd_enabled: false,
        threads_enabled: false,
        gc_enabled: false,
        exceptions_enabled: false,
        custom_descriptors_enabled: false,
        ..wasm_smith::Config::default()
    }
}

/// Fuel for a corrupted module's call: far more than any call of a
/// terminating module uses (a few thousand), and a few milliseconds of
/// the interpreter's time.
const CORRUPTED_FUEL: u64 = 10_000_000;

/// A module made from `seed`, or `None` if wasm-smith could not make one
/// from its bytes.
fn module(seed: u64) -> Option<Vec<u8>> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let bytes: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    let mut module = wasm_smith::Module::new(config(), &mut Unstructured::new(&bytes)).ok()?;
    module
        .ensure_termination(TERMINATION_FUEL)
        .expect("wasm-smith made every function body");
    Some(module.to_bytes())
}

/// What the calls of a module are made from, read from its binary in one
/// pass: each exported function's name and param types, and the name its
/// memory is exported under if it has one of at least a page to begin
/// with (so that reading its first KiB cannot fail).
struct Shape {
    functions: Vec<(String, Vec<ValType>)>,
    readable_memory: Option<String>,
}

fn shape(wasm: &[u8]) -> Shape {
    let mut types = Vec::new();
    let mut functions = Vec::new();
    let mut exports = Vec::new();
    let mut pages = 0;
    let mut memory = None;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.expect("wasm-smith makes valid modules") {
            Payload::TypeSection(section) => {
                for group in section {
                    for sub in group.expect("a type").into_types() {
                        types.push(match sub.composite_type.inner {
                            CompositeInnerType::Func(f) => Some(f.params().to_vec()),
                            _ => None,
                        });
                    }
                }
            }
            // wasm-smith may write the section with nothing in it.
            Payload::ImportSection(section) => {
                assert_eq!(section.count(), 0, "the config allows no imports");
            }
            Payload::FunctionSection(section) => {
                functions.extend(section.into_iter().map(|t| t.expect("a function")));
            }
            Payload::MemorySection(section) => {
                if let Some(first) = section.into_iter().next() {
                    pages = first.expect("a memory").initial;
                }
            }
            Payload::ExportSection(section) => {
                for export in section {
                    let export = export.expect("an export");
                    match export.kind {
                        ExternalKind::Func => exports.push((export.name.to_string(), export.index)),
                        ExternalKind::Memory if export.index == 0 => memory = Some(export.name.to_string()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let functions = exports
        .into_iter()
        .map(|(name, index)| {
            let ty = functions[index as usize] as usize;
            (name, types[ty].clone().expect("a function's type is a function type"))
        })
        .collect();
    Shape {
        functions,
        readable_memory: memory.filter(|_| pages >= 1),
    }
}

/// A param of type `ty` as the API takes it: an edge of the type's range
/// or random bits, floats as exact text (NaN payloads, subnormals, signed
/// zeros), references as null.
fn param(rng: &mut Rng, ty: ValType) -> Value {
    let random = rng.next();
    match ty {
        ValType::I32 => json!(rng.pick(&[0, 1, -1, i32::MIN, i32::MAX, 65536, random as i32])),
        ValType::I64 => json!(rng.pick(&[0, 1, -1, i64::MIN, i64::MAX, random as i64]).to_string()),
        ValType::F32 => {
            let bits = rng.pick(&[
                0,
                0x8000_0000,
                0x7fc0_0000,
                0xffc0_0001,
                0x7f80_0000,
                0x3f80_0000,
                1,
                random as u32,
            ]);
            json!(f32_text(bits))
        }
        ValType::F64 => {
            let bits = rng.pick(&[
                0,
                1 << 63,
                0x7ff8 << 48,
                0xfff4 << 48,
                0x7ff0 << 48,
                0x3ff0 << 48,
                1,
                random,
            ]);
            json!(f64_text(bits))
        }
        ValType::V128 => json!(format!("0x{random:032x}")),
        ValType::Ref(_) => Value::Null,
    }
}

/// The calls made of a module: each exported function twice, with
/// different params.
fn calls(seed: u64, wasm: &[u8]) -> Vec<Value> {
    let mut rng = Rng(seed ^ 0x5851_f42d_4c95_7f2d);
    let Shape {
        functions,
        readable_memory: memory,
    } = shape(wasm);
    let mut calls = Vec::new();
    for (name, params) in functions {
        for _ in 0..2 {
            let params: Vec<Value> = params.iter().map(|&ty| param(&mut rng, ty)).collect();
            let mut call = json!({"function_name": name, "params": params});
            // The memory's first KiB after the call (after a trap too),
            // where data segments and stores at small addresses land.
            if let Some(memory) = &memory {
                call["memory_reads"] = json!([{"offset": 0, "length": 1024, "encoding": "hex", "memory": memory}]);
            }
            calls.push(call);
        }
    }
    calls
}

/// `wasm` with one to three bytes past its header replaced: mostly a
/// module that no longer decodes or validates, sometimes one that still
/// does and runs differently. Hostile bytes must get the same answer from
/// both tiers too (the interpreter's validator is not wasmtime's).
fn corrupted(seed: u64, wasm: &[u8]) -> Vec<u8> {
    let mut rng = Rng(seed ^ 0x2d35_8dcc_aa6c_78a5);
    let mut bytes = wasm.to_vec();
    for _ in 0..=rng.next() % 3 {
        let at = 8 + (rng.next() as usize) % (bytes.len() - 8);
        bytes[at] = rng.next() as u8;
    }
    bytes
}

/// A live instance of `wasm` on `app`, and every call made on it in turn:
/// the answers that must agree between tiers, and the tier each ran on.
async fn on_an_instance(app: &TestApp, wasm: &str, calls: &[Value]) -> (Vec<Value>, Vec<Option<String>>) {
    let (status, created) = app.post("/instances", &json!({"wasm_base64": wasm})).await;
    let mut answers = vec![comparable(status, &created)];
    let mut tiers = vec![tier_of(&created)];
    if status != StatusCode::CREATED {
        return (answers, tiers);
    }
    let id = created["id"].as_str().expect("an instance id");
    for call in calls {
        let (status, answer) = app.post(&format!("/instances/{id}/call"), call).await;
        answers.push(comparable(status, &answer));
        tiers.push(tier_of(&answer));
    }
    let (status, _) = app.delete(&format!("/instances/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    (answers, tiers)
}

#[tokio::test]
async fn random_modules_answer_alike_on_both_tiers() {
    use base64::Engine as _;
    let interpreter = server(TierMode::Interpreter).await;
    let compiled = server(TierMode::Compiled).await;
    let (mut made, mut one_shot, mut interpreted, mut ran, mut trapped, mut refused) = (0, 0, 0, 0, 0, 0);
    let mut instance_calls = 0;
    // One-shot calls whose answer carried the memory read after them.
    let mut memory_read = 0;
    // Corrupted modules refused as invalid, and those that still ran.
    let (mut corrupt_refused, mut corrupt_ran) = (0, 0);
    for seed in 0..MODULES {
        let Some(wasm) = module(seed) else { continue };
        made += 1;
        let calls = calls(seed, &wasm);
        let wasm_base64 = base64::engine::general_purpose::STANDARD.encode(&wasm);
        for call in &calls {
            let mut body = call.clone();
            body["wasm_base64"] = json!(wasm_base64);
            let (status, answer_i, answer_c) = ask_both(&interpreter, &compiled, &body).await;
            one_shot += 1;
            match status {
                StatusCode::OK => ran += 1,
                _ if answer_i["error"]["code"] == "trap" => trapped += 1,
                _ => refused += 1,
            }
            if tier_of(&answer_i).as_deref() == Some("interpreter") {
                interpreted += 1;
            }
            if answer_i["memory"].is_array() || answer_i["error"]["memory"].is_array() {
                memory_read += 1;
            }
            assert_ne!(
                tier_of(&answer_c).as_deref(),
                Some("interpreter"),
                "seed {seed}: {answer_c}"
            );
        }
        // The first call again, of the module with bytes replaced.
        let mut body = calls.first().cloned().unwrap_or_else(|| json!({"function_name": "f"}));
        body["wasm_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(corrupted(seed, &wasm)));
        // A replaced byte may undo the termination counter (a count that
        // starts at -980 runs 2^32 times): such a call must end on fuel,
        // in milliseconds on either tier, not on the time limit, which
        // the interpreter reaches sooner.
        body["limits"] = json!({"fuel": CORRUPTED_FUEL});
        let (status, answer_i, _) = ask_both(&interpreter, &compiled, &body).await;
        match answer_i["error"]["code"].as_str() {
            Some("invalid_module") => corrupt_refused += 1,
            _ if status == StatusCode::OK || tier_of(&answer_i).is_some() => corrupt_ran += 1,
            _ => {}
        }
        let (answers_i, tiers_i) = on_an_instance(&interpreter, &wasm_base64, &calls).await;
        let (answers_c, _) = on_an_instance(&compiled, &wasm_base64, &calls).await;
        assert_eq!(
            answers_i, answers_c,
            "seed {seed}: the tiers disagree on an instance's calls {calls:?}; tiers {tiers_i:?}"
        );
        instance_calls += answers_i.len() - 1;
    }
    eprintln!(
        "{made} modules: {one_shot} one-shot calls ({interpreted} on the interpreter; {ran} ran, {trapped} \
         trapped, {refused} refused; {memory_read} read memory after), {instance_calls} calls on instances; \
         corrupted: {corrupt_refused} refused as invalid, {corrupt_ran} ran"
    );
    // The corpus must have reached every kind of answer, mostly on the
    // interpreter, or it shows nothing.
    assert!(
        made >= MODULES * 3 / 4,
        "wasm-smith made only {made} of {MODULES} modules"
    );
    assert!(
        interpreted * 2 >= one_shot,
        "only {interpreted} of {one_shot} calls ran on the interpreter"
    );
    assert!(
        ran >= 50 && trapped >= 20 && refused >= 5,
        "ran {ran}, trapped {trapped}, refused {refused}"
    );
    assert!(instance_calls >= 100, "only {instance_calls} calls on instances");
    assert!(memory_read >= 50, "only {memory_read} calls read memory after");
    assert!(
        corrupt_refused >= 100 && corrupt_ran >= 5,
        "corrupted modules: {corrupt_refused} refused, {corrupt_ran} ran"
    );
}
