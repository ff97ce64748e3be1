//! The writer thread of [`SqliteStore`](super::SqliteStore): its job
//! queue, group commit (coalescing learning jobs), the wake-up tree of the
//! callers waiting for a commit. (Checkpoints: `checkpointer.rs`.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::Waker;
use std::thread::Thread;

use rusqlite::{params, Connection};

use super::decision_rows::LogWrite;
use super::row_writes::write_rows;
use super::{lock_plain, Inner, SqliteStore, BACKEND};
use crate::error::{Error, Result};
use crate::store::decision_rows::earliest_open;
use crate::store::encoding::{key_bytes, values_bytes};
use crate::store::CallKind;
use crate::table::QTable;
use crate::tenancy::BillingMonth;
use crate::FastMap;

// ---- the writer --------------------------------------------------------------

/// A row a learning job writes: its number, its key when the row is new, and
/// its values.
pub(super) struct RowWrite {
    pub(super) row_no: i64,
    pub(super) key: Option<Vec<u8>>,
    pub(super) vals: Vec<u8>,
}

/// The writes of the rows at positions `touched` of `table` (sorted and
/// deduplicated here); a row at or past `len_before` is new and carries
/// its key.
pub(super) fn row_writes(
    table: &QTable,
    mut touched: Vec<usize>,
    len_before: usize,
) -> Vec<RowWrite> {
    touched.sort_unstable();
    touched.dedup();
    touched
        .into_iter()
        .filter_map(|pos| {
            let (k, v) = table.row_at(pos)?;
            Some(RowWrite {
                row_no: pos as i64,
                key: (pos >= len_before).then(|| key_bytes(k)),
                vals: values_bytes(v),
            })
        })
        .collect()
}

/// The persistent effect of one metered call.
pub(super) struct Learn {
    pub(super) mid: i64,
    /// The table number the model's rows are stored under (the high bits
    /// of `q_rows.id`).
    pub(super) tab: i64,
    pub(super) learner: Vec<u8>,
    pub(super) returns: Option<Vec<u8>>,
    pub(super) n_rows: i64,
    pub(super) updated_at: Option<i64>,
    pub(super) rows: Vec<RowWrite>,
    pub(super) usage: Option<UsageDelta>,
    /// The model's decision log after a decision call (issue 14), written
    /// in the same transaction as its rows.
    pub(super) decisions: Option<Box<LogWrite>>,
}

/// A call's usage row: `n` calls of `kind`, `overage` of them past the quota.
pub(super) struct UsageDelta {
    pub(super) user: String,
    pub(super) month: BillingMonth,
    pub(super) day: u8,
    pub(super) kind: CallKind,
    pub(super) n: u64,
    pub(super) overage: u64,
}

/// An operation run by the writer inside a savepoint of the batch; it
/// returns whether to keep its changes (and reports its result itself).
pub(super) type OpFn = Box<dyn FnOnce(&Connection) -> bool + Send>;

pub(super) enum Job {
    Learn(Learn),
    Op(OpFn),
}

/// A caller waiting for its job's commit: a thread or an async task.
///
/// Threads: after a commit the writer wakes only the first waiting thread
/// of the batch; each woken thread wakes the next two (thread `i` wakes
/// `2i + 1` and `2i + 2`), so the writer, the one thread everybody waits
/// for, does not spend its time on 32 wake-ups per batch.
///
/// Tasks ([`Durable`](crate::store::Durable) futures on an async runtime):
/// the writer wakes each one itself; a wake only queues the task on its
/// runtime (no thread switch per caller), which is why the non-blocking
/// calls exist (see `calls.rs`).
pub(super) struct WaitSlot {
    pub(super) waiter: Waiter,
    /// Set by the writer before it publishes the commit: the batch's
    /// waiting threads and this caller's position among them (threads only).
    pub(super) batch: OnceLock<(Arc<Vec<Thread>>, usize)>,
    /// A task's job that a waiting task commits (`leader.rs`) rather than
    /// the writer thread: decided when it is queued.
    pub(super) lead: bool,
}

/// Who waits for a job's commit.
pub(super) enum Waiter {
    /// A thread parked in [`SqliteStore::wait`].
    Thread(Thread),
    /// A task polling a [`Durable`](crate::store::Durable): its waker, once
    /// it has been polled and the commit had not happened yet.
    Task(Mutex<Option<Waker>>),
}

