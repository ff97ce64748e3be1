//! The connection pool of [`PgStore`](super::PgStore): r2d2 over the sync
//! client, each connection setting the store's schema and keeping its
//! prepared statements.

use std::collections::HashMap;

use postgres::{Client, Statement, Transaction};

use super::tls;

/// A pooled connection and its prepared statements.
pub(super) struct PgConn {
    pub(super) client: Client,
    pub(super) statements: HashMap<&'static str, Statement>,
}

/// Prepares `sql` once per connection.
pub(super) fn stmt(
    statements: &mut HashMap<&'static str, Statement>,
    tx: &mut Transaction<'_>,
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
        })
    }

    fn is_valid(&self, c: &mut PgConn) -> std::result::Result<(), postgres::Error> {
        c.client.simple_query("").map(|_| ())
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
