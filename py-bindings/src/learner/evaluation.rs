//! Offline evaluation (issue 18) from Python: `QLearner.evaluate` on the
//! in-process decision log and `qlearn.evaluate_export` on the NDJSON
//! export, over `qlearn_core::evaluation`.
//!
//! The estimators, the target policies' probabilities, the thresholds of
//! insufficient support and the replay are the core's; this file converts
//! arguments, reads the export, runs the evaluation with the GIL released
//! and returns the core's report as a dict (the JSON the service gives).

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::PyString;
use qlearn_core::evaluation::{
    self, Direct, EvalOptions, LoggedStep, TargetPolicy, DEFAULT_MIN_COVERAGE, DEFAULT_MIN_ESS,
    DEFAULT_REPLICATES,
};
use qlearn_core::{Error, Model};

use super::decisions::enabled;
use super::QLearner;
use crate::error::{poisoned, to_py, type_error, value_error};

// The signatures' literal defaults (Python shows literals) are the core's.
const _: () =
    assert!(DEFAULT_REPLICATES == 200 && DEFAULT_MIN_ESS == 10.0 && DEFAULT_MIN_COVERAGE == 0.95);

/// What to evaluate, as the Python caller named it.
struct Request {
    policy: String,
    episodes: bool,
    direct: String,
    explore: bool,
    opts: EvalOptions,
}

/// The evaluation's options from the keyword arguments.
#[allow(clippy::too_many_arguments)]
fn options(
    reward_range: Option<(f64, f64)>,
    confidence: f64,
    replicates: usize,
    seed: u64,
    min_ess: f64,
    min_coverage: f64,
    discount: f64,
) -> PyResult<EvalOptions> {
    let opts = EvalOptions {
        replicates,
        seed,
        confidence,
        reward_range,
        min_ess,
        min_coverage,
        discount,
    };
    opts.validate().map_err(to_py)?;
    Ok(opts)
}

/// Runs the evaluation: progressive replay when a candidate model is
/// given, else the one-step or episode estimators of the named policy.
fn run(
    steps: &[LoggedStep],
    model: Option<&Model>,
    candidate: Option<Model>,
    req: &Request,
) -> Result<serde_json::Value, Error> {
    let json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| Error::Internal(format!("evaluation report to JSON: {e}")))
    };
    if let Some(shadow) = candidate {
        let out = evaluation::replay(steps, shadow, req.explore, &req.opts)?;
        let mut v = json(serde_json::to_value(&out.report))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("learned".into(), out.learned.into());
        }
        return Ok(v);
    }
    let need_model = || {
        model.ok_or_else(|| {
            Error::field(
                "model",
                format!("policy {:?} needs the model (pass model=)", req.policy),
            )
        })
    };
    let target = match req.policy.as_str() {
        "greedy" => TargetPolicy::Greedy(need_model()?),
        "exploring" => TargetPolicy::Exploring(need_model()?),
        "uniform" => {
            let n = match model {
                Some(m) => m.config().n_actions,
                None => evaluation::n_actions_of(steps),
            };
            TargetPolicy::Uniform(n)
        }
        "logged" => TargetPolicy::Logged,
        "baseline" => TargetPolicy::Baseline,
        other => {
            return Err(Error::field(
                "policy",
                format!(
                    "must be greedy, exploring, uniform, logged or baseline (or pass candidate=), \
                     got {other:?}"
                ),
            ))
        }
    };
    if req.episodes {
        let values = match req.direct.as_str() {
            "q_values" => Some(need_model()?),
            "none" => None,
            other => {
                return Err(Error::field(
                    "direct",
                    format!("episodes take q_values or none, got {other:?}"),
                ))
            }
        };
        let r = evaluation::evaluate_episodes(steps, &target, values, &req.opts)?;
        return json(serde_json::to_value(&r));
    }
    let direct = match req.direct.as_str() {
        "log_means" => Direct::LogMeans,
        "q_values" => Direct::QValues(need_model()?),
        other => {
            return Err(Error::field(
                "direct",
                format!("must be log_means or q_values, got {other:?}"),
            ))
        }
    };
    let r = evaluation::evaluate_one_step(steps, &target, &direct, &req.opts)?;
    json(serde_json::to_value(&r))
}

