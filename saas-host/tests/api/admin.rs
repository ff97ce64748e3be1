//! The operator's `saas-host admin` commands (the real binary) against a
//! running server: on SQLite through the server's admin socket, in force
//! from the server's very next request; on PostgreSQL straight to the
//! database, seen by the running server once the change notice
//! (LISTEN/NOTIFY) reaches it: within [`PG_BOUND`], with the server's auth
//! cache lifetime set far beyond it so that only the notice can do it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::common::{start_with, Backend, Server};
use crate::{GET, POST};

backend_tests!(admin_cli_while_the_server_runs);

/// The auth cache lifetime of these tests' servers: longer than the test.
const TTL: Duration = Duration::from_secs(600);

/// How soon a PostgreSQL server must see an admin change (the notice takes
/// milliseconds; the rest is slack for a loaded machine).
const PG_BOUND: Duration = Duration::from_secs(2);

/// Runs `saas-host admin ARGS` on the server's database; returns (success,
/// stdout, stderr). `stdin` is written to its standard input.
async fn admin(s: &Server, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_saas-host"));
    cmd.arg("admin")
        .arg("--database-url")
        .arg(&s.config.database_url)
        .args(args)
        .env_remove("ADMIN_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("run saas-host admin");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("admin command finished")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs an admin command that must succeed; returns its output.
async fn ok(s: &Server, args: &[&str]) -> String {
    let (ok, out, err) = admin(s, args, None).await;
    assert!(ok, "admin {args:?} failed: {err}");
    if s.backend == Backend::Sqlite && args[0] != "list-users" {
        assert!(out.contains("applied by the running server"), "{out}");
    }
    out
}

/// Waits until `probe` holds: at once on SQLite (the very next request),
/// within [`PG_BOUND`] on PostgreSQL. Returns how long it took.
async fn seen<F, Fut>(s: &Server, what: &str, probe: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let bound = match s.backend {
        Backend::Sqlite => Duration::ZERO,
        Backend::Postgres => PG_BOUND,
    };
    loop {
        if probe().await {
            let took = start.elapsed();
            eprintln!("[{:?}] {what}: seen after {took:?}", s.backend);
            return took;
        }
        assert!(
            start.elapsed() <= bound,
            "[{:?}] {what}: not seen within {bound:?}",
            s.backend
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn me(s: &Server, token: &str) -> (StatusCode, Value) {
    s.json(GET, "/me", Some(token), None).await
}

async fn admin_cli_while_the_server_runs(b: Backend) {
    let Some(s) = start_with(b, "admincli", |c| c.auth_cache_ttl = TTL).await else {
        return;
    };
    let (token, _, _) = s.register("op@example.com").await;
    let (st, key) = s
        .json(POST, "/api-keys", Some(&token), Some(json!({"name": "k"})))
        .await;
    assert_eq!(st, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();
    // Warm the server's caches of this user (JWT and key).
    assert_eq!(me(&s, &token).await.1["tier"], "free");
    assert_eq!(me(&s, &key).await.0, 200);

    // The free tier's 3 models: the default one and two more.
    let model = json!({"name": "m", "n_actions": 2});
    for _ in 0..2 {
        s.create_model(&token, model.clone()).await;
    }
    let (st, _) = s
        .json(POST, "/models", Some(&token), Some(model.clone()))
        .await;
    assert_eq!(st, 403, "at the free tier's model limit");

    ok(&s, &["set-tier", "OP@example.com", "pro"]).await;
    // The limits come from the server's cached user: the tier is in force
    // once the cache has let go of the old record.
    seen(&s, "tier (limits)", || async {
        let (st, _) = s
            .json(POST, "/models", Some(&token), Some(model.clone()))
            .await;
        st == 201
    })
    .await;
    assert_eq!(me(&s, &token).await.1["tier"], "pro");
    ok(&s, &["set-role", "op@example.com", "admin"]).await;
    seen(&s, "role", || async {
        me(&s, &key).await.1["role"] == "admin"
    })
    .await;

    let out = ok(&s, &["list-users", "--json"]).await;
    let users: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(users.as_array().map(Vec::len), Some(1), "{users}");
    assert_eq!(users[0]["email"], "op@example.com");
    assert_eq!(users[0]["tier"], "pro");
    assert_eq!(users[0]["disabled"], false);
    let table = ok(&s, &["list-users"]).await;
    assert!(
        table.contains("op@example.com") && table.contains("pro"),
        "{table}"
    );

    // Disabled: the token, the key and a login stop working; data kept.
    ok(&s, &["disable-user", "op@example.com"]).await;
    seen(&s, "disable (token)", || async {
        me(&s, &token).await.0 == 401
    })
    .await;
    seen(&s, "disable (API key)", || async {
        me(&s, &key).await.0 == 401
    })
    .await;
    let login = json!({"email": "op@example.com", "password": "correct horse battery"});
    let (st, _) = s.json(POST, "/login", None, Some(login.clone())).await;
    assert_eq!(st, 401, "a disabled user cannot log in");
    let out = ok(&s, &["list-users", "--json"]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()[0]["disabled"],
        true
    );

    ok(&s, &["enable-user", "op@example.com"]).await;
    seen(&s, "enable", || async { me(&s, &token).await.0 == 200 }).await;
    seen(&s, "enable (API key)", || async {
        me(&s, &key).await.0 == 200
    })
    .await;
    let (st, models) = s.json(GET, "/models", Some(&key), None).await;
    assert_eq!(st, 200);
    assert_eq!(
        models.as_array().map(Vec::len),
        Some(4),
        "models kept: {models}"
    );
    let (st, _) = s.json(POST, "/login", None, Some(login)).await;
    assert_eq!(st, 200);

    // The first admin, its password from standard input.
    let (done, out, err) = admin(
        &s,
        &["create-admin", "root@example.com"],
        Some("a long admin password\n"),
    )
    .await;
    assert!(done, "create-admin: {err}");
    assert!(!out.contains("a long admin password") && !err.contains("a long admin"));
    let (st, v) = s
        .json(
            POST,
            "/login",
            None,
            Some(json!({"email": "root@example.com", "password": "a long admin password"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let root = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(me(&s, &root).await.1["role"], "admin");
    let (_, models) = s.json(GET, "/models", Some(&root), None).await;
    assert_eq!(
        models.as_array().map(Vec::len),
        Some(1),
        "its default model"
    );

    // Refusals: unknown user, taken email, bad tier; nothing changes.
    let (done, _, err) = admin(&s, &["set-tier", "nobody@example.com", "pro"], None).await;
    assert!(!done && err.contains("not found"), "{err}");
    let (done, _, err) = admin(
        &s,
        &["create-admin", "root@example.com"],
        Some("another long one\n"),
    )
    .await;
    assert!(!done && err.contains("already registered"), "{err}");
    let (done, _, err) = admin(&s, &["set-tier", "op@example.com", "platinum"], None).await;
    assert!(!done && err.contains("tier"), "{err}");
    assert_eq!(me(&s, &token).await.1["tier"], "pro");
}
