//! Offline evaluation (`qlearn_core::evaluation`) against known truth:
//! interval coverage on Bernoulli arms over 500 seeds, IPS of the logged
//! policy is the plain mean, chunks merge into the one-pass result, a log
//! without exploration supports no other policy, and progressive replay of
//! a model's own configuration rebuilds its Q-table bit for bit.

use qlearn_core::decisions::{Decide, DecisionLog, DecisionsConfig, EpisodeEnd};
use qlearn_core::evaluation::{
    self, Direct, Estimator, EvalOptions, Insufficient, LoggedStep, OneStepAccumulator,
    OneStepReport, Outcome, RewardMeans, TargetPolicy,
};
use qlearn_core::rng::Rng;
use qlearn_core::{Algorithm, Model, ModelConfig, State};

const ARMS: [f64; 3] = [0.2, 0.5, 0.8];

fn bandit_config(seed: u64, epsilon: f64) -> ModelConfig {
    let mut c = ModelConfig::new(ARMS.len());
    c.seed = Some(seed);
    c.epsilon = epsilon;
    c.epsilon_decay = 1.0;
    c.min_epsilon = 0.0;
    c.learning_rate = 0.1;
    c
}

/// One logged decision of the bandit: `model` chooses (its probability is
/// the one `decide` logs), the arm pays 1 with its probability.
fn bandit_step(model: &mut Model, env: &mut Rng, id: usize, learn: bool) -> LoggedStep {
    let p = model.predict_full("s", true, None).unwrap();
    let reward = f64::from(u8::from(env.next_f64() < ARMS[p.action]));
    if learn {
        let exp = qlearn_core::Experience::new("s", p.action, reward, "s").done(true);
        model.update(&exp).unwrap();
    }
    LoggedStep {
        decision_id: format!("d{id}"),
        episode_id: None,
        step: 0,
        time_ms: id as i64,
        applied_seq: None,
        state: State::Str("s".into()),
        allowed_actions: None,
        action: p.action,
        probability: p.probability,
        reward: Some(reward),
        applied: true,
        baseline_action: Some(0),
        episode_end: None,
    }
}

fn estimate(report: &OneStepReport, e: Estimator) -> qlearn_core::evaluation::Estimate {
    match report.outcome(e) {
        Outcome::Estimate(x) => *x,
        other => panic!("{e:?}: {other:?}"),
    }
}

/// The 95 % interval of IPS, SNIPS and DR covers the greedy policy's true
/// value in 92–98 % of 500 seeds; the empirical-Bernstein bounds (IPS, DR)
/// in at least 95 %. Each seed: a model warmed up on 20 decisions is the
/// target (so it is not fitted to the evaluated log), then 600 decisions
/// are logged at epsilon 0.3 by the model as it goes on learning.
#[test]
fn bernoulli_arms_intervals_cover_the_greedy_value() {
    const SEEDS: u64 = 500;
    let opts = EvalOptions {
        reward_range: Some((0.0, 1.0)),
        ..EvalOptions::default()
    };
    let mut covered = [0u32; 3];
    let mut bounded = [0u32; 2];
    for seed in 0..SEEDS {
        let mut env = Rng::from_seed(1000 + seed);
        let mut model = Model::new(bandit_config(seed, 0.3)).unwrap();
        for i in 0..20 {
            bandit_step(&mut model, &mut env, i, true);
        }
        let target = model.clone();
        let steps: Vec<LoggedStep> = (0..600)
            .map(|i| bandit_step(&mut model, &mut env, 100 + i, true))
            .collect();
        let pi = target.action_probabilities("s", None, false).unwrap();
        let truth: f64 = pi.iter().zip(ARMS).map(|(p, m)| p * m).sum();
        let r = evaluation::evaluate_one_step(
            &steps,
            &TargetPolicy::Greedy(&target),
            &Direct::LogMeans,
            &EvalOptions {
                seed,
                ..opts.clone()
            },
        )
        .unwrap();
        for (i, e) in [Estimator::Ips, Estimator::Snips, Estimator::DoublyRobust]
            .into_iter()
            .enumerate()
        {
            covered[i] += u32::from(estimate(&r, e).ci.contains(truth));
        }
        for (i, e) in [Estimator::Ips, Estimator::DoublyRobust]
            .into_iter()
            .enumerate()
        {
            let b = estimate(&r, e).bound.expect("rewards are bounded");
            bounded[i] += u32::from(b.contains(truth));
        }
    }
    let share = |c: u32| f64::from(c) / SEEDS as f64;
    eprintln!("coverage IPS/SNIPS/DR {covered:?}, bounds IPS/DR {bounded:?} of {SEEDS}");
    for c in covered {
        assert!((0.92..=0.98).contains(&share(c)), "{covered:?} of {SEEDS}");
    }
    for b in bounded {
        assert!(share(b) >= 0.95, "{bounded:?} of {SEEDS}");
    }
}

