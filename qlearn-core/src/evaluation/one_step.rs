//! One-step estimators: IPS, self-normalised IPS and doubly robust, as one
//! mergeable accumulator, and [`RewardMeans`], the log's per-(state,
//! action) mean reward (the doubly robust estimator's direct model).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::state::{with_key, StateRef};
use crate::table::{QRows, QTable};

use super::policy::TargetPolicy;
use super::stats::{
    percentile_interval, poisson_counts, results, unit_rng, CiMethod, Diagnostics, Estimate,
    Estimator, EstimatorResult, EvalOptions, Moments, Outcome, Scored, Tally,
};
use super::{unit_key, LoggedStep};

/// The mean logged reward of each (state, action): a mergeable first pass
/// over a log. States are keyed as sent (no `state_bins`).
#[derive(Clone, Debug)]
pub struct RewardMeans {
    n_actions: usize,
    /// Per state: the reward sums of each action, then their counts.
    table: QTable,
    all: Moments,
}

impl RewardMeans {
    /// An empty table for `n_actions` actions.
    pub fn new(n_actions: usize) -> Self {
        RewardMeans {
            n_actions,
            table: QTable::new(2 * n_actions.max(1)),
            all: Moments::default(),
        }
    }

    /// The means of `steps` (a first pass).
    pub fn fit(steps: &[LoggedStep], n_actions: usize) -> Result<Self> {
        let mut m = RewardMeans::new(n_actions);
        for s in steps {
            m.add(s)?;
        }
        Ok(m)
    }

    /// Counts one step's reward (nothing while it is unknown).
    pub fn add(&mut self, step: &LoggedStep) -> Result<()> {
        let Some(reward) = step.reward else {
            return Ok(());
        };
        let n = self.n_actions;
        step.check_action(n)?;
        let table = &mut self.table;
        with_key(step.state.as_ref(), None, "state", |k| {
            let (row, _) = table.row_or_insert(k, 0.0);
            row[step.action] += reward;
            row[n + step.action] += 1.0;
        })?;
        self.all.add(reward);
        Ok(())
    }

    /// Adds another chunk's counts (same number of actions).
    pub fn merge(&mut self, other: &RewardMeans) -> Result<()> {
        if other.n_actions != self.n_actions {
            return Err(Error::field(
                "n_actions",
                "merged reward means differ in actions",
            ));
        }
        for i in 0..other.table.len() {
            if let Some((k, r)) = other.table.row_at(i) {
                let (row, _) = self.table.row_or_insert(k, 0.0);
                row.iter_mut().zip(r).for_each(|(x, y)| *x += y);
            }
        }
        self.all.merge(&other.all);
        Ok(())
    }

    /// The mean reward of each action in `state`; the log's overall mean
    /// where the pair was never logged (0 for an empty log).
    pub fn means(&self, state: StateRef<'_>) -> Vec<f64> {
        let fallback = if self.all.n > 0.0 {
            self.all.mean()
        } else {
            0.0
        };
        let n = self.n_actions;
        let row = with_key(state, None, "state", |k| {
            self.table.row(k).map(|r| {
                (0..n)
                    .map(|a| {
                        if r[n + a] > 0.0 {
                            r[a] / r[n + a]
                        } else {
                            fallback
                        }
                    })
                    .collect()
            })
        });
        row.ok().flatten().unwrap_or_else(|| vec![fallback; n])
    }
}

/// The direct model of the doubly robust estimator: `q̂(s, a)`.
#[derive(Clone, Copy, Debug)]
pub enum Direct<'a> {
    /// The log's per-(state, action) mean reward, fitted by
    /// [`evaluate_one_step`] in a first pass.
    LogMeans,
    /// Per-(state, action) means fitted already (chunked evaluation).
    Means(&'a RewardMeans),
    /// A model's Q-values.
    QValues(&'a Model),
}

/// A one-step evaluation's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OneStepReport {
    /// Sample size, effective sample size, support, coverage, largest
    /// weight, mean logged reward.
    pub diagnostics: Diagnostics,
    /// IPS, SNIPS and DR, in that order.
    pub results: Vec<EstimatorResult>,
}

