//! What the estimators share: options, results, the Poisson bootstrap and
//! the empirical-Bernstein bound.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Smallest effective sample size with which an estimate is given
/// ([`EvalOptions::min_ess`]'s default).
pub const DEFAULT_MIN_ESS: f64 = 10.0;
/// Smallest coverage with which an estimate is given
/// ([`EvalOptions::min_coverage`]'s default).
pub const DEFAULT_MIN_COVERAGE: f64 = 0.95;
/// Bootstrap replicates by default.
pub const DEFAULT_REPLICATES: usize = 200;
/// Most bootstrap replicates accepted.
pub const MAX_REPLICATES: usize = 10_000;

/// How an evaluation runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalOptions {
    /// Bootstrap replicates (Poisson bootstrap; 1 to [`MAX_REPLICATES`]).
    pub replicates: usize,
    /// Seed of the bootstrap's weights (same seed, same interval; 0 by
    /// default, as in Python).
    pub seed: u64,
    /// Confidence level of the intervals, in (0, 1).
    pub confidence: f64,
    /// The range rewards are known to lie in, `(low, high)`: enables the
    /// empirical-Bernstein bound of the one-step IPS and DR (a reward
    /// outside it is an error).
    pub reward_range: Option<(f64, f64)>,
    /// Below this effective sample size the answer is insufficient support.
    pub min_ess: f64,
    /// Below this coverage (the target policy's mean probability mass on
    /// actions the behaviour policy could take) the answer is insufficient
    /// support.
    pub min_coverage: f64,
    /// Discount of the episode estimators' returns, in [0, 1].
    pub discount: f64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            replicates: DEFAULT_REPLICATES,
            seed: 0,
            confidence: 0.95,
            reward_range: None,
            min_ess: DEFAULT_MIN_ESS,
            min_coverage: DEFAULT_MIN_COVERAGE,
            discount: 1.0,
        }
    }
}

impl EvalOptions {
    /// Checks every field; errors name it.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_REPLICATES).contains(&self.replicates) {
            return Err(Error::field(
                "replicates",
                format!("must be in 1..={MAX_REPLICATES}"),
            ));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(Error::field("confidence", "must be in (0, 1)"));
        }
        if let Some((lo, hi)) = self.reward_range {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(Error::field(
                    "reward_range",
                    "must be two finite numbers, low < high",
                ));
            }
        }
        if !(self.min_ess >= 0.0 && self.min_ess.is_finite()) {
            return Err(Error::field("min_ess", "must be a finite number ≥ 0"));
        }
        if !(0.0..=1.0).contains(&self.min_coverage) {
            return Err(Error::field("min_coverage", "must be in [0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.discount) {
            return Err(Error::field("discount", "must be in [0, 1]"));
        }
        Ok(())
    }
}

/// One decision scored against a target policy: what a one-step
/// accumulator adds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// The bootstrap key ([`unit_key`](super::unit_key) of the decision id).
    pub unit: u64,
    /// The logged reward.
    pub reward: f64,
    /// The importance weight `π(a|s) / μ(a|s)`.
    pub weight: f64,
    /// The direct model's value of the target policy, `Σ_a π(a|s) q̂(s, a)`.
    pub direct: f64,
    /// The direct model's value of the logged action, `q̂(s, a)`.
    pub direct_logged: f64,
    /// The target's probability mass on actions the behaviour could take.
    pub coverage: f64,
}

/// The estimators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// Inverse propensity scoring: `mean(w·r)`.
    Ips,
    /// Self-normalised IPS: `Σ w·r / Σ w`.
    Snips,
    /// Doubly robust: `mean(Σ_a π(a|s) q̂(s,a) + w·(r − q̂(s,a)))`.
    DoublyRobust,
    /// Per-decision weighted importance sampling over episodes.
    PerDecisionWis,
    /// Per-decision doubly robust over episodes (Q-values as value model).
    PerDecisionDr,
}

/// How an interval was computed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum CiMethod {
    /// Percentile interval of a Poisson bootstrap: each decision (or
    /// episode) weighted by a Poisson(1) count per replicate, drawn from
    /// its id and the seed.
    PoissonBootstrap {
        /// Replicates.
        replicates: usize,
        /// Whether the units are episodes (else decisions).
        over_episodes: bool,
    },
    /// Empirical-Bernstein bound (Maurer & Pontil 2009, two-sided at the
    /// confidence level), from the declared reward range and the largest
    /// observed weight.
    EmpiricalBernstein,
}

/// A confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// How it was computed.
    #[serde(flatten)]
    pub method: CiMethod,
}

impl Interval {
    /// Whether `x` lies in the closed interval.
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// An estimate with its intervals.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimated value of the target policy.
    pub value: f64,
    /// The bootstrap interval.
    pub ci: Interval,
    /// The empirical-Bernstein bound, where rewards are declared bounded
    /// and the estimator has one.
    pub bound: Option<Interval>,
}

