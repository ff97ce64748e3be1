//! Versioned schema migrations of the SQL stores, embedded in the binary.
//!
//! Each backend has its own ordered list. A store applies, at open, every
//! migration newer than the highest version recorded in its
//! `schema_migrations` table, each in a transaction together with its
//! record, and refuses a database whose recorded version is newer than this
//! build knows (an older binary must not write a newer schema). Migrations
//! are append-only: a released file never changes; a schema change is a new
//! file with the next version.
//!
//! `apply` is that procedure, written once; each backend supplies its
//! `Dialect` (how to read the version, run a file and record it) and the
//! transaction (and, for PostgreSQL, the lock) around it.

use crate::error::{Error, Result};

/// One migration: its version (1, 2, ...), a short name and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing from 1.
    pub version: u32,
    /// What it does, e.g. `init`.
    pub name: &'static str,
    /// The statements, run as one batch in one transaction.
    pub sql: &'static str,
}

/// SQLite's migrations, oldest first.
#[cfg(feature = "sqlite")]
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "api_key_scope_expiry",
        sql: include_str!("sqlite/0002_api_key_scope_expiry.sql"),
    },
    Migration {
        version: 3,
        name: "decisions",
        sql: include_str!("sqlite/0003_decisions.sql"),
    },
    Migration {
        version: 4,
        name: "user_disabled",
        sql: include_str!("sqlite/0004_user_disabled.sql"),
    },
    Migration {
        version: 5,
        name: "chunked_tables",
        sql: include_str!("sqlite/0005_chunked_tables.sql"),
    },
    Migration {
        version: 6,
        name: "usage_kinds",
        sql: include_str!("sqlite/0006_usage_kinds.sql"),
    },
    Migration {
        version: 7,
        name: "decision_rows",
        sql: include_str!("sqlite/0007_decision_rows.sql"),
    },
    Migration {
        version: 8,
        name: "billing",
        sql: include_str!("sqlite/0008_billing.sql"),
    },
    Migration {
        version: 9,
        name: "evaluations",
        sql: include_str!("sqlite/0009_evaluations.sql"),
    },
    Migration {
        version: 10,
        name: "decision_baseline",
        sql: include_str!("sqlite/0010_decision_baseline.sql"),
    },
    Migration {
        version: 11,
        name: "evaluation_retention",
        sql: include_str!("sqlite/0011_evaluation_retention.sql"),
    },
    Migration {
        version: 12,
        name: "evaluation_finish_index",
        sql: include_str!("sqlite/0012_evaluation_finish_index.sql"),
    },
    Migration {
        version: 13,
        name: "evaluation_owner_running",
        sql: include_str!("sqlite/0013_evaluation_owner_running.sql"),
    },
    Migration {
        version: 14,
        name: "q_rows_by_id",
        sql: include_str!("sqlite/0014_q_rows_by_id.sql"),
    },
    Migration {
        version: 15,
        name: "decisions_due_by_model",
        sql: include_str!("sqlite/0015_decisions_due_by_model.sql"),
    },
];

/// PostgreSQL's migrations, oldest first.
#[cfg(feature = "postgres")]
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "api_key_scope_expiry",
        sql: include_str!("postgres/0002_api_key_scope_expiry.sql"),
    },
    Migration {
        version: 3,
        name: "decisions",
        sql: include_str!("postgres/0003_decisions.sql"),
    },
    Migration {
        version: 4,
        name: "user_disabled",
        sql: include_str!("postgres/0004_user_disabled.sql"),
    },
    Migration {
        version: 5,
        name: "rate_buckets",
        sql: include_str!("postgres/0005_rate_buckets.sql"),
    },
    Migration {
        version: 6,
        name: "event_streams",
        sql: include_str!("postgres/0006_event_streams.sql"),
    },
    Migration {
        version: 7,
        name: "usage_kinds",
        sql: include_str!("postgres/0007_usage_kinds.sql"),
    },
    Migration {
        version: 8,
        name: "decision_rows",
        sql: include_str!("postgres/0008_decision_rows.sql"),
    },
    Migration {
        version: 9,
        name: "billing",
        sql: include_str!("postgres/0009_billing.sql"),
    },
    Migration {
        version: 10,
        name: "evaluations",
        sql: include_str!("postgres/0010_evaluations.sql"),
    },
    Migration {
        version: 11,
        name: "decision_baseline",
        sql: include_str!("postgres/0011_decision_baseline.sql"),
    },
    Migration {
        version: 12,
        name: "evaluation_retention",
        sql: include_str!("postgres/0012_evaluation_retention.sql"),
    },
    Migration {
        version: 13,
        name: "evaluation_finish_index",
        sql: include_str!("postgres/0013_evaluation_finish_index.sql"),
    },
    Migration {
        version: 14,
        name: "evaluation_owner_running",
        sql: include_str!("postgres/0014_evaluation_owner_running.sql"),
    },
    Migration {
        version: 15,
        name: "decisions_due_by_model",
        sql: include_str!("postgres/0015_decisions_due_by_model.sql"),
    },
];

/// The newest version in `list` (0 for an empty list).
pub fn latest(list: &[Migration]) -> u32 {
    list.iter().map(|m| m.version).max().unwrap_or(0)
}

/// What [`apply`] needs from a backend, inside one open transaction.
pub(crate) trait Dialect {
    /// The error a migration's statements fail with.
    type Error: std::fmt::Display;
    /// The highest version recorded in `schema_migrations` (0 when none).
    fn current_version(&mut self) -> Result<i64>;
    /// Runs a migration's statements.
    fn run(&mut self, sql: &str) -> std::result::Result<(), Self::Error>;
    /// Records that `m` has been applied.
    fn record(&mut self, m: &Migration) -> Result<()>;
}

/// Applies every migration of `list` newer than the database's version, in
/// order, through `db` (the caller commits); refuses a database newer than
/// `list`.
pub(crate) fn apply(
    backend: &'static str,
    db: &mut impl Dialect,
    list: &[Migration],
) -> Result<()> {
    let current = db.current_version()?;
    let latest = i64::from(latest(list));
    if current > latest {
        return Err(Error::storage(
            backend,
            format!(
                "the database has schema version {current}, newer than this build knows \
                 ({latest}); use a newer qlearn"
            ),
        ));
    }
    for m in list.iter().filter(|m| i64::from(m.version) > current) {
        db.run(m.sql).map_err(|e| {
            Error::storage(
                backend,
                format!("migration {} ({}) failed: {e}", m.version, m.name),
            )
        })?;
        db.record(m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[allow(unused_imports)]
    use super::*;

    #[allow(dead_code)]
    fn check(list: &[Migration]) {
        for (i, m) in list.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "versions are 1, 2, ... in order");
            assert!(!m.sql.trim().is_empty());
        }
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_versions_are_dense() {
        check(SQLITE);
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_versions_are_dense() {
        check(POSTGRES);
    }
}
