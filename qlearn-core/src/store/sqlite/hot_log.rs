//! A model's decision log as the SQLite store keeps it in memory
//! ([`HotLog`], with the cached model): partly loaded, its records of
//! writes not yet committed held, the rest forgotten when the log would
//! pass its share of the model cache's budget (read again from the file
//! when a call needs them).

use std::collections::{HashMap, VecDeque};

use super::id_filter::{may_hold, IdFilter, IdKind};
use crate::decisions::{DecisionLog, DecisionRecord, Missing, HELD_DECISION_BYTES};

/// A record of a partly loaded log, by id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Held {
    Decision(String),
    Episode(String),
}

/// How many held records [`HotLog::trim`] looks at per step.
const TRIM_STEP: usize = 16;

/// A partly loaded log and the records its writes not yet committed
/// changed (those must stay in memory: the file does not have them yet).
pub(super) struct HotLog {
    pub(super) log: DecisionLog,
    /// The jobs not known to have committed and what each wrote, oldest
    /// first.
    inflight: VecDeque<(u64, Vec<Held>)>,
    /// The records they wrote, with the latest job that wrote each.
    writing: HashMap<Held, u64>,
    /// Where [`HotLog::trim`] goes on (decision and episode id).
    cursor: (String, String),
    /// Every id the file may hold that memory lacks (the file's ids, read
    /// once a logging predict first needed them, and each record forgotten
    /// since); `None` when not known, and every id memory lacks is then
    /// looked up in the file.
    file_ids: Option<IdFilter>,
    /// Whether `file_ids` was set (read or given up) since the log was
    /// opened: the file's ids are read at most once per opening.
    file_ids_set: bool,
}

impl HotLog {
    pub(super) fn new(log: DecisionLog) -> Self {
        HotLog {
            log,
            inflight: VecDeque::new(),
            writing: HashMap::new(),
            cursor: (String::new(), String::new()),
            file_ids: None,
            file_ids_set: false,
        }
    }

    /// Sets the ids the file holds that memory lacks (read from the file
    /// under the model's lock, so no call ran in between); `None`: not
    /// known (too many to read).
    pub(super) fn set_file_ids(&mut self, ids: Option<IdFilter>) {
        self.file_ids = ids;
        self.file_ids_set = true;
    }

    /// Whether the file's ids have not been read since the log was opened
    /// (opening a log reads none: a model whose ids are all generated
    /// never needs them).
    pub(super) fn file_ids_unset(&self) -> bool {
        !self.file_ids_set
    }

    /// Whether a record memory lacks may be in the file, so that a call
    /// needing it must read the file. `false` is certain: the id was never
    /// in the file, or was pruned from it.
    pub(super) fn may_be_in_file(&self, m: &Missing) -> bool {
        let ids = self.file_ids.as_ref();
        match m {
            Missing::Decision(id) => may_hold(ids, IdKind::Decision, id),
            Missing::Episode(id) => may_hold(ids, IdKind::Episode, id),
            Missing::Step(..) => true,
        }
    }

    /// The log, and the filter of [`HotLog::may_be_in_file`] for a reader
    /// of the file that loads into it.
    pub(super) fn log_and_file_ids(&mut self) -> (&mut DecisionLog, Option<&IdFilter>) {
        (&mut self.log, self.file_ids.as_ref())
    }

    /// Forgets decision `id` (committed: the file has it), noting that the
    /// file holds it.
    fn forget_decision(&mut self, id: &str) {
        self.note_in_file(IdKind::Decision, id);
        self.log.forget(id);
    }

    /// Forgets episode `id` (committed), noting that the file holds it.
    fn forget_episode(&mut self, id: &str) {
        self.note_in_file(IdKind::Episode, id);
        self.log.forget_episode(id);
    }

    fn note_in_file(&mut self, kind: IdKind, id: &str) {
        if let Some(f) = &mut self.file_ids {
            if !f.insert(kind, id) {
                // Full: from now on every id memory lacks is read.
                self.file_ids = None;
            }
        }
    }

    /// Notes that job `seq` wrote `records`.
    pub(super) fn wrote(&mut self, seq: u64, records: Vec<Held>) {
        for r in &records {
            self.writing.insert(r.clone(), seq);
        }
        self.inflight.push_back((seq, records));
    }

