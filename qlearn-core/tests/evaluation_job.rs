//! An evaluation job's request and run (`evaluation::{EvalRequest,
//! JobRun}`): defaults and validation of the wire request, pages read
//! newest first with the plan's cap, and the result on a Bernoulli bandit
//! with known truth.

use qlearn_core::decisions::{Decide, DecisionLog, DecisionRecord, DecisionsConfig};
use qlearn_core::evaluation::{
    EvalMode, EvalRequest, JobResult, JobRun, Outcome, DEFAULT_REPLICATES,
};
use qlearn_core::rng::Rng;
use qlearn_core::{Error, Model, ModelConfig};

fn parse(body: &str) -> Result<EvalRequest, serde_json::Error> {
    serde_json::from_str(body)
}

#[test]
fn requests_take_defaults_and_are_validated() {
    let base = ModelConfig::new(2);
    let r = parse(r#"{"policies":[{"kind":"greedy"},{"kind":"candidate","name":"lr","config":{"learning_rate":0.05}}]}"#).unwrap();
    assert_eq!(r.mode, EvalMode::Auto);
    assert_eq!(
        (r.confidence, r.replicates, r.seed),
        (0.95, DEFAULT_REPLICATES, 0)
    );
    assert_eq!(
        (r.min_ess, r.min_coverage, r.reward_range),
        (10.0, 0.95, None)
    );
    r.validate(&base).unwrap();
    let echoed = serde_json::to_value(&r).unwrap();
    assert_eq!(echoed["policies"][1]["explore"], true);
    assert_eq!(echoed["direct"], "log_means");
    assert_eq!(
        parse(&echoed.to_string()).unwrap(),
        r,
        "the echo parses back"
    );
    for bad in [
        r#"{"policies":[{"kind":"greedy"}],"nope":1}"#,
        r#"{"policies":[{"kind":"best"}]}"#,
        r#"{"policies":[{"kind":"candidate","name":"x","config":{"n_actions":3}}]}"#,
        r#"{"policies":[{"kind":"greedy"}],"mode":"sometimes"}"#,
        r#"{"policies":[{"kind":"greedy"}],"reward_range":[0]}"#,
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    let field = |body: &str| match parse(body).unwrap().validate(&base) {
        Err(Error::InvalidField { field, .. }) => field,
        other => panic!("{body}: {other:?}"),
    };
    assert_eq!(field(r#"{"policies":[]}"#), "policies");
    assert_eq!(
        field(r#"{"policies":[{"kind":"greedy"}],"confidence":1}"#),
        "confidence"
    );
    assert_eq!(
        field(r#"{"policies":[{"kind":"greedy"}],"replicates":0}"#),
        "replicates"
    );
    assert_eq!(
        field(r#"{"policies":[{"kind":"greedy"}],"since":5,"until":5}"#),
        "until"
    );
    assert_eq!(
        field(r#"{"policies":[{"kind":"greedy"}],"reward_range":[1,0]}"#),
        "reward_range"
    );
    assert_eq!(
        field(
            r#"{"policies":[{"kind":"greedy"},{"kind":"candidate","name":"x","config":{"learning_rate":2}}]}"#
        ),
        "policies[1].config.learning_rate"
    );
    assert_eq!(
        field(r#"{"policies":[{"kind":"candidate","name":"","config":{}}]}"#),
        "policies[0].name"
    );
    let many = format!(
        r#"{{"policies":[{}]}}"#,
        vec![r#"{"kind":"greedy"}"#; 17].join(",")
    );
    assert_eq!(field(&many), "policies");
}

/// A two-armed bandit (arm 1 pays 0.8, arm 0 pays 0.2) logged at epsilon
/// 0.3 through a decision log; returns the model and the records newest
/// first, and the rewards' mean.
fn bandit(n: usize, seed: u64) -> (Model, Vec<DecisionRecord>, f64) {
    let mut c = ModelConfig::new(2);
    c.seed = Some(seed);
    c.epsilon = 0.3;
    c.epsilon_decay = 1.0;
    c.min_epsilon = 0.3;
    let mut model = Model::new(c).unwrap();
    let mut log = DecisionLog::new(DecisionsConfig::default()).unwrap();
    let mut env = Rng::from_seed(seed ^ 0xabc);
    let mut sum = 0.0;
    for t in 0..n {
        let d = log
            .decide(&mut model, &Decide::new("home"), t as i64)
            .unwrap();
        let pays = if d.action == 1 { 0.8 } else { 0.2 };
        let r = f64::from(u8::from(env.next_f64() < pays));
        sum += r;
        log.reward(&mut model, &d.decision_id, r, None, true, t as i64)
            .unwrap();
    }
    let mut recs: Vec<DecisionRecord> = log.decisions().cloned().collect();
    recs.sort_by(|a, b| (b.time_ms, &b.decision_id).cmp(&(a.time_ms, &a.decision_id)));
    (model, recs, sum / n as f64)
}

fn run(req: EvalRequest, cap: u64, recs: &[DecisionRecord], model: &Model) -> JobResult {
    let mut job = JobRun::new(req, cap);
    for page in recs.chunks(100) {
        if !job.add_page(page, 100).unwrap() {
            break;
        }
    }
    job.finish(model, || true).unwrap().expect("not cancelled")
}

fn value(r: &JobResult, policy: usize, estimator: usize) -> f64 {
    match &r.policies[policy].results[estimator].outcome {
        Outcome::Estimate(e) => e.value,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_job_evaluates_the_bandit() {
    let (model, recs, mean) = bandit(2000, 7);
    let req = parse(
        r#"{"policies":[{"kind":"greedy"},{"kind":"uniform"},{"kind":"logged"},{"kind":"baseline"},
            {"kind":"candidate","name":"lr","config":{"learning_rate":0.05}}]}"#,
    )
    .unwrap();
    let r = run(req.clone(), 10_000, &recs, &model);
    assert_eq!(
        (r.mode, r.decisions, r.truncated, r.episodes),
        (EvalMode::OneStep, 2000, false, None)
    );
    assert!(
        (r.logged_reward.mean - mean).abs() < 1e-12,
        "{} vs {mean}",
        r.logged_reward.mean
    );
    let ci = r.logged_reward.interval.expect("an interval");
    assert!(ci.low < mean && mean < ci.high);
    let greedy = &r.policies[0];
    let ips = greedy.results[0].outcome.estimate().expect("greedy IPS");
    assert!(ips.ci.low <= 0.8 && 0.8 <= ips.ci.high, "{ips:?}");
    assert!(
        (value(&r, 1, 0) - 0.5).abs() < 0.06,
        "uniform {}",
        value(&r, 1, 0)
    );
    assert!(
        (value(&r, 2, 0) - mean).abs() < 1e-12,
        "logged IPS is the mean"
    );
    assert_eq!(
        r.policies[3].error.as_ref().map(|e| e.code.as_str()),
        Some("invalid_field")
    );
    assert!(r.policies[3].results.is_empty());
    assert_eq!(r.policies[4].replay.as_ref().map(|x| x.learned), Some(2000));
    assert!(r.policies[4].diagnostics.is_some() && r.policies[4].error.is_none());
    // The cap: the newest 500 decisions.
    let capped = run(req.clone(), 500, &recs, &model);
    assert_eq!((capped.decisions, capped.truncated), (500, true));
    let newest: f64 = recs[..500]
        .iter()
        .map(|d| d.learned_reward.unwrap())
        .sum::<f64>()
        / 500.0;
    assert!((capped.logged_reward.mean - newest).abs() < 1e-12);
    // Exactly the cap is not truncated.
    assert!(!run(req.clone(), 2000, &recs, &model).truncated);
    // A cancelled job answers nothing.
    let mut job = JobRun::new(req, 10_000);
    job.add_page(&recs, 100_000).unwrap();
    assert_eq!(job.read(), 2000);
    assert!(job.finish(&model, || false).unwrap().is_none());
}

#[test]
fn a_log_without_exploration_supports_no_other_policy() {
    let (mut model, _, _) = bandit(10, 3);
    let mut c = model.config().clone();
    c.epsilon = 0.0;
    c.min_epsilon = 0.0;
    let mut greedy_only = Model::new(c).unwrap();
    let mut log = DecisionLog::new(DecisionsConfig::default()).unwrap();
    for t in 0..300 {
        let d = log
            .decide(&mut greedy_only, &Decide::new("home"), t)
            .unwrap();
        log.reward(&mut greedy_only, &d.decision_id, 1.0, None, true, t)
            .unwrap();
    }
    let recs: Vec<DecisionRecord> = log.decisions().cloned().collect();
    model = greedy_only;
    let req =
        parse(r#"{"policies":[{"kind":"uniform"},{"kind":"logged"}],"mode":"one_step"}"#).unwrap();
    let r = run(req, 10_000, &recs, &model);
    assert!(matches!(
        r.policies[0].results[0].outcome,
        Outcome::InsufficientSupport(_)
    ));
    assert!(matches!(
        r.policies[1].results[0].outcome,
        Outcome::Estimate(_)
    ));
}
