//! The interpreter and compiled tiers give the same answers, and `auto`
//! moves code from the first to the second. Tiers are told apart by
//! `stats.tier`, never by timings.

use reqwest::StatusCode;
use serde_json::{Value, json};
use wasm_exec_api::engine::TierMode;

use crate::helpers::{Rng, TestApp, spawn_app_with, stats_of, test_settings, tier_of};

pub(crate) async fn server(tier: TierMode) -> TestApp {
    let mut settings = test_settings();
    settings.tier = tier;
    // Small limits, so that the corpus reaches them: 160 pages, 1000 elements.
    settings.max_memory_bytes = 10 << 20;
    settings.max_table_elements = 1000;
    spawn_app_with(settings).await
}

/// Requests whose answers must not depend on the tier: values at the edges
/// of every type, every trap kind, every limit, and errors before running.
fn corpus() -> Vec<Value> {
    let call =
        |wat: &str, function: &str, params: Value| json!({"wat": wat, "function_name": function, "params": params});
    let with_limits = |mut body: Value, limits: Value| {
        body["limits"] = limits;
        body
    };
    let with_reads = |mut body: Value, reads: Value| {
        body["memory_reads"] = reads;
        body
    };
    let binop = |ty: &str, op: &str, a: Value, b: Value| {
        call(
            &format!(
                "(module (func (export \"f\") (param {ty} {ty}) (result {ty}) ({ty}.{op} (local.get 0) (local.get 1))))"
            ),
            "f",
            json!([a, b]),
        )
    };
    let mut corpus = vec![
        binop("i32", "add", json!(2147483647), json!(1)),
        binop("i32", "div_s", json!(-2147483648), json!(-1)),
        binop("i32", "div_u", json!(1), json!(0)),
        binop("i32", "rem_s", json!(-2147483648), json!(-1)),
        binop("i64", "mul", json!("9223372036854775807"), json!("2")),
        binop("i64", "div_s", json!("-9223372036854775808"), json!("-1")),
        binop("i64", "sub", json!("-9223372036854775808"), json!("1")),
        binop("f32", "div", json!("NaN"), json!(1)),
        binop("f32", "div", json!(0), json!(0)),
        binop("f32", "add", json!("-0"), json!("-0")),
        binop("f32", "mul", json!("Infinity"), json!("-0")),
        binop("f32", "min", json!("NaN:0x200001"), json!(1)),
        binop("f32", "copysign", json!("NaN:0x1"), json!(-1)),
        binop("f64", "div", json!(1), json!("-0")),
        binop("f64", "sub", json!("0x1p-1074"), json!("0x1p-1074")),
        binop("f64", "max", json!("-NaN:0x4000000000001"), json!("Infinity")),
        binop("f64", "add", json!(0.1), json!(0.2)),
        call(
            "(module (func (export \"f\") (param f64) (result i32) (i32.trunc_f64_s (local.get 0))))",
            "f",
            json!(["NaN"]),
        ),
        call(
            "(module (func (export \"f\") (param f64) (result i32) (i32.trunc_f64_u (local.get 0))))",
            "f",
            json!([4294967296.0]),
        ),
        call(
            "(module (func (export \"f\") (param f64) (result i64) (i64.trunc_sat_f64_s (local.get 0))))",
            "f",
            json!(["-Infinity"]),
        ),
        call(
            "(module (func (export \"f\") (param f32) (result f64) (f64.promote_f32 (local.get 0))))",
            "f",
            json!(["NaN:0x7fffff"]),
        ),
        call(
            "(module (func (export \"f\") (param i64) (result f32) (f32.convert_i64_u (local.get 0))))",
            "f",
            json!(["18446744073709551615"]),
        ),
        call(
            "(module (func (export \"f\") (param i32 i64 f32 f64) (result f64 f32 i64 i32) (local.get 3) (local.get 2) (local.get 1) (local.get 0)))",
            "f",
            json!([-1, "-1", "0x1p-149", "-0x1.fffffffffffffp+1023"]),
        ),
        call("(module (func (export \"f\") unreachable))", "f", json!([])),
        call(
            "(module (memory 1) (func (export \"f\") (result i32) (i32.load (i32.const 65535))))",
            "f",
            json!([]),
        ),
        call(
            "(module (memory 1) (func (export \"f\") (memory.copy (i32.const 0) (i32.const 1) (i32.const -1))))",
            "f",
            json!([]),
        ),
        call(
            "(module (table 1 funcref) (func (export \"f\") (call_indirect (i32.const 0))))",
            "f",
            json!([]),
        ),
        call(
            "(module (table 1 funcref) (func (export \"f\") (call_indirect (i32.const 5))))",
            "f",
            json!([]),
        ),
        call(
            "(module (type $t (func (param i32))) (table funcref (elem $g)) (func $g) (func (export \"f\") (call_indirect (type $t) (i32.const 0) (i32.const 0))))",
            "f",
            json!([]),
        ),
        call("(module (func $f (export \"f\") (call $f)))", "f", json!([])),
        call(
            "(module (memory 1) (data (i32.const 65536) \"x\") (func (export \"f\")))",
            "f",
            json!([]),
        ),
        call(
            "(module (memory 1) (func (export \"f\") (result i32) (memory.grow (i32.const 1000))))",
            "f",
            json!([]),
        ),
        call(
            "(module (memory 1 2) (func (export \"f\") (result i32) (memory.grow (i32.const 2))))",
            "f",
            json!([]),
        ),
        call(
            "(module (table 1 funcref) (func (export \"f\") (result i32) (table.grow (ref.null func) (i32.const 100000))))",
            "f",
            json!([]),
        ),
        // A grow by nearly 2^32 elements is past our limit on both tiers
        // (wasmtime's pooling allocator passed its slot's size as the
        // table's maximum, which had hidden the limit; found by
        // `random_modules`).
        call(
            "(module (table 2 funcref) (func (export \"f\") (result i32) (table.grow (ref.null func) (i32.const -1000000))))",
            "f",
            json!([]),
        ),
        call("(module (memory 1000) (func (export \"f\")))", "f", json!([])),
        call("(module (table 100000 funcref) (func (export \"f\")))", "f", json!([])),
        // Over both: refused for its memory on both tiers (wasmtime makes
        // memories first, wasmi tables; found by `random_modules`).
        call(
            "(module (table 100000 funcref) (memory 1000) (func (export \"f\")))",
            "f",
            json!([]),
        ),
        with_limits(
            call("(module (func (export \"f\") (loop (br 0))))", "f", json!([])),
            json!({"fuel": 100000}),
        ),
        with_limits(
            call("(module (func (export \"f\") (loop (br 0))))", "f", json!([])),
            json!({"timeout_ms": 100, "fuel": 1_000_000_000_000u64}),
        ),
        call("(module (func (export \"g\")))", "f", json!([])),
        // The exports a message lists are in the binary's order on both
        // tiers (wasmi keeps them by name; found by `random_modules`).
        call(
            "(module (func (export \"zeta\")) (func (export \"alpha\") (param i32)))",
            "f",
            json!([]),
        ),
        call("(module (func (export \"f\") (param i32)))", "f", json!([1, 2])),
        call("(module (func (export \"f\") (param i32)))", "f", json!(["x"])),
        call(
            "(module (func (export \"f\") (param i32)))",
            "f",
            json!([4294967296u64]),
        ),
        call(
            "(module (func (export \"f\") (result i32) (i64.const 0)))",
            "f",
            json!([]),
        ),
        json!({"wasm_hex": "0061736d01000000ff", "function_name": "f"}),
    ];
    // Memory in and out, bytes params and results, named memories, and
    // accesses out of range: before, around and after a trap.
    const UPPER: &str = r#"(module (memory (export "memory") 1) (global $next (mut i32) (i32.const 1024))
      (func (export "alloc") (param i32) (result i32) (global.get $next)
        (global.set $next (i32.add (global.get $next) (local.get 0))))
      (func (export "upper") (param i32 i32) (result i32 i32) (local $i i32)
        (block $done (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get 1)))
          (i32.store8 (i32.add (local.get 0) (local.get $i))
            (i32.sub (i32.load8_u (i32.add (local.get 0) (local.get $i))) (i32.const 32)))
          (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $next)))
        (local.get 0) (local.get 1))
      (func (export "sum") (result i32) (i32.add (i32.load (i32.const 0)) (i32.load (i32.const 4))))
      (func (export "boom") (i32.store (i32.const 8) (i32.const 7)) unreachable))"#;
    let upper = |extra: Value| {
        let mut body = json!({"wat": UPPER});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    corpus.extend([
        upper(json!({"function_name": "upper", "params": [{"utf8": "hello"}], "result_encoding": "utf8"})),
        upper(
            json!({"function_name": "upper", "params": [{"hex": "61626364"}], "result_encoding": "hex",
                      "memory_reads": [{"offset": 1024, "length": 4, "encoding": "utf8"}]}),
        ),
        upper(
            json!({"function_name": "sum", "memory_writes": [{"offset": 0, "hex": "0100000002000000"}],
                      "memory_reads": [{"offset": 0, "length": 8}]}),
        ),
        upper(json!({"function_name": "sum", "memory_writes": [{"offset": 65534, "hex": "01020304"}]})),
        upper(json!({"function_name": "sum", "memory_reads": [{"offset": 65535, "length": 2}]})),
        upper(json!({"function_name": "sum", "memory_reads": [{"memory": "other", "offset": 0, "length": 2}]})),
        upper(json!({"function_name": "sum", "memory_reads": [{"memory": "host:memory", "offset": 0, "length": 2}]})),
        upper(json!({"function_name": "boom", "memory_reads": [{"offset": 8, "length": 4}]})),
        upper(json!({"function_name": "sum", "result_encoding": "utf8"})),
        call(
            "(module (func (export \"f\") (param i32 i32)))",
            "f",
            json!([{"utf8": "x"}]),
        ),
        call(
            "(module (memory (export \"a\") 1) (memory (export \"b\") 1) (func (export \"f\")))",
            "f",
            json!([]),
        ),
    ]);
    corpus.push(with_reads(
        call(
            "(module (memory (export \"a\") 1) (memory (export \"b\") 1) (func (export \"f\")))",
            "f",
            json!([]),
        ),
        json!([{"offset": 0, "length": 1}]),
    ));
    corpus.push(with_reads(
        call(
            "(module (memory (export \"mem\") 1 2) (data (i32.const 3) \"hi\") (func (export \"f\")))",
            "f",
            json!([]),
        ),
        json!([{"offset": 0, "length": 5, "encoding": "base64"}]),
    ));
    // Memory at the server's limit exactly, and one page past it.
    corpus.push(call(
        "(module (memory 1) (func (export \"f\") (result i32) (memory.grow (i32.const 159))))",
        "f",
        json!([]),
    ));
    corpus.push(call(
        "(module (memory 1) (func (export \"f\") (result i32) (memory.grow (i32.const 160))))",
        "f",
        json!([]),
    ));
    corpus
}

