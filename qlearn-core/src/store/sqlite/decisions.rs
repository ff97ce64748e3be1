//! Decisions and delayed rewards on SQLite (issue 14): a row per decision
//! and per episode (`store/decision_rows.rs`). A decision call runs under
//! the cached model's lock on the model's partly loaded log
//! ([`LogSlot`], kept with the cached model): what the call reads and the
//! log lacks is read from the file first (one process per file, and a
//! record leaves memory only once its last write has committed, so the
//! file then holds its truth). It runs the shared steps on the cached
//! learner and table and hands the touched Q-rows, the learner, the usage,
//! the changed decision and episode rows and the model's counts to the
//! writer as one job: they commit together, so a transition is learned in
//! the transaction that marks its decision applied.
//!
//! In memory ([`HotLog`]): the unfinished decisions and the episodes used
//! since the model was loaded, within the model cache's budget (past it
//! the committed ones are forgotten, the earliest deadlines first, and read
//! again when needed); a finished decision leaves once its write has
//! committed. So a logging predict (without a client id, or in a known
//! episode) and a reward for a pending decision held need no read and run
//! without blocking ([`SqliteStore::decision_locked`] with `may_read`
//! false). Settling and retention pruning run in this process (the file's
//! only writer), model by model; pruning deletes in chunks of
//! [`PRUNE_CHUNK`] decisions, one small writer job each.

use std::sync::atomic::Ordering;

use rusqlite::{params, OptionalExtension};

use super::cache::{learn_job, Cached};
use super::decision_rows::{drop_log_chunk, FileRows, LogWrite};
use super::file_ids::Sifted;
use super::hot_log::{Held, HotLog};
use super::id_filter::IdFilter;
use super::writer::{row_writes, Job, Ticket, Waiting};
use super::{sq, SqliteStore, BACKEND};
use crate::decisions::{Decide, DecisionsConfig, RewardReceipt};
use crate::error::{Error, Result};
use crate::store::decision_rows::{
    changed_rows, load, meta_bytes, meta_from_bytes, missing, partial_log,
};
use crate::store::decisions::{
    apply, check_plain, config_from_text, config_text, millis, plan, without_log, Call, Reply,
    Room, SETTLE_CHUNK,
};
use crate::store::due_models::{settle_due, DueStore, Found};
use crate::store::encoding::Tracked;
use crate::store::settle::DueKey;
use crate::store::usage::Debit;
use crate::store::{
    CallKind, Decided, Durable, Evaluations, Meter, ModelInfo, RewardIn, KEEP_FINISHED_JOBS,
};
use crate::tenancy::{BillingMonth, TierLimits};

/// Seconds between two retention prunings of every model.
const PRUNE_EVERY_SECS: i64 = 60;

/// Every model with an open decision and its earliest deadline: the settle
/// pass's full scan (`due_models`), a skip over the partial index
/// `decisions_due` (open decisions only, keyed (mid, closes_ms) since
/// migration 15), from below the least model number, one seek to each
/// model with an open decision and one to its earliest deadline. It costs
/// the models with open decisions, not their decisions. (A `SELECT
/// DISTINCT mid` had SQLite's planner read the whole `decisions` table in
/// key order.) The index is named so that no planner choice brings a scan
/// back (`decision_rows`' tests check the plan).
pub(super) const SQL_OPEN_MODELS: &str = "WITH RECURSIVE live(mid) AS (\
     SELECT -9223372036854775808 \
     UNION ALL \
     SELECT (SELECT d.mid FROM decisions d INDEXED BY decisions_due \
             WHERE d.status = 0 AND d.mid > live.mid ORDER BY d.mid LIMIT 1) \
     FROM live WHERE live.mid IS NOT NULL) \
     SELECT live.mid, (SELECT min(d.closes_ms) FROM decisions d INDEXED BY decisions_due \
                       WHERE d.status = 0 AND d.mid = live.mid) \
     FROM live WHERE live.mid > -9223372036854775808";

/// The key (deadline, id) of the `?3 + 1`-th decision of model `?1` due
/// by `?2`, in closing order: the end of the settle pass's next chunk (a
/// walk of at most a chunk along `decisions_due`, whose entries hold the
/// id after the deadline).
pub(super) const SQL_DUE_NTH: &str =
    "SELECT closes_ms, id FROM decisions INDEXED BY decisions_due \
     WHERE status = 0 AND mid = ?1 AND closes_ms <= ?2 \
     ORDER BY closes_ms, id LIMIT 1 OFFSET ?3";

