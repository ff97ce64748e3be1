//! Worker pinning (`--pin-workers`): each async worker thread of the tokio
//! runtime bound to one CPU of the process's allowed set, every other thread
//! left free.
//!
//! Why: on a small machine the kernel places a thread woken by another on
//! the waker's CPU when it can, so the server's threads (the workers and the
//! SQLite writer wake each other on every group commit) pile onto one CPU
//! while the other idles. Measured on 2 cores (docs/benchmarks-http.md).
//! Off by default: pinning is for a machine (or a container's CPU set) given
//! to one instance; the kernel can no longer move a pinned worker away from
//! a CPU that other work keeps busy.
//!
//! How: tokio calls `on_thread_park` only on its worker threads, so a worker
//! pins itself the first time it parks (at start-up, before any request).
//! A thread inherits the affinity of the thread that creates it, so every
//! thread the runtime starts (`on_thread_start`: the blocking pool, often
//! started from a worker) first resets itself to the whole allowed set.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// The CPUs the process was allowed when pinning was installed; set only
/// when workers are pinned.
static ALLOWED: OnceLock<Vec<usize>> = OnceLock::new();

/// Lets the calling thread run on every CPU the process was allowed, when
/// workers are pinned (a no-op otherwise). For threads the server starts
/// itself, possibly from a worker, whose CPU they would inherit (the
/// password-hashing pool, evaluation workers).
pub fn release_current_thread() {
    if let Some(cpus) = ALLOWED.get() {
        if !cpus.is_empty() {
            let _ = sched_setaffinity(None, &set_of(cpus));
        }
    }
}

thread_local! {
    /// Whether this thread has already been through [`WorkerPinner::on_worker_park`].
    static SEEN: Cell<bool> = const { Cell::new(false) };
}

/// The CPUs this process may run on, in order (empty if they cannot be read).
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => Vec::new(),
    }
}

/// The CPU the `nth` worker to park is pinned to: the `nth` allowed CPU,
/// round robin when there are more workers than CPUs.
pub fn cpu_for(nth: usize, cpus: &[usize]) -> Option<usize> {
    (!cpus.is_empty()).then(|| cpus[nth % cpus.len()])
}

fn set_of(cpus: &[usize]) -> CpuSet {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    set
}

/// Sets `rt` up to pin its workers (see the module doc): `workers` of them
/// (default: one per allowed CPU). Returns the pinner, for its counts.
pub fn install(rt: &mut tokio::runtime::Builder, workers: Option<usize>) -> Arc<WorkerPinner> {
    let cpus = allowed_cpus();
    let _ = ALLOWED.set(cpus.clone());
    rt.worker_threads(workers.unwrap_or(cpus.len()).max(1));
    let pinner = Arc::new(WorkerPinner::new(cpus));
    let (start, park) = (pinner.clone(), pinner.clone());
    rt.on_thread_start(move || start.on_thread_start())
        .on_thread_park(move || park.on_worker_park());
    pinner
}

/// Pins the runtime's worker threads, one CPU each (see the module doc).
#[derive(Debug)]
pub struct WorkerPinner {
    cpus: Vec<usize>,
    next: AtomicUsize,
    failed: AtomicUsize,
}

impl WorkerPinner {
    /// A pinner over `cpus` (normally [`allowed_cpus`]).
    pub fn new(cpus: Vec<usize>) -> Self {
        Self {
            cpus,
            next: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    /// For `on_thread_start`: the new thread may run on every allowed CPU,
    /// whatever the affinity of the thread that created it.
    pub fn on_thread_start(&self) {
        if !self.cpus.is_empty() && sched_setaffinity(None, &set_of(&self.cpus)).is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// For `on_thread_park` (worker threads only): pins the calling worker
    /// to the next CPU the first time it parks; later parks cost a
    /// thread-local read.
    pub fn on_worker_park(&self) {
        if SEEN.with(|s| s.replace(true)) {
            return;
        }
        let nth = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(cpu) = cpu_for(nth, &self.cpus) {
            if sched_setaffinity(None, &set_of(&[cpu])).is_err() {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// How many workers have been pinned so far.
    pub fn pinned(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }

    /// How many times the kernel refused an affinity change.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_get_the_allowed_cpus_in_order_round_robin() {
        let cpus = [2, 5];
        assert_eq!(cpu_for(0, &cpus), Some(2));
        assert_eq!(cpu_for(1, &cpus), Some(5));
        assert_eq!(cpu_for(2, &cpus), Some(2), "round robin past the CPUs");
        assert_eq!(cpu_for(0, &[]), None);
    }

    /// Runs `f` on a new thread and returns the CPUs that thread may use.
    fn on_thread(f: impl FnOnce() + Send + 'static) -> Vec<usize> {
        std::thread::spawn(move || {
            f();
            allowed_cpus()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn a_worker_is_pinned_once_and_a_started_thread_gets_every_cpu_back() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        let last = *cpus.last().unwrap_or(&0);
        let p = Arc::new(WorkerPinner::new(cpus.clone()));
        let q = p.clone();
        let (first, worker) = std::thread::spawn(move || {
            // The first park pins to the first CPU; a second changes nothing.
            q.on_worker_park();
            let first = allowed_cpus();
            let _ = sched_setaffinity(None, &set_of(&[last]));
            q.on_worker_park();
            (first, allowed_cpus())
        })
        .join()
        .unwrap();
        assert_eq!(first, vec![cpus[0]]);
        assert_eq!(worker, vec![last]);
        assert_eq!(p.pinned(), 1);
        let q = p.clone();
        let worker = on_thread(move || q.on_worker_park());
        assert_eq!(
            worker,
            vec![cpus[1 % cpus.len()]],
            "the next worker, the next CPU"
        );
        assert_eq!(p.pinned(), 2);
        // A thread created by a pinned one inherits its CPU; started as a
        // runtime thread it may use every allowed CPU again.
        let q = p.clone();
        let started = on_thread(move || {
            let _ = sched_setaffinity(None, &set_of(&[last]));
            q.on_thread_start();
        });
        assert_eq!(started, cpus);
        assert_eq!(p.failed(), 0);
    }

    #[test]
    fn a_refused_pin_is_counted_and_changes_nothing() {
        let cpus = allowed_cpus();
        // A CPU no machine here has: the kernel refuses it.
        let p = Arc::new(WorkerPinner::new(vec![CpuSet::MAX_CPU - 1]));
        let q = p.clone();
        let worker = on_thread(move || q.on_worker_park());
        assert_eq!(worker, cpus);
        assert_eq!(p.failed(), 1);
        let q = p.clone();
        assert_eq!(on_thread(move || q.on_thread_start()), cpus);
        assert_eq!(p.failed(), 2);
    }
}
