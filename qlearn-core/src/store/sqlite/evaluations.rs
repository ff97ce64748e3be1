//! Evaluation jobs on SQLite (issue 18): every change is one small job of
//! the writer thread, so a creation's limit check, insert and usage count
//! (kind `evaluation`), and a claim, are atomic (the writer is the only one
//! writing). Reads, the decision
//! log's keyset pages included, run on pooled read connections, never on
//! the writer.

use rusqlite::{params, Connection, OptionalExtension};

use super::decision_rows::decisions_where;
use super::{lock_plain, sq, SqliteStore, BACKEND};
use crate::decisions::DecisionRecord;
use crate::error::{Error, Result};
use crate::evaluation::EvalRequest;
use crate::store::decision_rows::DECISION_COLS;
use crate::store::eval_retention::{
    chunks, prune_with, sqlite_text, PruneSteps, PRUNE_JOBS_CHUNK, SQL_CANCEL_ACTIVE,
    SQL_DELETE_FINISHED, SQL_FOOTPRINT, SQL_OVER_CAP, SQL_PRUNE_OVER_CAP, SQL_PRUNE_TOMBSTONES,
    SQL_TOMBSTONE_MODEL,
};
use crate::store::{
    check_limits, day_of, end_columns, sql_claim, to_text, CallKind, Claimed, DecisionKeyset,
    EvalFootprint, EvalJob, EvalLimits, Evaluations, JobEnd, JobRow, JobStatus, JOB_COLS,
};
use crate::tenancy::BillingMonth;

/// A page of model ?1's decisions, newest first, logged at or after ?2 and
/// before ?3 (each when not null), at most ?4; with `before`, only those
/// before (?5, ?6) in (time, id) order. That condition is written only when
/// there is a cursor, as a plain row-value range, which SQLite seeks in
/// `decisions_time`: as `?5 IS NULL OR ...` it was a filter, so each page
/// read every newer decision again, and an evaluation's whole read grew
/// with the square of its decisions (`decision_rows`' tests check the
/// plan).
pub(super) fn sql_keyset(before: bool) -> String {
    let cursor = if before {
        "AND (time_ms, id) < (?5, ?6) "
    } else {
        ""
    };
    format!(
        "SELECT {DECISION_COLS} FROM decisions WHERE mid = ?1 \
         AND (?2 IS NULL OR time_ms >= ?2) AND (?3 IS NULL OR time_ms < ?3) \
         {cursor}ORDER BY time_ms DESC, id DESC LIMIT ?4"
    )
}

fn job_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        owner: r.get(1)?,
        model_id: r.get(2)?,
        status: r.get(3)?,
        created_at: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        request: r.get(7)?,
        read: r.get(8)?,
        total: r.get(9)?,
        error: r.get(10)?,
        result: r.get(11)?,
    })
}

