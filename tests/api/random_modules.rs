//! Random valid modules, made by wasm-smith from fixed seeds, answer alike
//! on both tiers: every exported function called with values at the edges
//! of its types, first each call alone (`POST /`), then all of them in turn
//! on one live instance, so that what a call leaves in globals, memory and
//! tables meets the next. The hand-written corpus in `tiers.rs` reaches
//! the cases we thought of; these reach instruction mixes nobody wrote
//! (control flow, traps in the middle of stores, segments out of bounds,
//! memories and tables over the server's caps). Link graphs too: a module
//! made to import from a registered random host, called inline, by name
//! and on an instance of its graph.
//!
//! Each module is made to terminate (wasm-smith's `ensure_termination`: a
//! counter in a global, decremented at every loop head and function entry,
//! traps when it runs out), so no call nears the fuel or time limit or
//! the stack's depth, the answers the tiers may give differently.

use arbitrary::Unstructured;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wasm_exec_api::engine::TierMode;
use wasmparser::{CompositeInnerType, ExternalKind, Parser, Payload, RefType, TypeRef, ValType};

use crate::helpers::{Rng, TestApp, tier_of};
use crate::tiers::{ask_both, ask_both_at, comparable, f32_text, f64_text, server};

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
    made(seed, config())
}

/// A module made from `seed` that may import what `available` imports
/// (see [`imports_of`]), up to eight of them.
fn linked_module(seed: u64, available: Vec<u8>) -> Option<Vec<u8>> {
    made(
        seed,
        wasm_smith::Config {
            available_imports: Some(available),
            max_imports: 8,
            ..config()
        },
    )
}

fn made(seed: u64, config: wasm_smith::Config) -> Option<Vec<u8>> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let bytes: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    let mut module = wasm_smith::Module::new(config, &mut Unstructured::new(&bytes)).ok()?;
    module
        .ensure_termination(TERMINATION_FUEL)
        .expect("wasm-smith made every function body");
    Some(module.to_bytes())
}

