//! A model's decisions setting ([`DecisionsConfig`]) and how several rewards
//! of one decision combine ([`Aggregation`]).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::MAX_REWARD;

/// Longest reward wait: 30 days, in seconds (Personalizer capped it at 2
/// days, which users found too short for purchases and retention).
pub const MAX_REWARD_WAIT_SECONDS: u64 = 30 * 24 * 3600;

/// Longest retention of the decision log, in days (ten years).
pub const MAX_RETENTION_DAYS: u32 = 3650;

/// How the rewards of one decision combine into the reward it learns from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The sum of all rewards received in the window.
    #[default]
    Sum,
    /// The first reward; it also closes the window at once.
    First,
    /// The latest reward received in the window.
    Last,
    /// The arithmetic mean of the rewards received in the window.
    Mean,
    /// The smallest reward received.
    Min,
    /// The largest reward received (starting from the first reward itself,
    /// so a set of negative rewards gives the largest of them, not a
    /// sentinel: VowpalWabbit's `max` started from the smallest positive
    /// float and turned all-negative rewards into the default).
    Max,
}

impl Aggregation {
    /// The wire name (`sum`, `first`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::First => "first",
            Aggregation::Last => "last",
            Aggregation::Mean => "mean",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
        }
    }

    /// Folds one more reward `x` into the accumulator (`None` before the
    /// first reward). For `mean` the accumulator is the sum; see
    /// [`Aggregation::value`].
    pub fn fold(self, acc: Option<f64>, x: f64) -> f64 {
        let Some(acc) = acc else {
            return x;
        };
        match self {
            Aggregation::Sum | Aggregation::Mean => acc + x,
            Aggregation::First => acc,
            Aggregation::Last => x,
            Aggregation::Min => acc.min(x),
            Aggregation::Max => acc.max(x),
        }
    }

    /// The aggregated reward of `count` rewards folded into `acc` (`None`
    /// when no reward arrived).
    pub fn value(self, acc: Option<f64>, count: u32) -> Option<f64> {
        match self {
            Aggregation::Mean => acc.map(|sum| sum / f64::from(count.max(1))),
            _ => acc,
        }
    }
}

impl std::str::FromStr for Aggregation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sum" => Ok(Aggregation::Sum),
            "first" => Ok(Aggregation::First),
            "last" => Ok(Aggregation::Last),
            "mean" => Ok(Aggregation::Mean),
            "min" => Ok(Aggregation::Min),
            "max" => Ok(Aggregation::Max),
            _ => Err(Error::field(
                "aggregation",
                format!("must be one of sum, first, last, mean, min, max; got {s:?}"),
            )),
        }
    }
}

fn default_reward_wait_seconds() -> u64 {
    600
}
fn default_retention_days() -> u32 {
    30
}

/// The decisions setting of a model (`null`: the model logs no decisions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsConfig {
    /// How long after a decision its rewards are accepted, in seconds,
    /// `0..=`[`MAX_REWARD_WAIT_SECONDS`] (default 600). The window is
    /// half-open: a reward at exactly `time + wait` is late.
    #[serde(default = "default_reward_wait_seconds")]
    pub reward_wait_seconds: u64,
    /// The reward of a decision whose window closes without any reward;
    /// `None` (the default): such a decision teaches nothing. Finite, of
    /// magnitude at most [`MAX_REWARD`].
    #[serde(default)]
    pub default_reward: Option<f64>,
    /// How several rewards of one decision combine (default `sum`).
    #[serde(default)]
    pub aggregation: Aggregation,
    /// How long a finished decision stays in the log, in days,
    /// `1..=`[`MAX_RETENTION_DAYS`] (default 30; the service sets it per
    /// tier).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

impl Default for DecisionsConfig {
    fn default() -> Self {
        DecisionsConfig {
            reward_wait_seconds: default_reward_wait_seconds(),
            default_reward: None,
            aggregation: Aggregation::Sum,
            retention_days: default_retention_days(),
        }
    }
}

impl DecisionsConfig {
    /// Checks every range; the error names the field (`decisions.` prefixed,
    /// as the model setting is called).
    pub fn validate(&self) -> Result<()> {
        if self.reward_wait_seconds > MAX_REWARD_WAIT_SECONDS {
            return Err(Error::field(
                "decisions.reward_wait_seconds",
                format!(
                    "must be in 0..={MAX_REWARD_WAIT_SECONDS} (30 days), got {}",
                    self.reward_wait_seconds
                ),
            ));
        }
        if let Some(r) = self.default_reward {
            if !(r.is_finite() && r.abs() <= MAX_REWARD) {
                return Err(Error::field(
                    "decisions.default_reward",
                    format!("must be null or a finite number of magnitude at most {MAX_REWARD:e}"),
                ));
            }
        }
        if !(1..=MAX_RETENTION_DAYS).contains(&self.retention_days) {
            return Err(Error::field(
                "decisions.retention_days",
                format!(
                    "must be in 1..={MAX_RETENTION_DAYS}, got {}",
                    self.retention_days
                ),
            ));
        }
        Ok(())
    }

    /// The reward window in milliseconds.
    pub fn wait_ms(&self) -> i64 {
        // At most 30 days: no overflow.
        self.reward_wait_seconds as i64 * 1000
    }

    /// The retention in milliseconds.
    pub fn retention_ms(&self) -> i64 {
        i64::from(self.retention_days) * 86_400_000
    }
}
