//! [`Durable`]: the future of a store call's durability, for callers on an
//! async runtime that must not park a thread while a commit happens; and the
//! process's count of those still pending ([`commits_in_flight`]), which a
//! runtime may poll instead of sleeping while commits it waits for run
//! (saas-host's `--busy-poll-us`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::error::Result;

/// Pending [`Durable`]s in this process (made by [`Durable::new`], not yet
/// resolved or dropped).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// The tasks waiting in [`commit_in_flight`] for the count to leave zero:
/// one waker per waiting task (a task polled again replaces its own).
static WATCHERS: Mutex<Vec<Waker>> = Mutex::new(Vec::new());

/// How many store calls in this process wait for their commit through a
/// [`Durable`] right now. While it is above zero a commit will soon wake
/// tasks: an idle async worker can poll for them instead of sleeping and
/// being woken from another thread (an expensive hand-off on small virtual
/// machines; docs/benchmarks-http.md, issue 16).
pub fn commits_in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Acquire)
}

/// Resolves once [`commits_in_flight`] is above zero: what a busy poller
/// awaits when there is nothing to poll for, so it sleeps instead of
/// spinning while the server is idle.
pub fn commit_in_flight() -> impl Future<Output = ()> {
    std::future::poll_fn(|cx| {
        // Registered before the look, so a `Durable` made in between wakes
        // this task (a waker left behind after `Ready` only costs a
        // spurious wake-up at the next commit).
        {
            let mut w = WATCHERS.lock().unwrap_or_else(PoisonError::into_inner);
            match w.iter_mut().find(|old| old.will_wake(cx.waker())) {
                Some(old) => old.clone_from(cx.waker()),
                None => w.push(cx.waker().clone()),
            }
        }
        if commits_in_flight() > 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// Counts one more pending commit; wakes the watchers when it is the first.
fn enter() {
    if IN_FLIGHT.fetch_add(1, Ordering::AcqRel) == 0 {
        let woken = std::mem::take(&mut *WATCHERS.lock().unwrap_or_else(PoisonError::into_inner));
        for w in woken {
            w.wake();
        }
    }
}

/// Counts one pending commit less (resolved, or dropped pending).
fn leave() {
    IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
}

/// Resolves once the store call that returned it is durable (or with the
/// error that stopped the store). Until it resolves `Ok`, the call's answer
/// must not be given to anyone: acknowledged means durable.
///
/// Returned by the non-blocking calls of [`Store`](super::Store)
/// ([`Store::decide_nonblocking`](super::Store::decide_nonblocking),
/// [`Store::update_nonblocking`](super::Store::update_nonblocking)). Needs
/// no particular runtime: whoever completes the commit wakes the task. A
/// poll may run the commit itself (the SQLite store's first waiting task
/// leads the group commit of the jobs queued with it), so it blocks for
/// about a commit's time at most: poll it where that is acceptable (an
/// async worker, a thread), not under a lock another call needs.
#[must_use = "the call is not durable until this resolves"]
pub struct Durable(Option<Pin<Box<dyn Future<Output = Result<()>> + Send>>>);

impl Durable {
    /// A call that is durable already.
    pub fn ready() -> Self {
        Durable(None)
    }

    /// A call that is durable when `commit` resolves `Ok`.
    pub fn new(commit: impl Future<Output = Result<()>> + Send + 'static) -> Self {
        enter();
        Durable(Some(Box::pin(commit)))
    }
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Durable(pending)"
        } else {
            "Durable(ready)"
        })
    }
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match self.0.as_mut() {
            None => Poll::Ready(Ok(())),
            Some(f) => {
                let r = f.as_mut().poll(cx);
                if r.is_ready() {
                    self.0 = None;
                    leave();
                }
                r
            }
        }
    }
}

impl Drop for Durable {
    /// A pending call given up (its task dropped) no longer counts.
    fn drop(&mut self) {
        if self.0.is_some() {
            leave();
        }
    }
}
