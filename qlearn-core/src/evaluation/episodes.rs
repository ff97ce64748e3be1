//! Episode estimators: per-decision weighted importance sampling and
//! per-decision doubly robust, as one mergeable accumulator over whole
//! episodes.
//!
//! With `ρ_t` the product of the weights `π/μ` of steps `0..=t` of an
//! episode (`ρ_−1 = 1`) and `γ` the discount:
//!
//! - per-decision WIS: `Σ_t γ^t Σ_j ρ_t^j r_t^j / Σ_j ρ_t^j`, an episode
//!   that has ended keeping its last weight in the later sums (it sits in
//!   an absorbing state with reward 0);
//! - per-decision DR (Jiang & Li 2016): the mean over episodes of
//!   `Σ_t γ^t (ρ_t (r_t − q̂(s_t, a_t)) + ρ_{t−1} v̂(s_t))` with `q̂` a
//!   model's Q-values and `v̂(s) = Σ_a π(a|s) q̂(s, a)`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Model;

use super::policy::TargetPolicy;
use super::stats::{
    percentile_interval, poisson_counts, results, unit_rng, CiMethod, Diagnostics, Estimate,
    Estimator, EstimatorResult, EvalOptions, Moments, Tally,
};
use super::{unit_key, LoggedStep};

/// Per-step sums of the weighted estimator.
#[derive(Clone, Debug, Default, PartialEq)]
struct WisSums {
    /// `Σ_j ρ_t r_t` by step.
    num: Vec<f64>,
    /// `Σ_j ρ_t` of the episodes still running at step t.
    active: Vec<f64>,
    /// `Σ_j ρ_{H−1}` of the episodes of length H, by H.
    ended: Vec<f64>,
}

impl WisSums {
    fn add(&mut self, k: f64, rho: &[f64], rewards: &[f64]) {
        let h = rho.len();
        if self.num.len() < h + 1 {
            self.num.resize(h + 1, 0.0);
            self.active.resize(h + 1, 0.0);
            self.ended.resize(h + 1, 0.0);
        }
        for t in 0..h {
            self.num[t] += k * rho[t] * rewards[t];
            self.active[t] += k * rho[t];
        }
        self.ended[h] += k * rho.last().copied().unwrap_or(1.0);
    }

    fn merge(&mut self, o: &WisSums) {
        let h = o.num.len().max(self.num.len());
        for v in [&mut self.num, &mut self.active, &mut self.ended] {
            v.resize(h, 0.0);
        }
        for t in 0..o.num.len() {
            self.num[t] += o.num[t];
            self.active[t] += o.active[t];
            self.ended[t] += o.ended[t];
        }
    }

    /// `Σ_t γ^t num_t / D_t`, `D_t` the running episodes' weights plus the
    /// ended ones' last weights (terms with `D_t = 0` are 0).
    fn value(&self, discount: f64) -> f64 {
        let (mut ended, mut g, mut v) = (0.0, 1.0, 0.0);
        for t in 0..self.num.len() {
            ended += self.ended[t];
            let d = self.active[t] + ended;
            if d > 0.0 {
                v += g * self.num[t] / d;
            }
            g *= discount;
        }
        v
    }
}

/// An episode evaluation's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeReport {
    /// Diagnostics over episodes (`n` episodes; the effective sample size
    /// and support of the whole-episode weights; coverage over steps).
    pub diagnostics: Diagnostics,
    /// Per-decision WIS and per-decision DR, in that order.
    pub results: Vec<EstimatorResult>,
    /// Episodes left out: not finished, or with a step whose reward is
    /// unknown (open, expired or pruned).
    pub skipped_episodes: u64,
}

/// Per-decision WIS and DR over whole episodes, with a Poisson bootstrap
/// over episodes: add episodes (in any order, in any chunk), merge, finish.
#[derive(Clone, Debug)]
pub struct EpisodeAccumulator {
    replicates: usize,
    seed: u64,
    discount: f64,
    tally: Tally,
    wis: WisSums,
    dr: Moments,
    reps_wis: Vec<WisSums>,
    reps_dr: Vec<[f64; 2]>,
}

impl EpisodeAccumulator {
    /// An empty accumulator for `opts` (validated).
    pub fn new(opts: &EvalOptions) -> Result<Self> {
        opts.validate()?;
        Ok(EpisodeAccumulator {
            replicates: opts.replicates,
            seed: opts.seed,
            discount: opts.discount,
            tally: Tally::default(),
            wis: WisSums::default(),
            dr: Moments::default(),
            reps_wis: vec![WisSums::default(); opts.replicates],
            reps_dr: vec![[0.0; 2]; opts.replicates],
        })
    }

