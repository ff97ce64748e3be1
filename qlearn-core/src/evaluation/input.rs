//! [`LoggedStep`]: one logged decision with its reward, as the estimators
//! read it, from a [`DecisionRecord`] or a line of the NDJSON export.

use serde::{Deserialize, Serialize};

use crate::decisions::{DecisionLog, DecisionRecord, DecisionStatus, EpisodeEnd};
use crate::error::{Error, Result};
use crate::limits::MAX_REWARD;
use crate::state::State;

/// One logged decision: what the estimators and the replay read. The
/// estimators use the decisions whose reward is known (closed or applied);
/// the replay also needs the others (an applied step's next state may be an
/// open decision's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedStep {
    /// The decision's id (the bootstrap draws its weights from it).
    pub decision_id: String,
    /// Its episode, if any (`None`: a one-step decision).
    pub episode_id: Option<String>,
    /// Its step in the episode (0 without one).
    pub step: u64,
    /// When it was logged (Unix milliseconds).
    pub time_ms: i64,
    /// The position of its transition in the order the model applied them,
    /// when the log records it (else the order is `(time_ms, step)`).
    pub applied_seq: Option<u64>,
    /// The state.
    pub state: State,
    /// The allowed actions, if restricted.
    pub allowed_actions: Option<Vec<usize>>,
    /// The chosen action.
    pub action: usize,
    /// The probability with which the behaviour policy chose `action`.
    pub probability: f64,
    /// The reward the model learned (or will learn) from it; `None` while
    /// the window is open or when it expired without one.
    pub reward: Option<f64>,
    /// Whether the model has applied its transition (closed decisions wait
    /// for their episode's next step or end).
    pub applied: bool,
    /// A baseline action recorded with the decision (for the
    /// [`TargetPolicy::Baseline`](super::TargetPolicy::Baseline) policy).
    pub baseline_action: Option<usize>,
    /// How the episode ended, on its last step when the log knows it (the
    /// NDJSON export does not say: its last applied step reads as terminal).
    pub episode_end: Option<EpisodeEnd>,
}

/// The fields of an NDJSON export line the evaluation reads (others are
/// ignored).
#[derive(Deserialize)]
struct ExportLine {
    decision_id: String,
    episode_id: Option<String>,
    #[serde(default)]
    step: u64,
    time: String,
    #[serde(default)]
    applied_seq: Option<u64>,
    state: State,
    #[serde(default)]
    allowed_actions: Option<Vec<usize>>,
    action: usize,
    probability: Option<f64>,
    reward: Option<f64>,
    status: DecisionStatus,
    #[serde(default)]
    baseline_action: Option<usize>,
}

impl LoggedStep {
    /// The step of a decision record (its reward `None` while open or once
    /// expired). A probability outside `(0, 1]` is an error (a log without
    /// the behaviour probability cannot be evaluated).
    pub fn from_record(rec: &DecisionRecord) -> Result<LoggedStep> {
        let known = matches!(rec.status, DecisionStatus::Applied | DecisionStatus::Closed);
        let step = LoggedStep {
            decision_id: rec.decision_id.clone(),
            episode_id: rec.episode_id.clone(),
            step: rec.step,
            time_ms: rec.time_ms,
            applied_seq: rec.applied_seq,
            state: rec.state.clone(),
            allowed_actions: rec.allowed_actions.clone(),
            action: rec.action,
            probability: rec.probability,
            reward: rec.learned_reward.filter(|_| known),
            applied: rec.status == DecisionStatus::Applied,
            baseline_action: rec.baseline_action,
            episode_end: None,
        };
        step.check()?;
        Ok(step)
    }

    /// The step of one line of the NDJSON export (`GET
    /// /models/{id}/decisions/export`; the reward of an open decision, an
    /// aggregate so far, reads as `None`). A malformed line, a missing
    /// probability, a closed or applied decision without a reward, or a
    /// probability outside `(0, 1]` is an error.
    pub fn from_export_line(line: &str) -> Result<LoggedStep> {
        let l: ExportLine = serde_json::from_str(line)
            .map_err(|e| Error::field("line", format!("not a decision export line: {e}")))?;
        let known = matches!(l.status, DecisionStatus::Applied | DecisionStatus::Closed);
        let probability = l.probability.ok_or_else(|| {
            Error::field(
                "probability",
                "the behaviour probability is required to evaluate",
            )
        })?;
        if known && l.reward.is_none() {
            return Err(Error::field("reward", "a closed decision has a reward"));
        }
        let step = LoggedStep {
            time_ms: parse_time_ms(&l.time)?,
            decision_id: l.decision_id,
            episode_id: l.episode_id,
            step: l.step,
            applied_seq: l.applied_seq,
            state: l.state,
            allowed_actions: l.allowed_actions,
            action: l.action,
            probability,
            reward: l.reward.filter(|_| known),
            applied: l.status == DecisionStatus::Applied,
            baseline_action: l.baseline_action,
            episode_end: None,
        };
        step.check()?;
        Ok(step)
    }

