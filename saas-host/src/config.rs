//! Server configuration (what `run` needs) and opening the store a
//! `DATABASE_URL` names.

use crate::cidr::Cidr;
use std::sync::Arc;
use std::time::Duration;

use qlearn_core::store::memory::MemoryStore;
use qlearn_core::store::sqlite::{Durability, SqliteOptions, SqliteStore};
use qlearn_core::store::Store;
use qlearn_core::tenancy::{Limits, Plans};
use qlearn_core::{Error, Result};

/// Default `DATABASE_URL`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./saas_ai.db";

/// Failed logins allowed per account (and client address) per
/// [`LOGIN_WINDOW_SECS`], by default.
pub const LOGIN_PER_ACCOUNT: u32 = 5;
/// Failed logins allowed per client address per [`LOGIN_WINDOW_SECS`], by default.
pub const LOGIN_PER_ADDRESS: u32 = 20;
/// The login throttles' window, seconds (15 minutes), by default.
pub const LOGIN_WINDOW_SECS: u32 = 15 * 60;
/// Registrations allowed per client address per [`REGISTER_WINDOW_SECS`], by default.
pub const REGISTER_PER_ADDRESS: u32 = 10;
/// The registration throttle's window, seconds (an hour), by default.
pub const REGISTER_WINDOW_SECS: u32 = 3600;

/// A token bucket's parameters: sustained `rate` per second and `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttle {
    /// Tokens per second.
    pub rate: f64,
    /// Capacity.
    pub burst: f64,
}

impl Throttle {
    /// `burst` attempts, refilled at `burst` per `period`.
    pub const fn per(burst: u32, period_secs: u32) -> Self {
        Throttle {
            rate: burst as f64 / period_secs as f64,
            burst: burst as f64,
        }
    }
}