/// Model ?1's owner and id, and its earliest open deadline (NULL: none
/// open): one seek on `decisions_due`, run for each model of the settle
/// pass's batch in one read.
pub(super) const SQL_NEXT_DEADLINE: &str = "SELECT owner, id, \
     (SELECT min(d.closes_ms) FROM decisions d INDEXED BY decisions_due \
      WHERE d.status = 0 AND d.mid = ?1) \
     FROM models WHERE mid = ?1";

/// A cached model's decision log.
pub(super) enum LogSlot {
    /// Not read from the file yet.
    Unknown,
    /// The model logs no decisions.
    Plain,
    /// The model's partly loaded log.
    Hot(Box<HotLog>),
}

/// What [`SqliteStore::decision_locked`] did.
pub(super) enum Locked {
    /// A logging predict on a model that logs no decisions: predict
    /// plainly.
    Plain,
    /// The answer, and the job to wait for (none: nothing was written).
    Done(Result<Reply>, Option<Ticket>),
}

impl SqliteStore {
    /// Blocks until every job up to `seq` has committed (what a read of
    /// the file must see).
    pub(super) fn committed_through(&self, seq: u64) -> Result<()> {
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

    /// The most memory model `c`'s decision log may hold: what the model
    /// cache's budget leaves beside the model itself.
    fn log_cap(&self, c: &Cached) -> usize {
        self.inner.cache_budget.saturating_sub(c.model_bytes())
    }

    /// Reads model `c`'s decisions setting and counts once.
    fn know_log(&self, c: &mut Cached) -> Result<()> {
        if !matches!(c.log, LogSlot::Unknown) {
            return Ok(());
        }
        self.committed_through(c.last_seq)?;
        let mid = c.mid;
        let (text, meta) = self
            .read(|conn| {
                conn.query_row(
                    "SELECT decisions, decision_meta FROM models WHERE mid = ?1",
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
        c.log = match config_from_text(BACKEND, text.as_deref())? {
            None => LogSlot::Plain,
            Some(config) => LogSlot::Hot(Box::new(HotLog::new(partial_log(
                BACKEND,
                config,
                meta.as_deref(),
            )?))),
        };
        self.inner.logs_held.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Whether model `c` logs decisions (read from the file on first use).
    pub(super) fn logs_decisions(&self, c: &mut Cached) -> Result<bool> {
        self.know_log(c)?;
        Ok(matches!(c.log, LogSlot::Hot(_)))
    }

    /// Sets the decisions setting and counts of `owner`'s models in
    /// `infos` from the file (which holds every acknowledged call).
    pub(super) fn fill_decisions(&self, owner: &str, infos: &mut [ModelInfo]) -> Result<()> {
        type Set = (String, String, Option<Vec<u8>>);
        let set: Vec<Set> = self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, decisions, decision_meta FROM models \
                     WHERE owner = ?1 AND decisions IS NOT NULL",
                )
                .map_err(sq)?;
            let rows = st
                .query_map([owner], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(sq)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })?;
        for info in infos.iter_mut() {
            let found = set.iter().find(|(id, _, _)| *id == info.id);
            info.decisions = config_from_text(BACKEND, found.map(|(_, t, _)| t.as_str()))?;
            info.decision_stats = match found {
                Some((_, _, meta)) => Some(meta_from_bytes(BACKEND, meta.as_deref())?.0),
                None => None,
            };
        }
        Ok(())
    }

    /// Writes a model's new decisions setting (`None`: off, its log
    /// dropped after the call, in chunks). Turning it on drops what an
    /// earlier log left first. Runs under the model's lock.
    pub(super) fn patch_decisions(
        &self,
        c: &mut Cached,
        decisions: Option<&DecisionsConfig>,
    ) -> Result<()> {
        if let Some(d) = decisions {
            d.validate()?;
        }
        self.know_log(c)?;
        let text = decisions.map(|d| config_text(BACKEND, d)).transpose()?;
        let mid = c.mid;
        let fresh = match (&c.log, decisions) {
            (LogSlot::Hot(_), Some(_)) => false,
            (_, Some(_)) => {
                while self.write(move |conn| drop_log_chunk(conn, mid))? {}
                true
            }
            (_, None) => false,
        };
        let off = decisions.is_none();
        self.write(move |conn| {
            conn.execute(
                "UPDATE models SET decisions = ?2, \
                 decision_meta = CASE WHEN ?3 THEN NULL ELSE decision_meta END WHERE mid = ?1",
                params![mid, text, off || fresh],
            )
            .map_err(sq)?;
            Ok(())
        })?;
        // Committed: memory follows.
        match decisions {
            None => c.log = LogSlot::Plain,
            Some(d) => match &mut c.log {
                LogSlot::Hot(h) if !fresh => h.log.set_config(d.clone())?,
                _ => {
                    // What an earlier log left was dropped above: the
                    // file holds no id of this one.
                    let mut hot = HotLog::new(partial_log(BACKEND, d.clone(), None)?);
                    hot.set_file_ids(Some(IdFilter::new()));
                    c.log = LogSlot::Hot(Box::new(hot))
                }
            },
        }
        Ok(())
    }

    /// Deletes the rows of the log of model `id` of `owner` in chunks, one
    /// writer job each, while the model logs no decisions (a model deleted
    /// meanwhile: all of them).
    pub(super) fn drop_log_rows(&self, owner: &str, id: &str, mid: i64) -> Result<()> {
        loop {
            let more = self.with_model(owner, id, |c| {
                self.know_log(c)?;
                if !matches!(c.log, LogSlot::Plain) {
                    return Ok(false);
                }
                self.write(move |conn| drop_log_chunk(conn, mid))
            });
            match more {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(Error::NotFound(_)) => return self.drop_deleted_log(mid),
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes the log rows of a deleted model, in chunks.
    pub(super) fn drop_deleted_log(&self, mid: i64) -> Result<()> {
        while self.write(move |conn| drop_log_chunk(conn, mid))? {}
        Ok(())
    }

    /// Runs the decision part of `call` on model `c` (its lock held) at
    /// `now` (Unix seconds), `debit` making the call's debit of `n`, and
    /// enqueues its writes for `waiting`. `None`, having changed nothing,
    /// when `may_read` is false and the call must read the file first.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decision_locked(
        &self,
        c: &mut Cached,
        call: Call<'_>,
        now: i64,
        limits: &TierLimits,
        debit: impl FnOnce(CallKind, u64) -> Result<Debit>,
        waiting: Waiting,
        may_read: bool,
    ) -> Option<Result<Locked>> {
        let now_ms = millis(now);
        let mid = c.mid;
        if matches!(c.log, LogSlot::Unknown) {
            if !may_read {
                return None;
            }
            if let Err(e) = self.know_log(c) {
                return Some(Err(e));
            }
        }
        let hot = match &mut c.log {
            LogSlot::Hot(h) => h,
            _ => {
                return Some(match call {
                    Call::Decide(_) => Ok(Locked::Plain),
                    _ => without_log(call).map(|r| Locked::Done(Ok(r), None)),
                })
            }
        };
        // A record memory lacks is read only if the file may have it: a
        // new id (the client's decision id, a new episode) is not. The
        // file's ids are read once a logging predict first names an id
        // memory lacks.
        let lacks = missing(&hot.log, call, now_ms);
        if matches!(call, Call::Decide(_)) && !lacks.is_empty() && hot.file_ids_unset() {
            if !may_read {
                return None;
            }
            match self.file_ids(mid) {
                Ok(ids) => hot.set_file_ids(ids),
                Err(e) => return Some(Err(e)),
            }
        }
        let reads =
            matches!(call, Call::Settle { .. }) || lacks.iter().any(|m| hot.may_be_in_file(m));
        if reads {
            if !may_read {
                return None;
            }
            let (log, ids) = hot.log_and_file_ids();
            let rows = FileRows { store: self, mid };
            if let Err(e) = load(log, call, now_ms, &mut Sifted { rows, ids }) {
                return Some(Err(e));
            }
        }
        Some(self.run_call(c, call, now, limits, debit, waiting))
    }

    /// [`SqliteStore::decision_locked`] once the log holds what the call
    /// reads.
    fn run_call(
        &self,
        c: &mut Cached,
        call: Call<'_>,
        now: i64,
        limits: &TierLimits,
        debit: impl FnOnce(CallKind, u64) -> Result<Debit>,
        waiting: Waiting,
    ) -> Result<Locked> {
        let now_ms = millis(now);
        let LogSlot::Hot(hot) = &mut c.log else {
            return Err(Error::Internal("a decision call lost its log".into()));
        };
        let mut made = None;
        let room = Room {
            limits,
            held: c.table.len(),
        };
        let planned = plan(
            &mut hot.log,
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
        let (planned, debit) = match (planned, made) {
            (Ok(p), Some(d)) => (p, d),
            (Err(e), made) => {
                if let Some(d) = &made {
                    self.refund(d);
                }
                // Nothing changed (`plan`); what it marked is unchanged.
                let _ = hot.log.take_changes();
                return Err(e);
            }
            (Ok(_), None) => return Err(Error::Internal("a decision call made no debit".into())),
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
        let changes = hot.log.take_changes();
        let (decisions, episodes) = changed_rows(BACKEND, &hot.log, &changes)?;
        let stats = hot.log.stats();
        let meta = meta_bytes(&stats, hot.log.last_id());
        let rows = row_writes(&c.table, touched, len_before);
        let ended = c.learner.counters().episodes != episodes_before;
        let mut job = learn_job(c, debit, ended, rows);
        let written: Vec<Held> = (decisions.iter().map(|d| Held::Decision(d.id.clone())))
            .chain(episodes.iter().map(|e| Held::Episode(e.id.clone())))
            .collect();
        job.decisions = Some(Box::new(LogWrite {
            meta,
            decisions,
            episodes,
        }));
        // Enqueued under the model's lock: the queue order is its serial order.
        let ticket = self.enqueue_for(Job::Learn(job), waiting)?;
        c.last_seq = ticket.seq;
        let cap = self.log_cap(c);
        let LogSlot::Hot(hot) = &mut c.log else {
            return Err(Error::Internal("a decision call lost its log".into()));
        };
        hot.wrote(ticket.seq, written);
        hot.evict(self.inner.done.committed.load(Ordering::Acquire));
        hot.trim(cap);
        Ok(Locked::Done(applied.map(|()| planned.reply), Some(ticket)))
    }

    /// Runs decision call `call` on `owner`'s model `id`, reading the file
    /// where the log lacks what it needs, and enqueues its writes for a
    /// caller that waits as `waiting` says.
    #[allow(clippy::too_many_arguments)]
    fn decision_reading(
        &self,
        owner: &str,
        id: &str,
        call: Call<'_>,
        now: i64,
        limits: &TierLimits,
        debit: impl FnOnce(CallKind, u64) -> Result<Debit>,
        waiting: Waiting,
    ) -> Result<Locked> {
        self.with_model(owner, id, |c| {
            self.decision_locked(c, call, now, limits, debit, waiting, true)
                .unwrap_or_else(|| Err(Error::Internal("a blocking decision call declined".into())))
        })
    }

    /// Runs a blocking decision call on `owner`'s model `id`. `Ok(None)`:
    /// a logging predict on a model that logs no decisions.
    fn decision_call(
        &self,
        owner: &str,
        id: &str,
        call: Call<'_>,
        now: i64,
        limits: &TierLimits,
        debit: impl FnOnce(CallKind, u64) -> Result<Debit>,
    ) -> Result<Option<Reply>> {
        let done = self.decision_reading(owner, id, call, now, limits, debit, Waiting::Thread)?;
        match done {
            Locked::Plain => Ok(None),
            Locked::Done(reply, ticket) => {
                if let Some(t) = ticket {
                    self.wait(t)?;
                    self.trim_if_over();
                }
                reply.map(Some)
            }
        }
    }

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
    /// [`crate::store::Store::settle`]; which models: `due_models`), and
    /// prunes the logs past their retention (at most once a minute).
    pub(super) fn settle_all(&self, now: i64) -> Result<usize> {
        let learned = settle_due(self, &self.inner.due, now)?;
        let last = self.inner.last_prune.load(Ordering::Relaxed);
        if now >= last + PRUNE_EVERY_SECS
            && self
                .inner
                .last_prune
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.prune_all(now)?;
            self.prune_evaluations(KEEP_FINISHED_JOBS, now)?;
        }
        Ok(learned)
    }

    /// [`Store::decide_nonblocking`](crate::store::Store::decide_nonblocking).
    pub(super) fn decide_quick(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        request: &Decide<'_>,
    ) -> Option<Result<(Decided, Durable)>> {
        let r = self.try_with_model(meter.user_id, model_id, |c| {
            // Only for a user whose month is in memory, and when the log
            // holds what the call reads: nothing to read from the file.
            if !self.usage_in_memory(meter) {
                return None;
            }
            let plain = match self.quick_locked(c, meter, Call::Decide(request))? {
                Ok(Locked::Plain) => true,
                Ok(Locked::Done(reply, ticket)) => {
                    return Some(Ok((reply.and_then(Reply::decided), ticket)));
                }
                Err(e) => return Some(Err(e)),
            };
            debug_assert!(plain);
            if let Err(e) = check_plain(request) {
                return Some(Err(e));
            }
            let (state, explore, allowed) =
                (request.state, request.explore, request.allowed_actions);
            Some(
                self.predict_locked(c, meter, state, explore, allowed, Waiting::Task)
                    .map(|(prediction, ticket)| {
                        let decided = Decided {
                            prediction,
                            decision: None,
                        };
                        (Ok(decided), Some(ticket))
                    }),
            )
        })?;
        Some(r.and_then(|(decided, ticket)| {
            let durable = ticket.map_or_else(Durable::ready, |t| self.durable(t));
            decided.map(|d| (d, durable))
        }))
    }

    /// [`Store::rewards_nonblocking`](crate::store::Store::rewards_nonblocking).
    pub(super) fn rewards_quick(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        rewards: &[RewardIn],
    ) -> Option<Result<(Vec<Result<RewardReceipt>>, Durable)>> {
        let locked = self.try_with_model(meter.user_id, model_id, |c| {
            if !self.usage_in_memory(meter) {
                return None;
            }
            self.quick_locked(c, meter, Call::Rewards(rewards))
        })?;
        Some(locked.and_then(|l| self.rewarded(l)))
    }

    /// [`Store::rewards_deferred`](crate::store::Store::rewards_deferred):
    /// reads what the log lacks on this (blocking) thread, and returns the
    /// commit as a future instead of parking the thread until it.
    pub(super) fn rewards_reading(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        rewards: &[RewardIn],
    ) -> Result<(Vec<Result<RewardReceipt>>, Durable)> {
        let debit = |kind: CallKind, n: u64| self.debit(meter, kind, n);
        let call = Call::Rewards(rewards);
        let (owner, now, limits) = (meter.user_id, meter.now, meter.limits);
        let locked =
            self.decision_reading(owner, model_id, call, now, limits, debit, Waiting::Task)?;
        self.rewarded(locked)
    }

    /// The receipts of a rewards call enqueued for a task, and its commit.
    fn rewarded(&self, locked: Locked) -> Result<(Vec<Result<RewardReceipt>>, Durable)> {
        match locked {
            Locked::Done(reply, ticket) => {
                let durable = ticket.map_or_else(Durable::ready, |t| self.durable(t));
                reply.and_then(Reply::rewarded).map(|r| (r, durable))
            }
            Locked::Plain => Err(Error::Internal("rewards answered as a predict".into())),
        }
    }

    /// A metered decision call of `meter`'s user on model `c` that must
    /// not block (see [`SqliteStore::decision_locked`]).
    fn quick_locked(
        &self,
        c: &mut Cached,
        meter: &Meter<'_>,
        call: Call<'_>,
    ) -> Option<Result<Locked>> {
        self.decision_locked(
            c,
            call,
            meter.now,
            meter.limits,
            |kind, n| self.debit(meter, kind, n),
            Waiting::Task,
            false,
        )
    }
}

impl DueStore for SqliteStore {
    fn open_models(&self) -> Result<Vec<(i64, i64)>> {
        self.read(|c| {
            let mut st = c.prepare_cached(SQL_OPEN_MODELS).map_err(sq)?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sq)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })
    }

    fn next_deadlines(&self, mids: &[i64]) -> Result<Vec<Option<Found>>> {
        self.read(|c| {
            let mut st = c.prepare_cached(SQL_NEXT_DEADLINE).map_err(sq)?;
            mids.iter()
                .map(|mid| {
                    st.query_row([mid], |r| {
                        Ok(Found {
                            owner: r.get(0)?,
                            id: r.get(1)?,
                            first: r.get(2)?,
                        })
                    })
                    .optional()
                    .map_err(sq)
                })
                .collect()
        })
    }

    fn due_nth(&self, mid: i64, now_ms: i64) -> Result<Option<DueKey>> {
        self.read(|c| {
            let mut st = c.prepare_cached(SQL_DUE_NTH).map_err(sq)?;
            st.query_row(params![mid, now_ms, SETTLE_CHUNK as i64 - 1], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(sq)
        })
    }

    fn settle_model(
        &self,
        owner: &str,
        id: &str,
        through: Option<&DueKey>,
        now: i64,
    ) -> Result<usize> {
        let month = BillingMonth::from_unix(now);
        let free = |kind: CallKind, n: u64| {
            Ok(Debit {
                user: owner.to_string(),
                month,
                day: month.day_of(now),
                kind,
                n,
                overage: 0,
            })
        };
        let call = Call::settle(through, now);
        match self.decision_call(owner, id, call, now, &TierLimits::UNLIMITED, free) {
            Ok(Some(Reply::Learned(n))) => Ok(n),
            Ok(_) => Ok(0),
            // Deleted since the list was read.
            Err(Error::NotFound(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }
}
