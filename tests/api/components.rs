//! Components over JSON and WAVE: every WIT type in both directions, export
//! naming, errors with paths, limits, WASI 0.2 commands, linking two
//! registered components, registration and inspection.
//!
//! The components are built here from WIT and WAT with `wit-component`, as
//! their authors' toolchains do: a core module following the canonical ABI,
//! with the WIT world embedded, encoded into a component.

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{code, spawn_app};

/// A component of `world` in `wit`, from the core module `wat`.
pub fn component(wit: &str, world: &str, wat: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("test.wit", wit).expect("the test's WIT parses");
    let world = resolve
        .select_world(&[package], Some(world))
        .expect("the test's world exists");
    let mut module = wat::parse_str(wat).expect("the test's WAT parses");
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8)
        .expect("metadata embeds");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("the module is a component's core")
        .validate(true)
        .encode()
        .expect("the component encodes")
}

pub fn b64(wasm: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(wasm)
}

/// A bump allocator for the canonical ABI: every list and string the host
/// lowers goes into the one memory, and stays there.
const REALLOC: &str = r#"
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $at i32)
    (local.set $at (i32.and (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
                            (i32.sub (i32.const 0) (local.get 2))))
    (global.set $next (i32.add (local.get $at) (local.get 3)))
    (if (i32.gt_u (global.get $next) (i32.shl (memory.size) (i32.const 16)))
      (then (drop (memory.grow (i32.const 1)))))
    (local.get $at))
"#;

/// The WIT types the echo component round-trips, by export name. Each
/// `echo-NAME: func(x: T, 16 × u64) -> T`: with more than 16 flat params
/// the canonical ABI passes them in memory, T first, so the core function
/// returns T by handing the same pointer back (or loads T when it is one
/// core value: `load`).
const ECHOES: &[(&str, &str, Option<&str>)] = &[
    ("bool", "bool", Some("i32.load8_u")),
    ("s8", "s8", Some("i32.load8_s")),
    ("u8", "u8", Some("i32.load8_u")),
    ("s16", "s16", Some("i32.load16_s")),
    ("u16", "u16", Some("i32.load16_u")),
    ("s32", "s32", Some("i32.load")),
    ("u32", "u32", Some("i32.load")),
    ("s64", "s64", Some("i64.load")),
    ("u64", "u64", Some("i64.load")),
    ("f32", "f32", Some("f32.load")),
    ("f64", "f64", Some("f64.load")),
    ("char", "char", Some("i32.load")),
    ("string", "string", None),
    ("list", "list<u32>", None),
    ("bytes", "list<u8>", None),
    ("record", "address", None),
    ("tuple", "tuple<string, s64, bool>", None),
    ("variant", "shape", None),
    ("enum", "color", Some("i32.load8_u")),
    ("option", "option<u32>", None),
    ("nested-option", "option<option<string>>", None),
    ("result", "result<u32, string>", None),
    ("flags", "perms", Some("i32.load8_u")),
    ("deep", "list<address>", None),
];

fn echo_component() -> Vec<u8> {
    let pad: String = (0..16).map(|i| format!(", p{i}: u64")).collect();
    let funcs: String = ECHOES
        .iter()
        .map(|(name, ty, _)| format!("  export echo-{name}: func(x: {ty}{pad}) -> {ty};\n"))
        .collect();
    let wit = format!(
        "package test:types;
world echo {{
  record address {{ street: string, zip: u32, unit: option<u16> }}
  variant shape {{ circle(f64), point, rect(tuple<f32, f32>) }}
  enum color {{ red, green, blue }}
  flags perms {{ read, write, exec }}
{funcs}}}"
    );
    let core: String = ECHOES
        .iter()
        .map(|(name, _, load)| {
            let body = match load {
                Some(load) => format!("(result {}) ({load} (local.get 0))", result_of(load)),
                None => "(result i32) (local.get 0)".to_string(),
            };
            format!("  (func (export \"echo-{name}\") (param i32) {body})\n")
        })
        .collect();
    component(&wit, "echo", &format!("(module {REALLOC}\n{core})"))
}

