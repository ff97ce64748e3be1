//! [`PgBuckets`]: the token buckets every instance of one database shares
//! (table `rate_buckets`), for [`crate::tenancy::Limiter`]. Each call is one
//! statement: the refill, the take and the write happen atomically under
//! the row's lock, with the database's clock, so instances with skewed
//! clocks still agree. Rows of buckets that have refilled completely carry
//! no information and are deleted now and then (every [`PRUNE_EVERY`]
//! takes of an instance; the condition is re-checked on the row's latest
//! version, so a bucket taken from meanwhile stays).

use std::sync::atomic::{AtomicU64, Ordering};

use super::pool::Manager;
use super::{pg, pool_conn};
use crate::error::Result;
use crate::tenancy::{SharedBuckets, Taken};

/// Takes of one instance between two prunings of full buckets.
const PRUNE_EVERY: u64 = 4_096;

/// Refill then take, in one statement. `$1` key, `$2` need, `$3` want,
/// `$4` rate, `$5` burst. `avail` (the tokens after the refill) is written
/// out in each place it is used, since `SET` cannot name it.
const SQL_TAKE: &str = "\
INSERT INTO rate_buckets AS b (key, tokens, at, rate, burst, granted)
SELECT $1::text, $5::float8 - g, c.now, $4::float8, $5::float8, g
FROM (SELECT extract(epoch FROM clock_timestamp())::float8 AS now) c,
     LATERAL (SELECT CASE WHEN $5::float8 + 1e-9 >= $2::float8 THEN LEAST($3::float8, floor($5::float8 + 1e-9)) ELSE 0 END AS g) x
ON CONFLICT (key) DO UPDATE SET
  granted = CASE
    WHEN LEAST($5::float8, b.tokens + GREATEST(0, EXCLUDED.at - b.at) * $4::float8) + 1e-9 >= $2::float8
    THEN LEAST($3::float8, floor(LEAST($5::float8, b.tokens + GREATEST(0, EXCLUDED.at - b.at) * $4::float8) + 1e-9))
    ELSE 0 END,
  tokens = GREATEST(0, LEAST($5::float8, b.tokens + GREATEST(0, EXCLUDED.at - b.at) * $4::float8) - CASE
    WHEN LEAST($5::float8, b.tokens + GREATEST(0, EXCLUDED.at - b.at) * $4::float8) + 1e-9 >= $2::float8
    THEN LEAST($3::float8, floor(LEAST($5::float8, b.tokens + GREATEST(0, EXCLUDED.at - b.at) * $4::float8) + 1e-9))
    ELSE 0 END),
  at = GREATEST(b.at, EXCLUDED.at),
  rate = $4::float8,
  burst = $5::float8
RETURNING granted, tokens";

/// The pool-backed [`SharedBuckets`] of a [`PgStore`](super::PgStore).
pub(super) struct PgBuckets {
    pub(super) pool: r2d2::Pool<Manager>,
    takes: AtomicU64,
}

impl PgBuckets {
    pub(super) fn new(pool: r2d2::Pool<Manager>) -> Self {
        PgBuckets {
            pool,
            takes: AtomicU64::new(0),
        }
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>> {
        pool_conn(&self.pool)
    }
}

impl SharedBuckets for PgBuckets {
    fn take(&self, key: &str, need: f64, want: f64, rate: f64, burst: f64) -> Result<Taken> {
        let rate = if rate.is_finite() && rate > 1e-6 {
            rate
        } else {
            1e-6
        };
        let burst = if burst.is_finite() && burst >= 1.0 {
            burst
        } else {
            1.0
        };
        let want = want.max(need);
        let mut c = self.conn()?;
        let row = c
            .client
            .query_one(SQL_TAKE, &[&key, &need, &want, &rate, &burst])
            .map_err(pg)?;
        let (granted, left): (f64, f64) = (row.get(0), row.get(1));
        if self.takes.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            c.client
                .execute(
                    "DELETE FROM rate_buckets WHERE tokens + \
                     (extract(epoch FROM clock_timestamp())::float8 - at) * rate >= burst",
                    &[],
                )
                .map_err(pg)?;
        }
        Ok(Taken {
            granted,
            left,
            wait_secs: if granted > 0.0 {
                0.0
            } else {
                (need - left).max(0.0) / rate
            },
        })
    }

    fn give(&self, key: &str, n: f64) -> Result<()> {
        let n = if n.is_finite() && n > 0.0 { n } else { 0.0 };
        self.conn()?
            .client
            .execute(
                "UPDATE rate_buckets SET tokens = LEAST(burst, tokens + $2) WHERE key = $1",
                &[&key, &n],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn forget(&self, key: &str) -> Result<()> {
        self.conn()?
            .client
            .execute("DELETE FROM rate_buckets WHERE key = $1", &[&key])
            .map_err(pg)?;
        Ok(())
    }
}
