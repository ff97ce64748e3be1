//! Engine throughput: `predict`, `update` and a full predict+update step,
//! on integer, 12-character string and 2-number array states, for qlearn
//! and for the `rurel` crate on the same workload.
//!
//! Workload: a 10,000-state model (a 100x100 torus, every state stored
//! before timing starts), 4 actions, epsilon 0.1, a random walk between
//! neighbouring states. The walk, the actions of the update-only benchmark
//! and the rewards are generated before timing, so the workload's own random
//! numbers are not measured; the engines' exploration draws are.
//!
//! Run: `cargo bench -p qlearn-benches --bench engine -- --warm-up-time 1 --measurement-time 3`
//! (those are also the defaults set below). With `QLEARN_BENCH_CLOCK=cpu`
//! the benchmark thread's CPU time is measured instead of wall time (for a
//! machine busy with other work). Results: `docs/benchmarks-engine.md`.
//!
//! How rurel is driven: rurel's `AgentTrainer` owns the Q-table
//! (`HashMap<State, HashMap<Action, f64>>`) and learns in
//! `AgentTrainer::train`, which asks an `ExplorationStrategy` for the action
//! and a `TerminationStrategy` when to stop. One update is therefore one
//! `train` call with `FixedIterations::new(1)` and a strategy that takes the
//! given action (the agent then moves to the next state of the walk). rurel
//! has no epsilon-greedy choice of its own (its exploration strategies
//! cannot see the Q-table), so its predict is `best_action` with
//! probability 0.9 and a uniformly random action otherwise, drawn from the
//! same generator qlearn uses. Its array state is a `[u64; 2]` (a fixed-size
//! key rurel can hash; qlearn takes any slice of up to 64 numbers), and each
//! rurel state carries its reward, since rurel reads rewards from states.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, WallTime};
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use qlearn_core::rng::Rng;
use qlearn_core::{Experience, Model, ModelConfig, StateRef};
use rurel::mdp::{Agent, State as RurelState};
use rurel::strategy::explore::ExplorationStrategy;
use rurel::strategy::learn::QLearning;
use rurel::strategy::terminate::FixedIterations;
use rurel::AgentTrainer;

#[path = "support/cpu_time.rs"]
mod cpu_time;

const SIDE: u32 = 100;
const N_STATES: u32 = SIDE * SIDE;
const N_ACTIONS: usize = 4;
const EPSILON: f64 = 0.1;
/// Length of the pre-generated walk (a power of two: the index wraps by mask).
const STEPS: usize = 1 << 16;
const MASK: usize = STEPS - 1;

/// The pre-generated workload: state ids along a random walk on the torus,
/// random actions, and the reward of arriving in each state.
struct Workload {
    walk: Vec<u32>,
    actions: Vec<u8>,
    reward: Vec<f64>,
    ints: Vec<i64>,
    strs: Vec<String>,
    arrays: Vec<[f64; 2]>,
}

impl Workload {
    fn new() -> Self {
        let mut rng = Rng::from_seed(2024);
        let mut walk = Vec::with_capacity(STEPS);
        let (mut r, mut c) = (0u32, 0u32);
        for _ in 0..STEPS {
            walk.push(r * SIDE + c);
            match rng.below(4) {
                0 => r = (r + SIDE - 1) % SIDE,
                1 => c = (c + 1) % SIDE,
                2 => r = (r + 1) % SIDE,
                _ => c = (c + SIDE - 1) % SIDE,
            }
        }
        let actions = (0..STEPS).map(|_| rng.below(N_ACTIONS) as u8).collect();
        let reward = (0..N_STATES)
            .map(|id| if id % 10 == 0 { 1.0 } else { -0.01 })
            .collect();
        let strs: Vec<String> = (0..N_STATES).map(|id| format!("cell-{id:07}")).collect();
        assert!(strs.iter().all(|s| s.len() == 12));
        Workload {
            walk,
            actions,
            reward,
            ints: (0..N_STATES as i64).collect(),
            strs,
            arrays: (0..N_STATES)
                .map(|id| [(id / SIDE) as f64, (id % SIDE) as f64])
                .collect(),
        }
    }

    fn int(&self, id: u32) -> StateRef<'_> {
        StateRef::Int(self.ints[id as usize])
    }
    fn str(&self, id: u32) -> StateRef<'_> {
        StateRef::Str(&self.strs[id as usize])
    }
    fn array(&self, id: u32) -> StateRef<'_> {
        StateRef::Array(&self.arrays[id as usize])
    }
}

type KeyFn = for<'w> fn(&'w Workload, u32) -> StateRef<'w>;

