//! The group commit led by a waiting task: a call made for an async task
//! ([`Waiting::Task`]) is committed by the first of the waiting tasks, on
//! its own thread, once the tasks its runtime had ready have queued their
//! jobs too; the writer thread commits only what threads wait for.
//!
//! Why: handing every batch to the writer thread and back cost each request
//! two wake-ups across threads, and on a small machine the kernel then put
//! the writer, the async workers and the clients on the same cores by
//! turns (issue 16, docs/benchmarks-http.md, session 22). A task that
//! commits needs no wake-up at all: its runtime wakes the other waiting
//! tasks on its own queue.
//!
//! The protocol, all under the writer's connection lock so that batches
//! commit in the order they were taken:
//! - A task's [`Commit`] that finds no leader becomes it (`Inner::leading`),
//!   wakes itself and returns pending: its runtime polls it again after the
//!   tasks already queued, which queue their jobs meanwhile.
//! - Polled again, the leader commits the light jobs at the queue's front,
//!   at most [`LEAD_MAX_JOBS`] ([`commit_queued`], [`light_prefix`]), wakes
//!   their callers, steps down, and wakes the first task whose job is still
//!   queued, which leads the next batch. If the first queued job is the
//!   writer thread's, the leader takes nothing and waits: the writer
//!   commits it and every job behind it.
//! - A [`Commit`] dropped before its job committed (its request cancelled)
//!   wakes the writer thread, which commits what is queued: no job is left
//!   without someone to commit it.
//! - A leader never polled again (its future leaked, its runtime blocked)
//!   is stood in for: the writer thread, which sleeps at most
//!   [`STRANDED_AFTER`] at a time, commits the queue once the same job has
//!   been first in it at two of its looks, and clears the leader flag so
//!   the next task's job leads again.
//! - Past [`WAL_RESTART_FRAMES`] jobs are the writer thread's again, so that
//!   it can grant the checkpointer its quiet windows between batches (a
//!   task never waits for the checkpointer).
//! - A job that writes decision-log rows (a logging predict, a reward) is
//!   the writer thread's, and so is an operation (a chunk of an import or
//!   a reshape, about a millisecond): a decision costs SQLite about three
//!   times an update, and served fewer calls with a higher p99 when
//!   committed on the workers. An async worker commits only light jobs.
//! - Only with [`SqliteOptions::task_commits`] (the default): where the
//!   async workers leave a core idle, the writer thread's commits on it are
//!   worth their hand-offs (saas-host turns it off then).
//!
//! [`SqliteOptions::task_commits`]: super::SqliteOptions::task_commits

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use super::checkpointer::WAL_RESTART_FRAMES;
use super::writer::{commit_queued, Job, Queue, Queued, Ticket, Waiter};
use super::{lock_plain, Inner, SqliteStore, BACKEND};
use crate::error::{Error, Result};

/// The most jobs a leading task commits in one batch: its thread serves
/// other requests too, and a batch's time grows with its jobs. The rest are
/// led by the next task.
pub(super) const LEAD_MAX_JOBS: usize = 128;

/// How long the writer thread sleeps between looks at the jobs a leading
/// task should commit. A job found first in the queue at two
/// looks in a row has waited at least this long: its leader was never
/// polled again (a leaked future, a blocked runtime), and the writer
/// commits it and every job behind it.
const STRANDED_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// The number of the first job queued in `q` (not empty): jobs are
/// numbered in queue order, the last one `last_seq`.
fn first_queued(q: &Queue) -> u64 {
    q.last_seq + 1 - q.jobs.len() as u64
}

/// Whether the job numbered `first`, first in the queue now, was first at
/// the writer's last look too (`first_seen`, updated): stranded. Then the
/// leader flag is cleared, so that the next task's job leads again instead
/// of waiting for the writer's next look.
fn stranded(first_seen: &mut Option<u64>, first: u64, leading: &AtomicBool) -> bool {
    if *first_seen == Some(first) {
        leading.store(false, Ordering::SeqCst);
        return true;
    }
    *first_seen = Some(first);
    false
}

/// Whether a job is light enough for a task to commit: not one that writes
/// decision-log rows (a logging predict, a reward). Those cost SQLite about
/// three times an update's work (rows in a table with two indexes), and
/// committing them on the async workers served 3-15% fewer logging
/// predicts and delayed rewards, with a higher p99, than the writer thread
/// (docs/benchmarks-http.md, session 22).
fn light(job: &Job) -> bool {
    matches!(job, Job::Learn(l) if l.decisions.is_none())
}

/// How many of the queued jobs a leading task commits: the light ones at
/// the front, at most [`LEAD_MAX_JOBS`]. The jobs behind the first that is
/// not light are committed with it by the writer thread, so an async worker
/// never runs a decision-log write or a chunk of an import.
fn light_prefix(jobs: &Queued) -> usize {
    jobs.iter()
        .take(LEAD_MAX_JOBS)
        .take_while(|(job, _)| light(job))
        .count()
}

impl Inner {
    /// Whether a task's `job` queued now is committed by a task
    /// (`leader.rs`): when the store's options ask for it
    /// ([`SqliteOptions::task_commits`](super::SqliteOptions::task_commits)),
    /// for a job without decision-log rows, and while the WAL is short, so
    /// the writer thread can grant the checkpointer its windows once it is
    /// not.
    pub(super) fn may_lead(&self, job: &Job) -> bool {
        self.task_commits
            && light(job)
            && self.wal_frames.load(Ordering::Relaxed) <= WAL_RESTART_FRAMES
    }

