//! Several instances on one PostgreSQL schema (issue 13): a change made
//! through one instance takes effect on the other at once (its caches are
//! dropped by the change feed, not after their lifetime), and an update
//! made through one reaches an event stream opened on the other.
//!
//! Each test starts two in-process servers (`saas_host::run`) on one
//! schema, with an authentication cache lifetime of a minute: anything
//! slower than the feed would fail the short polls below.

mod common;

use std::time::{Duration, Instant};

use common::{start_beside, start_with, Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;

/// The longest a change may take to reach the other instance here (it
/// takes milliseconds; the caches would hold it for a minute).
const AT_ONCE: Duration = Duration::from_secs(2);

/// Two instances on one fresh schema, or `None` (skipped) without PostgreSQL.
async fn two(test: &str) -> Option<(Server, Server)> {
    let a = start_with(Backend::Postgres, test, |c| {
        c.auth_cache_ttl = Duration::from_secs(60);
    })
    .await?;
    let b = start_beside(&a).await;
    Some((a, b))
}

/// Polls `path` on `s` with `token` until it answers `want`; the time it
/// took, or a failure after [`AT_ONCE`].
async fn until_status(s: &Server, token: &str, path: &str, want: u16) -> Duration {
    let t0 = Instant::now();
    loop {
        let got = s.call(GET, path, Some(token), None).await.status().as_u16();
        if got == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < AT_ONCE,
            "{path} still answers {got}, not {want}, after {AT_ONCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_reach_the_other_instance_at_once() {
    let Some((a, b)) = two("revoke").await else {
        return;
    };
    let (token, _, _) = a.register("rev@example.com").await;
    let (st, k) = a
        .json(POST, "/api-keys", Some(&token), Some(json!({"name": "k"})))
        .await;
    assert_eq!(st, 201, "{k}");
    let (key, key_id) = (k["key"].as_str().unwrap(), k["id"].as_str().unwrap());
    // B authenticates both (and caches them).
    assert_eq!(b.call(GET, "/me", Some(key), None).await.status(), 200);
    assert_eq!(b.call(GET, "/me", Some(&token), None).await.status(), 200);
    // The key deleted through A stops working on B.
    let path = format!("/api-keys/{key_id}");
    assert_eq!(
        a.call(DELETE, &path, Some(&token), None).await.status(),
        204
    );
    let took = until_status(&b, key, "/me", 401).await;
    eprintln!("key deletion on A reached B in {took:?}");
    // The password changed through A revokes the old token on B.
    let body = json!({"current_password": "correct horse battery", "new_password": "another good passphrase"});
    let (st, v) = a.json(POST, "/me/password", Some(&token), Some(body)).await;
    assert_eq!(st, 200, "{v}");
    let took = until_status(&b, &token, "/me", 401).await;
    eprintln!("password change on A reached B in {took:?}");
    let fresh = v["access_token"].as_str().unwrap();
    assert_eq!(b.call(GET, "/me", Some(fresh), None).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn model_changes_reach_the_other_instance_at_once() {
    let Some((a, b)) = two("modelchange").await else {
        return;
    };
    let (token, _, _) = a.register("mc@example.com").await;
    let mid = a
        .create_model(
            &token,
            json!({"name": "m", "n_actions": 2, "action_names": ["left", "right"], "epsilon": 0.0}),
        )
        .await;
    let predict = json!({"model_id": mid, "state": [1], "explore": false});
    let name = |v: &Value| v["action_name"].as_str().map(str::to_owned);
    // B answers with the names (and caches them).
    let (st, p) = b
        .json(POST, "/predict", Some(&token), Some(predict.clone()))
        .await;
    assert_eq!(st, 200, "{p}");
    assert!(matches!(name(&p).as_deref(), Some("left" | "right")), "{p}");
    let patch = json!({"action_names": ["west", "east"]});
    let (st, v) = a
        .json(PATCH, &format!("/models/{mid}"), Some(&token), Some(patch))
        .await;
    assert_eq!(st, 200, "{v}");
    let t0 = Instant::now();
    loop {
        let (_, p) = b
            .json(POST, "/predict", Some(&token), Some(predict.clone()))
            .await;
        if matches!(name(&p).as_deref(), Some("west" | "east")) {
            break;
        }
        assert!(t0.elapsed() < AT_ONCE, "B still names the action {p}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("model change on A reached B in {:?}", t0.elapsed());
    // Deleted through A: gone on B.
    let path = format!("/models/{mid}");
    assert_eq!(
        a.call(DELETE, &path, Some(&token), None).await.status(),
        204
    );
    let (st, _) = b.json(POST, "/predict", Some(&token), Some(predict)).await;
    assert_eq!(st, 404);
}

/// Reads `stream` until it holds `n` complete `update` events, or fails
/// after `wait`; their data.
async fn read_events(stream: &mut reqwest::Response, n: usize, wait: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut text = String::new();
    loop {
        let events: Vec<Value> = text
            .split("\n\n")
            .filter(|f| f.starts_with("event: update"))
            .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        if events.len() >= n {
            return events;
        }
        match tokio::time::timeout_at(deadline, stream.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            _ => return events,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_on_one_instance_reach_a_stream_on_the_other() {
    let Some((a, b)) = two("events").await else {
        return;
    };
    let (token, _, mid) = a.register("ev@example.com").await;
    let mut stream = b
        .http
        .get(b.url(&format!("/models/{mid}/events")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with(':'));
    let update = |i: i64| json!({"model_id": mid, "state": [i], "action": 1, "reward": 1.0, "next_state": [i + 1], "done": false});
    // The stream was announced before it answered; A hears of it within
    // the notice delay. Every update after that reaches B, in order.
    let t0 = Instant::now();
    let mut i = 0;
    loop {
        let (st, v) = a.json(POST, "/update", Some(&token), Some(update(i))).await;
        assert_eq!(st, 200, "{v}");
        i += 1;
        if !read_events(&mut stream, 1, Duration::from_millis(50))
            .await
            .is_empty()
        {
            break;
        }
        assert!(
            t0.elapsed() < AT_ONCE,
            "no event on B after {i} updates on A"
        );
    }
    eprintln!(
        "the stream on B got A's updates {:?} after it opened ({i} updates)",
        t0.elapsed()
    );
    let start = i;
    for j in start..start + 5 {
        let (st, _) = a.json(POST, "/update", Some(&token), Some(update(j))).await;
        assert_eq!(st, 200);
    }
    let batch = json!({"model_id": mid, "experiences": [update(100), update(101)]});
    let (st, v) = a
        .json(POST, "/update/batch", Some(&token), Some(batch))
        .await;
    assert_eq!(st, 200, "{v}");
    let events = read_events(&mut stream, 7, AT_ONCE).await;
    let states: Vec<Value> = events.iter().map(|e| e["state"].clone()).collect();
    let want: Vec<Value> = (start..start + 5)
        .chain([100, 101])
        .map(|j| json!([j]))
        .collect();
    assert_eq!(states, want, "{events:?}");
    let counts: Vec<u64> = events
        .iter()
        .map(|e| e["updates"].as_u64().unwrap())
        .collect();
    let n = u64::try_from(start).unwrap();
    assert_eq!(counts, (n + 1..=n + 7).collect::<Vec<u64>>());
    // B's own updates still reach it once (not twice through the feed).
    let (st, _) = b
        .json(POST, "/update", Some(&token), Some(update(200)))
        .await;
    assert_eq!(st, 200);
    let more = read_events(&mut stream, 2, Duration::from_millis(500)).await;
    assert_eq!(more.len(), 1, "{more:?}");
    assert_eq!(more[0]["state"], json!([200]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_per_second_limit_holds_across_instances() {
    // The free tier's defaults: 5 requests/s, burst 10 (leases of 1).
    let Some(a) = start_with(Backend::Postgres, "ratelimit", |c| {
        c.limits.free.rate_per_second = 5;
        c.limits.free.burst = 10;
    })
    .await
    else {
        return;
    };
    let b = start_beside(&a).await;
    let (token, _, _) = a.register("rl@example.com").await;
    // 8 clients, 4 on each instance, for about 2 s.
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for i in 0..8 {
        let (base, http, token) = {
            let s = if i % 2 == 0 { &a } else { &b };
            (s.base.clone(), s.http.clone(), token.clone())
        };
        clients.push(tokio::spawn(async move {
            let (mut ok, mut limited) = (0u32, 0u32);
            while t0.elapsed() < Duration::from_secs(2) {
                let r = http
                    .get(format!("{base}/me"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => ok += 1,
                    429 => limited += 1,
                    other => panic!("status {other}"),
                }
            }
            (ok, limited)
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for c in clients {
        let (o, l) = c.await.unwrap();
        ok += o;
        limited += l;
    }
    let secs = t0.elapsed().as_secs_f64();
    // One bucket admits at most burst + rate × time; leases of 1 add nothing.
    let bound = 10.0 + 5.0 * secs;
    eprintln!(
        "two instances admitted {ok} of {} requests in {secs:.2} s (bound {bound:.1})",
        ok + limited
    );
    assert!(
        f64::from(ok) <= bound,
        "{ok} admitted, more than {bound:.1}"
    );
    assert!(ok >= 10, "the burst is admitted: {ok}");
    assert!(limited > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_throttles_hold_across_instances() {
    let Some((a, b)) = two("loginthrottle").await else {
        return;
    };
    a.register("lt@example.com").await;
    let body = json!({"email": "lt@example.com", "password": "not the password at all"});
    let mut statuses = Vec::new();
    for i in 0..10 {
        let s = if i % 2 == 0 { &a } else { &b };
        let (st, _) = s.json(POST, "/login", None, Some(body.clone())).await;
        statuses.push(st.as_u16());
    }
    // 5 failed logins per account and address, counted once for both.
    let mut want = vec![401; 5];
    want.extend([429; 5]);
    assert_eq!(statuses, want);
    // The right password is refused too now (the slot is taken), on both.
    let good = json!({"email": "lt@example.com", "password": "correct horse battery"});
    for s in [&a, &b] {
        let (st, _) = s.json(POST, "/login", None, Some(good.clone())).await;
        assert_eq!(st, 429);
    }
}

/// Opens `model`'s event stream on `s` with the bearer `token`.
async fn open_stream(s: &Server, token: &str, model: &str) -> reqwest::Response {
    s.http
        .get(s.url(&format!("/models/{model}/events")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_from_one_instance_opens_a_stream_on_the_other_once() {
    let Some((a, b)) = two("tickets").await else {
        return;
    };
    let (token, _, mid) = a.register("tk@example.com").await;
    let path = format!("/models/{mid}/events/ticket");
    let (st, t) = a.json(POST, &path, Some(&token), None).await;
    assert_eq!(st, 200, "{t}");
    let ticket = t["ticket"].as_str().unwrap();
    let url = |s: &Server| s.url(&format!("/models/{mid}/events?ticket={ticket}"));
    let mut stream = b.http.get(url(&b)).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with(':'));
    // Used up on every instance.
    for s in [&a, &b] {
        assert_eq!(s.http.get(url(s)).send().await.unwrap().status(), 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_caps_count_the_streams_of_every_instance() {
    let Some((a, b)) = two("streamcaps").await else {
        return;
    };
    // The free tier holds 2 streams.
    let (token, _, mid) = a.register("sc@example.com").await;
    let one = open_stream(&a, &token, &mid).await;
    assert_eq!(one.status(), 200);
    let two = open_stream(&b, &token, &mid).await;
    assert_eq!(two.status(), 200);
    for s in [&a, &b] {
        let r = open_stream(s, &token, &mid).await;
        assert_eq!(r.status(), 429, "a third stream on either instance");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "too_many_streams");
    }
    // Closing the one on A frees a place for B.
    drop(one);
    let t0 = Instant::now();
    loop {
        let r = open_stream(&b, &token, &mid).await;
        if r.status() == 200 {
            break;
        }
        assert!(t0.elapsed() < AT_ONCE, "the place is not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "a closed stream's place was free again after {:?}",
        t0.elapsed()
    );
}
