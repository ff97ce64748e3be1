//! Evaluation jobs on PostgreSQL (issue 18), shared by every instance: a
//! creation locks the user's row (`FOR UPDATE`), so concurrent creations
//! of one user serialise and the limits hold exactly; a claim takes the
//! oldest claimable job under `FOR UPDATE SKIP LOCKED`, so instances
//! claiming at once take different jobs. The decision log's keyset pages
//! are plain reads.

use postgres::types::ToSql;

use super::decisions::decision_of;
use super::{pg, PgStore, BACKEND};
use crate::decisions::DecisionRecord;
use crate::error::{Error, Result};
use crate::evaluation::EvalRequest;
use crate::store::decision_rows::decision_cols;
use crate::store::eval_retention::{
    prune_with, PruneSteps, SQL_CANCEL_ACTIVE, SQL_DELETE_FINISHED, SQL_FOOTPRINT, SQL_OVER_CAP,
    SQL_PRUNE_OVER_CAP, SQL_PRUNE_TOMBSTONES,
};
use crate::store::{
    check_limits, day_of, end_columns, sql_claim, to_text, CallKind, Claimed, DecisionKeyset,
    EvalFootprint, EvalJob, EvalLimits, Evaluations, JobEnd, JobRow, JobStatus, JOB_COLS,
};
use crate::tenancy::BillingMonth;

fn job_of(r: &postgres::Row) -> Result<EvalJob> {
    JobRow {
        id: r.get(0),
        owner: r.get(1),
        model_id: r.get(2),
        status: r.get(3),
        created_at: r.get(4),
        started_at: r.get(5),
        finished_at: r.get(6),
        request: r.get(7),
        read: r.get(8),
        total: r.get(9),
        error: r.get(10),
        result: r.get(11),
    }
    .into_job(BACKEND)
}

/// A page of model $1's decisions for an evaluation, newest first: logged
/// in [$2, $3) (either bound may be NULL), before the cursor ($4, $5) when
/// there is one, at most $6. Run as a one-off statement (planned with its
/// values), so the NULL tests fold away and the cursor seeks
/// `decisions_time` (the plan test in `decisions.rs`).
pub(super) const SQL_EVALUATION_PAGE: &str = concat!(
    "SELECT ",
    decision_cols!(),
    " FROM decisions WHERE mid = $1 \
     AND ($2::int8 IS NULL OR time_ms >= $2) AND ($3::int8 IS NULL OR time_ms < $3) \
     AND ($4::int8 IS NULL OR (time_ms, id) < ($4, $5::text)) \
     ORDER BY time_ms DESC, id DESC LIMIT $6"
);

const SQL_SEQ: &str = "SELECT seq FROM evaluations WHERE id = $1 AND owner = $2 \
     AND model_id = $3 AND status <> 'deleted'";

impl PgStore {
    fn jobs(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Vec<EvalJob>> {
        self.query(sql, p)?.iter().map(job_of).collect()
    }
}

impl Evaluations for PgStore {
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
        self.tx(|tx, _| {
            tx.query_opt("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&owner])
                .map_err(pg)?
                .ok_or(Error::NotFound("model"))?;
            // FOR KEY SHARE: a deletion of the model waits for this insert,
            // then turns the new job into a tombstone too (or this sees no
            // model); the model's own row updates do not wait.
            tx.query_opt(
                "SELECT 1 FROM models WHERE id = $1 AND owner = $2 FOR KEY SHARE",
                &[&model_id, &owner],
            )
            .map_err(pg)?
            .ok_or(Error::NotFound("model"))?;
            let r = tx
                .query_one(
                    "SELECT COUNT(*) FILTER (WHERE created_at >= $2), \
                     COUNT(*) FILTER (WHERE status IN ('queued', 'running')) \
                     FROM evaluations WHERE owner = $1 \
                     AND (created_at >= $2 OR status IN ('queued', 'running'))",
                    &[&owner, &day_of(now).0],
                )
                .map_err(pg)?;
            let (today, active): (i64, i64) = (r.get(0), r.get(1));
            check_limits(limits, today as u64, active as u64, now)?;
            tx.execute(
                "INSERT INTO evaluations (id, owner, model_id, status, created_at, request) \
                 VALUES ($1, $2, $3, 'queued', $4, $5)",
                &[&job.id, &owner, &model_id, &now, &text],
            )
            .map_err(pg)?;
            // Counted by day and kind only: usage_month (the quota's total)
            // holds calls, and a job is not one.
            let month = BillingMonth::from_unix(now);
            tx.execute(
                "INSERT INTO usage_day AS d (user_id, month, day, kind, calls) \
                 VALUES ($1, $2, $3, $4, 1) \
                 ON CONFLICT (user_id, month, day, kind) DO UPDATE SET calls = d.calls + 1",
                &[
                    &owner,
                    &month.to_string(),
                    &i16::from(month.day_of(now)),
                    &CallKind::Evaluation.as_str(),
                ],
            )
            .map_err(pg)?;
            Ok(())
        })?;
        Ok(job)
    }

