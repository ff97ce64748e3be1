//! UTC calendar arithmetic for billing months and timestamps.
//!
//! Quotas reset at 00:00 UTC on the 1st of each month, so the crate needs
//! month boundaries, days per month and date strings, without a date crate:
//! the conversions are Howard Hinnant's `days_from_civil` / `civil_from_days`
//! (proleptic Gregorian calendar, exact for every supported day).
//!
//! Timestamps are unix seconds (`i64`). They are clamped to
//! [`MIN_UNIX`]`..=`[`MAX_UNIX`] (years 0000 to 9999) so every result has a
//! four-digit year and no arithmetic can overflow.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

const SECS_PER_DAY: i64 = 86_400;

/// Earliest supported timestamp: 0000-01-01T00:00:00Z.
pub const MIN_UNIX: i64 = -62_167_219_200;
/// Latest supported timestamp: 9999-12-31T23:59:59Z.
pub const MAX_UNIX: i64 = 253_402_300_799;

/// Days since 1970-01-01 of the civil date `y-m-d` (`m` in 1..=12).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month 1..=12, day 1..=31)` of a day count since
/// 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    // `m` and `d` are in range by construction.
    (y, m as u8, d as u8)
}

/// Splits a (clamped) timestamp into days since the epoch and seconds of day.
fn split(unix: i64) -> (i64, i64) {
    let t = unix.clamp(MIN_UNIX, MAX_UNIX);
    (t.div_euclid(SECS_PER_DAY), t.rem_euclid(SECS_PER_DAY))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// A calendar month in UTC: the period a monthly quota counts in.
///
/// Orders chronologically. Displays, parses and serializes as `YYYY-MM`
/// (e.g. `2026-11`), which is also a good storage key. Methods treat a
/// `month` outside 1..=12 (only possible through the public fields) as
/// clamped into that range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BillingMonth {
    /// The year, 0 to 9999.
    pub year: i32,
    /// The month, 1 (January) to 12.
    pub month: u8,
}

impl BillingMonth {
    /// The month `year-month`; fails unless `year` is 0..=9999 and `month`
    /// 1..=12.
    pub fn new(year: i32, month: u8) -> Result<Self> {
        if !(0..=9999).contains(&year) {
            return Err(Error::field(
                "year",
                format!("must be 0 to 9999, got {year}"),
            ));
        }
        if !(1..=12).contains(&month) {
            return Err(Error::field(
                "month",
                format!("must be 1 to 12, got {month}"),
            ));
        }
        Ok(BillingMonth { year, month })
    }

    /// The month containing the unix timestamp `unix` (seconds, UTC).
    pub fn from_unix(unix: i64) -> Self {
        let (days, _) = split(unix);
        let (y, m, _) = civil_from_days(days);
        // Clamping keeps `y` in 0..=9999.
        BillingMonth {
            year: y as i32,
            month: m,
        }
    }

    fn month_clamped(self) -> u8 {
        self.month.clamp(1, 12)
    }

    /// Unix time of 00:00:00 UTC on the 1st of this month.
    pub fn start_unix(self) -> i64 {
        days_from_civil(i64::from(self.year), i64::from(self.month_clamped()), 1) * SECS_PER_DAY
    }

    /// The following month (December is followed by January of next year).
    pub fn next(self) -> Self {
        match self.month_clamped() {
            12 => BillingMonth {
                year: self.year.saturating_add(1),
                month: 1,
            },
            m => BillingMonth {
                year: self.year,
                month: m + 1,
            },
        }
    }

    /// The preceding month (January is preceded by December of last year).
    pub fn prev(self) -> Self {
        match self.month_clamped() {
            1 => BillingMonth {
                year: self.year.saturating_sub(1),
                month: 12,
            },
            m => BillingMonth {
                year: self.year,
                month: m - 1,
            },
        }
    }

    /// Number of days in this month, 28 to 31 (leap years per Gregorian rules).
    pub fn days(self) -> u8 {
        match self.month_clamped() {
            4 | 6 | 9 | 11 => 30,
            2 if is_leap(i64::from(self.year)) => 29,
            2 => 28,
            _ => 31,
        }
    }

    /// Whether `unix` falls in this month.
    pub fn contains(self, unix: i64) -> bool {
        (self.start_unix()..self.next().start_unix()).contains(&unix)
    }

    /// The day of this month (1-based) on which `unix` falls, for per-day
    /// usage counters. Times before the month give 1 and after it give
    /// [`days`](Self::days), so `day_of(ts) - 1` always indexes an array of
    /// `days()` entries.
    pub fn day_of(self, unix: i64) -> u8 {
        let start = self.start_unix();
        if unix < start {
            return 1;
        }
        let day = (unix - start) / SECS_PER_DAY + 1;
        // `min` keeps the value in 1..=31 before narrowing.
        day.min(i64::from(self.days())) as u8
    }
}

impl fmt::Display for BillingMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for BillingMonth {
    type Err = Error;

    /// Parses `YYYY-MM`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::field("month", "must be YYYY-MM, e.g. 2026-11");
        let (y, m) = s.trim().split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !(y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        let year = y.parse::<i32>().map_err(|_| bad())?;
        let month = m.parse::<u8>().map_err(|_| bad())?;
        BillingMonth::new(year, month)
    }
}

