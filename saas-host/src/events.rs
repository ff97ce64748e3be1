//! Live model events: one tokio broadcast channel per watched model. Update
//! handlers publish pre-rendered server-sent-event frames after a successful
//! update; `GET /models/{id}/events` subscribers forward them. A model with
//! no subscriber has no channel, so publishing costs one map lookup.

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;
use tokio::sync::broadcast;

/// Frames buffered per model for slow subscribers (older ones are dropped
/// for a subscriber that falls behind; it is told with a `lagged` event).
const CAPACITY: usize = 256;

/// The per-model channels.
#[derive(Default)]
pub struct EventHub {
    channels: RwLock<HashMap<String, broadcast::Sender<Bytes>>>,
}

impl EventHub {
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