fn jobs_where(c: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<EvalJob>> {
    let mut st = c.prepare_cached(sql).map_err(sq)?;
    let rows = st.query_map(p, job_of).map_err(sq)?;
    rows.map(|r| r.map_err(sq)?.into_job(BACKEND)).collect()
}

/// The visible job `id` of the owner's model: its `seq`.
fn seq_of(c: &Connection, owner: &str, model_id: &str, id: &str) -> Result<i64> {
    c.query_row(
        "SELECT seq FROM evaluations WHERE id = ?1 AND owner = ?2 AND model_id = ?3 \
         AND status <> 'deleted'",
        params![id, owner, model_id],
        |r| r.get(0),
    )
    .optional()
    .map_err(sq)?
    .ok_or(Error::NotFound("evaluation"))
}

fn insert(
    c: &Connection,
    job: &EvalJob,
    request: &str,
    limits: EvalLimits,
    now: i64,
) -> Result<()> {
    c.query_row(
        "SELECT 1 FROM models WHERE id = ?1 AND owner = ?2",
        params![job.model_id, job.owner],
        |_| Ok(()),
    )
    .optional()
    .map_err(sq)?
    .ok_or(Error::NotFound("model"))?;
    let (today, active): (i64, i64) = c
        .query_row(
            "SELECT COUNT(*) FILTER (WHERE created_at >= ?2), \
             COUNT(*) FILTER (WHERE status IN ('queued', 'running')) \
             FROM evaluations WHERE owner = ?1 AND (created_at >= ?2 OR status IN ('queued', 'running'))",
            params![job.owner, day_of(now).0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sq)?;
    check_limits(limits, today as u64, active as u64, now)?;
    c.execute(
        "INSERT INTO evaluations (id, owner, model_id, status, created_at, request) \
         VALUES (?1, ?2, ?3, 'queued', ?4, ?5)",
        params![job.id, job.owner, job.model_id, now, request],
    )
    .map_err(sq)?;
    let month = BillingMonth::from_unix(now);
    c.execute(
        "INSERT INTO usage (user_id, month, day, kind, calls, overage) \
         VALUES (?1, ?2, ?3, ?4, 1, 0) \
         ON CONFLICT (user_id, month, day, kind) DO UPDATE SET calls = calls + 1",
        params![
            job.owner,
            month.to_string(),
            month.day_of(now),
            CallKind::Evaluation.as_str()
        ],
    )
    .map_err(sq)?;
    Ok(())
}

impl Evaluations for SqliteStore {
    fn create_evaluation(
        &self,
        owner: &str,
        model_id: &str,
        request: &EvalRequest,
        limits: EvalLimits,
        now: i64,
    ) -> Result<EvalJob> {
        let job = EvalJob::queued(owner, model_id, request, now);
        let text = to_text(request)?;
        let row = job.clone();
        // The usage counters in memory are held across the write, so no
        // debit reloads the month between the commit and the count here.
        let mut usage = lock_plain(&self.inner.usage);
        self.write(move |c| insert(c, &row, &text, limits, now))?;
        let month = BillingMonth::from_unix(now);
        if let Some(t) = usage.get_mut(owner).and_then(|m| m.get_mut(&month)) {
            t.count_evaluation(now);
        }
        Ok(job)
    }

    fn evaluation(&self, owner: &str, model_id: &str, id: &str) -> Result<EvalJob> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM evaluations WHERE id = ?1 AND owner = ?2 AND model_id = ?3 \
             AND status <> 'deleted'"
        );
        self.read(|c| jobs_where(c, &sql, params![id, owner, model_id]))?
            .pop()
            .ok_or(Error::NotFound("evaluation"))
    }

    fn evaluations(
        &self,
        owner: &str,
        model_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EvalJob>> {
        self.read(|c| {
            let below = match before {
                Some(id) => seq_of(c, owner, model_id, id)?,
                None => i64::MAX,
            };
            let sql = format!(
                "SELECT {JOB_COLS} FROM evaluations WHERE owner = ?1 AND model_id = ?2 \
                 AND seq < ?3 AND status <> 'deleted' ORDER BY seq DESC LIMIT ?4"
            );
            jobs_where(c, &sql, params![owner, model_id, below, limit])
        })
    }

    fn cancel_evaluation(&self, owner: &str, model_id: &str, id: &str, now: i64) -> Result<()> {
        let (owner, model_id, id) = (owner.to_owned(), model_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let mut n = c
                .prepare_cached(&sqlite_text(SQL_CANCEL_ACTIVE))
                .and_then(|mut st| st.execute(params![id, owner, model_id, now]))
                .map_err(sq)?;
            if n == 0 {
                n = c
                    .prepare_cached(&sqlite_text(SQL_DELETE_FINISHED))
                    .and_then(|mut st| st.execute(params![id, owner, model_id]))
                    .map_err(sq)?;
            }
            if n == 0 {
                return Err(Error::NotFound("evaluation"));
            }
            Ok(())
        })
    }

    fn claim_evaluation(&self, lease_secs: i64, now: i64) -> Result<Option<Claimed>> {
        let token = crate::tenancy::new_id();
        let t = token.clone();
        let sql = sqlite_text(&sql_claim(""));
        let job =
            self.write(move |c| Ok(jobs_where(c, &sql, params![now, t, now + lease_secs])?.pop()))?;
        Ok(job.map(|job| Claimed { job, token }))
    }

    fn evaluation_progress(
        &self,
        id: &str,
        token: &str,
        read: u64,
        total: u64,
        lease_secs: i64,
        now: i64,
    ) -> Result<bool> {
        let (id, token) = (id.to_owned(), token.to_owned());
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE evaluations SET decisions_read = ?3, decisions_total = ?4, \
                     lease_until = ?5 WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
                    params![id, token, read as i64, total as i64, now + lease_secs],
                )
                .map_err(sq)?;
            Ok(n == 1)
        })
    }

    fn finish_evaluation(&self, id: &str, token: &str, end: JobEnd, now: i64) -> Result<bool> {
        let (status, error, result) = end_columns(&end)?;
        let finished = (status != JobStatus::Queued).then_some(now);
        let (id, token) = (id.to_owned(), token.to_owned());
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE evaluations SET status = ?3, error = ?4, result = ?5, finished_at = ?6, \
                     lease_token = NULL, lease_until = NULL \
                     WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
                    params![id, token, status.as_str(), error, result, finished],
                )
                .map_err(sq)?;
            Ok(n == 1)
        })
    }

    fn prune_evaluations(&self, keep: u32, now: i64) -> Result<usize> {
        prune_with(self, keep, now, &self.inner.evals_pruned_at)
    }

    fn evaluation_footprint(&self, owner: &str) -> Result<EvalFootprint> {
        let (rows, deleted, with_payload): (i64, i64, i64) = self.read(|c| {
            c.query_row(&sqlite_text(SQL_FOOTPRINT), [owner], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(sq)
        })?;
        Ok(EvalFootprint {
            rows: rows as u64,
            deleted: deleted as u64,
            with_payload: with_payload as u64,
        })
    }

    fn decisions_keyset(
        &self,
        owner: &str,
        model_id: &str,
        q: &DecisionKeyset,
    ) -> Result<Vec<DecisionRecord>> {
        self.read(|c| {
            let (mid, logs): (i64, Option<String>) = c
                .query_row(
                    "SELECT mid, decisions FROM models WHERE id = ?1 AND owner = ?2",
                    [model_id, owner],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sq)?
                .ok_or(Error::NotFound("model"))?;
            if logs.is_none() {
                return Ok(Vec::new());
            }
            let lim = i64::try_from(q.limit).unwrap_or(i64::MAX);
            match &q.before {
                Some((t, id)) => decisions_where(
                    c,
                    &sql_keyset(true),
                    params![mid, q.since_ms, q.until_ms, lim, t, id],
                ),
                None => decisions_where(
                    c,
                    &sql_keyset(false),
                    params![mid, q.since_ms, q.until_ms, lim],
                ),
            }
        })
    }
}

