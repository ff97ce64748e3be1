//! The JSON wire format: every request and response body of the API, as
//! Rust types. They are the single source of `docs/http-api.md`'s shapes
//! and (through `utoipa::ToSchema`) of `/openapi.json`.
//!
//! Only this module (and the handlers that fill it) knows the JSON shapes;
//! the core's types stay free of HTTP concerns.

use qlearn_core::store::{ApiKey, ModelInfo, User};
use qlearn_core::tenancy::{rfc3339, Role, Tier, TierLimits};
use qlearn_core::{Algorithm, Bin, Experience, Exploration, ModelConfig, State, Stats};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// The schema of a state: a string, an integer, or an array of numbers.
pub fn state_schema() -> impl Into<RefOr<Schema>> {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(1024)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Integer).format(Some(
            utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64),
        )))
        .item(
            ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::Number))
                .min_items(Some(1))
                .max_items(Some(64)),
        )
        .description(Some(
            "A state: a string, an integer, or an array of 1 to 64 finite numbers",
        ))
}

/// Deserializes a field that may be absent (outer `None`), `null`
/// (`Some(None)`) or a value: for PATCH fields that can be cleared.
fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

// ---- errors -----------------------------------------------------------------

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable snake_case code, e.g. `quota_exceeded`.
    pub code: String,
    /// A human sentence; for 422 it names the field.
    pub message: String,
}

// ---- accounts -----------------------------------------------------------------

/// `POST /register` and `POST /login` body.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// Email address (case-insensitive).
    pub email: String,
    /// 8 to 1,024 characters.
    pub password: String,
}

/// A user as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct UserOut {
    /// Opaque id.
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// `free`, `pro` or `enterprise`.
    #[schema(value_type = String, example = "free")]
    pub tier: Tier,
    /// `user` or `admin`.
    #[schema(value_type = String, example = "user")]
    pub role: Role,
    /// Registration time (RFC 3339).
    pub created_at: String,
}

impl From<&User> for UserOut {
    fn from(u: &User) -> Self {
        UserOut {
            id: u.id.clone(),
            email: u.email.clone(),
            tier: u.tier,
            role: u.role,
            created_at: rfc3339(u.created_at),
        }
    }
}

/// A bearer token.
#[derive(Serialize, ToSchema)]
pub struct TokenOut {
    /// The JWT.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// `POST /register` response.
#[derive(Serialize, ToSchema)]
pub struct Registered {
    /// The JWT.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The new user.
    pub user: UserOut,
    /// The model created with the account.
    pub default_model_id: String,
}

/// `POST /me/password` body.
#[derive(Deserialize, ToSchema)]
pub struct PasswordChange {
    /// The password in force.
    pub current_password: String,
    /// The new password, 8 to 1,024 characters.
    pub new_password: String,
}

/// `POST /api-keys` body.
#[derive(Deserialize, ToSchema)]
pub struct NewKey {
    /// A label, 1 to 100 characters.
    pub name: String,
}

/// A created API key: the only time `key` is shown.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// Key id (for `DELETE /api-keys/{id}`).
    pub id: String,
    /// The label.
    pub name: String,
    /// The key; use it as a bearer token. Shown only here.
    pub key: String,
    /// Its first characters, to recognise it in lists.
    pub prefix: String,
    /// Creation time.
    pub created_at: String,
}

/// An API key in a list (never the key itself).
#[derive(Serialize, ToSchema)]
pub struct KeyOut {
    /// Key id.
    pub id: String,
    /// The label.
    pub name: String,
    /// Its first characters.
    pub prefix: String,
    /// Creation time.
    pub created_at: String,
    /// Last use (updated at most once a minute), if ever used.
    pub last_used_at: Option<String>,
}

impl From<&ApiKey> for KeyOut {
    fn from(k: &ApiKey) -> Self {
        KeyOut {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created_at: rfc3339(k.created_at),
            last_used_at: k.last_used_at.map(rfc3339),
        }
    }
}

/// `PATCH /admin/users/{id}` body (admin role only).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUserPatch {
    /// New tier.
    #[schema(value_type = Option<String>, example = "pro")]
    pub tier: Option<Tier>,
    /// New role.
    #[schema(value_type = Option<String>, example = "admin")]
    pub role: Option<Role>,
}

// ---- models -------------------------------------------------------------------

