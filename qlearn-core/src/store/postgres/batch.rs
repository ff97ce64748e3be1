//! One batch transaction of one user's calls: lock the models and debit the
//! quota in one statement, validate, fetch only the Q-rows the calls need,
//! run the engine, write everything back in one statement. A conflict with
//! another transaction is [`Retry::Again`], a typed value carried to the
//! loop in [`PgStore::run_batch`](super::PgStore::run_batch) that runs the batch again.

use std::collections::HashMap;
use std::sync::Arc;

use postgres::error::SqlState;
use postgres::{Statement, Transaction};

use super::combiner::{Call, Outcome, Request};
use super::pool::stmt;
use super::sql::{
    SQL_DEBIT, SQL_DEBIT_LOCK_MODELS, SQL_FETCH_ROWS, SQL_LOCK_MODELS, SQL_WRITE_BACK,
};
use super::{pg, BACKEND};
use crate::error::{Error, Result};
use crate::model::{at_index, Learner};
use crate::state::{canonical_key, State, StateKey, StateRef};
use crate::store::encoding::{
    decode_key, decode_learner, decode_values, key_bytes, learner_bytes, returns_bytes,
    table_from_rows, values_bytes, Tracked,
};
use crate::store::report::updated;
use crate::store::rules::check_state_room;
use crate::store::CallKind;
use crate::store::OwnedExperience;
use crate::table::QTable;
use crate::tenancy::{seconds_until_next_month, BillingMonth, TierLimits};

/// Why a batch's transaction stopped before committing.
pub(super) enum Retry {
    /// A deadlock or serialization failure with another transaction: run
    /// the batch again.
    Again,
    /// Any other failure: every call of the batch fails with it.
    Fail(Error),
}

/// A batch step's result: `Err` aborts the transaction.
pub(super) type Step<T> = std::result::Result<T, Retry>;

impl From<postgres::Error> for Retry {
    fn from(e: postgres::Error) -> Retry {
        let code = e.code();
        if code == Some(&SqlState::T_R_DEADLOCK_DETECTED)
            || code == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        {
            Retry::Again
        } else {
            Retry::Fail(pg(e))
        }
    }
}

impl From<Error> for Retry {
    fn from(e: Error) -> Retry {
        Retry::Fail(e)
    }
}

/// The debit of `n` calls of `kind` for `user`, as one statement.
/// `Ok(true)` when granted.
pub(super) fn debit(
    tx: &mut Transaction<'_>,
    st: &mut HashMap<&'static str, Statement>,
    user: &str,
    limits: &TierLimits,
    now: i64,
    kind: CallKind,
    n: u64,
) -> Step<bool> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    debit_signed(tx, st, user, limits, true, now, &[(kind, n)])
}

fn as_i64(n: Option<u64>) -> Option<i64> {
    n.map(|l| i64::try_from(l).unwrap_or(i64::MAX))
}

/// The calls of `reqs` summed by kind (each kind once: one usage row each).
fn by_kind<'a>(reqs: impl Iterator<Item = &'a Request>, sign: i64) -> Vec<(CallKind, i64)> {
    let mut out: Vec<(CallKind, i64)> = Vec::new();
    for r in reqs {
        let n = sign.saturating_mul(i64::try_from(r.n()).unwrap_or(i64::MAX));
        match out.iter_mut().find(|(k, _)| *k == r.kind()) {
            Some((_, sum)) => *sum = sum.saturating_add(n),
            None => out.push((r.kind(), n)),
        }
    }
    out
}

/// The columns of `kinds` as [`SQL_DEBIT`] takes them: names, calls, total.
fn kind_columns(kinds: &[(CallKind, i64)]) -> (Vec<&'static str>, Vec<i64>, i64) {
    let names = kinds.iter().map(|(k, _)| k.as_str()).collect();
    let ns: Vec<i64> = kinds.iter().map(|&(_, n)| n).collect();
    let total = ns.iter().fold(0i64, |a, &n| a.saturating_add(n));
    (names, ns, total)
}

/// [`debit`] of calls by kind, negative to give back calls debited earlier
/// in the same transaction (with `enforce` false: a give-back is never
/// refused; the overage it gives back follows `limits`).
pub(super) fn debit_signed(
    tx: &mut Transaction<'_>,
    st: &mut HashMap<&'static str, Statement>,
    user: &str,
    limits: &TierLimits,
    enforce: bool,
    now: i64,
    kinds: &[(CallKind, i64)],
) -> Step<bool> {
    let (names, ns, total) = kind_columns(kinds);
    if total == 0 {
        return Ok(true);
    }
    let month = BillingMonth::from_unix(now);
    let day = i16::from(month.day_of(now));
    let hard = if enforce {
        as_i64(limits.hard_quota())
    } else {
        None
    };
    let over = as_i64(limits.overage_quota());
    let s = stmt(st, tx, SQL_DEBIT)?;
    let rows = tx.query(
        &s,
        &[
            &user,
            &month.to_string(),
            &total,
            &hard,
            &day,
            &names,
            &ns,
            &over,
        ],
    )?;
    Ok(!rows.is_empty())
}

