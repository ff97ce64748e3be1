//! Evaluation jobs of the [`MemoryStore`]: one mutex over every job, so
//! the limits are checked atomically with the insert (and the job counted
//! in its owner's usage, under the same mutex) and a job is claimed
//! once. The decision log's keyset pages are read from the model's log.

use super::{poisoned, MemoryStore};
use crate::decisions::DecisionRecord;
use crate::error::{Error, Result};
use crate::evaluation::EvalRequest;
use crate::store::{
    check_limits, day_of, Claimed, DecisionKeyset, EvalJob, EvalLimits, Evaluations, JobEnd,
    JobStatus,
};

/// A job with its place in the creation order and its lease.
#[derive(Debug)]
struct Slot {
    seq: u64,
    job: EvalJob,
    lease: Option<(String, i64)>,
}

/// Every job, in creation order.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    next: u64,
    slots: Vec<Slot>,
}

impl Jobs {
    fn find(&mut self, owner: &str, model_id: &str, id: &str) -> Result<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|s| {
                s.job.id == id
                    && s.job.owner == owner
                    && s.job.model_id == model_id
                    && s.job.status != JobStatus::Deleted
            })
            .ok_or(Error::NotFound("evaluation"))
    }

    /// The running job `id` if `token` holds its lease.
    fn held(&mut self, id: &str, token: &str) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| {
            s.job.id == id
                && s.job.status == JobStatus::Running
                && s.lease.as_ref().is_some_and(|(t, _)| t == token)
        })
    }
}

impl MemoryStore {
    fn jobs(&self) -> Result<std::sync::MutexGuard<'_, Jobs>> {
        self.evaluations.lock().map_err(|_| poisoned())
    }
}

impl Evaluations for MemoryStore {
    fn create_evaluation(
        &self,
        owner: &str,
        model_id: &str,
        request: &EvalRequest,
        limits: EvalLimits,
        now: i64,
    ) -> Result<EvalJob> {
        self.entry(owner, model_id)?;
        let mut jobs = self.jobs()?;
        let (day, _) = day_of(now);
        let mine = || jobs.slots.iter().filter(|s| s.job.owner == owner);
        let today = mine().filter(|s| s.job.created_at >= day).count() as u64;
        let active = mine().filter(|s| s.job.status.active()).count() as u64;
        check_limits(limits, today, active, now)?;
        self.count_evaluation(owner, now)?;
        let job = EvalJob::queued(owner, model_id, request, now);
        jobs.next += 1;
        let seq = jobs.next;
        jobs.slots.push(Slot {
            seq,
            job: job.clone(),
            lease: None,
        });
        Ok(job)
    }

    fn evaluation(&self, owner: &str, model_id: &str, id: &str) -> Result<EvalJob> {
        Ok(self.jobs()?.find(owner, model_id, id)?.job.clone())
    }

    fn evaluations(
        &self,
        owner: &str,
        model_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EvalJob>> {
        let mut jobs = self.jobs()?;
        let below = match before {
            Some(id) => jobs.find(owner, model_id, id)?.seq,
            None => u64::MAX,
        };
        Ok(jobs
            .slots
            .iter()
            .rev()
            .filter(|s| {
                s.seq < below
                    && s.job.owner == owner
                    && s.job.model_id == model_id
                    && s.job.status != JobStatus::Deleted
            })
            .take(limit as usize)
            .map(|s| s.job.clone())
            .collect())
    }

    fn cancel_evaluation(&self, owner: &str, model_id: &str, id: &str, now: i64) -> Result<()> {
        let mut jobs = self.jobs()?;
        let slot = jobs.find(owner, model_id, id)?;
        if slot.job.status.active() {
            slot.job.status = JobStatus::Cancelled;
            slot.job.finished_at = Some(now);
            slot.lease = None;
        } else {
            slot.job.status = JobStatus::Deleted;
        }
        Ok(())
    }

    fn claim_evaluation(&self, lease_secs: i64, now: i64) -> Result<Option<Claimed>> {
        let mut jobs = self.jobs()?;
        let Some(slot) = jobs.slots.iter_mut().find(|s| match s.job.status {
            JobStatus::Queued => true,
            JobStatus::Running => s.lease.as_ref().is_none_or(|(_, until)| *until < now),
            _ => false,
        }) else {
            return Ok(None);
        };
        let token = crate::tenancy::new_id();
        slot.job.status = JobStatus::Running;
        slot.job.started_at.get_or_insert(now);
        slot.lease = Some((token.clone(), now + lease_secs));
        Ok(Some(Claimed {
            job: slot.job.clone(),
            token,
        }))
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
        let mut jobs = self.jobs()?;
        let Some(slot) = jobs.held(id, token) else {
            return Ok(false);
        };
        slot.job.decisions_read = read;
        slot.job.decisions_total = total;
        slot.lease = Some((token.to_owned(), now + lease_secs));
        Ok(true)
    }

    fn finish_evaluation(&self, id: &str, token: &str, end: JobEnd, now: i64) -> Result<bool> {
        let mut jobs = self.jobs()?;
        let Some(slot) = jobs.held(id, token) else {
            return Ok(false);
        };
        slot.lease = None;
        match end {
            JobEnd::Done(v) => {
                slot.job.status = JobStatus::Done;
                slot.job.result = Some(v);
                slot.job.finished_at = Some(now);
            }
            JobEnd::Failed(e) => {
                slot.job.status = JobStatus::Failed;
                slot.job.error = Some(e);
                slot.job.finished_at = Some(now);
            }
            JobEnd::Released => slot.job.status = JobStatus::Queued,
        }
        Ok(true)
    }

    fn decisions_keyset(
        &self,
        owner: &str,
        model_id: &str,
        q: &DecisionKeyset,
    ) -> Result<Vec<DecisionRecord>> {
        let e = self.entry(owner, model_id)?;
        let e = e.lock().map_err(|_| poisoned())?;
        let Some(log) = &e.decisions else {
            return Ok(Vec::new());
        };
        let mut hits: Vec<&DecisionRecord> = log
            .decisions()
            .filter(|r| q.since_ms.is_none_or(|t| r.time_ms >= t))
            .filter(|r| q.until_ms.is_none_or(|t| r.time_ms < t))
            .filter(|r| {
                q.before
                    .as_ref()
                    .is_none_or(|(t, id)| (r.time_ms, r.decision_id.as_str()) < (*t, id.as_str()))
            })
            .collect();
        hits.sort_by(|a, b| (b.time_ms, &b.decision_id).cmp(&(a.time_ms, &a.decision_id)));
        let lim = usize::try_from(q.limit).unwrap_or(usize::MAX);
        Ok(hits.into_iter().take(lim).cloned().collect())
    }
}
