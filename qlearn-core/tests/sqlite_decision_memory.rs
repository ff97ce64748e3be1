//! The SQLite store keeps pending decisions within the model cache's byte
//! budget (issue 14): a decision log counts what it holds in memory, a log
//! bigger than the budget leaves beside its model forgets committed
//! decisions (read again from the file when a reward needs them), and the
//! least recently used models leave with their logs. Every decision can
//! still be rewarded and is learned exactly once.
#![cfg(feature = "sqlite")]

use qlearn_core::decisions::{
    Aggregation, Decide, DecisionsConfig, RewardStatus, HELD_DECISION_BYTES,
};
use qlearn_core::store::sqlite::{SqliteOptions, SqliteStore};
use qlearn_core::store::{Meter, ModelPatch, NewUser, RewardIn, Store};
use qlearn_core::tenancy::{Role, Tier, TierLimits};
use qlearn_core::{Experience, Model, ModelConfig, StateRef};

/// 2026-09-21T00:53:20Z.
const NOW: i64 = 1_790_038_400;
/// The cache budget: room for a few dozen decisions beside three small
/// models.
const BUDGET: usize = 48 << 10;
/// Decisions logged per model (far more than the budget holds).
const PER_MODEL: usize = 300;
/// What a call may add beyond the budget until its own write commits: its
/// decision and the bookkeeping of its write.
const IN_FLIGHT: usize = 2 * HELD_DECISION_BYTES;

fn seeded(seed: u64) -> Model {
    let mut c = ModelConfig::new(4);
    c.seed = Some(seed);
    c.epsilon = 0.3;
    Model::new(c).unwrap()
}

/// The memory the store counts and holds is within the budget.
fn within_budget(s: &SqliteStore, what: &str) {
    let (bytes, held) = (s.cached_bytes(), s.held_decisions());
    assert!(
        bytes <= BUDGET + IN_FLIGHT,
        "{what}: the cache counts {bytes} bytes, over its budget of {BUDGET}"
    );
    assert!(
        held * HELD_DECISION_BYTES <= BUDGET + IN_FLIGHT,
        "{what}: {held} decisions held in memory, more than the budget holds"
    );
}

#[test]
fn pending_decisions_stay_within_the_cache_budget_and_are_learned_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        cache_bytes: BUDGET,
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open_with(dir.path().join("d.db"), options).unwrap();
    let user = s
        .create_user(
            NewUser {
                email: "a@example.com".into(),
                password_hash: "$argon2id$fake".into(),
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
    let config = DecisionsConfig {
        reward_wait_seconds: 3600,
        default_reward: None,
        aggregation: Aggregation::Sum,
        retention_days: 30,
    };
    let mut local: Vec<Model> = (0..3).map(|k| seeded(10 + k)).collect();
    let ids: Vec<String> = local
        .iter()
        .enumerate()
        .map(|(k, model)| {
            let id = s
                .create_model(&user, &format!("m{k}"), model, None, NOW)
                .unwrap()
                .id;
            let patch = ModelPatch {
                decisions: Some(Some(config.clone())),
                ..ModelPatch::default()
            };
            s.update_model(&user, &id, patch, NOW).unwrap();
            id
        })
        .collect();

    // Decisions on the first model alone (its log outgrows the budget
    // while it is the only model in use), then on the other two in turn;
    // none rewarded yet.
    let mut logged = Vec::new();
    for i in 0..PER_MODEL * 3 {
        let k = if i < PER_MODEL { 0 } else { 1 + i % 2 };
        let state = (i % 13) as i64;
        let d = s
            .decide(&m, &ids[k], &Decide::new(StateRef::Int(state)))
            .unwrap();
        let want = local[k]
            .predict_full(StateRef::Int(state), true, None)
            .unwrap();
        assert_eq!(d.prediction, want, "decision {i}");
        let d = d.decision.expect("logged");
        logged.push((k, state, d.decision_id, d.action));
        within_budget(&s, &format!("after decision {i}"));
    }
    let pending: u64 = ids
        .iter()
        .map(|id| s.model(&user, id).unwrap().decision_stats.unwrap().pending)
        .sum();
    assert_eq!(pending, logged.len() as u64);

    // Rewards in an order that mixes models, old and new decisions: most
    // are no longer in memory and are read from the file.
    let n = logged.len();
    for j in 0..n {
        let (k, state, id, action) = &logged[(j * 7 + n / 2) % n];
        let value = (j % 5) as f64 - 2.0;
        let r = s
            .reward(
                &m,
                &ids[*k],
                RewardIn {
                    decision_id: id.clone(),
                    value,
                    reward_id: None,
                    is_final: true,
                },
            )
            .unwrap();
        assert_eq!(r.status, RewardStatus::Applied, "reward {j} of {id}");
        let st = StateRef::Int(*state);
        local[*k]
            .update(&Experience::new(st, *action, value, st).done(true))
            .unwrap();
        within_budget(&s, &format!("after reward {j}"));
    }
    // Once learned, a decision is never learned again (a reward after
    // it is late: recorded, not learned).
    for (k, _, id, _) in logged.iter().step_by(37) {
        let again = RewardIn {
            decision_id: id.clone(),
            value: 1.0,
            reward_id: None,
            is_final: true,
        };
        let r = s.reward(&m, &ids[*k], again).unwrap();
        assert_eq!(r.status, RewardStatus::Late, "{id} rewarded again");
    }
    for (k, id) in ids.iter().enumerate() {
        let info = s.model(&user, id).unwrap();
        let stats = info.decision_stats.unwrap();
        assert_eq!(
            (stats.decisions, stats.applied, stats.pending),
            (PER_MODEL as u64, PER_MODEL as u64, 0),
            "model {k}"
        );
        assert_eq!(info.stats.updates, PER_MODEL as u64, "model {k}: once each");
        let got = s.export_model(&user, id).unwrap();
        assert_eq!(
            got.to_bytes().unwrap(),
            local[k].to_bytes().unwrap(),
            "model {k}: the Q-table of the same transitions applied in order"
        );
    }
}