/// The core's report as a Python dict (through `json.loads`).
fn to_dict(py: Python<'_>, v: &serde_json::Value) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(v)
        .map_err(|e| to_py(Error::Internal(format!("evaluation report: {e}"))))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// A copy of a QLearner's model (the lock held only while copying).
fn model_of(py: Python<'_>, learner: &QLearner) -> PyResult<Model> {
    Ok(learner.lock(py)?.clone())
}

/// The steps of an NDJSON export: a path (str or os.PathLike) or an
/// iterable of lines (str or bytes); blank lines are skipped.
fn export_steps(py: Python<'_>, source: &Bound<'_, PyAny>) -> PyResult<Vec<LoggedStep>> {
    let lines: Vec<String> =
        if source.is_instance_of::<PyString>() || source.hasattr("__fspath__")? {
            let path: PathBuf = source.extract()?;
            let text = py.detach(|| std::fs::read_to_string(&path)).map_err(|e| {
                pyo3::exceptions::PyOSError::new_err(format!("{}: {e}", path.display()))
            })?;
            return py.detach(|| parse_lines(text.lines())).map_err(to_py);
        } else {
            let mut out = Vec::new();
            for item in source
                .try_iter()
                .map_err(|_| type_error("source must be a path or an iterable of NDJSON lines"))?
            {
                let item = item?;
                let line = match item.extract::<String>() {
                    Ok(s) => s,
                    Err(_) => match item.extract::<Vec<u8>>() {
                        Ok(b) => String::from_utf8(b).map_err(|_| {
                            value_error(Error::field("line", "an export line is not UTF-8"))
                        })?,
                        Err(_) => return Err(type_error("each export line must be str or bytes")),
                    },
                };
                out.push(line);
            }
            out
        };
    py.detach(|| parse_lines(lines.iter().map(String::as_str)))
        .map_err(to_py)
}

/// Parses export lines; an error names the line (1-based).
fn parse_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Vec<LoggedStep>, Error> {
    let mut steps = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let step = LoggedStep::from_export_line(line).map_err(|e| match e {
            Error::InvalidField { field, message } => Error::InvalidField {
                field: format!("line {}: {field}", i + 1),
                message,
            },
            other => other,
        })?;
        steps.push(step);
    }
    Ok(steps)
}

/// Offline evaluation of a policy on an exported decision log (the NDJSON
/// of GET /models/{id}/decisions/export), or of a candidate configuration
/// by progressive replay. See QLearner.evaluate for the arguments and the
/// result.
///
/// Args:
///     source: a path (str or os.PathLike) of the export, or an iterable
///         of its lines (str or bytes).
///     policy: "greedy", "exploring", "uniform", "logged" or "baseline".
///     model: the QLearner whose policy ("greedy", "exploring") or
///         Q-values (direct="q_values") are meant; e.g. the model's own
///         export loaded with QLearner.from_bytes.
///
/// Raises:
///     ValueError: a malformed line (named), a missing behaviour
///         probability, an option out of range, a policy that needs model=.
///     TypeError: an argument of the wrong type.
#[pyfunction]
#[pyo3(signature = (
    source, policy = "logged", *, model = None, episodes = false, direct = "log_means",
    candidate = None, explore = true, reward_range = None, confidence = 0.95,
    replicates = 200, seed = 0, min_ess = 10.0, min_coverage = 0.95, discount = 1.0
))]
#[allow(clippy::too_many_arguments)]
pub fn evaluate_export(
    py: Python<'_>,
    source: &Bound<'_, PyAny>,
    policy: &str,
    model: Option<PyRef<'_, QLearner>>,
    episodes: bool,
    direct: &str,
    candidate: Option<PyRef<'_, QLearner>>,
    explore: bool,
    reward_range: Option<(f64, f64)>,
    confidence: f64,
    replicates: usize,
    seed: u64,
    min_ess: f64,
    min_coverage: f64,
    discount: f64,
) -> PyResult<Py<PyAny>> {
    let req = Request {
        policy: policy.to_owned(),
        episodes,
        direct: direct.to_owned(),
        explore,
        opts: options(
            reward_range,
            confidence,
            replicates,
            seed,
            min_ess,
            min_coverage,
            discount,
        )?,
    };
    let steps = export_steps(py, source)?;
    let model = model.map(|m| model_of(py, &m)).transpose()?;
    let candidate = candidate.map(|m| model_of(py, &m)).transpose()?;
    let v = py
        .detach(|| run(&steps, model.as_ref(), candidate, &req))
        .map_err(to_py)?;
    to_dict(py, &v)
}

