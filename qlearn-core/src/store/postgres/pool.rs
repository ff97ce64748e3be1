//! The connection pool of [`PgStore`](super::PgStore): r2d2 over the sync
//! client, each connection setting the store's schema and keeping its
//! prepared statements.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::{Client, Statement};

use super::tls;

/// A pooled connection and its prepared statements.
pub(super) struct PgConn {
    pub(super) client: Client,
    pub(super) statements: HashMap<&'static str, Statement>,
    /// When the server last answered the pool's health check.
    checked: Instant,
}

/// How long a health check vouches for a connection. r2d2 checks every
/// connection it hands out; a round trip for each one cost as much as the
/// call itself (perf on the load test: a fifth of a predict's CPU time), so
/// a connection checked within this window is handed out as it is. A
/// connection the server closed inside the window fails its next statement
/// like one that breaks between check and use always could; a closed
/// client is still never handed out (`has_broken`).
const CHECK_VALID_FOR: Duration = Duration::from_secs(1);

/// Prepares `sql` once per connection (in a transaction or not).
pub(super) fn stmt<C: postgres::GenericClient>(
    statements: &mut HashMap<&'static str, Statement>,
    tx: &mut C,
    sql: &'static str,
) -> Result<Statement, postgres::Error> {
    if let Some(s) = statements.get(sql) {
        return Ok(s.clone());
    }
    let s = tx.prepare(sql)?;
    statements.insert(sql, s.clone());
    Ok(s)
}

/// The r2d2 connection manager: connects, sets the schema, checks health.
#[derive(Clone)]
pub(super) struct Manager {
    pub(super) config: postgres::Config,
    /// Plain or TLS (`sslmode`).
    pub(super) tls: tls::Connector,
    pub(super) schema: Option<String>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<PgConn, postgres::Error> {
        let mut client = tls::connect(&self.config, &self.tls)?;
        if let Some(s) = &self.schema {
            client.batch_execute(&format!("SET search_path TO \"{s}\""))?;
        }
        Ok(PgConn {
            client,
            statements: HashMap::new(),
            checked: Instant::now(),
        })
    }

    fn is_valid(&self, c: &mut PgConn) -> std::result::Result<(), postgres::Error> {
        if c.client.is_closed() {
            // A round trip gives the error that says why.
            return c.client.simple_query("").map(|_| ());
        }
        if c.checked.elapsed() < CHECK_VALID_FOR {
            return Ok(());
        }
        c.client.simple_query("")?;
        c.checked = Instant::now();
        Ok(())
    }

    fn has_broken(&self, c: &mut PgConn) -> bool {
        c.client.is_closed()
    }
}

/// Silences r2d2's own logging of connection errors (they are returned).
#[derive(Debug)]
pub(super) struct QuietErrors;

impl r2d2::HandleError<postgres::Error> for QuietErrors {
    fn handle_error(&self, _error: postgres::Error) {}
}
