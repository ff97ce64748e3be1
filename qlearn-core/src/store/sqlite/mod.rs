//! [`SqliteStore`]: the embedded default [`Store`], one SQLite file
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
//! - **Models are served from memory.** A model is loaded once (its learner
//!   and Q-table) and kept behind its own mutex. `predict` and `update` run
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
//! - **Checkpoints in the background.** Automatic checkpoints are off on
//!   the writer's connection; a checkpointer thread folds the WAL into the
//!   database file (`PASSIVE`, every 250 ms when something committed), so
//!   no commit waits for one. When a commit leaves the WAL past 8192 pages
//!   (32 MiB), the writer finishes a checkpoint itself before the next
//!   batch, after the acknowledgements, so the WAL restarts instead of
//!   growing under constant load. Closing the store checkpoints fully.
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
//!
//! Models stay in memory once used (there is no eviction yet): memory grows
//! with the Q-tables of the models served since the store was opened.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::thread::{JoinHandle, Thread};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::encoding::{
    config_text, decode_key, decode_learner, decode_values, encode_key, encode_values, key_bytes,
    learner_bytes, returns_bytes, table_from_rows, values_bytes, Tracked,
};
use super::migrations::{self, Migration};
use super::{ApiKey, Meter, ModelInfo, ModelPatch, NewUser, QPage, Store, Usage, User};
use crate::error::{Error, Result};
use crate::model::{at_index, Experience, Learner, Model, Prediction, UpdateOutcome};
use crate::state::{StateKey, StateRef};
use crate::table::QTable;
use crate::tenancy::{check_quota, new_id, BillingMonth, Role, Tier};

const BACKEND: &str = "sqlite";
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;
/// How long a connection waits for a lock held by a checkpoint.
const BUSY_TIMEOUT_MS: u32 = 10_000;
/// WAL frames (pages) past which the writer completes a checkpoint itself
/// (background checkpoints alone never catch up under constant writes, so
/// the WAL would only grow).
const WAL_RESTART_FRAMES: i64 = 8192;

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
#[derive(Clone, Copy, Debug, Default)]
pub struct SqliteOptions {
    /// Commit durability; [`Durability::Process`] by default.
    pub durability: Durability,
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

// ---- the writer --------------------------------------------------------------

/// A row a learning job writes: its number, its key when the row is new, and
/// its values.
struct RowWrite {
    row_no: i64,
    key: Option<Vec<u8>>,
    vals: Vec<u8>,
}

/// The persistent effect of one metered call.
struct Learn {
    mid: i64,
    learner: Vec<u8>,
    returns: Option<Vec<u8>>,
    n_rows: i64,
    updated_at: Option<i64>,
    rows: Vec<RowWrite>,
    usage: Option<UsageDelta>,
}

struct UsageDelta {
    user: String,
    month: String,
    day: u8,
    n: u64,
}

/// An operation run by the writer inside a savepoint of the batch; it
/// returns whether to keep its changes (and reports its result itself).
type OpFn = Box<dyn FnOnce(&Connection) -> bool + Send>;

enum Job {
    Learn(Learn),
    Op(OpFn),
}

/// A caller waiting for its job's commit. After a commit the writer wakes
/// only the first caller of the batch; each woken caller wakes the next two
/// (caller `i` wakes `2i + 1` and `2i + 2`), so the writer, the one thread
/// everybody waits for, does not spend its time on 32 wake-ups per batch.
struct WaitSlot {
    thread: Thread,
    /// Set by the writer before it publishes the commit: the batch's
    /// waiting threads and this caller's position among them.
    batch: OnceLock<(Arc<Vec<Thread>>, usize)>,
}

/// What [`SqliteStore::wait`] waits for: a job's sequence number and its
/// caller's wake-up slot.
struct Ticket {
    seq: u64,
    slot: Arc<WaitSlot>,
}

#[derive(Default)]
struct Queue {
    /// Jobs with the thread waiting for each (unparked once it committed).
    jobs: Vec<(Job, Arc<WaitSlot>)>,
    /// Sequence number of the last job enqueued (jobs are numbered from 1).
    last_seq: u64,
    closed: bool,
    /// The writer sleeps until the queue holds this many jobs (0: it is
    /// not sleeping; enqueuers only wake it on reaching the number, not at
    /// every job).
    wake_at: usize,
}

/// The longest the writer waits for the callers of its last batch to queue
/// again before it starts a smaller batch.
const MAX_GATHER: std::time::Duration = std::time::Duration::from_micros(500);

#[derive(Default)]
struct Done {
    /// Every job up to this sequence number has committed.
    committed: AtomicU64,
    /// Whether `failure` is set.
    failed: AtomicBool,
    /// Why the store stopped (a commit failed or the writer died).
    failure: Mutex<Option<String>>,
}

impl Done {
    fn fail(&self, why: String) {
        let mut f = lock_plain(&self.failure);
        if f.is_none() {
            *f = Some(why);
        }
        self.failed.store(true, Ordering::Release);
    }

    fn failure(&self) -> Option<String> {
        lock_plain(&self.failure).clone()
    }
}

/// What a batch writes, coalesced: last learner state per model, last
/// values per row, summed usage per user and day.
#[derive(Default)]
struct Pending {
    models: HashMap<i64, PendingModel>,
    usage: HashMap<(String, String, u8), u64>,
}

struct PendingModel {
    learner: Vec<u8>,
    returns: Option<Vec<u8>>,
    n_rows: i64,
    updated_at: Option<i64>,
    rows: BTreeMap<i64, (Option<Vec<u8>>, Vec<u8>)>,
}

impl Pending {
    fn add(&mut self, l: Learn) {
        if let Some(u) = l.usage {
            *self.usage.entry((u.user, u.month, u.day)).or_insert(0) += u.n;
        }
        let m = self.models.entry(l.mid).or_insert_with(|| PendingModel {
            learner: Vec::new(),
            returns: None,
            n_rows: 0,
            updated_at: None,
            rows: BTreeMap::new(),
        });
        m.learner = l.learner;
        m.n_rows = l.n_rows;
        if l.returns.is_some() {
            m.returns = l.returns;
        }
        if l.updated_at.is_some() {
            m.updated_at = l.updated_at;
        }
        for r in l.rows {
            match m.rows.get_mut(&r.row_no) {
                Some(slot) => {
                    if r.key.is_some() {
                        slot.0 = r.key;
                    }
                    slot.1 = r.vals;
                }
                None => {
                    m.rows.insert(r.row_no, (r.key, r.vals));
                }
            }
        }
    }

