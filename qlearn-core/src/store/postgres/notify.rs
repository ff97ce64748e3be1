//! LISTEN/NOTIFY for [`PgStore`]: the notices each change writes in its own
//! transaction, and the change feed ([`PgFeed`]) every instance runs on a
//! dedicated connection and thread.
//!
//! One channel per schema (`qlearn_` and 16 hex digits of the schema name's
//! SHA-256, so stores in other schemas of the database stay apart). A
//! payload is a kind and ids, never a secret:
//!
//! | payload | sent by | means |
//! |---|---|---|
//! | `u:USER` | the change's transaction | user's password, tier, role or keys changed |
//! | `m:MODEL` | the change's transaction | model renamed, reconfigured, deleted or imported |
//! | `w:INST:M1,M2` | an instance | INST streams these models' events (repeated every [`ANNOUNCE_EVERY`]) |
//! | `x:INST:MODEL` | an instance | INST stopped streaming the model |
//! | `r:INST` | an instance whose feed (re)connected | everyone: announce your models again |
//! | `p:INST:MODEL:I:TEXT`, `e:INST:MODEL:I:TEXT` | a publishing instance | event frames in pieces of at most [`PIECE_MAX`] bytes numbered `I` from 0, `e` the last |
//!
//! PostgreSQL delivers a transaction's notices only when it commits, in
//! commit order, those of one transaction together and in order (equal
//! payloads of one transaction only once: hence the piece numbers); so the
//! pieces of one publication arrive contiguous and a cache is dropped only
//! once the change is visible to the reads that refill it. A notice is in
//! the listener's hands a network round trip after the commit. A lost
//! connection may lose notices: the feed reconnects (backoff from
//! 100 ms to 5 s) and then reports [`Change::All`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Transaction};
use r2d2::ManageConnection;

use super::pool::Manager;
use super::{lock_plain, pg, pool_conn, BACKEND};
use crate::error::{Error, Result};
use crate::store::changes::{Change, ChangeFeed, ChangeSink};
use crate::tenancy::{hash_api_key, new_id};

/// Most bytes of event text per notice (PostgreSQL's payload limit is
/// 8000 bytes; the rest is the header).
pub(super) const PIECE_MAX: usize = 7_000;
/// How often an instance repeats which models it streams.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(10);
/// How long an announcement counts without being repeated (an instance
/// that died stops being published to after this).
pub const WATCH_TTL: Duration = Duration::from_secs(35);
/// Longest wait of the listener for a notice before it looks at its other
/// duties (stopping, announcing).
const TICK: Duration = Duration::from_millis(100);
/// How long [`PgFeed::start`] waits for the feed to listen.
const READY_WAIT: Duration = Duration::from_secs(10);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Notices handled per wake-up at most (then the other duties run).
const BURST: usize = 512;

/// The notification channel of the store in `schema`.
pub(super) fn channel_of(schema: &str) -> String {
    format!("qlearn_{}", &hash_api_key(schema)[..16])
}

/// Queues `payload` on `channel` in `tx`: delivered when `tx` commits.
fn notify_in(tx: &mut Transaction<'_>, channel: &str, payload: &str) -> Result<()> {
    tx.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
        .map_err(pg)?;
    Ok(())
}

fn notify_client(c: &mut Client, channel: &str, payload: &str) -> Result<()> {
    c.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
        .map_err(pg)?;
    Ok(())
}

/// Tells every instance, when `tx` commits, that `user_id` changed.
pub(super) fn user_changed(tx: &mut Transaction<'_>, channel: &str, user_id: &str) -> Result<()> {
    notify_in(tx, channel, &format!("u:{user_id}"))
}

/// Tells every instance, when `tx` commits, that `model_id` changed.
pub(super) fn model_changed(tx: &mut Transaction<'_>, channel: &str, model_id: &str) -> Result<()> {
    notify_in(tx, channel, &format!("m:{model_id}"))
}

