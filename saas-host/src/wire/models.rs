//! Models: creation and patch bodies (with the engine's configuration they
//! ask for) and the model as the API shows it.

use qlearn_core::limits::{
    MAX_ACTIONS, MAX_ACTION_NAME_CHARS, MAX_BINS, MAX_REWARD, MAX_STATE_DIMS,
};
use qlearn_core::store::{ConfigPatch, ModelInfo};
use qlearn_core::tenancy::rfc3339;
use qlearn_core::{Algorithm, Bin, Exploration, ModelConfig, Stats};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use super::DecisionsSetting;

/// Deserializes a field that may be absent (outer `None`), `null`
/// (`Some(None)`) or a value: for PATCH fields that can be cleared.
fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// An integer schema of `1..=max`, described.
fn count_schema(max: f64, what: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1.0))
        .maximum(Some(max))
        .description(Some(format!("Number of {what}, 1 to {max}")))
}

/// The schema of `n_actions`: 1 to [`MAX_ACTIONS`].
fn n_actions_schema() -> impl Into<RefOr<Schema>> {
    count_schema(MAX_ACTIONS as f64, "actions")
}

/// The schema of a dimension's `bins`: 1 to [`MAX_BINS`].
fn bins_schema() -> impl Into<RefOr<Schema>> {
    count_schema(f64::from(MAX_BINS), "bins")
}

/// Every `algorithm` the API accepts (the engine's wire names).
pub const ALGORITHMS: [&str; 4] = ["q_learning", "sarsa", "expected_sarsa", "double_q_learning"];

/// Every `exploration` the API accepts.
pub const EXPLORATIONS: [&str; 2] = ["epsilon_greedy", "softmax"];

fn opt_n_actions_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(count_schema(MAX_ACTIONS as f64, "actions"))
}

fn opt_name_schema() -> impl Into<RefOr<Schema>> {
    super::or_null(super::name_schema())
}

/// `action_names`: one unique name of 1 to [`MAX_ACTION_NAME_CHARS`]
/// characters per action (as many as `n_actions`), or `null`.
fn action_names_schema() -> impl Into<RefOr<Schema>> {
    super::or_null(
        ArrayBuilder::new()
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(MAX_ACTION_NAME_CHARS)),
            )
            .min_items(Some(1))
            .max_items(Some(MAX_ACTIONS))
            .unique_items(true)
            .description(Some(format!(
                "One unique name of 1 to {MAX_ACTION_NAME_CHARS} characters per action \
                 (exactly n_actions of them)"
            ))),
    )
}

/// A number in (0, 1] (learning rate, epsilon decay), or `null`.
pub(super) fn open_unit_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .exclusive_minimum(Some(0.0))
            .maximum(Some(1.0))
            .description(Some("In (0, 1]")),
    )
}

/// A number in [0, 1] (discount, epsilon, its floor), or `null`.
pub(super) fn unit_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(super::number_schema(0.0, 1.0, "In [0, 1]"))
}

pub(super) fn initial_q_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(super::number_schema(
        -MAX_REWARD,
        MAX_REWARD,
        "Q-value of unseen pairs, at most 1e12 in magnitude",
    ))
}

pub(super) fn temperature_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .exclusive_minimum(Some(0.0))
            .maximum(Some(f64::MAX))
            .description(Some("Softmax temperature, a finite number > 0")),
    )
}

pub(super) fn algorithm_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(super::enum_schema(&ALGORITHMS, "The learning rule"))
}

pub(super) fn exploration_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(super::enum_schema(
        &EXPLORATIONS,
        "The exploration strategy",
    ))
}

pub(super) fn seed_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0usize))
            .maximum(Some(u64::MAX as usize))
            .description(Some("Seed for reproducible exploration, or null")),
    )
}

