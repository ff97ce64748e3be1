//! One process per SQLite file: the exclusive advisory lock on
//! `<file>-lock` that [`SqliteStore::open`](super::SqliteStore::open) takes
//! (released by the kernel when the process dies, also on `kill -9`).

use std::fs::File;
use std::path::{Path, PathBuf};

use super::BACKEND;
use crate::error::{Error, Result};

pub(super) fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-lock");
    PathBuf::from(s)
}

#[cfg(unix)]
pub(super) fn acquire_process_lock(path: &Path) -> Result<Option<File>> {
    use rustix::fs::{flock, FlockOperation};
    let lp = lock_path(path);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lp)
        .map_err(|e| Error::storage(BACKEND, format!("cannot open {}: {e}", lp.display())))?;
    match flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(f)),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(Error::storage(
            BACKEND,
            format!(
                "{} is in use by another process; a SQLite database serves one process \
                 (use PostgreSQL for several instances)",
                path.display()
            ),
        )),
        Err(e) => Err(Error::storage(
            BACKEND,
            format!("cannot lock {}: {e}", lp.display()),
        )),
    }
}

#[cfg(not(unix))]
pub(super) fn acquire_process_lock(_path: &Path) -> Result<Option<File>> {
    // No advisory lock on this platform: one process per file is the
    // operator's responsibility here.
    Ok(None)
}
