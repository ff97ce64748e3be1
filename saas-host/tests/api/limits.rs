//! The HTTP edge: error answers, rate limits and their headers, CORS and proxies, timeouts and the connection cap.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, assert_error_response, start, start_with, Backend};
use crate::{GET, POST};

backend_tests!(
    error_cases,
    rate_limit_and_headers,
    cors_and_proxies,
    timeouts_and_connection_cap,
    tier_resource_limits,
    bulk_operations_have_their_own_bucket,
);

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
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST");
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

async fn cors_and_proxies(b: Backend) {
    let Some(s) = start_with(b, "cors", |c| {
        c.cors_origins = vec!["https://app.example.com".into()];
        // A range, as a container network is: the peer 127.0.0.1 is in it.
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
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
    // Proxies in the trusted range are skipped: the client is the last
    // untrusted hop, whichever proxy of the range appended it.
    assert_eq!(
        reg("p4@example.com", "203.0.113.3, 127.0.0.9")
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        reg("p5@example.com", "203.0.113.3, 127.0.0.10")
            .await
            .unwrap()
            .status(),
        429
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

/// Sends only the head of a request (the body never follows) and reads the
/// answer: a refusal that needs no body arrives at once.
async fn head_only(s: &crate::common::Server, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The tier's resource bounds over HTTP: states per model (403
/// state_limit_reached, nothing changed), the import size and the model
/// limit refused from the head of the request, before the body is read.
async fn tier_resource_limits(b: Backend) {
    let Some(s) = start_with(b, "resources", |c| {
        c.limits.free.max_states = Some(3);
        c.limits.free.max_import_bytes = 4096;
    })
    .await
    else {
        return;
    };
    let (token, _, mid) = s.register("res@example.com").await;
    let exp = |st: i64| json!({"state": st, "action": 0, "reward": 1.0, "next_state": st + 1});
    let (st, v) = s
        .json(
            POST,
            "/update/batch",
            Some(&token),
            Some(json!({"model_id": mid, "experiences": [exp(1), exp(2), exp(3)]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let mut body = exp(4);
    body["model_id"] = json!(mid);
    let (st, v) = s.json(POST, "/update", Some(&token), Some(body)).await;
    assert_error(st, &v, 403, "state_limit_reached");
    assert!(v["error"]["message"].as_str().unwrap().contains('3'), "{v}");
    let (_, status) = s
        .json(GET, &format!("/status/{mid}"), Some(&token), None)
        .await;
    assert_eq!(status["q_table"]["total"], 3, "{status}");
    let mut body = exp(2);
    body["model_id"] = json!(mid);
    let (st, _) = s.json(POST, "/update", Some(&token), Some(body)).await;
    assert_eq!(st, 200, "a stored state still learns at the limit");

    // Import: a 100 MiB Content-Length is refused from the head alone.
    let head = format!(
        "POST /models/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 104857600\r\n\r\n"
    );
    let answer = head_only(&s, &head).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("4096"), "names the tier's limit: {answer}");
    // A small model with more states than the tier allows.
    let mut model = qlearn_core::Model::new(qlearn_core::ModelConfig::new(2)).unwrap();
    for st in 0..5i64 {
        model
            .update(&qlearn_core::Experience::new(st, 0, 1.0, st + 1))
            .unwrap();
    }
    let r = s
        .http
        .post(s.url("/models/import"))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(model.to_bytes().unwrap())
        .send()
        .await
        .unwrap();
    let st = r.status();
    let v: Value = r.json().await.unwrap();
    assert_error(st, &v, 403, "state_limit_reached");
    // At the model limit (3 for free), an import is refused before its body.
    for name in ["two", "three"] {
        s.create_model(&token, json!({"name": name, "n_actions": 2}))
            .await;
    }
    let answer = head_only(&s, &head).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("model_limit_reached"), "{answer}");
    let (_, models) = s.json(GET, "/models", Some(&token), None).await;
    assert_eq!(models.as_array().unwrap().len(), 3);
}

/// Export, import and a reshaping PATCH share the tier's bucket of
/// whole-model operations; other calls do not use it up.
async fn bulk_operations_have_their_own_bucket(b: Backend) {
    let Some(s) = start_with(b, "bulk", |c| {
        c.limits.free.bulk_per_minute = 3;
        c.limits.free.features = qlearn_core::tenancy::Features::ALL;
    })
    .await
    else {
        return;
    };
    let (token, _, mid) = s.register("bulk@example.com").await;
    let export = format!("/models/{mid}/export");
    for _ in 0..2 {
        let r = s.call(GET, &export, Some(&token), None).await;
        assert_eq!(r.status(), 200);
    }
    // A PATCH that does not reshape is free; one that does takes the third.
    let model = format!("/models/{mid}");
    let patch = |body: Value| s.json(Method::PATCH, &model, Some(&token), Some(body));
    for _ in 0..3 {
        let (st, v) = patch(json!({"epsilon": 0.2})).await;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = patch(json!({"algorithm": "double_q_learning"})).await;
    assert_eq!(st, 200, "{v}");
    let r = s.call(GET, &export, Some(&token), None).await;
    assert_error_response(r, 429, "rate_limited").await;
    let r = s
        .call(
            Method::PATCH,
            &model,
            Some(&token),
            Some(json!({"algorithm": "q_learning"})),
        )
        .await;
    assert_error_response(r, 429, "rate_limited").await;
    // Other calls are not refused by it.
    let (st, _) = s
        .json(GET, &format!("/models/{mid}"), Some(&token), None)
        .await;
    assert_eq!(st, 200);
}
