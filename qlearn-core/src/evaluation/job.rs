//! An evaluation as a job (issue 18 over HTTP): the request a client sends
//! ([`EvalRequest`], validated and normalised here), and what a job
//! computes from it ([`JobRun`]: pages of the decision log read newest
//! first, then every requested policy) into a [`JobResult`].
//!
//! The host only schedules: it reads pages through the store, hands them
//! to [`JobRun::add_page`], and calls [`JobRun::finish`] with the model.
//! Everything a job answers is decided here, so every store and host
//! evaluates alike.

use serde::{Deserialize, Serialize};

use crate::config::{Algorithm, Exploration, ModelConfig};
use crate::decisions::DecisionRecord;
use crate::error::{Error, Result};
use crate::model::Model;

use super::{
    evaluate_episodes, n_actions_of, replay, Diagnostics, Direct, EstimatorResult, EvalOptions,
    Interval, LoggedStep, OneStepAccumulator, RewardMeans, TargetPolicy, DEFAULT_MIN_COVERAGE,
    DEFAULT_MIN_ESS, DEFAULT_REPLICATES,
};

/// Most policies one job evaluates.
pub const MAX_POLICIES: usize = 16;
/// Most bootstrap replicates a job takes (a job's cost grows with
/// decisions × replicates × policies, and workers are shared by every
/// tenant; in-process evaluations take up to [`super::MAX_REPLICATES`]).
pub const MAX_JOB_REPLICATES: usize = 1_000;
/// Longest candidate name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// The configuration fields a candidate changes (the engine fields of
/// `PATCH /models/{id}`; `n_actions` and `state_bins` cannot change, the
/// name and action names do not matter to an evaluation).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateConfig {
    /// α.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// γ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_factor: Option<f64>,
    /// Exploration rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// Epsilon decay factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon_decay: Option<f64>,
    /// Epsilon floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_epsilon: Option<f64>,
    /// Q-value of unseen pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_q: Option<f64>,
    /// The learning rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    /// The exploration strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exploration: Option<Exploration>,
    /// Softmax temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The shadow model's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl CandidateConfig {
    /// The model's configuration with these fields changed, validated.
    pub fn apply(&self, base: &ModelConfig) -> Result<ModelConfig> {
        let mut config = base.clone();
        let set = |slot: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut config.learning_rate, self.learning_rate);
        set(&mut config.discount_factor, self.discount_factor);
        set(&mut config.epsilon, self.epsilon);
        set(&mut config.epsilon_decay, self.epsilon_decay);
        set(&mut config.min_epsilon, self.min_epsilon);
        set(&mut config.initial_q, self.initial_q);
        set(&mut config.temperature, self.temperature);
        config.algorithm = self.algorithm.unwrap_or(base.algorithm);
        config.exploration = self.exploration.unwrap_or(base.exploration);
        config.seed = self.seed.or(base.seed);
        config.validate()?;
        Ok(config)
    }
}

fn yes() -> bool {
    true
}

/// A policy a job evaluates (`{"kind": ...}` on the wire).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PolicySpec {
    /// The model's greedy policy.
    Greedy,
    /// The model's exploring policy.
    Exploring,
    /// Uniform over the allowed actions.
    Uniform,
    /// The logged behaviour.
    Logged,
    /// A baseline action recorded with each decision.
    Baseline,
    /// A candidate configuration, by progressive replay.
    Candidate {
        /// The client's label.
        name: String,
        /// The fields changed from the model's configuration.
        config: CandidateConfig,
        /// Score the shadow's exploring policy (default) or its greedy one.
        #[serde(default = "yes")]
        explore: bool,
    },
}

/// Which estimators a job runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalMode {
    /// Every decision as one step (IPS, SNIPS, DR).
    OneStep,
    /// Whole finished episodes (per-decision WIS and DR).
    Episodes,
    /// Episodes when the log read has episode ids, else one step.
    #[default]
    Auto,
}

/// The one-step DR's direct model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectModel {
    /// The log's per-(state, action) mean reward.
    #[default]
    LogMeans,
    /// The model's Q-values.
    QValues,
}

/// `POST /models/{id}/evaluations`: what to evaluate. Missing fields take
/// their defaults; [`EvalRequest::validate`] checks the rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalRequest {
    /// The policies, 1 to [`MAX_POLICIES`].
    pub policies: Vec<PolicySpec>,
    /// Only decisions logged at or after (Unix milliseconds).
    pub since: Option<i64>,
    /// Only decisions logged before (Unix milliseconds).
    pub until: Option<i64>,
    /// One step, episodes or auto.
    pub mode: EvalMode,
    /// The one-step DR's direct model.
    pub direct: DirectModel,
    /// Confidence level of the intervals.
    pub confidence: f64,
    /// Bootstrap replicates.
    pub replicates: usize,
    /// Bootstrap seed.
    pub seed: u64,
    /// `[low, high]` the rewards lie in (adds the Bernstein bound).
    pub reward_range: Option<(f64, f64)>,
    /// Smallest effective sample size that gives a number.
    pub min_ess: f64,
    /// Smallest coverage that gives a number.
    pub min_coverage: f64,
    /// The episodes' discount.
    pub discount: f64,
}

