//! Token-bucket rate limiting with injected time.
//!
//! [`TokenBucket`] is the algorithm; [`KeyedLimiter`] keeps one bucket per
//! key (a user id, an account email, a client address) in memory, for the
//! per-user API rate limit, failed-login throttling and registration
//! throttling. Time is passed in by the caller as `f64` seconds of any clock
//! that does not go backwards (e.g. `Instant` elapsed since start), so tests
//! need no sleeping.
//!
//! [`KeyedLimiter`] is per process; [`super::Limiter`] uses it, or buckets
//! shared by every instance of one database.

use hashbrown::HashTable;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::tier::push_rate_item;
use crate::{Error, Result};

/// Slack for floating-point drift when comparing token counts.
const EPS: f64 = 1e-9;
/// Slowest accepted refill rate, so a zero or invalid rate cannot divide by 0.
const MIN_RATE: f64 = 1e-6;

/// The state of a bucket after a request, for the IETF draft's `RateLimit`
/// and `RateLimit-Policy` response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateState {
    /// The bucket's capacity (burst): the policy's quota `q`.
    pub limit: u32,
    /// Whole requests that would be admitted right now: `r`.
    pub remaining: u32,
    /// Seconds until the bucket is full again: `t`.
    pub reset_secs: u32,
}

impl RateState {
    /// The `RateLimit` header item for policy `policy`, e.g.
    /// `"default";r=7;t=1`.
    pub fn header_value(&self, policy: &str) -> String {
        let mut out = String::new();
        self.push_header_value(&mut out, policy);
        out
    }

    /// Appends [`RateState::header_value`] to `out`.
    pub fn push_header_value(&self, out: &mut String, policy: &str) {
        push_rate_item(
            out,
            policy,
            [
                ("r", u64::from(self.remaining)),
                ("t", u64::from(self.reset_secs)),
            ],
        );
    }
}

/// A token bucket: holds up to `burst` tokens, refills at `rate` tokens per
/// second, each request takes tokens. Starts full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: f64,
}

fn sane_rate(rate: f64) -> f64 {
    if rate.is_finite() && rate >= MIN_RATE {
        rate
    } else {
        MIN_RATE
    }
}

fn sane_burst(burst: f64) -> f64 {
    if burst.is_finite() && burst >= 1.0 {
        burst
    } else {
        1.0
    }
}

/// Float seconds to whole seconds, rounded up (ignoring float noise below
/// a nanosecond); saturating (`as` saturates).
pub(super) fn ceil_secs(secs: f64) -> u64 {
    if secs > EPS {
        (secs - EPS).ceil() as u64
    } else {
        0
    }
}

impl TokenBucket {
    /// A full bucket with `rate` tokens per second and capacity `burst`.
    /// A rate that is not positive and finite is replaced by a tiny one and
    /// a burst below 1 by 1, so the bucket never divides by zero.
    pub fn new(rate: f64, burst: f64, now: f64) -> Self {
        let burst = sane_burst(burst);
        TokenBucket {
            rate: sane_rate(rate),
            burst,
            tokens: burst,
            last: if now.is_finite() { now } else { 0.0 },
        }
    }

    /// Refill rate, tokens per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Capacity.
    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Changes rate and capacity (e.g. after a tier change), keeping the
    /// tokens the bucket has, capped at the new capacity.
    pub fn set_limits(&mut self, rate: f64, burst: f64) {
        self.rate = sane_rate(rate);
        self.burst = sane_burst(burst);
        self.tokens = self.tokens.min(self.burst);
    }

    /// Adds the tokens earned since the last call. Time going backwards (or
    /// a non-finite `now`) earns nothing and does not move `last` back.
    fn refill(&mut self, now: f64) {
        let elapsed = now - self.last;
        if elapsed > 0.0 && elapsed.is_finite() {
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
            self.last = now;
        }
    }

    /// Tokens available at `now` (refilling first).
    pub fn tokens_at(&mut self, now: f64) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Whether the bucket is full at `now`, i.e. forgetting it loses nothing.
    pub fn is_full_at(&mut self, now: f64) -> bool {
        self.tokens_at(now) + EPS >= self.burst
    }

    /// The header state of the bucket as it is now (after the last refill).
    pub fn state(&self) -> RateState {
        let limit = self.burst.floor() as u32;
        let remaining = ((self.tokens + EPS).floor().max(0.0) as u32).min(limit);
        let reset = ceil_secs((self.burst - self.tokens) / self.rate);
        RateState {
            limit,
            remaining,
            reset_secs: u32::try_from(reset).unwrap_or(u32::MAX),
        }
    }

