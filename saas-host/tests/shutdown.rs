//! Durability of acknowledged updates across process stops: the real binary
//! as a child process, under concurrent update load, stopped by SIGTERM
//! (graceful) or SIGKILL, then restarted on the same database.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Backend;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

backend_tests!(
    sigterm_during_load_loses_no_acked_update,
    sigkill_loses_no_acked_update,
    sigkill_during_registrations_leaves_no_user_without_its_model
);

const SECRET: &str = "shutdown test secret, long enough for HS256 keys";

struct Proc {
    child: Child,
    base: String,
}

async fn spawn(database_url: &str, limits: &std::path::Path) -> Proc {
    spawn_with(database_url, limits, &[]).await
}

async fn spawn_with(database_url: &str, limits: &std::path::Path, env: &[(&str, &str)]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_saas-host"))
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .envs(env.iter().copied())
        .env("DATABASE_URL", database_url)
        .env("SECRET_KEY", SECRET)
        .env("LIMITS_FILE", limits)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["fields"]["message"] == "serving" {
                    return v["fields"]["addr"].as_str().unwrap().to_owned();
                }
            }
        }
        panic!("server exited before serving");
    })
    .await
    .expect("server starts");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Proc {
        child,
        base: format!("http://{addr}"),
    }
}

fn signal(p: &Proc, sig: &str) {
    let pid = p.child.id().unwrap().to_string();
    let st = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap();
    assert!(st.success());
}

async fn database(b: Backend, test: &str) -> Option<(String, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let url = match b {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("d.db").display()),
        Backend::Postgres => {
            if !saas_host::config::postgres_available() {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "SKIPPED {test} on PostgreSQL: this build has no PostgreSQL store yet"
                );
                return None;
            }
            let t = test.to_owned();
            tokio::task::spawn_blocking(move || common::pg_schema_url(&t))
                .await
                .unwrap()?
        }
    };
    let limits = dir.path().join("limits.json");
    std::fs::write(
        &limits,
        r#"{"free": {"monthly_calls": null, "max_models": 3, "rate_per_second": 1000000, "burst": 1000000}}"#,
    )
    .unwrap();
    Some((url, dir))
}