fn result_of(load: &str) -> &'static str {
    match load.split('.').next() {
        Some("i64") => "i64",
        Some("f32") => "f32",
        Some("f64") => "f64",
        _ => "i32",
    }
}

/// Calls `echo-NAME` with `value` and the padding, through `POST /`.
async fn echo(app: &crate::helpers::TestApp, wasm: &str, name: &str, value: Value) -> (StatusCode, Value) {
    let mut params = vec![value];
    params.extend(std::iter::repeat_n(json!(0), 16));
    app.post(
        "/",
        &json!({"wasm_base64": wasm, "function_name": format!("echo-{name}"), "params": params}),
    )
    .await
}

#[tokio::test]
async fn every_wit_type_round_trips_through_json() {
    let app = spawn_app().await;
    let wasm = b64(&echo_component());
    let cases: Vec<(&str, Value)> = vec![
        ("bool", json!(true)),
        ("s8", json!(-128)),
        ("u8", json!(255)),
        ("s16", json!(-32768)),
        ("u16", json!(65535)),
        ("s32", json!(-2147483648i64)),
        ("u32", json!(4294967295u64)),
        ("s64", json!(-9223372036854775808i64)),
        ("u64", json!(18446744073709551615u64)),
        ("f32", json!(0.1)),
        ("f64", json!(-0.0)),
        ("char", json!("é")),
        ("string", json!("hello, 世界")),
        ("list", json!([1, 2, 4294967295u64])),
        ("bytes", json!([0, 1, 255])),
        ("record", json!({"street": "Main St", "zip": 12345, "unit": 7})),
        ("tuple", json!(["x", -5, false])),
        ("variant", json!({"circle": 2.5})),
        ("variant", json!("point")),
        ("variant", json!({"rect": [1.5, "-Infinity"]})),
        ("enum", json!("blue")),
        ("option", json!(null)),
        ("option", json!(42)),
        ("nested-option", json!(null)),
        ("nested-option", json!({"some": null})),
        ("nested-option", json!({"some": "deep"})),
        ("result", json!({"ok": 1})),
        ("result", json!({"err": "bad"})),
        ("flags", json!(["read", "exec"])),
        ("flags", json!([])),
        (
            "deep",
            json!([{"street": "a", "zip": 1, "unit": null}, {"street": "b", "zip": 2, "unit": 3}]),
        ),
    ];
    for (name, value) in cases {
        let (status, body) = echo(&app, &wasm, name, value.clone()).await;
        assert_eq!(status, StatusCode::OK, "echo-{name}({value}): {body}");
        assert_eq!(body["results"], json!([value]), "echo-{name}");
    }
}

