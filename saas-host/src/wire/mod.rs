//! The JSON wire format: every request and response body of the API, as
//! Rust types, one module per area. They are the single source of
//! `docs/http-api.md`'s shapes and (through `utoipa::ToSchema`) of
//! `/openapi.json`; the limits their schemas state are the constants the
//! validation reads ([`qlearn_core::limits`], [`MAX_NAME_CHARS`]).
//!
//! Only this module (and the handlers that fill it) knows the JSON shapes;
//! the core's types stay free of HTTP concerns.

mod accounts;
mod billing;
mod dashboard;
mod decisions;
mod engine;
mod evaluations;
mod models;

pub use accounts::{
    AdminUserPatch, CreatedKey, Credentials, KeyOut, NewKey, PasswordChange, Registered, TokenOut,
    UserOut, MAX_KEY_DAYS,
};
pub use billing::{PendingOut, PlanOut, PlansOut, PriceOut, WebhookOut};
pub use dashboard::{DashboardOut, DayOut, LimitsOut, UsageOut};
pub use decisions::{
    listing_cursor, parse_listing_cursor, DecisionOut, DecisionStatsOut, DecisionsOut,
    DecisionsSetting, EpisodeEndIn, EpisodeEndOut, EpisodeOut, EpisodesOut, RewardBody, RewardItem,
    RewardOut, RewardResult, RewardsBatchIn, RewardsBatchOut, CURSOR_PATTERN, DECISION_STATUSES,
    EPISODE_STATUSES,
};
pub use engine::{
    BatchIn, BatchOut, ExperienceIn, PredictIn, PredictOut, ProbabilitiesIn, ProbabilitiesOut,
    QTableOut, RowOut, StatusOut, TicketOut, UpdateEvent, UpdateIn, UpdateOut,
};
pub use evaluations::{
    CandidateIn, EvaluationIn, EvaluationOut, EvaluationsOut, JobErrorOut, PolicyIn, ProgressOut,
};
pub use models::{BinIn, CreateModel, ModelOut, PatchModel, StatsOut};

use qlearn_core::decisions::MAX_ID_BYTES;
use qlearn_core::limits::{MAX_ACTIONS, MAX_STATE_DIMS, MAX_STATE_STR_BYTES};
use serde::Serialize;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// The request bodies that refuse unknown members (`deny_unknown_fields`):
/// their schemas say `additionalProperties: false`.
pub const DENY_UNKNOWN_FIELDS: &[&str] = &[
    "BinIn",
    "CreateModel",
    "PatchModel",
    "NewKey",
    "AdminUserPatch",
    "DecisionsSetting",
    "RewardItem",
    "RewardBody",
    "RewardsBatchIn",
    "EpisodeEndIn",
    "EvaluationIn",
    "CandidateIn",
];

/// Longest display name (model, API key), in characters after trimming.
pub const MAX_NAME_CHARS: usize = 100;

/// The schema of a state: a string, an integer, or an array of numbers.
pub fn state_schema() -> impl Into<RefOr<Schema>> {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_STATE_STR_BYTES)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Integer).format(Some(
            utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64),
        )))
        .item(
            ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::Number))
                .min_items(Some(1))
                .max_items(Some(MAX_STATE_DIMS)),
        )
        .description(Some(format!(
            "A state: a string, an integer, or an array of 1 to {MAX_STATE_DIMS} finite numbers"
        )))
}

/// The control characters (`char::is_control`, Unicode category Cc) as
/// the body of a regular-expression class.
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

/// The schema of a display name: 1 to [`MAX_NAME_CHARS`] characters, no
/// control characters, not only whitespace (what `check_name` accepts).
pub fn name_schema() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_CHARS))
        .pattern(Some(format!("^[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*$")))
        .description(Some(format!(
            "1 to {MAX_NAME_CHARS} characters, without control characters, not only \
             whitespace (stored trimmed)"
        )))
}

/// The schema of an action index: `0..MAX_ACTIONS` (the model's own
/// `n_actions` bounds it further: 422 `invalid_action`).
pub fn action_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0.0))
        .maximum(Some((MAX_ACTIONS - 1) as f64))
        .description(Some(format!(
            "An action index, below the model's n_actions (at most {MAX_ACTIONS})"
        )))
}

/// `schema` or `null`.
pub fn or_null(schema: impl Into<RefOr<Schema>>) -> impl Into<RefOr<Schema>> {
    OneOfBuilder::new()
        .item(schema)
        .item(ObjectBuilder::new().schema_type(Type::Null))
}

/// The schema of an action mask: 1 to [`MAX_ACTIONS`] distinct action
/// indices (each below the model's `n_actions`), or `null` (no mask).
pub fn action_list_schema() -> impl Into<RefOr<Schema>> {
    or_null(action_list())
}

fn action_list() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(action_schema())
        .min_items(Some(1))
        .max_items(Some(MAX_ACTIONS))
        .unique_items(true)
        .description(Some(format!(
            "1 to {MAX_ACTIONS} distinct action indices, each below the model's n_actions"
        )))
}

/// The schema of a client-chosen id (decision, episode, reward): 1 to
/// [`MAX_ID_BYTES`] bytes (UTF-8) without control characters.
pub fn client_id_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_ID_BYTES))
        .pattern(Some(format!("^[^{CONTROL}]*$")))
        .description(Some(format!(
            "1 to {MAX_ID_BYTES} bytes (UTF-8) without control characters"
        )))
}

/// [`client_id_schema`], or `null`.
pub fn optional_client_id_schema() -> impl Into<RefOr<Schema>> {
    nullable(client_id_schema())
}

/// [`client_id_schema`] (required).
pub fn required_client_id_schema() -> impl Into<RefOr<Schema>> {
    client_id_schema()
}

/// The schema of a number in `[min, max]`.
pub fn number_schema(min: f64, max: f64, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Double,
        )))
        .minimum(Some(min))
        .maximum(Some(max))
        .description(Some(description))
}

/// The schema of a string that is one of `values`.
pub fn enum_schema(values: &[&str], description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
}

/// `schema`, or `null` (an optional field that may also be sent as `null`).
pub fn nullable(schema: ObjectBuilder) -> ObjectBuilder {
    let mut s = schema.build();
    let types = match s.schema_type {
        utoipa::openapi::schema::SchemaType::Type(t) => vec![t, Type::Null],
        utoipa::openapi::schema::SchemaType::Array(mut v) => {
            v.push(Type::Null);
            v
        }
        utoipa::openapi::schema::SchemaType::AnyValue => return ObjectBuilder::from(s),
    };
    if let Some(values) = s.enum_values.as_mut() {
        values.push(serde_json::Value::Null);
    }
    s.schema_type = utoipa::openapi::schema::SchemaType::from_iter(types);
    ObjectBuilder::from(s)
}

// ---- errors -----------------------------------------------------------------

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable snake_case code, e.g. `quota_exceeded`.
    pub code: String,
    /// A human sentence; for 422 it names the field.
    pub message: String,
    /// The JSON path of the offending member of the request, where one
    /// applies: a body member (`experiences[3].reward`, `decisions.retention_days`)
    /// or a query parameter (`limit`). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

// ---- service ------------------------------------------------------------------

/// `GET /healthz` response.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
    /// The storage backend.
    pub storage: &'static str,
}
