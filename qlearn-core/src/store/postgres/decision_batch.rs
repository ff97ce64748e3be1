//! Decision calls on PostgreSQL, combined per model: concurrent logging
//! predicts, rewards and episode ends of one model in this process run in
//! one transaction (one row lock, one fetch of the decided states' rows,
//! one quota debit for the logging predicts, one write of the Q-rows and
//! the learner, one of the log's rows, one commit), each call keeping its
//! own validation, quota decision and answer. A model's decision calls
//! serialise on its row lock anyway: combining them is what lets them
//! share round trips and commits (issue 16: one transaction per logging
//! predict held the lock through eight round trips, and one model took
//! 734-944 of them a second however many connections asked).
//!
//! Calls run in queue order through the shared steps (`load`, `plan`,
//! `apply` in `store/decisions.rs`), each seeing what the calls before it
//! in the batch changed, exactly as if they had run one after another. A
//! call's error (invalid input, quota) changes nothing and costs nothing;
//! a database error fails the whole batch (nothing of it happened), and a
//! deadlock with another instance runs the batch again.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use postgres::{Statement, Transaction};

use super::batch::{debit, debit_signed, quota_error, Retry, Step, WriteBack};
use super::combiner::{with_retries, Queued};
use super::decisions::{prefetch, put_log, Absent, TxRows, SQL_LOCK_MODEL, SQL_LOCK_MODEL_SKIP};
use super::pool::stmt;
use super::sql::SQL_FETCH_ROWS;
use super::{lock_plain, PgStore, BACKEND};
use crate::decisions::{Decide, EpisodeEnd, Transition};
use crate::error::{Error, Result};
use crate::model::Learner;
use crate::state::{canonical_key, State, StateKey};
use crate::store::decision_rows::{changed_rows, earliest_open, load, meta_bytes, partial_log};
use crate::store::decisions::{
    apply, config_from_text, millis, plan, transition_keys, without_log, Call, Reply, RewardIn,
    Room,
};
use crate::store::encoding::{decode_key, decode_learner, decode_values, key_bytes, Tracked};
use crate::store::{CallKind, Meter};
use crate::table::QTable;
use crate::tenancy::{BillingMonth, TierLimits};

/// Who pays for a decision call: a metered user, or nobody (settling).
#[derive(Clone, Copy)]
pub(super) enum Payer<'a> {
    Meter(&'a Meter<'a>),
    Free,
}

/// One decision call of a batch: what to run, who pays, and when.
#[derive(Clone, Copy)]
pub(super) struct Item<'a> {
    pub(super) call: Call<'a>,
    pub(super) payer: Payer<'a>,
    /// Unix seconds.
    pub(super) now: i64,
}

/// Each item's outcome: `Ok(None)` is a logging predict on a model that
/// logs no decisions (or, settling, a model another transaction holds).
pub(super) type Outcome = Option<Result<Option<Reply>>>;

/// The Q-rows a batch holds: those fetched from the database (with their
/// row numbers) and those the engine created (numbered at write-back,
/// after the model's `n_rows`), in one table the calls share.
struct BatchRows {
    table: QTable,
    /// Per position: the stored row's number, `None` for a new row.
    row_nos: Vec<Option<i64>>,
    touched: Vec<usize>,
    /// Rows the model stores (before this batch).
    n_rows: i64,
}

impl BatchRows {
    fn new(width: usize, n_rows: i64) -> BatchRows {
        BatchRows {
            table: QTable::new(width),
            row_nos: Vec::new(),
            touched: Vec::new(),
            n_rows,
        }
    }

    /// Rows the model stores with this batch's new ones.
    fn stored(&self) -> i64 {
        let new = self.row_nos.iter().filter(|n| n.is_none()).count();
        self.n_rows.saturating_add(new as i64)
    }

    /// [`BatchRows::stored`], as the tier's states-per-model check counts.
    fn held(&self) -> usize {
        usize::try_from(self.stored()).unwrap_or(usize::MAX)
    }

