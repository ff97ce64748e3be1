//! A month's usage as PostgreSQL stores it (`usage_day`: calls per user,
//! day and kind; `usage_month`: the month's overage per user), read for one
//! user or for every user (the invoicing report) with one statement per
//! chunk of users, not one per user.

use std::collections::HashMap;

use postgres::Row;

use super::{corrupt, PgStore};
use crate::error::Result;
use crate::store::{CallKind, Usage, UserUsage};
use crate::tenancy::BillingMonth;

/// Users whose usage one statement of [`PgStore::usage_of_all`] reads.
const USERS_PER_STATEMENT: usize = 1_000;

/// The month's rows of the users in `$1`: their days by kind, and their
/// month's overage (the row without a day). One statement, one snapshot.
const SQL_USAGE: &str = "SELECT user_id, day, kind, calls, 0::int8 FROM usage_day \
     WHERE user_id = ANY($1) AND month = $2 \
     UNION ALL SELECT user_id, NULL::int2, NULL::text, 0::int8, overage FROM usage_month \
     WHERE user_id = ANY($1) AND month = $2";

impl PgStore {
    /// `user_id`'s usage of `month`.
    pub(super) fn usage_of(&self, user_id: &str, month: BillingMonth) -> Result<Usage> {
        let mut all = self.usage_rows(&[user_id.to_owned()], month)?;
        Ok(all.remove(user_id).unwrap_or_else(|| Usage::empty(month)))
    }

    /// Every user's usage of `month`, in the order of [`crate::store::Store::users`].
    pub(super) fn usage_of_all(&self, month: BillingMonth) -> Result<Vec<UserUsage>> {
        use crate::store::Store as _;
        let users = self.users()?;
        let mut out = Vec::with_capacity(users.len());
        for chunk in users.chunks(USERS_PER_STATEMENT) {
            let ids: Vec<String> = chunk.iter().map(|u| u.id.clone()).collect();
            let mut found = self.usage_rows(&ids, month)?;
            out.extend(chunk.iter().map(|u| UserUsage {
                usage: found.remove(&u.id).unwrap_or_else(|| Usage::empty(month)),
                user_id: u.id.clone(),
                email: u.email.clone(),
                tier: u.tier,
            }));
        }
        Ok(out)
    }

    /// The usage of `month` of those of `ids` with any, by user.
    fn usage_rows(&self, ids: &[String], month: BillingMonth) -> Result<HashMap<String, Usage>> {
        let rows = self.query(SQL_USAGE, &[&ids, &month.to_string()])?;
        let mut by_user: HashMap<String, Usage> = HashMap::new();
        for r in &rows {
            let usage = by_user
                .entry(r.get(0))
                .or_insert_with(|| Usage::empty(month));
            add_row(usage, month, r)?;
        }
        Ok(by_user)
    }
}

/// Adds one row of [`SQL_USAGE`] to `usage`.
fn add_row(usage: &mut Usage, month: BillingMonth, r: &Row) -> Result<()> {
    let day: Option<i16> = r.get(1);
    let kind: Option<String> = r.get(2);
    let calls = u64::try_from(r.get::<_, i64>(3)).map_err(|_| corrupt("negative usage"))?;
    let overage = u64::try_from(r.get::<_, i64>(4)).map_err(|_| corrupt("negative overage"))?;
    let (Some(day), Some(kind)) = (day, kind) else {
        usage.overage += overage;
        return Ok(());
    };
    let kind: CallKind = kind
        .parse()
        .map_err(|_| corrupt(format!("usage of unknown kind {kind:?}")))?;
    if !usage.add_row(i64::from(day), kind, calls, 0) {
        return Err(corrupt(format!("usage on day {day} of {month}")));
    }
    Ok(())
}
