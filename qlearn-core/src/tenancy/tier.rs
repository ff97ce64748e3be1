//! Tiers, roles and the limits each tier grants.
//!
//! The default limits are the SPEC's table; a host may load overrides from
//! JSON (`Limits` is `Deserialize`) and should call [`Limits::validate`] on
//! whatever it loaded.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use super::features::Features;
use crate::{Error, Result};

/// A user's subscription tier; decides quotas, model limit and rate limit.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The tier of every new user.
    #[default]
    Free,
    /// Paid tier with higher limits.
    Pro,
    /// Unlimited calls and models, highest rate limit.
    Enterprise,
}

impl Tier {
    /// Every tier, cheapest first.
    pub const ALL: [Tier; 3] = [Tier::Free, Tier::Pro, Tier::Enterprise];

    /// The wire and storage name: `free`, `pro` or `enterprise`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = Error;

    /// Parses a tier name, ignoring ASCII case and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        Tier::ALL
            .into_iter()
            .find(|tier| tier.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| Error::field("tier", "must be one of free, pro, enterprise"))
    }
}

/// What a user may do beyond their own resources.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A tenant: sees and changes only their own account, models and keys.
    #[default]
    User,
    /// May also change other users' tiers.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 2] = [Role::User, Role::Admin];

    /// The wire and storage name: `user` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    /// Parses a role name, ignoring ASCII case and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| Error::field("role", "must be one of user, admin"))
    }
}

/// Deserializes an `Option` but, unlike serde's default for `Option` fields,
/// makes the field required: a missing `monthly_calls` in an override file is
/// an error, not silently "unlimited". `null` still means unlimited.
fn required_option<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// The limits of one tier. `None` means unlimited.
///
/// Besides calls and models, every resource a tenant can grow is bounded
/// here, so no tenant can take memory, disk or connections from another:
/// states per model, the size of an imported model, open event streams.
/// In a limits file the resource fields may be left out (the tier keeps
/// its default); the call, model and rate fields are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TierLimits {
    /// Metered calls (each predict, each experience of an update) per
    /// calendar month (UTC); `None` (JSON `null`) = unlimited.
    pub monthly_calls: Option<u64>,
    /// Models a user may own at once; `None` (JSON `null`) = unlimited.
    pub max_models: Option<u32>,
    /// Sustained request rate of the token bucket, requests per second.
    pub rate_per_second: u32,
    /// Token bucket capacity: requests that may arrive at once.
    pub burst: u32,
    /// Distinct states one model may hold; `None` (JSON `null`) = unlimited.
    /// An update that would add a state past it is refused whole
    /// ([`Error::StateLimitReached`]), and so is an import of a bigger model.
    pub max_states: Option<u64>,
    /// Largest model file (binary or JSON export) an import may send, bytes;
    /// checked against `Content-Length` before the body is read.
    pub max_import_bytes: u64,
    /// Event streams (`GET /models/{id}/events`) a user may hold open at once.
    pub max_event_streams: u32,
    /// Whole-model operations (export, import, a PATCH that reshapes the
    /// table) per minute, on a bucket of their own (a minute's worth at
    /// once): each copies or rewrites a whole table, which the per-request
    /// rate limit does not pay for. Their size is bounded by `max_states`.
    pub bulk_per_minute: u32,
    /// Days a model's finished decisions stay in its decision log (issue
    /// 14); a model's own `decisions.retention_days` is capped at it.
    pub decision_retention_days: u32,
    /// Offline evaluation jobs (issue 18) a user may create per UTC day
    /// (deleted jobs still count).
    pub evaluations_per_day: u32,
    /// Evaluation jobs a user may have queued or running at once.
    pub evaluations_at_once: u32,
    /// Decisions one evaluation reads at most: a longer log (or time
    /// range) is evaluated on its newest this many (`truncated` in the
    /// result).
    pub evaluation_max_decisions: u64,
    /// Whether calls past `monthly_calls` are allowed and counted as
    /// overage (billed by usage) instead of refused with 429. Off by
    /// default; rate limits apply either way.
    pub overage: bool,
    /// The paid features the plan includes (checked by
    /// [`super::features::require`]); in a limits file a list of names,
    /// left out: the tier's default (free none, pro and enterprise all).
    pub features: Features,
}