/// One dimension of `state_bins`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct BinIn {
    /// Lower edge of the first bin.
    pub low: f64,
    /// Upper edge of the last bin.
    pub high: f64,
    /// Number of bins (1..=1,000,000).
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
    /// Display name, 1 to 100 characters.
    pub name: String,
    /// Number of actions, 1..=4096.
    pub n_actions: usize,
    /// Optional unique names, one per action.
    #[serde(default)]
    pub action_names: Option<Vec<String>>,
    /// α in (0, 1]; default 0.1.
    pub learning_rate: Option<f64>,
    /// γ in [0, 1]; default 0.95.
    pub discount_factor: Option<f64>,
    /// Initial exploration rate in [0, 1]; default 0.1.
    pub epsilon: Option<f64>,
    /// Epsilon factor per episode end, in (0, 1]; default 1.0 (no decay).
    pub epsilon_decay: Option<f64>,
    /// Epsilon floor in [0, 1]; default 0.01.
    pub min_epsilon: Option<f64>,
    /// Q-value of unseen pairs; default 0.
    pub initial_q: Option<f64>,
    /// `q_learning` (default), `sarsa`, `expected_sarsa` or `double_q_learning`.
    #[schema(value_type = Option<String>, example = "q_learning")]
    pub algorithm: Option<Algorithm>,
    /// `epsilon_greedy` (default) or `softmax`.
    #[schema(value_type = Option<String>, example = "epsilon_greedy")]
    pub exploration: Option<Exploration>,
    /// Softmax temperature > 0; default 1.
    pub temperature: Option<f64>,
    /// Seed for reproducible exploration.
    pub seed: Option<u64>,
    /// Per-dimension discretization of array states.
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
    pub name: Option<String>,
    /// Must equal the current value.
    pub n_actions: Option<usize>,
    /// New action names (`null` removes them).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<String>>)]
    pub action_names: Option<Option<Vec<String>>>,
    /// α in (0, 1].
    pub learning_rate: Option<f64>,
    /// γ in [0, 1].
    pub discount_factor: Option<f64>,
    /// Exploration rate in [0, 1]; also resets the current epsilon.
    pub epsilon: Option<f64>,
    /// In (0, 1].
    pub epsilon_decay: Option<f64>,
    /// In [0, 1].
    pub min_epsilon: Option<f64>,
    /// Q-value of unseen pairs.
    pub initial_q: Option<f64>,
    /// The learning rule.
    #[schema(value_type = Option<String>)]
    pub algorithm: Option<Algorithm>,
    /// The exploration strategy.
    #[schema(value_type = Option<String>)]
    pub exploration: Option<Exploration>,
    /// Softmax temperature.
    pub temperature: Option<f64>,
    /// New seed (`null` removes it).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u64>)]
    pub seed: Option<Option<u64>>,
    /// Must equal the current value.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<BinIn>>)]
    pub state_bins: Option<Option<Vec<BinIn>>>,
}

impl PatchModel {
    /// Whether the patch changes the configuration (not just the name).
    pub fn touches_config(&self) -> bool {
        self.n_actions.is_some()
            || self.action_names.is_some()
            || self.learning_rate.is_some()
            || self.discount_factor.is_some()
            || self.epsilon.is_some()
            || self.epsilon_decay.is_some()
            || self.min_epsilon.is_some()
            || self.initial_q.is_some()
            || self.algorithm.is_some()
            || self.exploration.is_some()
            || self.temperature.is_some()
            || self.seed.is_some()
            || self.state_bins.is_some()
    }

    /// `current` with this patch applied.
    pub fn apply(&self, current: &ModelConfig) -> ModelConfig {
        let mut c = current.clone();
        set(&mut c.n_actions, self.n_actions);
        if let Some(n) = &self.action_names {
            c.action_names = n.clone();
        }
        set(&mut c.learning_rate, self.learning_rate);
        set(&mut c.discount_factor, self.discount_factor);
        set(&mut c.epsilon, self.epsilon);
        set(&mut c.epsilon_decay, self.epsilon_decay);
        set(&mut c.min_epsilon, self.min_epsilon);
        set(&mut c.initial_q, self.initial_q);
        set(&mut c.algorithm, self.algorithm);
        set(&mut c.exploration, self.exploration);
        set(&mut c.temperature, self.temperature);
        if let Some(s) = self.seed {
            c.seed = s;
        }
        if let Some(b) = &self.state_bins {
            c.state_bins = b
                .as_ref()
                .map(|b| b.iter().copied().map(Bin::from).collect());
        }
        c
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
        }
    }
}

// ---- engine calls -------------------------------------------------------------

fn yes() -> bool {
    true
}

/// `POST /predict` body.
#[derive(Deserialize, ToSchema)]
pub struct PredictIn {
    /// The model.
    pub model_id: String,
    /// The state.
    #[schema(schema_with = state_schema)]
    pub state: State,
    /// Explore (epsilon-greedy or softmax) or act greedily; default true.
    #[serde(default = "yes")]
    pub explore: bool,
    /// Restrict the choice to these action indices.
    pub allowed_actions: Option<Vec<usize>>,
}

/// `POST /predict` response.
#[derive(Serialize, ToSchema)]
pub struct PredictOut<'a> {
    /// Chosen action index.
    pub action: usize,
    /// Its name, if the model names actions.
    pub action_name: Option<&'a str>,
    /// The state's Q-values.
    pub q_values: Vec<f64>,
    /// Whether the choice was exploratory.
    pub explored: bool,
    /// Epsilon in force.
    pub epsilon: f64,
}