impl WaitSlot {
    /// Wakes a task waiter (a thread waiter is woken through the tree).
    pub(super) fn wake_task(&self) {
        if let Waiter::Task(w) = &self.waiter {
            if let Some(w) = lock_plain(w).take() {
                w.wake();
            }
        }
    }

    /// Wakes whoever waits, thread or task (when the store fails or closes).
    fn wake_any(&self) {
        match &self.waiter {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Task(_) => self.wake_task(),
        }
    }
}

/// What [`SqliteStore::wait`] waits for: a job's sequence number and its
/// caller's wake-up slot.
pub(super) struct Ticket {
    pub(super) seq: u64,
    pub(super) slot: Arc<WaitSlot>,
    /// The sleeping writer this job must wake, when it was the one that
    /// filled the writer's wait: woken when the ticket is waited for
    /// ([`SqliteStore::wait`], [`SqliteStore::durable`]) or dropped, so
    /// after the caller let go of its model's lock (waking a thread can
    /// hand it the caller's core while the caller still holds the lock, and
    /// the other calls on the model would then find it held).
    wake: Option<Arc<Inner>>,
}

impl Ticket {
    /// Wakes the writer if this job's enqueue had to (once).
    pub(super) fn wake_writer(&mut self) {
        if let Some(inner) = self.wake.take() {
            inner.queue_cv.notify_one();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.wake_writer();
    }
}

#[derive(Default)]
pub(super) struct Queue {
    /// Jobs with the thread waiting for each (unparked once it committed).
    pub(super) jobs: Vec<(Job, Arc<WaitSlot>)>,
    /// Sequence number of the last job enqueued (jobs are numbered from 1).
    pub(super) last_seq: u64,
    pub(super) closed: bool,
    /// The writer sleeps until the queue holds this many jobs (0: it is
    /// not sleeping; enqueuers only wake it on reaching the number, not at
    /// every job).
    pub(super) wake_at: usize,
}

/// The longest the writer waits for the callers of its last batch to queue
/// again before it starts a smaller batch.
pub(super) const MAX_GATHER: std::time::Duration = std::time::Duration::from_micros(500);

/// The least the writer waits for them (a batch's own time can be tens of
/// microseconds, less than the callers need to come back).
pub(super) const MIN_GATHER: std::time::Duration = std::time::Duration::from_micros(200);

/// How many jobs the writer waits for (at most [`MAX_GATHER`]) before it
/// starts the next batch, when the last one held `last_batch`: half.
/// Waiting for all of them kept every caller in one group that waited on
/// each commit while the CPUs serving it idled (issue 16: 17-19% of a
/// 2-core machine at 32 connections); with half, the callers spread over
/// several commits (6-8 jobs each there), and some are served while
/// others' commit runs (docs/benchmarks-http.md, session 10).
pub(super) fn gather_target(last_batch: usize) -> usize {
    last_batch.div_ceil(2)
}

/// Whether the writer still gathers: fewer than `target` jobs queued, and
/// the queue open (a closing store commits what it has at once).
pub(super) fn gathering(queued: usize, target: usize, closed: bool) -> bool {
    queued < target && !closed
}

/// Until when the writer gathers, from `now`, after a batch that took
/// `last_took`: half that time, within [`MIN_GATHER`, `MAX_GATHER`].
pub(super) fn gather_deadline(
    now: std::time::Instant,
    last_took: std::time::Duration,
) -> std::time::Instant {
    now + (last_took / 2).max(MIN_GATHER).min(MAX_GATHER)
}

#[derive(Default)]
pub(super) struct Done {
    /// Every job up to this sequence number has committed.
    pub(super) committed: AtomicU64,
    /// Whether `failure` is set.
    pub(super) failed: AtomicBool,
    /// Why the store stopped (a commit failed or the writer died).
    pub(super) failure: Mutex<Option<String>>,
}

impl Done {
    pub(super) fn fail(&self, why: String) {
        let mut f = lock_plain(&self.failure);
        if f.is_none() {
            *f = Some(why);
        }
        self.failed.store(true, Ordering::Release);
    }

