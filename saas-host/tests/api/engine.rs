//! The metered engine calls: exact quotas under concurrency, batches, live events.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{assert_error, assert_error_response, start, start_with, Backend};
use crate::{GET, POST};

backend_tests!(
    quota_exhaustion_is_exact_under_concurrency,
    batch_updates,
    sse_delivers_updates,
);

async fn quota_exhaustion_is_exact_under_concurrency(b: Backend) {
    // The rate limit is lifted so only the monthly quota (100) refuses.
    let Some(s) = start_with(b, "quota", |c| {
        c.limits.free.rate_per_second = 1_000_000;
        c.limits.free.burst = 1_000_000;
    })
    .await
    else {
        return;
    };
    let (token, _, mid) = s.register("quota@example.com").await;
    let mut tasks = Vec::new();
    for client in 0..16 {
        let http = s.http.clone();
        let base = s.base.clone();
        let token = token.clone();
        let mid = mid.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..10 {
                let (path, body) = if (client + i) % 2 == 0 {
                    ("/predict", json!({"model_id": mid, "state": client * 100 + i}))
                } else {
                    ("/update", json!({"model_id": mid, "state": client, "action": 0, "reward": 1, "next_state": i}))
                };
                let r = http.post(format!("{base}{path}")).bearer_auth(&token).json(&body).send().await.unwrap();
                let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
                let rl = r.headers().get("ratelimit").map(|v| v.to_str().unwrap().to_owned());
                let st = r.status();
                let v: Value = r.json().await.unwrap();
                out.push((st, v, retry, rl));
            }
            out
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        for (st, v, retry, rl) in t.await.unwrap() {
            match st.as_u16() {
                200 => ok += 1,
                429 => {
                    assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
                    let retry = retry.expect("Retry-After on 429");
                    let want =
                        qlearn_core::tenancy::seconds_until_next_month(saas_host::now_unix());
                    assert!(retry.abs_diff(want) <= 5, "Retry-After {retry} vs {want}");
                    assert!(rl.unwrap().contains("\"monthly\";r=0;"));
                    refused += 1;
                }
                other => panic!("unexpected {other}: {v}"),
            }
        }
    }
    assert_eq!((ok, refused), (100, 60));
    let (_, d) = s.json(GET, "/dashboard", Some(&token), None).await;
    assert_eq!(d["usage"]["calls"], 100);
    assert_eq!(d["usage"]["remaining"], 0);
    let (_, st) = s
        .json(GET, &format!("/status/{mid}"), Some(&token), None)
        .await;
    let stats = &st["stats"];
    assert_eq!(
        stats["predictions"].as_u64().unwrap() + stats["updates"].as_u64().unwrap(),
        100
    );
    // A batch that does not fit is refused whole.
    let r = s
        .call(
            POST,
            "/update/batch",
            Some(&token),
            Some(json!({"model_id": mid, "experiences": [
            {"state": 1, "action": 0, "reward": 1, "next_state": 2}]})),
        )
        .await;
    assert_error_response(r, 429, "quota_exceeded").await;
}