/// IPS of the logged behaviour is the plain mean of the logged rewards,
/// bit for bit; so is IPS of a frozen model's exploring policy on its own
/// log, whose weights are exactly 1 because the target's probabilities
/// come from the function that logged the behaviour's.
#[test]
fn ips_of_the_logged_policy_is_the_plain_mean() {
    let mut model = Model::new(bandit_config(3, 0.4)).unwrap();
    let mut env = Rng::from_seed(4);
    for i in 0..50 {
        bandit_step(&mut model, &mut env, i, true);
    }
    let steps: Vec<LoggedStep> = (0..2000)
        .map(|i| bandit_step(&mut model, &mut env, 100 + i, false))
        .collect();
    let mean = steps.iter().filter_map(|s| s.reward).sum::<f64>() / steps.len() as f64;
    let opts = EvalOptions::default();
    for target in [TargetPolicy::Logged, TargetPolicy::Exploring(&model)] {
        let r = evaluation::evaluate_one_step(&steps, &target, &Direct::LogMeans, &opts).unwrap();
        assert_eq!(estimate(&r, Estimator::Ips).value.to_bits(), mean.to_bits());
        assert_eq!(
            estimate(&r, Estimator::Snips).value.to_bits(),
            mean.to_bits()
        );
        assert_eq!(r.diagnostics.max_weight, 1.0);
        assert_eq!(r.diagnostics.ess, steps.len() as f64);
        assert_eq!(r.diagnostics.logged_mean, mean);
    }
    // The greedy policy is another one: its weights are not all 1.
    let r = evaluation::evaluate_one_step(
        &steps,
        &TargetPolicy::Greedy(&model),
        &Direct::LogMeans,
        &opts,
    )
    .unwrap();
    assert!(r.diagnostics.max_weight > 1.0);
}

/// Chunks evaluated apart (in another order) and merged give the one-pass
/// result: the same counts and largest weight, values and intervals equal
/// to rounding (sums added in another order).
#[test]
fn merged_chunks_equal_one_pass() {
    let mut model = Model::new(bandit_config(9, 0.3)).unwrap();
    let mut env = Rng::from_seed(10);
    let mut steps: Vec<LoggedStep> = (0..3000)
        .map(|i| bandit_step(&mut model, &mut env, i, true))
        .collect();
    for (i, s) in steps.iter_mut().enumerate() {
        s.state = State::Int((i % 4) as i64);
    }
    let opts = EvalOptions {
        reward_range: Some((0.0, 1.0)),
        ..EvalOptions::default()
    };
    let target = TargetPolicy::Greedy(&model);
    let means = RewardMeans::fit(&steps, 3).unwrap();
    let direct = Direct::Means(&means);
    let mut one = OneStepAccumulator::new(&opts).unwrap();
    for s in &steps {
        one.add_step(s, &target, &direct).unwrap();
    }
    // Chunks of uneven size, each fed backwards, merged in reverse order;
    // the means fitted by chunk and merged too.
    let mut chunk_means = RewardMeans::new(3);
    let mut merged = OneStepAccumulator::new(&opts).unwrap();
    for chunk in [&steps[2000..], &steps[700..2000], &steps[..700]] {
        let mut m = RewardMeans::new(3);
        let mut acc = OneStepAccumulator::new(&opts).unwrap();
        for s in chunk.iter().rev() {
            m.add(s).unwrap();
            acc.add_step(s, &target, &direct).unwrap();
        }
        chunk_means.merge(&m).unwrap();
        merged.merge(&acc).unwrap();
    }
    for k in 0..4 {
        let s = State::Int(k);
        let (a, b) = (means.means(s.as_ref()), chunk_means.means(s.as_ref()));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-12, "{a:?} {b:?}");
        }
    }
    let (a, b) = (one.finish(&opts), merged.finish(&opts));
    assert_eq!(a.diagnostics.n, b.diagnostics.n);
    assert_eq!(a.diagnostics.max_weight, b.diagnostics.max_weight);
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(1.0);
    assert!(close(a.diagnostics.ess, b.diagnostics.ess));
    for e in [Estimator::Ips, Estimator::Snips, Estimator::DoublyRobust] {
        let (x, y) = (estimate(&a, e), estimate(&b, e));
        assert!(close(x.value, y.value), "{e:?} {x:?} {y:?}");
        assert!(
            close(x.ci.low, y.ci.low) && close(x.ci.high, y.ci.high),
            "{e:?} {x:?} {y:?}"
        );
        assert!(x.ci.low < x.value && x.value < x.ci.high, "{x:?}");
    }
    // Another seed draws other bootstrap weights: merging refuses to mix.
    let other = OneStepAccumulator::new(&EvalOptions {
        seed: 1,
        ..opts.clone()
    })
    .unwrap();
    assert!(merged.merge(&other).is_err());
}

