//! The registry of local clients (PROTOCOL §3, gates 3 and 4): who may call the loopback proxy,
//! with which token, for which services.
//!
//! SQLite is the record; the request path never touches it. [`ClientRegistry`] keeps an
//! in-memory snapshot keyed by token hash, replaced synchronously after every write, so
//! [`ClientRegistry::verify`] is a hash, a map lookup and a constant-time compare, and a revoked
//! token is refused by the very next request.

mod name;
mod stored;
mod token;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use latchkey_core::clock::unix_seconds;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use name::ClientName;
use name::normalise_services;
pub use stored::{MAX_TOKEN_LIFETIME, TokenInfo};
use stored::{StoredToken, TokenUse};
pub use token::{ClientToken, TOKEN_PREFIX};
use token::{MAX_PRESENTED_LEN, TokenHash, hash_token};

use crate::db::Database;
use crate::error::StoreError;

/// Last-used times reach SQLite at most this often; in between they live in memory.
pub const LAST_USED_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Longest lifetime of an ephemeral token.
pub const MAX_EPHEMERAL_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Most ephemeral tokens alive at once, so a misbehaving caller cannot grow memory without bound.
pub const MAX_EPHEMERAL_TOKENS: usize = 4096;

/// Longest token label, in characters.
const MAX_LABEL_CHARS: usize = 64;

/// Label of the token created with a client.
const FIRST_TOKEN_LABEL: &str = "default";

/// What a verified token may do. Cloning is two reference-count increments.
#[derive(Clone, Debug)]
pub struct ClientGrant {
    /// The client the token belongs to.
    pub client: ClientName,
    /// Services it may use (sorted, no duplicates).
    pub services: Arc<[String]>,
    /// True for a memory-only, expiring token from [`ClientRegistry::issue_ephemeral`].
    pub ephemeral: bool,
    /// The client may read its services' raw credentials (`GET /v1/credentials/{service}`).
    pub raw_credentials: bool,
}

impl ClientGrant {
    /// Whether the grant covers `service` (PROTOCOL §3 gate 4).
    pub fn allows(&self, service: &str) -> bool {
        self.services.iter().any(|s| s == service)
    }
}

/// A client as the CLI and the tray list it. Contains no token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct ClientInfo {
    /// Its name.
    pub name: ClientName,
    /// Services it may use (sorted).
    pub services: Vec<String>,
    /// When it was added, unix seconds.
    pub created_at: i64,
    /// Its last request through the proxy, unix seconds; `None` if never used.
    pub last_used_at: Option<i64>,
    /// Stored (long-lived) tokens; ephemeral tokens are not counted.
    pub token_count: u32,
    /// It may read its services' raw credentials ("can read raw credentials"); off by default.
    pub raw_credentials: bool,
}

/// How a new client is set up beyond its name and services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOptions {
    /// May read its services' raw credentials at `GET /v1/credentials/{service}`, as `latchkey
    /// exec` does (never an account's IdP access token). Off by default: a client token then
    /// only works through the proxy, so a copy of it is not a copy of the credentials.
    pub allow_raw_credentials: bool,
}

/// The local clients: their stored token hashes in SQLite and a snapshot in memory for the
/// request path. Cheap to clone; clones share everything.
///
/// Writes (`add`, `issue_token`, `revoke`, `set_services`) are short blocking SQLite
/// transactions; `verify` never waits on SQLite.
#[derive(Clone)]
pub struct ClientRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    snapshot: RwLock<Snapshot>,
    flush_scheduled: AtomicBool,
}

#[derive(Default)]
struct Snapshot {
    /// Keyed by the SHA-256 of each token the registry issued, hashed with foldhash rather than
    /// SipHash (one lookup per request): only issued tokens are inserted, and a presented one is
    /// only looked up, so nobody can choose keys that crowd a bucket.
    tokens: HashMap<TokenHash, TokenEntry, foldhash::fast::RandomState>,
    clients: HashMap<ClientName, Arc<ClientState>>,
}

