//! Episode estimators (`qlearn_core::evaluation`) against the exact value
//! of a policy on slippery FrozenLake 4x4, computed by dynamic programming;
//! and the episode accumulator merging chunks into the one-pass result.

use qlearn_core::evaluation::{
    self, EpisodeAccumulator, Estimator, EvalOptions, LoggedStep, Outcome, TargetPolicy,
};
use qlearn_core::rng::Rng;
use qlearn_core::{Experience, Model, ModelConfig, State};

/// S F F F / F H F H / F F F H / H F F G; actions left, down, right, up;
/// the agent moves as asked with probability 1/3 and to either side with
/// 1/3 each; reward 1 on reaching G; holes and G end the episode.
const MAP: &[u8; 16] = b"SFFFFHFHFFFHHFFG";
const HORIZON: usize = 100;
const GAMMA: f64 = 0.95;

fn moved(s: usize, dir: usize) -> usize {
    let (r, c) = (s / 4, s % 4);
    match dir {
        0 => r * 4 + c.saturating_sub(1),
        1 => (r + 1).min(3) * 4 + c,
        2 => r * 4 + (c + 1).min(3),
        _ => r.saturating_sub(1) * 4 + c,
    }
}

fn terminal(s: usize) -> bool {
    matches!(MAP[s], b'H' | b'G')
}

/// The three outcomes of action `a` in `s`, each with probability 1/3.
fn outcomes(s: usize, a: usize) -> [usize; 3] {
    [moved(s, (a + 3) % 4), moved(s, a), moved(s, (a + 1) % 4)]
}

fn reward(s: usize) -> f64 {
    f64::from(u8::from(MAP[s] == b'G'))
}

/// The exact discounted value from the start of the policy `pi` (per
/// state, the probability of each action) over `HORIZON` steps.
fn exact_value(pi: &[Vec<f64>]) -> f64 {
    let mut v = [0.0f64; 16];
    for _ in 0..HORIZON {
        let mut next = [0.0f64; 16];
        for s in (0..16).filter(|&s| !terminal(s)) {
            next[s] = (0..4)
                .map(|a| {
                    let q: f64 = outcomes(s, a)
                        .iter()
                        .map(|&t| reward(t) + if terminal(t) { 0.0 } else { GAMMA * v[t] })
                        .sum::<f64>()
                        / 3.0;
                    pi[s][a] * q
                })
                .sum();
        }
        v = next;
    }
    v[0]
}

/// Runs one episode with `model` choosing (exploring), returns its steps.
fn log_episode(model: &mut Model, env: &mut Rng, e: usize) -> Vec<LoggedStep> {
    let mut s = 0usize;
    let mut out = Vec::new();
    for k in 0..HORIZON {
        let p = model.predict_full(s as i64, true, None).unwrap();
        let t = outcomes(s, p.action)[env.below(3)];
        out.push(LoggedStep {
            decision_id: format!("e{e}s{k}"),
            episode_id: Some(format!("e{e}")),
            step: k as u64,
            time_ms: (e * HORIZON + k) as i64,
            applied_seq: None,
            state: State::Int(s as i64),
            allowed_actions: None,
            action: p.action,
            probability: p.probability,
            reward: Some(reward(t)),
            applied: true,
            baseline_action: None,
            episode_end: None,
        });
        if terminal(t) {
            break;
        }
        s = t;
    }
    out
}

/// A model trained by Q-learning (plain `update`), its greedy policy the
/// target; the same model, exploring at epsilon 0.05, logs.
fn trained() -> Model {
    static MODEL: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
    MODEL.get_or_init(train).clone()
}

