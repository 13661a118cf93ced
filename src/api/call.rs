//! The parts of a call shared by `POST /`, `POST /execute` and instance
//! calls: memory writes and reads, WASI settings, result decoding, and the
//! response (or error) built from the engine's outcome.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::checks::{Expected, Observed, RunsBody};
use super::error::{ApiError, ApiResult};
use super::json_text;
use super::metrics::{Endpoint, Metrics};
use crate::engine::encode_hex;
use crate::engine::{
    CacheOutcome, CallFailure, CallOutcome, CallSpec, ComponentCall, ComponentParams, ExecLimits, LimitOverrides,
    MemoryRead, MemoryWrite, WasiConfig, WasiOutput, decode_hex,
};

/// How bytes are written in JSON.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
    /// UTF-8 text; bytes that are not valid UTF-8 become U+FFFD.
    Utf8,
}

impl Encoding {
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Hex => encode_hex(bytes),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
            Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
            Encoding::Utf8 => "utf8",
        }
    }
}

/// One entry of `memory_writes`: bytes written into linear memory before
/// the call. Exactly one of `hex`, `base64`, `utf8`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryWriteBody {
    /// Byte offset in the memory.
    #[serde(deserialize_with = "crate::json_int::u64")]
    offset: u64,
    hex: Option<String>,
    base64: Option<String>,
    utf8: Option<String>,
    /// Exported memory to write (`name`, or `host:name` for a host module's);
    /// default: the module's only or first exported memory.
    memory: Option<String>,
}

/// One entry of `memory_reads`: bytes read from linear memory after the
/// call (also after a trap).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryReadBody {
    #[serde(deserialize_with = "crate::json_int::u64")]
    offset: u64,
    #[serde(deserialize_with = "crate::json_int::u64")]
    length: u64,
    #[serde(default)]
    encoding: Encoding,
    memory: Option<String>,
}

/// The `wasi` object of a request: run the module as a WASI preview-1
/// program (no files, sockets or host environment).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WasiBody {
    /// Arguments after `argv[0]`.
    #[serde(default)]
    args: Vec<String>,
    /// The whole environment the program sees.
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "stdin_body")]
    stdin: Option<StdinBody>,
}

/// `stdin` strictly as the schema has it: a string, or an object with only
/// `base64` (an untagged enum would also take `["..."]` for the object).
fn stdin_body<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<StdinBody>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(serde_json::Value::String(text)) => Ok(Some(StdinBody::Text(text))),
        Some(serde_json::Value::Object(mut map)) if map.len() == 1 => match map.remove("base64") {
            Some(serde_json::Value::String(base64)) => Ok(Some(StdinBody::Bytes { base64 })),
            _ => Err(D::Error::custom("wasi.stdin must be text or {\"base64\": \"...\"}")),
        },
        Some(_) => Err(D::Error::custom("wasi.stdin must be text or {\"base64\": \"...\"}")),
    }
}

/// `stdin` as text, or as `{"base64": …}` for binary input.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum StdinBody {
    Text(String),
    Bytes { base64: String },
}

