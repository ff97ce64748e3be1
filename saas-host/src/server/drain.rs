//! Graceful shutdown of the open connections ([`Drain`]): when the server
//! stops, each connection is asked to finish its request in flight and
//! close, and the server waits until all have.
//!
//! Why not hyper-util's `GracefulShutdown`: it wraps each connection in a
//! future that polls a `tokio::sync::watch` receiver at every poll of the
//! connection, and that takes the channel's one mutex, shared by every
//! connection: a lock per request, and on more than one worker a cache
//! line that moves between cores each time (measured in
//! docs/benchmarks-http.md). Here a poll reads one flag that only changes
//! at shutdown and keeps the task's waker in the connection's own slot;
//! the shared registry is touched when a connection opens and closes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use hyper_util::server::graceful::GracefulConnection;
use qlearn_core::FastMap;
use tokio::sync::Notify;

/// The open connections, and whether the server is draining them.
#[derive(Default)]
pub(super) struct Drain {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Set once, when shutdown begins.
    draining: AtomicBool,
    /// Each open connection's wake-up slot, by its number.
    conns: Mutex<FastMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
    /// Connections still open (their futures not yet dropped).
    open: AtomicUsize,
    /// Notified when the last open connection closes.
    closed: Notify,
}

/// Where a connection's task leaves its waker for the shutdown to wake.
#[derive(Default)]
struct Slot {
    waker: Mutex<Option<Waker>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drain {
    /// A connection to drain at shutdown: `conn`, asked to shut down
    /// gracefully once [`Drain::shutdown`] starts (at once if it already has).
    pub(super) fn watch<C: GracefulConnection>(&self, conn: C) -> Drained<C> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        self.shared.open.fetch_add(1, Ordering::SeqCst);
        lock(&self.shared.conns).insert(id, slot.clone());
        Drained {
            conn: Box::pin(conn),
            shared: self.shared.clone(),
            slot,
            id,
            asked: false,
        }
    }

    /// Asks every open connection to finish and close, then resolves once
    /// all are closed (connections opened afterwards are asked at once).
    pub(super) async fn shutdown(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        let slots: Vec<Arc<Slot>> = lock(&self.shared.conns).values().cloned().collect();
        for s in slots {
            if let Some(w) = lock(&s.waker).take() {
                w.wake();
            }
        }
        loop {
            let closed = self.shared.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.shared.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            closed.await;
        }
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

/// A connection that shuts down gracefully when its [`Drain`] does.
pub(super) struct Drained<C> {
    conn: Pin<Box<C>>,
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    id: u64,
    /// Whether the connection was asked to shut down.
    asked: bool,
}

impl<C: GracefulConnection> Future for Drained<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        if !this.asked {
            // The waker first, then the flag: a shutdown that sets the flag
            // after this read wakes the waker left here.
            {
                let mut w = lock(&this.slot.waker);
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
            }
            if this.shared.draining.load(Ordering::SeqCst) {
                this.asked = true;
                this.conn.as_mut().graceful_shutdown();
            }
        }
        this.conn.as_mut().poll(cx)
    }
}

impl<C> Drop for Drained<C> {
    fn drop(&mut self) {
        lock(&self.shared.conns).remove(&self.id);
        if self.shared.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::oneshot;

    use super::*;

    /// An HTTP/1 connection on one end of an in-memory pipe, watched by
    /// `drain` and run on its own task; its one request's answer waits for
    /// `release`. Returns the client's end and the task.
    fn serve(
        drain: &Drain,
        release: oneshot::Receiver<()>,
    ) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(4096);
        let release = Mutex::new(Some(release));
        let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
            let wait = lock(&release).take();
            async move {
                if let Some(w) = wait {
                    let _ = w.await;
                }
                Ok::<_, Infallible>(Response::new(String::from("done")))
            }
        });
        let conn = drain.watch(http1::Builder::new().serve_connection(TokioIo::new(server), svc));
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        (client, task)
    }

    async fn read_all(mut client: DuplexStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish_then_closes() {
        let drain = Arc::new(Drain::default());
        let (release, wait) = oneshot::channel();
        let (mut client, task) = serve(&drain, wait);
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(drain.open(), 1);
        let d = drain.clone();
        let shutdown = tokio::spawn(async move { d.shutdown().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!shutdown.is_finished(), "a request is still in flight");
        release.send(()).unwrap();
        // The answer arrives, then the connection closes (no keep-alive).
        let text = read_all(client).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("done"), "{text}");
        tokio::time::timeout(Duration::from_secs(5), shutdown)
            .await
            .expect("shutdown ends once the connection closed")
            .unwrap();
        task.await.unwrap();
        assert_eq!(drain.open(), 0);
    }

    #[tokio::test]
    async fn idle_connections_close_and_late_ones_are_asked_at_once() {
        let drain = Arc::new(Drain::default());
        // Nothing open: done at once.
        tokio::time::timeout(Duration::from_secs(5), drain.shutdown())
            .await
            .expect("nothing to wait for");
        let (_tx, wait) = oneshot::channel();
        let (client, task) = serve(&drain, wait);
        // Watched after the shutdown began: it closes without a request.
        assert_eq!(read_all(client).await, "");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the late connection closes")
            .unwrap();
        assert_eq!(drain.open(), 0);
        // An idle keep-alive connection open when the shutdown starts.
        let drain = Arc::new(Drain::default());
        let (_tx, wait) = oneshot::channel();
        let (client, task) = serve(&drain, wait);
        tokio::time::sleep(Duration::from_millis(20)).await;
        tokio::time::timeout(Duration::from_secs(5), drain.shutdown())
            .await
            .expect("the idle connection closes");
        assert_eq!(read_all(client).await, "");
        task.await.unwrap();
    }
}
