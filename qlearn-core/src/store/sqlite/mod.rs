//! [`SqliteStore`]: the embedded default [`Store`](super::Store), one SQLite file
//! (rusqlite, SQLite compiled in).
//!
//! # Design
//!
//! - **WAL mode, one writer thread, group commit.** Every change is a job on
//!   one queue. The writer thread takes *all* queued jobs, applies them in
//!   queue order in one transaction and commits once; each caller blocks
//!   until the transaction holding its job has committed. Under load many
//!   concurrent calls share one commit (and, at [`Durability::PowerLoss`],
//!   one fsync). Consecutive learning jobs are coalesced: a batch writes a
//!   touched Q-row, a model's learner state and a day's usage counter once,
//!   however many calls changed them. Before a batch the writer waits
//!   briefly (at most 500 us, half the last batch's time) until as many
//!   jobs are queued as its last batch had, so the callers it just woke
//!   share the next commit; after a commit it wakes only the batch's first
//!   caller, and each woken caller wakes two more (a wake-up tree), so the
//!   one thread everybody waits for does not spend its time in wake-ups.
//! - **Async callers commit their own batches.** A non-blocking call's
//!   job (its [`Durable`](super::Durable) awaited by an async task) is not
//!   the writer thread's: the first task waiting for one leads the group
//!   commit on its own thread, after the tasks its runtime had ready queued
//!   theirs, on the same connection and in the same order (`leader.rs`).
//!   No thread hand-off per batch (issue 16; docs/benchmarks-http.md,
//!   session 22).
//! - **Models are served from memory.** A model is loaded on first use (its
//!   learner and Q-table) and kept behind its own mutex, in a cache bounded
//!   by bytes ([`SqliteOptions::cache_bytes`], 256 MiB by default): the
//!   least recently used models leave memory and are reloaded from the file
//!   on demand. A model leaves only when no call holds it and its last
//!   write has committed, so nothing acknowledged or in flight is lost
//!   (`cache.rs` explains; the budget is exceeded only by the models of the
//!   calls in flight, or by one model bigger than the whole budget). `predict` and `update` run
//!   the core's [`crate::Learner`] in memory under that mutex, hand the
//!   changed rows, learner state and usage delta to the writer *while still
//!   holding the mutex* (so the queue order is the model's serial order), then
//!   wait for the commit without the mutex. Readers of other data use a small
//!   pool of read-only connections (WAL lets them read while the writer
//!   writes).
//! - **Quotas are exact.** Monthly usage is counted in memory, loaded from
//!   the database the first time a user's month is needed; the debit (check
//!   with [`crate::tenancy::check_quota`] and add) happens under one mutex
//!   before the engine runs, and its delta commits in the same transaction as
//!   the call's effect. A refused call changes nothing; an accepted call
//!   returns only after its debit and effect committed together.
//! - **One process per database file.** The in-memory model cache and
//!   usage counters are the truth for the process that holds them, so a
//!   second process writing the same file would break isolation of updates
//!   and exact quotas. [`SqliteStore::open`] therefore takes an exclusive
//!   advisory lock on `<file>-lock` (released by the kernel when the process
//!   dies, also on `kill -9`) and refuses to open a database another process
//!   holds. Several server instances sharing state use
//!   [`crate::store::postgres::PgStore`].
//! - **Whole tables in chunks.** An import, a reshape (switching to or
//!   from double Q-learning) and a deletion write or delete a model's rows
//!   in chunks of about a millisecond, one writer job each, under a table
//!   number no model uses, and switch the model to them in one small final
//!   transaction, so other tenants' commits are never held for the whole
//!   table; calls on the same model wait for the switch. A crash mid-way
//!   leaves the old model intact, and the unused rows are deleted at the
//!   next open (`tables.rs`).
//! - **Checkpoints off the writer.** Automatic checkpoints are off on the
//!   writer's connection; a checkpointer thread on its own connection folds
//!   the WAL into the database file (`PASSIVE`, after every 4 MiB of WAL
//!   and every 250 ms when something committed) and flushes the files
//!   beside the writer, so no commit waits for a copy or an fsync. Past
//!   8192 pages (32 MiB) the writer pauses between two batches, at most
//!   2 ms, for the checkpointer's last short pass, so the WAL starts over
//!   instead of growing under constant load; only at four times that size
//!   does the writer checkpoint itself (`checkpointer.rs`). Closing the
//!   store checkpoints fully.
//! - **Versioned migrations** ([`crate::store::migrations::SQLITE`]) run at
//!   open, each recorded in `schema_migrations`; a database newer than this
//!   build is refused.
//!
//! # Durability
//!
//! An acknowledged call has committed. With the default
//! [`Durability::Process`] (`synchronous=NORMAL` in WAL mode) a commit is in
//! the operating system's page cache when the call returns: it survives
//! `kill -9` or a crash of the process (what the SPEC asks), but a power loss
//! or kernel crash may lose the last commits (the database stays
//! consistent). [`Durability::PowerLoss`] (`synchronous=FULL`) fsyncs the WAL
//! at every group commit: it survives power loss too, at the cost of one
//! fsync per batch (about 5 ms on this project's test machine, which caps
//! acknowledged updates at roughly `writers / 5 ms`). The default is chosen
//! because the group-commit throughput target (50,000 updates/s) is out of
//! reach with an fsync per commit on such disks; see
//! `docs/benchmarks-storage.md` for both measured.
//!
//! # Failure
//!
//! If a commit fails (disk full, I/O error), the in-memory state is ahead of
//! the file. The store then stops: every waiting and later mutating call
//! returns [`Error::Storage`] telling the operator to reopen it; nothing
//! that was acknowledged is lost and nothing unacknowledged is reported as
//! done. Reopening reloads the truth from the file.

