//! Promises of the README and docs/http-api.md that a mutation run slipped
//! past (issue 19): each test here went red with the named bug put in by
//! hand. CORS exposed headers, `X-Forwarded-For` from an untrusted peer,
//! expired JWTs, the monthly `RateLimit` values and the dashboard's
//! `resets_at` computed from the clock, a PATCHed seed reseeding, the event
//! stream's `lagged` event.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, start_with, Backend, Server};
use crate::{GET, POST};

backend_tests!(
    cors_exposes_the_rate_limit_headers,
    forwarded_for_is_ignored_from_an_untrusted_peer,
    expired_tokens_are_refused,
    monthly_rate_limit_values_follow_the_clock,
    a_patched_seed_reseeds,
    a_batch_over_the_quota_is_refused_whole,
    an_oversized_body_is_drained_before_the_413,
    a_body_of_exactly_the_limit_is_read,
    a_graceful_stop_finishes_the_request_in_flight,
    a_slow_subscriber_is_told_what_it_missed,
);

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Days since 1970-01-01 to (year, month), Howard Hinnant's civil_from_days,
/// written out here so the expected values do not come from the server's
/// own calendar code.
fn year_month(unix: i64) -> (i64, i64) {
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m)
}

/// Unix time of 00:00 UTC on the 1st of (year, month).
fn month_start(y: i64, m: i64) -> i64 {
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400
}

/// (start of this month, start of the next) for `unix`.
fn month_bounds(unix: i64) -> (i64, i64) {
    let (y, m) = year_month(unix);
    let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (month_start(y, m), month_start(next.0, next.1))
}

#[test]
fn month_bounds_by_hand() {
    // 2026-12-05 and 2024-02-10 (leap year).
    assert_eq!(month_bounds(1_796_428_800), (1_796_083_200, 1_798_761_600));
    assert_eq!(month_bounds(1_707_523_200), (1_706_745_600, 1_709_251_200));
}

