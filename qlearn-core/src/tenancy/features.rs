//! Paid features and the one place they are checked ([`require`]).
//!
//! A plan (a [`Tier`] with its [`super::TierLimits`]) grants a set of
//! [`Features`]; what a model needs ([`needed_by_model`]) is derived from
//! its configuration. The host calls [`require`] before creating, changing
//! or importing a model; the stores read the same sets (through the
//! caller's `TierLimits`) to decide whether a model is read-only after a
//! downgrade.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{Algorithm, ModelConfig};
use crate::{Error, Result};

use super::{Limits, Tier};

/// A feature a plan may or may not include.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// The learning rules beyond Q-learning: SARSA, expected SARSA and
    /// double Q-learning.
    AdvancedAlgorithms,
    /// Decision logging with delayed rewards (a model's `decisions` setting).
    Decisions,
}

impl Feature {
    /// Every feature.
    pub const ALL: [Feature; 2] = [Feature::AdvancedAlgorithms, Feature::Decisions];

    /// The wire and configuration name, e.g. `advanced_algorithms`.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::AdvancedAlgorithms => "advanced_algorithms",
            Feature::Decisions => "decisions",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The features a plan includes. In a plans file and on the wire, a list
/// of feature names (`["advanced_algorithms", "decisions"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features {
    /// [`Feature::AdvancedAlgorithms`].
    pub advanced_algorithms: bool,
    /// [`Feature::Decisions`].
    pub decisions: bool,
}

impl Features {
    /// No paid feature (the free plan's default).
    pub const NONE: Features = Features {
        advanced_algorithms: false,
        decisions: false,
    };
    /// Every feature (the paid plans' default).
    pub const ALL: Features = Features {
        advanced_algorithms: true,
        decisions: true,
    };

    /// Whether `feature` is included.
    pub fn has(&self, feature: Feature) -> bool {
        match feature {
            Feature::AdvancedAlgorithms => self.advanced_algorithms,
            Feature::Decisions => self.decisions,
        }
    }

    /// The included features' names, in [`Feature::ALL`]'s order.
    pub fn names(&self) -> Vec<&'static str> {
        Feature::ALL
            .into_iter()
            .filter(|f| self.has(*f))
            .map(Feature::as_str)
            .collect()
    }
}

impl Serialize for Features {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut out = Features::NONE;
        for f in Vec::<Feature>::deserialize(d)? {
            match f {
                Feature::AdvancedAlgorithms => out.advanced_algorithms = true,
                Feature::Decisions => out.decisions = true,
            }
        }
        Ok(out)
    }
}

/// The features a model with `config` (and a decisions setting when
/// `decisions`) needs: an algorithm other than Q-learning needs
/// [`Feature::AdvancedAlgorithms`], a decisions setting [`Feature::Decisions`].
pub fn needed_by_model(config: &ModelConfig, decisions: bool) -> Features {
    Features {
        advanced_algorithms: config.algorithm != Algorithm::QLearning,
        decisions,
    }
}

/// The first feature of `needed` that `has` lacks, if any.
pub fn missing(has: &Features, needed: &Features) -> Option<Feature> {
    Feature::ALL
        .into_iter()
        .find(|f| needed.has(*f) && !has.has(*f))
}

/// The cheapest tier (in [`Tier::ALL`]'s order) whose plan includes
/// `feature`, if any does.
pub fn cheapest_with(limits: &Limits, feature: Feature) -> Option<Tier> {
    Tier::ALL
        .into_iter()
        .find(|t| limits.for_tier(*t).features.has(feature))
}

/// The one feature gate: `Ok` when `tier`'s plan includes every feature of
/// `needed`, else [`Error::PlanRequired`] naming the first missing feature
/// and the cheapest plan that has it (`None` when no plan has it).
pub fn require(limits: &Limits, tier: Tier, needed: &Features) -> Result<()> {
    match missing(&limits.for_tier(tier).features, needed) {
        None => Ok(()),
        Some(feature) => Err(Error::PlanRequired {
            feature: feature.as_str(),
            plan: cheapest_with(limits, feature).map(Tier::as_str),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_gate_paid_features_on_free_only() {
        let limits = Limits::default();
        let q = ModelConfig::new(2);
        let sarsa = ModelConfig {
            algorithm: Algorithm::Sarsa,
            ..ModelConfig::new(2)
        };
        for tier in Tier::ALL {
            require(&limits, tier, &needed_by_model(&q, false)).unwrap();
        }
        for (config, decisions, feature) in [
            (&sarsa, false, "advanced_algorithms"),
            (&q, true, "decisions"),
            (&sarsa, true, "advanced_algorithms"),
        ] {
            let needed = needed_by_model(config, decisions);
            match require(&limits, Tier::Free, &needed) {
                Err(Error::PlanRequired { feature: f, plan }) => {
                    assert_eq!((f, plan), (feature, Some("pro")));
                }
                other => panic!("{other:?}"),
            }
            require(&limits, Tier::Pro, &needed).unwrap();
            require(&limits, Tier::Enterprise, &needed).unwrap();
        }
        // The cheapest plan that has it is named, not the next one up.
        let mut l = Limits::default();
        l.pro.features = Features::NONE;
        let err = require(&l, Tier::Free, &Features::ALL).unwrap_err();
        assert!(
            matches!(
                err,
                Error::PlanRequired {
                    plan: Some("enterprise"),
                    ..
                }
            ),
            "{err:?}"
        );
        l.enterprise.features.decisions = false;
        let needed = Features {
            decisions: true,
            ..Features::NONE
        };
        let err = require(&l, Tier::Enterprise, &needed).unwrap_err();
        assert!(
            matches!(err, Error::PlanRequired { plan: None, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn features_are_a_list_of_names() {
        assert_eq!(
            serde_json::to_string(&Features::ALL).unwrap(),
            r#"["advanced_algorithms","decisions"]"#
        );
        assert_eq!(serde_json::to_string(&Features::NONE).unwrap(), "[]");
        let f: Features = serde_json::from_str(r#"["decisions"]"#).unwrap();
        assert_eq!(
            f,
            Features {
                advanced_algorithms: false,
                decisions: true
            }
        );
        assert!(serde_json::from_str::<Features>(r#"["teleport"]"#).is_err());
    }
}