fn train() -> Model {
    let mut c = ModelConfig::new(4);
    c.seed = Some(1);
    c.discount_factor = GAMMA;
    c.learning_rate = 0.1;
    c.epsilon = 1.0;
    c.epsilon_decay = 0.998;
    c.min_epsilon = 0.05;
    let mut m = Model::new(c).unwrap();
    let mut env = Rng::from_seed(2);
    for _ in 0..4000 {
        let mut s = 0usize;
        for _ in 0..HORIZON {
            let a = m.predict(s as i64, true, None).unwrap().action;
            let t = outcomes(s, a)[env.below(3)];
            let exp = Experience::new(s as i64, a, reward(t), t as i64).done(terminal(t));
            m.update(&exp).unwrap();
            if terminal(t) {
                break;
            }
            s = t;
        }
    }
    m
}

/// The interval of each episode estimator covers the greedy policy's exact
/// value in at least 90 % of 60 seeds (400 logged episodes each).
#[test]
fn frozen_lake_intervals_cover_the_exact_greedy_value() {
    const SEEDS: u64 = 60;
    let target = trained();
    let pi: Vec<Vec<f64>> = (0..16)
        .map(|s| target.action_probabilities(s as i64, None, false).unwrap())
        .collect();
    let truth = exact_value(&pi);
    assert!(truth > 0.1, "the trained policy reaches the goal: {truth}");
    let mut behaviour = target.clone();
    behaviour.set_epsilon(0.05).unwrap();
    let mut covered = [0u32; 2];
    let mut values = [0.0f64; 2];
    for seed in 0..SEEDS {
        let mut env = Rng::from_seed(100 + seed);
        let mut logger = behaviour.clone();
        let steps: Vec<LoggedStep> = (0..400)
            .flat_map(|e| log_episode(&mut logger, &mut env, e))
            .collect();
        let opts = EvalOptions {
            discount: GAMMA,
            replicates: 100,
            seed,
            ..EvalOptions::default()
        };
        let r = evaluation::evaluate_episodes(
            &steps,
            &TargetPolicy::Greedy(&target),
            Some(&target),
            &opts,
        )
        .unwrap();
        assert_eq!(r.skipped_episodes, 0);
        for (i, e) in [Estimator::PerDecisionWis, Estimator::PerDecisionDr]
            .into_iter()
            .enumerate()
        {
            let Some(est) = r.results.iter().find(|x| x.estimator == e) else {
                panic!("{e:?} missing");
            };
            let Outcome::Estimate(est) = est.outcome else {
                panic!("{e:?}: {:?} {:?}", est.outcome, r.diagnostics);
            };
            covered[i] += u32::from(est.ci.contains(truth));
            values[i] += est.value / SEEDS as f64;
        }
    }
    eprintln!("truth {truth:.4}, mean estimates WIS/DR {values:?}, covered {covered:?} of {SEEDS}");
    for c in covered {
        assert!(f64::from(c) >= 0.9 * SEEDS as f64, "{covered:?} of {SEEDS}");
    }
}

