//! The admin socket of a server on SQLite ([`crate::admin`] says why and
//! what it speaks): `<database file>-admin.sock`, mode 0600, answering only
//! peers running as the server's own user (or root). Commands run one at a
//! time through the server's store; a changed user's cached
//! authentication is dropped before the reply, so the change is in force
//! from the server's next request.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::admin::{self, AdminOp, Reply, MAX_LINE};
use crate::app::App;

/// A listening admin socket and its task.
pub(super) struct AdminSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl AdminSocket {
    /// Waits for the accept loop to end (it ends at the server's shutdown
    /// signal, after the command in progress) and removes the socket file.
    pub(super) async fn stop(self) {
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the admin socket task ended abnormally");
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts the admin socket when the server's store is SQLite; `None`
/// otherwise, or (logged) when the socket cannot be made.
pub(super) fn start(app: &Arc<App>) -> Option<AdminSocket> {
    if app.store.backend() != "sqlite" {
        return None;
    }
    let path = admin::socket_path(&app.config.database_url)?;
    // The store holds the database's lock: a socket file left here is a
    // dead server's.
    let _ = std::fs::remove_file(&path);
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e,
                "cannot listen on the admin socket: `saas-host admin` will not work while this server runs");
            return None;
        }
    };
    tracing::info!(path = %path.display(), "admin socket listening");
    let task = tokio::spawn(accept_loop(app.clone(), listener));
    Some(AdminSocket { path, task })
}

/// Binds `path` and makes it readable and writable by its owner only;
/// returns the listener and the owner's uid.
fn bind(path: &std::path::Path) -> std::io::Result<(UnixListener, u32)> {
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let uid = std::fs::metadata(path)?.uid();
    Ok((listener, uid))
}

async fn accept_loop(app: Arc<App>, (listener, owner): (UnixListener, u32)) {
    let mut shutdown = app.shutdown_signal();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        if *shutdown.borrow() {
            break;
        }
        // The 0600 mode already keeps others out; the peer's uid closes the
        // moment between bind and chmod.
        match stream.peer_cred() {
            Ok(c) if c.uid() == owner || c.uid() == 0 => {}
            Ok(c) => {
                tracing::warn!(
                    uid = c.uid(),
                    "admin socket: refused a peer of another user"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin socket: no peer credentials");
                continue;
            }
        }
        serve_one(&app, stream).await;
    }
}

/// Reads one command, runs it and answers.
async fn serve_one(app: &Arc<App>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE));
    let read = reader.read_line(&mut line);
    // A client has as long to send its command as an HTTP client its headers.
    let limit = app.config.header_read_timeout;
    let reply = match tokio::time::timeout(limit, read).await {
        Err(_) => return,
        Ok(Err(e)) => Reply::Error(format!("reading the command: {e}")),
        Ok(Ok(_)) => match serde_json::from_str::<AdminOp>(&line) {
            Err(e) => Reply::Error(format!("not an admin command: {e}")),
            Ok(op) => run(app, op).await,
        },
    };
    let mut out = serde_json::to_vec(&reply)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode the reply: {e}\"}}").into_bytes());
    out.push(b'\n');
    if let Err(e) = write.write_all(&out).await {
        tracing::debug!(error = %e, "admin socket: the client left before the reply");
    }
}

async fn run(app: &Arc<App>, op: AdminOp) -> Reply {
    let store = app.store.clone();
    let done =
        tokio::task::spawn_blocking(move || admin::execute(store.as_ref(), &op, crate::now_unix()))
            .await;
    match done {
        Ok(Ok(done)) => {
            if let Some(id) = &done.changed {
                app.forget_user(id);
            }
            tracing::info!(result = %done.message, "admin command");
            Reply::Ok(done)
        }
        Ok(Err(e)) => Reply::Error(e.to_string()),
        Err(e) => Reply::Error(format!("the command failed: {e}")),
    }
}