/// Sends `body` to `POST /` of both servers, checks that the answers agree
/// where they must, and returns the interpreter's status and both answers.
pub(crate) async fn ask_both(interpreter: &TestApp, compiled: &TestApp, body: &Value) -> (StatusCode, Value, Value) {
    ask_both_at(interpreter, compiled, "/", body).await
}

/// [`ask_both`] of a `POST` to `path`.
pub(crate) async fn ask_both_at(
    interpreter: &TestApp,
    compiled: &TestApp,
    path: &str,
    body: &Value,
) -> (StatusCode, Value, Value) {
    let (status_i, answer_i) = interpreter.post(path, body).await;
    let (status_c, answer_c) = compiled.post(path, body).await;
    assert_eq!(
        comparable(status_i, &answer_i),
        comparable(status_c, &answer_c),
        "the tiers disagree on {path} {body}:\ninterpreter: {answer_i}\ncompiled: {answer_c}"
    );
    (status_i, answer_i, answer_c)
}

/// The parts of a response that must agree between tiers: status, results
/// and their types, error code, trap and limit kinds, limits hit.
pub(crate) fn comparable(status: StatusCode, body: &Value) -> Value {
    let error = &body["error"];
    let stats = stats_of(body);
    json!({
        "status": status.as_u16(),
        "results": body["results"],
        "result_types": body["result_types"],
        "code": error["code"],
        "trap": error["trap"],
        "limit": error["limit"],
        "limits_hit": stats["limits_hit"],
        "memory": body["memory"],
        "error_memory": error["memory"],
        // A trap's message carries a backtrace on the compiled tier only.
        "message": error["message"].as_str().map(|m| m.split(" (in ").next().unwrap_or(m)),
    })
}

