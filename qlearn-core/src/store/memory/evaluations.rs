//! Evaluation jobs of the [`MemoryStore`]: one mutex over every job, so
//! the limits are checked atomically with the insert (and the job counted
//! in its owner's usage, under the same mutex) and a job is claimed
//! once. The decision log's keyset pages are read from the model's log.
//! A deleted job is only a tombstone (its owner and creation time), so its
//! payload is gone at once ([`crate::store::eval_retention`]).

use std::collections::HashMap;

use super::{poisoned, MemoryStore};
use crate::decisions::DecisionRecord;
use crate::error::{Error, Result};
use crate::evaluation::EvalRequest;
use crate::store::{
    check_limits, day_of, Claimed, DecisionKeyset, EvalFootprint, EvalJob, EvalLimits, Evaluations,
    JobEnd, JobStatus,
};

/// A job with its place in the creation order and its lease.
#[derive(Debug)]
struct Slot {
    seq: u64,
    job: EvalJob,
    lease: Option<(String, i64)>,
}

/// A deleted job: what still counts in its day's limit.
#[derive(Debug)]
struct Tombstone {
    owner: String,
    created_at: i64,
}

/// Every job, in creation order, and the tombstones of deleted ones.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    next: u64,
    slots: Vec<Slot>,
    tombstones: Vec<Tombstone>,
}

impl Jobs {
    fn position(&self, owner: &str, model_id: &str, id: &str) -> Result<usize> {
        self.slots
            .iter()
            .position(|s| s.job.id == id && s.job.owner == owner && s.job.model_id == model_id)
            .ok_or(Error::NotFound("evaluation"))
    }

    fn find(&mut self, owner: &str, model_id: &str, id: &str) -> Result<&mut Slot> {
        let at = self.position(owner, model_id, id)?;
        Ok(&mut self.slots[at])
    }

    /// Removes the job at `at`, leaving its tombstone.
    fn bury(&mut self, at: usize) {
        let job = self.slots.remove(at).job;
        self.tombstones.push(Tombstone {
            owner: job.owner,
            created_at: job.created_at,
        });
    }

    /// Turns every job of `owner`'s model `model_id` into a tombstone
    /// (the model is being deleted; [`MemoryStore::delete_model`] holds
    /// this mutex across the model's removal).
    pub(super) fn bury_model(&mut self, owner: &str, model_id: &str) {
        while let Some(at) = self
            .slots
            .iter()
            .position(|s| s.job.owner == owner && s.job.model_id == model_id)
        {
            self.bury(at);
        }
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
        // The model is looked up under the jobs' mutex, which its deletion
        // holds too: no job is created for a model being deleted.
        let mut jobs = self.jobs()?;
        self.entry(owner, model_id)?;
        let (day, _) = day_of(now);
        let mine = || jobs.slots.iter().filter(|s| s.job.owner == owner);
        let buried = jobs
            .tombstones
            .iter()
            .filter(|t| t.owner == owner && t.created_at >= day)
            .count();
        let today = (mine().filter(|s| s.job.created_at >= day).count() + buried) as u64;
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
            .filter(|s| s.seq < below && s.job.owner == owner && s.job.model_id == model_id)
            .take(limit as usize)
            .map(|s| s.job.clone())
            .collect())
    }

    fn cancel_evaluation(&self, owner: &str, model_id: &str, id: &str, now: i64) -> Result<()> {
        let mut jobs = self.jobs()?;
        let at = jobs.position(owner, model_id, id)?;
        let slot = &mut jobs.slots[at];
        if slot.job.status.active() {
            slot.job.status = JobStatus::Cancelled;
            slot.job.finished_at = Some(now);
            slot.lease = None;
        } else {
            jobs.bury(at);
        }
        Ok(())
    }

    fn claim_evaluation(&self, lease_secs: i64, now: i64) -> Result<Option<Claimed>> {
        let mut jobs = self.jobs()?;
        let live = |s: &Slot| s.lease.as_ref().is_some_and(|(_, until)| *until >= now);
        let mut running: HashMap<&str, usize> = HashMap::new();
        for s in &jobs.slots {
            if s.job.status == JobStatus::Running && live(s) {
                *running.entry(s.job.owner.as_str()).or_default() += 1;
            }
        }
        // The owner with the fewest jobs running first, then the oldest.
        let at = jobs
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| match s.job.status {
                JobStatus::Queued => true,
                JobStatus::Running => !live(s),
                _ => false,
            })
            .min_by_key(|(at, s)| (running.get(s.job.owner.as_str()).copied().unwrap_or(0), *at))
            .map(|(at, _)| at);
        let Some(at) = at else {
            return Ok(None);
        };
        let slot = &mut jobs.slots[at];
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

    fn prune_evaluations(&self, keep: u32, now: i64) -> Result<usize> {
        let mut jobs = self.jobs()?;
        let (day, _) = day_of(now);
        let before = jobs.slots.len() + jobs.tombstones.len();
        jobs.tombstones.retain(|t| t.created_at >= day);
        // Newest first: each model's finished jobs after its `keep`th go.
        let mut finished: std::collections::HashMap<(String, String), u32> = Default::default();
        let mut kept: Vec<bool> = jobs
            .slots
            .iter()
            .rev()
            .map(|s| {
                if !s.job.status.finished() {
                    return true;
                }
                let n = finished
                    .entry((s.job.owner.clone(), s.job.model_id.clone()))
                    .or_default();
                *n += 1;
                *n <= keep
            })
            .collect();
        kept.reverse();
        let mut keeps = kept.into_iter();
        jobs.slots.retain(|_| keeps.next().unwrap_or(true));
        Ok(before - jobs.slots.len() - jobs.tombstones.len())
    }

    fn evaluation_footprint(&self, owner: &str) -> Result<EvalFootprint> {
        let jobs = self.jobs()?;
        let live = jobs.slots.iter().filter(|s| s.job.owner == owner).count() as u64;
        let deleted = jobs.tombstones.iter().filter(|t| t.owner == owner).count() as u64;
        Ok(EvalFootprint {
            rows: live + deleted,
            deleted,
            with_payload: live,
        })
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