struct TokenEntry {
    hash: TokenHash,
    client: Arc<ClientState>,
    /// `Some` for an ephemeral token.
    expires_at: Option<Instant>,
    /// A stored token's expiry, unix seconds (`None`: never).
    expires_unix: Option<i64>,
    /// When the token was last presented (stored tokens are flushed to SQLite).
    used: Arc<TokenUse>,
}

struct ClientState {
    id: i64,
    name: ClientName,
    services: Arc<[String]>,
    created_at: i64,
    token_count: u32,
    raw_credentials: bool,
    /// Unix seconds; 0 means never.
    last_used: AtomicI64,
    /// `last_used` is newer than SQLite's copy.
    dirty: AtomicBool,
}

impl ClientState {
    fn info(&self) -> ClientInfo {
        let last = self.last_used.load(Ordering::Acquire);
        ClientInfo {
            name: self.name.clone(),
            services: self.services.to_vec(),
            created_at: self.created_at,
            last_used_at: (last > 0).then_some(last),
            token_count: self.token_count,
            raw_credentials: self.raw_credentials,
        }
    }
}

/// One client as read from SQLite.
struct StoredClient {
    id: i64,
    name: String,
    created_at: i64,
    last_used_at: Option<i64>,
    raw_credentials: bool,
    services: Vec<String>,
    tokens: Vec<StoredToken>,
}

impl std::fmt::Debug for ClientRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snap = self.inner.read();
        f.debug_struct("ClientRegistry")
            .field("clients", &snap.clients.len())
            .field("tokens", &snap.tokens.len())
            .finish_non_exhaustive()
    }
}

impl ClientRegistry {
    /// Loads the clients of `db` into memory.
    pub fn open(db: &Database) -> Result<Self, StoreError> {
        let registry = Self {
            inner: Arc::new(Inner {
                db: db.clone(),
                snapshot: RwLock::new(Snapshot::default()),
                flush_scheduled: AtomicBool::new(false),
            }),
        };
        registry.reload()?;
        Ok(registry)
    }

    /// Re-reads every client from SQLite (for a process that shares the file with another
    /// writer). Ephemeral tokens and unflushed last-used times are kept.
    pub fn reload(&self) -> Result<(), StoreError> {
        let conn = self.inner.db.writer();
        let stored = load(&conn).map_err(StoreError::db("load the clients"))?;
        self.inner.install(stored);
        Ok(())
    }

    /// Adds a client allowed to use `services` (with the default [`ClientOptions`]) and returns
    /// it with its first token. The token is returned only here; only its hash is stored.
    pub fn add(
        &self,
        name: &ClientName,
        services: &[String],
    ) -> Result<(ClientInfo, ClientToken), StoreError> {
        self.add_with(name, services, &ClientOptions::default())
    }

    /// [`ClientRegistry::add`] with `options`.
    #[tracing::instrument(skip_all, fields(client = %name, raw_credentials = options.allow_raw_credentials), err)]
    pub fn add_with(
        &self,
        name: &ClientName,
        services: &[String],
        options: &ClientOptions,
    ) -> Result<(ClientInfo, ClientToken), StoreError> {
        let services = normalise_services(services)?;
        let token = ClientToken::generate()?;
        let hash = token.hash();
        let now = unix_seconds();
        let fail = StoreError::db("add the client");
        self.mutate(|tx| {
            if client_id(tx, name).map_err(fail)?.is_some() {
                return Err(StoreError::AlreadyExists(name.clone()));
            }
            tx.execute(
                "INSERT INTO clients (name, created_at, raw_credentials) VALUES (?1, ?2, ?3)",
                (name.as_str(), now, options.allow_raw_credentials),
            )
            .map_err(fail)?;
            let id = tx.last_insert_rowid();
            insert_services(tx, id, &services).map_err(fail)?;
            insert_token(tx, id, &hash, FIRST_TOKEN_LABEL, now, None).map_err(fail)?;
            Ok(())
        })?;
        info!(services = services.len(), "client added");
        let info = ClientInfo {
            name: name.clone(),
            services,
            created_at: now,
            last_used_at: None,
            token_count: 1,
            raw_credentials: options.allow_raw_credentials,
        };
        Ok((info, token))
    }

