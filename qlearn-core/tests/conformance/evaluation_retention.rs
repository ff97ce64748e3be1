//! Retention of evaluation jobs (store/eval_retention.rs) on every
//! backend: a deleted job's payload goes at once and its tombstone counts
//! in its UTC day's limit until the day is over; deleting a model buries
//! its jobs (running ones too) without freeing the day's limit; a model
//! keeps its newest finished jobs; pruning is exact and idempotent, and
//! the settle pass runs it.

use std::sync::Barrier;

use qlearn_core::evaluation::JobError;
use qlearn_core::store::{
    day_of, EvalFootprint, EvalLimits, JobEnd, JobStatus, Store, KEEP_FINISHED_JOBS,
    PRUNE_JOBS_CHUNK,
};
use qlearn_core::Error;

use super::evaluations::{request, MANY};
use super::{new_user, ok, seeded, NOW};

/// A job of `owner`'s model created at `t` and ended as `status` (done,
/// failed or cancelled) at `t`: its id. The store's queue must be empty.
fn finished<S: Store>(s: &S, owner: &str, model: &str, status: JobStatus, t: i64) -> String {
    let id = ok(s, s.create_evaluation(owner, model, &request(), MANY, t)).id;
    if status == JobStatus::Cancelled {
        ok(s, s.cancel_evaluation(owner, model, &id, t));
        return id;
    }
    let c = ok(s, s.claim_evaluation(60, t)).expect("the job just queued");
    assert_eq!(c.job.id, id, "[{}] the only queued job", s.backend());
    let end = match status {
        JobStatus::Done => JobEnd::Done(serde_json::json!({"policies": []})),
        _ => JobEnd::Failed(JobError::of(&Error::NotFound("model"))),
    };
    check!(s, ok(s, s.finish_evaluation(&id, &c.token, end, t)), "ours");
    check_eq!(s, ok(s, s.evaluation(owner, model, &id)).status, status);
    id
}

fn footprint(rows: u64, deleted: u64, with_payload: u64) -> EvalFootprint {
    EvalFootprint {
        rows,
        deleted,
        with_payload,
    }
}

fn over_the_day<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(
        r,
        Err(Error::EvaluationLimit {
            limit: "evaluations_per_day",
            ..
        })
    )
}

/// Deleting a finished job drops its payload at once; its tombstone counts
/// in its UTC day's limit through the day's last second, and is pruned
/// once the day is over (exactly: a tombstone of the new day stays), once.
pub fn evaluation_tombstones<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    let m = ok(s, s.create_model(&a.id, "m", &seeded(2, 1), None, NOW)).id;
    let bm = ok(s, s.create_model(&b.id, "m", &seeded(2, 1), None, NOW)).id;
    let day = day_of(NOW).0;
    let (last, tomorrow) = (day + 86_399, day + 86_400);
    let jobs = [
        finished(s, &a.id, &m, JobStatus::Done, NOW),
        finished(s, &a.id, &m, JobStatus::Failed, NOW + 1),
        finished(s, &a.id, &m, JobStatus::Cancelled, last),
    ];
    finished(s, &b.id, &bm, JobStatus::Done, NOW);
    check_eq!(s, ok(s, s.evaluation_footprint(&a.id)), footprint(3, 0, 3));
    for id in &jobs {
        ok(s, s.cancel_evaluation(&a.id, &m, id, last));
        let gone = s.evaluation(&a.id, &m, id);
        check!(s, matches!(gone, Err(Error::NotFound(_))), "{gone:?}");
    }
    check_eq!(s, ok(s, s.evaluation_footprint(&a.id)), footprint(3, 3, 0));
    check_eq!(s, ok(s, s.evaluation_footprint(&b.id)), footprint(1, 0, 1));
    // A second delete of a tombstone is 404.
    let again = s.cancel_evaluation(&a.id, &m, &jobs[0], last);
    check!(s, matches!(again, Err(Error::NotFound(_))), "{again:?}");
    // The tombstones count today, to the day's last second...
    let three = EvalLimits {
        per_day: 3,
        at_once: 3,
    };
    let over = s.create_evaluation(&a.id, &m, &request(), three, last);
    check!(s, over_the_day(&over), "{over:?}");
    check_eq!(s, ok(s, s.prune_evaluations(KEEP_FINISHED_JOBS, last)), 0);
    check_eq!(s, ok(s, s.evaluation_footprint(&a.id)), footprint(3, 3, 0));
    // ...and go once the day is over; a tombstone of the new day stays.
    let new = finished(s, &a.id, &m, JobStatus::Done, tomorrow);
    ok(s, s.cancel_evaluation(&a.id, &m, &new, tomorrow));
    check_eq!(
        s,
        ok(s, s.prune_evaluations(KEEP_FINISHED_JOBS, tomorrow)),
        3
    );
    check_eq!(s, ok(s, s.evaluation_footprint(&a.id)), footprint(1, 1, 0));
    check_eq!(
        s,
        ok(s, s.prune_evaluations(KEEP_FINISHED_JOBS, tomorrow)),
        0,
        "idempotent"
    );
    check_eq!(s, ok(s, s.evaluation_footprint(&b.id)), footprint(1, 0, 1));
    // The settle pass prunes too.
    ok(s, s.settle(tomorrow + 86_400));
    check_eq!(s, ok(s, s.evaluation_footprint(&a.id)), footprint(0, 0, 0));
}

