//! [`TargetPolicy`]: the policy an evaluation asks about, and what it says
//! of one logged step.

use crate::error::{Error, Result};
use crate::model::Model;

use super::LoggedStep;

/// The policy whose value an evaluation estimates. A model's policies take
/// their probabilities from [`Model::action_probabilities`], the function
/// whose value the behaviour policy logged (so a target "equal to the
/// behaviour" gives weights of exactly 1).
#[derive(Clone, Copy, Debug)]
pub enum TargetPolicy<'a> {
    /// The model's greedy policy (exploration off; ties shared equally).
    Greedy(&'a Model),
    /// The model's exploring policy at its current epsilon or temperature.
    Exploring(&'a Model),
    /// Every allowed action with equal probability, out of `n_actions`.
    Uniform(usize),
    /// The logged behaviour itself (weight 1 on every decision).
    Logged,
    /// The baseline action recorded with each decision (an error on a
    /// decision without one).
    Baseline,
}

/// What a target policy says of one logged step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct PolicyScore {
    /// `π(a|s)` of the logged action.
    pub prob_logged: f64,
    /// `Σ_a π(a|s) q̂(s, a)` under the direct model `q̂`.
    pub direct: f64,
    /// The target's mass on actions the behaviour could take.
    pub coverage: f64,
}

impl TargetPolicy<'_> {
    /// Scores `step` with the direct model `q` (action → `q̂(s, a)`).
    pub(super) fn score(&self, step: &LoggedStep, q: impl Fn(usize) -> f64) -> Result<PolicyScore> {
        let allowed = step.allowed_actions.as_deref();
        let model = match self {
            TargetPolicy::Greedy(m) => Some((*m, false)),
            TargetPolicy::Exploring(m) => Some((*m, true)),
            _ => None,
        };
        if let Some((m, explore)) = model {
            let p = m.action_probabilities(step.state.as_ref(), allowed, explore)?;
            let prob_logged = p.get(step.action).copied().ok_or_else(|| {
                Error::action(
                    "action",
                    format!(
                        "decision {:?}: action {} is outside the model's {} actions",
                        step.decision_id,
                        step.action,
                        p.len()
                    ),
                )
            })?;
            let direct = p
                .iter()
                .enumerate()
                .filter(|(_, &pa)| pa > 0.0)
                .map(|(a, &pa)| pa * q(a))
                .sum();
            return Ok(PolicyScore {
                prob_logged,
                direct,
                coverage: coverage(step, prob_logged, 1.0),
            });
        }
        match self {
            TargetPolicy::Uniform(n) => {
                let n = *n;
                step.check_action(n)?;
                let (count, direct) = match allowed {
                    Some(a) => (a.len() as f64, a.iter().map(|&x| q(x)).sum::<f64>()),
                    None => (n as f64, (0..n).map(&q).sum::<f64>()),
                };
                Ok(PolicyScore {
                    prob_logged: 1.0 / count,
                    direct: direct / count,
                    coverage: coverage(step, 1.0 / count, 1.0),
                })
            }
            TargetPolicy::Baseline => {
                let b = step.baseline_action.ok_or_else(|| {
                    Error::field(
                        "baseline_action",
                        format!("decision {:?} records no baseline action", step.decision_id),
                    )
                })?;
                let inside = allowed.is_none_or(|a| a.contains(&b));
                let prob_logged = if b == step.action { 1.0 } else { 0.0 };
                Ok(PolicyScore {
                    prob_logged,
                    direct: q(b),
                    coverage: coverage(step, prob_logged, if inside { 1.0 } else { 0.0 }),
                })
            }
            // The behaviour itself: its full distribution is not logged, so
            // the direct term is the logged action's (an unbiased one-sample
            // estimate of `Σ_a μ(a|s) q̂(s, a)`).
            _ => Ok(PolicyScore {
                prob_logged: step.probability,
                direct: q(step.action),
                coverage: 1.0,
            }),
        }
    }
}

/// The target's mass on actions the behaviour could take: the engine's
/// exploring policies give every allowed action a positive probability, so
/// a logged probability below 1 covers the target's mass on the allowed
/// actions (`inside`); a probability of 1 (exploration off) covers the
/// logged action alone.
fn coverage(step: &LoggedStep, prob_logged: f64, inside: f64) -> f64 {
    if step.probability < 1.0 {
        inside
    } else {
        prob_logged
    }
}
