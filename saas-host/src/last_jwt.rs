//! Each thread's last few JWT authentications, checked before the shared
//! caches of `App::authenticate`.
//!
//! A request with a JWT otherwise takes two read locks shared by every
//! worker (the verified tokens, the users), hashes the ~200-byte token and
//! copies it into a new `Arc<str>`: about 700 instructions, and on more
//! than one worker cache lines that move between cores on every request.
//! An entry here answers with the same user and credential while
//! everything the shared path checks still holds: the same server
//! (`App::id`), no forget since (the server's epoch), the token unexpired,
//! and the user's cache entry within its time to live.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qlearn_core::store::User;

/// Entries per thread (most threads serve one or a few users at a time).
const ENTRIES: usize = 4;

/// One remembered authentication.
struct Entry {
    /// The server it was made by (`App::id`).
    app: u64,
    /// The server's epoch when the authentication began.
    epoch: u64,
    token: Arc<str>,
    user: Arc<User>,
    /// The token's expiry, Unix seconds.
    exp: i64,
    /// When the user's cache entry was read from the store.
    cached_at: Instant,
}

#[derive(Default)]
struct Recent {
    entries: [Option<Entry>; ENTRIES],
    /// The slot the next new entry takes.
    next: usize,
}

thread_local! {
    static RECENT: RefCell<Recent> = RefCell::new(Recent::default());
}

/// The user and credential of `token` if this thread authenticated it for
/// server `app` at `epoch`, the token is unexpired at `now` (Unix
/// seconds) and the user was read from the store less than `ttl` ago.
pub fn lookup(
    app: u64,
    epoch: u64,
    token: &[u8],
    now: i64,
    ttl: Duration,
) -> Option<(Arc<User>, Arc<str>)> {
    RECENT.with_borrow(|r| {
        let e = r
            .entries
            .iter()
            .flatten()
            .find(|e| e.app == app && e.token.as_bytes() == token)?;
        let fresh = e.epoch == epoch && e.exp > now && e.cached_at.elapsed() < ttl;
        fresh.then(|| (e.user.clone(), e.token.clone()))
    })
}

/// Remembers that `token` authenticated `user` for server `app`, in an
/// authentication that began at `epoch`.
pub fn keep(app: u64, epoch: u64, token: Arc<str>, user: Arc<User>, exp: i64, cached_at: Instant) {
    RECENT.with_borrow_mut(|r| {
        let entry = Entry {
            app,
            epoch,
            token,
            user,
            exp,
            cached_at,
        };
        let same = r.entries.iter().position(|e| {
            e.as_ref()
                .is_some_and(|e| e.app == app && e.token == entry.token)
        });
        let slot = same.unwrap_or_else(|| {
            let s = r.next;
            r.next = (s + 1) % ENTRIES;
            s
        });
        r.entries[slot] = Some(entry);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Arc<User> {
        Arc::new(User {
            id: id.into(),
            email: format!("{id}@example.com"),
            password_hash: String::new(),
            tier: qlearn_core::tenancy::Tier::Free,
            role: qlearn_core::tenancy::Role::User,
            created_at: 0,
            password_changed_at: 0,
            disabled: false,
        })
    }

    #[test]
    fn an_entry_answers_only_while_everything_still_holds() {
        let ttl = Duration::from_secs(60);
        let t: Arc<str> = "token-a".into();
        keep(1, 7, t.clone(), user("u1"), 1_000, Instant::now());
        let hit = lookup(1, 7, b"token-a", 999, ttl).expect("fresh");
        assert_eq!(hit.0.id, "u1");
        assert_eq!(&*hit.1, "token-a");
        assert!(
            lookup(2, 7, b"token-a", 999, ttl).is_none(),
            "another server"
        );
        assert!(
            lookup(1, 8, b"token-a", 999, ttl).is_none(),
            "forgotten since"
        );
        assert!(lookup(1, 7, b"token-a", 1_000, ttl).is_none(), "expired");
        assert!(
            lookup(1, 7, b"token-b", 999, ttl).is_none(),
            "another token"
        );
        let old = Instant::now() - Duration::from_secs(61);
        keep(1, 7, t, user("u1"), 1_000, old);
        assert!(lookup(1, 7, b"token-a", 999, ttl).is_none(), "past the ttl");
    }

    #[test]
    fn the_oldest_entry_makes_room() {
        let ttl = Duration::from_secs(60);
        for i in 0..=ENTRIES {
            let token: Arc<str> = format!("t{i}").into();
            keep(3, 0, token, user(&format!("u{i}")), 10, Instant::now());
        }
        assert!(lookup(3, 0, b"t0", 1, ttl).is_none(), "t0 made room");
        for i in 1..=ENTRIES {
            let hit = lookup(3, 0, format!("t{i}").as_bytes(), 1, ttl).expect("kept");
            assert_eq!(hit.0.id, format!("u{i}"));
        }
        // Kept again, a token takes its own slot, not another's.
        keep(3, 0, "t1".into(), user("u1b"), 10, Instant::now());
        assert_eq!(lookup(3, 0, b"t1", 1, ttl).expect("kept").0.id, "u1b");
        assert!(lookup(3, 0, format!("t{ENTRIES}").as_bytes(), 1, ttl).is_some());
    }
}