#[tokio::test]
async fn both_tiers_answer_the_same_corpus_alike() {
    let interpreter = server(TierMode::Interpreter).await;
    let compiled = server(TierMode::Compiled).await;
    let mut interpreted = 0;
    for body in corpus() {
        let (_, answer_i, answer_c) = ask_both(&interpreter, &compiled, &body).await;
        if let Some(tier) = tier_of(&answer_i) {
            assert_eq!(tier, "interpreter", "{body}: {answer_i}");
            interpreted += 1;
        }
        if let Some(tier) = tier_of(&answer_c) {
            assert_eq!(tier, "compiled", "{body}: {answer_c}");
        }
        // No call consumes more fuel than its limit, on either tier.
        if let Some(fuel) = body["limits"]["fuel"].as_u64() {
            for answer in [&answer_i, &answer_c] {
                let used = answer["error"]["stats"]["fuel_consumed"].as_u64().unwrap_or(0);
                assert!(used <= fuel, "{body}: used {used} of {fuel}: {answer}");
            }
        }
    }
    assert!(interpreted >= 50, "only {interpreted} requests ran on the interpreter");
}

#[tokio::test]
async fn code_the_interpreter_cannot_run_goes_to_the_compiled_tier() {
    let interpreter = server(TierMode::Interpreter).await;
    // Imports (WASI here) need the compiled tier's linker; a start function
    // would run before the first fuel slice could stop it; reference values
    // are not converted by the interpreter tier.
    let bodies = [
        json!({"wat": "(module (func (export \"f\") (result funcref) (ref.null func)))", "function_name": "f"}),
        json!({"wat": "(module (import \"wasi_snapshot_preview1\" \"proc_exit\" (func (param i32))) (func (export \"_start\")))"}),
        json!({"wat": "(module (func $s) (start $s) (func (export \"f\")))", "function_name": "f"}),
    ];
    for body in bodies {
        let (status, answer) = interpreter.post("/", &body).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
        assert_eq!(answer["stats"]["tier"], "compiled", "{body}: {answer}");
    }
}

#[tokio::test]
async fn in_auto_mode_code_seen_again_is_compiled_in_the_background() {
    let app = server(TierMode::Auto).await;
    let body = json!({"wat": "(module (func (export \"f\") (param i64) (result i64) (i64.mul (local.get 0) (i64.const 3))))",
                      "function_name": "f", "params": ["3074457345618258602"]});
    let (status, first) = app.post("/", &body).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["stats"]["tier"], "interpreter", "{first}");
    assert!(first["stats"].get("compile").is_none(), "nothing was compiled: {first}");
    // The second sighting starts a compile; later calls run compiled once it
    // is done. Poll (bounded) rather than time it.
    let mut tiers = Vec::new();
    for _ in 0..200 {
        let (status, answer) = app.post("/", &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["results"], first["results"], "the tiers disagree: {answer}");
        let tier = answer["stats"]["tier"].as_str().unwrap().to_string();
        let done = tier == "compiled";
        tiers.push(tier);
        if done {
            assert_eq!(answer["stats"]["compile"], "cached", "{answer}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("never promoted to the compiled tier: {tiers:?}");
}

#[tokio::test]
async fn in_auto_mode_code_seen_once_is_never_compiled() {
    let app = server(TierMode::Auto).await;
    for i in 0..5 {
        let body = json!({"wat": format!("(module (func (export \"f\") (result i32) (i32.const {i})))"), "function_name": "f"});
        let (status, answer) = app.post("/", &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["stats"]["tier"], "interpreter", "{answer}");
        assert_eq!(answer["results"], json!([i]));
    }
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wasm_exec_compile_cache_misses_total 0")),
        "a module seen once was compiled:\n{metrics}"
    );
}

/// A value's exact text for the API: hex float literals, `NaN:0x…` payloads.
pub(crate) fn f32_text(bits: u32) -> String {
    let sign = if bits >> 31 == 1 { "-" } else { "" };
    let (exp, mant) = ((bits >> 23) & 0xff, bits & 0x7f_ffff);
    match exp {
        0xff if mant == 0 => format!("{sign}Infinity"),
        0xff => format!("{sign}NaN:0x{mant:x}"),
        0 => format!("{sign}0x0.{:06x}p-126", mant << 1),
        _ => format!("{sign}0x1.{:06x}p{}", mant << 1, exp as i32 - 127),
    }
}

pub(crate) fn f64_text(bits: u64) -> String {
    let sign = if bits >> 63 == 1 { "-" } else { "" };
    let (exp, mant) = ((bits >> 52) & 0x7ff, bits & 0xf_ffff_ffff_ffff);
    match exp {
        0x7ff if mant == 0 => format!("{sign}Infinity"),
        0x7ff => format!("{sign}NaN:0x{mant:x}"),
        0 => format!("{sign}0x0.{mant:013x}p-1022"),
        _ => format!("{sign}0x1.{mant:013x}p{}", exp as i64 - 1023),
    }
}

/// Values pass through both tiers bit for bit: random bit patterns (NaN
/// payloads, subnormals, infinities, signed zeros among them) go in as
/// exact text and come back both as values and as their bits
/// (`reinterpret`), which must equal the input; the tiers' answers must be
/// identical.
#[tokio::test]
async fn values_round_trip_bit_for_bit_on_both_tiers() {
    let interpreter = server(TierMode::Interpreter).await;
    let compiled = server(TierMode::Compiled).await;
    const ID: &str = r#"(module (func (export "id") (param f32 f64 i64 i32) (result f32 i32 f64 i64 i64 i32)
        (local.get 0) (i32.reinterpret_f32 (local.get 0))
        (local.get 1) (i64.reinterpret_f64 (local.get 1))
        (local.get 2) (local.get 3)))"#;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.next();
    let specials32 = [
        0u32,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0xffc0_0001,
        0x7f80_0001,
        1,
        0x807f_ffff,
    ];
    let specials64 = [
        0u64,
        1 << 63,
        0x7ff0 << 48,
        0xfff0 << 48,
        0x7ff8 << 48,
        0x7ff0_0000_0000_0001,
        1,
        u64::MAX,
    ];
    for i in 0..150 {
        let r = next();
        let f32_bits = specials32.get(i).copied().unwrap_or(r as u32);
        let f64_bits = specials64.get(i).copied().unwrap_or(next());
        let int = next() as i64;
        let body = json!({"wat": ID, "function_name": "id",
                          "params": [f32_text(f32_bits), f64_text(f64_bits), int.to_string(), r as i32]});
        let (status_i, answer_i) = interpreter.post("/", &body).await;
        let (status_c, answer_c) = compiled.post("/", &body).await;
        assert_eq!(status_i, StatusCode::OK, "{body}: {answer_i}");
        assert_eq!(status_c, StatusCode::OK, "{body}: {answer_c}");
        assert_eq!(answer_i["results"], answer_c["results"], "the tiers disagree on {body}");
        assert_eq!(answer_i["stats"]["tier"], "interpreter");
        let results = &answer_c["results"];
        assert_eq!(
            results[1],
            json!(f32_bits as i32),
            "f32 bits changed: {body} -> {results}"
        );
        assert_eq!(
            results[3].to_string().trim_matches('"'),
            (f64_bits as i64).to_string(),
            "f64 bits changed: {body} -> {results}"
        );
        assert_eq!(
            results[4].to_string().trim_matches('"'),
            int.to_string(),
            "{body} -> {results}"
        );
        assert_eq!(results[5], json!(r as i32), "{body} -> {results}");
    }
}