/// One tier's entry in a limits (plans) file: [`TierLimits`] with the
/// resource fields optional (missing: that tier's default), and the plan's
/// presentation and billing ([`super::plans::PlanInfo`]), all optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TierLimitsFile {
    #[serde(deserialize_with = "required_option")]
    monthly_calls: Option<u64>,
    #[serde(deserialize_with = "required_option")]
    max_models: Option<u32>,
    rate_per_second: u32,
    burst: u32,
    /// Missing: the default; `null`: unlimited.
    #[serde(default, deserialize_with = "present")]
    max_states: Option<Option<u64>>,
    #[serde(default)]
    max_import_bytes: Option<u64>,
    #[serde(default)]
    max_event_streams: Option<u32>,
    #[serde(default)]
    bulk_per_minute: Option<u32>,
    #[serde(default)]
    decision_retention_days: Option<u32>,
    #[serde(default)]
    evaluations_per_day: Option<u32>,
    #[serde(default)]
    evaluations_at_once: Option<u32>,
    #[serde(default)]
    evaluation_max_decisions: Option<u64>,
    #[serde(default)]
    overage: Option<bool>,
    #[serde(default)]
    features: Option<Features>,
    /// The plan's fields ([`super::plans::PlanInfo`]), each optional.
    #[serde(default)]
    pub(super) display_name: Option<String>,
    #[serde(default)]
    pub(super) price: Option<super::plans::Price>,
    #[serde(default)]
    pub(super) stripe_price_ids: Option<Vec<String>>,
}

/// Deserializes a field that is present (`null` included) as `Some`, so a
/// missing field (`#[serde(default)]`: `None`) and `null` differ.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl TierLimitsFile {
    fn over(&self, default: TierLimits) -> TierLimits {
        TierLimits {
            monthly_calls: self.monthly_calls,
            max_models: self.max_models,
            rate_per_second: self.rate_per_second,
            burst: self.burst,
            max_states: self.max_states.unwrap_or(default.max_states),
            max_import_bytes: self.max_import_bytes.unwrap_or(default.max_import_bytes),
            max_event_streams: self.max_event_streams.unwrap_or(default.max_event_streams),
            bulk_per_minute: self.bulk_per_minute.unwrap_or(default.bulk_per_minute),
            decision_retention_days: self
                .decision_retention_days
                .unwrap_or(default.decision_retention_days),
            evaluations_per_day: self
                .evaluations_per_day
                .unwrap_or(default.evaluations_per_day),
            evaluations_at_once: self
                .evaluations_at_once
                .unwrap_or(default.evaluations_at_once),
            evaluation_max_decisions: self
                .evaluation_max_decisions
                .unwrap_or(default.evaluation_max_decisions),
            overage: self.overage.unwrap_or(default.overage),
            features: self.features.unwrap_or(default.features),
        }
    }
}

/// A limits (plans) file: any tier left out keeps its defaults.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct LimitsFile {
    pub(super) free: Option<TierLimitsFile>,
    pub(super) pro: Option<TierLimitsFile>,
    pub(super) enterprise: Option<TierLimitsFile>,
}

impl LimitsFile {
    /// The entry of `tier`, if the file has one.
    pub(super) fn tier(&self, tier: Tier) -> Option<&TierLimitsFile> {
        match tier {
            Tier::Free => self.free.as_ref(),
            Tier::Pro => self.pro.as_ref(),
            Tier::Enterprise => self.enterprise.as_ref(),
        }
    }
}

impl From<LimitsFile> for Limits {
    fn from(file: LimitsFile) -> Self {
        let d = Limits::default();
        let pick = |t: Tier| {
            let d = *d.for_tier(t);
            file.tier(t).map_or(d, |f| f.over(d))
        };
        Limits {
            free: pick(Tier::Free),
            pro: pick(Tier::Pro),
            enterprise: pick(Tier::Enterprise),
        }
    }
}

impl TierLimits {
    /// No limit at all (no quota, model, state or stream limit, a rate no
    /// client reaches): for running the stores without tenancy, as a
    /// single-user program or a benchmark does.
    pub const UNLIMITED: TierLimits = TierLimits {
        monthly_calls: None,
        max_models: None,
        rate_per_second: u32::MAX,
        burst: u32::MAX,
        max_states: None,
        max_import_bytes: u64::MAX,
        max_event_streams: u32::MAX,
        bulk_per_minute: u32::MAX,
        decision_retention_days: crate::decisions::MAX_RETENTION_DAYS,
        evaluations_per_day: u32::MAX,
        evaluations_at_once: u32::MAX,
        evaluation_max_decisions: u64::MAX,
        overage: false,
        features: Features::ALL,
    };

