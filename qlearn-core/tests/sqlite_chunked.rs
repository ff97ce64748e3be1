//! Whole-table operations on the SQLite store are written in chunks between
//! other tenants' commits (issue 11): while one tenant's big import or
//! reshape is half written (the file holds some of its new rows, not all),
//! another tenant's updates complete; calls on the reshaped model itself
//! wait for it and none is lost; a crash mid-way (SIGKILL of a child
//! process) leaves the old model intact and no unused rows behind; under
//! constant writes the WAL keeps starting over (the checkpointer, not the
//! writer, copies it), so it stays bounded.
#![cfg(all(unix, feature = "sqlite"))]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use qlearn_core::store::sqlite::SqliteStore;
use qlearn_core::store::{Meter, ModelPatch, NewUser, Report, Store};
use qlearn_core::tenancy::{Role, Tier, TierLimits};
use qlearn_core::{Algorithm, Experience, Model, ModelConfig, StateRef};

const NOW: i64 = 1_790_038_400;
const UNLIMITED: TierLimits = TierLimits::UNLIMITED;
/// States of the big model: about 100 chunks.
const BIG: usize = 100_000;
const CHILD_ENV: &str = "QLEARN_CHUNKED_CHILD";

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

/// A 4-action model holding `states` integer states (values all differ).
fn filled(states: usize) -> Model {
    let mut c = ModelConfig::new(4);
    c.seed = Some(7);
    let mut m = Model::new(c).expect("config");
    for i in 0..states as i64 {
        m.update(&Experience::new(
            i,
            (i % 4) as usize,
            i as f64 * 1e-3,
            i + 1,
        ))
        .expect("update");
    }
    m
}

fn update(s: &dyn Store, uid: &str, model: &str, state: i64) {
    let meter = Meter {
        user_id: uid,
        limits: &UNLIMITED,
        now: NOW,
    };
    let e = Experience::new(StateRef::Int(state), 0, 1.0, StateRef::Int(state + 1));
    s.update(&meter, model, &[e], Report::Outcomes)
        .expect("update");
}

/// A read connection on the store's file (the store holds only its own
/// lock file; WAL lets this read while the writer writes).
fn peek(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("open for reading");
    c.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    c
}

/// Rows written so far of each table no model uses yet (or any more).
fn loose_rows(c: &rusqlite::Connection) -> Vec<(i64, i64)> {
    let mut st = c
        .prepare(
            "SELECT l.tab, (SELECT COUNT(*) FROM q_rows WHERE id BETWEEN l.tab * 4294967296 \
             AND l.tab * 4294967296 + 4294967295) FROM loose_tables l",
        )
        .expect("prepare");
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query");
    rows.collect::<rusqlite::Result<_>>().expect("rows")
}

/// Whether the model's rows are still those it was created with (no
/// reshape switched it yet).
fn original_table(c: &rusqlite::Connection, model: &str) -> bool {
    c.query_row(
        "SELECT tab IS NULL FROM models WHERE id = ?1",
        [model],
        |r| r.get(0),
    )
    .expect("model row")
}

/// Runs `op` while another tenant updates its own model in a loop; after
/// each acknowledged update the file is read. Returns the distinct counts
/// of new rows found half written (`0 < rows < BIG`) right after one of
/// the other tenant's updates completed, while `building` held.
fn others_during(
    s: &SqliteStore,
    other: (&str, &str),
    building: impl Fn(&rusqlite::Connection) -> bool + Sync,
    op: impl FnOnce() + Send,
) -> Vec<i64> {
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let watcher = sc.spawn(|| {
            let c = peek(s.path());
            let mut seen = Vec::new();
            let mut i = 0;
            while !done.load(Ordering::Acquire) {
                update(s, other.0, other.1, i % 50);
                i += 1;
                if !building(&c) {
                    continue;
                }
                for (_, rows) in loose_rows(&c) {
                    if rows > 0 && rows < BIG as i64 && !seen.contains(&rows) {
                        seen.push(rows);
                    }
                }
            }
            seen
        });
        op();
        done.store(true, Ordering::Release);
        watcher.join().expect("watcher")
    })
}