/// The value of `key=` in one item of a structured header.
fn param(item: &str, key: &str) -> Option<i64> {
    item.split(';')
        .find_map(|p| p.trim().strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

fn monthly_item(header: &str) -> &str {
    header
        .split(", ")
        .find(|i| i.starts_with("\"monthly\""))
        .unwrap_or_else(|| panic!("no monthly item in {header}"))
}

async fn cors_exposes_the_rate_limit_headers(b: Backend) {
    let Some(s) = start_with(b, "corsexpose", |c| {
        c.cors_origins = vec!["https://app.example.com".into()];
    })
    .await
    else {
        return;
    };
    let (token, _, _) = s.register("cors@example.com").await;
    for origin in ["https://app.example.com", "https://evil.example.com"] {
        let r = s
            .http
            .get(s.url("/me"))
            .bearer_auth(&token)
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers();
        if origin.starts_with("https://app") {
            assert_eq!(h["access-control-allow-origin"], origin);
            // Without it a browser page cannot read the limits it is told to honour.
            assert_eq!(
                h["access-control-expose-headers"],
                "RateLimit, RateLimit-Policy, Retry-After"
            );
        } else {
            assert!(h.get("access-control-allow-origin").is_none());
            assert!(h.get("access-control-expose-headers").is_none());
        }
        assert_eq!(h["vary"], "Origin");
    }
}

async fn forwarded_for_is_ignored_from_an_untrusted_peer(b: Backend) {
    // Only a range the test's peer (127.0.0.1) is not in is trusted.
    let Some(s) = start_with(b, "xffuntrusted", |c| {
        c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        c.register_per_address = saas_host::config::Throttle::per(1, 3600);
    })
    .await
    else {
        return;
    };
    let reg = |email: &str, xff: &str| {
        s.http
            .post(s.url("/register"))
            .header("x-forwarded-for", xff)
            .json(&json!({"email": email, "password": "long enough"}))
            .send()
    };
    assert_eq!(
        reg("u1@example.com", "203.0.113.1").await.unwrap().status(),
        201
    );
    // A different claimed client from the same untrusted peer is the same
    // address: the per-address throttle holds.
    let r = reg("u2@example.com", "203.0.113.2").await.unwrap();
    assert_eq!(r.status(), 429);
    let r = reg("u3@example.com", "198.51.100.7, 10.1.2.3")
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

async fn expired_tokens_are_refused(b: Backend) {
    let Some(s) = start_with(b, "jwtexpiry", |c| {
        c.token_ttl = std::time::Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let (token, _, _) = s.register("exp@example.com").await;
    // Used while valid (so the server has verified and remembered it)...
    assert_eq!(s.call(GET, "/me", Some(&token), None).await.status(), 200);
    // ... and the same claims re-signed with the server's key, but expired
    // a minute ago (beyond the 5 s leeway): never seen by the server.
    let secret = test_secret();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_exp = false;
    v.required_spec_claims.clear();
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    let mut claims = jsonwebtoken::decode::<Value>(&token, &key, &v)
        .unwrap()
        .claims;
    let now = now_unix();
    claims["exp"] = json!(now - 60);
    let enc = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let expired = jsonwebtoken::encode(&header, &claims, &enc).unwrap();
    // The forgery check itself: the same claims with a future exp pass.
    claims["exp"] = json!(now + 600);
    let fresh = jsonwebtoken::encode(&header, &claims, &enc).unwrap();
    assert_eq!(s.call(GET, "/me", Some(&fresh), None).await.status(), 200);
    let (st, body) = s.json(GET, "/me", Some(&expired), None).await;
    assert_error(st, &body, 401, "unauthorized");
    // The remembered token stops working once its exp (1 s after it was
    // issued) has passed: wait for exactly that, on the clock the server
    // reads too.
    let exp = jsonwebtoken::decode::<Value>(&token, &key, &v)
        .unwrap()
        .claims["exp"]
        .as_i64()
        .expect("exp");
    while now_unix() < exp {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (st, body) = s.json(GET, "/me", Some(&token), None).await;
    assert_error(st, &body, 401, "unauthorized");
}

fn test_secret() -> String {
    crate::common::test_config(String::new())
        .secret_key
        .expect("the test configuration sets SECRET_KEY")
}

async fn monthly_rate_limit_values_follow_the_clock(b: Backend) {
    let Some(s) = start_with(b, "monthlyhdr", |c| {
        c.limits.free.monthly_calls = Some(100);
    })
    .await
    else {
        return;
    };
    let (token, _, mid) = s.register("month@example.com").await;
    let before = now_unix();
    let r = s
        .call(
            POST,
            "/predict",
            Some(&token),
            Some(json!({"model_id": mid, "state": 1})),
        )
        .await;
    let after = now_unix();
    assert_eq!(r.status(), 200);
    let policy = r.headers()["ratelimit-policy"].to_str().unwrap().to_owned();
    let state = r.headers()["ratelimit"].to_str().unwrap().to_owned();
    let (start_b, next_b) = month_bounds(before);
    let (_, next_a) = month_bounds(after);
    let item = monthly_item(&policy);
    assert_eq!(param(item, "q"), Some(100), "{policy}");
    // The window is this month's length; the reset the seconds to the 1st.
    assert_eq!(param(item, "w"), Some(next_b - start_b), "{policy}");
    let item = monthly_item(&state);
    assert_eq!(param(item, "r"), Some(99), "{state}");
    let t = param(item, "t").unwrap_or_else(|| panic!("{state}"));
    assert!(
        (next_a - after..=next_b - before).contains(&t),
        "t={t}, expected {}..={} ({state})",
        next_a - after,
        next_b - before
    );
    // The dashboard states the same reset instant, as RFC 3339.
    let (st, d) = s.json(GET, "/dashboard", Some(&token), None).await;
    assert_eq!(st, 200);
    let (y, m) = year_month(next_a);
    let want = format!("{y:04}-{m:02}-01T00:00:00Z");
    assert_eq!(d["usage"]["resets_at"], want, "{d}");
    assert_eq!(d["usage"]["remaining"], 99, "{d}");
}

/// The actions of 24 predicts of an unseen state (uniform draws).
async fn draws(s: &Server, token: &str, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..24 {
        let body = json!({"model_id": id, "state": 5, "explore": true});
        let (st, d) = s.json(POST, "/predict", Some(token), Some(body)).await;
        assert_eq!(st, 200, "{d}");
        out.push(d["action"].clone());
    }
    out
}

async fn a_patched_seed_reseeds(b: Backend) {
    let Some(s) = start_with(b, "reseed", |c| {
        c.limits.free.max_models = Some(10);
        c.limits.free.monthly_calls = None;
    })
    .await
    else {
        return;
    };
    let (token, _, _) = s.register("seed@example.com").await;
    let create =
        |seed: u64| s.create_model(&token, json!({"name": "m", "n_actions": 4, "seed": seed}));
    let (patched, fresh5, fresh1) = (create(1).await, create(5).await, create(1).await);
    // Use the first generator a little, then give the model seed 5.
    let before = draws(&s, &token, &patched).await;
    assert_eq!(before, draws(&s, &token, &fresh1).await);
    let r = s
        .http
        .request(Method::PATCH, s.url(&format!("/models/{patched}")))
        .bearer_auth(&token)
        .json(&json!({"seed": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let after = draws(&s, &token, &patched).await;
    // From the PATCH on, it draws what a fresh model with seed 5 draws,
    // not what it would have drawn next under seed 1.
    assert_eq!(after, draws(&s, &token, &fresh5).await);
    assert_ne!(after, draws(&s, &token, &fresh1).await);
}

async fn a_batch_over_the_quota_is_refused_whole(b: Backend) {
    let Some(s) = start_with(b, "batchquota", |c| {
        c.limits.free.monthly_calls = Some(10);
    })
    .await
    else {
        return;
    };
    let (token, _, mid) = s.register("bq@example.com").await;
    for i in 0..8 {
        let body = json!({"model_id": mid, "state": i});
        assert_eq!(
            s.json(POST, "/predict", Some(&token), Some(body)).await.0,
            200
        );
    }
    let batch = |n: i64| {
        let exps: Vec<Value> = (0..n)
            .map(|i| json!({"state": [i, 7], "action": 1, "reward": 2, "next_state": [i + 1, 7]}))
            .collect();
        json!({"model_id": mid, "experiences": exps})
    };
    // Two calls left: a batch of three is refused whole, with Retry-After.
    let r = s
        .call(POST, "/update/batch", Some(&token), Some(batch(3)))
        .await;
    let v = crate::common::assert_error_response(r, 429, "quota_exceeded").await;
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("10")),
        "{v}"
    );
    let (_, st) = s
        .json(GET, &format!("/status/{mid}"), Some(&token), None)
        .await;
    assert_eq!(st["stats"]["updates"], 0, "{st}");
    assert_eq!(st["q_table"]["total"], 0, "{st}");
    let (_, d) = s.json(GET, "/dashboard", Some(&token), None).await;
    assert_eq!(d["usage"]["calls"], 8, "{d}");
    // A batch of two fits exactly.
    let (code, v) = s
        .json(POST, "/update/batch", Some(&token), Some(batch(2)))
        .await;
    assert_eq!(code, 200, "{v}");
    let (_, d) = s.json(GET, "/dashboard", Some(&token), None).await;
    assert_eq!(
        (d["usage"]["calls"].clone(), d["usage"]["remaining"].clone()),
        (json!(10), json!(0))
    );
}

/// A body of exactly the limit (64 KiB) is read, by Content-Length and
/// chunked: the limit is the most allowed, not the first refused.
async fn a_body_of_exactly_the_limit_is_read(b: Backend) {
    let Some(s) = start_with(b, "exactlimit", |_| {}).await else {
        return;
    };
    let (token, _, mid) = s.register("exact@example.com").await;
    let head = format!("{{\"model_id\": \"{mid}\", \"state\": \"");
    let exact = format!("{head}{}\"}}", "x".repeat(64 * 1024 - head.len() - 2));
    assert_eq!(exact.len(), 64 * 1024);
    for chunked in [false, true] {
        let body = if chunked {
            reqwest::Body::wrap_stream(futures_util::stream::iter(
                exact
                    .clone()
                    .into_bytes()
                    .chunks(8192)
                    .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                    .collect::<Vec<_>>(),
            ))
        } else {
            reqwest::Body::from(exact.clone())
        };
        let r = s
            .http
            .post(s.url("/predict"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
        assert_ne!(
            st, 413,
            "a body of exactly the limit (chunked: {chunked}): {v}"
        );
    }
}

/// The 413 comes after the oversized body is read to its end: the client
/// sees the answer and the connection serves the next request. (Without the
/// drain the server closes with unread bytes, so the client gets a reset
/// and never the second answer.)
async fn an_oversized_body_is_drained_before_the_413(b: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(s) = start_with(b, "drain413", |_| {}).await else {
        return;
    };
    let (token, _, mid) = s.register("drain@example.com").await;
    for chunked in [false, true] {
        let body = format!(
            "{{\"model_id\": \"{mid}\", \"state\": \"{}\"}}",
            "x".repeat(200 * 1024)
        );
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_owned()
        } else {
            format!("Content-Length: {}", body.len())
        };
        let mut req = format!(
            "POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\n{framing}\r\n\r\n"
        )
        .into_bytes();
        if chunked {
            for c in body.as_bytes().chunks(16 * 1024) {
                req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                req.extend_from_slice(c);
                req.extend_from_slice(b"\r\n");
            }
            req.extend_from_slice(b"0\r\n\r\n");
        } else {
            req.extend_from_slice(body.as_bytes());
        }
        req.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(&req).await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let answers = |g: &[u8]| String::from_utf8_lossy(g).matches("HTTP/1.1 ").count();
        while answers(&got) < 2 {
            match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                other => panic!(
                    "chunked={chunked}: connection ended ({other:?}) after {:?}",
                    String::from_utf8_lossy(&got)
                ),
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains("payload_too_large"), "{text}");
        let second = text.rfind("HTTP/1.1 ").unwrap_or(0);
        assert!(text[second..].starts_with("HTTP/1.1 200"), "{text}");
    }
}

/// How long a stop that did not wait for the request in flight would
/// still take: it gives the last tasks 2 s to let go of the store.
const STOP_WINDOW: std::time::Duration = std::time::Duration::from_secs(3);

/// A graceful stop waits (up to `shutdown_timeout`) for a request whose
/// body is still arriving: sent half before the stop (once the handler
/// reads it: the server answered `Expect: 100-continue`), half after the
/// server stopped accepting and [`STOP_WINDOW`] passed without the stop
/// finishing.
async fn a_graceful_stop_finishes_the_request_in_flight(b: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(mut s) = start_with(b, "gracefulstop", |c| {
        c.shutdown_timeout = std::time::Duration::from_secs(30);
    })
    .await
    else {
        return;
    };
    let (token, _, mid) = s.register("stop@example.com").await;
    let body =
        json!({"model_id": mid, "state": 3, "action": 1, "reward": 2, "next_state": 4}).to_string();
    let head = format!(
        "POST /update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nExpect: 100-continue\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let (first, second) = body.as_bytes().split_at(body.len() / 2);
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    // The request is in flight once its handler reads the body (hyper
    // answers `100 Continue` then).
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        match tokio::time::timeout(std::time::Duration::from_secs(10), c.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!("no 100 Continue: {other:?}"),
        }
    }
    assert!(
        got.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    c.write_all(first).await.unwrap();
    let addr = s.addr;
    let mut stopping = tokio::spawn(async move {
        let r = s.stop().await;
        (r, s)
    });
    // The stop has begun once new connections are refused.
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        tokio::task::yield_now().await;
    }
    assert!(
        tokio::time::timeout(STOP_WINDOW, &mut stopping)
            .await
            .is_err(),
        "the stop did not wait for the request"
    );
    c.write_all(second).await.unwrap();
    got.clear();
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), c.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
        if String::from_utf8_lossy(&got).contains("\"q_value\"") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "answer: {text:?}");
    assert!(text.contains("\"q_value\":0.2"), "{text}");
    let (r, _s) = stopping.await.unwrap();
    assert!(r.is_ok(), "{r:?}");
}

/// Experiences per batch and batches sent while the subscriber reads
/// nothing: with 1,024 actions each `update` frame is about 4 KiB, so the
/// 2,000 frames (8 MiB) are far more than the socket buffers, the stream's
/// queue and the model channel's 256 frames hold together.
const LAG_BATCH: usize = 500;
const LAG_BATCHES: usize = 4;

/// The `event:` frames of an SSE byte stream (chunked transfer encoding
/// puts its size lines between frames, never inside one): `(event, data)`.
fn sse_frames(raw: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(at) = rest.find("event: ") {
        rest = &rest[at + "event: ".len()..];
        let Some(end) = rest.find("\n\n") else { break };
        let (head, data) = rest[..end]
            .split_once("\ndata: ")
            .unwrap_or((&rest[..end], "null"));
        out.push((
            head.to_owned(),
            serde_json::from_str(data).unwrap_or(Value::Null),
        ));
        rest = &rest[end..];
    }
    out
}

/// Reads what the stream has sent (20 s at most; it must not end).
async fn read_some(c: &mut tokio::net::TcpStream, buf: &mut [u8]) -> usize {
    use tokio::io::AsyncReadExt;
    match tokio::time::timeout(std::time::Duration::from_secs(20), c.read(buf)).await {
        Ok(Ok(n)) if n > 0 => n,
        other => panic!("the stream ended or stalled: {other:?}"),
    }
}

/// A subscriber that falls behind gets `lagged` with the exact number of
/// events it missed, then the stream goes on: every update is either
/// received or counted as missed, and the last one arrives.
async fn a_slow_subscriber_is_told_what_it_missed(b: Backend) {
    use tokio::io::AsyncWriteExt;
    let Some(s) = start_with(b, "ssellagged", |c| {
        c.limits.free.monthly_calls = None;
    })
    .await
    else {
        return;
    };
    let (token, _, _) = s.register("lag@example.com").await;
    let mid = s
        .create_model(&token, json!({"name": "wide", "n_actions": 1024}))
        .await;
    // A subscriber with a small receive buffer that reads nothing after
    // the stream has started.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut c = sock.connect(s.addr).await.unwrap();
    let head = format!(
        "GET /models/{mid}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !String::from_utf8_lossy(&got).contains(": connected") {
        let n = read_some(&mut c, &mut buf).await;
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    got.clear();
    let total = LAG_BATCH * LAG_BATCHES;
    for _ in 0..LAG_BATCHES {
        let exps: Vec<Value> = (0..LAG_BATCH)
            .map(|i| json!({"state": i % 7, "action": i % 1024, "reward": 1, "next_state": (i + 1) % 7}))
            .collect();
        let (code, v) = s
            .json(
                POST,
                "/update/batch",
                Some(&token),
                Some(json!({"model_id": mid, "experiences": exps})),
            )
            .await;
        assert_eq!(code, 200, "{v}");
    }
    // Every update has been published; now read until the last one.
    let last_seen = |frames: &[(String, Value)]| {
        frames
            .iter()
            .rev()
            .find(|(e, _)| e == "update")
            .and_then(|(_, d)| d["updates"].as_u64())
    };
    // Frames are parsed as they complete (each ends with a blank line).
    let mut frames = Vec::new();
    while last_seen(&frames) != Some(total as u64) {
        let n = read_some(&mut c, &mut buf).await;
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(2).rposition(|w| w == b"\n\n") {
            frames.extend(sse_frames(&String::from_utf8_lossy(&got[..end + 2])));
            got.drain(..end + 2);
        }
    }
    let missed: u64 = frames
        .iter()
        .filter(|(e, _)| e == "lagged")
        .map(|(_, d)| d["missed"].as_u64().expect("lagged carries missed"))
        .sum();
    let received: Vec<u64> = frames
        .iter()
        .filter(|(e, _)| e == "update")
        .filter_map(|(_, d)| d["updates"].as_u64())
        .collect();
    assert!(
        missed > 0,
        "no lagged event although {total} events were queued unread"
    );
    assert_eq!(
        received.len() as u64 + missed,
        total as u64,
        "received {} updates and {missed} reported missed",
        received.len()
    );
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "updates out of order"
    );
}
