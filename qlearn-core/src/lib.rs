//! qlearn-core: the Q-learning engine, tenants, quotas and storage of qlearn.
pub mod error;
pub mod tenancy;

pub use error::{Error, Result};