impl OneStepReport {
    /// One estimator's answer (insufficient support if it is not in the
    /// report).
    pub fn outcome(&self, estimator: Estimator) -> &Outcome {
        static NONE: Outcome = Outcome::InsufficientSupport(super::Insufficient::NoData);
        self.results
            .iter()
            .find(|r| r.estimator == estimator)
            .map_or(&NONE, |r| &r.outcome)
    }
}

/// IPS, SNIPS and DR over one-step decisions, with a Poisson bootstrap:
/// add decisions (in any order, in any chunk), merge chunks, finish.
#[derive(Clone, Debug)]
pub struct OneStepAccumulator {
    replicates: usize,
    seed: u64,
    reward_range: Option<(f64, f64)>,
    tally: Tally,
    ips: Moments,
    dr: Moments,
    /// Per replicate (one vector each): Σk, Σk·w, Σk·w·r, Σk·dr.
    reps: [Vec<f64>; 4],
    /// The current unit's Poisson counts (scratch).
    counts: Vec<f64>,
}

impl OneStepAccumulator {
    /// An empty accumulator for `opts` (validated).
    pub fn new(opts: &EvalOptions) -> Result<Self> {
        opts.validate()?;
        Ok(OneStepAccumulator {
            replicates: opts.replicates,
            seed: opts.seed,
            reward_range: opts.reward_range,
            tally: Tally::default(),
            ips: Moments::default(),
            dr: Moments::default(),
            reps: std::array::from_fn(|_| vec![0.0; opts.replicates]),
            counts: vec![0.0; opts.replicates],
        })
    }

    /// Scores `step` against `target` with the direct model `direct` and
    /// adds it (a step whose reward is unknown is left out).
    /// `Direct::LogMeans` must be fitted first (pass `Direct::Means`).
    pub fn add_step(
        &mut self,
        step: &LoggedStep,
        target: &TargetPolicy<'_>,
        direct: &Direct<'_>,
    ) -> Result<()> {
        let Some(reward) = step.reward else {
            return Ok(());
        };
        if let Some((lo, hi)) = self.reward_range {
            if !(lo..=hi).contains(&reward) {
                return Err(Error::field(
                    "reward_range",
                    format!(
                        "decision {:?} has reward {reward}, outside [{lo}, {hi}]",
                        step.decision_id
                    ),
                ));
            }
        }
        let clamp = |q: f64| match self.reward_range {
            Some((lo, hi)) => q.clamp(lo, hi),
            None => q,
        };
        let qs = match direct {
            Direct::LogMeans => {
                return Err(Error::field(
                    "direct",
                    "fit RewardMeans over the log first and pass Direct::Means",
                ))
            }
            Direct::Means(m) => m.means(step.state.as_ref()),
            Direct::QValues(model) => model.q_values(step.state.as_ref())?,
        };
        let q = |a: usize| clamp(qs.get(a).copied().unwrap_or(0.0));
        let score = target.score(step, q)?;
        let q_logged = q(step.action);
        self.add(&Scored {
            unit: unit_key(&step.decision_id),
            reward,
            weight: score.prob_logged / step.probability,
            direct: score.direct,
            direct_logged: q_logged,
            coverage: score.coverage,
        });
        Ok(())
    }

    /// Adds one scored decision.
    pub fn add(&mut self, s: &Scored) {
        let (w, r) = (s.weight, s.reward);
        let dr = s.direct + w * (r - s.direct_logged);
        self.tally.add(w, 1.0, s.coverage, r, w);
        self.ips.add(w * r);
        self.dr.add(dr);
        poisson_counts(&mut unit_rng(s.unit, self.seed), &mut self.counts);
        for (rep, x) in self.reps.iter_mut().zip([1.0, w, w * r, dr]) {
            for (sum, k) in rep.iter_mut().zip(&self.counts) {
                *sum += k * x;
            }
        }
    }