/// `state_bins`: 1 to [`MAX_STATE_DIMS`] dimensions (each `low < high`), or `null`.
fn state_bins_schema() -> impl Into<RefOr<Schema>> {
    super::or_null(
        ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name("BinIn"))
            .min_items(Some(1))
            .max_items(Some(MAX_STATE_DIMS))
            .description(Some(format!(
                "Per-dimension discretization of array states, 1 to {MAX_STATE_DIMS} \
                 dimensions, each with finite low < high"
            ))),
    )
}

fn finite_schema() -> impl Into<RefOr<Schema>> {
    super::number_schema(-f64::MAX, f64::MAX, "A finite number")
}

/// One dimension of `state_bins`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct BinIn {
    /// Lower edge of the first bin.
    #[schema(schema_with = finite_schema)]
    pub low: f64,
    /// Upper edge of the last bin (greater than `low`).
    #[schema(schema_with = finite_schema)]
    pub high: f64,
    /// Number of bins, 1 to [`MAX_BINS`].
    #[schema(schema_with = bins_schema)]
    pub bins: u32,
}

impl From<BinIn> for Bin {
    fn from(b: BinIn) -> Self {
        Bin {
            low: b.low,
            high: b.high,
            bins: b.bins,
        }
    }
}

impl From<&Bin> for BinIn {
    fn from(b: &Bin) -> Self {
        BinIn {
            low: b.low,
            high: b.high,
            bins: b.bins,
        }
    }
}

/// `POST /models` body: a name and the engine's fields (defaults as in the SPEC).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    /// Display name, 1 to [`MAX_NAME_CHARS`](super::MAX_NAME_CHARS) characters.
    #[schema(schema_with = super::name_schema)]
    pub name: String,
    /// Number of actions, 1 to [`MAX_ACTIONS`].
    #[schema(schema_with = n_actions_schema)]
    pub n_actions: usize,
    /// Optional unique names, one per action.
    #[serde(default)]
    #[schema(schema_with = action_names_schema)]
    pub action_names: Option<Vec<String>>,
    /// α in (0, 1]; default 0.1.
    #[schema(schema_with = open_unit_schema)]
    pub learning_rate: Option<f64>,
    /// γ in [0, 1]; default 0.95.
    #[schema(schema_with = unit_schema)]
    pub discount_factor: Option<f64>,
    /// Initial exploration rate in [0, 1]; default 0.1.
    #[schema(schema_with = unit_schema)]
    pub epsilon: Option<f64>,
    /// Epsilon factor per episode end, in (0, 1]; default 1.0 (no decay).
    #[schema(schema_with = open_unit_schema)]
    pub epsilon_decay: Option<f64>,
    /// Epsilon floor in [0, 1]; default 0.01.
    #[schema(schema_with = unit_schema)]
    pub min_epsilon: Option<f64>,
    /// Q-value of unseen pairs; default 0.
    #[schema(schema_with = initial_q_schema)]
    pub initial_q: Option<f64>,
    /// `q_learning` (default), `sarsa`, `expected_sarsa` or `double_q_learning`.
    #[schema(schema_with = algorithm_schema)]
    pub algorithm: Option<Algorithm>,
    /// `epsilon_greedy` (default) or `softmax`.
    #[schema(schema_with = exploration_schema)]
    pub exploration: Option<Exploration>,
    /// Softmax temperature > 0; default 1.
    #[schema(schema_with = temperature_schema)]
    pub temperature: Option<f64>,
    /// Seed for reproducible exploration.
    #[schema(schema_with = seed_schema)]
    pub seed: Option<u64>,
    /// Per-dimension discretization of array states.
    #[schema(schema_with = state_bins_schema)]
    pub state_bins: Option<Vec<BinIn>>,
}

