//! Tests of `decision_batch.rs`: a batch answers and stores exactly what
//! its calls one after another would: the same calls run combined on one
//! model and one by one on an identical model, compared reply by reply and
//! row by row. Needs PostgreSQL (`QLEARN_TEST_POSTGRES_URL`); skips loudly
//! without it unless `QLEARN_REQUIRE_POSTGRES=1`.
use super::super::test_db::connect;
use super::*;
use crate::decisions::{Aggregation, DecisionsConfig};
use crate::store::{DecisionQuery, ModelPatch, NewUser, Store, Usage, User};
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

/// A user (`email`) with two identical models that log decisions: one
/// runs a batch, the other the same calls one by one.
fn two_logging_models(s: &PgStore, email: &str) -> (User, Vec<String>) {
    let mut c = ModelConfig::new(3);
    c.seed = Some(5);
    c.epsilon = 0.5;
    two_logging(s, email, &Model::new(c).expect("model"))
}

/// A user (`email`) with two copies of `model` that log decisions.
fn two_logging(s: &PgStore, email: &str, model: &Model) -> (User, Vec<String>) {
    let user = s
        .create_user(
            NewUser {
                email: email.into(),
                password_hash: "x".into(),
                tier: Tier::Free,
                role: Role::User,
            },
            NOW,
        )
        .expect("user");
    let setting = DecisionsConfig {
        reward_wait_seconds: 600,
        default_reward: Some(0.0),
        aggregation: Aggregation::Sum,
        retention_days: 30,
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        let info = s
            .create_model(&user.id, "m", model, None, NOW)
            .expect("create");
        let patch = ModelPatch {
            decisions: Some(Some(setting.clone())),
            ..ModelPatch::default()
        };
        s.update_model(&user.id, &info.id, patch, NOW)
            .expect("decisions on");
        ids.push(info.id);
    }
    (user, ids)
}

/// The calls both tests run: a few stored before the batch (which its
/// calls must read from the rows), then the batch's, with a decide that
/// fails validation, a replayed decision id, a reward for an unknown id
/// and a decide on an ended episode among them.
struct Script {
    setup: [Decide<'static>; 4],
    x0: [RewardIn; 1],
    decides: [Decide<'static>; 7],
    first_rewards: [RewardIn; 2],
    more_rewards: [RewardIn; 3],
    end: crate::decisions::EpisodeEnd,
}

impl Script {
    fn new() -> Script {
        Script {
            setup: [
                Decide::new(StateRef::Int(0)).id("a0").episode("e1"),
                Decide::new(StateRef::Int(1)).id("b0").episode("e2"),
                Decide::new(StateRef::Int(2)).id("c0"),
                Decide::new(StateRef::Int(1)).id("x0").episode("e3"),
            ],
            // x0's reward is in: its transition waits for the next step,
            // which the batch logs (reading x0 as e3's last step).
            x0: [reward("x0", 3.0, true)],
            decides: [
                Decide::new(StateRef::Int(2)).id("x1").episode("e3"),
                Decide::new(StateRef::Int(1)).id("a1").episode("e1"),
                Decide::new(StateRef::Int(0)).id("a0").episode("e1"),
                Decide::new(StateRef::Int(1)).allowed(&[9]),
                Decide::new(StateRef::Int(3)),
                Decide::new(StateRef::Int(2)).id("b1").episode("e2"),
                Decide::new(StateRef::Int(4)).id("a2").episode("e1"),
            ],
            first_rewards: [reward("a0", 1.0, true), reward("c0", 0.5, false)],
            more_rewards: [
                reward("a1", 2.0, true),
                reward("zz", 1.0, true),
                reward("b0", -1.0, true),
            ],
            end: crate::decisions::EpisodeEnd::terminated(),
        }
    }

    /// The calls stored before the batch, one call at a time.
    fn before(&self) -> Vec<Call<'_>> {
        self.setup
            .iter()
            .map(Call::Decide)
            .chain([Call::Rewards(&self.x0)])
            .collect()
    }

    /// Stores the calls before the batch on each model, one at a time.
    fn store_before(&self, s: &PgStore, owner: &str, ids: &[String], payer: Payer<'_>) {
        for id in ids {
            for call in self.before() {
                let r = s.decision_batch(owner, id, false, &Self::items(vec![call], payer));
                assert!(matches!(r.as_slice(), [Ok(Some(_))]), "{r:?}");
            }
        }
    }

    /// `calls` as a batch's items, paid by `payer`.
    fn items<'a>(calls: Vec<Call<'a>>, payer: Payer<'a>) -> Vec<Item<'a>> {
        calls
            .into_iter()
            .map(|call| Item {
                call,
                payer,
                now: NOW,
            })
            .collect()
    }

    /// The batch's calls.
    fn batch(&self) -> Vec<Call<'_>> {
        let d = &self.decides;
        vec![
            Call::Decide(&d[0]),
            Call::Decide(&d[1]),
            Call::Rewards(&self.first_rewards),
            Call::Decide(&d[2]),
            Call::Decide(&d[3]),
            Call::Decide(&d[4]),
            Call::Rewards(&self.more_rewards),
            Call::Decide(&d[5]),
            Call::End {
                episode_id: "e1",
                end: &self.end,
            },
            Call::Decide(&d[6]),
        ]
    }
}