#[tokio::test]
async fn values_keep_their_exact_form() {
    let app = spawn_app().await;
    let wasm = b64(&echo_component());
    // u64 above 2^63 and s64 extremes keep every digit; strings are read too.
    let (_, body) = echo(&app, &wasm, "u64", json!("18446744073709551615")).await;
    assert_eq!(body["results"][0].to_string(), "18446744073709551615");
    // f32 keeps its own type's shortest form; NaN and infinities survive.
    let (_, body) = echo(&app, &wasm, "f32", json!(16777217)).await;
    assert_eq!(body["results"], json!([16777216.0]));
    for special in ["NaN", "Infinity", "-Infinity"] {
        let (status, body) = echo(&app, &wasm, "f64", json!(special)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"], json!([special]));
    }
    // list<u8> also takes base64 and hex, and answers with numbers.
    let (_, body) = echo(&app, &wasm, "bytes", json!({"base64": "AAH/"})).await;
    assert_eq!(body["results"], json!([[0, 1, 255]]));
    let (_, body) = echo(&app, &wasm, "bytes", json!({"hex": "00ff"})).await;
    assert_eq!(body["results"], json!([[0, 255]]));
    // An absent optional record field is `none`.
    let (_, body) = echo(&app, &wasm, "record", json!({"street": "s", "zip": 0})).await;
    assert_eq!(body["results"], json!([{"street": "s", "zip": 0, "unit": null}]));
    // Result types are WIT types.
    assert_eq!(
        body["result_types"],
        json!(["record { street: string, zip: u32, unit: option<u16> }"])
    );
}

#[tokio::test]
async fn a_bad_value_names_its_path() {
    let app = spawn_app().await;
    let wasm = b64(&echo_component());
    let bad: Vec<(&str, Value, &str)> = vec![
        (
            "record",
            json!({"street": "s", "zip": "x"}),
            "params[0].zip: expected u32, got",
        ),
        ("record", json!({"street": "s"}), "params[0].zip: missing field"),
        (
            "record",
            json!({"street": "s", "zip": 1, "floor": 2}),
            "unknown field `floor`",
        ),
        (
            "deep",
            json!([{"street": "a", "zip": 1}, {"street": 5, "zip": 1}]),
            "params[0][1].street: expected a string",
        ),
        (
            "u8",
            json!(256),
            "params[0]: expected u8, got 256, which is out of range",
        ),
        ("s8", json!(-129), "params[0]: expected s8"),
        ("u64", json!(-1), "params[0]: expected u64"),
        ("char", json!("ab"), "expected a one-character string"),
        ("variant", json!({"square": 1}), "unknown case `square`"),
        ("variant", json!("circle"), "params[0].circle: this case carries a f64"),
        ("enum", json!("purple"), "one of the enum's cases (red, green, blue)"),
        ("nested-option", json!("x"), "null or {\"some\": ...}"),
        ("result", json!({"maybe": 1}), "{\"ok\": ...} or {\"err\": ...}"),
        (
            "flags",
            json!(["read", "fly"]),
            "params[0][1]: expected one of the flags (read, write, exec)",
        ),
        ("bool", json!(1), "params[0]: expected a boolean, got a number 1"),
    ];
    for (name, value, expected) in bad {
        let (status, body) = echo(&app, &wasm, name, value.clone()).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_params"),
            "echo-{name}({value}): {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "echo-{name}({value}): {message}");
    }
    // The wrong number of params says how many the function takes.
    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_base64": wasm, "function_name": "echo-u8", "params": [1]}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_params"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("takes 17 params, got 1"),
        "{body}"
    );
}

pub const CALC_WIT: &str = "package test:calc@0.1.0;
interface math {
  add: func(a: u64, b: u64) -> u64;
  negate: func(x: s64) -> s64;
}
world calc {
  export math;
  export is-even: func(x: u64) -> bool;
}
world twice {
  import math;
  export add-twice: func(a: u64, b: u64) -> u64;
}";

pub fn calc_component() -> Vec<u8> {
    component(
        CALC_WIT,
        "calc",
        r#"(module
          (func (export "test:calc/math@0.1.0#add") (param i64 i64) (result i64) (i64.add (local.get 0) (local.get 1)))
          (func (export "test:calc/math@0.1.0#negate") (param i64) (result i64) (i64.sub (i64.const 0) (local.get 0)))
          (func (export "is-even") (param i64) (result i32) (i64.eqz (i64.and (local.get 0) (i64.const 1)))))"#,
    )
}

