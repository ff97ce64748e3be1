//! Tests of `decision_batch.rs`: a batch answers and stores exactly what
//! its calls one after another would: the same calls run combined on one
//! model and one by one on an identical model, compared reply by reply and
//! row by row. Needs PostgreSQL (`QLEARN_TEST_POSTGRES_URL`); skips loudly
//! without it unless `QLEARN_REQUIRE_POSTGRES=1`.
use super::super::test_db::connect;
use super::*;
use crate::decisions::{Aggregation, DecisionsConfig};
use crate::store::{DecisionQuery, ModelPatch, NewUser, Store};
use crate::tenancy::{Role, Tier};
use crate::{Model, ModelConfig, StateRef};

const NOW: i64 = 1_790_038_400;

fn reward(id: &str, value: f64, is_final: bool) -> RewardIn {
    RewardIn {
        decision_id: id.to_owned(),
        value,
        reward_id: None,
        is_final,
    }
}

/// Everything a model shows: its Q-table and its decision log.
fn shown(s: &PgStore, owner: &str, id: &str) -> String {
    let q = DecisionQuery {
        limit: 100,
        ..Default::default()
    };
    let table = s.q_table(owner, id, 0, 100).expect("q_table");
    let log = s.decisions(owner, id, &q).expect("decisions");
    let info = s.model(owner, id).expect("model");
    format!("{table:?}\n{log:?}\n{:?}", info.decision_stats)
}

#[test]
fn a_batch_equals_its_calls_one_by_one() {
    let Some(schema) = connect("qlearn_unit_batch") else {
        return;
    };
    let s = &schema.0;
    let user = s
        .create_user(
            NewUser {
                email: "batch@example.com".into(),
                password_hash: "x".into(),
                tier: Tier::Free,
                role: Role::User,
            },
            NOW,
        )
        .expect("user");
    let mut c = ModelConfig::new(3);
    c.seed = Some(5);
    c.epsilon = 0.5;
    let model = Model::new(c).expect("model");
    let setting = DecisionsConfig {
        reward_wait_seconds: 600,
        default_reward: Some(0.0),
        aggregation: Aggregation::Sum,
        retention_days: 30,
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        let info = s
            .create_model(&user.id, "m", &model, None, NOW)
            .expect("create");
        let patch = ModelPatch {
            decisions: Some(Some(setting.clone())),
            ..ModelPatch::default()
        };
        s.update_model(&user.id, &info.id, patch, NOW)
            .expect("decisions on");
        ids.push(info.id);
    }
    let limits = TierLimits {
        monthly_calls: Some(1_000),
        ..TierLimits::UNLIMITED
    };
    let m = Meter {
        user_id: &user.id,
        limits: &limits,
        now: NOW,
    };
    let item = |call| Item {
        call,
        payer: Payer::Meter(&m),
        now: NOW,
    };
    // Stored before the batch: what its calls must read from the rows.
    let setup = [
        Decide::new(StateRef::Int(0)).id("a0").episode("e1"),
        Decide::new(StateRef::Int(1)).id("b0").episode("e2"),
        Decide::new(StateRef::Int(2)).id("c0"),
        Decide::new(StateRef::Int(1)).id("x0").episode("e3"),
    ];
    // x0's reward is in: its transition waits for the next step, which
    // the batch logs (reading x0 as e3's last step).
    let x0 = [reward("x0", 3.0, true)];
    for id in &ids {
        let calls = setup.iter().map(Call::Decide).chain([Call::Rewards(&x0)]);
        for call in calls {
            let r = s.decision_batch(&user.id, id, false, &[item(call)]);
            assert!(matches!(r.as_slice(), [Ok(Some(_))]), "{r:?}");
        }
    }
    let decides = [
        Decide::new(StateRef::Int(2)).id("x1").episode("e3"),
        Decide::new(StateRef::Int(1)).id("a1").episode("e1"),
        Decide::new(StateRef::Int(0)).id("a0").episode("e1"),
        Decide::new(StateRef::Int(1)).allowed(&[9]),
        Decide::new(StateRef::Int(3)),
        Decide::new(StateRef::Int(2)).id("b1").episode("e2"),
        Decide::new(StateRef::Int(4)).id("a2").episode("e1"),
    ];
    let first_rewards = [reward("a0", 1.0, true), reward("c0", 0.5, false)];
    let more_rewards = [
        reward("a1", 2.0, true),
        reward("zz", 1.0, true),
        reward("b0", -1.0, true),
    ];
    let end = crate::decisions::EpisodeEnd::terminated();
    let calls = [
        Call::Decide(&decides[0]),
        Call::Decide(&decides[1]),
        Call::Rewards(&first_rewards),
        Call::Decide(&decides[2]),
        Call::Decide(&decides[3]),
        Call::Decide(&decides[4]),
        Call::Rewards(&more_rewards),
        Call::Decide(&decides[5]),
        Call::End {
            episode_id: "e1",
            end: &end,
        },
        Call::Decide(&decides[6]),
    ];
    let items: Vec<Item<'_>> = calls.iter().map(|&c| item(c)).collect();
    let usage = |s: &PgStore| {
        s.usage(&user.id, BillingMonth::from_unix(NOW))
            .expect("usage")
            .calls
    };
    let before = usage(s);
    let combined = s.decision_batch(&user.id, &ids[0], false, &items);
    let paid_combined = usage(s) - before;
    let before = usage(s);
    let alone: Vec<_> = items
        .iter()
        .flat_map(|it| s.decision_batch(&user.id, &ids[1], false, &[*it]))
        .collect();
    let paid_alone = usage(s) - before;
    assert_eq!(format!("{combined:?}"), format!("{alone:?}"));
    assert_eq!(paid_combined, paid_alone, "metered calls");
    assert!(paid_alone >= 4, "some calls were metered: {paid_alone}");
    assert!(
        combined.iter().filter(|r| r.is_err()).count() >= 2,
        "the invalid decide and the decide after the end fail: {combined:?}"
    );
    assert_eq!(shown(s, &user.id, &ids[0]), shown(s, &user.id, &ids[1]));
}

#[test]
fn prepaid_calls_are_taken_put_back_and_the_rest_given_back() {
    let mut p = Prepaid {
        meter: None,
        decide: 3,
        reward: 2,
    };
    assert!(p.take(CallKind::Decide, 2));
    assert!(!p.take(CallKind::Decide, 2), "only one decide is left");
    assert!(!p.take(CallKind::Update, 1), "updates are never prepaid");
    assert!(p.take(CallKind::Reward, 2));
    // The second decide failed after its debit: it gives its unit back.
    p.put_back(CallKind::Decide, 1);
    assert_eq!(p.kinds(-1), vec![(CallKind::Decide, -2)]);
    assert_eq!(p.kinds(1), vec![(CallKind::Decide, 2)]);
    p.put_back(CallKind::Reward, 1);
    assert_eq!(
        p.kinds(-1),
        vec![(CallKind::Decide, -2), (CallKind::Reward, -1)]
    );
}
