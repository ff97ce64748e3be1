//! Evaluation jobs (issue 18) on every backend: isolation, the plan's
//! limits exact under concurrent creations, a claim taken once under
//! concurrent claimers, re-claim after a lease expired, cancel and
//! delete, the listing's order and keyset, and the decision log read in
//! keyset pages.

use std::collections::HashSet;
use std::sync::{Barrier, Mutex};

use qlearn_core::decisions::Decide;
use qlearn_core::evaluation::{EvalRequest, JobError, PolicySpec};
use qlearn_core::store::{CallKind, DecisionKeyset, EvalLimits, JobEnd, JobStatus, Meter, Store};
use qlearn_core::tenancy::BillingMonth;
use qlearn_core::{Error, StateRef};

use super::decisions::{logging_model, setting};
use super::{limits, meter, new_user, ok, seeded, NOW};

/// Limits no check reaches.
pub(super) const MANY: EvalLimits = EvalLimits {
    per_day: 1000,
    at_once: 1000,
};

/// A one-policy request.
pub(super) fn request() -> EvalRequest {
    EvalRequest {
        policies: vec![PolicySpec::Greedy],
        ..EvalRequest::default()
    }
}

fn nf<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::NotFound(_)))
}

/// A user's jobs are invisible to others and to other models; the listing
/// is newest first with a keyset on `before`; cancel, delete.
pub fn evaluation_jobs_isolation_and_listing<S: Store>(s: &S) {
    let b_ = s.backend();
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    let m = ok(s, s.create_model(&a.id, "m", &seeded(2, 1), None, NOW)).id;
    let other = ok(s, s.create_model(&a.id, "o", &seeded(2, 1), None, NOW)).id;
    let bm = ok(s, s.create_model(&b.id, "m", &seeded(2, 1), None, NOW)).id;
    check!(
        s,
        nf(&s.create_evaluation(&b.id, &m, &request(), MANY, NOW)),
        "another user's model"
    );
    check!(
        s,
        nf(&s.create_evaluation(&a.id, "nope", &request(), MANY, NOW)),
        "unknown model"
    );
    let ids: Vec<String> = (0..5)
        .map(|k| ok(s, s.create_evaluation(&a.id, &m, &request(), MANY, NOW + k)).id)
        .collect();
    ok(s, s.create_evaluation(&b.id, &bm, &request(), MANY, NOW));
    let job = ok(s, s.evaluation(&a.id, &m, &ids[0]));
    check_eq!(s, job.status, JobStatus::Queued);
    check_eq!(s, job.request, request());
    check_eq!(s, job.created_at, NOW);
    check!(s, job.id.starts_with("ev_"), "id {}", job.id);
    check!(
        s,
        nf(&s.evaluation(&b.id, &m, &ids[0])),
        "another user's job"
    );
    check!(
        s,
        nf(&s.evaluation(&a.id, &other, &ids[0])),
        "another model's job"
    );
    let list = |before: Option<&str>, limit| -> Vec<String> {
        ok(s, s.evaluations(&a.id, &m, before, limit))
            .into_iter()
            .map(|j| j.id)
            .collect()
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    check_eq!(s, list(None, 10), newest_first);
    check_eq!(s, list(None, 2), newest_first[..2].to_vec());
    check_eq!(
        s,
        list(Some(&ids[3]), 2),
        vec![ids[2].clone(), ids[1].clone()]
    );
    check_eq!(s, list(Some(&ids[0]), 10), Vec::<String>::new());
    check!(
        s,
        nf(&s.evaluations(&a.id, &m, Some("ev_nope"), 10)),
        "unknown before"
    );
    check!(
        s,
        ok(s, s.evaluations(&a.id, &other, None, 10)).is_empty(),
        "{b_}: other model"
    );
    check!(
        s,
        nf(&s.cancel_evaluation(&b.id, &m, &ids[4], NOW)),
        "another user's cancel"
    );
    ok(s, s.cancel_evaluation(&a.id, &m, &ids[4], NOW + 9));
    let c = ok(s, s.evaluation(&a.id, &m, &ids[4]));
    check_eq!(
        s,
        (c.status, c.finished_at),
        (JobStatus::Cancelled, Some(NOW + 9))
    );
    // A second delete removes the finished record.
    ok(s, s.cancel_evaluation(&a.id, &m, &ids[4], NOW + 10));
    check!(s, nf(&s.evaluation(&a.id, &m, &ids[4])), "deleted");
    check_eq!(s, list(None, 10), newest_first[1..].to_vec());
    // ...but it still counts in the day's limit.
    let five = EvalLimits {
        per_day: 6,
        at_once: 100,
    };
    ok(
        s,
        s.create_evaluation(&a.id, &m, &request(), five, NOW + 20),
    );
    let over = s.create_evaluation(&a.id, &m, &request(), five, NOW + 21);
    check!(
        s,
        matches!(
            over,
            Err(Error::EvaluationLimit {
                limit: "evaluations_per_day",
                max: 6,
                retry_after_secs: Some(_)
            })
        ),
        "over the day: {over:?}"
    );
    // The next UTC day counts afresh.
    let tomorrow = (NOW / 86_400 + 1) * 86_400;
    ok(
        s,
        s.create_evaluation(&a.id, &m, &request(), five, tomorrow),
    );
}

/// Each job created counts once as usage of kind `evaluation` on its UTC
/// day, with its insert; a refused one counts nothing; jobs are not calls:
/// the monthly call count and quota stay the calls' alone.
pub fn evaluation_usage<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let m = ok(s, s.create_model(&a.id, "m", &seeded(2, 1), None, NOW)).id;
    let three = EvalLimits {
        per_day: 3,
        at_once: 100,
    };
    // One job before any call (nothing of the month in memory yet)...
    ok(s, s.create_evaluation(&a.id, &m, &request(), three, NOW));
    // ...a call that uses the whole quota of 1...
    let l = limits(Some(1), None);
    ok(
        s,
        s.predict(&meter(&a.id, &l, NOW), &m, StateRef::Int(0), true, None),
    );
    // ...and jobs still pass: they are limited per day, not by the quota.
    for t in 1..3 {
        ok(
            s,
            s.create_evaluation(&a.id, &m, &request(), three, NOW + t),
        );
    }
    let refused = s.create_evaluation(&a.id, &m, &request(), three, NOW + 5);
    check!(
        s,
        matches!(refused, Err(Error::EvaluationLimit { .. })),
        "{refused:?}"
    );
    let month = BillingMonth::from_unix(NOW);
    let u = ok(s, s.usage(&a.id, month));
    let day = usize::from(month.day_of(NOW)) - 1;
    check_eq!(s, u.of_kind(CallKind::Evaluation), 3, "jobs created");
    check_eq!(s, (u.calls, u.per_day[day], u.overage), (1, 1, 0), "calls");
    check_eq!(s, u.of_kind(CallKind::Predict), 1);
    // The quota still sees one call: a second predict is refused.
    let over = s.predict(&meter(&a.id, &l, NOW + 6), &m, StateRef::Int(0), true, None);
    check!(s, over.is_err(), "over the quota: {over:?}");
    let two = limits(Some(2), None);
    ok(
        s,
        s.predict(
            &meter(&a.id, &two, NOW + 7),
            &m,
            StateRef::Int(0),
            true,
            None,
        ),
    );
    let listed = ok(s, s.usage_by_user(month));
    let mine = listed.iter().find(|r| r.user_id == a.id).map(|r| &r.usage);
    check_eq!(
        s,
        mine.map(|u| (u.calls, u.of_kind(CallKind::Evaluation))),
        Some((2, 3)),
        "usage_by_user"
    );
    // The next day's job counts on that day, in the same month's total.
    let tomorrow = (NOW / 86_400 + 1) * 86_400;
    if BillingMonth::from_unix(tomorrow) == month {
        ok(
            s,
            s.create_evaluation(&a.id, &m, &request(), three, tomorrow),
        );
        let u = ok(s, s.usage(&a.id, month));
        check_eq!(s, (u.of_kind(CallKind::Evaluation), u.calls), (4, 2));
    }
}

