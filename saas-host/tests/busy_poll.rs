//! `--busy-poll-us`: the real binary with a busy-polling worker answers
//! concurrent updates as without it (every acknowledged update counted),
//! and once the traffic stops it goes back to sleep instead of spinning.
//! Process CPU time read from `/proc` (Linux). In process: each polling turn
//! gives the CPU away, and only while it polls. (Nothing else in this test
//! binary makes `Durable`s: the count of pending commits is process-wide.)

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use qlearn_core::store::Durable;
use saas_host::busy_poll;

use serde_json::{json, Value};

const SECRET: &str = "busy poll test secret, long enough for HS256 keys";

/// The server with `args`, once it logs that it serves, and its address.
fn serve(dir: &std::path::Path, args: &[&str]) -> (Child, String) {
    let limits = dir.join("limits.json");
    std::fs::write(
        &limits,
        r#"{"free": {"monthly_calls": null, "max_models": null, "rate_per_second": 1000000, "burst": 1000000}}"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_saas-host"))
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .env("DATABASE_URL", format!("sqlite://{}/q.db", dir.display()))
        .env("LIMITS_FILE", &limits)
        .env("SECRET_KEY", SECRET)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("BUSY_POLL_US")
        .env_remove("WORKER_THREADS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines().map_while(Result::ok);
    let mut polling = false;
    let addr = lines
        .find_map(|l| {
            polling |= l.contains("busy polling");
            if !l.contains("\"serving\"") {
                return None;
            }
            let v: Value = serde_json::from_str(&l).ok()?;
            v["fields"]["addr"].as_str().map(str::to_owned)
        })
        .expect("the server serves");
    assert!(polling, "the server says it polls");
    // Keep reading its log so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

/// The process's CPU time so far (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is the
    // 3rd field, utime the 14th, stime the 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// POSTs `body` (with `token` as bearer, if any); the answer's JSON.
async fn post(http: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut req = http.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().json().await.unwrap()
}

/// The server process, killed (by pid) and reaped when dropped, also when
/// an assertion fails first.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_polling_server_counts_every_update_and_sleeps_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = serve(
        dir.path(),
        &["--busy-poll-us", "1000", "--worker-threads", "1"],
    );
    let child = Stop(child);
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let reg = post(
        &http,
        format!("{base}/register"),
        None,
        json!({"email": "busy@example.com", "password": "correct horse battery"}),
    )
    .await;
    let token = reg["access_token"].as_str().unwrap().to_owned();
    let model = post(
        &http,
        format!("{base}/models"),
        Some(&token),
        json!({"name": "busy", "n_actions": 4}),
    )
    .await;
    let model = model["id"].as_str().unwrap().to_owned();

    // 16 clients at once, 25 updates each: commits in flight throughout.
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (http, base, token, model) =
                (http.clone(), base.clone(), token.clone(), model.clone());
            tokio::spawn(async move {
                for i in 0..25 {
                    let r = http
                        .post(format!("{base}/update"))
                        .bearer_auth(&token)
                        .json(&json!({"model_id": model, "state": [c, i], "action": i % 4,
                                      "reward": 1.0, "next_state": [c, i + 1], "done": false}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let info: Value = http
        .get(format!("{base}/models/{model}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["stats"]["updates"], 400, "{info}");

    // Idle: a poller that kept spinning would take about a CPU-second here.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tick = 1.0 / 100.0; // USER_HZ: 100 on Linux
    let before = cpu_ticks(child.0.id());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = (cpu_ticks(child.0.id()) - before) as f64 * tick;
    drop(child);
    assert!(used < 0.3, "{used} s of CPU in one idle second");
}

/// The polling turns that gave the CPU away (`busy_poll::spawn_with`).
static GAVE_WAY: AtomicUsize = AtomicUsize::new(0);

fn count_turn() {
    GAVE_WAY.fetch_add(1, Ordering::SeqCst);
}

/// A commit that never resolves (dropped pending).
fn never() -> impl Future<Output = qlearn_core::Result<()>> + Send {
    std::future::poll_fn(|_| Poll::Pending)
}

#[tokio::test(flavor = "current_thread")]
async fn every_fourth_polling_turn_gives_the_cpu_away_and_only_while_polling() {
    assert_eq!(busy_poll::GIVE_WAY_EVERY, 4);
    let poller = busy_poll::spawn_with(Duration::from_micros(100), 4, count_turn);
    // Nothing in flight: past its first tail, the poller sleeps.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let idle = GAVE_WAY.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(GAVE_WAY.load(Ordering::SeqCst), idle, "asleep");

    // A commit in flight: the poller runs a turn whenever this task
    // yields (one each on this single-threaded runtime), and gives the CPU
    // away at every fourth.
    let pending = Durable::new(never());
    for _ in 0..80 {
        tokio::task::yield_now().await;
    }
    let turns = GAVE_WAY.load(Ordering::SeqCst) - idle;
    assert!(
        (16..=24).contains(&turns),
        "{turns} of about 80 turns gave the CPU away, not about a quarter"
    );

    // Past the tail after the last commit left, it sleeps again.
    drop(pending);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after = GAVE_WAY.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(GAVE_WAY.load(Ordering::SeqCst), after, "asleep again");
    poller.abort();
}