/// A first call that runs long on the interpreter has its module compiled
/// in the background at once: the next call runs compiled even though the
/// module was sent only once before.
#[tokio::test]
async fn in_auto_mode_a_long_interpreted_call_starts_a_compile() {
    let app = server(TierMode::Auto).await;
    let body = json!({"wat": r#"(module (func (export "count") (param i32) (result i32) (local i32)
        (loop (local.set 1 (i32.add (local.get 1) (i32.const 1))) (br_if 0 (i32.lt_u (local.get 1) (local.get 0))))
        (local.get 1)))"#, "function_name": "count", "params": [10_000_000]});
    let (status, first) = app.post("/", &body).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["stats"]["tier"], "interpreter", "{first}");
    assert_eq!(first["results"], json!([10_000_000]));
    assert!(
        first["stats"]["fuel_consumed"].as_u64().unwrap() >= 20_000_000,
        "{first}"
    );
    // Poll the compile counter (bounded) without sending the module again.
    let mut compiled = false;
    for _ in 0..400 {
        let metrics = app.metrics().await;
        if metrics
            .lines()
            .any(|l| l.starts_with("wasm_exec_compile_cache_misses_total 1"))
        {
            compiled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(compiled, "no background compile started after a long interpreted call");
    let (status, second) = app.post("/", &body).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["stats"]["tier"], "compiled", "{second}");
    assert_eq!(second["results"], first["results"]);
}