/// A log written with exploration off supports no other policy: uniform
/// random, another model's exploring policy and a baseline action get
/// "insufficient support", not a number; the logged behaviour itself is
/// still evaluated.
#[test]
fn a_log_without_exploration_supports_no_other_policy() {
    let mut model = Model::new(bandit_config(5, 0.0)).unwrap();
    let mut log = DecisionLog::new(DecisionsConfig::default()).unwrap();
    let mut env = Rng::from_seed(6);
    for t in 0..300 {
        let d = log.decide(&mut model, &Decide::new("s"), t).unwrap();
        let reward = f64::from(u8::from(env.next_f64() < ARMS[d.action]));
        log.reward(&mut model, &d.decision_id, reward, None, true, t)
            .unwrap();
    }
    let mut steps = evaluation::steps_from_log(&log).unwrap();
    assert_eq!(steps.len(), 300);
    let explorer = Model::new(bandit_config(7, 0.3)).unwrap();
    let opts = EvalOptions::default();
    let insufficient = |steps: &[LoggedStep], t: TargetPolicy<'_>| {
        let r = evaluation::evaluate_one_step(steps, &t, &Direct::LogMeans, &opts).unwrap();
        for e in &r.results {
            assert!(
                matches!(
                    e.outcome,
                    Outcome::InsufficientSupport(Insufficient::LowCoverage { .. })
                ),
                "{t:?}: {r:?}"
            );
        }
    };
    insufficient(&steps, TargetPolicy::Uniform(3));
    insufficient(&steps, TargetPolicy::Exploring(&explorer));
    let greedy = model.action_probabilities("s", None, false).unwrap();
    let other_arm = greedy.iter().position(|&p| p == 0.0).unwrap();
    for s in &mut steps {
        s.baseline_action = Some(other_arm);
    }
    insufficient(&steps, TargetPolicy::Baseline);
    let r = evaluation::evaluate_one_step(&steps, &TargetPolicy::Logged, &Direct::LogMeans, &opts)
        .unwrap();
    assert!(r.outcome(Estimator::Ips).value().is_some());
}

/// Too few decisions carry the weight: insufficient support by effective
/// sample size, and an empty log has no data.
#[test]
fn low_effective_sample_size_and_no_data_are_not_numbers() {
    let mut model = Model::new(bandit_config(11, 0.3)).unwrap();
    let mut env = Rng::from_seed(12);
    let steps: Vec<LoggedStep> = (0..8)
        .map(|i| bandit_step(&mut model, &mut env, i, true))
        .collect();
    let opts = EvalOptions::default();
    let r = evaluation::evaluate_one_step(&steps, &TargetPolicy::Logged, &Direct::LogMeans, &opts)
        .unwrap();
    assert!(matches!(
        r.outcome(Estimator::Ips),
        Outcome::InsufficientSupport(Insufficient::LowEffectiveSampleSize { .. })
    ));
    let r = evaluation::evaluate_one_step(&[], &TargetPolicy::Logged, &Direct::LogMeans, &opts)
        .unwrap();
    assert_eq!(
        r.outcome(Estimator::Snips),
        &Outcome::InsufficientSupport(Insufficient::NoData)
    );
}

