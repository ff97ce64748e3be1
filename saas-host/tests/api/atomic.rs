//! Atomic writes over HTTP (issue 12): concurrent PATCHes of different
//! fields of a model all land (the store applies each to the current
//! configuration under its lock), on every backend.

use serde_json::{json, Value};

use crate::common::{start, Backend};
use crate::GET;

backend_tests!(concurrent_patches_of_distinct_fields_all_land);

/// Ten fields a PATCH can change, each with a value unlike its default.
fn fields() -> Vec<(&'static str, Value)> {
    vec![
        ("name", json!("renamed")),
        ("learning_rate", json!(0.25)),
        ("discount_factor", json!(0.5)),
        ("epsilon", json!(0.3)),
        ("epsilon_decay", json!(0.75)),
        ("min_epsilon", json!(0.05)),
        ("initial_q", json!(1.5)),
        ("exploration", json!("softmax")),
        ("temperature", json!(2.0)),
        ("seed", json!(99)),
    ]
}

/// 50 PATCHes at once: 5 models, each patched in its 10 fields by 10
/// concurrent requests of one field each. Every field of every model must
/// hold its new value afterwards (a read-modify-write would lose some).
async fn concurrent_patches_of_distinct_fields_all_land(b: Backend) {
    let Some(s) = start(b, "patches").await else {
        return;
    };
    let (token, _, default_model) = s.register("p@example.com").await;
    let mut models = vec![default_model];
    for _ in 0..2 {
        models.push(
            s.create_model(&token, json!({"name": "m", "n_actions": 3}))
                .await,
        );
    }
    // The free tier holds 3 models; a second user holds the other 2.
    let (token2, _, other) = s.register("q@example.com").await;
    let second = s
        .create_model(&token2, json!({"name": "m", "n_actions": 3}))
        .await;
    let owned: Vec<(String, String)> = models
        .into_iter()
        .map(|m| (token.clone(), m))
        .chain([(token2.clone(), other), (token2.clone(), second)])
        .collect();
    let mut calls = Vec::new();
    for (tok, id) in &owned {
        for (field, value) in fields() {
            let (http, url, tok) = (s.http.clone(), s.url(&format!("/models/{id}")), tok.clone());
            calls.push(tokio::spawn(async move {
                let r = http
                    .patch(url)
                    .bearer_auth(tok)
                    .json(&json!({ field: value }))
                    .send()
                    .await
                    .unwrap();
                (field, r.status())
            }));
        }
    }
    assert_eq!(calls.len(), 50);
    for c in calls {
        let (field, status) = c.await.unwrap();
        assert_eq!(status, 200, "PATCH {field}");
    }
    for (tok, id) in &owned {
        let (st, v) = s.json(GET, &format!("/models/{id}"), Some(tok), None).await;
        assert_eq!(st, 200, "{v}");
        for (field, want) in fields() {
            assert_eq!(&v[field], &want, "[{b:?}] model {id}: {field} lost in {v}");
        }
    }
}
