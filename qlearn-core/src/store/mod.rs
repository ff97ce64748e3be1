//! Storage: the [`Store`] trait every backend implements, and its records.
//!
//! The trait is shaped by what the service does, not a key-value bag: users,
//! API keys, models (configuration, statistics, Q-table rows), metered engine
//! calls and monthly usage. Implementations: [`memory::MemoryStore`]
//! (tests, embedding), `sqlite::SqliteStore` (the embedded default) and
//! `postgres::PgStore` (several server instances sharing one database).
//!
//! # What every implementation must do
//!
//! - **Tenant isolation.** Every model operation takes the owner's user id;
//!   a model of another user is [`Error::NotFound`](crate::Error::NotFound), exactly as an unknown id.
//! - **Metered calls are atomic with their effect.** [`Store::predict`] and
//!   [`Store::update`] first find the model and validate the whole input
//!   (errors change nothing and cost nothing), then in one atomic step debit
//!   the caller's monthly quota (refusing with [`Error::QuotaExceeded`](crate::Error::QuotaExceeded) when
//!   `used + n > limit`, without counting) and apply the engine. A refused
//!   call is never counted; an accepted call is never lost; under any
//!   concurrency (threads, processes sharing the database) no more calls are
//!   granted than the limit.
//! - **Updates are serialisable per model.** N concurrent updates of one model
//!   leave its update count at exactly N and its Q-values equal to those of
//!   some serial order. The Q-learning math is the core's
//!   ([`crate::Learner::update`] over [`crate::QRows`]); a backend never
//!   re-implements it.
//! - **Acknowledged means durable.** When a mutating method returns `Ok`, the
//!   change survives `kill -9` of the process (for persistent backends).
//! - **Errors.** Unique violations are [`Error::Conflict`](crate::Error::Conflict); backend faults are
//!   [`Error::Storage`](crate::Error::Storage) naming the backend. No method panics on any input.
//!
//! All timestamps are Unix seconds (UTC), passed in by the caller so tests
//! control time.

pub mod changes;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod decision_rows;
pub mod decisions;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod due_models;
mod durable;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod encoding;
pub mod eval_retention;
mod evaluations;
pub mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod migrations;
mod owned;
mod patch;
#[cfg(feature = "postgres")]
pub mod postgres;
mod report;
mod rules;
mod settle;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod usage;

pub use crate::tenancy::billing::{
    BillingAccount, BillingAction, BillingEvent, BillingOutcome, BillingParty,
};
pub use changes::{
    Change, ChangeFeed, ChangeSink, SharedStreams, SharedTickets, StreamPlace, TicketGrant,
};
pub use decisions::{
    Decided, DecisionPage, DecisionQuery, EpisodePage, EpisodeQuery, EpisodeSummary, RewardIn,
};
pub use durable::{commit_in_flight, commits_in_flight, Durable};
pub use eval_retention::{EvalFootprint, KEEP_FINISHED_JOBS, PRUNE_JOBS_CHUNK};
pub(crate) use evaluations::sql_claim;
pub use evaluations::{
    check_limits, day_of, end_columns, new_job_id, to_text, Claimed, DecisionKeyset, EvalJob,
    EvalLimits, Evaluations, JobEnd, JobRow, JobStatus, JOB_COLS,
};
pub use owned::OwnedExperience;
pub use patch::{ConfigPatch, ModelPatch};
pub use report::{Report, Touched, Updated};
pub use rules::{now_unix, read_only_models, KEY_TOUCH_INTERVAL_SECS};
pub use usage::{CallKind, Usage, UserUsage};

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::decisions::{Decide, DecisionsConfig, EpisodeEnd, RewardReceipt};
use crate::error::Result;
use crate::model::Learner;
use crate::model::{Experience, Model, Prediction, Stats};
use crate::state::{StateKey, StateRef};
use crate::tenancy::{new_id, BillingMonth, Role, Tier, TierLimits};

