//! Decisions and delayed rewards on PostgreSQL (issue 14): a decision call
//! is one transaction holding the model's row lock (the lock every update
//! of the model takes, so decision calls and updates serialise per model,
//! model row first, then its log). It reads only the decision and episode
//! rows the call needs into a partly loaded log (`store/decision_rows.rs`),
//! fetches only the Q-rows the call reads or writes, runs the shared steps,
//! and writes the Q-rows, the learner, the debit, the changed decision and
//! episode rows and the log's counts before it commits: a transition is
//! learned in the transaction that marks its decision applied.
//!
//! Settling: every instance lists the models with a passed deadline and
//! takes each model's row with `FOR UPDATE SKIP LOCKED`; a model locked by
//! another instance (or a running call) is skipped and settled by whoever
//! holds it or on the next round, and the rows are read after the lock, so
//! each transition is applied once. Retention pruning deletes chunks of
//! [`PRUNE_CHUNK`] decisions, each in a short transaction holding the
//! model's row lock.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use postgres::{Statement, Transaction};

use super::batch::{debit, quota_error, Retry};
use super::pool::stmt;
use super::sql::{SQL_FETCH_ROWS, SQL_WRITE_BACK};
use super::{pg, PgStore, BACKEND};
use crate::decisions::DecisionsConfig;
use crate::decisions::{DecisionRecord, EpisodeRecord};
use crate::error::{Error, Result};
use crate::state::{canonical_key, StateKey};
use crate::store::decision_rows::{
    changed_rows, decision_from_row, episode_from_row, episode_listing_sql, episode_page_of,
    episode_summary, load, meta_bytes, meta_from_bytes, partial_log, rows_of_blob, status_code,
    DecisionRow, EpisodeRow, Rows, DECISION_COLS,
};
use crate::store::decisions::{
    apply, config_from_text, config_text, millis, plan, transition_keys, without_log, Call, Reply,
    Room,
};
use crate::store::encoding::{
    decode_key, decode_learner, decode_values, key_bytes, learner_bytes, returns_bytes,
    table_from_rows, values_bytes, Tracked,
};
use crate::store::{
    DecisionPage, DecisionQuery, EpisodePage, EpisodeQuery, Evaluations, Meter, ModelInfo,
    KEEP_FINISHED_JOBS,
};
use crate::table::QTable;
use crate::tenancy::TierLimits;

/// Seconds between two retention prunings of every model.
const PRUNE_EVERY_SECS: i64 = 60;

/// The model row a decision call locks.
const SQL_LOCK_MODEL: &str =
    "SELECT mid, config, learner, returns, n_rows, decisions, decision_meta FROM models \
     WHERE id = $1 AND owner = $2 FOR UPDATE";
/// The same, skipping a row another transaction holds (settling).
const SQL_LOCK_MODEL_SKIP: &str =
    "SELECT mid, config, learner, returns, n_rows, decisions, decision_meta FROM models \
     WHERE id = $1 AND owner = $2 FOR UPDATE SKIP LOCKED";
const SQL_PUT_DECISION: &str = "INSERT INTO decisions (mid, id, episode, step, time_ms, \
     closes_ms, state, allowed, action, prob, status, acc, rewards, reward_ids, learned, \
     applied_seq, baseline) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
     $15, $16, $17) \
     ON CONFLICT (mid, id) DO UPDATE SET status = excluded.status, acc = excluded.acc, \
     rewards = excluded.rewards, reward_ids = excluded.reward_ids, learned = excluded.learned, \
     applied_seq = excluded.applied_seq";
const SQL_PUT_EPISODE: &str = "INSERT INTO episodes (mid, id, n_steps, end_json, \
     learned_return) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (mid, id) DO UPDATE SET \
     n_steps = excluded.n_steps, end_json = excluded.end_json, \
     learned_return = excluded.learned_return";
const SQL_PUT_META: &str = "UPDATE models SET decision_meta = $2 WHERE mid = $1";
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
struct TxRows<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    st: &'a mut HashMap<&'static str, Statement>,
    mid: i64,
}

const SQL_DECISION: &str = "SELECT id, episode, step, time_ms, closes_ms, state, allowed, action, \
     prob, status, acc, rewards, reward_ids, learned, applied_seq, baseline FROM decisions \
     WHERE mid = $1 AND id = $2";
