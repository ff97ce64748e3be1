//! Models: the per-tier model limit, tenant isolation, export and import.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, start, start_with, Backend};
use crate::{GET, POST};

backend_tests!(
    model_limit,
    cross_tenant_access_is_404_everywhere,
    export_import_round_trip,
);

async fn model_limit(b: Backend) {
    let Some(s) = start(b, "modellimit").await else {
        return;
    };
    let (token, _, mid) = s.register("limit@example.com").await;
    s.create_model(&token, json!({"name": "two", "n_actions": 2}))
        .await;
    s.create_model(&token, json!({"name": "three", "n_actions": 2}))
        .await;
    let (st, v) = s
        .json(
            POST,
            "/models",
            Some(&token),
            Some(json!({"name": "four", "n_actions": 2})),
        )
        .await;
    assert_error(st, &v, 403, "model_limit_reached");
    // Import counts too.
    let bytes = s
        .call(GET, &format!("/models/{mid}/export"), Some(&token), None)
        .await
        .bytes()
        .await
        .unwrap();
    let r = s
        .http
        .post(s.url("/models/import"))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let st = r.status();
    let v: Value = r.json().await.unwrap();
    assert_error(st, &v, 403, "model_limit_reached");
    // Deleting one frees a slot.
    assert_eq!(
        s.call(
            Method::DELETE,
            &format!("/models/{mid}"),
            Some(&token),
            None
        )
        .await
        .status(),
        204
    );
    s.create_model(&token, json!({"name": "four", "n_actions": 2}))
        .await;
}

async fn cross_tenant_access_is_404_everywhere(b: Backend) {
    let Some(s) = start(b, "tenant").await else {
        return;
    };
    let (alice, _, mid) = s.register("alice@example.com").await;
    let (bob, _, _) = s.register("bob@example.com").await;
    let (st, _) = s
        .json(
            POST,
            "/update",
            Some(&alice),
            Some(
                json!({"model_id": mid, "state": "s", "action": 1, "reward": 2, "next_state": "t"}),
            ),
        )
        .await;
    assert_eq!(st, 200);
    let (st, key) = s
        .json(POST, "/api-keys", Some(&alice), Some(json!({"name": "k"})))
        .await;
    assert_eq!(st, 201);
    let key_id = key["id"].as_str().unwrap().to_owned();

    let exp = json!({"state": "s", "action": 0, "reward": 1, "next_state": "t"});
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (GET, format!("/models/{mid}"), None),
        (
            Method::PATCH,
            format!("/models/{mid}"),
            Some(json!({"name": "mine now"})),
        ),
        (GET, format!("/status/{mid}"), None),
        (GET, format!("/models/{mid}/export"), None),
        (GET, format!("/models/{mid}/export?format=json"), None),
        (GET, format!("/models/{mid}/events"), None),
        (
            POST,
            "/predict".into(),
            Some(json!({"model_id": mid, "state": "s"})),
        ),
        (
            POST,
            "/update".into(),
            Some(
                json!({"model_id": mid, "state": "s", "action": 0, "reward": 1, "next_state": "t"}),
            ),
        ),
        (
            POST,
            "/update/batch".into(),
            Some(json!({"model_id": mid, "experiences": [exp]})),
        ),
        (Method::DELETE, format!("/models/{mid}"), None),
        (Method::DELETE, format!("/api-keys/{key_id}"), None),
    ];
    // An unknown id answers exactly the same.
    for (m, path, body) in cases {
        let (st, v) = s.json(m.clone(), &path, Some(&bob), body.clone()).await;
        assert_error(st, &v, 404, "not_found");
        let unknown = path
            .replace(&mid, "AAAAAAAAAAAAAAAAAAAAAA")
            .replace(&key_id, "AAAAAAAAAAAAAAAAAAAAAA");
        let body2 = body.map(|b| {
            serde_json::from_str(&b.to_string().replace(&mid, "AAAAAAAAAAAAAAAAAAAAAA")).unwrap()
        });
        let (st2, v2) = s.json(m, &unknown, Some(&bob), body2).await;
        assert_eq!(
            (st2, &v2["error"]["message"]),
            (st, &v["error"]["message"]),
            "{path}: no hint that it exists"
        );
    }
    let (_, models) = s.json(GET, "/models", Some(&bob), None).await;
    assert!(models
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["id"] != mid.as_str()));
    // Alice's model is untouched.
    let (st, status) = s
        .json(GET, &format!("/status/{mid}"), Some(&alice), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(status["model"]["name"], "default");
    assert_eq!(status["stats"]["updates"], 1);
    assert_eq!(status["stats"]["predictions"], 0);
    let (_, keys) = s.json(GET, "/api-keys", Some(&alice), None).await;
    assert_eq!(keys.as_array().unwrap().len(), 1);
}