impl CreateModel {
    /// The engine configuration this body asks for (validated by the core).
    pub fn config(&self) -> ModelConfig {
        let mut c = ModelConfig::new(self.n_actions);
        c.action_names = self.action_names.clone();
        set(&mut c.learning_rate, self.learning_rate);
        set(&mut c.discount_factor, self.discount_factor);
        set(&mut c.epsilon, self.epsilon);
        set(&mut c.epsilon_decay, self.epsilon_decay);
        set(&mut c.min_epsilon, self.min_epsilon);
        set(&mut c.initial_q, self.initial_q);
        set(&mut c.algorithm, self.algorithm);
        set(&mut c.exploration, self.exploration);
        set(&mut c.temperature, self.temperature);
        c.seed = self.seed;
        c.state_bins = self
            .state_bins
            .as_ref()
            .map(|b| b.iter().copied().map(Bin::from).collect());
        c
    }
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

/// `PATCH /models/{id}` body: any of the name and hyperparameters.
/// `n_actions` and `state_bins` cannot change (422 if they differ).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PatchModel {
    /// New name.
    #[schema(schema_with = opt_name_schema)]
    pub name: Option<String>,
    /// Must equal the current value.
    #[schema(schema_with = opt_n_actions_schema)]
    pub n_actions: Option<usize>,
    /// New action names (`null` removes them).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = action_names_schema)]
    pub action_names: Option<Option<Vec<String>>>,
    /// α in (0, 1].
    #[schema(schema_with = open_unit_schema)]
    pub learning_rate: Option<f64>,
    /// γ in [0, 1].
    #[schema(schema_with = unit_schema)]
    pub discount_factor: Option<f64>,
    /// Exploration rate in [0, 1]; also resets the current epsilon.
    #[schema(schema_with = unit_schema)]
    pub epsilon: Option<f64>,
    /// In (0, 1].
    #[schema(schema_with = open_unit_schema)]
    pub epsilon_decay: Option<f64>,
    /// In [0, 1].
    #[schema(schema_with = unit_schema)]
    pub min_epsilon: Option<f64>,
    /// Q-value of unseen pairs.
    #[schema(schema_with = initial_q_schema)]
    pub initial_q: Option<f64>,
    /// The learning rule.
    #[schema(schema_with = algorithm_schema)]
    pub algorithm: Option<Algorithm>,
    /// The exploration strategy.
    #[schema(schema_with = exploration_schema)]
    pub exploration: Option<Exploration>,
    /// Softmax temperature.
    #[schema(schema_with = temperature_schema)]
    pub temperature: Option<f64>,
    /// New seed (`null` removes it).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = seed_schema)]
    pub seed: Option<Option<u64>>,
    /// Must equal the current value.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = state_bins_schema)]
    pub state_bins: Option<Option<Vec<BinIn>>>,
    /// Log decisions and learn from delayed rewards with this setting;
    /// `null` turns logging off and discards the model's decision log.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<DecisionsSetting>)]
    pub decisions: Option<Option<DecisionsSetting>>,
}

impl PatchModel {
    /// The configuration fields this patch changes (`None`: only the name
    /// or the decisions setting), for the store to apply under its lock.
    pub fn config_patch(&self) -> Option<ConfigPatch> {
        let p = ConfigPatch {
            n_actions: self.n_actions,
            action_names: self.action_names.clone(),
            learning_rate: self.learning_rate,
            discount_factor: self.discount_factor,
            epsilon: self.epsilon,
            epsilon_decay: self.epsilon_decay,
            min_epsilon: self.min_epsilon,
            initial_q: self.initial_q,
            algorithm: self.algorithm,
            exploration: self.exploration,
            temperature: self.temperature,
            seed: self.seed,
            state_bins: self.state_bins.as_ref().map(|b| {
                b.as_ref()
                    .map(|b| b.iter().copied().map(Bin::from).collect())
            }),
        };
        (!p.is_empty()).then_some(p)
    }
}

/// A model's statistics.
#[derive(Serialize, ToSchema)]
pub struct StatsOut {
    /// Predictions served.
    pub predictions: u64,
    /// Updates applied.
    pub updates: u64,
    /// Episodes ended.
    pub episodes: u64,
    /// Distinct states stored.
    pub states: u64,
    /// Current exploration rate.
    pub epsilon: f64,
    /// Mean reward over all updates.
    pub mean_reward: f64,
    /// Returns of the most recent episodes, oldest first (learning curve).
    pub recent_returns: Vec<f64>,
}