pub(super) fn quota_error(limits: &TierLimits, now: i64) -> Error {
    Error::QuotaExceeded {
        limit: limits.monthly_calls.unwrap_or(0),
        retry_after_secs: seconds_until_next_month(now),
    }
}

pub(super) fn validate(learner: &Learner, req: &Request) -> Result<()> {
    match &req.call {
        Call::Predict { state, allowed, .. } | Call::Probabilities { state, allowed, .. } => {
            learner.validate_predict(state.as_ref(), allowed.as_deref())
        }
        Call::Update { exps, .. } => {
            learner.validate_batch(exps.iter().map(OwnedExperience::as_experience))
        }
    }
}

/// A model locked by a batch: its learner, the rows fetched for the batch,
/// and what the batch changed.
pub(super) struct Locked {
    pub(super) mid: i64,
    pub(super) learner: Learner,
    pub(super) n_rows: i64,
    pub(super) keys: Vec<StateKey>,
    pub(super) values: Vec<f64>,
    pub(super) row_nos: Vec<i64>,
    pub(super) table: QTable,
    pub(super) touched: Vec<usize>,
    pub(super) episodes_before: u64,
    pub(super) updated_at: Option<i64>,
    pub(super) granted: bool,
    /// Whether the model logs decisions (read under its row lock).
    pub(super) logs: bool,
}

/// The canonical keys (encoded) a call reads or writes.
pub(super) fn call_keys(
    call: &Call,
    bins: Option<&[crate::config::Bin]>,
    out: &mut Vec<Vec<u8>>,
) -> Result<()> {
    let mut add = |s: &State| -> Result<()> {
        let k = canonical_key(s.as_ref(), bins)?;
        out.push(key_bytes(k.as_ref()));
        Ok(())
    };
    match call {
        Call::Predict { state, .. } | Call::Probabilities { state, .. } => add(state),
        Call::Update { exps, .. } => {
            for x in exps {
                add(&x.state)?;
                add(&x.next_state)?;
            }
            Ok(())
        }
    }
}

/// Runs one call on its locked model.
pub(super) fn run_call(m: &mut Locked, req: &Request) -> Result<Outcome> {
    match &req.call {
        Call::Predict {
            state,
            explore,
            allowed,
            ..
        } => m
            .learner
            .predict_full(&m.table, state.as_ref(), *explore, allowed.as_deref())
            .map(Outcome::Predicted),
        Call::Probabilities {
            state,
            allowed,
            explore,
        } => m
            .learner
            .action_probabilities(&m.table, state.as_ref(), allowed.as_deref(), *explore)
            .map(Outcome::Probabilities),
        Call::Update { exps, report } => {
            m.updated_at = Some(m.updated_at.map_or(req.now, |t| t.max(req.now)));
            let mut outs = Vec::with_capacity(exps.len());
            for (j, x) in exps.iter().enumerate() {
                let mut rows = Tracked {
                    table: &mut m.table,
                    touched: &mut m.touched,
                };
                // Validated input always applies; should it not, what did
                // apply is written back with the rest.
                outs.push(
                    m.learner
                        .update(&mut rows, &x.as_experience())
                        .map_err(|e| at_index(j, e))?,
                );
            }
            let exps = exps.iter().map(OwnedExperience::as_experience);
            updated(*report, outs, &m.learner, &m.table, exps).map(Outcome::Updated)
        }
    }
}

