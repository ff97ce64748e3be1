//! Credentials that can be trusted and event streams that cannot be hoarded:
//! API keys revoked by a password change, expiring and scoped; unknown keys
//! negatively cached; event-stream tickets; streams ended when their
//! credential stops working; stream caps.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::common::{assert_error, assert_error_response, start, start_with, Backend, Server};
use crate::{GET, POST};

backend_tests!(
    password_change_stops_keys_tokens_and_streams,
    key_expiry,
    scopes_allow_and_refuse,
    tickets_work_once_for_one_model_and_expire,
    streams_end_when_their_credential_does,
    stream_caps,
    unknown_key_flood_reads_the_store_once_per_key,
);

/// Creates an API key with `body`; returns (key, id).
pub(crate) async fn key(s: &Server, token: &str, body: Value) -> (String, String) {
    let (st, k) = s.json(POST, "/api-keys", Some(token), Some(body)).await;
    assert_eq!(st, 201, "{k}");
    (
        k["key"].as_str().unwrap().to_owned(),
        k["id"].as_str().unwrap().to_owned(),
    )
}

/// Opens `model`'s event stream with a bearer credential.
async fn stream(s: &Server, model: &str, credential: &str) -> Response {
    s.http
        .get(s.url(&format!("/models/{model}/events")))
        .bearer_auth(credential)
        .send()
        .await
        .unwrap()
}

/// A ticket for `model`'s stream.
async fn ticket(s: &Server, model: &str, credential: &str) -> String {
    let (st, t) = s
        .json(
            POST,
            &format!("/models/{model}/events/ticket"),
            Some(credential),
            None,
        )
        .await;
    assert_eq!(st, 200, "{t}");
    t["ticket"].as_str().unwrap().to_owned()
}

/// Opens `model`'s stream with `ticket` (no header).
async fn stream_with_ticket(s: &Server, model: &str, ticket: &str) -> Response {
    s.http
        .get(s.url(&format!("/models/{model}/events?ticket={ticket}")))
        .send()
        .await
        .unwrap()
}

/// Reads a stream to its end (within `within`); returns what it sent.
async fn read_to_end(mut r: Response, within: Duration) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, r.chunk()).await {
            Err(_) => panic!("the stream did not end within {within:?}; got {text:?}"),
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            Ok(Ok(None)) | Ok(Err(_)) => return text,
        }
    }
}

/// Asserts the stream stays open for `d` (no end, no EOF).
async fn still_open(r: &mut Response, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, r.chunk()).await {
            Err(_) => return,
            Ok(Ok(Some(c))) => {
                let t = String::from_utf8_lossy(&c);
                assert!(!t.contains("event: end"), "ended early: {t}");
            }
            Ok(other) => panic!("the stream closed early: {other:?}"),
        }
    }
}