    /// Commits the oldest queued jobs as the leader (the light ones at the
    /// queue's front, [`light_prefix`]), steps down, and wakes the task that
    /// leads the next batch if jobs are left. `false` when the queue's first
    /// job is the writer thread's (its caller woke the writer, which then
    /// commits every job queued, this leader's included).
    fn lead(&self) -> bool {
        let taken = {
            let conn = lock_plain(&self.conn);
            // A failure stops the store and wakes every waiter.
            commit_queued(self, &conn, light_prefix)
        };
        self.leading.store(false, Ordering::SeqCst);
        // A job queued while this one led found a leader and waits: hand
        // the next batch to its task. (A job queued after this look finds
        // no leader and leads itself.)
        let q = lock_plain(&self.queue);
        if taken == Ok(0) && !q.jobs.is_empty() {
            return false;
        }
        if let Some((_, slot)) = q.jobs.iter().find(|(_, s)| s.lead) {
            slot.wake_task();
        }
        true
    }

    /// The writer thread's sleep, from `q` (the queue, locked): while the
    /// queue is empty, and while the jobs queued meanwhile are a task's to
    /// commit (they do not wake the writer), unless the same job has been
    /// first in the queue at two of its looks ([`stranded`]). Without task
    /// commits no task leads, and it sleeps until woken. Returns the queue,
    /// locked, with jobs or closed.
    pub(super) fn writer_sleep<'a>(&self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        let mut first_seen = None;
        let mut asleep = q.jobs.is_empty();
        while asleep && !q.closed {
            q.wake_at = 1;
            let timed_out = if self.task_commits {
                let (guard, woke) = self
                    .queue_cv
                    .wait_timeout(q, STRANDED_AFTER)
                    .unwrap_or_else(PoisonError::into_inner);
                q = guard;
                woke.timed_out()
            } else {
                q = self
                    .queue_cv
                    .wait(q)
                    .unwrap_or_else(PoisonError::into_inner);
                false
            };
            asleep = if q.jobs.is_empty() {
                true
            } else if timed_out {
                !stranded(&mut first_seen, first_queued(&q), &self.leading)
            } else {
                false
            };
        }
        q
    }
}

impl SqliteStore {
    /// The commit of a ticket enqueued for a task ([`Waiting::Task`]), as a
    /// future; the cache is trimmed once it has committed (as after
    /// [`SqliteStore::wait`]).
    ///
    /// [`Waiting::Task`]: super::writer::Waiting::Task
    pub(super) fn durable(&self, mut ticket: Ticket) -> crate::store::Durable {
        ticket.wake_writer();
        crate::store::Durable::new(Commit {
            inner: self.inner.clone(),
            ticket,
            role: Role::Waiting,
        })
    }
}

/// Where a [`Commit`] is in the protocol (module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Waits for the leader (or the writer thread).
    Waiting,
    /// Leads: woke itself, commits at its next poll.
    Leading,
    /// Committed or resolved.
    Done,
}

/// The future of [`SqliteStore::durable`].
struct Commit {
    inner: Arc<Inner>,
    ticket: Ticket,
    role: Role,
}

impl Commit {
    /// The job's outcome once it is known: committed, or the store stopped.
    fn ready(&self) -> Option<Result<()>> {
        let done = &self.inner.done;
        if done.committed.load(Ordering::Acquire) >= self.ticket.seq {
            return Some(Ok(()));
        }
        if done.failed.load(Ordering::Acquire) {
            return Some(Err(Error::storage(
                BACKEND,
                done.failure().unwrap_or_default(),
            )));
        }
        None
    }

    fn finish(&mut self, r: Result<()>) -> Poll<Result<()>> {
        self.role = Role::Done;
        if r.is_ok() {
            self.inner.trim_if_over();
        }
        Poll::Ready(r)
    }
}

impl std::future::Future for Commit {
    type Output = Result<()>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        // Whether this poll may lead: not right after finding the writer
        // thread's job first in the queue (the writer commits this job too
        // and wakes this task; leading again would only spin).
        let mut may_lead = true;
        if this.role == Role::Leading {
            may_lead = this.inner.lead();
            this.role = Role::Waiting;
        }
        if let Some(r) = this.ready() {
            return this.finish(r);
        }
        if let Waiter::Task(w) = &this.ticket.slot.waiter {
            *lock_plain(w) = Some(cx.waker().clone());
        }
        // The committer stores `committed` before it takes the waker: a
        // commit that took no waker (it came before the line above) is
        // seen here.
        if let Some(r) = this.ready() {
            return this.finish(r);
        }
        if may_lead && this.ticket.slot.lead && !this.inner.leading.swap(true, Ordering::SeqCst) {
            // Lead, after the tasks the runtime has ready (a task that wakes
            // itself is polled again after them).
            this.role = Role::Leading;
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl Drop for Commit {
    /// A commit given up before its job committed (its request cancelled):
    /// the job is still queued and must commit; the writer thread takes it
    /// (and steps in for this task if it led).
    fn drop(&mut self) {
        if self.role == Role::Done || !self.ticket.slot.lead || self.ready().is_some() {
            return;
        }
        if self.role == Role::Leading {
            self.inner.leading.store(false, Ordering::SeqCst);
        }
        let _q = lock_plain(&self.inner.queue);
        self.inner.queue_cv.notify_one();
    }
}

#[cfg(test)]
mod tests;
