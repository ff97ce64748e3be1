//! Usage for invoicing (issue 17): `GET /admin/usage` (JSON and CSV) and
//! `saas-host admin usage` report exactly the calls that succeeded, by
//! kind, under concurrent load from several users on three plans, with the
//! overage of a plan that has it, and the evaluation jobs created (not
//! calls); only admins may read it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use qlearn_core::tenancy::{hash_password, BillingMonth};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{assert_error, start_with, Backend, Server};
use crate::{GET, POST};

backend_tests!(
    usage_export_equals_metered_calls,
    overage_keeps_the_rate_limit
);

const PASSWORD: &str = "correct horse battery";
/// The pro plan's quota in this test (with overage on).
const PRO_QUOTA: u64 = 40;
/// The free plan's quota (no overage: refused past it).
const FREE_QUOTA: u64 = 60;
/// Evaluation jobs the enterprise customer may create a day (and creates).
const EVALUATIONS: u32 = 2;
/// Concurrent clients, spread over the three customers.
const TASKS: usize = 24;
/// Calls per client.
const CALLS: usize = 20;

/// Successful calls by (user id, kind).
type Counts = Arc<Mutex<HashMap<(String, &'static str), u64>>>;

async fn login(s: &Server, email: &str) -> String {
    let body = json!({"email": email, "password": PASSWORD});
    let (st, v) = s.json(POST, "/login", None, Some(body)).await;
    assert_eq!(st, 200, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

/// One client: `CALLS` predicts, updates and batches on its user's model,
/// counting what succeeded; a refusal must be the free plan's quota.
async fn client(s: Arc<Server>, t: usize, user: (String, String, String), counts: Counts) {
    let (token, uid, model) = user;
    for i in 0..CALLS {
        let exp = json!({"state": i % 5, "action": (t + i) % 4, "reward": 1.0, "next_state": (i + 1) % 5});
        let (path, body, kind, n) = match (t + i) % 3 {
            0 => (
                "/predict",
                json!({"model_id": model, "state": i % 5}),
                "predict",
                1,
            ),
            1 => {
                let mut b = exp.clone();
                b["model_id"] = json!(model);
                ("/update", b, "update", 1)
            }
            _ => {
                let n = 1 + (t + i) % 3;
                let body = json!({"model_id": model, "experiences": vec![exp; n]});
                ("/update/batch", body, "update", n as u64)
            }
        };
        let (st, v) = s.json(POST, path, Some(&token), Some(body)).await;
        match st.as_u16() {
            200 => {
                *counts
                    .lock()
                    .unwrap()
                    .entry((uid.clone(), kind))
                    .or_insert(0) += n;
            }
            429 => assert_eq!(v["error"]["code"], "quota_exceeded", "{v}"),
            _ => panic!("{path}: {st} {v}"),
        }
    }
}

/// The user turns on decisions and creates `EVALUATIONS` evaluation jobs;
/// one more is refused by the plan's daily limit (and so not counted).
async fn evaluate(s: &Server, user: &(String, String, String)) {
    let (token, _, model) = user;
    let body = json!({"decisions": {"reward_wait_seconds": 60}});
    let path = format!("/models/{model}");
    let (st, v) = s.json(Method::PATCH, &path, Some(token), Some(body)).await;
    assert_eq!(st, 200, "{v}");
    let path = format!("/models/{model}/evaluations");
    let job = json!({"policies": [{"kind": "greedy"}]});
    for _ in 0..EVALUATIONS {
        let (st, v) = s.json(POST, &path, Some(token), Some(job.clone())).await;
        assert_eq!(st, 202, "{v}");
    }
    let (st, v) = s.json(POST, &path, Some(token), Some(job)).await;
    assert_error(st, &v, 429, "evaluations_per_day_reached");
}

/// The JSON report's row of `uid`.
fn json_row<'a>(report: &'a Value, uid: &str) -> &'a Value {
    report["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user_id"] == uid)
        .unwrap_or_else(|| panic!("no row for {uid}: {report}"))
}