    /// Takes `n` tokens at time `now` (seconds) if the bucket has them.
    ///
    /// Returns the state afterwards, or [`Error::RateLimited`] with the
    /// whole seconds (at least 1) until `n` tokens will be there. A refused
    /// request takes nothing. `n` larger than the burst can never succeed;
    /// its `retry_after_secs` is the time until the bucket is full. `n` that
    /// is negative or not finite counts as 0.
    pub fn try_take(&mut self, now: f64, n: f64) -> Result<RateState> {
        let n = if n.is_finite() && n > 0.0 { n } else { 0.0 };
        self.refill(now);
        if self.tokens + EPS >= n {
            self.tokens = (self.tokens - n).max(0.0);
            return Ok(self.state());
        }
        let deficit = n.min(self.burst) - self.tokens;
        Err(Error::RateLimited {
            retry_after_secs: ceil_secs(deficit / self.rate).max(1),
        })
    }
}

/// The throttling key of a client address: an IPv4 address as it is, an
/// IPv6 address by its /64 prefix (one customer's allocation: a client that
/// can change the low 64 bits at will must not get a fresh bucket for each),
/// and an IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let prefix = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
        },
    }
}

/// Number of independently locked shards of a [`KeyedLimiter`].
const SHARDS: usize = 16;
/// A shard prunes itself when an insert finds at least this many buckets.
const PRUNE_FLOOR: usize = 4_096;

/// One shard's buckets, looked up with the hash that chose the shard.
#[derive(Debug)]
struct Shard {
    buckets: HashTable<(String, TokenBucket)>,
    /// Size at which the next insert prunes full buckets first; doubles
    /// with the live size so the pruning cost stays amortized O(1).
    prune_at: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            buckets: HashTable::new(),
            prune_at: PRUNE_FLOOR,
        }
    }
}

impl Shard {
    fn prune(&mut self, now: f64) -> usize {
        let before = self.buckets.len();
        self.buckets.retain(|(_, b)| !b.is_full_at(now));
        self.prune_at = PRUNE_FLOOR.max(self.buckets.len().saturating_mul(2));
        before - self.buckets.len()
    }

    fn get_mut(&mut self, hash: u64, key: &str) -> Option<&mut TokenBucket> {
        self.buckets
            .find_mut(hash, |(k, _)| k == key)
            .map(|(_, b)| b)
    }
}

/// One [`TokenBucket`] per key, in 16 mutex-guarded shards.
///
/// Each call locks one shard for a few hash-map operations and nothing else.
/// Keys whose bucket has refilled completely carry no information and are
/// dropped by [`prune`](Self::prune) (call it periodically) and, when a
/// shard grows large, automatically on insert, so memory stays bounded by
/// the keys active within one refill period. Use one limiter per purpose
/// (API calls, failed logins, registrations) or prefix the keys.
pub struct KeyedLimiter {
    shards: [Mutex<Shard>; SHARDS],
    hasher: RandomState,
}

impl Default for KeyedLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for KeyedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

