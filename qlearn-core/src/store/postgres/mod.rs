//! [`PgStore`]: the PostgreSQL [`Store`](super::Store), for several server instances
//! sharing one database (sync `postgres` client, `r2d2` pool).
//!
//! # Design
//!
//! - **Nothing is cached between calls**: every call reads what it needs in
//!   its own transaction, so any number of processes may share the database.
//! - **Per-model serialisable updates.** A metered call locks its model's row
//!   (`SELECT ... FOR UPDATE`), reads the learner state and only the Q-rows
//!   it needs (state and next state), runs the core's [`crate::Learner`]
//!   over them ([`QRows`](crate::QRows) over a small [`QTable`](crate::QTable)), and writes the changed
//!   rows and the learner back in the same transaction. The row lock orders
//!   concurrent updates of one model across every instance.
//! - **Batched per user.** Within a process, concurrent calls of one user
//!   (on one or several of their models) are combined: the first caller
//!   becomes the leader and runs everything queued in one transaction (one
//!   set of row locks, taken in model-id order, one quota debit, one commit
//!   and fsync), each call keeping its own validation, quota decision and
//!   result; the others wait for theirs. A user's calls serialise on their
//!   usage row anyway (the debit commits with the effect), so batching is
//!   what lets them share commits. Between processes the row locks still
//!   serialise. A new leader first waits briefly (at most 2 ms, half the
//!   last transaction) until as many calls are queued as the last batch
//!   had: the last batch's callers were all woken at once and are queueing
//!   again, and starting at once would commit a batch of one and make the
//!   rest wait a whole transaction more (this alone roughly doubled
//!   throughput at 32 writers).
//! - **Round trips.** A batch is `BEGIN`, one statement that debits the
//!   whole batch (when its calls share a limit and a day) and locks its
//!   models, one that fetches the Q-rows it needs (`= ANY`-style join on
//!   arrays), one that writes back every changed row and learner
//!   (`UNNEST` upsert), and `COMMIT`. Calls found invalid after the
//!   optimistic debit are given back in the same transaction; when the
//!   whole batch does not fit the quota, calls are debited one by one.
//!   A batch that deadlocks with another instance (possible only for
//!   batches spanning two months) runs again.
//! - **Logging predicts** ([`Store::decide`](super::Store::decide)) join the
//!   batch too: the locking statement also reads each model's decisions
//!   setting, so a model that logs none answers a plain prediction with no
//!   statement of its own; one that logs leaves the batch (its debit given
//!   back there) for the decision path's transaction, which checks the
//!   setting again under its own lock. Models found logging are remembered
//!   per instance as a hint (go to the decision path first), never trusted.
//!   Batches lock their models before the usage row, as decision calls do.
//! - **Decision calls combined per model** (`decision_batch.rs`): logging
//!   predicts, rewards and episode ends of one model are combined the same
//!   way, by the same `Combiner` (`combiner.rs`): one transaction
//!   locks the model once, fetches every decided state's row at once,
//!   debits the logging predicts and rewards at once (what failed,
//!   replayed or duplicate calls leave given back), runs the calls in
//!   queue order through the shared decision
//!   steps, and writes the Q-rows, the learner and the log's rows in two
//!   statements. One model's decision calls serialise on its row lock
//!   anyway; combined, they share its round trips and its commit.
//! - **Quota debit is one atomic SQL statement**: a conditional upsert of
//!   the month's total (`INSERT ... ON CONFLICT DO UPDATE ... WHERE calls + n
//!   <= limit RETURNING`), which adds to the per-day row in the same
//!   statement only when granted. It runs in the call's transaction: a
//!   refused call is not counted, and a granted call's debit commits together
//!   with its effect. Concurrent debits of one user serialise on the usage
//!   row, in any number of processes.
//! - **Model limit**: creation locks the owner's user row, counts and
//!   inserts in one transaction.
//! - **Versioned migrations** ([`crate::store::migrations::POSTGRES`]) run at
//!   connect under a transaction-scoped advisory lock (instances starting
//!   together migrate once), recorded in `schema_migrations`.
//! - **Durability**: PostgreSQL's default `synchronous_commit = on`: an
//!   acknowledged call's commit is flushed to the server's WAL.
//!
//! [`PgStore::connect_with_schema`] keeps everything in one schema (created
//! if needed, set as `search_path` on every pooled connection): tests use a
//! schema each and run in parallel.

mod batch;
mod billing;
mod buckets;
mod calls;
mod combiner;
mod decision_batch;
mod decisions;
mod evaluations;
mod notify;
mod pool;
mod sql;
mod streams;
#[cfg(test)]
mod test_db;
mod tls;
mod usage;

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Row, Statement, Transaction};

use super::due_models::DueModels;
use super::migrations;
use crate::error::{Error, Result};
use combiner::Combiners;
use pool::{Manager, PgConn, QuietErrors};
use sql::migrate;

const BACKEND: &str = "postgres";
/// Most pooled connections per store.
const POOL_SIZE: u32 = 16;
/// Rows per statement when inserting a whole table.
const INSERT_CHUNK: usize = 5_000;

fn pg(e: postgres::Error) -> Error {
    Error::storage(BACKEND, e)
}

/// A connection from `pool`.
fn pool_conn(pool: &r2d2::Pool<Manager>) -> Result<r2d2::PooledConnection<Manager>> {
    pool.get()
        .map_err(|e| Error::storage(BACKEND, format!("no connection: {e}")))
}

fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::storage(BACKEND, format!("corrupt data in the database: {what}"))
}

fn lock_plain<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// The PostgreSQL store. See the module docs for its design and guarantees.
pub struct PgStore {
    pool: r2d2::Pool<Manager>,
    schema: Option<String>,
    combiners: Combiners<String, combiner::Request>,
    /// Per (owner, model): the decision calls combined in one transaction
    /// (`decision_batch.rs`).
    decision_combiners: Combiners<(String, String), decision_batch::DecisionRequest>,
    /// Model ids last found logging decisions: where a logging predict
    /// goes first (a hint only; see [`PgStore::decide_combined`]).
    logging_models: Mutex<HashSet<String>>,
    /// How the change feed makes its own connection (like the pool's).
    manager: Manager,
    /// The LISTEN/NOTIFY channel of this store's schema.
    channel: String,
    /// When this instance last pruned the decision logs (Unix seconds).
    last_prune: std::sync::atomic::AtomicI64,
    /// Each model's earliest open deadline as this instance knows it, for
    /// its settle pass (`due_models`; told of every open decision this
    /// instance commits by `decision_batch`).
    due: DueModels,
    /// When this instance last pruned the evaluation jobs.
    evals_pruned_at: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`), applies pending
    /// migrations in the connection's default schema, and keeps a pool.
    pub fn connect(url: &str) -> Result<Self> {
        Self::open(url, None)
    }

    /// Like [`PgStore::connect`], keeping every table in `schema` (lower-case
    /// letters, digits and `_`; created if absent): one database can hold
    /// independent stores, e.g. one per test.
    pub fn connect_with_schema(url: &str, schema: &str) -> Result<Self> {
        if !valid_schema_name(schema) {
            return Err(Error::field(
                "schema",
                "must be 1 to 63 lower-case letters, digits or _, not starting with a digit",
            ));
        }
        Self::open(url, Some(schema.to_owned()))
    }

    fn open(url: &str, schema: Option<String>) -> Result<Self> {
        let (url, tls_settings) = tls::split_url(url)?;
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| Error::storage(BACKEND, format!("invalid PostgreSQL URL: {e}")))?;
        let tls = tls::connector(&tls_settings, &mut config)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("qlearn");
        // One direct connection first: fails fast when the server is down,
        // creates the schema, migrates.
        let mut client = tls::connect(&config, &tls).map_err(|e| {
            Error::storage(BACKEND, format!("cannot connect: {}", tls::describe(&e)))
        })?;
        if let Some(s) = &schema {
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS \"{s}\"; SET search_path TO \"{s}\""
                ))
                .map_err(pg)?;
        }
        migrate(&mut client, migrations::POSTGRES)?;
        let current: String = client
            .query_one("SELECT COALESCE(current_schema(), 'public')", &[])
            .map_err(pg)?
            .get(0);
        drop(client);
        let manager = Manager {
            config: config.clone(),
            tls,
            schema: schema.clone(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .error_handler(Box::new(QuietErrors))
            .build(manager.clone())
            .map_err(|e| Error::storage(BACKEND, format!("cannot start the pool: {e}")))?;
        Ok(PgStore {
            pool,
            schema,
            combiners: Mutex::new(HashMap::new()),
            decision_combiners: Mutex::new(HashMap::new()),
            logging_models: Mutex::new(HashSet::new()),
            manager,
            channel: notify::channel_of(&current),
            last_prune: std::sync::atomic::AtomicI64::new(0),
            due: DueModels::default(),
            evals_pruned_at: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// The schema given to [`PgStore::connect_with_schema`].
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Drops this store's schema and everything in it (tests and
    /// benchmarks clean up with it). Refused for a store without its own
    /// schema.
    pub fn drop_schema(&self) -> Result<()> {
        let Some(s) = &self.schema else {
            return Err(Error::field(
                "schema",
                "this store has no schema of its own",
            ));
        };
        let mut c = self.conn()?;
        c.client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"))
            .map_err(pg)
    }

    /// The schema version recorded in `schema_migrations`.
    pub fn schema_version(&self) -> Result<u32> {
        let mut c = self.conn()?;
        let v: i32 = c
            .client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(pg)?
            .get(0);
        Ok(v.max(0) as u32)
    }

    /// The newest schema version this build knows.
    pub fn latest_schema_version() -> u32 {
        migrations::latest(migrations::POSTGRES)
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>> {
        pool_conn(&self.pool)
    }

    /// Runs `f` in a transaction and commits if it returned `Ok`.
    fn tx<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>, &mut HashMap<&'static str, Statement>) -> Result<T>,
    ) -> Result<T> {
        let mut c = self.conn()?;
        let PgConn {
            client, statements, ..
        } = &mut *c;
        let mut tx = client.transaction().map_err(pg)?;
        let v = f(&mut tx, statements)?;
        tx.commit().map_err(pg)?;
        Ok(v)
    }

    /// Runs one statement outside an explicit transaction.
    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let mut c = self.conn()?;
        c.client.query(sql, params).map_err(pg)
    }

    /// [`PgStore::query`] of a statement prepared once per connection
    /// (for a statement run again and again: one round trip, not two).
    fn query_prepared(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let mut c = self.conn()?;
        let PgConn {
            client, statements, ..
        } = &mut *c;
        let s = pool::stmt(statements, client, sql).map_err(pg)?;
        client.query(&s, params).map_err(pg)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let mut c = self.conn()?;
        c.client.execute(sql, params).map_err(pg)
    }
}
