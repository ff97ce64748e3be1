//! A small dedicated thread pool for argon2id (20 to 50 ms of CPU per call),
//! so password hashing never occupies the blocking threads that serve
//! storage calls on the hot path. Jobs queue when every hasher is busy.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};

use qlearn_core::{Error, Result};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Threads hashing at once (each argon2id call uses 19 MiB).
const HASHERS: usize = 2;
/// Jobs waiting before callers are told the server is busy.
const QUEUE: usize = 256;

fn pool() -> &'static SyncSender<Job> {
    static POOL: OnceLock<SyncSender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..HASHERS {
            let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("qlearn-hash-{i}"))
                .spawn(move || {
                    // Started by whichever thread hashes first, often a worker.
                    crate::pinning::release_current_thread();
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        tx
    })
}

/// Runs `f` (password hashing or verification) on the hashing pool.
pub async fn hashing<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    pool().try_send(job).map_err(|_| Error::Storage {
        backend: "hashing",
        message: "too many password operations queued".into(),
    })?;
    rx.await
        .map_err(|_| Error::Internal("the password hashing thread stopped".into()))
}