mod accounts;
mod billing;
mod cache;
mod calls;
mod checkpointer;
mod decision_rows;
mod decisions;
mod evaluations;
mod file_ids;
mod freer;
mod hot_log;
mod id_filter;
mod leader;
mod lock;
mod lru;
mod row_writes;
mod schema;
mod tables;
mod writer;

/// The unit tests' user: a free user `u@example.com` created at `now` in
/// `s`. Returns its id.
#[cfg(test)]
fn test_user(s: &SqliteStore, now: i64) -> String {
    use crate::store::{NewUser, Store};
    use crate::tenancy::{Role, Tier};
    let user = NewUser {
        email: "u@example.com".into(),
        password_hash: "$argon2id$fake".into(),
        tier: Tier::Free,
        role: Role::User,
    };
    s.create_user(user, now).expect("a user").id
}

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::due_models::DueModels;
use super::migrations;
use super::usage::MonthTally;
use crate::error::{Error, Result};
use crate::tenancy::BillingMonth;
use crate::FastMap;
use cache::Slot;
use checkpointer::{checkpointer_loop, Checkpoints};
use lock::acquire_process_lock;
use lru::Lru;
use schema::{migrate, open_connection};
use tables::tidy_tables;
use writer::{writer_loop, Done, Queue};

const BACKEND: &str = "sqlite";
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;
/// How long a connection waits for a lock held by a checkpoint.
const BUSY_TIMEOUT_MS: u32 = 10_000;

/// How hard SQLite works to make a commit durable (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL`: an acknowledged write survives a crash or
    /// `kill -9` of the process; a power loss may lose the last commits.
    #[default]
    Process,
    /// `synchronous=FULL`: the WAL is fsynced at every (group) commit, so an
    /// acknowledged write also survives power loss.
    PowerLoss,
}

