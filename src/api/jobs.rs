//! Asynchronous jobs: `POST /jobs`, `GET /jobs/{id}`,
//! `GET /jobs/{id}/events`, `DELETE /jobs/{id}`.
//!
//! A job is a call or a batch that the client does not wait for: it is
//! answered `202` at once and runs in the background, with longer limits
//! than a request may have (`--max-job-timeout-ms`). Each job's record
//! (status, request, result) lives in the modules' store, written at every
//! step, so a restart loses no queued or finished job. A job that was
//! running when its server stopped cannot be resumed (its instance died
//! with the process): on restart it is marked `failed`, saying so, rather
//! than run twice behind the client's back. Queued jobs are run again.
//!
//! While a job is queued or running its state is also in a watch channel,
//! so that `GET /jobs/{id}/events` streams each change as it happens; a
//! finished job, or one of another node sharing the store, is read from
//! the store (memory holds only unfinished jobs, however many finish).

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::auth::Caller;
use super::batch::{self, Calls, Ceilings};
use super::call_json::BYTES_PER_ANSWER;
use super::client::ClientId;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::JsonBody;
use super::job_table::{JobRecord, JobStatus, Jobs, Progress};
use super::responses::{BodyErrors, ErrorBody, GuardedErrors};
use super::routes::Routes;
use super::state::AppState;
use crate::engine::ExecLimits;

pub fn routes() -> Routes {
    Routes::new()
        .add(Method::POST, "/jobs", submit)
        .add(Method::GET, "/jobs/{id}", status)
        .add(Method::DELETE, "/jobs/{id}", cancel)
        .add(Method::GET, "/jobs/{id}/events", events)
}

/// Body of `POST /jobs`: exactly one of `call` and `batch`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"call": {"module_name": "utils", "function_name": "double", "params": [21]}}))]
pub struct SubmitJob {
    /// One call: a `POST /execute` body (it has `module_name`) or a
    /// `POST /` body.
    #[schema(value_type = Option<Object>)]
    call: Option<Box<RawValue>>,
    /// Or many: a `POST /batch` body (without `instance`: a job runs on
    /// fresh instances).
    #[schema(value_type = Option<Object>)]
    batch: Option<Box<RawValue>>,
}

/// `202` from `POST /jobs`.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    id: String,
    status: JobStatus,
}

/// A job's request, checked: what it runs.
enum Work {
    Call(Box<RawValue>),
    Batch(Calls),
}