    pub(super) fn failure(&self) -> Option<String> {
        lock_plain(&self.failure).clone()
    }
}

/// What a batch writes, coalesced: last learner state per model, last
/// values per row, summed usage (calls, overage) per user, day and kind.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) models: FastMap<i64, PendingModel>,
    pub(super) usage: FastMap<(String, BillingMonth, u8, CallKind), (u64, u64)>,
    /// Each model's earliest deadline among the open decisions written,
    /// for the settle pass once the batch has committed.
    pub(super) opened: Vec<(i64, i64)>,
}

/// A row's key when the row is new, and its latest values.
pub(super) type PendingRow = (Option<Vec<u8>>, Vec<u8>);

pub(super) struct PendingModel {
    pub(super) learner: Vec<u8>,
    pub(super) returns: Option<Vec<u8>>,
    pub(super) n_rows: i64,
    pub(super) updated_at: Option<i64>,
    /// By table number and row number.
    pub(super) rows: BTreeMap<(i64, i64), PendingRow>,
    pub(super) decisions: Option<Box<LogWrite>>,
}

impl Pending {
    pub(super) fn add(&mut self, l: Learn) {
        if let Some(u) = l.usage {
            let sum = self
                .usage
                .entry((u.user, u.month, u.day, u.kind))
                .or_insert((0, 0));
            sum.0 += u.n;
            sum.1 += u.overage;
        }
        let m = self.models.entry(l.mid).or_insert_with(|| PendingModel {
            learner: Vec::new(),
            returns: None,
            n_rows: 0,
            updated_at: None,
            rows: BTreeMap::new(),
            decisions: None,
        });
        m.learner = l.learner;
        m.n_rows = l.n_rows;
        if l.returns.is_some() {
            m.returns = l.returns;
        }
        if l.updated_at.is_some() {
            m.updated_at = l.updated_at;
        }
        if let Some(d) = l.decisions {
            match &mut m.decisions {
                Some(old) => old.merge(*d),
                None => m.decisions = Some(d),
            }
        }
        for r in l.rows {
            match m.rows.get_mut(&(l.tab, r.row_no)) {
                Some(slot) => {
                    if r.key.is_some() {
                        slot.0 = r.key;
                    }
                    slot.1 = r.vals;
                }
                None => {
                    m.rows.insert((l.tab, r.row_no), (r.key, r.vals));
                }
            }
        }
    }

    pub(super) fn flush(&mut self, c: &Connection) -> rusqlite::Result<()> {
        if !self.models.is_empty() {
            let mut upd_model = c.prepare_cached(
                "UPDATE models SET learner = ?2, n_rows = ?3, \
                 updated_at = COALESCE(?4, updated_at), returns = COALESCE(?5, returns) \
                 WHERE mid = ?1",
            )?;
            for (mid, m) in self.models.drain() {
                upd_model.execute(params![mid, m.learner, m.n_rows, m.updated_at, m.returns])?;
                if let Some(d) = m.decisions {
                    if let Some(at) = earliest_open(&d.decisions) {
                        self.opened.push((mid, at));
                    }
                    (*d).flush(c, mid)?;
                }
                write_rows(c, m.rows)?;
            }
        }
        if !self.usage.is_empty() {
            let mut up = c.prepare_cached(
                "INSERT INTO usage (user_id, month, day, kind, calls, overage) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (user_id, month, day, kind) DO UPDATE SET \
                 calls = calls + excluded.calls, overage = overage + excluded.overage",
            )?;
            for ((user, month, day, kind), (n, over)) in self.usage.drain() {
                up.execute(params![
                    user,
                    month.to_string(),
                    day,
                    kind.as_str(),
                    n as i64,
                    over as i64
                ])?;
            }
        }
        Ok(())
    }
}

