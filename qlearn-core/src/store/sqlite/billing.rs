//! The billing calls of [`SqliteStore`] (issue 17): a provider event
//! applied in one writer job together with recording its id, scheduled
//! downgrades settled, a user's billing record read. The rules are
//! [`crate::tenancy::billing`]'s.

use rusqlite::{params, Connection, OptionalExtension};

use super::{corrupt, is_unique_violation, sq, SqliteStore};
use crate::error::{Error, Result};
use crate::store::{BillingAccount, BillingEvent, BillingOutcome};
use crate::tenancy::{billing, Tier};

fn tier(s: &str) -> Result<Tier> {
    s.parse()
        .map_err(|_| corrupt(format!("unknown tier {s:?}")))
}

/// The user's tier and billing record, or `None` for an unknown user.
fn load(c: &Connection, user_id: &str) -> Result<Option<(Tier, BillingAccount)>> {
    let Some(t) = c
        .query_row("SELECT tier FROM users WHERE id = ?1", [user_id], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map_err(sq)?
    else {
        return Ok(None);
    };
    Ok(Some((tier(&t)?, account(c, user_id)?.unwrap_or_default())))
}

fn account(c: &Connection, user_id: &str) -> Result<Option<BillingAccount>> {
    let row = c
        .query_row(
            "SELECT customer_id, pending_tier, pending_at, last_event_at \
             FROM billing_accounts WHERE user_id = ?1",
            [user_id],
            |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )
        .optional()
        .map_err(sq)?;
    let Some((customer_id, pending_tier, pending_at, last_event_at)) = row else {
        return Ok(None);
    };
    let pending = match (pending_tier, pending_at) {
        (Some(t), Some(at)) => Some((tier(&t)?, at)),
        _ => None,
    };
    Ok(Some(BillingAccount {
        customer_id,
        pending,
        last_event_at,
    }))
}

/// Writes the user's tier and billing record back.
fn store(c: &Connection, user_id: &str, t: Tier, a: &BillingAccount) -> Result<()> {
    c.execute(
        "UPDATE users SET tier = ?2 WHERE id = ?1",
        params![user_id, t.as_str()],
    )
    .map_err(sq)?;
    c.execute(
        "INSERT INTO billing_accounts \
         (user_id, customer_id, pending_tier, pending_at, last_event_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (user_id) DO UPDATE SET customer_id = excluded.customer_id, \
         pending_tier = excluded.pending_tier, pending_at = excluded.pending_at, \
         last_event_at = excluded.last_event_at",
        params![
            user_id,
            a.customer_id,
            a.pending.map(|(t, _)| t.as_str()),
            a.pending.map(|(_, at)| at),
            a.last_event_at
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::Conflict("customer linked to another user".into())
        } else {
            sq(e)
        }
    })?;
    Ok(())
}

fn apply(c: &Connection, event: &BillingEvent, now: i64) -> Result<BillingOutcome> {
    let fresh = c
        .execute(
            "INSERT INTO billing_events (id, received_at) VALUES (?1, ?2) \
             ON CONFLICT (id) DO NOTHING",
            params![event.id, now],
        )
        .map_err(sq)?;
    if fresh == 0 {
        return Ok(BillingOutcome::Duplicate);
    }
    let mut found = None;
    if let Some(id) = &event.party.user_id {
        found = load(c, id)?.map(|l| (id.clone(), l));
    }
    if found.is_none() {
        if let Some(customer) = &event.party.customer_id {
            let id: Option<String> = c
                .query_row(
                    "SELECT user_id FROM billing_accounts WHERE customer_id = ?1",
                    [customer],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sq)?;
            if let Some(id) = id {
                found = load(c, &id)?.map(|l| (id, l));
            }
        }
    }
    // The job's error rolls its savepoint back: the event id is not kept.
    let (user_id, (before, mut account)) = found.ok_or(Error::NotFound("customer"))?;
    let mut t = before;
    let applied = billing::step(&mut t, &mut account, event, now);
    store(c, &user_id, t, &account)?;
    Ok(billing::outcome(user_id, before, t, &account, applied))
}

impl SqliteStore {
    /// [`crate::store::Store::apply_billing`].
    pub(super) fn write_billing(&self, event: &BillingEvent, now: i64) -> Result<BillingOutcome> {
        let event = event.clone();
        self.write(move |c| apply(c, &event, now))
    }

    /// [`crate::store::Store::settle_billing`].
    pub(super) fn settle_billing_due(&self, now: i64) -> Result<Vec<String>> {
        self.write(move |c| {
            let due: Vec<String> = {
                let mut st = c
                    .prepare("SELECT user_id FROM billing_accounts WHERE pending_at <= ?1")
                    .map_err(sq)?;
                let rows = st.query_map([now], |r| r.get(0)).map_err(sq)?;
                rows.collect::<rusqlite::Result<_>>().map_err(sq)?
            };
            let mut changed = Vec::new();
            for id in due {
                if let Some((mut t, mut account)) = load(c, &id)? {
                    let moved = billing::settle(&mut t, &mut account, now);
                    store(c, &id, t, &account)?;
                    if moved {
                        changed.push(id);
                    }
                }
            }
            Ok(changed)
        })
    }

    /// [`crate::store::Store::billing_account`].
    pub(super) fn read_billing(&self, user_id: &str) -> Result<Option<BillingAccount>> {
        self.read(|c| account(c, user_id))
    }

    /// Sets one text column of a user (`sql` with `?1` the id, `?2` the
    /// value). [`Error::NotFound`] for an unknown user.
    pub(super) fn write_user_text(
        &self,
        user_id: &str,
        sql: &'static str,
        value: &'static str,
    ) -> Result<()> {
        let id = user_id.to_owned();
        self.write(move |c| match c.execute(sql, [&id, value]).map_err(sq)? {
            0 => Err(Error::NotFound("user")),
            _ => Ok(()),
        })
    }
}