    /// What every estimator relies on: a behaviour probability in `(0, 1]`,
    /// a finite reward in the engine's range, the action among the allowed.
    fn check(&self) -> Result<()> {
        if !(self.probability > 0.0 && self.probability <= 1.0) {
            return Err(Error::field(
                "probability",
                format!(
                    "decision {:?}: the behaviour probability must be in (0, 1], got {}",
                    self.decision_id, self.probability
                ),
            ));
        }
        if self
            .reward
            .is_some_and(|r| !(r.is_finite() && r.abs() <= MAX_REWARD))
        {
            return Err(Error::field(
                "reward",
                format!("decision {:?}: reward out of range", self.decision_id),
            ));
        }
        if let Some(a) = &self.allowed_actions {
            if !a.contains(&self.action) {
                return Err(Error::action(
                    "action",
                    format!(
                        "decision {:?}: action {} is not among its allowed actions",
                        self.decision_id, self.action
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks that the action is one of `n_actions`.
    pub fn check_action(&self, n_actions: usize) -> Result<()> {
        if self.action < n_actions {
            return Ok(());
        }
        Err(Error::action(
            "action",
            format!(
                "decision {:?}: action {} is outside 0..{n_actions}",
                self.decision_id, self.action
            ),
        ))
    }

    /// The key that orders steps as the model applied them: by
    /// `applied_seq` where the log records it, else by `(time_ms, step)`
    /// (steps without a sequence come after those with one).
    pub fn order_key(&self) -> (bool, u64, i64, u64) {
        (
            self.applied_seq.is_none(),
            self.applied_seq.unwrap_or(0),
            self.time_ms,
            self.step,
        )
    }
}

/// Every decision of an in-process log, in the order the model applied
/// them (see [`LoggedStep::order_key`]), each episode's
/// last step carrying how the episode ended.
pub fn steps_from_log(log: &DecisionLog) -> Result<Vec<LoggedStep>> {
    let mut steps = Vec::new();
    for rec in log.decisions() {
        let mut s = LoggedStep::from_record(rec)?;
        if let Some(e) = s.episode_id.as_deref().and_then(|ep| log.episode(ep)) {
            if e.steps.len() as u64 == s.step + 1 {
                s.episode_end = e.end.clone();
            }
        }
        steps.push(s);
    }
    steps.sort_by(|a, b| {
        a.order_key()
            .cmp(&b.order_key())
            .then_with(|| a.decision_id.cmp(&b.decision_id))
    });
    Ok(steps)
}

/// The number of actions a log names: its largest action, allowed action
/// or baseline action, plus one (1 for an empty log).
pub fn n_actions_of(steps: &[LoggedStep]) -> usize {
    steps
        .iter()
        .flat_map(|s| {
            let allowed = s.allowed_actions.iter().flatten().copied();
            std::iter::once(s.action)
                .chain(s.baseline_action)
                .chain(allowed)
        })
        .max()
        .map_or(1, |a| a + 1)
}

/// The bootstrap key of a decision or episode id (FNV-1a): the same id
/// draws the same bootstrap weights in any chunk, so merged chunks
/// reproduce one pass.
pub fn unit_key(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Unix milliseconds of the export's `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC).
fn parse_time_ms(s: &str) -> Result<i64> {
    let bad = || Error::field("time", format!("not an RFC 3339 UTC time: {s:?}"));
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64> {
        let t = s.get(r).ok_or_else(bad)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = s.get(19..).ok_or_else(bad)?;
    let frac_ms = match rest.strip_suffix('Z') {
        Some("") => 0,
        Some(f) if f.len() >= 2 && f.starts_with('.') => {
            let digits = f.get(1..).ok_or_else(bad)?;
            if !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            let ms: String = digits.chars().chain("000".chars()).take(3).collect();
            ms.parse::<i64>().map_err(|_| bad())?
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    // Days since 1970-01-01 of the proleptic Gregorian date (H. Hinnant).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_times_parse() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_time_ms("2024-02-29T00:00:00Z").unwrap(),
            1_709_164_800_000
        );
        assert_eq!(
            parse_time_ms("2026-12-31T23:59:59.25Z").unwrap(),
            1_798_761_599_250
        );
        assert_eq!(parse_time_ms("1969-12-31T23:59:59Z").unwrap(), -1000);
        for bad in [
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T00:00:00+01:00",
            "x",
        ] {
            assert!(parse_time_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn export_lines_convert() {
        let line = r#"{"decision_id":"d1","episode_id":null,"step":0,"time":"2026-01-01T00:00:01Z","state":"home","allowed_actions":[0,2],"action":2,"probability":0.25,"reward":1.5,"status":"applied","rewards":1,"closes_at":"2026-01-01T01:00:01Z"}"#;
        let s = LoggedStep::from_export_line(line).unwrap();
        assert_eq!(s.state, State::Str("home".into()));
        assert_eq!((s.action, s.probability, s.reward), (2, 0.25, Some(1.5)));
        assert!(s.applied);
        let open = line.replace("\"applied\"", "\"open\"");
        let s = LoggedStep::from_export_line(&open).unwrap();
        assert_eq!((s.reward, s.applied), (None, false));
        let closed = line
            .replace("\"applied\"", "\"closed\"")
            .replace("1.5", "null");
        assert!(LoggedStep::from_export_line(&closed).is_err());
        let no_p = line.replace("\"probability\":0.25", "\"probability\":null");
        assert!(LoggedStep::from_export_line(&no_p).is_err());
        let zero_p = line.replace("0.25", "0");
        assert!(LoggedStep::from_export_line(&zero_p).is_err());
        let outside = line.replace("\"action\":2", "\"action\":1");
        assert!(LoggedStep::from_export_line(&outside).is_err());
        assert!(LoggedStep::from_export_line("{").is_err());
    }
}
