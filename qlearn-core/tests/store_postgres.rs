//! The conformance suite on [`PgStore`], each test in its own PostgreSQL
//! schema (random name, dropped at the end), so tests run in parallel.
//!
//! The server is `QLEARN_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it does not answer, each
//! test prints `SKIPPED: PostgreSQL not reachable at ...` and passes, unless
//! `QLEARN_REQUIRE_POSTGRES=1` (CI), in which case it fails.
#![cfg(feature = "postgres")]

mod conformance;

use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};

use qlearn_core::store::postgres::PgStore;
use qlearn_core::store::Store;

fn url() -> String {
    std::env::var("QLEARN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of its own for one test; dropped (with everything in it) when
/// the test ends, also on failure.
struct Schema {
    name: String,
}

impl Schema {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Schema {
            name: format!(
                "qlearn_test_{}_{}_{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
        }
    }

    /// Opens a store on this schema, or `None` (after saying so loudly)
    /// when PostgreSQL is not reachable and not required.
    fn open(&self) -> Option<PgStore> {
        match PgStore::connect_with_schema(&url(), &self.name) {
            Ok(s) => Some(s),
            Err(e) => {
                let required = std::env::var("QLEARN_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
                if required {
                    panic!(
                        "[postgres] not reachable at {} and QLEARN_REQUIRE_POSTGRES=1: {e}",
                        url()
                    );
                }
                let _ =
                    writeln!(std::io::stderr().lock(),
                    "SKIPPED: PostgreSQL not reachable at {} ({e}); set QLEARN_TEST_POSTGRES_URL, \
                     or QLEARN_REQUIRE_POSTGRES=1 to fail instead",
                    url()
                );
                None
            }
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&url(), postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
        }
    }
}

/// Runs one check on a store in a schema of its own (dropped afterwards),
/// or skips loudly when PostgreSQL is not reachable and not required.
fn with_store(check: impl FnOnce(&PgStore)) {
    let schema = Schema::new();
    let Some(store) = schema.open() else { return };
    check(&store);
}

conformance::conformance_tests!(with_store);

#[test]
fn reopen_persistence() {
    let schema = Schema::new();
    if schema.open().is_none() {
        return;
    }
    conformance::reopen_persistence(|| schema.open().expect("[postgres] reopen"));
}

#[test]
fn migrations_from_an_empty_schema() {
    let schema = Schema::new();
    let Some(s) = schema.open() else { return };
    assert_eq!(
        s.schema(),
        Some(schema.name.as_str()),
        "[postgres] the store names the schema it was given"
    );
    let latest = PgStore::latest_schema_version();
    assert!(latest >= 1);
    assert_eq!(
        s.schema_version().unwrap(),
        latest,
        "[postgres] migrated at connect"
    );
    drop(s);
    // Several instances starting at once migrate once.
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| schema.open().expect("[postgres] concurrent start"));
        }
    });
    let mut c = postgres::Client::connect(&url(), postgres::NoTls).unwrap();
    let n: i64 = c
        .query_one(
            &format!("SELECT COUNT(*) FROM \"{}\".schema_migrations", schema.name),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, i64::from(latest), "[postgres] one record per migration");
}

