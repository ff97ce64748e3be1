//! Decisions and delayed rewards (issue 14): a model's `decisions` setting,
//! the bodies and answers of `/rewards`, `/rewards/batch` and
//! `/episodes/end`, and a logged decision as `GET /models/{id}/decisions`
//! lists it and its export writes it (one JSON object per line).

use qlearn_core::decisions::{
    Aggregation, DecisionRecord, DecisionStats, DecisionStatus, DecisionsConfig, EpisodeEnd,
    Outcome, RewardReceipt, RewardStatus, MAX_RETENTION_DAYS, MAX_REWARD_WAIT_SECONDS,
};
use qlearn_core::limits::{MAX_BATCH, MAX_REWARD};
use qlearn_core::store::{EpisodeSummary, RewardIn};
use qlearn_core::tenancy::rfc3339;
use qlearn_core::State;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use super::{state_schema, ErrorDetail};

fn default_wait() -> u64 {
    DecisionsConfig::default().reward_wait_seconds
}

/// The schema of `reward_wait_seconds`: 0 to 30 days.
fn wait_schema() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0.0))
        .maximum(Some(MAX_REWARD_WAIT_SECONDS as f64))
        .description(Some(format!(
            "Seconds after a decision during which its rewards count, 0 to \
             {MAX_REWARD_WAIT_SECONDS} (30 days); default 600"
        )))
}

/// Every `aggregation` the API accepts.
pub const AGGREGATIONS: [&str; 6] = ["sum", "first", "last", "mean", "min", "max"];

/// Every episode `outcome` the API accepts.
pub const OUTCOMES: [&str; 2] = ["terminated", "truncated"];

/// Every episode `status` the episode listing filters by.
pub const EPISODE_STATUSES: [&str; 2] = ["open", "ended"];

/// Every decision `status` a listing filters by.
pub const DECISION_STATUSES: [&str; 4] = ["open", "closed", "applied", "expired"];

fn aggregation_schema() -> impl Into<RefOr<Schema>> {
    super::enum_schema(&AGGREGATIONS, "How several rewards combine; default sum")
}

fn default_reward_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(super::number_schema(
        -MAX_REWARD,
        MAX_REWARD,
        "The reward of a decision whose window closes without any, or null",
    ))
}

fn retention_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1.0))
            .maximum(Some(f64::from(MAX_RETENTION_DAYS)))
            .description(Some(format!(
                "Days a finished decision stays in the log, 1 to {MAX_RETENTION_DAYS} (lowered \
                 to the tier's); null or missing: the tier's"
            ))),
    )
}

fn value_schema() -> impl Into<RefOr<Schema>> {
    super::number_schema(
        -MAX_REWARD,
        MAX_REWARD,
        "The reward: finite, at most 1e12 in magnitude",
    )
}

fn rewards_schema() -> impl Into<RefOr<Schema>> {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name("RewardItem"))
        .min_items(Some(1))
        .max_items(Some(MAX_BATCH))
        .description(Some(format!("1 to {MAX_BATCH} rewards, recorded in order")))
}

fn outcome_schema() -> impl Into<RefOr<Schema>> {
    super::enum_schema(
        &OUTCOMES,
        "terminated (no bootstrap) or truncated (bootstraps from next_state)",
    )
}

fn episode_status_schema() -> impl Into<RefOr<Schema>> {
    super::enum_schema(&EPISODE_STATUSES, "open (going on) or ended")
}

fn ended_outcome_schema() -> impl Into<RefOr<Schema>> {
    super::or_null(outcome_schema())
}

fn next_state_schema() -> impl Into<RefOr<Schema>> {
    super::or_null(super::state_schema())
}

