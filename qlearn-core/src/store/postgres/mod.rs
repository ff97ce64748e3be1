//! [`PgStore`]: the PostgreSQL [`Store`], for several server instances
//! sharing one database (sync `postgres` client, `r2d2` pool).
//!
//! # Design
//!
//! - **Nothing is cached between calls**: every call reads what it needs in
//!   its own transaction, so any number of processes may share the database.
//! - **Per-model serialisable updates.** A metered call locks its model's row
//!   (`SELECT ... FOR UPDATE`), reads the learner state and only the Q-rows
//!   it needs (state and next state), runs the core's [`crate::Learner`]
//!   over them ([`QRows`](crate::QRows) over a small [`QTable`]), and writes the changed
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

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement, Transaction};

use super::encoding::{
    config_text, decode_key, decode_learner, decode_values, encode_key, key_bytes, learner_bytes,
    returns_bytes, table_from_rows, values_bytes, Tracked,
};
use super::migrations::{self, Migration};
use super::{ApiKey, Meter, ModelInfo, ModelPatch, NewUser, QPage, Store, Usage, User};
use crate::error::{Error, Result};
use crate::model::{at_index, Experience, Learner, Model, Prediction, UpdateOutcome};
use crate::state::{canonical_key, State, StateKey, StateRef};
use crate::table::QTable;
use crate::tenancy::{seconds_until_next_month, BillingMonth, Role, Tier, TierLimits};

const BACKEND: &str = "postgres";
/// Most pooled connections per store.
const POOL_SIZE: u32 = 16;
/// Rows per statement when inserting a whole table.
const INSERT_CHUNK: usize = 5_000;

fn pg(e: postgres::Error) -> Error {
    if is_retryable(&e) {
        Error::storage(BACKEND, format!("{DEADLOCK_MARK} {e}"))
    } else {
        Error::storage(BACKEND, e)
    }
}

/// Marks a storage error caused by a deadlock or serialization failure
/// (the transaction can simply run again).
const DEADLOCK_MARK: &str = "[retryable]";

/// Whether a failed batch transaction should run again.
enum Retry {
    Again,
    Fail(Error),
}

impl Retry {
    fn of(e: postgres::Error) -> Retry {
        if is_retryable(&e) {
            Retry::Again
        } else {
            Retry::Fail(pg(e))
        }
    }
}

fn is_retryable(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
        || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
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

// ---- connections -------------------------------------------------------------

/// A pooled connection and its prepared statements.
struct PgConn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// Prepares `sql` once per connection.
fn stmt(
    statements: &mut HashMap<&'static str, Statement>,
    tx: &mut Transaction<'_>,
    sql: &'static str,
) -> Result<Statement> {
    if let Some(s) = statements.get(sql) {
        return Ok(s.clone());
    }
    let s = tx.prepare(sql).map_err(pg)?;
    statements.insert(sql, s.clone());
    Ok(s)
}

/// The r2d2 connection manager: connects, sets the schema, checks health.
struct Manager {
    config: postgres::Config,
    schema: Option<String>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<PgConn, postgres::Error> {
        let mut client = self.config.connect(NoTls)?;
        if let Some(s) = &self.schema {
            client.batch_execute(&format!("SET search_path TO \"{s}\""))?;
        }
        Ok(PgConn {
            client,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, c: &mut PgConn) -> std::result::Result<(), postgres::Error> {
        c.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, c: &mut PgConn) -> bool {
        c.client.is_closed()
    }
}

/// Silences r2d2's own logging of connection errors (they are returned).
#[derive(Debug)]
struct QuietErrors;

impl r2d2::HandleError<postgres::Error> for QuietErrors {
    fn handle_error(&self, _error: postgres::Error) {}
}

// ---- combining concurrent calls on one model ----------------------------------

/// An owned experience (a call's input, shared with the leader thread).
struct OwnedExp {
    state: State,
    action: usize,
    reward: f64,
    next_state: State,
    done: bool,
    truncated: bool,
    next_action: Option<usize>,
    next_allowed: Option<Vec<usize>>,
}

impl OwnedExp {
    fn of(e: &Experience<'_>) -> Self {
        OwnedExp {
            state: owned_state(e.state),
            action: e.action,
            reward: e.reward,
            next_state: owned_state(e.next_state),
            done: e.done,
            truncated: e.truncated,
            next_action: e.next_action,
            next_allowed: e.next_allowed_actions.map(<[usize]>::to_vec),
        }
    }

    fn as_exp(&self) -> Experience<'_> {
        Experience {
            state: self.state.as_ref(),
            action: self.action,
            reward: self.reward,
            next_state: self.next_state.as_ref(),
            done: self.done,
            truncated: self.truncated,
            next_action: self.next_action,
            next_allowed_actions: self.next_allowed.as_deref(),
        }
    }
}

fn owned_state(s: StateRef<'_>) -> State {
    match s {
        StateRef::Int(i) => State::Int(i),
        StateRef::Str(x) => State::Str(x.to_owned()),
        StateRef::Array(a) => State::Array(a.to_vec()),
    }
}

enum Call {
    Predict {
        state: State,
        explore: bool,
        allowed: Option<Vec<usize>>,
    },
    Update(Vec<OwnedExp>),
}

enum Outcome {
    Predicted(Prediction),
    Updated(Vec<UpdateOutcome>),
}

struct Request {
    model: String,
    user: String,
    limits: TierLimits,
    now: i64,
    call: Call,
    result: Mutex<Option<Result<Outcome>>>,
}

impl Request {
    fn n(&self) -> u64 {
        match &self.call {
            Call::Predict { .. } => 1,
            Call::Update(x) => x.len() as u64,
        }
    }

    fn set(&self, r: Result<Outcome>) {
        *lock_plain(&self.result) = Some(r);
    }
}

/// Calls waiting for one user, and whether a leader is running a batch.
#[derive(Default)]
struct Combiner {
    state: Mutex<CombinerState>,
    /// Signalled when a leader finishes a batch.
    done: Condvar,
    /// Signalled when a call is queued (a gathering leader waits on it).
    arrived: Condvar,
}

/// Ends a leader's turn (also if the batch panicked, so followers are
/// never stuck).
struct Lead<'a>(&'a Combiner);

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        lock_plain(&self.0.state).leading = false;
        self.0.done.notify_all();
    }
}

