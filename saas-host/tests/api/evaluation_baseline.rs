//! A baseline action recorded with each decision over HTTP (issue 18's
//! `baseline` policy): `POST /predict` takes `baseline_action` on a model
//! that logs decisions (checked against its actions, part of a retry's
//! identity, refused on a model that logs none); the listing and the
//! export show it; an evaluation job scores it: a baseline that always
//! picks the better arm (pays 0.8) is estimated at 0.8, and a log without
//! baselines answers an error for that policy only.

use serde_json::{json, Value};

use crate::common::{assert_error, start_with, Backend, Server};
use crate::evaluations::{bandit_with, create, ips, plan, wait};
use crate::{GET, POST};

backend_tests!(a_baseline_recorded_with_each_decision_is_evaluated);

async fn a_baseline_recorded_with_each_decision_is_evaluated(b: Backend) {
    let Some(s) = start_with(b, "evaluation_baseline", |c| {
        plan(c);
        c.limits.free.max_models = None;
    })
    .await
    else {
        return;
    };
    let (token, _, _) = s.register("b@example.com").await;
    let (mid, _) = bandit_with(&s, &token, 1000, 0.3, 1000, Some(1)).await;
    let predict = |body: Value| {
        let (s, token) = (&s, &token);
        async move { s.json(POST, "/predict", Some(token), Some(body)).await }
    };
    // Checked like an action; refused on a model that logs no decisions.
    let (st, v) = predict(json!({"model_id": mid, "state": "x", "baseline_action": 2})).await;
    assert_error(st, &v, 422, "invalid_field");
    assert_eq!(v["error"]["field"], "baseline_action", "{v}");
    let plain = s
        .create_model(&token, json!({"name": "plain", "n_actions": 2}))
        .await;
    let (st, v) = predict(json!({"model_id": plain, "state": "x", "baseline_action": 0})).await;
    assert_error(st, &v, 422, "invalid_field");
    assert_eq!(v["error"]["field"], "baseline_action", "{v}");
    let (st, v) = predict(json!({"model_id": plain, "state": "x"})).await;
    assert_eq!(st, 200, "{v}");
    // Part of a retry's identity, as the state is.
    let first = json!({"model_id": mid, "state": "y", "decision_id": "r1", "baseline_action": 0});
    let (st, v) = predict(first.clone()).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = predict(first).await;
    assert_eq!(st, 200, "a retry: {v}");
    let (st, v) = predict(json!({"model_id": mid, "state": "y", "decision_id": "r1"})).await;
    assert_error(st, &v, 409, "conflict");

    // Listed and exported.
    let listed = |query: &'static str| {
        let (s, token, mid) = (&s, &token, &mid);
        async move {
            let path = format!("/models/{mid}/decisions?{query}");
            let (st, page) = s.json(GET, &path, Some(token), None).await;
            assert_eq!(st, 200, "{page}");
            page
        }
    };
    let page = listed("limit=3").await;
    assert_eq!(page["total"], 1001, "{page}");
    for d in page["decisions"].as_array().unwrap() {
        assert_eq!(d["baseline_action"], 1, "{d}");
    }
    let page = listed("status=open").await;
    assert_eq!(page["decisions"][0]["decision_id"], "r1", "{page}");
    assert_eq!(page["decisions"][0]["baseline_action"], 0, "{page}");
    let r = s
        .call(
            GET,
            &format!("/models/{mid}/decisions/export"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let line = text.lines().next().unwrap();
    let step = qlearn_core::evaluation::LoggedStep::from_export_line(line).unwrap();
    assert_eq!(step.baseline_action, Some(1), "{line}");

    // The baseline (always the arm paying 0.8), next to the logged mean.
    // The open decision r1 has no reward, so it is not counted.
    let done = baseline_and_logged(&s, &token, &mid).await;
    let p = &done["result"]["policies"];
    assert!(p[0]["error"].is_null(), "{}", p[0]);
    let est = ips(&p[0]);
    assert_eq!(est["kind"], "estimate", "{est}");
    let (lo, hi) = (
        est["ci"]["low"].as_f64().unwrap(),
        est["ci"]["high"].as_f64().unwrap(),
    );
    assert!(
        lo <= 0.8 && 0.8 <= hi,
        "baseline IPS interval [{lo}, {hi}] covers 0.8"
    );
    let logged = ips(&p[1])["value"].as_f64().unwrap();
    assert!(logged < lo, "the better arm beats the logged mix {logged}");

    // A log without baselines: that policy answers an error, the others
    // still an estimate.
    let (none, _) = bandit_with(&s, &token, 50, 0.3, 1000, None).await;
    let done = baseline_and_logged(&s, &token, &none).await;
    let p = &done["result"]["policies"];
    let message = p[0]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("baseline"), "{}", p[0]);
    assert_eq!(p[0]["results"], json!([]), "{}", p[0]);
    assert_eq!(ips(&p[1])["kind"], "estimate", "{}", p[1]);
}

/// Runs an evaluation job of the `baseline` and `logged` policies on model
/// `mid` to its end; returns the finished job.
async fn baseline_and_logged(s: &Server, token: &str, mid: &str) -> Value {
    let policies = json!({"policies": [{"kind": "baseline"}, {"kind": "logged"}]});
    let job = create(s, token, mid, policies).await;
    let done = wait(s, token, mid, job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    done
}