impl Work {
    fn of(request: &RawValue, max_batch_calls: usize) -> ApiResult<Work> {
        let submit: SubmitJob =
            serde_json::from_str(request.get()).map_err(|e| ApiError::invalid_request(format!("invalid job: {e}")))?;
        match (submit.call, submit.batch) {
            (Some(call), None) if batch::is_object(&call) => Ok(Work::Call(call)),
            (Some(_), None) => Err(ApiError::invalid_request("`call` is a request body: a JSON object")),
            (None, Some(raw)) => {
                let batch = Calls::read(raw.get().as_bytes())
                    .map_err(|e| ApiError::invalid_request(format!("invalid batch: {e}")))?;
                batch.check(max_batch_calls)?;
                if batch.instance().is_some() {
                    return Err(ApiError::invalid_request(
                        "a job's batch runs on fresh instances: `instance` is for POST /batch (a live instance \
                         lives on one node, and may be gone when the job runs)",
                    ));
                }
                Ok(Work::Batch(batch))
            }
            _ => Err(ApiError::invalid_request("send exactly one of `call` and `batch`")),
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Ends `record` with `status`, now.
fn finish(record: &mut JobRecord, status: JobStatus) {
    record.status = status;
    record.finished = Some(now_rfc3339());
}

/// Whether `record` finished at or before `cutoff` (its `finished` time
/// is the one kept).
fn finished_by(record: &JobRecord, cutoff: SystemTime) -> bool {
    record.status.finished()
        && record
            .finished
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .is_some_and(|t| t <= cutoff)
}

/// Writes `record` to the store; a job whose record cannot be written is
/// logged (its state in memory goes on).
async fn persist(app: &AppState, record: &JobRecord) {
    let bytes = match serde_json::to_vec(record) {
        Ok(bytes) => bytes,
        Err(e) => return tracing::error!(job = %record.id, error = %e, "cannot encode a job record"),
    };
    if let Err(e) = app.registry.put_job(&record.id, bytes).await {
        tracing::error!(job = %record.id, error = %e, "cannot store a job record");
    }
}

/// Changes job `id`'s state in memory (telling those who watch) and in the
/// store.
async fn update(app: &AppState, id: &str, change: impl FnOnce(&mut JobRecord)) -> Option<JobRecord> {
    let record = {
        let table = app.jobs.lock();
        let live = table.get(id)?;
        live.state.send_modify(change);
        live.state.borrow().clone()
    };
    persist(app, &record).await;
    Some(record)
}

/// The ceilings a job's work runs under.
fn ceilings(app: &AppState) -> Ceilings {
    let settings = app.jobs.settings;
    Ceilings {
        limits: ExecLimits {
            fuel: settings.max_fuel,
            timeout_ms: u64::try_from(settings.max_timeout.as_millis()).unwrap_or(u64::MAX),
            ..app.engine.default_limits()
        },
        batch_timeout: settings.max_timeout,
    }
}

/// Starts the task that runs job `id` when a job slot and an execution slot
/// are free.
fn spawn_runner(app: &AppState, id: String, work: Work, client: ClientId) {
    let task_app = app.clone();
    let task_id = id.clone();
    let task = tokio::spawn(async move {
        let app = task_app;
        let id = task_id;
        let Ok(_running) = app.jobs.running.clone().acquire_owned().await else {
            return;
        };
        if app.jobs.current(&id).is_none_or(|r| r.status != JobStatus::Queued) {
            return; // cancelled while queued
        }
        update(&app, &id, |r| {
            r.status = JobStatus::Running;
            r.started = Some(now_rfc3339());
        })
        .await;
        let (status, result) = run(&app, &id, work, &client).await;
        // A job that finished later used to be recorded first when its
        // last record was stored sooner, and then the wrong job was the
        // oldest (see `Jobs::finishing`).
        let _finishing = app.jobs.finishing.lock().await;
        update(&app, &id, |r| {
            finish(r, status);
            r.result = result;
        })
        .await;
        // Finished, it lives in the store only: memory holds the jobs that
        // are queued or running, however many finish. Watchers already
        // subscribed still receive the last state.
        app.jobs.lock().remove(&id);
        forget_oldest(&app, &client, &id).await;
    });
    if let Some(live) = app.jobs.lock().get_mut(&id) {
        live.task = Some(task.abort_handle());
    }
}

/// Records that `client`'s job `id` finished, and forgets the client's
/// oldest finished jobs past `--max-finished-jobs-per-client`.
async fn forget_oldest(app: &AppState, client: &ClientId, id: &str) {
    for old in app.jobs.finished(client, id) {
        if let Err(e) = app.registry.remove_job(&old).await {
            tracing::warn!(job = %old, error = %e, "cannot forget an old job");
        }
    }
}

/// Runs a job's work, answering its final status and the body the
/// synchronous request would have answered.
async fn run(app: &AppState, id: &str, work: Work, client: &ClientId) -> (JobStatus, Option<Box<RawValue>>) {
    let ceilings = ceilings(app);
    let body = |value: serde_json::Value| serde_json::value::to_raw_value(&value).ok();
    // An answer written as its request's response is (`call_json`), kept
    // as it is.
    let written = |json: Vec<u8>| {
        String::from_utf8(json)
            .ok()
            .and_then(|text| RawValue::from_string(text).ok())
    };
    match work {
        Work::Call(raw) => {
            // Admission refuses only with the codes `patiently` waits out.
            let _permit = match patiently(|| app.exec_permit(client)).await {
                Ok(permit) => permit,
                Err(error) => return (JobStatus::Failed, body(error.into_body())),
            };
            let started = std::time::Instant::now();
            let deadline = started + ceilings.batch_timeout;
            match batch::one_shot(app, &raw, started, deadline, ceilings.limits, None).await {
                Ok(response) => {
                    let mut json = Vec::with_capacity(BYTES_PER_ANSWER);
                    (
                        JobStatus::Done,
                        response.write_json(&mut json).ok().and_then(|()| written(json)),
                    )
                }
                Err(error) => (JobStatus::Failed, body(error.into_body())),
            }
        }
        Work::Batch(mut batch) => {
            let of = batch.len();
            let progress = |done: usize| {
                if let Some(live) = app.jobs.lock().get(id) {
                    live.state.send_modify(|r| r.progress = Some(Progress { done, of }));
                }
            };
            // The batch takes its own execution slot, waited for as in
            // `patiently` (which cannot lend the batch to each attempt).
            let ran = loop {
                match batch::execute(app, &Caller::Anonymous, client, &mut batch, ceilings, &progress).await {
                    Err(e) if waits_out(&e) => tokio::time::sleep(RETRY).await,
                    ran => break ran,
                }
            };
            match ran {
                Ok(json) => (JobStatus::Done, written(json)),
                Err(error) => (JobStatus::Failed, body(error.into_body())),
            }
        }
    }
}

/// `attempt`, tried again until it is admitted: a job waits for an
/// execution slot however long it takes (its queue is the job table),
/// where a request would be refused.
async fn patiently<T, F: Future<Output = ApiResult<T>>>(mut attempt: impl FnMut() -> F) -> ApiResult<T> {
    loop {
        match attempt().await {
            Err(e) if waits_out(&e) => tokio::time::sleep(RETRY).await,
            other => return other,
        }
    }
}

/// How long a job waits before asking for a slot again.
const RETRY: Duration = Duration::from_millis(100);

/// Whether `error` is a refusal a job waits out: no slot now.
fn waits_out(error: &ApiError) -> bool {
    matches!(error.code, ErrorCode::Overloaded | ErrorCode::ConcurrencyLimit)
}

#[utoipa::path(post, path = "/jobs", tag = "jobs", operation_id = "submit_job",
    request_body = SubmitJob,
    responses(
        (status = 202, description = "Accepted; `Location` is the job's path", body = Accepted,
            headers(("Location" = String, description = "/jobs/{id}"))),
        (status = 400, description = "invalid_request: not exactly one of call and batch, or a bad call or batch body", body = ErrorBody),
        (status = 429, description = "too_many_jobs: this client has --max-jobs-per-client jobs queued or running", body = ErrorBody),
        GuardedErrors, BodyErrors,
    ))]
async fn submit(
    State(app): State<AppState>,
    caller: Caller,
    client: ClientId,
    JsonBody(body): JsonBody<Box<RawValue>>,
) -> ApiResult<impl IntoResponse> {
    let work = Work::of(&body, app.bounds.max_batch_calls)?;
    let max = app.jobs.settings.max_per_client;
    let id = format!("{}.{}", app.instances.settings().node_id, uuid::Uuid::new_v4().simple());
    let record = JobRecord {
        id: id.clone(),
        status: JobStatus::Queued,
        node: app.instances.settings().node_id.clone(),
        owner: caller.fingerprint(),
        created: now_rfc3339(),
        started: None,
        finished: None,
        progress: match &work {
            Work::Batch(batch) => Some(Progress {
                done: 0,
                of: batch.len(),
            }),
            Work::Call(_) => None,
        },
        result: None,
        reason: None,
        request: body,
    };
    {
        let mut table = app.jobs.lock();
        let pending = table
            .values()
            .filter(|l| l.client == client && !l.state.borrow().status.finished())
            .count();
        if pending >= max {
            return Err(ApiError::new(
                ErrorCode::TooManyJobs,
                format!(
                    "{client} has {pending} jobs queued or running (--max-jobs-per-client); wait for one to finish"
                ),
            ));
        }
        Jobs::track(&mut table, record.clone(), client.clone());
    }
    persist(&app, &record).await;
    spawn_runner(&app, id.clone(), work, client);
    let location = [(header::LOCATION, format!("/jobs/{id}"))];
    Ok((
        StatusCode::ACCEPTED,
        location,
        Json(Accepted {
            id,
            status: JobStatus::Queued,
        }),
    ))
}

/// The job `id`, if `caller` may see it: this process's view, else the
/// store's. Another token's job is reported as not found.
async fn visible(app: &AppState, caller: &Caller, id: &str) -> ApiResult<JobRecord> {
    let record = match app.jobs.current(id) {
        Some(record) => record,
        None => {
            let bytes = app.registry.job(id).await?.ok_or_else(|| not_found(id))?;
            serde_json::from_slice(&bytes).map_err(ApiError::internal)?
        }
    };
    if caller.sees_all() || record.owner == caller.fingerprint() {
        Ok(record)
    } else {
        Err(not_found(id))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::JobNotFound,
        format!("no job has id `{id}` (it may have expired after --job-retention-secs)"),
    )
}

#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", operation_id = "job_status",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job: its status, and when it ran, the body the synchronous request would have answered", body = JobRecord),
        (status = 404, description = "job_not_found", body = ErrorBody),
        GuardedErrors,
    ))]