/// A model's `decisions` setting (`null`: the model logs no decisions).
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecisionsSetting {
    /// How long rewards are accepted after a decision, in seconds.
    #[serde(default = "default_wait")]
    #[schema(schema_with = wait_schema)]
    pub reward_wait_seconds: u64,
    /// The reward of a decision whose window closes without any; `null`
    /// (default): such a decision teaches nothing.
    #[serde(default)]
    #[schema(schema_with = default_reward_schema)]
    pub default_reward: Option<f64>,
    /// How several rewards combine: `sum` (default), `first`, `last`,
    /// `mean`, `min` or `max`.
    #[serde(default)]
    #[schema(schema_with = aggregation_schema)]
    pub aggregation: Aggregation,
    /// Days a finished decision stays in the log; missing: the tier's
    /// (free 7, pro 30, enterprise 90), which is also the most it can be
    /// (a larger value is lowered to it).
    #[serde(default)]
    #[schema(schema_with = retention_schema)]
    pub retention_days: Option<u32>,
}

impl DecisionsSetting {
    /// The core setting, the retention capped at the tier's `tier_days`.
    pub fn config(&self, tier_days: u32) -> DecisionsConfig {
        DecisionsConfig {
            reward_wait_seconds: self.reward_wait_seconds,
            default_reward: self.default_reward,
            aggregation: self.aggregation,
            retention_days: self.retention_days.unwrap_or(tier_days).min(tier_days),
        }
    }
}

impl From<&DecisionsConfig> for DecisionsSetting {
    fn from(c: &DecisionsConfig) -> Self {
        DecisionsSetting {
            reward_wait_seconds: c.reward_wait_seconds,
            default_reward: c.default_reward,
            aggregation: c.aggregation,
            retention_days: Some(c.retention_days),
        }
    }
}

/// One reward: `POST /rewards` (with `model_id`) and an item of
/// `POST /rewards/batch`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardItem {
    /// The decision (its `decision_id` from `/predict`). An item out of
    /// the ranges of `POST /rewards` gets its own `invalid_field` error in
    /// the results (the others are recorded).
    pub decision_id: String,
    /// The reward: finite, at most 1e12 in magnitude (or the item's error).
    pub value: f64,
    /// The client's id for this reward: a retry with the same id and value
    /// has no effect (`duplicate`); with another value it is 409.
    pub reward_id: Option<String>,
    /// The last reward of the decision: its window closes at once.
    #[serde(default, rename = "final")]
    pub is_final: bool,
}

impl From<RewardItem> for RewardIn {
    fn from(r: RewardItem) -> Self {
        RewardIn {
            decision_id: r.decision_id,
            value: r.value,
            reward_id: r.reward_id,
            is_final: r.is_final,
        }
    }
}

/// `POST /rewards` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardBody {
    /// The model.
    pub model_id: String,
    /// The decision.
    #[schema(schema_with = super::required_client_id_schema)]
    pub decision_id: String,
    /// The reward: finite, at most 1e12 in magnitude.
    #[schema(schema_with = value_schema)]
    pub value: f64,
    /// The client's id for this reward (idempotency key).
    #[schema(schema_with = super::optional_client_id_schema)]
    pub reward_id: Option<String>,
    /// The last reward of the decision: its window closes at once.
    #[serde(default, rename = "final")]
    pub is_final: bool,
}

impl RewardBody {
    /// The model id and the reward.
    pub fn split(self) -> (String, RewardIn) {
        let r = RewardIn {
            decision_id: self.decision_id,
            value: self.value,
            reward_id: self.reward_id,
            is_final: self.is_final,
        };
        (self.model_id, r)
    }
}

/// `POST /rewards/batch` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardsBatchIn {
    /// The model.
    pub model_id: String,
    /// 1 to 1,000 rewards, recorded in order.
    #[schema(schema_with = rewards_schema)]
    pub rewards: Vec<RewardItem>,
}

/// What a reward did.
#[derive(Serialize, ToSchema)]
pub struct RewardOut {
    /// The decision.
    pub decision_id: String,
    /// `open` (counted, window open), `closed` (counted, window closed, the
    /// transition waits for the episode's next decision or end), `applied`
    /// (learned), `late` (after the window: recorded, not learned, not
    /// metered) or `duplicate` (a repeated `reward_id`: no effect, not
    /// metered).
    #[schema(value_type = String, example = "open")]
    pub status: RewardStatus,
    /// The decision's aggregated reward so far (`null`: none counted).
    pub reward: Option<f64>,
    /// Rewards counted for the decision.
    pub rewards: u32,
    /// When the decision's reward window closes (RFC 3339, UTC).
    pub closes_at: String,
}

