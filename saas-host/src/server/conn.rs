//! One connection's activity, and the watchdog that closes connections a
//! client holds without using them.
//!
//! "Idle" means *no request in flight*, not "no bytes moved": a client that
//! trickles bytes (HTTP/2 pings, a request head that never ends) does not
//! extend any timer here. A request is in flight from the moment its head
//! reaches the service until its response body is dropped, so a long
//! response (an event stream) is never idle.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why the watchdog closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cut {
    /// No complete first request head (HTTP/2 preface included) within
    /// the header-read timeout of the accept.
    FirstRequestLate,
    /// No request in flight for the idle timeout.
    Idle,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// Since when nothing is in flight (the accept, then each last response).
    idle_since: Instant,
    /// Whether a request head ever reached the service.
    served: bool,
    /// When the first byte of the next request was read (set only while
    /// nothing is in flight).
    head_started: Option<Instant>,
}

/// What is in flight on one connection, shared by its reader, its service
/// and its watchdog.
#[derive(Debug)]
pub(super) struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

impl Activity {
    /// A connection accepted now.
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Activity {
            state: Mutex::new(State {
                in_flight: 0,
                idle_since: Instant::now(),
                served: false,
                head_started: None,
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_read(&self) {
        let mut s = self.lock();
        if s.in_flight == 0 && s.head_started.is_none() {
            s.head_started = Some(Instant::now());
        }
    }

    /// A request head reached the service. Returns when the request began
    /// (its first byte, for HTTP/1; now for an HTTP/2 stream, whose bytes
    /// interleave with other streams') and the guard that keeps it in flight.
    pub(super) fn begin(self: &Arc<Self>, http1: bool) -> (Instant, InFlight) {
        let now = Instant::now();
        let mut s = self.lock();
        s.in_flight += 1;
        s.served = true;
        let started = s.head_started.take().filter(|_| http1).unwrap_or(now);
        drop(s);
        self.changed.notify_one();
        (started, InFlight(self.clone()))
    }

    fn end(&self) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
            s.head_started = None;
        }
        drop(s);
        self.changed.notify_one();
    }

    /// Resolves when the connection must be closed: its first request head
    /// has not arrived within `first_request` of the accept, or nothing has
    /// been in flight for `idle`. Only one watchdog may wait per connection.
    pub(super) async fn watchdog(&self, first_request: Duration, idle: Duration) -> Cut {
        loop {
            let due = {
                let s = self.lock();
                if s.in_flight > 0 {
                    None
                } else if !s.served {
                    Some((
                        s.idle_since + first_request.min(idle),
                        Cut::FirstRequestLate,
                    ))
                } else {
                    Some((s.idle_since + idle, Cut::Idle))
                }
            };
            // A change between the check and the wait leaves a permit in
            // `changed`, so the wait below returns at once.
            match due {
                None => self.changed.notified().await,
                Some((at, cut)) if Instant::now() >= at => return cut,
                Some((at, _)) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = self.changed.notified() => {}
                },
            }
        }
    }
}

/// Keeps one request in flight until dropped (with its response body).
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A response body that keeps its request in flight until hyper drops it
/// (written out, or the connection gone).
#[derive(Debug)]
pub(super) struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, in_flight: InFlight) -> Self {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An IO stream that tells [`Activity`] when a request's first byte arrives
/// (the start of its whole-request deadline).
pub(super) struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    pub(super) fn new(inner: I, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(100);
    const IDLE: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_connection_without_a_request_is_cut_at_the_first_request_bound() {
        let a = Activity::new();
        let t0 = Instant::now();
        a.on_read();
        assert_eq!(a.watchdog(FIRST, IDLE).await, Cut::FirstRequestLate);
        let took = t0.elapsed();
        assert!(took >= FIRST && took < IDLE, "{took:?}");
    }

    #[tokio::test]
    async fn idle_counts_from_the_last_response_and_waits_while_in_flight() {
        let a = Activity::new();
        let (_, req) = a.begin(true);
        let dog = {
            let a = a.clone();
            tokio::spawn(async move { a.watchdog(FIRST, IDLE).await })
        };
        tokio::time::sleep(IDLE * 2).await;
        assert!(!dog.is_finished(), "cut while a request was in flight");
        let t1 = Instant::now();
        drop(req);
        // Bytes moving while idle do not extend it.
        tokio::time::sleep(IDLE / 2).await;
        a.on_read();
        assert_eq!(dog.await.unwrap(), Cut::Idle);
        let took = t1.elapsed();
        assert!(took >= IDLE && took < IDLE * 2, "{took:?}");
    }

    #[tokio::test]
    async fn an_http1_request_begins_at_its_first_byte() {
        let a = Activity::new();
        a.on_read();
        let first_byte = a.lock().head_started;
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.on_read();
        let (started, req) = a.begin(true);
        assert_eq!(Some(started), first_byte);
        drop(req);
        // An HTTP/2 stream begins when its head arrives.
        a.on_read();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = Instant::now();
        let (started, _req) = a.begin(false);
        assert!(started >= before);
    }
}
