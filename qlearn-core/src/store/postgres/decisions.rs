//! Decisions and delayed rewards on PostgreSQL (issue 14): decision calls
//! run in a transaction holding the model's row lock (the lock every update
//! of the model takes, so decision calls and updates serialise per model,
//! model row first, then its log), several of one model combined in one
//! (`decision_batch.rs`). It reads only the decision and episode rows the
//! calls need into a partly loaded log (`store/decision_rows.rs`), fetches
//! only the Q-rows they read or write, runs the shared steps, and writes
//! the Q-rows, the learner, the debits, the changed decision and episode
//! rows and the log's counts before it commits: a transition is learned in
//! the transaction that marks its decision applied. This file holds the
//! row reads and writes, settling, pruning and the listings.
//!
//! Settling: every instance lists the models with a passed deadline and
//! takes each model's row with `FOR UPDATE SKIP LOCKED`; a model locked by
//! another instance (or a running call) is skipped and settled by whoever
//! holds it or on the next round, and the rows are read after the lock, so
//! each transition is applied once. Retention pruning deletes chunks of
//! [`PRUNE_CHUNK`] decisions, each in a short transaction holding the
//! model's row lock.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;

use postgres::{Statement, Transaction};

use super::decision_batch::{Item, Payer};
use super::pool::stmt;
use super::{pg, PgStore, BACKEND};
use crate::decisions::DecisionsConfig;
use crate::decisions::{DecisionLog, DecisionRecord, EpisodeRecord, Missing};
use crate::error::{Error, Result};
use crate::store::decision_rows::{
    decision_cols, decision_from_row, decision_listing_sql, episode_cols, episode_from_row,
    episode_listing_sql, episode_page_of, episode_summary, meta_from_bytes, missing, rows_of_blob,
    DecisionRow, EpisodeRow, Rows, SqlValue, DECISION_COLS,
};
use crate::store::decisions::{config_from_text, config_text, millis, Call, Reply, SETTLE_CHUNK};
use crate::store::due_models::{settle_due, DueStore, Found};
use crate::store::settle::DueKey;
use crate::store::{
    DecisionPage, DecisionQuery, EpisodePage, EpisodeQuery, Evaluations, ModelInfo,
    KEEP_FINISHED_JOBS,
};

/// Seconds between two retention prunings of every model.
const PRUNE_EVERY_SECS: i64 = 60;

/// The model row a decision call locks.
pub(super) const SQL_LOCK_MODEL: &str =
    "SELECT mid, config, learner, returns, n_rows, decisions, decision_meta FROM models \
     WHERE id = $1 AND owner = $2 FOR UPDATE";
/// The same, skipping a row another transaction holds (settling).
pub(super) const SQL_LOCK_MODEL_SKIP: &str =
    "SELECT mid, config, learner, returns, n_rows, decisions, decision_meta FROM models \
     WHERE id = $1 AND owner = $2 FOR UPDATE SKIP LOCKED";
