//! [`Freer`]: the SQLite store's thread that frees the models the cache
//! evicts, so that freeing a large one costs neither the evicting call nor
//! the others waiting for the cache's lock.

#[cfg(test)]
use std::sync::{atomic::Ordering, Arc};

use super::cache::Cached;
use super::BACKEND;
use crate::error::{Error, Result};

/// An evicted model of at least this many bytes is freed on the store's
/// freeing thread ([`Freer`]); a smaller one where it was evicted.
pub(super) const FREE_ELSEWHERE_BYTES: usize = 1 << 20;

/// Evicted models waiting for the freeing thread, at most; past them a
/// model is freed where it was evicted (the queue keeps memory past the
/// budget).
const FREE_QUEUE: usize = 2;

/// The store's thread that frees evicted models. A model with a large
/// decision log is hundreds of thousands of allocations, tens of
/// milliseconds to free, which the evicting call (often an async worker,
/// serving every connection) spent on it, under the cache's lock every
/// other call needs: with another model's log of about 250,000 decisions
/// evicted, the worst request of a load took 52-102 ms, and 9-34 ms with
/// this thread (docs/benchmarks-http.md, session 21).
pub(super) struct Freer {
    tx: std::sync::mpsc::SyncSender<Box<Cached>>,
    /// Models freed on the thread.
    #[cfg(test)]
    freed: Arc<std::sync::atomic::AtomicU64>,
}

impl Freer {
    /// Starts the freeing thread; it ends when the store (its sender) is
    /// dropped.
    pub(super) fn start() -> Result<Freer> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Box<Cached>>(FREE_QUEUE);
        #[cfg(test)]
        let freed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        #[cfg(test)]
        let count = freed.clone();
        std::thread::Builder::new()
            .name("qlearn-sqlite-free".into())
            .spawn(move || {
                for c in rx {
                    drop(c);
                    #[cfg(test)]
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
            .map_err(|e| Error::storage(BACKEND, format!("cannot start a thread: {e}")))?;
        Ok(Freer {
            tx,
            #[cfg(test)]
            freed,
        })
    }

    /// Frees an evicted model: on the thread if it is large and the
    /// thread's queue has room, else here.
    pub(super) fn free(&self, c: Box<Cached>) {
        if c.memory_bytes() < FREE_ELSEWHERE_BYTES {
            return;
        }
        // A full queue or a stopped thread: `c` is freed here.
        let _ = self.tx.try_send(c);
    }

    /// How many models the thread has freed.
    #[cfg(test)]
    pub(super) fn freed(&self) -> u64 {
        self.freed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::sqlite::{SqliteOptions, SqliteStore};
    use crate::store::{Meter, Store};
    use crate::tenancy::TierLimits;
    use crate::{Experience, Model, ModelConfig, StateRef};

    #[test]
    fn a_large_evicted_model_is_freed_on_the_thread_and_a_small_one_where_it_was_evicted() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let options = SqliteOptions {
            cache_bytes: 64 << 10,
            ..SqliteOptions::default()
        };
        let s = SqliteStore::open_with(dir.path().join("free.db"), options).expect("a store");
        let now = 1_790_038_400;
        let u = crate::store::sqlite::test_user(&s, now);
        // 40,000 states of 4 actions: over a megabyte in memory.
        let mut large = Model::new(ModelConfig::new(4)).expect("a model");
        for i in 0..40_000 {
            let x = Experience::new(StateRef::Int(i), 1, 1.0, StateRef::Int(i + 1));
            large.update(&x).expect("an update");
        }
        let small = Model::new(ModelConfig::new(4)).expect("a model");
        let a = s.create_model(&u, "a", &large, None, now).expect("a").id;
        let b = s.create_model(&u, "b", &small, None, now).expect("b").id;
        let limits = TierLimits::UNLIMITED;
        let meter = Meter {
            user_id: &u,
            limits: &limits,
            now,
        };
        let predict = |id: &str| {
            s.predict(&meter, id, StateRef::Int(7), false, None)
                .expect("a predict")
        };
        let freed = || s.inner.freer.freed();
        let settled = |want: u64| {
            let waited = std::time::Instant::now();
            while freed() < want && waited.elapsed() < std::time::Duration::from_secs(5) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            freed()
        };
        // The cache holds one model at a time here: each use of the other
        // evicts the one held.
        let first = predict(&a);
        assert_eq!(first.action, 1);
        predict(&b);
        let base = settled(1);
        assert!(base >= 1, "a, evicted, freed on the thread");
        // Using a evicts b, which is small: freed where it was evicted.
        assert_eq!(predict(&a).q_values, first.q_values, "a reloaded whole");
        assert_eq!(settled(base), base);
        // Using b evicts a again: freed on the thread.
        predict(&b);
        assert_eq!(settled(base + 1), base + 1);
    }
}
