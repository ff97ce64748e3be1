//! Decisions and delayed rewards on SQLite (issue 14): a decision call runs
//! under the cached model's lock on the model's log (see
//! [`crate::store::decisions`]), kept in memory once read (one process per
//! file, so memory is the truth and the file follows it in queue order),
//! runs the shared steps on the cached learner and table, and hands the
//! touched rows, the learner, the usage and the serialized log to the
//! writer as one job: they commit together, so a transition is learned in
//! the transaction that marks its decision applied. Settling runs in this
//! process (the file's only writer), model by model.
//!
//! Costs of this first version: the logs of the models used since the
//! store opened stay in memory (outside the model cache's byte budget),
//! and every decision call serializes its model's whole log for the
//! writer.

use std::sync::atomic::Ordering;

use rusqlite::{params, OptionalExtension};

use super::cache::{learn_job, Cached};
use super::writer::{row_writes, Job, LogWrite};
use super::{lock_plain, sq, SqliteStore, BACKEND};
use crate::decisions::{DecisionLog, DecisionsConfig};
use crate::error::{Error, Result};
use crate::store::decisions::{
    apply, config_from_text, config_text, decode, encode, millis, page, plan, without_log, Call,
    Reply, Room,
};
use crate::store::encoding::Tracked;
use crate::store::usage::Debit;
use crate::store::CallKind;
use crate::store::{DecisionPage, DecisionQuery, Meter, ModelInfo};
use crate::tenancy::{BillingMonth, TierLimits};

