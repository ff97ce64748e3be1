//! Usage for invoicing (issue 17): per user and month, the metered calls by
//! kind, the evaluation jobs created (issue 18), the overage and the plan, as JSON or CSV. Built once here
//! ([`UsageReport::build`] over [`Store::usage_by_user`]) and served by
//! `GET /admin/usage` and `saas-host admin usage`.
//!
//! The counts are the store's, written in the same atomic step as each
//! call, so an invoice equals the calls that happened. `plan` is the
//! user's tier when the report is made.

use std::fmt::Write as _;
use std::str::FromStr;

use qlearn_core::store::{CallKind, Store};
use qlearn_core::tenancy::{BillingMonth, Tier};
use qlearn_core::{Error, Result};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The report's two forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// One JSON document ([`UsageReport`]).
    #[default]
    Json,
    /// RFC 4180 CSV with a header line ([`UsageReport::to_csv`]).
    Csv,
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(Error::field(
                "format",
                format!("must be json or csv, got {other:?}"),
            )),
        }
    }
}

/// One user's line of an invoice run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageRow {
    /// The user's id.
    pub user_id: String,
    /// The user's email.
    pub email: String,
    /// The user's tier (plan) now.
    #[schema(value_type = String)]
    pub plan: Tier,
    /// Metered calls in the month, overage included.
    pub calls: u64,
    /// Predictions (and probabilities).
    pub predict: u64,
    /// Updates (each experience of a batch).
    pub update: u64,
    /// Logging predicts (decisions).
    pub decide: u64,
    /// Accepted rewards.
    pub reward: u64,
    /// Evaluation jobs created (not calls: not in `calls`, `overage` or
    /// the quota; limited per day and at once instead).
    pub evaluation: u64,
    /// Calls counted before usage had kinds.
    pub unknown: u64,
    /// Calls past the monthly quota on a plan with overage.
    pub overage: u64,
}

/// Every user's usage in one month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// One row per user, oldest account first.
    pub users: Vec<UsageRow>,
}

/// The CSV header, in the order of [`UsageRow`]'s fields after `month`.
const CSV_HEADER: &str =
    "month,user_id,email,plan,calls,predict,update,decide,reward,evaluation,unknown,overage";

impl UsageReport {
    /// The report of `month` from `store` (blocks).
    pub fn build(store: &dyn Store, month: BillingMonth) -> Result<UsageReport> {
        let users = store
            .usage_by_user(month)?
            .into_iter()
            .map(|u| {
                let k = |kind| u.usage.of_kind(kind);
                UsageRow {
                    predict: k(CallKind::Predict),
                    update: k(CallKind::Update),
                    decide: k(CallKind::Decide),
                    reward: k(CallKind::Reward),
                    evaluation: k(CallKind::Evaluation),
                    unknown: k(CallKind::Unknown),
                    calls: u.usage.calls,
                    overage: u.usage.overage,
                    user_id: u.user_id,
                    email: u.email,
                    plan: u.tier,
                }
            })
            .collect();
        Ok(UsageReport {
            month: month.to_string(),
            users,
        })
    }

    /// The report as CSV: a header line, then one line per user, CRLF line
    /// ends (RFC 4180). Text fields are quoted when they hold a comma,
    /// quote or line break, and an email a spreadsheet would run as a
    /// formula (starting with `=`, `+`, `-`, `@`, tab or CR) is prefixed
    /// with `'`. (Ids are URL-safe and months digits: never changed.)
    pub fn to_csv(&self) -> String {
        let mut out = String::with_capacity(64 * (self.users.len() + 1));
        out.push_str(CSV_HEADER);
        out.push_str("\r\n");
        for r in &self.users {
            let _ = write!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{}\r\n",
                csv_text(&self.month, false),
                csv_text(&r.user_id, false),
                csv_text(&r.email, true),
                r.plan,
                r.calls,
                r.predict,
                r.update,
                r.decide,
                r.reward,
                r.evaluation,
                r.unknown,
                r.overage
            );
        }
        out
    }

    /// The report in `format`: its bytes and Content-Type.
    pub fn render(&self, format: Format) -> Result<(Vec<u8>, &'static str)> {
        match format {
            Format::Json => serde_json::to_vec(self)
                .map(|b| (b, "application/json"))
                .map_err(|e| Error::Internal(e.to_string())),
            Format::Csv => Ok((self.to_csv().into_bytes(), "text/csv; charset=utf-8")),
        }
    }
}

/// One CSV text field (see [`UsageReport::to_csv`]); `guard`: prefix a
/// field that looks like a formula.
fn csv_text(s: &str, guard: bool) -> String {
    let guarded = if guard && s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(email: &str) -> UsageRow {
        UsageRow {
            user_id: "-u1".into(),
            email: email.into(),
            plan: Tier::Pro,
            calls: 12,
            predict: 5,
            update: 4,
            decide: 2,
            reward: 1,
            evaluation: 3,
            unknown: 0,
            overage: 2,
        }
    }

    #[test]
    fn csv_has_a_header_and_escapes_text() {
        let r = UsageReport {
            month: "2026-12".into(),
            users: vec![row("a@example.com"), row("=x\"y,z@example.com")],
        };
        let csv = r.to_csv();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[1], "2026-12,-u1,a@example.com,pro,12,5,4,2,1,3,0,2");
        assert_eq!(
            lines[2],
            "2026-12,-u1,\"'=x\"\"y,z@example.com\",pro,12,5,4,2,1,3,0,2"
        );
        assert_eq!(lines[3], "", "every line ends with CRLF");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn formats_parse() {
        assert_eq!("csv".parse::<Format>().unwrap(), Format::Csv);
        assert_eq!("json".parse::<Format>().unwrap(), Format::Json);
        let e = "xml".parse::<Format>().unwrap_err().to_string();
        assert!(e.contains("format") && e.contains("json or csv"), "{e}");
    }
}
