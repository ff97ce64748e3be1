//! The learning rules: Q-learning, SARSA, expected SARSA and double
//! Q-learning, as one update of one Q-value on canonical keys.

use crate::config::{Algorithm, Exploration, ModelConfig};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::state::StateRef;
use crate::table::QRows;

use super::select::{argmax_random, candidates, max_row};
use super::Experience;

/// The learning rule proper, on canonical keys: computes the target from
/// `next`, then moves Q(`key`, action) towards it. Returns the new (shown)
/// Q-value, the TD error and whether `key`'s row was inserted.
#[inline]
pub(super) fn apply_rule<T: QRows + ?Sized>(
    cfg: &ModelConfig,
    rng: &mut Rng,
    epsilon: f64,
    table: &mut T,
    key: StateRef<'_>,
    next: StateRef<'_>,
    exp: &Experience<'_>,
) -> Result<(f64, f64, bool)> {
    let n = cfg.n_actions;
    let init = cfg.initial_q;
    let double = cfg.algorithm == Algorithm::DoubleQLearning;
    // Double Q-learning draws from the generator; a failed update restores it.
    let saved_rng = double.then(|| rng.clone());
    // Which table double Q-learning updates this time (0 = A, 1 = B).
    let side = if double { rng.below(2) } else { 0 };
    let bootstrap = if exp.done {
        0.0
    } else {
        match (table.row(next), cfg.algorithm) {
            (None, _) => init,
            (Some(r), Algorithm::QLearning) => max_over(r, exp.next_allowed_actions, n),
            (Some(r), _) => other_bootstrap(cfg, rng, epsilon, r, side, exp),
        }
    };
    let target = exp.reward + cfg.discount_factor * bootstrap;
    let (row, inserted) = table.row_or_insert(key, init);
    let i = side * n + exp.action;
    let old = row[i];
    let td = target - old;
    let new = old + cfg.learning_rate * td;
    if !new.is_finite() {
        // Only reachable with imported Q-values near f64::MAX; an inserted row
        // starts at the bounded `initial_q`, so nothing was inserted here.
        if let Some(saved) = saved_rng {
            *rng = saved;
        }
        return Err(non_finite_error());
    }
    row[i] = new;
    let shown = if double {
        (row[exp.action] + row[n + exp.action]) / 2.0
    } else {
        new
    };
    Ok((shown, td, inserted))
}

/// The error of an update whose new Q-value would not be finite (only
/// reachable with imported Q-values near `f64::MAX`).
#[cold]
#[inline(never)]
fn non_finite_error() -> Error {
    Error::field("reward", "the update would make a Q-value non-finite")
}

/// The bootstrap value of SARSA, expected SARSA and double Q-learning from
/// the next state's row `r` (Q-learning's is inline in [`apply_rule`]).
#[inline(never)]
fn other_bootstrap(
    cfg: &ModelConfig,
    rng: &mut Rng,
    epsilon: f64,
    r: &[f64],
    side: usize,
    exp: &Experience<'_>,
) -> f64 {
    let n = cfg.n_actions;
    let allowed = exp.next_allowed_actions;
    match cfg.algorithm {
        Algorithm::QLearning => max_over(r, allowed, n),
        Algorithm::Sarsa => exp.next_action.map_or(cfg.initial_q, |a| r[a]),
        Algorithm::ExpectedSarsa => expected_value(cfg, epsilon, r, allowed),
        Algorithm::DoubleQLearning => {
            let (own, other) = if side == 0 { (0, n) } else { (n, 0) };
            let (a_star, _) = argmax_random(rng, allowed, n, |a| r[own + a]);
            r[other + a_star]
        }
    }
}

/// The largest of `r[a]` over the allowed actions.
#[inline]
fn max_over(r: &[f64], allowed: Option<&[usize]>, n: usize) -> f64 {
    match allowed {
        None => max_row(&r[..n]),
        Some(a) => a.iter().map(|&i| r[i]).fold(f64::NEG_INFINITY, f64::max),
    }
}

/// `Σ π(a'|s') Q(s', a')` under the current exploration policy, restricted to
/// `allowed`.
fn expected_value(cfg: &ModelConfig, epsilon: f64, r: &[f64], allowed: Option<&[usize]>) -> f64 {
    let n = cfg.n_actions;
    let count = allowed.map_or(n, <[usize]>::len) as f64;
    let max = candidates(allowed, n)
        .map(|a| r[a])
        .fold(f64::NEG_INFINITY, f64::max);
    match cfg.exploration {
        Exploration::EpsilonGreedy => {
            // Greedy actions share 1 − ε (all of them are worth `max`); every
            // allowed action gets ε / count.
            let sum: f64 = candidates(allowed, n).map(|a| r[a]).sum();
            (1.0 - epsilon) * max + epsilon * sum / count
        }
        Exploration::Softmax => {
            let t = cfg.temperature;
            let (z, s) = candidates(allowed, n).fold((0.0, 0.0), |(z, s), a| {
                let w = ((r[a] - max) / t).exp();
                (z + w, s + w * r[a])
            });
            s / z
        }
    }
}
