//! Scale-out, for real: nginx (the Debian package, running
//! `deploy/nginx.conf` itself with the upstream servers, the port and the log
//! paths substituted) in front of two `saas-host` processes on one
//! PostgreSQL schema, driven by concurrent clients through nginx:
//!
//! - a free user gets exactly 100 metered calls across both instances;
//! - updates through both instances to one model all count and give the
//!   serial result (an in-process `qlearn_core::Model` fed the same
//!   experiences), and both instances then show the same model;
//! - SIGKILL of one instance mid-load loses no acknowledged update and
//!   applies none twice while nginx fails over to the other;
//! - a POST whose upstream dies after receiving it is answered 502 and not
//!   passed to the other instance (nginx retries only idempotent requests
//!   once sent), while a GET is;
//! - a stream opened through nginx gets the updates made on either
//!   instance, and an API key deleted on one instance is refused by the
//!   other at once (the change feed; `crossing.rs`);
//! - the access log has no query strings.
//!
//! Runs whenever PostgreSQL is reachable (skips loudly otherwise, fails under
//! `QLEARN_REQUIRE_POSTGRES=1`); needs `nginx` on PATH (`deploy/check.sh`,
//! run first by `scripts/test.sh`, installs it).

#[path = "../common/mod.rs"]
mod common;
mod crossing;
mod harness;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qlearn_core::{Experience, Model, ModelConfig};
use reqwest::Client;
use serde_json::{json, Value};
use tokio::process::Command;

