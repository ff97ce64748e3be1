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
//! - the access log has no query strings.
//!
//! Runs whenever PostgreSQL is reachable (skips loudly otherwise, fails under
//! `QLEARN_REQUIRE_POSTGRES=1`); needs `nginx` on PATH (`deploy/check.sh`,
//! run first by `scripts/test.sh`, installs it).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qlearn_core::{Experience, Model, ModelConfig};
use reqwest::Client;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const SECRET: &str = "scale-out test secret, the same on every instance";

/// One `saas-host serve` child process.
struct Instance {
    child: Child,
    port: u16,
    base: String,
}

impl Instance {
    async fn spawn(database_url: &str, limits: &Path) -> Instance {
        let mut child = Command::new(env!("CARGO_BIN_EXE_saas-host"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .env("DATABASE_URL", database_url)
            .env("SECRET_KEY", SECRET)
            .env("LIMITS_FILE", limits)
            .env("TRUSTED_PROXIES", "127.0.0.0/8")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["fields"]["message"] == "serving" {
                        return v["fields"]["addr"].as_str().unwrap().to_owned();
                    }
                }
            }
            panic!("saas-host exited before serving");
        })
        .await
        .expect("saas-host starts");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Instance {
            child,
            port,
            base: format!("http://{addr}"),
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status();
        }
    }
}

/// nginx running a config generated from `deploy/nginx.conf`; stopped by
/// pid (SIGTERM to the master, which stops its workers) on drop.
struct Nginx {
    child: std::process::Child,
    base: String,
    dir: tempfile::TempDir,
}

fn nginx_available() -> bool {
    std::process::Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `deploy/nginx.conf` with its `server appN:8000 OPTIONS;` lines replaced
/// by one line per `upstreams` port (the same options, or `options` when
/// given), `listen 80` by `listen 127.0.0.1:PORT`, and the logs and
/// temporary files moved into `dir`. Panics when a substituted line is
/// missing, so the test cannot silently run another configuration.
fn render(conf: &str, upstreams: &[u16], options: Option<&str>, listen: u16, dir: &Path) -> String {
    let mut out = String::new();
    let mut servers = 0;
    let mut seen = HashSet::new();
    for line in conf.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("server app") {
            servers += 1;
            if servers == 1 {
                let opts = rest
                    .split_once(' ')
                    .map_or("", |(_, o)| o)
                    .trim_end_matches(';');
                for p in upstreams {
                    out += &format!("    server 127.0.0.1:{p} {};\n", options.unwrap_or(opts));
                }
            }
            continue;
        }
        let replaced = match t {
            "listen 80;" => format!("    listen 127.0.0.1:{listen};"),
            "error_log /dev/stderr warn;" => format!("error_log {}/error.log warn;", dir.display()),
            "access_log /dev/stdout qlearn;" => {
                format!("  access_log {}/access.log qlearn;", dir.display())
            }
            "http {" => format!(
                "http {{\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;",
                d = dir.display()
            ),
            _ => {
                out += line;
                out.push('\n');
                continue;
            }
        };
        seen.insert(t.to_owned());
        out += &replaced;
        out.push('\n');
    }
    assert!(servers >= 2, "deploy/nginx.conf has no `server appN` lines");
    assert_eq!(
        seen.len(),
        4,
        "deploy/nginx.conf changed shape: substituted only {seen:?}"
    );
    out
}

impl Nginx {
    async fn start(upstreams: &[u16], options: Option<&str>) -> Nginx {
        let conf_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx.conf");
        let conf = std::fs::read_to_string(&conf_path).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // The workers run as an unprivileged user when the test is root.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, render(&conf, upstreams, options, port, dir.path())).unwrap();
        let child = std::process::Command::new("nginx")
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(dir.path())
            .arg("-g")
            .arg(format!(
                "daemon off; pid {}/nginx.pid;",
                dir.path().display()
            ))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut n = Nginx {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let http = client();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{}/healthz", n.base)).send().await {
                if r.status() == 200 {
                    return n;
                }
            }
            if let Ok(Some(st)) = n.child.try_wait() {
                let log =
                    std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default();
                panic!("nginx exited at start ({st}): {log}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nginx did not answer /healthz");
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn send(
    http: &Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = http.request(method, url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Registers through `base`; returns (token, default model id).
async fn register(http: &Client, base: &str, email: &str) -> (String, String) {
    let (s, v) = send(
        http,
        reqwest::Method::POST,
        format!("{base}/register"),
        None,
        Some(json!({"email": email, "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(s, 201, "register {email}: {v}");
    (
        v["access_token"].as_str().unwrap().to_owned(),
        v["default_model_id"].as_str().unwrap().to_owned(),
    )
}

/// Every Q-table row of a model as one instance reports it, and its
/// update count.
async fn rows(
    http: &Client,
    base: &str,
    token: &str,
    mid: &str,
) -> (HashMap<String, Vec<f64>>, u64) {
    let mut out = HashMap::new();
    let mut offset = 0;
    loop {
        let (s, v) = send(
            http,
            reqwest::Method::GET,
            format!("{base}/status/{mid}?offset={offset}&limit=1000"),
            Some(token),
            None,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let page = v["q_table"]["rows"].as_array().unwrap();
        for r in page {
            let q = r["q_values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            out.insert(r["state"].to_string(), q);
        }
        offset += page.len();
        if page.is_empty() || offset as u64 >= v["q_table"]["total"].as_u64().unwrap() {
            return (out, v["stats"]["updates"].as_u64().unwrap());
        }
    }
}

/// Upstream ports in the access log's `upstream=` fields, with counts.
fn upstream_counts(log: &str, path: &str) -> HashMap<u16, usize> {
    let mut m = HashMap::new();
    for line in log.lines().filter(|l| l.contains(&format!(" {path} "))) {
        let Some(up) = line.split("upstream=").nth(1) else {
            continue;
        };
        for addr in up.split('/').next().unwrap_or("").split(", ") {
            if let Some(p) = addr.rsplit(':').next().and_then(|p| p.parse().ok()) {
                *m.entry(p).or_insert(0) += 1;
            }
        }
    }
    m
}

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
    let acked_after_kill = sigkill_mid_load(&http, &nginx, a, &b, &token).await;
    eprintln!("scale-out: {acked_after_kill} updates acknowledged through nginx after the SIGKILL");
    post_whose_upstream_died(&http, &b, &token).await;

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

/// Drops the test schema at the end, whatever happened.
struct DropSchema(Option<String>);

impl Drop for DropSchema {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            common::drop_pg_schema(s);
        }
    }
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

/// A stand-in upstream that reads each request whole and closes the
/// connection without answering: an instance dying after the request
/// reached it. Counts the requests by method.
async fn dying_upstream() -> (u16, Arc<Mutex<HashMap<String, usize>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = c.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        let method = text.split(' ').next().unwrap_or("").to_owned();
                        *seen.lock().unwrap().entry(method).or_insert(0) += 1;
                        return; // drop: close without an answer
                    }
                }
            });
        }
    });
    (port, seen)
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
}