/// Runs 8 clients of updates (each to a fresh state) until the server goes
/// away; `stop` is sent after `after`. Returns the acknowledged states.
async fn load_then(
    p: &Proc,
    token: &str,
    mid: &str,
    after: Duration,
    sig: &str,
) -> HashSet<(u32, u32)> {
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = Vec::new();
    for c in 0..8u32 {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let (base, token, mid, acked) = (
            p.base.clone(),
            token.to_owned(),
            mid.to_owned(),
            acked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000u32 {
                let body = json!({"model_id": mid, "state": [c, i], "action": 0, "reward": 1, "next_state": [c, i], "done": true});
                match http.post(format!("{base}/update")).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => break,
                        };
                        assert_eq!(v["q_value"], 0.1);
                        acked.lock().unwrap().insert((c, i));
                    }
                    Ok(r) => {
                        assert_eq!(r.status(), 503, "only 'unavailable' while stopping");
                        break;
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(after).await;
    signal(p, sig);
    for t in tasks {
        t.await.unwrap();
    }
    let set = acked.lock().unwrap().clone();
    set
}

async fn check_after_restart(
    url: &str,
    limits: &std::path::Path,
    token: &str,
    mid: &str,
    acked: &HashSet<(u32, u32)>,
) {
    let p = spawn(url, limits).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut rows: HashMap<(u32, u32), f64> = HashMap::new();
    let mut offset = 0;
    let mut updates;
    loop {
        let v: Value = http
            .get(format!(
                "{}/status/{mid}?offset={offset}&limit=1000",
                p.base
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        updates = v["stats"]["updates"].as_u64().unwrap();
        let page = v["q_table"]["rows"].as_array().unwrap();
        for r in page {
            let s = r["state"].as_array().unwrap();
            let key = (s[0].as_u64().unwrap() as u32, s[1].as_u64().unwrap() as u32);
            rows.insert(key, r["q_values"][0].as_f64().unwrap());
        }
        offset += page.len();
        if page.is_empty() || offset as u64 >= v["q_table"]["total"].as_u64().unwrap() {
            break;
        }
    }
    let lost: Vec<_> = acked.iter().filter(|k| rows.get(k) != Some(&0.1)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged updates lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        updates as usize >= acked.len(),
        "updates {updates} < acked {}",
        acked.len()
    );
    assert_eq!(rows.len() as u64, updates, "one state per applied update");
    signal(&p, "-TERM");
    let mut p = p;
    let st = tokio::time::timeout(Duration::from_secs(30), p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "{st:?}");
}

async fn setup(p: &Proc) -> (String, String) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let v: Value = http
        .post(format!("{}/register", p.base))
        .json(&json!({"email": "load@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["access_token"].as_str().unwrap().to_owned(),
        v["default_model_id"].as_str().unwrap().to_owned(),
    )
}

async fn sigterm_during_load_loses_no_acked_update(b: Backend) {
    let Some((url, dir)) = database(b, "sigterm").await else {
        return;
    };
    let limits = dir.path().join("limits.json");
    let mut p = spawn(&url, &limits).await;
    let (token, mid) = setup(&p).await;
    let acked = load_then(&p, &token, &mid, Duration::from_millis(700), "-TERM").await;
    let st = tokio::time::timeout(Duration::from_secs(30), p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "graceful exit after SIGTERM: {st:?}");
    assert!(acked.len() > 50, "the load ran ({} acked)", acked.len());
    eprintln!("{b:?}: {} updates acknowledged before SIGTERM", acked.len());
    check_after_restart(&url, &limits, &token, &mid, &acked).await;
    if let Some(schema) = common::pg_schema_of(&url) {
        common::drop_pg_schema(schema);
    }
}

async fn sigkill_loses_no_acked_update(b: Backend) {
    let Some((url, dir)) = database(b, "sigkill").await else {
        return;
    };
    let limits = dir.path().join("limits.json");
    let mut p = spawn(&url, &limits).await;
    let (token, mid) = setup(&p).await;
    let acked = load_then(&p, &token, &mid, Duration::from_millis(700), "-KILL").await;
    let _ = p.child.wait().await;
    assert!(acked.len() > 50, "the load ran ({} acked)", acked.len());
    eprintln!("{b:?}: {} updates acknowledged before SIGKILL", acked.len());
    check_after_restart(&url, &limits, &token, &mid, &acked).await;
    if let Some(schema) = common::pg_schema_of(&url) {
        common::drop_pg_schema(schema);
    }
}

/// Registrations from 8 clients at once, the server SIGKILLed in the middle:
/// afterwards every user in the database has its default model (the two are
/// one write), and every acknowledged registration is there.
async fn sigkill_during_registrations_leaves_no_user_without_its_model(b: Backend) {
    let Some((url, dir)) = database(b, "sigkillreg").await else {
        return;
    };
    let limits = dir.path().join("limits.json");
    let mut p = spawn_with(&url, &limits, &[("REGISTRATIONS_PER_ADDRESS", "1000000")]).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..8u32 {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let (base, acked) = (p.base.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000u32 {
                let email = format!("c{c}-{i}@example.com");
                let body = json!({"email": email, "password": "correct horse battery"});
                match http
                    .post(format!("{base}/register"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(email),
                    Ok(r) => panic!("registration answered {}", r.status()),
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&p, "-KILL");
    for t in tasks {
        t.await.unwrap();
    }
    let _ = p.child.wait().await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 4,
        "registrations ran ({} acked)",
        acked.len()
    );
    let store_url = url.clone();
    let (users, without) = tokio::task::spawn_blocking(move || {
        let store = saas_host::config::open_store(&store_url).unwrap();
        let users = store.users().unwrap();
        let without: Vec<String> = users
            .iter()
            .filter(|u| store.models(&u.id).unwrap().is_empty())
            .map(|u| u.email.clone())
            .collect();
        store.flush().unwrap();
        (users, without)
    })
    .await
    .unwrap();
    eprintln!(
        "{b:?}: {} registrations acknowledged before SIGKILL, {} users stored",
        acked.len(),
        users.len()
    );
    assert!(without.is_empty(), "users without their model: {without:?}");
    if b == Backend::Sqlite {
        // The killed server left its admin socket behind: the CLI finds
        // nobody listening and opens the database itself.
        let sock = saas_host::admin::socket_path(&url).unwrap();
        assert!(sock.exists(), "a stale socket at {}", sock.display());
        let out = Command::new(env!("CARGO_BIN_EXE_saas-host"))
            .args(["admin", "--database-url", &url, "list-users", "--json"])
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "admin after a crash: {err}");
        let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed.as_array().map(Vec::len), Some(users.len()));
    }
    for email in &acked {
        assert!(
            users.iter().any(|u| &u.email == email),
            "acknowledged registration {email} lost"
        );
    }
    if let Some(schema) = common::pg_schema_of(&url) {
        common::drop_pg_schema(schema);
    }
}

#[tokio::test]
async fn a_short_secret_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_saas-host"))
        .args(["serve", "--port", "0"])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("s.db").display()),
        )
        .env("SECRET_KEY", "too short")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SECRET_KEY") && err.contains("32"), "{err}");
    assert!(
        !err.contains("too short"),
        "the secret is never printed: {err}"
    );
}

#[tokio::test]
async fn admin_cli_sets_tier_and_reports_unknown_users() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let limits = dir.path().join("limits.json");
    std::fs::write(&limits, "{}").unwrap();
    let mut p = spawn(&url, &limits).await;
    setup(&p).await;
    signal(&p, "-TERM");
    assert!(p.child.wait().await.unwrap().success());
    let run = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_saas-host"));
        c.arg("admin").args(args).env("DATABASE_URL", &url);
        c.output()
    };
    let out = run(&["set-tier", "LOAD@example.com", "enterprise"])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "load@example.com: tier free -> enterprise"
    );
    let out = run(&["set-tier", "nobody@example.com", "pro"])
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("user not found"));
    let out = run(&["set-tier", "load@example.com", "gold"])
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tier"));
}

/// The container health check (`saas-host healthcheck`, the image has no
/// curl): 0 while the server answers /healthz, non-zero once it is gone;
/// and `TRUSTED_PROXIES` ranges (the compose file's) are accepted at start.
#[tokio::test]
async fn healthcheck_command_and_trusted_proxy_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("h.db").display());
    let limits = dir.path().join("limits.json");
    std::fs::write(&limits, "{}").unwrap();
    let ranges = [("TRUSTED_PROXIES", "172.28.0.0/24,fd00::/8")];
    let mut p = spawn_with(&url, &limits, &ranges).await;
    let port = p.base.rsplit(':').next().unwrap().to_owned();
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_saas-host"))
            .args(["healthcheck", "--port", &port])
            .output()
    };
    let out = check().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    signal(&p, "-KILL");
    let _ = p.child.wait().await;
    let out = check().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
}
