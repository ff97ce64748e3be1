//! Model configuration: the hyperparameters of one Q-learning model and their
//! validation. Every range comes from the SPEC; out-of-range values are
//! rejected with an error naming the field, never clamped.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::MAX_REWARD;

/// The limits validation checks, re-exported where they were first defined.
pub use crate::limits::{MAX_ACTIONS, MAX_ACTION_NAME_CHARS, MAX_BINS, MAX_STATE_DIMS};

/// The learning rule a model applies on `update`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Off-policy: bootstraps from `max_a' Q(s', a')`.
    #[default]
    QLearning,
    /// On-policy: bootstraps from `Q(s', a')` for the action actually taken next.
    Sarsa,
    /// Bootstraps from the expectation of `Q(s', ·)` under the current policy.
    ExpectedSarsa,
    /// Two tables, each evaluated by the other (van Hasselt 2010): less
    /// maximisation bias.
    DoubleQLearning,
}

impl Algorithm {
    /// The wire name (`q_learning`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::QLearning => "q_learning",
            Algorithm::Sarsa => "sarsa",
            Algorithm::ExpectedSarsa => "expected_sarsa",
            Algorithm::DoubleQLearning => "double_q_learning",
        }
    }

    /// Q-values stored per action: two tables for double Q-learning.
    pub fn tables(self) -> usize {
        if self == Algorithm::DoubleQLearning {
            2
        } else {
            1
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "q_learning" => Ok(Algorithm::QLearning),
            "sarsa" => Ok(Algorithm::Sarsa),
            "expected_sarsa" => Ok(Algorithm::ExpectedSarsa),
            "double_q_learning" => Ok(Algorithm::DoubleQLearning),
            _ => Err(Error::field(
                "algorithm",
                format!(
                    "must be one of q_learning, sarsa, expected_sarsa, double_q_learning; got {s:?}"
                ),
            )),
        }
    }
}

/// How `predict` explores when asked to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exploration {
    /// With probability epsilon a uniformly random allowed action, else greedy.
    #[default]
    EpsilonGreedy,
    /// Boltzmann exploration: `P(a) ∝ exp(Q(s, a) / temperature)`.
    Softmax,
}

impl Exploration {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Exploration::EpsilonGreedy => "epsilon_greedy",
            Exploration::Softmax => "softmax",
        }
    }
}

impl std::str::FromStr for Exploration {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "epsilon_greedy" => Ok(Exploration::EpsilonGreedy),
            "softmax" => Ok(Exploration::Softmax),
            _ => Err(Error::field(
                "exploration",
                format!("must be epsilon_greedy or softmax; got {s:?}"),
            )),
        }
    }
}

/// One dimension of the optional discretization of array states: values in
/// `[low, high)` fall into `bins` equal bins; values outside go to the first
/// or last bin.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bin {
    /// Lower edge of the first bin.
    pub low: f64,
    /// Upper edge of the last bin.
    pub high: f64,
    /// Number of bins (1..=1,000,000).
    pub bins: u32,
}

impl Bin {
    /// The bin index of `x`.
    #[inline]
    pub fn index(&self, x: f64) -> u32 {
        let t = (x - self.low) / (self.high - self.low) * self.bins as f64;
        if t <= 0.0 {
            0
        } else if t >= (self.bins - 1) as f64 {
            self.bins - 1
        } else {
            t as u32
        }
    }
}

fn default_learning_rate() -> f64 {
    0.1
}
fn default_discount_factor() -> f64 {
    0.95
}
fn default_epsilon() -> f64 {
    0.1
}
fn default_epsilon_decay() -> f64 {
    1.0
}
fn default_min_epsilon() -> f64 {
    0.01
}
fn default_temperature() -> f64 {
    1.0
}

/// Everything that defines a model's behaviour. Build one with
/// [`ModelConfig::new`] and change the public fields; [`ModelConfig::validate`]
/// (called by every constructor of a model) checks each range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Number of discrete actions, 1..=[`MAX_ACTIONS`] (4096).
    pub n_actions: usize,
    /// Optional display names, one per action, unique.
    #[serde(default, deserialize_with = "de_action_names")]
    pub action_names: Option<Vec<String>>,
    /// α in (0, 1].
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// γ in [0, 1].
    #[serde(default = "default_discount_factor")]
    pub discount_factor: f64,
    /// Initial exploration rate in [0, 1].
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
    /// Factor applied to epsilon at each episode end, in (0, 1]; 1 = no decay.
    #[serde(default = "default_epsilon_decay")]
    pub epsilon_decay: f64,
    /// Floor for the decayed epsilon, in [0, 1].
    #[serde(default = "default_min_epsilon")]
    pub min_epsilon: f64,
    /// Q-value of every unseen state-action pair; any finite number
    /// (positive values give optimistic exploration).
    #[serde(default)]
    pub initial_q: f64,
    /// The learning rule.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// The exploration strategy.
    #[serde(default)]
    pub exploration: Exploration,
    /// Softmax temperature, finite and > 0 (used by `softmax` only).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Seed for reproducible exploration; `None` seeds from the OS.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Optional per-dimension discretization of array states.
    #[serde(default)]
    pub state_bins: Option<Vec<Bin>>,
}

