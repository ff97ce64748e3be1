//! Conformance checks of usage for invoicing (issue 17): calls counted by
//! kind and overage past the quota, listed in `conformance_tests!` with the
//! rest of the suite.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

use qlearn_core::decisions::Decide;
use qlearn_core::store::{CallKind, Store, Usage};
use qlearn_core::tenancy::{BillingMonth, Tier, TierLimits};
use qlearn_core::{Error, Experience, StateRef};

use super::decisions::{logging_model, reward, setting};
use super::{limits, meter, new_user, ok, seeded, update, NOW};

fn usage<S: Store>(s: &S, user: &str) -> Usage {
    ok(s, s.usage(user, BillingMonth::from_unix(NOW)))
}

/// `limits(Some(quota))` with overage on.
fn with_overage(quota: u64) -> TierLimits {
    TierLimits {
        overage: true,
        ..limits(Some(quota), None)
    }
}

/// Each metered call counts under its kind (predict, update per
/// experience, a logging predict as decide, each accepted reward; a decide
/// on a model without decisions as predict); refused and free calls count
/// nothing; the kinds sum to the calls; `usage_by_user` lists every user.
pub fn usage_by_kind<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    ok(s, s.set_tier(&b.id, Tier::Pro));
    let plain = ok(s, s.create_model(&a.id, "m", &seeded(2, 1), None, NOW)).id;
    let logged = logging_model(s, &a.id, &seeded(2, 2), setting(60, None));
    let l = limits(Some(1_000), None);
    let m = meter(&a.id, &l, NOW);
    for i in 0..3 {
        ok(s, s.predict(&m, &plain, StateRef::Int(i), true, None));
    }
    let batch = vec![Experience::new(1, 0, 1.0, 2); 4];
    ok(s, update(s, &m, &plain, &batch));
    ok(s, update(s, &m, &plain, &batch[..1]));
    // Refused: an invalid action costs nothing, of any kind.
    let bad = update(s, &m, &plain, &[Experience::new(1, 9, 1.0, 2)]);
    assert!(bad.is_err(), "[{}] {bad:?}", s.backend());
    ok(
        s,
        s.decide(&m, &logged, &Decide::new(StateRef::Int(1)).id("x")),
    );
    ok(
        s,
        s.decide(&m, &logged, &Decide::new(StateRef::Int(2)).id("y")),
    );
    // A retried decision is free.
    ok(
        s,
        s.decide(&m, &logged, &Decide::new(StateRef::Int(2)).id("y")),
    );
    // On a model without decisions a decide is a plain predict.
    ok(s, s.decide(&m, &plain, &Decide::new(StateRef::Int(5))));
    let rewards = [
        reward("x", 1.0, Some("r1"), false),
        reward("y", 0.5, None, true),
    ];
    ok(s, s.rewards(&m, &logged, &rewards));
    // A duplicate reward is free.
    ok(s, s.rewards(&m, &logged, &rewards[..1]));

    let u = usage(s, &a.id);
    let want = [
        (CallKind::Predict, 3 + 1),
        (CallKind::Update, 5),
        (CallKind::Decide, 2),
        (CallKind::Reward, 2),
        (CallKind::Unknown, 0),
    ];
    for (kind, n) in want {
        assert_eq!(u.of_kind(kind), n, "[{}] {kind} calls", s.backend());
    }
    assert_eq!(u.calls, 13, "[{}] the kinds sum to the calls", s.backend());
    assert_eq!(u.by_kind.iter().sum::<u64>(), u.calls);
    assert_eq!(u.per_day.iter().sum::<u64>(), u.calls);
    assert_eq!(u.overage, 0, "[{}] no overage without it", s.backend());

    let month = BillingMonth::from_unix(NOW);
    let all = ok(s, s.usage_by_user(month));
    assert_eq!(all.len(), 2, "[{}] every user listed", s.backend());
    let ua = all.iter().find(|x| x.user_id == a.id);
    let ub = all.iter().find(|x| x.user_id == b.id);
    assert_eq!(ua.map(|x| &x.usage), Some(&u), "[{}]", s.backend());
    assert_eq!(ua.map(|x| x.email.as_str()), Some("a@example.com"));
    assert_eq!(ub.map(|x| (x.tier, x.usage.calls)), Some((Tier::Pro, 0)));
    // Another month is empty.
    let next = ok(s, s.usage_by_user(month.next()));
    assert!(next.iter().all(|x| x.usage.calls == 0), "[{}]", s.backend());
}