#[tokio::test]
async fn interface_functions_answer_to_every_usual_spelling() {
    let app = spawn_app().await;
    let wasm = b64(&calc_component());
    for name in [
        "test:calc/math@0.1.0#add",
        "test:calc/math#add",
        "test:calc/math.add",
        "test:calc/math.add@0.1.0",
        "math#add",
        "math.add",
    ] {
        let (status, body) = app
            .post(
                "/",
                &json!({"wasm_base64": wasm, "function_name": name, "params": ["9007199254740993", 1]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(body["results"][0].to_string(), "9007199254740994", "{name}");
        assert_eq!(body["result_types"], json!(["u64"]));
    }
    let (_, body) = app
        .post(
            "/",
            &json!({"wasm_base64": wasm, "function_name": "is-even", "params": [4]}),
        )
        .await;
    assert_eq!(body["results"], json!([true]));
    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_base64": wasm, "function_name": "math.mul", "params": []}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "function_not_found"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`test:calc/math@0.1.0#add` func(a: u64, b: u64) -> u64"),
        "{message}"
    );
}

#[tokio::test]
async fn params_and_results_may_be_wave() {
    let app = spawn_app().await;
    let wasm = b64(&echo_component());
    let pad = ", 0".repeat(16);
    let call = |name: &str, wave: String| json!({"wasm_base64": wasm, "function_name": format!("echo-{name}"), "params": wave, "result_format": "wave"});
    let (status, body) = app
        .post(
            "/",
            &call("record", format!("{{street: \"Elm\", zip: 7, unit: some(2)}}{pad}")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!(["{street: \"Elm\", zip: 7, unit: some(2)}"]));
    let (_, body) = app.post("/", &call("variant", format!("rect((1.5, -inf)){pad}"))).await;
    assert_eq!(body["results"], json!(["rect((1.5, -inf))"]));
    let (_, body) = app.post("/", &call("flags", format!("{{read, exec}}{pad}"))).await;
    assert_eq!(body["results"], json!(["{read, exec}"]));
    // JSON params with WAVE results, and the reverse.
    let mut params = vec![json!({"err": "no"})];
    params.extend(std::iter::repeat_n(json!(0), 16));
    let (_, body) = app
        .post(
            "/",
            &json!({"wasm_base64": wasm, "function_name": "echo-result", "params": params, "result_format": "wave"}),
        )
        .await;
    assert_eq!(body["results"], json!(["err(\"no\")"]));
    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_base64": wasm, "function_name": "echo-string", "params": format!("\"wave in\"{pad}")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!(["wave in"]));
    // Bad WAVE is 400 invalid_params.
    let (status, body) = app.post("/", &call("u8", format!("300{pad}"))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_params"),
        "{body}"
    );
    // WAVE is for components: a core module refuses it.
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": "(module (func (export \"f\") (param i32)))", "function_name": "f", "params": "1"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_params"),
        "{body}"
    );
}

#[tokio::test]
async fn inspect_and_register_show_the_world() {
    let app = spawn_app().await;
    let wasm = b64(&calc_component());
    let (status, body) = app.post("/inspect", &json!({"wasm_base64": wasm})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "component");
    let add = body["exports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["function"] == "add")
        .unwrap();
    assert_eq!(add["name"], "test:calc/math@0.1.0#add");
    assert_eq!(add["interface"], "test:calc/math@0.1.0");
    assert_eq!(add["signature"], "func(a: u64, b: u64) -> u64");
    assert_eq!(
        add["params"],
        json!([{"name": "a", "type": "u64"}, {"name": "b", "type": "u64"}])
    );
    let wit = body["wit"].as_str().expect("WIT text");
    assert!(wit.contains("add: func(a: u64, b: u64) -> u64;"), "{wit}");
    assert!(wit.contains("export is-even: func(x: u64) -> bool;"), "{wit}");

    let (status, body) = app
        .post("/register", &json!({"module_name": "calc", "wasm_base64": wasm}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["kind"], "component");
    let (status, body) = app.get("/modules/calc").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "component");
    assert!(body["wit"].as_str().unwrap().contains("interface math"), "{body}");
    let (status, body) = app
        .post(
            "/execute",
            &json!({"module_name": "calc", "function_name": "math.negate", "params": ["-9223372036854775807"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0].to_string(), "9223372036854775807");
    assert_eq!(body["stats"]["tier"], "compiled");
}

#[tokio::test]
async fn a_component_links_to_a_registered_component() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/register",
            &json!({"module_name": "calc", "wasm_base64": b64(&calc_component())}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let twice = b64(&component(
        CALC_WIT,
        "twice",
        r#"(module
          (import "test:calc/math@0.1.0" "add" (func $add (param i64 i64) (result i64)))
          (func (export "add-twice") (param i64 i64) (result i64)
            (call $add (call $add (local.get 0) (local.get 1)) (local.get 1))))"#,
    ));
    let request =
        json!({"wasm_base64": twice, "function_name": "add-twice", "params": [1, 10], "host_modules": ["calc"]});
    let (status, body) = app.post("/", &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([21]));

    // Registered with its host, it runs through /execute.
    let (status, body) = app
        .post(
            "/register",
            &json!({"module_name": "twice", "wasm_base64": twice, "host_modules": ["calc"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post(
            "/execute",
            &json!({"module_name": "twice", "function_name": "add-twice", "params": [2, 3]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([8]));

    // Without the host, the import nothing provides is named.
    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_base64": twice, "function_name": "add-twice", "params": [1, 1]}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`test:calc/math@0.1.0` (interface)"), "{message}");
}

#[tokio::test]
async fn a_wasi_interface_the_server_lacks_is_a_link_error_naming_it() {
    // `wasi:` by name, but not one of WASI 0.2's interfaces.
    let wit = "package test:gap;
world w {
  import wasi:nothing/x@0.1.0;
  export go: func();
}
package wasi:nothing@0.1.0 {
  interface x { f: func(); }
}";
    let wasm = b64(&component(
        wit,
        "w",
        r#"(module
          (import "wasi:nothing/x@0.1.0" "f" (func $f))
          (func (export "go") (call $f)))"#,
    ));
    let app = spawn_app().await;
    let (status, body) = app
        .post("/", &json!({"wasm_base64": wasm, "function_name": "go"}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("wasi:nothing/x@0.1.0"), "{message}");
    let (status, body) = app
        .post("/register", &json!({"module_name": "gap", "wasm_base64": wasm}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"), "{body}");
}

#[tokio::test]
async fn wasi_0_2_imports_of_any_patch_version_link() {
    // Built against WASI releases older and newer than the server's own.
    for version in ["0.2.0", "0.2.99"] {
        let wit = format!(
            "package test:args;
world w {{
  import wasi:cli/environment@{version};
  export count: func() -> u32;
}}
package wasi:cli@{version} {{
  interface environment {{ get-arguments: func() -> list<string>; }}
}}"
        );
        let wasm = b64(&component(
            &wit,
            "w",
            &format!(
                r#"(module
                  (import "wasi:cli/environment@{version}" "get-arguments" (func $args (param i32)))
                  {REALLOC}
                  (func (export "count") (result i32)
                    (call $args (i32.const 0))
                    (i32.load (i32.const 4))))"#
            ),
        ));
        let app = spawn_app().await;
        let request = json!({"wasm_base64": wasm, "function_name": "count", "wasi": {"args": ["a", "b"]}});
        let (status, body) = app.post("/", &request).await;
        assert_eq!(status, StatusCode::OK, "{version}: {body}");
        assert_eq!(body["results"], json!([3]), "{version}: the program name and two args");
    }
}

#[tokio::test]
async fn limits_hold_inside_components() {
    let app = spawn_app().await;
    let wit = "package test:limits;
world w {
  export spin: func();
  export grow: func(pages: u32) -> s32;
  export boom: func();
}";
    let wasm = b64(&component(
        wit,
        "w",
        r#"(module (memory (export "memory") 1)
          (func (export "spin") (loop (br 0)))
          (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
          (func (export "boom") unreachable))"#,
    ));
    let call = |f: &str, params: Value, limits: Value| json!({"wasm_base64": wasm, "function_name": f, "params": params, "limits": limits});
    let (status, body) = app.post("/", &call("spin", json!([]), json!({"fuel": 100000}))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["limit"], "fuel");
    let (status, body) = app
        .post("/", &call("spin", json!([]), json!({"timeout_ms": 200})))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["limit"], "time");
    // memory.grow past the memory limit fails (-1) and says so.
    let (status, body) = app
        .post("/", &call("grow", json!([100]), json!({"memory_bytes": 1 << 20})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([-1]));
    assert_eq!(body["stats"]["limits_hit"], json!(["memory"]));
    let (status, body) = app.post("/", &call("boom", json!([]), json!({}))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "trap"),
        "{body}"
    );
    assert_eq!(body["error"]["trap"], "unreachable");
}

#[tokio::test]
async fn core_only_fields_are_refused_for_components() {
    let app = spawn_app().await;
    let wasm = b64(&calc_component());
    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_base64": wasm, "function_name": "is-even", "params": [1], "memory_reads": [{"offset": 0, "length": 1}]}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{body}"
    );
    // A component without `wasi:cli/run` needs a function name.
    let (status, body) = app.post("/", &json!({"wasm_base64": wasm})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "function_not_found"),
        "{body}"
    );
}

/// A WASI preview 1 command made a WASI 0.2 component with the adapter
/// wasmtime ships for that.
pub fn wasi_command(core: &[u8]) -> Vec<u8> {
    wit_component::ComponentEncoder::default()
        .module(core)
        .expect("a WASI program")
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )
        .expect("the adapter fits")
        .validate(true)
        .encode()
        .expect("the command encodes")
}

#[tokio::test]
async fn a_wasi_command_component_reads_stdin_and_writes_stdout() {
    // Echoes stdin to stdout, one read, then exits with status 3.
    let core = wat::parse_str(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 256))
            (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
            (i32.store (i32.const 4) (i32.load (i32.const 8)))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            (call $exit (i32.const 3))))"#,
    )
    .unwrap();
    let wasm = b64(&wasi_command(&core));
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_base64": wasm, "wasi": {"stdin": "hello component\n"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"], "hello component\n");
    // WASI 0.2's `exit` says success or failure; the preview 1 adapter
    // reports any non-zero status as failure, which is status 1.
    assert_eq!(body["exit_code"], 1);
    let (status, body) = app.post("/inspect", &json!({"wasm_base64": wasm})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"].as_str().unwrap().starts_with("wasi:cli/run@")),
        "{body}"
    );
}