    /// The monthly limit past which calls count as overage: `monthly_calls`
    /// when [`TierLimits::overage`] is on, else `None` (calls past the
    /// quota are refused, never counted).
    pub fn overage_quota(&self) -> Option<u64> {
        self.monthly_calls.filter(|_| self.overage)
    }

    /// The monthly limit a debit must not pass: `monthly_calls`, or `None`
    /// (nothing refused) when the tier has overage or no quota.
    pub fn hard_quota(&self) -> Option<u64> {
        self.monthly_calls.filter(|_| !self.overage)
    }

    /// Metered calls left this month after `used`; `None` = unlimited.
    pub fn remaining_calls(&self, used: u64) -> Option<u64> {
        self.monthly_calls.map(|limit| limit.saturating_sub(used))
    }

    /// Whether a model holding `states` states may hold `new` more.
    pub fn may_add_states(&self, states: u64, new: u64) -> bool {
        self.max_states
            .is_none_or(|max| states.saturating_add(new) <= max)
    }

    /// Whether a user owning `owned` models may create one more.
    pub fn may_create_model(&self, owned: u64) -> bool {
        self.max_models.is_none_or(|max| owned < u64::from(max))
    }

    /// The `RateLimit-Policy` item (IETF draft, structured-field list
    /// member) describing this tier's token bucket, e.g.
    /// `"default";q=10;w=2`: `q` is the burst, `w` the seconds an empty
    /// bucket takes to fill again.
    pub fn rate_limit_policy(&self, policy: &str) -> String {
        let mut out = String::new();
        self.push_rate_limit_policy(&mut out, policy);
        out
    }

    /// Appends [`TierLimits::rate_limit_policy`] to `out` (the router
    /// writes every response's headers this way, without a format).
    pub fn push_rate_limit_policy(&self, out: &mut String, policy: &str) {
        let rate = self.rate_per_second.max(1);
        let window = self.burst.div_ceil(rate).max(1);
        push_rate_item(
            out,
            policy,
            [("q", u64::from(self.burst)), ("w", u64::from(window))],
        );
    }

    fn validate(&self, tier: Tier) -> Result<()> {
        if self.rate_per_second == 0 {
            return Err(Error::field(
                format!("limits.{tier}.rate_per_second"),
                "must be at least 1",
            ));
        }
        if self.burst == 0 {
            return Err(Error::field(
                format!("limits.{tier}.burst"),
                "must be at least 1",
            ));
        }
        if self.max_states == Some(0) {
            return Err(Error::field(
                format!("limits.{tier}.max_states"),
                "must be at least 1 or null for unlimited",
            ));
        }
        if self.max_import_bytes < 1024 {
            return Err(Error::field(
                format!("limits.{tier}.max_import_bytes"),
                "must be at least 1024",
            ));
        }
        if self.bulk_per_minute == 0 {
            return Err(Error::field(
                format!("limits.{tier}.bulk_per_minute"),
                "must be at least 1",
            ));
        }
        if !(1..=crate::decisions::MAX_RETENTION_DAYS).contains(&self.decision_retention_days) {
            return Err(Error::field(
                format!("limits.{tier}.decision_retention_days"),
                format!("must be in 1..={}", crate::decisions::MAX_RETENTION_DAYS),
            ));
        }
        if self.max_models == Some(0) {
            return Err(Error::field(
                format!("limits.{tier}.max_models"),
                "must be at least 1 (registration creates a default model) or null for unlimited",
            ));
        }
        Ok(())
    }
}

/// Appends `s` to `out` as a structured-field string (RFC 9651): quoted,
/// with `"` and `\` escaped and anything outside printable ASCII dropped.
fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out.push('"');
}

/// Appends one item of a `RateLimit` or `RateLimit-Policy` header to `out`:
/// the policy's name as a structured-field string, then each parameter,
/// e.g. `"monthly";q=1000;w=2592000`.
pub fn push_rate_item(out: &mut String, policy: &str, params: [(&str, u64); 2]) {
    push_sf_string(out, policy);
    let mut digits = itoa::Buffer::new();
    for (key, value) in params {
        out.push(';');
        out.push_str(key);
        out.push('=');
        out.push_str(digits.format(value));
    }
}

