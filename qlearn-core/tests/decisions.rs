//! Decisions and delayed rewards (`qlearn_core::decisions`): learning
//! through decisions equals posting the same transitions to `update`, bit
//! for bit, for every algorithm; every transition is applied exactly once
//! in any order of the pieces; idempotent retries; the clock (deadlines,
//! default reward, late rewards, `final`); every aggregation; and the logged
//! probabilities against observed frequencies.

use qlearn_core::decisions::{
    Aggregation, Decide, DecisionLog, DecisionStatus, DecisionsConfig, EpisodeEnd, LogParts,
    NewDecision, Outcome, RewardStatus, Transition,
};
use qlearn_core::rng::Rng;
use qlearn_core::{
    Algorithm, Error, Experience, Exploration, Learner, Model, ModelConfig, QTable, State, StateKey,
};

const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::QLearning,
    Algorithm::Sarsa,
    Algorithm::ExpectedSarsa,
    Algorithm::DoubleQLearning,
];

fn model_config(n: usize, algorithm: Algorithm) -> ModelConfig {
    let mut c = ModelConfig::new(n);
    c.algorithm = algorithm;
    c.learning_rate = 0.3;
    c.discount_factor = 0.9;
    c.epsilon = 0.2;
    c.seed = Some(17);
    c
}

fn log_with(f: impl FnOnce(&mut DecisionsConfig)) -> DecisionLog {
    let mut c = DecisionsConfig::default();
    f(&mut c);
    DecisionLog::new(c).unwrap()
}

/// The bits of a model's Q-table, keys and statistics.
fn snapshot(m: &Model) -> (Vec<State>, Vec<u64>, String) {
    let keys = m.table().keys().map(|k| k.to_state()).collect();
    let bits = m.table().values().iter().map(|v| v.to_bits()).collect();
    (keys, bits, format!("{:?}", m.stats()))
}

// ---- learning through decisions is learning through update ---------------

/// A step of the scripted environment: state, mask, reward of an action.
fn env_state(e: u64, k: u64) -> i64 {
    ((e * 7 + k * 3) % 11) as i64
}
fn env_mask(e: u64, k: u64) -> Option<Vec<usize>> {
    (e + k).is_multiple_of(3).then(|| vec![0, 2])
}
fn env_reward(s: i64, a: usize) -> f64 {
    (s as f64 - a as f64 * 0.7).sin()
}

/// One step as the twin model (learning by `update`) remembers it.
struct Step {
    state: i64,
    action: usize,
    reward: f64,
    allowed: Option<Vec<usize>>,
}

/// `(s_k, a_k, R_k, s_k+1, a_k+1, allowed_k+1)` posted to `update`.
fn update_next(twin: &mut Model, prev: &Step, next: &Step) {
    let exp = Experience {
        next_allowed_actions: next.allowed.as_deref(),
        next_action: Some(next.action),
        ..Experience::new(prev.state, prev.action, prev.reward, next.state)
    };
    twin.update(&exp).unwrap();
}

fn learns_like_update(algorithm: Algorithm) {
    let cfg = model_config(3, algorithm);
    let mut model = Model::new(cfg.clone()).unwrap();
    let mut twin = Model::new(cfg).unwrap();
    let mut log = log_with(|_| {});
    let mut now = 1_000_000;
    let sarsa = algorithm == Algorithm::Sarsa;
    for e in 0..40u64 {
        let ep = format!("e{e}");
        let mut steps: Vec<Step> = Vec::new();
        let mut ids: Vec<String> = Vec::new();
        // Odd steps' rewards arrive after the next decision.
        let mut owed: Option<usize> = None;
        for k in 0..6u64 {
            now += 10;
            let (s, mask) = (env_state(e, k), env_mask(e, k));
            let mut req = Decide::new(s).episode(&ep);
            if let Some(m) = &mask {
                req = req.allowed(m);
            }
            let d = log.decide(&mut model, &req, now).unwrap();
            let p = twin.predict_full(s, true, mask.as_deref()).unwrap();
            assert_eq!((d.action, d.probability), (p.action, p.probability));
            assert_eq!(d.step, k);
            let step = Step {
                state: s,
                action: d.action,
                reward: env_reward(s, d.action),
                allowed: mask,
            };
            // Step k-1's reward was final already: its transition is learned now.
            if k > 0 && owed.is_none() {
                update_next(&mut twin, &steps[k as usize - 1], &step);
            }
            steps.push(step);
            ids.push(d.decision_id);
            if let Some(j) = owed.take() {
                let r = log
                    .reward(&mut model, &ids[j], steps[j].reward, None, true, now)
                    .unwrap();
                assert_eq!(r.status, RewardStatus::Applied);
                update_next(&mut twin, &steps[j], &steps[j + 1]);
            }
            let k = k as usize;
            if k.is_multiple_of(2) {
                // In two parts, the second final: learned as their sum.
                let (a, b) = (steps[k].reward * 0.25, steps[k].reward * 0.75);
                let r1 = log.reward(&mut model, &ids[k], a, None, false, now);
                assert_eq!(r1.unwrap().status, RewardStatus::Open);
                let r2 = log.reward(&mut model, &ids[k], b, None, true, now);
                assert_eq!(r2.unwrap().status, RewardStatus::Closed);
                steps[k].reward = a + b;
            } else {
                owed = Some(k);
            }
        }
        // The last step (5) is still owed its reward: the end learns nothing.
        let last = &steps[5];
        let truncated = e % 2 == 1 && !sarsa;
        let next = env_state(e, 6);
        let end = if truncated {
            EpisodeEnd::truncated(State::Int(next))
        } else {
            EpisodeEnd::terminated()
        };
        assert_eq!(log.end_episode(&mut model, &ep, end).unwrap(), 0);
        let r = log
            .reward(&mut model, &ids[5], last.reward, None, true, now)
            .unwrap();
        assert_eq!(r.status, RewardStatus::Applied);
        let exp = Experience::new(
            last.state,
            last.action,
            last.reward,
            if truncated { next } else { last.state },
        )
        .done(!truncated)
        .truncated(truncated);
        twin.update(&exp).unwrap();
        // A one-step decision between episodes: terminal, learned at once.
        now += 10;
        let s = 100 + e as i64;
        let d = log.decide(&mut model, &Decide::new(s), now).unwrap();
        let p = twin.predict_full(s, true, None).unwrap();
        assert_eq!(d.action, p.action);
        let reward = env_reward(s, d.action);
        let r = log.reward(&mut model, &d.decision_id, reward, None, true, now);
        assert_eq!(r.unwrap().status, RewardStatus::Applied);
        twin.update(&Experience::new(s, d.action, reward, s).done(true))
            .unwrap();
    }
    assert_eq!(snapshot(&model), snapshot(&twin), "{algorithm:?}");
    let stats = log.stats();
    assert_eq!((stats.pending, stats.applied), (0, 40 * 7), "{algorithm:?}");
}