use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_behind_nginx_on_one_database() {
    let Some(url) = tokio::task::spawn_blocking(|| common::pg_schema_url("scaleout"))
        .await
        .unwrap()
    else {
        return;
    };
    let schema = common::pg_schema_of(&url);
    let _drop_schema = DropSchema(schema);
    if !nginx_available() {
        assert!(
            std::env::var("QLEARN_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "nginx is required for the scale-out test: run deploy/check.sh (it installs nginx) or apt-get install nginx-light"
        );
        eprintln!("SKIPPED scale-out test: nginx not installed (deploy/check.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.json");
    std::fs::write(
        &limits,
        r#"{"free": {"monthly_calls": 100, "max_models": 3, "rate_per_second": 1000000, "burst": 1000000},
            "pro": {"monthly_calls": null, "max_models": 10, "rate_per_second": 1000000, "burst": 1000000}}"#,
    )
    .unwrap();
    let a = Instance::spawn(&url, &limits).await;
    let b = Instance::spawn(&url, &limits).await;
    let nginx = Nginx::start(&[a.port, b.port], None).await;
    let http = client();

    exact_quota_across_instances(&http, &nginx, &a, &b).await;
    let (token, _) = register(&http, &nginx.base, "pro@example.com").await;
    set_tier(&url, "pro@example.com", "pro", &http, &token, &[&a, &b]).await;
    serial_result_across_instances(&http, &nginx, &a, &b, &token).await;
    crossing::stream_sees_both_instances(&http, &nginx, &a, &b, &token).await;
    crossing::revocation_crosses(&http, &nginx, &a, &b, &token).await;
    let acked_after_kill = sigkill_mid_load(&http, &nginx, a, &b, &token).await;
    eprintln!("scale-out: {acked_after_kill} updates acknowledged through nginx after the SIGKILL");
    post_whose_upstream_died(&http, &b, &token).await;

    // The instances' security headers pass nginx once each.
    let r = http
        .get(format!("{}/healthz", nginx.base))
        .send()
        .await
        .unwrap();
    for h in [
        "x-content-type-options",
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert_eq!(
            r.headers().get_all(h).iter().count(),
            1,
            "{h} through nginx: {:?}",
            r.headers()
        );
    }
    // The log has paths without query strings.
    let (s, _) = send(
        &http,
        reqwest::Method::GET,
        format!("{}/healthz?probe=hunter2", nginx.base),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let log = nginx.access_log();
    assert!(log.contains("\"GET /healthz HTTP/1.1\""), "{log}");
    assert!(
        !log.contains("hunter2") && !log.contains('?'),
        "query string in the access log"
    );

    b.signal("-TERM");
    drop(nginx);
}

/// 16 clients through nginx call /predict until refused: exactly 100 are
/// served, by both instances, the rest are `429 quota_exceeded`.
async fn exact_quota_across_instances(http: &Client, nginx: &Nginx, a: &Instance, b: &Instance) {
    let (token, mid) = register(http, &nginx.base, "free@example.com").await;
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (http, base, token, mid) =
            (http.clone(), nginx.base.clone(), token.clone(), mid.clone());
        let (ok, refused) = (ok.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let (s, v) = send(
                    &http,
                    reqwest::Method::POST,
                    format!("{base}/predict"),
                    Some(&token),
                    Some(json!({"model_id": mid, "state": 0})),
                )
                .await;
                match s {
                    200 => ok.fetch_add(1, Ordering::SeqCst),
                    429 => {
                        assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
                        refused.fetch_add(1, Ordering::SeqCst)
                    }
                    _ => panic!("predict through nginx: {s} {v}"),
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        ok.load(Ordering::SeqCst),
        100,
        "metered calls served across both instances"
    );
    assert_eq!(refused.load(Ordering::SeqCst), 60);
    let served = upstream_counts(&nginx.access_log(), "/predict");
    assert!(
        served.get(&a.port).is_some_and(|&n| n > 0) && served.get(&b.port).is_some_and(|&n| n > 0),
        "both instances served predicts: {served:?}"
    );
    // Either instance, asked directly, refuses the 101st.
    for inst in [a, b] {
        let (s, v) = send(
            http,
            reqwest::Method::POST,
            format!("{}/predict", inst.base),
            Some(&token),
            Some(json!({"model_id": mid, "state": 0})),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (429, Some("quota_exceeded")),
            "{v}"
        );
    }
}

/// Sets a tier with the admin command on the shared database, then waits
/// until both instances see it (their auth caches last 5 s).
async fn set_tier(
    url: &str,
    email: &str,
    tier: &str,
    http: &Client,
    token: &str,
    on: &[&Instance],
) {
    let out = Command::new(env!("CARGO_BIN_EXE_saas-host"))
        .args(["admin", "set-tier", email, tier])
        .env("DATABASE_URL", url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for inst in on {
        let t0 = Instant::now();
        loop {
            let (s, v) = send(
                http,
                reqwest::Method::GET,
                format!("{}/me", inst.base),
                Some(token),
                None,
            )
            .await;
            assert_eq!(s, 200, "{v}");
            if v["tier"] == tier || v["user"]["tier"] == tier {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "tier not seen: {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// 8 clients, 25 terminal updates each, through nginx to one model: 8
/// (state, action) cells, each always with its own reward, so the serial
/// result does not depend on the order the instances apply them in. Both
/// instances then report the in-process model's Q-table and update count.
async fn serial_result_across_instances(
    http: &Client,
    nginx: &Nginx,
    a: &Instance,
    b: &Instance,
    token: &str,
) {
    let (s, v) = send(
        http,
        reqwest::Method::POST,
        format!("{}/models", nginx.base),
        Some(token),
        Some(json!({"name": "serial", "n_actions": 2, "learning_rate": 0.1, "discount_factor": 0.9, "epsilon": 0.0})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let mid = v["id"].as_str().unwrap().to_owned();
    let cell = |c: u32, i: u32| (c * 25 + i) % 8;
    let mut tasks = Vec::new();
    for c in 0..8u32 {
        let (http, base, token, mid) = (
            http.clone(),
            nginx.base.clone(),
            token.to_owned(),
            mid.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..25u32 {
                let k = cell(c, i);
                let body = json!({"model_id": mid, "state": k / 2, "action": k % 2, "reward": f64::from(k + 1), "next_state": k / 2, "done": true});
                let (s, v) = send(&http, reqwest::Method::POST, format!("{base}/update"), Some(&token), Some(body)).await;
                assert_eq!(s, 200, "update through nginx: {v}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut cfg = ModelConfig::new(2);
    cfg.learning_rate = 0.1;
    cfg.discount_factor = 0.9;
    cfg.epsilon = 0.0;
    let mut model = Model::new(cfg).unwrap();
    for c in 0..8u32 {
        for i in 0..25u32 {
            let k = cell(c, i);
            let s = i64::from(k / 2);
            model
                .update(&Experience::new(s, (k % 2) as usize, f64::from(k + 1), s).done(true))
                .unwrap();
        }
    }
    for inst in [a, b] {
        let (table, updates) = rows(http, &inst.base, token, &mid).await;
        assert_eq!(updates, 200, "every update counted ({})", inst.base);
        assert_eq!(table.len(), 4);
        for s in 0..4i64 {
            let want = model.q_values(s).unwrap();
            let got = &table[&s.to_string()];
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-12,
                    "state {s}: {got:?} != serial {want:?} ({})",
                    inst.base
                );
            }
        }
    }
    let served = upstream_counts(&nginx.access_log(), "/update");
    assert!(served.len() >= 2, "both instances took updates: {served:?}");
}

/// 8 clients of updates (each to a fresh state, so a double application
/// would show as 0.19 instead of 0.1) through nginx; instance `a` is
/// SIGKILLed 800 ms in and the load goes on 1.5 s. Returns how many updates
/// were acknowledged after the kill.
async fn sigkill_mid_load(
    http: &Client,
    nginx: &Nginx,
    mut a: Instance,
    b: &Instance,
    token: &str,
) -> usize {
    let (s, v) = send(
        http,
        reqwest::Method::POST,
        format!("{}/models", nginx.base),
        Some(token),
        Some(json!({"name": "failover", "n_actions": 1, "learning_rate": 0.1})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let mid = v["id"].as_str().unwrap().to_owned();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let unknown = Arc::new(Mutex::new(HashSet::new()));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let after_kill = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..8u32 {
        let (base, token, mid) = (nginx.base.clone(), token.to_owned(), mid.clone());
        let (acked, unknown, killed, after_kill) = (
            acked.clone(),
            unknown.clone(),
            killed.clone(),
            after_kill.clone(),
        );
        let http = client();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u32;
            while start.elapsed() < Duration::from_millis(2300) {
                let body = json!({"model_id": mid, "state": [c, i], "action": 0, "reward": 1, "next_state": [c, i], "done": true});
                let was_killed = killed.load(Ordering::SeqCst);
                match http.post(format!("{base}/update")).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        assert_eq!(v["q_value"], 0.1, "applied once");
                        acked.lock().unwrap().insert(json!([c, i]).to_string());
                        if was_killed {
                            after_kill.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    // The instance died with this POST in flight: nginx does
                    // not pass it on; it may or may not have been applied.
                    Ok(r) if r.status() == 502 => {
                        unknown.lock().unwrap().insert(json!([c, i]).to_string());
                    }
                    Ok(r) => panic!("update through nginx during failover: {} {}", r.status(), r.text().await.unwrap_or_default()),
                    Err(e) => panic!("nginx itself failed: {e}"),
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    killed.store(true, Ordering::SeqCst);
    a.signal("-KILL");
    let _ = a.child.wait().await;
    for t in tasks {
        t.await.unwrap();
    }
    let (acked, unknown) = (
        acked.lock().unwrap().clone(),
        unknown.lock().unwrap().clone(),
    );
    let (table, updates) = rows(http, &b.base, token, &mid).await;
    assert!(acked.len() > 50, "the load ran ({} acked)", acked.len());
    let lost: Vec<_> = acked.iter().filter(|k| !table.contains_key(*k)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged updates lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    for (k, q) in &table {
        assert_eq!(q, &vec![0.1], "state {k} applied more than once");
        assert!(
            acked.contains(k) || unknown.contains(k),
            "state {k} applied but never sent?"
        );
    }
    assert_eq!(updates as usize, table.len(), "one update per stored state");
    assert!(
        unknown.len() <= 8,
        "502 only for the POSTs in flight at the kill: {}",
        unknown.len()
    );
    let n = after_kill.load(Ordering::SeqCst);
    assert!(
        n > 20,
        "nginx failed over to the other instance ({n} acked after the kill)"
    );
    eprintln!(
        "scale-out: {} acknowledged, {} answered 502 (in flight at the kill; {} of them applied)",
        acked.len(),
        unknown.len(),
        unknown.iter().filter(|k| table.contains_key(*k)).count()
    );
    n
}

/// nginx in front of a dying upstream and instance `b` (`max_fails=0`, so
/// the dying one keeps its turn): each POST that reached the dying one is
/// answered 502 and never passed to `b`; each GET that did is retried on `b`.
async fn post_whose_upstream_died(http: &Client, b: &Instance, token: &str) {
    let (dying, seen) = dying_upstream().await;
    let n = Nginx::start(&[dying, b.port], Some("max_fails=0")).await;
    let (s, v) = send(
        http,
        reqwest::Method::POST,
        format!("{}/models", b.base),
        Some(token),
        Some(json!({"name": "dying", "n_actions": 1, "learning_rate": 0.1})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let mid = v["id"].as_str().unwrap().to_owned();
    let mut answered = Vec::new();
    let mut bad_gateway = Vec::new();
    for i in 0..10i64 {
        let body = json!({"model_id": mid, "state": i, "action": 0, "reward": 1, "next_state": i, "done": true});
        let (s, v) = send(
            http,
            reqwest::Method::POST,
            format!("{}/update", n.base),
            Some(token),
            Some(body),
        )
        .await;
        match s {
            200 => answered.push(i),
            502 => {
                assert_eq!(v["error"]["code"], "bad_gateway", "{v}");
                bad_gateway.push(i)
            }
            _ => panic!("POST through nginx: {s} {v}"),
        }
        // Two GETs per POST, so that the round robin puts POSTs and GETs
        // on both upstreams.
        for _ in 0..2 {
            let (s, v) = send(
                http,
                reqwest::Method::GET,
                format!("{}/me", n.base),
                Some(token),
                None,
            )
            .await;
            assert_eq!(s, 200, "a GET is retried on the other instance: {v}");
        }
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        !bad_gateway.is_empty() && !answered.is_empty(),
        "both upstreams had POSTs: {answered:?} {bad_gateway:?}"
    );
    assert_eq!(
        seen.get("POST").copied().unwrap_or(0),
        bad_gateway.len(),
        "each 502 is a POST the dying upstream received"
    );
    assert!(
        seen.get("GET").copied().unwrap_or(0) > 0,
        "GETs reached the dying upstream and were retried"
    );
    let (table, updates) = rows(http, &b.base, token, &mid).await;
    let mut applied: Vec<i64> = table.keys().map(|k| k.parse().unwrap()).collect();
    applied.sort_unstable();
    assert_eq!(
        applied, answered,
        "only the answered POSTs were applied (none passed on after a 502)"
    );
    assert_eq!(updates as usize, answered.len());
    // nginx's own 502 (the only upstream dies): the host's JSON error shape
    // and security headers of its own.
    let alone = Nginx::start(&[dying], None).await;
    let r = http
        .post(format!("{}/update", alone.base))
        .bearer_auth(token)
        .json(&json!({"model_id": mid, "state": 99, "action": 0, "reward": 1, "next_state": 99, "done": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bad_gateway", "{v}");
}
