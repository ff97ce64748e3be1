//! The decision log as rows (issue 14), shared by the SQL stores: a row
//! per decision and a row per episode, a model's counts in one small
//! column, and the loading of only the rows a call reads into a partly
//! loaded [`DecisionLog`] (see `decisions/partial.rs`).
//!
//! | column | layout |
//! | --- | --- |
//! | `state` | the state as sent, packed like a Q-row key (tag + i64, UTF-8 or f64s) |
//! | `allowed` | the allowed actions, u16 each (NULL: all) |
//! | `reward_ids` | per id: its length (u8), the id, its value (f64); NULL when none |
//! | `status` | 0 open, 1 closed, 2 applied, 3 expired |
//! | `baseline` | the baseline action recorded with the decision (NULL: none) |
//! | episode `end_json` | the [`EpisodeEnd`] as JSON (NULL: going on) |
//! | model `decision_meta` | version 1, then decisions, rewards, pending, late, defaulted, applied, last id (u64 each) |

use std::collections::{BTreeMap, HashSet};

use crate::decisions::{
    Changes, DecisionLog, DecisionRecord, DecisionStats, DecisionStatus, DecisionsConfig,
    EpisodeEnd, EpisodeRecord, LogParts, Missing,
};
use crate::error::{Error, Result};
use crate::store::decisions::Call;
use crate::store::encoding::{decode_key, key_bytes};
use crate::store::settle::due_through;
use crate::store::{DecisionQuery, EpisodePage, EpisodeSummary};

/// The columns of a decision row, in [`DecisionRow`]'s order, as a literal
/// for `concat!` (a cached statement's text must be `&'static str`).
macro_rules! decision_cols {
    () => {
        "id, episode, step, time_ms, closes_ms, state, allowed, action, prob, status, acc, \
         rewards, reward_ids, learned, applied_seq, baseline"
    };
}
pub(crate) use decision_cols;

/// The columns of an episode row, in [`EpisodeRow`]'s order, as a literal
/// for `concat!`.
macro_rules! episode_cols {
    () => {
        "id, n_steps, end_json, learned_return"
    };
}
pub(crate) use episode_cols;

/// The columns of a decision row, in [`DecisionRow`]'s order.
pub(crate) const DECISION_COLS: &str = decision_cols!();

/// The columns of an episode row, in [`EpisodeRow`]'s order.
pub(crate) const EPISODE_COLS: &str = episode_cols!();

const META_V1: u8 = 1;
const META_LEN: usize = 1 + 7 * 8;

fn corrupt(backend: &'static str, what: impl std::fmt::Display) -> Error {
    Error::storage(backend, format!("corrupt data in the database: {what}"))
}

/// A decision as its row's columns.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DecisionRow {
    pub(crate) id: String,
    pub(crate) episode: Option<String>,
    pub(crate) step: i64,
    pub(crate) time_ms: i64,
    pub(crate) closes_ms: i64,
    pub(crate) state: Vec<u8>,
    pub(crate) allowed: Option<Vec<u8>>,
    pub(crate) action: i64,
    pub(crate) prob: f64,
    pub(crate) status: i64,
    pub(crate) acc: Option<f64>,
    pub(crate) rewards: i64,
    pub(crate) reward_ids: Option<Vec<u8>>,
    pub(crate) learned: Option<f64>,
    pub(crate) applied_seq: Option<i64>,
    pub(crate) baseline: Option<i64>,
}

/// An episode as its row's columns.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EpisodeRow {
    pub(crate) id: String,
    pub(crate) n_steps: i64,
    pub(crate) end_json: Option<String>,
    pub(crate) learned_return: f64,
}

/// The status as stored.
/// The earliest deadline among the open decisions in `rows` (what a write
/// tells the settle pass once committed: `due_models`).
pub(crate) fn earliest_open(rows: &[DecisionRow]) -> Option<i64> {
    let open = status_code(DecisionStatus::Open);
    rows.iter()
        .filter(|d| d.status == open)
        .map(|d| d.closes_ms)
        .min()
}

