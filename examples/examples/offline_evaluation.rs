//! Offline evaluation: what would another policy have earned on the traffic
//! a model already served?
//!
//! A simulated shop shows one of four offers to visitors of four segments;
//! each (segment, offer) has its own click probability, unknown to the
//! model. A live model decides with epsilon-greedy exploration through the
//! decision log (clicks arrive later, as final rewards) and learns as it
//! goes. Afterwards, without touching the shop, the log is used to estimate
//! what other policies would have earned: the model's greedy policy, its
//! exploring policy, uniformly random offers, a hand-written rule (the
//! baseline action recorded with each decision) and a candidate
//! configuration (progressive replay). Each estimate is printed next to the
//! truth, measured by running that policy live in the simulator (and, for
//! the fixed policies, their exact expected click rate).
//!
//! Run: `cargo run --release --example offline_evaluation`

use qlearn_core::decisions::{Decide, DecisionLog, DecisionsConfig};
use qlearn_core::evaluation::{
    self, Direct, Estimator, EvalOptions, OneStepReport, Outcome, TargetPolicy,
};
use qlearn_core::rng::Rng;
use qlearn_core::{Error, Experience, Model, ModelConfig};

const SEGMENTS: [&str; 4] = ["mobile", "desktop", "returning", "bargain"];
/// Click probability of each offer, per segment.
const CLICKS: [[f64; 4]; 4] = [
    [0.04, 0.10, 0.06, 0.02],
    [0.08, 0.03, 0.12, 0.05],
    [0.15, 0.05, 0.04, 0.09],
    [0.02, 0.06, 0.03, 0.11],
];
const VISITS: usize = 30_000;
/// The hand-written rule: offer 2 to desktop visitors, offer 0 otherwise.
fn rule(segment: usize) -> usize {
    if segment == 1 {
        2
    } else {
        0
    }
}

fn config(learning_rate: f64, epsilon: f64, seed: u64) -> ModelConfig {
    let mut c = ModelConfig::new(4);
    c.learning_rate = learning_rate;
    c.epsilon = epsilon;
    c.epsilon_decay = 1.0;
    c.seed = Some(seed);
    c
}

/// The live traffic: each visit decided and logged, its click (or not)
/// reported a minute later.
fn serve(model: &mut Model, shop: &mut Rng) -> Result<DecisionLog, Error> {
    let mut log = DecisionLog::new(DecisionsConfig {
        reward_wait_seconds: 3600,
        ..Default::default()
    })?;
    let mut pending = Vec::new();
    for visit in 0..VISITS {
        let now = visit as i64 * 1000;
        let segment = shop.below(SEGMENTS.len());
        let d = log.decide(model, &Decide::new(SEGMENTS[segment]), now)?;
        let click = f64::from(u8::from(shop.next_f64() < CLICKS[segment][d.action]));
        pending.push((d.decision_id, click, now + 60_000));
        // Clicks that are a minute old arrive now.
        while pending.first().is_some_and(|p| p.2 <= now) {
            let (id, click, at) = pending.remove(0);
            log.reward(model, &id, click, None, true, at)?;
        }
    }
    for (id, click, at) in pending {
        log.reward(model, &id, click, None, true, at)?;
    }
    Ok(log)
}

/// The true mean click rate of a policy, run live for `VISITS` visits in a
/// fresh shop; `learn` sees each (segment, offer, click) after the visit
/// (a candidate configuration learns as it goes).
fn live(
    mut choose: impl FnMut(&mut Rng, usize) -> Result<usize, Error>,
    mut learn: impl FnMut(usize, usize, f64) -> Result<(), Error>,
) -> Result<f64, Error> {
    let mut shop = Rng::from_seed(99);
    let mut clicks = 0.0;
    for _ in 0..VISITS {
        let segment = shop.below(SEGMENTS.len());
        let offer = choose(&mut shop, segment)?;
        let click = f64::from(u8::from(shop.next_f64() < CLICKS[segment][offer]));
        learn(segment, offer, click)?;
        clicks += click;
    }
    Ok(clicks / VISITS as f64)
}

/// Nothing to learn.
fn fixed(_: usize, _: usize, _: f64) -> Result<(), Error> {
    Ok(())
}

/// The exact value of a fixed policy (`pi`: per segment, the probability of
/// each offer): segments are equally likely.
fn exact(pi: impl Fn(usize) -> Result<Vec<f64>, Error>) -> Result<f64, Error> {
    let mut v = 0.0;
    for (s, clicks) in CLICKS.iter().enumerate() {
        let p = pi(s)?;
        v += p.iter().zip(clicks).map(|(p, c)| p * c).sum::<f64>() / SEGMENTS.len() as f64;
    }
    Ok(v)
}