/// A live instance keeps its state on either tier, and answers each call
/// as the other tier would: globals and memory carried across calls, a trap
/// that leaves the instance usable, memory growth against the instance's
/// limit, fuel per call, memory writes and reads, a reactor's
/// `_initialize` run once at creation.
#[tokio::test]
async fn live_instances_answer_alike_on_both_tiers() {
    let wat = r#"(module
      (memory (export "memory") 1)
      (global $n (mut i64) (i64.const 0))
      (global $inits (mut i32) (i32.const 0))
      (func (export "_initialize") (global.set $inits (i32.add (global.get $inits) (i32.const 1))))
      (func (export "inits") (result i32) (global.get $inits))
      (func (export "bump") (param i64) (result i64)
        (global.set $n (i64.add (global.get $n) (local.get 0))) (global.get $n))
      (func (export "store") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
      (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
      (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
      (func (export "size") (result i32) (memory.size))
      (func (export "div") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
      (func (export "spin") (loop (br 0))))"#;
    let calls = [
        json!({"function_name": "inits"}),
        json!({"function_name": "bump", "params": ["9007199254740993"]}),
        json!({"function_name": "bump", "params": [-2]}),
        json!({"function_name": "store", "params": [65532, -7]}),
        json!({"function_name": "load", "params": [65532]}),
        json!({"function_name": "load", "params": [65533]}),
        json!({"function_name": "div", "params": [1, 0]}),
        json!({"function_name": "bump", "params": [0]}),
        json!({"function_name": "grow", "params": [100]}),
        json!({"function_name": "grow", "params": [100]}),
        json!({"function_name": "size"}),
        json!({"function_name": "spin", "limits": {"fuel": 100000}}),
        json!({"function_name": "load", "params": [16], "memory_writes": [{"offset": 16, "hex": "2a000000"}],
               "memory_reads": [{"offset": 14, "length": 6}]}),
        json!({"function_name": "inits"}),
    ];
    let mut answers: Vec<Vec<Value>> = Vec::new();
    for (tier, name) in [(TierMode::Interpreter, "interpreter"), (TierMode::Compiled, "compiled")] {
        let app = server(tier).await;
        let (status, created) = app.post("/instances", &json!({"wat": wat})).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["tier"], name, "{created}");
        assert_eq!(created["stats"]["tier"], name, "{created}");
        let id = created["id"].as_str().unwrap();
        let mut seen = Vec::new();
        for call in &calls {
            let (status, answer) = app.post(&format!("/instances/{id}/call"), call).await;
            let stats = stats_of(&answer);
            assert_eq!(stats["tier"], name, "{call}: {answer}");
            if let Some(fuel) = call["limits"]["fuel"].as_u64() {
                assert!(stats["fuel_consumed"].as_u64().unwrap() <= fuel, "{call}: {answer}");
            }
            seen.push(comparable(status, &answer));
        }
        let (_, described) = app.get(&format!("/instances/{id}")).await;
        assert_eq!(described["tier"], name, "{described}");
        seen.push(json!({"memory_bytes": described["memory_bytes"], "exports": described["exports"]}));
        answers.push(seen);
    }
    assert_eq!(answers[0], answers[1], "the tiers disagree");
    // What the calls above must have seen, on both tiers.
    let results: Vec<&Value> = answers[0].iter().map(|a| &a["results"]).collect();
    assert_eq!(results[0], &json!([1]), "_initialize ran once");
    assert_eq!(results[2], &json!([9007199254740991i64]), "state carried across calls");
    assert_eq!(answers[0][6]["trap"], "integer_divide_by_zero");
    assert_eq!(results[7], &json!([9007199254740991i64]), "usable after a trap");
    assert_eq!(results[8], &json!([1]));
    assert_eq!(results[9], &json!([-1]), "growth past the 160-page limit is refused");
    assert_eq!(answers[0][11]["limit"], "fuel");
    assert_eq!(answers[0][12]["memory"][0]["data"], "00002a000000");
    assert_eq!(answers[0][14]["memory_bytes"], json!(101 * 65536));
}

/// A reactor's `_initialize` runs before a one-shot call on both tiers.
#[tokio::test]
async fn a_reactor_is_initialized_before_a_one_shot_call_on_both_tiers() {
    let body = json!({"wat": r#"(module (global $g (mut i32) (i32.const 0))
        (func (export "_initialize") (global.set $g (i32.const 42)))
        (func (export "get") (result i32) (global.get $g)))"#, "function_name": "get"});
    for (tier, name) in [(TierMode::Interpreter, "interpreter"), (TierMode::Compiled, "compiled")] {
        let app = server(tier).await;
        let (status, answer) = app.post("/", &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["results"], json!([42]), "{answer}");
        assert_eq!(answer["stats"]["tier"], name, "{answer}");
    }
}

const COUNTER: &str = r#"(module
  (global $n (mut i32) (i32.const 0))
  (func (export "next") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n))
  (func (export "triple") (param i64) (result i64) (i64.mul (local.get 0) (i64.const 3))))"#;

/// Registering code the interpreter can run does not wait for its compile:
/// calls run on the interpreter, compiling nothing, until the background
/// compile lands; then they run compiled, and the compiled artifact is kept
/// for the next start.
#[tokio::test]
async fn a_registered_module_runs_on_the_interpreter_until_its_background_compile_lands() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::helpers::spawn_app_on(dir.path()).await;
    let (status, created) = app.register_wat("counter", COUNTER, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["exports"][0]["name"], "next", "{created}");
    assert_eq!(created["exports"][1]["type"], "(i64) -> (i64)", "{created}");
    let mut tiers = Vec::new();
    for _ in 0..400 {
        let (status, body) = app.execute("counter", "triple", json!(["3074457345618258602"])).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"], json!([9223372036854775806i64]), "{body}");
        let tier = body["stats"]["tier"].as_str().unwrap().to_string();
        match tier.as_str() {
            "interpreter" => assert!(body["stats"].get("compile").is_none(), "{body}"),
            _ => assert_eq!(body["stats"]["compile"], "cached", "compiled in the background: {body}"),
        }
        tiers.push(tier);
        if tiers.last().unwrap() == "compiled" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        tiers.last().map(String::as_str),
        Some("compiled"),
        "never compiled: {tiers:?}"
    );
    app.stop().await;
    let app = crate::helpers::spawn_app_on(dir.path()).await;
    let (status, body) = app.execute("counter", "triple", json!([2])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stats"]["tier"], "compiled", "{body}");
    assert_eq!(body["stats"]["compile"], "loaded", "the artifact was kept: {body}");
}

/// With `--tier interpreter`, registered modules, and live instances of
/// them, run there; they are never compiled in the background.
#[tokio::test]
async fn with_tier_interpreter_registered_modules_and_their_instances_run_there() {
    let app = server(TierMode::Interpreter).await;
    let (status, created) = app.register_wat("counter", COUNTER, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for _ in 0..3 {
        let (status, body) = app.execute("counter", "next", json!([])).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"], json!([1]), "a fresh instance per call: {body}");
        assert_eq!(body["stats"]["tier"], "interpreter", "{body}");
    }
    let (status, detail) = app.get("/modules/counter").await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["exports"], created["exports"]);
    let (status, instance) = app.post("/instances", &json!({"module_name": "counter"})).await;
    assert_eq!(status, StatusCode::CREATED, "{instance}");
    assert_eq!(instance["tier"], "interpreter", "{instance}");
    assert_eq!(instance["module"], "counter", "{instance}");
    let id = instance["id"].as_str().unwrap();
    for n in 1..=3 {
        let (_, body) = app
            .post(&format!("/instances/{id}/call"), &json!({"function_name": "next"}))
            .await;
        assert_eq!(body["results"], json!([n]), "{body}");
    }
    let (_, body) = app.execute("counter", "nope", json!([])).await;
    assert_eq!(body["error"]["code"], "function_not_found", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("module `counter`"),
        "{body}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("wasm_exec_compile_cache_misses_total 0"),
        "nothing was compiled"
    );
}

/// Code the interpreter refuses at registration is not stored: the
/// compiled tier's check gives the same `invalid_module` as ever.
#[tokio::test]
async fn an_invalid_module_is_refused_at_registration_on_every_tier() {
    for tier in [TierMode::Auto, TierMode::Interpreter, TierMode::Compiled] {
        let app = server(tier).await;
        let (status, body) = app
            .register_wat("bad", "(module (func (export \"f\") (result i32) (i64.const 1)))", &[])
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_module")),
            "{tier:?}: {body}"
        );
        let (status, _) = app.get("/modules/bad").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{tier:?}: nothing stored");
    }
}