pub(crate) fn status_code(s: DecisionStatus) -> i64 {
    match s {
        DecisionStatus::Open => 0,
        DecisionStatus::Closed => 1,
        DecisionStatus::Applied => 2,
        DecisionStatus::Expired => 3,
    }
}

fn status_of(backend: &'static str, code: i64) -> Result<DecisionStatus> {
    Ok(match code {
        0 => DecisionStatus::Open,
        1 => DecisionStatus::Closed,
        2 => DecisionStatus::Applied,
        3 => DecisionStatus::Expired,
        c => return Err(corrupt(backend, format!("decision status {c}"))),
    })
}

/// The row of a decision.
pub(crate) fn decision_row(rec: &DecisionRecord) -> DecisionRow {
    let allowed = rec.allowed_actions.as_ref().map(|a| {
        let mut b = Vec::with_capacity(a.len() * 2);
        for &x in a {
            b.extend_from_slice(&(x as u16).to_le_bytes());
        }
        b
    });
    let reward_ids = (!rec.reward_ids.is_empty()).then(|| {
        let mut b = Vec::new();
        for (id, v) in &rec.reward_ids {
            b.push(id.len() as u8);
            b.extend_from_slice(id.as_bytes());
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    });
    DecisionRow {
        id: rec.decision_id.clone(),
        episode: rec.episode_id.clone(),
        step: rec.step as i64,
        time_ms: rec.time_ms,
        closes_ms: rec.closes_at_ms,
        state: key_bytes(rec.state.as_ref()),
        allowed,
        action: rec.action as i64,
        prob: rec.probability,
        status: status_code(rec.status),
        acc: rec.acc,
        rewards: i64::from(rec.rewards),
        reward_ids,
        learned: rec.learned_reward,
        applied_seq: rec.applied_seq.map(|s| s as i64),
        baseline: rec.baseline_action.map(|b| b as i64),
    }
}

/// The decision of a row.
pub(crate) fn decision_from_row(backend: &'static str, r: DecisionRow) -> Result<DecisionRecord> {
    let bad = |what: &str| corrupt(backend, format!("decision {:?}: {what}", r.id));
    let allowed_actions = match &r.allowed {
        None => None,
        Some(b) if b.len() % 2 == 0 => Some(
            b.chunks_exact(2)
                .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        Some(_) => return Err(bad("allowed actions of odd length")),
    };
    let mut reward_ids = BTreeMap::new();
    if let Some(mut b) = r.reward_ids.as_deref() {
        while let Some((&n, rest)) = b.split_first() {
            let n = usize::from(n);
            if rest.len() < n + 8 {
                return Err(bad("truncated reward ids"));
            }
            let id = std::str::from_utf8(&rest[..n]).map_err(|_| bad("reward id not UTF-8"))?;
            let mut v = [0u8; 8];
            v.copy_from_slice(&rest[n..n + 8]);
            reward_ids.insert(id.to_owned(), f64::from_le_bytes(v));
            b = &rest[n + 8..];
        }
    }
    Ok(DecisionRecord {
        state: decode_key(backend, &r.state)?.to_state(),
        status: status_of(backend, r.status)?,
        step: u64::try_from(r.step).map_err(|_| bad("negative step"))?,
        action: usize::try_from(r.action).map_err(|_| bad("negative action"))?,
        rewards: u32::try_from(r.rewards).map_err(|_| bad("reward count"))?,
        applied_seq: r.applied_seq.and_then(|s| u64::try_from(s).ok()),
        baseline_action: match r.baseline {
            Some(b) => Some(usize::try_from(b).map_err(|_| bad("negative baseline action"))?),
            None => None,
        },
        decision_id: r.id,
        episode_id: r.episode,
        time_ms: r.time_ms,
        closes_at_ms: r.closes_ms,
        allowed_actions,
        probability: r.prob,
        acc: r.acc,
        reward_ids,
        learned_reward: r.learned,
    })
}

/// The row of an episode.
pub(crate) fn episode_row(
    backend: &'static str,
    id: &str,
    e: &EpisodeRecord,
) -> Result<EpisodeRow> {
    let end_json = e
        .end
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|err| Error::storage(backend, format!("episode end: {err}")))?;
    Ok(EpisodeRow {
        id: id.to_owned(),
        n_steps: e.steps.len() as i64,
        end_json,
        learned_return: e.learned_return,
    })
}

/// The SQL of an episode listing: a model's (1) episodes after an id (2),
/// ended or not (3), at most (4), in bytewise id order, with their first
/// and last step's times; placeholders in PostgreSQL's form or SQLite's.
pub(crate) fn episode_listing_sql(postgres: bool) -> String {
    let (mid, after, ended, limit, id) = if postgres {
        ("$1", "$2::text", "$3::bool", "$4", "e.id COLLATE \"C\"")
    } else {
        ("?1", "?2", "?3", "?4", "e.id")
    };
    format!(
        "SELECT e.id, e.n_steps, e.end_json, e.learned_return, \
         (SELECT d.time_ms FROM decisions d WHERE d.mid = e.mid AND d.episode = e.id \
          AND d.step = 0), \
         (SELECT d.time_ms FROM decisions d WHERE d.mid = e.mid AND d.episode = e.id \
          AND d.step = e.n_steps - 1) \
         FROM episodes e WHERE e.mid = {mid} AND ({after} IS NULL OR {id} > {after}) \
         AND ({ended} IS NULL OR (e.end_json IS NOT NULL) = {ended}) ORDER BY {id} LIMIT {limit}"
    )
}

/// A value a decision listing binds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SqlValue {
    /// An integer (the model, a status code, a time, the limit, the offset).
    Int(i64),
    /// A text (the cursor's decision id).
    Text(String),
}

