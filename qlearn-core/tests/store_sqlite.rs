//! The conformance suite on [`SqliteStore`], each test on its own file in a
//! temporary directory, plus SQLite-specific checks (migrations, the
//! one-process lock, reopening).
#![cfg(feature = "sqlite")]

mod conformance;

use std::path::Path;

use qlearn_core::store::sqlite::{Durability, SqliteOptions, SqliteStore};
use qlearn_core::store::Store;

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).unwrap_or_else(|e| panic!("[sqlite] cannot open {path:?}: {e}"))
}

/// Runs one check on a fresh store in its own temporary directory.
fn with_store(check: impl FnOnce(&SqliteStore)) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("qlearn.db"));
    check(&store);
}

conformance::conformance_tests!(with_store);

/// The model cache budget of [`tiny_cache`]: a few small models fit (each
/// counts at least 1.5 KiB), so every few calls evict one.
const TINY_CACHE: usize = 8 << 10;

/// Runs one check on a fresh store whose model cache holds [`TINY_CACHE`]
/// bytes.
fn with_tiny_cache(check: impl FnOnce(&SqliteStore)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qlearn.db");
    let options = SqliteOptions {
        cache_bytes: TINY_CACHE,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&path, options)
        .unwrap_or_else(|e| panic!("[sqlite] cannot open {path:?}: {e}"));
    check(&store);
    let (bytes, models) = (store.cached_bytes(), store.cached_models());
    assert!(
        bytes <= TINY_CACHE || models == 1,
        "[sqlite] once idle the cache is within its budget (or holds one \
         model bigger than it): {bytes} bytes in {models} models"
    );
}

/// The whole suite again with models evicted every few calls: a model
/// reloaded from the file must be exactly what was acknowledged.
mod tiny_cache {
    use super::with_tiny_cache;
    crate::conformance::conformance_tests!(with_tiny_cache);
}

#[test]
fn reopen_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qlearn.db");
    conformance::reopen_persistence(|| open(&path));
}

#[test]
fn reopen_persistence_at_power_loss_durability() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qlearn.db");
    let options = SqliteOptions {
        durability: Durability::PowerLoss,
        ..SqliteOptions::default()
    };
    conformance::reopen_persistence(|| SqliteStore::open_with(&path, options).unwrap());
}

#[test]
fn migrations_from_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let s = open(&path);
    let latest = SqliteStore::latest_schema_version();
    assert!(latest >= 1);
    assert_eq!(
        s.schema_version().unwrap(),
        latest,
        "[sqlite] migrated at open"
    );
    drop(s);
    // Reopening applies nothing twice.
    let s = open(&path);
    assert_eq!(s.schema_version().unwrap(), latest);
    drop(s);
    let c = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = c
        .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, i64::from(latest), "[sqlite] one record per migration");
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal", "[sqlite] WAL mode");
}

/// A database written before usage had kinds (schema 5): its usage rows
/// become kind `unknown` with their calls, and new calls count by kind on
/// top of them.
#[test]
fn usage_before_kinds_migrates_as_unknown() {
    use qlearn_core::store::migrations::SQLITE;
    use qlearn_core::store::{CallKind, Meter};
    use qlearn_core::tenancy::{BillingMonth, TierLimits};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v5.db");
    let month = BillingMonth::new(2026, 12).unwrap();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE schema_migrations (\
               version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .unwrap();
        for m in SQLITE.iter().filter(|m| m.version <= 5) {
            c.execute_batch(m.sql).unwrap();
            c.execute(
                "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                rusqlite::params![m.version, m.name],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO users (id, email, password_hash, tier, role, created_at, \
             password_changed_at) VALUES ('u1', 'old@example.com', 'x', 'pro', 'user', 0, 0)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO usage (user_id, month, day, calls) VALUES \
             ('u1', ?1, 1, 40), ('u1', ?1, 2, 2)",
            [month.to_string()],
        )
        .unwrap();
    }
    let s = open(&path);
    let u = s.usage("u1", month).unwrap();
    assert_eq!((u.calls, u.overage), (42, 0));
    assert_eq!(u.of_kind(CallKind::Unknown), 42);
    assert_eq!((u.per_day[0], u.per_day[1]), (40, 2));
    // New calls count by kind, on top of the migrated ones (for the quota too).
    let model = qlearn_core::Model::new(qlearn_core::ModelConfig::new(2)).unwrap();
    let id = s.create_model("u1", "m", &model, None, 0).unwrap().id;
    let l = TierLimits {
        monthly_calls: Some(43),
        ..TierLimits::UNLIMITED
    };
    let m = Meter {
        user_id: "u1",
        limits: &l,
        now: month.start_unix() + 5,
    };
    let st = qlearn_core::StateRef::Int(1);
    s.predict(&m, &id, st, false, None).unwrap();
    assert!(
        s.predict(&m, &id, st, false, None).is_err(),
        "quota counts old rows"
    );
    drop(s);
    let u = open(&path).usage("u1", month).unwrap();
    assert_eq!(u.of_kind(CallKind::Unknown), 42);
    assert_eq!(u.of_kind(CallKind::Predict), 1);
    assert_eq!(u.per_day[0], 41);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    drop(open(&path));
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
        [],
    )
    .unwrap();
    drop(c);
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("newer"), "[sqlite] {err}");
}