/// `text` cut into pieces of at most `max` bytes, on character boundaries.
fn pieces(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

/// What the feed's thread and its handle share.
struct Shared {
    channel: String,
    /// This instance's id in `w`/`x`/`r`/`p`/`e` notices.
    me: String,
    stop: AtomicBool,
    /// Models streamed here, with their subscriber counts.
    local: Mutex<HashMap<String, u32>>,
    /// Models streamed elsewhere: model → instance → last announcement.
    remote: Mutex<HashMap<String, HashMap<String, Instant>>>,
    /// `x` notices to send (from [`ChangeFeed::unwatch`], which must not
    /// block).
    unwatched: Mutex<Vec<String>>,
}

/// [`PgStore`](super::PgStore)'s change feed: see the module docs. Stops
/// (its thread ends within [`TICK`]) when dropped.
pub(super) struct PgFeed {
    shared: Arc<Shared>,
    pool: r2d2::Pool<Manager>,
}

impl Drop for PgFeed {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl PgFeed {
    /// Starts the feed: a thread with its own connection (made like the
    /// pool's) that LISTENs and hands what it hears to `sink`. Returns once
    /// it listens (or after [`READY_WAIT`], still trying, if the database
    /// does not answer), so what this instance announces next is answered
    /// to a listening feed.
    pub(super) fn start(
        manager: Manager,
        pool: r2d2::Pool<Manager>,
        channel: String,
        sink: ChangeSink,
    ) -> Result<PgFeed> {
        let shared = Arc::new(Shared {
            channel,
            me: new_id(),
            stop: AtomicBool::new(false),
            local: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            unwatched: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let (ready_tx, ready) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("qlearn-pg-feed".into())
            .spawn(move || listen_loop(&s, &manager, &sink, &ready_tx))
            .map_err(|e| Error::storage(BACKEND, format!("cannot start the change feed: {e}")))?;
        let _ = ready.recv_timeout(READY_WAIT);
        Ok(PgFeed { shared, pool })
    }

    fn notify_now(&self, payloads: &[String]) -> Result<()> {
        let mut c = pool_conn(&self.pool)?;
        let mut tx = c.client.transaction().map_err(pg)?;
        for p in payloads {
            notify_in(&mut tx, &self.shared.channel, p)?;
        }
        tx.commit().map_err(pg)
    }
}

impl ChangeFeed for PgFeed {
    fn watch(&self, model_id: &str) -> Result<()> {
        let first = {
            let mut local = lock_plain(&self.shared.local);
            let n = local.entry(model_id.to_owned()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            let me = &self.shared.me;
            self.notify_now(&[format!("w:{me}:{model_id}")])?;
        }
        Ok(())
    }

    fn unwatch(&self, model_id: &str) {
        let mut local = lock_plain(&self.shared.local);
        if let Some(n) = local.get_mut(model_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                local.remove(model_id);
                lock_plain(&self.shared.unwatched).push(model_id.to_owned());
            }
        }
    }

    fn watched_elsewhere(&self, model_id: &str) -> bool {
        lock_plain(&self.shared.remote)
            .get(model_id)
            .is_some_and(|by| by.values().any(|at| at.elapsed() < WATCH_TTL))
    }

    fn publish(&self, model_id: &str, frames: &str) -> Result<()> {
        let me = &self.shared.me;
        let parts = pieces(frames, PIECE_MAX);
        let last = parts.len() - 1;
        let payloads: Vec<String> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let kind = if i == last { 'e' } else { 'p' };
                format!("{kind}:{me}:{model_id}:{i}:{p}")
            })
            .collect();
        self.notify_now(&payloads)
    }
}

/// Connects, listens and serves until stopped, reconnecting with backoff.
fn listen_loop(shared: &Shared, manager: &Manager, sink: &ChangeSink, ready: &SyncSender<()>) {
    let mut backoff = BACKOFF_MIN;
    while !shared.stop.load(Ordering::SeqCst) {
        let mut heard = false;
        // Errors end this connection; the loop makes another.
        let _ = listen_once(shared, manager, sink, ready, &mut heard);
        if heard {
            backoff = BACKOFF_MIN;
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(TICK.min(backoff));
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's life: LISTEN, report [`Change::All`] (notices before
/// the LISTEN were not heard), ask the others to announce, then handle
/// notices until stopped (`Ok`) or the connection fails (`Err`).
fn listen_once(
    shared: &Shared,
    manager: &Manager,
    sink: &ChangeSink,
    ready: &SyncSender<()>,
    connected: &mut bool,
) -> Result<()> {
    let mut conn = manager.connect().map_err(pg)?;
    let c = &mut conn.client;
    c.batch_execute(&format!("LISTEN \"{}\"", shared.channel))
        .map_err(pg)?;
    *connected = true;
    let _ = ready.try_send(());
    sink(Change::All);
    lock_plain(&shared.remote).clear();
    notify_client(c, &shared.channel, &format!("r:{}", shared.me))?;
    let mut state = Listener {
        shared,
        sink,
        partial: HashMap::new(),
        announce: true,
    };
    let mut last_announce = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        if state.announce || last_announce.elapsed() >= ANNOUNCE_EVERY {
            announce(c, shared)?;
            state.announce = false;
            last_announce = Instant::now();
            lock_plain(&shared.remote).retain(|_, by| {
                by.retain(|_, at| at.elapsed() < WATCH_TTL);
                !by.is_empty()
            });
        }
        let gone: Vec<String> = std::mem::take(&mut *lock_plain(&shared.unwatched));
        for m in gone {
            notify_client(c, &shared.channel, &format!("x:{}:{m}", shared.me))?;
        }
        let mut heard = Vec::new();
        {
            // Wait for one notice, then take whatever else is pending.
            let mut notes = c.notifications();
            let first = notes.timeout_iter(TICK).next().map_err(pg)?;
            if let Some(n) = first {
                heard.push(n.payload().to_owned());
                let mut pending = notes.iter();
                while heard.len() < BURST {
                    match pending.next().map_err(pg)? {
                        Some(n) => heard.push(n.payload().to_owned()),
                        None => break,
                    }
                }
            }
        }
        if c.is_closed() {
            return Err(Error::storage(
                BACKEND,
                "the change feed's connection closed",
            ));
        }
        for p in &heard {
            state.handle(p);
        }
    }
    Ok(())
}

/// Tells the others which models this instance streams (in notices of at
/// most [`PIECE_MAX`] bytes of ids).
fn announce(c: &mut Client, shared: &Shared) -> Result<()> {
    let models: Vec<String> = lock_plain(&shared.local).keys().cloned().collect();
    let mut line = String::new();
    for m in models {
        if !line.is_empty() && line.len() + m.len() + 1 > PIECE_MAX {
            notify_client(c, &shared.channel, &format!("w:{}:{line}", shared.me))?;
            line.clear();
        }
        if !line.is_empty() {
            line.push(',');
        }
        line.push_str(&m);
    }
    if !line.is_empty() {
        notify_client(c, &shared.channel, &format!("w:{}:{line}", shared.me))?;
    }
    Ok(())
}

/// What the listener keeps between notices.
struct Listener<'a> {
    shared: &'a Shared,
    sink: &'a ChangeSink,
    /// Event text received so far per (instance, model), with the number
    /// of the next piece.
    partial: HashMap<(String, String), (usize, String)>,
    /// Whether to announce our models at the next turn.
    announce: bool,
}

impl Listener<'_> {
    /// Acts on one notice (unknown or malformed ones are ignored: they are
    /// from another version or not ours).
    fn handle(&mut self, payload: &str) {
        let Some((kind, rest)) = payload.split_once(':') else {
            return;
        };
        match kind {
            "u" => (self.sink)(Change::User(rest.to_owned())),
            "m" => (self.sink)(Change::Model(rest.to_owned())),
            "r" => self.announce |= rest != self.shared.me,
            _ => {
                let Some((inst, rest)) = rest.split_once(':') else {
                    return;
                };
                if inst == self.shared.me {
                    return;
                }
                self.handle_other(kind, inst, rest);
            }
        }
    }

    /// A notice another instance sent about the models it streams or the
    /// events it publishes.
    fn handle_other(&mut self, kind: &str, inst: &str, rest: &str) {
        match kind {
            "w" => {
                let now = Instant::now();
                let mut remote = lock_plain(&self.shared.remote);
                for m in rest.split(',').filter(|m| !m.is_empty()) {
                    remote
                        .entry(m.to_owned())
                        .or_default()
                        .insert(inst.to_owned(), now);
                }
            }
            "x" => {
                let mut remote = lock_plain(&self.shared.remote);
                if let Some(by) = remote.get_mut(rest) {
                    by.remove(inst);
                    if by.is_empty() {
                        remote.remove(rest);
                    }
                }
            }
            "p" | "e" => {
                let mut parts = rest.splitn(3, ':');
                let (Some(model), Some(i), Some(text)) = (parts.next(), parts.next(), parts.next())
                else {
                    return;
                };
                let key = (inst.to_owned(), model.to_owned());
                let i = i.parse::<usize>().ok();
                // Piece 0 starts a publication afresh (whatever was left over).
                let (next, mut frames) = match self.partial.remove(&key) {
                    Some(p) if i != Some(0) => p,
                    _ => (0, String::new()),
                };
                if i != Some(next) {
                    // A piece went missing (a reconnection): drop the publication.
                    return;
                }
                frames.push_str(text);
                if kind == "p" {
                    self.partial.insert(key, (next + 1, frames));
                    return;
                }
                if lock_plain(&self.shared.local).contains_key(model) {
                    (self.sink)(Change::Event {
                        model_id: model.to_owned(),
                        frames,
                    });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_respect_the_limit_and_character_boundaries() {
        let text = "aé".repeat(10);
        let parts = pieces(&text, 4);
        assert!(parts.iter().all(|p| p.len() <= 4), "{parts:?}");
        assert_eq!(parts.concat(), text);
        assert_eq!(pieces("", 4), vec![""]);
        assert_eq!(pieces("abcd", 4), vec!["abcd"]);
    }

    #[test]
    fn channels_differ_per_schema_and_fit_an_identifier() {
        let a = channel_of("public");
        assert_ne!(a, channel_of("other"));
        assert!(a.len() < 63);
    }
}
