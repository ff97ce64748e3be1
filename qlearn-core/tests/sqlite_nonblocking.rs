//! The SQLite store's non-blocking calls (`decide_nonblocking`,
//! `update_nonblocking`, used by the HTTP host on its async workers): they
//! answer exactly what the blocking calls answer, their `Durable` resolves
//! only once the call is committed to the file, and they decline (`None`,
//! having done nothing) whenever the call would have to read the file.
#![cfg(feature = "sqlite")]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use qlearn_core::decisions::{Decide, DecisionsConfig, LoggedDecision, RewardStatus};
use qlearn_core::store::sqlite::SqliteStore;
use qlearn_core::store::{DecisionQuery, Meter, ModelPatch, NewUser, Report, RewardIn, Store};
use qlearn_core::tenancy::{BillingMonth, Role, Tier, TierLimits};
use qlearn_core::{Experience, Model, ModelConfig, StateRef};

/// 2026-09-21T00:53:20Z.
const NOW: i64 = 1_790_038_400;

/// How long `block_on` waits for a future before failing the test: a call
/// whose commit never comes (a broken commit path) fails here, not hangs.
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs a future to completion on this thread (no runtime needed: the
/// store's writer wakes the task). Panics past `DEADLINE`.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    let started = Instant::now();
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        let left = DEADLINE.checked_sub(started.elapsed());
        let left = left.unwrap_or_else(|| panic!("no answer within {DEADLINE:?}"));
        std::thread::park_timeout(left);
    }
}

fn user(s: &SqliteStore, email: &str) -> String {
    s.create_user(
        NewUser {
            email: email.into(),
            password_hash: "$argon2id$fake".into(),
            tier: Tier::Free,
            role: Role::User,
        },
        NOW,
    )
    .unwrap()
    .id
}

fn seeded() -> Model {
    let mut c = ModelConfig::new(4);
    c.seed = Some(7);
    c.epsilon = 0.3;
    c.epsilon_decay = 0.9;
    Model::new(c).unwrap()
}

fn limits() -> TierLimits {
    TierLimits {
        monthly_calls: Some(10_000),
        ..TierLimits::UNLIMITED
    }
}

