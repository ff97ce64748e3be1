//! Storage benchmarks: acknowledged durable updates per second on SQLite and
//! PostgreSQL with 1, 8 and 32 concurrent writers, predict served from a
//! model loaded from the store, and save + load of a 1,000,000-state model
//! on SQLite. Prints a table; run with
//!
//! ```text
//! cargo bench -p qlearn-benches --bench storage
//! ```
//!
//! Environment: `QLEARN_BENCH_SECONDS` (seconds per throughput run, default
//! 3), `QLEARN_BENCH_WRITERS` (writer counts, default `1,8,32`),
//! `QLEARN_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`; PostgreSQL rows are skipped
//! with a message when it is unreachable). Filter sections with an argument:
//! `sqlite`, `postgres`, `predict`, `large`, `settle` (the settle pass over
//! many logging models, on both backends; `QLEARN_BENCH_SETTLE=models,each`,
//! default `500,20`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use qlearn_core::decisions::{Aggregation, Decide, DecisionsConfig};
use qlearn_core::store::decisions::FULL_SCAN_EVERY_SECS;
use qlearn_core::store::postgres::PgStore;
use qlearn_core::store::sqlite::{Durability, SqliteOptions, SqliteStore};
use qlearn_core::store::{Meter, ModelPatch, NewUser, Report, Store};
use qlearn_core::tenancy::{Role, Tier, TierLimits};
use qlearn_core::{Experience, Model, ModelConfig, StateRef};

const NOW: i64 = 1_790_038_400;
const UNLIMITED: TierLimits = TierLimits::UNLIMITED;

