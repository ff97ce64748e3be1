//! Prometheus metrics, hand-written in the text exposition format:
//! requests by route and status, a latency histogram per route, and metered
//! calls by tier. Lock-free: fixed tables of atomic counters indexed by
//! route (the [`crate::routes`] table) and status, so the hot path never
//! waits on a lock and never hashes a label. (The `prometheus-client` crate
//! takes a read lock and hashes the label set per labelled call, and a
//! mutex per histogram observation.) The counters every request writes
//! are kept in a few copies, one per thread in turn, summed by `render`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use qlearn_core::tenancy::Tier;

use crate::routes::Route;

/// Counter slots: one per route of the table, and one for `unmatched`.
const N_ROUTES: usize = Route::ALL.len() + 1;

/// The label of counter slot `i`.
fn route_label(i: usize) -> &'static str {
    Route::ALL.get(i).map_or("unmatched", |r| r.label())
}

/// Status codes counted individually; anything else counts as `other`.
const STATUSES: [u16; 16] = [
    200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 500, 503,
];
const N_STATUS: usize = STATUSES.len() + 1;

/// Upper bounds of the latency histogram's buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const N_BUCKETS: usize = BUCKETS.len() + 1;

struct RouteStats {
    by_status: [AtomicU64; N_STATUS],
    buckets: [AtomicU64; N_BUCKETS],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            by_status: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

/// How many copies of the per-request counters there are (see [`Stripe`]).
const STRIPES: usize = 4;

/// One copy of the counters every request writes. Each thread writes the
/// copy of its own index (threads take indices in turn), so two worker
/// threads do not write the same cache line on every request: a counter
/// both wrote would move between their cores at each increment. `/metrics`
/// sums the copies.
#[repr(align(128))]
struct Stripe {
    routes: [RouteStats; N_ROUTES],
    metered: [AtomicU64; 3],
}

impl Default for Stripe {
    fn default() -> Self {
        Stripe {
            routes: std::array::from_fn(|_| RouteStats::default()),
            metered: Default::default(),
        }
    }
}

/// The next thread's copy of the counters.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's copy of the counters ([`Stripe`]).
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
}

/// The service's counters.
pub struct Metrics {
    stripes: Vec<Stripe>,
    refused_quota: [AtomicU64; 3],
    connections: AtomicU64,
    key_lookups: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            refused_quota: Default::default(),
            connections: AtomicU64::new(0),
            key_lookups: AtomicU64::new(0),
        }
    }
}

fn tier_index(t: Tier) -> usize {
    match t {
        Tier::Free => 0,
        Tier::Pro => 1,
        Tier::Enterprise => 2,
    }
}