#[tokio::test]
#[ignore = "needs Debian clang, lld, wasi-libc and libclang-rt-14-dev-wasm32; `scripts/test` installs them and runs it"]
async fn the_c_program_as_a_wasi_0_2_command_runs_like_its_preview_1_build() {
    let dir = tempfile::tempdir().unwrap();
    let core = crate::wasi::compile_c_fixture(&dir.path().join("upcase.wasm"));
    let wasm = b64(&wasi_command(&core));
    let app = spawn_app().await;
    let request = json!({"wasm_base64": wasm, "wasi": {"args": ["a", "b c"], "env": {"GREETING": "hi"}, "stdin": "line one\nline two\n"}});
    let (status, body) = app.post("/", &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The same world as preview 1: the request's args and env only, no host
    // file, stdin in, stdout and stderr out.
    assert_eq!(
        body["stdout"],
        "args:3 main a b c\nGREETING=hi HOME=(none)\nhost file: denied\nLINE ONE\nLINE TWO\n"
    );
    assert_eq!(body["stderr"], "done\n");
    assert_eq!(body["exit_code"], 1, "status 7 through WASI 0.2's exit is failure");
    assert_eq!(body["stats"]["tier"], "compiled");

    // Registered, it runs through /execute with its name as argv[0].
    let (status, body) = app
        .post("/register", &json!({"module_name": "upcase-cmd", "wasm_base64": wasm}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post(
            "/execute",
            &json!({"module_name": "upcase-cmd", "wasi": {"stdin": "x\n"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["stdout"].as_str().unwrap().starts_with("args:1 upcase-cmd\n"),
        "{body}"
    );
    assert!(body["stdout"].as_str().unwrap().ends_with("X\n"), "{body}");
}

/// The directory of Lua 5.4's C sources in the `lua-src` crate (a
/// dev-dependency for this reason only), found through `cargo metadata`.
fn lua_sources() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed");
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let manifest = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lua-src")
        .expect("lua-src is a dev-dependency")["manifest_path"]
        .as_str()
        .unwrap()
        .to_string();
    let crate_dir = std::path::Path::new(&manifest).parent().unwrap().to_path_buf();
    std::fs::read_dir(&crate_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("lua-5.4"))
        .expect("lua-src carries Lua 5.4")
}

/// Lua 5.4 with `fixtures/lua/main.c` as its `main`, compiled to a WASI
/// preview 1 program with Debian's clang and wasi-libc. That clang has no
/// WebAssembly exceptions for `setjmp`, so a Lua error aborts the program
/// instead of unwinding (the scripts here raise none); `setjmp.h` is
/// replaced by an empty header for the same reason.
fn compile_lua(dir: &std::path::Path) -> Vec<u8> {
    let sources = lua_sources();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/lua");
    let skip = ["lua.c", "luac.c", "linit.c", "liolib.c", "loslib.c", "loadlib.c"];
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&sources)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .filter(|p| !skip.contains(&p.file_name().unwrap().to_str().unwrap()))
        .collect();
    files.sort();
    let stub = dir.join("include");
    std::fs::create_dir_all(&stub).unwrap();
    std::fs::write(stub.join("setjmp.h"), "/* no setjmp: Lua errors abort */\n").unwrap();
    let out = dir.join("lua.wasm");
    let status = std::process::Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-w", "-DLUA_COMPAT_5_3"])
        .args(["-DLUAI_THROW(L,c)=abort()", "-DLUAI_TRY(L,c,a)={ a }", "-Dluai_jmpbuf=int"])
        // wasi-libc has no signals; Lua only needs the type of a flag.
        .arg("-Dl_signalT=int")
        .arg("-I")
        .arg(&stub)
        .arg("-I")
        .arg(&sources)
        .arg(fixtures.join("main.c"))
        .args(&files)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("clang is needed for this test: run `bash .ci/run` or `apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32`");
    assert!(status.success(), "clang failed to build Lua");
    std::fs::read(out).unwrap()
}

#[tokio::test]
#[ignore = "needs Debian clang, lld, wasi-libc and libclang-rt-14-dev-wasm32; `scripts/test` installs them and runs it"]
async fn a_lua_interpreter_runs_as_a_wasi_0_2_command_with_its_script_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let lua = b64(&wasi_command(&compile_lua(dir.path())));
    let script = r#"
local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
local words = {}
for w in ("the quick brown fox"):gmatch("%a+") do words[#words + 1] = w:upper() end
print(table.concat(words, " "), fib(20), string.format("%.3f", math.pi), math.maxinteger)
print(utf8.char(72, 233, 108, 108, 246), arg == nil)
"#;
    let app = spawn_app().await;
    let (status, body) = app
        .post("/", &json!({"wasm_base64": lua, "wasi": {"stdin": script}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["stdout"],
        "THE QUICK BROWN FOX\t6765\t3.142\t9223372036854775807\nHéllö\ttrue\n"
    );
    assert_eq!(body["exit_code"], 0, "{body}");

    // A script that never ends stops at its fuel limit, and the server
    // answers as for any other code.
    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_base64": lua, "wasi": {"stdin": "while true do end"}, "limits": {"fuel": 50000000}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["limit"], "fuel");

    // Registered, it runs through /execute, each request with its own script.
    let (status, body) = app
        .post("/register", &json!({"module_name": "lua", "wasm_base64": lua}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post(
            "/execute",
            &json!({"module_name": "lua", "wasi": {"stdin": "print(6 * 7)"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"], "42\n");
}

#[tokio::test]
async fn component_text_runs_as_the_playground_example_writes_it() {
    // The playground's component example: WebAssembly text of a component.
    let wat = r#"(component
      (core module $m
        (func (export "add") (param i64 i64) (result i64) (i64.add (local.get 0) (local.get 1))))
      (core instance $i (instantiate $m))
      (func (export "add") (param "a" u64) (param "b" u64) (result u64)
        (canon lift (core func $i "add"))))"#;
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": wat, "function_name": "add", "params": ["18446744073709551614", 1]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0].to_string(), "18446744073709551615");
    assert_eq!(body["stats"]["compile"], "compiled");
    let (_, body) = app
        .post("/", &json!({"wat": wat, "function_name": "add", "params": [1, 2]}))
        .await;
    assert_eq!(body["stats"]["compile"], "cached", "components are cached by SHA-256");
}