/// A request's `params`: a JSON array, one value per param; or, for a
/// component, one string of WAVE text (the params as written between the
/// parentheses of `wasmtime run --invoke 'f(...)'`).
#[derive(Debug, Default)]
pub enum Params {
    #[default]
    Absent,
    Json(Vec<Box<RawValue>>),
    Wave(String),
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Read in one pass: each value is kept as its own text, to be typed
        // once the function's signature is known (a batch parses thousands).
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Params;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("params as an array of values, or a string of WAVE text for a component")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Params, E> {
                Ok(Params::Wave(text.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Params, E> {
                Ok(Params::Wave(text))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
                let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(64));
                while let Some(value) = seq.next_element::<Box<RawValue>>()? {
                    values.push(value);
                }
                Ok(Params::Json(values))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Params {
    /// The JSON values, for a core module (which takes no WAVE).
    fn json(&self) -> ApiResult<&[Box<RawValue>]> {
        match self {
            Params::Absent => Ok(&[]),
            Params::Json(values) => Ok(values),
            Params::Wave(_) => Err(ApiError::invalid_params(
                "params as WAVE text are for components; a core module takes a JSON array of values",
            )),
        }
    }
}

/// How results are written: `json` (the default), or `wave` (WAVE text,
/// for components).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResultFormat {
    #[default]
    Json,
    Wave,
}

/// What ran a call, for its `stats`: how its code was compiled (for
/// one-shot calls) and the modules that ran.
#[derive(Default)]
pub struct Ran {
    pub compile: Option<CacheOutcome>,
    pub modules: ModulesRan,
}

/// The call part of a request, decoded and checked.
pub struct Call {
    function: Option<String>,
    params: Params,
    result_format: ResultFormat,
    writes: Vec<MemoryWrite>,
    read_bodies: Vec<MemoryReadBody>,
    reads: Vec<MemoryRead>,
    result_encoding: Option<Encoding>,
    expected: Option<Box<Expected>>,
}

impl Call {
    /// Decodes the call fields; reads asking for more than `max_read_bytes`
    /// in all are refused here, before anything runs.
    pub fn new(
        function: Option<String>,
        params: Params,
        writes_body: Vec<MemoryWriteBody>,
        read_bodies: Vec<MemoryReadBody>,
        result_encoding: Option<Encoding>,
        max_read_bytes: u64,
    ) -> ApiResult<Self> {
        let writes = writes(writes_body)?;
        let reads = reads(&read_bodies, max_read_bytes)?;
        Ok(Call {
            function,
            params,
            result_format: ResultFormat::Json,
            writes,
            read_bodies,
            reads,
            result_encoding,
            expected: None,
        })
    }

    /// Checks the call's outcome against `expected` (see
    /// [`super::checks`]).
    pub fn with_expected(mut self, expected: Option<Box<Expected>>) -> Self {
        self.expected = expected;
        self
    }

    /// Results as WAVE text (components only; see [`Self::component`]).
    pub fn with_result_format(mut self, format: Option<ResultFormat>) -> Self {
        self.result_format = format.unwrap_or_default();
        self
    }

    /// The engine's view of this call on a core module under `limits`.
    /// WAVE belongs to components, so it is refused here.
    pub fn spec(&self, limits: ExecLimits) -> ApiResult<CallSpec<'_>> {
        if self.result_format == ResultFormat::Wave {
            return Err(ApiError::invalid_params(
                "result_format `wave` is for components; a core module's results are JSON",
            ));
        }
        Ok(CallSpec {
            function: self.function.as_deref(),
            params: self.params.json()?,
            writes: &self.writes,
            reads: &self.reads,
            result_as_bytes: self.result_encoding.is_some(),
            limits,
            armed_at: None,
        })
    }

    /// The engine's view of this call on a component under `limits`.
    /// Linear memory and `(ptr, len)` results belong to core modules, so
    /// those fields are refused here.
    pub fn component(&self, limits: ExecLimits) -> ApiResult<ComponentCall<'_>> {
        if !self.writes.is_empty() || !self.reads.is_empty() || self.result_encoding.is_some() {
            return Err(ApiError::invalid_request(
                "memory_writes, memory_reads and result_encoding are for core modules; a component takes \
                 and returns its data as typed values (strings, lists, records)",
            ));
        }
        Ok(ComponentCall {
            function: self.function.as_deref(),
            params: match &self.params {
                Params::Absent => ComponentParams::Json(&[]),
                Params::Json(values) => ComponentParams::Json(values),
                Params::Wave(text) => ComponentParams::Wave(text),
            },
            wave_results: self.result_format == ResultFormat::Wave,
            limits,
        })
    }

    /// The response (or error) for the engine's answer to this call,
    /// recorded in the execution metrics of `endpoint`.
    pub fn respond(
        &self,
        result: Result<CallOutcome, CallFailure>,
        ran: Ran,
        started: Instant,
        metrics: &Metrics,
        endpoint: Endpoint,
    ) -> ApiResult<ExecResponse> {
        let Ran { compile, modules } = ran;
        // Up to the read that ended the call's timing, when there was one.
        let ended = result.as_ref().ok().and_then(|outcome| outcome.ended);
        let elapsed = ended.map_or_else(|| started.elapsed(), |at| at.saturating_duration_since(started));
        let seconds = elapsed.as_secs_f64();
        match result {
            Ok(outcome) => {
                metrics.execution(endpoint, "ok", seconds, outcome.stats.fuel_consumed);
                let mut response = respond(outcome, &self.read_bodies, self.result_encoding, compile, elapsed)?;
                response.stats.modules = modules;
                if let Some(expected) = &self.expected {
                    let verdict = expected.check(&Observed {
                        results: &response.results,
                        stdout: response.output.stdout.as_deref(),
                        stderr: response.output.stderr.as_deref(),
                        exit_code: response.exit_code,
                        error: None,
                    });
                    response.passed = Some(verdict.passed);
                    response.diff = verdict.diff;
                }
                Ok(response)
            }
            Err(f) => {
                let fuel = f.stats.as_ref().map_or(0, |s| s.fuel_consumed);
                let mut error = failure(f, &self.read_bodies);
                metrics.execution(endpoint, error.code.as_str(), seconds, fuel);
                if let (Some(serde_json::Value::Object(stats)), false) =
                    (error.extra.get_mut("stats"), modules.is_empty())
                {
                    stats.insert("modules".into(), serde_json::to_value(&modules).unwrap_or_default());
                }
                if let Some(expected) = &self.expected {
                    let text = |key: &str| error.extra.get(key).and_then(|v| v.as_str()).map(str::to_string);
                    let (stdout, stderr) = (text("stdout"), text("stderr"));
                    let verdict = expected.check(&Observed {
                        results: &[],
                        stdout: stdout.as_deref(),
                        stderr: stderr.as_deref(),
                        exit_code: None,
                        error: Some(error.code.as_str()),
                    });
                    error = error.with("passed", verdict.passed).with("diff", verdict.diff);
                }
                Err(error)
            }
        }
    }
}

/// Decodes `memory_writes`.
fn writes(bodies: Vec<MemoryWriteBody>) -> ApiResult<Vec<MemoryWrite>> {
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            let data = match (w.hex, w.base64, w.utf8) {
                (Some(hex), None, None) => decode_hex(hex.trim())
                    .map_err(|e| ApiError::invalid_request(format!("memory_writes[{i}].hex is not valid hex: {e}")))?,
                (None, Some(b64), None) => {
                    base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .map_err(|e| {
                            ApiError::invalid_request(format!("memory_writes[{i}].base64 is not valid base64: {e}"))
                        })?
                }
                (None, None, Some(text)) => text.into_bytes(),
                _ => {
                    return Err(ApiError::invalid_request(format!(
                        "memory_writes[{i}] needs exactly one of `hex`, `base64` or `utf8`"
                    )));
                }
            };
            Ok(MemoryWrite {
                memory: w.memory,
                offset: w.offset,
                data,
            })
        })
        .collect()
}