#[test]
fn a_batch_equals_its_calls_one_by_one() {
    let Some(schema) = connect("qlearn_unit_batch") else {
        return;
    };
    let s = &schema.0;
    let (user, ids) = two_logging_models(s, "batch@example.com");
    let limits = TierLimits {
        monthly_calls: Some(1_000),
        ..TierLimits::UNLIMITED
    };
    let m = Meter {
        user_id: &user.id,
        limits: &limits,
        now: NOW,
    };
    let script = Script::new();
    script.store_before(s, &user.id, &ids, Payer::Meter(&m));
    let items = Script::items(script.batch(), Payer::Meter(&m));
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

/// A batch debits its calls up front and gives back those that failed
/// (`SQL_DEBIT` with a negative count). On a tier with overage, the quota
/// crossed inside the batch, the month's overage must still be exactly
/// the calls past the quota, and each kind's count what the calls one by
/// one leave.
#[test]
fn a_batch_past_the_quota_gives_back_its_failed_calls_overage_included() {
    let Some(schema) = connect("qlearn_unit_batch_overage") else {
        return;
    };
    let s = &schema.0;
    let (user, ids) = two_logging_models(s, "overage@example.com");
    let script = Script::new();
    let month = BillingMonth::from_unix(NOW);
    let usage = || s.usage(&user.id, month).expect("usage");
    // The quota falls two calls into the batch.
    let stored_before = 2 * script.before().len() as u64;
    let quota = stored_before + 2;
    let limits = TierLimits {
        monthly_calls: Some(quota),
        overage: true,
        ..TierLimits::UNLIMITED
    };
    let m = Meter {
        user_id: &user.id,
        limits: &limits,
        now: NOW,
    };
    script.store_before(s, &user.id, &ids, Payer::Meter(&m));
    assert_eq!((usage().calls, usage().overage), (stored_before, 0));
    let items = Script::items(script.batch(), Payer::Meter(&m));
    let at_start = usage();
    let combined = s.decision_batch(&user.id, &ids[0], false, &items);
    let after_batch = usage();
    assert!(
        combined.iter().filter(|r| r.is_err()).count() >= 2,
        "failed calls to give back: {combined:?}"
    );
    assert!(after_batch.calls > quota, "the batch crossed the quota");
    assert_eq!(after_batch.overage, after_batch.calls - quota, "overage");
    for it in &items {
        s.decision_batch(&user.id, &ids[1], false, &[*it]);
    }
    let after_alone = usage();
    assert_eq!(after_alone.overage, after_alone.calls - quota, "overage");
    let kinds = |a: &Usage, b: &Usage| -> Vec<u64> {
        a.by_kind
            .iter()
            .zip(&b.by_kind)
            .map(|(x, y)| x - y)
            .collect()
    };
    assert_eq!(
        kinds(&after_batch, &at_start),
        kinds(&after_alone, &after_batch),
        "each kind's calls, batch against one by one"
    );
    assert_eq!(after_alone.per_day.iter().sum::<u64>(), after_alone.calls);
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

/// A call whose learning the engine refuses (imported Q-values near
/// `f64::MAX`: the step 0 → 1 would overflow) fails alone: the batch's
/// other calls answer and store what they would one by one, and the
/// refused call gets the engine's error, not a storage error.
#[test]
fn a_refused_learning_fails_only_its_call() {
    let Some(schema) = connect("qlearn_unit_batch_refused") else {
        return;
    };
    let s = &schema.0;
    let mut c = ModelConfig::new(2);
    c.seed = Some(3);
    c.learning_rate = 1.0;
    c.discount_factor = 1.0;
    let big = f64::MAX * 0.75;
    let mut doc: serde_json::Value =
        serde_json::from_str(&Model::new(c).expect("model").to_json().expect("json")).expect("doc");
    doc["q_table"] = serde_json::json!([
        { "state": 0, "q": [-big, -big] },
        { "state": 1, "q": [big, big] },
    ]);
    let model = Model::from_json(&doc.to_string()).expect("import");
    let (user, ids) = two_logging(s, "refused@example.com", &model);
    let steps = [
        Decide::new(StateRef::Int(0)).id("d0").episode("e"),
        Decide::new(StateRef::Int(1)).id("d1").episode("e"),
    ];
    let before: Vec<Call<'_>> = steps.iter().map(Call::Decide).collect();
    for id in &ids {
        for call in &before {
            let r = s.decision_batch(
                &user.id,
                id,
                false,
                &Script::items(vec![*call], Payer::Free),
            );
            assert!(matches!(r.as_slice(), [Ok(Some(_))]), "{r:?}");
        }
    }
    let (refused, last) = ([reward("d0", 0.0, true)], [reward("d1", 1.0, true)]);
    let other = Decide::new(StateRef::Int(2)).id("d2");
    let end = crate::decisions::EpisodeEnd::terminated();
    let batch = vec![
        Call::Decide(&other),
        Call::Rewards(&refused),
        Call::Rewards(&last),
        Call::End {
            episode_id: "e",
            end: &end,
        },
    ];
    let items = Script::items(batch, Payer::Free);
    let combined = s.decision_batch(&user.id, &ids[0], false, &items);
    let alone: Vec<_> = items
        .iter()
        .flat_map(|it| s.decision_batch(&user.id, &ids[1], false, &[*it]))
        .collect();
    assert_eq!(format!("{combined:?}"), format!("{alone:?}"));
    assert!(
        matches!(&combined[1], Err(Error::InvalidField { field, .. }) if field == "reward"),
        "{combined:?}"
    );
    assert!(
        combined
            .iter()
            .enumerate()
            .all(|(i, r)| i == 1 || r.is_ok()),
        "only the refused call fails: {combined:?}"
    );
    assert_eq!(shown(s, &user.id, &ids[0]), shown(s, &user.id, &ids[1]));
}