/// Why no number is given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Insufficient {
    /// Nothing to evaluate (no decision with a known reward).
    NoData,
    /// The target policy puts too much mass where the log never went.
    LowCoverage {
        /// The coverage.
        coverage: f64,
        /// The threshold.
        min: f64,
    },
    /// Too few decisions (or episodes) carry the weight.
    LowEffectiveSampleSize {
        /// The effective sample size.
        ess: f64,
        /// The threshold.
        min: f64,
    },
}

/// An estimator's answer: a number with its intervals, or insufficient
/// support.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// An estimate.
    Estimate(Estimate),
    /// Too little support or effective sample size to say anything.
    InsufficientSupport(Insufficient),
}

impl Outcome {
    /// The estimate's value, if any.
    pub fn value(&self) -> Option<f64> {
        self.estimate().map(|e| e.value)
    }

    /// The estimate, if any.
    pub fn estimate(&self) -> Option<&Estimate> {
        match self {
            Outcome::Estimate(e) => Some(e),
            Outcome::InsufficientSupport(_) => None,
        }
    }
}

/// One estimator's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EstimatorResult {
    /// Which estimator.
    pub estimator: Estimator,
    /// Its answer.
    pub outcome: Outcome,
}

/// What tells whether an estimate can be trusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Decisions (one-step) or episodes evaluated.
    pub n: u64,
    /// Effective sample size `(Σw)² / Σw²` (episodes: of the whole-episode
    /// weights).
    pub ess: f64,
    /// Share of decisions (episodes: of episodes) the target policy could
    /// have taken: `π(a|s) > 0` on the logged action (every step's).
    pub support: f64,
    /// The target policy's mean probability mass on actions the behaviour
    /// policy could take: all allowed actions when the logged probability
    /// is below 1, else the logged action alone (exploration off).
    pub coverage: f64,
    /// The largest weight.
    pub max_weight: f64,
    /// The mean logged reward (one-step) or return (episodes, discounted).
    pub logged_mean: f64,
}

impl Diagnostics {
    /// Why no estimate can be given, if so.
    pub(super) fn insufficient(&self, opts: &EvalOptions) -> Option<Insufficient> {
        if self.n == 0 {
            return Some(Insufficient::NoData);
        }
        if self.coverage < opts.min_coverage {
            return Some(Insufficient::LowCoverage {
                coverage: self.coverage,
                min: opts.min_coverage,
            });
        }
        if self.ess.is_nan() || self.ess < opts.min_ess {
            return Some(Insufficient::LowEffectiveSampleSize {
                ess: self.ess,
                min: opts.min_ess,
            });
        }
        None
    }
}

/// The counts behind [`Diagnostics`], kept by both accumulators.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Tally {
    /// Decisions (one-step) or episodes.
    pub units: u64,
    /// Units with a positive (whole-episode) weight.
    pub supported: u64,
    /// Decisions, and the sum of their coverage.
    pub steps: f64,
    pub coverage: f64,
    /// The sum of the units' logged rewards (returns).
    pub rewards: f64,
    /// The units' (whole-episode) weights.
    pub weights: Moments,
    /// The largest weight seen (episodes: at any step).
    pub max_weight: f64,
}

impl Tally {
    /// Counts one unit of `steps` decisions with weight `w`.
    pub fn add(&mut self, w: f64, steps: f64, coverage: f64, reward: f64, max_weight: f64) {
        self.units += 1;
        self.supported += u64::from(w > 0.0);
        self.steps += steps;
        self.coverage += coverage;
        self.rewards += reward;
        self.weights.add(w);
        self.max_weight = self.max_weight.max(max_weight);
    }

    pub fn merge(&mut self, o: &Tally) {
        self.units += o.units;
        self.supported += o.supported;
        self.steps += o.steps;
        self.coverage += o.coverage;
        self.rewards += o.rewards;
        self.weights.merge(&o.weights);
        self.max_weight = self.max_weight.max(o.max_weight);
    }

    pub fn diagnostics(&self) -> Diagnostics {
        let per = |x: f64, d: f64| if d > 0.0 { x / d } else { 0.0 };
        let (n, w) = (self.units as f64, &self.weights);
        Diagnostics {
            n: self.units,
            ess: per(w.sum * w.sum, w.sum_sq),
            support: per(self.supported as f64, n),
            coverage: per(self.coverage, self.steps),
            max_weight: self.max_weight,
            logged_mean: per(self.rewards, n),
        }
    }
}

/// The results of `estimators`: the `estimates` (computed only then) when
/// the diagnostics allow, else insufficient support for each.
pub(super) fn results(
    diagnostics: &Diagnostics,
    opts: &EvalOptions,
    estimators: &[Estimator],
    estimates: impl FnOnce() -> Vec<Estimate>,
) -> Vec<EstimatorResult> {
    let outcomes: Vec<Outcome> = match diagnostics.insufficient(opts) {
        Some(why) => vec![Outcome::InsufficientSupport(why); estimators.len()],
        None => estimates().into_iter().map(Outcome::Estimate).collect(),
    };
    estimators
        .iter()
        .zip(outcomes)
        .map(|(&estimator, outcome)| EstimatorResult { estimator, outcome })
        .collect()
}

