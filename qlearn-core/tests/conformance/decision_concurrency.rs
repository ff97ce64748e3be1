//! Conformance check of decision calls of one model arriving at once (a
//! store may combine them: PostgreSQL runs one model's concurrent decision
//! calls in one transaction). Each call must still answer as if alone:
//! its own validation, quota decision, idempotency and episode order.

use std::sync::Barrier;

use qlearn_core::decisions::{Decide, EpisodeEnd};
use qlearn_core::store::{Meter, RewardIn, Store};
use qlearn_core::tenancy::BillingMonth;
use qlearn_core::{Error, StateRef};

use super::decisions::{log_page, logging_model, reward, setting};
use super::{limits, new_user, ok, seeded, NOW};

/// What one thread saw.
#[derive(Default)]
struct Seen {
    /// Steps of the thread's episode, in the order its decisions were logged.
    steps: Vec<u64>,
    /// New decisions logged.
    logged: u64,
    /// Rewards counted.
    rewarded: u64,
    /// Calls refused for the quota.
    refused: u64,
}

/// Eight threads make logging predicts, retries, invalid predicts and
/// rewards on one model at once, past their quota: every logged decision
/// and counted reward is metered exactly once and nothing else is, the
/// quota is never passed, a retry answers the logged action for free, an
/// invalid call costs nothing, and each thread's episode numbers its steps
/// in the thread's order.
pub fn decisions_concurrent_on_one_model<S: Store>(s: &S) {
    const THREADS: usize = 8;
    const ROUNDS: usize = 12;
    const QUOTA: u64 = 100;
    let a = new_user(s, "a@example.com");
    let id = logging_model(s, &a.id, &seeded(3, 11), setting(3600, Some(0.0)));
    let l = limits(Some(QUOTA), None);
    let start = Barrier::new(THREADS);
    let seen: Vec<Seen> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (start, id, user, l) = (&start, &id, &a.id, &l);
                scope.spawn(move || {
                    let m = Meter {
                        user_id: user,
                        limits: l,
                        now: NOW,
                    };
                    let episode = format!("ep{t}");
                    let mut me = Seen::default();
                    start.wait();
                    for i in 0..ROUNDS {
                        let did = format!("t{t}-{i}");
                        let state = StateRef::Int((i % 4) as i64);
                        let d = Decide::new(state).id(&did).episode(&episode);
                        let first = match s.decide(&m, id, &d) {
                            Ok(out) => out.decision.expect("a logging model logs"),
                            Err(Error::QuotaExceeded { .. }) => {
                                me.refused += 1;
                                continue;
                            }
                            Err(e) => panic!("[{}] decide: {e}", s.backend()),
                        };
                        assert!(!first.replayed, "[{}] {did} is new", s.backend());
                        me.logged += 1;
                        me.steps.push(first.step);
                        // A retry answers the logged decision, free.
                        let again = ok(s, s.decide(&m, id, &d)).decision.expect("logged");
                        assert!(again.replayed, "[{}] {did} replayed", s.backend());
                        assert_eq!(again.action, first.action, "[{}] {did}", s.backend());
                        assert_eq!(again.step, first.step, "[{}] {did}", s.backend());
                        // An invalid predict fails alone and costs nothing.
                        let bad = s.decide(&m, id, &Decide::new(state).allowed(&[7]));
                        assert!(
                            matches!(bad, Err(Error::InvalidAction { .. })),
                            "[{}] action 7 of 3: {bad:?}",
                            s.backend()
                        );
                        if i % 2 == 0 {
                            let r: [RewardIn; 1] = [reward(&did, 1.0, Some("r"), false)];
                            match s.rewards(&m, id, &r) {
                                Ok(out) => {
                                    let receipt = out[0].as_ref().expect("a known decision");
                                    if receipt.metered() {
                                        me.rewarded += 1;
                                    }
                                }
                                Err(Error::QuotaExceeded { .. }) => me.refused += 1,
                                Err(e) => panic!("[{}] rewards: {e}", s.backend()),
                            }
                        }
                    }
                    // Every thread ends its episode at once: the ends'
                    // transitions create and update rows together. (A
                    // thread refused every time has no episode.)
                    let end = EpisodeEnd::terminated();
                    let ended = s.end_episode(&m, id, &episode, &end);
                    match (me.logged, ended) {
                        (0, Err(Error::NotFound(_))) => {}
                        (0, other) => panic!("[{}] no episode: {other:?}", s.backend()),
                        (_, other) => {
                            ok(s, other);
                        }
                    }
                    me
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a thread"))
            .collect()
    });
    let logged: u64 = seen.iter().map(|x| x.logged).sum();
    let rewarded: u64 = seen.iter().map(|x| x.rewarded).sum();
    let refused: u64 = seen.iter().map(|x| x.refused).sum();
    let calls = ok(s, s.usage(&a.id, BillingMonth::from_unix(NOW))).calls;
    assert_eq!(
        calls,
        logged + rewarded,
        "[{}] metered: {logged} decisions and {rewarded} rewards",
        s.backend()
    );
    assert!(calls <= QUOTA, "[{}] {calls} past {QUOTA}", s.backend());
    assert!(
        refused > 0 && calls == QUOTA,
        "[{}] the quota ran out ({calls} of {QUOTA}, {refused} refused)",
        s.backend()
    );
    let page = log_page(s, &a.id, &id);
    assert_eq!(page.stats.decisions, logged, "[{}] logged", s.backend());
    assert_eq!(page.stats.rewards, rewarded, "[{}] rewards", s.backend());
    assert_eq!(page.total, Some(logged), "[{}] rows", s.backend());
    // Past every window: all that is left is learned. The table holds each
    // state the transitions stored once, under the row numbers 0..n.
    ok(s, s.settle(NOW + 3601));
    let table = ok(s, s.q_table(&a.id, &id, 0, 100));
    let mut keys: Vec<String> = table.rows.iter().map(|(k, _)| format!("{k:?}")).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        (keys.len() as u64, table.total),
        (4, 4),
        "[{}] states 0-3 stored once each: {keys:?}",
        s.backend()
    );
    for (t, x) in seen.iter().enumerate() {
        let expect: Vec<u64> = (0..x.steps.len() as u64).collect();
        assert_eq!(x.steps, expect, "[{}] thread {t}'s steps", s.backend());
    }
}
