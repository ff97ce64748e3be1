//! Operator commands (`saas-host admin ...`): what they do to the store,
//! written once, and where they run.
//!
//! A SQLite database serves one process (the store holds an exclusive lock
//! on it), so while a server runs, `admin` cannot open the file. The server
//! therefore answers the same commands on a Unix socket next to the
//! database file, [`socket_path`] (`<file>-admin.sock`, mode 0600, and
//! only peers of the server's own user are answered: whoever may read the
//! database file may run admin commands, nobody else). The CLI sends its
//! command there when a server listens; the server runs it through its own
//! store and drops what its caches hold of the user, so the change is in
//! force from the next request. When no server runs, the CLI opens the
//! store itself. On PostgreSQL the CLI always writes to the database
//! directly; the store's change notice (LISTEN/NOTIFY, committed with the
//! change) makes every running server drop the user's cached
//! authentication when it arrives, in milliseconds; a notice lost while a
//! server's feed reconnects is bounded by [`crate::Config::auth_cache_ttl`]
//! (see docs/scale-out.md).
//!
//! The protocol is one JSON line each way: an [`AdminOp`], then a
//! [`Reply`].

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use qlearn_core::store::{NewUser, Store, User};
use qlearn_core::tenancy::{normalize_email, rfc3339, BillingMonth, Role, Tier};
use qlearn_core::{Error, Model, ModelConfig, Result};
use serde::{Deserialize, Serialize};

use crate::config::{open_store, sqlite_file};
use crate::handlers::accounts::DEFAULT_MODEL_ACTIONS;
use crate::invoicing::UsageReport;

/// Longest command line the server reads from its admin socket, bytes. (A
/// reply, e.g. the list of every user, is read whole: it comes from the
/// server, which runs as the same user.)
pub const MAX_LINE: u64 = 1 << 20;

/// One operator command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminOp {
    /// Sets a user's tier.
    SetTier {
        /// The user's email.
        email: String,
        /// The new tier.
        tier: Tier,
    },
    /// Sets a user's role.
    SetRole {
        /// The user's email.
        email: String,
        /// The new role.
        role: Role,
    },
    /// Disables a user: no login, its tokens and API keys stop
    /// authenticating; its data is kept.
    DisableUser {
        /// The user's email.
        email: String,
    },
    /// Enables a disabled user again.
    EnableUser {
        /// The user's email.
        email: String,
    },
    /// Lists every user.
    ListUsers,
    /// Every user's usage in a month, for invoicing.
    Usage {
        /// The month (UTC).
        month: BillingMonth,
    },
    /// Creates an admin account (free tier) with its default model. The
    /// password arrives hashed: the plain password never leaves the CLI.
    CreateAdmin {
        /// The new admin's email.
        email: String,
        /// argon2id hash of the password.
        password_hash: String,
    },
}

/// A user as the listing shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRow {
    /// The user's id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Tier.
    pub tier: Tier,
    /// Role.
    pub role: Role,
    /// Registration time, RFC 3339 UTC.
    pub created: String,
    /// Whether the user is disabled.
    pub disabled: bool,
}

impl From<&User> for UserRow {
    fn from(u: &User) -> Self {
        UserRow {
            id: u.id.clone(),
            email: u.email.clone(),
            tier: u.tier,
            role: u.role,
            created: rfc3339(u.created_at),
            disabled: u.disabled,
        }
    }
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// One line for the operator.
    pub message: String,
    /// The users (for `list-users`; empty otherwise).
    #[serde(default)]
    pub users: Vec<UserRow>,
    /// The id of the user the command changed (whose cached
    /// authentication a server must drop).
    #[serde(default)]
    pub changed: Option<String>,
    /// The usage report (for `usage`; `None` otherwise).
    #[serde(default)]
    pub usage: Option<UsageReport>,
}

/// The socket's answer: what was done, or why not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The command ran.
    Ok(Done),
    /// It failed; the message says why.
    Error(String),
}

/// The user with `email` (normalised), or [`Error::NotFound`].
fn find(store: &dyn Store, email: &str) -> Result<User> {
    let email = normalize_email(email)?;
    store.user_by_email(&email)?.ok_or(Error::NotFound("user"))
}

fn changed(user: &User, message: String) -> Done {
    Done {
        message,
        users: Vec::new(),
        changed: Some(user.id.clone()),
        usage: None,
    }
}

