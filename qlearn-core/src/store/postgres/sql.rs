//! PostgreSQL's SQL: the batch statements, the columns of users, keys and
//! models and how a row decodes, loading and inserting Q-rows, and the
//! migration dialect (run under a transaction-scoped advisory lock).

use postgres::{Client, Row, Transaction};

use super::{corrupt, pg, BACKEND, INSERT_CHUNK};
use crate::error::{Error, Result};
use crate::model::Learner;
use crate::state::StateKey;
use crate::store::encoding::{decode_key, decode_learner, decode_values, encode_key, values_bytes};
use crate::store::migrations::{self, Dialect, Migration};
use crate::store::{ApiKey, ModelInfo, User};
use crate::table::QTable;

pub(super) const USER_COLS: &str =
    "id, email, password_hash, tier, role, created_at, password_changed_at, disabled";
pub(super) const MODEL_COLS: &str =
    "mid, id, owner, name, config, learner, returns, n_rows, created_at, updated_at";

/// Column 6: whether the model logs decisions (a logging predict on such a
/// model leaves the batch for the decision path).
pub(super) const SQL_LOCK_MODELS: &str =
    "SELECT mid, id, config, learner, returns, n_rows, decisions IS NOT NULL FROM models \
     WHERE id = ANY($1::text[]) AND owner = $2 ORDER BY id FOR UPDATE";
/// The common table expressions of a debit (see [`SQL_DEBIT`]): `m` the
/// month's row as granted (no row when refused), `d` the day's rows by kind.
/// `$after` is a condition evaluated before the usage row is touched (what
/// must be locked first).
macro_rules! debit_cte {
    ($after:literal) => {
        concat!(
            "m AS ( \
           INSERT INTO usage_month AS u (user_id, month, calls, overage) \
           SELECT $1::text, $2::text, $3::int8, COALESCE(GREATEST(0, $3::int8 - $8::int8), 0) \
           WHERE ",
            $after,
            " ($4::int8 IS NULL OR $3::int8 <= $4::int8) \
           ON CONFLICT (user_id, month) DO UPDATE SET calls = u.calls + excluded.calls, \
             overage = u.overage + COALESCE(GREATEST(0, u.calls + excluded.calls - $8::int8) \
               - GREATEST(0, u.calls - $8::int8), 0) \
           WHERE $4::int8 IS NULL OR u.calls + excluded.calls <= $4::int8 \
           RETURNING calls), \
         d AS ( \
           INSERT INTO usage_day AS d (user_id, month, day, kind, calls) \
           SELECT $1::text, $2::text, $5::int2, k.kind, k.n \
           FROM m, unnest($6::text[], $7::int8[]) AS k(kind, n) \
           ON CONFLICT (user_id, month, day, kind) DO UPDATE SET calls = d.calls + excluded.calls)"
        )
    };
}

/// [`SQL_LOCK_MODELS`] and [`SQL_DEBIT`] of a whole batch in one round
/// trip; every row carries whether the debit was granted. Both the model
/// rows (`FOR UPDATE`, re-read at their latest version) and the usage row
/// (`ON CONFLICT DO UPDATE`) are locked at their newest committed version,
/// so nothing here reads a stale snapshot. All the models are locked (the
/// debit counts them first) before the usage row, the order of every other
/// transaction that takes both (a decision call locks its model, then
/// debits), so a batch of several models cannot deadlock with a decision
/// call on its second. Parameters: [`SQL_DEBIT`]'s, then the model ids
/// (`$9`). Columns: [`SQL_LOCK_MODELS`]'s, then whether the debit was
/// granted (7).
pub(super) const SQL_DEBIT_LOCK_MODELS: &str = concat!(
    "WITH l AS (SELECT mid, id, config, learner, returns, n_rows, decisions IS NOT NULL AS logs \
     FROM models WHERE id = ANY($9::text[]) AND owner = $1 ORDER BY id FOR UPDATE), ",
    debit_cte!("(SELECT COUNT(*) FROM l) > 0 AND"),
    " SELECT l.*, (SELECT COUNT(*) FROM m) FROM l ORDER BY id"
);
pub(super) const SQL_FETCH_ROWS: &str = "SELECT q.mid, q.row_no, q.key, q.vals FROM q_rows q \
     JOIN unnest($1::int8[], $2::bytea[]) AS w(mid, key) ON q.mid = w.mid AND q.key = w.key";
