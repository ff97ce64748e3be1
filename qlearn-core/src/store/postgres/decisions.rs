//! Decisions and delayed rewards on PostgreSQL (issue 14): a decision call
//! is one transaction holding the model's row lock (the lock every update
//! of the model takes, so decision calls and updates serialise per model,
//! model row first, then its log). It reads the model's serialized log (see
//! [`crate::store::decisions`]), fetches only the Q-rows the call reads or
//! writes, runs the shared steps, and writes the rows, the learner, the
//! debit and the new log before it commits: a transition is learned in the
//! transaction that marks its decision applied.
//!
//! Settling: every instance lists the logs with a passed deadline and takes
//! each model's row with `FOR UPDATE SKIP LOCKED`; a model locked by another
//! instance (or a running call) is skipped and settled by whoever holds it
//! or on the next round, and the log is read after the lock, so each
//! transition is applied once.

use std::collections::HashMap;

use postgres::{Statement, Transaction};

use super::batch::{debit, quota_error, Retry};
use super::pool::stmt;
use super::sql::{SQL_FETCH_ROWS, SQL_WRITE_BACK};
use super::{pg, PgStore, BACKEND};
use crate::decisions::DecisionsConfig;
use crate::error::{Error, Result};
use crate::state::{canonical_key, StateKey};
use crate::store::decisions::{
    apply, config_from_text, config_text, decode, encode, millis, page, plan, transition_keys,
    without_log, Call, Reply, Room,
};
use crate::store::encoding::{
    decode_key, decode_learner, decode_values, key_bytes, learner_bytes, returns_bytes,
    table_from_rows, values_bytes, Tracked,
};
use crate::store::{DecisionPage, DecisionQuery, Meter, ModelInfo};
use crate::table::QTable;
use crate::tenancy::TierLimits;

/// The model row a decision call locks.
const SQL_LOCK_MODEL: &str = "SELECT mid, config, learner, returns, n_rows, decisions FROM models \
     WHERE id = $1 AND owner = $2 FOR UPDATE";
/// The same, skipping a row another transaction holds (settling).
const SQL_LOCK_MODEL_SKIP: &str =
    "SELECT mid, config, learner, returns, n_rows, decisions FROM models \
     WHERE id = $1 AND owner = $2 FOR UPDATE SKIP LOCKED";
const SQL_PUT_LOG: &str = "INSERT INTO decision_logs (mid, log, next_deadline_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (mid) DO UPDATE SET log = excluded.log, \
     next_deadline_ms = excluded.next_deadline_ms";

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
            let stored: Option<Vec<u8>> = tx
                .query_opt("SELECT log FROM decision_logs WHERE mid = $1", &[&mid])
                .map_err(pg)?
                .map(|r| r.get(0));
            let mut log = decode(BACKEND, stored.as_deref(), config)?;
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
            log.prune(now_ms);
            let (bytes, next_deadline_ms) = encode(BACKEND, &log)?;
            let s = stmt(st, tx, SQL_PUT_LOG).map_err(pg)?;
            tx.execute(&s, &[&mid, &bytes, &next_deadline_ms])
                .map_err(pg)?;
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
            "SELECT m.owner, m.id FROM decision_logs d JOIN models m ON m.mid = d.mid \
             WHERE d.next_deadline_ms <= $1",
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
        Ok(learned)
    }

    /// A page of `owner`'s model `id`'s decision log.
    pub(super) fn decision_page(
        &self,
        owner: &str,
        id: &str,
        query: &DecisionQuery,
    ) -> Result<DecisionPage> {
        let rows = self.query(
            "SELECT m.decisions, d.log FROM models m \
             LEFT JOIN decision_logs d ON d.mid = m.mid WHERE m.id = $1 AND m.owner = $2",
            &[&id, &owner],
        )?;
        let r = rows.first().ok_or(Error::NotFound("model"))?;
        let config = config_from_text(BACKEND, r.get::<_, Option<&str>>(0))?;
        Ok(match config {
            Some(config) => page(
                &decode(BACKEND, r.get::<_, Option<&[u8]>>(1), config)?,
                query,
            ),
            None => DecisionPage::empty(),
        })
    }

    /// Sets the decisions setting of `owner`'s models in `infos` from the
    /// database.
    pub(super) fn fill_decisions(&self, owner: &str, infos: &mut [ModelInfo]) -> Result<()> {
        let rows = self.query(
            "SELECT id, decisions FROM models WHERE owner = $1 AND decisions IS NOT NULL",
            &[&owner],
        )?;
        for info in infos.iter_mut() {
            let text = rows
                .iter()
                .find(|r| r.get::<_, &str>(0) == info.id)
                .map(|r| r.get::<_, &str>(1));
            info.decisions = config_from_text(BACKEND, text)?;
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
    tx.execute(
        "UPDATE models SET decisions = $2 WHERE mid = $1",
        &[&mid, &text],
    )
    .map_err(pg)?;
    if text.is_none() {
        tx.execute("DELETE FROM decision_logs WHERE mid = $1", &[&mid])
            .map_err(pg)?;
    }
    Ok(())
}