/// The SQL of a decision listing on model `mid` (both SQL stores), with
/// its values in placeholder order; see [`decision_listing_sql`].
pub(crate) struct DecisionListing {
    /// The count, unless the query asks for none; it binds the first
    /// [`Self::filter_values`] of [`Self::values`].
    pub count: Option<String>,
    /// The page: the filter's values, the cursor's, then the limit and
    /// the offset.
    pub page: String,
    /// Every value the page binds.
    pub values: Vec<SqlValue>,
    /// How many of `values` the filter (and the count) binds.
    pub filter_values: usize,
}

/// The SQL of a decision listing on model `mid` (columns `cols`), in
/// PostgreSQL's placeholders or SQLite's. Only the filters `q` sets are
/// in its `WHERE` clause: a filter left to the engine as `(? IS NULL OR
/// status = ?)` makes it read every row's status, where an unfiltered
/// count reads the `(mid, time_ms)` index alone. The order is by time,
/// then id, descending when `q` asks for the newest first, so that the
/// latest page is read from the index's end instead of past an offset;
/// a cursor (`q.after`) starts the page in the index, past it in that
/// order, and is left out of the count.
pub(crate) fn decision_listing_sql(
    postgres: bool,
    mid: i64,
    q: &DecisionQuery,
    cols: &str,
) -> DecisionListing {
    let ph = |n: usize| {
        if postgres {
            format!("${n}")
        } else {
            format!("?{n}")
        }
    };
    let mut values = vec![SqlValue::Int(mid)];
    let mut filter = format!("mid = {}", ph(1));
    let conds = [
        ("status =", q.status.map(status_code)),
        ("time_ms >=", q.since_ms),
        ("time_ms <", q.until_ms),
    ];
    for (cond, value) in conds {
        if let Some(v) = value {
            values.push(SqlValue::Int(v));
            filter = format!("{filter} AND {cond} {}", ph(values.len()));
        }
    }
    let filter_values = values.len();
    let count =
        (!q.without_total).then(|| format!("SELECT COUNT(*) FROM decisions WHERE {filter}"));
    let (order, past) = if q.newest_first {
        ("time_ms DESC, id DESC", "<")
    } else {
        ("time_ms, id", ">")
    };
    if let Some((t, id)) = &q.after {
        values.push(SqlValue::Int(*t));
        values.push(SqlValue::Text(id.clone()));
        let (a, b) = (ph(values.len() - 1), ph(values.len()));
        filter = format!("{filter} AND (time_ms, id) {past} ({a}, {b})");
    }
    values.push(SqlValue::Int(i64::try_from(q.limit).unwrap_or(i64::MAX)));
    values.push(SqlValue::Int(i64::try_from(q.offset).unwrap_or(i64::MAX)));
    let page = format!(
        "SELECT {cols} FROM decisions WHERE {filter} ORDER BY {order} LIMIT {} OFFSET {}",
        ph(values.len() - 1),
        ph(values.len())
    );
    DecisionListing {
        count,
        page,
        values,
        filter_values,
    }
}

