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
//! In memory: every unfinished decision and every episode used since the
//! model was loaded; a finished decision leaves once its write has
//! committed. So a logging predict (without a client id, or in a known
//! episode) and a reward for a pending decision need no read and run
//! without blocking ([`SqliteStore::decision_locked`] with `may_read`
//! false). Settling and retention pruning run in this process (the file's
//! only writer), model by model; pruning deletes in chunks of
//! [`PRUNE_CHUNK`] decisions, one small writer job each.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use rusqlite::{params, Connection, OptionalExtension};

use super::cache::{learn_job, Cached};
use super::writer::{row_writes, Job, Ticket, Waiting};
use super::{sq, SqliteStore, BACKEND};
use crate::decisions::{
    DecisionLog, DecisionRecord, DecisionStatus, DecisionsConfig, EpisodeRecord,
};
use crate::error::{Error, Result};
use crate::store::decision_rows::{
    changed_rows, decision_from_row, episode_from_row, load, meta_bytes, meta_from_bytes, missing,
    partial_log, status_code, DecisionRow, EpisodeRow, Rows, DECISION_COLS, EPISODE_COLS,
};
use crate::store::decisions::{
    apply, config_from_text, config_text, millis, plan, without_log, Call, Reply, Room,
};
use crate::store::encoding::Tracked;
use crate::store::usage::Debit;
use crate::store::{CallKind, DecisionPage, DecisionQuery, Meter, ModelInfo};
use crate::tenancy::{BillingMonth, TierLimits};

/// Decisions (or episodes) deleted per writer job when pruning or
/// dropping a model's log.
pub(super) const PRUNE_CHUNK: usize = 1000;
/// Seconds between two retention prunings of every model.
const PRUNE_EVERY_SECS: i64 = 60;

/// A cached model's decision log.
pub(super) enum LogSlot {
    /// Not read from the file yet.
    Unknown,
    /// The model logs no decisions.
    Plain,
    /// The model's partly loaded log.
    Hot(Box<HotLog>),
}

/// A partly loaded log and the finished decisions waiting for their
/// write's commit to leave memory.
pub(super) struct HotLog {
    log: DecisionLog,
    /// `(job sequence number, decision id)`, oldest first.
    finished: VecDeque<(u64, String)>,
    /// The latest job that wrote each finished decision.
    latest: HashMap<String, u64>,
}

impl HotLog {
    fn new(log: DecisionLog) -> Self {
        HotLog {
            log,
            finished: VecDeque::new(),
            latest: HashMap::new(),
        }
    }

    /// Drops the finished decisions whose last write has committed.
    fn evict(&mut self, committed: u64) {
        while let Some((seq, _)) = self.finished.front() {
            if *seq > committed {
                break;
            }
            let Some((seq, id)) = self.finished.pop_front() else {
                break;
            };
            if self.latest.get(&id) == Some(&seq) {
                self.latest.remove(&id);
                self.log.forget(&id);
            }
        }
    }
}

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
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
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
                    d.applied_seq
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
    })
}