#[test]
fn learning_through_decisions_is_bit_identical_to_update_for_every_algorithm() {
    for algorithm in ALGORITHMS {
        learns_like_update(algorithm);
    }
}

// ---- every transition exactly once, in any order --------------------------

/// How step k of the shuffled episode is rewarded.
#[derive(Clone, Copy)]
enum Plan {
    /// No reward: the deadline closes it (default reward, or nothing).
    None,
    /// One final reward.
    Final(f64),
    /// A partial reward, then a final one.
    Split(f64, f64),
    /// A partial reward; the deadline closes it.
    Partial(f64),
}

/// One reward of the shuffled episode, as the client sends it.
#[derive(Clone)]
struct Piece {
    k: usize,
    value: f64,
    id: String,
    is_final: bool,
    retry: bool,
}

const STEPS: usize = 20;

fn plan_pieces(k: usize, plan: Plan, rng: &mut Rng) -> Vec<Piece> {
    let reward = |value: f64, n: usize, is_final: bool| Piece {
        k,
        value,
        id: format!("r{k}-{n}"),
        is_final,
        retry: false,
    };
    let mut pieces = match plan {
        Plan::None => vec![],
        Plan::Final(v) => vec![reward(v, 0, true)],
        Plan::Split(a, b) => vec![reward(a, 0, false), reward(b, 1, true)],
        Plan::Partial(a) => vec![reward(a, 0, false)],
    };
    // Sometimes a client retries its last reward (same id and value).
    if let Some(last) = pieces.last().cloned() {
        if rng.below(2) == 0 {
            pieces.push(Piece {
                retry: true,
                ..last
            });
        }
    }
    pieces
}

fn one_interleaving(seed: u64) {
    let mut rng = Rng::from_seed(seed);
    let default_reward = seed.is_multiple_of(2).then_some(0.5);
    let mut log = log_with(|c| c.default_reward = default_reward);
    let ep = "episode";
    let outcome = if rng.below(2) == 0 {
        Outcome::Terminated
    } else {
        Outcome::Truncated
    };
    let state = |k: usize| State::Int(k as i64 * 10);
    let action = |k: usize| (k * 7 + seed as usize) % 4;
    let allowed = |k: usize| {
        k.is_multiple_of(3)
            .then(|| vec![action(k), (action(k) + 1) % 4])
    };
    let plans: Vec<Plan> = (0..STEPS)
        .map(|k| {
            let v = k as f64 - 9.5;
            match rng.below(4) {
                0 => Plan::None,
                1 => Plan::Final(v),
                2 => Plan::Split(v, 0.125),
                _ => Plan::Partial(v),
            }
        })
        .collect();
    let mut tracks: Vec<std::collections::VecDeque<Piece>> = plans
        .iter()
        .enumerate()
        .map(|(k, &p)| plan_pieces(k, p, &mut rng).into())
        .collect();
    let mut decided = 0usize;
    let mut ended = false;
    let mut out: Vec<Transition> = Vec::new();
    let mut now = 0i64;
    let mut ids = Vec::new();
    loop {
        // What may happen next: the next decision (or the end after the
        // last), or the next piece of any decided step's rewards.
        let mut choices: Vec<Option<usize>> = tracks[..decided]
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
            .map(|(k, _)| Some(k))
            .collect();
        if !ended {
            choices.push(None);
        }
        if choices.is_empty() {
            break;
        }
        now += 1;
        match choices[rng.below(choices.len())] {
            None if decided < STEPS => {
                let k = decided;
                let new = NewDecision {
                    decision_id: None,
                    episode_id: Some(ep),
                    state: state(k),
                    allowed_actions: allowed(k),
                    action: action(k),
                    probability: 0.25,
                    baseline_action: None,
                };
                let (d, ready) = log.record_decision(new, now).unwrap();
                assert_eq!(d.step as usize, k);
                ids.push(d.decision_id);
                out.extend(ready);
                decided += 1;
            }
            None => {
                let end = match outcome {
                    Outcome::Terminated => EpisodeEnd::terminated(),
                    Outcome::Truncated => EpisodeEnd::truncated(State::Int(999)),
                };
                out.extend(log.record_end(ep, end).unwrap());
                ended = true;
            }
            Some(k) => {
                let Some(Piece {
                    k: step,
                    value,
                    id,
                    is_final,
                    retry,
                }) = tracks[k].pop_front()
                else {
                    unreachable!("only tracks with pieces are chosen")
                };
                let r = log
                    .record_reward(&ids[step], value, Some(&id), is_final, now)
                    .unwrap();
                assert_eq!(retry, r.status == RewardStatus::Duplicate, "seed {seed}");
                out.extend(r.transitions);
            }
        }
    }
    // Every window closes at the deadline.
    out.extend(log.expire(now + 600_000));
    assert!(log.expire(i64::MAX).is_empty());
    // Exactly once each, with the right pieces.
    let mut expected = Vec::new();
    for (k, plan) in plans.iter().enumerate() {
        let reward = match *plan {
            Plan::None => default_reward,
            Plan::Final(v) | Plan::Partial(v) => Some(v),
            Plan::Split(a, b) => Some(a + b),
        };
        let Some(reward) = reward else { continue };
        let last = k + 1 == STEPS;
        let truncated = last && outcome == Outcome::Truncated;
        expected.push(Transition {
            decision_id: ids[k].clone(),
            state: state(k),
            action: action(k),
            reward,
            next_state: if last {
                truncated.then_some(State::Int(999))
            } else {
                Some(state(k + 1))
            },
            next_action: (!last).then(|| action(k + 1)),
            next_allowed_actions: if last { None } else { allowed(k + 1) },
            done: last && !truncated,
            truncated,
        });
    }
    out.sort_by_key(|t| log.get(&t.decision_id).map(|r| r.step));
    assert_eq!(out, expected, "seed {seed}");
    let stats = log.stats();
    assert_eq!(stats.pending, 0, "seed {seed}");
    assert_eq!(stats.applied, expected.len() as u64, "seed {seed}");
}

