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
