//! [`Limiter`]: the rate limits and throttles of a server, in this
//! process's memory ([`KeyedLimiter`]) or, when several instances share a
//! database, in buckets kept there ([`SharedBuckets`]) so that a client
//! with k instances does not get k times its limit.
//!
//! Two ways of taking from a shared bucket:
//!
//! - **exact** ([`Limiter::check`], [`Limiter::refund`], [`Limiter::reset`]):
//!   one atomic database statement per call, for the rare throttles (failed
//!   logins, registrations, whole-model operations);
//! - **leased** ([`Limiter::try_take_leased`], then
//!   [`Limiter::take_leased`]), for the per-second request limit on every
//!   request: an instance takes up to [`lease_size`] tokens from the shared
//!   bucket at once and spends them locally for at most [`LEASE_TTL`] (what
//!   is left then is dropped, never returned). Every token spent was taken
//!   from the shared bucket, so over any window the tokens spent are at most
//!   what one bucket grants in it plus those held in leases when it began:
//!   **at most `k × (lease_size − 1)` requests more than a single bucket
//!   would admit** with k instances (a single lease refill runs per key and
//!   instance at a time). Unspent lease tokens can make a client wait up to
//!   as many requests too early. A refusal is remembered locally until the
//!   bucket has a token again, so a client hammering a full bucket costs no
//!   database call per request.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::rate::{ceil_secs, KeyedLimiter, RateState};
use super::secrets::hash_api_key;
use crate::{Error, Result};

/// How long leased tokens may be spent.
pub const LEASE_TTL: Duration = Duration::from_secs(1);
/// The share of a second's rate one lease takes.
const LEASE_SECONDS: f64 = 0.05;
/// Shards of the lease map.
const SHARDS: usize = 16;
/// A shard drops its stale leases when it reaches this many keys.
const PRUNE_AT: usize = 4_096;

/// What [`SharedBuckets::take`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Taken {
    /// Tokens taken (0 when fewer than asked for were there).
    pub granted: f64,
    /// Tokens left in the bucket afterwards.
    pub left: f64,
    /// When nothing was granted: seconds until the tokens needed are there.
    pub wait_secs: f64,
}

/// Token buckets kept where every instance sees them (a database table),
/// refilled by one clock (the database's). Each call is atomic.
pub trait SharedBuckets: Send + Sync {
    /// Takes as many tokens as the bucket `key` holds, up to `want`, if it
    /// holds at least `need`; none otherwise. The bucket is created full
    /// and takes the given `rate` (per second) and `burst`.
    fn take(&self, key: &str, need: f64, want: f64, rate: f64, burst: f64) -> Result<Taken>;
    /// Gives `n` tokens back to `key` (capped at its burst; no bucket,
    /// nothing to do).
    fn give(&self, key: &str, n: f64) -> Result<()>;
    /// Forgets `key`'s bucket (it starts full next time).
    fn forget(&self, key: &str) -> Result<()>;
}

/// Tokens a lease takes for a limit of `rate` per second: a twentieth of
/// a second's worth, at least 1 (1 for the free and pro tiers' 5 and 50/s,
/// 25 for 500/s).
pub fn lease_size(rate: f64) -> f64 {
    (rate * LEASE_SECONDS).floor().max(1.0)
}

/// One key's lease on this instance.
#[derive(Debug, Default)]
struct Lease {
    tokens: f64,
    /// Tokens the shared bucket had left at the last lease.
    left: f64,
    expires: Option<Instant>,
    /// Refused until then (the shared bucket is empty).
    blocked_until: Option<Instant>,
    /// A refill is running: concurrent requests take one token each.
    refilling: bool,
}

impl Lease {
    fn stale(&self, now: Instant) -> bool {
        !self.refilling
            && self.expires.is_none_or(|e| e <= now)
            && self.blocked_until.is_none_or(|b| b <= now)
    }
}

/// The shared side of a [`Limiter`].
struct Shared {
    buckets: Arc<dyn SharedBuckets>,
    leases: [Mutex<HashMap<String, Lease>>; SHARDS],
    hasher: RandomState,
    /// Keeps the buckets of different limiters apart in the shared table.
    name: &'static str,
}