/// Turns `memory_reads` into engine reads, refusing more than `max_bytes`
/// in all before anything runs.
fn reads(bodies: &[MemoryReadBody], max_bytes: u64) -> ApiResult<Vec<MemoryRead>> {
    let total = bodies.iter().fold(0u64, |sum, r| sum.saturating_add(r.length));
    if total > max_bytes {
        return Err(ApiError::invalid_request(format!(
            "memory_reads ask for {total} bytes in all; the limit is {max_bytes} bytes (see --max-read-bytes)"
        )));
    }
    Ok(bodies
        .iter()
        .map(|r| MemoryRead {
            memory: r.memory.clone(),
            offset: r.offset,
            length: r.length,
        })
        .collect())
}

/// Refuses memory and table limits on a request to a live instance or an
/// environment (`owner` says which, and where its limits are set): they
/// belong to it for its whole life; a request may lower fuel and time.
pub fn per_request_limits(limits: Option<&LimitOverrides>, owner: &str) -> ApiResult<()> {
    if limits.is_some_and(|l| l.memory_bytes.is_some() || l.table_elements.is_some()) {
        return Err(ApiError::invalid_request(format!(
            "memory and table limits belong to the {owner}; a request may lower fuel and timeout_ms"
        )));
    }
    Ok(())
}

/// Builds the WASI world from the request's `wasi` object. `program` is
/// `argv[0]`.
pub fn wasi_config(body: Option<WasiBody>, program: &str) -> ApiResult<Option<WasiConfig>> {
    let Some(body) = body else { return Ok(None) };
    let stdin = match body.stdin {
        None => Vec::new(),
        Some(StdinBody::Text(text)) => text.into_bytes(),
        Some(StdinBody::Bytes { base64 }) => base64::engine::general_purpose::STANDARD
            .decode(base64.trim())
            .map_err(|e| ApiError::invalid_request(format!("wasi.stdin.base64 is not valid base64: {e}")))?,
    };
    Ok(Some(WasiConfig {
        program: program.to_string(),
        args: body.args,
        env: body.env,
        stdin,
    }))
}