/// The debit of `$3` calls (negative: a give-back in the same transaction)
/// by user `$1` in month `$2`, day `$5`, split by kind (`$6`, `$7`), in
/// one statement: granted only when `$4` (the tier's hard limit, NULL for
/// none) is not passed; returns the new count, no row when refused.
/// `usage_month.overage` counts the calls past `$8` (the quota of a tier
/// with overage, NULL for none): the change of `max(0, calls - $8)`, which
/// for a debit is what [`check_quota`](crate::tenancy::check_quota) grants
/// as overage and for a give-back returns exactly what was past the quota.
pub(super) const SQL_DEBIT: &str = concat!("WITH ", debit_cte!(""), " SELECT calls FROM m");
pub(super) const SQL_WRITE_BACK: &str = "WITH r AS ( \
       INSERT INTO q_rows (mid, row_no, key, vals) \
       SELECT * FROM unnest($1::int8[], $2::int8[], $3::bytea[], $4::bytea[]) \
       ON CONFLICT (mid, row_no) DO UPDATE SET vals = excluded.vals) \
     UPDATE models m SET learner = v.learner, returns = COALESCE(v.returns, m.returns), \
       n_rows = v.n_rows, updated_at = COALESCE(v.updated_at, m.updated_at) \
     FROM unnest($5::int8[], $6::bytea[], $7::bytea[], $8::int8[], $9::int8[]) \
       AS v(mid, learner, returns, n_rows, updated_at) WHERE m.mid = v.mid";

pub(super) fn user_from_row(r: &Row) -> Result<User> {
    let tier: String = r.get(3);
    let role: String = r.get(4);
    Ok(User {
        id: r.get(0),
        email: r.get(1),
        password_hash: r.get(2),
        tier: tier
            .parse()
            .map_err(|_| corrupt(format!("unknown tier {tier:?}")))?,
        role: role
            .parse()
            .map_err(|_| corrupt(format!("unknown role {role:?}")))?,
        created_at: r.get(5),
        password_changed_at: r.get(6),
        disabled: r.get(7),
    })
}

pub(super) fn key_from_row(r: &Row, at: usize) -> Result<ApiKey> {
    let scope: String = r.get(at + 6);
    Ok(ApiKey {
        id: r.get(at),
        user_id: r.get(at + 1),
        name: r.get(at + 2),
        prefix: r.get(at + 3),
        created_at: r.get(at + 4),
        last_used_at: r.get(at + 5),
        scope: scope
            .parse()
            .map_err(|_| corrupt(format!("unknown API key scope {scope:?}")))?,
        expires_at: r.get(at + 7),
    })
}

pub(super) fn info_from_row(r: &Row) -> Result<(i64, ModelInfo, Learner)> {
    let config: String = r.get(4);
    let learner = decode_learner(BACKEND, &config, r.get(5), r.get(6))?;
    let info = ModelInfo::of(r.get(1), r.get(2), r.get(3), &learner, r.get(8), r.get(9));
    Ok((r.get(0), info, learner))
}

/// `owner`'s model `id` in `tx`, its row locked by `lock` (`FOR SHARE` or
/// `FOR UPDATE`): `(mid, info, learner, n_rows)`; [`Error::NotFound`] for
/// an unknown id or another owner's model.
pub(super) fn model_row(
    tx: &mut Transaction<'_>,
    owner: &str,
    id: &str,
    lock: &'static str,
) -> Result<(i64, ModelInfo, Learner, i64)> {
    let row = tx
        .query_opt(
            &format!("SELECT {MODEL_COLS} FROM models WHERE id = $1 AND owner = $2 {lock}"),
            &[&id, &owner],
        )
        .map_err(pg)?
        .ok_or(Error::NotFound("model"))?;
    let (mid, info, learner) = info_from_row(&row)?;
    Ok((mid, info, learner, row.get(7)))
}

