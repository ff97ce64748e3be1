//! What a billing provider's events do to a user's tier, written once for
//! every backend: [`BillingEvent`] (what the host made of a verified
//! webhook), the [`BillingAccount`] kept per user (the provider's customer
//! id, a downgrade scheduled for the end of a paid period, the newest event
//! applied) and [`step`], which each backend runs inside its own
//! transaction after recording the event id (so a replayed or redelivered
//! event changes nothing: idempotent by event id).

use serde::{Deserialize, Serialize};

use super::Tier;

/// Who an event is about: the user id the checkout carried
/// (`client_reference_id` or the subscription's `metadata.user_id`), and/or
/// the provider's customer id (linked to the user by an earlier event).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BillingParty {
    /// The user id, when the event names it.
    pub user_id: Option<String>,
    /// The provider's customer id (`cus_...`), when the event carries one.
    pub customer_id: Option<String>,
}

/// What an event asks of the user's tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BillingAction {
    /// Only links the customer id to the user (a completed checkout).
    Link,
    /// Moves the user to `tier` now (a paid subscription started or
    /// changed), cancelling any scheduled downgrade; with `until`, the
    /// subscription ends at that time (cancelled at period end) and the user
    /// moves to [`Tier::Free`] then.
    Set {
        /// The tier the subscription's price buys.
        tier: Tier,
        /// When the subscription ends, if it is set to end.
        until: Option<i64>,
    },
    /// Moves the user to `to` at `at` (the end of the paid period: a
    /// cancelled subscription, a failed payment); at once if `at` has passed.
    DowngradeAt {
        /// The tier after the period.
        to: Tier,
        /// When (Unix seconds).
        at: i64,
    },
}

/// A verified provider event, reduced to what changes a tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillingEvent {
    /// The provider's event id (`evt_...`): each is applied at most once.
    pub id: String,
    /// When the provider created the event (Unix seconds): an event older
    /// than the newest one applied to the user is recorded but changes
    /// nothing (the provider does not promise delivery order).
    pub created: i64,
    /// Who it is about.
    pub party: BillingParty,
    /// What it asks.
    pub action: BillingAction,
}

/// A user's billing record.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BillingAccount {
    /// The provider's customer id, once an event linked it.
    pub customer_id: Option<String>,
    /// A downgrade scheduled for the end of a paid period: the tier and when.
    pub pending: Option<(Tier, i64)>,
    /// `created` of the newest event applied.
    pub last_event_at: i64,
}

/// What a store's `apply_billing` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BillingOutcome {
    /// The event was applied to `user_id`, whose tier is now `tier` (with a
    /// downgrade pending at `pending`, if any).
    Applied {
        /// The user.
        user_id: String,
        /// The user's tier after the event.
        tier: Tier,
        /// A scheduled downgrade: the tier and when.
        pending: Option<(Tier, i64)>,
        /// Whether the tier changed (caches of the user must be dropped).
        tier_changed: bool,
    },
    /// The event id was seen before: nothing changed.
    Duplicate,
    /// Older than the newest event applied to `user_id`: recorded, nothing
    /// changed.
    Stale {
        /// The user.
        user_id: String,
    },
}

/// Applies `event` to a user whose tier is `tier` and billing record is
/// `account`, at `now`: every backend calls this inside the transaction
/// that recorded the event id and then writes `tier` and `account` back.
/// Returns whether the event was applied (`false`: stale).
pub fn step(tier: &mut Tier, account: &mut BillingAccount, event: &BillingEvent, now: i64) -> bool {
    if event.created < account.last_event_at {
        return false;
    }
    account.last_event_at = event.created;
    if let Some(c) = &event.party.customer_id {
        account.customer_id = Some(c.clone());
    }
    match event.action {
        BillingAction::Link => {}
        BillingAction::Set { tier: t, until } => {
            *tier = t;
            account.pending = until.map(|at| (Tier::Free, at));
        }
        BillingAction::DowngradeAt { to, at } => account.pending = Some((to, at)),
    }
    settle(tier, account, now);
    true
}

/// The outcome of [`step`] on `user_id` (tier `before` it, `tier` and
/// `account` after; `applied`: what `step` returned).
pub fn outcome(
    user_id: String,
    before: Tier,
    tier: Tier,
    account: &BillingAccount,
    applied: bool,
) -> BillingOutcome {
    if applied {
        BillingOutcome::Applied {
            user_id,
            tier,
            pending: account.pending,
            tier_changed: before != tier,
        }
    } else {
        BillingOutcome::Stale { user_id }
    }
}

/// Applies a scheduled downgrade whose time has come (at or before `now`);
/// returns whether the tier changed.
pub fn settle(tier: &mut Tier, account: &mut BillingAccount, now: i64) -> bool {
    match account.pending {
        Some((to, at)) if at <= now => {
            account.pending = None;
            let changed = *tier != to;
            *tier = to;
            changed
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(created: i64, action: BillingAction) -> BillingEvent {
        BillingEvent {
            id: format!("evt_{created}"),
            created,
            party: BillingParty {
                user_id: None,
                customer_id: Some("cus_1".into()),
            },
            action,
        }
    }

    #[test]
    fn events_move_the_tier_and_schedule_downgrades() {
        let (mut tier, mut acc) = (Tier::Free, BillingAccount::default());
        let set = BillingAction::Set {
            tier: Tier::Pro,
            until: None,
        };
        assert!(step(&mut tier, &mut acc, &ev(10, set), 100));
        assert_eq!(
            (tier, acc.customer_id.as_deref()),
            (Tier::Pro, Some("cus_1"))
        );
        // A downgrade at the period's end waits for it.
        let down = BillingAction::DowngradeAt {
            to: Tier::Free,
            at: 500,
        };
        assert!(step(&mut tier, &mut acc, &ev(20, down), 100));
        assert_eq!((tier, acc.pending), (Tier::Pro, Some((Tier::Free, 500))));
        assert!(!settle(&mut tier, &mut acc, 499));
        assert!(settle(&mut tier, &mut acc, 500));
        assert_eq!((tier, acc.pending), (Tier::Free, None));
        // An older event changes nothing.
        assert!(!step(&mut tier, &mut acc, &ev(15, set), 600));
        assert_eq!(tier, Tier::Free);
        // A renewed subscription cancels a pending downgrade; a passed
        // period end downgrades at once.
        assert!(step(&mut tier, &mut acc, &ev(30, down), 100));
        assert!(step(&mut tier, &mut acc, &ev(31, set), 100));
        assert_eq!((tier, acc.pending), (Tier::Pro, None));
        assert!(step(&mut tier, &mut acc, &ev(32, down), 900));
        assert_eq!((tier, acc.pending), (Tier::Free, None));
        // Cancelled at period end: pro until then.
        let until = BillingAction::Set {
            tier: Tier::Enterprise,
            until: Some(2_000),
        };
        assert!(step(&mut tier, &mut acc, &ev(40, until), 1_000));
        assert_eq!(
            (tier, acc.pending),
            (Tier::Enterprise, Some((Tier::Free, 2_000)))
        );
    }
}
