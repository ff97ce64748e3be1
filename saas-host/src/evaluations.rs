//! The workers that run offline evaluation jobs (issue 18): `N` OS threads
//! per instance (`--evaluation-workers`, default 1; 0 runs none), never
//! the async runtime's. Each claims a queued job from the store (the
//! oldest of the owner with the fewest jobs running: fair between tenants)
//! with a lease (any instance; a job whose instance died is claimed again
//! once its lease expired), reads the model's decision log in keyset pages
//! through the store's read path, writes its progress after each page
//! (which renews the lease and tells it whether the job was cancelled),
//! evaluates every requested policy with [`JobRun`] (all of it the core's)
//! and writes the result. At shutdown a running job is given back to the
//! queue at its next page or policy, and the threads are joined.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use qlearn_core::evaluation::{JobError, JobRun};
use qlearn_core::store::{Claimed, DecisionKeyset, DecisionQuery, JobEnd, Store};
use qlearn_core::tenancy::Limits;
use qlearn_core::{Error, Result};

use crate::now_unix;

/// Decisions per page read from the log.
pub const PAGE: usize = 5_000;
/// A lease's length: a job whose holder wrote no progress for this long is
/// claimed again by another worker.
pub const LEASE_SECS: i64 = 300;
/// How long an idle worker waits before looking for jobs queued on other
/// instances (a job queued on this one wakes it at once).
pub const POLL: Duration = Duration::from_secs(2);

/// Wakes idle workers (a job was queued on this instance).
#[derive(Default)]
pub struct Wake {
    queued: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    /// Wakes one idle worker.
    pub fn notify(&self) {
        *self.queued.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Waits until notified or `timeout` passed.
    fn wait(&self, timeout: Duration) {
        let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        if !*q {
            q = self
                .cv
                .wait_timeout(q, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *q = false;
    }
}

/// This instance's running workers.
pub struct Workers {
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers on `store`, the plans in `limits` giving each
    /// job's cap (`evaluation_max_decisions` of its owner's plan).
    pub fn start(store: Arc<dyn Store>, limits: Limits, wake: Arc<Wake>, n: usize) -> Workers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .filter_map(|i| {
                let w = Worker {
                    store: store.clone(),
                    limits,
                    stop: stop.clone(),
                };
                let wake = wake.clone();
                std::thread::Builder::new()
                    .name(format!("qlearn-evaluation-{i}"))
                    .spawn(move || {
                        crate::pinning::release_current_thread();
                        w.run(&wake)
                    })
                    .map_err(|e| tracing::warn!(error = %e, "cannot start an evaluation worker"))
                    .ok()
            })
            .collect();
        Workers {
            stop,
            wake,
            threads,
        }
    }

    /// Stops the workers (a running job goes back to the queue) and waits
    /// for them. Blocks: call it on a blocking thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify();
        for t in self.threads {
            if t.join().is_err() {
                tracing::warn!("an evaluation worker panicked");
            }
        }
    }
}

struct Worker {
    store: Arc<dyn Store>,
    limits: Limits,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn run(&self, wake: &Wake) {
        while !self.stopping() {
            match self.store.claim_evaluation(LEASE_SECS, now_unix()) {
                Ok(Some(c)) => self.job(c),
                Ok(None) => wake.wait(POLL),
                Err(e) => {
                    tracing::warn!(error = %e, "claiming an evaluation failed");
                    wake.wait(POLL);
                }
            }
        }
    }

    /// Runs one claimed job to its end (or gives it back at shutdown).
    fn job(&self, c: Claimed) {
        let (id, token) = (c.job.id.clone(), c.token.clone());
        tracing::info!(evaluation = %id, model = %c.job.model_id, "evaluation started");
        let end = match self.compute(&c) {
            Ok(Some(end)) => end,
            Ok(None) => {
                tracing::info!(evaluation = %id, "evaluation cancelled (or its model deleted)");
                return;
            }
            Err(e) => {
                if matches!(e, Error::Storage { .. } | Error::Internal(_)) {
                    tracing::warn!(evaluation = %id, error = %e, "evaluation failed");
                }
                JobEnd::Failed(JobError::of(&e))
            }
        };
        let released = end == JobEnd::Released;
        match self.store.finish_evaluation(&id, &token, end, now_unix()) {
            Ok(true) if released => {
                tracing::info!(evaluation = %id, "evaluation given back at shutdown")
            }
            Ok(true) => tracing::info!(evaluation = %id, "evaluation finished"),
            Ok(false) => {
                tracing::info!(evaluation = %id, "evaluation no longer ours (cancelled, or its model deleted)")
            }
            Err(e) => {
                tracing::warn!(evaluation = %id, error = %e, "writing an evaluation's end failed")
            }
        }
    }

    /// The job's end: `None` when it was cancelled (nothing to write).
    fn compute(&self, c: &Claimed) -> Result<Option<JobEnd>> {
        let job = &c.job;
        let (owner, model_id) = (job.owner.as_str(), job.model_id.as_str());
        let user = self.store.user(owner)?.ok_or(Error::NotFound("user"))?;
        let cap = self.limits.for_tier(user.tier).evaluation_max_decisions;
        let model = self.store.export_model(owner, model_id)?;
        let (since_ms, until_ms) = (job.request.since, job.request.until);
        let count = DecisionQuery {
            since_ms,
            until_ms,
            limit: 0,
            ..DecisionQuery::default()
        };
        let total = self
            .store
            .decisions(owner, model_id, &count)?
            .total
            .ok_or(Error::Internal(
                "a counted listing came back uncounted".into(),
            ))?
            .min(cap);
        let progress = |read: u64| {
            self.store
                .evaluation_progress(&job.id, &c.token, read, total, LEASE_SECS, now_unix())
        };
        if !progress(0)? {
            return Ok(None);
        }
        let mut run = JobRun::new(job.request.clone(), cap);
        let mut q = DecisionKeyset {
            since_ms,
            until_ms,
            before: None,
            limit: PAGE as u64,
        };
        loop {
            if self.stopping() {
                return Ok(Some(JobEnd::Released));
            }
            let page = self.store.decisions_keyset(owner, model_id, &q)?;
            let more = run.add_page(&page, PAGE)?;
            q.before = page.last().map(|d| (d.time_ms, d.decision_id.clone()));
            if !progress(run.read())? {
                return Ok(None);
            }
            if !more {
                break;
            }
        }
        let read = run.read();
        let mut ours = true;
        let result = run.finish(&model, || {
            ours = !self.stopping() && progress(read).unwrap_or(true);
            ours
        })?;
        match result {
            Some(r) => {
                let v = serde_json::to_value(&r)
                    .map_err(|e| Error::Internal(format!("evaluation result to JSON: {e}")))?;
                Ok(Some(JobEnd::Done(v)))
            }
            None if self.stopping() => Ok(Some(JobEnd::Released)),
            None => Ok(None),
        }
    }
}