/// Overage at the boundary: with it on, calls past the quota are granted
/// and counted as overage exactly (a batch straddling the quota split);
/// with it off the same call is refused and counts nothing; switching it
/// off later refuses at once.
pub fn overage_at_the_boundary<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let id = ok(s, s.create_model(&a.id, "m", &seeded(2, 5), None, NOW)).id;
    let on = with_overage(10);
    let off = limits(Some(10), None);
    let (m_on, m_off) = (meter(&a.id, &on, NOW), meter(&a.id, &off, NOW));
    let eight = vec![Experience::new(1, 0, 1.0, 2); 8];
    ok(s, update(s, &m_on, &id, &eight));
    ok(s, s.predict(&m_on, &id, StateRef::Int(1), false, None));
    assert_eq!(usage(s, &a.id).overage, 0, "[{}] 9 of 10", s.backend());
    // Off: a batch of 3 does not fit the 1 call left.
    let three = vec![Experience::new(1, 1, 1.0, 2); 3];
    let refused = update(s, &m_off, &id, &three);
    assert!(
        matches!(refused, Err(Error::QuotaExceeded { limit: 10, .. })),
        "[{}] {refused:?}",
        s.backend()
    );
    assert_eq!(
        usage(s, &a.id).calls,
        9,
        "[{}] refused: not counted",
        s.backend()
    );
    // On: it straddles the quota, 2 of its 3 are overage.
    ok(s, update(s, &m_on, &id, &three));
    let u = usage(s, &a.id);
    assert_eq!((u.calls, u.overage), (12, 2), "[{}]", s.backend());
    ok(s, s.predict(&m_on, &id, StateRef::Int(1), false, None));
    let u = usage(s, &a.id);
    assert_eq!((u.calls, u.overage), (13, 3), "[{}]", s.backend());
    // Off again (a downgrade): refused, nothing counted.
    let refused = s.predict(&m_off, &id, StateRef::Int(1), false, None);
    assert!(
        matches!(refused, Err(Error::QuotaExceeded { .. })),
        "[{}] {refused:?}",
        s.backend()
    );
    let u = usage(s, &a.id);
    assert_eq!((u.calls, u.overage), (13, 3), "[{}]", s.backend());
    assert_eq!(u.of_kind(CallKind::Update), 11);
    assert_eq!(u.of_kind(CallKind::Predict), 2);
    // An unlimited tier with overage on has none.
    let b = new_user(s, "b@example.com");
    let idb = ok(s, s.create_model(&b.id, "m", &seeded(2, 5), None, NOW)).id;
    let ent = TierLimits {
        overage: true,
        ..limits(None, None)
    };
    ok(s, update(s, &meter(&b.id, &ent, NOW), &idb, &three));
    assert_eq!(usage(s, &b.id).overage, 0, "[{}]", s.backend());
    // The invoicing report reads the same usage, overage included.
    let all = ok(s, s.usage_by_user(BillingMonth::from_unix(NOW)));
    let of = |id: &str| {
        all.iter()
            .find(|x| x.user_id == id)
            .map(|x| x.usage.clone())
    };
    assert_eq!(
        of(&a.id),
        Some(u),
        "[{}] a's usage in the report",
        s.backend()
    );
    assert_eq!(of(&b.id), Some(usage(s, &b.id)), "[{}]", s.backend());
}

/// 16 threads (predicts, single updates and batches, on two models of one
/// user) run past a quota of 100 with overage on: every call is granted,
/// and the usage equals the successful calls exactly, by kind, with
/// exactly the calls past 100 as overage.
pub fn concurrent_overage<S: Store>(s: &S) {
    const THREADS: usize = 16;
    const EACH: usize = 25;
    let a = new_user(s, "a@example.com");
    let ids = [
        ok(s, s.create_model(&a.id, "m1", &seeded(2, 7), None, NOW)).id,
        ok(s, s.create_model(&a.id, "m2", &seeded(2, 8), None, NOW)).id,
    ];
    let l = with_overage(100);
    let (predicts, updates) = (AtomicU64::new(0), AtomicU64::new(0));
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let (ids, l, a, barrier) = (&ids, &l, &a, &barrier);
            let (predicts, updates) = (&predicts, &updates);
            sc.spawn(move || {
                let m = meter(&a.id, l, NOW);
                barrier.wait();
                for i in 0..EACH {
                    let id = &ids[(t + i) % 2];
                    match (t + i) % 3 {
                        0 => {
                            ok(s, s.predict(&m, id, StateRef::Int(1), true, None));
                            predicts.fetch_add(1, Ordering::SeqCst);
                        }
                        1 => {
                            ok(s, update(s, &m, id, &[Experience::new(1, 1, 1.0, 2)]));
                            updates.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {
                            let n = 1 + (t + i) % 4;
                            let batch = vec![Experience::new(2, 0, 0.5, 1); n];
                            ok(s, update(s, &m, id, &batch));
                            updates.fetch_add(n as u64, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    let (p, up) = (predicts.into_inner(), updates.into_inner());
    let u = usage(s, &a.id);
    assert_eq!(u.of_kind(CallKind::Predict), p, "[{}]", s.backend());
    assert_eq!(u.of_kind(CallKind::Update), up, "[{}]", s.backend());
    assert_eq!(u.calls, p + up, "[{}]", s.backend());
    assert_eq!(u.overage, p + up - 100, "[{}] overage exact", s.backend());
    let applied: u64 = ids
        .iter()
        .map(|id| {
            let st = ok(s, s.model(&a.id, id)).stats;
            st.predictions + st.updates
        })
        .sum();
    assert_eq!(applied, p + up, "[{}] every call applied", s.backend());
}