impl ModelConfig {
    /// A configuration with `n_actions` actions and every other field at its
    /// SPEC default.
    pub fn new(n_actions: usize) -> Self {
        ModelConfig {
            n_actions,
            action_names: None,
            learning_rate: default_learning_rate(),
            discount_factor: default_discount_factor(),
            epsilon: default_epsilon(),
            epsilon_decay: default_epsilon_decay(),
            min_epsilon: default_min_epsilon(),
            initial_q: 0.0,
            algorithm: Algorithm::default(),
            exploration: Exploration::default(),
            temperature: default_temperature(),
            seed: None,
            state_bins: None,
        }
    }

    /// Checks every field against its allowed range; the error names the
    /// first offending field and the range.
    pub fn validate(&self) -> Result<()> {
        if self.n_actions == 0 || self.n_actions > MAX_ACTIONS {
            return Err(Error::field(
                "n_actions",
                format!("must be in 1..={MAX_ACTIONS}, got {}", self.n_actions),
            ));
        }
        if let Some(names) = &self.action_names {
            if names.len() != self.n_actions {
                return Err(Error::field(
                    "action_names",
                    format!(
                        "must have n_actions ({}) entries, got {}",
                        self.n_actions,
                        names.len()
                    ),
                ));
            }
            let mut seen = std::collections::HashSet::with_capacity(names.len());
            for name in names {
                let chars = name.chars().count();
                if chars == 0 || chars > MAX_ACTION_NAME_CHARS {
                    return Err(Error::field(
                        "action_names",
                        format!("each name must have 1 to {MAX_ACTION_NAME_CHARS} characters"),
                    ));
                }
                if !seen.insert(name.as_str()) {
                    return Err(Error::field(
                        "action_names",
                        format!("names must be unique; {name:?} appears twice"),
                    ));
                }
            }
        }
        range_open_closed("learning_rate", self.learning_rate)?;
        range_closed("discount_factor", self.discount_factor)?;
        range_closed("epsilon", self.epsilon)?;
        range_open_closed("epsilon_decay", self.epsilon_decay)?;
        range_closed("min_epsilon", self.min_epsilon)?;
        if !(self.initial_q.is_finite() && self.initial_q.abs() <= MAX_REWARD) {
            return Err(Error::field(
                "initial_q",
                format!("must be a finite number of magnitude at most {MAX_REWARD:e}"),
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::field(
                "temperature",
                format!("must be a finite number > 0, got {}", self.temperature),
            ));
        }
        if let Some(bins) = &self.state_bins {
            if bins.is_empty() || bins.len() > MAX_STATE_DIMS {
                return Err(Error::field(
                    "state_bins",
                    format!(
                        "must have 1 to {MAX_STATE_DIMS} dimensions, got {}",
                        bins.len()
                    ),
                ));
            }
            for (i, b) in bins.iter().enumerate() {
                if !(b.low.is_finite() && b.high.is_finite() && b.low < b.high) {
                    return Err(Error::field(
                        format!("state_bins[{i}]"),
                        "low and high must be finite with low < high",
                    ));
                }
                if b.bins == 0 || b.bins > MAX_BINS {
                    return Err(Error::field(
                        format!("state_bins[{i}].bins"),
                        format!("must be in 1..={MAX_BINS}, got {}", b.bins),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The name of action `a`, if the model names its actions.
    pub fn action_name(&self, a: usize) -> Option<&str> {
        self.action_names
            .as_ref()
            .and_then(|n| n.get(a))
            .map(String::as_str)
    }
}

/// Reads `action_names` with [`crate::de::de_box_str`]'s borrowing
/// visitor, so a corrupt binary length prefix cannot make the decoder
/// allocate gigabytes before it notices the input is short.
fn de_action_names<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    struct Name(#[serde(deserialize_with = "crate::de::de_box_str")] Box<str>);
    let names: Option<Vec<Name>> = Option::deserialize(d)?;
    Ok(names.map(|v| v.into_iter().map(|n| n.0.into()).collect()))
}

fn range_closed(field: &str, v: f64) -> Result<()> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::field(field, format!("must be in [0, 1], got {v}")))
    }
}

fn range_open_closed(field: &str, v: f64) -> Result<()> {
    if v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(Error::field(field, format!("must be in (0, 1], got {v}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<()>) -> String {
        match r {
            Err(Error::InvalidField { field, .. }) => field,
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_spec_defaults_and_valid() {
        let c = ModelConfig::new(4);
        assert_eq!(c.learning_rate, 0.1);
        assert_eq!(c.discount_factor, 0.95);
        assert_eq!(c.epsilon, 0.1);
        assert_eq!(c.epsilon_decay, 1.0);
        assert_eq!(c.min_epsilon, 0.01);
        assert_eq!(c.initial_q, 0.0);
        assert_eq!(c.algorithm, Algorithm::QLearning);
        assert_eq!(c.exploration, Exploration::EpsilonGreedy);
        c.validate().unwrap();
        let from_json: ModelConfig = serde_json::from_str(r#"{"n_actions": 4}"#).unwrap();
        assert_eq!(from_json, c);
    }

    #[test]
    fn every_range_is_enforced_and_named() {
        type Mutation = Box<dyn Fn(&mut ModelConfig)>;
        let base = ModelConfig::new(4);
        let cases: Vec<(&str, Mutation)> = vec![
            ("n_actions", Box::new(|c| c.n_actions = 0)),
            ("n_actions", Box::new(|c| c.n_actions = 4097)),
            ("learning_rate", Box::new(|c| c.learning_rate = 0.0)),
            ("learning_rate", Box::new(|c| c.learning_rate = 1.5)),
            ("learning_rate", Box::new(|c| c.learning_rate = f64::NAN)),
            ("discount_factor", Box::new(|c| c.discount_factor = -0.1)),
            ("epsilon", Box::new(|c| c.epsilon = 1.01)),
            ("epsilon_decay", Box::new(|c| c.epsilon_decay = 0.0)),
            ("min_epsilon", Box::new(|c| c.min_epsilon = 2.0)),
            ("initial_q", Box::new(|c| c.initial_q = f64::INFINITY)),
            ("temperature", Box::new(|c| c.temperature = 0.0)),
            (
                "action_names",
                Box::new(|c| c.action_names = Some(vec!["a".into(); 4])),
            ),
            (
                "action_names",
                Box::new(|c| c.action_names = Some(vec!["a".into()])),
            ),
            ("state_bins", Box::new(|c| c.state_bins = Some(vec![]))),
            (
                "state_bins[0]",
                Box::new(|c| {
                    c.state_bins = Some(vec![Bin {
                        low: 1.0,
                        high: 1.0,
                        bins: 3,
                    }])
                }),
            ),
            (
                "state_bins[0].bins",
                Box::new(|c| {
                    c.state_bins = Some(vec![Bin {
                        low: 0.0,
                        high: 1.0,
                        bins: 0,
                    }])
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut c = base.clone();
            mutate(&mut c);
            assert_eq!(field_of(c.validate()), field);
        }
        let mut edge = base.clone();
        edge.learning_rate = 1.0;
        edge.discount_factor = 0.0;
        edge.epsilon = 0.0;
        edge.n_actions = 4096;
        edge.validate().unwrap();
    }

    #[test]
    fn bins_clamp_out_of_range_values() {
        let b = Bin {
            low: 0.0,
            high: 1.0,
            bins: 4,
        };
        assert_eq!(b.index(-5.0), 0);
        assert_eq!(b.index(0.0), 0);
        assert_eq!(b.index(0.26), 1);
        assert_eq!(b.index(0.99), 3);
        assert_eq!(b.index(1.0), 3);
        assert_eq!(b.index(7.0), 3);
    }

    #[test]
    fn enum_names_parse_and_print() {
        for a in [
            Algorithm::QLearning,
            Algorithm::Sarsa,
            Algorithm::ExpectedSarsa,
            Algorithm::DoubleQLearning,
        ] {
            assert_eq!(a.as_str().parse::<Algorithm>().unwrap(), a);
        }
        assert!("qlearning".parse::<Algorithm>().is_err());
        assert_eq!(
            "softmax".parse::<Exploration>().unwrap(),
            Exploration::Softmax
        );
    }
}