async fn export_import_round_trip(b: Backend) {
    let Some(s) = start_with(b, "exportimport", |c| {
        c.limits.free.max_models = Some(10);
        c.limits.free.monthly_calls = None;
        c.limits.free.features = qlearn_core::tenancy::Features::ALL;
    })
    .await
    else {
        return;
    };
    let (token, _, _) = s.register("ex@example.com").await;
    let mid = s
        .create_model(&token, json!({"name": "src", "n_actions": 3, "action_names": ["a", "b", "c"], "algorithm": "double_q_learning", "seed": 42}))
        .await;
    let exps: Vec<Value> = (0..20)
        .map(|i| json!({"state": [i % 5, 1], "action": i % 3, "reward": i as f64 * 0.5 - 2.0, "next_state": [(i + 1) % 5, 1], "done": i % 7 == 6}))
        .collect();
    let (st, _) = s
        .json(
            POST,
            "/update/batch",
            Some(&token),
            Some(json!({"model_id": mid, "experiences": exps})),
        )
        .await;
    assert_eq!(st, 200);
    let (_, original) = s
        .json(
            GET,
            &format!("/status/{mid}?limit=1000"),
            Some(&token),
            None,
        )
        .await;

    let r = s
        .call(GET, &format!("/models/{mid}/export"), Some(&token), None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(&bytes[..4], b"QLRN");
    let r = s
        .http
        .post(s.url("/models/import?name=copy%20one"))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let imported: Value = r.json().await.unwrap();
    assert_eq!(imported["name"], "copy one");
    assert_ne!(imported["id"], mid.as_str());

    let r = s
        .call(
            GET,
            &format!("/models/{mid}/export?format=json"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let json_text = r.text().await.unwrap();
    let r = s
        .http
        .post(s.url("/models/import?name=copy2"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(json_text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let imported2: Value = r.json().await.unwrap();

    for m in [&imported, &imported2] {
        let id = m["id"].as_str().unwrap();
        let (_, copy) = s
            .json(GET, &format!("/status/{id}?limit=1000"), Some(&token), None)
            .await;
        assert_eq!(copy["q_table"], original["q_table"]);
        assert_eq!(copy["stats"], original["stats"]);
        for f in [
            "n_actions",
            "action_names",
            "algorithm",
            "seed",
            "learning_rate",
        ] {
            assert_eq!(copy["model"][f], original["model"][f], "{f}");
        }
    }
    // Each copy goes on exactly like the original (same generator state):
    // an unseen state's choice is a uniform draw, so 30 predicts on each
    // give the same sequence only if the generator came across.
    let mut runs = Vec::new();
    for id in [
        mid.as_str(),
        imported["id"].as_str().unwrap(),
        imported2["id"].as_str().unwrap(),
    ] {
        let mut run = Vec::new();
        for _ in 0..30 {
            let body = json!({"model_id": id, "state": [9, 9], "explore": true});
            let (st, d) = s.json(POST, "/predict", Some(&token), Some(body)).await;
            assert_eq!(st, 200, "{d}");
            run.push((
                d["action"].clone(),
                d["explored"].clone(),
                d["probability"].clone(),
            ));
        }
        runs.push(run);
    }
    assert_eq!(runs[1], runs[0]);
    assert_eq!(runs[2], runs[0]);
    let actions: std::collections::HashSet<String> =
        runs[0].iter().map(|r| r.0.to_string()).collect();
    assert!(actions.len() > 1, "{:?}", runs[0]);
    // Re-export of the binary copy is byte-identical to the original's.
    let id = imported["id"].as_str().unwrap();
    let again = s
        .call(GET, &format!("/models/{id}/export"), Some(&token), None)
        .await
        .bytes()
        .await
        .unwrap();
    let orig_again = s
        .call(GET, &format!("/models/{mid}/export"), Some(&token), None)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(again, orig_again);
}
