//! The model cache of [`SqliteStore`](super::SqliteStore): models loaded
//! on demand and served from memory under a mutex each, bounded by bytes
//! (least recently used out; the bookkeeping is in `lru.rs`), and the
//! in-memory monthly usage counters the quota debits check.
//!
//! # Eviction
//!
//! The cache's truth is the file's: a model may leave memory only when
//! nothing about it exists in memory alone. So a model is evicted only
//! - when nobody holds its mutex (no call in flight on it: eviction only
//!   `try_lock`s, it never waits for a model), and
//! - when the writer has committed its last learning job
//!   ([`Cached::last_seq`]; other writes are waited for under the mutex).
//!
//! Evicting marks the slot [`SlotState::Evicted`] (the model freed after
//! the cache's lock is released, a large one on its own thread: `freer.rs`) and
//! removes it from the map under the slot's mutex, so a caller that looked
//! the slot up before sees `Evicted` and looks again, loading the model
//! from the file, which holds exactly what was acknowledged. A model in use
//! is skipped, so the budget can be exceeded by the models of the calls in
//! flight and, when a single model is bigger than the whole budget, by that
//! one model (it stays while it is the only one cached, and is the first
//! evicted when another is used).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, TryLockError};

use rusqlite::{params, OptionalExtension};

use super::decisions::LogSlot;
use super::schema::{model_row, tab_ids, MODEL_COLS};
use super::writer::{Job, Learn, RowWrite, UsageDelta, Waiting};
use super::{corrupt, lock_plain, poisoned, sq, Inner, SqliteStore, BACKEND};
use crate::error::{Error, Result};
use crate::model::Learner;
use crate::state::StateRef;
use crate::store::encoding::{
    decode_key, decode_values, learner_bytes, returns_bytes, table_from_rows,
};
use crate::store::usage::{Debit, MonthTally};
use crate::store::{CallKind, Meter, ModelInfo, Usage};
use crate::table::QTable;
use crate::tenancy::BillingMonth;

// ---- the model cache ---------------------------------------------------------

/// Bytes a cached model costs beyond what [`Cached::memory_bytes`] adds up
/// exactly: its slot (`Arc<Mutex>`), its entries in the map and the LRU
/// (the id twice more), the configuration's own allocations and the
/// allocator's headers. An estimate, on the generous side.
const MODEL_OVERHEAD: usize = 1024;

/// How many times [`SqliteStore::try_with_model`] tries a model's lock
/// before declining (a few microseconds in all).
const SPINS: usize = 200;

/// A model held in memory: its learner, its table and its metadata.
pub(super) struct Cached {
    pub(super) id: String,
    pub(super) mid: i64,
    /// The table number its Q-rows are stored under (the high bits of
    /// `q_rows.id`): its `mid` until a reshape writes them anew
    /// (`tables.rs`).
    pub(super) tab: i64,
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) learner: Learner,
    pub(super) table: QTable,
    pub(super) deleted: bool,
    /// Sequence number of the last learning job enqueued for this model
    /// (0: none): it may be evicted once the writer committed it.
    pub(super) last_seq: u64,
    /// Its decision log, partly loaded (`decisions.rs`).
    pub(super) log: LogSlot,
}

impl Cached {
    pub(super) fn info(&self) -> ModelInfo {
        ModelInfo::of(
            self.id.clone(),
            self.owner.clone(),
            self.name.clone(),
            &self.learner,
            self.created_at,
            self.updated_at,
        )
    }

    /// The memory this model holds, as the cache budget counts it: the
    /// Q-table's allocation (values, packed keys, index), the record itself,
    /// its strings, the learner's recent returns (up to
    /// [`RECENT_RETURNS`](crate::limits::RECENT_RETURNS), 8 KB),
    /// [`MODEL_OVERHEAD`] and the decisions and episodes its decision log
    /// holds ([`DecisionLog::held_bytes`](crate::decisions::DecisionLog::held_bytes)).
    pub(super) fn memory_bytes(&self) -> usize {
        let log = match &self.log {
            LogSlot::Hot(h) => h.memory_bytes(),
            LogSlot::Unknown | LogSlot::Plain => 0,
        };
        self.model_bytes() + log
    }

