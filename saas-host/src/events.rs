//! Live model events: one tokio broadcast channel per watched model. Update
//! handlers publish pre-rendered server-sent-event frames after a successful
//! update; `GET /models/{id}/events` subscribers forward them. A model with
//! no subscriber has no channel, so publishing costs one map lookup.
//!
//! Also what keeps event streams honest: the open streams counted per user
//! and per model ([`EventHub::open`], refused over the caps), a signal that
//! tells a user's streams to check their credential now (after a password
//! change or a key deletion, [`EventHub::recheck_user`]), and the short-lived
//! single-use [`Tickets`] a browser opens a stream with instead of putting a
//! long-lived credential in the URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use qlearn_core::store::{ChangeFeed, SharedStreams, SharedTickets};
use qlearn_core::tenancy::generate_secret;
use tokio::sync::{broadcast, watch};

/// Frames buffered per model for slow subscribers (older ones are dropped
/// for a subscriber that falls behind; it is told with a `lagged` event).
const CAPACITY: usize = 256;

/// The per-model channels and the open streams.
#[derive(Default)]
pub struct EventHub {
    channels: RwLock<HashMap<String, broadcast::Sender<Bytes>>>,
    open: Mutex<Open>,
}

/// Open streams per user and per model.
#[derive(Default)]
struct Open {
    users: HashMap<String, UserStreams>,
    models: HashMap<String, u32>,
}

struct UserStreams {
    count: u32,
    /// Bumped to make the user's streams check their credential now.
    recheck: watch::Sender<u64>,
}

/// Which cap refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCap {
    /// The user already holds this many streams (their tier's limit).
    User(u32),
    /// The model already has this many streams (the server's limit).
    Model(u32),
}

/// One open stream's place in the counts; dropping it frees the place.
pub struct StreamSlot {
    hub: Arc<EventHub>,
    user_id: String,
    model_id: String,
    /// Changes when the user's streams must check their credential.
    pub recheck: watch::Receiver<u64>,
    /// Its place among every instance's streams, when they are counted in
    /// the shared store.
    pub shared: Option<SharedPlace>,
}

/// A stream's place in the shared store's counts (given back when dropped,
/// off the async executor).
pub struct SharedPlace {
    streams: Arc<dyn SharedStreams>,
    id: String,
}

impl SharedPlace {
    /// The place `id` taken in `streams`.
    pub fn new(streams: Arc<dyn SharedStreams>, id: String) -> Self {
        SharedPlace { streams, id }
    }
}

impl Drop for SharedPlace {
    fn drop(&mut self) {
        let (streams, id) = (self.streams.clone(), std::mem::take(&mut self.id));
        let close = move || {
            if let Err(e) = streams.close(&id) {
                tracing::warn!(error = %e, "giving back a stream place failed (its lease ends it)");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(close)),
            Err(_) => close(),
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut o = self.hub.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = o.users.get_mut(&self.user_id) {
            u.count -= 1;
            if u.count == 0 {
                o.users.remove(&self.user_id);
            }
        }
        if let Some(n) = o.models.get_mut(&self.model_id) {
            *n -= 1;
            if *n == 0 {
                o.models.remove(&self.model_id);
            }
        }
    }
}

impl EventHub {
    /// Takes a place for a stream of `user_id` on `model_id`, unless the
    /// user already holds `per_user` streams or the model has `per_model`
    /// (counted on this instance).
    pub fn open(
        self: &Arc<Self>,
        user_id: &str,
        model_id: &str,
        per_user: u32,
        per_model: u32,
    ) -> Result<StreamSlot, StreamCap> {
        let mut o = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let held = o.users.get(user_id).map_or(0, |u| u.count);
        if held >= per_user {
            return Err(StreamCap::User(per_user));
        }
        if o.models.get(model_id).copied().unwrap_or(0) >= per_model {
            return Err(StreamCap::Model(per_model));
        }
        *o.models.entry(model_id.to_owned()).or_insert(0) += 1;
        let u = o
            .users
            .entry(user_id.to_owned())
            .or_insert_with(|| UserStreams {
                count: 0,
                recheck: watch::Sender::new(0),
            });
        u.count += 1;
        let recheck = u.recheck.subscribe();
        Ok(StreamSlot {
            hub: self.clone(),
            user_id: user_id.to_owned(),
            model_id: model_id.to_owned(),
            recheck,
            shared: None,
        })
    }