    fn evaluation(&self, owner: &str, model_id: &str, id: &str) -> Result<EvalJob> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM evaluations WHERE id = $1 AND owner = $2 AND model_id = $3 \
             AND status <> 'deleted'"
        );
        self.jobs(&sql, &[&id, &owner, &model_id])?
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
        let below: i64 = match before {
            Some(id) => self
                .query(SQL_SEQ, &[&id, &owner, &model_id])?
                .first()
                .ok_or(Error::NotFound("evaluation"))?
                .get(0),
            None => i64::MAX,
        };
        let sql = format!(
            "SELECT {JOB_COLS} FROM evaluations WHERE owner = $1 AND model_id = $2 \
             AND seq < $3 AND status <> 'deleted' ORDER BY seq DESC LIMIT $4"
        );
        self.jobs(&sql, &[&owner, &model_id, &below, &i64::from(limit)])
    }

    fn cancel_evaluation(&self, owner: &str, model_id: &str, id: &str, now: i64) -> Result<()> {
        let mut n = self.execute(SQL_CANCEL_ACTIVE, &[&id, &owner, &model_id, &now])?;
        if n == 0 {
            n = self.execute(SQL_DELETE_FINISHED, &[&id, &owner, &model_id])?;
        }
        if n == 0 {
            return Err(Error::NotFound("evaluation"));
        }
        Ok(())
    }

    fn claim_evaluation(&self, lease_secs: i64, now: i64) -> Result<Option<Claimed>> {
        let token = crate::tenancy::new_id();
        let sql = sql_claim("FOR UPDATE SKIP LOCKED");
        let job = self.jobs(&sql, &[&now, &token, &(now + lease_secs)])?.pop();
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
        let n = self.execute(
            "UPDATE evaluations SET decisions_read = $3, decisions_total = $4, \
             lease_until = $5 WHERE id = $1 AND lease_token = $2 AND status = 'running'",
            &[
                &id,
                &token,
                &(read as i64),
                &(total as i64),
                &(now + lease_secs),
            ],
        )?;
        Ok(n == 1)
    }

    fn finish_evaluation(&self, id: &str, token: &str, end: JobEnd, now: i64) -> Result<bool> {
        let (status, error, result) = end_columns(&end)?;
        let finished = (status != JobStatus::Queued).then_some(now);
        let n = self.execute(
            "UPDATE evaluations SET status = $3, error = $4, result = $5, finished_at = $6, \
             lease_token = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_token = $2 AND status = 'running'",
            &[&id, &token, &status.as_str(), &error, &result, &finished],
        )?;
        Ok(n == 1)
    }

    fn prune_evaluations(&self, keep: u32, now: i64) -> Result<usize> {
        prune_with(self, keep, now, &self.evals_pruned_at)
    }

    fn evaluation_footprint(&self, owner: &str) -> Result<EvalFootprint> {
        let rows = self.query(SQL_FOOTPRINT, &[&owner])?;
        let r = rows
            .first()
            .ok_or_else(|| Error::storage(BACKEND, "no footprint row"))?;
        let count = |i: usize| r.get::<_, i64>(i).max(0) as u64;
        Ok(EvalFootprint {
            rows: count(0),
            deleted: count(1),
            with_payload: count(2),
        })
    }

    fn decisions_keyset(
        &self,
        owner: &str,
        model_id: &str,
        q: &DecisionKeyset,
    ) -> Result<Vec<DecisionRecord>> {
        let rows = self.query(
            "SELECT mid, decisions IS NOT NULL FROM models WHERE id = $1 AND owner = $2",
            &[&model_id, &owner],
        )?;
        let r = rows.first().ok_or(Error::NotFound("model"))?;
        let (mid, logs): (i64, bool) = (r.get(0), r.get(1));
        if !logs {
            return Ok(Vec::new());
        }
        let (bt, bid) = match &q.before {
            Some((t, id)) => (Some(*t), Some(id.as_str())),
            None => (None, None),
        };
        let lim = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let rows = self.query(
            SQL_EVALUATION_PAGE,
            &[&mid, &q.since_ms, &q.until_ms, &bt, &bid, &lim],
        )?;
        rows.iter().map(decision_of).collect()
    }
}

impl PruneSteps for PgStore {
    fn prune_tombstones(&self, day_start: i64, chunk: i64) -> Result<u64> {
        self.execute(SQL_PRUNE_TOMBSTONES, &[&day_start, &chunk])
    }

    fn over_cap(&self, keep: u32, since: i64) -> Result<Vec<(String, String)>> {
        let rows = self.query(SQL_OVER_CAP, &[&i64::from(keep), &since])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn prune_over_cap(&self, owner: &str, model_id: &str, keep: u32, chunk: i64) -> Result<u64> {
        self.execute(
            SQL_PRUNE_OVER_CAP,
            &[&owner, &model_id, &i64::from(keep), &chunk],
        )
    }
}