async fn batch_updates(b: Backend) {
    let Some(s) = start_with(b, "batch", |c| {
        c.limits.free.monthly_calls = Some(5000);
    })
    .await
    else {
        return;
    };
    let (token, _, mid) = s.register("batch@example.com").await;
    let exps: Vec<Value> = (0..1000)
        .map(|i| json!({"state": [i % 10, i / 100], "action": i % 4, "reward": 1, "next_state": [(i + 1) % 10, 0]}))
        .collect();
    let (st, v) = s
        .json(
            POST,
            "/update/batch",
            Some(&token),
            Some(json!({"model_id": mid, "experiences": exps})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 1000);
    assert_eq!(v["results"][0]["q_value"], 0.1);
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"state": i, "action": 0, "reward": 1, "next_state": 0}))
        .collect();
    let (st, v) = s
        .json(
            POST,
            "/update/batch",
            Some(&token),
            Some(json!({"model_id": mid, "experiences": too_many})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    // A batch whose fourth of six items is bad is refused whole: the
    // valid items before and after it are neither applied nor metered.
    let status_path = format!("/status/{mid}?limit=1000");
    let (_, before) = s.json(GET, &status_path, Some(&token), None).await;
    let mixed: Vec<Value> = (0..6)
        .map(|i| json!({"state": [50 + i, 0], "action": if i == 3 { 9 } else { 0 }, "reward": 1, "next_state": [0, 0]}))
        .collect();
    let (st, v) = s
        .json(
            POST,
            "/update/batch",
            Some(&token),
            Some(json!({"model_id": mid, "experiences": mixed})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_action");
    let (_, after) = s.json(GET, &status_path, Some(&token), None).await;
    assert_eq!(after["q_table"], before["q_table"]);
    assert_eq!(after["stats"], before["stats"]);
    let (_, d) = s.json(GET, "/dashboard", Some(&token), None).await;
    assert_eq!(d["usage"]["calls"], 1000, "a batch of N counts N");
    // Paging of the Q-table.
    let (_, p1) = s
        .json(
            GET,
            &format!("/status/{mid}?offset=0&limit=30"),
            Some(&token),
            None,
        )
        .await;
    let (_, p2) = s
        .json(
            GET,
            &format!("/status/{mid}?offset=30&limit=1000"),
            Some(&token),
            None,
        )
        .await;
    let total = p1["q_table"]["total"].as_u64().unwrap();
    assert_eq!(total, 100);
    assert_eq!(p1["q_table"]["rows"].as_array().unwrap().len(), 30);
    assert_eq!(p2["q_table"]["rows"].as_array().unwrap().len(), 70);
}

async fn sse_delivers_updates(b: Backend) {
    let Some(s) = start(b, "sse").await else {
        return;
    };
    let (token, _, mid) = s.register("sse@example.com").await;
    // Header auth is unavailable to EventSource: use a ticket.
    let (st, t) = s
        .json(
            POST,
            &format!("/models/{mid}/events/ticket"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(st, 200, "{t}");
    let ticket = t["ticket"].as_str().unwrap();
    let mut events = s
        .http
        .get(s.url(&format!("/models/{mid}/events?ticket={ticket}")))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let first = events.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with(':'));
    let (st, _) = s
        .json(POST, "/update", Some(&token), Some(json!({"model_id": mid, "state": [1, 2], "action": 1, "reward": -1, "next_state": [1, 3], "done": true})))
        .await;
    assert_eq!(st, 200);
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("\n\n") || !text.contains("event: update") {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let ev: Value = serde_json::from_str(data).unwrap();
    assert_eq!(ev["state"], json!([1, 2]));
    assert_eq!(ev["action"], 1);
    assert_eq!(ev["q_values"], json!([0.0, -0.1, 0.0, 0.0]));
    assert_eq!(ev["q_value"], -0.1);
    assert_eq!(ev["updates"], 1);
    assert_eq!(ev["episodes"], 1);
    assert_eq!(ev["episode_return"], -1.0);
    // A batch publishes one event per experience, in order.
    let exps: Vec<Value> = (0..3)
        .map(|i| json!({"state": [7, i], "action": i, "reward": 1, "next_state": [7, i + 1]}))
        .collect();
    let (st, v) = s
        .json(
            POST,
            "/update/batch",
            Some(&token),
            Some(json!({"model_id": mid, "experiences": exps})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // (The single update's frame may still be in `text`: it is left out.)
    let mut rest = text.clone();
    let updates_in = |t: &str| {
        t.split("\n\n")
            .filter(|f| f.contains("event: update"))
            .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .filter(|e| e["updates"] != 1)
            .collect::<Vec<_>>()
    };
    while updates_in(&rest).len() < 3 || !rest.ends_with("\n\n") {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .expect("batch events in time")
            .unwrap()
            .unwrap();
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    let got = updates_in(&rest);
    let seen: Vec<(Value, Value)> = got
        .iter()
        .map(|e| (e["state"].clone(), e["updates"].clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (json!([7, 0]), json!(2)),
            (json!([7, 1]), json!(3)),
            (json!([7, 2]), json!(4))
        ],
        "{rest}"
    );
    // Another user cannot subscribe; no token is 401.
    let (bob, _, _) = s.register("bob-sse@example.com").await;
    let r = s
        .http
        .get(s.url(&format!("/models/{mid}/events")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .http
        .get(s.url(&format!("/models/{mid}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Keep-alive comments arrive on schedule.
    let Some(s2) = start_with(b, "ssekeepalive", |c| {
        c.sse_keep_alive = Duration::from_millis(200)
    })
    .await
    else {
        return;
    };
    let (t2, _, m2) = s2.register("ka@example.com").await;
    let mut ev2 = s2
        .http
        .get(s2.url(&format!("/models/{m2}/events")))
        .bearer_auth(&t2)
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains(": keep-alive") {
        let c = tokio::time::timeout(Duration::from_secs(5), ev2.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&c));
    }
}
