//! Conformance checks of billing (issue 17): provider events applied once
//! by id, scheduled downgrades, and models read-only on a smaller plan.
//! Listed in `conformance_tests!` with the rest of the suite.

use std::sync::Barrier;

use qlearn_core::decisions::{Aggregation, Decide, DecisionsConfig};
use qlearn_core::store::{
    BillingAction, BillingEvent, BillingOutcome, BillingParty, ModelPatch, RewardIn, Store,
};
use qlearn_core::tenancy::{Features, Tier};
use qlearn_core::{Algorithm, Error, Experience, Model, ModelConfig, StateRef};

use super::{limits, meter, new_user, ok, seeded, update, NOW};

fn event(
    id: &str,
    created: i64,
    user: Option<&str>,
    customer: &str,
    a: BillingAction,
) -> BillingEvent {
    BillingEvent {
        id: id.into(),
        created,
        party: BillingParty {
            user_id: user.map(str::to_owned),
            customer_id: Some(customer.into()),
        },
        action: a,
    }
}

const PRO: BillingAction = BillingAction::Set {
    tier: Tier::Pro,
    until: None,
};

fn tier_of<S: Store>(s: &S, id: &str) -> Tier {
    ok(s, s.user(id)).map(|u| u.tier).unwrap_or_default()
}

