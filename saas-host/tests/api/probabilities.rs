//! `POST /predict/probabilities`: the behaviour policy's probabilities,
//! checked against values computed by hand (epsilon-greedy with a tie and a
//! mask, greedy, an unseen state, softmax) and against the engine's
//! `Model::action_probabilities` on the exported model; metered like a
//! predict, validated like the other engine routes, changing nothing.

use qlearn_core::Model;
use serde_json::{json, Value};

use crate::common::{assert_error, start, Backend, Server};
use crate::{GET, POST};

backend_tests!(probabilities_are_the_policys_by_hand);

async fn probabilities(s: &Server, token: &str, body: Value) -> Vec<f64> {
    let (st, v) = s
        .json(POST, "/predict/probabilities", Some(token), Some(body))
        .await;
    assert_eq!(st, 200, "{v}");
    serde_json::from_value(v["probabilities"].clone()).unwrap()
}

async fn calls(s: &Server, token: &str) -> u64 {
    let (_, d) = s.json(GET, "/dashboard", Some(token), None).await;
    d["usage"]["calls"].as_u64().unwrap()
}

/// Sets Q(1, a) = r for each `(a, r)` (learning rate 1, terminal updates).
async fn set_row(s: &Server, token: &str, mid: &str, row: &[(usize, f64)]) {
    let experiences: Vec<Value> = row
        .iter()
        .map(|&(a, r)| json!({"state": 1, "action": a, "reward": r, "next_state": 1, "done": true}))
        .collect();
    let (st, v) = s
        .json(
            POST,
            "/update/batch",
            Some(token),
            Some(json!({"model_id": mid, "experiences": experiences})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
}

async fn exported(s: &Server, token: &str, mid: &str) -> Vec<u8> {
    let r = s
        .call(GET, &format!("/models/{mid}/export"), Some(token), None)
        .await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

#[track_caller]
fn close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
}

async fn probabilities_are_the_policys_by_hand(b: Backend) {
    let Some(s) = start(b, "probabilities_http").await else {
        return;
    };
    let (token, _, _) = s.register("p@example.com").await;
    let greedy = s
        .create_model(
            &token,
            json!({"name": "eg", "n_actions": 4, "learning_rate": 1.0, "epsilon": 0.2,
                   "epsilon_decay": 1.0, "min_epsilon": 0.0, "seed": 5}),
        )
        .await;
    // Q(1) = [1, 0.5, 1, 0]: actions 0 and 2 tie for the best.
    set_row(&s, &token, &greedy, &[(0, 1.0), (1, 0.5), (2, 1.0)]).await;
    let before = calls(&s, &token).await;
    let export_before = exported(&s, &token, &greedy).await;
    let ask = |extra: Value| {
        let mut body = json!({"model_id": greedy, "state": 1});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    // Epsilon-greedy: (1 - e) / |ties| + e / |allowed| on the tied best,
    // e / |allowed| elsewhere.
    let all = probabilities(&s, &token, ask(json!({}))).await;
    close(&all, &[0.4 + 0.05, 0.05, 0.4 + 0.05, 0.05]);
    // Allowed {1, 2, 3}: 2 alone is best.
    let masked = probabilities(&s, &token, ask(json!({"allowed_actions": [1, 2, 3]}))).await;
    let e3 = 0.2 / 3.0;
    close(&masked, &[0.0, e3, 0.8 + e3, e3]);
    // Greedy: the tie split evenly; with the mask, the best allowed.
    let off = probabilities(&s, &token, ask(json!({"explore": false}))).await;
    close(&off, &[0.5, 0.0, 0.5, 0.0]);
    let off_masked = probabilities(
        &s,
        &token,
        ask(json!({"explore": false, "allowed_actions": [1, 3]})),
    )
    .await;
    close(&off_masked, &[0.0, 1.0, 0.0, 0.0]);
    // An unseen state: uniform over the allowed actions.
    let unseen = probabilities(
        &s,
        &token,
        json!({"model_id": greedy, "state": "new", "allowed_actions": [0, 3]}),
    )
    .await;
    close(&unseen, &[0.5, 0.0, 0.0, 0.5]);
    // Metered one call each; the model unchanged (no draw, no counter).
    assert_eq!(calls(&s, &token).await, before + 5);
    let export_after = exported(&s, &token, &greedy).await;
    assert_eq!(export_before, export_after, "nothing of the model changed");
    // The engine's own function on the exported model says the same, bit
    // for bit (Python's is the same function: py-bindings' interop test).
    let model = Model::from_bytes(&export_after).unwrap();
    assert_eq!(all, model.action_probabilities(1, None, true).unwrap());
    assert_eq!(
        masked,
        model
            .action_probabilities(1, Some(&[1, 2, 3]), true)
            .unwrap()
    );

    // Softmax, temperature 0.5, Q(1) = [1, 0.5, 0]: exp((q - 1) / 0.5).
    let soft = s
        .create_model(
            &token,
            json!({"name": "sm", "n_actions": 3, "learning_rate": 1.0,
                   "exploration": "softmax", "temperature": 0.5}),
        )
        .await;
    set_row(&s, &token, &soft, &[(0, 1.0), (1, 0.5)]).await;
    let w = [1.0, (-1.0f64).exp(), (-2.0f64).exp()];
    let sum: f64 = w.iter().sum();
    let got = probabilities(&s, &token, json!({"model_id": soft, "state": 1})).await;
    close(&got, &[w[0] / sum, w[1] / sum, w[2] / sum]);
    let got = probabilities(
        &s,
        &token,
        json!({"model_id": soft, "state": 1, "allowed_actions": [1, 2]}),
    )
    .await;
    close(&got, &[0.0, w[1] / (w[1] + w[2]), w[2] / (w[1] + w[2])]);

    // Refused like the other engine routes, and not metered.
    let before = calls(&s, &token).await;
    for (body, status, code) in [
        (json!({"model_id": soft, "state": []}), 422, "invalid_state"),
        (
            json!({"model_id": soft, "state": 1, "allowed_actions": [3]}),
            422,
            "invalid_action",
        ),
        (
            json!({"model_id": soft, "state": 1, "allowed_actions": []}),
            422,
            "invalid_action",
        ),
        (json!({"model_id": "nope", "state": 1}), 404, "not_found"),
        (json!({"model_id": soft}), 422, "invalid_field"),
    ] {
        let (st, v) = s
            .json(POST, "/predict/probabilities", Some(&token), Some(body))
            .await;
        assert_error(st, &v, status, code);
    }
    assert_eq!(calls(&s, &token).await, before);
    // Another user cannot read them.
    let (other, _, _) = s.register("q@example.com").await;
    let (st, v) = s
        .json(
            POST,
            "/predict/probabilities",
            Some(&other),
            Some(json!({"model_id": soft, "state": 1})),
        )
        .await;
    assert_error(st, &v, 404, "not_found");
}
