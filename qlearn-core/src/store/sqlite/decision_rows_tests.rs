//! Tests of the SQLite decision rows: the plans of the log's reads (each
//! on its index, none over a model's whole log), the settle chunk's end,
//! the listing's SQL.

use super::super::decisions::{SQL_DUE_NTH, SQL_NEXT_DEADLINE, SQL_OPEN_MODELS};
use super::super::evaluations::sql_keyset;
use super::*;
use crate::store::due_models::DueStore;
use crate::store::Store;

/// What SQLite's planner does with each statement on a new store's
/// schema (no statistics, as in the store): the detail column of
/// `EXPLAIN QUERY PLAN`, one line per step.
pub(in crate::store::sqlite) fn plans(sqls: &[&str]) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("plan.db")).expect("a new store");
    store
        .read(|c| {
            let mut out = Vec::new();
            for sql in sqls {
                let mut st = c
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .map_err(sq)?;
                let nulls = vec![rusqlite::types::Null; st.parameter_count()];
                let rows = st
                    .query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))
                    .map_err(sq)?;
                out.push(
                    rows.collect::<rusqlite::Result<Vec<String>>>()
                        .map_err(sq)?,
                );
            }
            Ok(out)
        })
        .expect("the plans")
}

#[test]
fn the_listing_reads_the_time_index_in_its_order_and_counts_from_it_alone() {
    let q = |newest_first: bool, since: Option<i64>, without_total: bool| DecisionQuery {
        since_ms: since,
        until_ms: since.map(|t| t + 1000),
        limit: 10,
        newest_first,
        without_total,
        ..DecisionQuery::default()
    };
    let cursor = DecisionQuery {
        after: Some((5, "d".into())),
        ..q(true, None, true)
    };
    let listings = [
        decision_listing_sql(false, 1, &q(true, None, false), DECISION_COLS),
        decision_listing_sql(false, 1, &q(false, None, false), DECISION_COLS),
        decision_listing_sql(false, 1, &q(true, Some(5), true), DECISION_COLS),
        decision_listing_sql(false, 1, &cursor, DECISION_COLS),
    ];
    assert!(listings[2].count.is_none(), "no count asked, none made");
    let count = listings[0].count.clone().expect("a count");
    let sqls: Vec<&str> = listings
        .iter()
        .map(|l| l.page.as_str())
        .chain([count.as_str()])
        .collect();
    let plans = plans(&sqls);
    // The pages: the (mid, time_ms) index in the listing's order, no sort.
    for (sql, want) in sqls.iter().zip([
        "INDEX decisions_time (mid=?)",
        "INDEX decisions_time (mid=?)",
        "INDEX decisions_time (mid=? AND time_ms>? AND time_ms<?)",
        "INDEX decisions_time (mid=? AND (time_ms,id)<(?,?))",
    ]) {
        let plan = &plans[sqls.iter().position(|s| s == sql).expect("planned")];
        assert!(
            plan.iter().any(|step| step.contains(want)),
            "{sql}: {plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{sql}: {plan:?}"
        );
    }
    // The unfiltered count: the index alone, no row read.
    assert!(
        plans[4]
            .iter()
            .any(|step| step.contains("COVERING INDEX decisions_time (mid=?)")),
        "{count}: {:?}",
        plans[4]
    );
}