/// Deleting a model with more live jobs than one chunk of the burial
/// ([`PRUNE_JOBS_CHUNK`]) turns every one of them into a tombstone.
pub fn evaluation_model_deletion_past_a_chunk<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let m = ok(s, s.create_model(&a.id, "m", &seeded(2, 1), None, NOW)).id;
    let n = PRUNE_JOBS_CHUNK as u64 + 2;
    let lots = EvalLimits {
        per_day: n as u32,
        at_once: n as u32,
    };
    for _ in 0..n {
        ok(s, s.create_evaluation(&a.id, &m, &request(), lots, NOW));
    }
    ok(s, s.delete_model(&a.id, &m));
    check_eq!(s, ok(s, s.evaluation_footprint(&a.id)), footprint(n, n, 0));
    check!(
        s,
        ok(s, s.claim_evaluation(60, NOW + 1)).is_none(),
        "nothing of the model left to claim"
    );
}

/// Deleting a model buries its jobs, queued and running ones too (the
/// running job's holder can neither write progress nor finish it, and the
/// queued one is never claimed); the buried jobs still count in the day's
/// limit, so deleting models does not free it; the next day they go.
pub fn evaluation_model_deletion<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let m = ok(s, s.create_model(&a.id, "m", &seeded(2, 1), None, NOW)).id;
    let o = ok(s, s.create_model(&a.id, "o", &seeded(2, 1), None, NOW)).id;
    let four = EvalLimits {
        per_day: 4,
        at_once: 4,
    };
    let done = finished(s, &a.id, &m, JobStatus::Done, NOW);
    let running = ok(s, s.create_evaluation(&a.id, &m, &request(), four, NOW + 1)).id;
    let held = ok(s, s.claim_evaluation(60, NOW + 1)).expect("the running job");
    check_eq!(s, held.job.id, running);
    let queued = ok(s, s.create_evaluation(&a.id, &m, &request(), four, NOW + 2)).id;
    let kept = ok(s, s.create_evaluation(&a.id, &o, &request(), four, NOW + 3)).id;
    ok(s, s.delete_model(&a.id, &m));
    for id in [&done, &running, &queued] {
        let gone = s.evaluation(&a.id, &m, id);
        check!(s, matches!(gone, Err(Error::NotFound(_))), "{id}: {gone:?}");
    }
    let listed = s.evaluations(&a.id, &m, None, 10);
    check!(
        s,
        listed.as_ref().map_or(true, Vec::is_empty),
        "listing: {listed:?}"
    );
    check!(
        s,
        !ok(
            s,
            s.evaluation_progress(&running, &held.token, 1, 2, 60, NOW + 4)
        ),
        "progress of a buried job"
    );
    check!(
        s,
        !ok(
            s,
            s.finish_evaluation(&running, &held.token, JobEnd::Released, NOW + 4)
        ),
        "end of a buried job"
    );
    // Only the other model's job is claimable.
    let next = ok(s, s.claim_evaluation(60, NOW + 4)).map(|c| c.job.id);
    check_eq!(s, next, Some(kept.clone()));
    check!(s, ok(s, s.claim_evaluation(60, NOW + 4)).is_none(), "none");
    check_eq!(s, ok(s, s.evaluation_footprint(&a.id)), footprint(4, 3, 1));
    let over = s.create_evaluation(&a.id, &o, &request(), four, NOW + 5);
    check!(
        s,
        over_the_day(&over),
        "a deleted model's jobs count: {over:?}"
    );
    let gone = s.create_evaluation(&a.id, &m, &request(), four, NOW + 5);
    check!(s, matches!(gone, Err(Error::NotFound(_))), "{gone:?}");
    check_eq!(
        s,
        ok(s, s.prune_evaluations(KEEP_FINISHED_JOBS, NOW + 5)),
        0
    );
    let tomorrow = day_of(NOW).0 + 86_400;
    check_eq!(
        s,
        ok(s, s.prune_evaluations(KEEP_FINISHED_JOBS, tomorrow)),
        3
    );
    check_eq!(s, ok(s, s.evaluation_footprint(&a.id)), footprint(1, 0, 1));
    ok(
        s,
        s.create_evaluation(&a.id, &o, &request(), four, tomorrow),
    );
}