impl RewardOut {
    /// The answer for `decision_id`'s receipt.
    pub fn new(decision_id: String, r: &RewardReceipt) -> Self {
        RewardOut {
            decision_id,
            status: r.status,
            reward: r.reward,
            rewards: r.rewards,
            closes_at: rfc3339(r.closes_at_ms.div_euclid(1000)),
        }
    }
}

/// One result of `POST /rewards/batch`: the reward's answer (the fields of
/// [`RewardOut`]), or its `error`.
#[derive(Serialize, ToSchema)]
pub struct RewardResult {
    /// The decision.
    pub decision_id: String,
    /// As in [`RewardOut`]; absent on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub status: Option<RewardStatus>,
    /// As in [`RewardOut`] (`null` also on error).
    pub reward: Option<f64>,
    /// As in [`RewardOut`]; absent on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewards: Option<u32>,
    /// As in [`RewardOut`]; absent on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closes_at: Option<String>,
    /// The error (`not_found` for an unknown or another user's decision,
    /// `conflict` for a reused `reward_id` with another value,
    /// `invalid_field`); absent on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

impl RewardResult {
    /// A reward's answer.
    pub fn ok(r: RewardOut) -> Self {
        RewardResult {
            decision_id: r.decision_id,
            status: Some(r.status),
            reward: r.reward,
            rewards: Some(r.rewards),
            closes_at: Some(r.closes_at),
            error: None,
        }
    }

    /// A reward's error.
    pub fn failed(decision_id: String, error: ErrorDetail) -> Self {
        RewardResult {
            decision_id,
            status: None,
            reward: None,
            rewards: None,
            closes_at: None,
            error: Some(error),
        }
    }
}

/// `POST /rewards/batch` response: one result per reward, in order.
#[derive(Serialize, ToSchema)]
pub struct RewardsBatchOut {
    /// The results.
    pub results: Vec<RewardResult>,
}

/// `POST /episodes/end` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EpisodeEndIn {
    /// The model.
    pub model_id: String,
    /// The episode (as sent with its decisions).
    #[schema(schema_with = super::required_client_id_schema)]
    pub episode_id: String,
    /// `terminated` (a terminal state: no bootstrap) or `truncated` (cut
    /// short: the last step bootstraps from `next_state`).
    #[schema(schema_with = outcome_schema)]
    pub outcome: Outcome,
    /// The state reached after the last decision (required when truncated).
    #[schema(schema_with = next_state_schema)]
    pub next_state: Option<State>,
    /// Actions allowed in `next_state`.
    #[schema(schema_with = super::action_list_schema)]
    pub next_allowed_actions: Option<Vec<usize>>,
}

impl EpisodeEndIn {
    /// The model id, the episode id and the end.
    pub fn split(self) -> (String, String, EpisodeEnd) {
        let end = EpisodeEnd {
            outcome: self.outcome,
            next_state: self.next_state,
            next_allowed_actions: self.next_allowed_actions,
        };
        (self.model_id, self.episode_id, end)
    }
}

/// `POST /episodes/end` response.
#[derive(Serialize, ToSchema)]
pub struct EpisodeEndOut {
    /// The episode.
    pub episode_id: String,
    /// Transitions learned by this end (the last step's, if its reward had
    /// closed; 0 when ending again the same way).
    pub learned: usize,
}