/// A rate limiter: per process, or shared by the instances of one database
/// (see the module docs).
pub struct Limiter {
    local: KeyedLimiter,
    shared: Option<Shared>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn refused(wait_secs: f64) -> Error {
    Error::RateLimited {
        retry_after_secs: ceil_secs(wait_secs).max(1),
    }
}

/// The header state of a shared bucket with `left` tokens (plus `leased`
/// held here).
fn shared_state(left: f64, leased: f64, rate: f64, burst: f64) -> RateState {
    let limit = burst.floor().max(1.0) as u32;
    let have = (left + leased).max(0.0);
    RateState {
        limit,
        remaining: (have.floor() as u32).min(limit),
        reset_secs: u32::try_from(ceil_secs((burst - have).max(0.0) / rate.max(1e-6)))
            .unwrap_or(u32::MAX),
    }
}

impl Limiter {
    /// A limiter in this process's memory.
    pub fn local() -> Self {
        Limiter {
            local: KeyedLimiter::new(),
            shared: None,
        }
    }

    /// A limiter named `name` (its keys' namespace) over `buckets`, or in
    /// memory when there are none (a store that is never shared).
    pub fn new(name: &'static str, buckets: Option<Arc<dyn SharedBuckets>>) -> Self {
        Limiter {
            local: KeyedLimiter::new(),
            shared: buckets.map(|buckets| Shared {
                buckets,
                leases: std::array::from_fn(|_| Mutex::new(HashMap::new())),
                hasher: RandomState::new(),
                name,
            }),
        }
    }

    /// Whether calls may block on the database (run them off the async
    /// executor).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Takes one token from `key`'s bucket (`rate` per second, `burst`),
    /// exactly: see [`KeyedLimiter::check`]. Shared: one database call.
    /// `now` is the local clock (seconds), used only in memory.
    pub fn check(&self, key: &str, rate: f64, burst: f64, now: f64) -> Result<RateState> {
        let Some(s) = &self.shared else {
            return self.local.check(key, rate, burst, now);
        };
        let t = s.buckets.take(&s.key(key), 1.0, 1.0, rate, burst)?;
        if t.granted < 1.0 {
            return Err(refused(t.wait_secs));
        }
        Ok(shared_state(t.left, 0.0, rate, burst))
    }

    /// Gives `n` tokens back to `key`'s bucket (see [`KeyedLimiter::refund`]).
    pub fn refund(&self, key: &str, n: f64) -> Result<()> {
        match &self.shared {
            None => {
                self.local.refund(key, n);
                Ok(())
            }
            Some(s) => s.buckets.give(&s.key(key), n),
        }
    }

    /// Forgets `key`'s bucket (see [`KeyedLimiter::reset`]).
    pub fn reset(&self, key: &str) -> Result<()> {
        match &self.shared {
            None => {
                self.local.reset(key);
                Ok(())
            }
            Some(s) => s.buckets.forget(&s.key(key)),
        }
    }

    /// A request's token without waiting: from the local bucket, or from
    /// this instance's lease of the shared one (also a refusal remembered
    /// from the shared bucket). `None`: ask [`take_leased`](Self::take_leased).
    pub fn try_take_leased(
        &self,
        key: &str,
        rate: f64,
        burst: f64,
        now: f64,
    ) -> Option<Result<RateState>> {
        let Some(s) = &self.shared else {
            return Some(self.local.check(key, rate, burst, now));
        };
        let at = Instant::now();
        let mut shard = s.shard(key);
        let lease = shard.get_mut(key)?;
        if lease.tokens >= 1.0 && lease.expires.is_some_and(|e| at < e) {
            lease.tokens -= 1.0;
            return Some(Ok(shared_state(lease.left, lease.tokens, rate, burst)));
        }
        let blocked = lease.blocked_until.filter(|b| at < *b)?;
        Some(Err(refused((blocked - at).as_secs_f64())))
    }

