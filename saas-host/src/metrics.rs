//! Prometheus metrics, hand-written in the text exposition format:
//! requests by route and status, a latency histogram per route, and metered
//! calls by tier. One short mutex section per request; nothing else.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use qlearn_core::tenancy::Tier;

/// Upper bounds of the latency histogram's buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The service's counters.
#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<&'static str, RouteStats>>,
    metered: [AtomicU64; 3],
    refused_quota: [AtomicU64; 3],
    connections: AtomicU64,
}

fn tier_index(t: Tier) -> usize {
    match t {
        Tier::Free => 0,
        Tier::Pro => 1,
        Tier::Enterprise => 2,
    }
}

impl Metrics {
    /// Records one finished request.
    pub fn record(&self, route: &'static str, status: u16, latency: Duration) {
        let secs = latency.as_secs_f64();
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let r = routes.entry(route).or_default();
        *r.by_status.entry(status).or_default() += 1;
        r.count += 1;
        r.sum += secs;
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            r.buckets[i] += 1;
        }
    }

    /// Counts `n` accepted metered calls of a user of `tier`.
    pub fn metered(&self, tier: Tier, n: u64) {
        self.metered[tier_index(tier)].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a metered call refused for quota.
    pub fn quota_refused(&self, tier: Tier) {
        self.refused_quota[tier_index(tier)].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection opened (+1) or closed (-1).
    pub fn connection(&self, open: bool) {
        if open {
            self.connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP qlearn_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE qlearn_http_requests_total counter\n");
        for (route, r) in routes.iter() {
            for (status, n) in &r.by_status {
                let _ = writeln!(
                    out,
                    "qlearn_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP qlearn_http_request_duration_seconds Time from request head to response head.\n",
        );
        out.push_str("# TYPE qlearn_http_request_duration_seconds histogram\n");
        for (route, r) in routes.iter() {
            let mut cumulative = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += r.buckets[i];
                let _ = writeln!(
                    out,
                    "qlearn_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "qlearn_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                r.count
            );
            let _ = writeln!(
                out,
                "qlearn_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                r.sum
            );
            let _ = writeln!(
                out,
                "qlearn_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                r.count
            );
        }
        drop(routes);
        out.push_str("# HELP qlearn_metered_calls_total Metered engine calls (predictions and updates) accepted, by tier.\n");
        out.push_str("# TYPE qlearn_metered_calls_total counter\n");
        for t in Tier::ALL {
            let _ = writeln!(
                out,
                "qlearn_metered_calls_total{{tier=\"{t}\"}} {}",
                self.metered[tier_index(t)].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP qlearn_quota_refusals_total Metered requests refused because the monthly quota was used up, by tier.\n");
        out.push_str("# TYPE qlearn_quota_refusals_total counter\n");
        for t in Tier::ALL {
            let _ = writeln!(
                out,
                "qlearn_quota_refusals_total{{tier=\"{t}\"}} {}",
                self.refused_quota[tier_index(t)].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP qlearn_open_connections Connections being served.\n");
        out.push_str("# TYPE qlearn_open_connections gauge\n");
        let _ = writeln!(
            out,
            "qlearn_open_connections {}",
            self.connections.load(Ordering::Relaxed)
        );
        out
    }
}
