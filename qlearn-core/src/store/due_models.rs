//! Which models the settle pass of an SQL store must visit: each model's
//! earliest open deadline as this process knows it, kept in memory, so that
//! a pass with nothing due reads nothing from the database and a pass with
//! something due visits only the models it concerns.
//!
//! Before, every pass (once a second) sought every model with an open
//! decision in `decisions_due`: with many models holding decisions open for
//! long windows (a day, a week), that cost grew with those models, every
//! second, on every instance, whether anything was due or not. Now the
//! process learns each model's earliest deadline from a full scan (the
//! first pass, then every [`FULL_SCAN_EVERY_SECS`]) and from every open
//! decision it commits itself ([`DueModels::logged`], called after the
//! commit). Between full scans a pass reads the models whose known
//! deadline has passed in one statement, settles those still due, and
//! leaves each settled model to the next pass's read, which learns its next
//! deadline. The periodic full scan
//! finds what other processes logged (PostgreSQL instances share one
//! database; each settles its own decisions on time, and another's within
//! [`FULL_SCAN_EVERY_SECS`] if it stops).
//!
//! Every change by a logged decision bumps the entry's version; a read of a
//! model's next deadline replaces the entry only if no decision was logged
//! since the read began (the read may predate that commit), so a deadline
//! is never forgotten: at worst a model is looked at once more.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::Result;
use crate::store::decisions::millis;
use crate::store::settle::{settle_in_chunks, DueKey};

fn lock_plain<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seconds between two full scans of the models with open decisions by
/// the settle pass of an SQL store: how late a decision logged by another
/// process (a PostgreSQL instance that stopped) can be settled at worst.
pub const FULL_SCAN_EVERY_SECS: i64 = 10;

/// Each model's earliest open deadline as this process knows it (see the
/// module docs). One entry per model with an open decision: bounded by the
/// models that log decisions.
#[derive(Default)]
pub(crate) struct DueModels {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By model number.
    next: HashMap<i64, Entry>,
    /// Bumped by every logged deadline.
    version: u64,
    /// When the last full scan began (Unix seconds); `None`: none yet, or
    /// a pass failed since.
    scanned_at: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    /// The earliest open deadline known (Unix ms).
    at_ms: i64,
    /// [`State::version`] when a logged decision last touched the entry.
    version: u64,
}

impl DueModels {
    /// Records an open decision of model `mid`, closing at `closes_ms`,
    /// once its commit is done (not before: a full scan that began before
    /// the commit would not see it, and would replace what is recorded).
    pub(crate) fn logged(&self, mid: i64, closes_ms: i64) {
        let mut s = lock_plain(&self.state);
        s.version += 1;
        let version = s.version;
        s.next
            .entry(mid)
            .and_modify(|e| {
                e.at_ms = e.at_ms.min(closes_ms);
                e.version = version;
            })
            .or_insert(Entry {
                at_ms: closes_ms,
                version,
            });
    }

    /// Whether a pass at `now` (Unix s) must scan every model with an
    /// open decision: the first pass, the first after a failed one, one
    /// [`FULL_SCAN_EVERY_SECS`] after the last scan, or a clock set back.
    /// When it must, records the scan's start and returns the version to
    /// hand to [`DueModels::scanned`].
    pub(crate) fn full_scan_due(&self, now: i64) -> Option<u64> {
        let mut s = lock_plain(&self.state);
        let due = s
            .scanned_at
            .is_none_or(|t| now < t || now >= t.saturating_add(FULL_SCAN_EVERY_SECS));
        if !due {
            return None;
        }
        s.scanned_at = Some(now);
        Some(s.version)
    }

    /// A full scan's findings (each model with an open decision and its
    /// earliest deadline), the scan begun at version `since`: they replace
    /// what is known, except that a model logged since keeps the earlier
    /// of both.
    pub(crate) fn scanned(&self, since: u64, found: Vec<(i64, i64)>) {
        let mut s = lock_plain(&self.state);
        let mut next: HashMap<i64, Entry> = found
            .into_iter()
            .map(|(mid, at_ms)| {
                let e = Entry {
                    at_ms,
                    version: since,
                };
                (mid, e)
            })
            .collect();
        for (mid, old) in s.next.drain().filter(|(_, e)| e.version > since) {
            next.entry(mid)
                .and_modify(|e| {
                    *e = Entry {
                        at_ms: e.at_ms.min(old.at_ms),
                        version: old.version,
                    }
                })
                .or_insert(old);
        }
        s.next = next;
    }

