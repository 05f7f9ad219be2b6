//! Writer locks that die with their holder: one writer per session across
//! handles, processes and pods.
//!
//! [`SessionLock`] is what the writer core needs; [`FileLock`] implements it
//! for SQLite with `flock(2)` on a file beside the database, and
//! [`AdvisoryLock`](super::advisory::AdvisoryLock) for PostgreSQL with a
//! session-level advisory lock on a dedicated connection. Either is released
//! by the operating system or the database the moment its holder dies, so a
//! restarted runtime resumes at once. A lock only keeps a second writer from
//! *starting*; the writer token checked inside every write transaction is
//! what fences a writer that lost its lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::future::Future;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::LedgerError;

/// A per-session writer lock.
pub(crate) trait SessionLock: Send {
    /// Try to take the lock of session `id` (at most one held per handle).
    /// `Ok(false)` when another holder has it.
    fn acquire(&mut self, id: &str) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Before a write: check that the lock taken by `acquire` is still held
    /// and take it again if it was lost with its connection. `Ok(false)`
    /// when another holder has it now.
    fn ensure(&mut self) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Release the lock (a no-op when not held).
    fn release(&mut self) -> impl Future<Output = ()> + Send;
}

/// `flock(2)` on `<database>.locks/<session>.lock`, held while the file is
/// open, so it is released when the handle is dropped or its process dies.
/// Lock files are never deleted (deleting one while another process waits
/// on it would let two writers lock different files of the same name).
///
/// An in-memory database (`sqlite::memory:`) is private to its handle, so
/// its lock is always free.
#[derive(Debug)]
pub(crate) struct FileLock {
    /// `<database>.locks`; `None` for an in-memory database.
    dir: Option<PathBuf>,
    held: Option<File>,
}

impl FileLock {
    /// Locks for the database file `database` (`None`: in memory).
    pub fn new(database: Option<&Path>) -> Self {
        Self {
            dir: database.map(|db| {
                let mut name = db.as_os_str().to_owned();
                name.push(".locks");
                PathBuf::from(name)
            }),
            held: None,
        }
    }

    fn open(dir: &Path, id: &str) -> Result<File, LedgerError> {
        let path = dir.join(lock_file_name(id));
        let io = |source| LedgerError::LockFile {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)
    }
}

impl SessionLock for FileLock {
    async fn acquire(&mut self, id: &str) -> Result<bool, LedgerError> {
        debug_assert!(self.held.is_none());
        let Some(dir) = &self.dir else {
            return Ok(true);
        };
        let file = Self::open(dir, id)?;
        match file.try_lock() {
            Ok(()) => {
                self.held = Some(file);
                Ok(true)
            }
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(source)) => Err(LedgerError::LockFile {
                path: dir.join(lock_file_name(id)).display().to_string(),
                source,
            }),
        }
    }

    /// An flock cannot be lost while its file is open.
    async fn ensure(&mut self) -> Result<bool, LedgerError> {
        Ok(true)
    }

    async fn release(&mut self) {
        // Closing the file releases the flock.
        self.held = None;
    }
}

/// File name of a session's lock: the id itself when it is a plain name
/// (ASCII letters, digits, `-`, `_`, `.`; not starting with `.`; at most 200
/// bytes), else `sha256-<hex>` of it, so no id can name a path outside the
/// lock directory.
pub(crate) fn lock_file_name(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        format!("{id}.lock")
    } else {
        let digest = Sha256::digest(id.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256-{hex}.lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_names_stay_inside_the_lock_directory() {
        assert_eq!(lock_file_name("btc-sma-2"), "btc-sma-2.lock");
        for id in ["..", "../x", "/abs/path", "", ".hidden", "a/b", "ü"] {
            let name = lock_file_name(id);
            assert!(
                name.starts_with("sha256-") && !name.contains('/'),
                "{id:?} -> {name}"
            );
        }
        assert_ne!(lock_file_name("../x"), lock_file_name("../y"));
    }

    #[tokio::test]
    async fn a_second_handle_cannot_take_a_held_lock_until_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.db");
        let mut a = FileLock::new(Some(&db));
        let mut b = FileLock::new(Some(&db));
        assert!(a.acquire("s").await.unwrap());
        assert!(!b.acquire("s").await.unwrap());
        assert!(b.acquire("other").await.unwrap());
        assert!(dir.path().join("ledger.db.locks/s.lock").is_file());
        a.release().await;
        b.release().await;
        assert!(b.acquire("s").await.unwrap());
        drop(b);
        assert!(
            a.acquire("s").await.unwrap(),
            "dropping a handle releases its lock"
        );
    }
}