/// Everything [`crate::run`] needs. `Config::default()` is the SPEC's
/// defaults; the binary fills it from flags and the environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `sqlite://PATH`, `postgres://...` or `memory://`.
    pub database_url: String,
    /// The JWT secret (`SECRET_KEY`); `None` = generated once and kept in the store.
    pub secret_key: Option<String>,
    /// Origins allowed by CORS (exact match, e.g. `https://app.example.com`).
    pub cors_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed (reverse proxies): single
    /// addresses or ranges.
    pub trusted_proxies: Vec<Cidr>,
    /// Per-tier limits (quota, models, rate limit) and features.
    pub limits: Limits,
    /// Per-tier plans (display name, price, provider price ids), from the
    /// same plans file as `limits`.
    pub plans: Plans,
    /// The billing provider: checkout URL and webhook secret.
    pub billing: Billing,
    /// Largest JSON body, bytes (64 KiB).
    pub body_limit: usize,
    /// Largest `POST /update/batch` body, bytes (1 MiB: room for 1,000
    /// experiences with array states).
    pub batch_limit: usize,
    /// Largest `POST /models/import` body, bytes (64 MiB).
    pub import_limit: usize,
    /// Most connections served at once; more wait in the accept queue (4096).
    pub max_connections: usize,
    /// Most connections open at once from one client address (an IPv4
    /// address, or an IPv6 /64), counted by TCP peer; trusted proxies are
    /// exempt. Over it a new connection is closed at once, unanswered. 0 = no
    /// cap (64).
    pub max_connections_per_address: usize,
    /// Time a client has to send a request's headers (10 s). Also bounds a
    /// new connection's first request head, HTTP/2 preface included, from
    /// the accept, and the wait for the next request on a kept-alive HTTP/1
    /// connection.
    pub header_read_timeout: Duration,
    /// Time a request has to arrive in full, headers and body, counted from
    /// its first byte (30 s); trickling bytes does not extend it. Past it the
    /// client gets 408 `request_timeout` and the HTTP/1 connection is closed.
    pub request_timeout: Duration,
    /// A connection with no request in flight for this long is closed, even
    /// if bytes still trickle in (120 s). A long response, such as an event
    /// stream, is a request in flight.
    pub idle_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Lifetime of issued JWTs (24 h).
    pub token_ttl: Duration,
    /// Failed logins allowed per account.
    pub login_per_account: Throttle,
    /// Failed logins allowed per client address.
    pub login_per_address: Throttle,
    /// Registrations allowed per client address.
    pub register_per_address: Throttle,
    /// How long an authenticated user (or API key) is cached before the
    /// store is asked again (bounds how late another instance's tier change
    /// or key revocation is seen here; this instance's own are immediate).
    pub auth_cache_ttl: Duration,
    /// Interval of `: keep-alive` comments on event streams.
    pub sse_keep_alive: Duration,
    /// How often an open event stream checks that its credential still
    /// authenticates (5 s; from the auth cache, so usually no storage read).
    /// A password change or key deletion on this instance is seen at once.
    pub event_recheck: Duration,
    /// Lifetime of an event-stream ticket (30 s).
    pub event_ticket_ttl: Duration,
    /// Most event streams open at once on one model, on this instance (20).
    /// The per-user cap is the tier's `max_event_streams`.
    pub max_event_streams_per_model: u32,
    /// How long an API key the store did not know is answered 401 without
    /// asking the store again (60 s). A key created on this instance is
    /// cleared from that memory at once; one created on another instance
    /// cannot be in it (nobody can have sent a random 256-bit key before it
    /// existed).
    pub unknown_key_ttl: Duration,
    /// How often passed reward deadlines are settled (1 s).
    pub settle_every: Duration,
    /// Threads running offline evaluation jobs on this instance (1; 0:
    /// none, the jobs wait for another instance).
    pub evaluation_workers: usize,
    /// White-label: product name, logo, colours, support address, docs
    /// title, and the pages rendered with them (default: qlearn's own).
    pub brand: crate::branding::Brand,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: DEFAULT_DATABASE_URL.into(),
            secret_key: None,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            plans: Plans::default(),
            billing: Billing::default(),
            body_limit: 64 * 1024,
            batch_limit: 1024 * 1024,
            import_limit: 64 * 1024 * 1024,
            max_connections: 4096,
            max_connections_per_address: 64,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            shutdown_timeout: Duration::from_secs(30),
            token_ttl: Duration::from_secs(24 * 3600),
            login_per_account: Throttle::per(LOGIN_PER_ACCOUNT, LOGIN_WINDOW_SECS),
            login_per_address: Throttle::per(LOGIN_PER_ADDRESS, LOGIN_WINDOW_SECS),
            register_per_address: Throttle::per(REGISTER_PER_ADDRESS, REGISTER_WINDOW_SECS),
            auth_cache_ttl: Duration::from_secs(5),
            sse_keep_alive: Duration::from_secs(15),
            event_recheck: Duration::from_secs(5),
            event_ticket_ttl: Duration::from_secs(30),
            max_event_streams_per_model: 20,
            unknown_key_ttl: Duration::from_secs(60),
            settle_every: Duration::from_secs(1),
            evaluation_workers: 1,
            brand: crate::branding::Brand::default(),
        }
    }
}

/// Reads a plans file (an older limits file loads too: tiers and fields
/// left out keep their defaults) and validates it: every tier's limits and
/// features, and its plan.
pub fn load_limits(path: &std::path::Path) -> Result<(Limits, Plans)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::field(
            "limits_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Plans::load(&text).map_err(|e| match e {
        Error::InvalidField { field, message } if field == "limits_file" => {
            Error::field(field, format!("{}: {message}", path.display()))
        }
        e => e,
    })
}

/// The billing provider's settings (issue 17). Without a webhook secret
/// `POST /billing/webhook` answers 404; without a checkout URL the plans
/// page offers no upgrade button.
#[derive(Clone)]
pub struct Billing {
    /// Where "Upgrade" sends a user: `{user_id}`, `{email}` and `{plan}`
    /// are replaced (URL-encoded), e.g.
    /// `https://buy.example/checkout?client_reference_id={user_id}`.
    pub checkout_url: Option<String>,
    /// The webhook's signing secret (`whsec_...`). Never logged.
    pub webhook_secret: Option<Arc<[u8]>>,
    /// Largest difference between a delivery's signed timestamp and now,
    /// seconds (300).
    pub webhook_tolerance_secs: i64,
}

impl Default for Billing {
    fn default() -> Self {
        Billing {
            checkout_url: None,
            webhook_secret: None,
            webhook_tolerance_secs: qlearn_core::tenancy::webhook::DEFAULT_TOLERANCE_SECS,
        }
    }
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Billing")
            .field("checkout_url", &self.checkout_url)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("webhook_tolerance_secs", &self.webhook_tolerance_secs)
            .finish()
    }
}