/// One experience of `POST /update/batch`.
#[derive(Deserialize, ToSchema)]
pub struct ExperienceIn {
    /// The state the action was taken in.
    #[schema(schema_with = state_schema)]
    pub state: State,
    /// The action taken.
    pub action: usize,
    /// The reward observed (finite).
    pub reward: f64,
    /// The state reached.
    #[schema(schema_with = state_schema)]
    pub next_state: State,
    /// The episode terminated (no bootstrap).
    #[serde(default)]
    pub done: bool,
    /// The episode was cut short (still bootstraps).
    #[serde(default)]
    pub truncated: bool,
    /// The action taken in `next_state` (SARSA).
    pub next_action: Option<usize>,
    /// Actions allowed in `next_state`.
    pub next_allowed_actions: Option<Vec<usize>>,
}

/// `POST /update` body.
#[derive(Deserialize, ToSchema)]
pub struct UpdateIn {
    /// The model.
    pub model_id: String,
    /// The state the action was taken in.
    #[schema(schema_with = state_schema)]
    pub state: State,
    /// The action taken.
    pub action: usize,
    /// The reward observed (finite).
    pub reward: f64,
    /// The state reached.
    #[schema(schema_with = state_schema)]
    pub next_state: State,
    /// The episode terminated (no bootstrap).
    #[serde(default)]
    pub done: bool,
    /// The episode was cut short (still bootstraps).
    #[serde(default)]
    pub truncated: bool,
    /// The action taken in `next_state` (SARSA).
    pub next_action: Option<usize>,
    /// Actions allowed in `next_state`.
    pub next_allowed_actions: Option<Vec<usize>>,
}

impl UpdateIn {
    /// The experience (borrowing the states).
    pub fn experience(&self) -> Experience<'_> {
        Experience {
            state: self.state.as_ref(),
            action: self.action,
            reward: self.reward,
            next_state: self.next_state.as_ref(),
            done: self.done,
            truncated: self.truncated,
            next_action: self.next_action,
            next_allowed_actions: self.next_allowed_actions.as_deref(),
        }
    }
}

impl ExperienceIn {
    /// The experience (borrowing the states).
    pub fn experience(&self) -> Experience<'_> {
        Experience {
            state: self.state.as_ref(),
            action: self.action,
            reward: self.reward,
            next_state: self.next_state.as_ref(),
            done: self.done,
            truncated: self.truncated,
            next_action: self.next_action,
            next_allowed_actions: self.next_allowed_actions.as_deref(),
        }
    }
}

/// `POST /update/batch` body.
#[derive(Deserialize, ToSchema)]
pub struct BatchIn {
    /// The model.
    pub model_id: String,
    /// 1 to 1,000 experiences, applied in order, all or nothing.
    pub experiences: Vec<ExperienceIn>,
}

/// The result of one update.
#[derive(Serialize, ToSchema)]
pub struct UpdateOut {
    /// The new Q(s, a).
    pub q_value: f64,
    /// The TD error.
    pub td_error: f64,
    /// Epsilon after the update.
    pub epsilon: f64,
}

/// `POST /update/batch` response.
#[derive(Serialize, ToSchema)]
pub struct BatchOut {
    /// One result per experience, in order.
    pub results: Vec<UpdateOut>,
}

/// One Q-table row.
#[derive(Serialize, ToSchema)]
pub struct RowOut {
    /// The state as the client sent it.
    #[schema(schema_with = state_schema)]
    pub state: State,
    /// Its Q-values.
    pub q_values: Vec<f64>,
}

/// A page of the Q-table.
#[derive(Serialize, ToSchema)]
pub struct QTableOut {
    /// Rows in the whole table.
    pub total: u64,
    /// First row of this page.
    pub offset: u64,
    /// Page size asked for.
    pub limit: u64,
    /// The rows.
    pub rows: Vec<RowOut>,
}

/// `GET /status/{id}` response.
#[derive(Serialize, ToSchema)]
pub struct StatusOut {
    /// The model.
    pub model: ModelOut,
    /// Its statistics (same as `model.stats`).
    pub stats: StatsOut,
    /// A page of its Q-table.
    pub q_table: QTableOut,
}

/// One server-sent `update` event of `GET /models/{id}/events`.
#[derive(Serialize, ToSchema)]
pub struct UpdateEvent {
    /// The updated state.
    #[schema(schema_with = state_schema)]
    pub state: State,
    /// The updated action.
    pub action: usize,
    /// The state's Q-values after the update.
    pub q_values: Vec<f64>,
    /// The new Q(s, a).
    pub q_value: f64,
    /// The TD error.
    pub td_error: f64,
    /// Epsilon after the update.
    pub epsilon: f64,
    /// The model's update count after this update.
    pub updates: u64,
    /// The model's episode count after this update.
    pub episodes: u64,
    /// The finished episode's return, when this update ended one.
    pub episode_return: Option<f64>,
}

// ---- dashboard ----------------------------------------------------------------

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

/// `GET /healthz` response.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
    /// The storage backend.
    pub storage: &'static str,
}
