//! The rows of the decision log on SQLite (issue 14): what a decision
//! call writes ([`LogWrite`], in the writer's transaction), what it reads
//! (`FileRows`; `file_ids.rs` the ids it may hold), the listing, retention pruning in chunks of
//! [`PRUNE_CHUNK`] decisions (one small writer job each), dropping a
//! model's log in chunks, and turning the whole-log blobs of an earlier
//! version into rows at open.

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::cache::Cached;
use super::decisions::LogSlot;
use super::{sq, SqliteStore, BACKEND};
use crate::decisions::{DecisionRecord, EpisodeRecord};
use crate::error::{Error, Result};
use crate::store::decision_rows::{
    decision_from_row, decision_listing_sql, episode_from_row, episode_listing_sql,
    episode_page_of, episode_summary, meta_from_bytes, DecisionRow, EpisodeRow, Rows, SqlValue,
    DECISION_COLS, EPISODE_COLS,
};
use crate::store::decisions::{config_from_text, millis};
use crate::store::{DecisionPage, DecisionQuery, EpisodePage, EpisodeQuery};

/// Decisions (or episodes) deleted per writer job when pruning or
/// dropping a model's log.
pub(super) const PRUNE_CHUNK: usize = 1000;

/// What a model's decision call changed, for the writer: its counts and
/// the changed rows (written in order: a later row of a decision replaces
/// an earlier one).
pub(super) struct LogWrite {
    pub(super) meta: Vec<u8>,
    pub(super) decisions: Vec<DecisionRow>,
    pub(super) episodes: Vec<EpisodeRow>,
}

impl LogWrite {
    /// Adds a later write of the same model.
    pub(super) fn merge(&mut self, later: LogWrite) {
        self.meta = later.meta;
        self.decisions.extend(later.decisions);
        self.episodes.extend(later.episodes);
    }

    /// Writes it (in the writer's transaction).
    pub(super) fn flush(self, c: &Connection, mid: i64) -> rusqlite::Result<()> {
        c.prepare_cached("UPDATE models SET decision_meta = ?2 WHERE mid = ?1")?
            .execute(params![mid, self.meta])?;
        if !self.decisions.is_empty() {
            let mut st = c.prepare_cached(&format!(
                "INSERT OR REPLACE INTO decisions (mid, {DECISION_COLS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            ))?;
            for d in self.decisions {
                st.execute(params![
                    mid,
                    d.id,
                    d.episode,
                    d.step,
                    d.time_ms,
                    d.closes_ms,
                    d.state,
                    d.allowed,
                    d.action,
                    d.prob,
                    d.status,
                    d.acc,
                    d.rewards,
                    d.reward_ids,
                    d.learned,
                    d.applied_seq,
                    d.baseline
                ])?;
            }
        }
        if !self.episodes.is_empty() {
            let mut st = c.prepare_cached(&format!(
                "INSERT OR REPLACE INTO episodes (mid, {EPISODE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5)"
            ))?;
            for e in self.episodes {
                st.execute(params![mid, e.id, e.n_steps, e.end_json, e.learned_return])?;
            }
        }
        Ok(())
    }
}

/// A decision row read by rusqlite (columns in [`DECISION_COLS`]' order).
fn decision_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<DecisionRow> {
    Ok(DecisionRow {
        id: r.get(0)?,
        episode: r.get(1)?,
        step: r.get(2)?,
        time_ms: r.get(3)?,
        closes_ms: r.get(4)?,
        state: r.get(5)?,
        allowed: r.get(6)?,
        action: r.get(7)?,
        prob: r.get(8)?,
        status: r.get(9)?,
        acc: r.get(10)?,
        rewards: r.get(11)?,
        reward_ids: r.get(12)?,
        learned: r.get(13)?,
        applied_seq: r.get(14)?,
        baseline: r.get(15)?,
    })
}

/// Decisions read by `sql` with `p` (a statement kept in the
/// connection's cache).
pub(super) fn decisions_where(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<DecisionRecord>> {
    let mut st = c.prepare_cached(sql).map_err(sq)?;
    decisions_of(&mut st, p)
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            SqlValue::Int(v) => v.to_sql(),
            SqlValue::Text(v) => v.to_sql(),
        }
    }
}

/// Decisions read by statement `st` with `p`.
fn decisions_of(
    st: &mut rusqlite::Statement<'_>,
    p: impl rusqlite::Params,
) -> Result<Vec<DecisionRecord>> {
    let rows = st.query_map(p, decision_of).map_err(sq)?;
    rows.map(|r| decision_from_row(BACKEND, r.map_err(sq)?))
        .collect()
}

// Queries that name their index (`INDEXED BY`): the store runs no
// `ANALYZE`, and without statistics SQLite's planner takes a model's
// primary-key range (`mid = ?`, every decision the model logged) over a
// partial index, so each of these read the whole log of the model (and
// the prune's, once per candidate row). Preparing one fails if its index
// cannot be used; the tests below check the plans.

/// Model ?1's decision at step ?3 of episode ?2.
fn sql_step() -> String {
    format!(
        "SELECT {DECISION_COLS} FROM decisions INDEXED BY decisions_step \
         WHERE mid = ?1 AND episode = ?2 AND step = ?3"
    )
}

/// Model ?1's open decisions whose reward window closed at or before ?2:
/// a range of the index of open decisions, keyed (mid, closes_ms) since
/// migration 15, which holds this model's due decisions and nothing else
/// (keyed by deadline alone, each model's read went over every model's due
/// decisions).
fn sql_due() -> String {
    format!(
        "SELECT {DECISION_COLS} FROM decisions INDEXED BY decisions_due \
         WHERE status = 0 AND mid = ?1 AND closes_ms <= ?2"
    )
}

/// [`sql_due`] through a decision: the last deadline's ids up to `?3`.
/// `decisions_due` holds the key's id after the deadline, so the read is
/// one range that ends at the decision, not at the end of its deadline
/// (a second of a busy model's decisions share one); `TEXT` compares
/// bytewise, as the log's order does.
fn sql_due_through() -> String {
    format!(
        "SELECT {DECISION_COLS} FROM decisions INDEXED BY decisions_due \
         WHERE status = 0 AND mid = ?1 AND (closes_ms, id) <= (?2, ?3)"
    )
}

/// The file's rows of model `mid`, for [`load`].
pub(super) struct FileRows<'a> {
    pub(super) store: &'a SqliteStore,
    pub(super) mid: i64,
}

