//! `POST /batch`: many calls in one request, answered in order, each with
//! its own response body.
//!
//! A grader or a data pipeline calling one function thousands of times
//! spends most of each request on HTTP; a batch pays for HTTP once. Each
//! call goes through exactly the path its own request would (`POST /`,
//! `/execute`, or `/instances/{id}/call`), so it gets the same checks,
//! limits, tiers and answers; only the HTTP around it is shared. The batch
//! holds one execution slot for its whole run (it is one client's one
//! stream of work, and a fair share counts it so), and runs its calls one
//! after another within a total time budget.

use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequest, Request, State};
use axum::http::Method;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::auth::Caller;
use super::call::ExecResponse;
use super::call_json::{BYTES_PER_ANSWER, json_response};
use super::client::ClientId;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::exec::{self, Resolutions, RunInline, RunRegistered};
use super::extract::{BodyRules, from_json, read_json, unreadable};
use super::instances::{self, CallInstance};
use super::responses::{BodyErrors, ErrorBody, GuardedErrors};
use super::routes::Routes;
use super::state::AppState;
use crate::engine::{ExecLimits, LiveInstance};

pub fn routes() -> Routes {
    Routes::new().add(Method::POST, "/batch", run_batch)
}

/// Body of `POST /batch`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"calls": [
    {"module_name": "utils", "function_name": "double", "params": [1]},
    {"module_name": "utils", "function_name": "double", "params": [2]},
    {"wat": "(module (func (export \"f\") (result i32) i32.const 7))", "function_name": "f"}
]}))]
pub struct Batch {
    /// The calls, in order. Each is shaped like a `POST /execute` body (it
    /// has `module_name`) or a `POST /` body (inline code); with
    /// `instance`, like a `POST /instances/{id}/call` body.
    #[schema(value_type = Vec<Object>)]
    calls: Vec<Box<RawValue>>,
    /// Run every call on this live instance, in order, so that they share
    /// its state; without it each call gets a fresh instance of its own.
    instance: Option<String>,
    /// The whole batch's time budget in milliseconds: by default
    /// `--batch-timeout-ms`, and never more (asking for more is
    /// `400 invalid_request`). Each call's own time limit is cut to
    /// what is left; calls not started when it runs out answer
    /// `limit_exceeded` (`batch_time`).
    timeout_ms: Option<u64>,
}

/// A batch as read: [`Batch`]'s fields, its calls decoded once.
pub(super) struct Calls {
    calls: CallBodies,
    instance: Option<String>,
    timeout_ms: Option<u64>,
}

/// A batch's calls.
enum CallBodies {
    /// Every call a `POST /execute` body, decoded in the same pass as the
    /// batch (see [`Calls::read`]); taken out when the batch runs.
    Registered(Vec<RunRegistered>),
    /// Any calls, each decoded as it runs ([`decode`]), so that what is
    /// wrong in one is its own error.
    Raw(Vec<Box<RawValue>>),
}

/// The usual batch: calls of registered modules and nothing else, which
/// [`Calls::read`] tries first.
struct RegisteredBatch {
    calls: Vec<RunRegistered>,
    timeout_ms: Option<u64>,
}

impl RegisteredBatch {
    /// `text` read as the usual batch, if it is one. The list of calls is
    /// made with room for as many calls as the text names modules: grown
    /// by doubling, it copied a thousand decoded calls of 224 bytes about
    /// twice over.
    fn read(text: &str) -> serde_json::Result<RegisteredBatch> {
        let calls = memchr::memmem::find_iter(text.as_bytes(), b"\"module_name\"").count();
        let mut reader = serde_json::Deserializer::from_str(text);
        let batch = serde::de::DeserializeSeed::deserialize(UsualBatch { calls }, &mut reader)?;
        reader.end()?;
        Ok(batch)
    }
}