    /// Scores one whole episode (its steps in order, from step 0) against
    /// `target`, with `values` the model whose Q-values are the DR's value
    /// model (`None`: zero, and DR is per-decision IS), and adds it.
    pub fn add_episode(
        &mut self,
        episode: &[&LoggedStep],
        target: &TargetPolicy<'_>,
        values: Option<&Model>,
    ) -> Result<()> {
        let Some(first) = episode.first() else {
            return Ok(());
        };
        let h = episode.len();
        let (mut rho, mut rewards) = (Vec::with_capacity(h), Vec::with_capacity(h));
        let (mut prev, mut g, mut dr, mut ret, mut cov, mut max_w) =
            (1.0, 1.0, 0.0, 0.0, 0.0, 0.0f64);
        for s in episode {
            let q = match values {
                Some(m) => m.q_values(s.state.as_ref())?,
                None => Vec::new(),
            };
            let q = |a: usize| q.get(a).copied().unwrap_or(0.0);
            let score = target.score(s, q)?;
            let reward = s.reward.ok_or_else(|| {
                Error::field(
                    "reward",
                    format!(
                        "decision {:?}: an episode step without a reward",
                        s.decision_id
                    ),
                )
            })?;
            let r = prev * score.prob_logged / s.probability;
            dr += g * (r * (reward - q(s.action)) + prev * score.direct);
            ret += g * reward;
            cov += score.coverage;
            max_w = max_w.max(r);
            rho.push(r);
            rewards.push(reward);
            prev = r;
            g *= self.discount;
        }
        self.tally.add(prev, h as f64, cov, ret, max_w);
        self.wis.add(1.0, &rho, &rewards);
        self.dr.add(dr);
        let unit = unit_key(first.episode_id.as_deref().unwrap_or(&first.decision_id));
        let mut counts = vec![0.0; self.replicates];
        poisson_counts(&mut unit_rng(unit, self.seed), &mut counts);
        let reps = self.reps_wis.iter_mut().zip(&mut self.reps_dr);
        for ((w, d), &k) in reps.zip(&counts) {
            if k != 0.0 {
                w.add(k, &rho, &rewards);
                d[0] += k;
                d[1] += k * dr;
            }
        }
        Ok(())
    }

    /// Adds another chunk (same replicates, seed and discount).
    pub fn merge(&mut self, o: &EpisodeAccumulator) -> Result<()> {
        if o.replicates != self.replicates || o.seed != self.seed || o.discount != self.discount {
            return Err(Error::field(
                "replicates",
                "merged accumulators must share replicates, seed and discount",
            ));
        }
        self.tally.merge(&o.tally);
        self.wis.merge(&o.wis);
        self.dr.merge(&o.dr);
        for (a, b) in self.reps_wis.iter_mut().zip(&o.reps_wis) {
            a.merge(b);
        }
        for (a, b) in self.reps_dr.iter_mut().zip(&o.reps_dr) {
            a[0] += b[0];
            a[1] += b[1];
        }
        Ok(())
    }

    /// The diagnostics so far.
    pub fn diagnostics(&self) -> Diagnostics {
        self.tally.diagnostics()
    }

    /// Both estimates (or insufficient support) at the confidence level
    /// and thresholds of `opts`.
    pub fn finish(&self, opts: &EvalOptions, skipped_episodes: u64) -> EpisodeReport {
        let diagnostics = self.diagnostics();
        let method = CiMethod::PoissonBootstrap {
            replicates: self.replicates,
            over_episodes: true,
        };
        let estimators = [Estimator::PerDecisionWis, Estimator::PerDecisionDr];
        let results = results(&diagnostics, opts, &estimators, || {
            let wis_reps = self
                .reps_wis
                .iter()
                .map(|r| r.value(self.discount))
                .collect();
            let dr_reps = self.reps_dr.iter().map(|r| r[1] / r[0]).collect();
            vec![
                Estimate {
                    value: self.wis.value(self.discount),
                    ci: percentile_interval(wis_reps, opts.confidence, method),
                    bound: None,
                },
                Estimate {
                    value: self.dr.mean(),
                    ci: percentile_interval(dr_reps, opts.confidence, method),
                    bound: None,
                },
            ]
        });
        EpisodeReport {
            diagnostics,
            results,
            skipped_episodes,
        }
    }
}

/// The log's finished episodes, each its steps from 0 in order (a decision
/// without an episode is an episode of one step), and how many were left
/// out: an episode is kept when its steps are 0, 1, ... without a gap and
/// all applied (its last step is applied only once it has ended).
pub fn group_episodes(steps: &[LoggedStep]) -> (Vec<Vec<&LoggedStep>>, u64) {
    let mut by_episode: BTreeMap<&str, Vec<&LoggedStep>> = BTreeMap::new();
    let mut out = Vec::new();
    for s in steps {
        match &s.episode_id {
            Some(ep) => by_episode.entry(ep).or_default().push(s),
            None if s.applied => out.push(vec![s]),
            None => {}
        }
    }
    let mut skipped = 0;
    for (_, mut ep) in by_episode {
        ep.sort_by_key(|s| s.step);
        let whole = ep
            .iter()
            .enumerate()
            .all(|(i, s)| s.step == i as u64 && s.applied);
        if whole {
            out.push(ep);
        } else {
            skipped += 1;
        }
    }
    (out, skipped)
}

/// Evaluates `target` over the log's finished episodes (see
/// [`group_episodes`]) with `values`' Q-values as the DR's value model.
pub fn evaluate_episodes(
    steps: &[LoggedStep],
    target: &TargetPolicy<'_>,
    values: Option<&Model>,
    opts: &EvalOptions,
) -> Result<EpisodeReport> {
    let mut acc = EpisodeAccumulator::new(opts)?;
    let (episodes, skipped) = group_episodes(steps);
    for ep in &episodes {
        acc.add_episode(ep, target, values)?;
    }
    Ok(acc.finish(opts, skipped))
}