/// Events: applied once by id (also when delivered concurrently), found by
/// user id or linked customer, unknown customers not recorded, older
/// events stale, downgrades at the period's end settled once due.
pub fn billing_events<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    // Unknown customer, no user: refused and not recorded.
    let r = s.apply_billing(&event("evt_1", 10, None, "cus_a", PRO), NOW);
    assert!(
        matches!(r, Err(Error::NotFound(_))),
        "[{}] {r:?}",
        s.backend()
    );
    // Concurrent deliveries of one event: exactly one applies.
    let ev = event("evt_1", 10, Some(&a.id), "cus_a", PRO);
    let barrier = Barrier::new(6);
    let outcomes: Vec<BillingOutcome> = std::thread::scope(|t| {
        let hs: Vec<_> = (0..6)
            .map(|_| {
                t.spawn(|| {
                    barrier.wait();
                    ok(s, s.apply_billing(&ev, NOW))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let applied = outcomes
        .iter()
        .filter(|o| matches!(o, BillingOutcome::Applied { .. }))
        .count();
    assert_eq!(applied, 1, "[{}] {outcomes:?}", s.backend());
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            BillingOutcome::Applied {
                tier_changed: true,
                tier: Tier::Pro,
                ..
            } | BillingOutcome::Duplicate
        )),
        "[{}] {outcomes:?}",
        s.backend()
    );
    assert_eq!(tier_of(s, &a.id), Tier::Pro, "[{}]", s.backend());
    assert_eq!(
        tier_of(s, &b.id),
        Tier::Free,
        "[{}] other user",
        s.backend()
    );
    // The same id again, even asking something else, changes nothing.
    let again = event(
        "evt_1",
        11,
        Some(&a.id),
        "cus_a",
        BillingAction::Set {
            tier: Tier::Enterprise,
            until: None,
        },
    );
    assert_eq!(
        ok(s, s.apply_billing(&again, NOW)),
        BillingOutcome::Duplicate
    );
    assert_eq!(tier_of(s, &a.id), Tier::Pro);
    // Found by the linked customer id alone; a downgrade waits for its time.
    let down = BillingAction::DowngradeAt {
        to: Tier::Free,
        at: NOW + 100,
    };
    let o = ok(
        s,
        s.apply_billing(&event("evt_2", 20, None, "cus_a", down), NOW),
    );
    assert_eq!(
        o,
        BillingOutcome::Applied {
            user_id: a.id.clone(),
            tier: Tier::Pro,
            pending: Some((Tier::Free, NOW + 100)),
            tier_changed: false,
        },
        "[{}]",
        s.backend()
    );
    let acc = ok(s, s.billing_account(&a.id)).unwrap();
    assert_eq!(acc.customer_id.as_deref(), Some("cus_a"));
    assert_eq!(acc.pending, Some((Tier::Free, NOW + 100)));
    assert_eq!(ok(s, s.billing_account(&b.id)), None);
    // An older event is recorded and changes nothing.
    let o = ok(
        s,
        s.apply_billing(&event("evt_0", 5, None, "cus_a", PRO), NOW),
    );
    assert_eq!(
        o,
        BillingOutcome::Stale {
            user_id: a.id.clone()
        }
    );
    assert_eq!(ok(s, s.settle_billing(NOW + 99)), Vec::<String>::new());
    assert_eq!(tier_of(s, &a.id), Tier::Pro, "[{}] not yet", s.backend());
    assert_eq!(ok(s, s.settle_billing(NOW + 100)), vec![a.id.clone()]);
    assert_eq!(
        tier_of(s, &a.id),
        Tier::Free,
        "[{}] at the period's end",
        s.backend()
    );
    assert_eq!(ok(s, s.settle_billing(NOW + 200)), Vec::<String>::new());
    assert_eq!(ok(s, s.billing_account(&a.id)).unwrap().pending, None);
    // Another user cannot take a linked customer id.
    let r = s.apply_billing(&event("evt_3", 30, Some(&b.id), "cus_a", PRO), NOW);
    assert!(
        matches!(r, Err(Error::Conflict(_))),
        "[{}] {r:?}",
        s.backend()
    );
    assert_eq!(tier_of(s, &b.id), Tier::Free);
}

fn read_only<T: std::fmt::Debug>(r: &qlearn_core::Result<T>) -> bool {
    matches!(r, Err(Error::ModelReadOnly { .. }))
}

/// On a plan without a feature a model uses, or with fewer states per model
/// than it holds, the model is read-only: updates, logging predicts and
/// rewards refused (and not metered), plain predicts and exports answer,
/// nothing is lost; within the plan again, it learns.
pub fn read_only_over_plan<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let mut c = ModelConfig::new(2);
    c.algorithm = Algorithm::ExpectedSarsa;
    c.seed = Some(3);
    let sarsa = ok(
        s,
        s.create_model(&a.id, "s", &Model::new(c).unwrap(), None, NOW),
    );
    let paid = limits(None, None);
    let mut free = limits(None, None);
    free.features = Features::NONE;
    let x = [Experience::new(1, 0, 1.0, 2)];
    ok(s, update(s, &meter(&a.id, &paid, NOW), &sarsa.id, &x));
    let before = ok(s, s.export_model(&a.id, &sarsa.id));
    let r = update(s, &meter(&a.id, &free, NOW), &sarsa.id, &x);
    assert!(read_only(&r), "[{}] sarsa on free: {r:?}", s.backend());
    let after = ok(s, s.export_model(&a.id, &sarsa.id));
    assert_eq!(
        ok(s, after.to_bytes()),
        ok(s, before.to_bytes()),
        "[{}] nothing lost",
        s.backend()
    );
    let p = s.predict(
        &meter(&a.id, &free, NOW),
        &sarsa.id,
        StateRef::Int(1),
        false,
        None,
    );
    assert!(p.is_ok(), "[{}] predict still answers: {p:?}", s.backend());
    // Changed back within the plan, it learns again.
    ok(
        s,
        s.update_model(
            &a.id,
            &sarsa.id,
            ModelPatch {
                config: Some(qlearn_core::store::ConfigPatch {
                    algorithm: Some(Algorithm::QLearning),
                    ..Default::default()
                }),
                ..ModelPatch::default()
            },
            NOW,
        ),
    );
    ok(s, update(s, &meter(&a.id, &free, NOW), &sarsa.id, &x));

    // More states than the plan allows: even a stored state is not taught.
    let q = ok(s, s.create_model(&a.id, "q", &seeded(2, 1), None, NOW));
    let three = [
        Experience::new(1, 0, 1.0, 2),
        Experience::new(2, 0, 1.0, 3),
        Experience::new(3, 0, 1.0, 1),
    ];
    ok(s, update(s, &meter(&a.id, &paid, NOW), &q.id, &three));
    let mut small = limits(None, None);
    small.max_states = Some(2);
    let r = update(s, &meter(&a.id, &small, NOW), &q.id, &three[..1]);
    assert!(read_only(&r), "[{}] over the states: {r:?}", s.backend());
    small.max_states = Some(3);
    ok(s, update(s, &meter(&a.id, &small, NOW), &q.id, &three[..1]));

    // Decision logging on a plan without it: logging predicts and rewards
    // refused; the log and the model stay.
    let setting = DecisionsConfig {
        reward_wait_seconds: 60,
        default_reward: None,
        aggregation: Aggregation::Sum,
        retention_days: 30,
    };
    ok(
        s,
        s.update_model(
            &a.id,
            &q.id,
            ModelPatch {
                decisions: Some(Some(setting)),
                ..ModelPatch::default()
            },
            NOW,
        ),
    );
    let decide = Decide {
        state: StateRef::Int(1),
        allowed_actions: None,
        explore: false,
        decision_id: Some("d1"),
        episode_id: None,
        baseline_action: None,
    };
    let d = ok(s, s.decide(&meter(&a.id, &paid, NOW), &q.id, &decide));
    assert!(
        d.decision.is_some(),
        "[{}] logged on a paid plan",
        s.backend()
    );
    let decide2 = Decide {
        decision_id: Some("d2"),
        ..decide
    };
    let r = s.decide(&meter(&a.id, &free, NOW), &q.id, &decide2);
    assert!(read_only(&r), "[{}] logging on free: {r:?}", s.backend());
    let reward = RewardIn {
        decision_id: "d1".into(),
        value: 1.0,
        reward_id: None,
        is_final: true,
    };
    let r = s.reward(&meter(&a.id, &free, NOW), &q.id, reward.clone());
    assert!(read_only(&r), "[{}] reward on free: {r:?}", s.backend());
    ok(s, s.reward(&meter(&a.id, &paid, NOW), &q.id, reward));
}
