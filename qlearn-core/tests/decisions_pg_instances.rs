//! Two instances on one PostgreSQL database settle the same reward
//! deadlines at once: every transition is applied exactly once (the model
//! row is taken with `FOR UPDATE SKIP LOCKED` and the log read after it).
//! A decisions setting changed through one instance holds at once for the
//! logging predicts of the other (the store reads it under the model's row
//! lock in the call's own transaction), each call debited once.
//!
//! Skips loudly without a server unless `QLEARN_REQUIRE_POSTGRES=1`.
#![cfg(feature = "postgres")]

use qlearn_core::decisions::{Decide, DecisionsConfig};
use qlearn_core::store::decisions::FULL_SCAN_EVERY_SECS;
use qlearn_core::store::postgres::PgStore;
use qlearn_core::store::{CallKind, Meter, ModelPatch, NewUser, Report, Store};
use qlearn_core::tenancy::{BillingMonth, Role, Tier, TierLimits};
use qlearn_core::{Experience, Model, ModelConfig, StateRef};
use std::io::Write as _;

const NOW: i64 = 1_790_038_400;
const MODELS: usize = 6;
const ONE_STEP: i64 = 15;
const EPISODE: i64 = 5;

fn url() -> String {
    std::env::var("QLEARN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A store on a schema of its own, dropped at the end (also on failure).
struct Instance(PgStore);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.drop_schema();
    }
}

/// A store on schema `name`, or `None` (skipped loudly) without a server.
fn connect(name: &str) -> Option<Instance> {
    let schema = format!("qlearn_test_{name}_{}", std::process::id());
    match PgStore::connect_with_schema(&url(), &schema) {
        Ok(s) => Some(Instance(s)),
        Err(e) => {
            if std::env::var("QLEARN_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("[postgres] not reachable at {}: {e}", url());
            }
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: PostgreSQL not reachable at {} ({e})",
                url()
            );
            None
        }
    }
}

fn new_user(s: &PgStore) -> String {
    s.create_user(
        NewUser {
            email: "a@example.com".into(),
            password_hash: "x".into(),
            tier: Tier::Free,
            role: Role::User,
        },
        NOW,
    )
    .unwrap()
    .id
}

/// `user`'s meter, with no limits.
fn meter(user: &str) -> Meter<'_> {
    Meter {
        user_id: user,
        limits: &TierLimits::UNLIMITED,
        now: NOW,
    }
}

fn set_decisions(s: &PgStore, user: &str, id: &str, on: Option<DecisionsConfig>) {
    let patch = ModelPatch {
        decisions: Some(on),
        ..ModelPatch::default()
    };
    s.update_model(user, id, patch, NOW).unwrap();
}

#[test]
fn a_decisions_setting_holds_at_once_on_the_other_instance() {
    let Some(first) = connect("setting") else {
        return;
    };
    let (a, b) = (
        &first.0,
        &PgStore::connect_with_schema(&url(), first.0.schema().unwrap()).unwrap(),
    );
    let user = new_user(a);
    let m = meter(&user);
    let model = Model::new(ModelConfig::new(3)).unwrap();
    let logging = a
        .create_model(&user, "logging", &model, None, NOW)
        .unwrap()
        .id;
    let plain = a
        .create_model(&user, "plain", &model, None, NOW)
        .unwrap()
        .id;
    let logged = |id: &str| {
        let info = a.model(&user, id).unwrap();
        info.decision_stats.map_or(0, |d| d.decisions)
    };
    let decide = |id: &str| b.decide(&m, id, &Decide::new(StateRef::Int(1))).unwrap();
    assert!(decide(&logging).decision.is_none(), "off: a plain predict");
    set_decisions(a, &user, &logging, Some(DecisionsConfig::default()));
    assert!(decide(&logging).decision.is_some(), "on through A: B logs");
    // Concurrent logging predicts on both models: the logging ones leave the
    // combined batch for the decision path, the plain ones stay.
    std::thread::scope(|sc| {
        for t in 0..4 {
            let (logging, plain, decide) = (&logging, &plain, &decide);
            sc.spawn(move || {
                for i in 0..10 {
                    let logs = (t + i) % 2 == 0;
                    let d = decide(if logs { logging } else { plain });
                    assert_eq!(d.decision.is_some(), logs);
                }
            });
        }
    });
    assert_eq!(logged(&logging), 1 + 20);
    set_decisions(a, &user, &logging, None);
    assert!(
        decide(&logging).decision.is_none(),
        "off through A: B predicts"
    );
    set_decisions(a, &user, &logging, Some(DecisionsConfig::default()));
    assert!(decide(&logging).decision.is_some(), "on again");
    assert_eq!(logged(&logging), 1);
    assert_eq!(a.model(&user, &plain).unwrap().stats.predictions, 20);
    assert_eq!(a.model(&user, &logging).unwrap().stats.predictions, 24);
    // Every call debited once: a logging predict that left a batch got its
    // debit there back.
    let usage = a.usage(&user, BillingMonth::from_unix(NOW)).unwrap();
    let kinds = (
        usage.of_kind(CallKind::Predict),
        usage.of_kind(CallKind::Decide),
    );
    assert_eq!((usage.calls, kinds), (44, (22, 22)));
}