/// A qlearn model with all 10,000 states stored.
fn qlearn_model(w: &Workload, key: KeyFn) -> Model {
    let mut config = ModelConfig::new(N_ACTIONS);
    config.epsilon = EPSILON;
    config.seed = Some(7);
    let mut m = Model::new(config).unwrap();
    for id in 0..N_STATES {
        m.update(&Experience::new(key(w, id), 0, w.reward[id as usize], key(w, id)).done(true))
            .unwrap();
    }
    assert_eq!(m.len(), N_STATES as usize);
    m
}

// ---- rurel's side -----------------------------------------------------------

/// A rurel state: the key plus the reward of arriving in it (rurel asks the
/// state for its reward). Equality and hash are the key's.
#[derive(Clone)]
struct RState<K> {
    key: K,
    reward: f64,
}

impl<K: PartialEq> PartialEq for RState<K> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<K: Eq> Eq for RState<K> {}
impl<K: Hash> Hash for RState<K> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.key.hash(h)
    }
}

impl<K: Clone + Eq + Hash> RurelState for RState<K> {
    type A = usize;
    fn reward(&self) -> f64 {
        self.reward
    }
    fn actions(&self) -> Vec<usize> {
        (0..N_ACTIONS).collect()
    }
}

/// Walks the pre-generated sequence: taking any action moves to the next
/// state of the walk.
struct WalkAgent<'a, K> {
    states: &'a [RState<K>],
    walk: &'a [u32],
    i: usize,
}

impl<K: Clone + Eq + Hash> Agent<RState<K>> for WalkAgent<'_, K> {
    fn current_state(&self) -> &RState<K> {
        &self.states[self.walk[self.i] as usize]
    }
    fn take_action(&mut self, _: &usize) {
        self.i = (self.i + 1) & MASK;
    }
}

/// Takes the action it was built with (the one chosen by the predict step
/// or the workload).
struct Take(usize);

impl<K: Clone + Eq + Hash> ExplorationStrategy<RState<K>> for Take {
    fn pick_action(&self, agent: &mut dyn Agent<RState<K>>) -> usize {
        agent.take_action(&self.0);
        self.0
    }
}

struct Rurel<'w, K: Clone + Eq + Hash> {
    trainer: AgentTrainer<RState<K>>,
    learning: QLearning,
    states: Vec<RState<K>>,
    walk: &'w [u32],
    rng: Rng,
}

impl<'w, K: Clone + Eq + Hash> Rurel<'w, K> {
    fn new(w: &'w Workload, key: fn(&Workload, u32) -> K) -> Self {
        let state = |id: u32| RState {
            key: key(w, id),
            reward: w.reward[id as usize],
        };
        let mut trainer = AgentTrainer::new();
        trainer.import_state(
            (0..N_STATES)
                .map(|id| (state(id), (0..N_ACTIONS).map(|a| (a, 0.0)).collect()))
                .collect(),
        );
        assert_eq!(trainer.learned_values().len(), N_STATES as usize);
        Rurel {
            trainer,
            learning: QLearning::new(0.1, 0.95, 0.0),
            states: (0..N_STATES).map(state).collect(),
            walk: &w.walk,
            rng: Rng::from_seed(7),
        }
    }

    /// Epsilon-greedy over rurel's table.
    #[inline]
    fn predict(&mut self, i: usize) -> usize {
        if self.rng.next_f64() < EPSILON {
            self.rng.below(N_ACTIONS)
        } else {
            match self
                .trainer
                .best_action(&self.states[self.walk[i] as usize])
            {
                Some(a) => a,
                None => self.rng.below(N_ACTIONS),
            }
        }
    }

    /// One Q-learning update: action `a` in step `i`'s state, arriving in
    /// step `i + 1`'s.
    #[inline]
    fn update(&mut self, i: usize, a: usize) {
        let mut agent = WalkAgent {
            states: &self.states,
            walk: self.walk,
            i,
        };
        self.trainer.train(
            &mut agent,
            &self.learning,
            &mut FixedIterations::new(1),
            &Take(a),
        );
    }
}

// ---- the benchmarks ---------------------------------------------------------------

