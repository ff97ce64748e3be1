//! saas-host: the qlearn HTTP service.
//!
//! A multi-tenant JSON API over [`qlearn_core`], on hyper 1.x without a web
//! framework: users register, own Q-learning models, and make metered
//! `predict`/`update` calls; the store does the metering and learning.
//!
//! - [`run`] / [`serve`]: the server (what `main` and the tests start);
//! - [`cidr`]: address ranges (`TRUSTED_PROXIES`);
//! - [`config`]: configuration and opening a store from `DATABASE_URL`;
//! - [`cli`]: the command line (`serve`, `admin ...`); [`admin`]: the
//!   operator commands and the admin socket a running SQLite server answers;
//! - [`routes`]: the route table; [`router`]: dispatch, authentication,
//!   rate limits, CORS, logs; [`ctx`]: what an authenticated handler gets;
//! - [`handlers`]: one module per area of the API; [`wire`]: its JSON types;
//! - [`assets`]: the embedded files; [`http`]: reading requests; [`response`]: building responses;
//! - [`error`]: the single mapping of errors to status codes and JSON;
//! - [`evaluations`]: the workers running offline evaluation jobs;
//! - [`invoicing`]: the usage report for billing (admin route and CLI);
//! - [`branding`]: white-label (name, logo, colours, support address).
//!
//! **Architecture invariant:** only this crate knows HTTP and the JSON wire
//! format; it never re-implements learning, quota or password logic.

pub mod admin;
pub mod app;
pub mod assets;
pub mod branding;
pub mod busy_poll;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod ctx;
pub mod error;
pub mod evaluations;
pub mod events;
pub mod handlers;
pub mod hashing;
pub mod http;
pub mod invoicing;
mod last_jwt;
pub mod metrics;
pub mod openapi;
pub mod pinning;
pub mod read_only;
pub mod response;
pub mod router;
pub mod routes;
pub mod server;
pub mod wire;

pub use config::Config;
pub use server::{run, serve};

/// Now, in Unix seconds (UTC).
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