/// An episode of a listing (the columns of [`episode_listing_sql`]).
pub(crate) fn episode_summary(
    backend: &'static str,
    (id, n_steps, end_json, learned_return): (String, i64, Option<String>, f64),
    (started_ms, last_ms): (Option<i64>, Option<i64>),
) -> Result<EpisodeSummary> {
    let steps = u64::try_from(n_steps).map_err(|_| corrupt(backend, "negative episode length"))?;
    let outcome = end_json
        .map(|t| serde_json::from_str::<EpisodeEnd>(&t))
        .transpose()
        .map_err(|e| corrupt(backend, format!("episode end: {e}")))?
        .map(|end| end.outcome);
    Ok(EpisodeSummary {
        episode_id: id,
        steps,
        learned_return,
        outcome,
        started_ms,
        last_ms,
    })
}

/// Splits a listing's `limit + 1` rows into the page and whether more
/// match.
pub(crate) fn episode_page_of(mut episodes: Vec<EpisodeSummary>, limit: u64) -> EpisodePage {
    let lim = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = episodes.len() > lim;
    episodes.truncate(lim);
    EpisodePage { episodes, more }
}

/// The episode of a row: its steps as many empty ids (see
/// [`DecisionLog::load_episode`]).
pub(crate) fn episode_from_row(backend: &'static str, r: EpisodeRow) -> Result<EpisodeRecord> {
    let n = usize::try_from(r.n_steps).map_err(|_| corrupt(backend, "negative episode length"))?;
    let end = r
        .end_json
        .map(|t| serde_json::from_str::<EpisodeEnd>(&t))
        .transpose()
        .map_err(|e| corrupt(backend, format!("episode end: {e}")))?;
    Ok(EpisodeRecord {
        steps: vec![String::new(); n],
        end,
        learned_return: r.learned_return,
    })
}

/// A model's decision counts and last generated id, as stored.
pub(crate) fn meta_bytes(stats: &DecisionStats, last_id: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(META_LEN);
    b.push(META_V1);
    for n in [
        stats.decisions,
        stats.rewards,
        stats.pending,
        stats.late,
        stats.defaulted,
        stats.applied,
        last_id,
    ] {
        b.extend_from_slice(&n.to_le_bytes());
    }
    b
}

/// Stored counts and last id (none stored: zeros).
pub(crate) fn meta_from_bytes(
    backend: &'static str,
    b: Option<&[u8]>,
) -> Result<(DecisionStats, u64)> {
    let Some(b) = b else {
        return Ok((DecisionStats::default(), 0));
    };
    if b.len() != META_LEN || b[0] != META_V1 {
        return Err(corrupt(backend, "decision counts of unknown layout"));
    }
    let n = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[1 + 8 * i..9 + 8 * i]);
        u64::from_le_bytes(a)
    };
    Ok((
        DecisionStats {
            decisions: n(0),
            rewards: n(1),
            pending: n(2),
            late: n(3),
            defaulted: n(4),
            applied: n(5),
        },
        n(6),
    ))
}

/// An empty, partly loaded log with a model's stored counts, tracking its
/// changes.
pub(crate) fn partial_log(
    backend: &'static str,
    config: DecisionsConfig,
    meta: Option<&[u8]>,
) -> Result<DecisionLog> {
    let (stats, last_id) = meta_from_bytes(backend, meta)?;
    let mut log = DecisionLog::from_parts(LogParts {
        config,
        decisions: Vec::new(),
        episodes: Vec::new(),
        last_id,
        stats,
    })?;
    log.track_changes();
    Ok(log)
}

