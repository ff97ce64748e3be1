//! The settle pass's walk through one model's due decisions on the SQL
//! stores: a backlog (after an outage every decision logged meanwhile is
//! due at once) is settled a chunk at a time, each chunk its own
//! transaction, in the order one call would close them.

use crate::error::Result;

/// The most due decisions one settling transaction of an SQL store reads:
/// a model's backlog (after an outage, every decision logged meanwhile is
/// due at once) is settled in transactions of this many decisions, so that
/// the pass holds a bounded part of it in memory and the model's lock for
/// a bounded time, not the whole backlog in one read.
pub const SETTLE_CHUNK: u64 = 1024;

/// What a settling call closes through: its bound, or the clock when the
/// bound is past it.
pub(crate) fn due_through(
    through_ms: i64,
    through_id: Option<&str>,
    now_ms: i64,
) -> (i64, Option<&str>) {
    if through_ms <= now_ms {
        (through_ms, through_id)
    } else {
        (now_ms, None)
    }
}

/// A decision's place in the order windows close in: its deadline (ms),
/// then its id (bytewise).
pub(crate) type DueKey = (i64, String);

/// Settles one model's decisions due by `now_ms` in chunks of
/// [`SETTLE_CHUNK`]: `nth` reads the key of the chunk's last decision (the
/// [`SETTLE_CHUNK`]-th due, in closing order; `None`: fewer are due), and
/// `settle` runs a settling call through a key (`None`: through the clock)
/// and returns what it learned. Each chunk closes the first decisions in
/// closing order, as one call would, so the learning is the same as one
/// transaction's. Stops when fewer than a chunk were due, or when a
/// chunk's end does not move on (decisions the call left open; the next
/// pass retries).
pub(crate) fn settle_in_chunks(
    mut nth: impl FnMut() -> Result<Option<DueKey>>,
    mut settle: impl FnMut(Option<&DueKey>) -> Result<usize>,
) -> Result<usize> {
    let mut learned = 0;
    let mut last: Option<DueKey> = None;
    loop {
        let Some(key) = nth()? else {
            return Ok(learned + settle(None)?);
        };
        if last.as_ref().is_some_and(|l| key <= *l) {
            return Ok(learned);
        }
        learned += settle(Some(&key))?;
        last = Some(key);
    }
}

/// The rows the SQL stores' tests of their bounds query insert (model
/// `mid`): [`SETTLE_CHUNK`] + 2 open decisions, two to a deadline, their
/// ids in the opposite order to their deadlines, plus one open decision not
/// due by `1000 * SETTLE_CHUNK` and one closed; and the key the query must
/// return at that clock.
#[cfg(test)]
pub(crate) fn nth_fixture() -> (Vec<(String, i64, i64)>, DueKey) {
    let n = SETTLE_CHUNK as i64 + 2;
    let mut rows: Vec<(String, i64, i64)> = (0..n)
        .map(|i| (format!("d{:05}", n - i), 1000 * (i / 2), 0))
        .collect();
    rows.push(("late".into(), 1000 * (SETTLE_CHUNK as i64 + 1), 0));
    rows.push(("closed".into(), 0, 2));
    let mut due: Vec<DueKey> = rows
        .iter()
        .filter(|(_, at, status)| *status == 0 && *at <= 1000 * SETTLE_CHUNK as i64)
        .map(|(id, at, _)| (*at, id.clone()))
        .collect();
    due.sort();
    let nth = due[SETTLE_CHUNK as usize - 1].clone();
    (rows, nth)
}

#[cfg(test)]
mod tests {
    use super::{due_through, settle_in_chunks, DueKey};
    use std::cell::RefCell;