    /// The models whose earliest known deadline is at or before `now_ms`,
    /// each with its entry's version (for [`DueModels::checked`]).
    pub(crate) fn due(&self, now_ms: i64) -> Vec<(i64, u64)> {
        let s = lock_plain(&self.state);
        let mut due: Vec<(i64, u64)> = s
            .next
            .iter()
            .filter(|(_, e)| e.at_ms <= now_ms)
            .map(|(mid, e)| (*mid, e.version))
            .collect();
        due.sort_unstable();
        due
    }

    /// Model `mid`'s earliest open deadline as read from the store
    /// (`None`: no open decision, or no such model), by a read begun when
    /// the entry had `version`: replaces the entry unless a decision was
    /// logged since (then the entry stays, and a later pass reads again).
    pub(crate) fn checked(&self, mid: i64, version: u64, at_ms: Option<i64>) {
        let mut s = lock_plain(&self.state);
        let current = s.next.get(&mid).map(|e| e.version);
        match (current, at_ms) {
            (Some(v), _) if v != version => {}
            (_, Some(at_ms)) => {
                s.next.insert(mid, Entry { at_ms, version });
            }
            (_, None) => {
                s.next.remove(&mid);
            }
        }
    }

    /// A pass failed part way: the next one scans every model.
    pub(crate) fn failed(&self) {
        lock_plain(&self.state).scanned_at = None;
    }

    /// How many models are known to have an open decision.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock_plain(&self.state).next.len()
    }
}

/// A model as the settle pass finds it ([`DueStore::next_deadlines`]).
pub(crate) struct Found {
    /// The model's owner.
    pub(crate) owner: String,
    /// The model's id.
    pub(crate) id: String,
    /// Its earliest open deadline (ms); `None`: no decision open.
    pub(crate) first: Option<i64>,
}

/// What the settle pass needs from an SQL store.
pub(crate) trait DueStore {
    /// Every model with an open decision and its earliest deadline (ms):
    /// a full scan.
    fn open_models(&self) -> Result<Vec<(i64, i64)>>;
    /// Each of `mids`, in their order, with its earliest open deadline
    /// (`None`: no such model), in one read.
    fn next_deadlines(&self, mids: &[i64]) -> Result<Vec<Option<Found>>>;
    /// The key of model `mid`'s [`crate::store::SETTLE_CHUNK`]-th decision
    /// due by `now_ms`, in closing order (`None`: fewer are due).
    fn due_nth(&self, mid: i64, now_ms: i64) -> Result<Option<DueKey>>;
    /// Settles the owner's model `id` through `through` (`None`: through
    /// the clock, `now`), free of charge; returns the transitions learned.
    fn settle_model(
        &self,
        owner: &str,
        id: &str,
        through: Option<&DueKey>,
        now: i64,
    ) -> Result<usize>;
}

/// Models one read of [`DueStore::next_deadlines`] asks for at most.
const READ_BATCH: usize = 4096;

/// One settle pass of an SQL store at `now` (Unix s): a full scan when one
/// is due, then the models whose known deadline has passed, read in one
/// statement per batch (owner, id, earliest deadline), and each one still
/// due settled in chunks, as before this bookkeeping. A settled model is
/// looked at again by the next pass, whose batched read learns its next
/// deadline. Returns the transitions learned. A failure ends the pass, and
/// the next one scans every model.
pub(crate) fn settle_due(store: &impl DueStore, due: &DueModels, now: i64) -> Result<usize> {
    let now_ms = millis(now);
    let pass = || -> Result<usize> {
        if let Some(since) = due.full_scan_due(now) {
            due.scanned(since, store.open_models()?);
        }
        let mut learned = 0;
        for batch in due.due(now_ms).chunks(READ_BATCH) {
            let mids: Vec<i64> = batch.iter().map(|(mid, _)| *mid).collect();
            let found = store.next_deadlines(&mids)?;
            for (&(mid, version), model) in batch.iter().zip(found) {
                let Some(model) = model else {
                    due.checked(mid, version, None);
                    continue;
                };
                if model.first.is_none_or(|f| f > now_ms) {
                    due.checked(mid, version, model.first);
                    continue;
                }
                learned += settle_in_chunks(
                    || store.due_nth(mid, now_ms),
                    |through| store.settle_model(&model.owner, &model.id, through, now),
                )?;
                due.checked(mid, version, Some(now_ms));
            }
        }
        Ok(learned)
    };
    pass().inspect_err(|_| due.failed())
}

