//! Plans: what a customer sees and pays for each tier ([`PlanInfo`]:
//! display name, monthly price, the billing provider's price ids), read
//! from the same plans file as the tier's limits and features ([`Limits`]).
//!
//! The plans file is the limits file grown: every tier's entry may also
//! carry `display_name`, `price` (`{"monthly_cents": 2900, "currency":
//! "USD"}`), `features` and `stripe_price_ids`; anything left out keeps
//! its default, so an old limits file loads unchanged.

use serde::{Deserialize, Deserializer, Serialize};

use super::tier::LimitsFile;
use super::{Limits, Tier};
use crate::{Error, Result};

/// A plan's recurring price.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Price per month in the currency's minor unit (cents); 0 = free.
    pub monthly_cents: u64,
    /// ISO 4217 code, three upper-case letters (`USD`).
    pub currency: String,
}

/// What a customer sees and pays for one tier (its limits and features are
/// in [`Limits`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PlanInfo {
    /// The name shown on the plans page, e.g. `Pro`.
    pub display_name: String,
    /// The monthly price.
    pub price: Price,
    /// The billing provider's (Stripe's) price ids that buy this tier: a
    /// subscription to one of them moves its customer to this tier.
    pub stripe_price_ids: Vec<String>,
}

/// Longest display name, characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 40;

/// Every tier's plan (its limits and features are the same file's
/// [`Limits`]). `Default` is qlearn's own: Free (0), Pro (29.00 USD a
/// month) and Enterprise (499.00 USD a month), with no provider price ids
/// (so no webhook event changes a tier until the file names them).
#[derive(Debug, Clone, PartialEq)]
pub struct Plans {
    free: PlanInfo,
    pro: PlanInfo,
    enterprise: PlanInfo,
}

fn default_info(tier: Tier) -> PlanInfo {
    let (name, cents) = match tier {
        Tier::Free => ("Free", 0),
        Tier::Pro => ("Pro", 2_900),
        Tier::Enterprise => ("Enterprise", 49_900),
    };
    PlanInfo {
        display_name: name.into(),
        price: Price {
            monthly_cents: cents,
            currency: "USD".into(),
        },
        stripe_price_ids: Vec::new(),
    }
}

impl Default for Plans {
    fn default() -> Self {
        Plans {
            free: default_info(Tier::Free),
            pro: default_info(Tier::Pro),
            enterprise: default_info(Tier::Enterprise),
        }
    }
}

impl Plans {
    fn from_file(file: &LimitsFile) -> Self {
        let info = |t: Tier| {
            let d = default_info(t);
            match file.tier(t) {
                None => d,
                Some(f) => PlanInfo {
                    display_name: f.display_name.clone().unwrap_or(d.display_name),
                    price: f.price.clone().unwrap_or(d.price),
                    stripe_price_ids: f.stripe_price_ids.clone().unwrap_or_default(),
                },
            }
        };
        Plans {
            free: info(Tier::Free),
            pro: info(Tier::Pro),
            enterprise: info(Tier::Enterprise),
        }
    }
}

impl<'de> Deserialize<'de> for Plans {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        LimitsFile::deserialize(d).map(|f| Plans::from_file(&f))
    }
}

impl Plans {
    /// The plan of `tier`.
    pub fn info(&self, tier: Tier) -> &PlanInfo {
        match tier {
            Tier::Free => &self.free,
            Tier::Pro => &self.pro,
            Tier::Enterprise => &self.enterprise,
        }
    }

    /// Reads a plans (or older limits) file: every tier's limits and
    /// features, and its plan; both validated.
    pub fn load(json: &str) -> Result<(Limits, Plans)> {
        let file: LimitsFile =
            serde_json::from_str(json).map_err(|e| Error::field("limits_file", e.to_string()))?;
        let plans = Plans::from_file(&file);
        let limits = Limits::from(file);
        limits.validate()?;
        plans.validate()?;
        Ok((limits, plans))
    }

    /// The tier a provider price id buys, if a plan names it.
    pub fn tier_for_price(&self, price_id: &str) -> Option<Tier> {
        Tier::ALL
            .into_iter()
            .find(|t| self.info(*t).stripe_price_ids.iter().any(|p| p == price_id))
    }

    /// Checks loaded plans: display names (1 to [`MAX_DISPLAY_NAME_CHARS`]
    /// characters), currencies (three upper-case letters) and price ids
    /// (non-empty, each buying one tier). Errors name the field, e.g.
    /// `limits.pro.price.currency`.
    pub fn validate(&self) -> Result<()> {
        let mut seen: Vec<&str> = Vec::new();
        for tier in Tier::ALL {
            let p = self.info(tier);
            let n = p.display_name.trim().chars().count();
            if n == 0 || n > MAX_DISPLAY_NAME_CHARS {
                return Err(Error::field(
                    format!("limits.{tier}.display_name"),
                    format!("must be 1 to {MAX_DISPLAY_NAME_CHARS} characters"),
                ));
            }
            let c = &p.price.currency;
            if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(Error::field(
                    format!("limits.{tier}.price.currency"),
                    "must be an ISO 4217 code such as USD",
                ));
            }
            for id in &p.stripe_price_ids {
                if id.is_empty() || seen.contains(&id.as_str()) {
                    return Err(Error::field(
                        format!("limits.{tier}.stripe_price_ids"),
                        format!("{id:?} is empty or names two plans"),
                    ));
                }
                seen.push(id);
            }
        }
        Ok(())
    }
}

