//! A model's episodes over HTTP (issue 14): `GET /models/{id}/episodes`
//! with each episode's status, outcome, steps and the return learned so
//! far; the status filter, keyset paging, bad parameters and isolation.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{assert_error, start_with, Backend, Server};
use crate::{GET, POST};

backend_tests!(episodes_and_their_returns);

async fn post(s: &Server, token: &str, path: &str, body: Value) -> Value {
    let (st, v) = s.json(POST, path, Some(token), Some(body)).await;
    assert_eq!(st, 200, "{path}: {v}");
    v
}

async fn episodes(s: &Server, token: &str, mid: &str, query: &str) -> (StatusCode, Value) {
    s.json(
        GET,
        &format!("/models/{mid}/episodes{query}"),
        Some(token),
        None,
    )
    .await
}

async fn episodes_and_their_returns(b: Backend) {
    let Some(s) = start_with(b, "episodes_http", |c| {
        c.limits.free.features = qlearn_core::tenancy::Features::ALL;
    })
    .await
    else {
        return;
    };
    let (token, _, mid) = s.register("e@example.com").await;
    let (other, _, _) = s.register("o@example.com").await;
    let (st, v) = s
        .json(
            reqwest::Method::PATCH,
            &format!("/models/{mid}"),
            Some(&token),
            Some(json!({"decisions": {"reward_wait_seconds": 3600}})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // "b": two steps, both rewarded (the first learned once the second
    // exists); "a": one step, rewarded and ended; "c": one step, not
    // rewarded.
    let mut ids = Vec::new();
    for (ep, state) in [("b", 1), ("a", 2), ("b", 3), ("c", 4)] {
        let body = json!({"model_id": mid, "state": state, "episode_id": ep});
        let d = post(&s, &token, "/predict", body).await;
        ids.push(d["decision_id"].as_str().unwrap().to_owned());
    }
    for (id, value) in ids.iter().zip([1.5, -2.0, 0.5]) {
        let body = json!({"model_id": mid, "decision_id": id, "value": value, "final": true});
        post(&s, &token, "/rewards", body).await;
    }
    let end = json!({"model_id": mid, "episode_id": "a", "outcome": "terminated"});
    post(&s, &token, "/episodes/end", end).await;

    let (st, v) = episodes(&s, &token, &mid, "").await;
    assert_eq!(st, 200, "{v}");
    let got: Vec<_> = v["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let started = e["started_at"].as_str().unwrap();
            // This year's, in seconds (not milliseconds) since 1970.
            assert!(started.starts_with("20") && started.ends_with('Z'), "{e}");
            assert!(e["last_decision_at"].is_string(), "{e}");
            (
                e["episode_id"].clone(),
                e["status"].clone(),
                e["outcome"].clone(),
                e["steps"].clone(),
                e["return"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                json!("a"),
                json!("ended"),
                json!("terminated"),
                json!(1),
                json!(-2.0)
            ),
            (json!("b"), json!("open"), Value::Null, json!(2), json!(1.5)),
            (json!("c"), json!("open"), Value::Null, json!(1), json!(0.0)),
        ],
        "{v}"
    );
    assert!(v["next_after"].is_null(), "{v}");

    // The status filter and keyset paging.
    let ids_of = |v: &Value| -> Vec<String> {
        let list = v["episodes"].as_array().unwrap();
        list.iter()
            .map(|e| e["episode_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, v) = episodes(&s, &token, &mid, "?status=open").await;
    assert_eq!(ids_of(&v), ["b", "c"], "{v}");
    let (_, v) = episodes(&s, &token, &mid, "?status=ended").await;
    assert_eq!(ids_of(&v), ["a"], "{v}");
    let (_, v) = episodes(&s, &token, &mid, "?limit=2").await;
    assert_eq!(ids_of(&v), ["a", "b"], "{v}");
    assert_eq!(v["next_after"], "b", "{v}");
    let (_, v) = episodes(&s, &token, &mid, "?limit=2&after=b").await;
    assert_eq!(ids_of(&v), ["c"], "{v}");
    assert!(v["next_after"].is_null(), "{v}");

    // Bad parameters, another user, an unknown model.
    for query in ["?status=closed", "?limit=0", "?limit=1001", "?limit=x"] {
        let (st, v) = episodes(&s, &token, &mid, query).await;
        assert_error(st, &v, 422, "invalid_field");
    }
    let (st, v) = episodes(&s, &other, &mid, "").await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = episodes(&s, &token, "nope", "").await;
    assert_error(st, &v, 404, "not_found");
}