#[test]
fn one_process_per_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let s = open(&path);
    // flock locks belong to the open file description: a second open in the
    // same process conflicts like another process would.
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("in use by another process"), "[sqlite] {err}");
    drop(s);
    open(&path);
}

#[test]
fn calls_after_flush_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("closed.db"));
    let u = conformance::new_user(&s, "a@example.com");
    s.flush().unwrap();
    let r = s.set_tier(&u.id, qlearn_core::tenancy::Tier::Pro);
    assert!(
        matches!(
            r,
            Err(qlearn_core::Error::Storage {
                backend: "sqlite",
                ..
            })
        ),
        "{r:?}"
    );
    // Reads still work.
    assert!(s.user(&u.id).unwrap().is_some());
}

/// A model evicted between calls is reloaded exactly as acknowledged:
/// three models used in turn with a cache of one byte (so only the model
/// just used stays), exploring (the random generator's state must survive
/// each round trip through the file, also after a call that only
/// predicted); every prediction and outcome, and the final models byte for
/// byte, equal local copies.
#[test]
fn evicted_models_reload_exactly() {
    use qlearn_core::store::Meter;
    use qlearn_core::{Experience, StateRef};

    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        cache_bytes: 1,
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open_with(dir.path().join("evict.db"), options).unwrap();
    let u = conformance::new_user(&s, "a@example.com");
    let l = conformance::limits(None, None);
    let m = Meter {
        user_id: &u.id,
        limits: &l,
        now: conformance::NOW,
    };
    let mut local: Vec<_> = (0..3).map(|i| conformance::seeded(3, 40 + i)).collect();
    let ids: Vec<String> = local
        .iter()
        .enumerate()
        .map(|(i, model)| {
            let info = s.create_model(&u.id, &format!("m{i}"), model, None, conformance::NOW);
            info.unwrap().id
        })
        .collect();
    for step in 0..300_i64 {
        let k = (step % 3) as usize;
        let (st, next) = (StateRef::Int(step % 7), StateRef::Int((step + 1) % 7));
        let got = s.predict(&m, &ids[k], st, true, None).unwrap();
        let want = local[k].predict_full(st, true, None).unwrap();
        assert_eq!(got, want, "step {step}");
        // Every fourth call predicts only: its own commit carries the
        // random generator's new state.
        if step % 4 != 3 {
            let reward = (step % 5) as f64 - 2.0;
            let e = Experience::new(st, got.action, reward, next).done(step % 10 == 9);
            let out = conformance::update(&s, &m, &ids[k], &[e]).unwrap();
            assert_eq!(out, [local[k].update(&e).unwrap()], "step {step}");
        }
        assert_eq!(s.cached_models(), 1, "step {step}: the model just used");
        // A predict through the decisions path (these models log none)
        // keeps its log entry only as long as the model is cached.
        let plain = qlearn_core::decisions::Decide {
            state: st,
            allowed_actions: None,
            explore: false,
            decision_id: None,
            episode_id: None,
            baseline_action: None,
        };
        let d = s.decide(&m, &ids[k], &plain).unwrap();
        assert!(d.decision.is_none());
        local[k].predict_full(st, false, None).unwrap();
        assert!(
            s.cached_decision_logs() <= 1,
            "step {step}: logs of evicted models"
        );
    }
    for (id, want) in ids.iter().zip(&local) {
        let got = s.export_model(&u.id, id).unwrap();
        assert_eq!(got.to_bytes().unwrap(), want.to_bytes().unwrap());
    }
}

// ---- memory of the model cache ---------------------------------------------------

/// Set in a child process of [`model_cache_memory`]: `build PATH MODELS
/// STATES` or `measure PATH CACHE_BYTES`.
const MEMORY_CHILD_ENV: &str = "QLEARN_CACHE_MEMORY_CHILD";