/// The limits of every tier. `Default` is the SPEC's table; any tier missing
/// from a deserialized override keeps its default, and so does any resource
/// field missing from a tier's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "LimitsFile")]
pub struct Limits {
    /// Limits of [`Tier::Free`].
    pub free: TierLimits,
    /// Limits of [`Tier::Pro`].
    pub pro: TierLimits,
    /// Limits of [`Tier::Enterprise`].
    pub enterprise: TierLimits,
}

const MIB: u64 = 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            free: TierLimits {
                monthly_calls: Some(100),
                max_models: Some(3),
                rate_per_second: 5,
                burst: 10,
                max_states: Some(10_000),
                max_import_bytes: 4 * MIB,
                max_event_streams: 2,
                bulk_per_minute: 6,
                decision_retention_days: 7,
                evaluations_per_day: 0,
                evaluations_at_once: 0,
                evaluation_max_decisions: 0,
                overage: false,
                features: Features::NONE,
            },
            pro: TierLimits {
                monthly_calls: Some(1_000),
                max_models: Some(10),
                rate_per_second: 50,
                burst: 100,
                max_states: Some(1_000_000),
                max_import_bytes: 64 * MIB,
                max_event_streams: 10,
                bulk_per_minute: 60,
                decision_retention_days: 30,
                evaluations_per_day: 20,
                evaluations_at_once: 1,
                evaluation_max_decisions: 1_000_000,
                overage: false,
                features: Features::ALL,
            },
            enterprise: TierLimits {
                monthly_calls: None,
                max_models: None,
                rate_per_second: 500,
                burst: 1_000,
                max_states: None,
                max_import_bytes: 256 * MIB,
                max_event_streams: 50,
                bulk_per_minute: 600,
                decision_retention_days: 90,
                evaluations_per_day: 200,
                evaluations_at_once: 4,
                evaluation_max_decisions: 10_000_000,
                overage: false,
                features: Features::ALL,
            },
        }
    }
}

impl Limits {
    /// The limits of `tier`.
    pub fn for_tier(&self, tier: Tier) -> &TierLimits {
        match tier {
            Tier::Free => &self.free,
            Tier::Pro => &self.pro,
            Tier::Enterprise => &self.enterprise,
        }
    }

