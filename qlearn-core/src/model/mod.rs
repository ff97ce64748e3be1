//! The engine: action selection and the learning rules.
//!
//! A [`Model`] is a [`Learner`] (configuration, current epsilon, counters, the
//! random generator) plus its in-memory [`QTable`]. The learner's methods are
//! generic over [`QRows`], so a storage backend can run the very same rules
//! over rows it keeps elsewhere. Every method validates its whole input before
//! it changes anything: a failed call leaves the model as it was.
//!
//! [`Model::predict`] and [`Model::update`] serve the common case (no mask,
//! no `state_bins`, one table, epsilon-greedy, Q-learning, no episode end) on
//! a short path that remembers the last row it used; everything else goes
//! through the general [`Learner`] methods. Both give the same results.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::{Algorithm, Exploration, ModelConfig};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::state::{canonical, with_key, StateKey, StateRef};
use crate::table::{Probe, QRows, QTable};

/// The limits the learner checks, re-exported where they were first defined.
pub use crate::limits::{MAX_REWARD, RECENT_RETURNS};

/// Counters of a model, saved with it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Predictions served.
    pub predictions: u64,
    /// Updates applied.
    pub updates: u64,
    /// Episodes ended (terminated or truncated).
    pub episodes: u64,
    /// Distinct states stored.
    pub states: u64,
    /// Sum of all rewards seen by `update` (for the running mean).
    pub reward_sum: f64,
    /// Return of the episode in progress.
    pub episode_return: f64,
    /// Returns of the last [`RECENT_RETURNS`] episodes, oldest first.
    pub recent_returns: VecDeque<f64>,
}

/// A model's statistics, as reported to users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Predictions served.
    pub predictions: u64,
    /// Updates applied.
    pub updates: u64,
    /// Episodes ended.
    pub episodes: u64,
    /// Distinct states stored.
    pub states: u64,
    /// Current exploration rate.
    pub epsilon: f64,
    /// Mean reward over all updates (0 before the first).
    pub mean_reward: f64,
    /// Returns of the most recent episodes, oldest first.
    pub recent_returns: Vec<f64>,
}

/// What `predict` decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// The chosen action index.
    pub action: usize,
    /// Whether the choice was exploratory: the action is not one of the
    /// greedy (highest-valued) allowed actions. Always `false` when
    /// `explore` is `false`.
    pub explored: bool,
    /// The epsilon in force.
    pub epsilon: f64,
}

/// A decision together with the state's Q-values (what the HTTP API returns).
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The chosen action index.
    pub action: usize,
    /// Whether the choice was exploratory (see [`Decision::explored`]).
    pub explored: bool,
    /// The epsilon in force.
    pub epsilon: f64,
    /// The state's Q-values (`initial_q` everywhere for an unseen state; the
    /// mean of both tables for double Q-learning).
    pub q_values: Vec<f64>,
}

/// One transition to learn from.
#[derive(Clone, Copy, Debug)]
pub struct Experience<'a> {
    /// The state the action was taken in.
    pub state: StateRef<'a>,
    /// The action taken.
    pub action: usize,
    /// The reward observed.
    pub reward: f64,
    /// The state reached.
    pub next_state: StateRef<'a>,
    /// The episode terminated: no bootstrap from `next_state`.
    pub done: bool,
    /// The episode was cut short (e.g. a time limit): it ends, but the
    /// target still bootstraps from `next_state`.
    pub truncated: bool,
    /// The action taken in `next_state` (required by SARSA unless `done`).
    pub next_action: Option<usize>,
    /// Actions allowed in `next_state` (restricts the max or expectation).
    pub next_allowed_actions: Option<&'a [usize]>,
}

impl<'a> Experience<'a> {
    /// A non-terminal transition with no next action or mask.
    pub fn new(
        state: impl Into<StateRef<'a>>,
        action: usize,
        reward: f64,
        next_state: impl Into<StateRef<'a>>,
    ) -> Self {
        Experience {
            state: state.into(),
            action,
            reward,
            next_state: next_state.into(),
            done: false,
            truncated: false,
            next_action: None,
            next_allowed_actions: None,
        }
    }

    /// Sets `done`.
    pub fn done(mut self, done: bool) -> Self {
        self.done = done;
        self
    }

    /// Sets `truncated`.
    pub fn truncated(mut self, truncated: bool) -> Self {
        self.truncated = truncated;
        self
    }

    /// Sets `next_action`.
    pub fn next_action(mut self, a: usize) -> Self {
        self.next_action = Some(a);
        self
    }

