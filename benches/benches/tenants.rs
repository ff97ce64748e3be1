//! No tenant can hurt another, measured on the SQLite store (issue 11):
//!
//! 1. memory: the process's resident set while the store holds
//!    `QLEARN_BENCH_TENANTS` free tenants (default 1,000), each with one
//!    model at the free tier's state limit (10,000 states of 4 actions),
//!    every model used once so the cache has seen all of them: bytes per
//!    tenant, with the store's default cache budget;
//! 2. stalls: another tenant's update latency (p50, p99, max over the
//!    updates that ran while the operation did) during one tenant's
//!    whole-model operation (a reshape to double Q-learning, an import),
//!    for a free-sized (10,000 states) and a pro-sized (1,000,000 states)
//!    model, next to the same tenant's latency with nothing else running,
//!    and the WAL file's size after each operation (SQLite never shrinks
//!    it, so that is the largest the WAL has been so far).
//!
//! ```text
//! cargo bench -p qlearn-benches --bench tenants
//! ```
//!
//! Environment: `QLEARN_BENCH_TENANTS` (default 1000), `QLEARN_BENCH_BIG`
//! (states of the big model, default 1000000). Filter: `memory`, `stall`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use qlearn_core::store::sqlite::SqliteStore;
use qlearn_core::store::{Meter, ModelPatch, NewUser, Report, Store};
use qlearn_core::tenancy::{Limits, Role, Tier};
use qlearn_core::{Algorithm, Experience, Model, ModelConfig, StateRef};

#[path = "support/rss.rs"]
mod rss;
use rss::rss_bytes;

const NOW: i64 = 1_790_038_400;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn user(s: &dyn Store, email: &str) -> String {
    s.create_user(
        NewUser {
            email: email.into(),
            password_hash: "unused".into(),
            tier: Tier::Free,
            role: Role::User,
        },
        NOW,
    )
    .expect("create user")
    .id
}

/// A 4-action model holding `states` integer states.
fn filled(states: usize) -> Model {
    let mut m = Model::new(ModelConfig::new(4)).expect("config");
    for i in 0..states as i64 {
        m.update(&Experience::new(i, (i % 4) as usize, 1.0, i + 1))
            .expect("update");
    }
    m
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn memory(tenants: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open(dir.path().join("t.db")).expect("open");
    let free = Limits::default().free;
    let model = filled(free.max_states.unwrap_or(10_000) as usize);
    let before = rss_bytes().unwrap_or(0);
    let t = Instant::now();
    for i in 0..tenants {
        let uid = user(&s, &format!("t{i}@bench"));
        let info = s
            .create_model(&uid, "m", &model, free.max_models, NOW)
            .expect("create model");
        let meter = Meter {
            user_id: &uid,
            limits: &free,
            now: NOW,
        };
        let e = Experience::new(StateRef::Int(1), 0, 1.0, StateRef::Int(2));
        s.update(&meter, &info.id, &[e], Report::Outcomes)
            .expect("update");
    }
    let after = rss_bytes().unwrap_or(0);
    let grown = after.saturating_sub(before);
    println!(
        "memory: {tenants} free tenants at {} states each, built in {:.1} s: RSS {:.1} MiB -> {:.1} MiB, \
         growth {:.1} MiB = {:.0} bytes per tenant (the model table alone: {:.0} bytes)",
        model.table().len(),
        t.elapsed().as_secs_f64(),
        mib(before),
        mib(after),
        mib(grown),
        grown as f64 / tenants as f64,
        model.table().memory_bytes() as f64,
    );
}

/// p50, p99 and max of `lat` (milliseconds) and how many took over 10 ms
/// and over 50 ms.
fn summary(lat: &mut [Duration]) -> String {
    if lat.is_empty() {
        return "no update ran".into();
    }
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let over = |ms: u64| {
        lat.iter()
            .filter(|d| **d > Duration::from_millis(ms))
            .count()
    };
    format!(
        "{} updates, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} over 10 ms, {} over 50 ms",
        lat.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        over(10),
        over(50)
    )
}

/// The other tenant's update latencies while `op` runs (or for `idle` when
/// `op` is `None`), and how long `op` took. Only the updates whose time
/// overlaps the operation's count (the worker starts 200 ms before it).
fn during(
    s: &SqliteStore,
    other: (&str, &str),
    op: Option<&dyn Fn()>,
    idle: Duration,
) -> (Vec<Duration>, Duration) {
    let stop = AtomicBool::new(false);
    let limits = Limits::default().enterprise;
    std::thread::scope(|sc| {
        let worker = sc.spawn(|| {
            let meter = Meter {
                user_id: other.0,
                limits: &limits,
                now: NOW,
            };
            let mut timed = Vec::new();
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let e = Experience::new(StateRef::Int(i % 500), 0, 1.0, StateRef::Int(i % 499));
                let t = Instant::now();
                s.update(&meter, other.1, &[e], Report::Outcomes)
                    .expect("update");
                timed.push((t, t.elapsed()));
                i += 1;
            }
            timed
        });
        std::thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        match op {
            Some(op) => op(),
            None => std::thread::sleep(idle),
        }
        let end = Instant::now();
        stop.store(true, Ordering::Relaxed);
        let timed = worker.join().expect("worker");
        let overlapping = timed
            .into_iter()
            .filter(|&(t, d)| t < end && t + d > start)
            .map(|(_, d)| d)
            .collect();
        (overlapping, end - start)
    })
}

/// The WAL file's size in MiB (its high-water mark: SQLite writes it over
/// from the start after a checkpoint, and never truncates it while open).
fn wal_mib(db: &std::path::Path) -> f64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    mib(std::fs::metadata(wal).map_or(0, |m| m.len() as usize))
}

fn stall(big: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("s.db");
    let s = SqliteStore::open(&db).expect("open");
    let other = user(&s, "other@bench");
    let other_model = s
        .create_model(&other, "m", &filled(500), None, NOW)
        .expect("create")
        .id;
    let a = user(&s, "a@bench");
    let (mut lat, _) = during(&s, (&other, &other_model), None, Duration::from_secs(2));
    println!("stall: the other tenant alone: {}", summary(&mut lat));
    for states in [10_000, big] {
        let model = filled(states);
        let id = s
            .create_model(&a, "big", &model, None, NOW)
            .expect("create")
            .id;
        let mut double = model.config().clone();
        double.algorithm = Algorithm::DoubleQLearning;
        let reshape = || {
            s.update_model(
                &a,
                &id,
                ModelPatch {
                    config: Some(double.clone().into()),
                    ..ModelPatch::default()
                },
                NOW,
            )
            .expect("reshape");
        };
        let (mut lat, took) = during(&s, (&other, &other_model), Some(&reshape), Duration::ZERO);
        println!(
            "stall: reshape of {states} states to double Q ({:.0} ms): the other tenant {}; WAL file {:.1} MiB",
            took.as_secs_f64() * 1e3,
            summary(&mut lat),
            wal_mib(&db)
        );
        let import = || {
            s.create_model(&a, "imported", &model, None, NOW)
                .expect("import");
        };
        let (mut lat, took) = during(&s, (&other, &other_model), Some(&import), Duration::ZERO);
        println!(
            "stall: import of {states} states ({:.0} ms): the other tenant {}; WAL file {:.1} MiB",
            took.as_secs_f64() * 1e3,
            summary(&mut lat),
            wal_mib(&db)
        );
    }
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if wants("memory") {
        memory(env_usize("QLEARN_BENCH_TENANTS", 1000));
    }
    if wants("stall") {
        stall(env_usize("QLEARN_BENCH_BIG", 1_000_000));
    }
}
