//! The checkpointer of [`SqliteStore`](super::SqliteStore): it keeps the
//! WAL bounded without making commits wait for a checkpoint (issue 11).
//!
//! A checkpoint copies WAL frames into the database file; SQLite fsyncs the
//! WAL before the copy and, when the copy reached the WAL's end, the
//! database file after it (at either `synchronous` setting the store
//! uses). The WAL starts over from its beginning only at a write
//! transaction that begins when every frame has been copied. A `PASSIVE`
//! checkpoint runs beside the writer but, under constant writes, never
//! catches up with it, so alone it lets the WAL grow without bound; a
//! checkpoint on the writer's thread catches up, but every commit waits
//! for its copy and fsyncs (20 to 190 ms measured during a
//! 1,000,000-state reshape on a loaded machine). So:
//!
//! - This thread, on its own connection, runs `PASSIVE` checkpoints beside
//!   the writer (after every [`PASS_FRAMES`] new WAL frames, and every
//!   250 ms when anything committed); once the WAL is past half of
//!   [`WAL_RESTART_FRAMES`] it also flushes the database file and the WAL
//!   to disk after each pass. What is then left for a last pass is the
//!   few frames written meanwhile, and little to sync.
//! - Past [`WAL_RESTART_FRAMES`], after such a pass, the writer grants a
//!   *quiet window* between two batches (its callers already answered):
//!   it pauses while this thread runs one more `PASSIVE` pass, which then
//!   reaches the WAL's end, so the writer's next transaction starts the
//!   WAL over. The writer waits at most [`QUIET_MAX`]; a pass that takes
//!   longer goes on beside the next batches (`PASSIVE` never blocks the
//!   writer) and the next pass tries again.
//! - Only if the WAL still reaches [`WAL_HARD_FRAMES`] (four times the
//!   restart size: a disk too slow for any window, or readers holding old
//!   snapshots) does the writer wait for a pass to end, however long it
//!   takes: the bound of last resort.
//!
//! Durability is SQLite's own: the extra flushes here only write earlier
//! what its checkpoints sync anyway.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{lock_plain, Inner};

/// New WAL frames (pages of 4 KiB) after which the checkpointer runs a
/// pass even before its 250 ms tick.
pub(super) const PASS_FRAMES: i64 = 1024;
/// WAL frames (32 MiB) past which the writer grants quiet windows so that
/// a checkpoint can finish and the WAL start over.
pub(super) const WAL_RESTART_FRAMES: i64 = 8192;
/// WAL frames (128 MiB) past which the writer checkpoints itself (the
/// bound of last resort; see the module docs).
pub(super) const WAL_HARD_FRAMES: i64 = 4 * WAL_RESTART_FRAMES;
/// The longest the writer pauses for one quiet window.
pub(super) const QUIET_MAX: Duration = Duration::from_millis(5);
/// How long the checkpointer, once ready, keeps looking (without sleeping)
/// for the writer's window, so that it starts the pass at once.
const READY_SPIN: Duration = Duration::from_millis(20);
/// The longest the writer waits at [`WAL_HARD_FRAMES`] (then it goes on,
/// should the checkpointer be gone).
const HARD_WAIT: Duration = Duration::from_secs(10);
/// How often the checkpointer looks at the WAL.
const TICK: Duration = Duration::from_millis(10);
/// How often it checkpoints when little was written.
const IDLE_PASS: Duration = Duration::from_millis(250);

/// Where a quiet window is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quiet {
    /// None asked for (or the last one ended).
    None,
    /// The writer paused and waits for the checkpointer to run its pass.
    Asked,
    /// The checkpointer runs the pass.
    Running,
}

struct State {
    quiet: Quiet,
    closing: bool,
}

/// What the writer and the checkpointer share (a field of the store's
/// `Inner`).
pub(super) struct Checkpoints {
    state: Mutex<State>,
    /// Signalled on every change of `state`.
    cv: Condvar,
    /// Set by the checkpointer when a quiet window now would let a pass
    /// finish (it has just copied and flushed almost everything); taken by
    /// the writer when it grants one.
    ready: AtomicBool,
    /// The database file, opened once to flush it to disk beside the
    /// writer. Held until the store's last connection is closed: closing
    /// any descriptor of the file would drop the process's POSIX locks on
    /// it, SQLite's included (so `Inner` declares this field last).
    db: Option<File>,
    wal: PathBuf,
}

