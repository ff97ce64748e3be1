//! Busy polling (`--busy-poll-us`): while store calls wait for their commit
//! (`qlearn_core::store::commits_in_flight`), and for a short tail after
//! the last one, one task keeps an async worker polling instead of letting
//! it sleep.
//!
//! Why: each SQLite commit is a hand-off to the writer thread and back. A
//! worker that runs out of requests while the commit runs goes to sleep, and
//! the writer then wakes it from another CPU, which on a small virtual
//! machine costs more than the commit; the kernel also gives the sleeping
//! worker's CPU to other threads (the writer, a local load generator) and
//! then makes the worker wait for it. Measured on 2 cores
//! (docs/benchmarks-http.md, issue 16). Off by default: a polling worker
//! keeps a CPU busy whenever commits are in flight, which only pays on a
//! machine given to this instance.
//!
//! How: the task yields (`tokio::task::yield_now`) while there is reason
//! to poll. Tokio runs a yielded task again only after every other ready
//! task and a non-blocking look at the sockets, so the poller never delays a
//! request, and a woken task is picked up at the next turn. With nothing in
//! flight past the tail it sleeps until the next commit starts
//! (`qlearn_core::store::commit_in_flight`).
//!
//! Every [`GIVE_WAY_EVERY`]th turn also gives the CPU away (`sched_yield`)
//! to any other thread waiting for it on that CPU: the polling worker never
//! sleeps, so a thread the kernel puts on its CPU (a client woken by a
//! response, often moved to the waker's CPU) would otherwise wait for the
//! worker's time slice to end. With no such thread the call returns at
//! once. Measured: p99 of 1.1-1.7 ms instead of 2.0-3.3 ms against never
//! giving way (issue 16, session 12); giving way at every fourth turn
//! instead of every turn cost 11% less CPU per update and 8% less per
//! predict with the same p99 (session 16), since a turn takes microseconds
//! and each `sched_yield` that switches threads costs about as much.

use std::time::{Duration, Instant};

use qlearn_core::store::{commit_in_flight, commits_in_flight};

/// Whether the poller keeps polling: commits are in flight, or the last
/// one left less than `tail` ago.
pub fn keep_polling(in_flight: usize, since_last: Duration, tail: Duration) -> bool {
    in_flight > 0 || since_last < tail
}

/// When the poller's idle time began: none while commits are in flight,
/// else the moment it first saw none (`now`, read only then), kept until
/// commits start again.
pub fn idle_since(
    in_flight: usize,
    since: Option<Instant>,
    now: impl FnOnce() -> Instant,
) -> Option<Instant> {
    if in_flight > 0 {
        None
    } else {
        Some(since.unwrap_or_else(now))
    }
}

/// The polling turns per `sched_yield`: the CPU is given away at every
/// fourth turn (see the module docs).
pub const GIVE_WAY_EVERY: u32 = 4;

/// Starts the poller on the current runtime; `tail` is how long it goes on
/// polling after the last commit in flight (a request's commit is often
/// followed by the same client's next request within tens of microseconds).
pub fn spawn(tail: Duration) -> tokio::task::JoinHandle<()> {
    spawn_with(tail, GIVE_WAY_EVERY, std::thread::yield_now)
}

/// [`spawn`], with `give_way` called at every `every`th polling turn (at
/// each when `every` is 0 or 1) to let other threads have the CPU
/// (`std::thread::yield_now` there; a test counts the calls).
pub fn spawn_with(tail: Duration, every: u32, give_way: fn()) -> tokio::task::JoinHandle<()> {
    let every = every.max(1);
    tokio::spawn(async move {
        let mut since = None;
        let mut turn: u32 = 0;
        loop {
            let in_flight = commits_in_flight();
            since = idle_since(in_flight, since, Instant::now);
            let idle = since.map_or(Duration::ZERO, |t| t.elapsed());
            if keep_polling(in_flight, idle, tail) {
                turn = turn.wrapping_add(1);
                if turn.is_multiple_of(every) {
                    give_way();
                }
                tokio::task::yield_now().await;
            } else {
                commit_in_flight().await;
                since = None;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_polls_while_commits_are_in_flight_and_for_the_tail_after() {
        let tail = Duration::from_micros(100);
        assert!(keep_polling(1, Duration::from_secs(5), tail));
        assert!(keep_polling(0, Duration::from_micros(99), tail));
        assert!(!keep_polling(0, tail, tail));
        assert!(!keep_polling(0, Duration::from_secs(1), tail));
        assert!(!keep_polling(0, Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn the_idle_time_starts_when_the_last_commit_leaves_and_ends_with_the_next() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_micros(50);
        let unread = || -> Instant { panic!("the clock is read only when idle starts") };
        assert_eq!(idle_since(3, None, unread), None);
        assert_eq!(idle_since(1, Some(t0), unread), None);
        assert_eq!(idle_since(0, None, || t1), Some(t1));
        assert_eq!(idle_since(0, Some(t0), unread), Some(t0));
    }
}