/// A schema written before usage had kinds (version 6): its day rows
/// become kind `unknown` with their calls, the month's overage 0, and new
/// calls count by kind on top of them (for the quota too).
#[test]
fn usage_before_kinds_migrates_as_unknown() {
    use qlearn_core::store::migrations::POSTGRES;
    use qlearn_core::store::{CallKind, Meter};
    use qlearn_core::tenancy::{BillingMonth, TierLimits};
    let schema = Schema::new();
    let Ok(mut c) = postgres::Client::connect(&url(), postgres::NoTls) else {
        // Reachability is reported (or required) by `open` below.
        assert!(schema.open().is_none());
        return;
    };
    let month = BillingMonth::new(2026, 12).unwrap();
    let s = &schema.name;
    c.batch_execute(&format!(
        "CREATE SCHEMA \"{s}\"; SET search_path TO \"{s}\"; \
         CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
         applied_at BIGINT NOT NULL)"
    ))
    .unwrap();
    for m in POSTGRES.iter().filter(|m| m.version <= 6) {
        c.batch_execute(m.sql).unwrap();
        c.execute(
            "INSERT INTO schema_migrations VALUES ($1, $2, 0)",
            &[&(m.version as i32), &m.name],
        )
        .unwrap();
    }
    c.batch_execute(&format!(
        "INSERT INTO users (id, email, password_hash, tier, role, created_at, \
           password_changed_at) VALUES ('u1', 'old@example.com', 'x', 'pro', 'user', 0, 0); \
         INSERT INTO usage_month (user_id, month, calls) VALUES ('u1', '{month}', 42); \
         INSERT INTO usage_day (user_id, month, day, calls) VALUES \
           ('u1', '{month}', 1, 40), ('u1', '{month}', 2, 2)"
    ))
    .unwrap();
    drop(c);
    let Some(store) = schema.open() else { return };
    let u = store.usage("u1", month).unwrap();
    assert_eq!((u.calls, u.overage), (42, 0));
    assert_eq!(u.of_kind(CallKind::Unknown), 42);
    assert_eq!((u.per_day[0], u.per_day[1]), (40, 2));
    let model = qlearn_core::Model::new(qlearn_core::ModelConfig::new(2)).unwrap();
    let id = store.create_model("u1", "m", &model, None, 0).unwrap().id;
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
    store.predict(&m, &id, st, false, None).unwrap();
    assert!(
        store.predict(&m, &id, st, false, None).is_err(),
        "[postgres] the quota counts the old rows"
    );
    let u = store.usage("u1", month).unwrap();
    assert_eq!(u.of_kind(CallKind::Unknown), 42);
    assert_eq!(u.of_kind(CallKind::Predict), 1);
    assert_eq!(u.per_day[0], 41);
}

#[test]
fn two_instances_share_quota_and_updates() {
    // Two stores (two pools, as two server instances would have) on one
    // schema: the row lock and the atomic debit hold across them.
    let schema = Schema::new();
    let Some(a) = schema.open() else { return };
    let b = schema.open().expect("[postgres] second instance");
    let u = conformance::new_user(&a, "shared@example.com");
    let info = conformance::ok(
        &a,
        a.create_model(
            &u.id,
            "m",
            &conformance::seeded(2, 1),
            None,
            conformance::NOW,
        ),
    );
    let limits = conformance::limits(Some(300), None);
    let meter = qlearn_core::store::Meter {
        user_id: &u.id,
        limits: &limits,
        now: conformance::NOW,
    };
    let granted = AtomicU32::new(0);
    std::thread::scope(|sc| {
        for t in 0..8 {
            let s: &PgStore = if t % 2 == 0 { &a } else { &b };
            let (granted, meter, info) = (&granted, &meter, &info);
            sc.spawn(move || {
                for _ in 0..50 {
                    let e = qlearn_core::Experience::new(1, 0, 1.0, 1).done(true);
                    match conformance::update(s, meter, &info.id, &[e]) {
                        Ok(_) => {
                            granted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(qlearn_core::Error::QuotaExceeded { .. }) => {}
                        Err(e) => panic!("[postgres] {e}"),
                    }
                }
            });
        }
    });
    assert_eq!(
        granted.load(Ordering::SeqCst),
        300,
        "[postgres] exactly the quota"
    );
    let st = conformance::ok(&b, b.model(&u.id, &info.id)).stats;
    assert_eq!(
        st.updates, 300,
        "[postgres] every granted update applied once"
    );
}

/// A `DATABASE_URL` whose search_path names a schema that does not exist is
/// a clear storage error at connect, never a panic.
#[test]
fn missing_search_path_schema_is_an_error_not_a_panic() {
    // Only meaningful when the server answers (the schema helper says so).
    let probe = Schema::new();
    if probe.open().is_none() {
        return;
    }
    let base = url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let bad = format!(
        "{base}{sep}options=-csearch_path%3Dqlearn_no_such_schema_{}",
        std::process::id()
    );
    match PgStore::connect(&bad) {
        Err(qlearn_core::Error::Storage { backend, message }) => {
            assert_eq!(backend, "postgres");
            assert!(message.contains("search_path"), "{message}");
        }
        Err(other) => panic!("expected a storage error naming the search_path, got {other:?}"),
        Ok(_) => panic!("connecting with a missing search_path schema must fail"),
    }
}