impl Default for EvalRequest {
    fn default() -> Self {
        EvalRequest {
            policies: Vec::new(),
            since: None,
            until: None,
            mode: EvalMode::Auto,
            direct: DirectModel::LogMeans,
            confidence: 0.95,
            replicates: DEFAULT_REPLICATES,
            seed: 0,
            reward_range: None,
            min_ess: DEFAULT_MIN_ESS,
            min_coverage: DEFAULT_MIN_COVERAGE,
            discount: 1.0,
        }
    }
}

impl EvalRequest {
    /// The estimators' options.
    pub fn options(&self) -> EvalOptions {
        EvalOptions {
            replicates: self.replicates,
            seed: self.seed,
            confidence: self.confidence,
            reward_range: self.reward_range,
            min_ess: self.min_ess,
            min_coverage: self.min_coverage,
            discount: self.discount,
        }
    }

    /// Checks every field against the model's configuration `base` (each
    /// candidate's configuration must be valid); errors name the field.
    pub fn validate(&self, base: &ModelConfig) -> Result<()> {
        if self.policies.is_empty() || self.policies.len() > MAX_POLICIES {
            return Err(Error::field(
                "policies",
                format!("must list 1 to {MAX_POLICIES} policies"),
            ));
        }
        if let (Some(s), Some(u)) = (self.since, self.until) {
            if s >= u {
                return Err(Error::field("until", "must be after since"));
            }
        }
        self.options().validate()?;
        if self.replicates > MAX_JOB_REPLICATES {
            return Err(Error::field(
                "replicates",
                format!("a job takes at most {MAX_JOB_REPLICATES}"),
            ));
        }
        for (i, p) in self.policies.iter().enumerate() {
            if let PolicySpec::Candidate { name, config, .. } = p {
                let chars = name.chars().count();
                if chars == 0 || chars > MAX_NAME_CHARS {
                    return Err(Error::field(
                        format!("policies[{i}].name"),
                        format!("must be 1 to {MAX_NAME_CHARS} characters"),
                    ));
                }
                config.apply(base).map_err(|e| match e {
                    Error::InvalidField { field, message } => Error::InvalidField {
                        field: format!("policies[{i}].config.{field}"),
                        message,
                    },
                    other => other,
                })?;
            }
        }
        Ok(())
    }
}

/// Why a policy (or a job) has no result: a machine code and a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// e.g. `invalid_field`, `not_found`, `internal`.
    pub code: String,
    /// In words.
    pub message: String,
}

impl JobError {
    /// The error's code as the HTTP API spells it, and its message.
    pub fn of(e: &Error) -> JobError {
        let code = match e {
            Error::InvalidField { .. } => "invalid_field",
            Error::InvalidState { .. } => "invalid_state",
            Error::InvalidAction { .. } => "invalid_action",
            Error::NotFound(_) => "not_found",
            Error::Storage { .. } => "storage_unavailable",
            _ => "internal",
        };
        JobError {
            code: code.into(),
            message: e.to_string(),
        }
    }
}

/// The logged behaviour's mean reward (return, in episodes) and its
/// bootstrap interval (`None` with nothing to evaluate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedReward {
    /// The mean.
    pub mean: f64,
    /// Its interval.
    pub interval: Option<Interval>,
}

/// What a replay adds to a candidate's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayInfo {
    /// Transitions the shadow model learned.
    pub learned: u64,
}

/// One policy's result: the core report's fields, or an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyResult {
    /// The policy as requested.
    pub policy: PolicySpec,
    /// Sample size, ESS, support, coverage, largest weight, logged mean.
    pub diagnostics: Option<Diagnostics>,
    /// The estimators' answers (one step: IPS, SNIPS, DR; episodes:
    /// per-decision WIS and DR).
    pub results: Vec<EstimatorResult>,
    /// A candidate's replay.
    pub replay: Option<ReplayInfo>,
    /// Why this policy could not be evaluated.
    pub error: Option<JobError>,
}

/// What a finished job answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The mode used (`auto` resolved).
    pub mode: EvalMode,
    /// Decisions read.
    pub decisions: u64,
    /// Episodes evaluated (episodes mode), else `None`.
    pub episodes: Option<u64>,
    /// Episodes left out (unfinished or cut by the time range).
    pub skipped_episodes: Option<u64>,
    /// Whether the log had more decisions than the plan evaluates (the
    /// newest were evaluated).
    pub truncated: bool,
    /// The logged behaviour's reward.
    pub logged_reward: LoggedReward,
    /// One result per requested policy, in order.
    pub policies: Vec<PolicyResult>,
}

