//! What must cross from one instance to the other at once (the PostgreSQL
//! change feed): live events and credential revocation, with the instances
//! as separate processes and the stream passing through nginx.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::{Client, Method};
use serde_json::{json, Value};

use crate::harness::{send, Instance, Nginx};

/// Far below the 5 s cache lifetime: passing within it shows the change
/// feed at work, not the caches expiring.
const AT_ONCE: Duration = Duration::from_millis(1000);

/// The `update` events' data in what `stream` delivers within `wait`,
/// stopping once there are `n`.
async fn read_events(
    stream: &mut reqwest::Response,
    text: &mut String,
    n: usize,
    wait: Duration,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + wait;
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

/// A stream opened through nginx (on whichever instance nginx picks) gets
/// the updates made directly on each instance, so also on the other one.
pub(crate) async fn stream_sees_both_instances(
    http: &Client,
    nginx: &Nginx,
    a: &Instance,
    b: &Instance,
    token: &str,
) {
    let (s, v) = send(
        http,
        Method::POST,
        format!("{}/models", nginx.base),
        Some(token),
        Some(json!({"name": "live", "n_actions": 2})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let mid = v["id"].as_str().unwrap().to_owned();
    let mut stream = http
        .get(format!("{}/models/{mid}/events", nginx.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // nginx passes the stream unbuffered: its first comment arrives now.
    let first = tokio::time::timeout(Duration::from_secs(2), stream.chunk())
        .await
        .expect("the stream's first bytes pass nginx at once")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with(':'));
    let update = |i: i64| json!({"model_id": mid, "state": i, "action": 0, "reward": 1.0, "next_state": i, "done": true});
    // The stream is announced to the other instance before it answers; an
    // update applied before that instance heard it is not forwarded. Update
    // through A and B in pairs until both of a pair arrive.
    let mut text = String::new();
    let t0 = Instant::now();
    let mut i = 0i64;
    loop {
        for (inst, state) in [(a, i), (b, i + 1)] {
            let (s, v) = send(
                http,
                Method::POST,
                format!("{}/update", inst.base),
                Some(token),
                Some(update(state)),
            )
            .await;
            assert_eq!(s, 200, "{v}");
        }
        i += 2;
        let got = read_events(
            &mut stream,
            &mut text,
            usize::MAX,
            Duration::from_millis(50),
        )
        .await;
        let states: HashSet<i64> = got.iter().filter_map(|e| e["state"].as_i64()).collect();
        if states.contains(&(i - 2)) && states.contains(&(i - 1)) {
            break;
        }
        assert!(
            t0.elapsed() < AT_ONCE,
            "the stream has {states:?} of {i} updates"
        );
    }
    let heard = t0.elapsed();
    let seen = read_events(&mut stream, &mut text, usize::MAX, Duration::ZERO)
        .await
        .len();
    // From then on, three more on each instance all arrive, once each.
    let before = i;
    for j in before..before + 6 {
        let inst = if j % 2 == 0 { a } else { b };
        let (s, v) = send(
            http,
            Method::POST,
            format!("{}/update", inst.base),
            Some(token),
            Some(update(j)),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    let events = read_events(&mut stream, &mut text, seen + 6, AT_ONCE).await;
    let states: Vec<i64> = events.iter().filter_map(|e| e["state"].as_i64()).collect();
    let new: Vec<i64> = states.iter().copied().filter(|&s| s >= before).collect();
    let want: HashSet<i64> = (before..before + 6).collect();
    assert_eq!(
        new.iter().copied().collect::<HashSet<_>>(),
        want,
        "every update, from both instances, on the stream: {states:?}"
    );
    assert_eq!(new.len(), 6, "none twice: {states:?}");
    assert_eq!(
        states.len(),
        states.iter().collect::<HashSet<_>>().len(),
        "none twice: {states:?}"
    );
    eprintln!("scale-out: a stream through nginx got updates from both instances (both heard {heard:?} after it opened)");
}

/// An API key deleted through instance A stops working on instance B at
/// once, although B had just authenticated (and cached) it.
pub(crate) async fn revocation_crosses(
    http: &Client,
    nginx: &Nginx,
    a: &Instance,
    b: &Instance,
    token: &str,
) {
    let (s, k) = send(
        http,
        Method::POST,
        format!("{}/api-keys", a.base),
        Some(token),
        Some(json!({"name": "crossing"})),
    )
    .await;
    assert_eq!(s, 201, "{k}");
    let (key, id) = (k["key"].as_str().unwrap(), k["id"].as_str().unwrap());
    for _ in 0..3 {
        let (s, v) = send(http, Method::GET, format!("{}/me", b.base), Some(key), None).await;
        assert_eq!(s, 200, "the new key works on B: {v}");
    }
    let (s, v) = send(
        http,
        Method::DELETE,
        format!("{}/api-keys/{id}", a.base),
        Some(token),
        None,
    )
    .await;
    assert_eq!(s, 204, "{v}");
    let t0 = Instant::now();
    loop {
        let (s, _) = send(http, Method::GET, format!("{}/me", b.base), Some(key), None).await;
        if s == 401 {
            break;
        }
        assert_eq!(s, 200);
        assert!(
            t0.elapsed() < AT_ONCE,
            "the deleted key still works on B after {:?}",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "scale-out: a key deleted on A was refused on B {:?} later",
        t0.elapsed()
    );
    let (s, _) = send(
        http,
        Method::GET,
        format!("{}/me", nginx.base),
        Some(key),
        None,
    )
    .await;
    assert_eq!(s, 401, "refused through nginx too");
}