/// A store at `path` with another tenant's small model: `(store, other
/// user, their model, user a, the big model)`.
fn two_tenants(path: &Path) -> (SqliteStore, String, String, String, Model) {
    let s = SqliteStore::open(path).unwrap();
    let other = user(&s, "other@example.com");
    let other_model = s
        .create_model(&other, "small", &filled(50), None, NOW)
        .unwrap()
        .id;
    let a = user(&s, "a@example.com");
    (s, other, other_model, a, filled(BIG))
}

#[test]
fn other_tenants_commit_between_the_chunks_of_an_import() {
    let dir = tempfile::tempdir().unwrap();
    let (s, other, other_model, a, big) = two_tenants(&dir.path().join("import.db"));
    let seen = others_during(
        &s,
        (&other, &other_model),
        |_| true,
        || {
            s.create_model(&a, "big", &big, None, NOW).expect("import");
        },
    );
    assert!(
        seen.len() >= 2,
        "another tenant's updates completed while the import was half written only at {seen:?} \
         (rows of the new table); the import held the writer"
    );
    // Done: nothing loose, the model whole.
    let c = peek(s.path());
    assert!(loose_rows(&c).is_empty(), "no loose table left");
    let models = s.models(&a).unwrap();
    assert_eq!(models.len(), 1);
    let back = s.export_model(&a, &models[0].id).unwrap();
    assert_eq!(back.to_bytes().unwrap(), big.to_bytes().unwrap());
}

#[test]
fn a_reshape_lets_other_tenants_commit_and_makes_its_own_model_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reshape.db");
    let (s, other, other_model, a, big) = two_tenants(&path);
    let id = s.create_model(&a, "big", &big, None, NOW).unwrap().id;
    let before = s.model(&a, &id).unwrap().stats.updates;
    let mut double = big.config().clone();
    double.algorithm = Algorithm::DoubleQLearning;
    // The owner's own updates of the same model, during the reshape:
    // new states, each acknowledged one must be there afterwards.
    let own_done = AtomicBool::new(false);
    let (seen, acked) = std::thread::scope(|sc| {
        let own = sc.spawn(|| {
            let mut acked = Vec::new();
            let mut k = 0i64;
            while !own_done.load(Ordering::Acquire) {
                let state = 10_000_000 + k;
                update(&s, &a, &id, state);
                acked.push(state);
                k += 1;
            }
            acked
        });
        let seen = others_during(
            &s,
            (&other, &other_model),
            |c| original_table(c, &id),
            || {
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
            },
        );
        own_done.store(true, Ordering::Release);
        (seen, own.join().expect("own updates"))
    });
    assert!(
        seen.len() >= 2,
        "another tenant's updates completed while the reshaped table was half written only at \
         {seen:?} (rows of the new table); the reshape held the writer"
    );
    let check = |s: &SqliteStore| {
        let info = s.model(&a, &id).unwrap();
        assert_eq!(info.config.algorithm, Algorithm::DoubleQLearning);
        assert_eq!(
            info.stats.updates,
            before + acked.len() as u64,
            "every acknowledged update of the reshaped model counted"
        );
        let m = s.export_model(&a, &id).unwrap();
        assert_eq!(m.len(), BIG + acked.len(), "every state kept");
        for &state in &acked {
            assert!(
                m.table().keys().any(|k| k == StateRef::Int(state)),
                "state {state} of an acknowledged update lost"
            );
        }
        // The old rows were learned through the reshape: same values.
        for i in (0..BIG as i64).step_by(997) {
            assert_eq!(
                m.q_values(StateRef::Int(i)).unwrap(),
                big.q_values(StateRef::Int(i)).unwrap(),
                "state {i}"
            );
        }
    };
    check(&s);
    assert!(loose_rows(&peek(&path)).is_empty(), "old rows deleted");
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    check(&s);
}

