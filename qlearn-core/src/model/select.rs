//! Action selection: masks, the greedy choice with uniformly random
//! tie-breaking, epsilon-greedy and softmax exploration, and the row maxima
//! the learning rules bootstrap from. Each SIMD routine sits next to its
//! scalar twin, and a test checks that they agree.

use crate::config::{Exploration, ModelConfig};
use crate::error::{Error, Result};
use crate::rng::Rng;

use super::Decision;

/// The actions a choice ranges over: all of `0..n`, or the allowed ones.
pub(super) enum Candidates<'a> {
    All(std::ops::Range<usize>),
    Some(std::iter::Copied<std::slice::Iter<'a, usize>>),
}

impl Iterator for Candidates<'_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        match self {
            Candidates::All(r) => r.next(),
            Candidates::Some(i) => i.next(),
        }
    }
}

#[inline]
pub(super) fn candidates(allowed: Option<&[usize]>, n: usize) -> Candidates<'_> {
    match allowed {
        Some(a) => Candidates::Some(a.iter().copied()),
        None => Candidates::All(0..n),
    }
}

#[inline(always)]
pub(super) fn check_mask(allowed: Option<&[usize]>, n: usize, field: &str) -> Result<()> {
    match allowed {
        None => Ok(()),
        Some(a) => check_mask_list(a, n, field),
    }
}

fn check_mask_list(a: &[usize], n: usize, field: &str) -> Result<()> {
    if a.is_empty() {
        return Err(Error::action(field, format!("{field} must not be empty")));
    }
    let mut seen = [0u64; crate::limits::MAX_ACTIONS / 64];
    for &x in a {
        if x >= n {
            return Err(Error::action(
                field,
                format!("{field} contains {x}, outside 0..{n}"),
            ));
        }
        let (w, b) = (x / 64, 1u64 << (x % 64));
        if seen[w] & b != 0 {
            return Err(Error::action(
                field,
                format!("{field} lists action {x} twice"),
            ));
        }
        seen[w] |= b;
    }
    Ok(())
}

/// Picks uniformly among the best allowed actions by `value` and returns it
/// with the best value. One pass finds the best value and how many actions
/// share it; only a tie costs a random draw (one, whatever the number of
/// tied actions) and a second pass to find the drawn one.
#[inline(always)]
pub(super) fn argmax_random(
    rng: &mut Rng,
    allowed: Option<&[usize]>,
    n: usize,
    value: impl Fn(usize) -> f64,
) -> (usize, f64) {
    match allowed {
        None => argmax_in(rng, 0..n, value),
        Some(a) => argmax_in(rng, a.iter().copied(), value),
    }
}

/// [`argmax_random`] over all of a (non-empty) row: the common case, with
/// no index arithmetic or bounds checks in the loops, and no branch on the
/// values (Q-values compare in no predictable order, and a mispredicted
/// branch per action cost more than the whole loop). Only a tie costs a
/// branch, a random draw and a second pass. Q-values are finite, so this
/// picks exactly what a left-to-right `>` / `==` scan would.
#[inline(always)]
pub(super) fn argmax_slice(rng: &mut Rng, q: &[f64]) -> (usize, f64) {
    // Common widths get a copy with the length known, fully unrolled (the
    // generic loops spend more on their set-up than on four actions).
    if let Ok(q) = <&[f64; 4]>::try_from(q) {
        return argmax_fixed(rng, q);
    }
    match q.len() {
        2 => argmax_known::<2>(rng, q),
        3 => argmax_known::<3>(rng, q),
        8 => argmax_known::<8>(rng, q),
        _ => argmax_any(rng, q),
    }
}

/// [`argmax_fixed`] on a slice of exactly `N` values.
#[inline(always)]
fn argmax_known<const N: usize>(rng: &mut Rng, q: &[f64]) -> (usize, f64) {
    match <&[f64; N]>::try_from(q) {
        Ok(q) => argmax_fixed(rng, q),
        Err(_) => argmax_any(rng, q),
    }
}

