//! A [`DecisionLog`] as a store keeps it: partly loaded (only the rows a
//! call touches), telling the store what changed so it writes only those
//! rows, and undoing a call that its debit refused.
//!
//! A partly loaded episode keeps its number of steps; the ids of the steps
//! not loaded are empty strings (no decision id is empty), and a step whose
//! decision is not loaded is never ready. A store loads, before a call, the
//! records the call may read: see [`DecisionLog::missing`].

use std::collections::{BTreeMap, BTreeSet};

use super::log::{DecisionLog, DecisionRecord, EpisodeRecord};
use super::{past, DecisionStats, DecisionStatus};
use crate::error::{Error, Result};

/// The decisions and episodes a call changed (ids), for a store to write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Decisions changed or added.
    pub decisions: BTreeSet<String>,
    /// Episodes changed or added.
    pub episodes: BTreeSet<String>,
}

/// Change tracking inside a log: off (`None`) unless a store turns it on;
/// equal to any other (it is bookkeeping, not the log's value).
#[derive(Clone, Debug, Default)]
pub(super) struct Tracking(Option<Changes>);

impl PartialEq for Tracking {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Tracking {
    pub(super) fn decision(&mut self, id: &str) {
        if let Some(c) = &mut self.0 {
            if !c.decisions.contains(id) {
                c.decisions.insert(id.to_owned());
            }
        }
    }

    pub(super) fn episode(&mut self, id: &str) {
        if let Some(c) = &mut self.0 {
            if !c.episodes.contains(id) {
                c.episodes.insert(id.to_owned());
            }
        }
    }
}

/// What a call may read that a partly loaded log lacks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Missing {
    /// A decision by id (it may not exist).
    Decision(String),
    /// An episode by id (it may not exist).
    Episode(String),
    /// Step `k` of an episode.
    Step(String, u64),
}

/// Generated decision ids stay below `d` and this number in hex: no log
/// makes 2^62 decisions, so a client id past it can never meet a generated
/// one, and it is left alone (moving the generator there would let one
/// client id run it out of numbers).
pub const GENERATED_LIMIT: u64 = 1 << 62;

/// The number of a generated decision id (`d` and lowercase hex, below
/// [`GENERATED_LIMIT`]), if `id` has that form: a client id of that form
/// moves the generator past it.
pub fn generated_number(id: &str) -> Option<u64> {
    let hex = id.strip_prefix('d')?;
    if hex.is_empty()
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(hex, 16)
        .ok()
        .filter(|n| *n < GENERATED_LIMIT)
}

/// What a decision held in memory costs, as [`DecisionLog::held_bytes`]
/// counts it: an estimate on the generous side, for a small state: the
/// record twice (a B-tree node is at least half full), its id in the map,
/// in the record and in the open windows' set, with their allocations, and
/// its state's and allowed actions' own.
pub const HELD_DECISION_BYTES: usize =
    2 * std::mem::size_of::<DecisionRecord>() + 4 * std::mem::size_of::<String>() + 256;

/// What an episode held in memory costs, as [`DecisionLog::held_bytes`]
/// counts it (its step ids not included).
pub const HELD_EPISODE_BYTES: usize =
    2 * std::mem::size_of::<EpisodeRecord>() + 2 * std::mem::size_of::<String>() + 64;

/// Up to `n` keys of `map` after `after`, in order.
fn ids_after<V>(map: &BTreeMap<String, V>, after: &str, n: usize) -> Vec<String> {
    use std::ops::Bound::{Excluded, Unbounded};
    map.range::<str, _>((Excluded(after), Unbounded))
        .take(n)
        .map(|(id, _)| id.clone())
        .collect()
}

/// A copy of the records a reward batch may change, to undo it.
#[derive(Debug)]
pub struct Saved {
    decisions: Vec<(String, Option<DecisionRecord>)>,
    episodes: Vec<(String, Option<EpisodeRecord>)>,
    stats: DecisionStats,
    last_id: u64,
}