const SQL_STEP: &str = "SELECT id, episode, step, time_ms, closes_ms, state, allowed, action, \
     prob, status, acc, rewards, reward_ids, learned, applied_seq, baseline FROM decisions \
     WHERE mid = $1 AND episode = $2 AND step = $3";
const SQL_DUE: &str = "SELECT id, episode, step, time_ms, closes_ms, state, allowed, action, \
     prob, status, acc, rewards, reward_ids, learned, applied_seq, baseline FROM decisions \
     WHERE status = 0 AND closes_ms <= $2 AND mid = $1";
const SQL_EPISODE: &str =
    "SELECT id, n_steps, end_json, learned_return FROM episodes WHERE mid = $1 AND id = $2";

impl Rows for TxRows<'_, '_> {
    fn decision(&mut self, id: &str) -> Result<Option<DecisionRecord>> {
        let s = stmt(self.st, self.tx, SQL_DECISION).map_err(pg)?;
        let row = self.tx.query_opt(&s, &[&self.mid, &id]).map_err(pg)?;
        row.as_ref().map(decision_of).transpose()
    }

    fn episode(&mut self, id: &str) -> Result<Option<EpisodeRecord>> {
        let s = stmt(self.st, self.tx, SQL_EPISODE).map_err(pg)?;
        let row = self.tx.query_opt(&s, &[&self.mid, &id]).map_err(pg)?;
        row.map(|r| {
            episode_from_row(
                BACKEND,
                EpisodeRow {
                    id: r.get(0),
                    n_steps: r.get(1),
                    end_json: r.get(2),
                    learned_return: r.get(3),
                },
            )
        })
        .transpose()
    }

    fn step(&mut self, episode: &str, k: u64) -> Result<Option<DecisionRecord>> {
        let s = stmt(self.st, self.tx, SQL_STEP).map_err(pg)?;
        let row = self
            .tx
            .query_opt(&s, &[&self.mid, &episode, &(k as i64)])
            .map_err(pg)?;
        row.as_ref().map(decision_of).transpose()
    }

    fn due(&mut self, now_ms: i64) -> Result<Vec<DecisionRecord>> {
        let s = stmt(self.st, self.tx, SQL_DUE).map_err(pg)?;
        let rows = self.tx.query(&s, &[&self.mid, &now_ms]).map_err(pg)?;
        rows.iter().map(decision_of).collect()
    }
}

/// Writes a log's changed rows and counts in `tx`.
fn put_log(
    tx: &mut Transaction<'_>,
    st: &mut HashMap<&'static str, Statement>,
    mid: i64,
    meta: &[u8],
    decisions: &[DecisionRow],
    episodes: &[EpisodeRow],
) -> Result<()> {
    let s = stmt(st, tx, SQL_PUT_META).map_err(pg)?;
    tx.execute(&s, &[&mid, &meta]).map_err(pg)?;
    let s = stmt(st, tx, SQL_PUT_DECISION).map_err(pg)?;
    for d in decisions {
        tx.execute(
            &s,
            &[
                &mid,
                &d.id,
                &d.episode,
                &d.step,
                &d.time_ms,
                &d.closes_ms,
                &d.state,
                &d.allowed,
                &d.action,
                &d.prob,
                &d.status,
                &d.acc,
                &d.rewards,
                &d.reward_ids,
                &d.learned,
                &d.applied_seq,
                &d.baseline,
            ],
        )
        .map_err(pg)?;
    }
    let s = stmt(st, tx, SQL_PUT_EPISODE).map_err(pg)?;
    for e in episodes {
        tx.execute(
            &s,
            &[&mid, &e.id, &e.n_steps, &e.end_json, &e.learned_return],
        )
        .map_err(pg)?;
    }
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

/// The Q-rows a call fetched: keys, values and row numbers, in fetch order.
#[derive(Default)]
struct Fetched {
    keys: Vec<StateKey>,
    values: Vec<f64>,
    row_nos: Vec<i64>,
}

impl Fetched {
    /// Fetches the rows of `wanted` not fetched yet; returns whether any
    /// key was new (the table must then be rebuilt).
    fn fetch(
        &mut self,
        tx: &mut Transaction<'_>,
        st: &mut HashMap<&'static str, Statement>,
        mid: i64,
        width: usize,
        wanted: Vec<StateKey>,
    ) -> Result<bool> {
        let mut new: Vec<Vec<u8>> = wanted
            .iter()
            .filter(|k| !self.keys.contains(k))
            .map(|k| key_bytes(k.as_ref()))
            .collect();
        new.sort_unstable();
        new.dedup();
        if new.is_empty() {
            return Ok(false);
        }
        let mids = vec![mid; new.len()];
        let s = stmt(st, tx, SQL_FETCH_ROWS).map_err(pg)?;
        for r in tx.query(&s, &[&mids, &new]).map_err(pg)? {
            self.row_nos.push(r.get(1));
            self.keys.push(decode_key(BACKEND, r.get(2))?);
            decode_values(BACKEND, r.get(3), width, &mut self.values)?;
        }
        Ok(true)
    }

    fn table(&self, width: usize) -> Result<QTable> {
        table_from_rows(BACKEND, width, self.keys.clone(), self.values.clone())
    }
}

/// Who pays for a decision call: a metered user, or nobody (settling).
#[derive(Clone, Copy)]
enum Payer<'a> {
    Meter(&'a Meter<'a>),
    Free,
}