/// Options of [`SqliteStore::open_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Commit durability; [`Durability::Process`] by default.
    pub durability: Durability,
    /// Memory budget of the model cache in bytes
    /// ([`DEFAULT_CACHE_BYTES`], 256 MiB, by default). A cached model
    /// counts its Q-table's allocation (rows x actions x 8 bytes of values,
    /// its keys and its index) plus about 1.5 KiB for its learner and
    /// record, 8 bytes per recent episode return kept (at most 1,000) and
    /// its decision log's records in memory
    /// ([`HELD_DECISION_BYTES`](crate::decisions::HELD_DECISION_BYTES) per
    /// decision); past the budget the least recently used models leave
    /// memory and are reloaded from the file when next used, and a log
    /// that would pass what the budget leaves beside its model forgets
    /// committed decisions (read back from the file when needed).
    /// `usize::MAX` keeps every model and decision (memory then grows with
    /// the models served).
    pub cache_bytes: usize,
    /// Who commits the jobs of the non-blocking calls (those whose
    /// [`Durable`](super::Durable) an async task awaits): the first waiting
    /// task, on its own thread (`true`, the default), or the writer thread
    /// (`false`). The writer thread gives commits a core of their own at
    /// the price of two thread hand-offs per batch: worth it only when the
    /// async runtime leaves a core idle for it (saas-host: fewer workers
    /// than CPUs). Blocking calls are always the writer thread's.
    pub task_commits: bool,
}

/// The default [`SqliteOptions::cache_bytes`]: 256 MiB, e.g. about 3,500
/// models of 1,000 states x 4 actions (73 KiB each with 1,000 recent
/// returns), or 430 of 10,000 states (600 KiB; `docs/benchmarks-storage.md`).
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Process,
            cache_bytes: DEFAULT_CACHE_BYTES,
            task_commits: true,
        }
    }
}