    /// Fetches the stored rows of `wanted` the batch does not hold yet
    /// (a row the batch created is not stored: the model's lock kept
    /// everyone else from storing it).
    fn fetch(
        &mut self,
        tx: &mut Transaction<'_>,
        st: &mut HashMap<&'static str, Statement>,
        mid: i64,
        wanted: &[StateKey],
    ) -> Step<()> {
        let mut new: Vec<Vec<u8>> = wanted
            .iter()
            .filter(|k| self.table.position(k.as_ref()).is_none())
            .map(|k| key_bytes(k.as_ref()))
            .collect();
        new.sort_unstable();
        new.dedup();
        if new.is_empty() {
            return Ok(());
        }
        let mids = vec![mid; new.len()];
        let s = stmt(st, tx, SQL_FETCH_ROWS)?;
        let width = self.table.width();
        let mut values = Vec::with_capacity(width);
        for r in tx.query(&s, &[&mids, &new])? {
            let key = decode_key(BACKEND, r.get(2))?;
            values.clear();
            decode_values(BACKEND, r.get(3), width, &mut values)?;
            let (pos, inserted) = self.table.index_or_insert(key.as_ref(), 0.0);
            if inserted {
                self.table.values_at_mut(pos).copy_from_slice(&values);
                self.row_nos.push(Some(r.get(1)));
            }
        }
        Ok(())
    }

