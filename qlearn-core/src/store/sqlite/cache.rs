//! The model cache of [`SqliteStore`](super::SqliteStore): models loaded
//! once and served from memory under a mutex each, and the in-memory
//! monthly usage counters the quota debits check.

use std::sync::{Arc, Mutex};

use rusqlite::{params, OptionalExtension};

use super::schema::{model_row, MODEL_COLS};
use super::writer::{Learn, RowWrite, UsageDelta};
use super::{corrupt, lock_plain, poisoned, sq, SqliteStore, BACKEND};
use crate::error::{Error, Result};
use crate::model::Learner;
use crate::store::encoding::{
    decode_key, decode_values, learner_bytes, returns_bytes, table_from_rows,
};
use crate::store::{Meter, ModelInfo};
use crate::table::QTable;
use crate::tenancy::{check_quota, BillingMonth};

// ---- the model cache ---------------------------------------------------------

/// A model held in memory: its learner, its table and its metadata.
pub(super) struct Cached {
    pub(super) id: String,
    pub(super) mid: i64,
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) learner: Learner,
    pub(super) table: QTable,
    pub(super) deleted: bool,
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
}

pub(super) enum SlotState {
    /// Being loaded by the thread holding the slot's mutex.
    Loading,
    Ready(Box<Cached>),
    /// Deleted, or its load failed: look it up again.
    Gone,
}

pub(super) type Slot = Arc<Mutex<SlotState>>;

/// A debit made in memory, to be committed with the call's effect.
pub(super) struct Debit {
    pub(super) user: String,
    pub(super) month: BillingMonth,
    pub(super) day: u8,
    pub(super) n: u64,
}

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
                        "SELECT row_no, key, vals FROM q_rows WHERE mid = ?1 ORDER BY row_no",
                    )
                    .map_err(sq)?;
                let mut rows = st.query([row.mid]).map_err(sq)?;
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
                owner: row.owner,
                name: row.name,
                created_at: row.created_at,
                updated_at: row.updated_at,
                learner: row.learner,
                table,
                deleted: false,
            })
        })
    }

    /// The cache slot of model `id`, loading it (for `owner`) if absent.
    pub(super) fn slot(&self, owner: &str, id: &str) -> Result<Slot> {
        if let Some(s) = self.inner.models.read().map_err(|_| poisoned())?.get(id) {
            return Ok(s.clone());
        }
        let slot: Slot = Arc::new(Mutex::new(SlotState::Loading));
        let mut guard = slot.lock().map_err(|_| poisoned())?;
        {
            let mut map = self.inner.models.write().map_err(|_| poisoned())?;
            if let Some(s) = map.get(id) {
                return Ok(s.clone());
            }
            map.insert(id.to_owned(), slot.clone());
        }
        match self.load(owner, id) {
            Ok(c) => {
                *guard = SlotState::Ready(Box::new(c));
                drop(guard);
                Ok(slot)
            }
            Err(e) => {
                *guard = SlotState::Gone;
                drop(guard);
                let mut map = self.inner.models.write().map_err(|_| poisoned())?;
                if map.get(id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    map.remove(id);
                }
                Err(e)
            }
        }
    }

    /// Runs `f` on `owner`'s model `id` under its lock (loading it if
    /// needed). Another owner's model is [`Error::NotFound`].
    pub(super) fn with_model<R>(
        &self,
        owner: &str,
        id: &str,
        f: impl FnOnce(&mut Cached) -> Result<R>,
    ) -> Result<R> {
        // A slot seen `Gone` was deleted or failed to load for someone else:
        // look again (a few times at most).
        for _ in 0..4 {
            let slot = self.slot(owner, id)?;
            let mut g = slot.lock().map_err(|_| poisoned())?;
            let SlotState::Ready(c) = &mut *g else {
                continue;
            };
            if c.owner != owner {
                return Err(Error::NotFound("model"));
            }
            let r = f(c);
            if c.deleted {
                *g = SlotState::Gone;
                drop(g);
                let mut map = self.inner.models.write().map_err(|_| poisoned())?;
                if map.get(id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    map.remove(id);
                }
            }
            return r;
        }
        Err(Error::NotFound("model"))
    }

    pub(super) fn usage_days_from_db(
        &self,
        user_id: &str,
        month: BillingMonth,
    ) -> Result<Vec<u64>> {
        let mut days = vec![0u64; month.days() as usize];
        self.read(|c| {
            let mut st = c
                .prepare_cached("SELECT day, calls FROM usage WHERE user_id = ?1 AND month = ?2")
                .map_err(sq)?;
            let rows = st
                .query_map(params![user_id, month.to_string()], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(sq)?;
            for r in rows {
                let (day, calls) = r.map_err(sq)?;
                let slot = usize::try_from(day - 1)
                    .ok()
                    .and_then(|d| days.get_mut(d))
                    .ok_or_else(|| corrupt(format!("usage on day {day} of {month}")))?;
                *slot = u64::try_from(calls).map_err(|_| corrupt("negative usage"))?;
            }
            Ok(())
        })?;
        Ok(days)
    }

    /// Debits `n` calls in memory or refuses without counting.
    pub(super) fn debit(&self, meter: &Meter<'_>, n: u64) -> Result<Debit> {
        let month = BillingMonth::from_unix(meter.now);
        let mut usage = self.inner.usage.lock().map_err(|_| poisoned())?;
        let known = usage
            .get(meter.user_id)
            .is_some_and(|m| m.contains_key(&month));
        if !known {
            let days = self.usage_days_from_db(meter.user_id, month)?;
            usage
                .entry(meter.user_id.to_owned())
                .or_default()
                .insert(month, days);
        }
        let days = usage
            .get_mut(meter.user_id)
            .and_then(|m| m.get_mut(&month))
            .ok_or_else(|| Error::Internal("usage entry vanished".into()))?;
        let used: u64 = days.iter().sum();
        check_quota(meter.limits, used, n, meter.now)?;
        let day = month.day_of(meter.now);
        if let Some(slot) = days.get_mut(usize::from(day).saturating_sub(1)) {
            *slot += n;
        }
        Ok(Debit {
            user: meter.user_id.to_owned(),
            month,
            day,
            n,
        })
    }

    /// Gives back a debit whose call did not happen.
    pub(super) fn refund(&self, d: &Debit) {
        let mut usage = lock_plain(&self.inner.usage);
        if let Some(slot) = usage
            .get_mut(&d.user)
            .and_then(|m| m.get_mut(&d.month))
            .and_then(|days| days.get_mut(usize::from(d.day).saturating_sub(1)))
        {
            *slot = slot.saturating_sub(d.n);
        }
    }
}

pub(super) fn learn_job(c: &Cached, debit: Debit, returns: bool, rows: Vec<RowWrite>) -> Learn {
    Learn {
        mid: c.mid,
        learner: learner_bytes(&c.learner),
        returns: returns.then(|| returns_bytes(&c.learner)),
        n_rows: c.table.len() as i64,
        updated_at: (!rows.is_empty() || returns).then_some(c.updated_at),
        rows,
        usage: Some(UsageDelta {
            user: debit.user,
            month: debit.month.to_string(),
            day: debit.day,
            n: debit.n,
        }),
    }
}
