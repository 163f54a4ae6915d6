//! A client's stored tokens one by one: their labels, creation, last use and optional expiry
//! (never the token nor its hash), and revoking one of them, so that each place a token was
//! written to (a host's config file) can be listed and cut off without revoking the client.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::info;

use super::token::TokenHash;
use super::{ClientName, ClientRegistry, client_id};
use crate::error::StoreError;

/// Longest lifetime of a stored token that expires.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// One stored token as `latchkey client tokens` lists it. Contains no token and no hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Where it went (`default` for the client's first token, `mcp-config:<host>`, …).
    pub label: String,
    /// When it was issued, unix seconds.
    pub created_at: i64,
    /// Its last request through the proxy, unix seconds; `None` if never used.
    pub last_used_at: Option<i64>,
    /// When it stops working, unix seconds; `None` if never.
    pub expires_at: Option<i64>,
}

/// One token row as read from SQLite.
pub(super) struct StoredToken {
    pub(super) hash: TokenHash,
    pub(super) expires_at: Option<i64>,
    pub(super) last_used_at: Option<i64>,
}

/// When a token was last presented, shared by the snapshots that hold it.
#[derive(Debug)]
pub(super) struct TokenUse {
    at: AtomicI64,
    dirty: AtomicBool,
}

impl TokenUse {
    pub(super) fn new(stored: Option<i64>) -> Self {
        Self {
            at: AtomicI64::new(stored.unwrap_or(0)),
            dirty: AtomicBool::new(false),
        }
    }

    /// Records a use at `now` (unix seconds); memory only.
    pub(super) fn record(&self, now: i64) {
        if self.at.fetch_max(now, Ordering::AcqRel) < now {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Unix seconds of the last use; 0 means never.
    pub(super) fn at(&self) -> i64 {
        self.at.load(Ordering::Acquire)
    }

    /// True once per change not yet written to SQLite.
    pub(super) fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// The write failed: try again at the next flush.
    pub(super) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }
}

/// The unix second a token issued at `now` stops working after `lifetime`.
pub(super) fn expiry(now: i64, lifetime: Duration) -> Result<i64, StoreError> {
    if lifetime < Duration::from_secs(1) || lifetime > MAX_TOKEN_LIFETIME {
        return Err(StoreError::InvalidExpiry);
    }
    let secs = i64::try_from(lifetime.as_secs()).map_err(|_| StoreError::InvalidExpiry)?;
    Ok(now.saturating_add(secs))
}

impl ClientRegistry {
    /// The stored tokens of a client, oldest first (ephemeral tokens are not listed).
    pub fn tokens(&self, name: &ClientName) -> Result<Vec<TokenInfo>, StoreError> {
        let fail = StoreError::db("list the client's tokens");
        let conn = self.inner.db.writer();
        let id = client_id(&conn, name)
            .map_err(fail)?
            .ok_or_else(|| StoreError::UnknownClient(name.clone()))?;
        let mut query = conn
            .prepare_cached(
                "SELECT label, created_at, last_used_at, expires_at, token_hash FROM client_tokens
                 WHERE client_id = ?1 ORDER BY created_at, label",
            )
            .map_err(fail)?;
        let rows = query
            .query_map([id], |r| {
                Ok((
                    TokenInfo {
                        label: r.get(0)?,
                        created_at: r.get(1)?,
                        last_used_at: r.get(2)?,
                        expires_at: r.get(3)?,
                    },
                    r.get::<_, TokenHash>(4)?,
                ))
            })
            .map_err(fail)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(fail)?;
        drop(query);
        drop(conn);
        let snap = self.inner.read();
        Ok(rows
            .into_iter()
            .map(|(mut info, hash)| {
                let in_memory = snap.tokens.get(&hash).map_or(0, |e| e.used.at());
                let last = info.last_used_at.unwrap_or(0).max(in_memory);
                info.last_used_at = (last > 0).then_some(last);
                info
            })
            .collect())
    }

    /// Revokes the client's stored token labelled `label`; it is refused from the moment this
    /// returns, the client's other tokens keep working. `Ok(false)` if the client has no token
    /// of that label.
    #[tracing::instrument(skip_all, fields(client = %name), err)]
    pub fn revoke_token(&self, name: &ClientName, label: &str) -> Result<bool, StoreError> {
        let fail = StoreError::db("revoke the client token");
        let removed = self.mutate(|tx| {
            let id = client_id(tx, name)
                .map_err(fail)?
                .ok_or_else(|| StoreError::UnknownClient(name.clone()))?;
            tx.execute(
                "DELETE FROM client_tokens WHERE client_id = ?1 AND label = ?2",
                (id, label),
            )
            .map(|n| n > 0)
            .map_err(fail)
        })?;
        if removed {
            info!("client token revoked");
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_outside_one_second_to_ten_years_is_refused() {
        assert_eq!(expiry(100, Duration::from_secs(30)).ok(), Some(130));
        assert!(matches!(
            expiry(100, Duration::ZERO),
            Err(StoreError::InvalidExpiry)
        ));
        assert!(matches!(
            expiry(100, MAX_TOKEN_LIFETIME + Duration::from_secs(1)),
            Err(StoreError::InvalidExpiry)
        ));
    }
}
