//! SQLite's side of the schema: opening a connection, the migration
//! dialect, the columns of users, keys and models and how a row decodes,
//! and the bulk insert of a chunk of a Q-table.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{corrupt, sq, BACKEND, BUSY_TIMEOUT_MS};
use crate::error::{Error, Result};
use crate::model::Learner;
use crate::store::encoding::{decode_learner, encode_key, encode_values};
use crate::store::migrations::{self, Dialect, Migration};
use crate::store::rules::now_unix;
use crate::store::{ApiKey, ModelInfo, User};
use crate::table::QTable;
use crate::tenancy::{Role, Tier};

pub(super) fn open_connection(path: &Path) -> Result<Connection> {
    let c = Connection::open(path)
        .map_err(|e| Error::storage(BACKEND, format!("cannot open {}: {e}", path.display())))?;
    c.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into()))
        .map_err(sq)?;
    Ok(c)
}

/// Applies every migration newer than the database's version, in one
/// immediate transaction.
pub(super) fn migrate(c: &mut Connection, list: &[Migration]) -> Result<()> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
           version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .map_err(sq)?;
    let mut tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sq)?;
    migrations::apply(BACKEND, &mut tx, list)?;
    tx.commit().map_err(sq)
}

impl Dialect for Transaction<'_> {
    type Error = rusqlite::Error;

    fn current_version(&mut self) -> Result<i64> {
        self.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(sq)
    }

    fn run(&mut self, sql: &str) -> rusqlite::Result<()> {
        self.execute_batch(sql)
    }

    fn record(&mut self, m: &Migration) -> Result<()> {
        self.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, now_unix()],
        )
        .map(drop)
        .map_err(sq)
    }
}

pub(super) fn user_from_row(
    r: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<(User, String, String)> {
    Ok((
        User {
            id: r.get(at)?,
            email: r.get(at + 1)?,
            password_hash: r.get(at + 2)?,
            tier: Tier::Free,
            role: Role::User,
            created_at: r.get(at + 5)?,
            password_changed_at: r.get(at + 6)?,
            disabled: r.get(at + 7)?,
        },
        r.get(at + 3)?,
        r.get(at + 4)?,
    ))
}

pub(super) fn finish_user((mut u, tier, role): (User, String, String)) -> Result<User> {
    u.tier = tier
        .parse()
        .map_err(|_| corrupt(format!("unknown tier {tier:?}")))?;
    u.role = role
        .parse()
        .map_err(|_| corrupt(format!("unknown role {role:?}")))?;
    Ok(u)
}

pub(super) const USER_COLS: &str =
    "id, email, password_hash, tier, role, created_at, password_changed_at, disabled";

pub(super) fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        created_at: r.get(4)?,
        last_used_at: r.get(5)?,
        scope: {
            let s: String = r.get(6)?;
            s.parse().map_err(|e: Error| {
                rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, e.into())
            })?
        },
        expires_at: r.get(7)?,
    })
}

pub(super) const KEY_COLS: &str =
    "k.id, k.user_id, k.name, k.prefix, k.created_at, k.last_used_at, k.scope, k.expires_at";

/// The number of columns in [`KEY_COLS`] (where a joined row's next table starts).
pub(super) const KEY_COL_COUNT: usize = 8;

pub(super) fn user_exists(c: &Connection, id: &str) -> Result<bool> {
    c.query_row("SELECT 1 FROM users WHERE id = ?1", [id], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
        .map_err(sq)
}

/// A model's metadata row, decoded.
pub(super) struct ModelRow {
    pub(super) mid: i64,
    /// The table number its Q-rows are stored under (the high bits of
    /// `q_rows.id`).
    pub(super) tab: i64,
    pub(super) id: String,
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) learner: Learner,
    pub(super) n_rows: i64,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

pub(super) const MODEL_COLS: &str =
    "mid, id, owner, name, config, learner, returns, n_rows, created_at, updated_at, \
     COALESCE(tab, mid)";

pub(super) fn model_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ModelRow>> {
    let config: String = r.get(4)?;
    let learner: Vec<u8> = r.get(5)?;
    let returns: Vec<u8> = r.get(6)?;
    let decoded = decode_learner(BACKEND, &config, &learner, &returns);
    Ok(match decoded {
        Ok(learner) => Ok(ModelRow {
            mid: r.get(0)?,
            id: r.get(1)?,
            owner: r.get(2)?,
            name: r.get(3)?,
            learner,
            n_rows: r.get(7)?,
            created_at: r.get(8)?,
            updated_at: r.get(9)?,
            tab: r.get(10)?,
        }),
        Err(e) => Err(e),
    })
}

impl ModelRow {
    pub(super) fn info(self) -> ModelInfo {
        ModelInfo::of(
            self.id,
            self.owner,
            self.name,
            &self.learner,
            self.created_at,
            self.updated_at,
        )
    }
}

/// Rows a table can hold in SQLite. A Q-row's key (`q_rows.id`, one
/// integer) is its table number times this plus its row number: a rowid
/// table's row is updated in place, where a two-column key's index record
/// was deleted and inserted again (issue 16, migration 14).
pub(super) const ROWS_PER_TAB: i64 = 1 << 32;

/// The last table number whose rows' keys fit in an `i64`.
pub(super) const MAX_TAB: i64 = i64::MAX / ROWS_PER_TAB;

/// The key (`q_rows.id`) of row `row_no` of table `tab`; an error past
/// [`MAX_TAB`] or [`ROWS_PER_TAB`] (never reached by a table that fits in
/// memory, but a key must not wrap onto another table's rows).
pub(super) fn row_id(tab: i64, row_no: i64) -> rusqlite::Result<i64> {
    if (0..=MAX_TAB).contains(&tab) && (0..ROWS_PER_TAB).contains(&row_no) {
        Ok(tab * ROWS_PER_TAB + row_no)
    } else {
        Err(rusqlite::Error::ToSqlConversionFailure(
            format!("Q-row {row_no} of table {tab} is past the bounds of a row key").into(),
        ))
    }
}

/// The first and the last key (inclusive) of table `tab`'s rows.
pub(super) fn tab_ids(tab: i64) -> (i64, i64) {
    let first = tab.saturating_mul(ROWS_PER_TAB);
    (first, first.saturating_add(ROWS_PER_TAB - 1))
}

/// Rows per execution of the multi-row insert of a chunk of a table.
pub(super) const ROWS_PER_INSERT: usize = 128;

/// `INSERT INTO q_rows ... VALUES (?,?,?), ...` for `rows` rows.
pub(super) fn multi_row_insert(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO q_rows (id, key, vals) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?)");
    }
    sql
}

