//! How long the stores keep evaluation jobs, written once for every
//! backend (issue 18's retention):
//!
//! 1. Deleting a finished job (or its model) drops its request, result
//!    and error at once: what stays is a tombstone (status `deleted`),
//!    only counting in its UTC day's `evaluations_per_day`.
//! 2. A tombstone is removed once its UTC creation day is over.
//! 3. Deleting a model turns every job of the model into a tombstone
//!    (queued and running ones too: a running job's holder learns it at
//!    its next progress write or its end, which return `false`), so the
//!    jobs created today still count in today's limit: deleting models
//!    never lets a user create more than `evaluations_per_day` jobs in a
//!    day. Rule 2 then removes them.
//! 4. Of a model's finished jobs (done, failed, cancelled), only the
//!    newest [`KEEP_FINISHED_JOBS`] are kept; older ones are removed.
//!
//! Rules 2 and 4 run in
//! [`Evaluations::prune_evaluations`](super::Evaluations::prune_evaluations), which every
//! store's settle pass calls (the SQL stores at most once a minute), in
//! chunks of at most [`PRUNE_JOBS_CHUNK`] rows (one small writer job each
//! on SQLite). The SQL stores share the statements here (written with
//! PostgreSQL's `$n`; SQLite's text is [`sqlite_text`]) and the loop
//! ([`prune_with`]).

use std::sync::atomic::{AtomicI64, Ordering};

use crate::error::Result;

/// Finished jobs (done, failed, cancelled) kept per model, newest first.
pub const KEEP_FINISHED_JOBS: u32 = 1_000;

/// Most rows one prune statement deletes.
pub const PRUNE_JOBS_CHUNK: i64 = 1_000;

/// What a store keeps of one user's jobs (for retention checks and
/// operators).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvalFootprint {
    /// Rows kept, tombstones included.
    pub rows: u64,
    /// Tombstones among them (deleted jobs, counted in their day's limit).
    pub deleted: u64,
    /// Rows still holding a request, result or error.
    pub with_payload: u64,
}

/// The `SET` of a tombstone: the payload and lease dropped; what stays is
/// the id, owner, model and creation time.
macro_rules! tombstone_set {
    () => {
        "status = 'deleted', request = '', result = NULL, error = NULL, \
         lease_token = NULL, lease_until = NULL"
    };
}

/// Cancels owner `$2`'s queued or running job `$1` of model `$3` at `$4`.
pub const SQL_CANCEL_ACTIVE: &str = "UPDATE evaluations SET status = 'cancelled', \
     finished_at = $4, lease_token = NULL, lease_until = NULL \
     WHERE id = $1 AND owner = $2 AND model_id = $3 AND status IN ('queued', 'running')";

/// Deletes owner `$2`'s finished job `$1` of model `$3`: a tombstone.
pub const SQL_DELETE_FINISHED: &str = concat!(
    "UPDATE evaluations SET ",
    tombstone_set!(),
    " WHERE id = $1 AND owner = $2 AND model_id = $3 \
     AND status IN ('done', 'failed', 'cancelled')"
);

/// Turns at most `$3` live jobs of owner `$1`'s model `$2` into tombstones.
pub const SQL_TOMBSTONE_MODEL: &str = concat!(
    "UPDATE evaluations SET ",
    tombstone_set!(),
    " WHERE seq IN (SELECT seq FROM evaluations WHERE owner = $1 AND model_id = $2 \
     AND status <> 'deleted' ORDER BY seq LIMIT $3)"
);

/// Removes at most `$2` tombstones created before `$1` (a day's start).
pub const SQL_PRUNE_TOMBSTONES: &str = "DELETE FROM evaluations WHERE seq IN \
     (SELECT seq FROM evaluations WHERE status = 'deleted' AND created_at < $1 \
     ORDER BY created_at LIMIT $2)";

/// The models (owner, model id) with more than `$1` finished jobs among
/// those with a job finished at or after `$2`: only they can have passed
/// the cap since the previous prune, so the candidates are found in the
/// finish-time index and each one is counted in its model's index (no
/// scan of every finished job; `MATERIALIZED` keeps SQLite's planner on
/// that order).
pub const SQL_OVER_CAP: &str = "WITH r AS MATERIALIZED (SELECT owner, model_id FROM evaluations \
      WHERE status IN ('done', 'failed', 'cancelled') AND finished_at >= $2), \
     c AS MATERIALIZED (SELECT DISTINCT owner, model_id FROM r) \
     SELECT c.owner, c.model_id FROM c \
     WHERE (SELECT COUNT(*) FROM evaluations e WHERE e.owner = c.owner \
      AND e.model_id = c.model_id AND e.status IN ('done', 'failed', 'cancelled')) > $1";

/// Removes at most `$4` of owner `$1`'s model `$2`'s finished jobs after
/// its newest `$3`.
pub const SQL_PRUNE_OVER_CAP: &str = "DELETE FROM evaluations WHERE seq IN \
     (SELECT seq FROM evaluations WHERE owner = $1 AND model_id = $2 \
     AND status IN ('done', 'failed', 'cancelled') ORDER BY seq DESC LIMIT $4 OFFSET $3)";

/// Owner `$1`'s [`EvalFootprint`]: rows, tombstones, rows with a payload.
pub const SQL_FOOTPRINT: &str = "SELECT COUNT(*), \
     COUNT(*) FILTER (WHERE status = 'deleted'), \
     COUNT(*) FILTER (WHERE request <> '' OR result IS NOT NULL OR error IS NOT NULL) \
     FROM evaluations WHERE owner = $1";

/// A statement above in SQLite's numbered parameters (`?n`).
pub fn sqlite_text(sql: &str) -> String {
    sql.replace('$', "?")
}