/// Reads a [`RegisteredBatch`], with room for `calls` calls. Anything but
/// `calls` once and `timeout_ms` at most once is not the usual batch (the
/// general reading then says what is wrong).
struct UsualBatch {
    calls: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for UsualBatch {
    type Value = RegisteredBatch;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<RegisteredBatch, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UsualBatch {
    type Value = RegisteredBatch;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a batch of POST /execute bodies")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RegisteredBatch, A::Error> {
        use serde::de::Error;
        let (mut calls, mut timeout_ms) = (None, None);
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "calls" if calls.is_none() => calls = Some(map.next_value_seed(RegisteredCalls { room: self.calls })?),
                "timeout_ms" if timeout_ms.is_none() => timeout_ms = Some(map.next_value::<Option<u64>>()?),
                _ => return Err(A::Error::custom("not the usual batch")),
            }
        }
        Ok(RegisteredBatch {
            calls: calls.ok_or_else(|| A::Error::missing_field("calls"))?,
            timeout_ms: timeout_ms.flatten(),
        })
    }
}

impl Calls {
    /// Reads a batch from a body's bytes. Reading every call as a raw
    /// value, then each again into its body type, scanned each call's text
    /// twice: a ninth of a batched call's work. So a batch whose calls are
    /// all `POST /execute` bodies (JSON objects) is read in one pass into
    /// them; anything else (an inline call, a live instance, any error) is
    /// read as before, so that a bad call is that call's own error. The one
    /// pass accepts only what the other would read into the same bodies.
    pub(super) fn read(bytes: &[u8]) -> serde_json::Result<Calls> {
        let text = std::str::from_utf8(bytes).ok();
        if let Some(Ok(batch)) = text.map(RegisteredBatch::read) {
            return Ok(Calls {
                calls: CallBodies::Registered(batch.calls),
                instance: None,
                timeout_ms: batch.timeout_ms,
            });
        }
        // Text already checked is not checked again.
        let batch: Batch = match text {
            Some(text) => serde_json::from_str(text)?,
            None => from_json(bytes)?,
        };
        Ok(Calls {
            calls: CallBodies::Raw(batch.calls),
            instance: batch.instance,
            timeout_ms: batch.timeout_ms,
        })
    }

    /// Refuses a batch of no calls or more than `max`, or one with a call
    /// that is not even a JSON object (what is wrong inside an object is
    /// that call's own error).
    pub(super) fn check(&self, max: usize) -> ApiResult<()> {
        if self.len() == 0 || self.len() > max {
            return Err(ApiError::invalid_request(format!(
                "a batch has 1 to {max} calls (--max-batch-calls); this one has {}",
                self.len()
            )));
        }
        if let CallBodies::Raw(calls) = &self.calls
            && let Some(i) = calls.iter().position(|c| !is_object(c))
        {
            return Err(ApiError::invalid_request(format!(
                "calls[{i}] is not a JSON object; each call is a request body"
            )));
        }
        Ok(())
    }

    /// The live instance the batch runs on, if it names one.
    pub(super) fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// How many calls it has.
    pub(super) fn len(&self) -> usize {
        match &self.calls {
            CallBodies::Registered(calls) => calls.len(),
            CallBodies::Raw(calls) => calls.len(),
        }
    }
}