#[test]
fn a_thousand_random_interleavings_apply_every_transition_exactly_once() {
    for seed in 0..1000 {
        one_interleaving(seed);
    }
}

// ---- idempotency ---------------------------------------------------------

#[test]
fn a_retried_decision_returns_the_stored_one_and_a_reused_id_conflicts() {
    let mut model = Model::new(model_config(4, Algorithm::QLearning)).unwrap();
    let mut log = log_with(|_| {});
    let req = Decide::new(3).id("order-1").episode("e");
    let first = log.decide(&mut model, &req, 0).unwrap();
    assert!(!first.replayed);
    for _ in 0..5 {
        let again = log.decide(&mut model, &req, 50).unwrap();
        assert!(again.replayed);
        assert_eq!((again.action, again.step), (first.action, first.step));
        assert_eq!(again.probability, first.probability);
    }
    // Predicted and logged once.
    assert_eq!(model.stats().predictions, 1);
    assert_eq!(log.stats().decisions, 1);
    let other_state = log.decide(&mut model, &Decide::new(4).id("order-1").episode("e"), 60);
    assert!(
        matches!(other_state, Err(Error::Conflict(_))),
        "{other_state:?}"
    );
    let other_episode = log.decide(&mut model, &Decide::new(3).id("order-1"), 60);
    assert!(
        matches!(other_episode, Err(Error::Conflict(_))),
        "{other_episode:?}"
    );
    // Refused before predicting.
    assert_eq!(model.stats().predictions, 1);
    let bad_id = log.decide(&mut model, &Decide::new(3).id(""), 60);
    assert!(matches!(bad_id, Err(Error::InvalidField { field, .. }) if field == "decision_id"));
    // Generated ids never collide with a client's.
    let taken = log
        .decide(&mut model, &Decide::new(5).id("d1"), 70)
        .unwrap();
    let fresh = log.decide(&mut model, &Decide::new(5), 70).unwrap();
    assert_ne!(fresh.decision_id, taken.decision_id);
}

#[test]
fn a_retried_reward_has_no_effect_and_a_reused_id_with_another_value_conflicts() {
    let mut model = Model::new(model_config(2, Algorithm::QLearning)).unwrap();
    let mut log = log_with(|_| {});
    let d = log.decide(&mut model, &Decide::new(1), 0).unwrap();
    let id = d.decision_id.as_str();
    let r = log
        .reward(&mut model, id, 2.0, Some("click"), false, 1)
        .unwrap();
    assert_eq!(
        (r.status, r.reward, r.rewards),
        (RewardStatus::Open, Some(2.0), 1)
    );
    assert!(r.metered());
    let again = log
        .reward(&mut model, id, 2.0, Some("click"), false, 2)
        .unwrap();
    assert_eq!(
        (again.status, again.reward, again.rewards),
        (RewardStatus::Duplicate, Some(2.0), 1)
    );
    assert!(!again.metered());
    let conflict = log.reward(&mut model, id, 3.0, Some("click"), false, 3);
    assert!(matches!(conflict, Err(Error::Conflict(_))), "{conflict:?}");
    let r = log
        .reward(&mut model, id, 1.0, Some("buy"), true, 4)
        .unwrap();
    assert_eq!(
        (r.status, r.reward, r.rewards),
        (RewardStatus::Applied, Some(3.0), 2)
    );
    // The final reward retried after the decision was learned: still a no-op.
    let again = log
        .reward(&mut model, id, 1.0, Some("buy"), true, 5)
        .unwrap();
    assert_eq!(again.status, RewardStatus::Duplicate);
    assert_eq!(log.stats().rewards, 2);
    assert_eq!(model.stats().updates, 1);
    let unknown = log.reward(&mut model, "nope", 1.0, None, false, 5);
    assert!(
        matches!(unknown, Err(Error::NotFound("decision"))),
        "{unknown:?}"
    );
    let nan = log.reward(&mut model, id, f64::NAN, None, false, 5);
    assert!(matches!(nan, Err(Error::InvalidField { field, .. }) if field == "value"));
}