async fn status(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<JobRecord>> {
    Ok(Json(visible(&app, &caller, &id).await?))
}

#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs", operation_id = "cancel_job",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job as it is now: cancelled, or as it was if it had finished already", body = JobRecord),
        (status = 404, description = "job_not_found", body = ErrorBody),
        (status = 421, description = "instance_on_other_node: another node of a shared store runs the job", body = ErrorBody),
        GuardedErrors,
    ))]
async fn cancel(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<JobRecord>> {
    let record = visible(&app, &caller, &id).await?;
    if record.status.finished() {
        return Ok(Json(record));
    }
    let held = app.jobs.lock().get_mut(&id).map(|live| live.task.take());
    let Some(task) = held else {
        // Not in this process: another node's, or it finished just now.
        if record.node != app.instances.settings().node_id {
            let mut error = ApiError::new(
                ErrorCode::InstanceOnOtherNode,
                format!("job `{id}` runs on node `{}`; cancel it there", record.node),
            );
            error.extra.insert("node".into(), record.node.clone().into());
            return Err(error);
        }
        return Ok(Json(visible(&app, &caller, &id).await?));
    };
    // A running call is dropped at its next epoch tick: the guest stops.
    if let Some(task) = task {
        task.abort();
    }
    let record = update(&app, &id, |r| {
        finish(r, JobStatus::Cancelled);
        r.reason = Some("cancelled by DELETE /jobs/{id}".into());
    })
    .await
    .unwrap_or(record);
    let client = app.jobs.lock().remove(&id).map(|live| live.client);
    if let Some(client) = client {
        forget_oldest(&app, &client, &id).await;
    }
    Ok(Json(record))
}

#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs", operation_id = "job_events",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Server-Sent Events: one event per change (named by the status: `queued`, `running`, `progress`, `done`, `failed`, `cancelled`), each carrying the job as GET /jobs/{id} shows it; the stream ends after the last", content_type = "text/event-stream"),
        (status = 404, description = "job_not_found", body = ErrorBody),
        GuardedErrors,
    ))]
