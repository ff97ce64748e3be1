//! The command line: `saas-host [serve] [flags]` and the operator's
//! `saas-host admin ...` (set-tier, set-role, list-users, disable-user,
//! enable-user, create-admin; see [`crate::admin`]).
//! Every serve flag can also come from the environment; `SECRET_KEY` only
//! from the environment (a flag would show in `ps`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use qlearn_core::tenancy::{hash_password, normalize_email, BillingMonth};
use qlearn_core::{Error, Result};

use crate::admin::{AdminOp, Failed, UserRow, Via};
use crate::branding::{Brand, BrandSettings};
use crate::cidr::Cidr;
use crate::config::{
    load_limits, Billing, Config, Throttle, DEFAULT_DATABASE_URL, LOGIN_PER_ACCOUNT,
    LOGIN_PER_ADDRESS, LOGIN_WINDOW_SECS, REGISTER_PER_ADDRESS, REGISTER_WINDOW_SECS,
};
use crate::invoicing::Format;

/// The qlearn HTTP service.
#[derive(Parser, Debug)]
#[command(
    name = "saas-host",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Serve options (when no subcommand is given).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
// Parsed once at start: the size of the serve variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Operator commands (users, tiers, roles), also while a server runs.
    Admin(AdminArgs),
    /// Exit 0 when the server on this machine answers `GET /healthz` with
    /// 200 within 3 s (the container health check: the runtime image has no
    /// curl).
    Healthcheck(HealthArgs),
}

/// Options of `healthcheck`.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The port the server listens on, on 127.0.0.1.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,
}

/// Asks `127.0.0.1:port` for `GET /healthz`; `Err` says why it is not healthy.
pub fn healthcheck(port: u16) -> std::result::Result<(), String> {
    use std::io::{Read, Write};
    let limit = std::time::Duration::from_secs(3);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = std::net::TcpStream::connect_timeout(&addr, limit)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    c.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    c.set_write_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    c.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut head = [0u8; 12];
    c.read_exact(&mut head)
        .map_err(|e| format!("no answer from {addr}: {e}"))?;
    match &head {
        b"HTTP/1.0 200" | b"HTTP/1.1 200" => Ok(()),
        _ => Err(format!(
            "{addr} answered {:?}",
            String::from_utf8_lossy(&head)
        )),
    }
}