    /// Sets `next_allowed_actions`.
    pub fn next_allowed(mut self, allowed: &'a [usize]) -> Self {
        self.next_allowed_actions = Some(allowed);
        self
    }
}

/// What `update` did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateOutcome {
    /// The new Q(s, a) (mean of both tables for double Q-learning).
    pub q_value: f64,
    /// The TD error: target − old Q (of the table that was updated).
    pub td_error: f64,
    /// Epsilon after the update (decayed if the episode ended).
    pub epsilon: f64,
    /// The finished episode's return, when this update ended one.
    pub episode_return: Option<f64>,
}

/// A model without its Q-table: configuration, current epsilon, counters and
/// the random generator. Its methods run the rules over any [`QRows`].
#[derive(Clone, Debug)]
pub struct Learner {
    config: ModelConfig,
    epsilon: f64,
    rng: Rng,
    counters: Counters,
    /// Which of [`Model`]'s fast paths this configuration allows (derived
    /// from `config`, recomputed whenever it changes).
    fast: FastPaths,
}

/// The common configurations [`Model::predict`] and [`Model::update`] serve
/// on a short path: no `state_bins`, one table, epsilon-greedy (predict)
/// and Q-learning (update). Anything else takes the general path.
#[derive(Clone, Copy, Debug, Default)]
struct FastPaths {
    predict: bool,
    update: bool,
}

impl FastPaths {
    fn of(config: &ModelConfig) -> Self {
        let plain = config.state_bins.is_none() && config.algorithm.tables() == 1;
        FastPaths {
            predict: plain && config.exploration == Exploration::EpsilonGreedy,
            update: plain && config.algorithm == Algorithm::QLearning,
        }
    }
}

enum Candidates<'a> {
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
fn candidates(allowed: Option<&[usize]>, n: usize) -> Candidates<'_> {
    match allowed {
        Some(a) => Candidates::Some(a.iter().copied()),
        None => Candidates::All(0..n),
    }
}

#[inline(always)]
fn check_mask(allowed: Option<&[usize]>, n: usize, field: &str) -> Result<()> {
    match allowed {
        None => Ok(()),
        Some(a) => check_mask_list(a, n, field),
    }
}