/// Concurrent creations of one user never pass the limits: exactly
/// `per_day` succeed, then exactly `at_once` while none finishes.
pub fn evaluation_limits_under_concurrency<S: Store>(s: &S) {
    const THREADS: usize = 8;
    let a = new_user(s, "a@example.com");
    let m = ok(s, s.create_model(&a.id, "m", &seeded(2, 1), None, NOW)).id;
    let race = |limits: EvalLimits, now: i64| -> usize {
        let barrier = Barrier::new(THREADS);
        let won = Mutex::new(0);
        std::thread::scope(|sc| {
            for _ in 0..THREADS {
                sc.spawn(|| {
                    barrier.wait();
                    for _ in 0..3 {
                        match s.create_evaluation(&a.id, &m, &request(), limits, now) {
                            Ok(_) => *won.lock().unwrap() += 1,
                            Err(Error::EvaluationLimit { .. }) => {}
                            Err(e) => panic!("[{}] create: {e:?}", s.backend()),
                        }
                    }
                });
            }
        });
        won.into_inner().unwrap()
    };
    let per_day = race(
        EvalLimits {
            per_day: 5,
            at_once: 100,
        },
        NOW,
    );
    check_eq!(s, per_day, 5, "per day under {THREADS} concurrent creators");
    // Cancel them: none active; the next day, at once is the limit.
    for j in ok(s, s.evaluations(&a.id, &m, None, 100)) {
        ok(s, s.cancel_evaluation(&a.id, &m, &j.id, NOW));
    }
    let at_once = race(
        EvalLimits {
            per_day: 100,
            at_once: 3,
        },
        NOW + 86_400,
    );
    check_eq!(s, at_once, 3, "at once under {THREADS} concurrent creators");
    let err = s.create_evaluation(
        &a.id,
        &m,
        &request(),
        EvalLimits {
            per_day: 100,
            at_once: 3,
        },
        NOW + 86_400,
    );
    check!(
        s,
        matches!(
            err,
            Err(Error::EvaluationLimit {
                limit: "evaluations_at_once",
                max: 3,
                ..
            })
        ),
        "at once: {err:?}"
    );
}