/// A job in progress: the decisions read so far, newest first, at most
/// `cap` of them.
#[derive(Debug)]
pub struct JobRun {
    request: EvalRequest,
    cap: u64,
    steps: Vec<LoggedStep>,
    truncated: bool,
}

impl JobRun {
    /// A job for `request` (validated) evaluating at most `cap` decisions.
    pub fn new(request: EvalRequest, cap: u64) -> JobRun {
        JobRun {
            request,
            cap,
            steps: Vec::new(),
            truncated: false,
        }
    }

    /// Decisions read so far.
    pub fn read(&self) -> u64 {
        self.steps.len() as u64
    }

    /// Adds a page of the log read newest first (`(time, id)` descending);
    /// returns whether to read another (false once `cap` is reached or the
    /// page came back short of `page_size`).
    pub fn add_page(&mut self, page: &[DecisionRecord], page_size: usize) -> Result<bool> {
        for rec in page {
            if self.read() >= self.cap {
                self.truncated = true;
                return Ok(false);
            }
            self.steps.push(LoggedStep::from_record(rec)?);
        }
        Ok(page.len() >= page_size)
    }

    /// Evaluates every policy on the decisions read, with `model` the
    /// live model (its policies, Q-values and configuration). Between
    /// policies `go_on` is asked whether to continue: `Ok(None)` when it
    /// said no (a cancelled job).
    pub fn finish(
        mut self,
        model: &Model,
        mut go_on: impl FnMut() -> bool,
    ) -> Result<Option<JobResult>> {
        self.steps.sort_by(|a, b| {
            a.order_key()
                .cmp(&b.order_key())
                .then_with(|| a.decision_id.cmp(&b.decision_id))
        });
        let steps = &self.steps;
        let req = &self.request;
        let opts = req.options();
        let mode = match req.mode {
            EvalMode::Auto if steps.iter().any(|s| s.episode_id.is_some()) => EvalMode::Episodes,
            EvalMode::Auto => EvalMode::OneStep,
            m => m,
        };
        let n_actions = model.config().n_actions.max(n_actions_of(steps));
        let means = match (mode, req.direct) {
            (EvalMode::OneStep, DirectModel::LogMeans) => Some(RewardMeans::fit(steps, n_actions)?),
            _ => None,
        };
        let direct = match &means {
            Some(m) => Direct::Means(m),
            None => Direct::QValues(model),
        };
        let eval = |target: &TargetPolicy<'_>| -> Result<(Diagnostics, Vec<EstimatorResult>, Option<u64>)> {
            if mode == EvalMode::Episodes {
                let r = evaluate_episodes(steps, target, Some(model), &opts)?;
                return Ok((r.diagnostics, r.results, Some(r.skipped_episodes)));
            }
            let mut acc = OneStepAccumulator::new(&opts)?;
            for s in steps {
                acc.add_step(s, target, &direct)?;
            }
            let r = acc.finish(&opts);
            Ok((r.diagnostics, r.results, None))
        };
        let (logged, logged_results, skipped) = eval(&TargetPolicy::Logged)?;
        let logged_reward = LoggedReward {
            mean: logged.logged_mean,
            interval: logged_results
                .first()
                .and_then(|r| r.outcome.estimate())
                .map(|e| e.ci),
        };
        let mut policies = Vec::with_capacity(req.policies.len());
        for spec in &req.policies {
            if !go_on() {
                return Ok(None);
            }
            let mut out = PolicyResult {
                policy: spec.clone(),
                diagnostics: None,
                results: Vec::new(),
                replay: None,
                error: None,
            };
            let answer = match spec {
                PolicySpec::Candidate {
                    config, explore, ..
                } => config
                    .apply(model.config())
                    .and_then(Model::new)
                    .and_then(|shadow| replay(steps, shadow, *explore, &opts))
                    .map(|r| {
                        out.replay = Some(ReplayInfo { learned: r.learned });
                        (r.report.diagnostics, r.report.results, None)
                    }),
                PolicySpec::Greedy => eval(&TargetPolicy::Greedy(model)),
                PolicySpec::Exploring => eval(&TargetPolicy::Exploring(model)),
                PolicySpec::Uniform => eval(&TargetPolicy::Uniform(n_actions)),
                PolicySpec::Logged => Ok((logged, logged_results.clone(), skipped)),
                PolicySpec::Baseline => eval(&TargetPolicy::Baseline),
            };
            match answer {
                Ok((d, r, _)) => {
                    out.diagnostics = Some(d);
                    out.results = r;
                }
                Err(e) => out.error = Some(JobError::of(&e)),
            }
            policies.push(out);
        }
        let episodes = (mode == EvalMode::Episodes).then_some(logged.n);
        Ok(Some(JobResult {
            mode,
            decisions: self.read(),
            episodes,
            skipped_episodes: skipped,
            truncated: self.truncated,
            logged_reward,
            policies,
        }))
    }
}