/// A successful execution.
#[derive(Serialize, ToSchema)]
pub struct ExecResponse {
    /// One JSON value per result: i32 as a number, i64 as a number (exact),
    /// f32/f64 as numbers or `"NaN"`, `"Infinity"`, `"-Infinity"`,
    /// `"nan:0x…"`; v128 as a hex string; references as null or a string.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub(super) results: Vec<Box<RawValue>>,
    /// The WebAssembly type of each result (`i32`, `f64`, …).
    #[schema(value_type = Vec<String>)]
    pub(super) result_types: Vec<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) memory: Vec<MemoryReadOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) exit_code: Option<i32>,
    #[serde(flatten)]
    pub(super) output: OutputFields,
    pub(super) stats: StatsBody,
    /// With `expected`: whether the call did what was expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) passed: Option<bool>,
    /// With `expected`: what differed, one short line each (at most 8).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) diff: Vec<String>,
    /// With `runs`: the runs' time and fuel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) runs: Option<RunsBody>,
}

/// A WASI program's output in a successful response: present exactly when
/// the module uses WASI. (A flattened `Option<OutputBody>` would serialize
/// the same, but its schema would claim the whole response is either the
/// output or null.)
#[derive(Serialize, ToSchema, Default)]
pub struct OutputFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stderr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stdout_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stderr_truncated: Option<bool>,
}

impl From<Option<OutputBody>> for OutputFields {
    fn from(o: Option<OutputBody>) -> Self {
        match o {
            None => OutputFields::default(),
            Some(o) => OutputFields {
                stdout: Some(o.stdout),
                stderr: Some(o.stderr),
                stdout_truncated: Some(o.stdout_truncated),
                stderr_truncated: Some(o.stderr_truncated),
            },
        }
    }
}

/// One entry of the response's `memory`.
#[derive(Serialize, ToSchema)]
pub struct MemoryReadOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) memory: Option<String>,
    pub(super) offset: u64,
    pub(super) length: u64,
    pub(super) encoding: Encoding,
    pub(super) data: String,
}

/// A WASI program's output.
#[derive(Serialize, ToSchema)]
pub struct OutputBody {
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
}

impl From<WasiOutput> for OutputBody {
    fn from(o: WasiOutput) -> Self {
        OutputBody {
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            stdout_truncated: o.stdout_truncated,
            stderr_truncated: o.stderr_truncated,
        }
    }
}

/// One module that ran in a call: its registry name (`inline` for code
/// sent with the request) and the SHA-256 of its binary, so that a grader
/// can tell exactly which code produced an answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModuleRan {
    pub name: String,
    pub sha256: String,
}

/// The `stats.modules` list, written as JSON once and shared: every call of
/// the same code names the same modules, and a batch answers thousands.
#[derive(Debug, Clone, Default)]
pub struct ModulesRan(pub(super) Option<Arc<str>>);

impl ModulesRan {
    /// The code called first, as `name`, then the registered modules it
    /// links, each as `(name, sha256)`, each an object as the derived
    /// `Serialize` of [`ModuleRan`] writes it. Written by hand: a single
    /// request renders it anew, and serde's writer took about 1,000
    /// instructions of it.
    pub fn of<'a>(name: &'a str, sha256: &'a str, graph: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        // Room for the first module (most calls run one) without growing.
        let mut out = Vec::with_capacity(96 + name.len());
        out.push(b'[');
        for (i, (name, sha256)) in std::iter::once((name, sha256)).chain(graph).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            // Writing a string into a Vec cannot fail.
            let _ = json_text::string(&mut out, name);
            // A digest is hex digits, which JSON never escapes.
            debug_assert!(sha256.bytes().all(|b| b.is_ascii_hexdigit()), "{sha256}");
            out.extend_from_slice(b",\"sha256\":\"");
            out.extend_from_slice(sha256.as_bytes());
            out.extend_from_slice(b"\"}");
        }
        out.push(b']');
        // Only whole UTF-8 strings and ASCII went in.
        ModulesRan(String::from_utf8(out).ok().map(Arc::from))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl Serialize for ModulesRan {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        match &self.0 {
            // Only the tests' reference writer comes here: answers are
            // written by `call_json`, which copies the text as it is.
            Some(json) => RawValue::from_string(json.to_string())
                .map_err(S::Error::custom)?
                .serialize(serializer),
            None => serializer.collect_seq(std::iter::empty::<ModuleRan>()),
        }
    }
}