/// Claims are fair between tenants: the next job is one of the owner with
/// the fewest jobs running under a live lease (oldest first among equals),
/// so a tenant who queued first and most does not hold every worker; a job
/// whose lease expired no longer counts as its owner's running one.
pub fn evaluation_claims_are_fair_between_owners<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    let ma = ok(s, s.create_model(&a.id, "m", &seeded(2, 1), None, NOW)).id;
    let mb = ok(s, s.create_model(&b.id, "m", &seeded(2, 1), None, NOW)).id;
    let queue =
        |owner: &str, m: &str| ok(s, s.create_evaluation(owner, m, &request(), MANY, NOW)).id;
    let a_jobs: Vec<String> = (0..3).map(|_| queue(&a.id, &ma)).collect();
    let b_job = queue(&b.id, &mb);
    let claim = |at: i64| ok(s, s.claim_evaluation(60, at)).map(|c| c.job.id);
    check_eq!(
        s,
        claim(NOW),
        Some(a_jobs[0].clone()),
        "nobody runs: the oldest"
    );
    check_eq!(s, claim(NOW), Some(b_job.clone()), "b runs none, a one");
    check_eq!(
        s,
        claim(NOW),
        Some(a_jobs[1].clone()),
        "one each: the oldest"
    );
    // At NOW + 61 every lease has expired: all three are claimable again,
    // and none counts as running, so the oldest comes first.
    check_eq!(
        s,
        claim(NOW + 61),
        Some(a_jobs[0].clone()),
        "expired: the oldest"
    );
    check_eq!(s, claim(NOW + 61), Some(b_job), "b runs none again, a one");
    check_eq!(s, claim(NOW + 61), Some(a_jobs[1].clone()));
    check_eq!(s, claim(NOW + 61), Some(a_jobs[2].clone()));
    check_eq!(s, claim(NOW + 61), None, "every job held");
}