    /// Issues another long-lived, never-expiring token for an existing client (for example one
    /// written into a host's config file), replacing the client's previous token of the same
    /// label; see [`ClientRegistry::issue_token_expiring`].
    pub fn issue_token(&self, name: &ClientName, label: &str) -> Result<ClientToken, StoreError> {
        self.issue_token_expiring(name, label, None)
    }

    /// Issues a stored token for an existing client. `label` says where it went (at most 64
    /// characters, no control characters, for example `mcp-config:claude-code`); the client's
    /// previous token of that label is revoked in the same transaction, so running
    /// `latchkey mcp-config` again leaves one valid token per host, not a pile. With
    /// `expires_in` (1 second to 10 years) the token is refused from then on.
    /// [`ClientRegistry::revoke`] removes every token of the client.
    #[tracing::instrument(skip_all, fields(client = %name, expires_in_s = expires_in.map(|d| d.as_secs())), err)]
    pub fn issue_token_expiring(
        &self,
        name: &ClientName,
        label: &str,
        expires_in: Option<Duration>,
    ) -> Result<ClientToken, StoreError> {
        if label.chars().count() > MAX_LABEL_CHARS || label.chars().any(char::is_control) {
            return Err(StoreError::InvalidLabel);
        }
        let now = unix_seconds();
        let expires_at = expires_in.map(|d| stored::expiry(now, d)).transpose()?;
        let token = ClientToken::generate()?;
        let hash = token.hash();
        let fail = StoreError::db("issue a client token");
        let replaced = self.mutate(|tx| {
            let id = client_id(tx, name)
                .map_err(fail)?
                .ok_or_else(|| StoreError::UnknownClient(name.clone()))?;
            let replaced = tx
                .execute(
                    "DELETE FROM client_tokens WHERE client_id = ?1 AND label = ?2",
                    (id, label),
                )
                .map_err(fail)?;
            insert_token(tx, id, &hash, label, now, expires_at).map_err(fail)?;
            Ok(replaced > 0)
        })?;
        info!(replaced, "client token issued");
        Ok(token)
    }

    /// Issues a memory-only token with the client's scopes that stops working after `ttl`
    /// (1 second to 24 hours), so `latchkey mcp-stdio` and `latchkey headers` need no
    /// long-lived token in a host config. It also ends when the client is revoked or the
    /// process exits.
    #[tracing::instrument(skip_all, fields(client = %name, ttl_s = ttl.as_secs()), err)]
    pub fn issue_ephemeral(
        &self,
        name: &ClientName,
        ttl: Duration,
    ) -> Result<ClientToken, StoreError> {
        if ttl < Duration::from_secs(1) || ttl > MAX_EPHEMERAL_TTL {
            return Err(StoreError::InvalidTtl);
        }
        let token = ClientToken::generate()?;
        let hash = token.hash();
        let now = Instant::now();
        let mut snap = self.inner.write();
        let client = snap
            .clients
            .get(name.as_str())
            .cloned()
            .ok_or_else(|| StoreError::UnknownClient(name.clone()))?;
        snap.tokens
            .retain(|_, e| e.expires_at.is_none_or(|at| at > now));
        let live = snap
            .tokens
            .values()
            .filter(|e| e.expires_at.is_some())
            .count();
        if live >= MAX_EPHEMERAL_TOKENS {
            return Err(StoreError::TooManyEphemeral {
                limit: MAX_EPHEMERAL_TOKENS,
            });
        }
        snap.tokens.insert(
            hash,
            TokenEntry {
                hash,
                client,
                expires_at: Some(now + ttl),
                expires_unix: None,
                used: Arc::new(TokenUse::new(None)),
            },
        );
        debug!("ephemeral token issued");
        Ok(token)
    }