/// `stats` of a response.
#[derive(Serialize, ToSchema)]
pub struct StatsBody {
    pub(super) fuel_consumed: u64,
    /// `cached`, `loaded` (from a stored artifact) or `compiled`; absent for
    /// calls on a live instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) compile: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) compile_us: Option<u64>,
    pub(super) instantiate_us: u64,
    pub(super) call_us: u64,
    pub(super) wall_time_us: u64,
    /// Which tier ran the code: `interpreter` (no compile) or `compiled`.
    #[schema(value_type = String, example = "compiled")]
    pub(super) tier: &'static str,
    /// Limits the guest ran into and survived (`memory`: a `memory.grow`
    /// returned -1; `table_elements`: a `table.grow` did); absent if none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) limits_hit: Vec<&'static str>,
    /// Bytes of linear memory at the end of the call, all memories
    /// together: the peak, since linear memory never shrinks (for a live
    /// instance, its memory so far).
    pub(super) memory_peak_bytes: u64,
    /// The modules that ran: the code called first, then the registered
    /// modules it links.
    #[serde(skip_serializing_if = "ModulesRan::is_empty")]
    #[schema(value_type = Vec<ModuleRan>)]
    pub(super) modules: ModulesRan,
}

fn memory_out(bodies: &[MemoryReadBody], data: Vec<Vec<u8>>) -> Vec<MemoryReadOut> {
    bodies
        .iter()
        .zip(data)
        .map(|(r, bytes)| MemoryReadOut {
            memory: r.memory.clone(),
            offset: r.offset,
            length: r.length,
            encoding: r.encoding,
            data: r.encoding.encode(&bytes),
        })
        .collect()
}

/// Builds the response of a successful call.
fn respond(
    outcome: CallOutcome,
    read_bodies: &[MemoryReadBody],
    result_encoding: Option<Encoding>,
    compile: Option<CacheOutcome>,
    elapsed: std::time::Duration,
) -> ApiResult<ExecResponse> {
    let (results, result_types) = match (result_encoding, outcome.result_bytes) {
        (Some(encoding), Some(bytes)) => (
            vec![serde_json::value::to_raw_value(&encoding.encode(&bytes)).map_err(ApiError::internal)?],
            vec![Cow::Borrowed(encoding.name())],
        ),
        _ => (outcome.results, outcome.result_types),
    };
    let (compile, compile_us) = match compile {
        None => (None, None),
        Some(CacheOutcome::Cached) => (Some("cached"), Some(0)),
        Some(CacheOutcome::Loaded) => (Some("loaded"), Some(0)),
        Some(CacheOutcome::Compiled(d)) => (Some("compiled"), Some(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))),
    };
    let stats = StatsBody {
        fuel_consumed: outcome.stats.fuel_consumed,
        compile,
        compile_us,
        instantiate_us: outcome.stats.instantiate_us,
        call_us: outcome.stats.call_us,
        wall_time_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        tier: outcome.stats.tier.as_str(),
        limits_hit: outcome.stats.limits_hit,
        memory_peak_bytes: outcome.stats.memory_peak_bytes,
        modules: ModulesRan::default(),
    };
    let (exit_code, output) = match outcome.wasi {
        Some(w) => (Some(w.exit_code), Some(OutputBody::from(w.output))),
        None => (None, None),
    };
    Ok(ExecResponse {
        results,
        result_types,
        memory: memory_out(read_bodies, outcome.memory),
        exit_code,
        output: output.into(),
        stats,
        passed: None,
        diff: Vec::new(),
        runs: None,
    })
}

/// Builds the error of a failed call: its error, stats and WASI output
/// (see `From<CallFailure>` in `error.rs`), plus the memory reads taken
/// after a trap, encoded as the client asked.
fn failure(mut f: CallFailure, read_bodies: &[MemoryReadBody]) -> ApiError {
    let memory = std::mem::take(&mut f.memory);
    let mut error = ApiError::from(f);
    if !memory.is_empty()
        && let Ok(v) = serde_json::to_value(memory_out(read_bodies, memory))
    {
        error = error.with("memory", v);
    }
    error
}