/// Runs one statement without a result, prepared once per connection
/// (`execute_batch` would parse it again on every batch).
fn run(c: &Connection, sql: &str) -> rusqlite::Result<()> {
    c.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Applies one batch of jobs in one transaction; returns each model's
/// earliest deadline among the open decisions it wrote.
pub(super) fn run_batch(c: &Connection, jobs: Vec<Job>) -> rusqlite::Result<Vec<(i64, i64)>> {
    run(c, "BEGIN IMMEDIATE")?;
    let applied = (|| {
        let mut pending = Pending::default();
        for job in jobs {
            match job {
                Job::Learn(l) => pending.add(l),
                Job::Op(f) => {
                    pending.flush(c)?;
                    run(c, "SAVEPOINT op")?;
                    if !f(c) {
                        run(c, "ROLLBACK TO op")?;
                    }
                    run(c, "RELEASE op")?;
                }
            }
        }
        pending.flush(c)?;
        Ok(pending.opened)
    })();
    match applied.and_then(|opened| run(c, "COMMIT").map(|()| opened)) {
        Ok(opened) => Ok(opened),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Marks the store failed if the writer thread ends without a clean close
/// (a panic), so no caller waits forever.
pub(super) struct WriterGuard(Arc<Inner>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        let clean = {
            let q = lock_plain(&self.0.queue);
            q.closed && q.jobs.is_empty()
        };
        if !clean {
            self.0
                .done
                .fail("the writer thread stopped unexpectedly; reopen the store".into());
        }
        close_queue(&self.0);
    }
}

pub(super) fn writer_loop(inner: Arc<Inner>) {
    let _guard = WriterGuard(inner.clone());
    let mut last_batch = 0usize;
    let mut last_took = std::time::Duration::ZERO;
    loop {
        {
            let mut q = inner.writer_sleep(lock_plain(&inner.queue));
            // The callers of the last batch were all woken at once and are
            // queueing again: give half of them a moment (a fraction of a
            // batch's time) so they share the next commit instead of being
            // split over several small ones (why half: `gather_target`).
            let target = gather_target(last_batch);
            if gathering(q.jobs.len(), target, q.closed) {
                let deadline = gather_deadline(std::time::Instant::now(), last_took);
                while gathering(q.jobs.len(), target, q.closed) {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        break;
                    }
                    q.wake_at = target;
                    q = inner
                        .queue_cv
                        .wait_timeout(q, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
            q.wake_at = 0;
            if q.jobs.is_empty() {
                // Closed, or a caller's task committed them (`leader.rs`).
                if q.closed {
                    break;
                }
                continue;
            }
        }
        let started = std::time::Instant::now();
        let batch = {
            let conn = lock_plain(&inner.conn);
            commit_queued(&inner, &conn, <[_]>::len)
        };
        match batch {
            Ok(0) => continue,
            Ok(n) => last_batch = n,
            // The guard closes the queue and wakes whoever still waits.
            Err(()) => return,
        }
        last_took = started.elapsed();
        // After the acknowledgements: a quiet window for the checkpointer
        // when the WAL is long (see `checkpointer.rs`).
        inner
            .checkpoints
            .between_batches(inner.wal_frames.load(Ordering::Relaxed));
    }
    // Clean close: fold the WAL into the database file.
    let conn = lock_plain(&inner.conn);
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// The queue's jobs, each with its caller's wake-up slot.
pub(super) type Queued = [(Job, Arc<WaitSlot>)];

/// Commits the oldest queued jobs, as many as `take` says of the queue, in
/// one batch on `conn` (the writer's connection, locked by the caller:
/// batches commit in the order they were taken) and wakes their callers.
/// Run by the writer thread (every job) and by a caller's task leading a
/// commit (`leader.rs`). Returns how many jobs it committed; `Err` when the
/// commit failed, after stopping the store (every waiter woken with the
/// failure).
pub(super) fn commit_queued(
    inner: &Inner,
    conn: &Connection,
    take: impl FnOnce(&Queued) -> usize,
) -> std::result::Result<usize, ()> {
    let (taken, last) = {
        let mut q = lock_plain(&inner.queue);
        let n = take(&q.jobs).min(q.jobs.len());
        if n == 0 {
            return Ok(0);
        }
        let left = (q.jobs.len() - n) as u64;
        let taken: Vec<(Job, Arc<WaitSlot>)> = if n == q.jobs.len() {
            std::mem::take(&mut q.jobs)
        } else {
            q.jobs.drain(..n).collect()
        };
        // Jobs are numbered in queue order: the last taken is the last
        // enqueued less those left.
        (taken, q.last_seq - left)
    };
    let n = taken.len();
    let (jobs, waiters): (Vec<Job>, Vec<Arc<WaitSlot>>) = taken.into_iter().unzip();
    match run_batch(conn, jobs) {
        Ok(opened) => {
            for (mid, at) in opened {
                inner.due.logged(mid, at);
            }
            let parked: Vec<&Arc<WaitSlot>> = waiters
                .iter()
                .filter(|w| matches!(w.waiter, Waiter::Thread(_)))
                .collect();
            let threads: Arc<Vec<Thread>> = Arc::new(
                parked
                    .iter()
                    .filter_map(|w| match &w.waiter {
                        Waiter::Thread(t) => Some(t.clone()),
                        Waiter::Task(_) => None,
                    })
                    .collect(),
            );
            for (i, w) in parked.iter().enumerate() {
                let _ = w.batch.set((threads.clone(), i));
            }
            inner.done.committed.store(last, Ordering::Release);
            // The threads wake each other (see `WaitSlot`); tasks are
            // woken here (after the store of `committed`: see `Durable`).
            if let Some(first) = threads.first() {
                first.unpark();
            }
            for w in &waiters {
                w.wake_task();
            }
            Ok(n)
        }
        Err(e) => {
            inner.done.fail(format!(
                "a commit failed ({e}); the store has stopped: reopen it"
            ));
            for w in waiters {
                w.wake_any();
            }
            close_queue(inner);
            Err(())
        }
    }
}

/// Closes the queue after a failure and wakes whoever still waits in it
/// (and the writer thread, which then ends).
fn close_queue(inner: &Inner) {
    let mut q = lock_plain(&inner.queue);
    q.closed = true;
    for (_, waiter) in q.jobs.drain(..) {
        waiter.wake_any();
    }
    drop(q);
    inner.queue_cv.notify_all();
}

impl SqliteStore {
    /// Queues `job` for the next batch; the calling thread will wait for it
    /// with [`SqliteStore::wait`].
    pub(super) fn enqueue(&self, job: Job) -> Result<Ticket> {
        self.enqueue_for(job, Waiting::Thread)
    }

    /// Queues `job` for the next batch, to be waited for by `waiting`.
    pub(super) fn enqueue_for(&self, job: Job, waiting: Waiting) -> Result<Ticket> {
        let (waiter, lead) = match waiting {
            Waiting::Thread => (Waiter::Thread(std::thread::current()), false),
            Waiting::Task => (Waiter::Task(Mutex::new(None)), self.inner.may_lead(&job)),
        };
        let slot = Arc::new(WaitSlot {
            waiter,
            batch: OnceLock::new(),
            lead,
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
        // A job a task will commit does not wake the writer thread.
        let wake = !lead && q.wake_at > 0 && q.jobs.len() >= q.wake_at;
        if wake {
            q.wake_at = 0;
        }
        drop(q);
        Ok(Ticket {
            seq,
            slot,
            wake: wake.then(|| self.inner.clone()),
        })
    }

    /// Blocks until the ticket's job has committed, then wakes the next
    /// callers of its batch (see [`WaitSlot`]).
    pub(super) fn wait(&self, mut ticket: Ticket) -> Result<()> {
        ticket.wake_writer();
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
    pub(super) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pending = self.start_write(f)?;
        self.finish_write(pending)
    }

    /// Enqueues `f` for the writer; [`SqliteStore::finish_write`] waits for
    /// it (the caller may work meanwhile).
    pub(super) fn start_write<T: Send + 'static>(
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

    pub(super) fn finish_write<T>(
        &self,
        (seq, rx): (Ticket, mpsc::Receiver<Result<T>>),
    ) -> Result<T> {
        self.wait(seq)?;
        rx.recv()
            .map_err(|_| Error::storage(BACKEND, "the writer dropped an operation"))?
    }

    pub(super) fn shutdown(&self) -> Result<()> {
        self.inner.checkpoints.close();
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
}

/// How the caller of a learning job will wait for its commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Waiting {
    /// Blocking, on the calling thread ([`SqliteStore::wait`]).
    Thread,
    /// As a future ([`SqliteStore::durable`]).
    Task,
}

#[cfg(test)]
mod tests;