    /// Checks loaded limits: every rate and burst at least 1, every model
    /// limit at least 1. The error names the field, e.g. `limits.pro.burst`.
    pub fn validate(&self) -> Result<()> {
        for tier in Tier::ALL {
            self.for_tier(tier).validate(tier)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_parse_display_serde() {
        assert_eq!("FREE".parse::<Tier>().unwrap(), Tier::Free);
        assert_eq!(" Pro ".parse::<Tier>().unwrap(), Tier::Pro);
        assert_eq!("enterprise".parse::<Tier>().unwrap(), Tier::Enterprise);
        let err = "gold".parse::<Tier>().unwrap_err().to_string();
        assert!(
            err.contains("tier") && err.contains("free, pro, enterprise"),
            "{err}"
        );
        for t in Tier::ALL {
            assert_eq!(t.to_string().parse::<Tier>().unwrap(), t);
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
        assert_eq!(serde_json::from_str::<Tier>("\"pro\"").unwrap(), Tier::Pro);
        assert_eq!(Tier::default(), Tier::Free);
    }

    #[test]
    fn role_parse_display_serde() {
        assert_eq!("Admin".parse::<Role>().unwrap(), Role::Admin);
        assert_eq!("user".parse::<Role>().unwrap(), Role::User);
        let err = "root".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("role") && err.contains("user, admin"), "{err}");
        assert_eq!(serde_json::to_string(&Role::Admin).unwrap(), "\"admin\"");
        assert_eq!(Role::default(), Role::User);
    }

    #[test]
    fn default_limits_match_spec() {
        let l = Limits::default();
        let f = l.for_tier(Tier::Free);
        assert_eq!(
            (f.monthly_calls, f.max_models, f.rate_per_second, f.burst),
            (Some(100), Some(3), 5, 10)
        );
        let p = l.for_tier(Tier::Pro);
        assert_eq!(
            (p.monthly_calls, p.max_models, p.rate_per_second, p.burst),
            (Some(1000), Some(10), 50, 100)
        );
        let e = l.for_tier(Tier::Enterprise);
        assert_eq!(
            (e.monthly_calls, e.max_models, e.rate_per_second, e.burst),
            (None, None, 500, 1000)
        );
        // The SPEC's resource bounds.
        assert_eq!(
            [f.max_states, p.max_states, e.max_states],
            [Some(10_000), Some(1_000_000), None]
        );
        assert_eq!(
            [f.max_import_bytes, p.max_import_bytes, e.max_import_bytes],
            [4 << 20, 64 << 20, 256 << 20]
        );
        l.validate().unwrap();
    }

    #[test]
    fn limits_json_overrides() {
        let l: Limits = serde_json::from_str(
            r#"{"pro": {"monthly_calls": 5000, "max_models": null, "rate_per_second": 10, "burst": 20}}"#,
        )
        .unwrap();
        assert_eq!(l.pro.monthly_calls, Some(5000));
        assert_eq!(l.pro.max_models, None);
        assert_eq!(l.free, Limits::default().free);
        // Round trip.
        let back: Limits = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        // A missing field is an error, not "unlimited".
        assert!(serde_json::from_str::<Limits>(
            r#"{"free": {"max_models": 3, "rate_per_second": 5, "burst": 10}}"#
        )
        .is_err());
        // Resource fields may be left out: the tier's defaults stay.
        assert_eq!(l.pro.max_states, Limits::default().pro.max_states);
        assert_eq!(l.pro.max_import_bytes, 64 * MIB);
        let l: Limits = serde_json::from_str(
            r#"{"free": {"monthly_calls": 1, "max_models": 1, "rate_per_second": 1, "burst": 1,
                "max_states": null, "max_import_bytes": 2048, "max_event_streams": 7}}"#,
        )
        .unwrap();
        assert_eq!(
            (
                l.free.max_states,
                l.free.max_import_bytes,
                l.free.max_event_streams
            ),
            (None, 2048, 7)
        );
        let l: Limits = serde_json::from_str(
            r#"{"enterprise": {"monthly_calls": null, "max_models": null, "rate_per_second": 1,
                "burst": 1, "max_states": 50}}"#,
        )
        .unwrap();
        assert_eq!(l.enterprise.max_states, Some(50));
        // Overage: off unless the file turns it on.
        assert!(!l.enterprise.overage && !Limits::default().pro.overage);
        let l: Limits = serde_json::from_str(
            r#"{"pro": {"monthly_calls": 5, "max_models": 1, "rate_per_second": 1, "burst": 1,
                "overage": true}}"#,
        )
        .unwrap();
        assert!(l.pro.overage && !l.free.overage);
        assert_eq!((l.pro.overage_quota(), l.pro.hard_quota()), (Some(5), None));
        assert_eq!(
            (l.free.overage_quota(), l.free.hard_quota()),
            (None, Some(100))
        );
        assert_eq!(l.enterprise.max_event_streams, 50);
        assert_eq!(l.enterprise.bulk_per_minute, 600);
        // Typos are errors.
        assert!(serde_json::from_str::<Limits>(r#"{"fre": {}}"#).is_err());
        let mut bad = Limits::default();
        bad.pro.burst = 0;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("limits.pro.burst"), "{err}");
        let mut bad = Limits::default();
        bad.free.max_states = Some(0);
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("limits.free.max_states"), "{err}");
        let mut bad = Limits::default();
        bad.enterprise.max_import_bytes = 10;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("limits.enterprise.max_import_bytes"), "{err}");
    }

    #[test]
    fn tier_limit_helpers() {
        let l = Limits::default();
        assert_eq!(l.free.remaining_calls(40), Some(60));
        assert_eq!(l.free.remaining_calls(400), Some(0));
        assert_eq!(l.enterprise.remaining_calls(u64::MAX), None);
        assert!(l.free.may_create_model(2));
        assert!(!l.free.may_create_model(3));
        assert!(l.enterprise.may_create_model(1_000_000));
        assert!(l.free.may_add_states(9_999, 1));
        assert!(!l.free.may_add_states(9_999, 2));
        assert!(l.free.may_add_states(10_000, 0));
        assert!(l.enterprise.may_add_states(u64::MAX, 5));
        TierLimits::UNLIMITED.validate(Tier::Enterprise).unwrap();
        assert_eq!(TierLimits::UNLIMITED.remaining_calls(u64::MAX), None);
        assert_eq!(l.free.rate_limit_policy("default"), "\"default\";q=10;w=2");
        assert_eq!(
            l.enterprise.rate_limit_policy("a\"b"),
            "\"a\\\"b\";q=1000;w=2"
        );
    }
}