impl Rows for FileRows<'_> {
    fn decision(&mut self, id: &str) -> Result<Option<DecisionRecord>> {
        let sql = format!("SELECT {DECISION_COLS} FROM decisions WHERE mid = ?1 AND id = ?2");
        let mid = self.mid;
        Ok(self
            .store
            .read(|c| decisions_where(c, &sql, params![mid, id]))?
            .pop())
    }

    fn episode(&mut self, id: &str) -> Result<Option<EpisodeRecord>> {
        let mid = self.mid;
        let row = self.store.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {EPISODE_COLS} FROM episodes WHERE mid = ?1 AND id = ?2"
            ))
            .map_err(sq)?
            .query_row(params![mid, id], |r| {
                Ok(EpisodeRow {
                    id: r.get(0)?,
                    n_steps: r.get(1)?,
                    end_json: r.get(2)?,
                    learned_return: r.get(3)?,
                })
            })
            .optional()
            .map_err(sq)
        })?;
        row.map(|r| episode_from_row(BACKEND, r)).transpose()
    }

    fn step(&mut self, episode: &str, k: u64) -> Result<Option<DecisionRecord>> {
        let sql = sql_step();
        let mid = self.mid;
        Ok(self
            .store
            .read(|c| decisions_where(c, &sql, params![mid, episode, k as i64]))?
            .pop())
    }

    fn due(&mut self, closes_ms: i64, id: Option<&str>) -> Result<Vec<DecisionRecord>> {
        let mid = self.mid;
        match id {
            None => {
                let sql = sql_due();
                self.store
                    .read(|c| decisions_where(c, &sql, params![mid, closes_ms]))
            }
            Some(id) => {
                let sql = sql_due_through();
                self.store
                    .read(|c| decisions_where(c, &sql, params![mid, closes_ms, id]))
            }
        }
    }
}

