//! `--pin-workers`: the real binary's async workers each bound to one CPU,
//! every other thread (the SQLite writer, the blocking pool, even when a
//! pinned worker started it) left free; without the flag no thread is
//! bound. Read from `/proc` (Linux).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

const SECRET: &str = "pinning test secret, long enough for HS256 keys";

/// Registers `n` users at once over raw HTTP/1.1: store calls on the
/// blocking pool, whose threads the (pinned) workers start.
fn register_at_once(addr: &str, n: usize) {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let addr = addr.to_owned();
            std::thread::spawn(move || {
                let body = format!(
                    r#"{{"email":"pin{i}@example.com","password":"correct horse battery"}}"#
                );
                let mut s = TcpStream::connect(&addr).unwrap();
                write!(
                    s,
                    "POST /register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// The server started with `args`, once it logs that it serves, and its
/// address.
fn serve(dir: &std::path::Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_saas-host"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--worker-threads",
            "2",
        ])
        .args(args)
        .env("DATABASE_URL", format!("sqlite://{}/q.db", dir.display()))
        .env("SECRET_KEY", SECRET)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("PIN_WORKERS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let addr = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains("\"serving\""))
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l).ok()?;
            v["fields"]["addr"].as_str().map(str::to_owned)
        })
        .expect("the server serves");
    (child, addr)
}

/// Each thread's name and the CPUs it may run on.
fn threads(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap();
        let status = std::fs::read_to_string(path.join("status")).unwrap();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_owned();
        out.push((name.trim().to_owned(), cpus));
    }
    out
}

fn allowed() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"));
    line.unwrap().trim().to_owned()
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn pinned_workers_get_one_cpu_each_and_nothing_else_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = serve(dir.path(), &["--pin-workers"]);
    register_at_once(&addr, 8);
    let all = threads(child.id());
    stop(child);
    let bound: Vec<&(String, String)> = all.iter().filter(|(_, c)| *c != allowed()).collect();
    assert_eq!(bound.len(), 2, "two workers bound, nothing else: {all:?}");
    for (name, cpus) in &bound {
        assert_eq!(name, "tokio-rt-worker", "{all:?}");
        assert!(cpus.parse::<usize>().is_ok(), "one CPU each: {all:?}");
    }
    if saas_host::pinning::allowed_cpus().len() >= 2 {
        assert_ne!(bound[0].1, bound[1].1, "different CPUs: {all:?}");
    }
    let writer = all.iter().find(|(n, _)| n.starts_with("qlearn-sqlite-w"));
    assert_eq!(writer.map(|(_, c)| c.clone()), Some(allowed()), "{all:?}");
}

#[test]
fn without_the_flag_no_thread_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = serve(dir.path(), &[]);
    register_at_once(&addr, 2);
    let all = threads(child.id());
    stop(child);
    assert!(all.iter().all(|(_, c)| *c == allowed()), "{all:?}");
}
