//! What the `kill -9` tests share (`durability.rs`, `decisions_sigkill.rs`):
//! the PostgreSQL they use, and running this test binary again as a child
//! that runs one `entry` test with `spec` in environment variable `env`.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

/// The test database (`QLEARN_TEST_POSTGRES_URL`, else the local one).
pub fn pg_url() -> String {
    std::env::var("QLEARN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Starts this test binary again running only the test `entry`, with
/// `spec` in `env`, its stdout piped to the caller.
pub fn spawn(entry: &str, env: &str, spec: String) -> Child {
    Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .env(env, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// Waits for a child the caller meant to kill, and checks that it was
/// killed (not exited on its own).
pub fn reap(mut child: Child, killed: bool, backend: &str) {
    let status = child.wait().expect("wait child");
    assert!(
        killed,
        "[{backend}] the child ended before it was killed: {status}"
    );
    assert!(!status.success(), "[{backend}] killed, not exited");
}