    fn flush(&mut self, c: &Connection) -> rusqlite::Result<()> {
        if !self.models.is_empty() {
            let mut upd_model = c.prepare_cached(
                "UPDATE models SET learner = ?2, n_rows = ?3, \
                 updated_at = COALESCE(?4, updated_at), returns = COALESCE(?5, returns) \
                 WHERE mid = ?1",
            )?;
            let mut ins_row = c.prepare_cached(
                "INSERT INTO q_rows (mid, row_no, key, vals) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (mid, row_no) DO UPDATE SET vals = excluded.vals",
            )?;
            let mut upd_row =
                c.prepare_cached("UPDATE q_rows SET vals = ?3 WHERE mid = ?1 AND row_no = ?2")?;
            for (mid, m) in self.models.drain() {
                upd_model.execute(params![mid, m.learner, m.n_rows, m.updated_at, m.returns])?;
                for (row_no, (key, vals)) in m.rows {
                    match key {
                        Some(k) => ins_row.execute(params![mid, row_no, k, vals])?,
                        None => upd_row.execute(params![mid, row_no, vals])?,
                    };
                }
            }
        }
        if !self.usage.is_empty() {
            let mut up = c.prepare_cached(
                "INSERT INTO usage (user_id, month, day, calls) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (user_id, month, day) DO UPDATE SET calls = calls + excluded.calls",
            )?;
            for ((user, month, day), n) in self.usage.drain() {
                up.execute(params![user, month, day, n as i64])?;
            }
        }
        Ok(())
    }
}

/// Applies one batch of jobs in one transaction.
fn run_batch(c: &Connection, jobs: Vec<Job>) -> rusqlite::Result<()> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    let applied = (|| {
        let mut pending = Pending::default();
        for job in jobs {
            match job {
                Job::Learn(l) => pending.add(l),
                Job::Op(f) => {
                    pending.flush(c)?;
                    c.execute_batch("SAVEPOINT op")?;
                    if f(c) {
                        c.execute_batch("RELEASE op")?;
                    } else {
                        c.execute_batch("ROLLBACK TO op; RELEASE op")?;
                    }
                }
            }
        }
        pending.flush(c)
    })();
    match applied.and_then(|()| c.execute_batch("COMMIT")) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Marks the store failed if the writer thread ends without a clean close
/// (a panic), so no caller waits forever.
struct WriterGuard(Arc<Inner>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        let mut q = lock_plain(&self.0.queue);
        if !q.closed || !q.jobs.is_empty() {
            self.0
                .done
                .fail("the writer thread stopped unexpectedly; reopen the store".into());
        }
        q.closed = true;
        for (_, waiter) in q.jobs.drain(..) {
            waiter.thread.unpark();
        }
    }
}