    /// [`Cached::memory_bytes`] without the decision log.
    pub(super) fn model_bytes(&self) -> usize {
        let returns = self.learner.counters().recent_returns.capacity();
        self.table.memory_bytes()
            + std::mem::size_of::<Cached>()
            + self.id.capacity()
            + self.owner.capacity()
            + self.name.capacity()
            + returns * std::mem::size_of::<f64>()
            + MODEL_OVERHEAD
    }
}

pub(super) enum SlotState {
    /// Not loaded yet: whoever locks it first loads it.
    Unloaded,
    Ready(Box<Cached>),
    /// Evicted (its memory freed, its slot out of the map): look it up
    /// again, which reloads it from the file.
    Evicted,
    /// Deleted, or its load failed: look it up again.
    Gone,
}

pub(super) type Slot = Arc<Mutex<SlotState>>;

impl SqliteStore {
    /// Reads a model's metadata and Q-table from the database.
    pub(super) fn load(&self, owner: &str, id: &str) -> Result<Cached> {
        self.read(|c| {
            let tx = c.transaction().map_err(sq)?;
            let row = tx
                .query_row(
                    &format!("SELECT {MODEL_COLS} FROM models WHERE id = ?1 AND owner = ?2"),
                    [id, owner],
                    model_row,
                )
                .optional()
                .map_err(sq)?
                .ok_or(Error::NotFound("model"))??;
            let width = row.learner.width();
            let n = usize::try_from(row.n_rows).map_err(|_| corrupt("negative row count"))?;
            let mut keys = Vec::with_capacity(n);
            let mut values = Vec::with_capacity(n.saturating_mul(width));
            {
                let mut st = tx
                    .prepare_cached(
                        "SELECT id - ?1, key, vals FROM q_rows WHERE id BETWEEN ?1 AND ?2 \
                         ORDER BY id",
                    )
                    .map_err(sq)?;
                let (first, last) = tab_ids(row.tab);
                let mut rows = st.query([first, last]).map_err(sq)?;
                while let Some(r) = rows.next().map_err(sq)? {
                    let row_no: i64 = r.get(0).map_err(sq)?;
                    if row_no != keys.len() as i64 {
                        return Err(corrupt(format!(
                            "model {id}: Q-row {row_no} where {} was expected",
                            keys.len()
                        )));
                    }
                    let k = r.get_ref(1).map_err(sq)?.as_blob().map_err(corrupt)?;
                    keys.push(decode_key(BACKEND, k)?);
                    let v = r.get_ref(2).map_err(sq)?.as_blob().map_err(corrupt)?;
                    decode_values(BACKEND, v, width, &mut values)?;
                }
            }
            if keys.len() != n {
                return Err(corrupt(format!(
                    "model {id} has {} Q-rows, its record says {n}",
                    keys.len()
                )));
            }
            let table = table_from_rows(BACKEND, width, keys, values)?;
            Ok(Cached {
                id: row.id,
                mid: row.mid,
                tab: row.tab,
                owner: row.owner,
                name: row.name,
                created_at: row.created_at,
                updated_at: row.updated_at,
                learner: row.learner,
                table,
                deleted: false,
                last_seq: 0,
                log: LogSlot::Unknown,
            })
        })
    }

