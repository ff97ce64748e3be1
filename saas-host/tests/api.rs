//! The HTTP API end to end: the real server on a real socket, driven with
//! an HTTP client, once per storage backend (SQLite, PostgreSQL).

mod common;

use std::time::Duration;

use common::{assert_error, start, start_with, Backend};
use reqwest::Method;
use serde_json::{json, Value};

backend_tests!(
    user_journey,
    quota_exhaustion_is_exact_under_concurrency,
    model_limit,
    cross_tenant_access_is_404_everywhere,
    error_cases,
    rate_limit_and_headers,
    login_throttle,
    api_keys,
    password_change_revokes_old_tokens,
    sse_delivers_updates,
    export_import_round_trip,
    admin_changes_tier,
    batch_updates,
    cors_and_proxies,
    timeouts_and_connection_cap,
    generated_secret_survives_restart,
);

const GET: Method = Method::GET;
const POST: Method = Method::POST;

async fn user_journey(b: Backend) {
    let Some(s) = start(b, "journey").await else {
        return;
    };
    let (token, uid, default_model) = s.register("Alice@Example.com").await;

    // login, /me
    let (st, v) = s
        .json(
            POST,
            "/login",
            None,
            Some(json!({"email": "alice@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 86400);
    let token2 = v["access_token"].as_str().unwrap().to_owned();
    let (st, me) = s.json(GET, "/me", Some(&token2), None).await;
    assert_eq!(st, 200);
    assert_eq!(me["id"], uid.as_str());
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["tier"], "free");
    assert_eq!(me["role"], "user");

    // models
    let (st, models) = s.json(GET, "/models", Some(&token), None).await;
    assert_eq!(st, 200);
    assert_eq!(models.as_array().unwrap().len(), 1);
    assert_eq!(models[0]["id"], default_model.as_str());
    let (st, m) = s
        .json(
            POST,
            "/models",
            Some(&token),
            Some(json!({
                "name": "grid", "n_actions": 4, "action_names": ["up", "down", "left", "right"],
                "learning_rate": 0.5, "discount_factor": 0.9, "epsilon": 0.0, "seed": 7
            })),
        )
        .await;
    assert_eq!(st, 201, "{m}");
    let mid = m["id"].as_str().unwrap().to_owned();
    assert!(mid.len() >= 11, "ids carry at least 64 random bits");
    assert_eq!(m["learning_rate"], 0.5);
    assert_eq!(m["algorithm"], "q_learning");
    assert_eq!(m["stats"]["updates"], 0);

    // predict (unseen state: initial_q everywhere), update, predict again greedily
    let (st, p) = s
        .json(
            POST,
            "/predict",
            Some(&token),
            Some(json!({"model_id": mid, "state": [1, 2]})),
        )
        .await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["q_values"], json!([0.0, 0.0, 0.0, 0.0]));
    assert!(p["action_name"].is_string());
    let (st, u) = s
        .json(POST, "/update", Some(&token), Some(json!({
            "model_id": mid, "state": [1, 2], "action": 3, "reward": 1.0, "next_state": [1, 3], "done": true
        })))
        .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["q_value"], 0.5);
    assert_eq!(u["td_error"], 1.0);
    let (st, p) = s
        .json(
            POST,
            "/predict",
            Some(&token),
            Some(json!({"model_id": mid, "state": [1.0, 2.0], "explore": false})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(p["action"], 3);
    assert_eq!(p["action_name"], "right");
    assert_eq!(p["explored"], false);

    // status
    let (st, status) = s
        .json(GET, &format!("/status/{mid}"), Some(&token), None)
        .await;
    assert_eq!(st, 200, "{status}");
    assert_eq!(status["stats"]["updates"], 1);
    assert_eq!(status["stats"]["predictions"], 2);
    assert_eq!(status["stats"]["episodes"], 1);
    assert_eq!(status["q_table"]["total"], 1);
    assert_eq!(status["q_table"]["rows"][0]["state"], json!([1, 2]));
    assert_eq!(
        status["q_table"]["rows"][0]["q_values"],
        json!([0.0, 0.0, 0.0, 0.5])
    );
    assert_eq!(status["model"]["id"], mid.as_str());

    // PATCH, GET
    let (st, m) = s
        .json(
            Method::PATCH,
            &format!("/models/{mid}"),
            Some(&token),
            Some(json!({"name": "grid2", "learning_rate": 0.25})),
        )
        .await;
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["name"], "grid2");
    assert_eq!(m["learning_rate"], 0.25);
    let (st, m) = s
        .json(GET, &format!("/models/{mid}"), Some(&token), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(m["name"], "grid2");

    // dashboard
    let (st, d) = s.json(GET, "/dashboard", Some(&token), None).await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["user"]["id"], uid.as_str());
    assert_eq!(d["limits"]["monthly_calls"], 100);
    assert_eq!(d["limits"]["max_models"], 3);
    assert_eq!(d["usage"]["calls"], 3);
    assert_eq!(d["usage"]["remaining"], 97);
    let per_day = d["usage"]["per_day"].as_array().unwrap();
    assert!((28..=31).contains(&per_day.len()));
    assert_eq!(
        per_day
            .iter()
            .map(|x| x["calls"].as_u64().unwrap())
            .sum::<u64>(),
        3
    );
    assert_eq!(d["models"].as_array().unwrap().len(), 2);

    // DELETE
    let r = s
        .call(
            Method::DELETE,
            &format!("/models/{mid}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    let (st, v) = s
        .json(GET, &format!("/models/{mid}"), Some(&token), None)
        .await;
    assert_error(st, &v, 404, "not_found");

    // service routes
    let (st, h) = s.json(GET, "/healthz", None, None).await;
    assert_eq!(st, 200);
    assert_eq!(h["status"], "ok");
    let r = s.call(GET, "/", None, None).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let r = s.call(GET, "/static/app.js", None, None).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let r = s.call(GET, "/static/app.css", None, None).await;
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let r = s.call(GET, "/static/nope.js", None, None).await;
    assert_eq!(r.status(), 404);
    let r = s.call(GET, "/docs", None, None).await;
    let html = r.text().await.unwrap();
    assert!(
        html.contains("/docs/swagger-ui-bundle.js") && !html.contains("http"),
        "no CDN"
    );
    let r = s.call(GET, "/docs/swagger-ui-bundle.js", None, None).await;
    assert_eq!(r.status(), 200);
    let (st, api) = s.json(GET, "/openapi.json", None, None).await;
    assert_eq!(st, 200);
    assert!(api["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/register",
        "/login",
        "/me",
        "/me/password",
        "/api-keys",
        "/api-keys/{id}",
        "/models",
        "/models/{id}",
        "/models/{id}/export",
        "/models/import",
        "/models/{id}/events",
        "/predict",
        "/update",
        "/update/batch",
        "/status/{id}",
        "/dashboard",
        "/admin/users/{id}",
        "/healthz",
        "/metrics",
    ] {
        assert!(api["paths"][path].is_object(), "openapi lacks {path}");
    }
    assert!(api["paths"]["/predict"]["post"]["responses"]["429"].is_object());
    assert!(api["components"]["schemas"]["PredictIn"].is_object());
    let metrics = s
        .call(GET, "/metrics", None, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("qlearn_http_requests_total{route=\"/predict\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("qlearn_metered_calls_total{tier=\"free\"} 3"),
        "{metrics}"
    );
    assert!(metrics
        .contains("qlearn_http_request_duration_seconds_bucket{route=\"/update\",le=\"+Inf\"} 1"));
}

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
    let (st2, v) = s
        .json(
            POST,
            "/update/batch",
            Some(&token),
            Some(json!({"model_id": mid, "experiences": [
            {"state": 1, "action": 0, "reward": 1, "next_state": 2}]})),
        )
        .await;
    assert_error(st2, &v, 429, "quota_exceeded");
}

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

async fn error_cases(b: Backend) {
    let Some(s) = start(b, "errors").await else {
        return;
    };
    let (token, _, mid) = s.register("err@example.com").await;
    // 400 malformed JSON
    let r = s
        .http
        .post(s.url("/predict"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"model_id\": ")
        .send()
        .await
        .unwrap();
    let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
    assert_error(st, &v, 400, "malformed_json");
    let r = s
        .http
        .post(s.url("/predict"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{} trailing")
        .send()
        .await
        .unwrap();
    let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
    assert_error(st, &v, 400, "malformed_json");
    // 401: none, garbage, wrong signature, wrong scheme, unknown API key
    for auth in [
        None,
        Some("Bearer garbage"),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer qlk_unknownkey"),
    ] {
        let mut rb = s.http.get(s.url("/me"));
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        let r = rb.send().await.unwrap();
        let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
        assert_error(st, &v, 401, "unauthorized");
    }
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = "eyJzdWIiOiJ4IiwiaWF0IjoxLCJleHAiOjk5OTk5OTk5OTksInB3diI6IngifQ";
    parts[1] = forged;
    let (st, v) = s.json(GET, "/me", Some(&parts.join(".")), None).await;
    assert_error(st, &v, 401, "unauthorized");
    // alg=none is refused (the algorithm is pinned)
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        token.split('.').nth(1).unwrap()
    );
    let (st, v) = s.json(GET, "/me", Some(&none), None).await;
    assert_error(st, &v, 401, "unauthorized");
    // 401 login, same for unknown email and wrong password
    let (st1, v1) = s
        .json(
            POST,
            "/login",
            None,
            Some(json!({"email": "err@example.com", "password": "wrong password"})),
        )
        .await;
    let (st2, v2) = s
        .json(
            POST,
            "/login",
            None,
            Some(json!({"email": "nobody@example.com", "password": "wrong password"})),
        )
        .await;
    assert_error(st1, &v1, 401, "invalid_credentials");
    assert_eq!((st1, v1), (st2, v2));
    // 403 admin route
    let (st, v) = s
        .json(
            Method::PATCH,
            "/admin/users/whoever",
            Some(&token),
            Some(json!({"tier": "pro"})),
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
    // 404 unknown route and unknown model
    let (st, v) = s.json(GET, "/nope", None, None).await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s.json(GET, "/models/unknown", Some(&token), None).await;
    assert_error(st, &v, 404, "not_found");
    // 405
    let r = s.call(Method::PUT, "/models", Some(&token), None).await;
    assert_eq!(r.headers()["allow"], "GET, POST");
    let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
    assert_error(st, &v, 405, "method_not_allowed");
    let (st, v) = s.json(GET, "/register", None, None).await;
    assert_error(st, &v, 405, "method_not_allowed");
    // 409
    let (st, v) = s
        .json(
            POST,
            "/register",
            None,
            Some(json!({"email": "ERR@example.com", "password": "another password"})),
        )
        .await;
    assert_error(st, &v, 409, "email_taken");
    // 413: by Content-Length and chunked
    let big = format!(
        "{{\"model_id\": \"{mid}\", \"state\": \"{}\"}}",
        "x".repeat(70 * 1024)
    );
    let r = s
        .http
        .post(s.url("/predict"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
    assert_error(st, &v, 413, "payload_too_large");
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(8192)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = s
        .http
        .post(s.url("/predict"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
    assert_error(st, &v, 413, "payload_too_large");
    // 415
    let r = s
        .http
        .post(s.url("/predict"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
    assert_error(st, &v, 415, "unsupported_media_type");
    let r = s
        .http
        .post(s.url("/models/import"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
    assert_error(st, &v, 415, "unsupported_media_type");
    // 422 naming the field
    let cases = [
        (
            "/models",
            json!({"name": "m", "n_actions": 4, "learning_rate": 1.5}),
            "invalid_field",
            "learning_rate",
        ),
        (
            "/models",
            json!({"name": "m", "n_actions": 0}),
            "invalid_field",
            "n_actions",
        ),
        (
            "/models",
            json!({"name": "m", "n_actions": 4, "algorithm": "magic"}),
            "invalid_field",
            "algorithm",
        ),
        (
            "/models",
            json!({"name": "", "n_actions": 4}),
            "invalid_field",
            "name",
        ),
        (
            "/models",
            json!({"name": "m", "n_actions": 4, "learnin_rate": 0.1}),
            "invalid_field",
            "learnin_rate",
        ),
        (
            "/models",
            json!({"name": "m"}),
            "invalid_field",
            "n_actions",
        ),
        (
            "/predict",
            json!({"model_id": mid}),
            "invalid_field",
            "state",
        ),
        (
            "/predict",
            json!({"model_id": mid, "state": 1.5}),
            "invalid_field",
            "state",
        ),
        (
            "/predict",
            json!({"model_id": mid, "state": [1, "a"]}),
            "invalid_field",
            "state",
        ),
        (
            "/predict",
            json!({"model_id": mid, "state": 1, "allowed_actions": [9]}),
            "invalid_action",
            "allowed_actions",
        ),
        (
            "/predict",
            json!({"model_id": mid, "state": 1, "allowed_actions": []}),
            "invalid_action",
            "allowed_actions",
        ),
        (
            "/update",
            json!({"model_id": mid, "state": 1, "action": 1, "reward": "x", "next_state": 2}),
            "invalid_field",
            "reward",
        ),
        (
            "/update",
            json!({"model_id": mid, "state": 1, "action": -1, "reward": 1, "next_state": 2}),
            "invalid_field",
            "action",
        ),
        (
            "/update",
            json!({"model_id": mid, "state": 1, "action": 7, "reward": 1, "next_state": 2}),
            "invalid_action",
            "action",
        ),
        (
            "/update",
            json!({"model_id": mid, "state": 1, "action": 1, "reward": 1e300, "next_state": 2}),
            "invalid_field",
            "reward",
        ),
        (
            "/update",
            json!({"model_id": mid, "state": [], "action": 1, "reward": 1, "next_state": 2}),
            "invalid_state",
            "state",
        ),
        (
            "/update/batch",
            json!({"model_id": mid, "experiences": []}),
            "invalid_field",
            "experiences",
        ),
        (
            "/update/batch",
            json!({"model_id": mid, "experiences": [
            {"state": 1, "action": 1, "reward": 1, "next_state": 2},
            {"state": 1, "action": 1, "reward": "bad", "next_state": 2}]}),
            "invalid_field",
            "experiences[1].reward",
        ),
        ("/api-keys", json!({"name": ""}), "invalid_field", "name"),
        (
            "/register",
            json!({"email": "not-an-email", "password": "long enough"}),
            "invalid_field",
            "email",
        ),
        (
            "/register",
            json!({"email": "short@example.com", "password": "short"}),
            "invalid_field",
            "password",
        ),
        (
            "/me/password",
            json!({"current_password": "correct horse battery", "new_password": "short"}),
            "invalid_field",
            "new_password",
        ),
    ];
    for (path, body, code, field) in cases {
        let (st, v) = s.json(POST, path, Some(&token), Some(body.clone())).await;
        assert_error(st, &v, 422, code);
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{path} {body}: message must name {field}: {v}"
        );
    }
    let (st, v) = s
        .json(
            Method::PATCH,
            &format!("/models/{mid}"),
            Some(&token),
            Some(json!({"n_actions": 5})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("n_actions"));
    let (st, v) = s
        .json(
            GET,
            &format!("/status/{mid}?limit=5000"),
            Some(&token),
            None,
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    let (st, v) = s
        .json(GET, &format!("/status/{mid}?offset=-1"), Some(&token), None)
        .await;
    assert_error(st, &v, 422, "invalid_field");
    let r = s
        .http
        .post(s.url("/models/import"))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(vec![1u8, 2, 3])
        .send()
        .await
        .unwrap();
    let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
    assert_error(st, &v, 422, "invalid_model");
    // Nothing above was metered or applied.
    let (_, d) = s.json(GET, "/dashboard", Some(&token), None).await;
    assert_eq!(d["usage"]["calls"], 0, "{d}");
    // Metrics never saw a 5xx.
    let metrics = s
        .call(GET, "/metrics", None, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("status=\"5"), "{metrics}");
}

async fn rate_limit_and_headers(b: Backend) {
    let Some(s) = start_with(b, "ratelimit", |c| c.limits = Default::default()).await else {
        return;
    };
    let (token, _, mid) = s.register("rate@example.com").await;
    // Metered response: both policies.
    let r = s
        .call(
            POST,
            "/predict",
            Some(&token),
            Some(json!({"model_id": mid, "state": 1})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let policy = r.headers()["ratelimit-policy"].to_str().unwrap().to_owned();
    let state = r.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(
        policy.starts_with("\"burst\";q=10;w=2, \"monthly\";q=100;w="),
        "{policy}"
    );
    assert!(state.starts_with("\"burst\";r="), "{state}");
    assert!(state.contains("\"monthly\";r=99;t="), "{state}");
    // Burst of 10, one used: the next 9 pass, then refusals (unless the
    // bucket refilled meanwhile at 5/s, which a slow machine may allow once).
    let mut codes = Vec::new();
    for _ in 0..14 {
        let r = s.call(GET, "/me", Some(&token), None).await;
        let st = r.status();
        let retry = r.headers().get("retry-after").cloned();
        let rl = r.headers().get("ratelimit").cloned();
        let v: Value = r.json().await.unwrap();
        if st == 429 {
            assert_error(st, &v, 429, "rate_limited");
            assert!(retry.unwrap().to_str().unwrap().parse::<u64>().unwrap() >= 1);
            assert!(rl.unwrap().to_str().unwrap().starts_with("\"burst\";r=0;"));
        } else {
            assert_eq!(st, 200);
        }
        codes.push(st.as_u16());
    }
    assert!(codes[..9].iter().all(|&c| c == 200), "{codes:?}");
    assert!(
        codes.iter().filter(|&&c| c == 429).count() >= 2,
        "{codes:?}"
    );
    // Refills at 5/s.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(s.call(GET, "/me", Some(&token), None).await.status(), 200);
}

async fn login_throttle(b: Backend) {
    let Some(s) = start(b, "throttle").await else {
        return;
    };
    s.register("victim@example.com").await;
    let bad = json!({"email": "victim@example.com", "password": "not the password"});
    for _ in 0..5 {
        let (st, v) = s.json(POST, "/login", None, Some(bad.clone())).await;
        assert_error(st, &v, 401, "invalid_credentials");
    }
    let r = s
        .call(
            POST,
            "/login",
            None,
            Some(json!({"email": "victim@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert!(r.headers().contains_key("retry-after"));
    let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
    assert_error(st, &v, 429, "too_many_attempts");

    // Registrations per address.
    let Some(s2) = start_with(b, "regthrottle", |c| {
        c.register_per_address = saas_host::config::Throttle::per(2, 3600);
    })
    .await
    else {
        return;
    };
    s2.register("r1@example.com").await;
    s2.register("r2@example.com").await;
    let (st, v) = s2
        .json(
            POST,
            "/register",
            None,
            Some(json!({"email": "r3@example.com", "password": "long enough"})),
        )
        .await;
    assert_error(st, &v, 429, "too_many_attempts");
}

async fn api_keys(b: Backend) {
    let Some(s) = start(b, "apikeys").await else {
        return;
    };
    let (token, uid, mid) = s.register("keys@example.com").await;
    let (st, k) = s
        .json(POST, "/api-keys", Some(&token), Some(json!({"name": "ci"})))
        .await;
    assert_eq!(st, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("qlk_") && key.starts_with(k["prefix"].as_str().unwrap()));
    let (st, list) = s.json(GET, "/api-keys", Some(&token), None).await;
    assert_eq!(st, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("key").is_none(), "the key is shown only once");
    assert!(!list.to_string().contains(&key));
    assert_eq!(list[0]["name"], "ci");
    // Use it.
    let (st, me) = s.json(GET, "/me", Some(&key), None).await;
    assert_eq!(st, 200);
    assert_eq!(me["id"], uid.as_str());
    let (st, _) = s
        .json(
            POST,
            "/predict",
            Some(&key),
            Some(json!({"model_id": mid, "state": "a"})),
        )
        .await;
    assert_eq!(st, 200);
    let (_, list) = s.json(GET, "/api-keys", Some(&token), None).await;
    assert!(list[0]["last_used_at"].is_string(), "{list}");
    // Revoke it.
    let r = s
        .call(
            Method::DELETE,
            &format!("/api-keys/{}", k["id"].as_str().unwrap()),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    let (st, v) = s.json(GET, "/me", Some(&key), None).await;
    assert_error(st, &v, 401, "unauthorized");
    let (_, list) = s.json(GET, "/api-keys", Some(&token), None).await;
    assert_eq!(list, json!([]));
}

async fn password_change_revokes_old_tokens(b: Backend) {
    let Some(s) = start(b, "password").await else {
        return;
    };
    let (old, _, _) = s.register("pw@example.com").await;
    let (st, v) = s
        .json(
            POST,
            "/me/password",
            Some(&old),
            Some(json!({"current_password": "wrong one!", "new_password": "a new password"})),
        )
        .await;
    assert_error(st, &v, 401, "invalid_credentials");
    assert_eq!(
        s.call(GET, "/me", Some(&old), None).await.status(),
        200,
        "a failed change revokes nothing"
    );
    let (st, v) = s
        .json(POST, "/me/password", Some(&old), Some(json!({"current_password": "correct horse battery", "new_password": "a new password"})))
        .await;
    assert_eq!(st, 200, "{v}");
    let new = v["access_token"].as_str().unwrap().to_owned();
    let (st, v) = s.json(GET, "/me", Some(&old), None).await;
    assert_error(st, &v, 401, "unauthorized");
    assert_eq!(s.call(GET, "/me", Some(&new), None).await.status(), 200);
    let (st, _) = s
        .json(
            POST,
            "/login",
            None,
            Some(json!({"email": "pw@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(st, 401);
    let (st, _) = s
        .json(
            POST,
            "/login",
            None,
            Some(json!({"email": "pw@example.com", "password": "a new password"})),
        )
        .await;
    assert_eq!(st, 200);
}

async fn sse_delivers_updates(b: Backend) {
    let Some(s) = start(b, "sse").await else {
        return;
    };
    let (token, _, mid) = s.register("sse@example.com").await;
    // Header auth is unavailable to EventSource: use the query parameter.
    let mut events = s
        .http
        .get(s.url(&format!("/models/{mid}/events?access_token={token}")))
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
    // Another user cannot subscribe; no token is 401.
    let (bob, _, _) = s.register("bob-sse@example.com").await;
    let r = s
        .http
        .get(s.url(&format!("/models/{mid}/events?access_token={bob}")))
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

async fn export_import_round_trip(b: Backend) {
    let Some(s) = start_with(b, "exportimport", |c| c.limits.free.max_models = Some(10)).await
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
        // The copy goes on exactly like the original would (same generator state).
        let body = |id: &str| json!({"model_id": id, "state": [9, 9], "explore": true});
        let (_, a) = s.json(POST, "/predict", Some(&token), Some(body(id))).await;
        let _ = a;
    }
    // Re-export of the binary copy is byte-identical up to nothing: same model bytes.
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
    assert_eq!(again.len(), orig_again.len());
}

async fn admin_changes_tier(b: Backend) {
    let Some(s) = start(b, "admin").await else {
        return;
    };
    let (_, _, _) = s.register("root@example.com").await;
    let (user_token, uid, _) = s.register("customer@example.com").await;
    // The CLI works on the database directly: stop the server (SQLite serves one process).
    let url = s.config.database_url.clone();
    let s = {
        let mut s = s;
        s.stop().await.unwrap();
        let args = saas_host::cli::AdminArgs {
            database_url: url.clone(),
            action: saas_host::cli::AdminAction::SetRole {
                email: "ROOT@example.com".into(),
                role: "admin".into(),
            },
        };
        let msg = tokio::task::spawn_blocking(move || saas_host::cli::admin(&args))
            .await
            .unwrap()
            .unwrap();
        assert!(msg.contains("role user -> admin"), "{msg}");
        let bad = saas_host::cli::AdminArgs {
            database_url: url.clone(),
            action: saas_host::cli::AdminAction::SetTier {
                email: "nobody@example.com".into(),
                tier: "pro".into(),
            },
        };
        assert!(
            tokio::task::spawn_blocking(move || saas_host::cli::admin(&bad))
                .await
                .unwrap()
                .is_err()
        );
        s.restart().await
    };
    let (st, v) = s
        .json(
            POST,
            "/login",
            None,
            Some(json!({"email": "root@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(st, 200);
    let admin = v["access_token"].as_str().unwrap().to_owned();
    let (st, v) = s
        .json(
            Method::PATCH,
            &format!("/admin/users/{uid}"),
            Some(&admin),
            Some(json!({"tier": "enterprise"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["tier"], "enterprise");
    let (st, d) = s.json(GET, "/dashboard", Some(&user_token), None).await;
    assert_eq!(st, 200);
    assert_eq!(d["limits"]["tier"], "enterprise");
    assert_eq!(d["limits"]["monthly_calls"], Value::Null);
    assert_eq!(d["usage"]["remaining"], Value::Null);
    let (st, v) = s
        .json(
            Method::PATCH,
            &format!("/admin/users/{uid}"),
            Some(&admin),
            Some(json!({"tier": "gold"})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    let (st, v) = s
        .json(
            Method::PATCH,
            "/admin/users/nobody",
            Some(&admin),
            Some(json!({"tier": "pro"})),
        )
        .await;
    assert_error(st, &v, 404, "not_found");
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

async fn cors_and_proxies(b: Backend) {
    let Some(s) = start_with(b, "cors", |c| {
        c.cors_origins = vec!["https://app.example.com".into()];
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.register_per_address = saas_host::config::Throttle::per(1, 3600);
    })
    .await
    else {
        return;
    };
    let r = s
        .http
        .request(Method::OPTIONS, s.url("/predict"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("Authorization"));
    let r = s
        .http
        .get(s.url("/healthz"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Behind a trusted proxy, the throttle keys on X-Forwarded-For.
    let reg = |email: &str, xff: &str| {
        s.http
            .post(s.url("/register"))
            .header("x-forwarded-for", xff)
            .json(&json!({"email": email, "password": "long enough"}))
            .send()
    };
    assert_eq!(
        reg("p1@example.com", "203.0.113.1").await.unwrap().status(),
        201
    );
    assert_eq!(
        reg("p2@example.com", "203.0.113.1").await.unwrap().status(),
        429
    );
    assert_eq!(
        reg("p3@example.com", "203.0.113.2").await.unwrap().status(),
        201
    );
}

async fn timeouts_and_connection_cap(b: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(s) = start_with(b, "timeouts", |c| {
        c.header_read_timeout = Duration::from_millis(300);
        c.idle_timeout = Duration::from_millis(600);
        c.max_connections = 1;
    })
    .await
    else {
        return;
    };
    // The health check of the harness has closed its connection by now (keep-alive
    // ends on the header timeout); a slow client that never finishes its headers
    // is cut off after the header-read timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let t0 = std::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // While it holds the only connection slot, another client waits.
    let http = s.http.clone();
    let url = s.url("/healthz");
    let waiter = tokio::spawn(async move {
        let t = std::time::Instant::now();
        let r = http.get(url).send().await.unwrap();
        (r.status(), t.elapsed())
    });
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    let cut = t0.elapsed();
    assert!(
        n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        "closed, not served"
    );
    assert!(
        cut >= Duration::from_millis(250) && cut < Duration::from_secs(3),
        "cut after {cut:?}"
    );
    let (status, waited) = waiter.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        waited >= Duration::from_millis(150),
        "the second connection waited for a slot ({waited:?})"
    );
}

async fn generated_secret_survives_restart(b: Backend) {
    // No SECRET_KEY: one is generated, kept in the database, and reused.
    let Some(s) = start_with(b, "secret", |c| c.secret_key = None).await else {
        return;
    };
    let (token, _, _) = s.register("secret@example.com").await;
    assert_eq!(s.call(GET, "/me", Some(&token), None).await.status(), 200);
    let s = s.restart().await;
    assert_eq!(
        s.call(GET, "/me", Some(&token), None).await.status(),
        200,
        "tokens survive a restart"
    );
}
