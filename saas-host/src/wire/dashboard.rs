//! The caller's dashboard: tier limits, this month's usage, models.

use qlearn_core::tenancy::{Tier, TierLimits};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ModelOut, UserOut};

/// A tier's limits (null = unlimited).
#[derive(Serialize, ToSchema)]
pub struct LimitsOut {
    /// The tier.
    #[schema(value_type = String)]
    pub tier: Tier,
    /// Metered calls per month.
    pub monthly_calls: Option<u64>,
    /// Models at once.
    pub max_models: Option<u32>,
    /// Requests per second (sustained).
    pub rate_per_second: u32,
    /// Requests at once (burst).
    pub burst: u32,
    /// Distinct states per model (`null`: unlimited).
    pub max_states: Option<u64>,
    /// Largest model file an import may send, bytes.
    pub max_import_bytes: u64,
    /// Event streams open at once.
    pub max_event_streams: u32,
    /// The paid features the tier includes (`advanced_algorithms`, `decisions`).
    #[schema(value_type = Vec<String>, example = json!(["advanced_algorithms", "decisions"]))]
    pub features: Vec<&'static str>,
}

impl LimitsOut {
    /// The limits of `tier`.
    pub fn new(tier: Tier, l: &TierLimits) -> Self {
        LimitsOut {
            tier,
            monthly_calls: l.monthly_calls,
            max_models: l.max_models,
            rate_per_second: l.rate_per_second,
            burst: l.burst,
            max_states: l.max_states,
            max_import_bytes: l.max_import_bytes,
            max_event_streams: l.max_event_streams,
            features: l.features.names(),
        }
    }
}

/// Calls on one day.
#[derive(Serialize, ToSchema)]
pub struct DayOut {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Metered calls that day.
    pub calls: u64,
}

/// Usage this month.
#[derive(Serialize, ToSchema)]
pub struct UsageOut {
    /// `YYYY-MM`.
    pub month: String,
    /// Metered calls so far.
    pub calls: u64,
    /// The monthly limit (null = unlimited).
    pub limit: Option<u64>,
    /// Calls left (null = unlimited).
    pub remaining: Option<u64>,
    /// Whether the plan allows calls past the limit, counted as overage
    /// (instead of refused).
    pub overage_allowed: bool,
    /// Calls past the limit this month (billed as overage).
    pub overage: u64,
    /// When the count resets (00:00 UTC on the 1st).
    pub resets_at: String,
    /// One entry per day of the month.
    pub per_day: Vec<DayOut>,
}

/// `GET /dashboard` response.
#[derive(Serialize, ToSchema)]
pub struct DashboardOut {
    /// The caller.
    pub user: UserOut,
    /// The caller's tier limits.
    pub limits: LimitsOut,
    /// Usage this month.
    pub usage: UsageOut,
    /// The caller's models with statistics.
    pub models: Vec<ModelOut>,
}