impl PgStore {
    /// Runs a decision call on `owner`'s model `id` at `now` (Unix
    /// seconds) in one transaction. `Ok(None)`: a logging predict on a
    /// model that logs no decisions (the caller predicts plainly), or,
    /// when settling, a model another transaction holds.
    fn decision_call(
        &self,
        owner: &str,
        id: &str,
        call: Call<'_>,
        now: i64,
        payer: Payer<'_>,
    ) -> Result<Option<Reply>> {
        let now_ms = millis(now);
        self.tx(|tx, st| {
            let lock = match payer {
                Payer::Meter(_) => SQL_LOCK_MODEL,
                Payer::Free => SQL_LOCK_MODEL_SKIP,
            };
            let s = stmt(st, tx, lock).map_err(pg)?;
            let Some(row) = tx.query_opt(&s, &[&id, &owner]).map_err(pg)? else {
                return match payer {
                    Payer::Meter(_) => Err(Error::NotFound("model")),
                    Payer::Free => Ok(None),
                };
            };
            let mid: i64 = row.get(0);
            let config_json: String = row.get(1);
            let mut learner = decode_learner(BACKEND, &config_json, row.get(2), row.get(3))?;
            let n_rows: i64 = row.get(4);
            let Some(config) = config_from_text(BACKEND, row.get::<_, Option<&str>>(5))? else {
                return match call {
                    Call::Decide(_) => Ok(None),
                    _ => without_log(call).map(Some),
                };
            };
            let mut log = partial_log(BACKEND, config, row.get::<_, Option<&[u8]>>(6))?;
            load(
                &mut log,
                call,
                now_ms,
                &mut TxRows {
                    tx: &mut *tx,
                    st: &mut *st,
                    mid,
                },
            )?;
            let width = learner.width();
            let bins = learner.config().state_bins.clone();
            let mut fetched = Fetched::default();
            if let Call::Decide(d) = call {
                // The state's row, for the prediction (a state the model
                // refuses is refused by `plan`, with the same error).
                if let Ok(k) = canonical_key(d.state, bins.as_deref()) {
                    fetched.fetch(tx, st, mid, width, vec![k])?;
                }
            }
            let mut table = fetched.table(width)?;
            let room = Room {
                limits: match payer {
                    Payer::Meter(m) => m.limits,
                    Payer::Free => &TierLimits::UNLIMITED,
                },
                held: usize::try_from(n_rows).unwrap_or(usize::MAX),
            };
            let planned = {
                let tx = &mut *tx;
                let st = &mut *st;
                plan(
                    &mut log,
                    &mut learner,
                    &table,
                    room,
                    call,
                    now_ms,
                    |kind, n| match payer {
                        Payer::Meter(m) if n > 0 => {
                            match debit(tx, st, m.user_id, m.limits, m.now, kind, n) {
                                Ok(true) => Ok(()),
                                Ok(false) => Err(quota_error(m.limits, m.now)),
                                Err(Retry::Fail(e)) => Err(e),
                                Err(Retry::Again) => Err(Error::storage(
                                    BACKEND,
                                    "the debit conflicted with another transaction; retry",
                                )),
                            }
                        }
                        _ => Ok(()),
                    },
                )?
            };
            let wanted = transition_keys(&learner, &planned.transitions)?;
            if fetched.fetch(tx, st, mid, width, wanted)? {
                table = fetched.table(width)?;
            }
            let episodes_before = learner.counters().episodes;
            let mut touched = Vec::new();
            let applied = apply(
                &mut learner,
                &mut Tracked {
                    table: &mut table,
                    touched: &mut touched,
                },
                &planned.transitions,
            );
            touched.sort_unstable();
            touched.dedup();
            let n_fetched = fetched.row_nos.len();
            let (mut w_mids, mut w_nos, mut w_keys, mut w_vals) = (vec![], vec![], vec![], vec![]);
            for &pos in &touched {
                let Some((k, v)) = table.row_at(pos) else {
                    continue;
                };
                w_mids.push(mid);
                w_nos.push(match fetched.row_nos.get(pos) {
                    Some(&n) => n,
                    None => n_rows + (pos - n_fetched) as i64,
                });
                w_keys.push(key_bytes(k));
                w_vals.push(values_bytes(v));
            }
            let returns =
                (learner.counters().episodes != episodes_before).then(|| returns_bytes(&learner));
            let updated_at = (!planned.transitions.is_empty()).then_some(now);
            let s = stmt(st, tx, SQL_WRITE_BACK).map_err(pg)?;
            tx.execute(
                &s,
                &[
                    &w_mids,
                    &w_nos,
                    &w_keys,
                    &w_vals,
                    &vec![mid],
                    &vec![learner_bytes(&learner)],
                    &vec![returns],
                    &vec![n_rows + (table.len() - n_fetched) as i64],
                    &vec![updated_at],
                ],
            )
            .map_err(pg)?;
            let changes = log.take_changes();
            let (decisions, episodes) = changed_rows(BACKEND, &log, &changes)?;
            let meta = meta_bytes(&log.stats(), log.last_id());
            put_log(tx, st, mid, &meta, &decisions, &episodes)?;
            applied?;
            Ok(Some(planned.reply))
        })
    }