#[pymethods]
impl QLearner {
    /// Offline evaluation on this agent's decision log (enable_decisions):
    /// what another policy would have earned on the decisions already
    /// logged, with confidence intervals.
    ///
    /// Args:
    ///     policy: "greedy" (this agent's greedy policy), "exploring" (its
    ///         exploring policy), "uniform", "logged" (the behaviour
    ///         itself) or "baseline" (the baseline_action given to each
    ///         decide() call; ValueError when a decision has none).
    ///     episodes: False: every decision as one step (IPS, SNIPS, doubly
    ///         robust); True: whole finished episodes (per-decision WIS and
    ///         per-decision DR).
    ///     direct: the DR's model: "log_means" (per-(state, action) mean
    ///         reward of the log; one-step only), "q_values" (this agent's)
    ///         or "none" (episodes).
    ///     candidate: a QLearner with a candidate configuration: evaluated
    ///         by progressive replay (a copy walks the log in applied order,
    ///         scored on each decision before it learns from it); policy is
    ///         then ignored and explore says which of its policies is
    ///         scored.
    ///     reward_range: (low, high) rewards are known to lie in: adds the
    ///         empirical-Bernstein bound to one-step IPS and DR.
    ///     confidence, replicates, seed: the interval's level and its
    ///         seeded Poisson bootstrap.
    ///     min_ess, min_coverage: below either, "insufficient_support"
    ///         instead of an estimate.
    ///     discount: the episodes' discount.
    ///
    /// Returns:
    ///     dict: {"diagnostics": {n, ess, support, coverage, max_weight,
    ///     logged_mean}, "results": [{"estimator", "outcome": {"kind":
    ///     "estimate", "value", "ci": {low, high, method, ...}, "bound"} or
    ///     {"kind": "insufficient_support", "reason", ...}}]} (episodes
    ///     add "skipped_episodes", a replay "learned").
    ///
    /// Raises:
    ///     RuntimeError: decisions are not enabled.
    ///     ValueError: an option out of range or an unknown policy.
    #[pyo3(signature = (
        policy = "greedy", *, episodes = false, direct = "log_means", candidate = None,
        explore = true, reward_range = None, confidence = 0.95,
        replicates = 200, seed = 0, min_ess = 10.0, min_coverage = 0.95, discount = 1.0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        py: Python<'_>,
        policy: &str,
        episodes: bool,
        direct: &str,
        candidate: Option<PyRef<'_, QLearner>>,
        explore: bool,
        reward_range: Option<(f64, f64)>,
        confidence: f64,
        replicates: usize,
        seed: u64,
        min_ess: f64,
        min_coverage: f64,
        discount: f64,
    ) -> PyResult<Py<PyAny>> {
        let req = Request {
            policy: policy.to_owned(),
            episodes,
            direct: direct.to_owned(),
            explore,
            opts: options(
                reward_range,
                confidence,
                replicates,
                seed,
                min_ess,
                min_coverage,
                discount,
            )?,
        };
        let steps = {
            let mut log = self.log.lock_py_attached(py).map_err(|_| poisoned())?;
            evaluation::steps_from_log(enabled(&mut log)?).map_err(to_py)?
        };
        let model = model_of(py, self)?;
        let candidate = candidate.map(|m| model_of(py, &m)).transpose()?;
        let v = py
            .detach(|| run(&steps, Some(&model), candidate, &req))
            .map_err(to_py)?;
        to_dict(py, &v)
    }
}