/// The WASI functions the interpreter provides, imported under short names.
const WASI_IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $fd_fdstat_set_flags (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_res_get" (func $clock_res_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1000) "hello, ")
  (data (i32.const 1007) "world\n")
  (data (i32.const 1100) "/etc/passwd")
  ;; iovecs at 200: (1000, 7) (1007, 6); an empty one at 216; one for reading at 224: (2000, 5)
  (data (i32.const 200) "\e8\03\00\00\07\00\00\00\ef\03\00\00\06\00\00\00")
  (data (i32.const 216) "\00\00\00\00\00\00\00\00")
  (data (i32.const 224) "\d0\07\00\00\05\00\00\00")
"#;

/// WASI calls answered alike on both tiers: what they return, write into
/// memory, print and exit with, including the errors (descriptors not
/// open, seeking stdio, no directories, bad flags) and the traps (pointers
/// out of bounds or misaligned).
#[tokio::test]
async fn wasi_calls_answer_alike_on_both_tiers() {
    let cases: Vec<(&str, &str)> = vec![
        (
            "args sizes and list",
            "(drop (call $args_sizes_get (i32.const 0) (i32.const 4))) (call $args_get (i32.const 16) (i32.const 64))",
        ),
        (
            "environ sizes and list",
            "(drop (call $environ_sizes_get (i32.const 0) (i32.const 4))) (call $environ_get (i32.const 16) (i32.const 64))",
        ),
        (
            "write the first non-empty iovec",
            "(call $fd_write (i32.const 1) (i32.const 200) (i32.const 2) (i32.const 8))",
        ),
        (
            "write skipping an empty iovec",
            "(call $fd_write (i32.const 2) (i32.const 216) (i32.const 2) (i32.const 8))",
        ),
        (
            "write nothing",
            "(call $fd_write (i32.const 1) (i32.const 216) (i32.const 1) (i32.const 8))",
        ),
        (
            "write to stdin",
            "(call $fd_write (i32.const 0) (i32.const 200) (i32.const 1) (i32.const 8))",
        ),
        (
            "write to an unknown fd",
            "(call $fd_write (i32.const 9) (i32.const 200) (i32.const 1) (i32.const 8))",
        ),
        (
            "write after closing stdout",
            "(drop (call $fd_close (i32.const 1))) (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 8))",
        ),
        (
            "close twice",
            "(drop (call $fd_close (i32.const 2))) (call $fd_close (i32.const 2))",
        ),
        (
            "read stdin in pieces",
            "(drop (call $fd_read (i32.const 0) (i32.const 224) (i32.const 1) (i32.const 8))) (drop (call $fd_read (i32.const 0) (i32.const 224) (i32.const 1) (i32.const 12))) (call $fd_read (i32.const 0) (i32.const 224) (i32.const 1) (i32.const 12))",
        ),
        (
            "read from stdout",
            "(call $fd_read (i32.const 1) (i32.const 224) (i32.const 1) (i32.const 8))",
        ),
        (
            "seek stdout",
            "(call $fd_seek (i32.const 1) (i64.const 0) (i32.const 0) (i32.const 8))",
        ),
        (
            "seek with a bad whence",
            "(call $fd_seek (i32.const 1) (i64.const 0) (i32.const 7) (i32.const 8))",
        ),
        (
            "seek an unknown fd",
            "(call $fd_seek (i32.const 5) (i64.const 0) (i32.const 1) (i32.const 8))",
        ),
        ("fdstat of stdin", "(call $fd_fdstat_get (i32.const 0) (i32.const 48))"),
        ("fdstat of stderr", "(call $fd_fdstat_get (i32.const 2) (i32.const 48))"),
        (
            "fdstat of an unknown fd",
            "(call $fd_fdstat_get (i32.const 3) (i32.const 48))",
        ),
        (
            "set flags on stdout",
            "(call $fd_fdstat_set_flags (i32.const 1) (i32.const 1))",
        ),
        (
            "set bad flags",
            "(call $fd_fdstat_set_flags (i32.const 1) (i32.const 64))",
        ),
        (
            "no preopened directory",
            "(call $fd_prestat_get (i32.const 3) (i32.const 48))",
        ),
        (
            "prestat of stdout",
            "(call $fd_prestat_get (i32.const 1) (i32.const 48))",
        ),
        (
            "dir name of stdout",
            "(call $fd_prestat_dir_name (i32.const 1) (i32.const 48) (i32.const 8))",
        ),
        (
            "dir name of an unknown fd",
            "(call $fd_prestat_dir_name (i32.const 3) (i32.const 48) (i32.const 8))",
        ),
        (
            "open a host file",
            "(call $path_open (i32.const 3) (i32.const 1) (i32.const 1100) (i32.const 11) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 8))",
        ),
        (
            "open with bad flags",
            "(call $path_open (i32.const 3) (i32.const 2) (i32.const 1100) (i32.const 11) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 8))",
        ),
        (
            "open bad UTF-8",
            "(i32.store8 (i32.const 1100) (i32.const 255)) (call $path_open (i32.const 3) (i32.const 1) (i32.const 1100) (i32.const 11) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 8))",
        ),
        (
            "cpu clocks",
            "(drop (call $clock_time_get (i32.const 2) (i64.const 1) (i32.const 8))) (call $clock_res_get (i32.const 3) (i32.const 8))",
        ),
        (
            "an unknown clock",
            "(call $clock_time_get (i32.const 9) (i64.const 1) (i32.const 8))",
        ),
        ("random bytes", "(call $random_get (i32.const 8) (i32.const 0))"),
        ("yield", "(call $sched_yield)"),
        ("exit 3", "(call $proc_exit (i32.const 3)) (i32.const 99)"),
        ("exit 200", "(call $proc_exit (i32.const 200)) (i32.const 99)"),
        ("exit -1", "(call $proc_exit (i32.const -1)) (i32.const 99)"),
        (
            "exit after printing",
            "(drop (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 8))) (call $proc_exit (i32.const 0)) (i32.const 99)",
        ),
        (
            "iovecs out of bounds",
            "(call $fd_write (i32.const 1) (i32.const 65532) (i32.const 1) (i32.const 8))",
        ),
        (
            "iovecs misaligned",
            "(call $fd_write (i32.const 1) (i32.const 202) (i32.const 1) (i32.const 8))",
        ),
        (
            "a buffer out of bounds",
            "(i32.store (i32.const 300) (i32.const 65530)) (i32.store (i32.const 304) (i32.const 100)) (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 8))",
        ),
        (
            "nwritten out of bounds",
            "(call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 65535))",
        ),
        ("argc misaligned", "(call $args_sizes_get (i32.const 2) (i32.const 4))"),
        (
            "fdstat out of bounds",
            "(call $fd_fdstat_get (i32.const 1) (i32.const 65528))",
        ),
        (
            "random past the end",
            "(call $random_get (i32.const 65000) (i32.const 100000))",
        ),
        (
            "read into a buffer out of bounds",
            "(i32.store (i32.const 300) (i32.const 65534)) (i32.store (i32.const 304) (i32.const 100)) (call $fd_read (i32.const 0) (i32.const 300) (i32.const 1) (i32.const 8))",
        ),
    ];
    let interpreter = server(TierMode::Interpreter).await;
    let compiled = server(TierMode::Compiled).await;
    for (name, body) in cases {
        let wat = format!("(module {WASI_IMPORTS} (func (export \"f\") (result i32) {body}))");
        let request = json!({
            "wat": wat, "function_name": "f",
            "wasi": {"args": ["one", "two words"], "env": {"B": "2", "A": "1"}, "stdin": "0123456789"},
            "memory_reads": [{"offset": 0, "length": 96}],
        });
        let mut answers = Vec::new();
        for (app, tier) in [(&interpreter, "interpreter"), (&compiled, "compiled")] {
            let (status, body) = app.post("/", &request).await;
            let stats = stats_of(&body);
            assert_eq!(stats["tier"], tier, "{name}: {body}");
            let error = &body["error"];
            let mut seen = comparable(status, &body);
            seen["message"] = error["message"]
                .as_str()
                .map(|m| m.rsplit(": ").next().unwrap_or(m).to_string())
                .into();
            for field in ["stdout", "stderr", "exit_code", "stdout_truncated", "stderr_truncated"] {
                seen[field] = if body[field].is_null() {
                    error[field].clone()
                } else {
                    body[field].clone()
                };
            }
            answers.push(seen);
        }
        if name.contains("clock") || name.contains("random") {
            // Times and random bytes differ by nature; what they return does not.
            for a in &mut answers {
                a["memory"] = Value::Null;
            }
        }
        assert_eq!(answers[0], answers[1], "the tiers disagree on {name}");
    }
}

/// A WASI instance keeps its world across calls on either tier: stdin is
/// read on from where the last call stopped, and each call reports its own
/// output.
#[tokio::test]
async fn a_wasi_instance_carries_its_world_across_calls_on_both_tiers() {
    let wat = format!(
        r#"(module {WASI_IMPORTS}
        (func (export "echo") (result i32)
          (drop (call $fd_read (i32.const 0) (i32.const 224) (i32.const 1) (i32.const 8)))
          (i32.store (i32.const 300) (i32.const 2000)) (i32.store (i32.const 304) (i32.load (i32.const 8)))
          (drop (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 12)))
          (i32.load (i32.const 8))))"#
    );
    let mut answers = Vec::new();
    for (tier, name) in [(TierMode::Interpreter, "interpreter"), (TierMode::Compiled, "compiled")] {
        let app = server(tier).await;
        let (status, created) = app
            .post("/instances", &json!({"wat": wat, "wasi": {"stdin": "abcdefghijkl"}}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["tier"], name, "{created}");
        let id = created["id"].as_str().unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (_, body) = app
                .post(&format!("/instances/{id}/call"), &json!({"function_name": "echo"}))
                .await;
            assert_eq!(body["stats"]["tier"], name, "{body}");
            seen.push(json!([body["results"], body["stdout"], body["exit_code"]]));
        }
        answers.push(seen);
    }
    assert_eq!(answers[0], answers[1], "the tiers disagree");
    assert_eq!(answers[0][0], json!([[5], "abcde", 0]));
    assert_eq!(answers[0][2], json!([[2], "kl", 0]));
    assert_eq!(answers[0][3], json!([[0], "", 0]));
}