/// Options of `serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to bind.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to bind (0 = any free port).
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,
    /// Storage: sqlite://PATH, postgres://... or memory://.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Allowed CORS origins, comma-separated exact origins.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',', default_value = "")]
    pub cors_origins: Vec<String>,
    /// Reverse proxies whose X-Forwarded-For is trusted, comma-separated
    /// addresses or CIDR ranges (`10.0.0.1`, `172.28.0.0/16`, `fd00::/8`).
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,
    /// JSON plans file: per tier the limits (quota, models, rate limit),
    /// features, display name, price and provider price ids.
    #[arg(long, env = "LIMITS_FILE")]
    pub limits_file: Option<PathBuf>,
    /// White-label: the product name the dashboard and docs show (default qlearn).
    #[arg(long, env = "BRAND_NAME")]
    pub brand_name: Option<String>,
    /// White-label: a logo file (.svg, .png, .jpg, .webp, .gif; at most 256 KiB).
    #[arg(long, env = "BRAND_LOGO")]
    pub brand_logo: Option<PathBuf>,
    /// White-label: primary colour (#rrggbb, #rgb, rgb(), hsl(), ...).
    #[arg(long, env = "BRAND_PRIMARY_COLOR")]
    pub brand_primary_color: Option<String>,
    /// White-label: accent colour (same forms).
    #[arg(long, env = "BRAND_ACCENT_COLOR")]
    pub brand_accent_color: Option<String>,
    /// White-label: support address (an email or an https:// URL), linked in the footer.
    #[arg(long, env = "BRAND_SUPPORT")]
    pub brand_support: Option<String>,
    /// White-label: the API documentation page's title (default "qlearn API").
    #[arg(long, env = "BRAND_DOCS_TITLE")]
    pub brand_docs_title: Option<String>,
    /// Checkout URL the dashboard's Upgrade button opens; `{user_id}`,
    /// `{email}` and `{plan}` are filled in.
    #[arg(long, env = "CHECKOUT_URL")]
    pub checkout_url: Option<String>,
    /// File holding the billing webhook's signing secret (or set
    /// `BILLING_WEBHOOK_SECRET`; never a flag, which `ps` would show).
    #[arg(long, env = "BILLING_WEBHOOK_SECRET_FILE")]
    pub billing_webhook_secret_file: Option<PathBuf>,
    /// Seconds a webhook delivery's signed timestamp may differ from now.
    #[arg(long, env = "BILLING_WEBHOOK_TOLERANCE_SECS", default_value_t = 300)]
    pub billing_webhook_tolerance_secs: i64,
    /// Most connections served at once.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = Config::default().max_connections)]
    pub max_connections: usize,
    /// Most connections open at once from one client address (IPv4 address
    /// or IPv6 /64; trusted proxies exempt); more are closed at once. 0 = no cap.
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS",
          default_value_t = Config::default().max_connections_per_address)]
    pub max_connections_per_address: usize,
    /// Largest POST /models/import body, bytes.
    #[arg(long, env = "IMPORT_LIMIT_BYTES", default_value_t = Config::default().import_limit)]
    pub import_limit_bytes: usize,
    /// Seconds a client has to send request headers (and a new connection its
    /// first request, HTTP/2 preface included; and to start the next request).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS",
          default_value_t = Config::default().header_read_timeout.as_secs())]
    pub header_read_timeout_secs: u64,
    /// Seconds a request has to arrive in full (headers and body) from its
    /// first byte; then 408 and the connection is closed.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS",
          default_value_t = Config::default().request_timeout.as_secs())]
    pub request_timeout_secs: u64,
    /// Seconds without a request in flight after which a connection is
    /// closed (trickling bytes do not count).
    #[arg(long, env = "IDLE_TIMEOUT_SECS",
          default_value_t = Config::default().idle_timeout.as_secs())]
    pub idle_timeout_secs: u64,
    /// Seconds an authenticated user or API key is cached before the store
    /// is asked again: how late this server sees a change made elsewhere
    /// (another instance, or `admin` on PostgreSQL).
    #[arg(long, env = "AUTH_CACHE_TTL_SECS",
          default_value_t = Config::default().auth_cache_ttl.as_secs())]
    pub auth_cache_ttl_secs: u64,
    /// Failed logins allowed per account (from one client address) per
    /// login window; then 429 `too_many_attempts`.
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_ACCOUNT", default_value_t = LOGIN_PER_ACCOUNT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_attempts_per_account: u32,
    /// Failed logins allowed per client address (IPv4 address or IPv6 /64)
    /// per login window.
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_ADDRESS", default_value_t = LOGIN_PER_ADDRESS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_attempts_per_address: u32,
    /// The login throttles' window, seconds: the allowance refills over it.
    #[arg(long, env = "LOGIN_WINDOW_SECS", default_value_t = LOGIN_WINDOW_SECS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_window_secs: u32,
    /// Registrations allowed per client address per registration window.
    #[arg(long, env = "REGISTRATIONS_PER_ADDRESS", default_value_t = REGISTER_PER_ADDRESS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub registrations_per_address: u32,
    /// The registration throttle's window, seconds.
    #[arg(long, env = "REGISTRATION_WINDOW_SECS", default_value_t = REGISTER_WINDOW_SECS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub registration_window_secs: u32,
    /// Lifetime of issued access tokens (JWTs), seconds.
    #[arg(long, env = "TOKEN_TTL_SECS",
          default_value_t = Config::default().token_ttl.as_secs())]
    pub token_ttl_secs: u64,
    /// Seconds graceful shutdown waits for in-flight requests.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS",
          default_value_t = Config::default().shutdown_timeout.as_secs())]
    pub shutdown_timeout_secs: u64,
    /// Lifetime of an event-stream ticket, seconds.
    #[arg(long, env = "EVENT_TICKET_TTL_SECS",
          default_value_t = Config::default().event_ticket_ttl.as_secs())]
    pub event_ticket_ttl_secs: u64,
    /// Seconds between `: keep-alive` comments on an idle event stream.
    #[arg(long, env = "SSE_KEEP_ALIVE_SECS",
          default_value_t = Config::default().sse_keep_alive.as_secs())]
    pub sse_keep_alive_secs: u64,
    /// Seconds between an open event stream's checks that its credential
    /// still authenticates.
    #[arg(long, env = "EVENT_RECHECK_SECS",
          default_value_t = Config::default().event_recheck.as_secs())]
    pub event_recheck_secs: u64,
    /// Most event streams open at once on one model, on this server.
    #[arg(long, env = "MAX_EVENT_STREAMS_PER_MODEL",
          default_value_t = Config::default().max_event_streams_per_model)]
    pub max_event_streams_per_model: u32,
    /// Seconds an unknown API key is answered 401 without asking the store.
    #[arg(long, env = "UNKNOWN_KEY_TTL_SECS",
          default_value_t = Config::default().unknown_key_ttl.as_secs())]
    pub unknown_key_ttl_secs: u64,
    /// Milliseconds between settlements of passed reward deadlines.
    #[arg(long, env = "SETTLE_INTERVAL_MS",
          default_value_t = Config::default().settle_every.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub settle_interval_ms: u64,
    /// Threads running offline evaluation jobs (0: none on this instance).
    #[arg(long, env = "EVALUATION_WORKERS", default_value_t = Config::default().evaluation_workers)]
    pub evaluation_workers: usize,
    /// Async worker threads (default: one per core).
    #[arg(long, env = "WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Binds each async worker thread to one CPU of the allowed set
    /// (`saas_host::pinning`): for a machine or CPU set given to this one
    /// instance.
    #[arg(long, env = "PIN_WORKERS", value_parser = clap::builder::BoolishValueParser::new())]
    pub pin_workers: bool,
    /// Microseconds an async worker goes on polling after the last commit
    /// in flight instead of sleeping (`saas_host::busy_poll`); it polls
    /// throughout while commits are in flight. 0 (the default): off. For a
    /// machine given to this instance: a polling worker keeps a CPU busy.
    #[arg(long, env = "BUSY_POLL_US", default_value_t = 0)]
    pub busy_poll_us: u64,
    /// Threads running storage calls (default 8 for SQLite and memory, 32
    /// for PostgreSQL, whose calls wait on the network). Few busy threads beat
    /// many sleeping ones: fewer wake-ups and less lock contention (see
    /// docs/benchmarks-http.md).
    #[arg(long, env = "BLOCKING_THREADS")]
    pub blocking_threads: Option<usize>,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl ServeArgs {
    /// The blocking-pool size for this backend (see `blocking_threads`).
    pub fn blocking_threads(&self) -> usize {
        self.blocking_threads
            .unwrap_or(if self.database_url.starts_with("postgres") {
                32
            } else {
                8
            })
    }

    /// The server configuration (reads `SECRET_KEY` from the environment).
    pub fn config(&self) -> Result<Config> {
        let mut c = Config {
            database_url: self.database_url.clone(),
            secret_key: std::env::var("SECRET_KEY").ok().filter(|s| !s.is_empty()),
            cors_origins: self
                .cors_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            trusted_proxies: self.trusted_proxies.clone(),
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            import_limit: self.import_limit_bytes,
            header_read_timeout: secs(self.header_read_timeout_secs),
            request_timeout: secs(self.request_timeout_secs),
            idle_timeout: secs(self.idle_timeout_secs),
            auth_cache_ttl: Duration::from_secs(self.auth_cache_ttl_secs),
            login_per_account: Throttle::per(
                self.login_attempts_per_account,
                self.login_window_secs,
            ),
            login_per_address: Throttle::per(
                self.login_attempts_per_address,
                self.login_window_secs,
            ),
            register_per_address: Throttle::per(
                self.registrations_per_address,
                self.registration_window_secs,
            ),
            token_ttl: secs(self.token_ttl_secs),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            event_ticket_ttl: secs(self.event_ticket_ttl_secs),
            sse_keep_alive: secs(self.sse_keep_alive_secs),
            event_recheck: secs(self.event_recheck_secs),
            max_event_streams_per_model: self.max_event_streams_per_model,
            unknown_key_ttl: Duration::from_secs(self.unknown_key_ttl_secs),
            settle_every: Duration::from_millis(self.settle_interval_ms),
            evaluation_workers: self.evaluation_workers,
            ..Config::default()
        };
        if let Some(s) = &c.secret_key {
            qlearn_core::tenancy::validate_secret(s.as_bytes())?;
        }
        if let Some(p) = &self.limits_file {
            (c.limits, c.plans) = load_limits(p)?;
        }
        c.brand = Brand::new(&BrandSettings {
            name: self.brand_name.clone(),
            logo: self.brand_logo.clone(),
            primary_color: self.brand_primary_color.clone(),
            accent_color: self.brand_accent_color.clone(),
            support: self.brand_support.clone(),
            docs_title: self.brand_docs_title.clone(),
        })?;
        c.billing.checkout_url = self.checkout_url.clone().filter(|u| !u.is_empty());
        c.billing.webhook_tolerance_secs = self.billing_webhook_tolerance_secs;
        c.billing.webhook_secret = Billing::secret(self.billing_webhook_secret_file.as_deref())?;
        c.billing.validate()?;
        Ok(c)
    }
}

