//! Worker pinning (`--pin-workers`): each async worker thread of the tokio
//! runtime bound to one CPU of the process's allowed set.
//!
//! Why: on a small machine the kernel places a thread woken by another on
//! the waker's CPU when it can, so the server's threads (the workers and the
//! SQLite writer wake each other on every group commit) pile onto one CPU
//! while the other idles. Measured on 2 cores (docs/benchmarks-http.md):
//! the machine was idle 17-21% of a run unpinned, 12-14% pinned, and served
//! about a tenth more requests. Off by default: pinning is for a machine (or
//! a container's CPU set) given to one instance; two pinned instances on the
//! same CPUs could not be moved apart by the kernel.
//!
//! tokio starts its workers first, one thread each, when the runtime is
//! built, and runs the `on_thread_start` hook on every thread it starts
//! (workers, then blocking-pool threads on demand): [`WorkerPinner`] pins
//! the first `workers` threads it sees and leaves every later one free.

use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// The CPUs this process may run on, in order (empty if they cannot be read).
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => Vec::new(),
    }
}

/// The CPU the `nth` thread started by the runtime is pinned to: worker `n`
/// gets the `n`-th allowed CPU (round robin when there are more workers
/// than CPUs); threads past the workers (the blocking pool) get none.
pub fn cpu_for(nth: usize, workers: usize, cpus: &[usize]) -> Option<usize> {
    if nth >= workers || cpus.is_empty() {
        return None;
    }
    Some(cpus[nth % cpus.len()])
}

/// Pins the runtime's worker threads as they start (see the module doc).
#[derive(Debug)]
pub struct WorkerPinner {
    workers: usize,
    cpus: Vec<usize>,
    started: AtomicUsize,
    failed: AtomicUsize,
}

impl WorkerPinner {
    /// A pinner for `workers` worker threads over `cpus`.
    pub fn new(workers: usize, cpus: Vec<usize>) -> Self {
        Self {
            workers,
            cpus,
            started: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    /// Called on each thread the runtime starts (`on_thread_start`): pins
    /// the calling thread if it is one of the workers.
    pub fn on_thread_start(&self) {
        let nth = self.started.fetch_add(1, Ordering::Relaxed);
        if let Some(cpu) = cpu_for(nth, self.workers, &self.cpus) {
            let mut set = CpuSet::new();
            set.set(cpu);
            if sched_setaffinity(None, &set).is_err() {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The CPUs the workers were pinned to, in worker order.
    pub fn pinned(&self) -> Vec<usize> {
        let started = self.started.load(Ordering::Relaxed).min(self.workers);
        (0..started)
            .filter_map(|n| cpu_for(n, self.workers, &self.cpus))
            .collect()
    }

    /// How many workers could not be pinned (the kernel refused).
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_get_the_allowed_cpus_in_order_and_later_threads_none() {
        let cpus = [2, 5];
        assert_eq!(cpu_for(0, 2, &cpus), Some(2));
        assert_eq!(cpu_for(1, 2, &cpus), Some(5));
        assert_eq!(cpu_for(2, 2, &cpus), None, "a blocking-pool thread");
        assert_eq!(cpu_for(2, 3, &cpus), Some(2), "round robin past the CPUs");
        assert_eq!(cpu_for(0, 2, &[]), None);
    }

    #[test]
    fn the_first_threads_are_pinned_to_one_cpu_each() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        let last = *cpus.last().unwrap_or(&0);
        let pinner = std::sync::Arc::new(WorkerPinner::new(1, vec![last]));
        let affinity = |p: std::sync::Arc<WorkerPinner>| {
            std::thread::spawn(move || {
                p.on_thread_start();
                allowed_cpus()
            })
            .join()
            .unwrap()
        };
        assert_eq!(affinity(pinner.clone()), vec![last], "the worker");
        assert_eq!(affinity(pinner.clone()), cpus, "a later thread stays free");
        assert_eq!(pinner.pinned(), vec![last]);
        assert_eq!(pinner.failed(), 0);
    }
}