/// Registers the modules the link-graph corpus imports from.
async fn register_hosts(app: &TestApp) {
    let hosts: [(&str, &str, &[&str]); 4] = [
        (
            "counter",
            r#"(module (global $n (export "n") (mut i32) (i32.const 0)) (memory (export "memory") 1 3)
               (table (export "table") 2 funcref)
               (func (export "bump") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1)))
                 (i32.store (i32.const 8) (global.get $n)) (global.get $n))
               (func (export "boom") (result i32) (i32.div_u (i32.const 1) (i32.const 0))))"#,
            &[],
        ),
        (
            "left",
            r#"(module (import "counter" "bump" (func $b (result i32))) (func (export "go") (result i32) (call $b)))"#,
            &["counter"],
        ),
        (
            "right",
            r#"(module (import "counter" "bump" (func $b (result i32))) (func (export "go") (result i32) (call $b)))"#,
            &["counter"],
        ),
        (
            "init",
            r#"(module (memory (export "memory") 1) (global $g (mut i32) (i32.const 0))
               (func (export "_initialize") (global.set $g (i32.const 40)))
               (func (export "get") (result i32) (global.get $g)))"#,
            &[],
        ),
    ];
    for (name, wat, deps) in hosts {
        let (status, body) = app.register_wat(name, wat, deps).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
    }
}

