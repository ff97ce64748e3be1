//! Progressive replay: a candidate configuration evaluated on the log by a
//! shadow model that walks it in the order the transitions were applied,
//! scored on each decision before it learns from it.

use std::collections::HashMap;

use crate::decisions::Outcome as EndOutcome;
use crate::error::Result;
use crate::model::{Experience, Model};

use super::one_step::{Direct, OneStepAccumulator, OneStepReport};
use super::policy::TargetPolicy;
use super::stats::EvalOptions;
use super::LoggedStep;

/// What a replay gives back.
#[derive(Clone, Debug)]
pub struct Replayed {
    /// IPS, SNIPS and DR of the shadow's policy (its direct model: the
    /// shadow's Q-values at that point of the walk).
    pub report: OneStepReport,
    /// The shadow model after the walk.
    pub model: Model,
    /// Transitions it learned.
    pub learned: u64,
}

/// Walks `steps` in applied order (see [`LoggedStep::order_key`]) with
/// `shadow` (a fresh model of the candidate configuration, or a copy of a
/// live one): each decision with a known reward is scored against the
/// shadow's exploring policy (`explore`) or greedy policy, then each
/// applied decision's transition is learned exactly as the live model
/// learned it (the next step's state, action and allowed actions; the
/// episode's end on its last step, terminal when the log does not say).
///
/// Replaying a model's own configuration from an empty model over its
/// whole log reproduces its Q-table bit for bit for Q-learning, SARSA and
/// expected SARSA (double Q-learning draws which table to update from the
/// generator that predictions also draw from, so its replay agrees in
/// distribution only).
pub fn replay(
    steps: &[LoggedStep],
    mut shadow: Model,
    explore: bool,
    opts: &EvalOptions,
) -> Result<Replayed> {
    let mut acc = OneStepAccumulator::new(opts)?;
    let mut order: Vec<&LoggedStep> = steps.iter().collect();
    order.sort_by(|a, b| {
        a.order_key()
            .cmp(&b.order_key())
            .then_with(|| a.decision_id.cmp(&b.decision_id))
    });
    let by_step: HashMap<(&str, u64), &LoggedStep> = steps
        .iter()
        .filter_map(|s| Some(((s.episode_id.as_deref()?, s.step), s)))
        .collect();
    let mut learned = 0;
    for s in order {
        {
            let target = if explore {
                TargetPolicy::Exploring(&shadow)
            } else {
                TargetPolicy::Greedy(&shadow)
            };
            acc.add_step(s, &target, &Direct::QValues(&shadow))?;
        }
        let (true, Some(reward)) = (s.applied, s.reward) else {
            continue;
        };
        let mut exp =
            Experience::new(s.state.as_ref(), s.action, reward, s.state.as_ref()).done(true);
        let next = s
            .episode_id
            .as_deref()
            .and_then(|ep| by_step.get(&(ep, s.step + 1)));
        if let Some(next) = next {
            exp.next_state = next.state.as_ref();
            exp.next_action = Some(next.action);
            exp.next_allowed_actions = next.allowed_actions.as_deref();
            exp.done = false;
        } else if let Some(end) = &s.episode_end {
            if end.outcome == EndOutcome::Truncated {
                if let Some(ns) = &end.next_state {
                    exp.next_state = ns.as_ref();
                }
                exp.next_allowed_actions = end.next_allowed_actions.as_deref();
                exp.done = false;
                exp.truncated = true;
            }
        }
        shadow.update(&exp)?;
        learned += 1;
    }
    Ok(Replayed {
        report: acc.finish(opts),
        model: shadow,
        learned,
    })
}