// ---- the clock -------------------------------------------------------------

/// A Q-learning model whose learned values are easy to predict: α = 1,
/// terminal transitions set Q(s, a) to the reward.
fn exact_model() -> Model {
    let mut c = model_config(2, Algorithm::QLearning);
    c.learning_rate = 1.0;
    Model::new(c).unwrap()
}

fn q(model: &Model, s: i64, a: usize) -> f64 {
    model.q_values(s).unwrap()[a]
}

#[test]
fn the_deadline_closes_with_the_default_reward_and_later_rewards_are_late() {
    let mut model = exact_model();
    let mut log = log_with(|c| {
        c.reward_wait_seconds = 10;
        c.default_reward = Some(0.25);
    });
    let d = log.decide(&mut model, &Decide::new(7), 1_000).unwrap();
    assert_eq!(d.closes_at_ms, 11_000);
    assert_eq!(log.settle(&mut model, 10_999).unwrap(), 0);
    assert_eq!(model.stats().updates, 0);
    assert_eq!(log.settle(&mut model, 11_000).unwrap(), 1);
    assert_eq!(q(&model, 7, d.action), 0.25);
    let late = log
        .reward(&mut model, &d.decision_id, 5.0, None, true, 11_001)
        .unwrap();
    assert_eq!(late.status, RewardStatus::Late);
    assert!(!late.metered());
    assert_eq!(q(&model, 7, d.action), 0.25);
    let s = log.stats();
    assert_eq!((s.late, s.defaulted, s.rewards, s.pending), (1, 1, 0, 0));
    // A reward after the deadline but before any settle closes the window
    // first (with what it had), then is late.
    let d = log.decide(&mut model, &Decide::new(8), 20_000).unwrap();
    log.reward(&mut model, &d.decision_id, -1.0, None, false, 25_000)
        .unwrap();
    let late = log
        .reward(&mut model, &d.decision_id, 9.0, None, false, 30_000)
        .unwrap();
    assert_eq!((late.status, late.reward), (RewardStatus::Late, Some(-1.0)));
    assert_eq!(late.transitions.len(), 1);
    assert_eq!(q(&model, 8, d.action), -1.0);
}