/// A timeout of `n` seconds (at least 1).
fn secs(n: u64) -> Duration {
    Duration::from_secs(n.max(1))
}

/// `admin` options.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Storage: sqlite://PATH, postgres://... .
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// The command.
    #[command(subcommand)]
    pub action: AdminAction,
}

/// Operator commands. On SQLite they go through the running server's admin
/// socket when a server runs (in force from its next request), else to the
/// file; on PostgreSQL to the database (running servers apply them when the
/// change notice arrives; `AUTH_CACHE_TTL_SECS` bounds a lost notice).
#[derive(Subcommand, Debug)]
pub enum AdminAction {
    /// Set a user's tier (free, pro, enterprise).
    SetTier {
        /// The user's email.
        email: String,
        /// The new tier.
        tier: String,
    },
    /// Set a user's role (user, admin).
    SetRole {
        /// The user's email.
        email: String,
        /// The new role.
        role: String,
    },
    /// List users: email, tier, role, created, disabled.
    ListUsers {
        /// Print JSON (an array of users) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every user's metered calls in a month, for invoicing: calls by kind
    /// (predict, update, decide, reward), overage and plan, as JSON or CSV.
    Usage {
        /// The month, YYYY-MM (UTC); default: this month.
        #[arg(long)]
        month: Option<String>,
        /// `json` or `csv`.
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Disable a user: no login; its tokens and API keys stop working at
    /// once; its data is kept.
    DisableUser {
        /// The user's email.
        email: String,
    },
    /// Enable a disabled user.
    EnableUser {
        /// The user's email.
        email: String,
    },
    /// Create an admin account (with its default model). The password is
    /// read from the ADMIN_PASSWORD environment variable, else from the
    /// first line of standard input; never from the command line.
    CreateAdmin {
        /// The new admin's email.
        email: String,
    },
}

/// The environment variable `admin create-admin` reads the password from.
pub const ADMIN_PASSWORD_ENV: &str = "ADMIN_PASSWORD";

/// Reads the new admin's password: [`ADMIN_PASSWORD_ENV`], else one line
/// of standard input (not echoed when it is a terminal).
fn read_password() -> Result<String> {
    if let Ok(p) = std::env::var(ADMIN_PASSWORD_ENV) {
        return Ok(p);
    }
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    if tty {
        eprint!("password for the new admin: ");
    }
    let mut line = String::new();
    let read = with_echo_off(tty, || stdin.read_line(&mut line));
    if tty {
        eprintln!();
    }
    read.map_err(|e| Error::field("password", format!("cannot read standard input: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Runs `f` with the terminal's echo off (when `tty`), restoring it after.
fn with_echo_off<T>(tty: bool, f: impl FnOnce() -> T) -> T {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let fd = std::io::stdin();
    let saved = if tty { tcgetattr(&fd).ok() } else { None };
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        let _ = tcsetattr(&fd, OptionalActions::Now, &quiet);
    }
    let out = f();
    if let Some(t) = &saved {
        let _ = tcsetattr(&fd, OptionalActions::Now, t);
    }
    out
}

/// The operation an `admin` command line asks for (reads the password of
/// `create-admin` and hashes it here: the plain password goes nowhere).
fn admin_op(action: &AdminAction) -> Result<AdminOp> {
    Ok(match action {
        AdminAction::SetTier { email, tier } => AdminOp::SetTier {
            email: email.clone(),
            tier: tier.parse()?,
        },
        AdminAction::SetRole { email, role } => AdminOp::SetRole {
            email: email.clone(),
            role: role.parse()?,
        },
        AdminAction::ListUsers { .. } => AdminOp::ListUsers,
        AdminAction::Usage { month, format } => {
            format.parse::<Format>()?;
            AdminOp::Usage {
                month: match month {
                    Some(m) => m.parse()?,
                    None => BillingMonth::from_unix(crate::now_unix()),
                },
            }
        }
        AdminAction::DisableUser { email } => AdminOp::DisableUser {
            email: email.clone(),
        },
        AdminAction::EnableUser { email } => AdminOp::EnableUser {
            email: email.clone(),
        },
        AdminAction::CreateAdmin { email } => {
            normalize_email(email)?;
            let password = read_password()?;
            AdminOp::CreateAdmin {
                email: email.clone(),
                password_hash: hash_password(&password)?,
            }
        }
    })
}

/// Runs an admin command (blocks); returns what to print.
pub fn admin(args: &AdminArgs) -> std::result::Result<String, Failed> {
    let op = admin_op(&args.action)?;
    let (done, via) = crate::admin::run(&args.database_url, &op)?;
    if let (AdminAction::Usage { format, .. }, Some(report)) = (&args.action, &done.usage) {
        let (bytes, _) = report.render(format.parse()?)?;
        // The caller prints a line end after the last line.
        let text = String::from_utf8_lossy(&bytes);
        return Ok(text.strip_suffix("\r\n").unwrap_or(&text).to_owned());
    }
    if let AdminAction::ListUsers { json } = args.action {
        return Ok(if json {
            serde_json::to_string_pretty(&done.users).map_err(|e| Error::Internal(e.to_string()))?
        } else {
            user_table(&done.users)
        });
    }
    let postgres = args.database_url.starts_with("postgres");
    Ok(match via {
        Via::Server => format!("{} (applied by the running server)", done.message),
        Via::Database if postgres && done.changed.is_some() => format!(
            "{} (running servers apply it when its change notice reaches them, \
             in milliseconds; at the latest after their auth cache lifetime, \
             AUTH_CACHE_TTL_SECS, {} s by default, if a notice is lost)",
            done.message,
            Config::default().auth_cache_ttl.as_secs()
        ),
        Via::Database => done.message,
    })
}

/// The users as an aligned text table.
fn user_table(users: &[UserRow]) -> String {
    let width = users
        .iter()
        .map(|u| u.email.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:width$}  {:10}  {:5}  {:20}  disabled",
        "email", "tier", "role", "created"
    );
    for u in users {
        out.push_str(&format!(
            "\n{:width$}  {:10}  {:5}  {:20}  {}",
            u.email,
            u.tier.as_str(),
            u.role.as_str(),
            u.created,
            if u.disabled { "yes" } else { "no" }
        ));
    }
    out
}

/// Sets up logging: `RUST_LOG` filter (default `info`), text or JSON lines
/// on stdout, written by a background thread so request handling never
/// waits on the terminal or pipe. Keep the returned guard alive: dropping it
/// flushes what is buffered.
pub fn init_logging(format: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    if format.eq_ignore_ascii_case("json") {
        b.json().init();
    } else {
        b.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    }
    guard
}

/// Resolves on SIGINT or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests;
