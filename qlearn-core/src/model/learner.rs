//! [`Learner`]: a model without its Q-table, and the general path of
//! `predict` and `update` over any [`QRows`].

use crate::config::{Algorithm, ModelConfig};
use crate::error::{Error, Result};
use crate::limits::{MAX_REWARD, RECENT_RETURNS};
use crate::rng::Rng;
use crate::state::{canonical, with_key, StateRef};
use crate::table::QRows;

use super::fast::FastPaths;
use super::rules::apply_rule;
use super::select::{action_probabilities, check_mask, choose, visible_q};
use super::{Counters, Decision, Experience, Prediction, Stats, UpdateOutcome};

/// A model without its Q-table: configuration, current epsilon, counters and
/// the random generator. Its methods run the rules over any [`QRows`].
#[derive(Clone, Debug)]
pub struct Learner {
    pub(super) config: ModelConfig,
    pub(super) epsilon: f64,
    pub(super) rng: Rng,
    pub(super) counters: Counters,
    /// Which of [`Model`](super::Model)'s fast paths this configuration allows (derived
    /// from `config`, recomputed whenever it changes).
    pub(super) fast: FastPaths,
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
        let (decision, _) = choose::<false>(
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

    /// Like [`Learner::predict`], also returning the state's Q-values and the
    /// probability with which the chosen action was drawn (computed by the
    /// routine that drew it).
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
        let ((d, probability), q) = with_key(state, bins, "state", |key| {
            let row = table.row(key);
            (
                choose::<true>(cfg, rng, eps, row, explore, allowed),
                visible_q(cfg, row),
            )
        })?;
        self.counters.predictions += 1;
        Ok(Prediction {
            action: d.action,
            explored: d.explored,
            epsilon: d.epsilon,
            probability,
            q_values: q,
        })
    }

    /// The probability of each action (0 outside `allowed`) under the policy
    /// `predict` follows in `state` with this `explore` flag: epsilon-greedy
    /// `(1 − ε)·[a ∈ G]/|G| + ε/|A|` with `G` the greedy (tied) allowed
    /// actions and `A` the allowed ones (ε = 0 when `explore` is off), softmax
    /// `exp((Q(a) − max Q)/T) / Σ exp(...)` over `A`, `1/|A|` for an unseen
    /// state. Draws nothing and counts nothing.
    pub fn action_probabilities<T: QRows + ?Sized>(
        &self,
        table: &T,
        state: StateRef<'_>,
        allowed: Option<&[usize]>,
        explore: bool,
    ) -> Result<Vec<f64>> {
        check_mask(allowed, self.config.n_actions, "allowed_actions")?;
        let bins = self.config.state_bins.as_deref();
        with_key(state, bins, "state", |key| {
            action_probabilities(&self.config, self.epsilon, table.row(key), explore, allowed)
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

    /// Checks every experience of one call before anything is applied (or
    /// debited). A single experience's error is returned as is; in a batch
    /// of more, the error names the experience's index
    /// (`experiences[i].field`). The one rule for every path: in-process
    /// batches ([`Model::update_batch`](super::Model::update_batch)), every
    /// store, and so the HTTP API.
    pub fn validate_batch<'e>(
        &self,
        exps: impl ExactSizeIterator<Item = Experience<'e>>,
    ) -> Result<()> {
        let batch = exps.len() > 1;
        for (i, x) in exps.enumerate() {
            self.validate(&x)
                .map_err(|err| if batch { super::at_index(i, err) } else { err })?;
        }
        Ok(())
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
            return Err(Error::action(
                "action",
                format!("action {} is outside 0..{n}", exp.action),
            ));
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
                return Err(Error::action(
                    "next_action",
                    format!("next_action {na} is outside 0..{n}"),
                ));
            }
            if let Some(mask) = exp.next_allowed_actions {
                if !mask.contains(&na) {
                    return Err(Error::action(
                        "next_action",
                        format!("next_action {na} is not in next_allowed_actions"),
                    ));
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

    /// Sets the statistics' state count (a [`Model`](super::Model) keeps it equal to its
    /// table's length).
    pub(super) fn set_state_count(&mut self, states: u64) {
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