    /// Adds the touched rows to `wb`.
    fn write(&mut self, mid: i64, wb: &mut WriteBack) {
        // New rows are numbered in position order after the stored ones.
        let mut next = self.n_rows;
        let numbers: Vec<i64> = self
            .row_nos
            .iter()
            .map(|n| {
                n.unwrap_or_else(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        self.touched.sort_unstable();
        self.touched.dedup();
        for &pos in &self.touched {
            if let (Some((k, v)), Some(&no)) = (self.table.row_at(pos), numbers.get(pos)) {
                wb.row(mid, no, k, v);
            }
        }
    }

    /// Applies `transitions` (the engine's [`apply`]), recording what it
    /// wrote and the rows it created.
    fn apply(&mut self, learner: &mut Learner, transitions: &[Transition]) -> Result<()> {
        let r = apply(
            learner,
            &mut Tracked {
                table: &mut self.table,
                touched: &mut self.touched,
            },
            transitions,
        );
        self.row_nos.resize(self.table.len(), None);
        r
    }
}

/// The calls of a batch paid in advance, by kind: its logging predicts
/// and rewards in one debit when they share their user's limits and
/// billing day. A call takes from it what it is metered; what is left at
/// the end (failed calls, replays, duplicate rewards) is given back.
#[derive(Default)]
struct Prepaid<'a> {
    meter: Option<&'a Meter<'a>>,
    decide: u64,
    reward: u64,
}

impl<'a> Prepaid<'a> {
    /// Debits the most `items` can be metered, in one statement (none when
    /// they differ in limits or day, or fewer than two may pay).
    fn debit(
        tx: &mut Transaction<'_>,
        st: &mut HashMap<&'static str, Statement>,
        items: &[Item<'a>],
    ) -> Step<Prepaid<'a>> {
        let mut first: Option<(&'a Meter<'a>, (BillingMonth, u8))> = None;
        let (mut decide, mut reward, mut paying) = (0u64, 0u64, 0usize);
        for it in items {
            let Payer::Meter(m) = it.payer else {
                continue;
            };
            match it.call {
                Call::Decide(_) => decide += 1,
                Call::Rewards(r) => reward += r.len() as u64,
                _ => continue,
            }
            paying += 1;
            let month = BillingMonth::from_unix(m.now);
            let day = (month, month.day_of(m.now));
            match first {
                None => first = Some((m, day)),
                Some((f, d)) => {
                    let same = f.user_id == m.user_id
                        && f.limits.monthly_calls == m.limits.monthly_calls
                        && f.limits.overage == m.limits.overage
                        && d == day;
                    if !same {
                        return Ok(Prepaid::default());
                    }
                }
            }
        }
        // One call pays for itself (a replay or a duplicate pays nothing).
        let Some((m, _)) = first.filter(|_| paying >= 2) else {
            return Ok(Prepaid::default());
        };
        let paid = Prepaid {
            meter: Some(m),
            decide,
            reward,
        };
        let debited = debit_signed(tx, st, m.user_id, m.limits, true, m.now, &paid.kinds(1))?;
        Ok(if debited { paid } else { Prepaid::default() })
    }

    fn slot(&mut self, kind: CallKind) -> Option<&mut u64> {
        match kind {
            CallKind::Decide => Some(&mut self.decide),
            CallKind::Reward => Some(&mut self.reward),
            _ => None,
        }
    }

    /// Takes `n` calls of `kind`: whether they were paid in advance.
    fn take(&mut self, kind: CallKind, n: u64) -> bool {
        match self.slot(kind) {
            Some(left) if *left >= n => {
                *left -= n;
                true
            }
            _ => false,
        }
    }

    /// Puts back what a call that failed took.
    fn put_back(&mut self, kind: CallKind, n: u64) {
        if let Some(left) = self.slot(kind) {
            *left += n;
        }
    }

    /// What is left, by kind, times `sign` (as [`debit_signed`] takes it).
    fn kinds(&self, sign: i64) -> Vec<(CallKind, i64)> {
        [
            (CallKind::Decide, self.decide),
            (CallKind::Reward, self.reward),
        ]
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .map(|(k, n)| (k, sign.saturating_mul(i64::try_from(n).unwrap_or(i64::MAX))))
        .collect()
    }

    /// Gives back what is left.
    fn give_back(
        &self,
        tx: &mut Transaction<'_>,
        st: &mut HashMap<&'static str, Statement>,
    ) -> Step<()> {
        let back = self.kinds(-1);
        if let (Some(m), false) = (self.meter, back.is_empty()) {
            debit_signed(tx, st, m.user_id, m.limits, false, m.now, &back)?;
        }
        Ok(())
    }
}

/// Runs `items` on `owner`'s model `id` in `tx` (the batch's body): sets
/// every outcome; `Ok(true)` when something is to be committed.
#[allow(clippy::too_many_arguments)]
fn run_items(
    tx: &mut Transaction<'_>,
    st: &mut HashMap<&'static str, Statement>,
    owner: &str,
    id: &str,
    skip_locked: bool,
    items: &[Item<'_>],
    out: &mut [Outcome],
    opened: &Cell<Option<(i64, i64)>>,
) -> Step<bool> {
    let lock = if skip_locked {
        SQL_LOCK_MODEL_SKIP
    } else {
        SQL_LOCK_MODEL
    };
    let s = stmt(st, tx, lock)?;
    let Some(row) = tx.query_opt(&s, &[&id, &owner])? else {
        for (o, it) in out.iter_mut().zip(items) {
            *o = Some(match it.payer {
                Payer::Meter(_) => Err(Error::NotFound("model")),
                Payer::Free => Ok(None),
            });
        }
        return Ok(false);
    };
    let mid: i64 = row.get(0);
    let config_json: String = row.get(1);
    let mut learner = decode_learner(BACKEND, &config_json, row.get(2), row.get(3))?;
    let Some(config) = config_from_text(BACKEND, row.get::<_, Option<&str>>(5))? else {
        for (o, it) in out.iter_mut().zip(items) {
            *o = Some(match it.call {
                Call::Decide(_) => Ok(None),
                call => without_log(call).map(Some),
            });
        }
        return Ok(false);
    };
    let mut log = partial_log(BACKEND, config, row.get::<_, Option<&[u8]>>(6))?;
    // The rows the calls read, for all of them at once.
    let absent = if items.len() > 1 {
        let calls: Vec<(Call<'_>, i64)> =
            items.iter().map(|it| (it.call, millis(it.now))).collect();
        prefetch(tx, st, mid, &mut log, &calls)?
    } else {
        Absent::default()
    };
    let mut rows = BatchRows::new(learner.width(), row.get(4));
    // In one fetch: the decided states' rows, for the predictions, and
    // those of the rewarded decisions the log holds, for the transitions
    // the rewards may complete (a state the model refuses is refused by
    // `plan`, with its error; a row found missing later is fetched then).
    let bins = learner.config().state_bins.clone();
    let mut states: Vec<StateKey> = Vec::new();
    for it in items {
        match it.call {
            Call::Decide(d) => states.extend(canonical_key(d.state, bins.as_deref()).ok()),
            Call::Rewards(rw) => states.extend(
                rw.iter()
                    .filter_map(|r| log.get(&r.decision_id))
                    .filter_map(|d| canonical_key(d.state.as_ref(), bins.as_deref()).ok()),
            ),
            _ => {}
        }
    }
    rows.fetch(tx, st, mid, &states)?;
    let mut prepaid = Prepaid::debit(tx, st, items)?;
    let episodes_before = learner.counters().episodes;
    let mut updated_at: Option<i64> = None;
    let mut kept = false;
    for (it, o) in items.iter().zip(out.iter_mut()) {
        let now_ms = millis(it.now);
        load(
            &mut log,
            it.call,
            now_ms,
            &mut TxRows {
                tx: &mut *tx,
                st: &mut *st,
                mid,
                absent: &absent,
            },
        )?;
        let room = Room {
            limits: match it.payer {
                Payer::Meter(m) => m.limits,
                Payer::Free => &TierLimits::UNLIMITED,
            },
            held: rows.held(),
        };
        // What this call was debited (to give back should it fail after),
        // and whether the debit's statement failed (the transaction is
        // then lost) or met another transaction's lock cycle.
        let mut paid: Option<(CallKind, u64, bool)> = None;
        let (mut failed, mut again) = (false, false);
        let planned = plan(
            &mut log,
            &mut learner,
            &rows.table,
            room,
            it.call,
            now_ms,
            |kind, n| match it.payer {
                Payer::Meter(m) if n > 0 => {
                    if prepaid.take(kind, n) {
                        paid = Some((kind, n, true));
                        return Ok(());
                    }
                    match debit(tx, st, m.user_id, m.limits, m.now, kind, n) {
                        Ok(true) => {
                            paid = Some((kind, n, false));
                            Ok(())
                        }
                        Ok(false) => Err(quota_error(m.limits, m.now)),
                        Err(Retry::Fail(e)) => {
                            failed = true;
                            Err(e)
                        }
                        Err(Retry::Again) => {
                            again = true;
                            Err(Error::storage(BACKEND, "the debit met a deadlock"))
                        }
                    }
                }
                _ => Ok(()),
            },
        );
        let planned = match planned {
            Ok(p) => p,
            Err(_) if again => return Err(Retry::Again),
            Err(e) if failed => return Err(Retry::Fail(e)),
            Err(e) => {
                // Errors change nothing and cost nothing.
                match (paid, it.payer) {
                    (Some((kind, n, true)), _) => prepaid.put_back(kind, n),
                    (Some((kind, n, false)), Payer::Meter(m)) => {
                        let n = i64::try_from(n).unwrap_or(i64::MAX);
                        let back = [(kind, -n)];
                        debit_signed(tx, st, m.user_id, m.limits, false, m.now, &back)?;
                    }
                    _ => {}
                }
                *o = Some(Err(e));
                continue;
            }
        };
        let wanted = transition_keys(&learner, &planned.transitions)?;
        rows.fetch(tx, st, mid, &wanted)?;
        // Fails only with imported Q-values near `f64::MAX`. As in every
        // store, the call gets the error and what it did before is kept:
        // its log's changes and the transitions applied before the one
        // refused (`apply`); the batch's other calls go on.
        let applied = rows.apply(&mut learner, &planned.transitions);
        if !planned.transitions.is_empty() {
            updated_at = Some(updated_at.map_or(it.now, |t| t.max(it.now)));
        }
        *o = Some(applied.map(|()| Some(planned.reply)));
        kept = true;
    }
    if !kept {
        // Nothing to keep: the prepaid debit is rolled back with the rest.
        return Ok(false);
    }
    // Give back what the calls that failed, replayed or were duplicates
    // were debited in advance.
    prepaid.give_back(tx, st)?;
    let mut wb = WriteBack::default();
    rows.write(mid, &mut wb);
    let ended = learner.counters().episodes != episodes_before;
    wb.model(mid, &learner, ended, rows.stored(), updated_at);
    wb.run(tx, st)?;
    let changes = log.take_changes();
    let (decisions, episodes) = changed_rows(BACKEND, &log, &changes)?;
    let meta = meta_bytes(&log.stats(), log.last_id());
    put_log(tx, st, mid, &meta, &decisions, &episodes)?;
    opened.set(earliest_open(&decisions).map(|at| (mid, at)));
    Ok(true)
}

/// A logging predict's input, owned (a leader thread runs it).
pub(super) struct OwnedDecide {
    state: State,
    allowed_actions: Option<Vec<usize>>,
    explore: bool,
    decision_id: Option<String>,
    episode_id: Option<String>,
    baseline_action: Option<usize>,
}

impl OwnedDecide {
    fn of(d: &Decide<'_>) -> OwnedDecide {
        OwnedDecide {
            state: d.state.to_state(),
            allowed_actions: d.allowed_actions.map(<[usize]>::to_vec),
            explore: d.explore,
            decision_id: d.decision_id.map(str::to_owned),
            episode_id: d.episode_id.map(str::to_owned),
            baseline_action: d.baseline_action,
        }
    }

    fn borrowed(&self) -> Decide<'_> {
        Decide {
            state: self.state.as_ref(),
            allowed_actions: self.allowed_actions.as_deref(),
            explore: self.explore,
            decision_id: self.decision_id.as_deref(),
            episode_id: self.episode_id.as_deref(),
            baseline_action: self.baseline_action,
        }
    }
}

/// A metered decision call's input, owned.
pub(super) enum Input {
    Decide(OwnedDecide),
    Rewards(Vec<RewardIn>),
    End { episode_id: String, end: EpisodeEnd },
}

impl Input {
    /// The input of `call` (a settlement is never combined: `None`).
    fn of(call: Call<'_>) -> Option<Input> {
        Some(match call {
            Call::Decide(d) => Input::Decide(OwnedDecide::of(d)),
            Call::Rewards(r) => Input::Rewards(r.to_vec()),
            Call::End { episode_id, end } => Input::End {
                episode_id: episode_id.to_owned(),
                end: end.clone(),
            },
            Call::Settle { .. } => return None,
        })
    }
}

/// An [`Input`] borrowed as a [`Call`] (a logging predict's [`Decide`]
/// needs a place to live while its call borrows it).
enum Borrowed<'a> {
    Decide(Decide<'a>),
    Call(Call<'a>),
}

/// A metered decision call queued for its model's combined batch.
pub(super) struct DecisionRequest {
    user: String,
    limits: TierLimits,
    now: i64,
    input: Input,
    result: Mutex<Option<Result<Option<Reply>>>>,
}

impl Queued for DecisionRequest {
    type Out = Option<Reply>;

    fn take(&self) -> Option<Result<Option<Reply>>> {
        lock_plain(&self.result).take()
    }
}

impl PgStore {
    /// Runs `items` on `owner`'s model `id` in one transaction, again
    /// when it deadlocks with another instance: one outcome per item.
    pub(super) fn decision_batch(
        &self,
        owner: &str,
        id: &str,
        skip_locked: bool,
        items: &[Item<'_>],
    ) -> Vec<Result<Option<Reply>>> {
        // The earliest open deadline written, told to the settle pass
        // after the commit (a failed attempt's is harmless: one look more).
        let opened = Cell::new(None);
        let results = with_retries(items.len(), |out| {
            self.in_tx(|tx, st| run_items(tx, st, owner, id, skip_locked, items, out, &opened))
        });
        if let Some((mid, at)) = opened.get() {
            self.due.logged(mid, at);
        }
        results
    }

    /// A metered decision call of `meter`'s user, combined with the other
    /// decision calls of the same model in this process (see the module
    /// docs).
    pub(super) fn metered_call(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        call: Call<'_>,
    ) -> Result<Option<Reply>> {
        let Some(input) = Input::of(call) else {
            return Err(Error::Internal("a settlement is not metered".into()));
        };
        let key = (meter.user_id.to_owned(), model_id.to_owned());
        let comb = super::combiner::combiner_in(&self.decision_combiners, key);
        let req = DecisionRequest {
            user: meter.user_id.to_owned(),
            limits: *meter.limits,
            now: meter.now,
            input,
            result: Mutex::new(None),
        };
        comb.call(req, |batch| self.run_decision_batch(model_id, batch))
    }

    /// Runs a batch of one model's queued decision calls; sets every
    /// request's result.
    fn run_decision_batch(&self, model_id: &str, batch: &[Arc<DecisionRequest>]) {
        let borrowed: Vec<Borrowed<'_>> = batch
            .iter()
            .map(|r| match &r.input {
                Input::Decide(d) => Borrowed::Decide(d.borrowed()),
                Input::Rewards(rw) => Borrowed::Call(Call::Rewards(rw)),
                Input::End { episode_id, end } => Borrowed::Call(Call::End { episode_id, end }),
            })
            .collect();
        let meters: Vec<Meter<'_>> = batch
            .iter()
            .map(|r| Meter {
                user_id: &r.user,
                limits: &r.limits,
                now: r.now,
            })
            .collect();
        let items: Vec<Item<'_>> = borrowed
            .iter()
            .zip(&meters)
            .map(|(b, m)| Item {
                call: match b {
                    Borrowed::Decide(d) => Call::Decide(d),
                    Borrowed::Call(c) => *c,
                },
                payer: Payer::Meter(m),
                now: m.now,
            })
            .collect();
        let owner = batch.first().map_or("", |r| r.user.as_str());
        let results = self.decision_batch(owner, model_id, false, &items);
        for (req, r) in batch.iter().zip(results) {
            *lock_plain(&req.result) = Some(r);
        }
    }
}

#[cfg(test)]
#[path = "decision_batch_tests.rs"]
mod tests;