impl SqliteStore {
    /// Blocks until every job up to `seq` has committed (what a read of
    /// the decision log must see).
    fn committed_through(&self, seq: u64) -> Result<()> {
        let done = &self.inner.done;
        let mut spins = 0u32;
        while done.committed.load(Ordering::Acquire) < seq {
            if done.failed.load(Ordering::Acquire) {
                return Err(Error::storage(BACKEND, done.failure().unwrap_or_default()));
            }
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        Ok(())
    }

    /// Model `c`'s decision log (`None`: it logs no decisions), taken out
    /// of the in-memory map (read from the file on first use): the caller,
    /// holding the model's lock, puts it back with
    /// [`SqliteStore::put_log`].
    fn take_log(&self, c: &Cached) -> Result<Option<DecisionLog>> {
        if let Some(entry) = lock_plain(&self.inner.decisions).remove(&c.mid) {
            return Ok(entry);
        }
        // First use: the file must hold every earlier job of the model.
        self.committed_through(c.last_seq)?;
        let (config, stored) = self.read_log(c.mid)?;
        config
            .map(|config| decode(BACKEND, stored.as_deref(), config))
            .transpose()
    }

    /// Whether model `c` logs decisions: read from the map of logs (one
    /// lookup) once the model's log has been loaded.
    pub(super) fn logs_decisions(&self, c: &Cached) -> Result<bool> {
        if let Some(entry) = lock_plain(&self.inner.decisions).get(&c.mid) {
            return Ok(entry.is_some());
        }
        let log = self.take_log(c)?;
        let logs = log.is_some();
        self.put_log(c.mid, log);
        Ok(logs)
    }

    /// Whether the model is known, without reading the file, to log no
    /// decisions (its entry in the in-memory map says so).
    pub(super) fn known_plain(&self, c: &Cached) -> bool {
        matches!(lock_plain(&self.inner.decisions).get(&c.mid), Some(None))
    }

    /// Puts a model's log (back) into the in-memory map.
    fn put_log(&self, mid: i64, log: Option<DecisionLog>) {
        lock_plain(&self.inner.decisions).insert(mid, log);
    }

    /// Forgets a deleted model's log.
    pub(super) fn forget_log(&self, mid: i64) {
        lock_plain(&self.inner.decisions).remove(&mid);
    }

    /// Model `mid`'s decisions setting and stored log.
    fn read_log(&self, mid: i64) -> Result<(Option<DecisionsConfig>, Option<Vec<u8>>)> {
        let (text, log) = self
            .read(|c| {
                c.query_row(
                    "SELECT m.decisions, d.log FROM models m \
                 LEFT JOIN decision_logs d ON d.mid = m.mid WHERE m.mid = ?1",
                    [mid],
                    |r| {
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            r.get::<_, Option<Vec<u8>>>(1)?,
                        ))
                    },
                )
                .optional()
                .map_err(sq)
            })?
            .ok_or(Error::NotFound("model"))?;
        Ok((config_from_text(BACKEND, text.as_deref())?, log))
    }

    /// Sets the decisions setting of `owner`'s models in `infos` from the
    /// database.
    pub(super) fn fill_decisions(&self, owner: &str, infos: &mut [ModelInfo]) -> Result<()> {
        let set: Vec<(String, String)> = self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, decisions FROM models WHERE owner = ?1 AND decisions IS NOT NULL",
                )
                .map_err(sq)?;
            let rows = st
                .query_map([owner], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sq)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })?;
        for info in infos.iter_mut() {
            let text = set.iter().find(|(id, _)| *id == info.id).map(|(_, t)| t);
            info.decisions = config_from_text(BACKEND, text.map(String::as_str))?;
        }
        Ok(())
    }

    /// Writes a model's new decisions setting (`None`: off, its log
    /// discarded). Runs under the model's lock.
    pub(super) fn patch_decisions(
        &self,
        c: &Cached,
        decisions: Option<&DecisionsConfig>,
    ) -> Result<()> {
        let text = decisions.map(|d| config_text(BACKEND, d)).transpose()?;
        let current = self.take_log(c)?;
        let next = match (decisions, &current) {
            (None, _) => Ok(None),
            (Some(d), None) => DecisionLog::new(d.clone()).map(Some),
            (Some(d), Some(log)) => {
                let mut log = log.clone();
                log.set_config(d.clone()).map(|()| Some(log))
            }
        };
        let next = match next {
            Ok(n) => n,
            Err(e) => {
                self.put_log(c.mid, current);
                return Err(e);
            }
        };
        let mid = c.mid;
        let written = self.write(move |conn| {
            conn.execute(
                "UPDATE models SET decisions = ?2 WHERE mid = ?1",
                params![mid, text],
            )
            .map_err(sq)?;
            if text.is_none() {
                conn.execute("DELETE FROM decision_logs WHERE mid = ?1", [mid])
                    .map_err(sq)?;
            }
            Ok(())
        });
        match written {
            Ok(()) => self.put_log(mid, next),
            Err(_) => self.put_log(mid, current),
        }
        written
    }

    /// Runs a decision call on `owner`'s model `id` at `now` (Unix
    /// seconds), `debit` making the call's debit of `n`. `Ok(None)`: a
    /// logging predict on a model that logs no decisions (the caller
    /// predicts plainly).
    pub(super) fn decision_call(
        &self,
        owner: &str,
        id: &str,
        call: Call<'_>,
        now: i64,
        limits: &TierLimits,
        debit: impl FnOnce(CallKind, u64) -> Result<Debit>,
    ) -> Result<Option<Reply>> {
        let now_ms = millis(now);
        let done = self.with_model(owner, id, |c| {
            let Some(mut log) = self.take_log(c)? else {
                self.put_log(c.mid, None);
                return match call {
                    Call::Decide(_) => Ok(None),
                    _ => without_log(call).map(|r| Some((Ok(r), None))),
                };
            };
            let mut made = None;
            let room = Room {
                limits,
                held: c.table.len(),
            };
            let planned = plan(
                &mut log,
                &mut c.learner,
                &c.table,
                room,
                call,
                now_ms,
                |kind, n| {
                    made = Some(debit(kind, n)?);
                    Ok(())
                },
            );
            // `plan` leaves the log as it was when it fails.
            let (planned, debit) = match (planned, made) {
                (Ok(p), Some(d)) => (p, d),
                (Err(e), made) => {
                    if let Some(d) = &made {
                        self.refund(d);
                    }
                    self.put_log(c.mid, Some(log));
                    return Err(e);
                }
                (Ok(_), None) => {
                    self.put_log(c.mid, Some(log));
                    return Err(Error::Internal("a decision call made no debit".into()));
                }
            };
            let len_before = c.table.len();
            let episodes_before = c.learner.counters().episodes;
            let mut touched = Vec::new();
            let applied = apply(
                &mut c.learner,
                &mut Tracked {
                    table: &mut c.table,
                    touched: &mut touched,
                },
                &planned.transitions,
            );
            if !planned.transitions.is_empty() {
                c.updated_at = now;
            }
            log.prune(now_ms);
            let encoded = encode(BACKEND, &log);
            self.put_log(c.mid, Some(log));
            let (bytes, next_deadline_ms) = encoded?;
            let rows = row_writes(&c.table, touched, len_before);
            let ended = c.learner.counters().episodes != episodes_before;
            let mut job = learn_job(c, debit, ended, rows);
            job.decisions = Some(LogWrite {
                log: bytes,
                next_deadline_ms,
            });
            // Enqueued under the model's lock: the queue order is its serial order.
            let seq = self.enqueue(Job::Learn(job))?;
            c.last_seq = seq.seq;
            Ok(Some((applied.map(|()| planned.reply), Some(seq))))
        })?;
        let Some((reply, seq)) = done else {
            return Ok(None);
        };
        if let Some(seq) = seq {
            self.wait(seq)?;
            self.trim_if_over();
        }
        reply.map(Some)
    }

    /// A page of `owner`'s model `id`'s decision log.
    pub(super) fn decision_page(
        &self,
        owner: &str,
        id: &str,
        query: &DecisionQuery,
    ) -> Result<DecisionPage> {
        self.with_model(owner, id, |c| {
            let log = self.take_log(c)?;
            let out = match &log {
                Some(log) => page(log, query),
                None => DecisionPage::empty(),
            };
            self.put_log(c.mid, log);
            Ok(out)
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
            meter.limits,
            |kind, n| self.debit(meter, kind, n),
        )
    }

    /// Settles every model with a passed deadline (see
    /// [`crate::store::Store::settle`]).
    pub(super) fn settle_all(&self, now: i64) -> Result<usize> {
        let due: Vec<(String, String)> = self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT m.owner, m.id FROM decision_logs d JOIN models m ON m.mid = d.mid \
                     WHERE d.next_deadline_ms <= ?1",
                )
                .map_err(sq)?;
            let rows = st
                .query_map([millis(now)], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sq)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })?;
        let month = BillingMonth::from_unix(now);
        let mut learned = 0;
        for (owner, id) in due {
            let free = |kind: CallKind, n: u64| {
                Ok(Debit {
                    user: owner.clone(),
                    month,
                    day: month.day_of(now),
                    kind,
                    n,
                    overage: 0,
                })
            };
            match self.decision_call(&owner, &id, Call::Settle, now, &TierLimits::UNLIMITED, free) {
                Ok(Some(Reply::Learned(n))) => learned += n,
                Ok(_) => {}
                // Deleted since the list was read.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(learned)
    }
}
