//! The HTTP API end to end: the real server on a real socket, driven with
//! an HTTP client, once per storage backend (SQLite, PostgreSQL), one
//! module per area of the API.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod accounts;
mod admin;
mod atomic;
mod billing;
mod contract;
mod credentials;
mod decisions;
mod engine;
mod episodes;
mod evaluation_baseline;
mod evaluations;
mod invoicing;
mod journey;
mod key_checksums;
mod limits;
mod models;
mod probabilities;
mod promises;
mod service;
mod settings;

use reqwest::Method;

const GET: Method = Method::GET;
const POST: Method = Method::POST;