/// Loads `(keys, values)` of rows `from..to` of a model, in order.
pub(super) fn load_rows(
    tx: &mut Transaction<'_>,
    mid: i64,
    width: usize,
    from: i64,
    to: i64,
) -> Result<(Vec<StateKey>, Vec<f64>)> {
    let rows = tx
        .query(
            "SELECT row_no, key, vals FROM q_rows WHERE mid = $1 AND row_no >= $2 \
             AND row_no < $3 ORDER BY row_no",
            &[&mid, &from, &to],
        )
        .map_err(pg)?;
    let mut keys = Vec::with_capacity(rows.len());
    let mut values = Vec::with_capacity(rows.len() * width);
    for (i, r) in rows.iter().enumerate() {
        let row_no: i64 = r.get(0);
        if row_no != from + i as i64 {
            return Err(corrupt(format!(
                "Q-row {row_no} where {} was expected",
                from + i as i64
            )));
        }
        keys.push(decode_key(BACKEND, r.get(1))?);
        decode_values(BACKEND, r.get(2), width, &mut values)?;
    }
    Ok((keys, values))
}

/// Inserts rows `start..` of `table` as rows numbered from `start`.
pub(super) fn insert_rows(tx: &mut Transaction<'_>, mid: i64, table: &QTable) -> Result<()> {
    let mut start = 0;
    while start < table.len() {
        let end = (start + INSERT_CHUNK).min(table.len());
        let mut row_nos = Vec::with_capacity(end - start);
        let mut keys = Vec::with_capacity(end - start);
        let mut vals = Vec::with_capacity(end - start);
        for i in start..end {
            let Some((key, v)) = table.row_at(i) else {
                break;
            };
            row_nos.push(i as i64);
            let mut k = Vec::with_capacity(16);
            encode_key(key, &mut k);
            keys.push(k);
            vals.push(values_bytes(v));
        }
        tx.execute(
            "INSERT INTO q_rows (mid, row_no, key, vals) \
             SELECT $1::int8, * FROM unnest($2::int8[], $3::bytea[], $4::bytea[])",
            &[&mid, &row_nos, &keys, &vals],
        )
        .map_err(pg)?;
        start = end;
    }
    Ok(())
}

/// A stable 64-bit hash (FNV-1a) naming the migration lock of a schema.
pub(super) fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"qlearn-migrations:".iter().chain(schema.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

pub(super) fn migrate(client: &mut Client, list: &[Migration]) -> Result<()> {
    let mut tx = client.transaction().map_err(pg)?;
    // NULL when no schema of the search_path exists (e.g. `options=-csearch_path=x`
    // naming a schema nobody created): a clear error, not a panic.
    let schema: Option<String> = tx
        .query_one("SELECT current_schema()::text", &[])
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    let schema = schema.ok_or_else(|| {
        Error::storage(
            BACKEND,
            "no schema of the connection's search_path exists; create it or fix the search_path in DATABASE_URL",
        )
    })?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(&schema)])
        .map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
           version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .map_err(pg)?;
    migrations::apply(BACKEND, &mut tx, list)?;
    super::decisions::tidy_logs(&mut tx)?;
    tx.commit().map_err(pg)
}

impl Dialect for Transaction<'_> {
    type Error = postgres::Error;

    fn current_version(&mut self) -> Result<i64> {
        let v: i32 = self
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(pg)?
            .get(0);
        Ok(i64::from(v))
    }

    fn run(&mut self, sql: &str) -> std::result::Result<(), postgres::Error> {
        self.batch_execute(sql)
    }

    fn record(&mut self, m: &Migration) -> Result<()> {
        self.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) \
             VALUES ($1, $2, EXTRACT(EPOCH FROM now())::bigint)",
            &[&(m.version as i32), &m.name],
        )
        .map(drop)
        .map_err(pg)
    }
}

#[cfg(test)]
mod tests {
    use super::lock_key;

    /// The migration lock's key is FNV-1a of `qlearn-migrations:<schema>`
    /// (stable across builds and instances, which must agree on it), and
    /// schemas get keys of their own: a collision would make two schemas'
    /// migrations wait for each other.
    #[test]
    fn lock_keys_are_fnv1a_and_per_schema() {
        // FNV-1a 64 of b"qlearn-migrations:public", computed independently.
        assert_eq!(lock_key("public"), -1_991_775_303_266_543_497);
        let keys: std::collections::HashSet<i64> = ["public", "a", "b", "test_1", "test_2"]
            .iter()
            .map(|s| lock_key(s))
            .collect();
        assert_eq!(keys.len(), 5);
    }
}
