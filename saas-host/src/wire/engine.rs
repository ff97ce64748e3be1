//! Engine calls: predict, update and batch bodies and answers, the status
//! page of a Q-table and the live `update` event.

use qlearn_core::decisions::Decide;
use qlearn_core::limits::{MAX_BATCH, MAX_REWARD};
use qlearn_core::{Experience, State};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::ToSchema;

use super::{state_schema, ModelOut, StatsOut};

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
    #[schema(schema_with = super::action_list_schema)]
    pub allowed_actions: Option<Vec<usize>>,
    /// On a model that logs decisions: the client's id for this decision,
    /// an idempotency key (a retry returns the logged decision and is
    /// metered once; the same id with another state, episode or
    /// `baseline_action` is 409).
    #[schema(schema_with = super::optional_client_id_schema)]
    pub decision_id: Option<String>,
    /// On a model that logs decisions: the episode the decision belongs to
    /// (client-chosen, scoped to the model); the answer then has `step`.
    #[schema(schema_with = super::optional_client_id_schema)]
    pub episode_id: Option<String>,
    /// On a model that logs decisions: the action the customer's existing
    /// rule would have taken (an action index below the model's action
    /// count), recorded with the decision for an evaluation's `baseline`
    /// policy. One out of range, or any on a model that logs no decisions,
    /// is 422 `invalid_field` with `field: "baseline_action"`.
    #[schema(schema_with = optional_action_schema)]
    pub baseline_action: Option<usize>,
}

impl PredictIn {
    /// The engine's request (borrowing the body): one place that maps the
    /// wire fields, for the nonblocking and the blocking path alike.
    pub fn decide(&self) -> Decide<'_> {
        Decide {
            state: self.state.as_ref(),
            allowed_actions: self.allowed_actions.as_deref(),
            explore: self.explore,
            decision_id: self.decision_id.as_deref(),
            episode_id: self.episode_id.as_deref(),
            baseline_action: self.baseline_action,
        }
    }
}

/// An action index or `null`.
fn optional_action_schema() -> impl Into<RefOr<Schema>> {
    super::or_null(super::action_schema())
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
    /// On a model that logs decisions: the decision's id, for `/rewards`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// On a model that logs decisions: the exact probability with which the
    /// behaviour policy chose `action`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// With an `episode_id`: the decision's step in the episode, from 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

/// `POST /predict/probabilities` body.
#[derive(Deserialize, ToSchema)]
pub struct ProbabilitiesIn {
    /// The model.
    pub model_id: String,
    /// The state.
    #[schema(schema_with = state_schema)]
    pub state: State,
    /// Restrict the policy to these action indices.
    #[schema(schema_with = super::action_list_schema)]
    pub allowed_actions: Option<Vec<usize>>,
    /// With exploration (epsilon-greedy or softmax, as `predict` with
    /// `explore: true`) or greedy; default true.
    #[serde(default = "yes")]
    pub explore: bool,
}

/// `POST /predict/probabilities` response.
#[derive(Serialize, ToSchema)]
pub struct ProbabilitiesOut {
    /// The probability with which `predict` (same state, allowed actions
    /// and `explore`) would choose each action: `n_actions` numbers summing
    /// to 1, 0 for a disallowed action.
    pub probabilities: Vec<f64>,
}

/// The schema of a reward: a number of magnitude at most [`MAX_REWARD`].
fn reward_schema() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
        .minimum(Some(-MAX_REWARD))
        .maximum(Some(MAX_REWARD))
        .description(Some(format!(
            "The reward observed: finite, at most {MAX_REWARD:e} in magnitude"
        )))
}

/// The schema of `next_action`: an action index or `null`.
fn next_action_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(super::action_schema())
}

/// Declares a body made of one experience's fields, written once here for
/// both the items of `POST /update/batch` and `POST /update` (which adds
/// `model_id` before them and can be split into the id and an
/// [`ExperienceIn`]). A macro rather than `#[serde(flatten)]`: flattening
/// buffers every field before parsing it, on the hottest route.
macro_rules! experience_body {
    ($(#[$doc:meta])* $name:ident $(, $model_id:ident)?) => {
        $(#[$doc])*
        #[derive(Deserialize, ToSchema)]
        pub struct $name {
            $(
                /// The model.
                pub $model_id: String,
            )?
            /// The state the action was taken in.
            #[schema(schema_with = state_schema)]
            pub state: State,
            /// The action taken.
            #[schema(schema_with = super::action_schema)]
            pub action: usize,
            /// The reward observed: finite, at most [`MAX_REWARD`] in magnitude.
            #[schema(schema_with = reward_schema)]
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
            #[schema(schema_with = next_action_schema)]
            pub next_action: Option<usize>,
            /// Actions allowed in `next_state`.
            #[schema(schema_with = super::action_list_schema)]
            pub next_allowed_actions: Option<Vec<usize>>,
        }

        $(
            impl $name {
                /// The model id, and the experience.
                pub fn split(self) -> (String, ExperienceIn) {
                    let experience = ExperienceIn {
                        state: self.state,
                        action: self.action,
                        reward: self.reward,
                        next_state: self.next_state,
                        done: self.done,
                        truncated: self.truncated,
                        next_action: self.next_action,
                        next_allowed_actions: self.next_allowed_actions,
                    };
                    (self.$model_id, experience)
                }
            }
        )?
    };
}

experience_body!(
    /// One experience of `POST /update/batch`.
    ExperienceIn
);

experience_body!(
    /// `POST /update` body.
    UpdateIn,
    model_id
);

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

/// The schema of a batch's `experiences`: 1 to [`MAX_BATCH`] of them.
fn experiences_schema() -> impl Into<RefOr<Schema>> {
    ArrayBuilder::new()
        .items(Ref::from_schema_name("ExperienceIn"))
        .min_items(Some(1))
        .max_items(Some(MAX_BATCH))
        .description(Some(format!(
            "1 to {MAX_BATCH} experiences, applied in order, all or nothing"
        )))
}

/// `POST /update/batch` body.
#[derive(Deserialize, ToSchema)]
pub struct BatchIn {
    /// The model.
    pub model_id: String,
    /// 1 to [`MAX_BATCH`] experiences, applied in order, all or nothing.
    #[schema(schema_with = experiences_schema)]
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

/// `POST /models/{id}/events/ticket` answer: open the stream with
/// `GET /models/{id}/events?ticket=<ticket>` before it expires.
#[derive(Serialize, ToSchema)]
pub struct TicketOut {
    /// The ticket: random, single-use, for this model and caller only.
    pub ticket: String,
    /// Seconds until it expires.
    pub expires_in: u64,
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