/// A log's changed decision rows ($3-$18, one array per column) and
/// episode rows ($19-$22) of model $1, and its counts ($2).
const SQL_PUT_LOG: &str = concat!(
    "WITH d AS (INSERT INTO decisions (mid, ",
    decision_cols!(),
    ") SELECT $1::int8, * FROM unnest($3::text[], $4::text[], $5::int8[], $6::int8[], \
     $7::int8[], $8::bytea[], $9::bytea[], $10::int8[], $11::float8[], $12::int8[], \
     $13::float8[], $14::int8[], $15::bytea[], $16::float8[], $17::int8[], $18::int8[]) \
     ON CONFLICT (mid, id) DO UPDATE SET status = excluded.status, acc = excluded.acc, \
     rewards = excluded.rewards, reward_ids = excluded.reward_ids, learned = excluded.learned, \
     applied_seq = excluded.applied_seq), \
     e AS (INSERT INTO episodes (mid, ",
    episode_cols!(),
    ") SELECT $1::int8, * FROM unnest($19::text[], $20::int8[], $21::text[], $22::float8[]) \
     ON CONFLICT (mid, id) DO UPDATE SET n_steps = excluded.n_steps, \
     end_json = excluded.end_json, learned_return = excluded.learned_return) \
     UPDATE models SET decision_meta = $2 WHERE mid = $1"
);
/// Decisions deleted per pruning transaction.
pub(super) const PRUNE_CHUNK: i64 = 1000;
/// The finished decisions of model $1 logged at or before $2 whose previous
/// step is finished, at most $3.
const SQL_PRUNE: &str = "DELETE FROM decisions WHERE mid = $1 AND id IN (SELECT d.id \
     FROM decisions d WHERE d.mid = $1 AND d.time_ms <= $2 AND d.status >= 2 \
     AND NOT EXISTS (SELECT 1 FROM decisions p WHERE p.mid = d.mid \
     AND p.episode = d.episode AND p.step = d.step - 1 AND p.status < 2) \
     ORDER BY d.time_ms LIMIT $3)";
/// The ended episodes of model $1 with no decision left, at most $2.
const SQL_PRUNE_EPISODES: &str = "DELETE FROM episodes WHERE mid = $1 AND id IN (SELECT e.id \
     FROM episodes e WHERE e.mid = $1 AND e.end_json IS NOT NULL AND NOT EXISTS \
     (SELECT 1 FROM decisions d WHERE d.mid = e.mid AND d.episode = e.id) LIMIT $2)";

/// A decision row read by the driver (columns in [`DECISION_COLS`]' order).
pub(super) fn decision_of(r: &postgres::Row) -> Result<DecisionRecord> {
    decision_from_row(
        BACKEND,
        DecisionRow {
            id: r.get(0),
            episode: r.get(1),
            step: r.get(2),
            time_ms: r.get(3),
            closes_ms: r.get(4),
            state: r.get(5),
            allowed: r.get(6),
            action: r.get(7),
            prob: r.get(8),
            status: r.get(9),
            acc: r.get(10),
            rewards: r.get(11),
            reward_ids: r.get(12),
            learned: r.get(13),
            applied_seq: r.get(14),
            baseline: r.get(15),
        },
    )
}

/// The rows of model `mid` in the call's transaction, for [`load`].
pub(super) struct TxRows<'a, 'b> {
    pub(super) tx: &'a mut Transaction<'b>,
    pub(super) st: &'a mut HashMap<&'static str, Statement>,
    pub(super) mid: i64,
    /// What [`prefetch`] found absent (answered without a statement).
    pub(super) absent: &'a Absent,
}

/// The rows [`prefetch`] looked for and did not find.
#[derive(Default)]
pub(super) struct Absent {
    decisions: HashSet<String>,
    episodes: HashSet<String>,
    steps: HashSet<(String, u64)>,
}

const SQL_DECISIONS_ANY: &str = concat!(
    "SELECT ",
    decision_cols!(),
    " FROM decisions WHERE mid = $1 AND id = ANY($2::text[])"
);
const SQL_EPISODES_ANY: &str = concat!(
    "SELECT ",
    episode_cols!(),
    " FROM episodes WHERE mid = $1 AND id = ANY($2::text[])"
);
/// The steps named by ($2, $3): the unnest's columns are named apart from
/// the table's, so the shared column list needs no table prefix.
const SQL_STEPS_ANY: &str = concat!(
    "SELECT ",
    decision_cols!(),
    " FROM decisions JOIN unnest($2::text[], $3::int8[]) AS w(w_episode, w_step) \
     ON episode = w_episode AND step = w_step WHERE mid = $1"
);