/// Reads `calls` as `POST /execute` bodies, with room for `room` of them,
/// each of which must be a JSON object: a struct's derived reader would
/// also take an array of its fields, which [`Calls::check`] refuses.
struct RegisteredCalls {
    room: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for RegisteredCalls {
    type Value = Vec<RunRegistered>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<RunRegistered>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RegisteredCalls {
    type Value = Vec<RunRegistered>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of POST /execute bodies")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<RunRegistered>, A::Error> {
        let mut calls = Vec::with_capacity(self.room);
        while let Some(call) = seq.next_element_seed(Object)? {
            calls.push(call);
        }
        Ok(calls)
    }
}

/// One `POST /execute` body, which must be a JSON object.
struct Object;

impl<'de> serde::de::DeserializeSeed<'de> for Object {
    type Value = RunRegistered;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<RunRegistered, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Object {
    type Value = RunRegistered;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a POST /execute body")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RunRegistered, A::Error> {
        RunRegistered::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

/// `200` from `POST /batch`: its shape, for the schema. The answer itself
/// is written while the calls run ([`Answers`]), never built as this.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchResponse {
    /// One element per call, in order: the body its own request would have
    /// had (results and stats, or `{"error": …}`).
    #[schema(value_type = Vec<Object>)]
    results: Vec<serde_json::Value>,
    stats: BatchStats,
}

/// A batch's answer, written as its calls answer: each call's body goes
/// into the JSON as soon as it is known, by the writer its own request
/// would use ([`ExecResponse::write_json`], [`ApiError::body`]), and is
/// dropped. Keeping a thousand answers of 360 bytes to write at the end
/// cost a copy of each into the list and out of it, and the list itself.
pub(super) struct Answers {
    json: Vec<u8>,
    calls: usize,
    succeeded: usize,
}

impl Answers {
    /// An answer with room for `calls` small answers: a batch's body runs
    /// to hundreds of kilobytes, which a buffer grown by doubling would
    /// copy over and over.
    fn with_room_for(calls: usize) -> Self {
        let mut json = Vec::with_capacity(BYTES_PER_ANSWER * calls + 128);
        json.extend_from_slice(b"{\"results\":[");
        Answers {
            json,
            calls: 0,
            succeeded: 0,
        }
    }

    /// Writes the next call's answer.
    fn push(&mut self, answer: &ApiResult<ExecResponse>) -> ApiResult<()> {
        if self.calls > 0 {
            self.json.push(b',');
        }
        let written = match answer {
            Ok(response) => response.write_json(&mut self.json),
            Err(error) => serde_json::to_writer(&mut self.json, &error.body()),
        };
        written.map_err(unwritable)?;
        self.calls += 1;
        self.succeeded += usize::from(answer.is_ok());
        Ok(())
    }

    /// How many calls have answered.
    fn len(&self) -> usize {
        self.calls
    }

    /// The whole answer's JSON, with the batch's stats.
    fn finish(mut self, wall_time_us: u64) -> ApiResult<Vec<u8>> {
        let stats = BatchStats {
            calls: self.calls,
            succeeded: self.succeeded,
            failed: self.calls - self.succeeded,
            wall_time_us,
        };
        self.json.extend_from_slice(b"],\"stats\":");
        serde_json::to_writer(&mut self.json, &stats).map_err(unwritable)?;
        self.json.push(b'}');
        Ok(self.json)
    }
}

fn unwritable(e: serde_json::Error) -> ApiError {
    ApiError::internal(format!("cannot write the batch's answer: {e}"))
}

/// What the batch as a whole did.
#[derive(Serialize, ToSchema)]
pub struct BatchStats {
    calls: usize,
    /// Calls that answered results (the others answered an error).
    succeeded: usize,
    failed: usize,
    /// The whole batch, from the request's arrival to its answer.
    wall_time_us: u64,
}

#[utoipa::path(post, path = "/batch", tag = "execute", operation_id = "run_batch",
    request_body = Batch,
    responses(
        (status = 200, description = "Every call's own response body, in order; one failing call does not fail the batch", body = BatchResponse),
        (status = 400, description = "invalid_request: no calls, more than --max-batch-calls, or timeout_ms over --batch-timeout-ms", body = ErrorBody),
        (status = 404, description = "instance_not_found: the instance named does not exist (or is another token's)", body = ErrorBody),
        (status = 503, description = "overloaded: no execution slot came the batch's turn; see Retry-After", body = ErrorBody),
        GuardedErrors, BodyErrors,
    ))]