fn request(state: StateRef<'_>) -> Decide<'_> {
    Decide {
        state,
        allowed_actions: None,
        explore: true,
        decision_id: None,
        episode_id: None,
        baseline_action: None,
    }
}

/// Calls usage of the user in the file itself, through a connection of
/// its own (what survives a crash).
fn calls_in_file(path: &std::path::Path, user_id: &str) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row(
        "SELECT COALESCE(SUM(calls), 0) FROM usage WHERE user_id = ?1",
        [user_id],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn nonblocking_calls_answer_like_blocking_ones_and_resolve_when_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (path_a, path_b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (a, b) = (
        SqliteStore::open(&path_a).unwrap(),
        SqliteStore::open(&path_b).unwrap(),
    );
    let (ua, ub) = (user(&a, "a@example.com"), user(&b, "a@example.com"));
    let ma = a.create_model(&ua, "m", &seeded(), None, NOW).unwrap().id;
    let mb = b.create_model(&ub, "m", &seeded(), None, NOW).unwrap().id;
    let l = limits();
    let (meter_a, meter_b) = (
        Meter {
            user_id: &ua,
            limits: &l,
            now: NOW,
        },
        Meter {
            user_id: &ub,
            limits: &l,
            now: NOW,
        },
    );
    // The first call of each user reads the month's usage (and whether the
    // model logs decisions) from the file: blocking on both stores.
    let s0 = StateRef::Int(0);
    let first_a = a.decide(&meter_a, &ma, &request(s0)).unwrap();
    let first_b = b.decide(&meter_b, &mb, &request(s0)).unwrap();
    assert_eq!(first_a.prediction, first_b.prediction);

    let mut quick = 0;
    for i in 0..200i64 {
        let (s, next) = (StateRef::Int(i % 13), StateRef::Int((i + 1) % 13));
        let pa = a.decide(&meter_a, &ma, &request(s)).unwrap();
        let (pb, durable) = b
            .decide_nonblocking(&meter_b, &mb, &request(s))
            .expect("a cached model and a known month answer without blocking")
            .unwrap();
        block_on(durable).unwrap();
        assert_eq!(pa.prediction, pb.prediction, "prediction {i}");
        assert!(pb.decision.is_none());
        let exps = [
            Experience::new(s, pa.prediction.action, (i % 5) as f64 - 2.0, next).done(i % 17 == 16),
        ];
        let ua_out = a.update(&meter_a, &ma, &exps, Report::Touched).unwrap();
        let (ub_out, durable) = b
            .update_nonblocking(&meter_b, &mb, &exps, Report::Touched)
            .expect("answers without blocking")
            .unwrap();
        block_on(durable).unwrap();
        assert_eq!(ua_out.outcomes, ub_out.outcomes, "update {i}");
        assert_eq!(
            ua_out.touched.map(|t| t.stats),
            ub_out.touched.map(|t| t.stats),
            "update {i}"
        );
        // Resolved means committed: the file itself counts every call.
        assert_eq!(calls_in_file(&path_b, &ub), 1 + 2 * (i + 1), "call {i}");
        quick += 2;
    }
    assert_eq!(quick, 400);
    assert_eq!(
        a.export_model(&ua, &ma).unwrap().to_bytes().unwrap(),
        b.export_model(&ub, &mb).unwrap().to_bytes().unwrap(),
        "the same model either way"
    );
    let month = BillingMonth::from_unix(NOW);
    assert_eq!(b.usage(&ub, month).unwrap().calls, 401);
    // What the file holds after a reopen is what was acknowledged.
    drop(b);
    let b = SqliteStore::open(&path_b).unwrap();
    assert_eq!(
        a.export_model(&ua, &ma).unwrap().to_bytes().unwrap(),
        b.export_model(&ub, &mb).unwrap().to_bytes().unwrap(),
    );
}

#[test]
fn nonblocking_calls_decline_what_would_read_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let s = SqliteStore::open(&path).unwrap();
    let u = user(&s, "u@example.com");
    let other = user(&s, "o@example.com");
    let m = s.create_model(&u, "m", &seeded(), None, NOW).unwrap().id;
    let l = limits();
    let meter = Meter {
        user_id: &u,
        limits: &l,
        now: NOW,
    };
    let x = [Experience::new(StateRef::Int(1), 0, 1.0, StateRef::Int(2))];
    // The user's month of usage is not in memory yet: declined, nothing done.
    assert!(s
        .update_nonblocking(&meter, &m, &x, Report::Outcomes)
        .is_none());
    assert!(s
        .decide_nonblocking(&meter, &m, &request(StateRef::Int(1)))
        .is_none());
    let month = BillingMonth::from_unix(NOW);
    assert_eq!(
        s.usage(&u, month).unwrap().calls,
        0,
        "a declined call costs nothing"
    );
    s.update(&meter, &m, &x, Report::Outcomes).unwrap();
    // Whether the model logs decisions is not known yet: a predict declines.
    assert!(s
        .decide_nonblocking(&meter, &m, &request(StateRef::Int(1)))
        .is_none());
    s.decide(&meter, &m, &request(StateRef::Int(1))).unwrap();
    let (_, d) = s
        .decide_nonblocking(&meter, &m, &request(StateRef::Int(1)))
        .expect("known now")
        .unwrap();
    block_on(d).unwrap();
    // Another user's model is not found, as on the blocking path.
    let other_meter = Meter {
        user_id: &other,
        limits: &l,
        now: NOW,
    };
    s.update(&other_meter, &m, &x, Report::Outcomes)
        .unwrap_err();
    let e = s
        .update_nonblocking(&other_meter, &m, &x, Report::Outcomes)
        .expect("the model is cached")
        .unwrap_err();
    assert!(matches!(e, qlearn_core::Error::NotFound(_)), "{e:?}");
    // A model that logs decisions: a predict and a reward for a pending
    // decision run from memory, and so do a new client decision id and a
    // reward for an id never logged (the file cannot hold them); what the
    // file holds and memory does not (a finished decision once committed)
    // is read on the blocking path.
    let patch = ModelPatch {
        decisions: Some(Some(DecisionsConfig::default())),
        ..ModelPatch::default()
    };
    s.update_model(&u, &m, patch, NOW).unwrap();
    s.decide(&meter, &m, &request(StateRef::Int(1))).unwrap();
    let (logged, d) = s
        .decide_nonblocking(&meter, &m, &request(StateRef::Int(1)))
        .expect("a logging predict from memory")
        .unwrap();
    block_on(d).unwrap();
    let logged = logged.decision.expect("logged");
    let with_id = |id| Decide {
        decision_id: Some(id),
        ..request(StateRef::Int(1))
    };
    let (client, d) = s
        .decide_nonblocking(&meter, &m, &with_id("client-1"))
        .expect("a new client decision id from memory")
        .unwrap();
    block_on(d).unwrap();
    let client = client.decision.expect("logged");
    assert_eq!(client.decision_id, "client-1");
    // What a retry of it answers: the same decision, replayed.
    let replayed = Some(LoggedDecision {
        replayed: true,
        ..client.clone()
    });
    let reward = |id: &str| RewardIn {
        decision_id: id.to_owned(),
        value: 1.0,
        reward_id: None,
        is_final: true,
    };
    let (got, d) = s
        .rewards_nonblocking(&meter, &m, &[reward("unknown")])
        .expect("an id never logged, from memory")
        .unwrap();
    block_on(d).unwrap();
    assert!(
        matches!(got[0], Err(qlearn_core::Error::NotFound(_))),
        "{got:?}"
    );
    let (got, d) = s
        .rewards_nonblocking(
            &meter,
            &m,
            &[reward(&logged.decision_id), reward("client-1")],
        )
        .expect("pending decisions are in memory")
        .unwrap();
    block_on(d).unwrap();
    assert_eq!(got[0].as_ref().unwrap().status, RewardStatus::Applied);
    assert_eq!(got[1].as_ref().unwrap().status, RewardStatus::Applied);
    // Finished and committed, the two leave memory at the next call; a
    // retry of "client-1" must then read it from the file, and answers
    // the decision logged first.
    let (_, d) = s
        .decide_nonblocking(&meter, &m, &with_id("client-2"))
        .expect("a new client decision id from memory")
        .unwrap();
    block_on(d).unwrap();
    assert!(s
        .decide_nonblocking(&meter, &m, &with_id("client-1"))
        .is_none());
    let retry = s.decide(&meter, &m, &with_id("client-1")).unwrap();
    assert_eq!(retry.decision, replayed, "a retry answers the first");
    assert_eq!(retry.prediction.action, client.action);
    // A model not in memory (the store reopened) is read on the blocking path.
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert!(s
        .update_nonblocking(&meter, &m, &x, Report::Outcomes)
        .is_none());
    // Its log opened, the file's ids are not read yet: a new client id is
    // read on the blocking path, which reads them; then an id of the file
    // is read and a new one is not.
    s.decide(&meter, &m, &request(StateRef::Int(1))).unwrap();
    assert!(s
        .decide_nonblocking(&meter, &m, &with_id("client-3"))
        .is_none());
    s.decide(&meter, &m, &with_id("client-3")).unwrap();
    for id in ["client-1", "client-2"] {
        assert!(
            s.decide_nonblocking(&meter, &m, &with_id(id)).is_none(),
            "{id}"
        );
    }
    let (_, d) = s
        .decide_nonblocking(&meter, &m, &with_id("client-4"))
        .expect("a new client decision id from memory")
        .unwrap();
    block_on(d).unwrap();
    let retry = s.decide(&meter, &m, &with_id("client-1")).unwrap();
    assert_eq!(retry.decision, replayed, "a retry answers the first");
    assert_eq!(s.usage(&u, month).unwrap().calls, 12, "the calls metered");
}

/// A reward for a decision the log does not hold in memory (here: the
/// store reopened) reads it on the calling thread through
/// `rewards_deferred`, which answers what `rewards` answers but leaves the
/// commit to its `Durable` instead of parking the thread until it; once
/// that resolves, the file holds the reward.
#[test]
fn a_deferred_reward_reads_what_memory_lacks_and_commits_through_its_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (path_a, path_b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let l = limits();
    let patch = || ModelPatch {
        decisions: Some(Some(DecisionsConfig::default())),
        ..ModelPatch::default()
    };
    // The same user, model and decisions in two files.
    let mut made = Vec::new();
    for path in [&path_a, &path_b] {
        let s = SqliteStore::open(path).unwrap();
        let u = user(&s, "u@example.com");
        let m = s.create_model(&u, "m", &seeded(), None, NOW).unwrap().id;
        s.update_model(&u, &m, patch(), NOW).unwrap();
        let meter = Meter {
            user_id: &u,
            limits: &l,
            now: NOW,
        };
        let ids: Vec<String> = (0..3i64)
            .map(|i| {
                let d = s.decide(&meter, &m, &request(StateRef::Int(i))).unwrap();
                d.decision.expect("logged").decision_id
            })
            .collect();
        made.push((u, m, ids));
    }
    let [(ua, ma, ids_a), (ub, mb, ids_b)] = <[_; 2]>::try_from(made).unwrap();
    assert_eq!(ids_a, ids_b);
    let reward = |id: &str, value: f64| RewardIn {
        decision_id: id.to_owned(),
        value,
        reward_id: None,
        is_final: true,
    };
    let rewards = [
        reward(&ids_a[0], 1.5),
        reward("unknown", 1.0),
        reward(&ids_a[2], -0.5),
    ];
    let month = BillingMonth::from_unix(NOW);
    let calls_before = calls_in_file(&path_b, &ub);
    // Reopened: neither the model nor its log is in memory.
    let (a, b) = (
        SqliteStore::open(&path_a).unwrap(),
        SqliteStore::open(&path_b).unwrap(),
    );
    let (meter_a, meter_b) = (
        Meter {
            user_id: &ua,
            limits: &l,
            now: NOW + 1,
        },
        Meter {
            user_id: &ub,
            limits: &l,
            now: NOW + 1,
        },
    );
    assert!(b.rewards_nonblocking(&meter_b, &mb, &rewards).is_none());
    let blocking = a.rewards(&meter_a, &ma, &rewards).unwrap();
    let (deferred, durable) = b.rewards_deferred(&meter_b, &mb, &rewards).unwrap();
    // The commit is left to the future, not awaited on this thread.
    assert_eq!(format!("{durable:?}"), "Durable(pending)");
    assert_eq!(format!("{blocking:?}"), format!("{deferred:?}"));
    assert_eq!(deferred[0].as_ref().unwrap().status, RewardStatus::Applied);
    assert!(matches!(deferred[1], Err(qlearn_core::Error::NotFound(_))));
    block_on(durable).unwrap();
    // Resolved means committed: the file counts the two accepted rewards.
    assert_eq!(calls_in_file(&path_b, &ub), calls_before + 2);
    assert_eq!(b.usage(&ub, month).unwrap(), a.usage(&ua, month).unwrap());
    // And holds what was answered, as the blocking call's file does.
    drop((a, b));
    let (a, b) = (
        SqliteStore::open(&path_a).unwrap(),
        SqliteStore::open(&path_b).unwrap(),
    );
    assert_eq!(
        a.export_model(&ua, &ma).unwrap().to_bytes().unwrap(),
        b.export_model(&ub, &mb).unwrap().to_bytes().unwrap(),
    );
    let q = DecisionQuery {
        limit: 10,
        ..DecisionQuery::default()
    };
    let (page_a, page_b) = (
        a.decisions(&ua, &ma, &q).unwrap(),
        b.decisions(&ub, &mb, &q).unwrap(),
    );
    assert_eq!(page_b.stats.applied, 2);
    assert_eq!(page_a.decisions, page_b.decisions);
}

/// Tasks lead their own group commits (`store/sqlite/leader.rs`) while
/// threads' calls go to the writer thread: from several threads at once,
/// every call commits once, in one order, and nothing is lost on reopen.
#[test]
fn concurrent_task_and_thread_calls_all_commit_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let s = SqliteStore::open(&path).unwrap();
    let u = user(&s, "c@example.com");
    let m = s.create_model(&u, "m", &seeded(), None, NOW).unwrap().id;
    let l = TierLimits::UNLIMITED;
    let meter = Meter {
        user_id: &u,
        limits: &l,
        now: NOW,
    };
    s.decide(&meter, &m, &request(StateRef::Int(0))).unwrap();
    let (tasks, threads, each) = (4, 2, 150i64);
    std::thread::scope(|scope| {
        for t in 0..tasks + threads {
            let (s, m, meter) = (&s, &m, &meter);
            scope.spawn(move || {
                for i in 0..each {
                    let x = [Experience::new(
                        StateRef::Int(i % 31),
                        (t % 4) as usize,
                        1.0,
                        StateRef::Int((i + 1) % 31),
                    )];
                    if t < tasks {
                        match s.update_nonblocking(meter, m, &x, Report::Outcomes) {
                            Some(r) => block_on(r.unwrap().1).unwrap(),
                            // Another call held the model: the blocking call.
                            None => drop(s.update(meter, m, &x, Report::Outcomes).unwrap()),
                        }
                    } else {
                        s.update(meter, m, &x, Report::Outcomes).unwrap();
                    }
                }
            });
        }
    });
    let n = (tasks + threads) * each;
    assert_eq!(calls_in_file(&path, &u), 1 + n);
    let updates = |s: &SqliteStore| s.export_model(&u, &m).unwrap().learner().counters().updates;
    assert_eq!(updates(&s), n as u64);
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(
        updates(&s),
        n as u64,
        "what was acknowledged is in the file"
    );
}
