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
/// task should commit (`leader.rs`). A job found first in the queue at two
/// looks in a row has waited at least this long: its leader was never
/// polled again (a leaked future, a blocked runtime), and the writer
/// commits it and every job behind it.
pub(super) const STRANDED_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether the job numbered `first`, first in the queue now, was first at
/// the writer's last look too (`first_seen`, updated): stranded. Then the
/// leader flag is cleared, so that the next task's job leads again instead
/// of waiting for the writer's next look.
pub(super) fn stranded(first_seen: &mut Option<u64>, first: u64, leading: &AtomicBool) -> bool {
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
}

impl Inner {
    /// The writer thread's sleep, from `q` (the queue, locked): while the
    /// queue is empty, and while the jobs queued meanwhile are a task's to
    /// commit (they do not wake the writer), unless the same job has been
    /// first in the queue at two of its looks ([`stranded`]). Returns the
    /// queue, locked, with jobs or closed.
    pub(super) fn writer_sleep<'a>(&self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        let mut first_seen = None;
        let mut asleep = q.jobs.is_empty();
        while asleep && !q.closed {
            q.wake_at = 1;
            let (guard, woke) = self
                .queue_cv
                .wait_timeout(q, STRANDED_AFTER)
                .unwrap_or_else(PoisonError::into_inner);
            q = guard;
            asleep = if q.jobs.is_empty() {
                true
            } else if woke.timed_out() {
                let first = q.last_seq + 1 - q.jobs.len() as u64;
                !stranded(&mut first_seen, first, &self.leading)
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
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::{Duration, Instant};

    use super::LEAD_MAX_JOBS;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};
    use crate::store::{Durable, Meter, NewUser, Report, Store};
    use crate::tenancy::{Role, Tier, TierLimits};
    use crate::{Experience, Model, ModelConfig, StateRef};

    const NOW: i64 = 1_790_038_400;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A durable call and its own counting waker.
    struct Call {
        durable: Pin<Box<Durable>>,
        woken: Arc<Count>,
    }

    impl Call {
        fn poll(&mut self) -> Poll<crate::Result<()>> {
            let waker = Waker::from(self.woken.clone());
            self.durable.as_mut().poll(&mut Context::from_waker(&waker))
        }
        fn woken(&self) -> usize {
            self.woken.0.load(Ordering::SeqCst)
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        s: SqliteStore,
        user: String,
        model: String,
    }

    fn fixture() -> Fixture {
        fixture_with(SqliteOptions::default())
    }

    fn fixture_with(options: SqliteOptions) -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let s = SqliteStore::open_with(dir.path().join("lead.db"), options).expect("a store");
        let new = NewUser {
            email: "u@example.com".into(),
            password_hash: "$argon2id$fake".into(),
            tier: Tier::Free,
            role: Role::User,
        };
        let user = s.create_user(new, NOW).expect("a user").id;
        let m = Model::new(ModelConfig::new(4)).expect("a model");
        let model = s.create_model(&user, "m", &m, None, NOW).expect("m").id;
        // A blocking call first loads the model into memory.
        let limits = TierLimits::UNLIMITED;
        let meter = Meter {
            user_id: &user,
            limits: &limits,
            now: NOW,
        };
        s.predict(&meter, &model, StateRef::Int(0), false, None)
            .expect("a predict");
        writer_asleep(&s);
        Fixture {
            _dir: dir,
            s,
            user,
            model,
        }
    }

    /// Waits until the writer thread sleeps, waiting for a job (it takes
    /// what it finds queued before that).
    fn writer_asleep(s: &SqliteStore) {
        let started = Instant::now();
        while super::lock_plain(&s.inner.queue).wake_at != 1 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the writer sleeps"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    impl Fixture {
        /// One non-blocking update of state `i`, not yet polled.
        fn update(&self, i: i64) -> Call {
            let limits = TierLimits::UNLIMITED;
            let meter = Meter {
                user_id: &self.user,
                limits: &limits,
                now: NOW,
            };
            let x = Experience::new(StateRef::Int(i), 1, 1.0, StateRef::Int(i + 1));
            let (_, durable) = self
                .s
                .update_nonblocking(&meter, &self.model, &[x], Report::Outcomes)
                .expect("the model is in memory")
                .expect("an update");
            Call {
                durable: Box::pin(durable),
                woken: Arc::default(),
            }
        }

        fn committed(&self) -> u64 {
            self.s.inner.done.committed.load(Ordering::SeqCst)
        }
    }

    /// Sleeps until `done` holds, five seconds at most.
    fn wait_until(done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Asserts that `c`, polled now, leads (wakes itself and waits) and
    /// commits its batch at its next poll.
    fn leads_then_commits(c: &mut Call) {
        let woken = c.woken();
        assert!(c.poll().is_pending(), "it leads: pending first");
        assert_eq!(c.woken(), woken + 1, "it woke itself");
        assert!(matches!(c.poll(), Poll::Ready(Ok(()))));
    }

    /// Polls `c` until it is ready or five seconds have passed.
    fn settle(c: &mut Call) -> Poll<crate::Result<()>> {
        let started = Instant::now();
        loop {
            let p = c.poll();
            if p.is_ready() || started.elapsed() > Duration::from_secs(5) {
                return p;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn the_first_waiting_task_commits_on_its_own_thread_at_its_next_poll() {
        let f = fixture();
        let mut a = f.update(1);
        let mut b = f.update(2);
        let before = f.committed();
        // `a` leads: it wakes itself to be polled after the other ready
        // tasks, which queue their jobs meanwhile (`b`).
        assert!(a.poll().is_pending());
        assert_eq!(a.woken(), 1, "the leader woke itself");
        assert!(b.poll().is_pending());
        assert_eq!(b.woken(), 0, "one leader at a time");
        // Nobody woke the writer thread: nothing commits until `a` is polled.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(f.committed(), before);
        assert!(matches!(a.poll(), Poll::Ready(Ok(()))));
        assert_eq!(f.committed(), before + 2, "one batch, both jobs");
        assert_eq!(b.woken(), 1, "the leader woke the other waiting task");
        assert!(matches!(b.poll(), Poll::Ready(Ok(()))));
    }

    #[test]
    fn jobs_left_past_a_batch_are_handed_to_the_next_waiting_task() {
        let f = fixture();
        let mut calls: Vec<Call> = (0..LEAD_MAX_JOBS as i64 + 2).map(|i| f.update(i)).collect();
        for c in &mut calls {
            assert!(c.poll().is_pending());
        }
        let before = f.committed();
        assert!(matches!(calls[0].poll(), Poll::Ready(Ok(()))));
        assert_eq!(f.committed(), before + LEAD_MAX_JOBS as u64);
        let (next, last) = (LEAD_MAX_JOBS, LEAD_MAX_JOBS + 1);
        assert_eq!(calls[next].woken(), 1, "the first job left leads next");
        assert_eq!(calls[last].woken(), 0);
        assert!(
            calls[next].poll().is_pending(),
            "it leads: wakes itself first"
        );
        assert_eq!(calls[next].woken(), 2);
        assert!(matches!(calls[next].poll(), Poll::Ready(Ok(()))));
        assert_eq!(calls[last].woken(), 1);
        assert!(matches!(calls[last].poll(), Poll::Ready(Ok(()))));
        assert_eq!(f.committed(), before + LEAD_MAX_JOBS as u64 + 2);
    }

    #[test]
    fn a_leader_dropped_before_its_commit_leaves_the_jobs_to_the_writer_thread() {
        let f = fixture();
        let mut a = f.update(1);
        let mut b = f.update(2);
        assert!(a.poll().is_pending());
        assert!(b.poll().is_pending());
        let before = f.committed();
        drop(a);
        // The writer thread commits both jobs (the dropped call's too: the
        // model in memory already has it) and wakes `b`, which is not
        // polled until then.
        wait_until(|| b.woken() > 0);
        assert_eq!(b.woken(), 1, "the writer thread woke the waiting task");
        assert_eq!(f.committed(), before + 2);
        assert!(matches!(b.poll(), Poll::Ready(Ok(()))));
        // And the next call leads again.
        leads_then_commits(&mut f.update(3));
    }

    #[test]
    fn a_leader_never_polled_again_is_stood_in_for_by_the_writer_thread() {
        let f = fixture();
        let mut a = f.update(1);
        assert!(a.poll().is_pending());
        assert_eq!(a.woken(), 1, "it leads");
        // Leaked: never polled again, never dropped.
        std::mem::forget(a);
        let mut b = f.update(2);
        assert!(b.poll().is_pending());
        assert_eq!(b.woken(), 0, "one leader at a time");
        let before = f.committed();
        let started = Instant::now();
        wait_until(|| b.woken() > 0);
        assert!(
            started.elapsed() >= super::STRANDED_AFTER,
            "not before the jobs have waited"
        );
        assert_eq!(f.committed(), before + 2, "the writer committed both");
        assert!(matches!(b.poll(), Poll::Ready(Ok(()))));
        // The leader flag was cleared: the next call leads again.
        leads_then_commits(&mut f.update(3));
    }

    #[test]
    fn a_stranded_job_is_one_first_in_the_queue_at_two_looks() {
        use super::stranded;
        use std::sync::atomic::AtomicBool;
        let leading = AtomicBool::new(true);
        let mut seen = None;
        assert!(!stranded(&mut seen, 5, &leading), "first look");
        assert!(!stranded(&mut seen, 7, &leading), "jobs were committed");
        assert!(leading.load(Ordering::SeqCst));
        assert!(stranded(&mut seen, 7, &leading));
        assert!(!leading.load(Ordering::SeqCst), "the flag is cleared");
    }

    #[test]
    fn a_call_never_polled_is_still_committed() {
        let f = fixture();
        let before = f.committed();
        drop(f.update(1));
        wait_until(|| f.committed() > before);
        assert_eq!(f.committed(), before + 1);
    }

    /// Polls a call once and then until it is ready: no task leads it,
    /// the writer thread commits it.
    fn committed_by_the_writer_thread(f: &Fixture) {
        let mut a = f.update(1);
        let first = a.poll();
        if first.is_pending() {
            assert_eq!(a.woken(), 0, "no task leads");
        }
        assert!(matches!(settle(&mut a), Poll::Ready(Ok(()))));
    }

    #[test]
    fn past_the_restart_size_of_the_wal_the_writer_thread_commits() {
        let f = fixture();
        f.s.inner
            .wal_frames
            .store(super::WAL_RESTART_FRAMES + 1, Ordering::Relaxed);
        committed_by_the_writer_thread(&f);
    }

    #[test]
    fn without_task_commits_the_writer_thread_commits() {
        let f = fixture_with(SqliteOptions {
            task_commits: false,
            ..SqliteOptions::default()
        });
        committed_by_the_writer_thread(&f);
    }

    #[test]
    fn a_call_writing_decision_log_rows_is_committed_by_the_writer_thread() {
        use crate::decisions::{Decide, DecisionsConfig};
        use crate::store::ModelPatch;
        let f = fixture();
        let patch = ModelPatch {
            decisions: Some(Some(DecisionsConfig::default())),
            ..ModelPatch::default()
        };
        f.s.update_model(&f.user, &f.model, patch, NOW)
            .expect("decisions on");
        let limits = TierLimits::UNLIMITED;
        let meter = Meter {
            user_id: &f.user,
            limits: &limits,
            now: NOW,
        };
        let decide = |i: i64| Decide {
            state: StateRef::Int(i),
            allowed_actions: None,
            explore: true,
            decision_id: None,
            episode_id: None,
            baseline_action: None,
        };
        // The first logging predict reads the model's log: blocking.
        f.s.decide(&meter, &f.model, &decide(0))
            .expect("a decision");
        let (logged, durable) =
            f.s.decide_nonblocking(&meter, &f.model, &decide(1))
                .expect("a logging predict from memory")
                .expect("a decision");
        assert!(logged.decision.is_some(), "logged");
        let mut call = Call {
            durable: Box::pin(durable),
            woken: Arc::default(),
        };
        if call.poll().is_pending() {
            assert_eq!(call.woken(), 0, "no task leads a decision's commit");
        }
        assert!(matches!(settle(&mut call), Poll::Ready(Ok(()))));
        // A plain update still leads.
        writer_asleep(&f.s);
        leads_then_commits(&mut f.update(2));
    }

    #[test]
    fn a_leader_takes_the_light_jobs_at_the_front_of_the_queue() {
        use super::super::writer::{Job, Learn, WaitSlot, Waiter};
        use super::light_prefix;
        use std::sync::{Mutex, OnceLock};
        let learn = || {
            Job::Learn(Learn {
                mid: 1,
                tab: 1,
                learner: Vec::new(),
                returns: None,
                n_rows: 0,
                updated_at: None,
                rows: Vec::new(),
                usage: None,
                decisions: None,
            })
        };
        let op = || Job::Op(Box::new(|_: &rusqlite::Connection| true));
        let queued = |jobs: Vec<Job>| -> Vec<(Job, Arc<WaitSlot>)> {
            jobs.into_iter()
                .map(|j| {
                    let slot = Arc::new(WaitSlot {
                        waiter: Waiter::Task(Mutex::new(None)),
                        batch: OnceLock::new(),
                        lead: true,
                    });
                    (j, slot)
                })
                .collect()
        };
        assert_eq!(
            light_prefix(&queued(vec![learn(), learn(), op(), learn()])),
            2
        );
        assert_eq!(light_prefix(&queued(vec![op(), learn()])), 0);
        assert_eq!(light_prefix(&queued(Vec::new())), 0);
        let many = (0..LEAD_MAX_JOBS + 5).map(|_| learn()).collect();
        assert_eq!(light_prefix(&queued(many)), LEAD_MAX_JOBS);
    }

    #[test]
    fn a_leader_leaves_a_queue_headed_by_the_writer_threads_job_to_it() {
        use super::super::writer::{Job, WaitSlot, Waiter};
        use std::sync::{Mutex, OnceLock};
        let f = fixture();
        let before = f.committed();
        // An operation first (the writer thread's: its caller wakes the
        // writer, here after the leader has looked), then an update a task
        // waits for.
        {
            let mut q = super::lock_plain(&f.s.inner.queue);
            q.last_seq += 1;
            let slot = Arc::new(WaitSlot {
                waiter: Waiter::Task(Mutex::new(None)),
                batch: OnceLock::new(),
                lead: false,
            });
            q.jobs
                .push((Job::Op(Box::new(|_: &rusqlite::Connection| true)), slot));
        }
        let mut a = f.update(1);
        assert!(a.poll().is_pending());
        assert_eq!(a.woken(), 1, "it leads");
        assert!(a.poll().is_pending(), "it takes nothing");
        assert_eq!(f.committed(), before);
        assert_eq!(a.woken(), 1, "and does not lead again at once");
        f.s.inner.queue_cv.notify_one();
        wait_until(|| a.woken() > 1);
        assert!(matches!(a.poll(), Poll::Ready(Ok(()))));
        assert_eq!(f.committed(), before + 2, "the writer committed both");
    }
}