impl Checkpoints {
    /// The shared state for the database at `path`.
    pub(super) fn new(path: &Path) -> Self {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Checkpoints {
            state: Mutex::new(State {
                quiet: Quiet::None,
                closing: false,
            }),
            cv: Condvar::new(),
            ready: AtomicBool::new(false),
            db: File::open(path).ok(),
            wal: wal.into(),
        }
    }

    /// Stops the checkpointer (at its next look).
    pub(super) fn close(&self) {
        lock_plain(&self.state).closing = true;
        self.cv.notify_all();
    }

    /// Called by the writer between two batches, with the WAL's size after
    /// the last commit: past [`WAL_RESTART_FRAMES`] grants the checkpointer
    /// a quiet window when it is ready (waiting at most [`QUIET_MAX`]);
    /// past [`WAL_HARD_FRAMES`] waits for a pass however long it takes.
    pub(super) fn between_batches(&self, frames: i64) {
        if frames <= WAL_RESTART_FRAMES {
            return;
        }
        let hard = frames > WAL_HARD_FRAMES;
        if !self.ready.swap(false, Ordering::AcqRel) && !hard {
            return;
        }
        let started = Instant::now();
        let deadline = started + if hard { HARD_WAIT } else { QUIET_MAX };
        let mut s = lock_plain(&self.state);
        // At the hard bound, first let a window still running end.
        while hard && s.quiet != Quiet::None && !s.closing && Instant::now() < deadline {
            s = self.wait_until(s, deadline);
        }
        if s.closing || s.quiet != Quiet::None {
            return;
        }
        s.quiet = Quiet::Asked;
        self.cv.notify_all();
        while s.quiet != Quiet::None && !s.closing && Instant::now() < deadline {
            s = self.wait_until(s, deadline);
        }
        if s.quiet == Quiet::Asked {
            // Not started in time: withdrawn. (A pass already running goes
            // on beside the next batch.)
            s.quiet = Quiet::None;
        }
    }

    fn wait_until<'a>(
        &self,
        s: std::sync::MutexGuard<'a, State>,
        deadline: Instant,
    ) -> std::sync::MutexGuard<'a, State> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.cv
            .wait_timeout(s, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// Runs the pass of a window the writer granted, if it did.
    fn take_window(&self, conn: &Connection) -> bool {
        {
            let mut s = lock_plain(&self.state);
            if s.quiet != Quiet::Asked {
                return false;
            }
            s.quiet = Quiet::Running;
        }
        let _ = checkpoint(conn);
        lock_plain(&self.state).quiet = Quiet::None;
        self.cv.notify_all();
        true
    }

    /// Flushes the database file and the WAL to disk (errors ignored: the
    /// checkpoint that follows syncs what it needs itself).
    fn flush_files(&self) {
        if let Some(db) = &self.db {
            let _ = db.sync_data();
        }
        if let Ok(wal) = File::open(&self.wal) {
            let _ = wal.sync_data();
        }
    }
}

/// A passive checkpoint: `(frames in the WAL, frames checkpointed)`.
pub(super) fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

/// Waits for the next tick, a window or the close: whether to go on.
fn wait(cp: &Checkpoints, conn: &Connection) -> bool {
    let deadline = Instant::now() + TICK;
    let mut s = lock_plain(&cp.state);
    loop {
        if s.closing {
            return false;
        }
        if s.quiet == Quiet::Asked {
            drop(s);
            cp.take_window(conn);
            s = lock_plain(&cp.state);
            continue;
        }
        if Instant::now() >= deadline {
            return true;
        }
        s = cp.wait_until(s, deadline);
    }
}

