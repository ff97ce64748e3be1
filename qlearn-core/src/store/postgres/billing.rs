//! The billing calls of [`PgStore`] (issue 17): a provider event applied in
//! one transaction together with recording its id (a concurrent delivery of
//! the same id waits on the id's row and then finds it), the user's row
//! locked so events of one user serialise; scheduled downgrades settled
//! under `FOR UPDATE SKIP LOCKED`, so instances settling at once each take
//! different users. Every tier change notifies the other instances. The
//! rules are [`crate::tenancy::billing`]'s.

use postgres::Transaction;

use super::notify::user_changed;
use super::{corrupt, is_unique_violation, pg, PgStore};
use crate::error::{Error, Result};
use crate::store::{BillingAccount, BillingEvent, BillingOutcome};
use crate::tenancy::{billing, Tier};

fn tier(s: &str) -> Result<Tier> {
    s.parse()
        .map_err(|_| corrupt(format!("unknown tier {s:?}")))
}

const SQL_ACCOUNT: &str = "SELECT customer_id, pending_tier, pending_at, last_event_at \
     FROM billing_accounts WHERE user_id = $1";

fn account(row: Option<&postgres::Row>) -> Result<Option<BillingAccount>> {
    let Some(r) = row else {
        return Ok(None);
    };
    let pending = match (r.get::<_, Option<String>>(1), r.get::<_, Option<i64>>(2)) {
        (Some(t), Some(at)) => Some((tier(&t)?, at)),
        _ => None,
    };
    Ok(Some(BillingAccount {
        customer_id: r.get(0),
        pending,
        last_event_at: r.get(3),
    }))
}

/// Locks the user's row (`skip`: or skips it when another transaction
/// holds it) and reads its tier and billing record; `None` for an unknown
/// (or skipped) user.
fn load(
    tx: &mut Transaction<'_>,
    user_id: &str,
    skip: bool,
) -> Result<Option<(Tier, BillingAccount)>> {
    let sql = if skip {
        "SELECT tier FROM users WHERE id = $1 FOR UPDATE SKIP LOCKED"
    } else {
        "SELECT tier FROM users WHERE id = $1 FOR UPDATE"
    };
    let Some(row) = tx.query_opt(sql, &[&user_id]).map_err(pg)? else {
        return Ok(None);
    };
    let t = tier(row.get(0))?;
    let a = tx.query_opt(SQL_ACCOUNT, &[&user_id]).map_err(pg)?;
    Ok(Some((t, account(a.as_ref())?.unwrap_or_default())))
}

/// Writes the user's tier and billing record back, and notifies the other
/// instances when the tier changed.
fn store(
    tx: &mut Transaction<'_>,
    channel: &str,
    user_id: &str,
    (before, t): (Tier, Tier),
    a: &BillingAccount,
) -> Result<()> {
    tx.execute(
        "UPDATE users SET tier = $2 WHERE id = $1",
        &[&user_id, &t.as_str()],
    )
    .map_err(pg)?;
    tx.execute(
        "INSERT INTO billing_accounts \
         (user_id, customer_id, pending_tier, pending_at, last_event_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id) DO UPDATE SET customer_id = excluded.customer_id, \
         pending_tier = excluded.pending_tier, pending_at = excluded.pending_at, \
         last_event_at = excluded.last_event_at",
        &[
            &user_id,
            &a.customer_id,
            &a.pending.map(|(t, _)| t.as_str()),
            &a.pending.map(|(_, at)| at),
            &a.last_event_at,
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::Conflict("customer linked to another user".into())
        } else {
            pg(e)
        }
    })?;
    if before != t {
        user_changed(tx, channel, user_id)?;
    }
    Ok(())
}

impl PgStore {
    /// [`crate::store::Store::apply_billing`].
    pub(super) fn write_billing(&self, event: &BillingEvent, now: i64) -> Result<BillingOutcome> {
        self.tx(|tx, _| {
            let fresh = tx
                .execute(
                    "INSERT INTO billing_events (id, received_at) VALUES ($1, $2) \
                     ON CONFLICT (id) DO NOTHING",
                    &[&event.id, &now],
                )
                .map_err(pg)?;
            if fresh == 0 {
                return Ok(BillingOutcome::Duplicate);
            }
            let mut found = None;
            if let Some(id) = &event.party.user_id {
                found = load(tx, id, false)?.map(|l| (id.clone(), l));
            }
            if found.is_none() {
                if let Some(customer) = &event.party.customer_id {
                    let row = tx
                        .query_opt(
                            "SELECT user_id FROM billing_accounts WHERE customer_id = $1",
                            &[customer],
                        )
                        .map_err(pg)?;
                    if let Some(id) = row.map(|r| r.get::<_, String>(0)) {
                        found = load(tx, &id, false)?.map(|l| (id, l));
                    }
                }
            }
            // The error rolls the transaction back: the event id is not kept.
            let (user_id, (before, mut account)) = found.ok_or(Error::NotFound("customer"))?;
            let mut t = before;
            let applied = billing::step(&mut t, &mut account, event, now);
            store(tx, &self.channel, &user_id, (before, t), &account)?;
            Ok(billing::outcome(user_id, before, t, &account, applied))
        })
    }

    /// [`crate::store::Store::settle_billing`].
    pub(super) fn settle_billing_due(&self, now: i64) -> Result<Vec<String>> {
        let due = self.query(
            "SELECT user_id FROM billing_accounts WHERE pending_at <= $1",
            &[&now],
        )?;
        let mut changed = Vec::new();
        for r in due {
            let id: String = r.get(0);
            let moved = self.tx(|tx, _| {
                // Another instance holding the user settles it.
                let Some((before, mut account)) = load(tx, &id, true)? else {
                    return Ok(false);
                };
                let mut t = before;
                let moved = billing::settle(&mut t, &mut account, now);
                store(tx, &self.channel, &id, (before, t), &account)?;
                Ok(moved)
            })?;
            if moved {
                changed.push(id);
            }
        }
        Ok(changed)
    }

    /// [`crate::store::Store::billing_account`].
    pub(super) fn read_billing(&self, user_id: &str) -> Result<Option<BillingAccount>> {
        let rows = self.query(SQL_ACCOUNT, &[&user_id])?;
        account(rows.first())
    }
}
