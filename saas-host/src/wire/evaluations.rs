//! Offline evaluation jobs (issue 18): `POST /models/{id}/evaluations`
//! takes the core's [`qlearn_core::evaluation::EvalRequest`] as is, and
//! [`EvaluationIn`] documents it (a schema only: the tests below hold the
//! two to the same fields and the same answers); the job object
//! ([`EvaluationOut`]) and the listing ([`EvaluationsOut`]) are here. The
//! request echo and the result are the core's serde forms.

use qlearn_core::evaluation::{DirectModel, EvalMode, JobError, MAX_JOB_REPLICATES, MAX_POLICIES};
use qlearn_core::store::EvalJob;
use qlearn_core::tenancy::rfc3339;
use qlearn_core::{Algorithm, Exploration};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

/// `POST /models/{id}/evaluations`: what to evaluate. Every field but
/// `policies` may be left out (its default is given); the server checks
/// the rest against the model (422 `invalid_field` names the field).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the schema of the core's `EvalRequest`, which reads the body
pub struct EvaluationIn {
    /// The policies to evaluate, 1 to 16 (`{"kind": ...}`).
    #[schema(schema_with = policies_schema)]
    pub policies: Vec<PolicyIn>,
    /// Only decisions logged at or after (Unix milliseconds).
    #[serde(default)]
    pub since: Option<i64>,
    /// Only decisions logged before (Unix milliseconds), after `since`.
    #[serde(default)]
    pub until: Option<i64>,
    /// `one_step`, `episodes` or `auto` (default: episodes when the
    /// decisions read have episode ids).
    #[serde(default)]
    #[schema(schema_with = mode_schema)]
    pub mode: Option<EvalMode>,
    /// The one-step doubly robust estimator's direct model: `log_means`
    /// (default) or `q_values`.
    #[serde(default)]
    #[schema(schema_with = direct_schema)]
    pub direct: Option<DirectModel>,
    /// Confidence level of the intervals, in (0, 1); default 0.95.
    #[serde(default)]
    #[schema(schema_with = confidence_schema)]
    pub confidence: Option<f64>,
    /// Bootstrap replicates, up to 1,000 (and the plan's limit); default 200.
    #[serde(default)]
    #[schema(schema_with = replicates_schema)]
    pub replicates: Option<u64>,
    /// Bootstrap seed; default 0.
    #[serde(default)]
    #[schema(schema_with = seed_schema)]
    pub seed: Option<u64>,
    /// `[low, high]` the rewards lie in (adds the Bernstein bound), or null.
    #[serde(default)]
    #[schema(schema_with = reward_range_schema)]
    pub reward_range: Option<Option<(f64, f64)>>,
    /// Smallest effective sample size that gives a number; default 10.
    #[serde(default)]
    #[schema(schema_with = min_ess_schema)]
    pub min_ess: Option<f64>,
    /// Smallest coverage that gives a number, in [0, 1]; default 0.95.
    #[serde(default)]
    #[schema(schema_with = min_coverage_schema)]
    pub min_coverage: Option<f64>,
    /// The episodes' discount, in [0, 1]; default 1.
    #[serde(default)]
    #[schema(schema_with = discount_schema)]
    pub discount: Option<f64>,
}

/// A policy an evaluation scores.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(dead_code)] // see EvaluationIn
pub enum PolicyIn {
    /// The model's greedy policy.
    Greedy,
    /// The model's exploring policy.
    Exploring,
    /// Uniform over the allowed actions.
    Uniform,
    /// The logged behaviour.
    Logged,
    /// The baseline action recorded with each decision.
    Baseline,
    /// A candidate configuration, by progressive replay of the log.
    Candidate {
        /// The client's label for it.
        name: String,
        /// The fields changed from the model's configuration.
        config: CandidateIn,
        /// Score the shadow model's exploring policy (default) or its
        /// greedy one.
        #[serde(default)]
        explore: Option<bool>,
    },
}