// ---- the WAL stays bounded ------------------------------------------------

/// The WAL file's checkpoint sequence number (bytes 12..16 of its header,
/// big-endian: SQLite adds one each time the WAL starts over) and the
/// file's size.
fn wal_state(db: &Path) -> (u32, u64) {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let Ok(mut f) = std::fs::File::open(&wal) else {
        return (0, 0);
    };
    let mut head = [0u8; 16];
    let seq = match std::io::Read::read_exact(&mut f, &mut head) {
        Ok(()) => u32::from_be_bytes([head[12], head[13], head[14], head[15]]),
        Err(_) => 0,
    };
    (seq, f.metadata().map_or(0, |m| m.len()))
}

/// The WAL size (bytes) past which the writer itself waits for a
/// checkpoint: 4 x 8,192 pages of 4 KiB (`checkpointer.rs`).
const WAL_HARD_BYTES: u64 = 4 * 8192 * 4096;

#[test]
fn under_constant_writes_the_wal_starts_over_and_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let s = SqliteStore::open(&path).unwrap();
    let uid = user(&s, "w@example.com");
    let id = s
        .create_model(&uid, "m", &filled(50), None, NOW)
        .unwrap()
        .id;
    let (first, _) = wal_state(&path);
    // Callers updating as fast as they can: every commit appends a few
    // pages, and the writer is never idle long enough for a plain
    // background checkpoint to catch up.
    let deadline = Instant::now() + Duration::from_secs(300);
    let stop = AtomicBool::new(false);
    let (restarts, largest) = std::thread::scope(|sc| {
        for t in 0..4i64 {
            let (s, uid, id, stop) = (&s, &uid, &id, &stop);
            sc.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    update(s, uid, id, t * 100 + i % 40);
                    i += 1;
                }
            });
        }
        let mut largest = 0;
        let restarts = loop {
            let (seq, size) = wal_state(&path);
            largest = largest.max(size);
            if seq >= first + 3 || Instant::now() > deadline {
                break seq - first;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        stop.store(true, Ordering::Relaxed);
        (restarts, largest)
    });
    assert!(
        restarts >= 3,
        "in 300 s of constant writes the WAL ({largest} bytes at most) started over {restarts} times"
    );
    assert!(
        largest <= WAL_HARD_BYTES + (8 << 20),
        "the WAL file grew to {largest} bytes, past its bound"
    );
}

// ---- crash mid-way ----------------------------------------------------------

/// What the child prints once it is about to start (libtest prints the
/// test's name on the same line).
const READY: &str = "chunked-child-ready";
/// Times the child runs its operation before it only waits to be killed.
const CHILD_RUNS: usize = 3;