/// A registered user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Opaque random id (URL-safe, 128 bits).
    pub id: String,
    /// Normalised (lower-case) email, unique.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Subscription tier.
    pub tier: Tier,
    /// Role (admins may change tiers).
    pub role: Role,
    /// When the user registered.
    pub created_at: i64,
    /// When the password last changed: tokens issued before it are revoked.
    pub password_changed_at: i64,
    /// Set by an operator ([`Store::set_disabled`]): the user cannot log in
    /// and its tokens and API keys do not authenticate; its data is kept.
    #[serde(default)]
    pub disabled: bool,
}

impl User {
    /// The record of a user registering `now`, with a fresh id (every
    /// backend's `create_user`).
    pub(crate) fn register(user: NewUser, now: i64) -> User {
        User {
            id: new_id(),
            email: user.email,
            password_hash: user.password_hash,
            tier: user.tier,
            role: user.role,
            created_at: now,
            password_changed_at: now,
            disabled: false,
        }
    }
}

/// What [`Store::create_user`] needs.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Normalised email.
    pub email: String,
    /// argon2id PHC string (never the password).
    pub password_hash: String,
    /// Starting tier.
    pub tier: Tier,
    /// Starting role.
    pub role: Role,
}

/// What an API key may do. Scopes are ordered: each allows everything the
/// ones before it allow. The host decides which scope each route needs
/// (docs/http-api.md lists them); the store only keeps the key's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    /// Reading: the caller's profile, models, status, events.
    Read,
    /// Reading and using models: predict, update, batch, import, export.
    Engine,
    /// Everything the user can do except admin actions.
    Full,
    /// Everything, admin actions included (for an admin's key only).
    Admin,
}

impl KeyScope {
    /// Every scope, narrowest first.
    pub const ALL: [KeyScope; 4] = [
        KeyScope::Read,
        KeyScope::Engine,
        KeyScope::Full,
        KeyScope::Admin,
    ];

    /// The scope's name (`read`, `engine`, `full`, `admin`), as stored and
    /// as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Read => "read",
            KeyScope::Engine => "engine",
            KeyScope::Full => "full",
            KeyScope::Admin => "admin",
        }
    }

    /// Whether a key of this scope may do what `needed` allows.
    pub fn covers(self, needed: KeyScope) -> bool {
        self >= needed
    }
}

impl std::str::FromStr for KeyScope {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        KeyScope::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                crate::Error::field(
                    "scope",
                    format!("unknown scope {s:?}; use read, engine, full or admin"),
                )
            })
    }
}

impl std::fmt::Display for KeyScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API key's record. The key itself is never stored, only its hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Opaque random id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// The user's label for the key.
    pub name: String,
    /// The first characters of the key, for recognising it in a list.
    pub prefix: String,
    /// When it was created.
    pub created_at: i64,
    /// When it last authenticated a request (written at most once per
    /// [`KEY_TOUCH_INTERVAL_SECS`]).
    pub last_used_at: Option<i64>,
    /// What the key may do.
    pub scope: KeyScope,
    /// When it stops working (`None`: never by itself).
    pub expires_at: Option<i64>,
}

/// What [`Store::create_api_key`] records besides the owner and the time.
#[derive(Clone, Copy, Debug)]
pub struct NewApiKey<'a> {
    /// The user's label.
    pub name: &'a str,
    /// The key's first characters.
    pub prefix: &'a str,
    /// SHA-256 of the key (never the key).
    pub hash: &'a str,
    /// What the key may do.
    pub scope: KeyScope,
    /// When it stops working, if ever.
    pub expires_at: Option<i64>,
}

impl ApiKey {
    /// The record of a key created `now`, with a fresh id, never used.
    pub(crate) fn created(user_id: &str, key: &NewApiKey<'_>, now: i64) -> ApiKey {
        ApiKey {
            id: new_id(),
            user_id: user_id.to_owned(),
            name: key.name.to_owned(),
            prefix: key.prefix.to_owned(),
            created_at: now,
            last_used_at: None,
            scope: key.scope,
            expires_at: key.expires_at,
        }
    }

    /// Whether the key still authenticates its owner `user` at `now`: the
    /// owner is not disabled, the key is not expired, and it was created no
    /// earlier than the owner's last password change.
    /// ([`Store::set_password`] deletes older keys outright; this check also
    /// refuses a key record read before the change, e.g. from a cache.)
    pub fn usable(&self, user: &User, now: i64) -> bool {
        self.user_id == user.id
            && !user.disabled
            && self.created_at >= user.password_changed_at
            && self.expires_at.is_none_or(|e| now < e)
    }
}