/// A candidate's changes to the model's configuration (each field as in
/// `PATCH /models/{id}`; left out: the model's).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // see EvaluationIn
pub struct CandidateIn {
    /// α in (0, 1].
    #[serde(default)]
    #[schema(schema_with = super::models::open_unit_schema)]
    pub learning_rate: Option<f64>,
    /// γ in [0, 1].
    #[serde(default)]
    #[schema(schema_with = super::models::unit_schema)]
    pub discount_factor: Option<f64>,
    /// Exploration rate in [0, 1].
    #[serde(default)]
    #[schema(schema_with = super::models::unit_schema)]
    pub epsilon: Option<f64>,
    /// Epsilon factor per episode end, in (0, 1].
    #[serde(default)]
    #[schema(schema_with = super::models::open_unit_schema)]
    pub epsilon_decay: Option<f64>,
    /// Epsilon floor in [0, 1].
    #[serde(default)]
    #[schema(schema_with = super::models::unit_schema)]
    pub min_epsilon: Option<f64>,
    /// Q-value of unseen pairs.
    #[serde(default)]
    #[schema(schema_with = super::models::initial_q_schema)]
    pub initial_q: Option<f64>,
    /// The learning rule.
    #[serde(default)]
    #[schema(schema_with = super::models::algorithm_schema)]
    pub algorithm: Option<Algorithm>,
    /// The exploration strategy.
    #[serde(default)]
    #[schema(schema_with = super::models::exploration_schema)]
    pub exploration: Option<Exploration>,
    /// Softmax temperature > 0.
    #[serde(default)]
    #[schema(schema_with = super::models::temperature_schema)]
    pub temperature: Option<f64>,
    /// The shadow model's exploration seed.
    #[serde(default)]
    #[schema(schema_with = super::models::seed_schema)]
    pub seed: Option<u64>,
}

fn policies_schema() -> impl Into<RefOr<Schema>> {
    ArrayBuilder::new()
        .items(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            "PolicyIn",
        )))
        .min_items(Some(1))
        .max_items(Some(MAX_POLICIES))
        .description(Some("The policies to evaluate"))
}

fn mode_schema() -> impl Into<RefOr<Schema>> {
    super::enum_schema(&["one_step", "episodes", "auto"], "Which estimators run")
}

fn direct_schema() -> impl Into<RefOr<Schema>> {
    super::enum_schema(&["log_means", "q_values"], "The direct model")
}

fn confidence_schema() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .exclusive_minimum(Some(0.0))
        .exclusive_maximum(Some(1.0))
        .description(Some("In (0, 1)"))
}

fn replicates_schema() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_JOB_REPLICATES))
        .description(Some("Bootstrap replicates"))
}

fn seed_schema() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0usize))
        .maximum(Some(u64::MAX as usize))
        .description(Some("Bootstrap seed"))
}

fn reward_range_schema() -> impl Into<RefOr<Schema>> {
    ArrayBuilder::new()
        .schema_type(
            [Type::Array, Type::Null]
                .into_iter()
                .collect::<SchemaType>(),
        )
        .items(super::number_schema(-f64::MAX, f64::MAX, "A bound"))
        .min_items(Some(2))
        .max_items(Some(2))
        .description(Some("[low, high] with low < high, or null"))
}

fn min_ess_schema() -> impl Into<RefOr<Schema>> {
    super::number_schema(0.0, f64::MAX, "At least 0")
}

fn min_coverage_schema() -> impl Into<RefOr<Schema>> {
    super::number_schema(0.0, 1.0, "In [0, 1]")
}

fn discount_schema() -> impl Into<RefOr<Schema>> {
    super::number_schema(0.0, 1.0, "In [0, 1]")
}

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