#[test]
fn the_settle_chunks_end_is_the_chunks_th_due_decision_in_closing_order() {
    let (rows, nth) = crate::store::settle::nth_fixture();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("nth.db")).expect("a new store");
    let user = store
        .create_user(
            crate::store::NewUser {
                email: "nth@example.com".into(),
                password_hash: "x".into(),
                tier: crate::tenancy::Tier::Free,
                role: crate::tenancy::Role::User,
            },
            0,
        )
        .expect("a user");
    let model = crate::Model::new(crate::ModelConfig::new(2)).expect("model");
    store
        .create_model(&user.id, "m", &model, None, 0)
        .expect("a model");
    let mid: i64 = store
        .read(|c| {
            c.query_row("SELECT mid FROM models", [], |r| r.get(0))
                .map_err(sq)
        })
        .expect("its number");
    store
        .write(move |c| {
            for (id, closes, status) in &rows {
                c.execute(
                    "INSERT INTO decisions (mid, id, step, time_ms, closes_ms, state, \
                     action, prob, status, rewards) \
                     VALUES (?4, ?1, 0, 0, ?2, x'01', 0, 0.5, ?3, 0)",
                    params![id, closes, status, mid],
                )
                .map_err(sq)?;
            }
            Ok(())
        })
        .expect("the rows");
    let chunk = crate::store::decisions::SETTLE_CHUNK as i64;
    assert_eq!(
        store.due_nth(mid, 1000 * chunk).expect("nth"),
        Some(nth.clone())
    );
    assert_eq!(store.due_nth(mid, 1000 * 10).expect("nth"), None, "22 due");
    assert_eq!(
        store.due_nth(mid + 1, 1000 * chunk).expect("nth"),
        None,
        "another model"
    );
    // The pass's batched read: each model in the order asked, with its
    // earliest open deadline, and nothing for a model that is not there.
    let found = store.next_deadlines(&[mid + 1, mid]).expect("read");
    let firsts: Vec<Option<Option<i64>>> =
        found.iter().map(|f| f.as_ref().map(|f| f.first)).collect();
    assert_eq!(firsts, [None, Some(Some(0))], "in the order asked");
}

#[test]
fn the_decision_logs_periodic_paged_and_file_reads_use_their_indexes_not_a_models_whole_log() {
    let (step, due, keyset) = (sql_step(), sql_due(), sql_keyset(true));
    let due_through = sql_due_through();
    // Each statement, and the index steps its plan must have.
    let cases: [(&str, &[&str]); 9] = [
        (
            &keyset,
            &["INDEX decisions_time (mid=? AND (time_ms,id)<(?,?))"],
        ),
        (
            SQL_OPEN_MODELS,
            &["INDEX decisions_due (mid>?)", "INDEX decisions_due (mid=?)"],
        ),
        (SQL_NEXT_DEADLINE, &["INDEX decisions_due (mid=?)"]),
        (&due, &["INDEX decisions_due (mid=? AND closes_ms<?)"]),
        (
            &due_through,
            &["INDEX decisions_due (mid=? AND (closes_ms,id)<(?,?))"],
        ),
        (
            SQL_DUE_NTH,
            &["INDEX decisions_due (mid=? AND closes_ms<?)"],
        ),
        (
            &step,
            &["INDEX decisions_step (mid=? AND episode=? AND step=?)"],
        ),
        (
            SQL_PRUNABLE,
            &[
                "INDEX decisions_time (mid=? AND time_ms<?)",
                "INDEX decisions_step (mid=? AND episode=? AND step=?)",
            ],
        ),
        (
            SQL_EMPTY_EPISODES,
            &["INDEX decisions_step (mid=? AND episode=?)"],
        ),
    ];
    let sqls: Vec<&str> = cases.iter().map(|(sql, _)| *sql).collect();
    for ((sql, wanted), plan) in cases.iter().zip(plans(&sqls)) {
        for w in *wanted {
            assert!(plan.iter().any(|step| step.contains(w)), "{sql}: {plan:?}");
        }
        // No step reads a whole table, nor a model's whole log (the
        // prune of ended episodes goes through the model's episodes).
        // The settle pass's skip over the models reads its own
        // recursive rows (`live`), which are no table.
        for step in &plan {
            let whole_log =
                step.contains("USING PRIMARY KEY (mid=?)") && !step.starts_with("SEARCH e ");
            let table_scan =
                step.starts_with("SCAN") && step != "SCAN live" && step != "SCAN CONSTANT ROW";
            assert!(!table_scan && !whole_log, "{sql}: {plan:?}");
        }
    }
}