/// The generator of a unit's Poisson counts: one per unit and seed.
pub(super) fn unit_rng(unit: u64, seed: u64) -> Rng {
    Rng::from_seed(unit ^ seed.rotate_left(29).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// `⌊2^16 · P(Poisson(1) ≤ k)⌋` for k = 0..8: a 16-bit uniform `u` draws
/// the count `#{k : u ≥ T[k]}` (capped at 9; a larger count has
/// probability below 2^-16).
const POISSON1_U16: [u16; 9] = {
    let mut t = [0u16; 9];
    let mut p = 0.367_879_441_171_442_33; // e^-1
    let mut c = p;
    let mut k = 0;
    while k < 9 {
        let x = c * 65_536.0;
        t[k] = if x >= 65_535.0 { 65_535 } else { x as u16 };
        k += 1;
        p /= k as f64;
        c += p;
    }
    t
};

/// Fills `counts` with Poisson(1) counts, four per 64 random bits: the
/// count is the number of thresholds at or below a 16-bit uniform, the
/// first three compared without a branch (a count of 3 or more, 8 % of
/// draws, walks the rest).
#[inline]
pub(super) fn poisson_counts(rng: &mut Rng, counts: &mut [f64]) {
    const T: [u16; 9] = POISSON1_U16;
    for chunk in counts.chunks_mut(4) {
        let bits = rng.next_u64();
        for (i, c) in chunk.iter_mut().enumerate() {
            let u = (bits >> (16 * i)) as u16;
            let mut k = usize::from(u >= T[0]) + usize::from(u >= T[1]) + usize::from(u >= T[2]);
            if k == 3 {
                while k < T.len() && u >= T[k] {
                    k += 1;
                }
            }
            *c = k as f64;
        }
    }
}

/// The percentile interval of bootstrap replicate values (NaNs, from
/// replicates that drew no unit, are dropped).
pub(super) fn percentile_interval(
    mut values: Vec<f64>,
    confidence: f64,
    method: CiMethod,
) -> Interval {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let at = |q: f64| -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        let pos = q * (values.len() - 1) as f64;
        let (i, f) = (pos.floor() as usize, pos.fract());
        let j = (i + 1).min(values.len() - 1);
        values[i] + f * (values[j] - values[i])
    };
    let tail = (1.0 - confidence) / 2.0;
    Interval {
        low: at(tail),
        high: at(1.0 - tail),
        method,
    }
}

/// Sums of a unit value and its square, for the mean, its variance and the
/// empirical-Bernstein bound.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Moments {
    pub n: f64,
    pub sum: f64,
    pub sum_sq: f64,
}

impl Moments {
    pub fn add(&mut self, x: f64) {
        self.n += 1.0;
        self.sum += x;
        self.sum_sq += x * x;
    }

    pub fn merge(&mut self, o: &Moments) {
        self.n += o.n;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.n
    }

    /// The sample variance (unbiased; 0 below two units).
    pub fn variance(&self) -> f64 {
        if self.n < 2.0 {
            return 0.0;
        }
        ((self.sum_sq - self.sum * self.sum / self.n) / (self.n - 1.0)).max(0.0)
    }

    /// The two-sided empirical-Bernstein interval of the mean of units that
    /// lie in a range of width `width`: `mean ± (√(2 V ln(4/δ) / n) + 7
    /// width ln(4/δ) / (3 (n − 1)))` with `δ = 1 − confidence`.
    pub fn bernstein(&self, width: f64, confidence: f64) -> Option<Interval> {
        if self.n < 2.0 || !width.is_finite() {
            return None;
        }
        let l = (4.0 / (1.0 - confidence)).ln();
        let half =
            (2.0 * self.variance() * l / self.n).sqrt() + 7.0 * width * l / (3.0 * (self.n - 1.0));
        let m = self.mean();
        Some(Interval {
            low: m - half,
            high: m + half,
            method: CiMethod::EmpiricalBernstein,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_counts_have_mean_and_variance_one() {
        let mut rng = Rng::from_seed(5);
        let mut m = Moments::default();
        let mut counts = [0.0; 7];
        for _ in 0..40_000 {
            poisson_counts(&mut rng, &mut counts);
            counts.iter().for_each(|&k| m.add(k));
        }
        assert_eq!(POISSON1_U16[0], 24_109); // 0.36788 · 65536
        assert!((m.mean() - 1.0).abs() < 0.01, "{}", m.mean());
        assert!((m.variance() - 1.0).abs() < 0.02, "{}", m.variance());
    }

    #[test]
    fn percentiles_interpolate() {
        let m = CiMethod::EmpiricalBernstein;
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        let i = percentile_interval(v, 0.9, m);
        assert!(
            (i.low - 5.0).abs() < 1e-9 && (i.high - 95.0).abs() < 1e-9,
            "{i:?}"
        );
        let i = percentile_interval(vec![f64::NAN, 1.0, 3.0], 0.5, m);
        assert_eq!((i.low, i.high), (1.5, 2.5));
    }
}
