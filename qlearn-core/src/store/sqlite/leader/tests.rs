//! The leader protocol's tests (`leader.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use super::super::writer::{Job, Learn, WaitSlot, Waiter};
use super::LEAD_MAX_JOBS;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{Durable, Meter, Report, Store};
use crate::tenancy::TierLimits;
use crate::{Experience, Model, ModelConfig, StateRef};
use std::sync::{Mutex, OnceLock};

const NOW: i64 = 1_790_038_400;

/// A light job (an update's rows) of model 1.
fn learn() -> Job {
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
}

/// `jobs` as queued, each with a task's wake-up slot.
fn queued(jobs: Vec<Job>) -> Vec<(Job, Arc<WaitSlot>)> {
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
}

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
    let user = crate::store::sqlite::test_user(&s, NOW);
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
fn the_first_queued_job_is_numbered_from_the_last() {
    let q = super::Queue {
        jobs: queued(vec![learn(), learn(), learn()]),
        last_seq: 8,
        ..super::Queue::default()
    };
    assert_eq!(super::first_queued(&q), 6);
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
    use super::light_prefix;
    let op = || Job::Op(Box::new(|_: &rusqlite::Connection| true));
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