/// A logged decision, as listed and exported.
#[derive(Serialize, ToSchema)]
pub struct DecisionOut {
    /// Its id.
    pub decision_id: String,
    /// Its episode, if any.
    pub episode_id: Option<String>,
    /// Its step in the episode (0 without one).
    pub step: u64,
    /// When it was logged (RFC 3339, UTC).
    pub time: String,
    /// The state.
    #[schema(schema_with = state_schema)]
    pub state: State,
    /// The allowed actions, if restricted.
    pub allowed_actions: Option<Vec<usize>>,
    /// The chosen action.
    pub action: usize,
    /// The probability with which the behaviour policy chose it.
    pub probability: f64,
    /// The reward: the one learned once closed, else the aggregate so far
    /// (`null`: none).
    pub reward: Option<f64>,
    /// `open`, `closed`, `applied` or `expired`.
    #[schema(value_type = String, example = "applied")]
    pub status: DecisionStatus,
    /// Rewards counted.
    pub rewards: u32,
    /// When its reward window closes (RFC 3339, UTC).
    pub closes_at: String,
    /// The position of its transition in the order the model applied
    /// them (1, 2, 3... per model; `null`: not applied): replaying the
    /// applied decisions in this order reproduces the Q-table.
    pub applied_seq: Option<u64>,
    /// The baseline action recorded with it (`null`: none), what an
    /// evaluation's `baseline` policy scores.
    pub baseline_action: Option<usize>,
}

impl DecisionOut {
    /// The record as the API shows it (`aggregation`: the model's).
    pub fn new(r: DecisionRecord, aggregation: Aggregation) -> Self {
        let reward = r.learned_reward.or_else(|| r.reward(aggregation));
        DecisionOut {
            decision_id: r.decision_id,
            episode_id: r.episode_id,
            step: r.step,
            time: rfc3339(r.time_ms.div_euclid(1000)),
            state: r.state,
            allowed_actions: r.allowed_actions,
            action: r.action,
            probability: r.probability,
            reward,
            status: r.status,
            rewards: r.rewards,
            closes_at: rfc3339(r.closes_at_ms.div_euclid(1000)),
            applied_seq: r.applied_seq,
            baseline_action: r.baseline_action,
        }
    }
}

/// The counts of a model's decision log.
#[derive(Serialize, ToSchema)]
pub struct DecisionStatsOut {
    /// Decisions logged (retries not counted).
    pub decisions: u64,
    /// Rewards counted (late ones and duplicates not).
    pub rewards: u64,
    /// Decisions not yet applied or expired.
    pub pending: u64,
    /// Rewards that arrived after their window.
    pub late: u64,
    /// Decisions whose window closed without a reward.
    pub defaulted: u64,
    /// Transitions learned.
    pub applied: u64,
}

impl From<DecisionStats> for DecisionStatsOut {
    fn from(s: DecisionStats) -> Self {
        DecisionStatsOut {
            decisions: s.decisions,
            rewards: s.rewards,
            pending: s.pending,
            late: s.late,
            defaulted: s.defaulted,
            applied: s.applied,
        }
    }
}

/// `GET /models/{id}/decisions` response, oldest first.
#[derive(Serialize, ToSchema)]
pub struct DecisionsOut {
    /// Decisions matching the filter; `null` when the request asked for
    /// no count (`count=false`).
    pub total: Option<u64>,
    /// The page.
    pub decisions: Vec<DecisionOut>,
    /// When the page is full: the `cursor` that asks for the next one (the
    /// decisions after this page's last, in the same order); `null` when
    /// the page is not full.
    pub next: Option<String>,
    /// The log's counts.
    pub stats: DecisionStatsOut,
}

/// One episode of `GET /models/{id}/episodes`.
#[derive(Serialize, ToSchema)]
pub struct EpisodeOut {
    /// The client's episode id.
    pub episode_id: String,
    /// `open` (going on) or `ended`.
    #[schema(schema_with = episode_status_schema)]
    pub status: &'static str,
    /// How it ended (null while open).
    #[schema(schema_with = ended_outcome_schema)]
    pub outcome: Option<Outcome>,
    /// Its decisions (steps) so far.
    pub steps: u64,
    /// The return so far: the sum of the rewards learned from its
    /// decisions (a step is learned once its reward closed and its next
    /// step exists or the episode ended).
    #[serde(rename = "return")]
    pub learned_return: f64,
    /// When its first decision was logged (RFC 3339; null once past the
    /// retention).
    pub started_at: Option<String>,
    /// When its last decision was logged (RFC 3339; null once past the
    /// retention).
    pub last_decision_at: Option<String>,
}