fn check_mask_list(a: &[usize], n: usize, field: &str) -> Result<()> {
    if a.is_empty() {
        return Err(Error::InvalidAction(format!("{field} must not be empty")));
    }
    let mut seen = [0u64; crate::limits::MAX_ACTIONS / 64];
    for &x in a {
        if x >= n {
            return Err(Error::InvalidAction(format!(
                "{field} contains {x}, outside 0..{n}"
            )));
        }
        let (w, b) = (x / 64, 1u64 << (x % 64));
        if seen[w] & b != 0 {
            return Err(Error::InvalidAction(format!(
                "{field} lists action {x} twice"
            )));
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
fn argmax_random(
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
fn argmax_slice(rng: &mut Rng, q: &[f64]) -> (usize, f64) {
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
fn argmax_fixed<const N: usize>(rng: &mut Rng, q: &[f64; N]) -> (usize, f64) {
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
fn max_fixed<const N: usize>(q: &[f64; N]) -> f64 {
    best_and_ties(q).0
}

/// The fast predict's choice over a row of `N` values: a uniformly random
/// action when `draw` (exploratory unless it is a greedy one), else the
/// greedy one. Same draws as [`choose`].
#[inline(always)]
fn pick_fixed<const N: usize>(rng: &mut Rng, q: &[f64; N], draw: bool) -> (usize, bool) {
    if draw {
        let a = rng.below(N);
        return (a, q.get(a).is_some_and(|&v| v < max_fixed(q)));
    }
    (argmax_fixed(rng, q).0, false)
}

/// The fast predict's choice (see [`pick_fixed`]) in row `i` of a table
/// whose rows are `n` (not 4) values wide.
#[inline(never)]
fn pick_other_width(
    rng: &mut Rng,
    table: &QTable,
    i: usize,
    n: usize,
    draw: bool,
) -> Option<(usize, bool)> {
    Some(match n {
        2 => pick_fixed(rng, table.row_n::<2>(i)?, draw),
        3 => pick_fixed(rng, table.row_n::<3>(i)?, draw),
        _ => pick_any(rng, table.values_at(i), draw),
    })
}

/// The largest value in row `j` of a table whose rows are `n` (not 4)
/// values wide.
#[inline(never)]
fn max_other_width(table: &QTable, j: usize, n: usize) -> f64 {
    match n {
        2 => table.row_n::<2>(j).map_or(f64::NAN, max_fixed),
        3 => table.row_n::<3>(j).map_or(f64::NAN, max_fixed),
        _ => max_row(table.values_at(j)),
    }
}

/// [`pick_fixed`] for a row of any width.
#[inline(always)]
fn pick_any(rng: &mut Rng, q: &[f64], draw: bool) -> (usize, bool) {
    if draw {
        let d = choose_at_random(rng, q, q.len(), None, 0.0);
        return (d.action, d.explored);
    }
    (argmax_slice(rng, q).0, false)
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

impl Learner {
    /// A learner for a validated configuration, epsilon at its initial value.
    pub fn new(config: ModelConfig) -> Result<Self> {
        config.validate()?;
        let rng = match config.seed {
            Some(s) => Rng::from_seed(s),
            None => Rng::from_entropy(),
        };
        Ok(Learner {
            epsilon: config.epsilon,
            fast: FastPaths::of(&config),
            config,
            rng,
            counters: Counters::default(),
        })
    }

    /// Rebuilds a learner from saved parts (used by decoders and storage).
    pub fn from_parts(
        config: ModelConfig,
        epsilon: f64,
        rng_state: [u64; 4],
        counters: Counters,
    ) -> Result<Self> {
        config.validate()?;
        if !(0.0..=1.0).contains(&epsilon) {
            return Err(Error::Decode(format!("epsilon {epsilon} out of [0, 1]")));
        }
        let rng = Rng::from_state(rng_state)
            .ok_or_else(|| Error::Decode("random generator state is all zero".into()))?;
        if counters.recent_returns.len() > RECENT_RETURNS
            || !counters.reward_sum.is_finite()
            || !counters.episode_return.is_finite()
            || !counters.recent_returns.iter().all(|r| r.is_finite())
        {
            return Err(Error::Decode("statistics are out of range".into()));
        }
        Ok(Learner {
            fast: FastPaths::of(&config),
            config,
            epsilon,
            rng,
            counters,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The current exploration rate.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// Sets the current exploration rate (must be in [0, 1]).
    pub fn set_epsilon(&mut self, epsilon: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&epsilon) {
            return Err(Error::field(
                "epsilon",
                format!("must be in [0, 1], got {epsilon}"),
            ));
        }
        self.epsilon = epsilon;
        Ok(())
    }

    /// The raw counters (saved with the model).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The random generator's state (saved with the model).
    pub fn rng_state(&self) -> [u64; 4] {
        self.rng.state()
    }

    /// Values per Q-table row.
    pub fn width(&self) -> usize {
        self.config.n_actions * self.config.algorithm.tables()
    }

    /// The user-facing statistics.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            predictions: c.predictions,
            updates: c.updates,
            episodes: c.episodes,
            states: c.states,
            epsilon: self.epsilon,
            mean_reward: if c.updates == 0 {
                0.0
            } else {
                c.reward_sum / c.updates as f64
            },
            recent_returns: c.recent_returns.iter().copied().collect(),
        }
    }

    /// The Q-values a row shows to users (mean of A and B for double Q).
    pub fn visible_q(&self, row: Option<&[f64]>) -> Vec<f64> {
        visible_q(&self.config, row)
    }

    /// Chooses an action for `state` (counted as a prediction). An unseen
    /// state reads as `initial_q` everywhere and is not stored.
    #[inline]
    pub fn predict<T: QRows + ?Sized>(
        &mut self,
        table: &T,
        state: StateRef<'_>,
        explore: bool,
        allowed: Option<&[usize]>,
    ) -> Result<Decision> {
        check_mask(allowed, self.config.n_actions, "allowed_actions")?;
        let mut buf = None;
        let key = canonical(state, self.config.state_bins.as_deref(), "state", &mut buf)?;
        let row = table.row(key);
        let decision = choose(
            &self.config,
            &mut self.rng,
            self.epsilon,
            row,
            explore,
            allowed,
        );
        self.counters.predictions += 1;
        Ok(decision)
    }

    /// Like [`Learner::predict`], also returning the state's Q-values.
    pub fn predict_full<T: QRows + ?Sized>(
        &mut self,
        table: &T,
        state: StateRef<'_>,
        explore: bool,
        allowed: Option<&[usize]>,
    ) -> Result<Prediction> {
        let n = self.config.n_actions;
        check_mask(allowed, n, "allowed_actions")?;
        let bins = self.config.state_bins.as_deref();
        let (cfg, rng, eps) = (&self.config, &mut self.rng, self.epsilon);
        let (d, q) = with_key(state, bins, "state", |key| {
            let row = table.row(key);
            (
                choose(cfg, rng, eps, row, explore, allowed),
                visible_q(cfg, row),
            )
        })?;
        self.counters.predictions += 1;
        Ok(Prediction {
            action: d.action,
            explored: d.explored,
            epsilon: d.epsilon,
            q_values: q,
        })
    }

    /// The Q-values of `state` as users see them (no counter changes).
    pub fn q_values<T: QRows + ?Sized>(&self, table: &T, state: StateRef<'_>) -> Result<Vec<f64>> {
        let bins = self.config.state_bins.as_deref();
        with_key(state, bins, "state", |key| self.visible_q(table.row(key)))
    }

    /// Checks a prediction's input without serving it: what `predict` would
    /// refuse is refused here (so a store can validate before it debits).
    pub fn validate_predict(&self, state: StateRef<'_>, allowed: Option<&[usize]>) -> Result<()> {
        check_mask(allowed, self.config.n_actions, "allowed_actions")?;
        with_key(state, self.config.state_bins.as_deref(), "state", |_| ())
    }

    /// Checks an experience without applying it: everything `update` would
    /// refuse is refused here (storage backends validate a whole batch before
    /// they debit a quota).
    pub fn validate(&self, exp: &Experience<'_>) -> Result<()> {
        self.check_experience(exp)?;
        let bins = self.config.state_bins.as_deref();
        with_key(exp.state, bins, "state", |_| ())?;
        with_key(exp.next_state, bins, "next_state", |_| ())?;
        Ok(())
    }

    /// Everything [`Learner::validate`] checks except the two states.
    #[inline]
    fn check_experience(&self, exp: &Experience<'_>) -> Result<()> {
        let n = self.config.n_actions;
        let next_ok = match exp.next_action {
            Some(na) => na < n,
            None => self.config.algorithm != Algorithm::Sarsa || exp.done,
        };
        if exp.action < n
            && exp.reward.is_finite()
            && exp.reward.abs() <= MAX_REWARD
            && next_ok
            && exp.next_allowed_actions.is_none()
        {
            return Ok(());
        }
        self.experience_error(exp)
    }

    /// The error of an experience that failed [`Learner::check_experience`]'s
    /// fast test (or `Ok` when only its mask needed the full check).
    #[cold]
    #[inline(never)]
    fn experience_error(&self, exp: &Experience<'_>) -> Result<()> {
        let n = self.config.n_actions;
        if exp.action >= n {
            return Err(Error::InvalidAction(format!(
                "action {} is outside 0..{n}",
                exp.action
            )));
        }
        if !(exp.reward.is_finite() && exp.reward.abs() <= MAX_REWARD) {
            return Err(Error::field(
                "reward",
                format!("must be a finite number of magnitude at most {MAX_REWARD:e}"),
            ));
        }
        check_mask(exp.next_allowed_actions, n, "next_allowed_actions")?;
        if let Some(na) = exp.next_action {
            if na >= n {
                return Err(Error::InvalidAction(format!(
                    "next_action {na} is outside 0..{n}"
                )));
            }
            if let Some(mask) = exp.next_allowed_actions {
                if !mask.contains(&na) {
                    return Err(Error::InvalidAction(format!(
                        "next_action {na} is not in next_allowed_actions"
                    )));
                }
            }
        } else if self.config.algorithm == Algorithm::Sarsa && !exp.done {
            return Err(Error::field(
                "next_action",
                "sarsa needs the action taken in next_state (or done = true)",
            ));
        }
        Ok(())
    }

    /// Applies the configured learning rule to one experience. On error
    /// nothing changes (not even the random generator).
    #[inline]
    pub fn update<T: QRows + ?Sized>(
        &mut self,
        table: &mut T,
        exp: &Experience<'_>,
    ) -> Result<UpdateOutcome> {
        self.check_experience(exp)?;
        let bins = self.config.state_bins.as_deref();
        // Both states are canonicalised (and checked) before anything is
        // touched.
        let (mut key_buf, mut next_buf) = (None, None);
        let key = canonical(exp.state, bins, "state", &mut key_buf)?;
        let next = canonical(exp.next_state, bins, "next_state", &mut next_buf)?;
        let (q_value, td_error, inserted) = apply_rule(
            &self.config,
            &mut self.rng,
            self.epsilon,
            table,
            key,
            next,
            exp,
        )?;
        let cfg = &self.config;
        let c = &mut self.counters;
        c.updates += 1;
        c.states += inserted as u64;
        c.reward_sum += exp.reward;
        c.episode_return += exp.reward;
        let mut episode_return = None;
        if exp.done || exp.truncated {
            c.episodes += 1;
            if c.recent_returns.len() == RECENT_RETURNS {
                c.recent_returns.pop_front();
            }
            c.recent_returns.push_back(c.episode_return);
            episode_return = Some(c.episode_return);
            c.episode_return = 0.0;
            if self.epsilon > cfg.min_epsilon {
                self.epsilon = (self.epsilon * cfg.epsilon_decay).max(cfg.min_epsilon);
            }
        }
        Ok(UpdateOutcome {
            q_value,
            td_error,
            epsilon: self.epsilon,
            episode_return,
        })
    }

    /// [`Learner::predict`] on an in-memory table for a model whose
    /// configuration allows the fast path (see [`FastPaths`]), without a
    /// mask. Same decisions, random draws and counters as the general path,
    /// with fewer branches; `None` (nothing changed) when the state is
    /// invalid or needs normalising, for the general path to handle.
    #[inline(always)]
    fn predict_fast(
        &mut self,
        table: &QTable,
        hint: &mut usize,
        state: StateRef<'_>,
        explore: bool,
    ) -> Option<Decision> {
        let probe = Probe::checked(state)?;
        let found = match table.hinted(*hint, probe) {
            Some(i) => Some(i),
            None => table.lookup(probe),
        };
        let epsilon = self.epsilon;
        let n = self.config.n_actions;
        let rng = &mut self.rng;
        let decision = match found {
            None => choose_unseen(rng, n, None, epsilon),
            Some(i) => {
                *hint = i;
                let draw = explore && epsilon > 0.0 && rng.next_f64() < epsilon;
                // Four actions (a grid's moves) inline, other widths out of
                // line: one comparison on the common path.
                let (action, explored) = if n == 4 {
                    pick_fixed(rng, table.row_n::<4>(i)?, draw)
                } else {
                    pick_other_width(rng, table, i, n, draw)?
                };
                Decision {
                    action,
                    explored,
                    epsilon,
                }
            }
        };
        self.counters.predictions += 1;
        Some(decision)
    }

    /// [`Learner::update`] on an in-memory table for a Q-learning model
    /// without `state_bins` or a second table, when the transition is plain:
    /// a valid action and reward, no episode end, no next action or mask,
    /// states that are their own keys. Same values and counters as the
    /// general path; `None` (nothing changed but the row hint) for anything
    /// else, which the general path then applies or refuses.
    #[inline(always)]
    fn update_fast(
        &mut self,
        table: &mut QTable,
        hint: &mut usize,
        exp: &Experience<'_>,
    ) -> Option<UpdateOutcome> {
        let cfg = &self.config;
        let n = cfg.n_actions;
        // The next state's row first: its lookup is the step's longest
        // chain of memory loads, so it starts before anything else.
        let next = Probe::checked(exp.next_state)?;
        let found = table.lookup(next);
        let plain = (exp.action < n)
            & (exp.reward.abs() <= MAX_REWARD)
            & !(exp.done | exp.truncated)
            & exp.next_action.is_none()
            & exp.next_allowed_actions.is_none();
        if !plain {
            return None;
        }
        let key = Probe::checked(exp.state)?;
        // The state is usually the one just predicted: its row is the hint.
        let own = table.hinted(*hint, key);
        let bootstrap = match found {
            Some(j) => {
                // The next prediction is usually for `next`.
                *hint = j;
                if n == 4 {
                    table.row_n::<4>(j).map_or(f64::NAN, max_fixed)
                } else {
                    max_other_width(table, j, n)
                }
            }
            None => cfg.initial_q,
        };
        let target = exp.reward + cfg.discount_factor * bootstrap;
        let (i, inserted) = match own {
            Some(i) => (i, false),
            None => table.lookup_or_insert(key, cfg.initial_q),
        };
        // One table: rows are `n` wide, and `action < n`.
        let cell = table.values_mut().get_mut(i * n + exp.action)?;
        let old = *cell;
        let td = target - old;
        let new = old + cfg.learning_rate * td;
        if !new.is_finite() {
            // Only with imported Q-values near f64::MAX, never for a row just
            // inserted (see `apply_rule`): the general path reports it.
            return None;
        }
        *cell = new;
        let c = &mut self.counters;
        c.updates += 1;
        c.states += inserted as u64;
        c.reward_sum += exp.reward;
        c.episode_return += exp.reward;
        Some(UpdateOutcome {
            q_value: new,
            td_error: td,
            epsilon: self.epsilon,
            episode_return: None,
        })
    }

    /// Sets the statistics' state count (a [`Model`] keeps it equal to its
    /// table's length).
    fn set_state_count(&mut self, states: u64) {
        self.counters.states = states;
    }

    /// Replaces the configuration (a PATCH). `n_actions` and `state_bins`
    /// cannot change (they define the table's keys and width); a new epsilon
    /// resets the current one, a new seed reseeds. Returns the table width
    /// change, if any, as `(n_actions, tables)` for the caller to reshape.
    pub fn reconfigure(&mut self, new: ModelConfig) -> Result<Option<(usize, usize)>> {
        new.validate()?;
        if new.n_actions != self.config.n_actions {
            return Err(Error::field(
                "n_actions",
                "cannot change on an existing model",
            ));
        }
        if new.state_bins != self.config.state_bins {
            return Err(Error::field(
                "state_bins",
                "cannot change on an existing model",
            ));
        }
        let reshape = (new.algorithm.tables() != self.config.algorithm.tables())
            .then(|| (new.n_actions, new.algorithm.tables()));
        if new.epsilon != self.config.epsilon {
            self.epsilon = new.epsilon;
        }
        if new.seed != self.config.seed {
            if let Some(s) = new.seed {
                self.rng = Rng::from_seed(s);
            }
        }
        self.fast = FastPaths::of(&new);
        self.config = new;
        Ok(reshape)
    }
}

/// The learning rule proper, on canonical keys: computes the target from
/// `next`, then moves Q(`key`, action) towards it. Returns the new (shown)
/// Q-value, the TD error and whether `key`'s row was inserted.
#[inline]
fn apply_rule<T: QRows + ?Sized>(
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

/// The largest value of a (non-empty) row; common widths unrolled (see
/// [`argmax_slice`]).
#[inline(always)]
fn max_row(r: &[f64]) -> f64 {
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

/// Action selection over one row (`None`: an unseen state).
#[inline]
fn choose(
    cfg: &ModelConfig,
    rng: &mut Rng,
    epsilon: f64,
    row: Option<&[f64]>,
    explore: bool,
    allowed: Option<&[usize]>,
) -> Decision {
    let n = cfg.n_actions;
    let Some(row) = row else {
        return choose_unseen(rng, n, allowed, epsilon);
    };
    let double = row.len() == 2 * n;
    if explore {
        match cfg.exploration {
            Exploration::EpsilonGreedy => {
                if epsilon > 0.0 && rng.next_f64() < epsilon {
                    return choose_at_random(rng, row, n, allowed, epsilon);
                }
            }
            Exploration::Softmax => return choose_softmax(cfg, rng, row, allowed, epsilon),
        }
    }
    let action = match (double, allowed) {
        (false, None) => argmax_slice(rng, &row[..n]).0,
        _ => argmax_random(rng, allowed, n, |a| shown_value(row, n, a)).0,
    };
    Decision {
        action,
        explored: false,
        epsilon,
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
fn choose_unseen(rng: &mut Rng, n: usize, allowed: Option<&[usize]>, epsilon: f64) -> Decision {
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
fn choose_at_random(
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
/// allowed actions.
#[inline(never)]
fn choose_softmax(
    cfg: &ModelConfig,
    rng: &mut Rng,
    row: &[f64],
    allowed: Option<&[usize]>,
    epsilon: f64,
) -> Decision {
    let n = cfg.n_actions;
    let double = row.len() == 2 * n;
    let value = |a: usize| shown_value(row, n, a);
    let scale = if double { 2.0 } else { 1.0 };
    let t = cfg.temperature * scale;
    let max = candidates(allowed, n)
        .map(value)
        .fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = candidates(allowed, n)
        .map(|a| ((value(a) - max) / t).exp())
        .sum();
    let mut u = rng.next_f64() * total;
    let mut action = None;
    let mut last = 0;
    for a in candidates(allowed, n) {
        last = a;
        u -= ((value(a) - max) / t).exp();
        if u < 0.0 {
            action = Some(a);
            break;
        }
    }
    let action = action.unwrap_or(last);
    Decision {
        action,
        explored: value(action) < max,
        epsilon,
    }
}

fn visible_q(cfg: &ModelConfig, row: Option<&[f64]>) -> Vec<f64> {
    let n = cfg.n_actions;
    match row {
        None => vec![cfg.initial_q; n],
        Some(r) if r.len() == 2 * n => (0..n).map(|a| (r[a] + r[n + a]) / 2.0).collect(),
        Some(r) => r.to_vec(),
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

/// A complete model: a [`Learner`] and its in-memory [`QTable`]. `Clone`,
/// `Send` and `Sync`; share it behind a lock to serve several threads.
#[derive(Clone, Debug)]
pub struct Model {
    learner: Learner,
    table: QTable,
    /// The row the fast path used last (see [`QTable::hinted`]): in an
    /// agent's loop, `update`'s state is the state just predicted and the
    /// next `predict`'s is `update`'s next state, so one key comparison
    /// replaces a hash and a probe. Any value is safe (it is checked).
    hint: usize,
}

impl Model {
    /// A new, empty model. Errors name the invalid field.
    pub fn new(config: ModelConfig) -> Result<Self> {
        let learner = Learner::new(config)?;
        let table = QTable::new(learner.width());
        Ok(Model {
            learner,
            table,
            hint: usize::MAX,
        })
    }

    /// Assembles a model from a learner and a table of the right width. The
    /// table is the truth for the number of stored states: the learner's
    /// `states` counter is set to its length.
    pub fn from_parts(mut learner: Learner, table: QTable) -> Result<Self> {
        if table.width() != learner.width() {
            return Err(Error::Decode(format!(
                "Q-table rows have {} values, the configuration needs {}",
                table.width(),
                learner.width()
            )));
        }
        learner.set_state_count(table.len() as u64);
        Ok(Model {
            learner,
            table,
            hint: usize::MAX,
        })
    }

    /// Splits into learner and table (what storage backends keep apart).
    pub fn into_parts(self) -> (Learner, QTable) {
        (self.learner, self.table)
    }

    /// The learner (configuration, epsilon, counters).
    pub fn learner(&self) -> &Learner {
        &self.learner
    }

    /// The Q-table.
    pub fn table(&self) -> &QTable {
        &self.table
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        self.learner.config()
    }

    /// Current exploration rate.
    pub fn epsilon(&self) -> f64 {
        self.learner.epsilon()
    }

    /// Sets the current exploration rate, in [0, 1].
    pub fn set_epsilon(&mut self, epsilon: f64) -> Result<()> {
        self.learner.set_epsilon(epsilon)
    }

    /// Number of distinct states stored.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no state is stored yet.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// User-facing statistics.
    pub fn stats(&self) -> Stats {
        self.learner.stats()
    }

    /// Chooses an action (see [`Learner::predict`]).
    #[inline(always)]
    pub fn predict<'a>(
        &mut self,
        state: impl Into<StateRef<'a>>,
        explore: bool,
        allowed: Option<&[usize]>,
    ) -> Result<Decision> {
        let state = state.into();
        if self.learner.fast.predict && allowed.is_none() {
            let fast = self
                .learner
                .predict_fast(&self.table, &mut self.hint, state, explore);
            if let Some(decision) = fast {
                return Ok(decision);
            }
        }
        self.predict_general(state, explore, allowed)
    }

    /// [`Model::predict`] for what the fast path does not serve.
    #[inline(never)]
    fn predict_general(
        &mut self,
        state: StateRef<'_>,
        explore: bool,
        allowed: Option<&[usize]>,
    ) -> Result<Decision> {
        self.learner.predict(&self.table, state, explore, allowed)
    }

    /// Chooses an action and returns the state's Q-values too.
    pub fn predict_full<'a>(
        &mut self,
        state: impl Into<StateRef<'a>>,
        explore: bool,
        allowed: Option<&[usize]>,
    ) -> Result<Prediction> {
        self.learner
            .predict_full(&self.table, state.into(), explore, allowed)
    }

    /// The Q-values of a state (`initial_q` everywhere if unseen).
    pub fn q_values<'a>(&self, state: impl Into<StateRef<'a>>) -> Result<Vec<f64>> {
        self.learner.q_values(&self.table, state.into())
    }

    /// Learns from one experience (see [`Learner::update`]).
    #[inline(always)]
    pub fn update(&mut self, exp: &Experience<'_>) -> Result<UpdateOutcome> {
        if self.learner.fast.update {
            let fast = self
                .learner
                .update_fast(&mut self.table, &mut self.hint, exp);
            if let Some(outcome) = fast {
                return Ok(outcome);
            }
        }
        self.update_general(exp)
    }

    /// [`Model::update`] for what the fast path does not serve.
    #[inline(never)]
    fn update_general(&mut self, exp: &Experience<'_>) -> Result<UpdateOutcome> {
        self.learner.update(&mut self.table, exp)
    }

    /// Learns from many experiences, validating all of them first: on error
    /// nothing is applied.
    pub fn update_batch(&mut self, exps: &[Experience<'_>]) -> Result<Vec<UpdateOutcome>> {
        for (i, e) in exps.iter().enumerate() {
            self.learner.validate(e).map_err(|err| at_index(i, err))?;
        }
        exps.iter().map(|e| self.update(e)).collect()
    }

    /// Checks a prediction's input without serving it.
    pub fn validate_predict<'a>(
        &self,
        state: impl Into<StateRef<'a>>,
        allowed: Option<&[usize]>,
    ) -> Result<()> {
        self.learner.validate_predict(state.into(), allowed)
    }

    /// Validates one experience without applying it.
    pub fn validate(&self, exp: &Experience<'_>) -> Result<()> {
        self.learner.validate(exp)
    }

    /// Replaces the configuration (see [`Learner::reconfigure`]).
    pub fn reconfigure(&mut self, config: ModelConfig) -> Result<()> {
        if let Some((n, tables)) = self.learner.reconfigure(config)? {
            self.table.reshape(n, tables);
        }
        Ok(())
    }

    /// A page of the Q-table in insertion order: `(state, q_values)`.
    pub fn rows(&self, offset: usize, limit: usize) -> Vec<(StateKey, Vec<f64>)> {
        (offset..self.table.len().min(offset.saturating_add(limit)))
            .filter_map(|i| self.table.row_at(i))
            .map(|(k, r)| (StateKey::from_canonical(k), self.learner.visible_q(Some(r))))
            .collect()
    }
}

/// Prefixes an error's field with the index of the batch item it came from.
pub fn at_index(i: usize, err: Error) -> Error {
    match err {
        Error::InvalidField { field, message } => Error::InvalidField {
            field: format!("experiences[{i}].{field}"),
            message,
        },
        Error::InvalidState(m) => Error::InvalidState(format!("experiences[{i}]: {m}")),
        Error::InvalidAction(m) => Error::InvalidAction(format!("experiences[{i}]: {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast paths of [`Model`] (with their row hint) decide, learn and
    /// count exactly as the general [`Learner`] methods on a separate table,
    /// on a mix of seen, unseen, repeated and out-of-order states of every
    /// kind, episode ends and invalid calls.
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

    #[test]
    fn fast_paths_match_the_general_path() {
        for n in [2, 3, 4, 5] {
            fast_paths_match_the_general_path_with(n);
        }
    }

    fn fast_paths_match_the_general_path_with(n_actions: usize) {
        let mut config = ModelConfig::new(n_actions);
        config.epsilon = 0.3;
        config.seed = Some(11);
        let mut model = Model::new(config.clone()).unwrap();
        let mut learner = Learner::new(config).unwrap();
        let mut table = QTable::new(n_actions);
        let strs: Vec<String> = (0..7).map(|i| format!("s{i}")).collect();
        let long: Vec<String> = (0..7)
            .map(|i| format!("a-state-name-longer-than-14-{i}"))
            .collect();
        let arrays: Vec<[f64; 2]> = (0..7).map(|i| [i as f64, -0.0]).collect();
        let singles: Vec<[f64; 1]> = (0..7).map(|i| [i as f64 / 2.0]).collect();
        let triples: Vec<[f64; 3]> = (0..7).map(|i| [i as f64, 1.0, 2.0]).collect();
        let states = 7 * 6;
        let state = |i: usize| match i % 6 {
            0 => StateRef::Int((i / 6) as i64),
            1 => StateRef::Str(&strs[(i / 6) % 7]),
            2 => StateRef::Str(&long[(i / 6) % 7]),
            3 => StateRef::Array(&arrays[(i / 6) % 7]),
            4 => StateRef::Array(&singles[(i / 6) % 7]),
            _ => StateRef::Array(&triples[(i / 6) % 7]),
        };
        let mut r = Rng::from_seed(5);
        let mut s = 0usize;
        for step in 0..5000 {
            let next = if r.below(4) == 0 {
                r.below(states)
            } else {
                (s + 6) % states
            };
            let explore = r.below(5) != 0;
            let a = model
                .predict(state(s), explore, None)
                .map_err(|e| e.to_string());
            let b = learner
                .predict(&table, state(s), explore, None)
                .map_err(|e| e.to_string());
            assert_eq!(a, b, "predict at step {step}, {n_actions} actions");
            let action = match a {
                Ok(d) => d.action,
                Err(_) => 0,
            };
            let action = if step % 97 == 0 { 7 } else { action };
            let reward = if step % 89 == 0 {
                f64::NAN
            } else {
                r.next_f64() - 0.5
            };
            let exp = Experience::new(state(s), action, reward, state(next)).done(step % 50 == 49);
            let a = model.update(&exp).map_err(|e| e.to_string());
            let b = learner.update(&mut table, &exp).map_err(|e| e.to_string());
            assert_eq!(a, b, "update at step {step}, {n_actions} actions");
            // The row the hint remembers is sometimes not the next state's.
            s = if r.below(6) == 0 {
                r.below(states)
            } else {
                next
            };
        }
        assert_eq!(model.stats(), learner.stats());
        assert!(model.table().keys().eq(table.keys()));
        assert_eq!(model.table().values(), table.values());
    }
}