/// Loads into `log` what `calls` (each with its time in ms) lack, for all
/// of them at once: per round one statement per kind of row (decisions by
/// id, episodes, steps), until nothing more is missing. Returns what was
/// not found, so that the calls' own `load` does not look again. Run
/// before any of the calls changes the log.
pub(super) fn prefetch(
    tx: &mut Transaction<'_>,
    st: &mut HashMap<&'static str, Statement>,
    mid: i64,
    log: &mut DecisionLog,
    calls: &[(Call<'_>, i64)],
) -> Result<Absent> {
    let mut absent = Absent::default();
    // Each round follows one link (a decision's episode, an episode's
    // step); three cover what a call reads.
    for _ in 0..3 {
        let (mut ids, mut eps, mut steps) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for &(call, now_ms) in calls {
            for m in missing(log, call, now_ms) {
                match m {
                    Missing::Decision(id) if !absent.decisions.contains(&id) => {
                        ids.insert(id);
                    }
                    Missing::Episode(ep) if !absent.episodes.contains(&ep) => {
                        eps.insert(ep);
                    }
                    Missing::Step(ep, k) if !absent.steps.contains(&(ep.clone(), k)) => {
                        steps.insert((ep, k));
                    }
                    _ => {}
                }
            }
        }
        if ids.is_empty() && eps.is_empty() && steps.is_empty() {
            break;
        }
        let mut found = Vec::new();
        if !ids.is_empty() {
            let list: Vec<&str> = ids.iter().map(String::as_str).collect();
            let s = stmt(st, tx, SQL_DECISIONS_ANY).map_err(pg)?;
            for r in tx.query(&s, &[&mid, &list]).map_err(pg)? {
                let rec = decision_of(&r)?;
                ids.remove(&rec.decision_id);
                found.push(rec);
            }
            absent.decisions.extend(ids);
        }
        if !steps.is_empty() {
            let (e, k): (Vec<&str>, Vec<i64>) =
                steps.iter().map(|(e, k)| (e.as_str(), *k as i64)).unzip();
            let s = stmt(st, tx, SQL_STEPS_ANY).map_err(pg)?;
            for r in tx.query(&s, &[&mid, &e, &k]).map_err(pg)? {
                let rec = decision_of(&r)?;
                if let Some(ep) = &rec.episode_id {
                    steps.remove(&(ep.clone(), rec.step));
                }
                found.push(rec);
            }
            absent.steps.extend(steps);
        }
        // The episodes asked for, and those of the decisions found.
        eps.extend(
            found
                .iter()
                .filter_map(|d| d.episode_id.clone())
                .filter(|ep| log.episode(ep).is_none()),
        );
        if !eps.is_empty() {
            let list: Vec<&str> = eps.iter().map(String::as_str).collect();
            let s = stmt(st, tx, SQL_EPISODES_ANY).map_err(pg)?;
            for r in tx.query(&s, &[&mid, &list]).map_err(pg)? {
                let id: String = r.get(0);
                eps.remove(&id);
                log.load_episode(id, episode_of(&r)?);
            }
            absent.episodes.extend(eps);
        }
        for rec in found {
            log.load_decision(rec);
        }
    }
    Ok(absent)
}

/// An episode row read by the driver (columns in `EPISODE_COLS`' order).
fn episode_of(r: &postgres::Row) -> Result<EpisodeRecord> {
    episode_from_row(
        BACKEND,
        EpisodeRow {
            id: r.get(0),
            n_steps: r.get(1),
            end_json: r.get(2),
            learned_return: r.get(3),
        },
    )
}

/// Every model with an open decision and its earliest deadline: the
/// settle pass's full scan (`due_models`), a skip over the partial index
/// `decisions_due` (open decisions only, keyed (mid, closes_ms) since
/// migration 15), one seek to each model with an open decision, which
/// finds its earliest deadline too. It costs the models with open
/// decisions (measured: 2.3-2.8 ms for 500), not their decisions.
pub(super) const SQL_OPEN_MODELS: &str = "WITH RECURSIVE live AS (\
     (SELECT mid, closes_ms FROM decisions WHERE status = 0 ORDER BY mid, closes_ms LIMIT 1) \
     UNION ALL \
     SELECT n.mid, n.closes_ms FROM live CROSS JOIN LATERAL \
       (SELECT d.mid, d.closes_ms FROM decisions d WHERE d.status = 0 AND d.mid > live.mid \
        ORDER BY d.mid, d.closes_ms LIMIT 1) n) \
     SELECT mid, closes_ms FROM live";
/// The key (deadline, id) of the `$3 + 1`-th decision of model `$1` due
/// by `$2`, in closing order (ids bytewise, `COLLATE "C"`, as the log
/// orders them): the end of the settle pass's next chunk (`decisions_due`
/// gives the deadlines in order; a deadline's ids are sorted).
const SQL_DUE_NTH: &str = "SELECT closes_ms, id FROM decisions \
     WHERE status = 0 AND mid = $1 AND closes_ms <= $2 \
     ORDER BY closes_ms, id COLLATE \"C\" LIMIT 1 OFFSET $3";
/// Each model of $1, in its order, with its owner and id (NULL: no such
/// model) and its earliest open deadline (NULL: none open): one seek on
/// `decisions_due` per model, in one statement.
pub(super) const SQL_NEXT_DEADLINES: &str = "SELECT m.owner, m.id, \
     (SELECT d.closes_ms FROM decisions d WHERE d.status = 0 AND d.mid = u.mid \
      ORDER BY d.closes_ms LIMIT 1) \
     FROM unnest($1::int8[]) WITH ORDINALITY AS u (mid, n) \
     LEFT JOIN models m ON m.mid = u.mid ORDER BY u.n";
const SQL_DECISION: &str = concat!(
    "SELECT ",
    decision_cols!(),
    " FROM decisions WHERE mid = $1 AND id = $2"
);
const SQL_STEP: &str = concat!(
    "SELECT ",
    decision_cols!(),
    " FROM decisions WHERE mid = $1 AND episode = $2 AND step = $3"
);
const SQL_DUE: &str = concat!(
    "SELECT ",
    decision_cols!(),
    " FROM decisions WHERE status = 0 AND mid = $1 AND closes_ms <= $2"
);
/// [`SQL_DUE`] through a decision: the last deadline's ids up to `$3`.
const SQL_DUE_THROUGH: &str = concat!(
    "SELECT ",
    decision_cols!(),
    " FROM decisions WHERE status = 0 AND mid = $1 AND closes_ms <= $2 \
     AND (closes_ms < $2 OR id COLLATE \"C\" <= $3)"
);
const SQL_EPISODE: &str = concat!(
    "SELECT ",
    episode_cols!(),
    " FROM episodes WHERE mid = $1 AND id = $2"
);

impl Rows for TxRows<'_, '_> {
    fn decision(&mut self, id: &str) -> Result<Option<DecisionRecord>> {
        if self.absent.decisions.contains(id) {
            return Ok(None);
        }
        let s = stmt(self.st, self.tx, SQL_DECISION).map_err(pg)?;
        let row = self.tx.query_opt(&s, &[&self.mid, &id]).map_err(pg)?;
        row.as_ref().map(decision_of).transpose()
    }

    fn episode(&mut self, id: &str) -> Result<Option<EpisodeRecord>> {
        if self.absent.episodes.contains(id) {
            return Ok(None);
        }
        let s = stmt(self.st, self.tx, SQL_EPISODE).map_err(pg)?;
        let row = self.tx.query_opt(&s, &[&self.mid, &id]).map_err(pg)?;
        row.as_ref().map(episode_of).transpose()
    }

    fn step(&mut self, episode: &str, k: u64) -> Result<Option<DecisionRecord>> {
        if self.absent.steps.contains(&(episode.to_owned(), k)) {
            return Ok(None);
        }
        let s = stmt(self.st, self.tx, SQL_STEP).map_err(pg)?;
        let row = self
            .tx
            .query_opt(&s, &[&self.mid, &episode, &(k as i64)])
            .map_err(pg)?;
        row.as_ref().map(decision_of).transpose()
    }

    fn due(&mut self, closes_ms: i64, id: Option<&str>) -> Result<Vec<DecisionRecord>> {
        let rows = match id {
            None => {
                let s = stmt(self.st, self.tx, SQL_DUE).map_err(pg)?;
                self.tx.query(&s, &[&self.mid, &closes_ms])
            }
            Some(id) => {
                let s = stmt(self.st, self.tx, SQL_DUE_THROUGH).map_err(pg)?;
                self.tx.query(&s, &[&self.mid, &closes_ms, &id])
            }
        }
        .map_err(pg)?;
        rows.iter().map(decision_of).collect()
    }
}

/// Writes a log's changed rows and counts in `tx`, in one statement.
pub(super) fn put_log(
    tx: &mut Transaction<'_>,
    st: &mut HashMap<&'static str, Statement>,
    mid: i64,
    meta: &[u8],
    decisions: &[DecisionRow],
    episodes: &[EpisodeRow],
) -> Result<()> {
    fn col<'a, T: 'a, U>(rows: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
        rows.iter().map(f).collect()
    }
    let d = decisions;
    let e = episodes;
    let s = stmt(st, tx, SQL_PUT_LOG).map_err(pg)?;
    tx.execute(
        &s,
        &[
            &mid,
            &meta,
            &col(d, |r| r.id.as_str()),
            &col(d, |r| r.episode.as_deref()),
            &col(d, |r| r.step),
            &col(d, |r| r.time_ms),
            &col(d, |r| r.closes_ms),
            &col(d, |r| r.state.as_slice()),
            &col(d, |r| r.allowed.as_deref()),
            &col(d, |r| r.action),
            &col(d, |r| r.prob),
            &col(d, |r| r.status),
            &col(d, |r| r.acc),
            &col(d, |r| r.rewards),
            &col(d, |r| r.reward_ids.as_deref()),
            &col(d, |r| r.learned),
            &col(d, |r| r.applied_seq),
            &col(d, |r| r.baseline),
            &col(e, |r| r.id.as_str()),
            &col(e, |r| r.n_steps),
            &col(e, |r| r.end_json.as_deref()),
            &col(e, |r| r.learned_return),
        ],
    )
    .map_err(pg)?;
    Ok(())
}

/// At connect, in the migrations' transaction (under their lock): turns
/// the logs an earlier version kept whole (`decision_logs`) into rows.
pub(super) fn tidy_logs(tx: &mut Transaction<'_>) -> Result<()> {
    let blobs = tx
        .query("SELECT mid, log FROM decision_logs", &[])
        .map_err(pg)?;
    let mut st = HashMap::new();
    for r in blobs {
        let mid: i64 = r.get(0);
        let (decisions, episodes, meta) = rows_of_blob(BACKEND, r.get(1))?;
        put_log(tx, &mut st, mid, &meta, &decisions, &episodes)?;
        tx.execute("DELETE FROM decision_logs WHERE mid = $1", &[&mid])
            .map_err(pg)?;
    }
    Ok(())
}

impl PgStore {
    /// Settles every model with a passed deadline (see
    /// [`crate::store::Store::settle`]; which models: `due_models`).
    pub(super) fn settle_all(&self, now: i64) -> Result<usize> {
        let learned = settle_due(self, &self.due, now)?;
        let last = self.last_prune.load(Ordering::Relaxed);
        if now >= last + PRUNE_EVERY_SECS
            && self
                .last_prune
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.prune_all(now)?;
            self.prune_evaluations(KEEP_FINISHED_JOBS, now)?;
        }
        Ok(learned)
    }

    /// Deletes, model by model, in chunks of [`PRUNE_CHUNK`] (each a
    /// transaction holding the model's row lock, skipped while another
    /// holds it), the finished decisions logged before their model's
    /// retention (a decision whose previous step is unfinished stays) and
    /// the ended episodes with no decision left. Returns the decisions
    /// deleted.
    pub(super) fn prune_all(&self, now: i64) -> Result<usize> {
        let models = self.query(
            "SELECT mid, decisions FROM models WHERE decisions IS NOT NULL",
            &[],
        )?;
        let mut pruned = 0;
        for r in models {
            let mid: i64 = r.get(0);
            let Some(config) = config_from_text(BACKEND, r.get::<_, Option<&str>>(1))? else {
                continue;
            };
            let horizon = millis(now).saturating_sub(config.retention_ms());
            loop {
                let n = self.tx(|tx, _| {
                    let held = tx
                        .query_opt(
                            "SELECT 1 FROM models WHERE mid = $1 FOR UPDATE SKIP LOCKED",
                            &[&mid],
                        )
                        .map_err(pg)?;
                    if held.is_none() {
                        return Ok(0);
                    }
                    let n = tx
                        .execute(SQL_PRUNE, &[&mid, &horizon, &PRUNE_CHUNK])
                        .map_err(pg)?;
                    tx.execute(SQL_PRUNE_EPISODES, &[&mid, &PRUNE_CHUNK])
                        .map_err(pg)?;
                    Ok(n)
                })?;
                pruned += n as usize;
                if n < PRUNE_CHUNK as u64 {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    /// A page of `owner`'s model `id`'s decision log.
    pub(super) fn decision_page(
        &self,
        owner: &str,
        id: &str,
        q: &DecisionQuery,
    ) -> Result<DecisionPage> {
        let rows = self.query(
            "SELECT mid, decisions, decision_meta FROM models WHERE id = $1 AND owner = $2",
            &[&id, &owner],
        )?;
        let r = rows.first().ok_or(Error::NotFound("model"))?;
        let mid: i64 = r.get(0);
        if config_from_text(BACKEND, r.get::<_, Option<&str>>(1))?.is_none() {
            return Ok(DecisionPage::empty(q));
        }
        let stats = meta_from_bytes(BACKEND, r.get::<_, Option<&[u8]>>(2))?.0;
        let sql = decision_listing_sql(true, mid, q, DECISION_COLS);
        let values: Vec<&(dyn postgres::types::ToSql + Sync)> = sql
            .values
            .iter()
            .map(|v| match v {
                SqlValue::Int(i) => i as &(dyn postgres::types::ToSql + Sync),
                SqlValue::Text(t) => t,
            })
            .collect();
        let total = match &sql.count {
            Some(count) => {
                let n: i64 = self
                    .query(count, &values[..sql.filter_values])?
                    .first()
                    .map_or(0, |r| r.get(0));
                Some(u64::try_from(n).unwrap_or(0))
            }
            None => None,
        };
        let rows = self.query(&sql.page, &values)?;
        Ok(DecisionPage {
            total,
            decisions: rows.iter().map(decision_of).collect::<Result<_>>()?,
            stats,
        })
    }

    /// A page of `owner`'s model `id`'s episodes (ids compared bytewise,
    /// as the other stores do).
    pub(super) fn episode_page(
        &self,
        owner: &str,
        id: &str,
        q: &EpisodeQuery,
    ) -> Result<EpisodePage> {
        let rows = self.query(
            "SELECT mid, decisions FROM models WHERE id = $1 AND owner = $2",
            &[&id, &owner],
        )?;
        let r = rows.first().ok_or(Error::NotFound("model"))?;
        let mid: i64 = r.get(0);
        if r.get::<_, Option<&str>>(1).is_none() {
            return Ok(EpisodePage::default());
        }
        let sql = episode_listing_sql(true);
        let lim = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows = self.query(&sql, &[&mid, &q.after, &q.ended, &lim])?;
        let episodes = rows
            .iter()
            .map(|r| {
                let cols = (r.get(0), r.get(1), r.get(2), r.get(3));
                episode_summary(BACKEND, cols, (r.get(4), r.get(5)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(episode_page_of(episodes, q.limit))
    }

    /// Sets the decisions setting of `owner`'s models in `infos` from the
    /// database.
    pub(super) fn fill_decisions(&self, owner: &str, infos: &mut [ModelInfo]) -> Result<()> {
        let rows = self.query(
            "SELECT id, decisions, decision_meta FROM models \
             WHERE owner = $1 AND decisions IS NOT NULL",
            &[&owner],
        )?;
        for info in infos.iter_mut() {
            let found = rows.iter().find(|r| r.get::<_, &str>(0) == info.id);
            info.decisions = config_from_text(BACKEND, found.map(|r| r.get::<_, &str>(1)))?;
            info.decision_stats = match found {
                Some(r) => Some(meta_from_bytes(BACKEND, r.get::<_, Option<&[u8]>>(2))?.0),
                None => None,
            };
        }
        Ok(())
    }
}

/// Writes model `mid`'s new decisions setting in `tx` (`None`: off, its
/// log discarded); the caller holds the model's row lock.
pub(super) fn patch_decisions(
    tx: &mut Transaction<'_>,
    mid: i64,
    decisions: Option<&DecisionsConfig>,
) -> Result<()> {
    if let Some(d) = decisions {
        d.validate()?;
    }
    let text = decisions.map(|d| config_text(BACKEND, d)).transpose()?;
    let was_on: bool = tx
        .query_one(
            "SELECT decisions IS NOT NULL FROM models WHERE mid = $1",
            &[&mid],
        )
        .map_err(pg)?
        .get(0);
    tx.execute(
        "UPDATE models SET decisions = $2 WHERE mid = $1",
        &[&mid, &text],
    )
    .map_err(pg)?;
    // Off: the log goes (in this transaction: the model's row lock keeps
    // every decision call out). On again: a fresh log.
    if text.is_none() || !was_on {
        tx.execute("DELETE FROM decisions WHERE mid = $1", &[&mid])
            .map_err(pg)?;
        tx.execute("DELETE FROM episodes WHERE mid = $1", &[&mid])
            .map_err(pg)?;
        tx.execute(
            "UPDATE models SET decision_meta = NULL WHERE mid = $1",
            &[&mid],
        )
        .map_err(pg)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod plan_tests;

impl DueStore for PgStore {
    fn open_models(&self) -> Result<Vec<(i64, i64)>> {
        let rows = self.query(SQL_OPEN_MODELS, &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn next_deadlines(&self, mids: &[i64]) -> Result<Vec<Option<Found>>> {
        let rows = self.query_prepared(SQL_NEXT_DEADLINES, &[&mids])?;
        Ok(rows
            .iter()
            .map(|r| {
                let owner: Option<String> = r.get(0);
                let id: Option<String> = r.get(1);
                owner.zip(id).map(|(owner, id)| Found {
                    owner,
                    id,
                    first: r.get(2),
                })
            })
            .collect())
    }

    fn due_nth(&self, mid: i64, now_ms: i64) -> Result<Option<DueKey>> {
        let rows =
            self.query_prepared(SQL_DUE_NTH, &[&mid, &now_ms, &(SETTLE_CHUNK as i64 - 1)])?;
        Ok(rows.first().map(|r| (r.get(0), r.get(1))))
    }

    fn settle_model(
        &self,
        owner: &str,
        id: &str,
        through: Option<&DueKey>,
        now: i64,
    ) -> Result<usize> {
        let settle = Item {
            call: Call::settle(through, now),
            payer: Payer::Free,
            now,
        };
        let mut n = 0;
        for reply in self.decision_batch(owner, id, true, &[settle]) {
            if let Some(Reply::Learned(k)) = reply? {
                n += k;
            }
        }
        Ok(n)
    }
}
