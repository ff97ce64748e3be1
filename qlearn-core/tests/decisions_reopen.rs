//! Decisions survive closing and reopening a SQLite store: the log, its
//! pending rewards and its deadlines are in the file, so a restart carries
//! on where it stopped and applies each transition once.
#![cfg(feature = "sqlite")]

use qlearn_core::decisions::{Decide, DecisionStatus, DecisionsConfig, EpisodeEnd, RewardStatus};
use qlearn_core::store::sqlite::SqliteStore;
use qlearn_core::store::{DecisionQuery, Meter, ModelPatch, NewUser, RewardIn, Store};
use qlearn_core::tenancy::{Role, Tier, TierLimits};
use qlearn_core::{Experience, Model, ModelConfig, StateRef};

const NOW: i64 = 1_790_038_400;

fn reward(id: &str, value: f64, is_final: bool) -> RewardIn {
    RewardIn {
        decision_id: id.to_owned(),
        value,
        reward_id: None,
        is_final,
    }
}

/// A new free user's id.
fn new_user(s: &SqliteStore, email: &str) -> String {
    let user = NewUser {
        email: email.into(),
        password_hash: "x".into(),
        tier: Tier::Free,
        role: Role::User,
    };
    s.create_user(user, NOW).unwrap().id
}

#[test]
fn a_reopened_store_carries_on_with_its_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let mut config = ModelConfig::new(3);
    config.seed = Some(11);
    let mut local = Model::new(config).unwrap();
    let limits = TierLimits::UNLIMITED;
    let (user, id, d0, d1, late);
    {
        let s = SqliteStore::open(&path).unwrap();
        user = new_user(&s, "a@example.com");
        id = s.create_model(&user, "m", &local, None, NOW).unwrap().id;
        let setting = DecisionsConfig {
            reward_wait_seconds: 60,
            default_reward: Some(0.5),
            ..DecisionsConfig::default()
        };
        s.update_model(
            &user,
            &id,
            ModelPatch {
                decisions: Some(Some(setting)),
                ..ModelPatch::default()
            },
            NOW,
        )
        .unwrap();
        let m = Meter {
            user_id: &user,
            limits: &limits,
            now: NOW,
        };
        let d = |st: i64| {
            s.decide(&m, &id, &Decide::new(StateRef::Int(st)).episode("e"))
                .unwrap()
                .decision
                .unwrap()
        };
        d0 = d(1);
        d1 = d(2);
        // A one-step decision left open, to be settled after the restart.
        late = s
            .decide(&m, &id, &Decide::new(StateRef::Int(7)).baseline(2))
            .unwrap()
            .decision
            .unwrap();
        let r = s
            .reward(&m, &id, reward(&d0.decision_id, 1.0, false))
            .unwrap();
        assert_eq!(r.status, RewardStatus::Open);
        s.flush().unwrap();
    }
    for st in [1, 2, 7] {
        local.predict_full(StateRef::Int(st), true, None).unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let m = Meter {
        user_id: &user,
        limits: &limits,
        now: NOW + 10,
    };
    // The pending reward is still there: a second one sums with it.
    let r = s
        .reward(&m, &id, reward(&d0.decision_id, 2.0, true))
        .unwrap();
    assert_eq!(
        (r.status, r.reward, r.rewards),
        (RewardStatus::Applied, Some(3.0), 2)
    );
    let (s0, s1, s7) = (StateRef::Int(1), StateRef::Int(2), StateRef::Int(7));
    local
        .update(&Experience::new(s0, d0.action, 3.0, s1).next_action(d1.action))
        .unwrap();
    let r = s
        .reward(&m, &id, reward(&d1.decision_id, -1.0, true))
        .unwrap();
    assert_eq!(r.status, RewardStatus::Closed);
    assert_eq!(
        s.end_episode(&m, &id, "e", &EpisodeEnd::terminated())
            .unwrap(),
        1
    );
    local
        .update(&Experience::new(s1, d1.action, -1.0, s1).done(true))
        .unwrap();
    // The open one-step decision closes at its deadline with the default.
    assert_eq!(s.settle(NOW + 60).unwrap(), 1);
    assert_eq!(s.settle(NOW + 61).unwrap(), 0);
    local
        .update(&Experience::new(s7, late.action, 0.5, s7).done(true))
        .unwrap();
    assert_eq!(
        s.q_table(&user, &id, 0, 10).unwrap().rows,
        local.rows(0, 10)
    );
    let page = s
        .decisions(
            &user,
            &id,
            &DecisionQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.total, Some(3));
    // The baseline action recorded with the open decision survived too.
    for d in &page.decisions {
        let want = (d.decision_id == late.decision_id).then_some(2);
        assert_eq!(d.baseline_action, want, "{}", d.decision_id);
    }
    assert!(page
        .decisions
        .iter()
        .all(|d| d.status == DecisionStatus::Applied));
    assert_eq!(s.model(&user, &id).unwrap().stats.updates, 3);
    s.flush().unwrap();
}

/// A file written before migration 15 (the open decisions indexed by
/// deadline alone) opens with the index keyed by model, then deadline, and
/// settles the open decisions it holds, each model's once.
#[test]
fn a_file_from_before_the_due_index_by_model_settles_its_open_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let limits = TierLimits::UNLIMITED;
    let mut models = Vec::new();
    {
        let s = SqliteStore::open(&path).unwrap();
        for k in 0..3 {
            let user = new_user(&s, &format!("u{k}@example.com"));
            let model = Model::new(ModelConfig::new(2)).unwrap();
            let id = s.create_model(&user, "m", &model, None, NOW).unwrap().id;
            let setting = DecisionsConfig {
                reward_wait_seconds: 60,
                default_reward: Some(0.5),
                ..DecisionsConfig::default()
            };
            let patch = ModelPatch {
                decisions: Some(Some(setting)),
                ..ModelPatch::default()
            };
            s.update_model(&user, &id, patch, NOW).unwrap();
            let m = Meter {
                user_id: &user,
                limits: &limits,
                now: NOW,
            };
            for st in 0..2 {
                s.decide(&m, &id, &Decide::new(StateRef::Int(st))).unwrap();
            }
            models.push((user, id));
        }
    }
    let index = |c: &rusqlite::Connection| -> String {
        c.query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'decisions_due'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "BEGIN IMMEDIATE; DROP INDEX decisions_due; \
             CREATE INDEX decisions_due ON decisions (closes_ms) WHERE status = 0; \
             DELETE FROM schema_migrations WHERE version >= 15; COMMIT;",
        )
        .unwrap();
        assert!(index(&c).contains("(closes_ms)"), "{}", index(&c));
    }
    let s = SqliteStore::open(&path).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    assert!(index(&c).contains("(mid, closes_ms)"), "{}", index(&c));
    assert_eq!(s.settle(NOW + 59).unwrap(), 0, "none due yet");
    assert_eq!(s.settle(NOW + 61).unwrap(), 6, "every model's two");
    assert_eq!(s.settle(NOW + 62).unwrap(), 0, "each once");
    for (user, id) in &models {
        let q = DecisionQuery {
            limit: 10,
            ..Default::default()
        };
        let page = s.decisions(user, id, &q).unwrap();
        assert_eq!(page.stats.pending, 0, "{id}");
        assert_eq!(page.stats.defaulted, 2, "{id}");
    }
}