    /// A metered decision call of `meter`'s user.
    pub(super) fn metered_call(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        call: Call<'_>,
    ) -> Result<Option<Reply>> {
        self.decision_call(
            meter.user_id,
            model_id,
            call,
            meter.now,
            Payer::Meter(meter),
        )
    }

    /// Settles every model with a passed deadline (see
    /// [`crate::store::Store::settle`]).
    pub(super) fn settle_all(&self, now: i64) -> Result<usize> {
        let due = self.query(
            "SELECT m.owner, m.id FROM models m WHERE m.mid IN \
             (SELECT DISTINCT mid FROM decisions WHERE status = 0 AND closes_ms <= $1)",
            &[&millis(now)],
        )?;
        let mut learned = 0;
        for r in due {
            let (owner, id): (String, String) = (r.get(0), r.get(1));
            if let Some(Reply::Learned(n)) =
                self.decision_call(&owner, &id, Call::Settle, now, Payer::Free)?
            {
                learned += n;
            }
        }
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
            return Ok(DecisionPage::empty());
        }
        let stats = meta_from_bytes(BACKEND, r.get::<_, Option<&[u8]>>(2))?.0;
        let filter = "mid = $1 AND ($2::int8 IS NULL OR status = $2) \
             AND ($3::int8 IS NULL OR time_ms >= $3) AND ($4::int8 IS NULL OR time_ms < $4)";
        let status = q.status.map(status_code);
        let total: i64 = self
            .query(
                &format!("SELECT COUNT(*) FROM decisions WHERE {filter}"),
                &[&mid, &status, &q.since_ms, &q.until_ms],
            )?
            .first()
            .map_or(0, |r| r.get(0));
        let lim = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let off = i64::try_from(q.offset).unwrap_or(i64::MAX);
        let rows = self.query(
            &format!(
                "SELECT {DECISION_COLS} FROM decisions WHERE {filter} \
                 ORDER BY time_ms, id LIMIT $5 OFFSET $6"
            ),
            &[&mid, &status, &q.since_ms, &q.until_ms, &lim, &off],
        )?;
        Ok(DecisionPage {
            total: total as u64,
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