/// A number from `/proc/self/status` (kB), e.g. `VmRSS`.
fn proc_status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The child side of [`model_cache_memory`] (does nothing in a normal run).
#[test]
fn model_cache_memory_child() {
    use qlearn_core::store::{Meter, Report};
    use qlearn_core::{Experience, Model, ModelConfig, StateRef};

    let Ok(spec) = std::env::var(MEMORY_CHILD_ENV) else {
        return;
    };
    let args: Vec<&str> = spec.split(' ').collect();
    let limits = conformance::limits(None, None);
    match args.as_slice() {
        ["build", path, models, states] => {
            let (models, states): (usize, i64) = (models.parse().unwrap(), states.parse().unwrap());
            let s = open(Path::new(path));
            let u = conformance::new_user(&s, "memory@example.com");
            let mut model = Model::new(ModelConfig::new(4)).unwrap();
            for i in 0..states {
                let st = StateRef::Int(i);
                model
                    .update(&Experience::new(st, (i % 4) as usize, 1.0, st).done(true))
                    .unwrap();
            }
            assert_eq!(model.len(), states as usize);
            for k in 0..models {
                s.create_model(&u.id, &format!("m{k}"), &model, None, 0)
                    .unwrap();
            }
        }
        ["measure", path, cache_bytes] => {
            let options = SqliteOptions {
                cache_bytes: cache_bytes.parse().unwrap(),
                ..SqliteOptions::default()
            };
            let s = SqliteStore::open_with(path, options).unwrap();
            let u = s.user_by_email("memory@example.com").unwrap().unwrap();
            let models = s.models(&u.id).unwrap();
            let before = proc_status_kb("VmRSS");
            let meter = Meter {
                user_id: &u.id,
                limits: &limits,
                now: 0,
            };
            let started = std::time::Instant::now();
            for m in &models {
                let st = StateRef::Int(0);
                let e = Experience::new(st, 0, 1.0, st).done(true);
                s.update(&meter, &m.id, &[e], Report::Outcomes).unwrap();
            }
            let took = started.elapsed();
            println!(
                "result models={} rss_before_kb={before} rss_after_kb={} peak_kb={} \
                 cached_bytes={} seconds={:.2}",
                models.len(),
                proc_status_kb("VmRSS"),
                proc_status_kb("VmHWM"),
                s.cached_bytes(),
                took.as_secs_f64()
            );
        }
        _ => panic!("{MEMORY_CHILD_ENV}: unknown {spec:?}"),
    }
}

/// Resident memory of a process that uses each of `QLEARN_MEMORY_MODELS`
/// models (default 1,000) of `QLEARN_MEMORY_STATES` states (default 1,000)
/// x 4 actions once, with the model cache unbounded, at its default budget
/// and at 16 MiB; each in a fresh process over the same database. Prints a
/// table (see `docs/benchmarks-storage.md`):
///
/// ```text
/// cargo test --release -p qlearn-core --test store_sqlite -- --ignored --nocapture model_cache_memory
/// ```
#[test]
#[ignore = "a measurement: run by hand with --nocapture"]
fn model_cache_memory() {
    use std::process::Command;
    let env = |k: &str, d: usize| std::env::var(k).map_or(d, |v| v.parse().unwrap());
    let (models, states) = (
        env("QLEARN_MEMORY_MODELS", 1_000),
        env("QLEARN_MEMORY_STATES", 1_000),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let child = |spec: String| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "model_cache_memory_child", "--nocapture"])
            .env(MEMORY_CHILD_ENV, spec)
            .output()
            .unwrap();
        assert!(out.status.success(), "child failed: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let started = std::time::Instant::now();
    child(format!("build {} {models} {states}", path.display()));
    println!(
        "built {models} models x {states} states x 4 actions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("| cache budget | RSS before | RSS after using every model | peak RSS | cached (counted) | time |");
    println!("|---|---|---|---|---|---|");
    for (label, bytes) in [
        ("unbounded (before)", usize::MAX),
        ("256 MiB (default)", SqliteOptions::default().cache_bytes),
        ("16 MiB", 16 << 20),
    ] {
        let out = child(format!("measure {} {bytes}", path.display()));
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("result "))
            .unwrap_or_else(|| panic!("no result in {out}"));
        let field = |k: &str| -> f64 {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {line}"))
        };
        println!(
            "| {label} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.2} s |",
            field("rss_before_kb") / 1024.0,
            field("rss_after_kb") / 1024.0,
            field("peak_kb") / 1024.0,
            field("cached_bytes") / 1048576.0,
            field("seconds"),
        );
    }
}