async fn run_batch(
    State(app): State<AppState>,
    caller: Caller,
    client: ClientId,
    BatchBody(mut batch): BatchBody,
) -> ApiResult<Response> {
    let ceilings = Ceilings {
        limits: app.engine.default_limits(),
        batch_timeout: app.bounds.batch_timeout,
    };
    let json = execute(&app, &caller, &client, &mut batch, ceilings, &|_| {}).await?;
    Ok(json_response(json))
}

/// `POST /batch`'s body, read as a JSON body is ([`read_json`]) and
/// decoded by [`Calls::read`].
pub(super) struct BatchBody(Calls);

impl<S> FromRequest<S> for BatchBody
where
    S: Send + Sync,
    BodyRules: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_json(req, state).await?;
        Calls::read(&bytes).map(BatchBody).map_err(unreadable)
    }
}

/// The limits a batch runs under: a request's, or a job's (higher).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ceilings {
    pub limits: ExecLimits,
    pub batch_timeout: Duration,
}

/// Runs `batch` for `client`, telling `progress` how many calls are done
/// after each one; its answer is the `200` body's JSON.
pub(super) async fn execute(
    app: &AppState,
    caller: &Caller,
    client: &ClientId,
    batch: &mut Calls,
    ceilings: Ceilings,
    progress: &(dyn Fn(usize) + Send + Sync),
) -> ApiResult<Vec<u8>> {
    let started = Instant::now();
    let bounds = app.bounds;
    batch.check(bounds.max_batch_calls)?;
    let budget = match batch.timeout_ms {
        None => ceilings.batch_timeout,
        Some(ms) if u128::from(ms) <= ceilings.batch_timeout.as_millis() => Duration::from_millis(ms),
        Some(ms) => {
            return Err(ApiError::invalid_request(format!(
                "timeout_ms = {ms} exceeds the server's batch budget of {} ms (--batch-timeout-ms, or \
                 --max-job-timeout-ms in a job); a batch may only ask for less",
                ceilings.batch_timeout.as_millis()
            )));
        }
    };
    let deadline = started + budget;
    let mut answers = Answers::with_room_for(batch.len());
    match &batch.instance {
        None => {
            let _permit = app.exec_permit(client).await?;
            let mut seen = Resolutions::default();
            // Taken only now: a refusal above leaves the batch whole, for
            // a job to try again.
            let calls = std::mem::replace(&mut batch.calls, CallBodies::Raw(Vec::new()));
            let limits = ceilings.limits;
            match calls {
                CallBodies::Registered(calls) => {
                    for req in calls {
                        // One clock read serves the deadline check and the call.
                        let now = Instant::now();
                        let answer = match spent(deadline, budget, now) {
                            Some(refusal) => Err(refusal),
                            // `one_shot`'s steps for a decoded body: the call is
                            // made ready here and borrowed by its plan, not
                            // moved into one more future (a copy of about
                            // 600 bytes per call).
                            None => match req.ready(app, now, Some(deadline), limits) {
                                Err(e) => Err(e),
                                Ok(ready) => match seen.plan(&ready) {
                                    Some(plan) => plan.run_ready(app, &ready).await,
                                    None => Box::pin(exec::run(app, ready, Some(&mut seen))).await,
                                },
                            },
                        };
                        answers.push(&answer)?;
                        progress(answers.len());
                    }
                }
                CallBodies::Raw(calls) => {
                    for raw in &calls {
                        let now = Instant::now();
                        let answer = match spent(deadline, budget, now) {
                            Some(refusal) => Err(refusal),
                            None => one_shot(app, raw, now, deadline, limits, Some(&mut seen)).await,
                        };
                        answers.push(&answer)?;
                        progress(answers.len());
                    }
                }
            }
        }
        Some(id) => {
            let CallBodies::Raw(calls) = &batch.calls else {
                return Err(ApiError::internal(
                    "a batch on a live instance was read as registered calls",
                ));
            };
            let slot = instances::visible::<LiveInstance>(app, caller, id).await?;
            // As for one call: the instance's turn first, then a slot.
            let mut live = slot.live.lock().await;
            let _permit = app.exec_permit(client).await?;
            for raw in calls {
                let answer = match (spent(deadline, budget, Instant::now()), parse::<CallInstance>(raw)) {
                    (Some(refusal), _) => Err(refusal),
                    (None, Err(e)) => Err(e),
                    (None, Ok(req)) => instances::call_locked(app, &slot, &mut live, req, Some(deadline)).await,
                };
                answers.push(&answer)?;
                progress(answers.len());
            }
        }
    }
    answers.finish(started.elapsed().as_micros() as u64)
}