    /// Runs [`settle_in_chunks`] on one model's open decisions (deadline,
    /// id) with chunks of `chunk`, the clock at `now`; returns what each
    /// settling call closed, call by call, and what is left open. A
    /// `stuck` call closes nothing.
    fn run(
        open: &[(i64, &str)],
        chunk: usize,
        now: i64,
        stuck: bool,
    ) -> (Vec<Vec<DueKey>>, Vec<DueKey>) {
        let mut keys: Vec<DueKey> = open.iter().map(|(t, id)| (*t, id.to_string())).collect();
        keys.sort();
        let open = RefCell::new(keys);
        let mut calls = Vec::new();
        let learned = settle_in_chunks(
            || {
                let o = open.borrow();
                let due: Vec<&DueKey> = o.iter().filter(|k| k.0 <= now).collect();
                Ok(due.get(chunk - 1).map(|k| (*k).clone()))
            },
            |through| {
                let mut o = open.borrow_mut();
                let closes = |k: &DueKey| match through {
                    Some(t) => k <= t,
                    None => k.0 <= now,
                };
                let closed: Vec<DueKey> = o.iter().filter(|k| closes(k)).cloned().collect();
                if !stuck {
                    o.retain(|k| !closes(k));
                }
                let n = if stuck { 0 } else { closed.len() };
                calls.push(closed);
                Ok(n)
            },
        )
        .unwrap();
        let settled: usize = if stuck {
            0
        } else {
            calls.iter().map(Vec::len).sum()
        };
        assert_eq!(learned, settled);
        (calls, open.into_inner())
    }

    fn keys(k: &[(i64, &str)]) -> Vec<DueKey> {
        k.iter().map(|(t, id)| (*t, id.to_string())).collect()
    }

    #[test]
    fn a_call_closes_through_its_bound_or_the_clock_when_the_bound_is_past_it() {
        assert_eq!(due_through(5, Some("a"), 10), (5, Some("a")));
        assert_eq!(due_through(10, Some("a"), 10), (10, Some("a")));
        assert_eq!(due_through(10, None, 10), (10, None));
        assert_eq!(due_through(11, Some("a"), 10), (10, None));
    }

    #[test]
    fn a_backlog_settles_a_chunk_at_a_time_in_closing_order() {
        let open = [
            (1, "a"),
            (2, "a"),
            (2, "b"),
            (2, "c"),
            (2, "d"),
            (3, "a"),
            (3, "b"),
            (11, "a"),
        ];
        let (calls, left) = run(&open, 3, 10, false);
        assert_eq!(
            calls,
            vec![
                keys(&[(1, "a"), (2, "a"), (2, "b")]),
                keys(&[(2, "c"), (2, "d"), (3, "a")]),
                keys(&[(3, "b")]),
            ],
            "each chunk closes three, a deadline's decisions split by id"
        );
        assert_eq!(left, keys(&[(11, "a")]), "not due yet");
    }

    #[test]
    fn a_whole_number_of_chunks_ends_with_a_call_through_the_clock() {
        let (calls, left) = run(&[(1, "a"), (1, "b"), (1, "c")], 3, 10, false);
        assert_eq!(
            calls,
            vec![keys(&[(1, "a"), (1, "b"), (1, "c")]), vec![]],
            "the last call finds nothing left"
        );
        assert!(left.is_empty());
    }

    #[test]
    fn fewer_than_a_chunk_settle_in_one_call_through_the_clock() {
        let (calls, left) = run(&[(3, "a"), (4, "a"), (12, "a")], 3, 10, false);
        assert_eq!(calls, vec![keys(&[(3, "a"), (4, "a")])]);
        assert_eq!(left, keys(&[(12, "a")]));
    }

    #[test]
    fn a_chunk_that_stays_open_ends_the_models_turn() {
        let open = [(1, "a"), (2, "a"), (3, "a"), (4, "a")];
        let (calls, left) = run(&open, 3, 10, true);
        assert_eq!(
            calls,
            vec![keys(&[(1, "a"), (2, "a"), (3, "a")])],
            "tried once, left for the next pass"
        );
        assert_eq!(left.len(), 4);
    }
}