async fn events(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let record = visible(&app, &caller, &id).await?;
    let receiver = app.jobs.lock().get(&id).map(|live| live.state.subscribe());
    let first = event(&record);
    let stream = futures_util::stream::unfold(
        (Some(first), receiver, record.status.finished()),
        |(pending, mut receiver, finished)| async move {
            if let Some(event) = pending {
                return Some((Ok::<Event, std::convert::Infallible>(event), (None, receiver, finished)));
            }
            if finished {
                return None;
            }
            let rx = receiver.as_mut()?;
            rx.changed().await.ok()?;
            let record = rx.borrow_and_update().clone();
            let done = record.status.finished();
            Some((Ok(event(&record)), (None, receiver, done)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// One event: named by the status (`progress` while a batch runs), the job
/// as data.
fn event(record: &JobRecord) -> Event {
    let name = match (record.status, record.progress) {
        (JobStatus::Running, Some(p)) if p.done > 0 => "progress",
        (status, _) => status.as_str(),
    };
    let data = serde_json::to_string(record).unwrap_or_else(|_| "{}".into());
    Event::default().event(name).data(data)
}

/// After a restart: this node's queued jobs run again; its running ones
/// are marked failed (they cannot be resumed, and running them again could
/// repeat what they did). Also starts the reaper of expired jobs.
pub async fn recover(app: &AppState) -> Result<(), ApiError> {
    let node = app.instances.settings().node_id.clone();
    for bytes in app.registry.jobs().await? {
        let Ok(mut record) = serde_json::from_slice::<JobRecord>(&bytes) else {
            continue;
        };
        // On a shared store, each node recovers its own jobs (give nodes
        // stable --node-id values); alone, the store's jobs are all ours.
        if (app.registry.is_shared() && record.node != node) || record.status.finished() {
            continue;
        }
        match record.status {
            JobStatus::Running => {
                finish(&mut record, JobStatus::Failed);
                record.reason = Some(
                    "the server stopped while this job was running; it was not run again (it may have done part \
                     of its work): submit it again"
                        .into(),
                );
                persist(app, &record).await;
            }
            _ => {
                let Ok(work) = Work::of(&record.request, usize::MAX) else {
                    continue;
                };
                let client = match &record.owner {
                    Some(owner) => ClientId::Owner(owner.clone()),
                    None => ClientId::Unknown,
                };
                let id = record.id.clone();
                Jobs::track(&mut app.jobs.lock(), record, client.clone());
                spawn_runner(app, id, work, client);
            }
        }
    }
    spawn_reaper(app.clone());
    Ok(())
}

/// Forgets finished jobs older than `--job-retention-secs` from the store
/// (memory holds only unfinished jobs), a few times per retention period.
fn spawn_reaper(app: AppState) {
    let retention = app.jobs.settings.retention;
    let period = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            let cutoff = SystemTime::now()
                .checked_sub(retention)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let Ok(stored) = app.registry.jobs().await else {
                continue;
            };
            for bytes in stored {
                if let Ok(record) = serde_json::from_slice::<JobRecord>(&bytes)
                    && finished_by(&record, cutoff)
                {
                    let _ = app.registry.remove_job(&record.id).await;
                }
            }
        }
    });
}
