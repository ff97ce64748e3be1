//! The accept loop: a cap on concurrent connections, HTTP/1.1 (and h2c)
//! via hyper-util's auto builder with a header-read timeout, an idle timeout
//! per connection, and graceful shutdown (stop accepting, end event streams,
//! let in-flight requests finish, then flush the store).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use qlearn_core::store::Store;
use qlearn_core::{Error, Result};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::app::App;
use crate::config::Config;
use crate::router;

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// A TCP stream that remembers when bytes last moved, for the idle timeout.
struct IdleIo {
    inner: TcpStream,
    last: Arc<AtomicU64>,
}

impl IdleIo {
    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
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

/// Resolves when no byte has moved for `idle`.
async fn idle_expired(last: Arc<AtomicU64>, idle: Duration) {
    let idle_ms = idle.as_millis() as u64;
    loop {
        let deadline = last.load(Ordering::Relaxed) + idle_ms;
        let now = now_ms();
        if now >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(deadline - now)).await;
    }
}

/// Opens the store named by `config.database_url` and serves until
/// `shutdown` resolves (see [`serve`]).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let url = config.database_url.clone();
    let store = tokio::task::spawn_blocking(move || crate::config::open_store(&url))
        .await
        .map_err(|e| Error::Internal(format!("opening the store: {e}")))??;
    serve(listener, store, config, shutdown).await
}

/// Serves `store` on `listener` until `shutdown` resolves; then stops
/// accepting, ends event streams, waits (up to `shutdown_timeout`) for
/// in-flight requests, and flushes the store.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let app = tokio::task::spawn_blocking(move || App::new(store, config))
        .await
        .map_err(|e| Error::Internal(format!("starting: {e}")))??;
    let app = Arc::new(app);
    let cfg = &app.config;
    let limit = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128);
    let idle = cfg.idle_timeout;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, storage = app.store.backend(), "serving");
    }
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let last = Arc::new(AtomicU64::new(now_ms()));
        let io = TokioIo::new(IdleIo {
            inner: stream,
            last: last.clone(),
        });
        let a = app.clone();
        let svc = service_fn(move |req| router::serve(a.clone(), req, peer));
        let conn = graceful.watch(builder.serve_connection(io, svc).into_owned());
        let metrics_app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            metrics_app.metrics.connection(true);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                }
                _ = idle_expired(last, idle) => {
                    tracing::debug!(%peer, "idle timeout");
                }
            }
            metrics_app.metrics.connection(false);
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    app.begin_shutdown();
    let timeout = app.config.shutdown_timeout;
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(timeout) => tracing::warn!(?timeout, "shutdown timed out; closing the remaining connections"),
    }
    let st = app.store.clone();
    tokio::task::spawn_blocking(move || st.flush())
        .await
        .map_err(|e| Error::Internal(format!("flushing: {e}")))??;
    // Close the store before returning (a SQLite file is locked while open):
    // wait briefly for the last tasks holding the state to finish.
    let mut app = app;
    for _ in 0..200 {
        match Arc::try_unwrap(app) {
            Ok(mut a) => {
                let store = a.take_store();
                let _ = tokio::task::spawn_blocking(move || drop(store)).await;
                break;
            }
            Err(shared) => {
                app = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tracing::info!("storage flushed and closed; bye");
    Ok(())
}