/// Decisions read by `sql` with `p`.
fn decisions_where(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<DecisionRecord>> {
    let mut st = c.prepare_cached(sql).map_err(sq)?;
    let rows = st.query_map(p, decision_of).map_err(sq)?;
    rows.map(|r| decision_from_row(BACKEND, r.map_err(sq)?))
        .collect()
}

/// The file's rows of model `mid`, for [`load`].
struct FileRows<'a> {
    store: &'a SqliteStore,
    mid: i64,
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
        let sql = format!(
            "SELECT {DECISION_COLS} FROM decisions WHERE mid = ?1 AND episode = ?2 AND step = ?3"
        );
        let mid = self.mid;
        Ok(self
            .store
            .read(|c| decisions_where(c, &sql, params![mid, episode, k as i64]))?
            .pop())
    }

    fn due(&mut self, now_ms: i64) -> Result<Vec<DecisionRecord>> {
        let sql = format!(
            "SELECT {DECISION_COLS} FROM decisions WHERE status = 0 AND closes_ms <= ?2 \
             AND mid = ?1"
        );
        let mid = self.mid;
        self.store
            .read(|c| decisions_where(c, &sql, params![mid, now_ms]))
    }
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
                    c.log = LogSlot::Hot(Box::new(HotLog::new(partial_log(
                        BACKEND,
                        d.clone(),
                        None,
                    )?)))
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
        let reads = matches!(call, Call::Settle) || !missing(&hot.log, call, now_ms).is_empty();
        if reads {
            if !may_read {
                return None;
            }
            let mut rows = FileRows {
                store: self,
                mid: c.mid,
            };
            if let Err(e) = load(&mut hot.log, call, now_ms, &mut rows) {
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
        let finished: Vec<String> = decisions
            .iter()
            .filter(|d| d.status >= status_code(DecisionStatus::Applied))
            .map(|d| d.id.clone())
            .collect();
        job.decisions = Some(LogWrite {
            meta,
            decisions,
            episodes,
        });
        // Enqueued under the model's lock: the queue order is its serial order.
        let ticket = self.enqueue_for(Job::Learn(job), waiting)?;
        c.last_seq = ticket.seq;
        let LogSlot::Hot(hot) = &mut c.log else {
            return Err(Error::Internal("a decision call lost its log".into()));
        };
        for id in finished {
            hot.latest.insert(id.clone(), ticket.seq);
            hot.finished.push_back((ticket.seq, id));
        }
        hot.evict(self.inner.done.committed.load(Ordering::Acquire));
        Ok(Locked::Done(applied.map(|()| planned.reply), Some(ticket)))
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
        let done = self.with_model(owner, id, |c| {
            self.decision_locked(c, call, now, limits, debit, Waiting::Thread, true)
                .unwrap_or_else(|| Err(Error::Internal("a blocking decision call declined".into())))
        })?;
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
                return Ok(DecisionPage::empty());
            }
            let filter = "mid = ?1 AND (?2 IS NULL OR status = ?2) \
                 AND (?3 IS NULL OR time_ms >= ?3) AND (?4 IS NULL OR time_ms < ?4)";
            let status = q.status.map(status_code);
            let total: i64 = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM decisions WHERE {filter}"),
                    params![mid, status, q.since_ms, q.until_ms],
                    |r| r.get(0),
                )
                .map_err(sq)?;
            let sql = format!(
                "SELECT {DECISION_COLS} FROM decisions WHERE {filter} \
                 ORDER BY time_ms, id LIMIT ?5 OFFSET ?6"
            );
            let lim = i64::try_from(q.limit).unwrap_or(i64::MAX);
            let off = i64::try_from(q.offset).unwrap_or(i64::MAX);
            let decisions = decisions_where(
                c,
                &sql,
                params![mid, status, q.since_ms, q.until_ms, lim, off],
            )?;
            Ok(DecisionPage {
                total: total as u64,
                decisions,
                stats: meta_from_bytes(BACKEND, meta.as_deref())?.0,
            })
        })
    }

    /// A metered blocking decision call of `meter`'s user.
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
    /// [`crate::store::Store::settle`]), and prunes the logs past their
    /// retention (at most once a minute).
    pub(super) fn settle_all(&self, now: i64) -> Result<usize> {
        let due: Vec<(String, String)> = self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT m.owner, m.id FROM models m WHERE m.mid IN \
                     (SELECT DISTINCT mid FROM decisions WHERE status = 0 AND closes_ms <= ?1)",
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
        let last = self.inner.last_prune.load(Ordering::Relaxed);
        if now >= last + PRUNE_EVERY_SECS
            && self
                .inner
                .last_prune
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.prune_all(now)?;
        }
        Ok(learned)
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
                h.latest.remove(id);
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
     AND d.status >= 2 AND NOT EXISTS (SELECT 1 FROM decisions p WHERE p.mid = d.mid \
     AND p.episode = d.episode AND p.step = d.step - 1 AND p.status < 2) \
     ORDER BY d.time_ms LIMIT ?3";
/// The ended episodes of model ?1 with no decision left, at most ?2.
const SQL_EMPTY_EPISODES: &str = "SELECT e.id FROM episodes e WHERE e.mid = ?1 \
     AND e.end_json IS NOT NULL AND NOT EXISTS (SELECT 1 FROM decisions d \
     WHERE d.mid = e.mid AND d.episode = e.id) LIMIT ?2";

fn strings(c: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(sql).map_err(sq)?;
    let rows = st.query_map(p, |r| r.get(0)).map_err(sq)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
}

/// Deletes a chunk of model `mid`'s decision and episode rows; whether
/// any were deleted.
fn drop_log_chunk(c: &Connection, mid: i64) -> Result<bool> {
    let n = c
        .execute(
            "DELETE FROM decisions WHERE mid = ?1 AND id IN \
             (SELECT id FROM decisions WHERE mid = ?1 LIMIT ?2)",
            params![mid, PRUNE_CHUNK as i64],
        )
        .map_err(sq)?;
    let e = c
        .execute(
            "DELETE FROM episodes WHERE mid = ?1 AND id IN \
             (SELECT id FROM episodes WHERE mid = ?1 LIMIT ?2)",
            params![mid, PRUNE_CHUNK as i64],
        )
        .map_err(sq)?;
    Ok(n + e > 0)
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
