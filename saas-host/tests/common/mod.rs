//! Test harness: starts the real server (`saas_host::run`) on 127.0.0.1:0
//! against a fresh database of the chosen backend, and small HTTP helpers.
//!
//! PostgreSQL tests get their own schema (so they run in parallel) and are
//! skipped, loudly, when no server is reachable, unless
//! `QLEARN_REQUIRE_POSTGRES=1` makes that a failure.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Client, Method, Response, StatusCode};
use saas_host::Config;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A storage backend under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://` in a temp dir.
    Sqlite,
    /// `postgres://` with a schema per test.
    Postgres,
}

/// The PostgreSQL server the tests use.
pub fn pg_base_url() -> String {
    std::env::var("QLEARN_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn pg_required() -> bool {
    std::env::var("QLEARN_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// Prints `SKIPPED ...` where the person running the suite sees it: a
/// direct write to the process's stderr, which the test runner does not
/// capture (`eprintln!` inside a passing test is swallowed).
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {why}");
}

/// Creates a fresh schema and returns a URL whose connections use it, or
/// `None` (after printing why) when PostgreSQL cannot be used.
pub fn pg_schema_url(test: &str) -> Option<String> {
    let base = pg_base_url();
    let schema = format!(
        "qh_{}_{}",
        test.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(20)
            .collect::<String>()
            .to_lowercase(),
        qlearn_core::tenancy::new_id()
            .to_lowercase()
            .replace(['-', '_'], "")[..10]
            .to_owned()
    );
    let setup = || -> Result<(), String> {
        let mut c = postgres::Client::connect(&base, postgres::NoTls).map_err(|e| e.to_string())?;
        c.batch_execute(&format!("CREATE SCHEMA {schema}"))
            .map_err(|e| e.to_string())
    };
    if let Err(e) = setup() {
        if pg_required() {
            panic!("PostgreSQL required (QLEARN_REQUIRE_POSTGRES=1) but unusable at {base}: {e}");
        }
        skipped(&format!(
            "{test} (PostgreSQL unreachable at {base}: {e}; set QLEARN_REQUIRE_POSTGRES=1 to fail instead)"
        ));
        return None;
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-csearch_path%3D{schema}"))
}

/// A running server.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The address.
    pub addr: SocketAddr,
    /// A client (no proxy, 30 s timeout).
    pub http: Client,
    /// The backend.
    pub backend: Backend,
    /// The configuration it runs with.
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<qlearn_core::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// A configuration for tests: the given database, no registration throttle.
pub fn test_config(database_url: String) -> Config {
    let mut c = Config {
        database_url,
        secret_key: Some("a test secret that is at least thirty-two bytes long".into()),
        ..Config::default()
    };
    c.register_per_address = saas_host::config::Throttle {
        rate: 1000.0,
        burst: 1000.0,
    };
    // Tests make quick bursts of calls; the rate-limit test restores the defaults.
    c.limits.free.rate_per_second = 10_000;
    c.limits.free.burst = 10_000;
    c
}

/// Starts a server on `backend` with the default test configuration; `None`
/// when the backend is unavailable (skipped).
pub async fn start(backend: Backend, test: &str) -> Option<Server> {
    start_with(backend, test, |_| {}).await
}

/// Starts a server with `tweak` applied to the test configuration.
pub async fn start_with(
    backend: Backend,
    test: &str,
    tweak: impl FnOnce(&mut Config),
) -> Option<Server> {
    let (url, dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("test.db").display());
            (url, Some(dir))
        }
        Backend::Postgres => {
            if !saas_host::config::postgres_available() {
                assert!(
                    !pg_required(),
                    "PostgreSQL required but this build has no PostgreSQL store"
                );
                skipped(&format!(
                    "{test} on PostgreSQL: this build has no PostgreSQL store yet"
                ));
                return None;
            }
            let t = test.to_owned();
            let url = tokio::task::spawn_blocking(move || pg_schema_url(&t))
                .await
                .unwrap()?;
            (url, None)
        }
    };
    let mut config = test_config(url);
    tweak(&mut config);
    Some(launch(backend, config, dir).await)
}

/// Another instance on `first`'s database (PostgreSQL: instances sharing
/// one schema), with `first`'s configuration.
pub async fn start_beside(first: &Server) -> Server {
    launch(first.backend, first.config.clone(), None).await
}

async fn launch(backend: Backend, config: Config, dir: Option<tempfile::TempDir>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let cfg = config.clone();
    let task = tokio::spawn(async move {
        saas_host::run(listener, cfg, async move {
            let _ = rx.await;
        })
        .await
    });
    let http = Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = format!("http://{addr}");
    // Wait until it answers (the store opens before the first accept is served).
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        if task.is_finished() {
            panic!("server exited at start: {:?}", task.await);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Server {
        base,
        addr,
        http,
        backend,
        config,
        stop: Some(tx),
        task: Some(task),
        _dir: dir,
    }
}

impl Server {
    /// Graceful stop; returns what `run` returned.
    pub async fn stop(&mut self) -> qlearn_core::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.unwrap(),
            None => Ok(()),
        }
    }

    /// Stops and starts again on the same database (new port).
    pub async fn restart(mut self) -> Server {
        self.stop().await.unwrap();
        let dir = self._dir.take();
        // The new server owns the database (and its schema) now.
        let config = std::mem::take(&mut self.config);
        launch(self.backend, config, dir).await
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut rb = self.http.request(method, self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        rb.send().await.unwrap()
    }

    /// Like [`call`](Self::call), returning status and JSON body (Null if none).
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let r = self.call(method, path, token, body).await;
        let s = r.status();
        let text = r.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (s, v)
    }

    /// Registers `email`; returns (token, user id, default model id).
    pub async fn register(&self, email: &str) -> (String, String, String) {
        let (s, v) = self
            .json(
                Method::POST,
                "/register",
                None,
                Some(json!({"email": email, "password": "correct horse battery"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "register {email}: {v}");
        (
            v["access_token"].as_str().unwrap().to_owned(),
            v["user"]["id"].as_str().unwrap().to_owned(),
            v["default_model_id"].as_str().unwrap().to_owned(),
        )
    }

    /// Creates a model; returns its id.
    pub async fn create_model(&self, token: &str, body: Value) -> String {
        let (s, v) = self
            .json(Method::POST, "/models", Some(token), Some(body))
            .await;
        assert_eq!(s, StatusCode::CREATED, "create model: {v}");
        v["id"].as_str().unwrap().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(schema) = pg_schema_of(&self.config.database_url) {
            drop_pg_schema(schema);
        }
    }
}

/// The schema a test URL of [`pg_schema_url`] selects.
pub fn pg_schema_of(url: &str) -> Option<String> {
    url.starts_with("postgres")
        .then(|| url.split("search_path%3D").nth(1).map(str::to_owned))
        .flatten()
}

/// Drops a test schema (best effort, on its own thread).
pub fn drop_pg_schema(schema: String) {
    let base = pg_base_url();
    let _ = std::thread::spawn(move || {
        if let Ok(mut c) = postgres::Client::connect(&base, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    })
    .join();
}

/// Asserts an error response read whole: status, code and message as
/// [`assert_error`], and for a 429 a `Retry-After` of a positive number of
/// seconds. Returns the body.
pub async fn assert_error_response(r: Response, want_status: u16, want_code: &str) -> Value {
    let status = r.status();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    assert_error(status, &body, want_status, want_code);
    if want_status == 429 {
        let secs = retry.as_deref().and_then(|v| v.parse::<u64>().ok());
        assert!(
            secs.is_some_and(|s| s >= 1),
            "429 without a positive Retry-After ({retry:?}): {body}"
        );
    }
    body
}

/// Asserts an error's status, code and non-empty message. It sees no
/// headers: a 429's `Retry-After` is checked by [`assert_error_response`].
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "body: {body}");
    assert_eq!(body["error"]["code"], want_code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "body: {body}"
    );
}

/// Generates one `#[tokio::test]` per backend for each named
/// `async fn name(backend: Backend)` of the test file.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}