/// The checkout URL for a user: `template` with `{user_id}`, `{email}` and
/// `{plan}` (the tier's name) replaced by the values, percent-encoded (so
/// they stay inside their query parameter), e.g.
/// `https://buy.example/checkout?client_reference_id={user_id}`.
pub fn checkout_url(template: &str, user_id: &str, email: &str, tier: Tier) -> String {
    template
        .replace("{user_id}", &percent_encode(user_id))
        .replace("{email}", &percent_encode(email))
        .replace("{plan}", tier.as_str())
}

/// `s` with every byte but RFC 3986's unreserved characters percent-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn checkout_urls_carry_the_user() {
        assert_eq!(
            checkout_url(
                "https://buy.example/c?client_reference_id={user_id}&prefilled_email={email}&p={plan}",
                "u_1-x",
                "a+b@example.com",
                Tier::Pro
            ),
            "https://buy.example/c?client_reference_id=u_1-x&prefilled_email=a%2Bb%40example.com&p=pro"
        );
    }

    use super::*;
    use crate::tenancy::Features;

    #[test]
    fn an_old_limits_file_loads_as_plans_with_defaults() {
        let old = r#"{"pro": {"monthly_calls": 5000, "max_models": null, "rate_per_second": 10, "burst": 20}}"#;
        let (limits, plans) = Plans::load(old).unwrap();
        assert_eq!(limits, serde_json::from_str::<Limits>(old).unwrap());
        assert_eq!(limits.pro.monthly_calls, Some(5000));
        assert_eq!(limits.pro.features, Features::ALL);
        assert_eq!(limits.free.features, Features::NONE);
        assert_eq!(plans, Plans::default());
        Plans::default().validate().unwrap();
    }

    #[test]
    fn plan_fields_load_and_are_checked() {
        let (limits, plans) = Plans::load(
            r#"{"pro": {"monthly_calls": 5000, "max_models": 20, "rate_per_second": 10, "burst": 20,
                "display_name": "Team", "price": {"monthly_cents": 4900, "currency": "EUR"},
                "features": ["decisions"], "stripe_price_ids": ["price_team_m", "price_team_y"]},
                "enterprise": {"monthly_calls": null, "max_models": null, "rate_per_second": 1,
                "burst": 1, "stripe_price_ids": ["price_ent"]}}"#,
        )
        .unwrap();
        let pro = plans.info(Tier::Pro);
        assert_eq!(pro.display_name, "Team");
        assert_eq!(pro.price.monthly_cents, 4900);
        assert!(limits.pro.features.decisions);
        assert!(!limits.pro.features.advanced_algorithms);
        assert_eq!(plans.tier_for_price("price_team_y"), Some(Tier::Pro));
        assert_eq!(plans.tier_for_price("price_ent"), Some(Tier::Enterprise));
        assert_eq!(plans.tier_for_price("price_other"), None);
        assert_eq!(plans.info(Tier::Enterprise).display_name, "Enterprise");

        for (bad, field) in [
            (
                r#"{"free": {"monthly_calls": 1, "max_models": 1, "rate_per_second": 1, "burst": 1, "price": {"monthly_cents": 0, "currency": "usd"}}}"#,
                "limits.free.price.currency",
            ),
            (
                r#"{"free": {"monthly_calls": 1, "max_models": 1, "rate_per_second": 1, "burst": 1, "display_name": " "}}"#,
                "limits.free.display_name",
            ),
            (
                r#"{"free": {"monthly_calls": 1, "max_models": 1, "rate_per_second": 1, "burst": 1, "stripe_price_ids": ["p"]}, "pro": {"monthly_calls": 1, "max_models": 1, "rate_per_second": 1, "burst": 1, "stripe_price_ids": ["p"]}}"#,
                "limits.pro.stripe_price_ids",
            ),
        ] {
            let err = Plans::load(bad).unwrap_err().to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
        // Typos stay errors.
        assert!(Plans::load(
            r#"{"free": {"monthly_calls": 1, "max_models": 1, "rate_per_second": 1, "burst": 1, "featurez": []}}"#
        )
        .is_err());
        let err = Plans::load(
            r#"{"free": {"monthly_calls": 1, "max_models": 1, "rate_per_second": 0, "burst": 1}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("limits.free.rate_per_second"), "{err}");
    }
}