    /// After the jobs up to `committed` committed: their records are in
    /// the file, and a finished decision whose last write that was leaves
    /// memory.
    pub(super) fn evict(&mut self, committed: u64) {
        while self
            .inflight
            .front()
            .is_some_and(|(seq, _)| *seq <= committed)
        {
            let Some((seq, records)) = self.inflight.pop_front() else {
                break;
            };
            for r in records {
                if self.writing.get(&r) != Some(&seq) {
                    continue;
                }
                self.writing.remove(&r);
                if let Held::Decision(id) = &r {
                    if self.log.get(id).is_some_and(DecisionRecord::is_finished) {
                        self.forget_decision(id);
                    }
                }
            }
        }
    }

    /// The memory the log holds, as the model cache counts it.
    pub(super) fn memory_bytes(&self) -> usize {
        self.log.held_bytes()
            + (self.inflight.len() + self.writing.len()) * std::mem::size_of::<(u64, Held)>()
            + self.file_ids.as_ref().map_or(0, IdFilter::bytes)
    }

    /// Forgets committed records until the log holds at most `cap` bytes
    /// (and the id filter, should it pass `cap` alone):
    /// the open decisions with the earliest deadlines first (the oldest),
    /// then any decision and then episodes, going round in id order. They
    /// are read again from the file when a call needs them; the records of
    /// writes in flight stay.
    pub(super) fn trim(&mut self, cap: usize) {
        if self.file_ids.as_ref().is_some_and(|f| f.bytes() > cap) {
            // The filter alone would pass the budget: every id memory
            // lacks is read from the file again.
            self.file_ids = None;
        }
        let over = self.memory_bytes().saturating_sub(cap);
        if over == 0 {
            return;
        }
        let want = over.div_ceil(HELD_DECISION_BYTES) + self.writing.len();
        for id in self.log.held_open_earliest(want) {
            if self.memory_bytes() <= cap {
                return;
            }
            if !self.writing.contains_key(&Held::Decision(id.clone())) {
                self.forget_decision(&id);
            }
        }
        self.trim_round(cap, false);
        self.trim_round(cap, true);
    }

    /// [`HotLog::trim`] over every decision (or episode) held, in id order
    /// from where the last round stopped.
    fn trim_round(&mut self, cap: usize, episodes: bool) {
        let mut wrapped = false;
        while self.memory_bytes() > cap {
            let after = if episodes {
                &self.cursor.1
            } else {
                &self.cursor.0
            };
            let ids = if episodes {
                self.log.held_episodes_after(after, TRIM_STEP)
            } else {
                self.log.held_decisions_after(after, TRIM_STEP)
            };
            let Some(last) = ids.last().cloned() else {
                // At the end: once more from the first.
                if wrapped || after.is_empty() {
                    return;
                }
                wrapped = true;
                self.cursor_mut(episodes).clear();
                continue;
            };
            for id in ids {
                if self.memory_bytes() <= cap {
                    break;
                }
                if episodes {
                    if !self.writing.contains_key(&Held::Episode(id.clone())) {
                        self.forget_episode(&id);
                    }
                } else if !self.writing.contains_key(&Held::Decision(id.clone())) {
                    self.forget_decision(&id);
                }
            }
            *self.cursor_mut(episodes) = last;
        }
    }

