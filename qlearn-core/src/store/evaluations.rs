//! Evaluation jobs in the stores (issue 18): the job record ([`EvalJob`]),
//! the plan's limits on creating them ([`EvalLimits`]), the store methods
//! ([`Evaluations`], a supertrait of [`Store`](super::Store)) and the rules
//! every backend applies, written once ([`check_limits`], [`JobRow`]).
//!
//! A job is `queued` when created, `running` once an instance claimed it
//! with a lease (a random token and an expiry, renewed by each progress
//! write), then `done`, `failed` or `cancelled`. A running job whose lease
//! expired (its instance died) is claimed again. Only the lease's holder
//! writes progress or the end; a cancelled job's holder learns it at its
//! next progress write. Deleting a finished job, or its model, leaves a
//! tombstone without payload, counted in the day's limit until the day is
//! over; retention is [`super::eval_retention`]'s.

use serde::{Deserialize, Serialize};

use super::eval_retention::EvalFootprint;
use crate::decisions::DecisionRecord;
use crate::error::{Error, Result};
use crate::evaluation::{EvalRequest, JobError};

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker holds its lease.
    Running,
    /// Finished with a result.
    Done,
    /// Finished with an error.
    Failed,
    /// Cancelled by its owner.
    Cancelled,
    /// A tombstone: a finished job deleted by its owner, or any job of a
    /// deleted model (never listed; its payload dropped; counted in its
    /// day's limit until the day is over).
    Deleted,
}

impl JobStatus {
    /// Every status.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Done,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Deleted,
    ];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Deleted => "deleted",
        }
    }

    /// Whether the job is still to finish (queued or running): these count
    /// against [`EvalLimits::at_once`].
    pub fn active(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running)
    }

    /// Whether the job finished (done, failed, cancelled): a model keeps
    /// the newest [`super::KEEP_FINISHED_JOBS`] of these.
    pub fn finished(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl std::str::FromStr for JobStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        JobStatus::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::field("status", format!("unknown job status {s:?}")))
    }
}

/// An evaluation job's record.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalJob {
    /// `ev_` and a random id.
    pub id: String,
    /// The owner's user id.
    pub owner: String,
    /// The evaluated model.
    pub model_id: String,
    /// Where it stands.
    pub status: JobStatus,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// When a worker first claimed it.
    pub started_at: Option<i64>,
    /// When it finished or was cancelled.
    pub finished_at: Option<i64>,
    /// The normalised request.
    pub request: EvalRequest,
    /// Decisions read so far.
    pub decisions_read: u64,
    /// Decisions the job will read (known once it started).
    pub decisions_total: u64,
    /// Why it failed.
    pub error: Option<JobError>,
    /// The result ([`crate::evaluation::JobResult`] as JSON).
    pub result: Option<serde_json::Value>,
}

impl EvalJob {
    /// A new queued job of `owner`'s model `model_id`, with a fresh id
    /// (every backend's `create_evaluation`).
    pub fn queued(owner: &str, model_id: &str, request: &EvalRequest, now: i64) -> EvalJob {
        EvalJob {
            id: new_job_id(),
            owner: owner.to_owned(),
            model_id: model_id.to_owned(),
            status: JobStatus::Queued,
            created_at: now,
            started_at: None,
            finished_at: None,
            request: request.clone(),
            decisions_read: 0,
            decisions_total: 0,
            error: None,
            result: None,
        }
    }
}

/// The plan's limits on creating jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalLimits {
    /// Jobs a user may create per UTC day.
    pub per_day: u32,
    /// Jobs a user may have queued or running at once.
    pub at_once: u32,
}

/// How a job's holder ends it.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEnd {
    /// Finished with a result.
    Done(serde_json::Value),
    /// Finished with an error.
    Failed(JobError),
    /// Given back to the queue (the instance is shutting down).
    Released,
}

/// A claimed job and the lease token its holder writes with.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// The job (status running).
    pub job: EvalJob,
    /// The lease's token.
    pub token: String,
}

