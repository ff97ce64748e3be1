//! The accept loop and what bounds each connection, so that no client can
//! hold the server's connections (registration is open to anyone):
//!
//! - `max_connections` in all, and `max_connections_per_address` from one
//!   client address (an IPv4 address, an IPv6 /64; trusted proxies are
//!   exempt). Over the latter a connection is closed at once, before
//!   anything is read or written: refusing costs nothing and gives the
//!   client nothing to hold. It sees the connection closed or reset, with
//!   no HTTP answer, since answering would mean reading its request first;
//! - HTTP/1.1 and h2c (hyper-util's auto builder); a new connection must
//!   deliver its first request head, protocol detection (the HTTP/2
//!   preface) included, within `header_read_timeout`, and each later
//!   HTTP/1 head (and the wait for it) by the same timeout from the last
//!   response (both kept by the connection's watchdog, `conn.rs`, which
//!   sets no timer per request);
//! - a whole-request deadline, `request_timeout` from a request's first
//!   byte: the body is read by [`crate::http::read_body`], which answers 408
//!   `request_timeout` when the deadline passes; the HTTP/1 connection is
//!   then closed;
//! - `idle_timeout`: a connection with no request in flight for that long is
//!   closed, however many bytes still trickle in; a long response (an event
//!   stream) is a request in flight and is never cut;
//! - graceful shutdown: stop accepting, end event streams, let in-flight
//!   requests finish, then flush the store.
//!
//! Beside the accept loop, one task settles the reward windows whose
//! deadline has passed ([`Store::settle`]) and the plan downgrades due
//! ([`Store::settle_billing`]) every `Config::settle_every`; every
//! instance runs it (the store applies each transition once), and it stops
//! at shutdown before the store is flushed.
//!
//! The evaluation workers (`crate::evaluations`, `evaluation_workers` OS
//! threads) start with the server and stop with the settling task: a
//! running job goes back to the queue.
//!
//! A server on SQLite also answers operator commands on its admin socket
//! (`admin_socket.rs`, see [`crate::admin`]); it stops with the settling
//! task, before the store is flushed.
//!
//! Trickling bytes extends none of these timers.

#[cfg(unix)]
mod admin_socket;
mod conn;
mod drain;
mod per_address;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::service::service_fn;
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use qlearn_core::store::{SharedStreams, Store};
use qlearn_core::{Error, Result};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::config::Config;
use crate::router;
use conn::{Activity, Bounds, Cut, OnItsWake, Tracked, Watched};
use per_address::PerAddress;

use crate::http::RequestDeadline;

/// Runs blocking `work` every `every` until shutdown (a run in progress
/// finishes first); a failure is logged as `what` and retried at the
/// next tick; what a run returns goes to `done`.
async fn periodically<T: Send + 'static>(
    app: &App,
    every: Duration,
    what: &'static str,
    work: impl Fn() -> Result<T> + Send + Sync + 'static,
    mut done: impl FnMut(T),
) {
    let work = Arc::new(work);
    let mut shutdown = app.shutdown_signal();
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
        let w = work.clone();
        match tokio::task::spawn_blocking(move || w()).await {
            Ok(Ok(v)) => done(v),
            Ok(Err(e)) => tracing::warn!(error = %e, "{what} failed"),
            Err(e) => tracing::warn!(error = %e, "the task {what} failed"),
        }
    }
}

/// Settles passed reward deadlines and due plan downgrades (the end of a
/// cancelled or unpaid period) every `settle_every` until shutdown: both
/// live in the store, so a failed run is retried at the next tick.
async fn settle_loop(app: Arc<App>) {
    let store = app.store.clone();
    let settle = move || {
        let now = crate::now_unix();
        Ok((store.settle(now)?, store.settle_billing(now)?))
    };
    let forget = app.clone();
    periodically(
        &app,
        app.config.settle_every,
        "settling reward deadlines and downgrades",
        settle,
        move |(n, downgraded): (usize, Vec<String>)| {
            if n > 0 {
                tracing::debug!(transitions = n, "settled reward deadlines");
            }
            for user in downgraded {
                tracing::info!(user, "plan downgraded at the end of its period");
                forget.forget_user(&user);
            }
        },
    )
    .await;
}

