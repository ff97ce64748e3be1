//! Offline evaluation: what another policy would have earned on the
//! decisions a model already logged, with confidence intervals.
//!
//! The input is the decision log (issue 14) as [`LoggedStep`]s: the state,
//! the allowed actions, the chosen action, the probability with which the
//! behaviour policy chose it, and the learned reward. They come from an
//! in-process [`DecisionLog`](crate::decisions::DecisionLog) ([`steps_from_log`]) or from the NDJSON
//! export, one line at a time ([`LoggedStep::from_export_line`]).
//!
//! A [`TargetPolicy`] gives each step the probability of every action. For
//! a model's policies it is [`Model::action_probabilities`](crate::Model::action_probabilities), the function
//! whose value the behaviour policy logged, so the importance weight
//! `π(a|s) / μ(a|s)` compares like with like.
//!
//! The estimators are mergeable accumulators: a log can be evaluated in
//! chunks or in parallel, and [`OneStepAccumulator::merge`] (or
//! [`EpisodeAccumulator::merge`]) of the chunks gives the one-pass result
//! (to rounding: sums are added in another order).
//!
//! - one-step decisions ([`OneStepAccumulator`]): IPS, self-normalised IPS
//!   and doubly robust, the direct model being the per-(state, action) mean
//!   reward of the log ([`RewardMeans`], a first pass) or a model's
//!   Q-values;
//! - episodes ([`EpisodeAccumulator`]): per-decision weighted importance
//!   sampling and per-decision doubly robust with a model's Q-values as the
//!   value model.
//!
//! Each estimate comes with a confidence interval (a Poisson bootstrap over
//! decisions or episodes, seeded, so it is mergeable and repeatable; and an
//! empirical-Bernstein bound for the one-step IPS and DR when the rewards
//! are declared bounded), the effective sample size, the support, the
//! coverage and the largest weight. When coverage or effective sample size
//! is below [`EvalOptions`]' thresholds the answer is
//! [`Outcome::InsufficientSupport`], not a number.
//!
//! [`replay`] evaluates a candidate configuration by progressive replay: a
//! shadow [`Model`](crate::Model) walks the log in the order the transitions were applied,
//! is scored on each decision, then learns from it.
//!
//! This module is engine-only: no IO, no clock, no database.
//!
//! ```
//! use qlearn_core::decisions::{Decide, DecisionLog, DecisionsConfig};
//! use qlearn_core::evaluation::{self, EvalOptions, Direct, TargetPolicy};
//! use qlearn_core::{Model, ModelConfig};
//!
//! let mut config = ModelConfig::new(2);
//! config.seed = Some(1);
//! config.epsilon = 0.5;
//! let mut model = Model::new(config)?;
//! let mut log = DecisionLog::new(DecisionsConfig::default())?;
//! for t in 0..400 {
//!     let d = log.decide(&mut model, &Decide::new("home"), t)?;
//!     let reward = if d.action == 1 { 1.0 } else { 0.0 };
//!     log.reward(&mut model, &d.decision_id, reward, None, true, t)?;
//! }
//! let steps = evaluation::steps_from_log(&log)?;
//! let report = evaluation::evaluate_one_step(
//!     &steps,
//!     &TargetPolicy::Greedy(&model),
//!     &Direct::LogMeans,
//!     &EvalOptions::default(),
//! )?;
//! let ips = report.outcome(evaluation::Estimator::Ips).value().unwrap();
//! assert!(ips > 0.8); // the greedy policy takes action 1, which always pays
//! # Ok::<(), qlearn_core::Error>(())
//! ```

mod episodes;
mod input;
mod job;
mod one_step;
mod policy;
mod replay;
mod stats;

pub use episodes::{evaluate_episodes, group_episodes, EpisodeAccumulator, EpisodeReport};
pub use input::{n_actions_of, steps_from_log, unit_key, LoggedStep};
pub use job::{
    CandidateConfig, DirectModel, EvalMode, EvalRequest, JobError, JobResult, JobRun, LoggedReward,
    PolicyResult, PolicySpec, ReplayInfo, MAX_JOB_REPLICATES, MAX_NAME_CHARS, MAX_POLICIES,
};
pub use one_step::{evaluate_one_step, Direct, OneStepAccumulator, OneStepReport, RewardMeans};
pub use policy::TargetPolicy;
pub use replay::{replay, Replayed};
pub use stats::{
    CiMethod, Diagnostics, Estimate, Estimator, EstimatorResult, EvalOptions, Insufficient,
    Interval, Outcome, Scored, DEFAULT_MIN_COVERAGE, DEFAULT_MIN_ESS, DEFAULT_REPLICATES,
    MAX_REPLICATES,
};