/// Rows written in one writer job when a whole table is written or
/// deleted (an import, a reshape, a deleted model): at most this many rows,
/// and at most [`CHUNK_BYTES`] of keys and values, so another tenant's
/// commit never waits long for it (about 1 ms; `tables.rs`).
pub(super) const CHUNK_ROWS: usize = 1024;

/// Bytes of encoded keys and values past which a chunk ends early (rows of
/// many actions or long keys).
pub(super) const CHUNK_BYTES: usize = 256 << 10;

/// Consecutive rows of a table (a chunk), encoded for insertion.
pub(super) struct EncodedRows {
    /// The row number of the first row.
    pub(super) first: usize,
    pub(super) keys: Vec<u8>,
    /// End offset of each key in `keys`.
    pub(super) ends: Vec<usize>,
    pub(super) vals: Vec<u8>,
    pub(super) width: usize,
}

impl EncodedRows {
    /// The chunk of `table` starting at row `first`: up to [`CHUNK_ROWS`]
    /// rows, fewer when [`CHUNK_BYTES`] is reached first (never none while
    /// rows are left).
    pub(super) fn chunk(table: &QTable, first: usize) -> Self {
        let width = table.width();
        let mut keys = Vec::new();
        let mut ends = Vec::new();
        let mut vals = Vec::new();
        let mut pos = first;
        while ends.len() < CHUNK_ROWS && keys.len() + vals.len() < CHUNK_BYTES {
            let Some((k, v)) = table.row_at(pos) else {
                break;
            };
            encode_key(k, &mut keys);
            ends.push(keys.len());
            encode_values(v, &mut vals);
            pos += 1;
        }
        EncodedRows {
            first,
            keys,
            ends,
            vals,
            width,
        }
    }

    /// The number of rows.
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Inserts every row under table number `tab`, [`ROWS_PER_INSERT`] rows
    /// per statement execution (a large table spends its time in
    /// per-statement overhead otherwise).
    pub(super) fn insert(&self, c: &Connection, tab: i64) -> rusqlite::Result<()> {
        let w8 = self.width * 8;
        let n = self.ends.len();
        let full = n / ROWS_PER_INSERT * ROWS_PER_INSERT;
        let id = |r: usize| row_id(tab, i64::try_from(self.first + r).unwrap_or(i64::MAX));
        let mut many = c.prepare_cached(&multi_row_insert(ROWS_PER_INSERT))?;
        let mut key_start = 0;
        let mut i = 0;
        while i < full {
            for j in 0..ROWS_PER_INSERT {
                let r = i + j;
                let at = j * 3;
                let end = self.ends[r];
                many.raw_bind_parameter(at + 1, id(r)?)?;
                many.raw_bind_parameter(at + 2, &self.keys[key_start..end])?;
                many.raw_bind_parameter(at + 3, &self.vals[r * w8..(r + 1) * w8])?;
                key_start = end;
            }
            many.raw_execute()?;
            i += ROWS_PER_INSERT;
        }
        let mut one = c.prepare_cached("INSERT INTO q_rows (id, key, vals) VALUES (?1, ?2, ?3)")?;
        for r in full..n {
            let end = self.ends[r];
            one.execute(params![
                id(r)?,
                &self.keys[key_start..end],
                &self.vals[r * w8..(r + 1) * w8]
            ])?;
            key_start = end;
        }
        Ok(())
    }
}