/// A keyset page of a model's decision log, newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecisionKeyset {
    /// Only decisions logged at or after (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// Only decisions logged before (Unix milliseconds).
    pub until_ms: Option<i64>,
    /// Only decisions before this `(time_ms, decision_id)` in the order
    /// (the last of the previous page).
    pub before: Option<(i64, String)>,
    /// At most this many.
    pub limit: u64,
}

/// The storage of evaluation jobs; every [`Store`](super::Store) has it.
/// Times are Unix seconds, passed in by the caller.
pub trait Evaluations {
    /// Creates a queued job of `owner`'s model `model_id` (an unknown or
    /// another user's model is [`Error::NotFound`]), refusing with
    /// [`Error::EvaluationLimit`] when the user created `limits.per_day`
    /// jobs on `now`'s UTC day or has `limits.at_once` queued or running,
    /// checked atomically with the insert.
    fn create_evaluation(
        &self,
        owner: &str,
        model_id: &str,
        request: &EvalRequest,
        limits: EvalLimits,
        now: i64,
    ) -> Result<EvalJob>;
    /// One job of `owner`'s model (a deleted one, another model's or
    /// another user's is [`Error::NotFound`]).
    fn evaluation(&self, owner: &str, model_id: &str, id: &str) -> Result<EvalJob>;
    /// The model's jobs, newest first, at most `limit`, only those older
    /// than the job `before` when given (an unknown `before` is
    /// [`Error::NotFound`]).
    fn evaluations(
        &self,
        owner: &str,
        model_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EvalJob>>;
    /// Cancels a queued or running job, or deletes a finished one (its
    /// payload dropped at once; a tombstone stays, counted in its day's
    /// limit).
    fn cancel_evaluation(&self, owner: &str, model_id: &str, id: &str, now: i64) -> Result<()>;
    /// Claims a queued job (or a running job whose lease expired) with a
    /// lease of `lease_secs`; each job is claimed by one caller at a time,
    /// also across instances. Fair between tenants: the job is one of the
    /// owner with the fewest jobs running under a live lease, the oldest
    /// of those, so one tenant's queue (or many accounts') cannot hold
    /// every worker while another tenant waits.
    fn claim_evaluation(&self, lease_secs: i64, now: i64) -> Result<Option<Claimed>>;
    /// Writes the holder's progress and renews its lease; `false` when the
    /// job is no longer the holder's (cancelled, or re-claimed after the
    /// lease expired): the holder stops.
    fn evaluation_progress(
        &self,
        id: &str,
        token: &str,
        read: u64,
        total: u64,
        lease_secs: i64,
        now: i64,
    ) -> Result<bool>;
    /// Ends the holder's job; `false` when it was no longer the holder's.
    fn finish_evaluation(&self, id: &str, token: &str, end: JobEnd, now: i64) -> Result<bool>;
    /// Removes what retention no longer keeps ([`super::eval_retention`]):
    /// the tombstones created before `now`'s UTC day, and each model's
    /// finished jobs after its newest `keep`, in bounded chunks. Returns
    /// the rows removed (exact: again at once, none).
    fn prune_evaluations(&self, keep: u32, now: i64) -> Result<usize>;
    /// What the store keeps of `owner`'s jobs, tombstones included.
    fn evaluation_footprint(&self, owner: &str) -> Result<EvalFootprint>;
    /// A page of `owner`'s model's decision log, newest first by
    /// `(time, id)`, from a keyset cursor (a model without decisions has
    /// none). Read-only: never on a writer's queue.
    fn decisions_keyset(
        &self,
        owner: &str,
        model_id: &str,
        q: &DecisionKeyset,
    ) -> Result<Vec<DecisionRecord>>;
}

/// The day (Unix seconds of 00:00 UTC) of `now`, and the seconds until the
/// next.
pub fn day_of(now: i64) -> (i64, u64) {
    let start = now.div_euclid(86_400) * 86_400;
    (start, (start + 86_400 - now) as u64)
}

/// Refuses a new job when the user created `today` jobs today or has
/// `active` queued or running (what every backend checks in the step that
/// inserts).
pub fn check_limits(limits: EvalLimits, today: u64, active: u64, now: i64) -> Result<()> {
    if today >= u64::from(limits.per_day) {
        return Err(Error::EvaluationLimit {
            limit: "evaluations_per_day",
            max: limits.per_day,
            retry_after_secs: Some(day_of(now).1),
        });
    }
    if active >= u64::from(limits.at_once) {
        return Err(Error::EvaluationLimit {
            limit: "evaluations_at_once",
            max: limits.at_once,
            retry_after_secs: None,
        });
    }
    Ok(())
}

/// A new job's id.
pub fn new_job_id() -> String {
    format!("ev_{}", crate::tenancy::new_id())
}

/// A job as the SQL stores keep it (request, result and error as JSON
/// text).
#[derive(Clone, Debug)]
pub struct JobRow {
    /// Id.
    pub id: String,
    /// Owner.
    pub owner: String,
    /// Model.
    pub model_id: String,
    /// Status name.
    pub status: String,
    /// Created.
    pub created_at: i64,
    /// Claimed first.
    pub started_at: Option<i64>,
    /// Finished.
    pub finished_at: Option<i64>,
    /// Request JSON.
    pub request: String,
    /// Decisions read.
    pub read: i64,
    /// Decisions to read.
    pub total: i64,
    /// Error JSON.
    pub error: Option<String>,
    /// Result JSON.
    pub result: Option<String>,
}

/// The stored columns of a job, in [`JobRow`]'s order.
pub const JOB_COLS: &str = "id, owner, model_id, status, created_at, started_at, finished_at, \
     request, decisions_read, decisions_total, error, result";

/// The claim of [`Evaluations::claim_evaluation`] on an SQL store, in
/// PostgreSQL's `$n` (`$1` now, `$2` the lease token, `$3` its end;
/// SQLite's text is [`super::eval_retention::sqlite_text`]): the oldest
/// job of the owner with the fewest jobs running, both filters written so
/// that the candidates come from the active-jobs index
/// (`evaluations_queue`) and each owner's count from
/// `evaluations_owner_running`, never a scan of finished jobs. `lock`
/// follows the pick (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
pub fn sql_claim(lock: &str) -> String {
    format!(
        "UPDATE evaluations SET status = 'running', started_at = COALESCE(started_at, $1), \
         lease_token = $2, lease_until = $3 WHERE seq = (SELECT e.seq FROM evaluations e \
         WHERE e.status IN ('queued', 'running') AND (e.status = 'queued' OR e.lease_until < $1) \
         ORDER BY (SELECT count(*) FROM evaluations r WHERE r.status = 'running' \
         AND r.owner = e.owner AND r.lease_until >= $1), e.seq LIMIT 1 {lock}) \
         RETURNING {JOB_COLS}"
    )
}

impl JobRow {
    /// The record (`backend` names the store in a corruption error).
    pub fn into_job(self, backend: &'static str) -> Result<EvalJob> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            Error::storage(
                backend,
                format!("corrupt evaluation {}: {what}: {e}", self.id),
            )
        };
        let request = serde_json::from_str(&self.request).map_err(|e| bad("request", &e))?;
        let error = match &self.error {
            Some(t) => Some(serde_json::from_str(t).map_err(|e| bad("error", &e))?),
            None => None,
        };
        let result = match &self.result {
            Some(t) => Some(serde_json::from_str(t).map_err(|e| bad("result", &e))?),
            None => None,
        };
        let status = self.status.parse().map_err(|e| bad("status", &e))?;
        Ok(EvalJob {
            id: self.id,
            owner: self.owner,
            model_id: self.model_id,
            status,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            request,
            decisions_read: self.read.max(0) as u64,
            decisions_total: self.total.max(0) as u64,
            error,
            result,
        })
    }
}

/// A job's request, error or result as stored JSON text.
pub fn to_text(v: &impl Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(format!("evaluation to JSON: {e}")))
}

/// What a job end writes: status, error JSON, result JSON.
pub fn end_columns(end: &JobEnd) -> Result<(JobStatus, Option<String>, Option<String>)> {
    Ok(match end {
        JobEnd::Done(v) => (JobStatus::Done, None, Some(to_text(v)?)),
        JobEnd::Failed(e) => (JobStatus::Failed, Some(to_text(e)?), None),
        JobEnd::Released => (JobStatus::Queued, None, None),
    })
}