/// Updates (combined batches, which debit and lock their models in one
/// statement) and logging predicts (the decision path: the model's lock,
/// then the debit) on one model at once: both take the model before the
/// usage row, so neither deadlocks the other (a deadlock fails the call).
#[test]
fn updates_and_logging_predicts_on_one_model_do_not_deadlock() {
    let Some(first) = connect("lockorder") else {
        return;
    };
    let s = &first.0;
    let user = new_user(s);
    let m = meter(&user);
    let model = Model::new(ModelConfig::new(3)).unwrap();
    // Two models: a batch with updates of both locks them in id order, and
    // a decision call on the second must not hold it while the batch holds
    // the usage row.
    let ids: Vec<String> = (0..2)
        .map(|k| {
            let id = s
                .create_model(&user, &format!("m{k}"), &model, None, NOW)
                .unwrap()
                .id;
            set_decisions(s, &user, &id, Some(DecisionsConfig::default()));
            id
        })
        .collect();
    std::thread::scope(|sc| {
        for t in 0..12 {
            let (id, m) = (&ids[t % 2], &m);
            sc.spawn(move || {
                for i in 0..20 {
                    if t % 4 < 2 {
                        let x = Experience::new(StateRef::Int(i), 1, 1.0, StateRef::Int(i + 1));
                        s.update(m, id, &[x], Report::Outcomes).unwrap();
                    } else {
                        s.decide(m, id, &Decide::new(StateRef::Int(i))).unwrap();
                    }
                }
            });
        }
    });
    for id in &ids {
        let info = s.model(&user, id).unwrap();
        assert_eq!(info.stats.updates, 60);
        assert_eq!(info.decision_stats.map(|d| d.decisions), Some(60));
    }
}

#[test]
fn two_instances_settle_each_deadline_once() {
    let Some(first) = connect("settle") else {
        return;
    };
    let second = PgStore::connect_with_schema(&url(), first.0.schema().unwrap()).unwrap();
    let a = &first.0;
    let user = new_user(a);
    let m = meter(&user);
    let setting = DecisionsConfig {
        reward_wait_seconds: 60,
        default_reward: Some(1.0),
        ..DecisionsConfig::default()
    };
    let mut ids = Vec::new();
    for i in 0..MODELS {
        let model = Model::new(ModelConfig::new(3)).unwrap();
        let id = a
            .create_model(&user, &format!("m{i}"), &model, None, NOW)
            .unwrap()
            .id;
        a.update_model(
            &user,
            &id,
            ModelPatch {
                decisions: Some(Some(setting.clone())),
                ..ModelPatch::default()
            },
            NOW,
        )
        .unwrap();
        for st in 0..ONE_STEP {
            a.decide(&m, &id, &Decide::new(StateRef::Int(st))).unwrap();
        }
        for st in 0..EPISODE {
            let d = Decide::new(StateRef::Int(100 + st)).episode("e");
            a.decide(&m, &id, &d).unwrap();
        }
        ids.push(id);
    }
    // The episode's last step waits for its end: every other step and
    // every one-step decision closes at the deadline.
    let per_model = (ONE_STEP + EPISODE - 1) as usize;
    fn run(s: &PgStore) -> usize {
        (0..4).map(|_| s.settle(NOW + 60).unwrap()).sum()
    }
    let (x, y) = std::thread::scope(|sc| {
        let hx = sc.spawn(|| run(a));
        let hy = sc.spawn(|| run(&second));
        (hx.join().unwrap(), hy.join().unwrap())
    });
    // A model skipped by both (each saw it locked by the other) is settled
    // by a later round.
    let rest = a.settle(NOW + 61).unwrap() + second.settle(NOW + 61).unwrap();
    assert_eq!(
        x + y + rest,
        MODELS * per_model,
        "each transition once: {x} + {y} + {rest}"
    );
    for id in &ids {
        let info = a.model(&user, id).unwrap();
        assert_eq!(info.stats.updates as usize, per_model, "model {id}");
    }
    assert_eq!(
        a.settle(NOW + 120).unwrap() + second.settle(NOW + 120).unwrap(),
        0
    );
}

/// A decision logged through one instance that then stops settling (it
/// stopped, say) is settled by the other instance's settle pass by its next
/// full scan of the models with open decisions, at most
/// [`FULL_SCAN_EVERY_SECS`] after its deadline, even though that instance
/// had passed over the database since and never saw the decision logged.
#[test]
fn a_decision_of_an_instance_that_stopped_is_settled_by_the_other() {
    let Some(first) = connect("settle_other") else {
        return;
    };
    let a = &first.0;
    let b = PgStore::connect_with_schema(&url(), a.schema().unwrap()).unwrap();
    let user = new_user(a);
    let model = Model::new(ModelConfig::new(2)).unwrap();
    let id = a.create_model(&user, "m", &model, None, NOW).unwrap().id;
    let setting = DecisionsConfig {
        reward_wait_seconds: 3,
        default_reward: Some(1.0),
        ..DecisionsConfig::default()
    };
    set_decisions(a, &user, &id, Some(setting));
    assert_eq!(b.settle(NOW).unwrap(), 0, "b scans: nothing open");
    a.decide(&meter(&user), &id, &Decide::new(StateRef::Int(0)))
        .unwrap();
    let scan = NOW + FULL_SCAN_EVERY_SECS;
    let mut learned = 0;
    for t in NOW + 4..=scan {
        learned += b.settle(t).unwrap();
    }
    assert_eq!(learned, 1, "settled by b's next full scan at the latest");
    assert_eq!(a.settle(scan + 1).unwrap(), 0, "once");
}