/// Runs `op` on `store` (blocks).
pub fn execute(store: &dyn Store, op: &AdminOp, now: i64) -> Result<Done> {
    match op {
        AdminOp::SetTier { email, tier } => {
            let u = find(store, email)?;
            store.set_tier(&u.id, *tier)?;
            Ok(changed(
                &u,
                format!("{}: tier {} -> {tier}", u.email, u.tier),
            ))
        }
        AdminOp::SetRole { email, role } => {
            let u = find(store, email)?;
            store.set_role(&u.id, *role)?;
            Ok(changed(
                &u,
                format!("{}: role {} -> {role}", u.email, u.role),
            ))
        }
        AdminOp::DisableUser { email } | AdminOp::EnableUser { email } => {
            let disable = matches!(op, AdminOp::DisableUser { .. });
            let u = find(store, email)?;
            store.set_disabled(&u.id, disable)?;
            let state = if disable { "disabled" } else { "enabled" };
            Ok(changed(&u, format!("{}: {state}", u.email)))
        }
        AdminOp::ListUsers => {
            let users: Vec<UserRow> = store.users()?.iter().map(UserRow::from).collect();
            Ok(Done {
                message: format!("{} users", users.len()),
                users,
                changed: None,
                usage: None,
            })
        }
        AdminOp::Usage { month } => {
            let report = UsageReport::build(store, *month)?;
            Ok(Done {
                message: format!("usage of {} users in {month}", report.users.len()),
                users: Vec::new(),
                changed: None,
                usage: Some(report),
            })
        }
        AdminOp::CreateAdmin {
            email,
            password_hash,
        } => {
            let email = normalize_email(email)?;
            let model = Model::new(ModelConfig::new(DEFAULT_MODEL_ACTIONS))?;
            let new = NewUser {
                email,
                password_hash: password_hash.clone(),
                tier: Tier::Free,
                role: Role::Admin,
            };
            let (u, _) =
                store
                    .register(new, "default", &model, None, now)
                    .map_err(|e| match e {
                        Error::Conflict(_) => Error::Conflict(
                            "email already registered (use set-role to make it an admin)".into(),
                        ),
                        other => other,
                    })?;
            Ok(changed(&u, format!("{}: admin created", u.email)))
        }
    }
}

/// The admin socket of the SQLite database `database_url` names (`None`
/// for other backends).
pub fn socket_path(database_url: &str) -> Option<PathBuf> {
    let file = sqlite_file(database_url)?;
    let mut s = file.into_os_string();
    s.push("-admin.sock");
    Some(PathBuf::from(s))
}

/// Where a command ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A running server's socket: in force from its next request.
    Server,
    /// The database directly, no server running on it (SQLite), or a
    /// shared database (PostgreSQL).
    Database,
}

/// Why an admin command failed: the message of the error, wherever it
/// happened (here, or in the server that ran the command).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed(pub String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        Failed(e.to_string())
    }
}

/// Runs `op` against `database_url`: through a running server's socket
/// when one listens (SQLite), else on the store directly (blocks).
pub fn run(database_url: &str, op: &AdminOp) -> std::result::Result<(Done, Via), Failed> {
    if let Some(path) = socket_path(database_url) {
        if let Some(reply) = ask_server(&path, op)? {
            return match reply {
                Reply::Ok(done) => Ok((done, Via::Server)),
                Reply::Error(e) => Err(Failed(e)),
            };
        }
    }
    let store = open_store(database_url).map_err(|e| match e {
        Error::Storage { message, .. } if message.contains("in use by another process") => {
            Error::Internal(format!(
                "{message}; the server holding it does not answer on its admin socket \
                 (an older server, or it is starting or stopping): try again"
            ))
        }
        other => other,
    })?;
    let done = execute(store.as_ref(), op, crate::now_unix());
    store.flush()?;
    Ok((done?, Via::Database))
}

/// Sends `op` to the server listening on `path`; `None` when none listens
/// there (no socket, or a stale one).
#[cfg(not(unix))]
fn ask_server(_path: &Path, _op: &AdminOp) -> Result<Option<Reply>> {
    Ok(None)
}

/// Sends `op` to the server listening on `path`; `None` when none listens
/// there (no socket, or a stale one).
#[cfg(unix)]
fn ask_server(path: &Path, op: &AdminOp) -> Result<Option<Reply>> {
    use std::io::ErrorKind;
    use std::os::unix::net::UnixStream;
    let io = |e: std::io::Error| Error::Internal(format!("admin socket {}: {e}", path.display()));
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Ok(None)
        }
        Err(e) => return Err(io(e)),
    };
    let timeout = Some(std::time::Duration::from_secs(60));
    stream.set_read_timeout(timeout).map_err(io)?;
    let mut line = serde_json::to_vec(op).map_err(|e| Error::Internal(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|e| Error::Internal(format!("admin socket {}: bad reply: {e}", path.display())))
}