impl Billing {
    /// The webhook secret: the contents of `file` when given, else the
    /// `BILLING_WEBHOOK_SECRET` environment variable (never a flag, which
    /// `ps` would show); surrounding whitespace trimmed, empty = none.
    pub fn secret(file: Option<&std::path::Path>) -> Result<Option<Arc<[u8]>>> {
        let text = match file {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                Error::field(
                    "BILLING_WEBHOOK_SECRET_FILE",
                    format!("cannot read {}: {e}", p.display()),
                )
            })?),
            None => std::env::var("BILLING_WEBHOOK_SECRET").ok(),
        };
        Ok(text
            .map(|s| Arc::<[u8]>::from(s.trim().as_bytes()))
            .filter(|s| !s.is_empty()))
    }

    /// Checks the checkout URL template: an `http(s)://` URL.
    pub fn validate(&self) -> Result<()> {
        if let Some(u) = &self.checkout_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(Error::field(
                    "CHECKOUT_URL",
                    "must be an https:// (or http://) URL",
                ));
            }
        }
        if self.webhook_tolerance_secs < 1 {
            return Err(Error::field(
                "BILLING_WEBHOOK_TOLERANCE_SECS",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Opens the store `url` names: `sqlite://PATH` (PATH may be relative, e.g.
/// `sqlite://./saas_ai.db`, or absolute, `sqlite:///var/lib/qlearn.db`),
/// `postgres://...`/`postgresql://...`, or `memory://` (nothing persists).
/// Blocks (connects, migrates): call it off the async executor.
pub fn open_store(url: &str) -> Result<Arc<dyn Store>> {
    open_store_with(url, true)
}

/// [`open_store`] for a server whose async runtime has `workers` worker
/// threads on `cpus` CPUs: a SQLite store's non-blocking calls are then
/// committed by the waiting tasks when the workers take every CPU, and by
/// the store's writer thread when they leave one idle
/// ([`task_commits`]).
pub fn open_store_for_runtime(url: &str, workers: usize, cpus: usize) -> Result<Arc<dyn Store>> {
    open_store_with(url, task_commits(workers, cpus))
}

/// Whether the SQLite store's non-blocking calls are committed by their
/// waiting tasks ([`SqliteOptions::task_commits`]): when the async
/// workers are at least as many as the CPUs. With fewer, the writer
/// thread's commits run on a core the workers leave idle, which paid for
/// its two thread hand-offs per batch in the measurements of issue 16
/// (docs/benchmarks-http.md, session 22): one worker on two cores served
/// 5-9% more requests with the writer thread, two workers 9-15% more
/// with task commits.
pub fn task_commits(workers: usize, cpus: usize) -> bool {
    workers >= cpus
}

fn open_store_with(url: &str, task_commits: bool) -> Result<Arc<dyn Store>> {
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return open_sqlite(path, task_commits);
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return open_postgres(url);
    }
    Err(Error::field(
        "DATABASE_URL",
        "must start with sqlite://, postgres:// or memory://",
    ))
}

/// The database file of a `sqlite://PATH[?options]` URL (`None` for
/// other URLs or a malformed one).
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let target = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    sqlite_target(target).ok().map(|(p, _)| p.into())
}

/// Splits the part of `sqlite://PATH[?synchronous=normal|full][&cache_mb=N]`
/// after the scheme into the file path and the store's options:
/// `synchronous=normal` (the default) survives `kill -9` of the process,
/// `full` also a power loss or an OS crash, at one fsync per group commit;
/// `cache_mb` is the memory budget of the model cache in MiB, the pending
/// decisions the models' logs hold included (256 by default; least
/// recently used models leave memory past it).
fn sqlite_target(target: &str) -> Result<(&str, SqliteOptions)> {
    const OPTIONS: &str =
        "sqlite:// options are synchronous=normal|full and cache_mb=N (MiB, at least 1)";
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut options = SqliteOptions::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let pair = pair.to_ascii_lowercase();
        match pair.split_once('=') {
            Some(("synchronous", "normal")) => options.durability = Durability::Process,
            Some(("synchronous", "full")) => options.durability = Durability::PowerLoss,
            Some(("cache_mb", n)) => {
                options.cache_bytes = n
                    .parse::<usize>()
                    .ok()
                    .filter(|&mb| mb >= 1)
                    .and_then(|mb| mb.checked_mul(1 << 20))
                    .ok_or_else(|| Error::field("DATABASE_URL", OPTIONS))?;
            }
            _ => return Err(Error::field("DATABASE_URL", OPTIONS)),
        }
    }
    if path.is_empty() {
        return Err(Error::field(
            "DATABASE_URL",
            "sqlite:// needs a file path, e.g. sqlite://./saas_ai.db",
        ));
    }
    Ok((path, options))
}

/// Opens the SQLite store (see [`sqlite_target`]) and logs its options.
fn open_sqlite(target: &str, task_commits: bool) -> Result<Arc<dyn Store>> {
    let (path, mut options) = sqlite_target(target)?;
    options.task_commits = task_commits;
    let (synchronous, cache_mb, commits) = described(&options);
    tracing::info!(
        path,
        synchronous,
        cache_mb,
        commits,
        "opening the SQLite store"
    );
    Ok(Arc::new(SqliteStore::open_with(path, options)?))
}

/// What the log says of a SQLite store's options: its durability, its
/// cache budget in MiB, and who commits the async calls.
fn described(options: &SqliteOptions) -> (&'static str, usize, &'static str) {
    let synchronous = match options.durability {
        Durability::Process => {
            "NORMAL (survives a process crash; ?synchronous=full for power loss)"
        }
        Durability::PowerLoss => "FULL (survives power loss)",
    };
    let commits = if options.task_commits {
        "by the waiting tasks (the async workers take every CPU)"
    } else {
        "by the writer thread (fewer async workers than CPUs)"
    };
    (synchronous, options.cache_bytes >> 20, commits)
}

/// Whether this build can open `postgres://` URLs.
pub fn postgres_available() -> bool {
    true
}

fn open_postgres(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(qlearn_core::store::postgres::PgStore::connect(
        url,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_describes_the_sqlite_options() {
        let (synchronous, cache_mb, commits) = described(&SqliteOptions::default());
        assert!(synchronous.starts_with("NORMAL"));
        assert_eq!(cache_mb, 256);
        assert!(commits.starts_with("by the waiting tasks"));
        let (synchronous, cache_mb, commits) = described(&SqliteOptions {
            durability: Durability::PowerLoss,
            cache_bytes: 8 << 20,
            task_commits: false,
        });
        assert!(synchronous.starts_with("FULL"));
        assert_eq!(cache_mb, 8);
        assert!(commits.starts_with("by the writer thread"));
    }

    #[test]
    fn waiting_tasks_commit_when_the_workers_take_every_cpu() {
        assert!(task_commits(2, 2));
        assert!(task_commits(4, 2));
        assert!(
            !task_commits(1, 2),
            "one worker leaves a core to the writer"
        );
        assert!(task_commits(1, 1));
    }

    #[test]
    fn sqlite_urls_choose_the_durability() {
        let options = |durability, cache_mb: usize| SqliteOptions {
            durability,
            cache_bytes: cache_mb << 20,
            ..SqliteOptions::default()
        };
        assert_eq!(SqliteOptions::default(), options(Durability::Process, 256));
        for (url, path, want) in [
            ("./a.db", "./a.db", SqliteOptions::default()),
            (
                "/x/a.db?synchronous=full",
                "/x/a.db",
                options(Durability::PowerLoss, 256),
            ),
            (
                "a.db?synchronous=FULL&synchronous=normal",
                "a.db",
                options(Durability::Process, 256),
            ),
            ("a.db?cache_mb=64", "a.db", options(Durability::Process, 64)),
            (
                "a.db?synchronous=full&CACHE_MB=1",
                "a.db",
                options(Durability::PowerLoss, 1),
            ),
        ] {
            assert_eq!(sqlite_target(url).unwrap(), (path, want), "{url}");
        }
        for bad in [
            "",
            "?synchronous=full",
            "?cache_mb=8",
            "a.db?synchronous=off",
            "a.db?mode=ro",
            "a.db?cache_mb=0",
            "a.db?cache_mb=-1",
            "a.db?cache_mb=1.5",
            "a.db?cache_mb=",
            "a.db?cache_mb",
            "a.db?cache_mb=99999999999999999999",
        ] {
            let err = sqlite_target(bad).unwrap_err().to_string();
            assert!(err.contains("DATABASE_URL"), "{bad}: {err}");
        }
    }
}
