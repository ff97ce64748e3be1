//! The change feed: how server instances sharing one database hear of each
//! other's changes at once, instead of after a cache lifetime.
//!
//! A host caches authenticated users, API keys and model facts, and keeps
//! event streams in its own memory. With one process per database (memory,
//! SQLite) its own changes are all there are, and it invalidates directly:
//! those stores have no feed ([`Store::change_feed`](super::Store::change_feed)
//! returns `None`). The PostgreSQL store announces every change in the
//! transaction that makes it (LISTEN/NOTIFY), so a notice is delivered only
//! if, and as soon as, the change commits; each instance's feed hands the
//! notices to a [`ChangeSink`]. The feed also carries live model events
//! between instances ([`ChangeFeed::publish`]) for models some other
//! instance streams ([`ChangeFeed::watch`]).

use std::sync::Arc;

use crate::error::Result;

/// A change another instance (or this one) made, as the feed reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A user's password, tier, role or API keys changed: forget what is
    /// cached of the user and their keys.
    User(String),
    /// A model's name, configuration or existence changed: forget what is
    /// cached of it.
    Model(String),
    /// Notices may have been missed (the feed's connection was lost and is
    /// back): forget everything cached.
    All,
    /// Live events another instance published for a model this instance
    /// watches: server-sent-event frames, ready to forward.
    Event {
        /// The model.
        model_id: String,
        /// One or more complete frames.
        frames: String,
    },
}

/// Where a feed delivers changes (called on the feed's own thread; must not
/// block for long).
pub type ChangeSink = Arc<dyn Fn(Change) + Send + Sync>;

/// A running change feed (it stops when dropped).
pub trait ChangeFeed: Send + Sync {
    /// This instance streams `model_id`'s events to a subscriber: other
    /// instances start publishing the model's updates (counted: call
    /// [`unwatch`](Self::unwatch) once per `watch`). Blocks until the other
    /// instances have been told (one database round trip).
    fn watch(&self, model_id: &str) -> Result<()>;
    /// A subscriber of `model_id` left (see [`watch`](Self::watch)).
    fn unwatch(&self, model_id: &str);
    /// Whether another instance streams `model_id`'s events: then updates
    /// made here are [`publish`](Self::publish)ed.
    fn watched_elsewhere(&self, model_id: &str) -> bool;
    /// Sends event `frames` of `model_id` to the other instances that
    /// watch it (blocks: one database round trip).
    fn publish(&self, model_id: &str, frames: &str) -> Result<()>;
}

/// What a redeemed event-stream ticket grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketGrant {
    /// Who asked for it.
    pub user_id: String,
    /// The model whose stream it opens.
    pub model_id: String,
    /// The credential that asked (checked again while the stream runs).
    pub credential: String,
}

/// Event-stream tickets every instance sharing the store can redeem, each
/// exactly once: a ticket issued by one instance opens a stream on any.
pub trait SharedTickets: Send + Sync {
    /// Records a fresh ticket (returned; 256 random bits) for `user_id`'s
    /// stream of `model_id`, valid for `ttl`, keeping at most `per_user`
    /// outstanding per user (the oldest dropped). Only the ticket's hash is
    /// stored, and the credential only sealed with a key derived from the
    /// ticket, so the stored rows open nothing.
    fn issue(
        &self,
        user_id: &str,
        model_id: &str,
        credential: &str,
        ttl: std::time::Duration,
        per_user: usize,
    ) -> Result<String>;
    /// Uses `ticket` up: what it grants if it exists and has not expired.
    /// Gone after this call whatever the outcome, on every instance.
    fn redeem(&self, ticket: &str) -> Result<Option<TicketGrant>>;
}

/// What [`SharedStreams::open`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamPlace {
    /// A place, by id (give it back with [`SharedStreams::close`]).
    Opened(String),
    /// The user already holds this many streams on all instances.
    UserFull(u32),
    /// The model already has this many streams on all instances.
    ModelFull(u32),
}

/// The open event streams of every instance sharing the store, so the
/// per-user and per-model caps hold across instances. Each place is a
/// lease its instance renews ([`SharedStreams::renew`]); the places of an
/// instance that died stop counting when their lease ends.
pub trait SharedStreams: Send + Sync {
    /// Takes a place for a stream of `user_id` on `model_id`, unless the
    /// user holds `per_user` or the model has `per_model` live places.
    fn open(
        &self,
        user_id: &str,
        model_id: &str,
        per_user: u32,
        per_model: u32,
    ) -> Result<StreamPlace>;
    /// Gives a place back.
    fn close(&self, place: &str) -> Result<()>;
    /// Renews the leases of this instance's places (call more often than
    /// they last).
    fn renew(&self) -> Result<()>;
}
