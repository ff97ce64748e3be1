//! Decisions and delayed rewards over HTTP (issue 14): a logging predict,
//! rewards (single and batch), episode ends, the decision log and its
//! export, metering, isolation, the settling task and a restart.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{assert_error, start_with, Backend, Server};
use crate::{GET, POST};

backend_tests!(
    decisions_and_rewards_teach_the_model,
    decisions_are_isolated_and_optional,
    the_server_settles_deadlines,
    decisions_survive_a_restart,
);

/// These tests are about decisions, not plans (see `billing.rs`): the
/// free tier here has every feature, and keeps its other limits.
fn paid_features(c: &mut saas_host::Config) {
    c.limits.free.features = qlearn_core::tenancy::Features::ALL;
}

/// Turns decision logging on for `mid`; returns the model as answered.
async fn log_decisions(s: &Server, token: &str, mid: &str, setting: Value) -> Value {
    let (st, v) = s
        .json(
            reqwest::Method::PATCH,
            &format!("/models/{mid}"),
            Some(token),
            Some(json!({ "decisions": setting })),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn predict(s: &Server, token: &str, body: Value) -> Value {
    let (st, v) = s.json(POST, "/predict", Some(token), Some(body)).await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn calls(s: &Server, token: &str) -> u64 {
    let (_, d) = s.json(GET, "/dashboard", Some(token), None).await;
    d["usage"]["calls"].as_u64().unwrap()
}

async fn updates(s: &Server, token: &str, mid: &str) -> u64 {
    let (_, st) = s
        .json(GET, &format!("/status/{mid}"), Some(token), None)
        .await;
    st["stats"]["updates"].as_u64().unwrap()
}

async fn decisions_and_rewards_teach_the_model(b: Backend) {
    let Some(s) = start_with(b, "decisions_http", paid_features).await else {
        return;
    };
    let (token, _, mid) = s.register("d@example.com").await;
    let m = log_decisions(
        &s,
        &token,
        &mid,
        json!({"reward_wait_seconds": 3600, "retention_days": 365}),
    )
    .await;
    assert_eq!(m["decisions"]["reward_wait_seconds"], 3600, "{m}");
    assert_eq!(m["decisions"]["aggregation"], "sum");
    assert_eq!(
        m["decisions"]["retention_days"], 7,
        "capped at the free tier's: {m}"
    );

    let d0 = predict(
        &s,
        &token,
        json!({"model_id": mid, "state": 1, "episode_id": "e", "decision_id": "d-0"}),
    )
    .await;
    assert_eq!(d0["decision_id"], "d-0");
    assert_eq!(d0["step"], 0);
    let p = d0["probability"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0, "{d0}");
    // A retry answers the logged decision, free.
    let again = predict(
        &s,
        &token,
        json!({"model_id": mid, "state": 1, "episode_id": "e", "decision_id": "d-0"}),
    )
    .await;
    assert_eq!(
        (&again["action"], &again["probability"]),
        (&d0["action"], &d0["probability"])
    );
    let (st, v) = s
        .json(
            POST,
            "/predict",
            Some(&token),
            Some(json!({"model_id": mid, "state": 2, "episode_id": "e", "decision_id": "d-0"})),
        )
        .await;
    assert_error(st, &v, 409, "conflict");
    let d1 = predict(
        &s,
        &token,
        json!({"model_id": mid, "state": 2, "episode_id": "e", "decision_id": "d-1"}),
    )
    .await;
    assert_eq!(d1["step"], 1);

    let (st, r) = s
        .json(
            POST,
            "/rewards",
            Some(&token),
            Some(json!({"model_id": mid, "decision_id": "d-0", "value": 1.0, "final": true})),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["status"], "applied", "{r}");
    assert_eq!(
        (r["reward"].as_f64(), r["rewards"].as_u64()),
        (Some(1.0), Some(1))
    );
    assert!(r["closes_at"].as_str().unwrap().ends_with('Z'));

    let (st, out) = s
        .json(
            POST,
            "/rewards/batch",
            Some(&token),
            Some(json!({"model_id": mid, "rewards": [
                {"decision_id": "d-1", "value": 0.5, "reward_id": "r", "final": true},
                {"decision_id": "d-1", "value": 0.5, "reward_id": "r", "final": true},
                {"decision_id": "nope", "value": 1.0},
            ]})),
        )
        .await;
    assert_eq!(st, 200, "{out}");
    let res = out["results"].as_array().unwrap();
    assert_eq!(res[0]["status"], "closed", "{out}");
    assert_eq!(res[1]["status"], "duplicate", "{out}");
    assert_eq!(res[2]["error"]["code"], "not_found", "{out}");
    // A batch holds 1 to 1,000 rewards.
    let one = json!({"decision_id": "nope", "value": 1.0});
    for n in [0, 1001] {
        let (st, v) = s
            .json(
                POST,
                "/rewards/batch",
                Some(&token),
                Some(json!({"model_id": mid, "rewards": vec![one.clone(); n]})),
            )
            .await;
        assert_error(st, &v, 422, "invalid_field");
    }
    let (st, v) = s
        .json(
            POST,
            "/rewards",
            Some(&token),
            Some(json!({"model_id": mid, "decision_id": "d-1", "value": 2.0, "reward_id": "r"})),
        )
        .await;
    assert_error(st, &v, 409, "conflict");

    let (st, e) = s
        .json(
            POST,
            "/episodes/end",
            Some(&token),
            Some(json!({"model_id": mid, "episode_id": "e", "outcome": "terminated"})),
        )
        .await;
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["learned"], 1, "{e}");
    assert_eq!(updates(&s, &token, &mid).await, 2);
    // Two logging predicts and two counted rewards; the retry, the
    // duplicate, the refused rewards and the end are free.
    assert_eq!(calls(&s, &token).await, 4);

    let (st, page) = s
        .json(GET, &format!("/models/{mid}/decisions"), Some(&token), None)
        .await;
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["total"], 2);
    assert_eq!(page["decisions"][0]["decision_id"], "d-0");
    assert_eq!(page["decisions"][1]["status"], "applied");
    assert_eq!(page["decisions"][1]["reward"], 0.5);
    assert_eq!(page["stats"]["applied"], 2);
    let (_, open) = s
        .json(
            GET,
            &format!("/models/{mid}/decisions?status=open"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(open["total"], 0, "{open}");
    let (st, v) = s
        .json(
            GET,
            &format!("/models/{mid}/decisions?status=maybe"),
            Some(&token),
            None,
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    // The latest first, uncounted: what the dashboard asks every 2 s.
    let (st, latest) = s
        .json(
            GET,
            &format!("/models/{mid}/decisions?order=newest&count=false&limit=1"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(st, 200, "{latest}");
    assert!(latest["total"].is_null(), "{latest}");
    assert_eq!(latest["decisions"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        latest["decisions"][0]["decision_id"], page["decisions"][1]["decision_id"],
        "{latest}"
    );
    assert_eq!(latest["stats"], page["stats"]);
    // Its `next` cursor gives the page after it, then an empty one.
    let next = latest["next"]
        .as_str()
        .expect("a full page has a next cursor");
    let (st, older) = s
        .json(
            GET,
            &format!("/models/{mid}/decisions?order=newest&limit=1&cursor={next}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(st, 200, "{older}");
    assert_eq!(older["total"], 2, "{older}");
    assert_eq!(
        older["decisions"][0]["decision_id"], page["decisions"][0]["decision_id"],
        "{older}"
    );
    let last = older["next"].as_str().expect("still a full page");
    let (_, end) = s
        .json(
            GET,
            &format!("/models/{mid}/decisions?order=newest&limit=1&cursor={last}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(end["decisions"], serde_json::json!([]), "{end}");
    assert!(end["next"].is_null(), "{end}");
    assert!(
        page["next"].is_null(),
        "a page that is not full has none: {page}"
    );
    let (_, oldest) = s
        .json(
            GET,
            &format!("/models/{mid}/decisions?order=oldest&count=true"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(oldest, page);
    for bad in [
        "order=latest",
        "order=",
        "count=no",
        "count=1",
        "cursor=12",
        "cursor=x.64",
        "cursor=1.6",
    ] {
        let (st, v) = s
            .json(
                GET,
                &format!("/models/{mid}/decisions?{bad}"),
                Some(&token),
                None,
            )
            .await;
        assert_error(st, &v, 422, "invalid_field");
        let field = bad.split('=').next().unwrap_or_default();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{bad}: {v}"
        );
    }

    let r = s
        .call(
            GET,
            &format!("/models/{mid}/decisions/export"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for key in [
        "decision_id",
        "episode_id",
        "step",
        "time",
        "state",
        "allowed_actions",
        "action",
        "probability",
        "reward",
        "status",
        "applied_seq",
    ] {
        assert!(lines[0].get(key).is_some(), "{key} in {}", lines[0]);
    }
    assert_eq!(lines[1]["state"], 2);
    // Both transitions applied, each once, in an order 1, 2.
    let mut seqs: Vec<u64> = lines
        .iter()
        .map(|l| l["applied_seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2], "{text}");
    // The model answer carries the log's counts.
    let (_, m) = s
        .json(GET, &format!("/models/{mid}"), Some(&token), None)
        .await;
    assert_eq!(m["decision_stats"], page["stats"], "{m}");
    assert_eq!(m["decision_stats"]["decisions"], 2, "{m}");
}

async fn decisions_are_isolated_and_optional(b: Backend) {
    let Some(s) = start_with(b, "decisions_iso", paid_features).await else {
        return;
    };
    let (ta, _, ma) = s.register("a@example.com").await;
    let (tb, _, mb) = s.register("b@example.com").await;
    // A model without the setting predicts as before.
    let plain = predict(&s, &ta, json!({"model_id": ma, "state": 1})).await;
    assert!(plain.get("decision_id").is_none(), "{plain}");
    assert!(plain.get("probability").is_none(), "{plain}");
    let (st, v) = s
        .json(
            POST,
            "/rewards",
            Some(&ta),
            Some(json!({"model_id": ma, "decision_id": "x", "value": 1})),
        )
        .await;
    assert_error(st, &v, 404, "not_found");

    log_decisions(&s, &ta, &ma, json!({})).await;
    log_decisions(&s, &tb, &mb, json!({})).await;
    let d = predict(
        &s,
        &ta,
        json!({"model_id": ma, "state": 1, "episode_id": "e"}),
    )
    .await;
    let id = d["decision_id"].as_str().unwrap().to_owned();
    assert!(d.get("step").is_some(), "{d}");
    // B sees neither A's model nor A's decision on B's own model.
    for (path, body) in [
        (
            "/rewards",
            json!({"model_id": ma, "decision_id": id, "value": 1}),
        ),
        (
            "/rewards",
            json!({"model_id": mb, "decision_id": id, "value": 1}),
        ),
        (
            "/episodes/end",
            json!({"model_id": ma, "episode_id": "e", "outcome": "terminated"}),
        ),
        ("/predict", json!({"model_id": ma, "state": 1})),
    ] {
        let (st, v) = s.json(POST, path, Some(&tb), Some(body)).await;
        assert_error(st, &v, 404, "not_found");
    }
    let (st, v) = s
        .json(GET, &format!("/models/{ma}/decisions"), Some(&tb), None)
        .await;
    assert_error(st, &v, 404, "not_found");
    // An invalid setting is 422 naming the field; null turns logging off.
    let (st, v) = s
        .json(
            reqwest::Method::PATCH,
            &format!("/models/{ma}"),
            Some(&ta),
            Some(json!({"decisions": {"reward_wait_seconds": 99_999_999}})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("reward_wait_seconds"));
    let m = log_decisions(&s, &ta, &ma, Value::Null).await;
    assert!(m["decisions"].is_null(), "{m}");
    let plain = predict(&s, &ta, json!({"model_id": ma, "state": 1})).await;
    assert!(plain.get("decision_id").is_none(), "{plain}");
}

async fn the_server_settles_deadlines(b: Backend) {
    let Some(s) = start_with(b, "decisions_settle", paid_features).await else {
        return;
    };
    let (token, _, mid) = s.register("s@example.com").await;
    log_decisions(
        &s,
        &token,
        &mid,
        json!({"reward_wait_seconds": 0, "default_reward": 1.0}),
    )
    .await;
    predict(&s, &token, json!({"model_id": mid, "state": 3})).await;
    // No reward: the server's settling task applies the default reward.
    let mut n = 0;
    for _ in 0..50 {
        n = updates(&s, &token, &mid).await;
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n, 1, "settled within 5 s");
    let (_, page) = s
        .json(GET, &format!("/models/{mid}/decisions"), Some(&token), None)
        .await;
    assert_eq!(page["stats"]["defaulted"], 1, "{page}");
    assert_eq!(page["decisions"][0]["reward"], 1.0, "{page}");
    assert_eq!(calls(&s, &token).await, 1, "settling is free");
}

async fn decisions_survive_a_restart(b: Backend) {
    let Some(s) = start_with(b, "decisions_restart", paid_features).await else {
        return;
    };
    let (token, _, mid) = s.register("r@example.com").await;
    log_decisions(&s, &token, &mid, json!({"reward_wait_seconds": 3600})).await;
    let d = predict(&s, &token, json!({"model_id": mid, "state": "home"})).await;
    let id = d["decision_id"].as_str().unwrap().to_owned();
    let (st, r) = s
        .json(
            POST,
            "/rewards",
            Some(&token),
            Some(json!({"model_id": mid, "decision_id": id, "value": 2.0})),
        )
        .await;
    assert_eq!((st.as_u16(), &r["status"]), (200, &json!("open")), "{r}");
    let s = s.restart().await;
    let (token, _) = {
        let (st, v) = s
            .json(
                POST,
                "/login",
                None,
                Some(json!({"email": "r@example.com", "password": "correct horse battery"})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        (v["access_token"].as_str().unwrap().to_owned(), ())
    };
    let (st, r) = s
        .json(
            POST,
            "/rewards",
            Some(&token),
            Some(json!({"model_id": mid, "decision_id": id, "value": 1.0, "final": true})),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (&r["status"], &r["reward"], &r["rewards"]),
        (&json!("applied"), &json!(3.0), &json!(2)),
        "the reward before the restart counts: {r}"
    );
    assert_eq!(updates(&s, &token, &mid).await, 1);
}
