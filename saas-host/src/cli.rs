//! The command line: `saas-host [serve] [flags]` and
//! `saas-host admin set-tier EMAIL TIER` / `admin set-role EMAIL ROLE`.
//! Every serve flag can also come from the environment; `SECRET_KEY` only
//! from the environment (a flag would show in `ps`).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use qlearn_core::tenancy::{normalize_email, Role, Tier};
use qlearn_core::{Error, Result};

use crate::cidr::Cidr;
use crate::config::{load_limits, open_store, Config, DEFAULT_DATABASE_URL};

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
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Change users directly in the database.
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
    /// JSON file overriding the per-tier limits (quota, models, rate limit).
    #[arg(long, env = "LIMITS_FILE")]
    pub limits_file: Option<PathBuf>,
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
    /// Async worker threads (default: one per core).
    #[arg(long, env = "WORKER_THREADS")]
    pub worker_threads: Option<usize>,
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
            ..Config::default()
        };
        if let Some(s) = &c.secret_key {
            qlearn_core::tenancy::validate_secret(s.as_bytes())?;
        }
        if let Some(p) = &self.limits_file {
            c.limits = load_limits(p)?;
        }
        Ok(c)
    }
}

/// A timeout of `n` seconds (at least 1).
fn secs(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n.max(1))
}

/// `admin` options.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Storage: sqlite://PATH, postgres://... .
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// The change.
    #[command(subcommand)]
    pub action: AdminAction,
}

/// Admin changes.
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
}

/// Runs an admin command against the database; returns what it did.
pub fn admin(args: &AdminArgs) -> Result<String> {
    let store = open_store(&args.database_url)?;
    let (email, what) = match &args.action {
        AdminAction::SetTier { email, tier } => (email, Ok(tier.parse::<Tier>()?)),
        AdminAction::SetRole { email, role } => (email, Err(role.parse::<Role>()?)),
    };
    let email = normalize_email(email)?;
    let user = store
        .user_by_email(&email)?
        .ok_or(Error::NotFound("user"))?;
    let msg = match what {
        Ok(tier) => {
            store.set_tier(&user.id, tier)?;
            format!("{email}: tier {} -> {tier}", user.tier)
        }
        Err(role) => {
            store.set_role(&user.id, role)?;
            format!("{email}: role {} -> {role}", user.role)
        }
    };
    store.flush()?;
    Ok(msg)
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
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> std::result::Result<ServeArgs, clap::Error> {
        let mut argv = vec!["saas-host", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Some(Command::Serve(a)) => Ok(a),
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn trusted_proxies_take_addresses_and_ranges() {
        let a = serve(&[
            "--trusted-proxies",
            "10.0.0.1,172.28.0.0/16,fd00::/8,0.0.0.0/0",
        ])
        .unwrap();
        let want: Vec<Cidr> = ["10.0.0.1/32", "172.28.0.0/16", "fd00::/8", "0.0.0.0/0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(a.trusted_proxies, want);
        assert_eq!(a.config().unwrap().trusted_proxies, want);
        let e = serve(&["--trusted-proxies", "10.0.0.1/8"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
        let e = serve(&["--trusted-proxies", "10.0.0.0/40"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("prefix length"), "{e}");
    }
}