/// The checkpointer thread (see the module docs), on its own connection.
pub(super) fn checkpointer_loop(inner: Arc<Inner>, conn: Connection) {
    let cp = &inner.checkpoints;
    let mut last_commit = 0;
    let mut last_frames = 0;
    let mut last_pass = Instant::now();
    while wait(cp, &conn) {
        let frames = inner.wal_frames.load(Ordering::Relaxed);
        let committed = inner.done.committed.load(Ordering::Acquire);
        if frames < last_frames {
            // The WAL started over.
            last_frames = 0;
        }
        let due = frames >= last_frames + PASS_FRAMES
            || (committed != last_commit && last_pass.elapsed() >= IDLE_PASS);
        if !due {
            continue;
        }
        last_commit = committed;
        last_frames = frames;
        last_pass = Instant::now();
        // Busy when another checkpoint runs: then the next tick.
        let _ = checkpoint(&conn);
        if inner.wal_frames.load(Ordering::Relaxed) <= WAL_RESTART_FRAMES / 2 {
            continue;
        }
        cp.flush_files();
        if inner.wal_frames.load(Ordering::Relaxed) <= WAL_RESTART_FRAMES {
            continue;
        }
        // Ready for a window: look for it without sleeping for a moment,
        // so the writer's pause is spent on the pass, not on waking us.
        cp.ready.store(true, Ordering::Release);
        let spin_until = Instant::now() + READY_SPIN;
        while Instant::now() < spin_until && !cp.take_window(&conn) {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shared state for a WAL-mode database in `dir`, and a connection to
    /// run the checkpointer's passes on.
    fn setup(dir: &Path) -> (Arc<Checkpoints>, Connection) {
        let path = dir.join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        (Arc::new(Checkpoints::new(&path)), conn)
    }

    /// A checkpointer that only takes windows (for at most 10 s): whether
    /// it ran a window's pass, after waiting `delay` first.
    fn taker(
        cp: Arc<Checkpoints>,
        conn: Connection,
        delay: Duration,
    ) -> std::thread::JoinHandle<bool> {
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if cp.take_window(&conn) {
                    return true;
                }
                std::thread::yield_now();
            }
            false
        })
    }

    #[test]
    fn a_ready_checkpointer_gets_a_window_past_the_restart_size() {
        let dir = tempfile::tempdir().unwrap();
        let (cp, conn) = setup(dir.path());
        // Not past the restart size, or not ready: nothing asked.
        cp.ready.store(true, Ordering::Release);
        cp.between_batches(WAL_RESTART_FRAMES);
        cp.ready.store(false, Ordering::Release);
        cp.between_batches(WAL_RESTART_FRAMES + 1);
        assert!(!cp.take_window(&conn), "a window nobody was ready for");
        // Ready and past it: the writer asks (and consumes the readiness).
        // A window lasts QUIET_MAX (5 ms), which a loaded machine may not
        // give the taker's thread: the writer asks again between later
        // batches until one is taken, as it would in the store.
        let t = taker(cp.clone(), conn, Duration::ZERO);
        for _ in 0..1_000 {
            cp.ready.store(true, Ordering::Release);
            cp.between_batches(WAL_RESTART_FRAMES + 1);
            if t.is_finished() {
                break;
            }
        }
        assert!(t.join().unwrap(), "the checkpointer never got the window");
        assert!(!cp.ready.load(Ordering::Acquire));
    }

    #[test]
    fn a_window_not_taken_in_time_is_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let (cp, conn) = setup(dir.path());
        cp.ready.store(true, Ordering::Release);
        cp.between_batches(WAL_RESTART_FRAMES + 1);
        assert!(
            !cp.take_window(&conn),
            "the writer went on but left its window open"
        );
    }

    #[test]
    fn past_the_hard_bound_the_writer_waits_for_the_pass() {
        let dir = tempfile::tempdir().unwrap();
        let (cp, conn) = setup(dir.path());
        let late = Duration::from_millis(300);
        let started = Instant::now();
        let t = taker(cp.clone(), conn, late);
        // Not ready, yet at the hard bound it asks, and waits.
        cp.between_batches(WAL_HARD_FRAMES + 1);
        assert!(
            started.elapsed() >= late,
            "the writer went on after {:?}, before the pass",
            started.elapsed()
        );
        assert!(t.join().unwrap());
    }
}
