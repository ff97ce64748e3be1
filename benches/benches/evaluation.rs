//! Offline evaluation throughput: one million logged one-step decisions,
//! IPS, SNIPS and doubly robust (the log's per-(state, action) mean reward
//! as direct model, so two passes) of one target policy (the logging
//! model's greedy policy), with the default 200-replicate Poisson bootstrap
//! and the empirical-Bernstein bounds: what
//! `qlearn_core::evaluation::evaluate_one_step` does, on one core.
//!
//! Workload: 1,000 integer states, 4 actions, a model trained on the same
//! simulated product logs at epsilon 0.3 (its probabilities from
//! `predict_full`, as the decision log records them); rewards are
//! Bernoulli. The log is built before timing.
//!
//! Run: `cargo bench -p qlearn-benches --bench evaluation`; with
//! `QLEARN_BENCH_CLOCK=cpu` the benchmark thread's CPU time is measured
//! instead of wall time (for a machine busy with other work). Results:
//! `docs/benchmarks-engine.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, WallTime};
use criterion::{Criterion, Throughput};
use qlearn_core::evaluation::{self, Direct, EvalOptions, LoggedStep, TargetPolicy};
use qlearn_core::rng::Rng;
use qlearn_core::{Experience, Model, ModelConfig, State};

#[path = "support/cpu_time.rs"]
mod cpu_time;

const DECISIONS: usize = 1_000_000;
const STATES: u64 = 1_000;
const ACTIONS: usize = 4;

/// The click probability of action `a` in state `s`.
fn pays(s: u64, a: usize) -> f64 {
    0.1 + 0.2 * (((s as usize + a * 7) % ACTIONS) as f64) / ACTIONS as f64
}

fn workload() -> (Model, Vec<LoggedStep>) {
    let mut c = ModelConfig::new(ACTIONS);
    c.seed = Some(1);
    c.epsilon = 0.3;
    c.epsilon_decay = 1.0;
    let mut model = Model::new(c).unwrap();
    let mut env = Rng::from_seed(2);
    for _ in 0..200_000 {
        let s = env.below(STATES as usize) as i64;
        let a = model.predict(s, true, None).unwrap().action;
        let r = f64::from(u8::from(env.next_f64() < pays(s as u64, a)));
        model
            .update(&Experience::new(s, a, r, s).done(true))
            .unwrap();
    }
    let steps = (0..DECISIONS)
        .map(|i| {
            let s = env.below(STATES as usize) as u64;
            let p = model.predict_full(s as i64, true, None).unwrap();
            let r = f64::from(u8::from(env.next_f64() < pays(s, p.action)));
            LoggedStep {
                decision_id: format!("d{i:x}"),
                episode_id: None,
                step: 0,
                time_ms: i as i64,
                applied_seq: Some(i as u64),
                state: State::Int(s as i64),
                allowed_actions: None,
                action: p.action,
                probability: p.probability,
                reward: Some(r),
                applied: true,
                baseline_action: None,
                episode_end: None,
            }
        })
        .collect();
    (model, steps)
}

fn bench<M: Measurement>(measurement: M, model: &Model, steps: &[LoggedStep], opts: &EvalOptions) {
    let mut c = Criterion::default()
        .with_measurement(measurement)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15))
        .configure_from_args();
    let mut g = c.benchmark_group("evaluation");
    g.throughput(Throughput::Elements(DECISIONS as u64));
    g.bench_function("one_step_1M_ips_snips_dr_greedy", |b| {
        b.iter(|| {
            let r = evaluation::evaluate_one_step(
                black_box(steps),
                &TargetPolicy::Greedy(model),
                &Direct::LogMeans,
                opts,
            )
            .unwrap();
            black_box(r)
        })
    });
    g.finish();
    c.final_summary();
}

fn main() {
    let (model, steps) = workload();
    let opts = EvalOptions {
        reward_range: Some((0.0, 1.0)),
        ..EvalOptions::default()
    };
    if std::env::var("QLEARN_BENCH_CLOCK").as_deref() == Ok("cpu") {
        bench(cpu_time::ThreadTime, &model, &steps, &opts);
    } else {
        bench(WallTime, &model, &steps, &opts);
    }
    let r = evaluation::evaluate_one_step(
        &steps,
        &TargetPolicy::Greedy(&model),
        &Direct::LogMeans,
        &opts,
    )
    .unwrap();
    println!("{r:#?}");
}