impl Serialize for BillingMonth {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BillingMonth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Seconds from `now_unix` until 00:00 UTC on the 1st of next month: the
/// `Retry-After` of a refused metered call. Always at least 1.
pub fn seconds_until_next_month(now_unix: i64) -> u64 {
    let now = now_unix.clamp(MIN_UNIX, MAX_UNIX);
    let next = BillingMonth::from_unix(now).next().start_unix();
    u64::try_from(next - now).unwrap_or(1).max(1)
}

/// The UTC date of `unix` as `YYYY-MM-DD`, e.g. for per-day usage keys.
pub fn date_string(unix: i64) -> String {
    let (days, _) = split(unix);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `unix` as an RFC 3339 UTC timestamp, `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = split(unix);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s) = (secs / 3_600, secs % 3_600 / 60, secs % 60);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_over_centuries() {
        // Every day from 1600-01-01 to 2400-12-31 converts both ways.
        let start = days_from_civil(1600, 1, 1);
        let end = days_from_civil(2400, 12, 31);
        let mut prev = civil_from_days(start - 1);
        for z in start..=end {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), z);
            // Consecutive days are consecutive dates.
            if d == 1 {
                assert!(m != prev.1 || y != prev.0);
            } else {
                assert_eq!((y, m, d - 1), prev);
            }
            prev = (y, m, d);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn known_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(date_string(1_709_251_199), "2024-02-29");
        assert_eq!(date_string(1_709_251_200), "2024-03-01");
        assert_eq!(rfc3339(MIN_UNIX), "0000-01-01T00:00:00Z");
        assert_eq!(rfc3339(MAX_UNIX), "9999-12-31T23:59:59Z");
        // Out of range clamps instead of overflowing.
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(i64::MIN), "0000-01-01T00:00:00Z");
    }

    #[test]
    fn billing_month_boundaries() {
        let feb = BillingMonth::from_unix(1_709_164_800); // 2024-02-29
        assert_eq!(feb, BillingMonth::new(2024, 2).unwrap());
        assert_eq!(feb.to_string(), "2024-02");
        assert_eq!(feb.days(), 29);
        assert_eq!(feb.day_of(1_709_164_800), 29);
        assert_eq!(feb.start_unix(), 1_706_745_600); // 2024-02-01
        assert_eq!(feb.next().start_unix(), 1_709_251_200); // 2024-03-01
        assert_eq!(feb.next().prev(), feb);

        let dec = BillingMonth::from_unix(1_798_761_599); // 2026-12-31T23:59:59Z
        assert_eq!(dec.to_string(), "2026-12");
        assert_eq!(dec.next(), BillingMonth::new(2027, 1).unwrap());
        assert_eq!(dec.next().prev(), dec);
        assert_eq!(dec.next().start_unix(), 1_798_761_600);
        assert_eq!(
            BillingMonth::from_unix(1_798_761_600).to_string(),
            "2027-01"
        );
        assert_eq!(dec.days(), 31);
        assert_eq!(dec.day_of(1_798_761_599), 31);
        assert_eq!(dec.day_of(dec.start_unix()), 1);
        assert_eq!(dec.day_of(dec.start_unix() - 1), 1);
        assert_eq!(dec.day_of(dec.next().start_unix() + 10 * SECS_PER_DAY), 31);
        assert!(dec.contains(1_798_761_599) && !dec.contains(1_798_761_600));

        let days = |y, m| BillingMonth::new(y, m).unwrap().days();
        assert_eq!(days(2023, 2), 28);
        assert_eq!(days(1900, 2), 28);
        assert_eq!(days(2000, 2), 29);
        assert_eq!(days(2026, 4), 30);
        assert_eq!(days(2026, 1), 31);
        // Sum of days of a month = distance between month starts.
        let mut m = BillingMonth::new(1999, 1).unwrap();
        for _ in 0..(12 * 30) {
            let len = m.next().start_unix() - m.start_unix();
            assert_eq!(len, i64::from(m.days()) * SECS_PER_DAY, "{m}");
            m = m.next();
        }
    }

    #[test]
    fn seconds_until_next_month_edges() {
        assert_eq!(seconds_until_next_month(1_798_761_599), 1); // 2026-12-31T23:59:59Z
        assert_eq!(seconds_until_next_month(1_798_761_600), 31 * 86_400); // 2027-01-01
        assert_eq!(seconds_until_next_month(1_709_164_800), 86_400); // 2024-02-29 -> 03-01
        assert_eq!(seconds_until_next_month(i64::MAX), 1);
    }

    #[test]
    fn billing_month_parse_and_serde() {
        let m: BillingMonth = "2026-11".parse().unwrap();
        assert_eq!(
            m,
            BillingMonth {
                year: 2026,
                month: 11
            }
        );
        for bad in [
            "2026-13", "2026-00", "2026-1", "26-11", "2026/11", "abcd-ef", "", "+026-11",
        ] {
            assert!(bad.parse::<BillingMonth>().is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"2026-11\"");
        assert_eq!(
            serde_json::from_str::<BillingMonth>("\"2026-11\"").unwrap(),
            m
        );
        assert!(serde_json::from_str::<BillingMonth>("\"2026-99\"").is_err());
        assert!(BillingMonth::new(10_000, 1).is_err());
        // Out-of-range public fields do not panic.
        let odd = BillingMonth {
            year: 2026,
            month: 13,
        };
        assert_eq!(odd.days(), 31);
        assert_eq!(
            odd.next(),
            BillingMonth {
                year: 2027,
                month: 1
            }
        );
        assert!(
            BillingMonth {
                year: 2026,
                month: 1
            } < BillingMonth {
                year: 2026,
                month: 2
            }
        );
        assert!(
            BillingMonth {
                year: 2025,
                month: 12
            } < BillingMonth {
                year: 2026,
                month: 1
            }
        );
    }
}