    fn cursor_mut(&mut self, episodes: bool) -> &mut String {
        if episodes {
            &mut self.cursor.1
        } else {
            &mut self.cursor.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::{DecisionsConfig, NewDecision, HELD_EPISODE_BYTES};
    use crate::state::State;

    /// A log of open decisions `ids`, logged 1 ms apart in that order (so
    /// their deadlines are in that order too), in episode `episode`.
    fn log(ids: &[&str], episode: Option<&str>) -> HotLog {
        let mut log = DecisionLog::new(DecisionsConfig::default()).unwrap();
        for (t, id) in ids.iter().enumerate() {
            let new = NewDecision {
                decision_id: Some(id),
                episode_id: episode,
                state: State::Int(t as i64),
                allowed_actions: None,
                action: 0,
                probability: 1.0,
                baseline_action: None,
            };
            log.record_decision(new, t as i64).unwrap();
        }
        HotLog::new(log)
    }

    fn held(h: &HotLog) -> Vec<String> {
        h.log.held_decisions_after("", usize::MAX)
    }

    fn d(id: &str) -> Held {
        Held::Decision(id.to_owned())
    }

    /// The bookkeeping of `n` in-flight records: one job writing them.
    fn flight(n: usize) -> usize {
        (1 + n) * std::mem::size_of::<(u64, Held)>()
    }

    #[test]
    fn a_finished_decision_leaves_once_its_last_write_committed() {
        let mut h = log(&["a", "b"], None);
        h.log.record_reward("a", 1.0, None, true, 5).unwrap();
        h.wrote(5, vec![d("a")]);
        h.wrote(6, vec![d("a"), d("b")]);
        assert_eq!(
            h.memory_bytes(),
            2 * HELD_DECISION_BYTES + flight(1) + flight(2) - flight(0)
        );
        h.evict(5);
        assert_eq!(held(&h), ["a", "b"], "its later write is in flight");
        h.evict(6);
        assert_eq!(held(&h), ["b"], "the open one stays");
        assert!(h.writing.is_empty() && h.inflight.is_empty());
        assert_eq!(h.memory_bytes(), HELD_DECISION_BYTES);
    }

    #[test]
    fn trimming_forgets_the_earliest_deadlines_first_but_never_a_write_in_flight() {
        // Deadlines in the order z, y, x, w, v, u; ids in the other.
        let mut h = log(&["z", "y", "x", "w", "v", "u"], None);
        h.wrote(7, vec![d("z")]);
        h.trim(h.memory_bytes());
        assert_eq!(h.log.held().0, 6, "within the cap: nothing goes");
        h.trim(3 * HELD_DECISION_BYTES + flight(1));
        // y, x, w: the earliest deadlines not in flight.
        assert_eq!(held(&h), ["u", "v", "z"]);
        h.trim(0);
        assert_eq!(held(&h), ["z"], "what is in flight stays");
        h.evict(7);
        h.trim(0);
        assert_eq!(held(&h), Vec::<String>::new());
        assert_eq!(h.memory_bytes(), 0);
    }

    #[test]
    fn trimming_goes_round_finished_decisions_then_episodes() {
        let mut h = log(&["a", "b", "c"], Some("e"));
        // All three applied (each final, the last by the episode's end):
        // none is open, so only the rounds in id order forget them.
        for id in ["a", "b", "c"] {
            h.log.record_reward(id, 1.0, None, true, 5).unwrap();
        }
        let end = crate::decisions::EpisodeEnd::terminated();
        h.log.record_end("e", end).unwrap();
        assert_eq!(h.log.held_open_earliest(9), Vec::<String>::new());
        h.cursor.0 = "b".into();
        h.trim(2 * HELD_DECISION_BYTES + HELD_EPISODE_BYTES);
        assert_eq!(held(&h), ["a", "b"], "from the cursor on");
        h.trim(HELD_EPISODE_BYTES);
        assert_eq!(held(&h), Vec::<String>::new(), "round again from the first");
        assert_eq!(h.log.held(), (0, 1));
        h.wrote(9, vec![Held::Episode("e".into())]);
        h.trim(0);
        assert_eq!(h.log.held(), (0, 1), "an episode written in flight stays");
        h.evict(9);
        h.trim(0);
        assert_eq!(h.log.held(), (0, 0));
        assert_eq!(h.memory_bytes(), 0);
    }

    #[test]
    fn what_memory_forgets_the_file_is_known_to_hold() {
        let mut h = log(&["a", "b", "c"], Some("e"));
        let missing = |id: &str| Missing::Decision(id.to_owned());
        let episode = |id: &str| Missing::Episode(id.to_owned());
        // Without a filter every id may be in the file.
        assert!(h.may_be_in_file(&missing("new")));
        h.set_file_ids(Some(IdFilter::new()));
        assert!(!h.may_be_in_file(&missing("new")));
        assert!(!h.may_be_in_file(&missing("a")), "in memory only so far");
        // A finished decision evicted after its commit, an open one and
        // the episode trimmed: all in the file now.
        h.log.record_reward("a", 1.0, None, true, 5).unwrap();
        h.wrote(5, vec![d("a")]);
        h.evict(5);
        assert!(h.may_be_in_file(&missing("a")));
        assert!(!h.may_be_in_file(&missing("b")));
        let bits = h.file_ids.as_ref().map_or(0, IdFilter::bytes);
        h.trim(bits);
        assert_eq!(held(&h), Vec::<String>::new());
        assert_eq!(h.memory_bytes(), bits, "the filter's bits are counted");
        for id in ["a", "b", "c"] {
            assert!(h.may_be_in_file(&missing(id)), "{id}");
        }
        assert!(h.may_be_in_file(&episode("e")));
        assert!(!h.may_be_in_file(&episode("new")));
        assert!(!h.may_be_in_file(&missing("new")));
        assert!(
            h.may_be_in_file(&Missing::Step("new".into(), 0)),
            "steps are read"
        );
        // A budget below the filter's bits drops it: every id is read.
        h.trim(bits - 1);
        assert!(h.may_be_in_file(&missing("new")));
        assert_eq!(h.memory_bytes(), 0);
    }
}