    /// All clients, sorted by name.
    pub fn list(&self) -> Vec<ClientInfo> {
        let snap = self.inner.read();
        let mut out: Vec<ClientInfo> = snap.clients.values().map(|c| c.info()).collect();
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// One client.
    pub fn get(&self, name: &ClientName) -> Option<ClientInfo> {
        self.inner
            .read()
            .clients
            .get(name.as_str())
            .map(|c| c.info())
    }

    /// Removes a client and every one of its tokens, stored and ephemeral. They are refused from
    /// the moment this returns. `Ok(false)` if there was no such client.
    #[tracing::instrument(skip_all, fields(client = %name), err)]
    pub fn revoke(&self, name: &ClientName) -> Result<bool, StoreError> {
        let fail = StoreError::db("revoke the client");
        let removed = self.mutate(|tx| {
            tx.execute("DELETE FROM clients WHERE name = ?1", [name.as_str()])
                .map(|n| n > 0)
                .map_err(fail)
        })?;
        if removed {
            info!("client revoked");
        }
        Ok(removed)
    }

    /// Replaces the services a client may use; its tokens, including ephemeral ones, follow at
    /// once.
    #[tracing::instrument(skip_all, fields(client = %name), err)]
    pub fn set_services(&self, name: &ClientName, services: &[String]) -> Result<(), StoreError> {
        let services = normalise_services(services)?;
        let fail = StoreError::db("change the client's services");
        self.mutate(|tx| {
            let id = client_id(tx, name)
                .map_err(fail)?
                .ok_or_else(|| StoreError::UnknownClient(name.clone()))?;
            tx.execute("DELETE FROM client_services WHERE client_id = ?1", [id])
                .map_err(fail)?;
            insert_services(tx, id, &services).map_err(fail)
        })?;
        info!(services = services.len(), "client services changed");
        Ok(())
    }

    /// The grant of a presented token, or `None` if it is unknown, revoked or expired.
    ///
    /// A token that passes is a use: its own last use and its client's are recorded in memory
    /// and written to SQLite by a background flush at most every [`LAST_USED_FLUSH_INTERVAL`]
    /// (when a Tokio runtime is running) and by [`ClientRegistry::flush_last_used`]. Recording it
    /// here, on the entry already found, spares the request path a second lookup by name.
    ///
    /// Never touches SQLite, never blocks and does not allocate. The presented string is hashed
    /// before any comparison, so timing cannot reveal how much of a stored token an attacker has
    /// guessed; the map is keyed by that hash (which the attacker cannot steer) and the entry
    /// found is confirmed with a constant-time comparison.
    pub fn verify(&self, presented: &str) -> Option<ClientGrant> {
        if presented.len() > MAX_PRESENTED_LEN {
            return None;
        }
        let hash = hash_token(presented);
        let snap = self.inner.read();
        let entry = snap.tokens.get(&hash)?;
        if !bool::from(entry.hash.ct_eq(&hash)) {
            return None;
        }
        if entry.expires_at.is_some_and(|at| Instant::now() >= at) {
            return None;
        }
        let now = unix_seconds();
        if entry.expires_unix.is_some_and(|at| now >= at) {
            return None;
        }
        entry.used.record(now);
        entry.client.last_used.fetch_max(now, Ordering::AcqRel);
        entry.client.dirty.store(true, Ordering::Release);
        let grant = ClientGrant {
            client: entry.client.name.clone(),
            services: Arc::clone(&entry.client.services),
            ephemeral: entry.expires_at.is_some(),
            raw_credentials: entry.client.raw_credentials,
        };
        drop(snap);
        self.inner.schedule_flush();
        Some(grant)
    }

    /// Writes pending last-used times to SQLite now (shutdown, tests). Blocking.
    pub fn flush_last_used(&self) -> Result<(), StoreError> {
        self.inner.flush_last_used()
    }

    /// Runs `f` in an immediate transaction on the writer connection, then replaces the
    /// snapshot from what the transaction sees, before releasing the connection, so snapshots are
    /// installed in commit order.
    fn mutate<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.inner.db.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::db("start a transaction"))?;
        let out = f(&tx)?;
        let stored = load(&tx).map_err(StoreError::db("load the clients"))?;
        tx.commit()
            .map_err(StoreError::db("save the change to the clients"))?;
        self.inner.install(stored);
        drop(conn);
        Ok(out)
    }
}