/// The statements of rules 2 and 4 on one SQL database, each one short
/// step (a writer job on SQLite, a statement on PostgreSQL).
pub trait PruneSteps {
    /// Runs [`SQL_PRUNE_TOMBSTONES`]: rows removed.
    fn prune_tombstones(&self, day_start: i64, chunk: i64) -> Result<u64>;
    /// Runs [`SQL_OVER_CAP`].
    fn over_cap(&self, keep: u32, since: i64) -> Result<Vec<(String, String)>>;
    /// Runs [`SQL_PRUNE_OVER_CAP`]: rows removed.
    fn prune_over_cap(&self, owner: &str, model_id: &str, keep: u32, chunk: i64) -> Result<u64>;
}

/// How far before the previous prune's `now` a finish still makes its
/// model a candidate of the next (slack for a late commit or another
/// instance's clock).
pub const SINCE_SLACK_SECS: i64 = 600;

/// Rules 2 and 4 on `db` at `now`, chunk after chunk until a chunk is not
/// full: the rows removed. `pruned_at` is when this process last pruned
/// (0: never, then every model is a candidate); only models with a job
/// finished since then (less [`SINCE_SLACK_SECS`]) are counted against
/// the cap. Exact (keeps the newest `keep` finished jobs of each model and
/// every tombstone of `now`'s day) and idempotent.
pub fn prune_with(
    db: &impl PruneSteps,
    keep: u32,
    now: i64,
    pruned_at: &AtomicI64,
) -> Result<usize> {
    let day = super::evaluations::day_of(now).0;
    let since = match pruned_at.load(Ordering::Relaxed) {
        0 => i64::MIN,
        at => at.saturating_sub(SINCE_SLACK_SECS),
    };
    let mut removed = chunks(|| db.prune_tombstones(day, PRUNE_JOBS_CHUNK))?;
    for (owner, model_id) in db.over_cap(keep, since)? {
        removed += chunks(|| db.prune_over_cap(&owner, &model_id, keep, PRUNE_JOBS_CHUNK))?;
    }
    pruned_at.store(now, Ordering::Relaxed);
    Ok(removed)
}

/// Runs `step` until it removed less than a chunk: the total removed.
pub fn chunks(mut step: impl FnMut() -> Result<u64>) -> Result<usize> {
    let mut total = 0;
    loop {
        let n = step()?;
        total += n as usize;
        if n < PRUNE_JOBS_CHUNK as u64 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Steps that remove what a script says and record their calls.
    #[derive(Default)]
    struct Script {
        tombstones: RefCell<Vec<u64>>,
        over: RefCell<Vec<u64>>,
        calls: RefCell<Vec<String>>,
    }

    impl PruneSteps for Script {
        fn prune_tombstones(&self, day_start: i64, chunk: i64) -> Result<u64> {
            self.calls
                .borrow_mut()
                .push(format!("tombstones {day_start} {chunk}"));
            Ok(self.tombstones.borrow_mut().remove(0))
        }

        fn over_cap(&self, keep: u32, since: i64) -> Result<Vec<(String, String)>> {
            self.calls.borrow_mut().push(format!("over {keep} {since}"));
            Ok(vec![("u".into(), "m1".into()), ("u".into(), "m2".into())])
        }

        fn prune_over_cap(
            &self,
            owner: &str,
            model_id: &str,
            keep: u32,
            chunk: i64,
        ) -> Result<u64> {
            self.calls
                .borrow_mut()
                .push(format!("cap {owner} {model_id} {keep} {chunk}"));
            Ok(self.over.borrow_mut().remove(0))
        }
    }

    #[test]
    fn chunks_run_until_one_is_not_full() {
        let mut left = vec![1_000, 1_000, 7];
        let mut calls = 0;
        let total = chunks(|| {
            calls += 1;
            Ok(left.remove(0))
        });
        assert_eq!((total.ok(), calls), (Some(2_007), 3));
        let once = chunks(|| Ok(0));
        assert_eq!(once.ok(), Some(0));
    }

    #[test]
    fn prune_runs_both_rules_in_chunks_from_the_day_start() {
        let s = Script {
            tombstones: RefCell::new(vec![1_000, 2, 0]),
            over: RefCell::new(vec![1_000, 999, 5, 0, 0]),
            ..Script::default()
        };
        // 2026-09-21T00:53:20Z: the day starts 3,200 s earlier.
        let now = 1_790_038_400;
        let at = AtomicI64::new(0);
        let removed = prune_with(&s, 1_000, now, &at);
        assert_eq!(removed.ok(), Some(1_000 + 2 + 1_000 + 999 + 5));
        assert_eq!(at.load(Ordering::Relaxed), now);
        // The next prune counts only the models finished since this one.
        let removed = prune_with(&s, 1_000, now + 60, &at);
        assert_eq!(removed.ok(), Some(0));
        assert_eq!(at.load(Ordering::Relaxed), now + 60);
        assert_eq!(
            s.calls.into_inner(),
            [
                "tombstones 1790035200 1000",
                "tombstones 1790035200 1000",
                &format!("over 1000 {}", i64::MIN),
                "cap u m1 1000 1000",
                "cap u m1 1000 1000",
                "cap u m2 1000 1000",
                "tombstones 1790035200 1000",
                "over 1000 1790037800",
                "cap u m1 1000 1000",
                "cap u m2 1000 1000",
            ]
        );
    }

    #[test]
    fn sqlite_text_numbers_parameters_with_question_marks() {
        assert_eq!(sqlite_text("a = $1 AND b = $2"), "a = ?1 AND b = ?2");
        assert!(!sqlite_text(SQL_PRUNE_OVER_CAP).contains('$'));
    }
}