fn engine<M: Measurement>(c: &mut Criterion<M>) {
    let w = Workload::new();
    let kinds: [(&str, KeyFn); 3] = [
        ("int", Workload::int),
        ("string12", Workload::str),
        ("array2", Workload::array),
    ];

    for op in ["predict", "update", "step"] {
        let mut group = c.benchmark_group(op);
        group.throughput(Throughput::Elements(1));
        for (kind, key) in kinds {
            let mut model = qlearn_model(&w, key);
            // Every state as a borrowed key, indexed by id (like the other
            // engines, so the data streamed per step is the same: the
            // walk's u32 ids).
            let refs: Vec<StateRef<'_>> = (0..N_STATES).map(|id| key(&w, id)).collect();
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new("qlearn", kind), |b| match op {
                "predict" => b.iter(|| {
                    let s = refs[w.walk[i] as usize];
                    i = (i + 1) & MASK;
                    black_box(model.predict(s, true, None).unwrap().action)
                }),
                "update" => b.iter(|| {
                    let (s, next) = (w.walk[i] as usize, w.walk[(i + 1) & MASK] as usize);
                    let exp =
                        Experience::new(refs[s], w.actions[i] as usize, w.reward[next], refs[next]);
                    i = (i + 1) & MASK;
                    black_box(model.update(&exp).unwrap().q_value)
                }),
                _ => b.iter(|| {
                    let (s, next) = (w.walk[i] as usize, w.walk[(i + 1) & MASK] as usize);
                    let a = model.predict(refs[s], true, None).unwrap().action;
                    let exp = Experience::new(refs[s], a, w.reward[next], refs[next]);
                    i = (i + 1) & MASK;
                    black_box(model.update(&exp).unwrap().q_value)
                }),
            });
            assert_eq!(
                model.len(),
                N_STATES as usize,
                "the walk stays on the torus"
            );
        }
        if op == "step" {
            bench_reference(&mut group, &w);
        }
        bench_rurel(
            &mut group,
            op,
            "int",
            Rurel::new(&w, |w, id| w.ints[id as usize]),
            &w,
        );
        bench_rurel(
            &mut group,
            op,
            "string12",
            Rurel::new(&w, |w, id| w.strs[id as usize].clone()),
            &w,
        );
        bench_rurel(
            &mut group,
            op,
            "array2",
            Rurel::new(&w, |w, id| w.arrays[id as usize].map(f64::to_bits)),
            &w,
        );
        group.finish();
    }
}

/// The reference point: a minimal hand-written Q-learning step on
/// integer states over an FxHash `HashMap<i64, [f64; 4]>` (epsilon-greedy,
/// lowest index wins ties, no validation, no statistics). It calibrates the
/// machine: what a bare hash-table step costs here and now.
fn bench_reference<M: Measurement>(group: &mut BenchmarkGroup<'_, M>, w: &Workload) {
    let mut q: HashMap<i64, [f64; N_ACTIONS], rustc_hash::FxBuildHasher> = HashMap::default();
    for id in 0..N_STATES as i64 {
        q.insert(id, [0.0; N_ACTIONS]);
    }
    let mut rng = Rng::from_seed(7);
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("fxhash-reference", "int"), |b| {
        b.iter(|| {
            let (s, next) = (w.walk[i] as i64, w.walk[(i + 1) & MASK] as i64);
            let row = q.get(&s).copied().unwrap_or([0.0; N_ACTIONS]);
            let a = if rng.next_f64() < EPSILON {
                rng.below(N_ACTIONS)
            } else {
                (1..N_ACTIONS).fold(0, |b, a| if row[a] > row[b] { a } else { b })
            };
            let next_max = q
                .get(&next)
                .map_or(0.0, |r| r.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            let target = w.reward[next as usize] + 0.95 * next_max;
            let cell = &mut q.entry(s).or_insert([0.0; N_ACTIONS])[a];
            *cell += 0.1 * (target - *cell);
            i = (i + 1) & MASK;
            black_box(*cell)
        })
    });
}

fn bench_rurel<K: Clone + Eq + Hash, M: Measurement>(
    group: &mut BenchmarkGroup<'_, M>,
    op: &str,
    kind: &str,
    mut r: Rurel<'_, K>,
    w: &Workload,
) {
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("rurel", kind), |b| match op {
        "predict" => b.iter(|| {
            let a = r.predict(i);
            i = (i + 1) & MASK;
            black_box(a)
        }),
        "update" => b.iter(|| {
            r.update(i, w.actions[i] as usize);
            i = (i + 1) & MASK;
        }),
        _ => b.iter(|| {
            let a = r.predict(i);
            r.update(i, a);
            i = (i + 1) & MASK;
        }),
    });
    assert_eq!(r.trainer.learned_values().len(), N_STATES as usize);
}

/// Criterion's settings: short runs (the command line can override them).
fn criterion<M: Measurement>(measurement: M) -> Criterion<M> {
    Criterion::default()
        .with_measurement(measurement)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

fn main() {
    // QLEARN_BENCH_CLOCK=cpu measures the benchmark thread's CPU time
    // instead of wall time: on a machine shared with other work, that is the
    // time the code actually ran on a core.
    if std::env::var("QLEARN_BENCH_CLOCK").as_deref() == Ok("cpu") {
        let mut c = criterion(cpu_time::ThreadTime);
        engine(&mut c);
        c.final_summary();
    } else {
        let mut c = criterion(WallTime);
        engine(&mut c);
        c.final_summary();
    }
}
