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
        user = s
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
    assert_eq!(page.total, 3);
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