impl DecisionLog {
    /// A generated id no decision uses. Only a log whose last number was
    /// stored past [`GENERATED_LIMIT`] (by a version that
    /// let a client id move it there) can run out: then the caller must
    /// name its decisions.
    pub(super) fn fresh_id(&mut self) -> Result<String> {
        loop {
            self.last_id = self.last_id.checked_add(1).ok_or_else(|| {
                Error::field(
                    "decision_id",
                    "this model's generated decision ids are used up: send a decision_id",
                )
            })?;
            let id = format!("d{:x}", self.last_id);
            if !self.decisions.contains_key(&id) {
                return Ok(id);
            }
        }
    }

    /// Starts tracking changes (see [`DecisionLog::take_changes`]).
    pub fn track_changes(&mut self) {
        if self.changes.0.is_none() {
            self.changes.0 = Some(Changes::default());
        }
    }

    /// The decisions and episodes changed since the last call (empty when
    /// tracking is off).
    pub fn take_changes(&mut self) -> Changes {
        match &mut self.changes.0 {
            Some(c) => std::mem::take(c),
            None => Changes::default(),
        }
    }

    /// The last number used for a generated decision id.
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Adds a decision read from storage (one already held is kept: the
    /// log's copy is the newer), filling its step in its episode.
    pub fn load_decision(&mut self, rec: DecisionRecord) {
        if self.decisions.contains_key(&rec.decision_id) {
            return;
        }
        if let Some(e) = rec
            .episode_id
            .as_ref()
            .and_then(|ep| self.episodes.get_mut(ep))
        {
            let k = rec.step as usize;
            if e.steps.len() <= k {
                e.steps.resize(k + 1, String::new());
            }
            e.steps[k].clone_from(&rec.decision_id);
        }
        if rec.status == DecisionStatus::Open {
            self.open
                .insert((rec.closes_at_ms, rec.decision_id.clone()));
        }
        self.decisions.insert(rec.decision_id.clone(), rec);
    }

    /// Adds an episode read from storage (its `steps` as long as the
    /// episode, ids not loaded empty); one already held is kept. The steps
    /// already held are filled in.
    pub fn load_episode(&mut self, episode_id: String, mut e: EpisodeRecord) {
        if self.episodes.contains_key(&episode_id) {
            return;
        }
        for rec in self.decisions.values() {
            if rec.episode_id.as_deref() == Some(episode_id.as_str()) {
                if let Some(slot) = e.steps.get_mut(rec.step as usize) {
                    slot.clone_from(&rec.decision_id);
                }
            }
        }
        self.episodes.insert(episode_id, e);
    }

    /// Drops a decision from memory (a store that keeps it in storage; it
    /// is loaded again when a call needs it). Its step id stays in its
    /// episode.
    pub fn forget(&mut self, decision_id: &str) {
        if let Some(rec) = self.decisions.remove(decision_id) {
            self.open.remove(&(rec.closes_at_ms, rec.decision_id));
        }
    }

    /// Drops an episode from memory.
    pub fn forget_episode(&mut self, episode_id: &str) {
        self.episodes.remove(episode_id);
    }

    /// The decisions and episodes held in memory.
    pub fn held(&self) -> (usize, usize) {
        (self.decisions.len(), self.episodes.len())
    }

    /// The memory the records held cost, as a store's memory budget
    /// counts it: [`HELD_DECISION_BYTES`] per decision and
    /// [`HELD_EPISODE_BYTES`] per episode (its step ids not counted).
    pub fn held_bytes(&self) -> usize {
        let (d, e) = self.held();
        d * HELD_DECISION_BYTES + e * HELD_EPISODE_BYTES
    }

    /// Up to `n` ids of the open decisions held, earliest deadline first
    /// (the oldest, for a store that trims the log to a memory budget).
    pub fn held_open_earliest(&self, n: usize) -> Vec<String> {
        self.open.iter().take(n).map(|(_, id)| id.clone()).collect()
    }

    /// Up to `n` ids of the decisions held, in id order after `after`
    /// (from the first when none is): where a store that trims the log
    /// to a memory budget goes on.
    pub fn held_decisions_after(&self, after: &str, n: usize) -> Vec<String> {
        ids_after(&self.decisions, after, n)
    }

    /// Up to `n` ids of the episodes held, in id order after `after`.
    pub fn held_episodes_after(&self, after: &str, n: usize) -> Vec<String> {
        ids_after(&self.episodes, after, n)
    }

    /// Whether the step `k` of `episode_id` is known to this log: the
    /// episode is loaded and the step either does not exist or its
    /// decision is loaded.
    fn step_known(&self, episode_id: &str, k: u64) -> bool {
        let Some(e) = self.episodes.get(episode_id) else {
            return false;
        };
        match e.steps.get(k as usize) {
            None => true,
            Some(id) => self.decisions.contains_key(id),
        }
    }

    /// What a call on decision `id` (a reward, a deadline) reads beyond
    /// the decision: its episode and its next step.
    fn missing_around(&self, id: &str, out: &mut Vec<Missing>) {
        let Some(rec) = self.decisions.get(id) else {
            out.push(Missing::Decision(id.to_owned()));
            return;
        };
        let Some(ep) = &rec.episode_id else {
            return;
        };
        if !self.episodes.contains_key(ep) {
            out.push(Missing::Episode(ep.clone()));
        } else if !self.step_known(ep, rec.step + 1) {
            out.push(Missing::Step(ep.clone(), rec.step + 1));
        }
    }

    /// What a partly loaded log lacks for a logging predict (a client id,
    /// an episode and its last step).
    pub fn missing_for_decide(
        &self,
        decision_id: Option<&str>,
        episode_id: Option<&str>,
    ) -> Vec<Missing> {
        let mut out = Vec::new();
        if let Some(id) = decision_id {
            if !self.decisions.contains_key(id) {
                out.push(Missing::Decision(id.to_owned()));
            }
        }
        if let Some(ep) = episode_id {
            self.missing_for_last_step(ep, &mut out);
        }
        out
    }

    /// What a partly loaded log lacks for rewards of `ids`.
    pub fn missing_for_rewards<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Vec<Missing> {
        let mut out = Vec::new();
        for id in ids {
            self.missing_around(id, &mut out);
        }
        out
    }

    /// What a partly loaded log lacks for an episode's end.
    pub fn missing_for_end(&self, episode_id: &str) -> Vec<Missing> {
        let mut out = Vec::new();
        self.missing_for_last_step(episode_id, &mut out);
        out
    }

    /// What a partly loaded log lacks to close the windows of the
    /// decisions it holds that are due through (`closes_ms`, `id`) (see
    /// [`DecisionLog::expire_through`]).
    pub fn missing_for_due(&self, closes_ms: i64, id: Option<&str>) -> Vec<Missing> {
        let mut out = Vec::new();
        for (at, open) in &self.open {
            if past(*at, open, closes_ms, id) {
                break;
            }
            self.missing_around(open, &mut out);
        }
        out
    }

    fn missing_for_last_step(&self, ep: &str, out: &mut Vec<Missing>) {
        match self.episodes.get(ep) {
            None => out.push(Missing::Episode(ep.to_owned())),
            Some(e) => {
                if let Some(last) = e.steps.len().checked_sub(1) {
                    if !self.step_known(ep, last as u64) {
                        out.push(Missing::Step(ep.to_owned(), last as u64));
                    }
                }
            }
        }
    }

    /// A copy of what rewards of `ids` may change (see
    /// [`DecisionLog::restore`]).
    pub fn save<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Saved {
        let mut decisions: Vec<(String, Option<DecisionRecord>)> = Vec::new();
        let mut episodes: Vec<(String, Option<EpisodeRecord>)> = Vec::new();
        for id in ids {
            if decisions.iter().any(|(d, _)| d == id) {
                continue;
            }
            let rec = self.decisions.get(id).cloned();
            if let Some(ep) = rec.as_ref().and_then(|r| r.episode_id.as_ref()) {
                if !episodes.iter().any(|(e, _)| e == ep) {
                    episodes.push((ep.clone(), self.episodes.get(ep).cloned()));
                }
            }
            decisions.push((id.to_owned(), rec));
        }
        Saved {
            decisions,
            episodes,
            stats: self.stats,
            last_id: self.last_id,
        }
    }

    /// Puts back what [`DecisionLog::save`] copied.
    pub fn restore(&mut self, saved: Saved) {
        for (id, rec) in saved.decisions {
            self.forget(&id);
            if let Some(rec) = rec {
                if rec.status == DecisionStatus::Open {
                    self.open.insert((rec.closes_at_ms, id.clone()));
                }
                self.decisions.insert(id, rec);
            }
        }
        for (ep, e) in saved.episodes {
            match e {
                Some(e) => self.episodes.insert(ep, e),
                None => self.episodes.remove(&ep),
            };
        }
        self.stats = saved.stats;
        self.last_id = saved.last_id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::{DecisionsConfig, NewDecision};
    use crate::state::State;

    fn new(id: Option<&str>, ep: Option<&'static str>, s: i64) -> NewDecision<'static> {
        NewDecision {
            decision_id: id.map(|i| &*Box::leak(i.to_owned().into_boxed_str())),
            episode_id: ep,
            state: State::Int(s),
            allowed_actions: None,
            action: 0,
            probability: 1.0,
            baseline_action: None,
        }
    }

    #[test]
    fn generated_ids_skip_client_ids_of_their_form() {
        assert_eq!(generated_number("d1f"), Some(31));
        assert_eq!(generated_number("d"), None);
        assert_eq!(generated_number("dX1"), None);
        assert_eq!(generated_number("D1"), None);
        let mut log = DecisionLog::new(DecisionsConfig::default()).unwrap();
        log.record_decision(new(Some("d5"), None, 1), 0).unwrap();
        let (d, _) = log.record_decision(new(None, None, 2), 0).unwrap();
        assert_eq!(d.decision_id, "d6");
    }

    #[test]
    fn a_client_id_at_the_top_of_the_range_neither_exhausts_nor_wraps_the_generator() {
        // u64::MAX and the limit itself: past what generated ids reach, so
        // they leave the generator where it is (it would otherwise overflow
        // at the next generated id, and wrap onto the model's first ids).
        for top in ["dffffffffffffffff", "d4000000000000000"] {
            assert_eq!(generated_number(top), None, "{top}");
            let mut log = DecisionLog::new(DecisionsConfig::default()).unwrap();
            let (first, _) = log.record_decision(new(None, None, 1), 0).unwrap();
            log.record_decision(new(Some(top), None, 2), 0).unwrap();
            let (next, _) = log.record_decision(new(None, None, 3), 0).unwrap();
            assert_eq!(
                (first.decision_id.as_str(), next.decision_id.as_str()),
                ("d1", "d2")
            );
        }
        // Just below the limit a client id still moves the generator.
        assert_eq!(generated_number("d3fffffffffffffff"), Some((1 << 62) - 1));
        // A log stored at the very top by an earlier version asks for ids
        // instead of wrapping round to its first ones.
        let mut log = DecisionLog::from_parts(crate::decisions::LogParts {
            config: DecisionsConfig::default(),
            decisions: Vec::new(),
            episodes: Vec::new(),
            last_id: u64::MAX,
            stats: DecisionStats::default(),
        })
        .unwrap();
        let e = log.record_decision(new(None, None, 1), 0).unwrap_err();
        assert!(
            matches!(&e, crate::Error::InvalidField { field, .. } if field == "decision_id"),
            "{e:?}"
        );
        let (named, _) = log.record_decision(new(Some("mine"), None, 1), 0).unwrap();
        assert_eq!(named.decision_id, "mine");
    }

    #[test]
    fn a_partial_log_learns_like_the_whole_one() {
        // The whole log, and one that forgets every finished decision and
        // reloads what a call needs from a copy of the "storage".
        let config = DecisionsConfig {
            reward_wait_seconds: 10,
            default_reward: Some(0.0),
            ..DecisionsConfig::default()
        };
        let mut whole = DecisionLog::new(config.clone()).unwrap();
        let mut part = DecisionLog::new(config).unwrap();
        part.track_changes();
        let mut stored: std::collections::HashMap<String, DecisionRecord> = Default::default();
        let mut stored_eps: std::collections::HashMap<String, EpisodeRecord> = Default::default();
        let sync =
            |part: &mut DecisionLog,
             stored: &mut std::collections::HashMap<String, DecisionRecord>,
             stored_eps: &mut std::collections::HashMap<String, EpisodeRecord>| {
                let c = part.take_changes();
                for id in c.decisions {
                    let rec = part.get(&id).unwrap().clone();
                    if rec.is_finished() {
                        part.forget(&id);
                    }
                    stored.insert(id, rec);
                }
                for ep in c.episodes {
                    stored_eps.insert(ep.clone(), part.episode(&ep).unwrap().clone());
                }
            };
        let fill =
            |part: &mut DecisionLog,
             missing: Vec<Missing>,
             stored: &std::collections::HashMap<String, DecisionRecord>,
             stored_eps: &std::collections::HashMap<String, EpisodeRecord>| {
                for m in missing {
                    match m {
                        Missing::Decision(id) => {
                            if let Some(r) = stored.get(&id) {
                                part.load_decision(r.clone());
                            }
                        }
                        Missing::Episode(ep) => {
                            if let Some(e) = stored_eps.get(&ep) {
                                let mut e = e.clone();
                                e.steps.iter_mut().for_each(String::clear);
                                part.load_episode(ep, e);
                            }
                        }
                        Missing::Step(ep, k) => {
                            let at = stored.values().find(|r| {
                                r.episode_id.as_deref() == Some(ep.as_str()) && r.step == k
                            });
                            if let Some(r) = at {
                                part.load_decision(r.clone());
                            }
                        }
                    }
                }
            };
        let mut learned = (Vec::new(), Vec::new());
        for k in 0..6 {
            let (a, t) = whole.record_decision(new(None, Some("e"), k), k).unwrap();
            learned.0.extend(t);
            let m = part.missing_for_decide(None, Some("e"));
            fill(&mut part, m, &stored, &stored_eps);
            let (b, t) = part.record_decision(new(None, Some("e"), k), k).unwrap();
            learned.1.extend(t);
            sync(&mut part, &mut stored, &mut stored_eps);
            assert_eq!(a, b);
            // Reward the previous step (its next step now exists).
            if k % 2 == 1 {
                let id = format!("d{:x}", k);
                let r1 = whole.record_reward(&id, 1.0, None, true, k).unwrap();
                let m = part.missing_for_rewards([id.as_str()].into_iter());
                fill(&mut part, m, &stored, &stored_eps);
                let r2 = part.record_reward(&id, 1.0, None, true, k).unwrap();
                sync(&mut part, &mut stored, &mut stored_eps);
                assert_eq!(r1, r2);
                learned.0.extend(r1.transitions);
                learned.1.extend(r2.transitions);
            }
        }
        // Deadlines close the rest (the last one waits for the end).
        learned.0.extend(whole.expire(100_000));
        let m = part.missing_for_due(100_000, None);
        fill(&mut part, m, &stored, &stored_eps);
        learned.1.extend(part.expire(100_000));
        sync(&mut part, &mut stored, &mut stored_eps);
        learned.0.extend(
            whole
                .record_end("e", crate::decisions::EpisodeEnd::terminated())
                .unwrap(),
        );
        let m = part.missing_for_end("e");
        fill(&mut part, m, &stored, &stored_eps);
        learned.1.extend(
            part.record_end("e", crate::decisions::EpisodeEnd::terminated())
                .unwrap(),
        );
        sync(&mut part, &mut stored, &mut stored_eps);
        assert_eq!(learned.0, learned.1);
        assert_eq!(learned.0.len(), 6);
        assert_eq!(whole.stats(), part.stats());
        let seqs: Vec<_> = (1..=6)
            .map(|k| stored[&format!("d{k:x}")].applied_seq.unwrap())
            .collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=6).collect::<Vec<_>>());
    }
}