/// A model's metadata and statistics (no Q-table).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// Opaque random id.
    pub id: String,
    /// Owner's user id.
    pub owner: String,
    /// Display name.
    pub name: String,
    /// Hyperparameters.
    pub config: ModelConfig,
    /// Counters, epsilon, learning curve.
    pub stats: Stats,
    /// Creation time.
    pub created_at: i64,
    /// Last change of name, configuration or learning.
    pub updated_at: i64,
    /// The decisions setting (`None`: the model logs no decisions).
    pub decisions: Option<DecisionsConfig>,
    /// The decision log's counts (`None`: the model logs no decisions).
    pub decision_stats: Option<crate::decisions::DecisionStats>,
}

impl ModelInfo {
    /// The metadata of model `id`, its configuration and statistics read
    /// from its learner.
    pub(crate) fn of(
        id: String,
        owner: String,
        name: String,
        learner: &Learner,
        created_at: i64,
        updated_at: i64,
    ) -> ModelInfo {
        ModelInfo {
            id,
            owner,
            name,
            config: learner.config().clone(),
            stats: learner.stats(),
            created_at,
            updated_at,
            decisions: None,
            decision_stats: None,
        }
    }
}

/// A page of a Q-table, in the table's stable row order.
#[derive(Clone, Debug, PartialEq)]
pub struct QPage {
    /// Rows in the whole table.
    pub total: u64,
    /// The rows: state key and the Q-values users see.
    pub rows: Vec<(StateKey, Vec<f64>)>,
}

/// Who pays for a metered call, under which limits, and when it happens.
#[derive(Clone, Copy, Debug)]
pub struct Meter<'a> {
    /// The caller's user id; also the owner every model access is checked against.
    pub user_id: &'a str,
    /// The caller's tier limits (monthly quota).
    pub limits: &'a TierLimits,
    /// Now, in Unix seconds: picks the month and day the calls count in.
    pub now: i64,
}

/// The storage contract of qlearn. See the module docs for what every
/// implementation must guarantee. Methods block; async callers run them on a
/// blocking thread.
pub trait Store: Send + Sync + Evaluations {
    /// `memory`, `sqlite` or `postgres`: names the backend in errors and logs.
    fn backend(&self) -> &'static str;

    // ---- settings ---------------------------------------------------------

    /// A server setting (e.g. the generated JWT secret), if set.
    fn setting(&self, key: &str) -> Result<Option<String>>;
    /// Stores `value` under `key` unless a value is already there; returns
    /// the value in force (so concurrent first starts agree on one secret).
    fn set_setting_if_absent(&self, key: &str, value: &str) -> Result<String>;

    // ---- users ------------------------------------------------------------

    /// Creates a user with a fresh id. [`crate::Error::Conflict`] if the email exists.
    fn create_user(&self, user: NewUser, now: i64) -> Result<User>;
    /// Registers a user together with its first model (named `model_name`)
    /// in one atomic write: either both exist afterwards or neither (also
    /// across a crash). [`crate::Error::Conflict`] if the email exists;
    /// [`crate::Error::ModelLimitReached`] when `max_models` allows no
    /// model, and then no user is created either.
    fn register(
        &self,
        user: NewUser,
        model_name: &str,
        model: &Model,
        max_models: Option<u32>,
        now: i64,
    ) -> Result<(User, ModelInfo)>;
    /// Every user, oldest first (operators' listing).
    fn users(&self) -> Result<Vec<User>>;
    /// A user by id.
    fn user(&self, id: &str) -> Result<Option<User>>;
    /// A user by normalised email.
    fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    /// Changes a user's tier. [`crate::Error::NotFound`] for an unknown user.
    fn set_tier(&self, user_id: &str, tier: Tier) -> Result<()>;
    /// Changes a user's role.
    fn set_role(&self, user_id: &str, role: Role) -> Result<()>;
    /// Disables or enables a user ([`User::disabled`]); nothing else of
    /// the user changes. [`crate::Error::NotFound`] for an unknown user.
    fn set_disabled(&self, user_id: &str, disabled: bool) -> Result<()>;
    /// Replaces the password hash, sets `password_changed_at = now` and
    /// deletes every API key of the user, in one atomic step (a key made
    /// before the change never works after it, even within the same second).
    fn set_password(&self, user_id: &str, password_hash: &str, now: i64) -> Result<()>;

