//! The process's count of pending commits (`store::commits_in_flight`) and
//! the future that waits for it to leave zero (`store::commit_in_flight`):
//! what saas-host's busy poller reads. Its own test binary, one test: the
//! count is process-wide, so no other test may make `Durable`s meanwhile.
#![cfg(feature = "tenancy")]

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use qlearn_core::store::{commit_in_flight, commits_in_flight, Durable};

/// Counts its wake-ups.
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A commit that resolves once `done` is set.
fn commit(done: Arc<AtomicBool>) -> impl Future<Output = qlearn_core::Result<()>> + Send {
    std::future::poll_fn(move |_| {
        if done.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
}

#[test]
fn pending_commits_are_counted_until_they_resolve_or_are_dropped() {
    assert_eq!(commits_in_flight(), 0);
    let woken = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(woken.clone());
    let mut cx = Context::from_waker(&waker);

    // Nothing in flight: the watcher waits, polled twice by the same task.
    let mut watch = pin!(commit_in_flight());
    assert!(watch.as_mut().poll(&mut cx).is_pending());
    assert!(watch.as_mut().poll(&mut cx).is_pending());

    // A call durable already is not in flight.
    let mut ready = pin!(Durable::ready());
    assert_eq!(format!("{ready:?}"), "Durable(ready)");
    assert_eq!(commits_in_flight(), 0);
    assert!(matches!(ready.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(woken.0.load(Ordering::SeqCst), 0);

    // The first pending commit wakes the watcher, once (it registered once).
    let first_done = Arc::new(AtomicBool::new(false));
    let first = Durable::new(commit(first_done.clone()));
    assert_eq!(format!("{first:?}"), "Durable(pending)");
    assert_eq!(commits_in_flight(), 1);
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    assert!(watch.as_mut().poll(&mut cx).is_ready());

    // A second does not wake anyone again.
    let second_done = Arc::new(AtomicBool::new(false));
    let mut second = Box::pin(Durable::new(commit(second_done.clone())));
    assert_eq!(commits_in_flight(), 2);
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);

    // A pending call given up no longer counts.
    drop(first);
    assert_eq!(commits_in_flight(), 1);

    // Still pending when polled; resolved, it leaves the count; dropped
    // after resolving, it does not leave it twice.
    assert!(second.as_mut().poll(&mut cx).is_pending());
    assert_eq!(commits_in_flight(), 1);
    second_done.store(true, Ordering::SeqCst);
    assert!(matches!(second.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(commits_in_flight(), 0);
    assert!(matches!(second.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
    drop(second);
    assert_eq!(commits_in_flight(), 0);

    // Back at zero, a new watcher waits again and the next commit wakes it.
    let mut again = pin!(commit_in_flight());
    assert!(again.as_mut().poll(&mut cx).is_pending());
    let third = Durable::new(commit(Arc::new(AtomicBool::new(false))));
    assert_eq!(woken.0.load(Ordering::SeqCst), 2);
    assert!(again.as_mut().poll(&mut cx).is_ready());
    drop(third);
    assert_eq!(commits_in_flight(), 0);
    let _ = first_done;
}