/// [`argmax_slice`] on a row of `N` (at most 64) values: the best value,
/// then one bit per action equal to it; the first set bit is the choice
/// unless two are set (a tie: drawn as in [`argmax_any`]).
#[inline(always)]
pub(super) fn argmax_fixed<const N: usize>(rng: &mut Rng, q: &[f64; N]) -> (usize, f64) {
    let (best, ties) = best_and_ties(q);
    if ties & ties.wrapping_sub(1) != 0 {
        return (
            nth_best(q, best, rng.below(ties.count_ones() as usize)),
            best,
        );
    }
    (ties.trailing_zeros() as usize, best)
}

/// The largest of `N` values, and which of them equal it (bit `a` for
/// action `a`).
#[inline(always)]
fn best_and_ties<const N: usize>(q: &[f64; N]) -> (f64, u64) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if let Ok(q) = <&[f64; 4]>::try_from(&q[..]) {
        return best_and_ties4(q);
    }
    best_and_ties_scalar(q)
}

/// [`best_and_ties`] without SIMD (other widths and targets; a test checks
/// that both agree on four values).
#[inline(always)]
fn best_and_ties_scalar<const N: usize>(q: &[f64; N]) -> (f64, u64) {
    let mut best = f64::NEG_INFINITY;
    for &v in q {
        best = if v > best { v } else { best };
    }
    let mut ties = 0u64;
    for (a, &v) in q.iter().enumerate() {
        ties |= ((v == best) as u64) << a;
    }
    (best, ties)
}

/// [`best_and_ties`] for four values with SSE2 (every x86-64): two pairs
/// compared at once, nine instructions instead of about twenty-five.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn best_and_ties4(q: &[f64; 4]) -> (f64, u64) {
    use std::arch::x86_64::{
        _mm_cmpeq_pd, _mm_cvtsd_f64, _mm_max_pd, _mm_max_sd, _mm_movemask_pd, _mm_set_pd,
        _mm_unpackhi_pd, _mm_unpacklo_pd,
    };
    // SAFETY: these intrinsics only need SSE2, which this code is compiled
    // with (the cfg above); they touch no memory.
    unsafe {
        let lo = _mm_set_pd(q[1], q[0]);
        let hi = _mm_set_pd(q[3], q[2]);
        let pair = _mm_max_pd(lo, hi);
        let best = _mm_max_sd(pair, _mm_unpackhi_pd(pair, pair));
        let both = _mm_unpacklo_pd(best, best);
        let ties =
            _mm_movemask_pd(_mm_cmpeq_pd(lo, both)) | _mm_movemask_pd(_mm_cmpeq_pd(hi, both)) << 2;
        (_mm_cvtsd_f64(best), ties as u64)
    }
}

/// The largest of `N` values.
#[inline(always)]
pub(super) fn max_fixed<const N: usize>(q: &[f64; N]) -> f64 {
    best_and_ties(q).0
}

/// [`argmax_slice`] for any length.
#[inline(always)]
fn argmax_any(rng: &mut Rng, q: &[f64]) -> (usize, f64) {
    let mut best = f64::NEG_INFINITY;
    for &v in q {
        best = if v > best { v } else { best };
    }
    let mut ties = 0usize;
    let mut first = 0usize;
    for (a, &v) in q.iter().enumerate().rev() {
        let eq = v == best;
        ties += eq as usize;
        first = if eq { a } else { first };
    }
    if ties > 1 {
        return (nth_best(q, best, rng.below(ties)), best);
    }
    (first, best)
}

/// The index of the `k`-th (from 0) entry of `q` equal to `best`, without
/// branching on the values.
#[inline(never)]
fn nth_best(q: &[f64], best: f64, k: usize) -> usize {
    let mut seen = 0usize;
    let mut chosen = 0usize;
    for (a, &v) in q.iter().enumerate() {
        let eq = v == best;
        chosen = if eq & (seen == k) { a } else { chosen };
        seen += eq as usize;
    }
    chosen
}