    // ---- API keys ---------------------------------------------------------

    /// Records a new key (its SHA-256 `hash`, never the key) with its scope
    /// and expiry. [`crate::Error::Conflict`] if the hash exists,
    /// [`crate::Error::NotFound`] for an unknown user.
    fn create_api_key(&self, user_id: &str, key: NewApiKey<'_>, now: i64) -> Result<ApiKey>;
    /// The user's keys, oldest first.
    fn api_keys(&self, user_id: &str) -> Result<Vec<ApiKey>>;
    /// Revokes a key. [`crate::Error::NotFound`] if it is not this user's.
    fn delete_api_key(&self, user_id: &str, key_id: &str) -> Result<()>;
    /// The user a key hash belongs to, and the key (touching `last_used_at`),
    /// whether or not it is still [`ApiKey::usable`]: the caller decides.
    fn user_by_api_key(&self, hash: &str, now: i64) -> Result<Option<(User, ApiKey)>>;

    // ---- models -----------------------------------------------------------

    /// Stores `model` (new or imported) for `owner` with a fresh id, refusing
    /// with [`crate::Error::ModelLimitReached`] when the owner already has
    /// `max_models` (checked atomically with the insert).
    fn create_model(
        &self,
        owner: &str,
        name: &str,
        model: &Model,
        max_models: Option<u32>,
        now: i64,
    ) -> Result<ModelInfo>;
    /// The owner's models, oldest first.
    fn models(&self, owner: &str) -> Result<Vec<ModelInfo>>;
    /// One of the owner's models.
    fn model(&self, owner: &str, id: &str) -> Result<ModelInfo>;
    /// Renames and/or reconfigures a model.
    fn update_model(&self, owner: &str, id: &str, patch: ModelPatch, now: i64)
        -> Result<ModelInfo>;
    /// Deletes a model and its Q-table.
    fn delete_model(&self, owner: &str, id: &str) -> Result<()>;
    /// A full copy of the model (for export), consistent at one instant.
    fn export_model(&self, owner: &str, id: &str) -> Result<Model>;
    /// A page of the model's Q-table.
    fn q_table(&self, owner: &str, id: &str, offset: u64, limit: u64) -> Result<QPage>;

    // ---- metered engine calls ---------------------------------------------

    /// One metered prediction on `meter.user_id`'s model `model_id`.
    fn predict(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        state: StateRef<'_>,
        explore: bool,
        allowed: Option<&[usize]>,
    ) -> Result<Prediction>;
    /// The behaviour policy's probability of each action of the model in
    /// `state` ([`Learner::action_probabilities`](crate::Learner::action_probabilities)
    /// on the stored model), metered as one call like a predict; nothing of
    /// the model changes (no draw, no counter). Invalid input is refused
    /// before the quota is debited.
    fn action_probabilities(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        state: StateRef<'_>,
        allowed: Option<&[usize]>,
        explore: bool,
    ) -> Result<Vec<f64>>;
    /// `exps.len()` metered updates applied in order, all or nothing: every
    /// experience is validated before the quota is debited. `report` says
    /// whether the result also carries the rows the call wrote
    /// ([`Report::Touched`]), consistent with the call (no later update in
    /// them); [`Report::Outcomes`] copies nothing more.
    fn update(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        exps: &[Experience<'_>],
        report: Report,
    ) -> Result<Updated>;

    // ---- decisions and delayed rewards (issue 14) ---------------------------
    //
    // Each call runs under the model's lock or transaction: the decision log
    // and the Q-rows it teaches change in one atomic step, and a transition
    // is applied in the step that marks its decision applied, so each is
    // applied exactly once (see `decisions` for how the log is kept).
    // Times in the log are the meter's `now` in milliseconds.

    /// A predict that logs the decision when the model has a decisions
    /// setting (metered 1; a retry of a client `decision_id` returns the
    /// stored decision and is free; the same id with another state or
    /// episode is [`crate::Error::Conflict`]); on a model without one, a
    /// plain [`Store::predict`] (`decision: None`). Learns the episode's
    /// previous step if it was waiting for this state.
    fn decide(&self, meter: &Meter<'_>, model_id: &str, request: &Decide<'_>) -> Result<Decided>;

    // ---- the same calls without blocking (async callers) --------------------
    //
    // A store whose calls usually need no IO (SQLite serves cached models
    // from memory and waits only for its writer's group commit) may answer
    // them on an async runtime's thread: the call's work is done at once
    // and its durability is a future, so no thread is parked per call. `None`
    // means "this call would block" (a model not in memory, another call
    // holding it, anything that needs a read), having done nothing: the
    // caller then runs the blocking method on a blocking thread. After the
    // `Durable` resolves `Ok`, [`Store::usage`] of the meter's user answers
    // without IO. The default never answers.

    /// [`Store::decide`] without blocking (see above). The answer stands
    /// once the [`Durable`] resolves `Ok`.
    fn decide_nonblocking(
        &self,
        _meter: &Meter<'_>,
        _model_id: &str,
        _request: &Decide<'_>,
    ) -> Option<Result<(Decided, Durable)>> {
        None
    }

    /// [`Store::update`] without blocking (see above). The answer stands
    /// once the [`Durable`] resolves `Ok`.
    fn update_nonblocking(
        &self,
        _meter: &Meter<'_>,
        _model_id: &str,
        _exps: &[Experience<'_>],
        _report: Report,
    ) -> Option<Result<(Updated, Durable)>> {
        None
    }
    /// [`Store::rewards`] without blocking (see above): `Some` when the
    /// store holds every rewarded decision in memory. The answer stands
    /// once the [`Durable`] resolves `Ok`.
    fn rewards_nonblocking(
        &self,
        _meter: &Meter<'_>,
        _model_id: &str,
        _rewards: &[RewardIn],
    ) -> Option<Result<(Vec<Result<RewardReceipt>>, Durable)>> {
        None
    }

    /// [`Store::rewards`] for a caller that awaits the commit as a future:
    /// it may block on reads (run it on a blocking thread), but it does not
    /// park that thread until the commit. The answer stands once the
    /// [`Durable`] resolves `Ok`; dropping it unresolved leaves the answer
    /// unconfirmed, as a failed commit would. SQLite takes this path for
    /// rewards of decisions its log no longer holds in memory (late
    /// rewards, the usual case for delayed feedback), so the thread goes
    /// back to the pool while the writer's group commit runs. The default
    /// is [`Store::rewards`], durable when it returns.
    fn rewards_deferred(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        rewards: &[RewardIn],
    ) -> Result<(Vec<Result<RewardReceipt>>, Durable)> {
        Ok((self.rewards(meter, model_id, rewards)?, Durable::ready()))
    }

    /// Rewards for the model's decisions, in order: one result per reward
    /// (an unknown decision, or any on a model without decisions, is
    /// [`crate::Error::NotFound`]; a reused `reward_id` with another value
    /// [`crate::Error::Conflict`]). Each accepted reward is metered 1;
    /// duplicates and late rewards are free. The call fails whole (nothing
    /// recorded) only for an unknown model or the quota.
    fn rewards(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        rewards: &[RewardIn],
    ) -> Result<Vec<Result<RewardReceipt>>>;
    /// One reward ([`Store::rewards`] of one, its error returned).
    fn reward(&self, meter: &Meter<'_>, model_id: &str, reward: RewardIn) -> Result<RewardReceipt> {
        self.rewards(meter, model_id, std::slice::from_ref(&reward))?
            .pop()
            .unwrap_or(Err(crate::Error::Internal("a reward got no result".into())))
    }
    /// Ends an episode of the model (free); returns how many transitions
    /// it taught. Unknown episode: [`crate::Error::NotFound`].
    fn end_episode(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        episode_id: &str,
        end: &EpisodeEnd,
    ) -> Result<usize>;
    /// Closes every reward window whose deadline is at or before `now`
    /// (Unix seconds) in every model, with the aggregated or default
    /// reward, and applies what became ready (free). Every instance may run
    /// it at once: each transition is applied once. Then forgets the
    /// finished decisions logged before their model's retention (and the
    /// ended episodes left without decisions), in bounded chunks; the SQL
    /// stores prune at most once a minute of `now`. Returns how many
    /// transitions were applied.
    fn settle(&self, now: i64) -> Result<usize>;
    /// A page of one of the owner's models' decision log (a model without
    /// decisions has an empty one).
    fn decisions(&self, owner: &str, model_id: &str, query: &DecisionQuery)
        -> Result<DecisionPage>;
    /// A page of one of the owner's models' episodes, in id order, with
    /// their steps and the return learned so far (a model without
    /// decisions has none).
    fn episodes(&self, owner: &str, model_id: &str, query: &EpisodeQuery) -> Result<EpisodePage>;

    // ---- billing (issue 17) -------------------------------------------------

    /// Applies a verified billing-provider event ([`crate::tenancy::billing::step`]) in one
    /// atomic step with recording its id: an id seen before is
    /// [`BillingOutcome::Duplicate`] and changes nothing, also under
    /// concurrent deliveries. The user is `event.party.user_id` when it
    /// exists, else the user its customer id is linked to; neither is
    /// [`crate::Error::NotFound`] and records nothing (the provider retries,
    /// e.g. after the checkout event that links the customer). Linking a
    /// customer id another user holds is [`crate::Error::Conflict`].
    fn apply_billing(&self, event: &BillingEvent, now: i64) -> Result<BillingOutcome>;
    /// Applies every scheduled downgrade due at `now` ([`crate::tenancy::billing::settle`]);
    /// returns the users whose tier changed. Instances may run it at once.
    fn settle_billing(&self, now: i64) -> Result<Vec<String>>;
    /// A user's billing record (`None` until an event named the user).
    fn billing_account(&self, user_id: &str) -> Result<Option<BillingAccount>>;

    // ---- usage ------------------------------------------------------------

    /// The user's metered calls in `month`: per day, per [`CallKind`] and
    /// the overage, each counted in the same atomic step as its call.
    fn usage(&self, user_id: &str, month: BillingMonth) -> Result<Usage>;

    /// Every user's usage in `month`, oldest user first, users without
    /// calls that month included (an invoicing run lists every account).
    fn usage_by_user(&self, month: BillingMonth) -> Result<Vec<UserUsage>> {
        self.users()?
            .into_iter()
            .map(|u| {
                Ok(UserUsage {
                    usage: self.usage(&u.id, month)?,
                    user_id: u.id,
                    email: u.email,
                    tier: u.tier,
                })
            })
            .collect()
    }

    /// Makes every acknowledged write durable and stops background work
    /// (graceful shutdown). Further calls may fail.
    fn flush(&self) -> Result<()>;

    // ---- instances sharing the store --------------------------------------

    /// Starts this instance's feed of changes made by every instance
    /// sharing the store (see [`changes`]), delivered to `sink`, or `None`
    /// when the store is never shared (memory, SQLite: one process per
    /// file, whose own changes are all there are).
    fn change_feed(&self, sink: ChangeSink) -> Result<Option<std::sync::Arc<dyn ChangeFeed>>> {
        let _ = sink;
        Ok(None)
    }

    /// Token buckets every instance sharing the store sees, for rate
    /// limits that hold across instances ([`crate::tenancy::Limiter`]), or
    /// `None` when the store is never shared (limits kept in memory).
    fn shared_buckets(&self) -> Option<std::sync::Arc<dyn crate::tenancy::SharedBuckets>> {
        None
    }

    /// Event-stream tickets every instance sharing the store can redeem,
    /// or `None` when the store is never shared (tickets kept in memory).
    fn shared_tickets(&self) -> Option<std::sync::Arc<dyn SharedTickets>> {
        None
    }

    /// The open event streams of every instance sharing the store (for
    /// caps that hold across instances), or `None` when the store is never
    /// shared (streams counted in memory).
    fn shared_streams(&self) -> Option<std::sync::Arc<dyn SharedStreams>> {
        None
    }
}