/// The body of [`PgStore::run_batch`](super::PgStore::run_batch)'s transaction: every call of the
/// batch belongs to one user. Per-call errors go to `results`; an `Err`
/// return aborts the transaction, `Ok(false)` rolls it back (nothing to
/// keep), `Ok(true)` commits it.
pub(super) fn apply_batch(
    tx: &mut Transaction<'_>,
    st: &mut HashMap<&'static str, Statement>,
    batch: &[Arc<Request>],
    results: &mut [Option<Result<Outcome>>],
) -> Step<bool> {
    let Some(first) = batch.first() else {
        return Ok(false);
    };
    let user = first.user.as_str();
    // Lock the user's models the batch touches, in id order (every batch
    // and every instance locks in that order: no deadlock).
    let mut ids: Vec<&str> = batch.iter().map(|r| r.model.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let day_of = |r: &Request| {
        let m = BillingMonth::from_unix(r.now);
        (m, m.day_of(r.now))
    };
    // When every call has the same limit and day (the usual case), the
    // whole batch is debited optimistically in the locking statement (one
    // round trip less); calls found invalid are given back below.
    let same = batch.iter().all(|r| {
        r.limits.monthly_calls == first.limits.monthly_calls
            && r.limits.overage == first.limits.overage
            && day_of(r) == day_of(first)
    });
    let total: u64 = batch.iter().map(|r| r.n()).sum();
    let rows = if same && total > 0 {
        let (month, day) = day_of(first);
        let (names, ns, total) = kind_columns(&by_kind(batch.iter().map(|r| &**r), 1));
        let s = stmt(st, tx, SQL_DEBIT_LOCK_MODELS)?;
        tx.query(
            &s,
            &[
                &user,
                &month.to_string(),
                &total,
                &as_i64(first.limits.hard_quota()),
                &i16::from(day),
                &names,
                &ns,
                &as_i64(first.limits.overage_quota()),
                &ids,
            ],
        )?
    } else {
        let s = stmt(st, tx, SQL_LOCK_MODELS)?;
        tx.query(&s, &[&ids, &user])?
    };
    // Whether the optimistic debit of `total` was made (None: not tried).
    let pre_debited: Option<bool> = if same && total > 0 {
        match rows.first() {
            Some(r) => Some(r.get::<_, i64>(7) > 0),
            // No model of this user: every call is NotFound; the caller
            // rolls back whatever the statement debited.
            None => {
                for (i, _) in batch.iter().enumerate() {
                    results[i] = Some(Err(Error::NotFound("model")));
                }
                return Ok(false);
            }
        }
    } else {
        None
    };
    let mut models: HashMap<String, Locked> = HashMap::with_capacity(ids.len());
    for row in rows {
        let config: String = row.get(2);
        let learner = decode_learner(BACKEND, &config, row.get(3), row.get(4))?;
        let width = learner.width();
        models.insert(
            row.get(1),
            Locked {
                mid: row.get(0),
                episodes_before: learner.counters().episodes,
                learner,
                n_rows: row.get(5),
                keys: Vec::new(),
                values: Vec::new(),
                row_nos: Vec::new(),
                table: QTable::new(width),
                touched: Vec::new(),
                updated_at: None,
                granted: false,
                logs: row.get(6),
            },
        );
    }

    // Ownership and validation: errors cost nothing. (A model of another
    // user was not locked: it is unknown here.) A logging predict on a
    // model that logs decisions leaves the batch, free, for the decision
    // path.
    let mut live = Vec::with_capacity(batch.len());
    for (i, req) in batch.iter().enumerate() {
        match models.get(&req.model) {
            None => results[i] = Some(Err(Error::NotFound("model"))),
            Some(m) if m.logs && matches!(req.call, Call::Predict { logging: true, .. }) => {
                results[i] = Some(Ok(Outcome::LogsDecisions));
            }
            Some(m) => match validate(&m.learner, req) {
                Err(e) => results[i] = Some(Err(e)),
                Ok(()) => live.push(i),
            },
        }
    }
    if live.is_empty() {
        // Nothing to keep (an optimistic debit is rolled back).
        return Ok(false);
    }

    // The quota: everything at once when it fits, else call by call.
    let granted: Vec<usize> = if pre_debited == Some(true) {
        // Give back what the invalid calls were debited.
        let invalid = (0..batch.len()).filter(|i| live.binary_search(i).is_err());
        let back = by_kind(invalid.map(|i| &*batch[i]), -1);
        debit_signed(tx, st, user, &first.limits, false, first.now, &back)?;
        live
    } else if pre_debited.is_none()
        && same
        && debit_signed(
            tx,
            st,
            user,
            &first.limits,
            true,
            first.now,
            &by_kind(live.iter().map(|&i| &*batch[i]), 1),
        )?
    {
        live
    } else {
        let mut g = Vec::with_capacity(live.len());
        for i in live {
            let r = &batch[i];
            if debit(tx, st, user, &r.limits, r.now, r.kind(), r.n())? {
                g.push(i);
            } else {
                results[i] = Some(Err(quota_error(&r.limits, r.now)));
            }
        }
        g
    };
    if granted.is_empty() {
        return Ok(true);
    }

    // Fetch the rows the granted calls read or write, for every model at once.
    let mut pairs: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut keys = Vec::new();
    for &i in &granted {
        let r = &batch[i];
        let Some(m) = models.get_mut(&r.model) else {
            continue;
        };
        m.granted = true;
        keys.clear();
        call_keys(&r.call, m.learner.config().state_bins.as_deref(), &mut keys)?;
        pairs.extend(keys.drain(..).map(|k| (m.mid, k)));
    }
    pairs.sort_unstable();
    pairs.dedup();
    let (mids, wanted): (Vec<i64>, Vec<Vec<u8>>) = pairs.into_iter().unzip();
    let s = stmt(st, tx, SQL_FETCH_ROWS)?;
    let fetched = tx.query(&s, &[&mids, &wanted])?;
    let by_mid: HashMap<i64, String> = models.iter().map(|(id, m)| (m.mid, id.clone())).collect();
    for r in &fetched {
        let mid: i64 = r.get(0);
        let Some(m) = by_mid.get(&mid).and_then(|id| models.get_mut(id)) else {
            continue;
        };
        m.row_nos.push(r.get(1));
        m.keys.push(decode_key(BACKEND, r.get(2))?);
        decode_values(BACKEND, r.get(3), m.learner.width(), &mut m.values)?;
    }
    for m in models.values_mut().filter(|m| m.granted) {
        let (k, v) = (std::mem::take(&mut m.keys), std::mem::take(&mut m.values));
        m.table = table_from_rows(BACKEND, m.learner.width(), k, v)?;
    }

    // Run the engine, call after call, in queue order. An update that would
    // pass the tier's states per model is refused whole (the rows it needs
    // were fetched above, so the check counts exactly) and its debit given
    // back in this transaction: it changes nothing and costs nothing.
    for &i in &granted {
        let r = &batch[i];
        let Some(m) = models.get_mut(&r.model) else {
            continue;
        };
        if let Call::Update { exps, .. } = &r.call {
            let held =
                usize::try_from(m.n_rows).unwrap_or(usize::MAX) + (m.table.len() - m.row_nos.len());
            let exps = exps.iter().map(OwnedExperience::as_experience);
            if let Err(e) = check_state_room(&r.limits, &m.learner, held, &m.table, exps) {
                results[i] = Some(Err(e));
                let back = by_kind(std::iter::once(&**r), -1);
                debit_signed(tx, st, user, &r.limits, false, r.now, &back)?;
                continue;
            }
        }
        results[i] = Some(run_call(m, r));
    }

    // Write back the touched rows and the learners, all models at once.
    let mut wb = WriteBack::default();
    for m in models.values_mut().filter(|m| m.granted) {
        let n_fetched = m.row_nos.len();
        m.touched.sort_unstable();
        m.touched.dedup();
        for &pos in &m.touched {
            let Some((k, v)) = m.table.row_at(pos) else {
                continue;
            };
            let row_no = match m.row_nos.get(pos) {
                Some(&n) => n,
                None => m.n_rows + (pos - n_fetched) as i64,
            };
            wb.row(m.mid, row_no, k, v);
        }
        let ended = m.learner.counters().episodes != m.episodes_before;
        let n_rows = m.n_rows + (m.table.len() - n_fetched) as i64;
        wb.model(m.mid, &m.learner, ended, n_rows, m.updated_at);
    }
    wb.run(tx, st)?;
    Ok(true)
}

/// What [`SQL_WRITE_BACK`] writes, column by column: changed Q-rows, and
/// each model's learner, returns, row count and update time.
#[derive(Default)]
pub(super) struct WriteBack {
    mids: Vec<i64>,
    row_nos: Vec<i64>,
    keys: Vec<Vec<u8>>,
    vals: Vec<Vec<u8>>,
    m_mids: Vec<i64>,
    learners: Vec<Vec<u8>>,
    returns: Vec<Option<Vec<u8>>>,
    n_rows: Vec<i64>,
    updated_at: Vec<Option<i64>>,
}

impl WriteBack {
    /// Row `row_no` of model `mid`: `key`, `vals`.
    pub(super) fn row(&mut self, mid: i64, row_no: i64, key: StateRef<'_>, vals: &[f64]) {
        self.mids.push(mid);
        self.row_nos.push(row_no);
        self.keys.push(key_bytes(key));
        self.vals.push(values_bytes(vals));
    }

    /// Model `mid`'s learner (and its returns when an episode `ended`),
    /// its row count and update time (`None`: unchanged).
    pub(super) fn model(
        &mut self,
        mid: i64,
        learner: &Learner,
        ended: bool,
        n_rows: i64,
        updated_at: Option<i64>,
    ) {
        self.m_mids.push(mid);
        self.learners.push(learner_bytes(learner));
        self.returns.push(ended.then(|| returns_bytes(learner)));
        self.n_rows.push(n_rows);
        self.updated_at.push(updated_at);
    }

    /// Writes it all in one statement.
    pub(super) fn run(
        self,
        tx: &mut Transaction<'_>,
        st: &mut HashMap<&'static str, Statement>,
    ) -> Step<()> {
        let s = stmt(st, tx, SQL_WRITE_BACK)?;
        tx.execute(
            &s,
            &[
                &self.mids,
                &self.row_nos,
                &self.keys,
                &self.vals,
                &self.m_mids,
                &self.learners,
                &self.returns,
                &self.n_rows,
                &self.updated_at,
            ],
        )?;
        Ok(())
    }
}
