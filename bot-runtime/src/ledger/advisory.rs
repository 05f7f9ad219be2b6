//! The PostgreSQL writer lock: a session-level advisory lock held on a
//! dedicated connection (not from the pool, whose connections are shared
//! and recycled) for the life of the session.
//!
//! The server releases it when that connection ends, whether the holder
//! closed it, crashed, or lost it in a network cut or a server restart.
//! Before each write the holder checks its connection; if it is gone, it
//! connects again and re-takes the lock, or learns that another writer has
//! it.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use super::LedgerError;
use super::lock::SessionLock;

/// How long connecting the lock connection may take before it counts as a
/// (transient) I/O failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the explicit unlock on release may take; past it the lock is
/// left to the connection's end (a broken network, say).
const UNLOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Advisory lock of one session on a dedicated connection.
#[derive(Debug)]
pub(crate) struct AdvisoryLock {
    options: PgConnectOptions,
    /// The lock's key while one is wanted (between acquire and release).
    key: Option<i64>,
    /// The connection holding it; `None` after it was found dead.
    conn: Option<PgConnection>,
}

impl AdvisoryLock {
    /// Locks taken on connections made with `options`.
    pub fn new(options: PgConnectOptions) -> Self {
        Self {
            options,
            key: None,
            conn: None,
        }
    }

    /// Connect and try to take `key`; the connection is kept only if it got it.
    async fn connect_and_lock(&mut self, key: i64) -> Result<bool, LedgerError> {
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, self.options.connect())
            .await
            .map_err(|_| {
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting the lock connection took over {CONNECT_TIMEOUT:?}"),
                ))
            })??;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        if got {
            self.conn = Some(conn);
        } else {
            let _ = conn.close().await;
        }
        Ok(got)
    }
}

impl SessionLock for AdvisoryLock {
    async fn acquire(&mut self, id: &str) -> Result<bool, LedgerError> {
        self.release().await;
        let key = session_lock_key(id);
        let got = self.connect_and_lock(key).await?;
        if got {
            self.key = Some(key);
        }
        Ok(got)
    }

    async fn ensure(&mut self) -> Result<bool, LedgerError> {
        let Some(key) = self.key else {
            return Ok(false);
        };
        if let Some(conn) = &mut self.conn {
            if conn.ping().await.is_ok() {
                return Ok(true);
            }
            // The connection (and with it the lock) is gone.
            self.conn = None;
        }
        self.connect_and_lock(key).await
    }

    async fn release(&mut self) {
        let key = self.key.take();
        if let Some(mut conn) = self.conn.take() {
            // Unlock explicitly first: the server has released the lock when
            // this answer arrives. Ending the connection alone releases it
            // too, but only once the server's backend has processed the
            // goodbye and exited, a moment after `close` returns, so a
            // writer taking over right away could still be refused. If the
            // connection is broken, the server has released the lock
            // already and the error is of no consequence.
            if let Some(key) = key {
                let _ = tokio::time::timeout(
                    UNLOCK_TIMEOUT,
                    sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(key)
                        .execute(&mut conn),
                )
                .await;
            }
            let _ = conn.close().await;
        }
    }
}

/// The advisory-lock key of a session: the first 8 bytes (big-endian) of
/// SHA-256 over `paperbot-ledger-session:` and the id. The prefix keeps the
/// keys apart from other users of advisory locks in a shared database (e.g.
/// sqlx's migration lock, keyed by the database name).
pub(crate) fn session_lock_key(id: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"paperbot-ledger-session:")
        .chain_update(id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(session_lock_key("btc-sma"), session_lock_key("btc-sma"));
        assert_ne!(session_lock_key("btc-sma"), session_lock_key("btc-sma-2"));
        // Stable across builds, platforms and versions: a changed key would
        // let an old and a new runtime write the same session. (Computed
        // independently: first 8 bytes of sha256 of the prefixed id, as a
        // signed big-endian integer.)
        assert_eq!(session_lock_key("btc-sma"), 9_167_895_657_505_390_662);
    }
}
