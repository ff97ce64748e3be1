//! Offline evaluation jobs (issue 18): `POST /models/{id}/evaluations`
//! takes the core's [`qlearn_core::evaluation::EvalRequest`] as is; the
//! job object ([`EvaluationOut`]) and the listing ([`EvaluationsOut`])
//! are here. The request echo and the result are the core's serde forms.

use qlearn_core::evaluation::JobError;
use qlearn_core::store::EvalJob;
use qlearn_core::tenancy::rfc3339;
use serde::Serialize;
use utoipa::ToSchema;

/// How far a job read the decision log.
#[derive(Serialize, ToSchema)]
pub struct ProgressOut {
    /// Decisions read so far.
    pub decisions_read: u64,
    /// Decisions the job reads (the time range's, at most the plan's
    /// `evaluation_max_decisions`; 0 until it started).
    pub decisions_total: u64,
}

/// Why a job (or one policy) failed.
#[derive(Serialize, ToSchema)]
pub struct JobErrorOut {
    /// Machine-readable code (`not_found`: the model was deleted;
    /// `invalid_field`, `internal`, ...).
    pub code: String,
    /// In words.
    pub message: String,
}

impl From<JobError> for JobErrorOut {
    fn from(e: JobError) -> Self {
        JobErrorOut {
            code: e.code,
            message: e.message,
        }
    }
}

/// An evaluation job.
#[derive(Serialize, ToSchema)]
pub struct EvaluationOut {
    /// `ev_...`.
    pub id: String,
    /// The evaluated model.
    pub model_id: String,
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub status: &'static str,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When a worker first started it.
    pub started_at: Option<String>,
    /// When it finished or was cancelled.
    pub finished_at: Option<String>,
    /// The request, defaults filled in (see docs/http-api.md).
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    /// How far it read.
    pub progress: ProgressOut,
    /// Why it failed (`failed` only).
    pub error: Option<JobErrorOut>,
    /// The result (`done` only; see docs/http-api.md for its fields).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
}

impl EvaluationOut {
    /// The wire form of a job.
    pub fn new(job: EvalJob) -> EvaluationOut {
        EvaluationOut {
            status: job.status.as_str(),
            created_at: rfc3339(job.created_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
            request: serde_json::to_value(&job.request).unwrap_or_default(),
            progress: ProgressOut {
                decisions_read: job.decisions_read,
                decisions_total: job.decisions_total,
            },
            error: job.error.map(JobErrorOut::from),
            result: job.result,
            id: job.id,
            model_id: job.model_id,
        }
    }
}

/// A page of a model's evaluation jobs, newest first.
#[derive(Serialize, ToSchema)]
pub struct EvaluationsOut {
    /// The jobs (`before=<the last id>` gives the next page).
    pub evaluations: Vec<EvaluationOut>,
}