async fn password_change_stops_keys_tokens_and_streams(b: Backend) {
    let Some(s) = start_with(b, "pwstops", |c| {
        c.event_recheck = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let (token, _, mid) = s.register("pw-keys@example.com").await;
    let (old_key, _) = key(&s, &token, json!({"name": "before"})).await;
    assert_eq!(s.call(GET, "/me", Some(&old_key), None).await.status(), 200);
    let by_key = stream(&s, &mid, &old_key).await;
    assert_eq!(by_key.status(), 200);
    let t = ticket(&s, &mid, &token).await;
    let mut by_ticket = stream_with_ticket(&s, &mid, &t).await;
    assert_eq!(by_ticket.status(), 200);
    still_open(&mut by_ticket, Duration::from_millis(500)).await;

    let (st, v) = s
        .json(POST, "/me/password", Some(&token), Some(json!({"current_password": "correct horse battery", "new_password": "a brand new password"})))
        .await;
    assert_eq!(st, 200, "{v}");
    let new_token = v["access_token"].as_str().unwrap().to_owned();
    let (st, v) = s.json(GET, "/me", Some(&old_key), None).await;
    assert_error(st, &v, 401, "unauthorized");
    let (st, v) = s.json(GET, "/me", Some(&token), None).await;
    assert_error(st, &v, 401, "unauthorized");
    for r in [by_key, by_ticket] {
        let text = read_to_end(r, Duration::from_secs(5)).await;
        assert!(text.contains("event: end"), "{text}");
        assert!(text.contains("credential_revoked"), "{text}");
    }
    // The key is gone; a key made after the change (even in the same second) works.
    let (_, list) = s.json(GET, "/api-keys", Some(&new_token), None).await;
    assert_eq!(list, json!([]));
    let (new_key, _) = key(&s, &new_token, json!({"name": "after"})).await;
    assert_eq!(s.call(GET, "/me", Some(&new_key), None).await.status(), 200);
    let mut fresh = stream(&s, &mid, &new_key).await;
    assert_eq!(fresh.status(), 200);
    still_open(&mut fresh, Duration::from_millis(600)).await;
}

async fn key_expiry(b: Backend) {
    let Some(s) = start(b, "keyexpiry").await else {
        return;
    };
    let (token, _, _) = s.register("expiry@example.com").await;
    for (body, field) in [
        (
            json!({"name": "k", "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"name": "k", "expires_in_days": 3651}),
            "expires_in_days",
        ),
        (
            json!({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "k", "expires_at": "2030-02-30T00:00:00Z"}),
            "expires_at",
        ),
        (json!({"name": "k", "expires_at": "tomorrow"}), "expires_at"),
        (
            json!({"name": "k", "expires_in_days": 3, "expires_at": "2030-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ] {
        let (st, v) = s.json(POST, "/api-keys", Some(&token), Some(body)).await;
        assert_error(st, &v, 422, "invalid_field");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{v}"
        );
    }
    let (st, k) = s
        .json(
            POST,
            "/api-keys",
            Some(&token),
            Some(json!({"name": "month", "expires_in_days": 30})),
        )
        .await;
    assert_eq!(st, 201, "{k}");
    assert!(k["expires_at"].is_string(), "{k}");
    // One that expires in two seconds: works, then 401.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = qlearn_core::tenancy::rfc3339(now + 2);
    let (short, _) = key(&s, &token, json!({"name": "short", "expires_at": at})).await;
    assert_eq!(s.call(GET, "/me", Some(&short), None).await.status(), 200);
    let listed = |list: &Value, name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .cloned()
            .unwrap()
    };
    let (_, list) = s.json(GET, "/api-keys", Some(&token), None).await;
    assert_eq!(listed(&list, "short")["expires_at"], at.as_str(), "{list}");
    assert_eq!(listed(&list, "short")["active"], true, "{list}");
    // Unusable from its expiry second on: wait for exactly that, on the
    // clock the server reads too.
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    while unix() < now + 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, v) = s.json(GET, "/me", Some(&short), None).await;
    assert_error(st, &v, 401, "unauthorized");
    let (_, list) = s.json(GET, "/api-keys", Some(&token), None).await;
    assert_eq!(listed(&list, "short")["active"], false, "{list}");
    assert_eq!(listed(&list, "month")["active"], true, "{list}");
    assert_eq!(
        listed(&list, "month")["scope"],
        "full",
        "the default scope: {list}"
    );
}

async fn scopes_allow_and_refuse(b: Backend) {
    let Some(s) = start(b, "scopes").await else {
        return;
    };
    let (token, uid, mid) = s.register("scopes@example.com").await;
    let (st, v) = s
        .json(
            POST,
            "/api-keys",
            Some(&token),
            Some(json!({"name": "k", "scope": "admin"})),
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s
        .json(
            POST,
            "/api-keys",
            Some(&token),
            Some(json!({"name": "k", "scope": "root"})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    let mut keys = Vec::new();
    for scope in ["read", "engine", "full"] {
        let (k, _) = key(&s, &token, json!({"name": scope, "scope": scope})).await;
        keys.push((scope, k));
    }
    let (_, list) = s.json(GET, "/api-keys", Some(&token), None).await;
    for k in list.as_array().unwrap() {
        assert_eq!(k["scope"], k["name"], "{list}");
    }

    let export = format!("/models/{mid}/export");
    let ticket_path = format!("/models/{mid}/events/ticket");
    let model = format!("/models/{mid}");
    let status = format!("/status/{mid}");
    let predict = json!({"model_id": mid, "state": "s"});
    let update =
        json!({"model_id": mid, "state": "s", "action": 0, "reward": 1.0, "next_state": "t"});
    // (method, path, body, the narrowest scope allowed)
    let routes: Vec<(Method, String, Option<Value>, &str)> = vec![
        (GET, "/me".into(), None, "read"),
        (GET, "/models".into(), None, "read"),
        (GET, model.clone(), None, "read"),
        (GET, status, None, "read"),
        (GET, "/dashboard".into(), None, "read"),
        (GET, "/api-keys".into(), None, "read"),
        (POST, ticket_path, None, "read"),
        (POST, "/predict".into(), Some(predict), "engine"),
        (POST, "/update".into(), Some(update.clone()), "engine"),
        (
            POST,
            "/update/batch".into(),
            Some(json!({"model_id": mid, "experiences": [update]})),
            "engine",
        ),
        (GET, export, None, "engine"),
        (POST, "/models/import".into(), Some(json!({})), "engine"),
        (
            Method::PATCH,
            model.clone(),
            Some(json!({"name": "renamed"})),
            "full",
        ),
        (
            POST,
            "/models".into(),
            Some(json!({"name": "n", "n_actions": 2})),
            "full",
        ),
        (
            POST,
            "/api-keys".into(),
            Some(json!({"name": "child", "scope": "read"})),
            "full",
        ),
        (
            Method::PATCH,
            format!("/admin/users/{uid}"),
            Some(json!({"tier": "pro"})),
            "admin",
        ),
    ];
    let rank = |s: &str| {
        ["read", "engine", "full", "admin"]
            .iter()
            .position(|x| *x == s)
    };
    for (scope, k) in &keys {
        for (method, path, body, needs) in &routes {
            let (st, v) = s.json(method.clone(), path, Some(k), body.clone()).await;
            let refused = v["error"]["code"] == "insufficient_scope";
            if rank(scope) >= rank(needs) {
                assert!(!refused, "{scope} key on {method} {path}: {st} {v}");
                assert!(
                    st.as_u16() < 500,
                    "{scope} key on {method} {path}: {st} {v}"
                );
            } else {
                assert_error(st, &v, 403, "insufficient_scope");
                let msg = v["error"]["message"].as_str().unwrap();
                assert!(msg.contains(&format!("`{needs}`")), "{msg}");
            }
        }
    }
    // The JWT may do everything its user may (the admin route: 403 for the role).
    let (st, v) = s
        .json(
            Method::PATCH,
            &format!("/admin/users/{uid}"),
            Some(&token),
            Some(json!({"tier": "pro"})),
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
    let (st, _) = s.json(Method::DELETE, &model, Some(&keys[1].1), None).await;
    assert_eq!(st.as_u16(), 403, "an engine key cannot delete a model");
    let (st, _) = s.json(Method::DELETE, &model, Some(&keys[2].1), None).await;
    assert_eq!(st.as_u16(), 204, "a full key can");
}

async fn tickets_work_once_for_one_model_and_expire(b: Backend) {
    let Some(s) = start_with(b, "tickets", |c| {
        c.event_ticket_ttl = Duration::from_millis(1500);
    })
    .await
    else {
        return;
    };
    let (token, _, mid) = s.register("tickets@example.com").await;
    let other = s
        .create_model(&token, json!({"name": "other", "n_actions": 2}))
        .await;
    let (bob, _, bob_model) = s.register("bob-tickets@example.com").await;

    // The long-lived token in the URL is refused, clearly.
    let r = s
        .http
        .get(s.url(&format!("/models/{mid}/events?access_token={token}")))
        .send()
        .await
        .unwrap();
    let st = r.status();
    let v: Value = r.json().await.unwrap();
    assert_error(st, &v, 400, "credential_in_url");
    assert!(v["error"]["message"].as_str().unwrap().contains("ticket"));

    // Once.
    let t = ticket(&s, &mid, &token).await;
    let first = stream_with_ticket(&s, &mid, &t).await;
    assert_eq!(first.status(), 200);
    let again = stream_with_ticket(&s, &mid, &t).await;
    assert_eq!(again.status(), 401, "a used ticket");
    drop(first);
    // Not for another model (and spent by the attempt).
    let t = ticket(&s, &mid, &token).await;
    assert_eq!(stream_with_ticket(&s, &other, &t).await.status(), 401);
    assert_eq!(stream_with_ticket(&s, &mid, &t).await.status(), 401);
    // Not for another user's model: no ticket at all.
    let (st, v) = s
        .json(
            POST,
            &format!("/models/{bob_model}/events/ticket"),
            Some(&token),
            None,
        )
        .await;
    assert_error(st, &v, 404, "not_found");
    let bob_ticket = ticket(&s, &bob_model, &bob).await;
    assert_eq!(
        stream_with_ticket(&s, &mid, &bob_ticket).await.status(),
        401
    );
    // Not after it expires.
    let t = ticket(&s, &mid, &token).await;
    assert_expired_after_probe(&s, &mid, &token, &t, Duration::from_millis(1500)).await;
    // Made-up tickets are refused.
    assert_eq!(
        stream_with_ticket(&s, &mid, "not-a-ticket").await.status(),
        401
    );
    // The header keeps working for clients that can send it.
    assert_eq!(stream(&s, &mid, &token).await.status(), 200);
}

/// Waits until `t` (a ticket of `token`'s, issued just before, valid for
/// `ttl`) must have expired, by the server's own word rather than a guessed
/// sleep, then asserts it is refused. Probes are tickets issued after `t`
/// (so they expire no earlier; `t` plus them stay within the 8 a user may
/// hold), spent one by one (a stream opened with one is closed at once)
/// until one is refused: then `t` is past its expiry too. A probe refused
/// sooner than `ttl` after it was asked for, or none refused before they
/// run out (about 2 x `ttl`), fails the test.
async fn assert_expired_after_probe(s: &Server, mid: &str, token: &str, t: &str, ttl: Duration) {
    let asked = std::time::Instant::now();
    let mut probes = Vec::new();
    for _ in 0..6 {
        probes.push(ticket(s, mid, token).await);
    }
    for p in &probes {
        tokio::time::sleep(ttl / 3).await;
        let r = stream_with_ticket(s, mid, p).await;
        match r.status().as_u16() {
            200 => drop(r),
            401 => {
                assert!(
                    asked.elapsed() >= ttl,
                    "a probe was refused {:?} after it was issued, before its {ttl:?}",
                    asked.elapsed()
                );
                assert_eq!(stream_with_ticket(s, mid, t).await.status(), 401);
                return;
            }
            other => panic!("a probe ticket got {other}"),
        }
    }
    panic!(
        "no ticket expired {:?} after it was issued (valid for {ttl:?})",
        asked.elapsed()
    );
}

async fn streams_end_when_their_credential_does(b: Backend) {
    let Some(s) = start_with(b, "streamend", |c| {
        c.event_recheck = Duration::from_millis(200);
        c.token_ttl = Duration::from_secs(3);
    })
    .await
    else {
        return;
    };
    let (token, _, mid) = s.register("streamend@example.com").await;
    // Token expiry (3 s in whole seconds, so 2 to 3 s from now; checked every 200 ms).
    let t = ticket(&s, &mid, &token).await;
    let by_token = stream_with_ticket(&s, &mid, &t).await;
    assert_eq!(by_token.status(), 200);
    let started = std::time::Instant::now();
    let text = read_to_end(by_token, Duration::from_secs(12)).await;
    assert!(text.contains("credential_revoked"), "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "ended too early: {:?}",
        started.elapsed()
    );

    // Key deletion, and key expiry.
    let (_, fresh) = {
        let (st, v) = s
            .json(
                POST,
                "/login",
                None,
                Some(
                    json!({"email": "streamend@example.com", "password": "correct horse battery"}),
                ),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        (st, v["access_token"].as_str().unwrap().to_owned())
    };
    let (k, kid) = key(&s, &fresh, json!({"name": "deleted"})).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = qlearn_core::tenancy::rfc3339(now + 3);
    let (short, _) = key(&s, &fresh, json!({"name": "short", "expires_at": at})).await;
    let mut by_key = stream(&s, &mid, &k).await;
    assert_eq!(by_key.status(), 200);
    let by_short = stream(&s, &mid, &short).await;
    assert_eq!(by_short.status(), 200);
    still_open(&mut by_key, Duration::from_millis(500)).await;
    let r = s
        .call(
            Method::DELETE,
            &format!("/api-keys/{kid}"),
            Some(&short),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    let text = read_to_end(by_key, Duration::from_secs(3)).await;
    assert!(text.contains("credential_revoked"), "{text}");
    let text = read_to_end(by_short, Duration::from_secs(6)).await;
    assert!(text.contains("credential_revoked"), "{text}");
}

async fn stream_caps(b: Backend) {
    let Some(s) = start_with(b, "streamcaps", |c| {
        c.limits.free.max_event_streams = 3;
        c.max_event_streams_per_model = 2;
    })
    .await
    else {
        return;
    };
    let (token, _, m1) = s.register("caps@example.com").await;
    let m2 = s
        .create_model(&token, json!({"name": "m2", "n_actions": 2}))
        .await;
    let a = stream(&s, &m1, &token).await;
    let b1 = stream(&s, &m1, &token).await;
    assert_eq!((a.status().as_u16(), b1.status().as_u16()), (200, 200));
    // The model's cap.
    let r = stream(&s, &m1, &token).await;
    let v = assert_error_response(r, 429, "too_many_streams").await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("model"),
        "{v}"
    );
    let c = stream(&s, &m2, &token).await;
    assert_eq!(c.status(), 200);
    // The user's cap (tier): also for a ticket.
    let r = stream(&s, &m2, &token).await;
    let v = assert_error_response(r, 429, "too_many_streams").await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("tier"),
        "{v}"
    );
    let t = ticket(&s, &m2, &token).await;
    assert_eq!(stream_with_ticket(&s, &m2, &t).await.status(), 429);
    // One closes: accepted again.
    drop(c);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = stream(&s, &m2, &token).await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed stream frees its place"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((a, b1));
}

/// `qlearn_api_key_lookups_total` from `/metrics`.
pub(crate) async fn key_lookups(s: &Server) -> u64 {
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("qlearn_api_key_lookups_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the lookups counter")
}

async fn unknown_key_flood_reads_the_store_once_per_key(b: Backend) {
    let Some(s) = start(b, "keyflood").await else {
        return;
    };
    let (token, _, _) = s.register("flood@example.com").await;
    let before = key_lookups(&s).await;
    let fakes: Vec<String> = (0..5)
        .map(|i| format!("qlk_{}{i}", "x".repeat(42)))
        .collect();
    for f in &fakes {
        assert_eq!(s.call(GET, "/me", Some(f), None).await.status(), 401);
    }
    let mut calls = Vec::new();
    // 40 at once (under the per-address connection cap of 64).
    for _ in 0..8 {
        for f in &fakes {
            let (http, url, f) = (s.http.clone(), s.url("/me"), f.clone());
            calls.push(tokio::spawn(async move {
                http.get(url).bearer_auth(f).send().await.unwrap().status()
            }));
        }
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), 401);
    }
    assert_eq!(
        key_lookups(&s).await - before,
        5,
        "one store read per unknown key"
    );
    // A real key created meanwhile is not hidden by the cache.
    let (real, _) = key(&s, &token, json!({"name": "real"})).await;
    assert_eq!(s.call(GET, "/me", Some(&real), None).await.status(), 200);
}