async fn usage_export_equals_metered_calls(b: Backend) {
    let Some(s) = start_with(b, "usage_export", |c| {
        for l in [&mut c.limits.pro, &mut c.limits.enterprise] {
            l.rate_per_second = 10_000;
            l.burst = 10_000;
        }
        c.limits.free.monthly_calls = Some(FREE_QUOTA);
        c.limits.pro.monthly_calls = Some(PRO_QUOTA);
        c.limits.pro.overage = true;
        c.limits.enterprise.features = qlearn_core::tenancy::Features::ALL;
        c.limits.enterprise.evaluations_per_day = EVALUATIONS;
    })
    .await
    else {
        return;
    };
    let month = BillingMonth::from_unix(saas_host::now_unix()).to_string();
    // An operator makes the admin account.
    let url = s.config.database_url.clone();
    let hash = hash_password(PASSWORD).unwrap();
    tokio::task::spawn_blocking(move || {
        let op = saas_host::admin::AdminOp::CreateAdmin {
            email: "root@example.com".into(),
            password_hash: hash,
        };
        saas_host::admin::run(&url, &op)
    })
    .await
    .unwrap()
    .unwrap();
    let admin = login(&s, "root@example.com").await;

    let mut users = Vec::new();
    for (email, tier) in [
        ("free@example.com", "free"),
        ("pro@example.com", "pro"),
        ("ent@example.com", "enterprise"),
    ] {
        let (token, uid, model) = s.register(email).await;
        let path = format!("/admin/users/{uid}");
        let (st, v) = s
            .json(
                Method::PATCH,
                &path,
                Some(&admin),
                Some(json!({"tier": tier})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        users.push((token, uid, model));
    }

    // The load: every client at once.
    let s = Arc::new(s);
    let counts: Counts = Arc::default();
    let clients: Vec<_> = (0..TASKS)
        .map(|t| {
            let user = users[t % users.len()].clone();
            tokio::spawn(client(s.clone(), t, user, counts.clone()))
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let counts = counts.lock().unwrap().clone();
    evaluate(&s, &users[2]).await;
    let ok =
        |uid: &str, kind: &'static str| counts.get(&(uid.to_owned(), kind)).copied().unwrap_or(0);

    let (st, report) = s
        .json(
            GET,
            &format!("/admin/usage?month={month}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["month"], month.as_str());
    assert_eq!(report["users"].as_array().unwrap().len(), 4, "{report}");
    for (i, (_, uid, _)) in users.iter().enumerate() {
        let row = json_row(&report, uid);
        let (p, u) = (ok(uid, "predict"), ok(uid, "update"));
        assert_eq!(row["predict"], p, "{row}");
        assert_eq!(row["update"], u, "{row}");
        assert_eq!(row["calls"], p + u, "{row}");
        let jobs = if i == 2 { EVALUATIONS } else { 0 };
        assert_eq!(row["evaluation"], jobs, "{row}");
        for zero in ["decide", "reward", "unknown"] {
            assert_eq!(row[zero], 0, "{row}");
        }
        let overage = match i {
            1 => {
                assert!(p + u > PRO_QUOTA, "the load goes past the pro quota");
                p + u - PRO_QUOTA
            }
            _ => 0,
        };
        assert_eq!(row["overage"], overage, "{row}");
        assert_eq!(row["plan"], ["free", "pro", "enterprise"][i]);
    }
    let free = json_row(&report, &users[0].1);
    assert!(free["calls"].as_u64().unwrap() <= FREE_QUOTA, "{free}");
    let users_json = report["users"].as_array().unwrap();
    let root = users_json.iter().find(|r| r["email"] == "root@example.com");
    assert_eq!(root.map(|r| r["calls"].as_u64()), Some(Some(0)), "{report}");

    // The pro customer's dashboard shows the overage.
    let (st, d) = s.json(GET, "/dashboard", Some(&users[1].0), None).await;
    assert_eq!(st, 200, "{d}");
    let pro = json_row(&report, &users[1].1);
    assert_eq!(d["usage"]["overage"], pro["overage"], "{d}");
    assert_eq!(d["usage"]["overage_allowed"], true);
    let (_, d) = s.json(GET, "/dashboard", Some(&users[0].0), None).await;
    assert_eq!(
        (
            d["usage"]["overage_allowed"].as_bool(),
            d["usage"]["overage"].as_u64()
        ),
        (Some(false), Some(0))
    );

    // The CSV says the same.
    let r = s
        .call(
            GET,
            &format!("/admin/usage?month={month}&format=csv"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = r.text().await.unwrap();
    let mut lines = csv.split("\r\n");
    assert_eq!(
        lines.next(),
        Some(
            "month,user_id,email,plan,calls,predict,update,decide,reward,evaluation,unknown,overage"
        )
    );
    let mut seen = 0;
    for line in lines.filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let row = json_row(&report, f[1]);
        assert_eq!(f[0], month);
        assert_eq!(f[2], row["email"].as_str().unwrap());
        assert_eq!(f[3], row["plan"].as_str().unwrap());
        let nums: Vec<u64> = f[4..].iter().map(|n| n.parse().unwrap()).collect();
        let want: Vec<u64> = [
            "calls",
            "predict",
            "update",
            "decide",
            "reward",
            "evaluation",
            "unknown",
            "overage",
        ]
        .iter()
        .map(|k| row[*k].as_u64().unwrap())
        .collect();
        assert_eq!(nums, want, "{line}");
        seen += 1;
    }
    assert_eq!(seen, 4);

    // The operator's command prints the same CSV (on SQLite through the
    // running server's admin socket).
    let args = saas_host::cli::AdminArgs {
        database_url: s.config.database_url.clone(),
        action: saas_host::cli::AdminAction::Usage {
            month: Some(month.clone()),
            format: "csv".into(),
        },
    };
    let printed = tokio::task::spawn_blocking(move || saas_host::cli::admin(&args))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(format!("{printed}\r\n"), csv);

    // Admins only; a bad month or format is a 422.
    let (st, v) = s.json(GET, "/admin/usage", Some(&users[1].0), None).await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s
        .json(GET, "/admin/usage?month=2026-13", Some(&admin), None)
        .await;
    assert_error(st, &v, 422, "invalid_field");
    let (st, v) = s
        .json(GET, "/admin/usage?format=xml", Some(&admin), None)
        .await;
    assert_error(st, &v, 422, "invalid_field");
    assert_eq!(
        s.json(GET, "/admin/usage", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// Past the quota on a plan with overage, calls succeed (counted as
/// overage), and the per-second rate limit still refuses a burst past it.
async fn overage_keeps_the_rate_limit(b: Backend) {
    let Some(s) = start_with(b, "overage_rate", |c| {
        c.limits.free.monthly_calls = Some(2);
        c.limits.free.overage = true;
        c.limits.free.rate_per_second = 1;
        c.limits.free.burst = 5;
    })
    .await
    else {
        return;
    };
    // Registration is not rate limited per user; the calls below are.
    let (token, _, model) = s.register("burst@example.com").await;
    let body = json!({"model_id": model, "state": 1});
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (st, v) = s
            .json(POST, "/predict", Some(&token), Some(body.clone()))
            .await;
        if st == 429 {
            assert_error(st, &v, 429, "rate_limited");
        }
        statuses.push(st.as_u16());
    }
    let granted = statuses.iter().filter(|&&st| st == 200).count() as u64;
    assert!(
        statuses.contains(&429),
        "the rate limit still applies: {statuses:?}"
    );
    assert!(
        granted > 2,
        "calls past the quota of 2 granted: {statuses:?}"
    );
    // The dashboard is rate limited too: ask again once a token is back.
    let mut d = Value::Null;
    for _ in 0..50 {
        let (st, v) = s.json(GET, "/dashboard", Some(&token), None).await;
        d = v;
        if st == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(d["usage"]["calls"], granted, "{d}");
    assert_eq!(d["usage"]["overage"], granted - 2, "{d}");
}