#[test]
fn a_null_default_teaches_nothing_and_the_episode_goes_on() {
    let mut model = exact_model();
    let mut log = log_with(|c| c.reward_wait_seconds = 10);
    let ids: Vec<String> = (0..3)
        .map(|k| {
            let d = log.decide(&mut model, &Decide::new(k).episode("e"), 0);
            d.unwrap().decision_id
        })
        .collect();
    log.reward(&mut model, &ids[0], 1.0, None, true, 1).unwrap();
    log.reward(&mut model, &ids[2], 3.0, None, true, 1).unwrap();
    log.end_episode(&mut model, "e", EpisodeEnd::terminated())
        .unwrap();
    // Steps 0 (bootstrapping from step 1's state) and 2 (terminal) learned.
    assert_eq!(model.stats().updates, 2);
    assert_eq!(log.settle(&mut model, 10_000).unwrap(), 0);
    assert_eq!(log.get(&ids[1]).unwrap().status, DecisionStatus::Expired);
    assert_eq!(model.stats().updates, 2);
    let s = log.stats();
    assert_eq!((s.defaulted, s.pending, s.applied), (1, 0, 2));
    assert!(model.q_values(1).unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn a_final_reward_is_learned_at_once() {
    let mut model = exact_model();
    let mut log = log_with(|c| c.reward_wait_seconds = 3600);
    let d = log.decide(&mut model, &Decide::new(1), 0).unwrap();
    let r = log
        .reward(&mut model, &d.decision_id, 4.0, None, false, 1)
        .unwrap();
    assert_eq!(r.status, RewardStatus::Open);
    assert_eq!(model.stats().updates, 0);
    let r = log
        .reward(&mut model, &d.decision_id, 0.5, None, true, 2)
        .unwrap();
    assert_eq!((r.status, r.reward), (RewardStatus::Applied, Some(4.5)));
    assert_eq!(q(&model, 1, d.action), 4.5);
    let late = log
        .reward(&mut model, &d.decision_id, 1.0, None, false, 3)
        .unwrap();
    assert_eq!(late.status, RewardStatus::Late);
    assert_eq!(q(&model, 1, d.action), 4.5);
}

#[test]
fn every_aggregation_including_max_over_negative_rewards() {
    let rewards = [-3.0, -1.0, -2.0];
    let cases = [
        (Aggregation::Sum, -6.0),
        (Aggregation::First, -3.0),
        (Aggregation::Last, -2.0),
        (Aggregation::Mean, -2.0),
        (Aggregation::Min, -3.0),
        (Aggregation::Max, -1.0),
    ];
    for (aggregation, learned) in cases {
        let mut model = exact_model();
        let mut log = log_with(|c| {
            c.aggregation = aggregation;
            c.reward_wait_seconds = 60;
            c.default_reward = Some(0.0);
        });
        let d = log.decide(&mut model, &Decide::new(1), 0).unwrap();
        for (i, &r) in rewards.iter().enumerate() {
            let receipt = log
                .reward(&mut model, &d.decision_id, r, None, false, 1 + i as i64)
                .unwrap();
            // `first` closes at the first reward; the others are late.
            let late = aggregation == Aggregation::First && i > 0;
            assert_eq!(
                receipt.status == RewardStatus::Late,
                late,
                "{aggregation:?}"
            );
        }
        log.settle(&mut model, 60_000).unwrap();
        assert_eq!(q(&model, 1, d.action), learned, "{aggregation:?}");
        assert_eq!(log.stats().defaulted, 0, "{aggregation:?}");
        let parsed: Aggregation = aggregation.as_str().parse().unwrap();
        assert_eq!(parsed, aggregation);
    }
}

// ---- configuration, episodes, persistence -------------------------------

#[test]
fn the_configuration_is_validated_field_by_field_and_reads_from_json() {
    let field = |c: DecisionsConfig| match DecisionLog::new(c) {
        Err(Error::InvalidField { field, .. }) => field,
        other => panic!("expected InvalidField, got {other:?}"),
    };
    let base = DecisionsConfig::default();
    let too_long = DecisionsConfig {
        reward_wait_seconds: 30 * 86_400 + 1,
        ..base.clone()
    };
    assert_eq!(field(too_long), "decisions.reward_wait_seconds");
    let nan = DecisionsConfig {
        default_reward: Some(f64::NAN),
        ..base.clone()
    };
    assert_eq!(field(nan), "decisions.default_reward");
    let zero = DecisionsConfig {
        retention_days: 0,
        ..base.clone()
    };
    assert_eq!(field(zero), "decisions.retention_days");
    let month = DecisionsConfig {
        reward_wait_seconds: 30 * 86_400,
        ..base
    };
    assert!(DecisionLog::new(month).is_ok());
    let c: DecisionsConfig = serde_json::from_str(
        r#"{"reward_wait_seconds": 60, "aggregation": "max", "default_reward": null}"#,
    )
    .unwrap();
    assert_eq!(
        (c.reward_wait_seconds, c.aggregation, c.default_reward),
        (60, Aggregation::Max, None)
    );
    assert!(serde_json::from_str::<DecisionsConfig>(r#"{"wait": 1}"#).is_err());
    assert!("median".parse::<Aggregation>().is_err());
}

#[test]
fn episodes_end_once_and_refuse_what_cannot_be_learned() {
    let mut model = Model::new(model_config(3, Algorithm::Sarsa)).unwrap();
    let mut log = log_with(|_| {});
    let unknown = log.end_episode(&mut model, "e", EpisodeEnd::terminated());
    assert!(
        matches!(unknown, Err(Error::NotFound("episode"))),
        "{unknown:?}"
    );
    log.decide(&mut model, &Decide::new(1).episode("e"), 0)
        .unwrap();
    // SARSA has no next action to bootstrap a truncated end from.
    let truncated = log.end_episode(&mut model, "e", EpisodeEnd::truncated(State::Int(2)));
    assert!(matches!(truncated, Err(Error::InvalidField { field, .. }) if field == "outcome"));
    let no_next = EpisodeEnd {
        outcome: Outcome::Truncated,
        next_state: None,
        next_allowed_actions: None,
    };
    assert!(log.record_end("e", no_next).is_err());
    log.end_episode(&mut model, "e", EpisodeEnd::terminated())
        .unwrap();
    // The same end again is a no-op; decisions in an ended episode conflict.
    assert!(log
        .end_episode(&mut model, "e", EpisodeEnd::terminated())
        .is_ok());
    let after = log.decide(&mut model, &Decide::new(2).episode("e"), 1);
    assert!(matches!(after, Err(Error::Conflict(_))), "{after:?}");
    let bad_next = EpisodeEnd {
        next_state: Some(State::Array(vec![])),
        ..EpisodeEnd::terminated()
    };
    let mut q_model = Model::new(model_config(3, Algorithm::QLearning)).unwrap();
    log.decide(&mut q_model, &Decide::new(1).episode("f"), 0)
        .unwrap();
    assert!(matches!(
        log.end_episode(&mut q_model, "f", bad_next),
        Err(Error::InvalidState { .. })
    ));
}

#[test]
fn a_saved_and_loaded_log_keeps_its_pending_decisions() {
    let run = |round_trip: bool| {
        let mut model = Model::new(model_config(3, Algorithm::ExpectedSarsa)).unwrap();
        let mut log = log_with(|c| c.default_reward = Some(-0.5));
        let mut ids = Vec::new();
        for k in 0..4 {
            let d = log.decide(&mut model, &Decide::new(k).episode("e"), k * 10);
            ids.push(d.unwrap().decision_id);
        }
        log.reward(&mut model, &ids[1], 2.0, Some("x"), false, 50)
            .unwrap();
        if round_trip {
            let json = serde_json::to_string(&log).unwrap();
            log = serde_json::from_str(&json).unwrap();
        }
        let dup = log
            .reward(&mut model, &ids[1], 2.0, Some("x"), false, 60)
            .unwrap();
        assert_eq!(dup.status, RewardStatus::Duplicate);
        log.reward(&mut model, &ids[3], 1.0, None, true, 60)
            .unwrap();
        log.end_episode(&mut model, "e", EpisodeEnd::terminated())
            .unwrap();
        log.settle(&mut model, 10_000_000).unwrap();
        assert_eq!(log.stats().pending, 0);
        (snapshot(&model), log.stats())
    };
    assert_eq!(run(true), run(false));
}

/// What a store does: load only the rows a call touches into a log, run
/// the call, write them back. The transitions are the full log's.
#[test]
fn a_log_of_the_touched_rows_joins_as_the_full_log() {
    let new = |k: i64| NewDecision {
        decision_id: None,
        episode_id: Some("e"),
        state: State::Int(k),
        allowed_actions: None,
        action: k as usize % 2,
        probability: 0.5,
        baseline_action: None,
    };
    let mut full = log_with(|c| c.default_reward = Some(0.0));
    for k in 0..3 {
        full.record_decision(new(k), k).unwrap();
    }
    let ids: Vec<String> = full.episode("e").unwrap().steps.clone();
    full.record_reward(&ids[0], 1.5, None, true, 5).unwrap();
    full.record_reward(&ids[2], 2.0, None, true, 5).unwrap();
    // Step 1 closes with 3.0; the store loads it, its episode and step 2.
    let parts = full.clone().into_parts();
    let touched = parts
        .decisions
        .iter()
        .filter(|r| r.decision_id != ids[0])
        .cloned()
        .collect();
    let mut partial = DecisionLog::from_parts(LogParts {
        decisions: touched,
        ..parts
    })
    .unwrap();
    // Its deadline is known to the partial log too.
    let expired = full.clone().expire(i64::MAX);
    assert_eq!(expired.len(), 1);
    assert_eq!(partial.clone().expire(i64::MAX), expired);
    let a = full.record_reward(&ids[1], 3.0, None, true, 6).unwrap();
    let b = partial.record_reward(&ids[1], 3.0, None, true, 6).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.transitions.len(), 1);
    assert_eq!(full.get(&ids[1]), partial.get(&ids[1]));
    // Ending learns step 2 in both; the episode's return is kept per episode.
    assert_eq!(
        full.record_end("e", EpisodeEnd::terminated()).unwrap(),
        partial.record_end("e", EpisodeEnd::terminated()).unwrap()
    );
    assert_eq!(full.episode("e").unwrap().learned_return, 6.5);
    // A record that is not the step its episode says is refused.
    let mut parts = full.into_parts();
    parts.decisions[0].step += 7;
    assert!(matches!(
        DecisionLog::from_parts(parts),
        Err(Error::Decode(_))
    ));
}

#[test]
fn pruning_forgets_finished_decisions_after_the_retention() {
    let mut model = exact_model();
    let mut log = log_with(|c| c.retention_days = 1);
    let day = 86_400_000;
    let a = log.decide(&mut model, &Decide::new(1), 0).unwrap();
    log.reward(&mut model, &a.decision_id, 1.0, None, true, 1)
        .unwrap();
    // An open decision in an episode, and its successor, are kept.
    let b = log
        .decide(&mut model, &Decide::new(2).episode("e"), 0)
        .unwrap();
    let c = log
        .decide(&mut model, &Decide::new(3).episode("e"), 0)
        .unwrap();
    log.reward(&mut model, &c.decision_id, 1.0, None, true, 1)
        .unwrap();
    log.end_episode(&mut model, "e", EpisodeEnd::terminated())
        .unwrap();
    assert_eq!(log.prune(day - 1), 0);
    assert_eq!(log.prune(day), 1);
    assert!(log.get(&a.decision_id).is_none());
    assert!(log.get(&b.decision_id).is_some() && log.get(&c.decision_id).is_some());
}

#[test]
fn settle_prunes_settled_decisions_past_the_retention() {
    let mut model = exact_model();
    let day = 86_400_000;
    let mut log = log_with(|c| {
        c.retention_days = 2;
        c.reward_wait_seconds = 60;
        c.default_reward = Some(0.5);
    });
    // Rewarded and learned at once; settled at the deadline with the
    // default reward; one logged a day later; one still open.
    let rewarded = log.decide(&mut model, &Decide::new(1), 0).unwrap();
    log.reward(&mut model, &rewarded.decision_id, 1.0, None, true, 10)
        .unwrap();
    let defaulted = log.decide(&mut model, &Decide::new(2), 5).unwrap();
    assert_eq!(log.settle(&mut model, 60_005).unwrap(), 1);
    let later = log.decide(&mut model, &Decide::new(3), day).unwrap();
    log.reward(&mut model, &later.decision_id, 2.0, None, true, day + 1)
        .unwrap();
    let ids = |log: &DecisionLog| {
        let mut v: Vec<String> = log.decisions().map(|r| r.decision_id.clone()).collect();
        v.sort();
        v
    };
    // Just inside the retention of the first two: nothing goes.
    assert_eq!(log.settle(&mut model, 2 * day - 1).unwrap(), 0);
    assert_eq!(ids(&log).len(), 3);
    // Opened just before the clock reaches the retention of the first.
    let open = log
        .decide(&mut model, &Decide::new(4), 2 * day - 1)
        .unwrap();
    // At the retention of the first, it goes; the second (logged 5 ms
    // later) at 5 ms more; the open one stays however old it gets until
    // settled, and the learned Q-values stay.
    assert_eq!(log.settle(&mut model, 2 * day).unwrap(), 0);
    assert!(log.get(&rewarded.decision_id).is_none());
    assert!(log.get(&defaulted.decision_id).is_some());
    assert_eq!(log.settle(&mut model, 2 * day + 5).unwrap(), 0);
    assert!(log.get(&defaulted.decision_id).is_none());
    let mut want = vec![later.decision_id.clone(), open.decision_id.clone()];
    want.sort();
    assert_eq!(ids(&log), want);
    assert_eq!(q(&model, 1, rewarded.action), 1.0);
    assert_eq!(q(&model, 2, defaulted.action), 0.5);
    // The open one closes at its deadline (default reward) and is pruned
    // with the later one once both are past the retention; the counts stay.
    assert_eq!(log.settle(&mut model, 4 * day).unwrap(), 1);
    assert_eq!(log.decisions().count(), 0);
    let stats = log.stats();
    assert_eq!((stats.decisions, stats.applied, stats.pending), (4, 4, 0));
    // A reward for a pruned decision is an unknown decision.
    assert!(matches!(
        log.reward(&mut model, &rewarded.decision_id, 1.0, None, false, 4 * day),
        Err(Error::NotFound(_))
    ));
}

// ---- logged probabilities against observed frequencies -------------------

/// A model whose Q-table holds exactly one raw row for state `s` (`2 * n`
/// values for double Q-learning), so no rule is involved.
fn with_row(cfg: ModelConfig, s: i64, row: Vec<f64>) -> Model {
    let learner = Learner::new(cfg).unwrap();
    let table = QTable::from_rows(row.len(), vec![StateKey::Int(s)], row).unwrap();
    Model::from_parts(learner, table).unwrap()
}

#[test]
fn action_probabilities_by_hand() {
    let mut c = model_config(5, Algorithm::QLearning);
    c.epsilon = 0.3;
    let tied = vec![1.0, 1.0, 0.5, 1.0, -2.0];
    let m = with_row(c.clone(), 1, tied.clone());
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-15);
    // Greedy {0, 3} among the allowed {0, 2, 3, 4}: 0.7 / 2 + 0.3 / 4.
    let p = m
        .action_probabilities(1, Some(&[0, 2, 3, 4]), true)
        .unwrap();
    assert!(close(&p, &[0.425, 0.0, 0.075, 0.425, 0.075]), "{p:?}");
    let p = m.action_probabilities(1, None, false).unwrap();
    assert!(
        close(&p, &[1.0 / 3.0, 1.0 / 3.0, 0.0, 1.0 / 3.0, 0.0]),
        "{p:?}"
    );
    let p = m.action_probabilities(9, Some(&[1, 4]), true).unwrap();
    assert_eq!(p, vec![0.0, 0.5, 0.0, 0.0, 0.5]);
    // Softmax at T = 0.5 over {2, 4}: weights 1 and exp(-5).
    c.exploration = Exploration::Softmax;
    c.temperature = 0.5;
    let m = with_row(c.clone(), 1, tied);
    let p = m.action_probabilities(1, Some(&[2, 4]), true).unwrap();
    let w = (-5.0f64).exp();
    assert!(
        close(&p, &[0.0, 0.0, 1.0 / (1.0 + w), 0.0, w / (1.0 + w)]),
        "{p:?}"
    );
    // Large values do not overflow (the maximum is subtracted first).
    let m = with_row(c.clone(), 1, vec![1e12, 1e12 - 1.0, 0.0, 0.0, 0.0]);
    let p = m.action_probabilities(1, None, true).unwrap();
    assert!(
        p.iter().all(|x| x.is_finite()) && (p[0] - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-12
    );
    // Double Q-learning ranks by the mean of both tables: action 1 is greedy.
    c.algorithm = Algorithm::DoubleQLearning;
    c.exploration = Exploration::EpsilonGreedy;
    let m = with_row(
        c,
        1,
        vec![1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 1.5, 0.0, 0.0, 0.0],
    );
    let p = m.action_probabilities(1, None, true).unwrap();
    assert!(close(&p, &[0.06, 0.76, 0.06, 0.06, 0.06]), "{p:?}");
    let bad = m.action_probabilities(1, Some(&[]), true);
    assert!(matches!(bad, Err(Error::InvalidAction { .. })), "{bad:?}");
}

/// One predict scenario: the model, the state, the mask, whether to
/// explore, and every how many predicts an episode ends (decaying epsilon).
struct Scenario {
    name: &'static str,
    model: Model,
    state: i64,
    allowed: Option<Vec<usize>>,
    explore: bool,
    decay_every: usize,
}

/// The upper 0.1% point of the chi-square distribution with `df` degrees
/// of freedom (`df` ≤ 4), from the standard tables.
fn chi2_critical_999(df: usize) -> f64 {
    [0.0, 10.828, 13.816, 16.266, 18.467][df]
}

fn scenarios() -> Vec<Scenario> {
    let n = 5;
    let base = |exploration: Exploration, algorithm: Algorithm| {
        let mut c = model_config(n, algorithm);
        c.exploration = exploration;
        c.epsilon = 0.3;
        c.temperature = 0.5;
        c
    };
    // Ties: actions 0, 1 and 3 share the best value.
    let tied = vec![1.0, 1.0, 0.5, 1.0, -2.0];
    let mut decaying = base(Exploration::EpsilonGreedy, Algorithm::QLearning);
    decaying.epsilon = 0.9;
    decaying.epsilon_decay = 0.8;
    decaying.min_epsilon = 0.05;
    let sc =
        |name, cfg: ModelConfig, row: &[f64], state, allowed: Option<&[usize]>, explore| Scenario {
            name,
            model: with_row(cfg, 1, row.to_vec()),
            state,
            allowed: allowed.map(<[usize]>::to_vec),
            explore,
            decay_every: 0,
        };
    let greedy = base(Exploration::EpsilonGreedy, Algorithm::QLearning);
    let softmax = base(Exploration::Softmax, Algorithm::QLearning);
    let double = base(Exploration::Softmax, Algorithm::DoubleQLearning);
    let double_row = [1.0, 0.0, 0.5, -0.5, 0.2, 0.0, 1.0, 0.5, 0.5, 0.1];
    vec![
        sc(
            "epsilon-greedy, ties, mask",
            greedy.clone(),
            &tied,
            1,
            Some(&[0, 2, 3, 4]),
            true,
        ),
        sc("explore off, ties", greedy.clone(), &tied, 1, None, false),
        sc(
            "softmax, mask",
            softmax,
            &tied,
            1,
            Some(&[1, 2, 3, 4]),
            true,
        ),
        sc("softmax, double Q", double, &double_row, 1, None, true),
        Scenario {
            decay_every: 1000,
            ..sc("decayed epsilon, ties", decaying, &tied, 1, None, true)
        },
        sc(
            "unseen state, mask",
            greedy,
            &tied,
            2,
            Some(&[0, 4, 2]),
            true,
        ),
    ]
}

#[test]
fn logged_probabilities_match_observed_frequencies() {
    let total = 100_000;
    let list = scenarios();
    let per = total / list.len() + 1;
    for mut sc in list {
        let mut log = log_with(|_| {});
        let n = sc.model.config().n_actions;
        let mut observed = vec![0u64; n];
        let mut expected = vec![0f64; n];
        for i in 0..per {
            if sc.decay_every > 0 && i % sc.decay_every == sc.decay_every - 1 {
                // An episode of another state ends: epsilon decays.
                sc.model
                    .update(&Experience::new(99, 0, 0.0, 99).done(true))
                    .unwrap();
            }
            let p = sc
                .model
                .action_probabilities(sc.state, sc.allowed.as_deref(), sc.explore)
                .unwrap();
            let sum: f64 = p.iter().sum();
            assert!((sum - 1.0).abs() < 1e-12, "{}: {p:?}", sc.name);
            let mut req = Decide::new(sc.state).explore(sc.explore);
            if let Some(a) = &sc.allowed {
                req = req.allowed(a);
            }
            let d = log.decide(&mut sc.model, &req, i as i64).unwrap();
            // The logged probability is the policy's, exactly.
            assert_eq!(d.probability, p[d.action], "{}", sc.name);
            observed[d.action] += 1;
            for (e, pa) in expected.iter_mut().zip(&p) {
                *e += pa;
            }
        }
        let mut chi2 = 0.0;
        let mut cells = 0;
        for a in 0..n {
            if expected[a] == 0.0 {
                assert_eq!(observed[a], 0, "{}: action {a} has probability 0", sc.name);
                continue;
            }
            cells += 1;
            chi2 += (observed[a] as f64 - expected[a]).powi(2) / expected[a];
        }
        let critical = chi2_critical_999(cells - 1);
        assert!(
            chi2 < critical,
            "{}: chi-square {chi2:.2} >= {critical} with {} degrees of freedom; observed {observed:?}, expected {expected:?}",
            sc.name,
            cells - 1
        );
        if sc.decay_every > 0 {
            assert!(
                sc.model.epsilon() < 0.1,
                "{}: epsilon did not decay",
                sc.name
            );
        }
    }
}

/// `expire_through` closes exactly the decisions up to a (deadline, id) in
/// closing order (deadline, then id bytewise), and its pieces in turn
/// close what one `expire` closes, transition for transition.
#[test]
fn expire_through_closes_up_to_a_decision_in_closing_order() {
    let config = |c: &mut DecisionsConfig| {
        c.reward_wait_seconds = 10;
        c.default_reward = Some(1.0);
    };
    let mut whole = log_with(config);
    // Two decisions at t = 0 (deadline 10,000) and two at t = 1,000 (11,000),
    // in one episode each pair, logged under ids out of order.
    for (id, ep, at) in [
        ("b", "e1", 0),
        ("a", "e2", 0),
        ("d", "e1", 1_000),
        ("c", "e2", 1_000),
    ] {
        let new = NewDecision {
            decision_id: Some(id),
            episode_id: Some(ep),
            state: State::Int(id.as_bytes()[0] as i64),
            allowed_actions: None,
            action: 0,
            probability: 1.0,
            baseline_action: None,
        };
        whole.record_decision(new, at).unwrap();
    }
    let mut parts = whole.clone();
    let open = |log: &DecisionLog| {
        let mut ids: Vec<String> = ["a", "b", "c", "d"]
            .iter()
            .filter(|id| {
                log.get(id)
                    .is_some_and(|d| d.status == DecisionStatus::Open)
            })
            .map(|id| id.to_string())
            .collect();
        ids.sort();
        ids
    };
    let mut learned = parts.expire_through(10_000, Some("a"));
    assert_eq!(open(&parts), ["b", "c", "d"], "through (10,000, a)");
    learned.extend(parts.expire_through(10_000, Some("a")));
    assert_eq!(open(&parts), ["b", "c", "d"], "again: nothing more");
    learned.extend(parts.expire_through(11_000, Some("c")));
    assert_eq!(open(&parts), ["d"], "through (11,000, c): b, then c");
    learned.extend(parts.expire_through(11_000, None));
    assert!(open(&parts).is_empty(), "the rest of 11,000");
    let all = whole.expire(20_000);
    assert_eq!(learned, all, "the pieces close what one expire closes");
    assert_eq!(all.len(), 2, "each episode's first step learned");
}