    /// Tells `user_id`'s open streams to check their credential now.
    pub fn recheck_user(&self, user_id: &str) {
        let o = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = o.users.get(user_id) {
            u.recheck.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Tells every open stream to check its credential now (notices of
    /// other instances' changes may have been missed).
    pub fn recheck_all(&self) {
        let o = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for u in o.users.values() {
            u.recheck.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Subscribes to `model_id`'s events.
    pub fn subscribe(&self, model_id: &str) -> broadcast::Receiver<Bytes> {
        let mut ch = self.channels.write().unwrap_or_else(|p| p.into_inner());
        match ch.get(model_id) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(CAPACITY);
                ch.insert(model_id.to_owned(), tx);
                rx
            }
        }
    }

    /// The sender of `model_id` when someone listens.
    pub fn sender(&self, model_id: &str) -> Option<broadcast::Sender<Bytes>> {
        let ch = self.channels.read().unwrap_or_else(|p| p.into_inner());
        ch.get(model_id)
            .filter(|tx| tx.receiver_count() > 0)
            .cloned()
    }

    /// Drops `model_id`'s channel once nobody listens (called when a
    /// subscriber leaves).
    pub fn release(&self, model_id: &str) {
        let mut ch = self.channels.write().unwrap_or_else(|p| p.into_inner());
        if ch.get(model_id).is_some_and(|tx| tx.receiver_count() == 0) {
            ch.remove(model_id);
        }
    }

    /// Whether anyone watches `model_id`.
    pub fn has_subscribers(&self, model_id: &str) -> bool {
        self.sender(model_id).is_some()
    }
}

/// One stream's watch of a model announced to the other instances through
/// the change feed (so they publish its updates); withdrawn when dropped.
pub struct RemoteWatch {
    feed: Arc<dyn ChangeFeed>,
    model_id: String,
}

impl RemoteWatch {
    /// Announces the watch (blocks: one database round trip).
    pub fn start(feed: Arc<dyn ChangeFeed>, model_id: &str) -> qlearn_core::Result<RemoteWatch> {
        feed.watch(model_id)?;
        Ok(RemoteWatch {
            feed,
            model_id: model_id.to_owned(),
        })
    }
}

impl Drop for RemoteWatch {
    fn drop(&mut self) {
        self.feed.unwatch(&self.model_id);
    }
}

/// An SSE frame: `event: NAME\ndata: JSON\n\n`.
pub fn frame(event: &str, data: &str) -> Bytes {
    let mut s = String::with_capacity(event.len() + data.len() + 16);
    s.push_str("event: ");
    s.push_str(event);
    s.push_str("\ndata: ");
    s.push_str(data);
    s.push_str("\n\n");
    Bytes::from(s)
}

/// Outstanding tickets one user may hold (issuing another drops their oldest).
const TICKETS_PER_USER: usize = 8;

/// A ticket's grant: a stream of one model for the credential that asked.
struct Ticket {
    user_id: String,
    model_id: String,
    /// The credential that asked (checked again when the ticket is used and
    /// while its stream runs). Never logged.
    credential: Arc<str>,
    expires: Instant,
}

/// What a redeemed ticket grants.
pub struct Redeemed {
    /// The model the ticket was issued for.
    pub model_id: String,
    /// The credential that asked for it.
    pub credential: Arc<str>,
}

/// Short-lived, single-use tickets for `GET /models/{id}/events?ticket=`.
///
/// A ticket is 256 random bits, bound to the user and the model, valid for
/// the configured `event_ticket_ttl` and used at most once; at most
/// `TICKETS_PER_USER` (8) are outstanding per user. Kept in this instance's
/// memory (bounded by the active users), or, when instances share the
/// store, in the store (`SharedTickets`): issued by one instance, usable
/// once on any.
#[derive(Default)]
pub struct Tickets {
    by_ticket: Mutex<HashMap<String, Ticket>>,
    shared: Option<Arc<dyn SharedTickets>>,
}

impl Tickets {
    /// Tickets in memory, or in `shared` when instances share the store.
    pub fn new(shared: Option<Arc<dyn SharedTickets>>) -> Self {
        Tickets {
            by_ticket: Mutex::default(),
            shared,
        }
    }

    /// Issues a ticket for `user_id`'s stream of `model_id`, valid for `ttl`
    /// (blocks on the store when shared).
    pub fn issue(
        &self,
        user_id: &str,
        model_id: &str,
        credential: Arc<str>,
        ttl: Duration,
    ) -> qlearn_core::Result<String> {
        if let Some(s) = &self.shared {
            return s.issue(user_id, model_id, &credential, ttl, TICKETS_PER_USER);
        }
        let ticket = generate_secret();
        let now = Instant::now();
        let mut m = self.by_ticket.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, t| t.expires > now);
        let mut mine: Vec<(Instant, String)> = m
            .iter()
            .filter(|(_, t)| t.user_id == user_id)
            .map(|(k, t)| (t.expires, k.clone()))
            .collect();
        if mine.len() >= TICKETS_PER_USER {
            mine.sort();
            for (_, k) in &mine[..=mine.len() - TICKETS_PER_USER] {
                m.remove(k);
            }
        }
        m.insert(
            ticket.clone(),
            Ticket {
                user_id: user_id.to_owned(),
                model_id: model_id.to_owned(),
                credential,
                expires: now + ttl,
            },
        );
        Ok(ticket)
    }

    /// Uses `ticket` up: what it grants if it exists and has not expired.
    /// A ticket is gone after this call whatever the outcome (blocks on the
    /// store when shared).
    pub fn redeem(&self, ticket: &str) -> qlearn_core::Result<Option<Redeemed>> {
        if let Some(s) = &self.shared {
            return Ok(s.redeem(ticket)?.map(|g| Redeemed {
                model_id: g.model_id,
                credential: g.credential.into(),
            }));
        }
        Ok(self.redeem_local(ticket))
    }

    fn redeem_local(&self, ticket: &str) -> Option<Redeemed> {
        let t = self
            .by_ticket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ticket)?;
        (t.expires > Instant::now()).then_some(Redeemed {
            model_id: t.model_id,
            credential: t.credential,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_open_streams_and_free_them_on_drop() {
        let hub = Arc::new(EventHub::default());
        let a = hub.open("u", "m1", 2, 5).unwrap();
        let _b = hub.open("u", "m2", 2, 5).unwrap();
        assert_eq!(hub.open("u", "m3", 2, 5).err(), Some(StreamCap::User(2)));
        let _c = hub.open("v", "m1", 2, 2).unwrap();
        assert_eq!(hub.open("w", "m1", 2, 2).err(), Some(StreamCap::Model(2)));
        drop(a);
        assert!(hub.open("u", "m3", 2, 5).is_ok());
        assert!(hub.open("w", "m1", 2, 2).is_ok());
    }

    #[test]
    fn recheck_reaches_only_that_users_streams() {
        let hub = Arc::new(EventHub::default());
        let mut a = hub.open("u", "m", 9, 9).unwrap();
        let mut b = hub.open("v", "m", 9, 9).unwrap();
        hub.recheck_user("u");
        assert!(a.recheck.has_changed().unwrap());
        assert!(!b.recheck.has_changed().unwrap());
        a.recheck.mark_unchanged();
        b.recheck.mark_unchanged();
    }

    #[test]
    fn tickets_are_single_use_bounded_and_expire() {
        let t = Tickets::default();
        let cred: Arc<str> = "secret".into();
        let x = t
            .issue("u", "m", cred.clone(), Duration::from_secs(30))
            .unwrap();
        let got = t.redeem(&x).unwrap().unwrap();
        assert_eq!((got.model_id.as_str(), &*got.credential), ("m", "secret"));
        assert!(t.redeem(&x).unwrap().is_none(), "single use");
        let late = t.issue("u", "m", cred.clone(), Duration::ZERO).unwrap();
        assert!(t.redeem(&late).unwrap().is_none(), "expired");
        let all: Vec<String> = (0..TICKETS_PER_USER + 3)
            .map(|_| {
                t.issue("u", "m", cred.clone(), Duration::from_secs(30))
                    .unwrap()
            })
            .collect();
        assert_eq!(t.by_ticket.lock().unwrap().len(), TICKETS_PER_USER);
        assert!(
            t.redeem(&all[0]).unwrap().is_none(),
            "the oldest was dropped"
        );
        assert!(t.redeem(&all[all.len() - 1]).unwrap().is_some());
    }
}