/// Episodes split into chunks (in another order) and merged give the
/// one-pass estimates to rounding; an episode with a step whose reward is
/// unknown is left out.
#[test]
fn episode_chunks_merge_into_the_one_pass_result() {
    let target = trained();
    let mut logger = target.clone();
    logger.set_epsilon(0.05).unwrap();
    let mut env = Rng::from_seed(7);
    let steps: Vec<LoggedStep> = (0..300)
        .flat_map(|e| log_episode(&mut logger, &mut env, e))
        .collect();
    let opts = EvalOptions {
        discount: GAMMA,
        ..EvalOptions::default()
    };
    let (episodes, skipped) = evaluation::group_episodes(&steps);
    assert_eq!((episodes.len(), skipped), (300, 0));
    let policy = TargetPolicy::Greedy(&target);
    let mut one = EpisodeAccumulator::new(&opts).unwrap();
    for ep in &episodes {
        one.add_episode(ep, &policy, Some(&target)).unwrap();
    }
    let mut merged = EpisodeAccumulator::new(&opts).unwrap();
    for chunk in [&episodes[200..], &episodes[..50], &episodes[50..200]] {
        let mut acc = EpisodeAccumulator::new(&opts).unwrap();
        for ep in chunk.iter().rev() {
            acc.add_episode(ep, &policy, Some(&target)).unwrap();
        }
        merged.merge(&acc).unwrap();
    }
    let (a, b) = (one.finish(&opts, 0), merged.finish(&opts, 0));
    assert_eq!(a.diagnostics.n, b.diagnostics.n);
    for (x, y) in a.results.iter().zip(&b.results) {
        let (Outcome::Estimate(x), Outcome::Estimate(y)) = (&x.outcome, &y.outcome) else {
            panic!("{a:?}");
        };
        let close = |p: f64, q: f64| (p - q).abs() <= 1e-9;
        assert!(
            close(x.value, y.value) && close(x.ci.low, y.ci.low),
            "{x:?} {y:?}"
        );
        assert!(close(x.ci.high, y.ci.high), "{x:?} {y:?}");
    }
    // An episode with a step whose reward is unknown is left out.
    let mut partial = steps.clone();
    partial[3].reward = None;
    partial[3].applied = false;
    assert_eq!(evaluation::group_episodes(&partial).1, 1);
}

/// Two two-step episodes whose every weight is computed by hand: the
/// per-decision weights are cumulative products `ρ_t = Π_{k≤t} π/μ`, so a
/// slip in that product (a `/` for a `*`, a weight not carried to the next
/// step) changes the answers.
#[test]
fn per_decision_estimates_by_hand() {
    let step = |ep: &str, k: u64, action: usize, mu: f64, r: f64| LoggedStep {
        decision_id: format!("{ep}{k}"),
        episode_id: Some(ep.to_string()),
        step: k,
        time_ms: k as i64,
        applied_seq: None,
        state: State::Int(k as i64),
        allowed_actions: None,
        action,
        probability: mu,
        reward: Some(r),
        applied: true,
        baseline_action: None,
        episode_end: None,
    };
    // Uniform over 2 actions: π = 1/2 for every logged action.
    // A: ρ0 = 0.5/0.25 = 2, ρ1 = 2 · 0.5/0.5 = 2; rewards 1, 2.
    // B: ρ0 = 0.5/0.5 = 1, ρ1 = 1 · 0.5/1.0 = 0.5; rewards 0, 4.
    let steps = vec![
        step("a", 0, 0, 0.25, 1.0),
        step("a", 1, 1, 0.5, 2.0),
        step("b", 0, 1, 0.5, 0.0),
        step("b", 1, 0, 1.0, 4.0),
    ];
    let opts = EvalOptions {
        min_ess: 0.0,
        min_coverage: 0.0,
        ..EvalOptions::default()
    };
    let report =
        evaluation::evaluate_episodes(&steps, &TargetPolicy::Uniform(2), None, &opts).unwrap();
    let value = |e: Estimator| {
        let r = report.results.iter().find(|r| r.estimator == e).unwrap();
        r.outcome.value().unwrap()
    };
    let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
    // WIS: Σ_t Σ_i ρ_it r_it / Σ_i ρ_it = (2·1 + 1·0)/3 + (2·2 + 0.5·4)/2.5.
    let wis = 2.0 / 3.0 + 6.0 / 2.5;
    assert!(close(value(Estimator::PerDecisionWis), wis), "{report:?}");
    // DR without a value model is per-decision IS: mean of (2·1 + 2·2, 1·0 + 0.5·4).
    assert!(close(value(Estimator::PerDecisionDr), 4.0), "{report:?}");
    let d = report.diagnostics;
    assert_eq!(d.n, 2);
    assert!(close(d.max_weight, 2.0), "{d:?}");
    // ESS of the whole-episode weights 2 and 0.5.
    assert!(close(d.ess, 2.5 * 2.5 / 4.25), "{d:?}");
    assert!(close(d.logged_mean, 3.5), "{d:?}");
}