/// One call on a fresh instance, begun at `started`: `POST /execute`'s
/// when it names a registered module, else `POST /`'s. In a batch, `seen`
/// is what its earlier calls resolved (see [`Resolutions`]).
pub(super) async fn one_shot(
    app: &AppState,
    raw: &RawValue,
    started: Instant,
    deadline: Instant,
    ceiling: ExecLimits,
    seen: Option<&mut Resolutions>,
) -> ApiResult<ExecResponse> {
    let ready = match decode(raw)? {
        Body::Registered(req) => req.ready(app, started, Some(deadline), ceiling)?,
        // Boxed: text is compiled off the reactor, a future the usual
        // call should not carry.
        Body::Inline(req) => Box::pin(req.ready(app, started, Some(deadline), ceiling)).await?,
    };
    // A batch's later calls of a module run on what its first resolved.
    // Only that path is awaited inline: a future built inline takes room
    // in its caller's, and is copied whole at every level, on every call.
    match seen {
        Some(seen) => match seen.plan(&ready) {
            Some(plan) => plan.run_ready(app, &ready).await,
            None => Box::pin(exec::run(app, ready, Some(seen))).await,
        },
        None => Box::pin(exec::run(app, ready, None)).await,
    }
}

/// A call's body: a `POST /execute` body or a `POST /` body.
enum Body {
    Registered(RunRegistered),
    Inline(RunInline),
}

/// Decodes the body `raw` stands for, as its own request would be.
fn decode(raw: &RawValue) -> ApiResult<Body> {
    // Most batched calls name a registered module: such a body is decoded
    // once. Should that fail, the probe below says which request the call
    // stands for, and so whose error to answer.
    if raw.get().contains("\"module_name\"")
        && let Ok(req) = serde_json::from_str::<RunRegistered>(raw.get())
    {
        return Ok(Body::Registered(req));
    }
    #[derive(Deserialize)]
    struct Probe {
        module_name: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::invalid_request(format!("a call must be a JSON object: {e}")))?;
    match probe.module_name {
        Some(_) => parse(raw).map(Body::Registered),
        None => parse(raw).map(Body::Inline),
    }
}

/// Whether `raw` is a JSON object (its first character says so).
pub(super) fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// A call's body, checked as its own request's would be.
fn parse<T: serde::de::DeserializeOwned>(raw: &RawValue) -> ApiResult<T> {
    serde_json::from_str(raw.get()).map_err(|e| ApiError::invalid_request(format!("invalid call: {e}")))
}

/// The refusal for a call the batch has no time left for, as of `now`.
fn spent(deadline: Instant, budget: Duration, now: Instant) -> Option<ApiError> {
    // Less than a millisecond left is none: a call's time limit is whole
    // milliseconds, and a call cut short just before the deadline must not
    // let the next one start with a sliver.
    (now + Duration::from_millis(1) >= deadline).then(|| {
        ApiError::new(
            ErrorCode::LimitExceeded,
            format!(
                "the batch's time budget of {} ms ran out before this call started (timeout_ms, --batch-timeout-ms)",
                budget.as_millis()
            ),
        )
        .with("limit", "batch_time")
    })
}

#[cfg(test)]
mod tests {
    use super::super::call::{ExecResponse, ModulesRan, OutputFields, StatsBody};
    use super::*;