impl From<Stats> for StatsOut {
    fn from(s: Stats) -> Self {
        StatsOut {
            predictions: s.predictions,
            updates: s.updates,
            episodes: s.episodes,
            states: s.states,
            epsilon: s.epsilon,
            mean_reward: s.mean_reward,
            recent_returns: s.recent_returns,
        }
    }
}

/// A model: metadata, hyperparameters and statistics.
#[derive(Serialize, ToSchema)]
pub struct ModelOut {
    /// Opaque id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Number of actions.
    pub n_actions: usize,
    /// Action names, if any.
    pub action_names: Option<Vec<String>>,
    /// α.
    pub learning_rate: f64,
    /// γ.
    pub discount_factor: f64,
    /// Configured initial epsilon (the current one is in `stats`).
    pub epsilon: f64,
    /// Epsilon decay factor.
    pub epsilon_decay: f64,
    /// Epsilon floor.
    pub min_epsilon: f64,
    /// Q-value of unseen pairs.
    pub initial_q: f64,
    /// The learning rule.
    #[schema(value_type = String)]
    pub algorithm: Algorithm,
    /// The exploration strategy.
    #[schema(value_type = String)]
    pub exploration: Exploration,
    /// Softmax temperature.
    pub temperature: f64,
    /// Exploration seed.
    pub seed: Option<u64>,
    /// Discretization of array states.
    pub state_bins: Option<Vec<BinIn>>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Statistics.
    pub stats: StatsOut,
    /// The decisions setting (`null`: the model logs no decisions).
    pub decisions: Option<DecisionsSetting>,
    /// The decision log's counts: decisions, rewards, pending, late,
    /// defaulted and applied (`null`: the model logs no decisions).
    pub decision_stats: Option<super::DecisionStatsOut>,
    /// Why the model is read-only on the owner's plan (after a downgrade:
    /// it answers predictions and exports, keeps every Q-value, and learns
    /// again once changed within the plan); absent when it is not (listed
    /// by `GET /models` and `GET /dashboard`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<String>,
}

impl ModelOut {
    /// The owner's `models` (oldest first) with each read-only one's reason
    /// on a plan with `limits` ([`qlearn_core::store::read_only_models`]).
    pub fn list(
        models: Vec<ModelInfo>,
        limits: &qlearn_core::tenancy::TierLimits,
    ) -> Vec<ModelOut> {
        let mut read_only = qlearn_core::store::read_only_models(&models, limits).into_iter();
        let mut next = read_only.next();
        models
            .into_iter()
            .map(|m| {
                let mut out = ModelOut::from(m);
                if next.as_ref().is_some_and(|(id, _)| *id == out.id) {
                    out.read_only = next.take().map(|(_, r)| r);
                    next = read_only.next();
                }
                out
            })
            .collect()
    }
}

impl From<ModelInfo> for ModelOut {
    fn from(m: ModelInfo) -> Self {
        let c = m.config;
        ModelOut {
            id: m.id,
            name: m.name,
            n_actions: c.n_actions,
            action_names: c.action_names,
            learning_rate: c.learning_rate,
            discount_factor: c.discount_factor,
            epsilon: c.epsilon,
            epsilon_decay: c.epsilon_decay,
            min_epsilon: c.min_epsilon,
            initial_q: c.initial_q,
            algorithm: c.algorithm,
            exploration: c.exploration,
            temperature: c.temperature,
            seed: c.seed,
            state_bins: c
                .state_bins
                .as_ref()
                .map(|b| b.iter().map(BinIn::from).collect()),
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
            stats: m.stats.into(),
            decisions: m.decisions.as_ref().map(DecisionsSetting::from),
            decision_stats: m.decision_stats.map(Into::into),
            read_only: None,
        }
    }
}