impl Inner {
    fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the snapshot with `stored`, keeping last-used times not yet flushed and live
    /// ephemeral tokens of clients that still exist (same row id, so a client revoked and added
    /// again under the same name does not inherit them).
    fn install(&self, stored: Vec<StoredClient>) {
        let mut snap = self.write();
        let now = Instant::now();
        let mut clients = HashMap::with_capacity(stored.len());
        let mut tokens = HashMap::default();
        for c in stored {
            let Ok(name) = ClientName::parse(&c.name) else {
                warn!(id = c.id, "skipping a stored client with an invalid name");
                continue;
            };
            let old = snap.clients.get(name.as_str()).filter(|o| o.id == c.id);
            let in_memory = old.map_or(0, |o| o.last_used.load(Ordering::Acquire));
            let state = Arc::new(ClientState {
                id: c.id,
                name: name.clone(),
                services: c.services.into(),
                created_at: c.created_at,
                token_count: u32::try_from(c.tokens.len()).unwrap_or(u32::MAX),
                raw_credentials: c.raw_credentials,
                last_used: AtomicI64::new(in_memory.max(c.last_used_at.unwrap_or(0))),
                dirty: AtomicBool::new(old.is_some_and(|o| o.dirty.load(Ordering::Acquire))),
            });
            for t in c.tokens {
                let used = snap.tokens.get(&t.hash).map_or_else(
                    || Arc::new(TokenUse::new(t.last_used_at)),
                    |e| Arc::clone(&e.used),
                );
                let hash = t.hash;
                tokens.insert(
                    hash,
                    TokenEntry {
                        hash,
                        client: Arc::clone(&state),
                        expires_unix: t.expires_at,
                        used,
                        expires_at: None,
                    },
                );
            }
            clients.insert(name, state);
        }
        for (hash, entry) in &snap.tokens {
            let Some(at) = entry.expires_at.filter(|at| *at > now) else {
                continue;
            };
            if let Some(state) = clients
                .get(entry.client.name.as_str())
                .filter(|s| s.id == entry.client.id)
            {
                tokens.insert(
                    *hash,
                    TokenEntry {
                        hash: *hash,
                        client: Arc::clone(state),
                        expires_at: Some(at),
                        expires_unix: None,
                        used: Arc::clone(&entry.used),
                    },
                );
            }
        }
        *snap = Snapshot { tokens, clients };
    }

