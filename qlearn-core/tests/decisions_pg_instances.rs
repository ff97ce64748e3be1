//! Two instances on one PostgreSQL database settle the same reward
//! deadlines at once: every transition is applied exactly once (the model
//! row is taken with `FOR UPDATE SKIP LOCKED` and the log read after it).
//!
//! Skips loudly without a server unless `QLEARN_REQUIRE_POSTGRES=1`.
#![cfg(feature = "postgres")]

use qlearn_core::decisions::{Decide, DecisionsConfig};
use qlearn_core::store::postgres::PgStore;
use qlearn_core::store::{Meter, ModelPatch, NewUser, Store};
use qlearn_core::tenancy::{Role, Tier, TierLimits};
use qlearn_core::{Model, ModelConfig, StateRef};
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

#[test]
fn two_instances_settle_each_deadline_once() {
    let schema = format!("qlearn_test_settle_{}", std::process::id());
    let first = match PgStore::connect_with_schema(&url(), &schema) {
        Ok(s) => Instance(s),
        Err(e) => {
            if std::env::var("QLEARN_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("[postgres] not reachable at {}: {e}", url());
            }
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: PostgreSQL not reachable at {} ({e})",
                url()
            );
            return;
        }
    };
    let second = PgStore::connect_with_schema(&url(), &schema).unwrap();
    let a = &first.0;
    let user = a
        .create_user(
            NewUser {
                email: "a@example.com".into(),
                password_hash: "x".into(),
                tier: Tier::Free,
                role: Role::User,
            },
            NOW,
        )
        .unwrap()
        .id;
    let limits = TierLimits::UNLIMITED;
    let m = Meter {
        user_id: &user,
        limits: &limits,
        now: NOW,
    };
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
