//! Metered usage: what kind of call each count is for ([`CallKind`]), a
//! user's month of it ([`Usage`]: per day, per kind, overage) and the
//! in-memory tally the memory and SQLite stores debit under their lock
//! ([`MonthTally`]; the quota decision itself is
//! [`check_quota`](crate::tenancy::check_quota)'s).
//!
//! Usage is kept per user, UTC day and kind, and written in the same
//! atomic step as the call it counts (see the [`Store`](super::Store)
//! contract), so invoices built from it ([`UserUsage`]) equal the calls
//! that happened.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tenancy::{check_quota, BillingMonth};

use super::Meter;

/// The kind of a metered call, as usage records and invoices break it down.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// `Store::predict`, `Store::action_probabilities` (metered like a
    /// predict) and a decide on a model that logs no decisions.
    Predict,
    /// Each experience of `Store::update` (single or batch).
    Update,
    /// A logging predict (`Store::decide` on a model with decisions).
    Decide,
    /// Each accepted reward (`Store::rewards`).
    Reward,
    /// Each evaluation job created (`Evaluations::create_evaluation`),
    /// counted with its insert. Not a call: it is not in
    /// [`Usage::calls`], `per_day` or the monthly quota (jobs are limited
    /// by the plan's `evaluations_per_day` and `evaluations_at_once`).
    Evaluation,
    /// Counted before usage had kinds (migrated rows).
    #[default]
    Unknown,
}

impl CallKind {
    /// Every kind, in the order of [`Usage::by_kind`].
    pub const ALL: [CallKind; 6] = [
        CallKind::Predict,
        CallKind::Update,
        CallKind::Decide,
        CallKind::Reward,
        CallKind::Evaluation,
        CallKind::Unknown,
    ];

    /// The storage and wire name (`predict`, `update`, `decide`, `reward`,
    /// `evaluation`, `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Predict => "predict",
            CallKind::Update => "update",
            CallKind::Decide => "decide",
            CallKind::Reward => "reward",
            CallKind::Evaluation => "evaluation",
            CallKind::Unknown => "unknown",
        }
    }

    /// Whether it is a metered call (in [`Usage::calls`] and the monthly
    /// quota): every kind but [`CallKind::Evaluation`].
    pub fn is_call(self) -> bool {
        self != CallKind::Evaluation
    }

    /// Its index in [`CallKind::ALL`] and [`Usage::by_kind`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        CallKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::field("kind", format!("unknown call kind {s:?}")))
    }
}

/// A user's metered calls in one calendar month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    /// The month.
    pub month: BillingMonth,
    /// Calls this month (overage included; evaluations are not calls).
    pub calls: u64,
    /// Calls per day: index 0 is the 1st; one entry per day of the month.
    pub per_day: Vec<u64>,
    /// Counts by kind, indexed as [`CallKind::ALL`]; those of the kinds
    /// that are calls ([`CallKind::is_call`]) sum to `calls`.
    pub by_kind: [u64; CallKind::ALL.len()],
    /// Of `calls`, those made past the monthly quota on a tier with
    /// overage (allowed and billed instead of refused).
    pub overage: u64,
}

impl Usage {
    /// No calls in `month`.
    pub fn empty(month: BillingMonth) -> Usage {
        Usage {
            month,
            calls: 0,
            per_day: vec![0; usize::from(month.days())],
            by_kind: [0; CallKind::ALL.len()],
            overage: 0,
        }
    }

    /// Calls of `kind` this month.
    pub fn of_kind(&self, kind: CallKind) -> u64 {
        self.by_kind[kind.index()]
    }

    /// Adds a stored row: `calls` of `kind` on `day` (1-based), `overage`
    /// of them past the quota (a kind that is not a call only counts in
    /// `by_kind`). A day outside the month is corrupt data.
    pub(crate) fn add_row(&mut self, day: i64, kind: CallKind, calls: u64, overage: u64) -> bool {
        let Some(slot) = usize::try_from(day - 1)
            .ok()
            .and_then(|d| self.per_day.get_mut(d))
        else {
            return false;
        };
        self.by_kind[kind.index()] += calls;
        if kind.is_call() {
            *slot += calls;
            self.calls += calls;
            self.overage += overage;
        }
        true
    }
}

/// One user's usage of a month, for invoicing ([`super::Store::usage_by_user`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserUsage {
    /// The user's id.
    pub user_id: String,
    /// The user's email.
    pub email: String,
    /// The user's tier now (the plan invoiced).
    pub tier: crate::tenancy::Tier,
    /// The month's usage.
    pub usage: Usage,
}