#[cfg(test)]
mod tests {
    use super::{settle_due, DueModels, DueStore, Found, FULL_SCAN_EVERY_SECS};
    use crate::error::{Error, Result};
    use crate::store::settle::DueKey;
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;

    #[test]
    fn a_logged_deadline_is_due_at_its_time_and_the_earliest_counts() {
        let d = DueModels::default();
        d.logged(7, 5_000);
        d.logged(7, 3_000);
        d.logged(7, 9_000);
        d.logged(8, 4_000);
        assert_eq!(d.due(2_999), vec![]);
        assert_eq!(d.due(3_000).len(), 1, "model 7 at its earliest");
        assert_eq!(
            d.due(4_000).iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![7, 8]
        );
    }

    #[test]
    fn a_full_scan_is_due_first_then_every_period_and_after_a_failure() {
        let d = DueModels::default();
        assert!(d.full_scan_due(100).is_some(), "the first pass");
        assert!(d.full_scan_due(100).is_none());
        assert!(d.full_scan_due(100 + FULL_SCAN_EVERY_SECS - 1).is_none());
        assert!(d.full_scan_due(100 + FULL_SCAN_EVERY_SECS).is_some());
        assert!(d.full_scan_due(101 + FULL_SCAN_EVERY_SECS).is_none());
        assert!(d.full_scan_due(99).is_some(), "the clock set back");
        d.failed();
        assert!(d.full_scan_due(99).is_some(), "after a failed pass");
    }

    #[test]
    fn a_scan_replaces_what_is_known_but_not_what_was_logged_since_it_began() {
        let d = DueModels::default();
        d.logged(1, 1_000); // settled since, by another process
        d.logged(2, 9_000);
        let since = d.full_scan_due(0).unwrap();
        d.logged(3, 2_000); // committed after the scan's read began
        d.logged(2, 8_000);
        d.scanned(since, vec![(2, 9_000), (4, 5_000)]);
        assert_eq!(d.len(), 3, "model 1 gone");
        let due: Vec<i64> = d.due(8_000).iter().map(|x| x.0).collect();
        assert_eq!(due, vec![2, 3, 4], "2 keeps the deadline logged since");
        assert_eq!(d.due(1_999), vec![]);
    }

    #[test]
    fn a_read_replaces_an_entry_unless_a_decision_was_logged_since_it_began() {
        let d = DueModels::default();
        d.logged(1, 1_000);
        let v = d.due(1_000)[0].1;
        d.checked(1, v, Some(50_000));
        assert_eq!(d.due(49_999), vec![], "moved to the next deadline");
        let v = d.due(50_000)[0].1;
        d.checked(1, v, None);
        assert_eq!(d.len(), 0, "nothing open: forgotten");

        d.logged(2, 1_000);
        let v = d.due(1_000)[0].1;
        d.logged(2, 30_000); // logged while the read ran
        d.checked(2, v, Some(60_000));
        assert_eq!(d.due(1_000).len(), 1, "kept, to be read again");
        let v = d.due(1_000)[0].1;
        d.checked(2, v, None);
        assert_eq!(d.len(), 0);
    }

    /// A store of open decisions: model number → (deadline ms, id), all
    /// models owned by "o" and named by their number.
    struct Fake {
        open: RefCell<BTreeMap<i64, Vec<DueKey>>>,
        scans: Cell<usize>,
        settles: Cell<usize>,
        batches: Cell<usize>,
        fail_scan: Cell<bool>,
    }