/// Where a store reads the rows a call needs.
pub(crate) trait Rows {
    /// A decision by id.
    fn decision(&mut self, id: &str) -> Result<Option<DecisionRecord>>;
    /// An episode by id.
    fn episode(&mut self, id: &str) -> Result<Option<EpisodeRecord>>;
    /// Step `k` of an episode.
    fn step(&mut self, episode: &str, k: u64) -> Result<Option<DecisionRecord>>;
    /// The open decisions due through (`closes_ms`, `id`) in closing
    /// order (deadline, then id bytewise; `id` `None`: every decision of
    /// that deadline).
    fn due(&mut self, closes_ms: i64, id: Option<&str>) -> Result<Vec<DecisionRecord>>;
}

/// What `log` lacks for `call` at `now_ms` (empty: it can run from memory).
pub(crate) fn missing(log: &DecisionLog, call: Call<'_>, now_ms: i64) -> Vec<Missing> {
    match call {
        Call::Decide(d) => log.missing_for_decide(d.decision_id, d.episode_id),
        Call::Rewards(r) => log.missing_for_rewards(r.iter().map(|r| r.decision_id.as_str())),
        Call::End { episode_id, .. } => log.missing_for_end(episode_id),
        Call::Settle {
            through_ms,
            through_id,
        } => {
            let (ms, id) = due_through(through_ms, through_id, now_ms);
            log.missing_for_due(ms, id)
        }
    }
}

/// Loads into `log` what `call` reads and `log` lacks (for a settlement,
/// first every decision `rows` holds that is due by its `through_ms`): a decision with its episode,
/// an episode, a step.
pub(crate) fn load(
    log: &mut DecisionLog,
    call: Call<'_>,
    now_ms: i64,
    rows: &mut dyn Rows,
) -> Result<()> {
    if let Call::Settle {
        through_ms,
        through_id,
    } = call
    {
        let (ms, id) = due_through(through_ms, through_id, now_ms);
        for rec in rows.due(ms, id)? {
            load_with_episode(log, rec, rows)?;
        }
    }
    let mut tried: HashSet<Missing> = HashSet::new();
    loop {
        let todo: Vec<Missing> = missing(log, call, now_ms)
            .into_iter()
            .filter(|m| !tried.contains(m))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        for m in todo {
            match &m {
                Missing::Decision(id) => {
                    if let Some(rec) = rows.decision(id)? {
                        load_with_episode(log, rec, rows)?;
                    }
                }
                Missing::Episode(ep) => {
                    if let Some(e) = rows.episode(ep)? {
                        log.load_episode(ep.clone(), e);
                    }
                }
                Missing::Step(ep, k) => {
                    if let Some(rec) = rows.step(ep, *k)? {
                        log.load_decision(rec);
                    }
                }
            }
            tried.insert(m);
        }
    }
}

fn load_with_episode(
    log: &mut DecisionLog,
    rec: DecisionRecord,
    rows: &mut dyn Rows,
) -> Result<()> {
    if let Some(ep) = &rec.episode_id {
        if log.episode(ep).is_none() {
            if let Some(e) = rows.episode(ep)? {
                log.load_episode(ep.clone(), e);
            }
        }
    }
    log.load_decision(rec);
    Ok(())
}

/// The rows of what changed.
pub(crate) fn changed_rows(
    backend: &'static str,
    log: &DecisionLog,
    changes: &Changes,
) -> Result<(Vec<DecisionRow>, Vec<EpisodeRow>)> {
    let decisions = changes
        .decisions
        .iter()
        .filter_map(|id| log.get(id))
        .map(decision_row)
        .collect();
    let episodes = changes
        .episodes
        .iter()
        .filter_map(|id| log.episode(id).map(|e| (id, e)))
        .map(|(id, e)| episode_row(backend, id, e))
        .collect::<Result<_>>()?;
    Ok((decisions, episodes))
}