fn writer_loop(inner: Arc<Inner>, conn: Connection) {
    let _guard = WriterGuard(inner.clone());
    let mut last_batch = 0usize;
    let mut last_took = std::time::Duration::ZERO;
    loop {
        let (taken, last) = {
            let mut q = lock_plain(&inner.queue);
            while q.jobs.is_empty() && !q.closed {
                q.wake_at = 1;
                q = inner
                    .queue_cv
                    .wait(q)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            // The callers of the last batch were all woken at once and are
            // queueing again: give them a moment (a fraction of a batch's
            // time) so they share the next commit instead of being split
            // over several small ones.
            if q.jobs.len() < last_batch && !q.closed {
                let deadline = std::time::Instant::now() + (last_took / 2).min(MAX_GATHER);
                while q.jobs.len() < last_batch && !q.closed {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        break;
                    }
                    q.wake_at = last_batch;
                    q = inner
                        .queue_cv
                        .wait_timeout(q, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
            q.wake_at = 0;
            if q.jobs.is_empty() {
                break;
            }
            (std::mem::take(&mut q.jobs), q.last_seq)
        };
        let started = std::time::Instant::now();
        last_batch = taken.len();
        let (jobs, waiters): (Vec<Job>, Vec<Arc<WaitSlot>>) = taken.into_iter().unzip();
        let result = run_batch(&conn, jobs);
        last_took = started.elapsed();
        let failed = result.is_err();
        match result {
            Ok(()) => {
                let threads: Arc<Vec<Thread>> =
                    Arc::new(waiters.iter().map(|w| w.thread.clone()).collect());
                for (i, w) in waiters.iter().enumerate() {
                    let _ = w.batch.set((threads.clone(), i));
                }
                inner.done.committed.store(last, Ordering::Release);
                // The rest wake each other (see `WaitSlot`).
                if let Some(first) = threads.first() {
                    first.unpark();
                }
            }
            Err(e) => {
                inner.done.fail(format!(
                    "a commit failed ({e}); the store has stopped: reopen it"
                ));
                for w in waiters {
                    w.thread.unpark();
                }
            }
        }
        if failed {
            // The guard closes the queue and wakes whoever still waits.
            return;
        }
        // After the acknowledgements: bound the WAL (see `wal_full`).
        if inner.wal_frames.load(Ordering::Relaxed) > WAL_RESTART_FRAMES {
            // Busy while the checkpointer runs one: then the next batch
            // tries again (the hook keeps reporting the WAL's size). A
            // complete checkpoint lets the next commit restart the WAL.
            let _ = checkpoint(&conn);
        }
    }
    // Clean close: fold the WAL into the database file.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// A passive checkpoint: `(frames in the WAL, frames checkpointed)`.
fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

/// Folds the WAL into the database file in the background (`PASSIVE`:
/// never blocks the writer), so commits never wait for a checkpoint.
fn checkpointer_loop(inner: Arc<Inner>, conn: Connection) {
    let mut last = 0;
    loop {
        {
            let closing = lock_plain(&inner.closing);
            if *closing {
                return;
            }
            let (closing, _) = inner
                .closing_cv
                .wait_timeout(closing, std::time::Duration::from_millis(250))
                .unwrap_or_else(PoisonError::into_inner);
            if *closing {
                return;
            }
        }
        let committed = inner.done.committed.load(Ordering::Acquire);
        if committed != last {
            last = committed;
            let _ = checkpoint(&conn);
        }
    }
}

// ---- the model cache ---------------------------------------------------------

/// A model held in memory: its learner, its table and its metadata.
struct Cached {
    id: String,
    mid: i64,
    owner: String,
    name: String,
    created_at: i64,
    updated_at: i64,
    learner: Learner,
    table: QTable,
    deleted: bool,
}

impl Cached {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: self.id.clone(),
            owner: self.owner.clone(),
            name: self.name.clone(),
            config: self.learner.config().clone(),
            stats: self.learner.stats(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

enum SlotState {
    /// Being loaded by the thread holding the slot's mutex.
    Loading,
    Ready(Box<Cached>),
    /// Deleted, or its load failed: look it up again.
    Gone,
}

type Slot = Arc<Mutex<SlotState>>;

/// A debit made in memory, to be committed with the call's effect.
struct Debit {
    user: String,
    month: BillingMonth,
    day: u8,
    n: u64,
}

// ---- the store -----------------------------------------------------------------

struct Inner {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    done: Done,
    models: RwLock<HashMap<String, Slot>>,
    /// user -> month -> calls per day (index 0 = the 1st).
    usage: Mutex<HashMap<String, HashMap<BillingMonth, Vec<u64>>>>,
    /// Frames in the WAL after the last commit (SQLite's WAL hook): past
    /// [`WAL_RESTART_FRAMES`] the writer checkpoints once between batches
    /// (with no write in flight it completes, so the next transaction
    /// restarts the WAL).
    wal_frames: Arc<AtomicI64>,
    /// Set (and signalled) when the store closes: stops the checkpointer.
    closing: Mutex<bool>,
    closing_cv: Condvar,
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

fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-lock");
    PathBuf::from(s)
}

#[cfg(unix)]
fn acquire_process_lock(path: &Path) -> Result<Option<File>> {
    use rustix::fs::{flock, FlockOperation};
    let lp = lock_path(path);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lp)
        .map_err(|e| Error::storage(BACKEND, format!("cannot open {}: {e}", lp.display())))?;
    match flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(f)),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(Error::storage(
            BACKEND,
            format!(
                "{} is in use by another process; a SQLite database serves one process \
                 (use PostgreSQL for several instances)",
                path.display()
            ),
        )),
        Err(e) => Err(Error::storage(
            BACKEND,
            format!("cannot lock {}: {e}", lp.display()),
        )),
    }
}

#[cfg(not(unix))]
fn acquire_process_lock(_path: &Path) -> Result<Option<File>> {
    // No advisory lock on this platform: one process per file is the
    // operator's responsibility here.
    Ok(None)
}

fn open_connection(path: &Path) -> Result<Connection> {
    let c = Connection::open(path)
        .map_err(|e| Error::storage(BACKEND, format!("cannot open {}: {e}", path.display())))?;
    c.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into()))
        .map_err(sq)?;
    Ok(c)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Applies every migration newer than the database's version.
fn migrate(c: &mut Connection, list: &[Migration]) -> Result<()> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
           version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .map_err(sq)?;
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sq)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(sq)?;
    let latest = i64::from(migrations::latest(list));
    if current > latest {
        return Err(Error::storage(
            BACKEND,
            format!(
                "the database has schema version {current}, newer than this build knows \
                 ({latest}); use a newer qlearn"
            ),
        ));
    }
    for m in list.iter().filter(|m| i64::from(m.version) > current) {
        tx.execute_batch(m.sql).map_err(|e| {
            Error::storage(
                BACKEND,
                format!("migration {} ({}) failed: {e}", m.version, m.name),
            )
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, now_unix()],
        )
        .map_err(sq)?;
    }
    tx.commit().map_err(sq)
}

fn user_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<(User, String, String)> {
    Ok((
        User {
            id: r.get(at)?,
            email: r.get(at + 1)?,
            password_hash: r.get(at + 2)?,
            tier: Tier::Free,
            role: Role::User,
            created_at: r.get(at + 5)?,
            password_changed_at: r.get(at + 6)?,
        },
        r.get(at + 3)?,
        r.get(at + 4)?,
    ))
}

fn finish_user((mut u, tier, role): (User, String, String)) -> Result<User> {
    u.tier = tier
        .parse()
        .map_err(|_| corrupt(format!("unknown tier {tier:?}")))?;
    u.role = role
        .parse()
        .map_err(|_| corrupt(format!("unknown role {role:?}")))?;
    Ok(u)
}

const USER_COLS: &str = "id, email, password_hash, tier, role, created_at, password_changed_at";

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        created_at: r.get(4)?,
        last_used_at: r.get(5)?,
    })
}

const KEY_COLS: &str = "k.id, k.user_id, k.name, k.prefix, k.created_at, k.last_used_at";