/// Renews this instance's places among the shared store's open streams
/// every [`RENEW_EVERY`] (they last 30 s) until shutdown.
async fn renew_loop(app: Arc<App>, streams: Arc<dyn SharedStreams>) {
    let renew = move || streams.renew();
    periodically(
        &app,
        RENEW_EVERY,
        "renewing the stream places",
        renew,
        |()| {},
    )
    .await;
}

/// How often an instance renews its places among the shared open streams.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);

/// Opens the store named by `config.database_url` and serves until
/// `shutdown` resolves (see [`serve`]).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let url = config.database_url.clone();
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let store = tokio::task::spawn_blocking(move || {
        crate::config::open_store_for_runtime(&url, workers, cpus)
    })
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
    let feed_app = app.clone();
    tokio::task::spawn_blocking(move || feed_app.start_feed())
        .await
        .map_err(|e| Error::Internal(format!("starting the change feed: {e}")))??;
    let cfg = &app.config;
    let limit = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let drain = drain::Drain::default();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection's watchdog bounds the heads (no timer per request).
        .header_read_timeout(None)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128);
    let per_address = PerAddress::new(cfg.max_connections_per_address, &cfg.trusted_proxies);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, storage = app.store.backend(), "serving");
    }
    let settler = tokio::spawn(settle_loop(app.clone()));
    let workers = crate::evaluations::Workers::start(
        app.store.clone(),
        app.config.limits,
        app.evaluation_wake.clone(),
        app.config.evaluation_workers,
    );
    if let Some(streams) = app.streams.clone() {
        tokio::spawn(renew_loop(app.clone(), streams));
    }
    #[cfg(unix)]
    let admin = admin_socket::start(&app);
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
        let Some(slot) = per_address.admit(peer.ip()) else {
            tracing::debug!(%peer, "refused: too many connections from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let io = TokioIo::new(Watched::new(stream, activity.clone()));
        let a = app.clone();
        let act = activity.clone();
        let svc = service_fn(move |req: Request<_>| {
            let http1 = req.version() < Version::HTTP_2;
            let (started, in_flight) = act.begin(http1);
            let limit = a.config.request_timeout;
            let deadline = RequestDeadline {
                at: started + limit,
                limit,
            };
            // A combinator, not an async block awaiting the request's
            // future: that future is held once (hyper moves this one into
            // place for every request).
            router::serve(a.clone(), req, peer, deadline).map(move |Ok(mut resp)| {
                if http1 && resp.status() == StatusCode::REQUEST_TIMEOUT {
                    // The rest of the body may still be on its way: end the connection.
                    resp.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(resp.map(|b| Tracked::new(b, in_flight)))
            })
        });
        let conn = drain.watch(builder.serve_connection(io, svc).into_owned());
        let metrics_app = app.clone();
        let bounds = Bounds {
            head: cfg.header_read_timeout,
            idle: cfg.idle_timeout,
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            metrics_app.metrics.connection(true);
            tokio::select! {
                // In order, the connection first: this runs at every poll
                // of the connection's task (several per request). The
                // watchdog, a timer, is looked at only when its timer
                // fired (`OnItsWake`), not at each of those polls.
                biased;
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                }
                cut = OnItsWake::new(activity.watchdog(bounds)) => match cut {
                    Cut::FirstRequestLate => tracing::debug!(%peer, "no request in time"),
                    Cut::NextRequestLate => tracing::debug!(%peer, "no next request head in time"),
                    Cut::Idle => tracing::debug!(%peer, "idle timeout"),
                },
            }
            metrics_app.metrics.connection(false);
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    app.begin_shutdown();
    let timeout = app.config.shutdown_timeout;
    tokio::select! {
        _ = drain.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(timeout) => tracing::warn!(?timeout, "shutdown timed out; closing the remaining connections"),
    }
    if let Err(e) = settler.await {
        tracing::warn!(error = %e, "the settling task ended abnormally");
    }
    if let Err(e) = tokio::task::spawn_blocking(move || workers.stop()).await {
        tracing::warn!(error = %e, "stopping the evaluation workers failed");
    }
    #[cfg(unix)]
    if let Some(admin) = admin {
        admin.stop().await;
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