/// Link graphs run whole on the interpreter, and answer as the compiled
/// tier does: a diamond shares one instance of its common host, a host's
/// memory is readable as `host:export`, a host's `_initialize` runs, and
/// every link error and limit reads the same.
#[tokio::test]
async fn link_graphs_answer_alike_on_both_tiers() {
    let run = |wat: &str, function: &str, hosts: &[&str]| json!({"wat": format!("(module {wat})"), "function_name": function, "host_modules": hosts});
    let diamond = r#"(import "left" "go" (func $l (result i32))) (import "right" "go" (func $r (result i32)))
        (func (export "f") (result i32) (drop (call $l)) (call $r))"#;
    let mut cases = vec![
        run(diamond, "f", &["left", "right"]),
        {
            let mut body = run(diamond, "f", &["left", "right"]);
            body["memory_reads"] = json!([{"memory": "counter:memory", "offset": 8, "length": 4}]);
            body
        },
        run(
            r#"(import "counter" "boom" (func $b (result i32))) (func (export "f") (result i32) (call $b))"#,
            "f",
            &["counter"],
        ),
        run(
            r#"(import "init" "get" (func $g (result i32))) (func (export "f") (result i32) (call $g))"#,
            "f",
            &["init"],
        ),
        run(
            r#"(import "counter" "memory" (memory 1)) (func (export "f") (result i32) (i32.store (i32.const 0) (i32.const 7)) (memory.grow (i32.const 1)))"#,
            "f",
            &["counter"],
        ),
        run(
            r#"(import "counter" "n" (global (mut i32))) (func (export "f") (result i32) (global.set 0 (i32.const 9)) (global.get 0))"#,
            "f",
            &["counter"],
        ),
        run(
            r#"(import "counter" "table" (table 2 funcref)) (func (export "f") (result i32) (table.size 0))"#,
            "f",
            &["counter"],
        ),
        // Link errors: no such host listed, no such export, each kind's type mismatch.
        run(
            r#"(import "counter" "bump" (func (result i32))) (func (export "f"))"#,
            "f",
            &[],
        ),
        run(
            r#"(import "counter" "nope" (func (result i32))) (func (export "f"))"#,
            "f",
            &["counter"],
        ),
        run(
            r#"(import "counter" "bump" (func (param i32) (result i32))) (func (export "f"))"#,
            "f",
            &["counter"],
        ),
        run(
            r#"(import "counter" "memory" (memory 4)) (func (export "f"))"#,
            "f",
            &["counter"],
        ),
        run(
            r#"(import "counter" "memory" (memory 1 2)) (func (export "f"))"#,
            "f",
            &["counter"],
        ),
        run(
            r#"(import "counter" "n" (global i32)) (func (export "f"))"#,
            "f",
            &["counter"],
        ),
        run(
            r#"(import "counter" "table" (table 3 funcref)) (func (export "f"))"#,
            "f",
            &["counter"],
        ),
        run(
            r#"(import "counter" "bump" (memory 1)) (func (export "f"))"#,
            "f",
            &["counter"],
        ),
        run(r#"(func (export "f"))"#, "f", &["nobody"]),
        {
            let mut body = run(r#"(func (export "f"))"#, "f", &["counter"]);
            body["memory_reads"] = json!([{"memory": "left:memory", "offset": 0, "length": 1}]);
            body
        },
    ];
    cases.push(run(diamond, "f", &["left", "right", "counter"]));
    let interpreter = server(TierMode::Interpreter).await;
    let compiled = server(TierMode::Compiled).await;
    register_hosts(&interpreter).await;
    register_hosts(&compiled).await;
    let mut interpreted = 0;
    for body in cases {
        let (status_i, answer_i, _) = ask_both(&interpreter, &compiled, &body).await;
        if status_i == StatusCode::OK {
            assert_eq!(answer_i["stats"]["tier"], "interpreter", "{answer_i}");
            interpreted += 1;
        }
    }
    assert!(interpreted >= 7, "only {interpreted} graphs ran on the interpreter");
    // A graph deeper than --max-link-instances is refused alike.
    let mut settings = test_settings();
    settings.max_link_instances = 2;
    for tier in [TierMode::Interpreter, TierMode::Compiled] {
        settings.tier = tier;
        let app = spawn_app_with(settings.clone()).await;
        register_hosts(&app).await;
        let (status, body) = app.post("/", &run(diamond, "f", &["left", "right"])).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{tier:?}: {body}");
        assert_eq!(body["error"]["limit"], "instances", "{tier:?}: {body}");
        assert_eq!(
            body["error"]["message"],
            "the module links 3 host modules, 4 instances in all; the server allows 2 per execution (--max-link-instances)"
        );
    }
}

/// Registered modules that link others run, with their graph, on the
/// interpreter until compiled (here: always, with `--tier interpreter`),
/// and registering one checks its imports with the same messages.
#[tokio::test]
async fn registered_link_graphs_answer_alike_on_both_tiers() {
    let interpreter = server(TierMode::Interpreter).await;
    let compiled = server(TierMode::Compiled).await;
    for app in [&interpreter, &compiled] {
        register_hosts(app).await;
    }
    let registrations = [
        json!({"module_name": "top", "host_modules": ["left", "right"],
               "wat": r#"(module (import "left" "go" (func $l (result i32))) (import "right" "go" (func $r (result i32)))
                 (func (export "f") (result i32) (drop (call $l)) (call $r)))"#}),
        json!({"module_name": "bad", "host_modules": ["counter"],
               "wat": r#"(module (import "counter" "bump" (func (param i64))))"#}),
        json!({"module_name": "unlisted", "wat": r#"(module (import "counter" "bump" (func (result i32))))"#}),
        json!({"module_name": "orphan", "host_modules": ["nobody"], "wat": "(module)"}),
    ];
    for body in registrations {
        let (status_i, answer_i) = interpreter.post("/register", &body).await;
        let (status_c, answer_c) = compiled.post("/register", &body).await;
        assert_eq!(
            (status_i, &answer_i["error"], &answer_i["exports"], &answer_i["imports"]),
            (status_c, &answer_c["error"], &answer_c["exports"], &answer_c["imports"]),
            "the tiers disagree on {body}"
        );
    }
    for (app, tier) in [(&interpreter, "interpreter"), (&compiled, "compiled")] {
        let (status, body) = app.execute("top", "f", json!([])).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"], json!([2]), "one counter for the diamond: {body}");
        assert_eq!(body["stats"]["tier"], tier, "{body}");
        let (status, body) = app
            .post(
                "/execute",
                &json!({"module_name": "left", "function_name": "go",
                  "memory_reads": [{"memory": "counter:memory", "offset": 8, "length": 4}]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["memory"][0]["data"], "01000000", "{body}");
        assert_eq!(body["stats"]["tier"], tier, "{body}");
    }
}

/// A live instance of linked code keeps its hosts' state too, on either
/// tier: its graph lives in its store for its whole life.
#[tokio::test]
async fn a_linked_instance_keeps_its_hosts_state_on_both_tiers() {
    let wat = r#"(module (import "left" "go" (func $l (result i32))) (import "right" "go" (func $r (result i32)))
        (func (export "f") (result i32) (drop (call $l)) (call $r)))"#;
    for (tier, name) in [(TierMode::Interpreter, "interpreter"), (TierMode::Compiled, "compiled")] {
        let app = server(tier).await;
        register_hosts(&app).await;
        let (status, created) = app
            .post("/instances", &json!({"wat": wat, "host_modules": ["left", "right"]}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["tier"], name, "{created}");
        let id = created["id"].as_str().unwrap();
        for expected in [2, 4, 6] {
            let (_, body) = app
                .post(
                    &format!("/instances/{id}/call"),
                    &json!({"function_name": "f",
                      "memory_reads": [{"memory": "counter:memory", "offset": 8, "length": 1}]}),
                )
                .await;
            assert_eq!(body["results"], json!([expected]), "{name}: {body}");
            assert_eq!(body["memory"][0]["data"], format!("{expected:02x}"), "{name}: {body}");
        }
        let (status, body) = app
            .post("/instances", &json!({"wat": "(module (import \"counter\" \"bump\" (func (param i32))))", "host_modules": ["counter"]}))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("link_error")),
            "{name}: {body}"
        );
    }
}
