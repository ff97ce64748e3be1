//! For the PostgreSQL store's unit tests: a store on a schema of its own
//! (`QLEARN_TEST_POSTGRES_URL`, by default the local server), dropped at
//! the end. Without a server the tests skip loudly, unless
//! `QLEARN_REQUIRE_POSTGRES=1` makes that a failure.
use std::io::Write as _;

use super::PgStore;

/// A store on a schema of its own, dropped at the end (also on failure).
pub(super) struct Schema(pub(super) PgStore);

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = self.0.drop_schema();
    }
}

/// A store on schema `{name}_{pid}`, or `None` (said on stderr) when no
/// server answers and none is required.
pub(super) fn connect(name: &str) -> Option<Schema> {
    let url = std::env::var("QLEARN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("{name}_{}", std::process::id());
    match PgStore::connect_with_schema(&url, &schema) {
        Ok(s) => Some(Schema(s)),
        Err(e) if std::env::var("QLEARN_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") => {
            panic!("[postgres] not reachable at {url}: {e}")
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: PostgreSQL not reachable at {url} ({e})"
            );
            None
        }
    }
}
