//! The short paths of [`Model::predict`](super::Model::predict) and
//! [`Model::update`](super::Model::update) for the common configurations, and
//! the test that they decide, learn and count exactly as the general path.

use crate::config::{Algorithm, Exploration, ModelConfig};
use crate::limits::MAX_REWARD;
use crate::rng::Rng;
use crate::state::StateRef;
use crate::table::{Probe, QTable};

use super::select::{
    argmax_fixed, argmax_slice, choose_at_random, choose_unseen, max_fixed, max_row,
};
use super::{Decision, Experience, Learner, UpdateOutcome};

/// The common configurations [`Model::predict`](super::Model::predict) and
/// [`Model::update`](super::Model::update) serve on a short path: no
/// `state_bins`, one table, epsilon-greedy (predict) and Q-learning (update).
/// Anything else takes the general path.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct FastPaths {
    pub(super) predict: bool,
    pub(super) update: bool,
}

impl FastPaths {
    /// The short paths `config` allows.
    pub(super) fn of(config: &ModelConfig) -> Self {
        let plain = config.state_bins.is_none() && config.algorithm.tables() == 1;
        FastPaths {
            predict: plain && config.exploration == Exploration::EpsilonGreedy,
            update: plain && config.algorithm == Algorithm::QLearning,
        }
    }
}

/// The fast predict's choice over a row of `N` values: a uniformly random
/// action when `draw` (exploratory unless it is a greedy one), else the
/// greedy one. Same draws as [`choose`](super::select::choose).
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

impl Learner {
    /// [`Learner::predict`] on an in-memory table for a model whose
    /// configuration allows the fast path (see [`FastPaths`]), without a
    /// mask. Same decisions, random draws and counters as the general path,
    /// with fewer branches; `None` (nothing changed) when the state is
    /// invalid or needs normalising, for the general path to handle.
    #[inline(always)]
    pub(super) fn predict_fast(
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
    pub(super) fn update_fast(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;

    /// The fast paths of [`Model`] (with their row hint) decide, learn and
    /// count exactly as the general [`Learner`] methods on a separate table,
    /// on a mix of seen, unseen, repeated and out-of-order states of every
    /// kind, episode ends and invalid calls.
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