    /// Schedules one flush [`LAST_USED_FLUSH_INTERVAL`] from now unless one is pending. Without
    /// a Tokio runtime nothing is scheduled and the times wait for an explicit flush.
    fn schedule_flush(self: &Arc<Self>) {
        if self.flush_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.flush_scheduled.store(false, Ordering::Release);
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        handle.spawn(async move {
            tokio::time::sleep(LAST_USED_FLUSH_INTERVAL).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            // Cleared before collecting, so a use from now on schedules the next flush.
            inner.flush_scheduled.store(false, Ordering::Release);
            let joined = tokio::task::spawn_blocking(move || inner.flush_last_used()).await;
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(code = %e.code(), error = %e, "last-used times not saved"),
                Err(e) => warn!(error = %e, "last-used flush task failed"),
            }
        });
    }

    fn flush_last_used(&self) -> Result<(), StoreError> {
        let pending: Vec<Arc<ClientState>> = self
            .read()
            .clients
            .values()
            .filter(|c| c.dirty.swap(false, Ordering::AcqRel))
            .cloned()
            .collect();
        let used: Vec<(TokenHash, Arc<TokenUse>)> = self
            .read()
            .tokens
            .values()
            .filter(|e| e.expires_at.is_none() && e.used.take_dirty())
            .map(|e| (e.hash, Arc::clone(&e.used)))
            .collect();
        if pending.is_empty() && used.is_empty() {
            return Ok(());
        }
        let written = self.db.write(|conn| {
            let tx = conn.transaction()?;
            {
                let mut update = tx.prepare_cached(
                    "UPDATE clients SET last_used_at = max(coalesce(last_used_at, 0), ?1) WHERE id = ?2",
                )?;
                for c in &pending {
                    update.execute((c.last_used.load(Ordering::Acquire), c.id))?;
                }
                let mut update = tx.prepare_cached(
                    "UPDATE client_tokens SET last_used_at = max(coalesce(last_used_at, 0), ?1) WHERE token_hash = ?2",
                )?;
                for (hash, u) in &used {
                    update.execute((u.at(), hash.as_slice()))?;
                }
            }
            tx.commit()
        });
        if let Err(e) = written {
            for c in &pending {
                c.dirty.store(true, Ordering::Release);
            }
            for (_, u) in &used {
                u.mark_dirty();
            }
            return Err(StoreError::db("record when clients were last used")(e));
        }
        debug!(clients = pending.len(), "last-used times saved");
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.flush_last_used() {
            warn!(code = %e.code(), error = %e, "last-used times not saved at shutdown");
        }
    }
}

fn client_id(conn: &Connection, name: &ClientName) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT id FROM clients WHERE name = ?1",
        [name.as_str()],
        |r| r.get(0),
    )
    .optional()
}

fn insert_services(conn: &Connection, id: i64, services: &[String]) -> rusqlite::Result<()> {
    let mut insert =
        conn.prepare_cached("INSERT INTO client_services (client_id, service) VALUES (?1, ?2)")?;
    for s in services {
        insert.execute((id, s))?;
    }
    Ok(())
}

fn insert_token(
    conn: &Connection,
    id: i64,
    hash: &TokenHash,
    label: &str,
    now: i64,
    expires_at: Option<i64>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO client_tokens (token_hash, client_id, label, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute((hash.as_slice(), id, label, now, expires_at))
    .map(drop)
}

/// Every client with its services and token hashes.
fn load(conn: &Connection) -> rusqlite::Result<Vec<StoredClient>> {
    let mut clients: Vec<StoredClient> = conn
        .prepare_cached(
            "SELECT id, name, created_at, last_used_at, raw_credentials FROM clients ORDER BY id",
        )?
        .query_map([], |r| {
            Ok(StoredClient {
                id: r.get(0)?,
                name: r.get(1)?,
                created_at: r.get(2)?,
                last_used_at: r.get(3)?,
                raw_credentials: r.get(4)?,
                services: Vec::new(),
                tokens: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let index: HashMap<i64, usize> = clients.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
    let mut services =
        conn.prepare_cached("SELECT client_id, service FROM client_services ORDER BY service")?;
    let mut rows = services.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        if let Some(&i) = index.get(&id) {
            clients[i].services.push(row.get(1)?);
        }
    }
    let mut tokens = conn.prepare_cached(
        "SELECT client_id, token_hash, expires_at, last_used_at FROM client_tokens",
    )?;
    let mut rows = tokens.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        if let Some(&i) = index.get(&id) {
            clients[i].tokens.push(StoredToken {
                hash: row.get(1)?,
                expires_at: row.get(2)?,
                last_used_at: row.get(3)?,
            });
        }
    }
    Ok(clients)
}

#[cfg(test)]
mod tests;
