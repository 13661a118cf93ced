//! The jobs this process knows and their records: what `api::jobs` runs
//! and serves, kept apart from it so that the shared state can hold the
//! table without depending on the handlers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, watch};
use utoipa::ToSchema;

use super::client::ClientId;

/// Bounds on jobs.
#[derive(Debug, Clone, Copy)]
pub struct JobSettings {
    /// Jobs running at once (each also takes an execution slot).
    pub concurrency: usize,
    /// Jobs one client may have queued or running.
    pub max_per_client: usize,
    /// A job's time limit (a call's, or a batch's budget) at most.
    pub max_timeout: Duration,
    /// A job's fuel at most.
    pub max_fuel: u64,
    /// How long a finished job is kept.
    pub retention: Duration,
    /// Most finished jobs kept per client: older ones are forgotten early,
    /// so that retention bounds the store in bytes too, not only in time.
    pub max_finished_per_client: usize,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    /// It ran; `result` is what the synchronous request would have
    /// answered (a batch is `done` even when some of its calls failed).
    Done,
    /// A single call failed (`result` is its error body), or the server
    /// stopped while it ran (`reason`).
    Failed,
    Cancelled,
}

impl JobStatus {
    pub(super) fn finished(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled)
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// A job as stored and as `GET /jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobRecord {
    pub(super) id: String,
    pub(super) status: JobStatus,
    /// The node that accepted it and runs it.
    pub(super) node: String,
    /// The token's fingerprint; `None` when access control is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub(super) owner: Option<String>,
    pub(super) created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) finished: Option<String>,
    /// A batch's calls done so far, and of how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) progress: Option<Progress>,
    /// When it ran: the body the synchronous request would have answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(super) result: Option<Box<RawValue>>,
    /// Why it failed or was cancelled without a result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
    /// What was submitted.
    #[schema(value_type = Object)]
    pub(super) request: Box<RawValue>,
}

/// A batch job's progress.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub(super) done: usize,
    pub(super) of: usize,
}

/// The jobs this process knows: their state, and how to stop them.
pub struct Jobs {
    pub(super) settings: JobSettings,
    /// One permit per job running.
    pub(super) running: Arc<Semaphore>,
    table: Mutex<HashMap<String, Live>>,
    /// Each client's finished jobs this process recorded, oldest first.
    finished: Mutex<HashMap<ClientId, VecDeque<String>>>,
    /// Held by a job while it finishes (its last record stored, then the
    /// oldest finished jobs forgotten): one at a time, so that jobs are
    /// recorded as finished in the order they finished, and none is
    /// forgotten while its last record is still being stored (which
    /// would store it again).
    pub(super) finishing: tokio::sync::Mutex<()>,
}

pub(super) struct Live {
    pub state: watch::Sender<JobRecord>,
    pub client: ClientId,
    /// The task running it, once it runs.
    pub task: Option<tokio::task::AbortHandle>,
}

impl Jobs {
    pub fn new(settings: JobSettings) -> Self {
        Jobs {
            settings,
            running: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            table: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashMap::new()),
            finishing: tokio::sync::Mutex::new(()),
        }
    }

    /// Starts tracking an unfinished job of `client` (its task is set once
    /// it is spawned).
    pub(super) fn track(table: &mut HashMap<String, Live>, record: JobRecord, client: ClientId) {
        let id = record.id.clone();
        let (state, _) = watch::channel(record);
        table.insert(
            id,
            Live {
                state,
                client,
                task: None,
            },
        );
    }

    /// Records that `client`'s job `id` finished; answers the ids of its
    /// oldest finished jobs past `--max-finished-jobs-per-client`, which
    /// the caller forgets.
    pub(super) fn finished(&self, client: &ClientId, id: &str) -> Vec<String> {
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        let ids = finished.entry(client.clone()).or_default();
        ids.push_back(id.to_string());
        let over = ids.len().saturating_sub(self.settings.max_finished_per_client);
        ids.drain(..over).collect()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Jobs queued and running now, for `/metrics`.
    pub fn counts(&self) -> (usize, usize) {
        let table = self.lock();
        let count = |status| table.values().filter(|l| l.state.borrow().status == status).count();
        (count(JobStatus::Queued), count(JobStatus::Running))
    }

    /// The job `id` as this process knows it.
    pub(super) fn current(&self, id: &str) -> Option<JobRecord> {
        self.lock().get(id).map(|live| live.state.borrow().clone())
    }
}