#[cfg(test)]
mod tests {
    //! `EvaluationIn` documents the core's `EvalRequest`: the same fields,
    //! and the same bodies read or refused.
    use super::*;
    use qlearn_core::evaluation::{CandidateConfig, EvalRequest, PolicySpec};
    use serde_json::{json, Value};
    use utoipa::OpenApi;

    fn properties(doc: &Value, name: &str) -> Vec<String> {
        let mut p: Vec<String> = doc["components"]["schemas"][name]["properties"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        p.sort();
        p
    }

    fn keys(v: Value) -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    }

    #[test]
    fn the_schema_names_the_fields_the_server_reads() {
        let doc = serde_json::to_value(crate::openapi::ApiDoc::openapi()).expect("document");
        let request = EvalRequest {
            reward_range: Some((0.0, 1.0)),
            ..EvalRequest::default()
        };
        let fields = keys(serde_json::to_value(&request).expect("request"));
        assert_eq!(properties(&doc, "EvaluationIn"), fields);
        let every = CandidateConfig {
            learning_rate: Some(0.5),
            discount_factor: Some(0.5),
            epsilon: Some(0.5),
            epsilon_decay: Some(0.5),
            min_epsilon: Some(0.0),
            initial_q: Some(0.0),
            algorithm: Some(qlearn_core::Algorithm::Sarsa),
            exploration: Some(qlearn_core::Exploration::Softmax),
            temperature: Some(1.0),
            seed: Some(1),
        };
        let fields = keys(serde_json::to_value(&every).expect("candidate"));
        assert_eq!(properties(&doc, "CandidateIn"), fields);
        let policies = doc["components"]["schemas"]["PolicyIn"].to_string();
        for kind in [
            "greedy",
            "exploring",
            "uniform",
            "logged",
            "baseline",
            "candidate",
        ] {
            let spec: PolicySpec = serde_json::from_value(match kind {
                "candidate" => json!({"kind": kind, "name": "c", "config": {}}),
                _ => json!({"kind": kind}),
            })
            .expect(kind);
            let _ = spec;
            assert!(
                policies.contains(&format!("\"{kind}\"")),
                "{kind} in {policies}"
            );
        }
        assert_eq!(
            doc["components"]["schemas"]["EvaluationIn"]["additionalProperties"],
            false
        );
    }

    #[test]
    fn the_schema_and_the_server_read_the_same_bodies() {
        let bodies = [
            (json!({"policies": [{"kind": "greedy"}]}), true),
            (
                json!({
                    "policies": [
                        {"kind": "logged"},
                        {"kind": "candidate", "name": "fast", "explore": false,
                         "config": {"learning_rate": 0.5, "algorithm": "sarsa", "seed": null}}
                    ],
                    "since": 1, "until": 2, "mode": "one_step", "direct": "q_values",
                    "confidence": 0.9, "replicates": 50, "seed": 7,
                    "reward_range": [0.0, 1.0], "min_ess": 0.0, "min_coverage": 0.5,
                    "discount": 0.9
                }),
                true,
            ),
            (
                json!({"policies": [{"kind": "greedy"}], "reward_range": null}),
                true,
            ),
            (json!({"policies": [{"kind": "greedy", "note": 1}]}), true),
            (json!({"policies": [{"kind": "greedy"}], "extra": 1}), false),
            (json!({"policies": [{"kind": "nope"}]}), false),
            (
                json!({"policies": [{"kind": "candidate", "name": "c", "config": {"x": 1}}]}),
                false,
            ),
            (
                json!({"policies": [{"kind": "greedy"}], "mode": "sometimes"}),
                false,
            ),
        ];
        for (body, ok) in bodies {
            let core = serde_json::from_value::<EvalRequest>(body.clone()).is_ok();
            assert_eq!(core, ok, "the core reads {body}");
            let documented = serde_json::from_value::<EvaluationIn>(body.clone()).is_ok();
            assert_eq!(documented, ok, "the schema's type reads {body}");
        }
    }
}