/// Of each model's finished jobs (done, failed, cancelled), the prune
/// keeps the newest `keep`, removing the older ones; queued jobs, today's
/// tombstones and other models' jobs stay. Idempotent; a model over the cap
/// again after a prune is found by the next.
pub fn evaluation_finished_cap<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    let m = ok(s, s.create_model(&a.id, "m", &seeded(2, 1), None, NOW)).id;
    let o = ok(s, s.create_model(&a.id, "o", &seeded(2, 1), None, NOW)).id;
    let bm = ok(s, s.create_model(&b.id, "m", &seeded(2, 1), None, NOW)).id;
    use JobStatus::{Cancelled, Done, Failed};
    let ended: Vec<String> = [Done, Cancelled, Failed, Done, Cancelled, Done]
        .into_iter()
        .zip(0..)
        .map(|(status, t)| finished(s, &a.id, &m, status, NOW + t))
        .collect();
    let tomb = finished(s, &a.id, &m, Done, NOW + 10);
    ok(s, s.cancel_evaluation(&a.id, &m, &tomb, NOW + 10));
    let others: Vec<String> = (0..2)
        .map(|t| finished(s, &a.id, &o, Failed, NOW + 20 + t))
        .collect();
    for t in 0..5 {
        finished(s, &b.id, &bm, Done, NOW + 30 + t);
    }
    let queued = ok(
        s,
        s.create_evaluation(&a.id, &m, &request(), MANY, NOW + 40),
    )
    .id;
    let ids = |owner: &str, model: &str| -> Vec<String> {
        ok(s, s.evaluations(owner, model, None, 100))
            .into_iter()
            .map(|j| j.id)
            .collect()
    };
    check_eq!(s, ok(s, s.prune_evaluations(3, NOW + 50)), 3 + 2);
    let newest: Vec<String> = std::iter::once(queued.clone())
        .chain(ended[3..].iter().rev().cloned())
        .collect();
    check_eq!(
        s,
        ids(&a.id, &m),
        newest,
        "the newest 3 finished and the queued"
    );
    let others_newest: Vec<String> = others.iter().rev().cloned().collect();
    check_eq!(s, ids(&a.id, &o), others_newest);
    check_eq!(s, ids(&b.id, &bm).len(), 3);
    check_eq!(s, ok(s, s.evaluation_footprint(&a.id)), footprint(7, 1, 6));
    check_eq!(s, ok(s, s.prune_evaluations(3, NOW + 50)), 0, "idempotent");
    check_eq!(
        s,
        ok(s, s.prune_evaluations(KEEP_FINISHED_JOBS, NOW + 50)),
        0
    );
    check_eq!(s, ids(&a.id, &m), newest);
    // Jobs finished later put the model over the cap again: the next prune
    // finds it.
    let later: Vec<String> = (0..2)
        .map(|t| finished(s, &a.id, &m, Cancelled, NOW + 5_000 + t))
        .collect();
    check_eq!(s, ok(s, s.prune_evaluations(3, NOW + 5_010)), 2);
    let newest = vec![later[1].clone(), later[0].clone(), queued, ended[5].clone()];
    check_eq!(s, ids(&a.id, &m), newest);
}

/// Creations racing a model's deletion: every job they created is buried
/// with the model (none keeps a payload or can be claimed), however the
/// creations and the deletion interleave.
pub fn evaluation_creation_races_model_deletion<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let unlimited = EvalLimits {
        per_day: u32::MAX,
        at_once: u32::MAX,
    };
    let mut created = 0;
    for round in 0..20 {
        let name = format!("m{round}");
        let m = ok(s, s.create_model(&a.id, &name, &seeded(2, 1), None, NOW)).id;
        let barrier = Barrier::new(3);
        created += std::thread::scope(|sc| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    sc.spawn(|| {
                        barrier.wait();
                        let mut n = 0;
                        loop {
                            match s.create_evaluation(&a.id, &m, &request(), unlimited, NOW) {
                                Ok(_) => n += 1,
                                Err(Error::NotFound(_)) => return n,
                                Err(e) => panic!("[{}] create: {e:?}", s.backend()),
                            }
                        }
                    })
                })
                .collect();
            barrier.wait();
            std::thread::sleep(std::time::Duration::from_millis(2));
            ok(s, s.delete_model(&a.id, &m));
            racers
                .into_iter()
                .map(|r| r.join().expect("a racer"))
                .sum::<u64>()
        });
    }
    check!(s, created > 0, "the racers created jobs");
    let f = ok(s, s.evaluation_footprint(&a.id));
    check_eq!(s, f, footprint(created, created, 0));
    check!(
        s,
        ok(s, s.claim_evaluation(60, NOW)).is_none(),
        "a buried job claimed"
    );
}