impl KeyedLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        KeyedLimiter {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            hasher: RandomState::new(),
        }
    }

    /// `key`'s hash (SipHash, keyed per limiter: keys are client-chosen)
    /// and its shard, locked. The hash picks the shard and finds the
    /// bucket in it.
    fn shard(&self, key: &str) -> (u64, MutexGuard<'_, Shard>) {
        let hash = self.hasher.hash_one(key);
        // The modulo keeps the index below SHARDS, so the narrowing is exact.
        let i = (hash % SHARDS as u64) as usize;
        // A panic while holding the lock cannot leave a bucket invalid, so a
        // poisoned lock is safe to use.
        let shard = self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (hash, shard)
    }

    /// Takes one token from `key`'s bucket (created full at the first call)
    /// with the given `rate` (per second) and `burst` at time `now`.
    /// See [`TokenBucket::try_take`].
    pub fn check(&self, key: &str, rate: f64, burst: f64, now: f64) -> Result<RateState> {
        self.take(key, rate, burst, now, 1.0)
    }

    /// Like [`check`](Self::check) but takes `n` tokens.
    pub fn take(&self, key: &str, rate: f64, burst: f64, now: f64, n: f64) -> Result<RateState> {
        let (hash, mut shard) = self.shard(key);
        if let Some(bucket) = shard.get_mut(hash, key) {
            if bucket.rate != sane_rate(rate) || bucket.burst != sane_burst(burst) {
                bucket.set_limits(rate, burst);
            }
            return bucket.try_take(now, n);
        }
        if shard.buckets.len() >= shard.prune_at {
            shard.prune(now);
        }
        let mut bucket = TokenBucket::new(rate, burst, now);
        let result = bucket.try_take(now, n);
        let hasher = &self.hasher;
        shard
            .buckets
            .insert_unique(hash, (key.to_owned(), bucket), |(k, _)| hasher.hash_one(k));
        result
    }

    /// Whether one token is available for `key`, without taking it or
    /// creating a bucket: for login throttling, check before verifying the
    /// password and [`check`](Self::check) (take) only when it was wrong.
    pub fn peek(&self, key: &str, rate: f64, burst: f64, now: f64) -> Result<RateState> {
        // A copy: the shard's lock is released before the copy is worked on.
        let found = {
            let (hash, mut shard) = self.shard(key);
            shard.get_mut(hash, key).map(|b| *b)
        };
        let mut bucket = match found {
            Some(b) => b,
            None => return Ok(TokenBucket::new(rate, burst, now).state()),
        };
        bucket.set_limits(rate, burst);
        bucket.refill(now);
        let state = bucket.state();
        bucket.try_take(now, 1.0).map(|_| state)
    }

    /// Gives `n` tokens back to `key`'s bucket (capped at its capacity; no
    /// bucket, nothing to do): a login attempt reserves its slot with
    /// [`take`](Self::take) before the password is checked, so concurrent
    /// guesses cannot all pass, and a correct password returns the slot.
    pub fn refund(&self, key: &str, n: f64) {
        let (hash, mut shard) = self.shard(key);
        if let Some(bucket) = shard.get_mut(hash, key) {
            let n = if n.is_finite() && n > 0.0 { n } else { 0.0 };
            bucket.tokens = (bucket.tokens + n).min(bucket.burst);
        }
    }

    /// Forgets `key`'s bucket (e.g. an account's failed-login bucket after a
    /// successful login).
    pub fn reset(&self, key: &str) {
        let (hash, mut shard) = self.shard(key);
        if let Ok(entry) = shard.buckets.find_entry(hash, |(k, _)| k == key) {
            entry.remove();
        }
    }

    /// Drops every bucket that is full at `now`; returns how many.
    pub fn prune(&self, now: f64) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).prune(now))
            .sum()
    }

    /// Number of keys with a bucket.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .buckets
                    .len()
            })
            .sum()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(r: Result<RateState>) -> u64 {
        match r {
            Err(Error::RateLimited { retry_after_secs }) => retry_after_secs,
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        // Free tier: 5/s, burst 10.
        let mut b = TokenBucket::new(5.0, 10.0, 100.0);
        for i in 0..10u32 {
            let s = b.try_take(100.0, 1.0).unwrap();
            assert_eq!(s.limit, 10);
            assert_eq!(s.remaining, 9 - i);
        }
        let s = b.state();
        assert_eq!((s.remaining, s.reset_secs), (0, 2));
        // Empty: refused, and a refusal takes nothing.
        assert_eq!(retry_after(b.try_take(100.0, 1.0)), 1);
        assert_eq!(retry_after(b.try_take(100.1, 1.0)), 1);
        // 0.2 s later one token is back.
        let s = b.try_take(100.2, 1.0).unwrap();
        assert_eq!(s.remaining, 0);
        // 2 s later the bucket is full again (capped at burst).
        assert!(b.is_full_at(102.2));
        assert_eq!(b.try_take(1000.0, 1.0).unwrap().remaining, 9);
    }

    #[test]
    fn retry_after_is_ceiled_and_at_least_one() {
        // 1 token per 10 s.
        let mut b = TokenBucket::new(0.1, 2.0, 0.0);
        b.try_take(0.0, 2.0).unwrap();
        assert_eq!(retry_after(b.try_take(0.0, 1.0)), 10);
        assert_eq!(retry_after(b.try_take(5.5, 1.0)), 5);
        assert_eq!(retry_after(b.try_take(9.99, 1.0)), 1);
        assert!(b.try_take(10.0, 1.0).is_ok());
        // More than the burst can never be taken: retry is time to full.
        let mut b = TokenBucket::new(1.0, 3.0, 0.0);
        assert_eq!(retry_after(b.try_take(0.0, 5.0)), 1);
        b.try_take(0.0, 3.0).unwrap();
        assert_eq!(retry_after(b.try_take(0.0, 5.0)), 3);
        assert_eq!(b.state().reset_secs, 3);
    }

    #[test]
    fn odd_inputs_do_not_panic_or_mint_tokens() {
        let mut b = TokenBucket::new(0.0, 0.0, f64::NAN);
        assert_eq!(b.burst(), 1.0);
        assert!(b.rate() > 0.0);
        b.try_take(0.0, 1.0).unwrap();
        assert!(b.try_take(0.0, 1.0).is_err());
        // Negative n does not add tokens; time going back earns nothing.
        b.try_take(0.0, -5.0).unwrap();
        assert!(b.try_take(-100.0, 1.0).is_err());
        assert!(b.try_take(f64::NAN, 1.0).is_err());
        assert_eq!(b.state().remaining, 0);
        // A tiny rate gives a long but finite reset.
        assert_eq!(b.state().reset_secs, 1_000_000);
    }

    #[test]
    fn header_values() {
        let s = RateState {
            limit: 10,
            remaining: 7,
            reset_secs: 1,
        };
        assert_eq!(s.header_value("default"), "\"default\";r=7;t=1");
    }

    #[test]
    fn keyed_limiter_isolates_keys_and_updates_limits() {
        let l = KeyedLimiter::new();
        for _ in 0..3 {
            l.check("alice", 1.0, 3.0, 0.0).unwrap();
        }
        assert_eq!(retry_after(l.check("alice", 1.0, 3.0, 0.0)), 1);
        assert!(l.check("bob", 1.0, 3.0, 0.0).is_ok());
        assert_eq!(l.len(), 2);
        // A tier upgrade raises the burst; tokens carry over and refill.
        assert!(l.check("alice", 1.0, 10.0, 0.5).is_err());
        // 0.5 tokens at t = 0.5 (the refusal took none), 5 at t = 5, minus one.
        assert_eq!(l.check("alice", 1.0, 10.0, 5.0).unwrap().remaining, 4);
        // n at once.
        assert_eq!(l.take("carol", 1.0, 5.0, 0.0, 5.0).unwrap().remaining, 0);
        assert!(l.take("carol", 1.0, 5.0, 0.0, 1.0).is_err());
    }

    #[test]
    fn keyed_limiter_peek_and_reset() {
        let l = KeyedLimiter::new();
        // Peek on an unknown key admits and creates nothing.
        assert_eq!(l.peek("acct", 0.1, 2.0, 0.0).unwrap().remaining, 2);
        assert!(l.is_empty());
        l.check("acct", 0.1, 2.0, 0.0).unwrap();
        l.check("acct", 0.1, 2.0, 0.0).unwrap();
        assert_eq!(retry_after(l.peek("acct", 0.1, 2.0, 1.0)), 9);
        // Peek does not consume.
        assert!(l.peek("acct", 0.1, 2.0, 10.0).is_ok());
        assert!(l.peek("acct", 0.1, 2.0, 10.0).is_ok());
        assert!(l.check("acct", 0.1, 2.0, 10.0).is_ok());
        assert!(l.check("acct", 0.1, 2.0, 10.0).is_err());
        l.reset("acct");
        assert!(l.is_empty());
        assert!(l.check("acct", 0.1, 2.0, 10.0).is_ok());
    }

    #[test]
    fn refund_returns_a_reserved_slot_up_to_the_capacity() {
        let l = KeyedLimiter::new();
        l.refund("nobody", 1.0); // no bucket: nothing created
        assert!(l.is_empty());
        for _ in 0..3 {
            l.check("k", 0.001, 3.0, 0.0).unwrap();
        }
        assert!(l.check("k", 0.001, 3.0, 0.0).is_err());
        l.refund("k", 1.0);
        assert!(l.check("k", 0.001, 3.0, 0.0).is_ok());
        assert!(l.check("k", 0.001, 3.0, 0.0).is_err());
        // Never above the capacity, whatever is given back.
        l.refund("k", 100.0);
        l.refund("k", f64::NAN);
        for _ in 0..3 {
            l.check("k", 0.001, 3.0, 0.0).unwrap();
        }
        assert!(l.check("k", 0.001, 3.0, 0.0).is_err());
    }

    #[test]
    fn address_keys_group_ipv6_per_64() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            key("2001:db8:1:2::")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("203.0.113.7"), key("203.0.113.8"));
    }

    #[test]
    fn prune_drops_only_full_buckets() {
        let l = KeyedLimiter::new();
        for i in 0..100 {
            l.check(&format!("ip{i}"), 1.0, 10.0, 0.0).unwrap();
        }
        l.take("busy", 1.0, 10.0, 5.0, 10.0).unwrap();
        assert_eq!(l.len(), 101);
        // At t = 0.5 nothing is full yet.
        assert_eq!(l.prune(0.5), 0);
        // At t = 1 the single-token buckets are full; "busy" is not.
        assert_eq!(l.prune(1.0), 100);
        assert_eq!(l.len(), 1);
        assert_eq!(l.prune(15.0), 1);
        assert!(l.is_empty());
    }

    #[test]
    fn shards_prune_themselves_when_large() {
        let l = KeyedLimiter::new();
        let n = SHARDS * PRUNE_FLOOR * 2;
        for i in 0..n {
            // Each key's bucket is full again one second later.
            l.check(&i.to_string(), 1.0, 10.0, i as f64 / 1000.0)
                .unwrap();
        }
        assert!(l.len() < n, "{} of {n} buckets kept", l.len());
    }

    #[test]
    fn concurrent_checks_admit_exactly_the_burst() {
        let l = KeyedLimiter::new();
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let l = &l;
                    s.spawn(move || {
                        (0..50)
                            .filter(|_| l.check("k", 1.0, 100.0, 0.0).is_ok())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 100);
    }
}
