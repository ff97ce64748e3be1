//! qlearn-core: the Q-learning engine, tenants, quotas and storage of qlearn.
pub mod codec;
pub mod config;
pub mod error;
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
pub use error::{Error, Result};
pub use model::{Decision, Experience, Learner, Model, Prediction, Stats, UpdateOutcome};
pub use state::{State, StateKey, StateRef};
pub use table::{QRows, QTable};
