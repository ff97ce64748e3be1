//! The monthly quota decision.
//!
//! Pure: storage backends read the month's count and call [`check_quota`]
//! inside their own atomic step (transaction, row lock or mutex), then add
//! `n` only when it returned `Ok`. That keeps the count exact under
//! concurrency: never one call over the limit, never a refused call counted.

use super::calendar::seconds_until_next_month;
use super::tier::TierLimits;
use crate::{Error, Result};

/// Decides whether `n` more metered calls fit when `used` were already made
/// this calendar month, and how many of them are overage.
///
/// Refuses with [`Error::QuotaExceeded`] (limit and the seconds until 00:00
/// UTC on the 1st of next month) when `used + n` exceeds the tier's monthly
/// limit. An unlimited tier never refuses, and `n == 0` is always admitted.
/// A batch is all or nothing: one that does not fit whole is refused whole.
///
/// A tier with [`TierLimits::overage`] never refuses: `Ok` carries how many
/// of the `n` calls lie past the limit (a batch straddling it is split
/// exactly: `used = 98`, `n = 5`, limit 100 gives 3), which the store
/// records with the calls. Without overage `Ok` is always 0.
pub fn check_quota(limits: &TierLimits, used: u64, n: u64, now_unix: i64) -> Result<u64> {
    let Some(limit) = limits.monthly_calls else {
        return Ok(0);
    };
    let after = used.saturating_add(n);
    if limits.overage {
        return Ok(n.min(after.saturating_sub(limit)));
    }
    if n == 0 || after <= limit {
        return Ok(0);
    }
    Err(Error::QuotaExceeded {
        limit,
        retry_after_secs: seconds_until_next_month(now_unix),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::Limits;

    const DEC_31_LAST_SECOND: i64 = 1_798_761_599; // 2026-12-31T23:59:59Z

    #[test]
    fn quota_admits_up_to_the_limit_exactly() {
        let free = Limits::default().free;
        assert!(check_quota(&free, 0, 100, 0).is_ok());
        assert!(check_quota(&free, 99, 1, 0).is_ok());
        assert!(check_quota(&free, 100, 0, 0).is_ok());
        assert!(check_quota(&free, 500, 0, 0).is_ok());
        match check_quota(&free, 100, 1, DEC_31_LAST_SECOND) {
            Err(Error::QuotaExceeded {
                limit,
                retry_after_secs,
            }) => {
                assert_eq!(limit, 100);
                assert_eq!(retry_after_secs, 1);
            }
            other => panic!("expected QuotaExceeded, got {other:?}"),
        }
        // A batch that does not fit whole is refused whole.
        assert!(check_quota(&free, 95, 6, 0).is_err());
        assert!(check_quota(&free, 0, 101, 0).is_err());
        assert!(check_quota(&free, u64::MAX, 1, 0).is_err());
    }

    #[test]
    fn overage_counts_exactly_past_the_limit() {
        let mut pro = Limits::default().pro;
        pro.overage = true;
        assert_eq!(check_quota(&pro, 0, 1_000, 0).unwrap(), 0);
        assert_eq!(check_quota(&pro, 999, 1, 0).unwrap(), 0);
        assert_eq!(check_quota(&pro, 1_000, 1, 0).unwrap(), 1);
        assert_eq!(check_quota(&pro, 998, 5, 0).unwrap(), 3);
        assert_eq!(check_quota(&pro, 5_000, 7, 0).unwrap(), 7);
        assert_eq!(check_quota(&pro, 5_000, 0, 0).unwrap(), 0);
        assert_eq!(check_quota(&pro, u64::MAX, 1, 0).unwrap(), 1);
        // Off: the same calls are refused, never counted as overage.
        pro.overage = false;
        assert!(check_quota(&pro, 998, 5, 0).is_err());
        assert_eq!(check_quota(&pro, 998, 2, 0).unwrap(), 0);
        // Overage on an unlimited tier is nothing.
        let mut ent = Limits::default().enterprise;
        ent.overage = true;
        assert_eq!(check_quota(&ent, u64::MAX, 9, 0).unwrap(), 0);
    }

    #[test]
    fn unlimited_never_refuses() {
        let ent = Limits::default().enterprise;
        assert!(check_quota(&ent, u64::MAX, u64::MAX, 0).is_ok());
    }
}