/// Concurrent claimers take each queued job exactly once, oldest first; a
/// running job is claimed again only once its lease expired, and then the
/// old holder can neither write progress nor finish it.
pub fn evaluation_claims<S: Store>(s: &S) {
    const THREADS: usize = 6;
    const JOBS: usize = 20;
    let a = new_user(s, "a@example.com");
    let m = ok(s, s.create_model(&a.id, "m", &seeded(2, 1), None, NOW)).id;
    let ids: Vec<String> = (0..JOBS)
        .map(|_| ok(s, s.create_evaluation(&a.id, &m, &request(), MANY, NOW)).id)
        .collect();
    let first = ok(s, s.claim_evaluation(60, NOW)).expect("a job");
    check_eq!(s, first.job.id, ids[0], "oldest first");
    check_eq!(
        s,
        (first.job.status, first.job.started_at),
        (JobStatus::Running, Some(NOW))
    );
    let claimed = Mutex::new(vec![first.job.id.clone()]);
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|sc| {
        for _ in 0..THREADS {
            sc.spawn(|| {
                barrier.wait();
                while let Some(c) = ok(s, s.claim_evaluation(60, NOW + 1)) {
                    claimed.lock().unwrap().push(c.job.id);
                }
            });
        }
    });
    let claimed = claimed.into_inner().unwrap();
    let unique: HashSet<&String> = claimed.iter().collect();
    check_eq!(
        s,
        claimed.len(),
        JOBS,
        "every job claimed once: {claimed:?}"
    );
    check_eq!(s, unique.len(), JOBS);
    // Leases: not expired at NOW + 60, expired after.
    check!(
        s,
        ok(s, s.claim_evaluation(60, NOW + 60)).is_none(),
        "lease held"
    );
    check!(
        s,
        ok(
            s,
            s.evaluation_progress(&first.job.id, &first.token, 3, 10, 60, NOW + 30)
        ),
        "the holder writes progress"
    );
    let p = ok(s, s.evaluation(&a.id, &m, &first.job.id));
    check_eq!(s, (p.decisions_read, p.decisions_total), (3, 10));
    // The renewed lease runs to NOW + 90: every other job expires first.
    let again: Vec<String> = std::iter::from_fn(|| ok(s, s.claim_evaluation(60, NOW + 80)))
        .map(|c| c.job.id)
        .collect();
    check_eq!(s, again.len(), JOBS - 1, "expired leases are claimed again");
    check!(s, !again.contains(&first.job.id), "a renewed lease holds");
    let re = ok(s, s.claim_evaluation(60, NOW + 91)).expect("expired");
    check_eq!(s, re.job.id, first.job.id);
    check_eq!(
        s,
        re.job.started_at,
        Some(NOW),
        "started_at is the first claim"
    );
    let old = &first.token;
    check!(
        s,
        !ok(
            s,
            s.evaluation_progress(&first.job.id, old, 4, 10, 60, NOW + 92)
        ),
        "old holder"
    );
    let end = JobEnd::Done(serde_json::json!({"x": 1}));
    check!(
        s,
        !ok(
            s,
            s.finish_evaluation(&first.job.id, old, end.clone(), NOW + 92)
        ),
        "old holder"
    );
    check!(
        s,
        ok(s, s.finish_evaluation(&re.job.id, &re.token, end, NOW + 93)),
        "new holder"
    );
    let done = ok(s, s.evaluation(&a.id, &m, &re.job.id));
    check_eq!(s, done.status, JobStatus::Done);
    check_eq!(s, done.result, Some(serde_json::json!({"x": 1})));
    check_eq!(s, done.finished_at, Some(NOW + 93));
    check!(
        s,
        !ok(
            s,
            s.finish_evaluation(&re.job.id, &re.token, JobEnd::Released, NOW + 94)
        ),
        "once"
    );
    // A failure keeps its error; a cancelled job stops its holder.
    let c = ok(s, s.claim_evaluation(60, NOW + 200)).expect("expired");
    let err = JobError {
        code: "internal".into(),
        message: "boom".into(),
    };
    check!(
        s,
        ok(
            s,
            s.finish_evaluation(&c.job.id, &c.token, JobEnd::Failed(err.clone()), NOW + 201)
        ),
        "fail"
    );
    let f = ok(s, s.evaluation(&a.id, &m, &c.job.id));
    check_eq!(s, (f.status, f.error), (JobStatus::Failed, Some(err)));
    let c = ok(s, s.claim_evaluation(60, NOW + 200)).expect("expired");
    ok(s, s.cancel_evaluation(&a.id, &m, &c.job.id, NOW + 201));
    check!(
        s,
        !ok(
            s,
            s.evaluation_progress(&c.job.id, &c.token, 1, 1, 60, NOW + 202)
        ),
        "cancelled"
    );
    // Released: queued again, claimed again.
    let c = ok(s, s.claim_evaluation(60, NOW + 200)).expect("expired");
    check!(
        s,
        ok(
            s,
            s.finish_evaluation(&c.job.id, &c.token, JobEnd::Released, NOW + 201)
        ),
        "release"
    );
    check_eq!(
        s,
        ok(s, s.evaluation(&a.id, &m, &c.job.id)).status,
        JobStatus::Queued
    );
    let c2 = ok(s, s.claim_evaluation(60, NOW + 202)).expect("released");
    check_eq!(s, c2.job.id, c.job.id);
}