    /// A request's token, refilling this instance's lease from the shared
    /// bucket (blocks: one database call). In memory: as
    /// [`try_take_leased`](Self::try_take_leased).
    pub fn take_leased(&self, key: &str, rate: f64, burst: f64, now: f64) -> Result<RateState> {
        let Some(s) = &self.shared else {
            return self.local.check(key, rate, burst, now);
        };
        if let Some(r) = self.try_take_leased(key, rate, burst, now) {
            return r;
        }
        // One refill per key at a time takes a whole lease; requests that
        // come meanwhile take their one token each.
        let (want, leader) = {
            let mut shard = s.shard(key);
            if shard.len() >= PRUNE_AT {
                let at = Instant::now();
                shard.retain(|_, l| !l.stale(at));
            }
            let lease = shard.entry(key.to_owned()).or_default();
            if lease.refilling {
                (1.0, false)
            } else {
                lease.refilling = true;
                (lease_size(rate).min(burst.max(1.0)), true)
            }
        };
        let taken = s.buckets.take(&s.key(key), 1.0, want, rate, burst);
        let at = Instant::now();
        let mut shard = s.shard(key);
        let lease = shard.entry(key.to_owned()).or_default();
        if leader {
            lease.refilling = false;
        }
        let t = taken?;
        lease.left = t.left;
        if t.granted < 1.0 {
            lease.blocked_until =
                Some(at + Duration::from_secs_f64(t.wait_secs.clamp(0.0, 3600.0)));
            return Err(refused(t.wait_secs));
        }
        lease.blocked_until = None;
        if lease.expires.is_some_and(|e| at < e) {
            // A refill that finished while this one ran (this request's one
            // token, or the leader's lease after it): the tokens add up.
            lease.tokens += t.granted - 1.0;
        } else {
            // The new lease replaces what is left of an expired one
            // (dropped, never spent), also when it is this request's one
            // token.
            lease.tokens = t.granted - 1.0;
            lease.expires = Some(at + LEASE_TTL);
        }
        Ok(shared_state(t.left, lease.tokens, rate, burst))
    }
}

impl Shared {
    /// The shared table's key of `key`: hashed with the limiter's name, so
    /// no email or address is stored.
    fn key(&self, key: &str) -> String {
        hash_api_key(&format!("{}\u{0}{key}", self.name))
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<String, Lease>> {
        // The modulo keeps the index below SHARDS, so the narrowing is exact.
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        lock(&self.leases[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Shared buckets in memory with a frozen clock: no refill.
    #[derive(Default)]
    struct Frozen {
        tokens: Mutex<HashMap<String, (f64, f64)>>,
        calls: AtomicUsize,
    }

    impl SharedBuckets for Frozen {
        fn take(&self, key: &str, need: f64, want: f64, rate: f64, burst: f64) -> Result<Taken> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut m = lock(&self.tokens);
            let (have, _) = m.entry(key.to_owned()).or_insert((burst, burst));
            let granted = if *have >= need {
                want.min(have.floor())
            } else {
                0.0
            };
            *have -= granted;
            Ok(Taken {
                granted,
                left: *have,
                wait_secs: if granted > 0.0 {
                    0.0
                } else {
                    (need - *have) / rate
                },
            })
        }
        fn give(&self, key: &str, n: f64) -> Result<()> {
            if let Some((have, burst)) = lock(&self.tokens).get_mut(key) {
                *have = (*have + n).min(*burst);
            }
            Ok(())
        }
        fn forget(&self, key: &str) -> Result<()> {
            lock(&self.tokens).remove(key);
            Ok(())
        }
    }

    fn limiters(k: usize, b: &Arc<Frozen>) -> Vec<Limiter> {
        (0..k)
            .map(|_| Limiter::new("api", Some(b.clone() as Arc<dyn SharedBuckets>)))
            .collect()
    }

    fn take(l: &Limiter, rate: f64, burst: f64) -> bool {
        match l.try_take_leased("u", rate, burst, 0.0) {
            Some(r) => r.is_ok(),
            None => l.take_leased("u", rate, burst, 0.0).is_ok(),
        }
    }

    #[test]
    fn instances_together_never_pass_the_shared_bucket() {
        for (rate, burst) in [(5.0, 10.0), (500.0, 1000.0), (40.0, 7.0)] {
            let b = Arc::new(Frozen::default());
            let ls = limiters(3, &b);
            let mut ok = 0;
            for i in 0..3_000 {
                ok += usize::from(take(&ls[i % 3], rate, burst));
            }
            assert_eq!(ok as f64, burst, "rate {rate}, burst {burst}");
        }
    }

    #[test]
    fn leases_save_database_calls_and_refusals_are_remembered() {
        let b = Arc::new(Frozen::default());
        let l = &limiters(1, &b)[0];
        // 500/s: leases of 25.
        for _ in 0..100 {
            assert!(take(l, 500.0, 1000.0));
        }
        assert_eq!(b.calls.load(Ordering::SeqCst), 4);
        let b = Arc::new(Frozen::default());
        let l = &limiters(1, &b)[0];
        for _ in 0..10 {
            assert!(take(l, 5.0, 10.0));
        }
        let before = b.calls.load(Ordering::SeqCst);
        for _ in 0..100 {
            assert!(!take(l, 5.0, 10.0));
        }
        assert_eq!(
            b.calls.load(Ordering::SeqCst),
            before + 1,
            "one call, then remembered"
        );
        assert_eq!(lease_size(5.0), 1.0);
        assert_eq!(lease_size(50.0), 2.0);
    }

    #[test]
    fn an_expired_lease_is_replaced_not_reported() {
        let b = Arc::new(Frozen::default());
        let l = &limiters(1, &b)[0];
        // 500/s: a lease of 25 from a bucket of 26 leaves 1 there, 24 here.
        assert_eq!(l.take_leased("u", 500.0, 26.0, 0.0).unwrap().remaining, 25);
        {
            let s = l.shared.as_ref().unwrap();
            let mut shard = s.shard("u");
            let lease = shard.get_mut("u").unwrap();
            assert_eq!(lease.tokens, 24.0);
            lease.expires = Instant::now().checked_sub(Duration::from_millis(1));
        }
        // Expired: the 24 are dropped; the bucket's last token is granted
        // alone, and nothing is left anywhere.
        let state = l.take_leased("u", 500.0, 26.0, 0.0).unwrap();
        assert_eq!(state.remaining, 0);
        assert!(l.try_take_leased("u", 500.0, 26.0, 0.0).is_none());
        assert!(l.take_leased("u", 500.0, 26.0, 0.0).is_err());
    }

    /// Shared buckets whose takes wait to be let through, one kind at a
    /// time: a lease's (more than one token) or a single token's.
    struct Gated {
        inner: Frozen,
        entered: Mutex<std::sync::mpsc::Sender<bool>>,
        lease_go: Mutex<std::sync::mpsc::Receiver<()>>,
        one_go: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl SharedBuckets for Gated {
        fn take(&self, key: &str, need: f64, want: f64, rate: f64, burst: f64) -> Result<Taken> {
            let lease = want > 1.0;
            let _ = lock(&self.entered).send(lease);
            let gate = if lease { &self.lease_go } else { &self.one_go };
            let _ = lock(gate).recv();
            self.inner.take(key, need, want, rate, burst)
        }
        fn give(&self, key: &str, n: f64) -> Result<()> {
            self.inner.give(key, n)
        }
        fn forget(&self, key: &str) -> Result<()> {
            self.inner.forget(key)
        }
    }

    #[test]
    fn a_single_token_taken_during_a_refill_keeps_the_new_lease() {
        use std::sync::mpsc::channel;
        let (entered_tx, entered) = channel();
        let (lease_go, lease_rx) = channel();
        let (one_go, one_rx) = channel();
        let b = Arc::new(Gated {
            inner: Frozen::default(),
            entered: Mutex::new(entered_tx),
            lease_go: Mutex::new(lease_rx),
            one_go: Mutex::new(one_rx),
        });
        let l = Arc::new(Limiter::new(
            "api",
            Some(b.clone() as Arc<dyn SharedBuckets>),
        ));
        let (rate, burst) = (500.0, 1000.0);
        let run = |l: &Arc<Limiter>| {
            let l = l.clone();
            std::thread::spawn(move || l.take_leased("u", rate, burst, 0.0).is_ok())
        };
        // The leader's refill is in the bucket when a second request comes:
        // that one takes its single token; the leader's lease lands first.
        let leader = run(&l);
        assert_eq!(entered.recv().ok(), Some(true));
        let follower = run(&l);
        assert_eq!(entered.recv().ok(), Some(false));
        lease_go.send(()).unwrap();
        assert!(leader.join().unwrap());
        one_go.send(()).unwrap();
        assert!(follower.join().unwrap());
        // The lease (25 tokens, one spent by the leader) serves the next 24
        // requests without the bucket.
        let served = (0..24)
            .filter(|_| matches!(l.try_take_leased("u", rate, burst, 0.0), Some(Ok(_))))
            .count();
        assert_eq!(served, 24);
        assert!(l.try_take_leased("u", rate, burst, 0.0).is_none());
    }

    #[test]
    fn exact_calls_refund_and_reset() {
        let b = Arc::new(Frozen::default());
        let l = &limiters(1, &b)[0];
        assert!(l.check("a", 1.0, 2.0, 0.0).is_ok());
        assert!(l.check("a", 1.0, 2.0, 0.0).is_ok());
        assert!(matches!(
            l.check("a", 1.0, 2.0, 0.0),
            Err(Error::RateLimited {
                retry_after_secs: 1
            })
        ));
        l.refund("a", 1.0).unwrap();
        assert!(l.check("a", 1.0, 2.0, 0.0).is_ok());
        l.reset("a").unwrap();
        assert_eq!(l.check("a", 1.0, 2.0, 0.0).unwrap().remaining, 1);
        // Keys are hashed: no email or address reaches the shared table.
        assert!(lock(&b.tokens).keys().all(|k| k.len() == 64 && k != "a"));
    }

    #[test]
    fn a_full_lease_shard_drops_only_its_stale_leases() {
        let b = Arc::new(Frozen::default());
        let l = &limiters(1, &b)[0];
        let s = l.shared.as_ref().unwrap();
        let shard_of = |k: &str| s.hasher.hash_one(k) % SHARDS as u64;
        let home = shard_of("new");
        let mut keys = (0..)
            .map(|i| format!("k{i}"))
            .filter(|k| shard_of(k) == home);
        let now = Instant::now();
        let past = now.checked_sub(Duration::from_secs(5));
        let future = Some(now + Duration::from_secs(600));
        // Kept: a live lease, a remembered refusal (also past an expired
        // lease), a refill running. Dropped: an expired lease, an expired
        // refusal, both expired, nothing at all.
        let kept = [
            Lease {
                expires: future,
                ..Lease::default()
            },
            Lease {
                blocked_until: future,
                ..Lease::default()
            },
            Lease {
                expires: past,
                blocked_until: future,
                ..Lease::default()
            },
            Lease {
                expires: future,
                blocked_until: past,
                ..Lease::default()
            },
            Lease {
                refilling: true,
                expires: past,
                ..Lease::default()
            },
        ];
        let dropped = [
            Lease {
                expires: past,
                ..Lease::default()
            },
            Lease {
                blocked_until: past,
                ..Lease::default()
            },
            Lease {
                expires: past,
                blocked_until: past,
                ..Lease::default()
            },
            Lease::default(),
        ];
        let mut kept_keys = Vec::new();
        {
            let mut shard = s.shard("new");
            for lease in kept {
                let k = keys.next().unwrap();
                kept_keys.push(k.clone());
                shard.insert(k, lease);
            }
            for lease in dropped {
                shard.insert(keys.next().unwrap(), lease);
            }
            while shard.len() < PRUNE_AT {
                let expires = past;
                shard.insert(
                    keys.next().unwrap(),
                    Lease {
                        expires,
                        ..Lease::default()
                    },
                );
            }
        }
        // At PRUNE_AT keys a refill prunes the shard first.
        assert!(l.take_leased("new", 5.0, 10.0, 0.0).is_ok());
        let shard = s.shard("new");
        let mut left: Vec<_> = shard.keys().cloned().collect();
        left.sort();
        let mut want = kept_keys;
        want.push("new".to_owned());
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn in_memory_it_is_the_keyed_limiter() {
        let l = Limiter::local();
        assert!(!l.is_shared());
        assert!(l.try_take_leased("u", 1.0, 1.0, 0.0).unwrap().is_ok());
        assert!(l.try_take_leased("u", 1.0, 1.0, 0.0).unwrap().is_err());
        assert!(l.take_leased("u", 1.0, 1.0, 1.0).is_ok());
    }
}