impl SqliteStore {
    /// A page of `owner`'s model `id`'s decision log, read from the file
    /// (which holds every acknowledged call).
    pub(super) fn decision_page(
        &self,
        owner: &str,
        id: &str,
        q: &DecisionQuery,
    ) -> Result<DecisionPage> {
        self.read(|c| {
            let (mid, text, meta) = c
                .query_row(
                    "SELECT mid, decisions, decision_meta FROM models WHERE id = ?1 AND owner = ?2",
                    [id, owner],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, Option<Vec<u8>>>(2)?,
                        ))
                    },
                )
                .optional()
                .map_err(sq)?
                .ok_or(Error::NotFound("model"))?;
            if text.is_none() {
                return Ok(DecisionPage::empty(q));
            }
            let sql = decision_listing_sql(false, mid, q, DECISION_COLS);
            let total = match &sql.count {
                Some(count) => {
                    let values = &sql.values[..sql.filter_values];
                    let n: i64 = c
                        .query_row(count, params_from_iter(values), |r| r.get(0))
                        .map_err(sq)?;
                    Some(u64::try_from(n).unwrap_or(0))
                }
                None => None,
            };
            // Not kept in the connection's cache: a listing's text varies
            // with its filters and order, and would push out the hot reads.
            let mut page = c.prepare(&sql.page).map_err(sq)?;
            let decisions = decisions_of(&mut page, params_from_iter(&sql.values))?;
            Ok(DecisionPage {
                total,
                decisions,
                stats: meta_from_bytes(BACKEND, meta.as_deref())?.0,
            })
        })
    }

    /// A page of `owner`'s model `id`'s episodes, read from the file.
    pub(super) fn episode_page(
        &self,
        owner: &str,
        id: &str,
        q: &EpisodeQuery,
    ) -> Result<EpisodePage> {
        self.read(|c| {
            let (mid, text) = c
                .query_row(
                    "SELECT mid, decisions FROM models WHERE id = ?1 AND owner = ?2",
                    [id, owner],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?)),
                )
                .optional()
                .map_err(sq)?
                .ok_or(Error::NotFound("model"))?;
            if text.is_none() {
                return Ok(EpisodePage::default());
            }
            let sql = episode_listing_sql(false);
            let lim = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
            let mut st = c.prepare_cached(&sql).map_err(sq)?;
            let rows = st
                .query_map(params![mid, q.after, q.ended, lim], |r| {
                    Ok((
                        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
                        (r.get(4)?, r.get(5)?),
                    ))
                })
                .map_err(sq)?;
            let mut episodes = Vec::new();
            for row in rows {
                let (cols, times) = row.map_err(sq)?;
                episodes.push(episode_summary(BACKEND, cols, times)?);
            }
            Ok(episode_page_of(episodes, q.limit))
        })
    }

    /// Deletes, model by model in chunks, the finished decisions logged
    /// before their model's retention (a decision whose previous step is
    /// unfinished stays: that step learns its state) and the ended
    /// episodes with no decision left.
    pub(super) fn prune_all(&self, now: i64) -> Result<usize> {
        let models: Vec<(String, String, String)> = self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT owner, id, decisions FROM models WHERE decisions IS NOT NULL",
                )
                .map_err(sq)?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(sq)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })?;
        let mut pruned = 0;
        for (owner, id, text) in models {
            let Some(config) = config_from_text(BACKEND, Some(&text))? else {
                continue;
            };
            let horizon = millis(now).saturating_sub(config.retention_ms());
            loop {
                match self.with_model(&owner, &id, |c| self.prune_chunk(c, horizon)) {
                    Ok(n) => {
                        pruned += n;
                        if n < PRUNE_CHUNK {
                            break;
                        }
                    }
                    Err(Error::NotFound(_)) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(pruned)
    }

    /// One chunk of [`SqliteStore::prune_all`] on model `c` (its lock
    /// held): the file is brought up to memory first, and what it deletes
    /// leaves memory too. Returns the decisions deleted.
    fn prune_chunk(&self, c: &mut Cached, horizon_ms: i64) -> Result<usize> {
        self.committed_through(c.last_seq)?;
        let mid = c.mid;
        let (ids, episodes): (Vec<String>, Vec<String>) = self.read(|conn| {
            let ids = strings(
                conn,
                SQL_PRUNABLE,
                params![mid, horizon_ms, PRUNE_CHUNK as i64],
            )?;
            let eps = strings(conn, SQL_EMPTY_EPISODES, params![mid, PRUNE_CHUNK as i64])?;
            Ok((ids, eps))
        })?;
        if ids.is_empty() && episodes.is_empty() {
            return Ok(0);
        }
        if let LogSlot::Hot(h) = &mut c.log {
            for id in &ids {
                h.log.forget(id);
            }
            for ep in &episodes {
                h.log.forget_episode(ep);
            }
        }
        let n = ids.len();
        self.write(move |conn| {
            let mut d = conn
                .prepare_cached("DELETE FROM decisions WHERE mid = ?1 AND id = ?2")
                .map_err(sq)?;
            for id in ids {
                d.execute(params![mid, id]).map_err(sq)?;
            }
            let mut e = conn
                .prepare_cached("DELETE FROM episodes WHERE mid = ?1 AND id = ?2")
                .map_err(sq)?;
            for ep in episodes {
                e.execute(params![mid, ep]).map_err(sq)?;
            }
            Ok(())
        })?;
        Ok(n)
    }
}

/// The finished decisions of model ?1 logged at or before ?2 whose previous
/// step is finished, at most ?3.
const SQL_PRUNABLE: &str = "SELECT d.id FROM decisions d WHERE d.mid = ?1 AND d.time_ms <= ?2 \
     AND d.status >= 2 AND NOT EXISTS (SELECT 1 FROM decisions p INDEXED BY decisions_step \
     WHERE p.mid = d.mid \
     AND p.episode = d.episode AND p.step = d.step - 1 AND p.status < 2) \
     ORDER BY d.time_ms LIMIT ?3";
/// The ended episodes of model ?1 with no decision left, at most ?2.
const SQL_EMPTY_EPISODES: &str = "SELECT e.id FROM episodes e WHERE e.mid = ?1 \
     AND e.end_json IS NOT NULL AND NOT EXISTS (SELECT 1 FROM decisions d \
     INDEXED BY decisions_step WHERE d.mid = e.mid AND d.episode = e.id) LIMIT ?2";

fn strings(c: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(sql).map_err(sq)?;
    let rows = st.query_map(p, |r| r.get(0)).map_err(sq)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
}

/// Deletes a chunk of model `mid`'s decision and episode rows; whether
/// any were deleted.
pub(super) fn drop_log_chunk(c: &Connection, mid: i64) -> Result<bool> {
    let mut n = 0;
    for table in ["decisions", "episodes"] {
        n += c
            .execute(
                &format!(
                    "DELETE FROM {table} WHERE mid = ?1 AND id IN \
                     (SELECT id FROM {table} WHERE mid = ?1 LIMIT ?2)"
                ),
                params![mid, PRUNE_CHUNK as i64],
            )
            .map_err(sq)?;
    }
    Ok(n > 0)
}

/// At open, before the writer starts: turns the logs an earlier version
/// kept whole (`decision_logs`) into rows, and deletes the log rows of
/// models that no longer exist.
pub(super) fn tidy_logs(c: &mut Connection) -> Result<()> {
    let tx = c.transaction().map_err(sq)?;
    let blobs: Vec<(i64, Vec<u8>)> = {
        let mut st = tx
            .prepare("SELECT mid, log FROM decision_logs")
            .map_err(sq)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sq)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)?
    };
    for (mid, blob) in blobs {
        let (decisions, episodes, meta) =
            crate::store::decision_rows::rows_of_blob(BACKEND, &blob)?;
        LogWrite {
            meta,
            decisions,
            episodes,
        }
        .flush(&tx, mid)
        .map_err(sq)?;
        tx.execute("DELETE FROM decision_logs WHERE mid = ?1", [mid])
            .map_err(sq)?;
    }
    // Rows of models deleted while their rows were being dropped (a
    // crash): found model by model through the primary key.
    let mut after = i64::MIN;
    loop {
        let next: Option<i64> = tx
            .query_row(
                "SELECT mid FROM decisions WHERE mid > ?1 ORDER BY mid LIMIT 1",
                [after],
                |r| r.get(0),
            )
            .optional()
            .map_err(sq)?;
        let Some(mid) = next else {
            break;
        };
        let live: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM models WHERE mid = ?1)",
                [mid],
                |r| r.get(0),
            )
            .map_err(sq)?;
        if !live {
            tx.execute("DELETE FROM decisions WHERE mid = ?1", [mid])
                .map_err(sq)?;
            tx.execute("DELETE FROM episodes WHERE mid = ?1", [mid])
                .map_err(sq)?;
        }
        after = mid;
    }
    tx.commit().map_err(sq)
}

#[cfg(test)]
#[path = "decision_rows_tests.rs"]
pub(super) mod tests;