    /// The cache slot of model `id`, a new [`SlotState::Unloaded`] one if
    /// the model is not cached.
    fn slot(&self, id: &str) -> Result<Slot> {
        if let Some(s) = self.inner.models.read().map_err(|_| poisoned())?.get(id) {
            return Ok(s.clone());
        }
        let mut map = self.inner.models.write().map_err(|_| poisoned())?;
        Ok(map
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(SlotState::Unloaded)))
            .clone())
    }

    /// Takes `slot` out of the map if it is still the one for `id`.
    fn unmap(&self, id: &str, slot: &Slot) -> Result<()> {
        self.inner.unmap(id, slot)
    }

    /// Runs `f` on `owner`'s model `id` under its lock (loading it if
    /// needed), then counts the model's use and size in the cache and trims
    /// the cache to its budget. Another owner's model is
    /// [`Error::NotFound`].
    pub(super) fn with_model<R>(
        &self,
        owner: &str,
        id: &str,
        f: impl FnOnce(&mut Cached) -> Result<R>,
    ) -> Result<R> {
        // A slot seen `Gone` was deleted or failed to load for someone else:
        // look again (a few times at most). One seen `Evicted` is reloaded.
        let mut gone = 0;
        loop {
            let slot = self.slot(id)?;
            let mut g = slot.lock().map_err(|_| poisoned())?;
            if matches!(*g, SlotState::Unloaded) {
                match self.load(owner, id) {
                    Ok(c) => *g = SlotState::Ready(Box::new(c)),
                    Err(e) => {
                        *g = SlotState::Gone;
                        drop(g);
                        self.unmap(id, &slot)?;
                        return Err(e);
                    }
                }
            }
            let c = match &mut *g {
                SlotState::Ready(c) => c,
                SlotState::Evicted => continue,
                SlotState::Unloaded | SlotState::Gone => {
                    gone += 1;
                    if gone == 4 {
                        return Err(Error::NotFound("model"));
                    }
                    continue;
                }
            };
            if c.owner != owner {
                return Err(Error::NotFound("model"));
            }
            let r = f(c);
            return self.finish_use(id, &slot, g, r);
        }
    }

    /// [`Self::with_model`] for a caller that must not block (an async
    /// task): `None`, having done nothing, when the model is not in memory
    /// or another call holds it, or when `f` finds it would block; the
    /// caller then takes the blocking path.
    pub(super) fn try_with_model<R>(
        &self,
        owner: &str,
        id: &str,
        f: impl FnOnce(&mut Cached) -> Option<Result<R>>,
    ) -> Option<Result<R>> {
        let slot = self.inner.models.read().ok()?.get(id)?.clone();
        // Another call on the model holds it for microseconds (it runs on
        // the other core): spin a little before declining, since the
        // blocking path costs far more than the wait. A long holder (an
        // export, a reshape) is not waited for.
        let mut g = None;
        for _ in 0..SPINS {
            match slot.try_lock() {
                Ok(guard) => {
                    g = Some(guard);
                    break;
                }
                Err(TryLockError::Poisoned(_)) => return None,
                Err(TryLockError::WouldBlock) => std::hint::spin_loop(),
            }
        }
        let mut g = g?;
        let SlotState::Ready(c) = &mut *g else {
            return None;
        };
        if c.owner != owner {
            return Some(Err(Error::NotFound("model")));
        }
        let r = f(c)?;
        Some(self.finish_use(id, &slot, g, r))
    }

    /// After a call on a model under its lock `g`: drops a model the call
    /// deleted, else counts its use and size in the cache, and trims the
    /// cache to its budget.
    fn finish_use<R>(
        &self,
        id: &str,
        slot: &Slot,
        mut g: std::sync::MutexGuard<'_, SlotState>,
        r: Result<R>,
    ) -> Result<R> {
        let SlotState::Ready(c) = &mut *g else {
            return r;
        };
        if c.deleted {
            if !matches!(c.log, LogSlot::Unknown) {
                self.inner.logs_held.fetch_sub(1, Ordering::Relaxed);
            }
            *g = SlotState::Gone;
            drop(g);
            // Not under the map's lock: `trim` takes the map's under the LRU's.
            self.unmap(id, slot)?;
            lock_plain(&self.inner.lru).remove(id);
            return r;
        }
        let bytes = c.memory_bytes();
        let over = {
            let mut lru = lock_plain(&self.inner.lru);
            lru.touch(id, bytes, || slot.clone());
            lru.over_budget()
        };
        drop(g);
        if over {
            self.trim();
        }
        r
    }

    /// Bytes the model cache holds now, as its budget counts them
    /// ([`SqliteOptions::cache_bytes`](super::SqliteOptions::cache_bytes)).
    pub fn cached_bytes(&self) -> usize {
        lock_plain(&self.inner.lru).total()
    }

    /// Models whose decision log (or its absence) is held in memory now; never
    /// more than the models the cache holds.
    pub fn cached_decision_logs(&self) -> usize {
        self.inner.logs_held.load(Ordering::Relaxed)
    }

    /// Decisions the decision logs of the cached models hold in memory now
    /// (their pending decisions, and finished ones until committed); each
    /// cached model is locked in turn.
    pub fn held_decisions(&self) -> usize {
        let slots: Vec<Slot> = match self.inner.models.read() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => return 0,
        };
        slots
            .iter()
            .map(|slot| match &*lock_plain(slot) {
                SlotState::Ready(c) => match &c.log {
                    LogSlot::Hot(h) => h.log.held().0,
                    LogSlot::Unknown | LogSlot::Plain => 0,
                },
                _ => 0,
            })
            .sum()
    }

    /// Models in the model cache now.
    pub fn cached_models(&self) -> usize {
        lock_plain(&self.inner.lru).len()
    }

    /// Caches a model just created (its creation committed).
    pub(super) fn cache_new(&self, cached: Cached) -> Result<()> {
        let id = cached.id.clone();
        let bytes = cached.memory_bytes();
        let slot: Slot = Arc::new(Mutex::new(SlotState::Ready(Box::new(cached))));
        // Held until the LRU knows it, so it cannot be evicted before.
        let g = slot.lock().map_err(|_| poisoned())?;
        self.inner
            .models
            .write()
            .map_err(|_| poisoned())?
            .insert(id.clone(), slot.clone());
        let over = {
            let mut lru = lock_plain(&self.inner.lru);
            lru.touch(&id, bytes, || slot.clone());
            lru.over_budget()
        };
        drop(g);
        if over {
            self.trim();
        }
        Ok(())
    }

    /// Evicts least recently used models until the cache fits its budget
    /// (see [`Inner::trim`]).
    pub(super) fn trim(&self) {
        self.inner.trim();
    }

    /// Trims the cache if it is over its budget: after a call's commit, so
    /// the models skipped while their writes were in flight go once idle.
    pub(super) fn trim_if_over(&self) {
        self.inner.trim_if_over();
    }

    /// Whether `meter`'s user's month of usage is in memory (a debit then
    /// reads nothing from the file).
    pub(super) fn usage_in_memory(&self, meter: &Meter<'_>) -> bool {
        let month = BillingMonth::from_unix(meter.now);
        lock_plain(&self.inner.usage)
            .get(meter.user_id)
            .is_some_and(|m| m.contains_key(&month))
    }

    /// The user's usage of `month` as the file holds it.
    pub(super) fn usage_from_db(&self, user_id: &str, month: BillingMonth) -> Result<Usage> {
        let mut usage = Usage::empty(month);
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT day, kind, calls, overage FROM usage WHERE user_id = ?1 AND month = ?2",
                )
                .map_err(sq)?;
            let rows = st
                .query_map(params![user_id, month.to_string()], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(sq)?;
            for r in rows {
                let (day, kind, calls, overage) = r.map_err(sq)?;
                let kind: CallKind = kind
                    .parse()
                    .map_err(|_| corrupt(format!("usage of unknown kind {kind:?}")))?;
                let calls = u64::try_from(calls).map_err(|_| corrupt("negative usage"))?;
                let overage = u64::try_from(overage).map_err(|_| corrupt("negative overage"))?;
                if !usage.add_row(day, kind, calls, overage) {
                    return Err(corrupt(format!("usage on day {day} of {month}")));
                }
            }
            Ok(())
        })?;
        Ok(usage)
    }

    /// Debits `n` calls of `kind` in memory or refuses without counting.
    pub(super) fn debit(&self, meter: &Meter<'_>, kind: CallKind, n: u64) -> Result<Debit> {
        let month = BillingMonth::from_unix(meter.now);
        let mut usage = self.inner.usage.lock().map_err(|_| poisoned())?;
        // One lookup when the month is in memory (every call but the
        // user's first of the month on this instance).
        if let Some(tally) = usage.get_mut(meter.user_id).and_then(|m| m.get_mut(&month)) {
            return tally.debit(meter, kind, n);
        }
        let read = self.usage_from_db(meter.user_id, month)?;
        usage
            .entry(meter.user_id.to_owned())
            .or_default()
            .entry(month)
            .or_insert(MonthTally::new(read))
            .debit(meter, kind, n)
    }

    /// [`Store::action_probabilities`](crate::store::Store::action_probabilities)
    /// on a cached model: checked, debited, computed under the model's
    /// mutex; the debit (and the model's unchanged learner, as a predict
    /// writes it) committed by the writer before the answer.
    pub(super) fn probabilities(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        state: StateRef<'_>,
        allowed: Option<&[usize]>,
        explore: bool,
    ) -> Result<Vec<f64>> {
        let (p, seq) = self.with_model(meter.user_id, model_id, |c| {
            c.learner.validate_predict(state, allowed)?;
            let debit = self.debit(meter, CallKind::Predict, 1)?;
            let p = match c
                .learner
                .action_probabilities(&c.table, state, allowed, explore)
            {
                Ok(p) => p,
                Err(e) => {
                    self.refund(&debit);
                    return Err(e);
                }
            };
            let job = Job::Learn(learn_job(c, debit, false, Vec::new()));
            let seq = self.enqueue_for(job, Waiting::Thread)?;
            c.last_seq = seq.seq;
            Ok((p, seq))
        })?;
        self.wait(seq)?;
        self.trim_if_over();
        Ok(p)
    }

    /// Gives back a debit whose call did not happen.
    pub(super) fn refund(&self, d: &Debit) {
        let mut usage = lock_plain(&self.inner.usage);
        if let Some(t) = usage.get_mut(&d.user).and_then(|m| m.get_mut(&d.month)) {
            t.refund(d);
        }
    }
}