    impl Fake {
        fn new(open: &[(i64, i64)]) -> Fake {
            let f = Fake {
                open: RefCell::new(BTreeMap::new()),
                scans: Cell::new(0),
                settles: Cell::new(0),
                batches: Cell::new(0),
                fail_scan: Cell::new(false),
            };
            for (mid, at) in open {
                f.add(*mid, *at);
            }
            f
        }
        fn add(&self, mid: i64, at_ms: i64) {
            let mut o = self.open.borrow_mut();
            let v = o.entry(mid).or_default();
            let id = format!("d{}", v.len());
            v.push((at_ms, id));
            v.sort();
        }
        fn left(&self) -> usize {
            self.open.borrow().values().map(Vec::len).sum()
        }
    }

    impl DueStore for Fake {
        fn open_models(&self) -> Result<Vec<(i64, i64)>> {
            self.scans.set(self.scans.get() + 1);
            if self.fail_scan.get() {
                return Err(Error::storage("fake", "down"));
            }
            let o = self.open.borrow();
            Ok(o.iter()
                .filter_map(|(mid, v)| v.first().map(|k| (*mid, k.0)))
                .collect())
        }
        fn next_deadlines(&self, mids: &[i64]) -> Result<Vec<Option<Found>>> {
            self.batches.set(self.batches.get() + 1);
            let o = self.open.borrow();
            Ok(mids
                .iter()
                .map(|mid| {
                    Some(Found {
                        owner: "o".into(),
                        id: mid.to_string(),
                        first: o.get(mid).and_then(|v| v.first().map(|k| k.0)),
                    })
                })
                .collect())
        }
        fn due_nth(&self, _mid: i64, _now_ms: i64) -> Result<Option<DueKey>> {
            Ok(None)
        }
        fn settle_model(
            &self,
            _owner: &str,
            id: &str,
            _through: Option<&DueKey>,
            now: i64,
        ) -> Result<usize> {
            self.settles.set(self.settles.get() + 1);
            let mid: i64 = id.parse().map_err(|_| Error::NotFound("model"))?;
            let mut o = self.open.borrow_mut();
            let v = o.entry(mid).or_default();
            let before = v.len();
            v.retain(|k| k.0 > now * 1000);
            Ok(before - v.len())
        }
    }

    #[test]
    fn a_pass_visits_only_the_models_due_between_full_scans() {
        let f = Fake::new(&[(1, 5_000), (1, 20_000), (2, 100_000), (3, 200_000)]);
        let d = DueModels::default();
        let counts = || (f.scans.get(), f.batches.get(), f.settles.get());
        assert_eq!(settle_due(&f, &d, 1).unwrap(), 0);
        assert_eq!(counts(), (1, 0, 0), "a scan, no model due");
        assert_eq!(settle_due(&f, &d, 5).unwrap(), 1);
        assert_eq!(counts(), (1, 1, 1), "model 1 read and settled");
        assert_eq!(settle_due(&f, &d, 6).unwrap(), 0);
        assert_eq!(
            counts(),
            (1, 2, 1),
            "the next pass reads model 1's next deadline, settles nothing"
        );
        assert_eq!(settle_due(&f, &d, 7).unwrap(), 0);
        assert_eq!(counts(), (1, 2, 1), "nothing due: no read");
        // Logged by this process: due at its deadline, before the next scan.
        f.add(3, 8_000);
        d.logged(3, 8_000);
        assert_eq!(settle_due(&f, &d, 8).unwrap(), 1);
        assert_eq!(f.scans.get(), 1);
        // Logged by another process: found by the next full scan.
        f.add(4, 9_000);
        assert_eq!(settle_due(&f, &d, 9).unwrap(), 0, "not known yet");
        assert_eq!(settle_due(&f, &d, 1 + FULL_SCAN_EVERY_SECS).unwrap(), 1);
        assert_eq!(f.scans.get(), 2);
        assert_eq!(settle_due(&f, &d, 20).unwrap(), 1, "model 1's second");
        assert_eq!(f.left(), 2);
    }

    #[test]
    fn a_failed_pass_is_followed_by_a_full_scan() {
        let f = Fake::new(&[(1, 1_000)]);
        let d = DueModels::default();
        f.fail_scan.set(true);
        assert!(settle_due(&f, &d, 1).is_err());
        f.fail_scan.set(false);
        assert_eq!(settle_due(&f, &d, 2).unwrap(), 1, "scanned again at once");
        assert_eq!(f.scans.get(), 2);
    }
}
