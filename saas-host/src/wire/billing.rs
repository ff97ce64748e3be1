//! Plans and billing: `GET /plans` and the billing webhook's answer.

use qlearn_core::tenancy::Tier;
use serde::Serialize;
use utoipa::ToSchema;

use super::LimitsOut;

/// A plan's monthly price.
#[derive(Serialize, ToSchema)]
pub struct PriceOut {
    /// Per month, in the currency's minor unit (cents); 0 = free.
    pub monthly_cents: u64,
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
}

/// One plan.
#[derive(Serialize, ToSchema)]
pub struct PlanOut {
    /// The tier the plan is: `free`, `pro` or `enterprise`.
    #[schema(value_type = String, example = "pro")]
    pub tier: Tier,
    /// The name shown to customers.
    pub name: String,
    /// The monthly price.
    pub price: PriceOut,
    /// Metered calls per month (`null`: unlimited).
    pub quota: Option<u64>,
    /// Every limit of the tier.
    pub limits: LimitsOut,
    /// The paid features it includes (`advanced_algorithms`, `decisions`).
    #[schema(value_type = Vec<String>, example = json!(["advanced_algorithms", "decisions"]))]
    pub features: Vec<&'static str>,
    /// Whether it is the caller's plan (always false without credentials).
    pub current: bool,
    /// Where to buy it: for a signed-in caller, on plans above theirs, when
    /// a checkout URL is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_url: Option<String>,
}

/// A downgrade scheduled for the end of the paid period.
#[derive(Serialize, ToSchema)]
pub struct PendingOut {
    /// The tier after it.
    #[schema(value_type = String, example = "free")]
    pub tier: Tier,
    /// When (RFC 3339).
    pub at: String,
}

/// `GET /plans` response.
#[derive(Serialize, ToSchema)]
pub struct PlansOut {
    /// Every plan, cheapest first.
    pub plans: Vec<PlanOut>,
    /// The caller's tier (`null` without credentials).
    #[schema(value_type = Option<String>)]
    pub current: Option<Tier>,
    /// The caller's scheduled downgrade, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_downgrade: Option<PendingOut>,
    /// Whether upgrading online is configured (a checkout URL).
    pub checkout: bool,
}

/// `POST /billing/webhook` response.
#[derive(Serialize, ToSchema)]
pub struct WebhookOut {
    /// Always true: the delivery verified and was handled.
    pub received: bool,
    /// `applied` (the user's tier or schedule changed or was confirmed),
    /// `duplicate` (this event id was handled before), `stale` (older than
    /// the newest event applied to the user) or `ignored` (an event type,
    /// status or price no plan acts on).
    pub outcome: &'static str,
    /// The user's tier after the event, when applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub tier: Option<Tier>,
}
