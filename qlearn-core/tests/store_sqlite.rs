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