fn user_exists(c: &Connection, id: &str) -> Result<bool> {
    c.query_row("SELECT 1 FROM users WHERE id = ?1", [id], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
        .map_err(sq)
}

/// A model's metadata row, decoded.
struct ModelRow {
    mid: i64,
    id: String,
    owner: String,
    name: String,
    learner: Learner,
    n_rows: i64,
    created_at: i64,
    updated_at: i64,
}

const MODEL_COLS: &str =
    "mid, id, owner, name, config, learner, returns, n_rows, created_at, updated_at";

fn model_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ModelRow>> {
    let config: String = r.get(4)?;
    let learner: Vec<u8> = r.get(5)?;
    let returns: Vec<u8> = r.get(6)?;
    let decoded = decode_learner(BACKEND, &config, &learner, &returns);
    Ok(match decoded {
        Ok(learner) => Ok(ModelRow {
            mid: r.get(0)?,
            id: r.get(1)?,
            owner: r.get(2)?,
            name: r.get(3)?,
            learner,
            n_rows: r.get(7)?,
            created_at: r.get(8)?,
            updated_at: r.get(9)?,
        }),
        Err(e) => Err(e),
    })
}

impl ModelRow {
    fn info(self) -> ModelInfo {
        ModelInfo {
            id: self.id,
            owner: self.owner,
            name: self.name,
            config: self.learner.config().clone(),
            stats: self.learner.stats(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Rows per execution of the multi-row insert of a whole table.
const ROWS_PER_INSERT: usize = 128;

/// `INSERT INTO q_rows ... VALUES (?,?,?,?), ...` for `rows` rows.
fn multi_row_insert(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO q_rows (mid, row_no, key, vals) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?)");
    }
    sql
}

/// Keys and values of a whole table, encoded for insertion.
struct EncodedRows {
    keys: Vec<u8>,
    /// End offset of each key in `keys`.
    ends: Vec<usize>,
    vals: Vec<u8>,
    width: usize,
}

impl EncodedRows {
    fn of(table: &QTable) -> Self {
        let mut keys = Vec::with_capacity(table.len() * 9);
        let mut ends = Vec::with_capacity(table.len());
        for k in table.keys() {
            encode_key(k, &mut keys);
            ends.push(keys.len());
        }
        let mut vals = Vec::with_capacity(table.values().len() * 8);
        encode_values(table.values(), &mut vals);
        EncodedRows {
            keys,
            ends,
            vals,
            width: table.width(),
        }
    }

    /// Inserts every row, [`ROWS_PER_INSERT`] rows per statement execution
    /// (a large table spends its time in per-statement overhead otherwise).
    fn insert(&self, c: &Connection, mid: i64) -> rusqlite::Result<()> {
        let w8 = self.width * 8;
        let n = self.ends.len();
        let full = n / ROWS_PER_INSERT * ROWS_PER_INSERT;
        let mut many = c.prepare(&multi_row_insert(ROWS_PER_INSERT))?;
        let mut key_start = 0;
        let mut i = 0;
        while i < full {
            for j in 0..ROWS_PER_INSERT {
                let r = i + j;
                let at = j * 4;
                let end = self.ends[r];
                many.raw_bind_parameter(at + 1, mid)?;
                many.raw_bind_parameter(at + 2, r as i64)?;
                many.raw_bind_parameter(at + 3, &self.keys[key_start..end])?;
                many.raw_bind_parameter(at + 4, &self.vals[r * w8..(r + 1) * w8])?;
                key_start = end;
            }
            many.raw_execute()?;
            i += ROWS_PER_INSERT;
        }
        let mut one = c.prepare_cached(
            "INSERT INTO q_rows (mid, row_no, key, vals) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for r in full..n {
            let end = self.ends[r];
            one.execute(params![
                mid,
                r as i64,
                &self.keys[key_start..end],
                &self.vals[r * w8..(r + 1) * w8]
            ])?;
            key_start = end;
        }
        Ok(())
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
        // After `wal_autocheckpoint` (which replaces the hook).
        let wal_frames = Arc::new(AtomicI64::new(0));
        let frames = wal_frames.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            frames.store(i64::from(pages), Ordering::Relaxed);
            Ok(())
        }))
        .map_err(sq)?;
        conn.set_prepared_statement_cache_capacity(32);
        let inner = Arc::new(Inner {
            path,
            readers: Mutex::new(Vec::new()),
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            done: Done::default(),
            models: RwLock::new(HashMap::new()),
            usage: Mutex::new(HashMap::new()),
            wal_frames: wal_frames.clone(),
            closing: Mutex::new(false),
            closing_cv: Condvar::new(),
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
            .spawn(move || writer_loop(for_writer, conn))
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

    fn enqueue(&self, job: Job) -> Result<Ticket> {
        let slot = Arc::new(WaitSlot {
            thread: std::thread::current(),
            batch: OnceLock::new(),
        });
        let mut q = lock_plain(&self.inner.queue);
        if q.closed {
            drop(q);
            return Err(Error::storage(
                BACKEND,
                self.inner
                    .done
                    .failure()
                    .unwrap_or_else(|| "the store is closed".into()),
            ));
        }
        q.last_seq += 1;
        let seq = q.last_seq;
        q.jobs.push((job, slot.clone()));
        let wake = q.wake_at > 0 && q.jobs.len() >= q.wake_at;
        if wake {
            q.wake_at = 0;
        }
        drop(q);
        if wake {
            self.inner.queue_cv.notify_one();
        }
        Ok(Ticket { seq, slot })
    }

    /// Blocks until the ticket's job has committed, then wakes the next
    /// callers of its batch (see [`WaitSlot`]).
    fn wait(&self, ticket: Ticket) -> Result<()> {
        let done = &self.inner.done;
        loop {
            if done.committed.load(Ordering::Acquire) >= ticket.seq {
                if let Some((threads, i)) = ticket.slot.batch.get() {
                    for next in [2 * i + 1, 2 * i + 2] {
                        if let Some(t) = threads.get(next) {
                            t.unpark();
                        }
                    }
                }
                return Ok(());
            }
            if done.failed.load(Ordering::Acquire) {
                return Err(Error::storage(BACKEND, done.failure().unwrap_or_default()));
            }
            // The timeout only guards against a lost wake-up.
            std::thread::park_timeout(std::time::Duration::from_millis(100));
        }
    }

    /// Runs `f` in the writer (in a savepoint of the next batch) and returns
    /// its result once the batch has committed.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pending = self.start_write(f)?;
        self.finish_write(pending)
    }

    /// Enqueues `f` for the writer; [`SqliteStore::finish_write`] waits for
    /// it (the caller may work meanwhile).
    fn start_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<(Ticket, mpsc::Receiver<Result<T>>)> {
        let (tx, rx) = mpsc::sync_channel::<Result<T>>(1);
        let seq = self.enqueue(Job::Op(Box::new(move |c| {
            let r = f(c);
            let ok = r.is_ok();
            let _ = tx.send(r);
            ok
        })))?;
        Ok((seq, rx))
    }

    fn finish_write<T>(&self, (seq, rx): (Ticket, mpsc::Receiver<Result<T>>)) -> Result<T> {
        self.wait(seq)?;
        rx.recv()
            .map_err(|_| Error::storage(BACKEND, "the writer dropped an operation"))?
    }

    fn shutdown(&self) -> Result<()> {
        *lock_plain(&self.inner.closing) = true;
        self.inner.closing_cv.notify_all();
        if let Some(c) = lock_plain(&self.checkpointer).take() {
            let _ = c.join();
        }
        let handle = lock_plain(&self.writer).take();
        let Some(handle) = handle else {
            return Ok(());
        };
        lock_plain(&self.inner.queue).closed = true;
        self.inner.queue_cv.notify_all();
        handle
            .join()
            .map_err(|_| Error::storage(BACKEND, "the writer thread panicked"))?;
        match self.inner.done.failure() {
            Some(f) => Err(Error::storage(BACKEND, f)),
            None => Ok(()),
        }
    }

    /// Reads a model's metadata and Q-table from the database.
    fn load(&self, owner: &str, id: &str) -> Result<Cached> {
        self.read(|c| {
            let tx = c.transaction().map_err(sq)?;
            let row = tx
                .query_row(
                    &format!("SELECT {MODEL_COLS} FROM models WHERE id = ?1 AND owner = ?2"),
                    [id, owner],
                    model_row,
                )
                .optional()
                .map_err(sq)?
                .ok_or(Error::NotFound("model"))??;
            let width = row.learner.width();
            let n = usize::try_from(row.n_rows).map_err(|_| corrupt("negative row count"))?;
            let mut keys = Vec::with_capacity(n);
            let mut values = Vec::with_capacity(n.saturating_mul(width));
            {
                let mut st = tx
                    .prepare_cached(
                        "SELECT row_no, key, vals FROM q_rows WHERE mid = ?1 ORDER BY row_no",
                    )
                    .map_err(sq)?;
                let mut rows = st.query([row.mid]).map_err(sq)?;
                while let Some(r) = rows.next().map_err(sq)? {
                    let row_no: i64 = r.get(0).map_err(sq)?;
                    if row_no != keys.len() as i64 {
                        return Err(corrupt(format!(
                            "model {id}: Q-row {row_no} where {} was expected",
                            keys.len()
                        )));
                    }
                    let k = r.get_ref(1).map_err(sq)?.as_blob().map_err(corrupt)?;
                    keys.push(decode_key(BACKEND, k)?);
                    let v = r.get_ref(2).map_err(sq)?.as_blob().map_err(corrupt)?;
                    decode_values(BACKEND, v, width, &mut values)?;
                }
            }
            if keys.len() != n {
                return Err(corrupt(format!(
                    "model {id} has {} Q-rows, its record says {n}",
                    keys.len()
                )));
            }
            let table = table_from_rows(BACKEND, width, keys, values)?;
            Ok(Cached {
                id: row.id,
                mid: row.mid,
                owner: row.owner,
                name: row.name,
                created_at: row.created_at,
                updated_at: row.updated_at,
                learner: row.learner,
                table,
                deleted: false,
            })
        })
    }

    /// The cache slot of model `id`, loading it (for `owner`) if absent.
    fn slot(&self, owner: &str, id: &str) -> Result<Slot> {
        if let Some(s) = self.inner.models.read().map_err(|_| poisoned())?.get(id) {
            return Ok(s.clone());
        }
        let slot: Slot = Arc::new(Mutex::new(SlotState::Loading));
        let mut guard = slot.lock().map_err(|_| poisoned())?;
        {
            let mut map = self.inner.models.write().map_err(|_| poisoned())?;
            if let Some(s) = map.get(id) {
                return Ok(s.clone());
            }
            map.insert(id.to_owned(), slot.clone());
        }
        match self.load(owner, id) {
            Ok(c) => {
                *guard = SlotState::Ready(Box::new(c));
                drop(guard);
                Ok(slot)
            }
            Err(e) => {
                *guard = SlotState::Gone;
                drop(guard);
                let mut map = self.inner.models.write().map_err(|_| poisoned())?;
                if map.get(id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    map.remove(id);
                }
                Err(e)
            }
        }
    }

    /// Runs `f` on `owner`'s model `id` under its lock (loading it if
    /// needed). Another owner's model is [`Error::NotFound`].
    fn with_model<R>(
        &self,
        owner: &str,
        id: &str,
        f: impl FnOnce(&mut Cached) -> Result<R>,
    ) -> Result<R> {
        // A slot seen `Gone` was deleted or failed to load for someone else:
        // look again (a few times at most).
        for _ in 0..4 {
            let slot = self.slot(owner, id)?;
            let mut g = slot.lock().map_err(|_| poisoned())?;
            let SlotState::Ready(c) = &mut *g else {
                continue;
            };
            if c.owner != owner {
                return Err(Error::NotFound("model"));
            }
            let r = f(c);
            if c.deleted {
                *g = SlotState::Gone;
                drop(g);
                let mut map = self.inner.models.write().map_err(|_| poisoned())?;
                if map.get(id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    map.remove(id);
                }
            }
            return r;
        }
        Err(Error::NotFound("model"))
    }

    fn usage_days_from_db(&self, user_id: &str, month: BillingMonth) -> Result<Vec<u64>> {
        let mut days = vec![0u64; month.days() as usize];
        self.read(|c| {
            let mut st = c
                .prepare_cached("SELECT day, calls FROM usage WHERE user_id = ?1 AND month = ?2")
                .map_err(sq)?;
            let rows = st
                .query_map(params![user_id, month.to_string()], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(sq)?;
            for r in rows {
                let (day, calls) = r.map_err(sq)?;
                let slot = usize::try_from(day - 1)
                    .ok()
                    .and_then(|d| days.get_mut(d))
                    .ok_or_else(|| corrupt(format!("usage on day {day} of {month}")))?;
                *slot = u64::try_from(calls).map_err(|_| corrupt("negative usage"))?;
            }
            Ok(())
        })?;
        Ok(days)
    }

    /// Debits `n` calls in memory or refuses without counting.
    fn debit(&self, meter: &Meter<'_>, n: u64) -> Result<Debit> {
        let month = BillingMonth::from_unix(meter.now);
        let mut usage = self.inner.usage.lock().map_err(|_| poisoned())?;
        let known = usage
            .get(meter.user_id)
            .is_some_and(|m| m.contains_key(&month));
        if !known {
            let days = self.usage_days_from_db(meter.user_id, month)?;
            usage
                .entry(meter.user_id.to_owned())
                .or_default()
                .insert(month, days);
        }
        let days = usage
            .get_mut(meter.user_id)
            .and_then(|m| m.get_mut(&month))
            .ok_or_else(|| Error::Internal("usage entry vanished".into()))?;
        let used: u64 = days.iter().sum();
        check_quota(meter.limits, used, n, meter.now)?;
        let day = month.day_of(meter.now);
        if let Some(slot) = days.get_mut(usize::from(day).saturating_sub(1)) {
            *slot += n;
        }
        Ok(Debit {
            user: meter.user_id.to_owned(),
            month,
            day,
            n,
        })
    }

    /// Gives back a debit whose call did not happen.
    fn refund(&self, d: &Debit) {
        let mut usage = lock_plain(&self.inner.usage);
        if let Some(slot) = usage
            .get_mut(&d.user)
            .and_then(|m| m.get_mut(&d.month))
            .and_then(|days| days.get_mut(usize::from(d.day).saturating_sub(1)))
        {
            *slot = slot.saturating_sub(d.n);
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn learn_job(c: &Cached, debit: Debit, returns: bool, rows: Vec<RowWrite>) -> Learn {
    Learn {
        mid: c.mid,
        learner: learner_bytes(&c.learner),
        returns: returns.then(|| returns_bytes(&c.learner)),
        n_rows: c.table.len() as i64,
        updated_at: (!rows.is_empty() || returns).then_some(c.updated_at),
        rows,
        usage: Some(UsageDelta {
            user: debit.user,
            month: debit.month.to_string(),
            day: debit.day,
            n: debit.n,
        }),
    }
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sq)
        })
    }

    fn set_setting_if_absent(&self, key: &str, value: &str) -> Result<String> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                [&key, &value],
            )
            .map_err(sq)?;
            c.query_row("SELECT value FROM settings WHERE key = ?1", [&key], |r| {
                r.get(0)
            })
            .map_err(sq)
        })
    }

    fn create_user(&self, user: NewUser, now: i64) -> Result<User> {
        let u = User {
            id: new_id(),
            email: user.email,
            password_hash: user.password_hash,
            tier: user.tier,
            role: user.role,
            created_at: now,
            password_changed_at: now,
        };
        let rec = u.clone();
        self.write(move |c| {
            c.execute(
                &format!("INSERT INTO users ({USER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    rec.id,
                    rec.email,
                    rec.password_hash,
                    rec.tier.as_str(),
                    rec.role.as_str(),
                    rec.created_at,
                    rec.password_changed_at
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::Conflict("email already registered".into())
                } else {
                    sq(e)
                }
            })?;
            Ok(())
        })?;
        Ok(u)
    }

    fn user(&self, id: &str) -> Result<Option<User>> {
        let row = self.read(|c| {
            c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                |r| user_from_row(r, 0),
            )
            .optional()
            .map_err(sq)
        })?;
        row.map(finish_user).transpose()
    }

    fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let row = self.read(|c| {
            c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE email = ?1"),
                [email],
                |r| user_from_row(r, 0),
            )
            .optional()
            .map_err(sq)
        })?;
        row.map(finish_user).transpose()
    }

    fn set_tier(&self, user_id: &str, tier: Tier) -> Result<()> {
        let id = user_id.to_owned();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE users SET tier = ?2 WHERE id = ?1",
                    [&id, tier.as_str()],
                )
                .map_err(sq)?;
            if n == 0 {
                return Err(Error::NotFound("user"));
            }
            Ok(())
        })
    }

    fn set_role(&self, user_id: &str, role: Role) -> Result<()> {
        let id = user_id.to_owned();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE users SET role = ?2 WHERE id = ?1",
                    [&id, role.as_str()],
                )
                .map_err(sq)?;
            if n == 0 {
                return Err(Error::NotFound("user"));
            }
            Ok(())
        })
    }

    fn set_password(&self, user_id: &str, password_hash: &str, now: i64) -> Result<()> {
        let (id, hash) = (user_id.to_owned(), password_hash.to_owned());
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE users SET password_hash = ?2, password_changed_at = ?3 WHERE id = ?1",
                    params![id, hash, now],
                )
                .map_err(sq)?;
            if n == 0 {
                return Err(Error::NotFound("user"));
            }
            Ok(())
        })
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
            id: new_id(),
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            created_at: now,
            last_used_at: None,
        };
        let (rec, hash) = (k.clone(), hash.to_owned());
        self.write(move |c| {
            if !user_exists(c, &rec.user_id)? {
                return Err(Error::NotFound("user"));
            }
            c.execute(
                "INSERT INTO api_keys (id, user_id, name, prefix, hash, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    rec.id,
                    rec.user_id,
                    rec.name,
                    rec.prefix,
                    hash,
                    rec.created_at
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::Conflict("API key already exists".into())
                } else {
                    sq(e)
                }
            })?;
            Ok(())
        })?;
        Ok(k)
    }

    fn api_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {KEY_COLS} FROM api_keys k WHERE k.user_id = ?1 \
                     ORDER BY k.created_at, k.id"
                ))
                .map_err(sq)?;
            let rows = st.query_map([user_id], key_from_row).map_err(sq)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })
    }

    fn delete_api_key(&self, user_id: &str, key_id: &str) -> Result<()> {
        let (user, key) = (user_id.to_owned(), key_id.to_owned());
        self.write(move |c| {
            let n = c
                .execute(
                    "DELETE FROM api_keys WHERE id = ?1 AND user_id = ?2",
                    [&key, &user],
                )
                .map_err(sq)?;
            if n == 0 {
                return Err(Error::NotFound("API key"));
            }
            Ok(())
        })
    }

    fn user_by_api_key(&self, hash: &str, now: i64) -> Result<Option<(User, ApiKey)>> {
        let found = self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT {KEY_COLS}, u.id, u.email, u.password_hash, u.tier, u.role, \
                     u.created_at, u.password_changed_at \
                     FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.hash = ?1"
                ),
                [hash],
                |r| Ok((key_from_row(r)?, user_from_row(r, 6)?)),
            )
            .optional()
            .map_err(sq)
        })?;
        let Some((mut key, user)) = found else {
            return Ok(None);
        };
        let user = finish_user(user)?;
        if key.last_used_at.is_none_or(|t| now - t >= 60) {
            let id = key.id.clone();
            self.write(move |c| {
                c.execute(
                    "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
                    params![id, now],
                )
                .map_err(sq)?;
                Ok(())
            })?;
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
        let rows = EncodedRows::of(model.table());
        let l = model.learner();
        let config = config_text(BACKEND, l.config())?;
        let (lb, rb) = (learner_bytes(l), returns_bytes(l));
        let id = new_id();
        let (w_owner, w_name, w_id) = (owner.to_owned(), name.to_owned(), id.clone());
        let n_rows = model.len() as i64;
        let pending = self.start_write(move |c| {
            if !user_exists(c, &w_owner)? {
                return Err(Error::NotFound("user"));
            }
            if let Some(limit) = max_models {
                let owned: i64 = c
                    .query_row(
                        "SELECT COUNT(*) FROM models WHERE owner = ?1",
                        [&w_owner],
                        |r| r.get(0),
                    )
                    .map_err(sq)?;
                if owned >= i64::from(limit) {
                    return Err(Error::ModelLimitReached { limit });
                }
            }
            c.execute(
                "INSERT INTO models (id, owner, name, config, learner, returns, n_rows, \
                 created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                params![w_id, w_owner, w_name, config, lb, rb, n_rows, now],
            )
            .map_err(sq)?;
            let mid = c.last_insert_rowid();
            rows.insert(c, mid).map_err(sq)?;
            Ok(mid)
        })?;
        // The cache's copy is made while the writer inserts the rows.
        let (learner, table) = model.clone().into_parts();
        let mid = self.finish_write(pending)?;
        let cached = Cached {
            id: id.clone(),
            mid,
            owner: owner.to_owned(),
            name: name.to_owned(),
            created_at: now,
            updated_at: now,
            learner,
            table,
            deleted: false,
        };
        let info = cached.info();
        self.inner
            .models
            .write()
            .map_err(|_| poisoned())?
            .entry(id)
            .or_insert_with(|| Arc::new(Mutex::new(SlotState::Ready(Box::new(cached)))));
        Ok(info)
    }

    fn models(&self, owner: &str) -> Result<Vec<ModelInfo>> {
        let rows = self.read(|c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {MODEL_COLS} FROM models WHERE owner = ?1 ORDER BY created_at, id"
                ))
                .map_err(sq)?;
            let rows = st.query_map([owner], model_row).map_err(sq)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })?;
        rows.into_iter().map(|r| r.map(ModelRow::info)).collect()
    }

    fn model(&self, owner: &str, id: &str) -> Result<ModelInfo> {
        self.with_model(owner, id, |c| Ok(c.info()))
    }

    fn update_model(
        &self,
        owner: &str,
        id: &str,
        patch: ModelPatch,
        now: i64,
    ) -> Result<ModelInfo> {
        self.with_model(owner, id, |c| {
            // Change copies; the cache takes them only once committed.
            let mut learner = c.learner.clone();
            let mut reshaped = None;
            if let Some(config) = patch.config {
                if let Some((n, tables)) = learner.reconfigure(config)? {
                    let mut t = c.table.clone();
                    t.reshape(n, tables);
                    reshaped = Some(t);
                }
            }
            let name = patch.name.unwrap_or_else(|| c.name.clone());
            let config = config_text(BACKEND, learner.config())?;
            let (lb, rb) = (learner_bytes(&learner), returns_bytes(&learner));
            let vals = reshaped.as_ref().map(|t| values_bytes(t.values()));
            let width8 = learner.width() * 8;
            let (mid, w_name) = (c.mid, name.clone());
            self.write(move |conn| {
                conn.execute(
                    "UPDATE models SET name = ?2, config = ?3, learner = ?4, returns = ?5, \
                     updated_at = ?6 WHERE mid = ?1",
                    params![mid, w_name, config, lb, rb, now],
                )
                .map_err(sq)?;
                if let Some(vals) = vals {
                    let mut st = conn
                        .prepare_cached(
                            "UPDATE q_rows SET vals = ?3 WHERE mid = ?1 AND row_no = ?2",
                        )
                        .map_err(sq)?;
                    for (i, chunk) in vals.chunks_exact(width8).enumerate() {
                        st.execute(params![mid, i as i64, chunk]).map_err(sq)?;
                    }
                }
                Ok(())
            })?;
            c.learner = learner;
            if let Some(t) = reshaped {
                c.table = t;
            }
            c.name = name;
            c.updated_at = now;
            Ok(c.info())
        })
    }

    fn delete_model(&self, owner: &str, id: &str) -> Result<()> {
        self.with_model(owner, id, |c| {
            let mid = c.mid;
            self.write(move |conn| {
                conn.execute("DELETE FROM q_rows WHERE mid = ?1", [mid])
                    .map_err(sq)?;
                conn.execute("DELETE FROM models WHERE mid = ?1", [mid])
                    .map_err(sq)?;
                Ok(())
            })?;
            c.deleted = true;
            Ok(())
        })
    }

    fn export_model(&self, owner: &str, id: &str) -> Result<Model> {
        self.with_model(owner, id, |c| {
            Model::from_parts(c.learner.clone(), c.table.clone())
        })
    }

    fn q_table(&self, owner: &str, id: &str, offset: u64, limit: u64) -> Result<QPage> {
        self.with_model(owner, id, |c| {
            let len = c.table.len();
            let off = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
            let lim = usize::try_from(limit).unwrap_or(usize::MAX);
            let end = off.saturating_add(lim).min(len);
            let rows = (off..end)
                .filter_map(|i| c.table.row_at(i))
                .map(|(k, r)| (StateKey::from_canonical(k), c.learner.visible_q(Some(r))))
                .collect();
            Ok(QPage {
                total: len as u64,
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
        let (prediction, seq) = self.with_model(meter.user_id, model_id, |c| {
            // Validate first: errors cost nothing and change nothing.
            c.learner.validate_predict(state, allowed)?;
            let debit = self.debit(meter, 1)?;
            let p = match c.learner.predict_full(&c.table, state, explore, allowed) {
                Ok(p) => p,
                Err(e) => {
                    self.refund(&debit);
                    return Err(e);
                }
            };
            // Enqueued under the model's lock: the queue order is its serial order.
            let seq = self.enqueue(Job::Learn(learn_job(c, debit, false, Vec::new())))?;
            Ok((p, seq))
        })?;
        self.wait(seq)?;
        Ok(prediction)
    }

    fn update(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        exps: &[Experience<'_>],
    ) -> Result<Vec<UpdateOutcome>> {
        let (out, seq) = self.with_model(meter.user_id, model_id, |c| {
            for (i, x) in exps.iter().enumerate() {
                c.learner.validate(x).map_err(|err| {
                    if exps.len() > 1 {
                        at_index(i, err)
                    } else {
                        err
                    }
                })?;
            }
            let debit = self.debit(meter, exps.len() as u64)?;
            if exps.is_empty() {
                return Ok((Ok(Vec::new()), None));
            }
            let len_before = c.table.len();
            let episodes_before = c.learner.counters().episodes;
            let mut touched = Vec::with_capacity(exps.len());
            let mut out = Vec::with_capacity(exps.len());
            let mut failure = None;
            for (i, x) in exps.iter().enumerate() {
                let mut rows = Tracked {
                    table: &mut c.table,
                    touched: &mut touched,
                };
                match c.learner.update(&mut rows, x) {
                    Ok(o) => out.push(o),
                    Err(e) => {
                        // Validated input always applies; should this ever
                        // fail, what did apply is still persisted below, so
                        // memory and file agree.
                        failure = Some(at_index(i, e));
                        break;
                    }
                }
            }
            c.updated_at = meter.now;
            touched.sort_unstable();
            touched.dedup();
            let rows = touched
                .into_iter()
                .filter_map(|pos| {
                    let (k, v) = c.table.row_at(pos)?;
                    Some(RowWrite {
                        row_no: pos as i64,
                        key: (pos >= len_before).then(|| key_bytes(k)),
                        vals: values_bytes(v),
                    })
                })
                .collect();
            let ended = c.learner.counters().episodes != episodes_before;
            let seq = self.enqueue(Job::Learn(learn_job(c, debit, ended, rows)))?;
            let result = match failure {
                Some(e) => Err(e),
                None => Ok(out),
            };
            Ok((result, Some(seq)))
        })?;
        if let Some(seq) = seq {
            self.wait(seq)?;
        }
        out
    }

    fn usage(&self, user_id: &str, month: BillingMonth) -> Result<Usage> {
        let cached = lock_plain(&self.inner.usage)
            .get(user_id)
            .and_then(|m| m.get(&month))
            .cloned();
        let per_day = match cached {
            Some(d) => d,
            None => self.usage_days_from_db(user_id, month)?,
        };
        Ok(Usage {
            month,
            calls: per_day.iter().sum(),
            per_day,
        })
    }

    fn flush(&self) -> Result<()> {
        self.shutdown()
    }
}