/// A module that imports every export of `wasm` from the registered module
/// `host`: what a module linked to it may import (wasm-smith's
/// `available_imports`). Most are imported with the type they are
/// exported with; one in `1 / wrong` is not (another signature, a memory
/// or table larger than the host's, a global's mutability flipped) or
/// names an export the host does not have, so that some graphs fail to
/// link, and both tiers must say why in the same words. Exports of a type
/// the shapes above do not make are left out.
fn imports_of(host: &str, wasm: &[u8], rng: &mut Rng, wrong: usize) -> Vec<u8> {
    // Names may be any UTF-8: every byte escaped.
    let text = |name: &str| -> String { name.bytes().map(|b| format!("\\{b:02x}")).collect() };
    let value = |ty: ValType| match ty {
        ValType::I32 => Some("i32"),
        ValType::I64 => Some("i64"),
        ValType::F32 => Some("f32"),
        ValType::F64 => Some("f64"),
        ValType::Ref(r) if r == RefType::FUNCREF => Some("funcref"),
        ValType::Ref(r) if r == RefType::EXTERNREF => Some("externref"),
        _ => None,
    };
    let limits = |initial: u64, maximum: Option<u64>| match maximum {
        Some(max) => format!("{initial} {max}"),
        None => initial.to_string(),
    };
    // Larger than the host's: a minimum one more (and a maximum no less).
    let larger = |initial: u64, maximum: Option<u64>| limits(initial + 1, maximum.map(|max| max.max(initial + 1)));
    let (mut types, mut functions, mut tables, mut memories, mut globals) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut wat = String::from("(module");
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.expect("wasm-smith makes valid modules") {
            Payload::TypeSection(section) => {
                for group in section {
                    for sub in group.expect("a type").into_types() {
                        types.push(match sub.composite_type.inner {
                            CompositeInnerType::Func(f) => {
                                let all = |tys: &[ValType]| tys.iter().map(|&t| value(t)).collect::<Option<Vec<_>>>();
                                all(f.params()).zip(all(f.results())).map(|(params, results)| {
                                    format!("(func (param {}) (result {}))", params.join(" "), results.join(" "))
                                })
                            }
                            _ => None,
                        });
                    }
                }
            }
            Payload::FunctionSection(section) => {
                functions.extend(section.into_iter().map(|t| {
                    let ty: &Option<String> = &types[t.expect("a function") as usize];
                    ty.clone()
                        .map(|ty| [ty, "(func (param i64 f32 i32 f64 i64) (result f64 i32))".to_string()])
                }));
            }
            Payload::TableSection(section) => {
                for table in section {
                    let ty = table.expect("a table").ty;
                    tables.push(
                        value(ValType::Ref(ty.element_type))
                            .filter(|_| !ty.table64 && !ty.shared)
                            .map(|elem| {
                                [
                                    format!("(table {} {elem})", limits(ty.initial, ty.maximum)),
                                    format!("(table {} {elem})", larger(ty.initial, ty.maximum)),
                                ]
                            }),
                    );
                }
            }
            Payload::MemorySection(section) => {
                for memory in section {
                    let ty = memory.expect("a memory");
                    let plain = !ty.memory64 && !ty.shared && ty.page_size_log2.is_none();
                    memories.push(plain.then(|| {
                        [
                            format!("(memory {})", limits(ty.initial, ty.maximum)),
                            format!("(memory {})", larger(ty.initial, ty.maximum)),
                        ]
                    }));
                }
            }
            Payload::GlobalSection(section) => {
                for global in section {
                    let ty = global.expect("a global").ty;
                    globals.push(value(ty.content_type).filter(|_| !ty.shared).map(|v| {
                        let (constant, mutable) = (format!("(global {v})"), format!("(global (mut {v}))"));
                        match ty.mutable {
                            true => [mutable, constant],
                            false => [constant, mutable],
                        }
                    }));
                }
            }
            Payload::ExportSection(section) => {
                for export in section {
                    let export = export.expect("an export");
                    let list = match export.kind {
                        ExternalKind::Func | ExternalKind::FuncExact => &functions,
                        ExternalKind::Table => &tables,
                        ExternalKind::Memory => &memories,
                        ExternalKind::Global => &globals,
                        ExternalKind::Tag => continue,
                    };
                    let Some(Some([right, wrong_type])) = list.get(export.index as usize) else {
                        continue;
                    };
                    let (name, ty) = match rng.below(wrong * 2) {
                        0 => (format!("{}!", export.name), right),
                        1 => (export.name.to_string(), wrong_type),
                        _ => (export.name.to_string(), right),
                    };
                    wat.push_str(&format!(" (import \"{}\" \"{}\" {ty})", text(host), text(&name)));
                }
            }
            _ => {}
        }
    }
    wat.push(')');
    wat::parse_str(&wat).unwrap_or_else(|e| panic!("{e}: {wat}"))
}

/// What the calls of a module are made from, read from its binary in one
/// pass: each exported function's name and param types (an imported
/// function re-exported too), and the name its memory is exported under
/// if it has one of at least a page to begin with (so that reading its
/// first KiB cannot fail), its own or imported.
struct Shape {
    functions: Vec<(String, Vec<ValType>)>,
    readable_memory: Option<String>,
    /// Whether it imports anything.
    imports: bool,
}