fn sq(e: rusqlite::Error) -> Error {
    Error::storage(BACKEND, e)
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn poisoned() -> Error {
    Error::storage(BACKEND, "a lock was poisoned by a panicking thread")
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::storage(BACKEND, format!("corrupt data in the database: {what}"))
}

/// Locks a mutex whose data stays consistent whatever a panicking holder
/// did (plain counters and queues).
fn lock_plain<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---- the store -----------------------------------------------------------------

struct Inner {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    /// The connection every write goes through: the writer thread's, and a
    /// leading task's (`leader.rs`); a batch is taken and committed under
    /// its lock.
    conn: Mutex<Connection>,
    /// Whether a task leads the next commit (`leader.rs`).
    leading: AtomicBool,
    /// [`SqliteOptions::task_commits`].
    task_commits: bool,
    done: Done,
    models: RwLock<FastMap<String, Slot>>,
    /// The cached models' sizes and use order, against the byte budget.
    /// Taken under a model's mutex, never under `models`' lock.
    lru: Mutex<Lru<Slot>>,
    /// The model cache's budget in bytes ([`SqliteOptions::cache_bytes`]).
    cache_budget: usize,
    /// user -> month -> that month's usage (per day, kind, overage).
    usage: Mutex<FastMap<String, FastMap<BillingMonth, MonthTally>>>,
    /// Cached models whose decision log (or its absence) is known
    /// (`decisions.rs`; the log is kept with the cached model).
    logs_held: AtomicUsize,
    /// When the decision logs were last pruned (Unix seconds).
    last_prune: AtomicI64,
    /// Each model's earliest open deadline, for the settle pass (told of
    /// every committed open decision by `writer::commit_queued`).
    due: DueModels,
    /// When the evaluation jobs were last pruned (`eval_retention.rs`).
    evals_pruned_at: AtomicI64,
    /// Frames in the WAL after the last commit (SQLite's WAL hook), read by
    /// the checkpointer and the writer (`checkpointer.rs`).
    wal_frames: Arc<AtomicI64>,
    /// The next free table number (`tables.rs`), also the next model's
    /// `mid`.
    next_tab: AtomicI64,
    /// The checkpointer's state, shared with the writer. Declared last:
    /// it holds a descriptor of the database file that must be closed only
    /// after every connection (see `Checkpoints`).
    checkpoints: Checkpoints,
    /// Frees evicted models off the evicting call's path (`cache.rs`).
    freer: freer::Freer,
}

/// The SQLite store. See the module docs for its design and guarantees.
pub struct SqliteStore {
    inner: Arc<Inner>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    /// Held for the store's life: the exclusive lock on `<file>-lock`.
    _lock: Option<File>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default
    /// options, applies pending migrations and starts the writer thread.
    /// Fails if another process has the database open.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Like [`SqliteStore::open`], with options.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let lock = acquire_process_lock(&path)?;
        let mut conn = open_connection(&path)?;
        let sync = match options.durability {
            Durability::Process => "NORMAL",
            Durability::PowerLoss => "FULL",
        };
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sq)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::storage(
                BACKEND,
                format!("cannot switch {} to WAL mode (got {mode})", path.display()),
            ));
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; \
             PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = 0;"
        ))
        .map_err(sq)?;
        migrate(&mut conn, migrations::SQLITE)?;
        decision_rows::tidy_logs(&mut conn)?;
        let next_tab = tidy_tables(&conn)?;
        // After `wal_autocheckpoint` (which replaces the hook).
        let wal_frames = Arc::new(AtomicI64::new(0));
        let frames = wal_frames.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            frames.store(i64::from(pages), Ordering::Relaxed);
            Ok(())
        }))
        .map_err(sq)?;
        conn.set_prepared_statement_cache_capacity(32);
        let checkpoints = Checkpoints::new(&path);
        let inner = Arc::new(Inner {
            path,
            readers: Mutex::new(Vec::new()),
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            conn: Mutex::new(conn),
            leading: AtomicBool::new(false),
            task_commits: options.task_commits,
            done: Done::default(),
            models: RwLock::new(FastMap::default()),
            lru: Mutex::new(Lru::new(options.cache_bytes)),
            cache_budget: options.cache_bytes,
            usage: Mutex::new(FastMap::default()),
            logs_held: AtomicUsize::new(0),
            last_prune: AtomicI64::new(0),
            due: DueModels::default(),
            evals_pruned_at: AtomicI64::new(0),
            wal_frames: wal_frames.clone(),
            next_tab: AtomicI64::new(next_tab),
            checkpoints,
            freer: freer::Freer::start()?,
        });
        let for_writer = inner.clone();
        let checkpoints = open_connection(&inner.path)?;
        let for_checkpointer = inner.clone();
        let checkpointer = std::thread::Builder::new()
            .name("qlearn-sqlite-checkpoint".into())
            .spawn(move || checkpointer_loop(for_checkpointer, checkpoints))
            .map_err(|e| Error::storage(BACKEND, format!("cannot start the checkpointer: {e}")))?;
        let writer = std::thread::Builder::new()
            .name("qlearn-sqlite-writer".into())
            .spawn(move || writer_loop(for_writer))
            .map_err(|e| Error::storage(BACKEND, format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore {
            inner,
            checkpointer: Mutex::new(Some(checkpointer)),
            writer: Mutex::new(Some(writer)),
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The schema version recorded in `schema_migrations`.
    pub fn schema_version(&self) -> Result<u32> {
        self.read(|c| {
            c.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(sq)
        })
    }

    /// The newest schema version this build knows.
    pub fn latest_schema_version() -> u32 {
        migrations::latest(migrations::SQLITE)
    }

    // ---- plumbing --------------------------------------------------------------

    /// Runs `f` on a read-only pooled connection.
    fn read<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let pooled = lock_plain(&self.inner.readers).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = open_connection(&self.inner.path)?;
                c.execute_batch("PRAGMA query_only = ON").map_err(sq)?;
                c
            }
        };
        let r = f(&mut conn);
        let mut pool = lock_plain(&self.inner.readers);
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
        r
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