#[derive(Default)]
struct CombinerState {
    queue: Vec<Arc<Request>>,
    leading: bool,
    /// Calls in the last batch: how many a new leader expects to gather.
    last_batch: usize,
    /// How long the last batch's transaction took.
    last_tx: Duration,
}

/// The longest a new leader waits for the callers of the previous batch to
/// queue again before it starts its transaction.
const MAX_GATHER: Duration = Duration::from_millis(2);

// ---- SQL -------------------------------------------------------------------------

const USER_COLS: &str = "id, email, password_hash, tier, role, created_at, password_changed_at";
const MODEL_COLS: &str =
    "mid, id, owner, name, config, learner, returns, n_rows, created_at, updated_at";

const SQL_LOCK_MODELS: &str = "SELECT mid, id, config, learner, returns, n_rows FROM models \
     WHERE id = ANY($1::text[]) AND owner = $2 ORDER BY id FOR UPDATE";
/// [`SQL_DEBIT`] of a whole batch and [`SQL_LOCK_MODELS`] in one round
/// trip; every row carries whether the debit was granted. Both the model
/// rows (`FOR UPDATE`, re-read at their latest version) and the usage row
/// (`ON CONFLICT DO UPDATE`) are locked at their newest committed version,
/// so nothing here reads a stale snapshot.
const SQL_DEBIT_LOCK_MODELS: &str = "WITH m AS ( \
       INSERT INTO usage_month AS u (user_id, month, calls) \
       SELECT $2::text, $3::text, $4::int8 WHERE $5::int8 IS NULL OR $4::int8 <= $5::int8 \
       ON CONFLICT (user_id, month) DO UPDATE SET calls = u.calls + excluded.calls \
       WHERE $5::int8 IS NULL OR u.calls + excluded.calls <= $5::int8 \
       RETURNING calls), \
     d AS ( \
       INSERT INTO usage_day AS d (user_id, month, day, calls) \
       SELECT $2::text, $3::text, $6::int2, $4::int8 FROM m \
       ON CONFLICT (user_id, month, day) DO UPDATE SET calls = d.calls + excluded.calls) \
     SELECT mid, id, config, learner, returns, n_rows, (SELECT COUNT(*) FROM m) FROM models \
     WHERE id = ANY($1::text[]) AND owner = $2 ORDER BY id FOR UPDATE";
const SQL_FETCH_ROWS: &str = "SELECT q.mid, q.row_no, q.key, q.vals FROM q_rows q \
     JOIN unnest($1::int8[], $2::bytea[]) AS w(mid, key) ON q.mid = w.mid AND q.key = w.key";
const SQL_DEBIT: &str = "WITH m AS ( \
       INSERT INTO usage_month AS u (user_id, month, calls) \
       SELECT $1::text, $2::text, $3::int8 WHERE $4::int8 IS NULL OR $3::int8 <= $4::int8 \
       ON CONFLICT (user_id, month) DO UPDATE SET calls = u.calls + excluded.calls \
       WHERE $4::int8 IS NULL OR u.calls + excluded.calls <= $4::int8 \
       RETURNING calls), \
     d AS ( \
       INSERT INTO usage_day AS d (user_id, month, day, calls) \
       SELECT $1::text, $2::text, $5::int2, $3::int8 FROM m \
       ON CONFLICT (user_id, month, day) DO UPDATE SET calls = d.calls + excluded.calls) \
     SELECT calls FROM m";
const SQL_WRITE_BACK: &str = "WITH r AS ( \
       INSERT INTO q_rows (mid, row_no, key, vals) \
       SELECT * FROM unnest($1::int8[], $2::int8[], $3::bytea[], $4::bytea[]) \
       ON CONFLICT (mid, row_no) DO UPDATE SET vals = excluded.vals) \
     UPDATE models m SET learner = v.learner, returns = COALESCE(v.returns, m.returns), \
       n_rows = v.n_rows, updated_at = COALESCE(v.updated_at, m.updated_at) \
     FROM unnest($5::int8[], $6::bytea[], $7::bytea[], $8::int8[], $9::int8[]) \
       AS v(mid, learner, returns, n_rows, updated_at) WHERE m.mid = v.mid";

fn user_from_row(r: &Row) -> Result<User> {
    let tier: String = r.get(3);
    let role: String = r.get(4);
    Ok(User {
        id: r.get(0),
        email: r.get(1),
        password_hash: r.get(2),
        tier: tier
            .parse()
            .map_err(|_| corrupt(format!("unknown tier {tier:?}")))?,
        role: role
            .parse()
            .map_err(|_| corrupt(format!("unknown role {role:?}")))?,
        created_at: r.get(5),
        password_changed_at: r.get(6),
    })
}

fn key_from_row(r: &Row, at: usize) -> ApiKey {
    ApiKey {
        id: r.get(at),
        user_id: r.get(at + 1),
        name: r.get(at + 2),
        prefix: r.get(at + 3),
        created_at: r.get(at + 4),
        last_used_at: r.get(at + 5),
    }
}

fn info_from_row(r: &Row) -> Result<(i64, ModelInfo, Learner)> {
    let config: String = r.get(4);
    let learner = decode_learner(BACKEND, &config, r.get(5), r.get(6))?;
    let info = ModelInfo {
        id: r.get(1),
        owner: r.get(2),
        name: r.get(3),
        config: learner.config().clone(),
        stats: learner.stats(),
        created_at: r.get(8),
        updated_at: r.get(9),
    };
    Ok((r.get(0), info, learner))
}