    fn answer(n: i32) -> ExecResponse {
        ExecResponse {
            results: vec![RawValue::from_string(n.to_string()).unwrap()],
            result_types: vec!["i32".into()],
            memory: Vec::new(),
            exit_code: None,
            output: OutputFields::default(),
            stats: StatsBody {
                fuel_consumed: 4,
                compile: Some("cached"),
                compile_us: Some(0),
                instantiate_us: 0,
                call_us: 1,
                wall_time_us: 2,
                tier: "compiled",
                limits_hit: Vec::new(),
                memory_peak_bytes: 0,
                modules: ModulesRan::of("double", "45eb", []),
            },
            passed: None,
            diff: Vec::new(),
            runs: None,
        }
    }

    fn read(body: &str) -> Calls {
        Calls::read(body.as_bytes()).unwrap()
    }

    fn registered(calls: &Calls) -> bool {
        matches!(calls.calls, CallBodies::Registered(_))
    }

    /// A batch of `POST /execute` bodies is read in one pass; anything the
    /// one pass could read differently from the general reading, or not
    /// at all, is read the general way, so that each call keeps its own
    /// error.
    #[test]
    fn only_a_batch_of_registered_calls_is_read_in_one_pass() {
        let usual = read(
            r#"{"calls": [{"module_name": "m", "function_name": "f", "params": [1]},
            {"module_name": "m", "function_name": "f", "params": ["-0"]}], "timeout_ms": 5}"#,
        );
        assert!(registered(&usual));
        assert_eq!((usual.len(), usual.timeout_ms, usual.instance()), (2, Some(5), None));
        usual.check(10).unwrap();

        // A call written as an array of a body's fields, which the derived
        // reader would take: refused as the general reading refuses it.
        let array = read(r#"{"calls": [["m", "f", [1]]]}"#);
        assert!(!registered(&array));
        let refusal = array.check(10).unwrap_err();
        assert!(
            refusal.message.contains("calls[0] is not a JSON object"),
            "{}",
            refusal.message
        );

        for general in [
            // inline code beside a registered call
            r#"{"calls": [{"module_name": "m"}, {"wat": "(module)", "function_name": "f"}]}"#,
            // a live instance's calls
            r#"{"calls": [{"function_name": "f"}], "instance": "i"}"#,
            r#"{"calls": [{"module_name": "m"}], "instance": null}"#,
            // a call with its own mistake
            r#"{"calls": [{"module_name": "m", "bogus": 1}, {"module_name": 7}]}"#,
        ] {
            let calls = read(general);
            assert!(!registered(&calls), "{general} was read in one pass");
        }
        assert_eq!(
            read(r#"{"calls": [{"function_name": "f"}], "instance": "i"}"#).instance(),
            Some("i")
        );

        // What neither reading takes is the body's error.
        assert!(Calls::read(br#"{"calls": [{"module_name": "m"}], "extra": 1}"#).is_err());
        assert!(Calls::read(b"[1]").is_err());
    }

    /// The batch's answer, written call by call, is the object of the
    /// answers each call's own request would have had, and the stats.
    #[test]
    fn a_batch_answer_holds_each_calls_own_body_in_order() {
        let calls = [
            Ok(answer(4)),
            Err(ApiError::new(ErrorCode::Trap, "unreachable \"here\"").with("trap", "unreachable")),
            Ok(answer(-8)),
        ];
        let mut answers = Answers::with_room_for(calls.len());
        for call in &calls {
            answers.push(call).unwrap();
        }
        let written: serde_json::Value = serde_json::from_slice(&answers.finish(17).unwrap()).unwrap();
        let own = |call: &ApiResult<ExecResponse>| match call {
            Ok(response) => serde_json::to_value(response).unwrap(),
            Err(error) => serde_json::to_value(error.body()).unwrap(),
        };
        let expected = serde_json::json!({
            "results": calls.iter().map(own).collect::<Vec<_>>(),
            "stats": {"calls": 3, "succeeded": 2, "failed": 1, "wall_time_us": 17},
        });
        assert_eq!(written, expected);
    }
}