fn seconds() -> Duration {
    let s = std::env::var("QLEARN_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

fn user(s: &dyn Store, email: &str) -> String {
    s.create_user(
        NewUser {
            email: email.into(),
            password_hash: "x".into(),
            tier: Tier::Enterprise,
            role: Role::User,
        },
        NOW,
    )
    .expect("create user")
    .id
}

fn model() -> Model {
    let mut c = ModelConfig::new(4);
    c.seed = Some(1);
    Model::new(c).expect("model")
}

/// `writers` threads each send single-experience updates for `dur`;
/// `shared`: all on one model, else one model per writer. Returns
/// acknowledged updates per second.
fn updates_per_sec(s: &dyn Store, writers: usize, shared: bool, dur: Duration, tag: &str) -> f64 {
    let uid = user(s, &format!("{tag}-{writers}-{shared}@bench"));
    let ids: Vec<String> = (0..if shared { 1 } else { writers })
        .map(|i| {
            s.create_model(&uid, &format!("m{i}"), &model(), None, NOW)
                .expect("create model")
                .id
        })
        .collect();
    let acked = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(writers + 1);
    let elapsed = std::thread::scope(|sc| {
        for w in 0..writers {
            let (acked, stop, barrier, ids, uid) = (&acked, &stop, &barrier, &ids, &uid);
            sc.spawn(move || {
                let id = &ids[w % ids.len()];
                let meter = Meter {
                    user_id: uid,
                    limits: &UNLIMITED,
                    now: NOW,
                };
                let mut i = w as i64 * 7919;
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    let st = StateRef::Int(i % 1000);
                    let next = StateRef::Int((i + 1) % 1000);
                    let e = Experience::new(st, (i % 4) as usize, 1.0, next).done(i % 50 == 49);
                    s.update(&meter, id, &[e], Report::Outcomes)
                        .expect("update");
                    acked.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
        barrier.wait();
        let t = Instant::now();
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
        t.elapsed()
    });
    acked.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

/// Writer counts of the throughput runs: `QLEARN_BENCH_WRITERS` (e.g.
/// `32` or `1,8`), else 1, 8 and 32.
fn writer_counts() -> Vec<usize> {
    std::env::var("QLEARN_BENCH_WRITERS")
        .ok()
        .map(|v| v.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1, 8, 32])
}

fn row(backend: &str, what: &str, value: f64, unit: &str) {
    println!("| {backend} | {what} | {value:>12.0} | {unit} |");
}

fn sqlite_section(dur: Duration) {
    for (durability, label) in [
        (Durability::Process, "synchronous=NORMAL (default)"),
        (Durability::PowerLoss, "synchronous=FULL"),
    ] {
        for writers in writer_counts() {
            for shared in [true, false] {
                let dir = tempfile::tempdir().expect("tempdir");
                let s = SqliteStore::open_with(
                    dir.path().join("bench.db"),
                    SqliteOptions {
                        durability,
                        ..SqliteOptions::default()
                    },
                )
                .expect("open");
                let r = updates_per_sec(&s, writers, shared, dur, "sqlite");
                let models = if shared { "one model" } else { "a model each" };
                row(
                    "sqlite",
                    &format!("{writers} writers, {models}, {label}"),
                    r,
                    "acked updates/s",
                );
            }
        }
    }
}

fn pg_url() -> String {
    std::env::var("QLEARN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn postgres_section(dur: Duration) {
    let url = pg_url();
    let schema = format!("qlearn_bench_{}", std::process::id());
    let s = match PgStore::connect_with_schema(&url, &schema) {
        Ok(s) => s,
        Err(e) => {
            println!("| postgres | SKIPPED: PostgreSQL not reachable at {url}: {e} | | |");
            return;
        }
    };
    for writers in writer_counts() {
        for shared in [true, false] {
            let r = updates_per_sec(&s, writers, shared, dur, "pg");
            let models = if shared { "one model" } else { "a model each" };
            row(
                "postgres",
                &format!("{writers} writers, {models}, synchronous_commit=on"),
                r,
                "acked updates/s",
            );
        }
    }
    if let Err(e) = s.drop_schema() {
        println!("(could not drop bench schema {schema}: {e})");
    }
}

fn predict_section(n: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("predict.db");
    let (uid, id) = {
        let s = SqliteStore::open(&path).expect("open");
        let uid = user(&s, "predict@bench");
        let mut m = model();
        for i in 0..10_000i64 {
            m.update(&Experience::new(i, (i % 4) as usize, 1.0, i + 1))
                .expect("update");
        }
        let id = s.create_model(&uid, "p", &m, None, NOW).expect("create").id;
        (uid, id)
    };
    // A fresh process-like start: reopen and load the model from disk.
    let s = SqliteStore::open(&path).expect("reopen");
    let mut m = s.export_model(&uid, &id).expect("load");
    let t = Instant::now();
    let mut acc = 0usize;
    for i in 0..n {
        let d = m
            .predict(StateRef::Int((i % 10_000) as i64), true, None)
            .expect("predict");
        acc = acc.wrapping_add(d.action);
    }
    let dt = t.elapsed();
    std::hint::black_box(acc);
    row(
        "in-process",
        "Model::predict on a model loaded from SQLite (10,000 states, explore)",
        n as f64 / dt.as_secs_f64(),
        "predicts/s",
    );
}

/// The settle pass over `models` logging models with `each` open decisions
/// apiece (a 60 s window, a default reward): a pass while none is due
/// (what every pass costs between deadlines: the SQL stores look only at
/// what they know is due), one while none is due that makes the SQL
/// stores' periodic full scan of the models with open decisions
/// (`FULL_SCAN_EVERY_SECS`), then the pass that settles them all.
/// Microseconds per pass.
fn settle_rows(s: &dyn Store, backend: &str, models: usize, each: i64) {
    let owner = user(s, &format!("settle-{backend}@bench"));
    let limits = TierLimits::UNLIMITED;
    let meter = Meter {
        user_id: &owner,
        limits: &limits,
        now: NOW,
    };
    let config = DecisionsConfig {
        reward_wait_seconds: 60,
        default_reward: Some(0.0),
        aggregation: Aggregation::Sum,
        retention_days: 30,
    };
    for k in 0..models {
        let id = s
            .create_model(&owner, &format!("settle{k}"), &model(), None, NOW)
            .expect("create")
            .id;
        let patch = ModelPatch {
            decisions: Some(Some(config.clone())),
            ..ModelPatch::default()
        };
        s.update_model(&owner, &id, patch, NOW)
            .expect("decisions on");
        for st in 0..each {
            s.decide(&meter, &id, &Decide::new(StateRef::Int(st)))
                .expect("decide");
        }
    }
    let what = format!("settle pass, {models} models x {each} open decisions");
    // The first pass also prunes every log (at most once a minute): not
    // timed. The next two come within the minute.
    assert_eq!(s.settle(NOW + 1).expect("settle"), 0);
    let t = Instant::now();
    assert_eq!(s.settle(NOW + 2).expect("settle"), 0);
    let idle = t.elapsed();
    row(
        backend,
        &format!("{what}, none due"),
        idle.as_secs_f64() * 1e6,
        "µs",
    );
    let t = Instant::now();
    assert_eq!(s.settle(NOW + 1 + FULL_SCAN_EVERY_SECS).expect("settle"), 0);
    let scan = t.elapsed();
    row(
        backend,
        &format!("{what}, none due, with the full scan"),
        scan.as_secs_f64() * 1e6,
        "µs",
    );
    let before = reset_peak_rss();
    let t = Instant::now();
    let learned = s.settle(NOW + 60).expect("settle");
    let all = t.elapsed();
    assert_eq!(learned, models * each as usize);
    row(
        backend,
        &format!("{what}, all due"),
        all.as_secs_f64() * 1e6,
        "µs",
    );
    if let (Some(before), Some(peak)) = (before, peak_rss_kib()) {
        row(
            backend,
            &format!("{what}, all due: peak resident memory over the pass's start"),
            peak.saturating_sub(before) as f64,
            "KiB",
        );
    }
    // The SQL stores' next pass reads each model just settled once more
    // (its next deadline): part of the price of settling them. (At the
    // same clock: a second later the pass would also prune every log.)
    let t = Instant::now();
    assert_eq!(s.settle(NOW + 60).expect("settle"), 0);
    row(
        backend,
        &format!("{what}, the pass after"),
        t.elapsed().as_secs_f64() * 1e6,
        "µs",
    );
}

/// Resets the process's peak resident set to its current size (Linux:
/// `clear_refs` 5) and returns that size in KiB; `None` elsewhere.
fn reset_peak_rss() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    status_kib("VmRSS:")
}

/// The process's peak resident set since the last reset, in KiB.
fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The settle section's models and open decisions per model:
/// `QLEARN_BENCH_SETTLE=models,each`, default 500 models of 20.
fn settle_size() -> (usize, i64) {
    std::env::var("QLEARN_BENCH_SETTLE")
        .ok()
        .and_then(|v| {
            let (m, e) = v.split_once(',')?;
            Some((m.trim().parse().ok()?, e.trim().parse().ok()?))
        })
        .unwrap_or((500, 20))
}

fn settle_section(models: usize, each: i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open(dir.path().join("settle.db")).expect("open");
    settle_rows(&s, "sqlite", models, each);
    let url = pg_url();
    let schema = format!("qlearn_bench_settle_{}", std::process::id());
    match PgStore::connect_with_schema(&url, &schema) {
        Ok(pg) => {
            settle_rows(&pg, "postgres", models, each);
            if let Err(e) = pg.drop_schema() {
                println!("(could not drop bench schema {schema}: {e})");
            }
        }
        Err(e) => println!("| postgres | SKIPPED: PostgreSQL not reachable at {url}: {e} | | |"),
    }
}

fn large_section(states: i64) {
    let mut cfg = ModelConfig::new(4);
    cfg.seed = Some(3);
    let mut m = Model::new(cfg).expect("model");
    for i in 0..states {
        // Array states: the realistic (and larger) key kind.
        let s = [(i % 1000) as f64, (i / 1000) as f64];
        m.update(&Experience::new(&s[..], (i % 4) as usize, 1.0, &s[..]))
            .expect("update");
    }
    assert_eq!(m.len(), states as usize);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("large.db");
    let (uid, id, save) = {
        let s = SqliteStore::open(&path).expect("open");
        let uid = user(&s, "large@bench");
        let t = Instant::now();
        let id = s
            .create_model(&uid, "large", &m, None, NOW)
            .expect("save")
            .id;
        let save = t.elapsed();
        (uid, id, save)
    };
    let s = SqliteStore::open(&path).expect("reopen");
    let t = Instant::now();
    let back = s.export_model(&uid, &id).expect("load");
    let load = t.elapsed();
    assert_eq!(back.len(), states as usize);
    let (mid, last) = (states as usize / 2, states as usize - 1);
    assert_eq!(back.table().key_at(mid), m.table().key_at(mid));
    let k = back.table().key_at(last).expect("last key");
    assert_eq!(back.q_values(k).expect("q"), m.q_values(k).expect("q"));
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    row(
        "sqlite",
        &format!("save a {states}-state model (create_model, committed)"),
        save.as_secs_f64() * 1000.0,
        "ms",
    );
    row(
        "sqlite",
        "load it in a reopened store (export_model)",
        load.as_secs_f64() * 1000.0,
        "ms",
    );
    row(
        "sqlite",
        "database file after save (WAL checkpointed)",
        size as f64 / 1e6,
        "MB",
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it: then every section runs once, tiny, as a smoke test.
    let full = args.iter().any(|a| a == "--bench");
    let filter: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let want = |s: &str| filter.is_empty() || filter.iter().any(|f| s.contains(f.as_str()));
    let dur = if full {
        seconds()
    } else {
        Duration::from_millis(50)
    };
    if !full {
        println!("(smoke run: pass --bench, as `cargo bench` does, for real figures)");
    }
    println!("| backend | workload | value | unit |");
    println!("| --- | --- | ---: | --- |");
    if want("sqlite") {
        sqlite_section(dur);
    }
    if want("postgres") {
        postgres_section(dur);
    }
    if want("predict") {
        predict_section(if full { 20_000_000 } else { 100_000 });
    }
    if want("large") {
        large_section(if full { 1_000_000 } else { 10_000 });
    }
    if want("settle") {
        let (models, each) = if full { settle_size() } else { (5, 3) };
        settle_section(models, each);
    }
}