impl SqliteStore {
    /// Turns every job of a deleted model into a tombstone, a chunk per
    /// writer job (a creation for the model, checked in the writer, is
    /// refused from the model's deletion on).
    pub(super) fn bury_model_jobs(&self, owner: &str, model_id: &str) -> Result<()> {
        chunks(|| {
            let (o, m) = (owner.to_owned(), model_id.to_owned());
            self.write(move |c| bury_chunk(c, &o, &m).map_err(sq))
        })?;
        Ok(())
    }
}

/// Turns at most a chunk of the deleted model's live jobs into tombstones:
/// how many. Model deletion runs it in the writer job that deletes the
/// model, so a model's jobs (at most a chunk in practice) never outlive
/// it, even when a later writer job fails.
pub(super) fn bury_chunk(c: &Connection, owner: &str, model_id: &str) -> rusqlite::Result<u64> {
    let n = c
        .prepare_cached(&sqlite_text(SQL_TOMBSTONE_MODEL))?
        .execute(params![owner, model_id, PRUNE_JOBS_CHUNK])?;
    Ok(n as u64)
}

impl PruneSteps for SqliteStore {
    fn prune_tombstones(&self, day_start: i64, chunk: i64) -> Result<u64> {
        self.write(move |c| {
            let n = c
                .prepare_cached(&sqlite_text(SQL_PRUNE_TOMBSTONES))
                .and_then(|mut st| st.execute(params![day_start, chunk]))
                .map_err(sq)?;
            Ok(n as u64)
        })
    }

    fn over_cap(&self, keep: u32, since: i64) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&sqlite_text(SQL_OVER_CAP)).map_err(sq)?;
            let rows = st
                .query_map(params![i64::from(keep), since], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(sq)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })
    }

    fn prune_over_cap(&self, owner: &str, model_id: &str, keep: u32, chunk: i64) -> Result<u64> {
        let (owner, model_id) = (owner.to_owned(), model_id.to_owned());
        self.write(move |c| {
            let n = c
                .prepare_cached(&sqlite_text(SQL_PRUNE_OVER_CAP))
                .and_then(|mut st| st.execute(params![owner, model_id, i64::from(keep), chunk]))
                .map_err(sq)?;
            Ok(n as u64)
        })
    }
}