pub(super) fn learn_job(c: &Cached, debit: Debit, returns: bool, rows: Vec<RowWrite>) -> Learn {
    Learn {
        mid: c.mid,
        tab: c.tab,
        learner: learner_bytes(&c.learner),
        returns: returns.then(|| returns_bytes(&c.learner)),
        n_rows: c.table.len() as i64,
        updated_at: (!rows.is_empty() || returns).then_some(c.updated_at),
        rows,
        usage: Some(UsageDelta {
            user: debit.user,
            month: debit.month,
            day: debit.day,
            kind: debit.kind,
            n: debit.n,
            overage: debit.overage,
        }),
        decisions: None,
    }
}

impl Inner {
    /// Takes `slot` out of the map if it is still the one for `id`.
    fn unmap(&self, id: &str, slot: &Slot) -> Result<()> {
        let mut map = self.models.write().map_err(|_| poisoned())?;
        if map.get(id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            map.remove(id);
        }
        Ok(())
    }

    /// Evicts least recently used models until the cache fits its budget,
    /// skipping those that may not go yet (see the module docs), and frees
    /// them once the cache's lock is released ([`Freer`]).
    fn trim(&self) {
        let committed = self.done.committed.load(Ordering::Acquire);
        let mut evicted = Vec::new();
        // What is in use now stays: a later call trims again.
        lock_plain(&self.lru).trim(|id, slot| match self.evict(id, slot, committed) {
            Some(c) => {
                evicted.push(c);
                true
            }
            None => false,
        });
        for c in evicted {
            self.freer.free(c);
        }
    }

    /// Trims the cache if it is over its budget.
    pub(super) fn trim_if_over(&self) {
        let over = lock_plain(&self.lru).over_budget();
        if over {
            self.trim();
        }
    }

    /// Evicts `slot` if nobody holds it and its writes are committed,
    /// returning the model for the caller to free.
    fn evict(&self, id: &str, slot: &Slot, committed: u64) -> Option<Box<Cached>> {
        let mut g = match slot.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => return None,
        };
        if !matches!(&*g, SlotState::Ready(c) if c.last_seq <= committed) {
            return None;
        }
        if self.unmap(id, slot).is_err() {
            return None;
        }
        match std::mem::replace(&mut *g, SlotState::Evicted) {
            SlotState::Ready(c) => {
                // Its decision log leaves memory with it (committed with
                // its last job, so the next use reloads it from the file).
                if !matches!(c.log, LogSlot::Unknown) {
                    self.logs_held.fetch_sub(1, Ordering::Relaxed);
                }
                Some(c)
            }
            _ => None,
        }
    }
}