/// What a granted debit added, so a call that then fails can give it back.
#[derive(Clone, Debug)]
pub(crate) struct Debit {
    pub(crate) user: String,
    pub(crate) month: BillingMonth,
    /// Day of the month, 1-based.
    pub(crate) day: u8,
    pub(crate) kind: CallKind,
    pub(crate) n: u64,
    /// Of `n`, past the quota.
    pub(crate) overage: u64,
}

/// A user's month of usage held in memory by a store that debits under its
/// own lock (memory, SQLite): [`MonthTally::debit`] checks the quota with
/// [`check_quota`] and counts in one step.
#[derive(Clone, Debug)]
pub(crate) struct MonthTally(Usage);

impl MonthTally {
    /// The month's usage so far (e.g. as read from a database).
    pub(crate) fn new(usage: Usage) -> MonthTally {
        MonthTally(usage)
    }

    /// Debits `n` calls of `kind` at `meter.now` or refuses without
    /// counting (`n == 0` counts nothing).
    pub(crate) fn debit(&mut self, meter: &Meter<'_>, kind: CallKind, n: u64) -> Result<Debit> {
        let u = &mut self.0;
        let overage = check_quota(meter.limits, u.calls, n, meter.now)?;
        let day = u.month.day_of(meter.now);
        u.add_row(i64::from(day), kind, n, overage);
        Ok(Debit {
            user: meter.user_id.to_owned(),
            month: u.month,
            day,
            kind,
            n,
            overage,
        })
    }

    /// Counts one evaluation job created at `now` (not a call: no quota).
    pub(crate) fn count_evaluation(&mut self, now: i64) {
        let u = &mut self.0;
        let day = u.month.day_of(now);
        u.add_row(i64::from(day), CallKind::Evaluation, 1, 0);
    }

    /// Gives back a debit whose call did not happen.
    pub(crate) fn refund(&mut self, d: &Debit) {
        let u = &mut self.0;
        if let Some(slot) = u.per_day.get_mut(usize::from(d.day).saturating_sub(1)) {
            *slot = slot.saturating_sub(d.n);
        }
        u.calls = u.calls.saturating_sub(d.n);
        let k = &mut u.by_kind[d.kind.index()];
        *k = k.saturating_sub(d.n);
        u.overage = u.overage.saturating_sub(d.overage);
    }

    /// The usage it holds.
    pub(crate) fn usage(&self) -> &Usage {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::Limits;

    #[test]
    fn kinds_round_trip() {
        for (i, k) in CallKind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(k.as_str().parse::<CallKind>().unwrap(), k);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        assert!("bogus".parse::<CallKind>().is_err());
    }

    #[test]
    fn tally_debits_refunds_and_counts_overage() {
        let month = BillingMonth::new(2026, 12).unwrap();
        let now = month.start_unix() + 86_400 * 4 + 5; // the 5th
        let mut limits = Limits::default().free;
        limits.overage = true;
        let meter = Meter {
            user_id: "u",
            limits: &limits,
            now,
        };
        let mut t = MonthTally::new(Usage::empty(month));
        t.debit(&meter, CallKind::Update, 98).unwrap();
        let d = t.debit(&meter, CallKind::Predict, 5).unwrap();
        assert_eq!((d.n, d.overage, d.day), (5, 3, 5));
        let u = t.usage().clone();
        assert_eq!((u.calls, u.overage, u.per_day[4]), (103, 3, 103));
        assert_eq!(u.of_kind(CallKind::Predict), 5);
        assert_eq!(u.of_kind(CallKind::Update), 98);
        t.refund(&d);
        assert_eq!(t.usage().calls, 98);
        assert_eq!(t.usage().overage, 0);
        assert_eq!(t.usage().of_kind(CallKind::Predict), 0);
        limits.overage = false;
        let meter = Meter {
            user_id: "u",
            limits: &limits,
            now,
        };
        assert!(t.debit(&meter, CallKind::Predict, 3).is_err());
        assert_eq!(t.usage().calls, 98, "a refused call is not counted");
        t.count_evaluation(now);
        let u = t.usage();
        assert_eq!(u.of_kind(CallKind::Evaluation), 1);
        assert_eq!((u.calls, u.per_day[4], u.overage), (98, 98, 0));
        assert!(!CallKind::Evaluation.is_call() && CallKind::Reward.is_call());
    }
}