impl From<EpisodeSummary> for EpisodeOut {
    fn from(e: EpisodeSummary) -> Self {
        let at = |ms: Option<i64>| ms.map(|ms| rfc3339(ms.div_euclid(1000)));
        EpisodeOut {
            status: if e.outcome.is_some() { "ended" } else { "open" },
            outcome: e.outcome,
            steps: e.steps,
            learned_return: e.learned_return,
            started_at: at(e.started_ms),
            last_decision_at: at(e.last_ms),
            episode_id: e.episode_id,
        }
    }
}

/// `GET /models/{id}/episodes` response, in episode id order (bytewise).
#[derive(Serialize, ToSchema)]
pub struct EpisodesOut {
    /// The page.
    pub episodes: Vec<EpisodeOut>,
    /// The `after` of the next page (null: this is the last).
    pub next_after: Option<String>,
}

/// The cursor of a position in a decision listing: the decision's time in
/// milliseconds, a dot, and its id in hexadecimal (`1764000000123.642d30`),
/// so that it needs no escaping in a URL.
pub fn listing_cursor(time_ms: i64, decision_id: &str) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{time_ms}.");
    for b in decision_id.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The rule of a `cursor` (the OpenAPI document's pattern): what
/// [`parse_listing_cursor`] takes. The hexadecimal is of a UTF-8 id
/// without a zero byte, which [`listing_cursor`] never writes.
pub const CURSOR_PATTERN: &str = "^-?[0-9]{1,19}[.](?:[1-9a-f][0-9a-f]|0[1-9a-f]){1,512}$";

/// The position a cursor names: any time (past the 64-bit range, its
/// end) and any id without a zero byte (bytes that are not UTF-8 read as
/// U+FFFD), since every such pair is a place in the listing's order; a
/// listing's own cursors ([`listing_cursor`]) come back exactly. `None`
/// for text not of that form.
pub fn parse_listing_cursor(cursor: &str) -> Option<(i64, String)> {
    let (time, hex) = cursor.split_once('.')?;
    let digits = time.strip_prefix('-').unwrap_or(time);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let time_ms = time.parse::<i64>().unwrap_or(if time.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    });
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    if bytes.contains(&0) {
        return None;
    }
    Some((time_ms, String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod cursor_tests {
    use super::{listing_cursor, parse_listing_cursor};

    #[test]
    fn a_cursor_names_its_position_and_nothing_else_parses() {
        let pattern = regex::Regex::new(super::CURSOR_PATTERN).expect("the pattern");
        for (t, id) in [(1_764_000_000_123, "d-42"), (0, "é & = ?"), (-5, "x")] {
            let c = listing_cursor(t, id);
            assert!(pattern.is_match(&c), "{c}");
            assert_eq!(parse_listing_cursor(&c), Some((t, id.to_string())), "{c}");
        }
        // Every text of the pattern is a position.
        for (c, want) in [
            ("1.ff", (1, "\u{fffd}")),
            ("9999999999999999999.64", (i64::MAX, "d")),
            ("-9999999999999999999.64", (i64::MIN, "d")),
        ] {
            assert!(pattern.is_match(c), "{c}");
            assert_eq!(
                parse_listing_cursor(c),
                Some((want.0, want.1.to_string())),
                "{c}"
            );
        }
        for bad in [
            "", ".", "12", "12.", ".64", "x.64", "12.6", "12.zz", "12.00", "12.6400", "1.2.64",
            "+1.64", "-.64",
        ] {
            assert_eq!(parse_listing_cursor(bad), None, "{bad:?}");
            assert!(!pattern.is_match(bad), "{bad:?}");
        }
    }
}