/// [`argmax_random`] over a non-empty list of candidates.
#[inline(always)]
fn argmax_in(
    rng: &mut Rng,
    cands: impl Iterator<Item = usize> + Clone,
    value: impl Fn(usize) -> f64,
) -> (usize, f64) {
    let mut best = f64::NEG_INFINITY;
    let mut best_a = 0;
    let mut ties = 0usize;
    for a in cands.clone() {
        let v = value(a);
        if v > best {
            best = v;
            best_a = a;
            ties = 1;
        } else if v == best {
            ties += 1;
        }
    }
    if ties > 1 {
        let mut k = rng.below(ties);
        for a in cands {
            if value(a) == best {
                if k == 0 {
                    return (a, best);
                }
                k -= 1;
            }
        }
    }
    (best_a, best)
}

/// The largest value of a (non-empty) row; common widths unrolled (see
/// [`argmax_slice`]).
#[inline(always)]
pub(super) fn max_row(r: &[f64]) -> f64 {
    if let Ok(r) = <&[f64; 4]>::try_from(r) {
        return max_fixed(r);
    }
    match r.len() {
        2 => max_known::<2>(r),
        3 => max_known::<3>(r),
        8 => max_known::<8>(r),
        _ => max_any(r),
    }
}

/// [`max_fixed`] on a slice of exactly `N` values.
#[inline(always)]
fn max_known<const N: usize>(r: &[f64]) -> f64 {
    match <&[f64; N]>::try_from(r) {
        Ok(r) => max_fixed(r),
        Err(_) => max_any(r),
    }
}

/// [`max_row`] for any length.
#[inline(always)]
fn max_any(r: &[f64]) -> f64 {
    let mut m = r[0];
    for &v in &r[1..] {
        m = if v > m { v } else { m };
    }
    m
}

/// Action selection over one row (`None`: an unseen state). With `LOG` the
/// second value is the probability with which the behaviour policy chose
/// that action (see [`action_probabilities`]), computed here, from the
/// quantities that made the choice, so the two cannot disagree; without
/// `LOG` it is NaN and costs nothing (the short paths never ask).
#[inline]
pub(super) fn choose<const LOG: bool>(
    cfg: &ModelConfig,
    rng: &mut Rng,
    epsilon: f64,
    row: Option<&[f64]>,
    explore: bool,
    allowed: Option<&[usize]>,
) -> (Decision, f64) {
    let n = cfg.n_actions;
    let Some(row) = row else {
        let d = choose_unseen(rng, n, allowed, epsilon);
        // Every action ties at `initial_q`: uniform over the candidates.
        return (
            d,
            if LOG {
                1.0 / count(allowed, n)
            } else {
                f64::NAN
            },
        );
    };
    let double = row.len() == 2 * n;
    if explore {
        match cfg.exploration {
            Exploration::EpsilonGreedy => {
                if epsilon > 0.0 && rng.next_f64() < epsilon {
                    let d = choose_at_random(rng, row, n, allowed, epsilon);
                    let p = if LOG {
                        GreedySet::of(row, n, allowed).probability(row, n, d.action, epsilon)
                    } else {
                        f64::NAN
                    };
                    return (d, p);
                }
            }
            Exploration::Softmax => return choose_softmax(cfg, rng, row, allowed, epsilon),
        }
    }
    let action = match (double, allowed) {
        (false, None) => argmax_slice(rng, &row[..n]).0,
        _ => argmax_random(rng, allowed, n, |a| shown_value(row, n, a)).0,
    };
    // Here exploration is epsilon-greedy (softmax returned above) or off.
    let p = if LOG {
        let eps = if explore { epsilon } else { 0.0 };
        GreedySet::of(row, n, allowed).probability(row, n, action, eps)
    } else {
        f64::NAN
    };
    let d = Decision {
        action,
        explored: false,
        epsilon,
    };
    (d, p)
}