/// The decision log newest first in keyset pages: the pages together are
/// the whole log in `(time, id)` descending order, filters included; a
/// model without decisions has none; another user's model is NotFound.
pub fn evaluation_decision_keyset<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    let l = limits(None, None);
    let id = logging_model(s, &a.id, &seeded(3, 2), setting(60, None));
    for k in 0..25_i64 {
        let at = Meter {
            user_id: &a.id,
            limits: &l,
            now: NOW + k / 3,
        };
        ok(s, s.decide(&at, &id, &Decide::new(StateRef::Int(k))));
    }
    let mut all = Vec::new();
    let mut q = DecisionKeyset {
        limit: 4,
        ..DecisionKeyset::default()
    };
    loop {
        let page = ok(s, s.decisions_keyset(&a.id, &id, &q));
        let n = page.len();
        if let Some(last) = page.last() {
            q.before = Some((last.time_ms, last.decision_id.clone()));
        }
        all.extend(page);
        if n < 4 {
            break;
        }
    }
    check_eq!(s, all.len(), 25);
    let keys: Vec<(i64, String)> = all
        .iter()
        .map(|r| (r.time_ms, r.decision_id.clone()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    check_eq!(s, keys, sorted, "newest first, no repeats");
    let t = all[10].time_ms;
    let windowed = ok(
        s,
        s.decisions_keyset(
            &a.id,
            &id,
            &DecisionKeyset {
                since_ms: Some(t),
                until_ms: Some(t + 1000),
                limit: 100,
                before: None,
            },
        ),
    );
    check!(s, !windowed.is_empty(), "a window");
    check!(
        s,
        windowed
            .iter()
            .all(|r| r.time_ms >= t && r.time_ms < t + 1000),
        "since/until"
    );
    let plain = ok(s, s.create_model(&a.id, "p", &seeded(2, 1), None, NOW)).id;
    check!(
        s,
        ok(s, s.decisions_keyset(&a.id, &plain, &q)).is_empty(),
        "no log"
    );
    check!(s, nf(&s.decisions_keyset(&b.id, &id, &q)), "another user's");
}