/// A log stored whole by an earlier version (one JSON value per model),
/// as rows: its decisions, its episodes and its counts.
pub(crate) fn rows_of_blob(
    backend: &'static str,
    blob: &[u8],
) -> Result<(Vec<DecisionRow>, Vec<EpisodeRow>, Vec<u8>)> {
    let log: DecisionLog =
        serde_json::from_slice(blob).map_err(|e| corrupt(backend, format!("decision log: {e}")))?;
    let parts = log.into_parts();
    let last_id = parts
        .decisions
        .iter()
        .filter_map(|d| crate::decisions::generated_number(&d.decision_id))
        .fold(parts.last_id, u64::max);
    let decisions = parts.decisions.iter().map(decision_row).collect();
    let episodes = parts
        .episodes
        .iter()
        .map(|(id, e)| episode_row(backend, id, e))
        .collect::<Result<_>>()?;
    Ok((decisions, episodes, meta_bytes(&parts.stats, last_id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    #[test]
    fn rows_round_trip() {
        let mut reward_ids = BTreeMap::new();
        reward_ids.insert("click".to_owned(), -2.5);
        reward_ids.insert("buy".to_owned(), 1.0);
        for state in [
            State::Int(-3),
            State::Str("s".into()),
            State::Array(vec![-0.0, 1.5]),
        ] {
            let rec = DecisionRecord {
                decision_id: "d1".into(),
                episode_id: Some("e".into()),
                step: 4,
                time_ms: 1_700_000_000_123,
                closes_at_ms: 1_700_000_060_123,
                state,
                allowed_actions: Some(vec![0, 4095]),
                action: 4095,
                probability: 0.25,
                status: DecisionStatus::Applied,
                acc: Some(3.0),
                rewards: 2,
                reward_ids: reward_ids.clone(),
                learned_reward: Some(3.0),
                applied_seq: Some(17),
                baseline_action: Some(4094),
            };
            let back = decision_from_row("t", decision_row(&rec)).unwrap();
            assert_eq!(back, rec);
            if let State::Array(a) = &back.state {
                assert!(a[0].is_sign_negative(), "the state is kept as sent");
            }
        }
        let stats = DecisionStats {
            decisions: 9,
            rewards: 8,
            pending: 7,
            late: 6,
            defaulted: 5,
            applied: 4,
        };
        assert_eq!(
            meta_from_bytes("t", Some(&meta_bytes(&stats, 3))).unwrap(),
            (stats, 3)
        );
        assert!(meta_from_bytes("t", Some(&[1, 2])).is_err());
        let mut bad = decision_row(&DecisionRecord {
            reward_ids: reward_ids.clone(),
            ..decision_from_row("t", decision_row_min()).unwrap()
        });
        bad.reward_ids.as_mut().unwrap().pop();
        assert!(decision_from_row("t", bad).is_err());
        let negative = DecisionRow {
            baseline: Some(-1),
            ..decision_row_min()
        };
        assert!(decision_from_row("t", negative).is_err());
    }

    /// What a write tells the settle pass: the earliest deadline among
    /// its open decisions only (a closed one, however early, is no
    /// deadline), none when nothing it writes is open.
    #[test]
    fn a_writes_earliest_open_deadline_skips_closed_decisions() {
        let row = |closes_ms: i64, status: DecisionStatus| DecisionRow {
            closes_ms,
            status: status_code(status),
            ..decision_row_min()
        };
        let rows = [
            row(9_000, DecisionStatus::Open),
            row(1_000, DecisionStatus::Applied),
            row(7_000, DecisionStatus::Open),
            row(2_000, DecisionStatus::Closed),
            row(8_000, DecisionStatus::Open),
        ];
        assert_eq!(earliest_open(&rows), Some(7_000));
        assert_eq!(earliest_open(&rows[1..2]), None);
        assert_eq!(earliest_open(&[]), None);
    }

    fn decision_row_min() -> DecisionRow {
        DecisionRow {
            id: "x".into(),
            episode: None,
            step: 0,
            time_ms: 0,
            closes_ms: 0,
            state: key_bytes(State::Int(1).as_ref()),
            allowed: None,
            action: 0,
            prob: 1.0,
            status: 0,
            acc: None,
            rewards: 0,
            reward_ids: None,
            learned: None,
            applied_seq: None,
            baseline: None,
        }
    }
}