/// Child mode (does nothing in a normal run): opens the store, prints
/// [`READY`], then runs the operation named in the environment (`import`
/// or `reshape` of the model given) [`CHILD_RUNS`] times and waits to be
/// killed.
#[test]
fn chunked_child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut it = spec.split('\t');
    let (op, path, uid, id) = (
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
    );
    let s = SqliteStore::open(path).expect("child: open");
    let big = s.export_model(uid, id).expect("child: export");
    println!("{READY}");
    let mut config = big.config().clone();
    for _ in 0..CHILD_RUNS {
        match op {
            "import" => {
                s.create_model(uid, "copy", &big, None, NOW)
                    .expect("child: import");
            }
            _ => {
                config.algorithm = match config.algorithm {
                    Algorithm::DoubleQLearning => Algorithm::QLearning,
                    _ => Algorithm::DoubleQLearning,
                };
                s.update_model(
                    uid,
                    id,
                    ModelPatch {
                        config: Some(config.clone().into()),
                        ..ModelPatch::default()
                    },
                    NOW,
                )
                .expect("child: reshape");
            }
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Runs the child's `op` on model `id` and SIGKILLs it as soon as the
/// file holds a half-written new table.
fn kill_mid_way(op: &str, path: &Path, uid: &str, id: &str) {
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "--exact",
            "chunked_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{op}\t{}\t{uid}\t{id}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.any(|l| l.is_ok_and(|l| l.trim_end().ends_with(READY)));
    if !ready {
        let _ = child.kill();
        panic!("the child did not start");
    }
    let c = peek(path);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // A reshape's new table while the model still uses its old one;
        // an import's table before its model exists.
        let half = (op == "import" || original_table(&c, id))
            && loose_rows(&c)
                .iter()
                .any(|&(_, rows)| rows > 0 && rows < BIG as i64);
        if half {
            child.kill().expect("kill child");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("never saw a half-written table");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = child.wait().expect("wait child");
    assert!(!status.success(), "killed, not exited");
}

/// Asserts that the file holds exactly the rows its models count: none
/// of a loose table is left.
fn every_row_counted(c: &rusqlite::Connection) {
    let (stored, counted): (i64, i64) = c
        .query_row(
            "SELECT (SELECT COUNT(*) FROM q_rows), (SELECT SUM(n_rows) FROM models)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(stored, counted, "every stored row belongs to a model");
}

/// After the crash: nothing loose or unused in the file, and the user's
/// models exactly `models`, each whole.
fn check_after_crash(path: &Path, uid: &str, id: &str, big: &Model) {
    let s = SqliteStore::open(path).expect("reopen after SIGKILL");
    let models = s.models(uid).unwrap();
    for info in &models {
        let m = s.export_model(uid, &info.id).unwrap();
        assert_eq!(m.len(), BIG, "model {} whole", info.name);
    }
    let m = s.export_model(uid, id).unwrap();
    assert_eq!(m.config().algorithm, Algorithm::QLearning, "not reshaped");
    assert_eq!(m.to_bytes().unwrap(), big.to_bytes().unwrap(), "intact");
    drop(s);
    let c = peek(path);
    assert!(loose_rows(&c).is_empty(), "loose tables deleted at open");
    every_row_counted(&c);
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "integrity");
}

#[test]
fn a_crash_mid_import_or_reshape_leaves_the_old_model_and_no_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let big = filled(BIG);
    let (uid, id) = {
        let s = SqliteStore::open(&path).unwrap();
        let uid = user(&s, "a@example.com");
        let id = s.create_model(&uid, "big", &big, None, NOW).unwrap().id;
        (uid, id)
    };
    kill_mid_way("import", &path, &uid, &id);
    check_after_crash(&path, &uid, &id, &big);
    // A first reshape that is killed while writing its new table.
    kill_mid_way("reshape", &path, &uid, &id);
    check_after_crash(&path, &uid, &id, &big);
}

/// Rewrites the Q-rows of the store file at `path` in the layout before
/// migration 14 (a `WITHOUT ROWID` table keyed by table and row number),
/// and the open decisions' index as before migration 15 (by deadline
/// alone), and forgets both migrations, as a file written by an earlier
/// release; then runs `extra` (SQL) in the same transaction.
fn to_schema_13(path: &Path, extra: &str) {
    peek(path)
        .execute_batch(&format!(
            "BEGIN IMMEDIATE; \
             CREATE TABLE q_old (mid INTEGER NOT NULL, row_no INTEGER NOT NULL, \
               key BLOB NOT NULL, vals BLOB NOT NULL, PRIMARY KEY (mid, row_no)) WITHOUT ROWID; \
             INSERT INTO q_old SELECT id >> 32, id & 4294967295, key, vals FROM q_rows; \
             DROP TABLE q_rows; \
             ALTER TABLE q_old RENAME TO q_rows; \
             DROP INDEX decisions_due; \
             CREATE INDEX decisions_due ON decisions (closes_ms) WHERE status = 0; \
             DELETE FROM schema_migrations WHERE version >= 14; \
             {extra} \
             COMMIT;"
        ))
        .expect("back to schema 13");
}

/// Every model, exported, by owner and id.
fn exports(s: &SqliteStore, owners: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for owner in owners {
        for info in s.models(owner).unwrap() {
            let m = s.export_model(owner, &info.id).unwrap();
            all.push((info.id, m.to_bytes().unwrap()));
        }
    }
    all
}

/// A file written before Q-rows had one integer key (schema 13) opens with
/// every model whole: a model's own rows, a reshaped model's rows under a
/// table number of its own, rows learned one by one; a leftover loose
/// table's rows are deleted; and learning goes on from there.
#[test]
fn rows_stored_before_the_integer_keys_migrate_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v13.db");
    let (s, other, other_model, a, _) = two_tenants(&path);
    let plain = s
        .create_model(&a, "plain", &filled(3_000), None, NOW)
        .unwrap()
        .id;
    let reshaped = s
        .create_model(&a, "reshaped", &filled(2_000), None, NOW)
        .unwrap()
        .id;
    let mut double = filled(1).config().clone();
    double.algorithm = Algorithm::DoubleQLearning;
    s.update_model(
        &a,
        &reshaped,
        ModelPatch {
            config: Some(double.into()),
            ..ModelPatch::default()
        },
        NOW,
    )
    .unwrap();
    for state in [3, 60, 61, 3] {
        update(&s, &other, &other_model, state);
    }
    update(&s, &a, &plain, 5_000);
    let before = exports(&s, &[&a, &other]);
    drop(s);
    // A crash left a loose table behind, under a number past every model's.
    to_schema_13(
        &path,
        "INSERT INTO loose_tables (tab) VALUES (1000); \
         INSERT INTO q_rows VALUES (1000, 0, x'00', x'00'), (1000, 1, x'01', x'01');",
    );
    let s = SqliteStore::open(&path).expect("migrates");
    assert_eq!(exports(&s, &[&a, &other]), before, "every model whole");
    update(&s, &other, &other_model, 62);
    update(&s, &a, &reshaped, 7);
    let after = exports(&s, &[&a, &other]);
    assert_ne!(after, before, "the updates learned");
    drop(s);
    let s = SqliteStore::open(&path).expect("reopens");
    assert_eq!(
        exports(&s, &[&a, &other]),
        after,
        "learned after the migration"
    );
    let c = peek(&path);
    every_row_counted(&c);
    let version: i64 = c
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        version,
        i64::from(qlearn_core::store::migrations::latest(
            qlearn_core::store::migrations::SQLITE
        ))
    );
}

/// A row that cannot be keyed (its row number past 2^32 - 1) fails the
/// migration rather than land on another table's keys, and the file is
/// left as it was.
#[test]
fn a_row_past_the_key_bounds_fails_the_migration_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v13.db");
    let s = SqliteStore::open(&path).unwrap();
    let a = user(&s, "a@example.com");
    s.create_model(&a, "m", &filled(10), None, NOW).unwrap();
    drop(s);
    // Row 2^32 of table 1 would be keyed as row 0 of table 2.
    to_schema_13(
        &path,
        "INSERT INTO q_rows VALUES (1, 4294967296, x'00', x'00');",
    );
    let Err(err) = SqliteStore::open(&path) else {
        panic!("a row past the key bounds migrated");
    };
    assert!(err.to_string().contains("NOT NULL"), "{err}");
    let c = peek(&path);
    let (rows, version): (i64, i64) = c
        .query_row(
            "SELECT (SELECT COUNT(*) FROM q_rows WHERE row_no >= 0), \
             (SELECT MAX(version) FROM schema_migrations)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, version), (11, 13), "the old table as it was");
}