fn shape(wasm: &[u8]) -> Shape {
    let mut types = Vec::new();
    // Every function's type, imported ones first (the index space's order).
    let mut functions = Vec::new();
    let mut exports = Vec::new();
    let mut memories = Vec::new();
    let mut memory = None;
    let mut imports = false;
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
            Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    imports = true;
                    match import.expect("an import").ty {
                        TypeRef::Func(ty) | TypeRef::FuncExact(ty) => functions.push(ty),
                        TypeRef::Memory(ty) => memories.push(ty.initial),
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(section) => {
                functions.extend(section.into_iter().map(|t| t.expect("a function")));
            }
            Payload::MemorySection(section) => {
                memories.extend(section.into_iter().map(|m| m.expect("a memory").initial));
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
        readable_memory: memory.filter(|_| memories.first().is_some_and(|&pages| pages >= 1)),
        imports,
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
fn calls(seed: u64, shape: Shape) -> Vec<Value> {
    let mut rng = Rng(seed ^ 0x5851_f42d_4c95_7f2d);
    let Shape {
        functions,
        readable_memory: memory,
        ..
    } = shape;
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

/// A live instance made on `app` from `create` (a `POST /instances`
/// body), and every call made on it in turn: the answers that must agree
/// between tiers, and the tier each ran on.
async fn on_an_instance(app: &TestApp, create: &Value, calls: &[Value]) -> (Vec<Value>, Vec<Option<String>>) {
    let (status, created) = app.post("/instances", create).await;
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

/// [`on_an_instance`] on both tiers, whose answers must agree; how many
/// calls were made.
async fn on_instances_of_both(interpreter: &TestApp, compiled: &TestApp, create: &Value, calls: &[Value]) -> usize {
    let (answers_i, tiers_i) = on_an_instance(interpreter, create, calls).await;
    let (answers_c, _) = on_an_instance(compiled, create, calls).await;
    assert_eq!(
        answers_i, answers_c,
        "the tiers disagree on an instance of {create}'s calls {calls:?}; tiers {tiers_i:?}"
    );
    answers_i.len() - 1
}

/// How the one-shot calls went, as the interpreter server answered them
/// (the compiled server answered the same, or the call failed the test).
#[derive(Default)]
struct OneShots {
    calls: usize,
    ran: usize,
    trapped: usize,
    refused: usize,
    interpreted: usize,
}

impl OneShots {
    fn count(&mut self, status: StatusCode, answer: &Value) {
        self.calls += 1;
        match status {
            StatusCode::OK => self.ran += 1,
            _ if answer["error"]["code"] == "trap" => self.trapped += 1,
            _ => self.refused += 1,
        }
        if tier_of(answer).as_deref() == Some("interpreter") {
            self.interpreted += 1;
        }
    }

    /// That most calls ran on the interpreter, and that at least this
    /// many ran, trapped and were refused.
    fn assert_reached(&self, ran: usize, trapped: usize, refused: usize) {
        let OneShots { calls, interpreted, .. } = *self;
        assert!(
            interpreted * 2 >= calls,
            "only {interpreted} of {calls} calls ran on the interpreter"
        );
        assert!(
            self.ran >= ran && self.trapped >= trapped && self.refused >= refused,
            "ran {}, trapped {}, refused {}",
            self.ran,
            self.trapped,
            self.refused
        );
    }
}

fn base64(wasm: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(wasm)
}

#[tokio::test]
async fn random_modules_answer_alike_on_both_tiers() {
    let interpreter = server(TierMode::Interpreter).await;
    let compiled = server(TierMode::Compiled).await;
    let (mut made, mut instance_calls) = (0, 0);
    let mut one_shot = OneShots::default();
    // One-shot calls whose answer carried the memory read after them.
    let mut memory_read = 0;
    // Corrupted modules refused as invalid, and those that still ran.
    let (mut corrupt_refused, mut corrupt_ran) = (0, 0);
    for seed in 0..MODULES {
        let Some(wasm) = module(seed) else { continue };
        made += 1;
        let calls = calls(seed, shape(&wasm));
        let wasm_base64 = base64(&wasm);
        for call in &calls {
            let mut body = call.clone();
            body["wasm_base64"] = json!(wasm_base64);
            let (status, answer_i, answer_c) = ask_both(&interpreter, &compiled, &body).await;
            one_shot.count(status, &answer_i);
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
        body["wasm_base64"] = json!(base64(&corrupted(seed, &wasm)));
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
        let create = json!({"wasm_base64": wasm_base64});
        instance_calls += on_instances_of_both(&interpreter, &compiled, &create, &calls).await;
    }
    let OneShots {
        calls,
        ran,
        trapped,
        refused,
        interpreted,
    } = one_shot;
    eprintln!(
        "{made} modules: {calls} one-shot calls ({interpreted} on the interpreter; {ran} ran, {trapped} \
         trapped, {refused} refused; {memory_read} read memory after), {instance_calls} calls on instances; \
         corrupted: {corrupt_refused} refused as invalid, {corrupt_ran} ran"
    );
    // The corpus must have reached every kind of answer, mostly on the
    // interpreter, or it shows nothing.
    assert!(
        made >= MODULES * 3 / 4,
        "wasm-smith made only {made} of {MODULES} modules"
    );
    one_shot.assert_reached(50, 20, 5);
    assert!(instance_calls >= 100, "only {instance_calls} calls on instances");
    assert!(memory_read >= 50, "only {memory_read} calls read memory after");
    assert!(
        corrupt_refused >= 100 && corrupt_ran >= 5,
        "corrupted modules: {corrupt_refused} refused, {corrupt_ran} ran"
    );
}

/// How many link graphs are made: a registered host module and a module
/// that may import anything it exports (functions, memory, tables,
/// globals, mutable ones included).
const GRAPHS: u64 = 150;

/// Seeds of the host modules, apart from the single modules' above.
const HOST_SEEDS: u64 = 1 << 20;

/// One import in this many is of the wrong type or name (see
/// [`imports_of`]).
const WRONG_IMPORTS: usize = 20;

/// Random link graphs answer alike on both tiers: a module that imports
/// from a registered one, called inline (`POST /` with `host_modules`),
/// registered itself (`/execute`) and on a live instance of its graph, so
/// that the tiers' linking (types checked, a memory or a mutable global
/// shared, a host's memory or table over the caps, a host's data segment
/// out of bounds) meets random code.
#[tokio::test]
async fn random_link_graphs_answer_alike_on_both_tiers() {
    let interpreter = server(TierMode::Interpreter).await;
    let compiled = server(TierMode::Compiled).await;
    let (mut graphs, mut importing, mut executed, mut ran_linked, mut instance_calls) = (0, 0, 0, 0, 0);
    let mut one_shot = OneShots::default();
    // Graphs refused for an import of the wrong type or name.
    let mut unlinked = 0;
    for seed in 0..GRAPHS {
        let Some(host) = module(HOST_SEEDS + seed) else {
            continue;
        };
        let host_name = format!("host{seed}");
        let register = json!({"module_name": host_name, "wasm_base64": base64(&host)});
        let (status, answer, _) = ask_both_at(&interpreter, &compiled, "/register", &register).await;
        assert_eq!(status, StatusCode::CREATED, "seed {seed}: {answer}");
        let mut rng = Rng(seed ^ 0x1405_7b7e_f767_814f);
        let Some(wasm) = linked_module(seed, imports_of(&host_name, &host, &mut rng, WRONG_IMPORTS)) else {
            continue;
        };
        graphs += 1;
        let shape = shape(&wasm);
        let imports = shape.imports;
        if imports {
            importing += 1;
        }
        let calls = calls(seed, shape);
        let code = base64(&wasm);
        for call in &calls {
            let mut body = call.clone();
            body["wasm_base64"] = json!(code);
            body["host_modules"] = json!([host_name]);
            let (status, answer_i, _) = ask_both(&interpreter, &compiled, &body).await;
            one_shot.count(status, &answer_i);
            if status == StatusCode::OK && imports {
                ran_linked += 1;
            }
        }
        // The same module registered, its calls made by name.
        let name = format!("linked{seed}");
        let register = json!({"module_name": name, "wasm_base64": code, "host_modules": [host_name]});
        let (status, answer, _) = ask_both_at(&interpreter, &compiled, "/register", &register).await;
        if answer["error"]["code"] == "link_error" {
            unlinked += 1;
            continue;
        }
        assert_eq!(status, StatusCode::CREATED, "seed {seed}: {answer}");
        for call in &calls {
            let mut body = call.clone();
            body["module_name"] = json!(name);
            ask_both_at(&interpreter, &compiled, "/execute", &body).await;
            executed += 1;
        }
        let create = json!({"wasm_base64": code, "host_modules": [host_name]});
        instance_calls += on_instances_of_both(&interpreter, &compiled, &create, &calls).await;
    }
    let OneShots {
        calls,
        ran,
        trapped,
        refused,
        interpreted,
    } = one_shot;
    eprintln!(
        "{graphs} link graphs ({importing} import from their host, {unlinked} refused as link_error): {calls} \
         one-shot calls ({interpreted} on the interpreter; {ran} ran, {ran_linked} of them importing, {trapped} \
         trapped, {refused} refused), {executed} by name, {instance_calls} on instances"
    );
    assert!(
        graphs >= GRAPHS * 3 / 4,
        "wasm-smith made only {graphs} of {GRAPHS} graphs"
    );
    assert!(importing * 2 >= graphs, "only {importing} of {graphs} modules import");
    one_shot.assert_reached(30, 10, 5);
    assert!(ran_linked >= 20, "only {ran_linked} calls ran through an import");
    assert!(instance_calls >= 100, "only {instance_calls} calls on instances");
    assert!(
        unlinked >= 5 && unlinked * 4 <= graphs,
        "{unlinked} of {graphs} graphs refused as link_error"
    );
}