/// Loads `(keys, values)` of rows `from..to` of a model, in order.
fn load_rows(
    tx: &mut Transaction<'_>,
    mid: i64,
    width: usize,
    from: i64,
    to: i64,
) -> Result<(Vec<StateKey>, Vec<f64>)> {
    let rows = tx
        .query(
            "SELECT row_no, key, vals FROM q_rows WHERE mid = $1 AND row_no >= $2 \
             AND row_no < $3 ORDER BY row_no",
            &[&mid, &from, &to],
        )
        .map_err(pg)?;
    let mut keys = Vec::with_capacity(rows.len());
    let mut values = Vec::with_capacity(rows.len() * width);
    for (i, r) in rows.iter().enumerate() {
        let row_no: i64 = r.get(0);
        if row_no != from + i as i64 {
            return Err(corrupt(format!(
                "Q-row {row_no} where {} was expected",
                from + i as i64
            )));
        }
        keys.push(decode_key(BACKEND, r.get(1))?);
        decode_values(BACKEND, r.get(2), width, &mut values)?;
    }
    Ok((keys, values))
}

/// Inserts rows `start..` of `table` as rows numbered from `start`.
fn insert_rows(tx: &mut Transaction<'_>, mid: i64, table: &QTable) -> Result<()> {
    let mut start = 0;
    while start < table.len() {
        let end = (start + INSERT_CHUNK).min(table.len());
        let mut row_nos = Vec::with_capacity(end - start);
        let mut keys = Vec::with_capacity(end - start);
        let mut vals = Vec::with_capacity(end - start);
        for i in start..end {
            let Some((key, v)) = table.row_at(i) else {
                break;
            };
            row_nos.push(i as i64);
            let mut k = Vec::with_capacity(16);
            encode_key(key, &mut k);
            keys.push(k);
            vals.push(values_bytes(v));
        }
        tx.execute(
            "INSERT INTO q_rows (mid, row_no, key, vals) \
             SELECT $1::int8, * FROM unnest($2::int8[], $3::bytea[], $4::bytea[])",
            &[&mid, &row_nos, &keys, &vals],
        )
        .map_err(pg)?;
        start = end;
    }
    Ok(())
}

