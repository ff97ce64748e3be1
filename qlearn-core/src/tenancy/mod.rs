//! Tenants, tiers and quotas: the pure account-side logic of qlearn.
//!
//! This module owns the rules that decide who may do what and how much,
//! with no IO and no storage:
//!
//! - [`Tier`], [`Role`], and the per-tier [`Limits`] (monthly metered calls,
//!   models, rate limit), the SPEC's table by default;
//! - UTC calendar months ([`BillingMonth`]) and date strings, since quotas
//!   reset at 00:00 UTC on the 1st;
//! - the quota decision [`check_quota`], which storage backends call inside
//!   their own atomic step;
//! - token-bucket rate limiting ([`TokenBucket`], [`KeyedLimiter`]) with
//!   time passed in, for API rate limits and login/registration throttling;
//! - plans ([`plans`]: each tier's price, display name and features
//!   beside its limits), the one feature gate ([`features::require`]),
//!   and the billing provider's side: its signed webhook verified and its
//!   events read ([`webhook`]), what they do to a tier ([`billing`]);
//! - argon2id password hashing and verification ([`hash_password`],
//!   [`verify_password`]);
//! - API keys, opaque ids, JWT secrets ([`generate_api_key`], [`new_id`],
//!   [`SecretKey`]) and email normalization ([`normalize_email`]).
//!
//! Storage of users, keys and counters is in the storage traits; HTTP
//! concerns (JWTs, headers, client addresses) are the host's.

pub mod billing;
mod calendar;
mod email;
pub mod features;
mod limiter;
mod password;
pub mod plans;
mod quota;
mod rate;
mod secrets;
mod tier;
pub mod webhook;

pub use calendar::{
    date_string, rfc3339, seconds_until_next_month, BillingMonth, MAX_UNIX, MIN_UNIX,
};
pub use email::{normalize_email, MAX_EMAIL_CHARS, MIN_EMAIL_CHARS};
pub use features::{Feature, Features};
pub use limiter::{lease_size, Limiter, SharedBuckets, Taken, LEASE_TTL};
pub use password::{
    hash_password, is_common_password, password_needs_rehash, prepare_password_hashing,
    validate_password, verify_password, ARGON2_M_COST_KIB, ARGON2_P_COST, ARGON2_T_COST,
    MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS,
};
pub use plans::{PlanInfo, Plans, Price};
pub use quota::check_quota;
pub use rate::{address_key, KeyedLimiter, RateState, TokenBucket};
pub use secrets::{
    api_key_form, generate_api_key, generate_secret, hash_api_key, looks_like_api_key, new_id,
    validate_secret, KeyForm, SecretKey, API_KEY_DISPLAY_CHARS, API_KEY_PREFIX, MIN_SECRET_BYTES,
};
pub use tier::{push_rate_item, Limits, Role, Tier, TierLimits};