impl Metrics {
    /// Records one finished request (`None`: no route matched).
    pub fn record(&self, route: Option<Route>, status: u16, latency: Duration) {
        let r = &self.stripe().routes[route.map_or(N_ROUTES - 1, |r| r as usize)];
        let s = STATUSES
            .iter()
            .position(|&x| x == status)
            .unwrap_or(N_STATUS - 1);
        r.by_status[s].fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        let b = BUCKETS
            .iter()
            .position(|&x| secs <= x)
            .unwrap_or(N_BUCKETS - 1);
        r.buckets[b].fetch_add(1, Ordering::Relaxed);
        r.count.fetch_add(1, Ordering::Relaxed);
        r.sum_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts `n` accepted metered calls of a user of `tier`.
    pub fn metered(&self, tier: Tier, n: u64) {
        self.stripe().metered[tier_index(tier)].fetch_add(n, Ordering::Relaxed);
    }

    /// The calling thread's copy of the per-request counters.
    fn stripe(&self) -> &Stripe {
        let i = STRIPE.with(|i| *i);
        // `i < STRIPES == self.stripes.len()`; the fallback is never taken.
        self.stripes.get(i).unwrap_or(&self.stripes[0])
    }

    /// The sum over the copies of the counter `f` picks.
    fn total(&self, f: impl Fn(&Stripe) -> &AtomicU64) -> u64 {
        self.stripes
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a metered call refused for quota.
    pub fn quota_refused(&self, tier: Tier) {
        self.refused_quota[tier_index(tier)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a storage read for an API key the auth cache could not answer.
    pub fn key_lookup(&self) {
        self.key_lookups.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection opened (`true`) or closed.
    pub fn connection(&self, open: bool) {
        if open {
            self.connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP qlearn_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE qlearn_http_requests_total counter\n");
        for r in 0..N_ROUTES {
            let route = route_label(r);
            for i in 0..N_STATUS {
                let n = self.total(|s| &s.routes[r].by_status[i]);
                if n == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(i)
                    .map_or_else(|| "other".to_owned(), u16::to_string);
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
        for r in 0..N_ROUTES {
            let route = route_label(r);
            let count = self.total(|s| &s.routes[r].count);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += self.total(|s| &s.routes[r].buckets[i]);
                let _ = writeln!(
                    out,
                    "qlearn_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {cumulative}"
                );
            }
            cumulative += self.total(|s| &s.routes[r].buckets[N_BUCKETS - 1]);
            let _ = writeln!(
                out,
                "qlearn_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "qlearn_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                self.total(|s| &s.routes[r].sum_micros) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "qlearn_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
        out.push_str("# HELP qlearn_api_key_lookups_total API-key reads from storage (cache misses, known or unknown keys).\n");
        out.push_str("# TYPE qlearn_api_key_lookups_total counter\n");
        let _ = writeln!(
            out,
            "qlearn_api_key_lookups_total {}",
            self.key_lookups.load(Ordering::Relaxed)
        );
        out.push_str("# HELP qlearn_metered_calls_total Metered engine calls (predictions and updates) accepted, by tier.\n");
        out.push_str("# TYPE qlearn_metered_calls_total counter\n");
        for t in Tier::ALL {
            let _ = writeln!(
                out,
                "qlearn_metered_calls_total{{tier=\"{t}\"}} {}",
                self.total(|s| &s.metered[tier_index(t)])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let m = Metrics::default();
        // More threads than copies: every copy is written, some by two.
        std::thread::scope(|scope| {
            for t in 0..(STRIPES as u64 + 2) {
                let m = &m;
                scope.spawn(move || {
                    for _ in 0..10 {
                        m.record(Some(Route::Update), 200, Duration::from_micros(100));
                        m.metered(Tier::Free, 1 + t);
                    }
                });
            }
        });
        let n = STRIPES as u64 + 2;
        let text = m.render();
        let total = 10 * n;
        assert!(
            text.contains(&format!("route=\"/update\",status=\"200\"}} {total}\n")),
            "{text}"
        );
        assert!(text.contains(&format!(
            "qlearn_http_request_duration_seconds_count{{route=\"/update\"}} {total}\n"
        )));
        assert!(text.contains(&format!("route=\"/update\",le=\"0.0002\"}} {total}\n")));
        let sum = format!(
            "qlearn_http_request_duration_seconds_sum{{route=\"/update\"}} {}\n",
            (total * 100) as f64 / 1e6
        );
        assert!(text.contains(&sum), "{sum}");
        let metered: u64 = (0..n).map(|t| 10 * (1 + t)).sum();
        assert!(text.contains(&format!(
            "qlearn_metered_calls_total{{tier=\"free\"}} {metered}\n"
        )));
    }

    #[test]
    fn every_router_label_is_counted_and_rendered() {
        let m = Metrics::default();
        let predict = Some(Route::Predict);
        m.record(predict, 200, Duration::from_micros(300));
        m.record(predict, 429, Duration::from_millis(30));
        m.record(predict, 418, Duration::from_secs(30));
        m.record(None, 404, Duration::from_micros(300));
        m.metered(Tier::Pro, 3);
        let text = m.render();
        assert!(text.contains("qlearn_http_requests_total{route=\"/predict\",status=\"200\"} 1"));
        assert!(text.contains("qlearn_http_requests_total{route=\"/predict\",status=\"other\"} 1"));
        assert!(text.contains("le=\"0.0005\"} 1\n"));
        assert!(text.contains("le=\"0.05\"} 2\n"));
        assert!(text.contains("le=\"+Inf\"} 3\n"));
        assert!(text.contains("qlearn_metered_calls_total{tier=\"pro\"} 3"));
        assert!(text.contains("qlearn_http_requests_total{route=\"unmatched\",status=\"404\"} 1"));
        let m = Metrics::default();
        for &r in Route::ALL {
            m.record(Some(r), 200, Duration::from_micros(1));
            let line = format!("route=\"{}\",status=\"200\"}} 1\n", r.label());
            assert!(m.render().contains(&line), "{line}");
        }
    }
}
