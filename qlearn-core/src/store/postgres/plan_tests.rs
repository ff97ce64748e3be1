//! The plans PostgreSQL makes for the decision log's reads that must not
//! grow with a model's whole log (the periodic settle and prune, a call's
//! reads, an evaluation's pages), on 200,000 `ANALYZE`d decisions. A
//! statement prepared once per connection ([`stmt`]) is checked as a
//! generic plan (what PostgreSQL may switch to after five runs); a one-off
//! statement as a plan for its values. Sequential scans are off, so a
//! statement no index can serve shows as one. Needs PostgreSQL (see
//! `test_db`).
use super::super::evaluations::SQL_EVALUATION_PAGE;
use super::super::test_db::connect;
use super::*;
use crate::store::due_models::DueStore;
use crate::store::{NewUser, Store};
use crate::tenancy::{Role, Tier};
use crate::{Model, ModelConfig};

/// `EXPLAIN` of `sql` run with `args` (SQL literals), in plan-cache mode
/// `mode`, one line per plan line.
fn plan(s: &PgStore, sql: &str, args: &str, mode: &str) -> Vec<String> {
    let mut c = s.conn().expect("a connection");
    c.client
        .batch_execute(&format!(
            "SET enable_seqscan = off; SET plan_cache_mode = {mode}; \
             DEALLOCATE ALL; PREPARE checked AS {sql}"
        ))
        .expect("prepared");
    let rows = c
        .client
        .query(
            &if args.is_empty() {
                "EXPLAIN EXECUTE checked".to_string()
            } else {
                format!("EXPLAIN EXECUTE checked({args})")
            },
            &[],
        )
        .expect("explained");
    c.client
        .batch_execute("DEALLOCATE ALL; RESET enable_seqscan; RESET plan_cache_mode")
        .expect("reset");
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

/// A free user of `s`.
fn new_user(s: &PgStore, email: &str) -> crate::store::User {
    s.create_user(
        NewUser {
            email: email.into(),
            password_hash: "x".into(),
            tier: Tier::Free,
            role: Role::User,
        },
        0,
    )
    .expect("user")
}

#[test]
fn the_decision_logs_reads_use_their_indexes_not_a_models_whole_log() {
    let Some(schema) = connect("qlearn_unit_plans") else {
        return;
    };
    let s = &schema.0;
    let user = new_user(s, "plans@example.com");
    let model = Model::new(ModelConfig::new(2)).expect("model");
    for name in ["a", "b", "c", "d"] {
        s.create_model(&user.id, name, &model, None, 0)
            .expect("model");
    }
    // 50,000 decisions in each of the four models, a third in episodes of
    // ten steps, all finished but the newest 1%.
    s.conn()
        .expect("a connection")
        .client
        .batch_execute(
            "INSERT INTO decisions (mid, id, episode, step, time_ms, closes_ms, state, \
             action, prob, status, rewards) \
             SELECT m.mid, 'd' || to_hex(g), CASE WHEN g % 3 = 0 THEN 'e' || (g / 30) END, \
             (g / 3) % 10, g, g + 600000, '\\x01', 0, 0.5, \
             CASE WHEN g > 49500 THEN 0 ELSE 2 END, 0 \
             FROM models m, generate_series(1, 50000) g; \
             INSERT INTO episodes (mid, id, n_steps, end_json, learned_return) \
             SELECT m.mid, 'e' || g, 10, '{}', 0 FROM models m, generate_series(1, 1666) g; \
             ANALYZE decisions; ANALYZE episodes",
        )
        .expect("the rows");
    let mid: i64 = s
        .conn()
        .expect("a connection")
        .client
        .query_one("SELECT min(mid) FROM models", &[])
        .expect("a model")
        .get(0);
    let generic = "force_generic_plan";
    let custom = "force_custom_plan";
    let (one, ids) = (format!("{mid}, 'd10'"), format!("{mid}, '{{d10,d11}}'"));
    let (step, steps) = (
        format!("{mid}, 'e7', 3"),
        format!("{mid}, '{{e7,e8}}', '{{3,4}}'"),
    );
    let due = format!("{mid}, 50600");
    let (prune, page) = (
        format!("{mid}, 20000, 1000"),
        format!("{mid}, NULL, NULL, 30000, 'd7530', 5000"),
    );
    // Each statement, its arguments, how it runs, and the index its plan
    // must use (with the condition it must seek on).
    let cases: [(&str, &str, &str, &[&str]); 13] = [
        (SQL_DECISION, &one, generic, &["decisions_pkey"]),
        (SQL_DECISIONS_ANY, &ids, generic, &["decisions_pkey"]),
        (SQL_STEP, &step, generic, &["decisions_step"]),
        (SQL_STEPS_ANY, &steps, generic, &["decisions_step"]),
        (SQL_EPISODES_ANY, &ids, generic, &["episodes_pkey"]),
        (
            SQL_DUE,
            &due,
            generic,
            &[
                "decisions_due",
                "Index Cond: ((mid = $1) AND (closes_ms <= $2))",
            ],
        ),
        (
            SQL_DUE_NTH,
            &format!("{mid}, 650000, 1023"),
            generic,
            &[
                "decisions_due",
                "Index Cond: ((mid = $1) AND (closes_ms <= $2))",
            ],
        ),
        (
            SQL_DUE_THROUGH,
            &format!("{mid}, 650000, 'd7530'"),
            generic,
            &[
                "decisions_due",
                "Index Cond: ((mid = $1) AND (closes_ms <= $2))",
            ],
        ),
        (
            SQL_NEXT_DEADLINES,
            &format!("'{{{mid}, {mid}}}'"),
            generic,
            &["decisions_due", "Index Cond: (mid = u.mid)"],
        ),
        (
            SQL_OPEN_MODELS,
            "",
            custom,
            &["decisions_due", "Index Cond: (mid > live"],
        ),
        (
            SQL_PRUNE,
            &prune,
            custom,
            &["decisions_time", "time_ms <=", "decisions_step"],
        ),
        (
            SQL_PRUNE_EPISODES,
            &format!("{mid}, 1000"),
            custom,
            &["episodes_pkey", "decisions_step"],
        ),
        (
            SQL_EVALUATION_PAGE,
            &page,
            custom,
            &["decisions_time_id", "AND (ROW(time_ms, id) < ROW("],
        ),
    ];
    for (sql, args, mode, wanted) in cases {
        let lines = plan(s, sql, args, mode);
        let text = lines.join("\n");
        for w in wanted {
            assert!(text.contains(w), "{sql}\n{text}");
        }
        // The table of the scan each condition belongs to.
        let mut table = "";
        for l in &lines {
            if l.contains("Scan") {
                table = if l.contains(" on decisions") {
                    "decisions"
                } else {
                    "other"
                };
            }
            // No table read whole, and no model's whole log: an index
            // condition on the model's id alone (a join's probe by
            // another row's mid is not one; the episodes prune goes
            // through the model's episodes, as in SQLite).
            let whole_log = table == "decisions"
                && l.split_once("Index Cond: (mid = ")
                    .is_some_and(|(_, rest)| {
                        (rest.starts_with('\'') || rest.starts_with('$')) && !rest.contains(" AND ")
                    });
            assert!(!l.contains("Seq Scan") && !whole_log, "{sql}\n{text}");
        }
    }
    // The listing's pages, newest first and oldest first, from the start
    // and past a cursor: the model's (time, id) index read from where the
    // page starts, no sort of the model's log (the page stops at its
    // limit).
    for (newest_first, after) in [(true, false), (false, false), (true, true), (false, true)] {
        let q = DecisionQuery {
            limit: 100,
            newest_first,
            without_total: true,
            after: after.then(|| (30000, "d7530".to_string())),
            ..DecisionQuery::default()
        };
        let page = decision_listing_sql(true, mid, &q, DECISION_COLS).page;
        let args = if after {
            format!("{mid}, 30000, 'd7530', 100, 0")
        } else {
            format!("{mid}, 100, 0")
        };
        let text = plan(s, &page, &args, generic).join("\n");
        if after {
            assert!(
                text.contains("Index Cond: ((mid = $1) AND (ROW(time_ms, id)"),
                "{page}\n{text}"
            );
        }
        let scan = if newest_first {
            "Index Scan Backward using decisions_time_id"
        } else {
            "Index Scan using decisions_time_id"
        };
        assert!(text.contains(scan), "{page}\n{text}");
        assert!(!text.contains("Sort"), "{page}\n{text}");
    }
}

#[test]
fn the_settle_chunks_end_is_the_chunks_th_due_decision_in_closing_order() {
    let Some(schema) = connect("qlearn_unit_due_nth") else {
        return;
    };
    let s = &schema.0;
    let user = new_user(s, "nth@example.com");
    let model = Model::new(ModelConfig::new(2)).expect("model");
    let a = s
        .create_model(&user.id, "a", &model, None, 0)
        .expect("model");
    s.create_model(&user.id, "b", &model, None, 0)
        .expect("model");
    let mut c = s.conn().expect("a connection");
    let mid: i64 = c
        .client
        .query_one("SELECT mid FROM models WHERE id = $1", &[&a.id])
        .expect("the model")
        .get(0);
    let other: i64 = c
        .client
        .query_one("SELECT mid FROM models WHERE id <> $1", &[&a.id])
        .expect("the other model")
        .get(0);
    let (rows, nth) = crate::store::settle::nth_fixture();
    for (id, closes, status) in &rows {
        c.client
            .execute(
                "INSERT INTO decisions (mid, id, step, time_ms, closes_ms, state, action, prob, \
                 status, rewards) VALUES ($1, $2, 0, 0, $3, '\\x01', 0, 0.5, $4, 0)",
                &[&mid, id, closes, status],
            )
            .expect("a row");
    }
    drop(c);
    let chunk = SETTLE_CHUNK as i64;
    assert_eq!(
        s.due_nth(mid, 1000 * chunk).expect("nth"),
        Some(nth.clone())
    );
    assert_eq!(s.due_nth(mid, 1000 * 10).expect("nth"), None, "22 due");
    // The pass's batched read: each model in the order asked, with its
    // earliest open deadline, and nothing for a model that is not there.
    let found = s.next_deadlines(&[other, -1, mid]).expect("read");
    let firsts: Vec<Option<Option<i64>>> =
        found.iter().map(|f| f.as_ref().map(|f| f.first)).collect();
    assert_eq!(
        firsts,
        [Some(None), None, Some(Some(0))],
        "in the order asked"
    );
    assert_eq!(
        s.due_nth(other, 1000 * chunk).expect("nth"),
        None,
        "another model"
    );
}