/// The probability of each action (0 outside `allowed`) under the behaviour
/// policy: epsilon-greedy `(1 − ε)·[a ∈ G]/|G| + ε/|A|` with `G` the greedy
/// (tied) actions among the allowed ones `A` (ε = 0 when `explore` is off),
/// softmax `exp((Q(a) − max Q)/T) / Σ exp(...)` over `A` when exploring, and
/// `1/|A|` for an unseen state (every action ties at `initial_q`). Double
/// Q-learning ranks by `Q_A + Q_B`, as [`choose`] does.
pub(super) fn action_probabilities(
    cfg: &ModelConfig,
    epsilon: f64,
    row: Option<&[f64]>,
    explore: bool,
    allowed: Option<&[usize]>,
) -> Vec<f64> {
    let n = cfg.n_actions;
    let mut p = vec![0.0; n];
    match row {
        None => {
            let u = 1.0 / count(allowed, n);
            for a in candidates(allowed, n) {
                p[a] = u;
            }
        }
        Some(row) if explore && cfg.exploration == Exploration::Softmax => {
            let b = Boltzmann::of(cfg, row, allowed);
            for a in candidates(allowed, n) {
                p[a] = b.weight(shown_value(row, n, a)) / b.total;
            }
        }
        Some(row) => {
            let eps = if explore { epsilon } else { 0.0 };
            let g = GreedySet::of(row, n, allowed);
            for a in candidates(allowed, n) {
                p[a] = g.probability(row, n, a, eps);
            }
        }
    }
    p
}

/// The number of candidate actions, as a float.
#[inline]
fn count(allowed: Option<&[usize]>, n: usize) -> f64 {
    allowed.map_or(n, <[usize]>::len) as f64
}

/// The greedy actions of a row among the candidates: their value and how
/// many there are, and how many candidates there are.
struct GreedySet {
    best: f64,
    ties: usize,
    count: f64,
}

impl GreedySet {
    fn of(row: &[f64], n: usize, allowed: Option<&[usize]>) -> Self {
        let best = candidates(allowed, n)
            .map(|a| shown_value(row, n, a))
            .fold(f64::NEG_INFINITY, f64::max);
        let ties = candidates(allowed, n)
            .filter(|&a| shown_value(row, n, a) == best)
            .count();
        GreedySet {
            best,
            ties,
            count: count(allowed, n),
        }
    }

    /// Epsilon-greedy's probability of candidate `a`:
    /// `(1 − ε)·[a ∈ G]/|G| + ε/|A|`.
    fn probability(&self, row: &[f64], n: usize, a: usize, epsilon: f64) -> f64 {
        let greedy = if shown_value(row, n, a) == self.best {
            (1.0 - epsilon) / self.ties as f64
        } else {
            0.0
        };
        greedy + epsilon / self.count
    }
}

/// Softmax over the candidates of a row, numerically stable: weights
/// `exp((v − max) / T)` (at most 1, the largest exactly 1) and their total.
/// Double Q-learning ranks by `Q_A + Q_B` with the temperature doubled,
/// which is softmax over their mean.
struct Boltzmann {
    max: f64,
    t: f64,
    total: f64,
}

impl Boltzmann {
    fn of(cfg: &ModelConfig, row: &[f64], allowed: Option<&[usize]>) -> Self {
        let n = cfg.n_actions;
        let scale = if row.len() == 2 * n { 2.0 } else { 1.0 };
        let t = cfg.temperature * scale;
        let max = candidates(allowed, n)
            .map(|a| shown_value(row, n, a))
            .fold(f64::NEG_INFINITY, f64::max);
        let mut b = Boltzmann { max, t, total: 0.0 };
        b.total = candidates(allowed, n)
            .map(|a| b.weight(shown_value(row, n, a)))
            .sum();
        b
    }

