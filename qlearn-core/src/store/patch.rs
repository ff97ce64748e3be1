//! What a change of a model ([`Store::update_model`](super::Store::update_model))
//! carries: a partial configuration ([`ConfigPatch`]) that the store applies
//! to the model's current configuration inside its lock or transaction, so
//! that concurrent changes of different fields all land (a caller never
//! reads, edits and writes back a whole configuration).

use std::sync::Arc;

use crate::config::{Algorithm, Bin, Exploration, ModelConfig};
use crate::decisions::DecisionsConfig;
use crate::error::Result;

/// Changes to a model's metadata ([`Store::update_model`](super::Store::update_model)).
#[derive(Clone, Default)]
pub struct ModelPatch {
    /// A new name.
    pub name: Option<String>,
    /// Configuration fields to change, applied to the configuration current
    /// under the store's lock (validated by [`crate::Learner::reconfigure`]).
    pub config: Option<ConfigPatch>,
    /// A new decisions setting: `Some(None)` turns logging off and
    /// discards the model's decision log; `Some(Some(c))` turns it on or
    /// changes it (open windows keep their deadline).
    pub decisions: Option<Option<DecisionsConfig>>,
    /// Called under the lock, before anything changes, when the new
    /// configuration changes the table's width (switching to or from double
    /// Q-learning rewrites every row); an error refuses the whole patch.
    /// The host charges such a change to the caller's bulk bucket here.
    pub on_reshape: Option<Arc<dyn Fn() -> Result<()> + Send + Sync>>,
}

impl std::fmt::Debug for ModelPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelPatch")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("decisions", &self.decisions)
            .field("on_reshape", &self.on_reshape.is_some())
            .finish()
    }
}

impl ModelPatch {
    /// Runs [`ModelPatch::on_reshape`], if any (the stores call it when
    /// [`crate::Learner::reconfigure`] reports a width change).
    pub(crate) fn reshaping(&self) -> Result<()> {
        self.on_reshape.as_ref().map_or(Ok(()), |f| f())
    }
}

/// A partial [`ModelConfig`]: every `Some` field replaces the current value,
/// every `None` keeps it. `Option<Option<_>>` fields can also clear a value
/// (`Some(None)`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigPatch {
    /// Must equal the current value (it cannot change).
    pub n_actions: Option<usize>,
    /// New action names (`Some(None)` removes them).
    pub action_names: Option<Option<Vec<String>>>,
    /// α.
    pub learning_rate: Option<f64>,
    /// γ.
    pub discount_factor: Option<f64>,
    /// Exploration rate (also resets the current epsilon).
    pub epsilon: Option<f64>,
    /// Epsilon decay factor.
    pub epsilon_decay: Option<f64>,
    /// Epsilon floor.
    pub min_epsilon: Option<f64>,
    /// Q-value of unseen pairs.
    pub initial_q: Option<f64>,
    /// The learning rule.
    pub algorithm: Option<Algorithm>,
    /// The exploration strategy.
    pub exploration: Option<Exploration>,
    /// Softmax temperature.
    pub temperature: Option<f64>,
    /// New seed (`Some(None)` removes it).
    pub seed: Option<Option<u64>>,
    /// Must equal the current value (it cannot change).
    pub state_bins: Option<Option<Vec<Bin>>>,
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

impl ConfigPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == ConfigPatch::default()
    }

    /// `current` with this patch applied (not validated: the store's
    /// [`crate::Learner::reconfigure`] does that).
    pub fn apply(&self, current: &ModelConfig) -> ModelConfig {
        let mut c = current.clone();
        let p = self.clone();
        set(&mut c.n_actions, p.n_actions);
        set(&mut c.action_names, p.action_names);
        set(&mut c.learning_rate, p.learning_rate);
        set(&mut c.discount_factor, p.discount_factor);
        set(&mut c.epsilon, p.epsilon);
        set(&mut c.epsilon_decay, p.epsilon_decay);
        set(&mut c.min_epsilon, p.min_epsilon);
        set(&mut c.initial_q, p.initial_q);
        set(&mut c.algorithm, p.algorithm);
        set(&mut c.exploration, p.exploration);
        set(&mut c.temperature, p.temperature);
        set(&mut c.seed, p.seed);
        set(&mut c.state_bins, p.state_bins);
        c
    }
}

impl From<ModelConfig> for ConfigPatch {
    /// A patch replacing every field with `c`'s.
    fn from(c: ModelConfig) -> Self {
        ConfigPatch {
            n_actions: Some(c.n_actions),
            action_names: Some(c.action_names),
            learning_rate: Some(c.learning_rate),
            discount_factor: Some(c.discount_factor),
            epsilon: Some(c.epsilon),
            epsilon_decay: Some(c.epsilon_decay),
            min_epsilon: Some(c.min_epsilon),
            initial_q: Some(c.initial_q),
            algorithm: Some(c.algorithm),
            exploration: Some(c.exploration),
            temperature: Some(c.temperature),
            seed: Some(c.seed),
            state_bins: Some(c.state_bins),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_changes_only_its_fields() {
        let mut base = ModelConfig::new(3);
        base.seed = Some(7);
        let p = ConfigPatch {
            learning_rate: Some(0.5),
            seed: Some(None),
            ..ConfigPatch::default()
        };
        let c = p.apply(&base);
        assert_eq!(c.learning_rate, 0.5);
        assert_eq!(c.seed, None);
        assert_eq!(c.discount_factor, base.discount_factor);
        assert!(ConfigPatch::default().is_empty() && !p.is_empty());
        assert_eq!(ConfigPatch::from(c.clone()).apply(&base), c);
    }
}