/// A stable 64-bit hash (FNV-1a) naming the migration lock of a schema.
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"qlearn-migrations:".iter().chain(schema.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

fn migrate(client: &mut Client, list: &[Migration]) -> Result<()> {
    let mut tx = client.transaction().map_err(pg)?;
    // NULL when no schema of the search_path exists (e.g. `options=-csearch_path=x`
    // naming a schema nobody created): a clear error, not a panic.
    let schema: Option<String> = tx
        .query_one("SELECT current_schema()::text", &[])
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    let schema = schema.ok_or_else(|| {
        Error::storage(
            BACKEND,
            "no schema of the connection's search_path exists; create it or fix the search_path in DATABASE_URL",
        )
    })?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(&schema)])
        .map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
           version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .map_err(pg)?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(pg)?
        .get(0);
    let latest = migrations::latest(list) as i32;
    if current > latest {
        return Err(Error::storage(
            BACKEND,
            format!(
                "the database has schema version {current}, newer than this build knows \
                 ({latest}); use a newer qlearn"
            ),
        ));
    }
    for m in list.iter().filter(|m| m.version as i32 > current) {
        tx.batch_execute(m.sql).map_err(|e| {
            Error::storage(
                BACKEND,
                format!("migration {} ({}) failed: {e}", m.version, m.name),
            )
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) \
             VALUES ($1, $2, EXTRACT(EPOCH FROM now())::bigint)",
            &[&(m.version as i32), &m.name],
        )
        .map_err(pg)?;
    }
    tx.commit().map_err(pg)
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
    combiners: Mutex<HashMap<String, Weak<Combiner>>>,
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
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| Error::storage(BACKEND, format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("qlearn");
        // One direct connection first: fails fast when the server is down,
        // creates the schema, migrates.
        let mut client = config
            .connect(NoTls)
            .map_err(|e| Error::storage(BACKEND, format!("cannot connect: {e}")))?;
        if let Some(s) = &schema {
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS \"{s}\"; SET search_path TO \"{s}\""
                ))
                .map_err(pg)?;
        }
        migrate(&mut client, migrations::POSTGRES)?;
        drop(client);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .error_handler(Box::new(QuietErrors))
            .build(Manager {
                config,
                schema: schema.clone(),
            })
            .map_err(|e| Error::storage(BACKEND, format!("cannot start the pool: {e}")))?;
        Ok(PgStore {
            pool,
            schema,
            combiners: Mutex::new(HashMap::new()),
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
        self.pool
            .get()
            .map_err(|e| Error::storage(BACKEND, format!("no connection: {e}")))
    }

    /// Runs `f` in a transaction and commits if it returned `Ok`.
    fn tx<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>, &mut HashMap<&'static str, Statement>) -> Result<T>,
    ) -> Result<T> {
        let mut c = self.conn()?;
        let PgConn { client, statements } = &mut *c;
        let mut tx = client.transaction().map_err(pg)?;
        let v = f(&mut tx, statements)?;
        tx.commit().map_err(pg)?;
        Ok(v)
    }

    /// One attempt at a batch's transaction: commits when [`apply_batch`]
    /// kept something, rolls back otherwise.
    fn batch_tx(
        &self,
        batch: &[Arc<Request>],
        results: &mut [Option<Result<Outcome>>],
    ) -> std::result::Result<(), Retry> {
        let mut c = self.conn().map_err(Retry::Fail)?;
        let PgConn { client, statements } = &mut *c;
        let mut tx = client.transaction().map_err(Retry::of)?;
        match apply_batch(&mut tx, statements, batch, results) {
            Ok(true) => tx.commit().map_err(Retry::of),
            Ok(false) => tx.rollback().map_err(Retry::of),
            Err(Error::Storage { message, .. }) if message.contains(DEADLOCK_MARK) => {
                Err(Retry::Again)
            }
            Err(e) => Err(Retry::Fail(e)),
        }
    }

    /// Runs one statement outside an explicit transaction.
    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let mut c = self.conn()?;
        c.client.query(sql, params).map_err(pg)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let mut c = self.conn()?;
        c.client.execute(sql, params).map_err(pg)
    }

    fn combiner(&self, user_id: &str) -> Arc<Combiner> {
        let mut map = lock_plain(&self.combiners);
        if let Some(c) = map.get(user_id).and_then(Weak::upgrade) {
            return c;
        }
        if map.len() >= 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let c = Arc::new(Combiner::default());
        map.insert(user_id.to_owned(), Arc::downgrade(&c));
        c
    }

    /// Queues `req` with the other calls of its user and returns its
    /// outcome. When no batch of this user is running, this thread leads:
    /// it runs everything queued (its call and everyone else's, on any of
    /// the user's models) in one transaction; otherwise it waits for the
    /// running batch to finish and looks again.
    fn call(&self, req: Request) -> Result<Outcome> {
        let comb = self.combiner(&req.user);
        let req = Arc::new(req);
        let mut g = lock_plain(&comb.state);
        g.queue.push(req.clone());
        if g.leading {
            comb.arrived.notify_one();
        }
        loop {
            if let Some(r) = lock_plain(&req.result).take() {
                return r;
            }
            if g.leading {
                g = comb.done.wait(g).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            g.leading = true;
            let lead = Lead(&comb);
            // The callers of the last batch were all woken at once and are
            // queueing again: a leader that started at once would commit a
            // batch of one or two and make them wait a whole transaction
            // more. Give them a moment (a fraction of a transaction).
            let expect = g.last_batch;
            if g.queue.len() < expect {
                let deadline = std::time::Instant::now() + (g.last_tx / 2).min(MAX_GATHER);
                while g.queue.len() < expect {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        break;
                    }
                    g = comb
                        .arrived
                        .wait_timeout(g, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
            let batch = std::mem::take(&mut g.queue);
            g.last_batch = batch.len();
            drop(g);
            let started = std::time::Instant::now();
            self.run_batch(&batch);
            let took = started.elapsed();
            g = lock_plain(&comb.state);
            g.last_tx = took;
            drop(g);
            drop(lead);
            g = lock_plain(&comb.state);
        }
    }

    /// Runs a batch of one user's calls in one transaction; sets every
    /// request's result.
    fn run_batch(&self, batch: &[Arc<Request>]) {
        let mut results: Vec<Option<Result<Outcome>>> = (0..batch.len()).map(|_| None).collect();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            results.iter_mut().for_each(|r| *r = None);
            match self.batch_tx(batch, &mut results) {
                // Two instances can lock a month's usage rows and models in
                // different orders (batches spanning two months): PostgreSQL
                // aborts one; run it again.
                Err(Retry::Again) if attempt < 5 => continue,
                Err(Retry::Again) => {
                    break Err("a batch deadlocked repeatedly; try again".to_owned())
                }
                Err(Retry::Fail(e)) => {
                    break Err(match e {
                        Error::Storage { message, .. } => message,
                        other => other.to_string(),
                    })
                }
                Ok(()) => break Ok(()),
            }
        };
        for (req, r) in batch.iter().zip(results) {
            let r = match (&outcome, r) {
                // The transaction failed: nothing that succeeded inside it
                // happened.
                (Err(msg), Some(Ok(_)) | None) => Err(Error::storage(BACKEND, msg)),
                (_, Some(r)) => r,
                (Ok(()), None) => Err(Error::Internal("a combined call got no result".into())),
            };
            req.set(r);
        }
    }
}

/// The debit of `n` calls for `req`'s user, as one statement. `Ok(true)`
/// when granted.
fn debit(
    tx: &mut Transaction<'_>,
    st: &mut HashMap<&'static str, Statement>,
    user: &str,
    limits: &TierLimits,
    now: i64,
    n: u64,
) -> Result<bool> {
    debit_signed(
        tx,
        st,
        user,
        limit_of(limits),
        now,
        i64::try_from(n).unwrap_or(i64::MAX),
    )
}

fn limit_of(limits: &TierLimits) -> Option<i64> {
    limits
        .monthly_calls
        .map(|l| i64::try_from(l).unwrap_or(i64::MAX))
}

/// [`debit`] of `n` calls, negative to give back calls debited earlier in
/// the same transaction (with `limit` `None`).
fn debit_signed(
    tx: &mut Transaction<'_>,
    st: &mut HashMap<&'static str, Statement>,
    user: &str,
    limit: Option<i64>,
    now: i64,
    n: i64,
) -> Result<bool> {
    if n == 0 {
        return Ok(true);
    }
    let month = BillingMonth::from_unix(now);
    let day = i16::from(month.day_of(now));
    let s = stmt(st, tx, SQL_DEBIT)?;
    let rows = tx
        .query(&s, &[&user, &month.to_string(), &n, &limit, &day])
        .map_err(pg)?;
    Ok(!rows.is_empty())
}

fn quota_error(limits: &TierLimits, now: i64) -> Error {
    Error::QuotaExceeded {
        limit: limits.monthly_calls.unwrap_or(0),
        retry_after_secs: seconds_until_next_month(now),
    }
}

fn validate(learner: &Learner, req: &Request) -> Result<()> {
    match &req.call {
        Call::Predict { state, allowed, .. } => {
            learner.validate_predict(state.as_ref(), allowed.as_deref())
        }
        Call::Update(exps) => {
            for (i, x) in exps.iter().enumerate() {
                learner.validate(&x.as_exp()).map_err(|err| {
                    if exps.len() > 1 {
                        at_index(i, err)
                    } else {
                        err
                    }
                })?;
            }
            Ok(())
        }
    }
}

/// A model locked by a batch: its learner, the rows fetched for the batch,
/// and what the batch changed.
struct Locked {
    mid: i64,
    learner: Learner,
    n_rows: i64,
    keys: Vec<StateKey>,
    values: Vec<f64>,
    row_nos: Vec<i64>,
    table: QTable,
    touched: Vec<usize>,
    episodes_before: u64,
    updated_at: Option<i64>,
    granted: bool,
}

/// The canonical keys (encoded) a call reads or writes.
fn call_keys(
    call: &Call,
    bins: Option<&[crate::config::Bin]>,
    out: &mut Vec<Vec<u8>>,
) -> Result<()> {
    let mut add = |s: &State| -> Result<()> {
        let k = canonical_key(s.as_ref(), bins)?;
        out.push(key_bytes(k.as_ref()));
        Ok(())
    };
    match call {
        Call::Predict { state, .. } => add(state),
        Call::Update(exps) => {
            for x in exps {
                add(&x.state)?;
                add(&x.next_state)?;
            }
            Ok(())
        }
    }
}

/// Runs one call on its locked model.
fn run_call(m: &mut Locked, req: &Request) -> Result<Outcome> {
    match &req.call {
        Call::Predict {
            state,
            explore,
            allowed,
        } => m
            .learner
            .predict_full(&m.table, state.as_ref(), *explore, allowed.as_deref())
            .map(Outcome::Predicted),
        Call::Update(exps) => {
            m.updated_at = Some(m.updated_at.map_or(req.now, |t| t.max(req.now)));
            let mut outs = Vec::with_capacity(exps.len());
            for (j, x) in exps.iter().enumerate() {
                let mut rows = Tracked {
                    table: &mut m.table,
                    touched: &mut m.touched,
                };
                // Validated input always applies; should it not, what did
                // apply is written back with the rest.
                outs.push(
                    m.learner
                        .update(&mut rows, &x.as_exp())
                        .map_err(|e| at_index(j, e))?,
                );
            }
            Ok(Outcome::Updated(outs))
        }
    }
}

/// The body of [`PgStore::run_batch`]'s transaction: every call of the
/// batch belongs to one user. Per-call errors go to `results`; an `Err`
/// return aborts the transaction, `Ok(false)` rolls it back (nothing to
/// keep), `Ok(true)` commits it.
fn apply_batch(
    tx: &mut Transaction<'_>,
    st: &mut HashMap<&'static str, Statement>,
    batch: &[Arc<Request>],
    results: &mut [Option<Result<Outcome>>],
) -> Result<bool> {
    let Some(first) = batch.first() else {
        return Ok(false);
    };
    let user = first.user.as_str();
    // Lock the user's models the batch touches, in id order (every batch
    // and every instance locks in that order: no deadlock).
    let mut ids: Vec<&str> = batch.iter().map(|r| r.model.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let day_of = |r: &Request| {
        let m = BillingMonth::from_unix(r.now);
        (m, m.day_of(r.now))
    };
    // When every call has the same limit and day (the usual case), the
    // whole batch is debited optimistically in the locking statement (one
    // round trip less); calls found invalid are given back below.
    let same = batch.iter().all(|r| {
        r.limits.monthly_calls == first.limits.monthly_calls && day_of(r) == day_of(first)
    });
    let total: u64 = batch.iter().map(|r| r.n()).sum();
    let rows = if same && total > 0 {
        let (month, day) = day_of(first);
        let s = stmt(st, tx, SQL_DEBIT_LOCK_MODELS)?;
        tx.query(
            &s,
            &[
                &ids,
                &user,
                &month.to_string(),
                &i64::try_from(total).unwrap_or(i64::MAX),
                &limit_of(&first.limits),
                &i16::from(day),
            ],
        )
        .map_err(pg)?
    } else {
        let s = stmt(st, tx, SQL_LOCK_MODELS)?;
        tx.query(&s, &[&ids, &user]).map_err(pg)?
    };
    // Whether the optimistic debit of `total` was made (None: not tried).
    let pre_debited: Option<bool> = if same && total > 0 {
        match rows.first() {
            Some(r) => Some(r.get::<_, i64>(6) > 0),
            // No model of this user: every call is NotFound; the caller
            // rolls back whatever the statement debited.
            None => {
                for (i, _) in batch.iter().enumerate() {
                    results[i] = Some(Err(Error::NotFound("model")));
                }
                return Ok(false);
            }
        }
    } else {
        None
    };
    let mut models: HashMap<String, Locked> = HashMap::with_capacity(ids.len());
    for row in rows {
        let config: String = row.get(2);
        let learner = decode_learner(BACKEND, &config, row.get(3), row.get(4))?;
        let width = learner.width();
        models.insert(
            row.get(1),
            Locked {
                mid: row.get(0),
                episodes_before: learner.counters().episodes,
                learner,
                n_rows: row.get(5),
                keys: Vec::new(),
                values: Vec::new(),
                row_nos: Vec::new(),
                table: QTable::new(width),
                touched: Vec::new(),
                updated_at: None,
                granted: false,
            },
        );
    }

    // Ownership and validation: errors cost nothing. (A model of another
    // user was not locked: it is unknown here.)
    let mut live = Vec::with_capacity(batch.len());
    for (i, req) in batch.iter().enumerate() {
        match models.get(&req.model) {
            None => results[i] = Some(Err(Error::NotFound("model"))),
            Some(m) => match validate(&m.learner, req) {
                Err(e) => results[i] = Some(Err(e)),
                Ok(()) => live.push(i),
            },
        }
    }
    if live.is_empty() {
        // Nothing to keep (an optimistic debit is rolled back).
        return Ok(false);
    }

    // The quota: everything at once when it fits, else call by call.
    let live_total: u64 = live.iter().map(|&i| batch[i].n()).sum();
    let granted: Vec<usize> = if pre_debited == Some(true) {
        // Give back what the invalid calls were debited.
        let back = i64::try_from(total - live_total).unwrap_or(i64::MAX);
        debit_signed(tx, st, user, None, first.now, -back)?;
        live
    } else if pre_debited.is_none()
        && same
        && debit(tx, st, user, &first.limits, first.now, live_total)?
    {
        live
    } else {
        let mut g = Vec::with_capacity(live.len());
        for i in live {
            let r = &batch[i];
            if debit(tx, st, user, &r.limits, r.now, r.n())? {
                g.push(i);
            } else {
                results[i] = Some(Err(quota_error(&r.limits, r.now)));
            }
        }
        g
    };
    if granted.is_empty() {
        return Ok(true);
    }

    // Fetch the rows the granted calls read or write, for every model at once.
    let mut pairs: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut keys = Vec::new();
    for &i in &granted {
        let r = &batch[i];
        let Some(m) = models.get_mut(&r.model) else {
            continue;
        };
        m.granted = true;
        keys.clear();
        call_keys(&r.call, m.learner.config().state_bins.as_deref(), &mut keys)?;
        pairs.extend(keys.drain(..).map(|k| (m.mid, k)));
    }
    pairs.sort_unstable();
    pairs.dedup();
    let (mids, wanted): (Vec<i64>, Vec<Vec<u8>>) = pairs.into_iter().unzip();
    let s = stmt(st, tx, SQL_FETCH_ROWS)?;
    let fetched = tx.query(&s, &[&mids, &wanted]).map_err(pg)?;
    let by_mid: HashMap<i64, String> = models.iter().map(|(id, m)| (m.mid, id.clone())).collect();
    for r in &fetched {
        let mid: i64 = r.get(0);
        let Some(m) = by_mid.get(&mid).and_then(|id| models.get_mut(id)) else {
            continue;
        };
        m.row_nos.push(r.get(1));
        m.keys.push(decode_key(BACKEND, r.get(2))?);
        decode_values(BACKEND, r.get(3), m.learner.width(), &mut m.values)?;
    }
    for m in models.values_mut().filter(|m| m.granted) {
        let (k, v) = (std::mem::take(&mut m.keys), std::mem::take(&mut m.values));
        m.table = table_from_rows(BACKEND, m.learner.width(), k, v)?;
    }

    // Run the engine, call after call, in queue order.
    for &i in &granted {
        let r = &batch[i];
        if let Some(m) = models.get_mut(&r.model) {
            results[i] = Some(run_call(m, r));
        }
    }

    // Write back the touched rows and the learners, all models at once.
    let (mut w_mids, mut w_nos, mut w_keys, mut w_vals) = (vec![], vec![], vec![], vec![]);
    let (mut m_mids, mut m_learners, mut m_returns, mut m_rows, mut m_at) =
        (vec![], vec![], vec![], vec![], vec![]);
    for m in models.values_mut().filter(|m| m.granted) {
        let n_fetched = m.row_nos.len();
        m.touched.sort_unstable();
        m.touched.dedup();
        for &pos in &m.touched {
            let Some((k, v)) = m.table.row_at(pos) else {
                continue;
            };
            let row_no = match m.row_nos.get(pos) {
                Some(&n) => n,
                None => m.n_rows + (pos - n_fetched) as i64,
            };
            w_mids.push(m.mid);
            w_nos.push(row_no);
            w_keys.push(key_bytes(k));
            w_vals.push(values_bytes(v));
        }
        m_mids.push(m.mid);
        m_learners.push(learner_bytes(&m.learner));
        m_returns.push(
            (m.learner.counters().episodes != m.episodes_before).then(|| returns_bytes(&m.learner)),
        );
        m_rows.push(m.n_rows + (m.table.len() - n_fetched) as i64);
        m_at.push(m.updated_at);
    }
    let s = stmt(st, tx, SQL_WRITE_BACK)?;
    tx.execute(
        &s,
        &[
            &w_mids,
            &w_nos,
            &w_keys,
            &w_vals,
            &m_mids,
            &m_learners,
            &m_returns,
            &m_rows,
            &m_at,
        ],
    )
    .map_err(pg)?;
    Ok(true)
}

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        let rows = self.query("SELECT value FROM settings WHERE key = $1", &[&key])?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn set_setting_if_absent(&self, key: &str, value: &str) -> Result<String> {
        let mut c = self.conn()?;
        c.client
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )
            .map_err(pg)?;
        // A new statement sees a concurrent first writer's committed value.
        let row = c
            .client
            .query_one("SELECT value FROM settings WHERE key = $1", &[&key])
            .map_err(pg)?;
        Ok(row.get(0))
    }

    fn create_user(&self, user: NewUser, now: i64) -> Result<User> {
        let u = User {
            id: crate::tenancy::new_id(),
            email: user.email,
            password_hash: user.password_hash,
            tier: user.tier,
            role: user.role,
            created_at: now,
            password_changed_at: now,
        };
        let mut c = self.conn()?;
        c.client
            .execute(
                &format!("INSERT INTO users ({USER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                &[
                    &u.id,
                    &u.email,
                    &u.password_hash,
                    &u.tier.as_str(),
                    &u.role.as_str(),
                    &u.created_at,
                    &u.password_changed_at,
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::Conflict("email already registered".into())
                } else {
                    pg(e)
                }
            })?;
        Ok(u)
    }

    fn user(&self, id: &str) -> Result<Option<User>> {
        let rows = self.query(
            &format!("SELECT {USER_COLS} FROM users WHERE id = $1"),
            &[&id],
        )?;
        rows.first().map(user_from_row).transpose()
    }

    fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let rows = self.query(
            &format!("SELECT {USER_COLS} FROM users WHERE email = $1"),
            &[&email],
        )?;
        rows.first().map(user_from_row).transpose()
    }

    fn set_tier(&self, user_id: &str, tier: Tier) -> Result<()> {
        let n = self.execute(
            "UPDATE users SET tier = $2 WHERE id = $1",
            &[&user_id, &tier.as_str()],
        )?;
        if n == 0 {
            return Err(Error::NotFound("user"));
        }
        Ok(())
    }

    fn set_role(&self, user_id: &str, role: Role) -> Result<()> {
        let n = self.execute(
            "UPDATE users SET role = $2 WHERE id = $1",
            &[&user_id, &role.as_str()],
        )?;
        if n == 0 {
            return Err(Error::NotFound("user"));
        }
        Ok(())
    }

    fn set_password(&self, user_id: &str, password_hash: &str, now: i64) -> Result<()> {
        let n = self.execute(
            "UPDATE users SET password_hash = $2, password_changed_at = $3 WHERE id = $1",
            &[&user_id, &password_hash, &now],
        )?;
        if n == 0 {
            return Err(Error::NotFound("user"));
        }
        Ok(())
    }

    fn create_api_key(
        &self,
        user_id: &str,
        name: &str,
        prefix: &str,
        hash: &str,
        now: i64,
    ) -> Result<ApiKey> {
        let k = ApiKey {
            id: crate::tenancy::new_id(),
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            created_at: now,
            last_used_at: None,
        };
        let mut c = self.conn()?;
        let n = c
            .client
            .execute(
                "INSERT INTO api_keys (id, user_id, name, prefix, hash, created_at) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2)",
                &[&k.id, &k.user_id, &k.name, &k.prefix, &hash, &k.created_at],
            )
            .map_err(|e| {
                // Ids are random: the one unique value a caller can repeat is the hash.
                if is_unique_violation(&e) {
                    Error::Conflict("API key already exists".into())
                } else {
                    pg(e)
                }
            })?;
        if n == 0 {
            return Err(Error::NotFound("user"));
        }
        Ok(k)
    }

    fn api_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        let rows = self.query(
            "SELECT id, user_id, name, prefix, created_at, last_used_at FROM api_keys \
             WHERE user_id = $1 ORDER BY created_at, id",
            &[&user_id],
        )?;
        Ok(rows.iter().map(|r| key_from_row(r, 0)).collect())
    }

    fn delete_api_key(&self, user_id: &str, key_id: &str) -> Result<()> {
        let n = self.execute(
            "DELETE FROM api_keys WHERE id = $1 AND user_id = $2",
            &[&key_id, &user_id],
        )?;
        if n == 0 {
            return Err(Error::NotFound("API key"));
        }
        Ok(())
    }

    fn user_by_api_key(&self, hash: &str, now: i64) -> Result<Option<(User, ApiKey)>> {
        let rows = self.query(
            "SELECT u.id, u.email, u.password_hash, u.tier, u.role, u.created_at, \
                 u.password_changed_at, k.id, k.user_id, k.name, k.prefix, k.created_at, \
                 k.last_used_at FROM api_keys k JOIN users u ON u.id = k.user_id \
                 WHERE k.hash = $1",
            &[&hash],
        )?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let user = user_from_row(r)?;
        let mut key = key_from_row(r, 7);
        if key.last_used_at.is_none_or(|t| now - t >= 60) {
            self.execute(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1",
                &[&key.id, &now],
            )?;
            key.last_used_at = Some(now);
        }
        Ok(Some((user, key)))
    }

    fn create_model(
        &self,
        owner: &str,
        name: &str,
        model: &Model,
        max_models: Option<u32>,
        now: i64,
    ) -> Result<ModelInfo> {
        let l = model.learner();
        let config = config_text(BACKEND, l.config())?;
        let id = crate::tenancy::new_id();
        self.tx(|tx, _| {
            // Locking the owner's row makes count-then-insert atomic across
            // every instance.
            let user = tx
                .query_opt(
                    "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE",
                    &[&owner],
                )
                .map_err(pg)?;
            if user.is_none() {
                return Err(Error::NotFound("user"));
            }
            if let Some(limit) = max_models {
                let owned: i64 = tx
                    .query_one("SELECT COUNT(*) FROM models WHERE owner = $1", &[&owner])
                    .map_err(pg)?
                    .get(0);
                if owned >= i64::from(limit) {
                    return Err(Error::ModelLimitReached { limit });
                }
            }
            let mid: i64 = tx
                .query_one(
                    "INSERT INTO models (id, owner, name, config, learner, returns, n_rows, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
                     RETURNING mid",
                    &[
                        &id,
                        &owner,
                        &name,
                        &config,
                        &learner_bytes(l),
                        &returns_bytes(l),
                        &(model.len() as i64),
                        &now,
                    ],
                )
                .map_err(pg)?
                .get(0);
            insert_rows(tx, mid, model.table())
        })?;
        Ok(ModelInfo {
            id,
            owner: owner.to_owned(),
            name: name.to_owned(),
            config: l.config().clone(),
            stats: model.stats(),
            created_at: now,
            updated_at: now,
        })
    }

    fn models(&self, owner: &str) -> Result<Vec<ModelInfo>> {
        let rows = self.query(
            &format!("SELECT {MODEL_COLS} FROM models WHERE owner = $1 ORDER BY created_at, id"),
            &[&owner],
        )?;
        rows.iter()
            .map(|r| info_from_row(r).map(|(_, i, _)| i))
            .collect()
    }

    fn model(&self, owner: &str, id: &str) -> Result<ModelInfo> {
        let rows = self.query(
            &format!("SELECT {MODEL_COLS} FROM models WHERE id = $1 AND owner = $2"),
            &[&id, &owner],
        )?;
        let r = rows.first().ok_or(Error::NotFound("model"))?;
        info_from_row(r).map(|(_, i, _)| i)
    }

    fn update_model(
        &self,
        owner: &str,
        id: &str,
        patch: ModelPatch,
        now: i64,
    ) -> Result<ModelInfo> {
        self.tx(|tx, _| {
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT {MODEL_COLS} FROM models WHERE id = $1 AND owner = $2 FOR UPDATE"
                    ),
                    &[&id, &owner],
                )
                .map_err(pg)?
                .ok_or(Error::NotFound("model"))?;
            let (mid, mut info, mut learner) = info_from_row(&row)?;
            let n_rows: i64 = row.get(7);
            if let Some(config) = patch.config {
                let old_width = learner.width();
                if let Some((n, tables)) = learner.reconfigure(config)? {
                    let (keys, values) = load_rows(tx, mid, old_width, 0, n_rows)?;
                    let mut table = table_from_rows(BACKEND, old_width, keys, values)?;
                    table.reshape(n, tables);
                    let nos: Vec<i64> = (0..n_rows).collect();
                    let vals: Vec<Vec<u8>> = table
                        .values()
                        .chunks_exact(table.width())
                        .map(values_bytes)
                        .collect();
                    tx.execute(
                        "UPDATE q_rows q SET vals = v.vals FROM unnest($2::int8[], $3::bytea[]) \
                         AS v(row_no, vals) WHERE q.mid = $1 AND q.row_no = v.row_no",
                        &[&mid, &nos, &vals],
                    )
                    .map_err(pg)?;
                }
            }
            if let Some(name) = patch.name {
                info.name = name;
            }
            tx.execute(
                "UPDATE models SET name = $2, config = $3, learner = $4, returns = $5, \
                 updated_at = $6 WHERE mid = $1",
                &[
                    &mid,
                    &info.name,
                    &config_text(BACKEND, learner.config())?,
                    &learner_bytes(&learner),
                    &returns_bytes(&learner),
                    &now,
                ],
            )
            .map_err(pg)?;
            info.config = learner.config().clone();
            info.stats = learner.stats();
            info.updated_at = now;
            Ok(info)
        })
    }

    fn delete_model(&self, owner: &str, id: &str) -> Result<()> {
        let n = self.execute(
            "DELETE FROM models WHERE id = $1 AND owner = $2",
            &[&id, &owner],
        )?;
        if n == 0 {
            return Err(Error::NotFound("model"));
        }
        Ok(())
    }

    fn export_model(&self, owner: &str, id: &str) -> Result<Model> {
        self.tx(|tx, _| {
            // FOR SHARE: no update commits while the table is read.
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT {MODEL_COLS} FROM models WHERE id = $1 AND owner = $2 FOR SHARE"
                    ),
                    &[&id, &owner],
                )
                .map_err(pg)?
                .ok_or(Error::NotFound("model"))?;
            let (mid, _, learner) = info_from_row(&row)?;
            let n_rows: i64 = row.get(7);
            let (keys, values) = load_rows(tx, mid, learner.width(), 0, n_rows)?;
            if keys.len() as i64 != n_rows {
                return Err(corrupt(format!(
                    "model {id} has {} Q-rows, its record says {n_rows}",
                    keys.len()
                )));
            }
            let table = table_from_rows(BACKEND, learner.width(), keys, values)?;
            Model::from_parts(learner, table)
        })
    }

    fn q_table(&self, owner: &str, id: &str, offset: u64, limit: u64) -> Result<QPage> {
        self.tx(|tx, _| {
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT {MODEL_COLS} FROM models WHERE id = $1 AND owner = $2 FOR SHARE"
                    ),
                    &[&id, &owner],
                )
                .map_err(pg)?
                .ok_or(Error::NotFound("model"))?;
            let (mid, _, learner) = info_from_row(&row)?;
            let n_rows: i64 = row.get(7);
            let from = i64::try_from(offset).unwrap_or(i64::MAX).min(n_rows);
            let to = from
                .saturating_add(i64::try_from(limit).unwrap_or(i64::MAX))
                .min(n_rows);
            let (keys, values) = load_rows(tx, mid, learner.width(), from, to)?;
            let rows = keys
                .into_iter()
                .zip(values.chunks_exact(learner.width().max(1)))
                .map(|(k, v)| (k, learner.visible_q(Some(v))))
                .collect();
            Ok(QPage {
                total: n_rows.max(0) as u64,
                rows,
            })
        })
    }

    fn predict(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        state: StateRef<'_>,
        explore: bool,
        allowed: Option<&[usize]>,
    ) -> Result<Prediction> {
        let req = Request {
            model: model_id.to_owned(),
            user: meter.user_id.to_owned(),
            limits: *meter.limits,
            now: meter.now,
            call: Call::Predict {
                state: owned_state(state),
                explore,
                allowed: allowed.map(<[usize]>::to_vec),
            },
            result: Mutex::new(None),
        };
        match self.call(req)? {
            Outcome::Predicted(p) => Ok(p),
            Outcome::Updated(_) => Err(Error::Internal(
                "a prediction got an update's result".into(),
            )),
        }
    }

    fn update(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        exps: &[Experience<'_>],
    ) -> Result<Vec<UpdateOutcome>> {
        let req = Request {
            model: model_id.to_owned(),
            user: meter.user_id.to_owned(),
            limits: *meter.limits,
            now: meter.now,
            call: Call::Update(exps.iter().map(OwnedExp::of).collect()),
            result: Mutex::new(None),
        };
        match self.call(req)? {
            Outcome::Updated(o) => Ok(o),
            Outcome::Predicted(_) => Err(Error::Internal(
                "an update got a prediction's result".into(),
            )),
        }
    }

    fn usage(&self, user_id: &str, month: BillingMonth) -> Result<Usage> {
        let rows = self.query(
            "SELECT day, calls FROM usage_day WHERE user_id = $1 AND month = $2",
            &[&user_id, &month.to_string()],
        )?;
        let mut per_day = vec![0u64; month.days() as usize];
        for r in rows {
            let day: i16 = r.get(0);
            let calls: i64 = r.get(1);
            let slot = usize::try_from(day - 1)
                .ok()
                .and_then(|d| per_day.get_mut(d))
                .ok_or_else(|| corrupt(format!("usage on day {day} of {month}")))?;
            *slot = u64::try_from(calls).map_err(|_| corrupt("negative usage"))?;
        }
        Ok(Usage {
            month,
            calls: per_day.iter().sum(),
            per_day,
        })
    }

    fn flush(&self) -> Result<()> {
        // Every acknowledged call has committed; nothing is buffered.
        Ok(())
    }
}