    /// The unnormalised weight of an action of value `v`.
    #[inline]
    fn weight(&self, v: f64) -> f64 {
        ((v - self.max) / self.t).exp()
    }
}

/// The value an action has for selection: Q(s, a), or Q_A + Q_B for double
/// Q-learning (same order as their mean).
#[inline(always)]
fn shown_value(row: &[f64], n: usize, a: usize) -> f64 {
    if row.len() == 2 * n {
        row[a] + row[n + a]
    } else {
        row[a]
    }
}

/// An unseen state: every action ties at `initial_q`, so the choice is
/// uniform among the candidates (and never exploratory).
#[inline(never)]
pub(super) fn choose_unseen(
    rng: &mut Rng,
    n: usize,
    allowed: Option<&[usize]>,
    epsilon: f64,
) -> Decision {
    let action = match allowed {
        Some(a) => a[rng.below(a.len())],
        None => rng.below(n),
    };
    Decision {
        action,
        explored: false,
        epsilon,
    }
}

/// Epsilon-greedy's random branch: a uniformly random allowed action
/// (possibly a greedy one: then it is not counted as exploratory).
#[inline(never)]
pub(super) fn choose_at_random(
    rng: &mut Rng,
    row: &[f64],
    n: usize,
    allowed: Option<&[usize]>,
    epsilon: f64,
) -> Decision {
    let action = match allowed {
        Some(a) => a[rng.below(a.len())],
        None => rng.below(n),
    };
    let v = shown_value(row, n, action);
    Decision {
        action,
        explored: candidates(allowed, n).any(|a| shown_value(row, n, a) > v),
        epsilon,
    }
}

/// Boltzmann exploration: `P(a) ∝ exp(Q(s, a) / temperature)` over the
/// allowed actions. Returns the chosen action's probability too (it is
/// computed anyway).
#[inline(never)]
fn choose_softmax(
    cfg: &ModelConfig,
    rng: &mut Rng,
    row: &[f64],
    allowed: Option<&[usize]>,
    epsilon: f64,
) -> (Decision, f64) {
    let n = cfg.n_actions;
    let value = |a: usize| shown_value(row, n, a);
    let b = Boltzmann::of(cfg, row, allowed);
    let mut u = rng.next_f64() * b.total;
    let mut action = None;
    let mut last = 0;
    for a in candidates(allowed, n) {
        last = a;
        u -= b.weight(value(a));
        if u < 0.0 {
            action = Some(a);
            break;
        }
    }
    let action = action.unwrap_or(last);
    let d = Decision {
        action,
        explored: value(action) < b.max,
        epsilon,
    };
    (d, b.weight(value(action)) / b.total)
}

/// The Q-values a row shows to users: the row, the mean of its two tables
/// for double Q-learning, `initial_q` everywhere for an unseen state.
pub(super) fn visible_q(cfg: &ModelConfig, row: Option<&[f64]>) -> Vec<f64> {
    let n = cfg.n_actions;
    match row {
        None => vec![cfg.initial_q; n],
        Some(r) if r.len() == 2 * n => (0..n).map(|a| (r[a] + r[n + a]) / 2.0).collect(),
        Some(r) => r.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SIMD best-and-ties of four values is the scalar one, on rows
    /// with ties, zeros of both signs and extreme values.
    #[test]
    fn best_and_ties_of_four_matches_the_scalar_definition() {
        let pool = [0.0, -0.0, 1.0, -1.0, 2.5, f64::MAX, -f64::MAX, 1e-300];
        for code in 0..pool.len().pow(4) {
            let q: [f64; 4] =
                std::array::from_fn(|k| pool[code / pool.len().pow(k as u32) % pool.len()]);
            let (b, t) = best_and_ties(&q);
            let (sb, st) = best_and_ties_scalar(&q);
            assert_eq!((b, t), (sb, st), "{q:?}");
        }
    }
}
