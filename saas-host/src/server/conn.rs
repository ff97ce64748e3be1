//! One connection's activity, and the watchdog that closes connections a
//! client holds without using them.
//!
//! "Idle" means *no request in flight*, not "no bytes moved": a client that
//! trickles bytes (HTTP/2 pings, a request head that never ends) does not
//! extend any timer here. A request is in flight from the moment its head
//! reaches the service until its response body is dropped, so a long
//! response (an event stream) is never idle.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Why the watchdog closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cut {
    /// No complete first request head (HTTP/2 preface included) within
    /// the header-read timeout of the accept.
    FirstRequestLate,
    /// No request in flight for the idle timeout.
    Idle,
    /// No complete next request head on an HTTP/1 connection within the
    /// header-read timeout of the last response.
    NextRequestLate,
}

/// The time bounds of a connection ([`Activity::watchdog`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Bounds {
    /// The header-read timeout: a new connection's first request head, and
    /// an HTTP/1 connection's next one, must arrive within it.
    pub(super) head: Duration,
    /// No request in flight for this long closes any connection.
    pub(super) idle: Duration,
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
    /// Whether its requests are HTTP/1 (known from the first one).
    http1: bool,
}

/// What is in flight on one connection, shared by its reader, its service
/// and its watchdog.
///
/// Requests only write the state (an uncontended lock, no wake-up): the
/// watchdog reads it when its own timer fires and sleeps again until the
/// next time a cut could be due, so a busy keep-alive connection costs no
/// task wake-up or timer per request.
#[derive(Debug)]
pub(super) struct Activity {
    state: Mutex<State>,
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
                http1: false,
            }),
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
        let mut s = self.lock();
        s.in_flight += 1;
        s.served = true;
        s.http1 = http1;
        let first_byte = s.head_started.take().filter(|_| http1);
        drop(s);
        // The clock is read only when there is no first byte to count from.
        (
            first_byte.unwrap_or_else(Instant::now),
            InFlight(self.clone()),
        )
    }

    fn end(&self) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
            s.head_started = None;
        }
    }

    /// When the watchdog must look again, and the cut due then if nothing
    /// changes before: while a request is in flight, `idle` from `now`
    /// (a request that ends before that sets a later idle start, which the
    /// next look sees); otherwise the first-request bound, or the idle
    /// bound (for HTTP/1, also `head`: the next request's head must have
    /// arrived within it), from the start of the idle time.
    fn next_look(&self, now: Instant, bounds: Bounds) -> (Instant, Option<Cut>) {
        let s = self.lock();
        if s.in_flight > 0 {
            (now + bounds.idle, None)
        } else if !s.served {
            (
                s.idle_since + bounds.head.min(bounds.idle),
                Some(Cut::FirstRequestLate),
            )
        } else if s.http1 && bounds.head < bounds.idle {
            (s.idle_since + bounds.head, Some(Cut::NextRequestLate))
        } else {
            (s.idle_since + bounds.idle, Some(Cut::Idle))
        }
    }

    /// Resolves when the connection must be closed: its first request head
    /// has not arrived within `bounds.head` of the accept, an HTTP/1
    /// connection's next request head not within `bounds.head` of the last
    /// response, or nothing has been in flight for `bounds.idle`. Exact to
    /// the timer's resolution: a look finds either the cut due or the time
    /// of the next look, and every change of the state only moves a due cut
    /// later. (hyper's own header-read timer would arm a timer for every
    /// request; this one wakes once per bound.)
    pub(super) async fn watchdog(&self, bounds: Bounds) -> Cut {
        loop {
            let now = Instant::now();
            match self.next_look(now, bounds) {
                (at, Some(cut)) if now >= at => return cut,
                (at, _) => tokio::time::sleep_until(at).await,
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// `F`, polled only when it asked to be: at the first poll, and after
    /// its own waker was woken. Not at every poll of the task it shares
    /// (the connection's task polls the watchdog beside the connection
    /// several times per request; the watchdog's timer needs a look only
    /// when it fires).
    pub(super) struct OnItsWake<F> {
        #[pin]
        inner: F,
        gate: Arc<Gate>,
        waker: Waker,
    }
}

/// Whether an [`OnItsWake`]'s future was woken, and the task to wake then.
#[derive(Debug)]
struct Gate {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> OnItsWake<F> {
    pub(super) fn new(inner: F) -> Self {
        let gate = Arc::new(Gate {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        OnItsWake {
            inner,
            waker: Waker::from(gate.clone()),
            gate,
        }
    }
}

impl<F: Future> Future for OnItsWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // The task first, then the flag: a wake between the two finds the
        // task registered and polls it again.
        this.gate.task.register(cx.waker());
        if !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
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
    const BOUNDS: Bounds = Bounds {
        head: FIRST,
        idle: IDLE,
    };

    #[tokio::test]
    async fn a_connection_without_a_request_is_cut_at_the_first_request_bound() {
        let a = Activity::new();
        let t0 = Instant::now();
        a.on_read();
        assert_eq!(a.watchdog(BOUNDS).await, Cut::FirstRequestLate);
        let took = t0.elapsed();
        assert!(took >= FIRST && took < IDLE, "{took:?}");
    }

    #[tokio::test]
    async fn idle_counts_from_the_last_response_and_waits_while_in_flight() {
        // HTTP/2 (the idle bound alone; HTTP/1 also has the head bound).
        let a = Activity::new();
        let (_, req) = a.begin(false);
        let dog = {
            let a = a.clone();
            tokio::spawn(async move { a.watchdog(BOUNDS).await })
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
    async fn an_http1_connection_must_send_its_next_head_within_the_head_bound() {
        let a = Activity::new();
        let (_, req) = a.begin(true);
        tokio::time::sleep(IDLE).await;
        let t1 = Instant::now();
        drop(req);
        // A head trickling in does not extend it.
        tokio::time::sleep(FIRST / 2).await;
        a.on_read();
        assert_eq!(a.watchdog(BOUNDS).await, Cut::NextRequestLate);
        let took = t1.elapsed();
        assert!(took >= FIRST && took < IDLE, "{took:?}");
        // A head bound longer than the idle bound leaves the idle bound.
        let a = Activity::new();
        drop(a.begin(true).1);
        let t2 = Instant::now();
        let long_head = Bounds {
            head: IDLE * 2,
            idle: IDLE,
        };
        assert_eq!(a.watchdog(long_head).await, Cut::Idle);
        let took = t2.elapsed();
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

    /// A future that counts its polls and keeps the last waker.
    struct Counting {
        polls: usize,
        waker: Option<Waker>,
        ready: bool,
    }

    impl Future for Counting {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            self.waker = Some(cx.waker().clone());
            if self.ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    /// A waker that counts its wakes.
    struct Flag(std::sync::atomic::AtomicUsize);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_gated_future_is_polled_first_and_then_only_when_it_was_woken() {
        let flag = Arc::new(Flag(std::sync::atomic::AtomicUsize::new(0)));
        let task = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&task);
        let mut f = Box::pin(OnItsWake::new(Counting {
            polls: 0,
            waker: None,
            ready: false,
        }));
        let polls = |f: &Pin<Box<OnItsWake<Counting>>>| f.inner.polls;
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls(&f), 1, "the first poll reaches it");
        // The task polled again for something else: not polled.
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls(&f), 1);
        // Its own waker wakes the task, and the next poll reaches it.
        f.inner.waker.take().unwrap().wake();
        assert_eq!(flag.0.load(Ordering::SeqCst), 1);
        f.as_mut().project().inner.get_mut().ready = true;
        assert!(f.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls(&f), 2);
    }

    #[tokio::test]
    async fn a_gated_watchdog_still_cuts_beside_a_busy_future() {
        // The watchdog shares a task with a future that wakes it often.
        let a = Activity::new();
        let t0 = Instant::now();
        let dog = OnItsWake::new(a.watchdog(BOUNDS));
        let busy = async {
            loop {
                tokio::task::yield_now().await;
            }
        };
        let race = async {
            tokio::select! {
                biased;
                _ = busy => unreachable!(),
                cut = dog => cut,
            }
        };
        let cut = tokio::time::timeout(IDLE * 5, race)
            .await
            .expect("the watchdog never cut");
        assert_eq!(cut, Cut::FirstRequestLate);
        let took = t0.elapsed();
        assert!(took >= FIRST && took < IDLE, "{took:?}");
    }
}
