//! The JSON wire format: every request and response body of the API, as
//! Rust types, one module per area. They are the single source of
//! `docs/http-api.md`'s shapes and (through `utoipa::ToSchema`) of
//! `/openapi.json`; the limits their schemas state are the constants the
//! validation reads ([`qlearn_core::limits`], [`MAX_NAME_CHARS`]).
//!
//! Only this module (and the handlers that fill it) knows the JSON shapes;
//! the core's types stay free of HTTP concerns.

mod accounts;
mod dashboard;
mod decisions;
mod engine;
mod models;

pub use accounts::{
    AdminUserPatch, CreatedKey, Credentials, KeyOut, NewKey, PasswordChange, Registered, TokenOut,
    UserOut, MAX_KEY_DAYS,
};
pub use dashboard::{DashboardOut, DayOut, LimitsOut, UsageOut};
pub use decisions::{
    DecisionOut, DecisionStatsOut, DecisionsOut, DecisionsSetting, EpisodeEndIn, EpisodeEndOut,
    RewardBody, RewardItem, RewardOut, RewardResult, RewardsBatchIn, RewardsBatchOut,
};
pub use engine::{
    BatchIn, BatchOut, ExperienceIn, PredictIn, PredictOut, QTableOut, RowOut, StatusOut,
    TicketOut, UpdateEvent, UpdateIn, UpdateOut,
};
pub use models::{BinIn, CreateModel, ModelOut, PatchModel, StatsOut};

use qlearn_core::limits::{MAX_STATE_DIMS, MAX_STATE_STR_BYTES};
use serde::Serialize;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

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

/// The schema of a display name: 1 to [`MAX_NAME_CHARS`] characters.
fn name_schema() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_CHARS))
        .description(Some(format!(
            "1 to {MAX_NAME_CHARS} characters after trimming, without control characters"
        )))
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