fn replay_config(algorithm: Algorithm) -> ModelConfig {
    let mut c = ModelConfig::new(4);
    c.algorithm = algorithm;
    c.learning_rate = 0.3;
    c.discount_factor = 0.9;
    c.epsilon = 0.3;
    c.epsilon_decay = 0.99;
    c.seed = Some(21);
    c
}

/// A model taught only through decisions (episodes with delayed rewards,
/// some truncated, and one-step decisions learned between their steps),
/// replayed from an empty model of its own configuration over its whole
/// log, ends with its live Q-table bit for bit: every decision is in the
/// log and `applied_seq` records the order the transitions were applied
/// (ordered by time instead, the replay ends elsewhere). A replay with
/// another learning rate ends elsewhere too.
#[test]
fn replaying_the_own_configuration_rebuilds_the_q_table() {
    for algorithm in [
        Algorithm::QLearning,
        Algorithm::Sarsa,
        Algorithm::ExpectedSarsa,
    ] {
        let mut model = Model::new(replay_config(algorithm)).unwrap();
        let mut log = DecisionLog::new(DecisionsConfig::default()).unwrap();
        let mut env = Rng::from_seed(22);
        let mut t = 0i64;
        for e in 0..120u64 {
            let ep = format!("e{e}");
            let len = 1 + env.below(6) as i64;
            let mut pending: Option<(String, f64)> = None;
            for k in 0..len {
                t += 1;
                let s = (e as i64 * 3 + k * 5) % 9;
                let d = log
                    .decide(&mut model, &Decide::new(s).episode(&ep), t)
                    .unwrap();
                // The previous step's reward arrives after this decision.
                if let Some((id, r)) = pending.take() {
                    t += 1;
                    log.reward(&mut model, &id, r, None, true, t).unwrap();
                }
                pending = Some((d.decision_id, (s as f64 - d.action as f64).cos()));
                // A one-step decision, learned at once: before the episode's
                // step logged earlier (applied order is not time order).
                t += 1;
                let d = log.decide(&mut model, &Decide::new("lobby"), t).unwrap();
                let r = d.action as f64 * 0.25;
                log.reward(&mut model, &d.decision_id, r, None, true, t)
                    .unwrap();
            }
            if let Some((id, r)) = pending {
                t += 1;
                log.reward(&mut model, &id, r, None, true, t).unwrap();
            }
            let end = if e % 4 == 3 && algorithm != Algorithm::Sarsa {
                EpisodeEnd::truncated(State::Int(100 + e as i64 % 3))
            } else {
                EpisodeEnd::terminated()
            };
            log.end_episode(&mut model, &ep, end).unwrap();
            // A one-step decision between episodes.
            t += 1;
            let d = log.decide(&mut model, &Decide::new("lobby"), t).unwrap();
            log.reward(
                &mut model,
                &d.decision_id,
                d.action as f64 * 0.25,
                None,
                true,
                t,
            )
            .unwrap();
        }
        let steps = evaluation::steps_from_log(&log).unwrap();
        let fresh = Model::new(replay_config(algorithm)).unwrap();
        let opts = EvalOptions::default();
        let out = evaluation::replay(&steps, fresh, true, &opts).unwrap();
        assert_eq!(out.learned, model.stats().updates, "{algorithm:?}");
        let keys = |m: &Model| m.table().keys().map(|k| k.to_state()).collect::<Vec<_>>();
        let bits = |m: &Model| {
            m.table()
                .values()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&out.model), keys(&model), "{algorithm:?}");
        assert_eq!(bits(&out.model), bits(&model), "{algorithm:?}");
        assert_eq!(out.model.epsilon().to_bits(), model.epsilon().to_bits());
        assert!(out.report.outcome(Estimator::Ips).value().is_some());

        // Without the recorded order, (time, step) is not the order the
        // model learned in.
        let mut unordered = steps.clone();
        unordered.iter_mut().for_each(|s| s.applied_seq = None);
        let fresh = Model::new(replay_config(algorithm)).unwrap();
        let out = evaluation::replay(&unordered, fresh, true, &opts).unwrap();
        assert_ne!(
            (keys(&out.model), bits(&out.model)),
            (keys(&model), bits(&model)),
            "{algorithm:?}"
        );

        let mut other = replay_config(algorithm);
        other.learning_rate = 0.1;
        let out = evaluation::replay(&steps, Model::new(other).unwrap(), true, &opts).unwrap();
        assert_ne!(bits(&out.model), bits(&model), "{algorithm:?}");
    }
}
