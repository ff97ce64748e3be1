//! qlearn-core: the Q-learning engine of qlearn, with its tenants, quotas and
//! storage.
//!
//! A [`Model`] learns, from the rewards you report, which of its `n_actions`
//! actions is best in each state: ask it for an action ([`Model::predict`]),
//! take it, then tell it what happened ([`Model::update`]). A state is an
//! integer, a string or an array of up to
//! [`MAX_STATE_DIMS`](limits::MAX_STATE_DIMS) numbers ([`StateRef`]). The
//! learning rule is Q-learning, SARSA, expected SARSA or double Q-learning
//! ([`Algorithm`]), the exploration epsilon-greedy or softmax
//! ([`Exploration`]); [`ModelConfig`] holds every hyperparameter.
//!
//! # Quick start
//!
//! ```
//! use qlearn_core::{Experience, Model, ModelConfig};
//!
//! # fn main() -> qlearn_core::Result<()> {
//! // Two actions, every hyperparameter at its default, seeded so runs repeat.
//! let mut config = ModelConfig::new(2);
//! config.seed = Some(7);
//! let mut model = Model::new(config)?;
//!
//! // In state "start", action 1 pays and action 0 does not; each try is a
//! // one-step episode (`done`).
//! for _ in 0..200 {
//!     let action = model.predict("start", true, None)?.action;
//!     let reward = if action == 1 { 1.0 } else { 0.0 };
//!     model.update(&Experience::new("start", action, reward, "end").done(true))?;
//! }
//! // Without exploration the model now picks the paying action.
//! assert_eq!(model.predict("start", false, None)?.action, 1);
//! assert_eq!(model.stats().episodes, 200);
//!
//! // Save and load. The same bytes move a model to Python or the server.
//! let bytes = model.to_bytes()?;
//! let copy = Model::from_bytes(&bytes)?;
//! assert_eq!(copy.q_values("start")?, model.q_values("start")?);
//! # Ok(())
//! # }
//! ```
//!
//! Every call validates its whole input before it changes anything: an
//! [`Error`] names the offending field, and the model is left as it was.
//!
//! # Feature flags
//!
//! | Feature | Default | Adds | Pulls in |
//! | --- | --- | --- | --- |
//! | `tenancy` | yes (via the two below) | `tenancy` (tiers, quotas, rate limits, passwords, API keys) and `store` (the `Store` trait, `store::memory`) | argon2, sha2, base64 |
//! | `sqlite` | yes | `store::sqlite`, the embedded store; implies `tenancy` | rusqlite (SQLite compiled in), rustix |
//! | `postgres` | yes | `store::postgres`, several servers on one database; implies `tenancy` | postgres, r2d2 |
//!
//! With `default-features = false` the crate is the engine alone, with no
//! database, crypto or network dependency: that is how the Python module
//! links it.
//!
//! # Modules
//!
//! - [`model`]: [`Model`] and [`Learner`] (a model without its table), what
//!   they take and return ([`Experience`], [`Decision`], [`UpdateOutcome`],
//!   [`Stats`]), action selection and the learning rules.
//! - [`config`]: [`ModelConfig`] and its validation.
//! - [`limits`]: every limit of the engine as one constant.
//! - [`state`]: [`State`], the borrowed [`StateRef`] and the canonical
//!   [`StateKey`] (`-0.0` is `0.0`, NaN refused, `state_bins` applied).
//! - [`table`]: [`QRows`], the rows the rules read and write, and
//!   [`QTable`], the in-memory table.
//! - [`codec`]: the binary format ([`Model::to_bytes`]) and the JSON export
//!   ([`Model::to_json`]).
//! - [`decisions`]: decisions logged with their behaviour probability and
//!   delayed rewards.
//! - [`evaluation`]: offline evaluation of other policies on that log (IPS,
//!   SNIPS, doubly robust, episode estimators, progressive replay).
//! - [`rng`]: the seeded random generator saved with a model.
//! - [`error`]: [`Error`], the one error type.
//! - `tenancy` and `store` (feature `tenancy`): users, tiers and quotas, and
//!   the storage contract with its backends.
//!
//! # Where to go next
//!
//! The `examples` crate of the workspace runs full agents (`cargo run
//! --release --example gridworld`, `cliff_walking`). To keep Q-values
//! elsewhere than in memory, implement [`QRows`] and run
//! [`Learner::update`] over it, as the SQL stores do. The workspace's
//! `ARCHITECTURE.md` maps the crate, the HTTP service and the Python module.
pub mod codec;
pub mod config;
mod de;
pub mod decisions;
pub mod error;
pub mod evaluation;
pub mod limits;
pub mod model;
pub mod rng;
pub mod state;
#[cfg(feature = "tenancy")]
pub mod store;
pub mod table;
#[cfg(feature = "tenancy")]
pub mod tenancy;

pub use config::{Algorithm, Bin, Exploration, ModelConfig};
pub use decisions::{Aggregation, DecisionLog, DecisionsConfig};
pub use error::{Error, Result};
pub use model::{Decision, Experience, Learner, Model, Prediction, Stats, UpdateOutcome};
pub use state::{State, StateKey, StateRef};
pub use table::{QRows, QTable};

/// A hash map with foldhash (seeded per map) instead of SipHash, for the
/// maps every request looks up by an id the service made (model and user
/// ids, verified credentials): a lookup hashes several times faster. Maps
/// keyed by what a client can choose freely keep std's SipHash.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
