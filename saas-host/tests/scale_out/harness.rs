//! The processes of the scale-out test: `saas-host` children, nginx running
//! a config generated from `deploy/nginx.conf`, a stand-in upstream that
//! dies mid-request, and small HTTP helpers.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Client;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) const SECRET: &str = "scale-out test secret, the same on every instance";

/// One `saas-host serve` child process.
pub(crate) struct Instance {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) base: String,
}

impl Instance {
    pub(crate) async fn spawn(database_url: &str, limits: &Path) -> Instance {
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

    pub(crate) fn signal(&self, sig: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status();
        }
    }
}

/// nginx running a config generated from `deploy/nginx.conf`; stopped by
/// pid (SIGTERM to the master, which stops its workers) on drop.
pub(crate) struct Nginx {
    pub(crate) child: std::process::Child,
    pub(crate) base: String,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) fn nginx_available() -> bool {
    std::process::Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn free_port() -> u16 {
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
pub(crate) fn render(
    conf: &str,
    upstreams: &[u16],
    options: Option<&str>,
    listen: u16,
    dir: &Path,
) -> String {
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
    pub(crate) async fn start(upstreams: &[u16], options: Option<&str>) -> Nginx {
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
            // Any answer: nginx listens (the upstreams were up before it,
            // except a dying one, which makes it answer 502).
            if http.get(format!("{}/healthz", n.base)).send().await.is_ok() {
                return n;
            }
            if let Ok(Some(st)) = n.child.try_wait() {
                let log =
                    std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default();
                panic!("nginx exited at start ({st}): {log}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nginx did not answer");
    }

    pub(crate) fn access_log(&self) -> String {
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

pub(crate) fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub(crate) async fn send(
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
pub(crate) async fn register(http: &Client, base: &str, email: &str) -> (String, String) {
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
pub(crate) async fn rows(
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
pub(crate) fn upstream_counts(log: &str, path: &str) -> HashMap<u16, usize> {
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

/// Drops the test schema at the end, whatever happened.
pub(crate) struct DropSchema(pub(crate) Option<String>);

impl Drop for DropSchema {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            crate::common::drop_pg_schema(s);
        }
    }
}

/// A stand-in upstream that reads each request whole and closes the
/// connection without answering: an instance dying after the request
/// reached it. Counts the requests by method.
pub(crate) async fn dying_upstream() -> (u16, Arc<Mutex<HashMap<String, usize>>>) {
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