fn line(name: &str, report: &OneStepReport, truth: f64, exact: Option<f64>) {
    let d = &report.diagnostics;
    let mut cells = Vec::new();
    for e in [Estimator::Ips, Estimator::Snips, Estimator::DoublyRobust] {
        cells.push(match report.outcome(e) {
            Outcome::Estimate(x) => format!("{:.4} [{:.4}, {:.4}]", x.value, x.ci.low, x.ci.high),
            Outcome::InsufficientSupport(why) => format!("insufficient ({why:?})"),
        });
    }
    let exact = exact.map_or("-".to_owned(), |x| format!("{x:.4}"));
    println!(
        "{name:<22} {truth:>7.4} {exact:>7}  {:<26} {:<26} {:<26} {:>6.0} {:>5.2} {:>5.1}",
        cells[0], cells[1], cells[2], d.ess, d.support, d.max_weight
    );
}

fn main() -> Result<(), Error> {
    let mut model = Model::new(config(0.05, 0.2, 7))?;
    let mut shop = Rng::from_seed(1);
    let log = serve(&mut model, &mut shop)?;
    let mut steps = evaluation::steps_from_log(&log)?;
    // The hand-written rule's choice, recorded with each decision.
    for s in &mut steps {
        let segment = SEGMENTS
            .iter()
            .position(|n| s.state == qlearn_core::State::from(*n))
            .unwrap_or(0);
        s.baseline_action = Some(rule(segment));
    }
    let logged_mean = steps.iter().filter_map(|s| s.reward).sum::<f64>() / steps.len() as f64;
    println!(
        "{} decisions logged at epsilon 0.2 (mean click rate {logged_mean:.4}); 95 % Poisson-bootstrap intervals\n",
        steps.len()
    );
    println!(
        "{:<22} {:>7} {:>7}  {:<26} {:<26} {:<26} {:>6} {:>5} {:>5}",
        "policy", "live", "exact", "IPS", "SNIPS", "DR (log means)", "ESS", "supp", "max w"
    );
    let opts = EvalOptions::default();
    let eval =
        |t: TargetPolicy<'_>| evaluation::evaluate_one_step(&steps, &t, &Direct::LogMeans, &opts);
    let seg = |s: usize| SEGMENTS[s];

    let mut frozen = model.clone();
    let truth = live(
        |_, s| Ok(frozen.predict(seg(s), false, None)?.action),
        fixed,
    )?;
    let x = exact(|s| model.action_probabilities(seg(s), None, false))?;
    line(
        "greedy",
        &eval(TargetPolicy::Greedy(&model))?,
        truth,
        Some(x),
    );

    let mut explorer = model.clone();
    let truth = live(
        |_, s| Ok(explorer.predict(seg(s), true, None)?.action),
        fixed,
    )?;
    let x = exact(|s| model.action_probabilities(seg(s), None, true))?;
    line(
        "exploring (eps 0.2)",
        &eval(TargetPolicy::Exploring(&model))?,
        truth,
        Some(x),
    );

    let truth = live(|r, _| Ok(r.below(4)), fixed)?;
    let x = exact(|_| Ok(vec![0.25; 4]))?;
    line(
        "uniform random",
        &eval(TargetPolicy::Uniform(4))?,
        truth,
        Some(x),
    );

    let truth = live(|_, s| Ok(rule(s)), fixed)?;
    let x = exact(|s| Ok((0..4).map(|a| f64::from(u8::from(a == rule(s)))).collect()))?;
    line(
        "hand-written rule",
        &eval(TargetPolicy::Baseline)?,
        truth,
        Some(x),
    );

    line(
        "logged behaviour",
        &eval(TargetPolicy::Logged)?,
        logged_mean,
        None,
    );

    // A candidate configuration: learning rate 0.2, epsilon 0.05, replayed
    // from scratch over the log; its truth is the same configuration
    // learning live from scratch.
    let candidate = config(0.2, 0.05, 11);
    let replayed = evaluation::replay(&steps, Model::new(candidate.clone())?, true, &opts)?;
    let fresh = std::cell::RefCell::new(Model::new(candidate)?);
    let truth = live(
        |_, s| Ok(fresh.borrow_mut().predict(seg(s), true, None)?.action),
        |s, a, click| {
            let exp = Experience::new(seg(s), a, click, seg(s)).done(true);
            fresh.borrow_mut().update(&exp).map(|_| ())
        },
    )?;
    line("replay lr 0.2 eps 0.05", &replayed.report, truth, None);
    println!(
        "\nlive: the policy run for {VISITS} visits of a fresh simulated shop (the logged \
         behaviour: its own mean); exact: its expected click rate"
    );
    Ok(())
}