    /// Adds another chunk (same replicates and seed).
    pub fn merge(&mut self, o: &OneStepAccumulator) -> Result<()> {
        if o.replicates != self.replicates || o.seed != self.seed {
            return Err(Error::field(
                "replicates",
                "merged accumulators must share replicates and seed",
            ));
        }
        self.tally.merge(&o.tally);
        self.ips.merge(&o.ips);
        self.dr.merge(&o.dr);
        for (a, b) in self.reps.iter_mut().zip(&o.reps) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        Ok(())
    }

    /// The diagnostics so far.
    pub fn diagnostics(&self) -> Diagnostics {
        self.tally.diagnostics()
    }

    /// The three estimates (or insufficient support) at the confidence
    /// level and thresholds of `opts`.
    pub fn finish(&self, opts: &EvalOptions) -> OneStepReport {
        let diagnostics = self.diagnostics();
        let estimators = [Estimator::Ips, Estimator::Snips, Estimator::DoublyRobust];
        let results = results(&diagnostics, opts, &estimators, || self.estimates(opts));
        OneStepReport {
            diagnostics,
            results,
        }
    }

    fn estimates(&self, opts: &EvalOptions) -> Vec<Estimate> {
        let method = CiMethod::PoissonBootstrap {
            replicates: self.replicates,
            over_episodes: false,
        };
        let ci = |num: usize, den: usize| {
            let values = self.reps[num]
                .iter()
                .zip(&self.reps[den])
                .map(|(n, d)| n / d)
                .collect();
            percentile_interval(values, opts.confidence, method)
        };
        let w_max = self.tally.max_weight;
        let width = opts
            .reward_range
            .map(|(lo, hi)| (hi - lo, hi.max(0.0) - lo.min(0.0)));
        let n = self.tally.units as f64;
        let ips = Estimate {
            value: self.ips.sum / n,
            ci: ci(2, 0),
            bound: width.and_then(|(_, span)| self.ips.bernstein(w_max * span, opts.confidence)),
        };
        let snips = Estimate {
            value: self.ips.sum / self.tally.weights.sum,
            ci: ci(2, 1),
            bound: None,
        };
        let dr = Estimate {
            value: self.dr.sum / n,
            ci: ci(3, 0),
            bound: width.and_then(|(range, _)| {
                self.dr
                    .bernstein(range * (1.0 + 2.0 * w_max), opts.confidence)
            }),
        };
        vec![ips, snips, dr]
    }
}

/// Evaluates `target` on every step as a one-step decision: fits the
/// log's reward means first when `direct` is [`Direct::LogMeans`], then
/// one accumulator pass.
pub fn evaluate_one_step(
    steps: &[LoggedStep],
    target: &TargetPolicy<'_>,
    direct: &Direct<'_>,
    opts: &EvalOptions,
) -> Result<OneStepReport> {
    let mut acc = OneStepAccumulator::new(opts)?;
    let fitted;
    let direct = match direct {
        Direct::LogMeans => {
            fitted = RewardMeans::fit(steps, n_actions(steps, target))?;
            Direct::Means(&fitted)
        }
        other => *other,
    };
    for s in steps {
        acc.add_step(s, target, &direct)?;
    }
    Ok(acc.finish(opts))
}

/// The number of actions: the target's model's, else the largest action
/// the log names, plus one.
pub(super) fn n_actions(steps: &[LoggedStep], target: &TargetPolicy<'_>) -> usize {
    match target {
        TargetPolicy::Greedy(m) | TargetPolicy::Exploring(m) => return m.config().n_actions,
        TargetPolicy::Uniform(n) => return *n,
        _ => {}
    }
    super::n_actions_of(steps)
}
