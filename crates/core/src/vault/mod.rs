//! The keychain vault: tokens, gateway credentials and typed-in secrets live in the OS keychain,
//! never in a plain file (PROTOCOL: secrets never on disk outside the keychain).
//!
//! Layout. Every entry sits under one keychain *service* — the namespace, `dev.latchkey` unless
//! `LATCHKEY_KEYCHAIN_SERVICE` says otherwise — with the entry name from [`VaultKey::entry`]:
//! `tokens:{account}`, `credentials:{account}:{service}`, `index:{account}` (the JSON list of the
//! account's credential entries, so [`Vault::wipe_account`] finds them without a keychain search),
//! `gateway-api-key`, `manual:{service}`, `client-secret:{account}`, `control-token`, `probe`,
//! and per remote MCP server `server-tokens:{server}` and `server-client:{server}`.
//!
//! An account's OAuth client secret is configuration kept in the keychain, not session: logout
//! ([`Vault::wipe_account`]) leaves it; only [`Vault::delete_client_secret`] removes it.
//!
//! Values are JSON (for structured entries) inside the secret, never on disk.
//!
//! Chunking. Windows Credential Manager accepts at most 2,560 bytes per entry, and JWTs grow. Every
//! value is therefore written as a header plus payload: the entry itself holds
//! `lk1:{count}:` followed by the first chunk, and entries `{entry}#1` … `{entry}#{count-1}`
//! hold the rest, raw. Each stored value is at most [`CHUNK_LIMIT`] bytes. Chunks are written
//! before the head, so a reader never sees a head pointing at chunks that do not exist yet; chunks
//! left over from a longer previous value are deleted afterwards. A head without the `lk1:` prefix
//! or a missing chunk is reported as [`VaultError::Corrupt`].
//!
//! Every keychain call runs in `spawn_blocking` under a timeout (5 s by default).

mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, instrument, warn};

use crate::secret::Secret;

pub use store::{KeyringStore, MemoryStore, SecretStore, StoreFault};

use crate::Code;

/// Largest value written to one keychain entry, header included (Windows' limit).
pub const CHUNK_LIMIT: usize = 2560;

/// Default keychain namespace.
pub const DEFAULT_NAMESPACE: &str = "dev.latchkey";

/// Environment variable overriding the keychain namespace.
pub const NAMESPACE_ENV: &str = "LATCHKEY_KEYCHAIN_SERVICE";

const HEADER_PREFIX: &str = "lk1:";
/// Room left for the header (`lk1:` + up to 10 digits + `:`).
const HEADER_ROOM: usize = 16;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the vault could not do its job. Display tells the person what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// No keychain is reachable.
    #[error("the OS keychain is unavailable ({message}): {}", unavailable_hint())]
    KeychainUnavailable {
        /// What the backend said.
        message: String,
    },
    /// The keychain is locked or refused access.
    #[error("the OS keychain is locked ({message}): {}", unavailable_hint())]
    Locked {
        /// What the backend said.
        message: String,
    },
    /// The keychain did not answer in time.
    #[error(
        "the OS keychain did not answer within {} s: it may be waiting for you to unlock it; unlock it and try again",
        timeout.as_secs_f32()
    )]
    Timeout {
        /// The limit that passed.
        timeout: Duration,
    },
    /// An entry could not be decoded.
    #[error(
        "the keychain entry `{entry}` is damaged: log out and in again (or delete it in your keychain manager)"
    )]
    Corrupt {
        /// Entry name (never its value).
        entry: String,
    },
    /// Any other backend failure.
    #[error("the OS keychain failed: {message}")]
    Backend {
        /// What the backend said.
        message: String,
    },
}

fn unavailable_hint() -> &'static str {
    if cfg!(target_os = "macos") {
        "unlock your login keychain (Keychain Access) and allow Latchkey to use it"
    } else if cfg!(windows) {
        "make sure Windows Credential Manager is available to your user account (sign in interactively, not as a service)"
    } else {
        "start or unlock your keyring (GNOME Keyring / KWallet) — e.g. log in to a desktop session, or run gnome-keyring-daemon --unlock inside dbus-run-session"
    }
}

impl VaultError {
    /// Stable code for HTTP, IPC and exit codes.
    pub fn code(&self) -> Code {
        match self {
            Self::KeychainUnavailable { .. } => Code::KeychainUnavailable,
            Self::Locked { .. } => Code::KeychainLocked,
            Self::Timeout { .. } => Code::KeychainTimeout,
            Self::Corrupt { .. } => Code::KeychainCorrupt,
            Self::Backend { .. } => Code::KeychainError,
        }
    }

    fn from_fault(fault: StoreFault) -> Self {
        match fault {
            StoreFault::Unavailable { message } => Self::KeychainUnavailable { message },
            StoreFault::Locked { message } => Self::Locked { message },
            StoreFault::TooLong { len, limit } => Self::Backend {
                message: format!("an entry of {len} bytes exceeds the keychain limit of {limit}"),
            },
            StoreFault::Platform { message } => Self::Backend { message },
        }
    }
}

/// The name of one vault entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VaultKey {
    /// An account's tokens ([`StoredTokens`]).
    Tokens {
        /// Account name.
        account: String,
    },
    /// An account's credentials for one service ([`StoredCredentials`]).
    Credentials {
        /// Account name.
        account: String,
        /// Service name.
        service: String,
    },
    /// The Auth Gateway API key.
    GatewayApiKey,
    /// The typed-in secret of a `source = "manual"` service.
    ManualSecret {
        /// Service name.
        service: String,
    },
    /// An account's OAuth client secret (providers that issue one to native clients).
    ClientSecret {
        /// Account name.
        account: String,
    },
    /// The token the CLI uses to talk to the running app.
    ControlToken,
    /// The list of an account's credential entries.
    AccountIndex {
        /// Account name.
        account: String,
    },
    /// The entry [`Vault::self_test`] writes and deletes.
    Probe,
    /// A remote MCP server's tokens (JSON, `remote::StoredServerTokens`).
    ServerTokens {
        /// Server name.
        server: String,
    },
    /// A remote MCP server's registration: the authorization server's metadata as discovered and
    /// Latchkey's client id there, with a client secret when registration issued one (JSON).
    ServerClient {
        /// Server name.
        server: String,
    },
}

impl VaultKey {
    /// The keychain entry (user/account) name; the namespace is the keychain service.
    pub fn entry(&self) -> String {
        match self {
            Self::Tokens { account } => format!("tokens:{account}"),
            Self::Credentials { account, service } => format!("credentials:{account}:{service}"),
            Self::GatewayApiKey => "gateway-api-key".to_owned(),
            Self::ManualSecret { service } => format!("manual:{service}"),
            Self::ClientSecret { account } => format!("client-secret:{account}"),
            Self::ControlToken => "control-token".to_owned(),
            Self::AccountIndex { account } => format!("index:{account}"),
            Self::Probe => "probe".to_owned(),
            Self::ServerTokens { server } => format!("server-tokens:{server}"),
            Self::ServerClient { server } => format!("server-client:{server}"),
        }
    }
}

/// Who is logged in, as kept with the tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    /// `sub` claim.
    pub subject: String,
    /// Display name.
    pub name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
}

/// An account's tokens as kept in the keychain. `Debug` is redacted.
#[derive(Clone)]
pub struct StoredTokens {
    /// Access token.
    pub access_token: Secret,
    /// Refresh token, if the IdP gave one.
    pub refresh_token: Option<Secret>,
    /// ID token, if any.
    pub id_token: Option<Secret>,
    /// Expiry of the access token (unix seconds).
    pub expires_at: i64,
    /// When it was issued (unix seconds).
    pub issued_at: i64,
    /// The user.
    pub user: StoredUser,
    /// The `iss` of the login's id token (absent in entries written before it was kept).
    pub issuer: Option<String>,
}

impl fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredTokens")
            .field("access_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .field("expires_at", &self.expires_at)
            .field("issued_at", &self.issued_at)
            .field("user", &self.user)
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// One service's credentials as kept in the keychain. `Debug` shows names only.
#[derive(Clone)]
pub struct StoredCredentials {
    /// Credential name → value.
    pub values: BTreeMap<String, Secret>,
    /// When they were fetched (unix seconds).
    pub fetched_at: i64,
    /// How long they may be used after `fetched_at`.
    pub ttl_seconds: u64,
}

impl fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .field("fetched_at", &self.fetched_at)
            .field("ttl_seconds", &self.ttl_seconds)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct TokensWire {
    access_token: String,
    refresh_token: Option<String>,
    id_token: Option<String>,
    expires_at: i64,
    issued_at: i64,
    user: StoredUser,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct CredentialsWire {
    values: BTreeMap<String, String>,
    fetched_at: i64,
    ttl_seconds: u64,
}

/// Result of [`Vault::self_test`], for status output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeychainHealth {
    /// Write, read and delete all worked.
    pub ok: bool,
    /// Backend name.
    pub backend: String,
    /// What went wrong, for a person.
    pub message: Option<String>,
    /// What to match on when not ok.
    pub code: Option<Code>,
}

struct Inner {
    store: Arc<dyn SecretStore>,
    namespace: String,
    /// Serialises read-modify-write of account indexes.
    index_lock: tokio::sync::Mutex<()>,
}

/// The keychain, asynchronously. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
    timeout: Duration,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("backend", &self.inner.store.backend())
            .field("namespace", &self.inner.namespace)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Vault {
    /// The OS keychain, under the namespace from `LATCHKEY_KEYCHAIN_SERVICE` or `dev.latchkey`.
    pub fn platform() -> Result<Vault, VaultError> {
        let namespace = std::env::var(NAMESPACE_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        Ok(Self::with_namespace(
            Arc::new(KeyringStore::platform()?),
            &namespace,
        ))
    }

    /// A vault over `store` under the default namespace.
    pub fn new(store: Arc<dyn SecretStore>) -> Vault {
        Self::with_namespace(store, DEFAULT_NAMESPACE)
    }

    /// A vault over `store` under `namespace` (the keychain service name).
    pub fn with_namespace(store: Arc<dyn SecretStore>, namespace: &str) -> Vault {
        Vault {
            inner: Arc::new(Inner {
                store,
                namespace: namespace.to_owned(),
                index_lock: tokio::sync::Mutex::new(()),
            }),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the limit for each keychain operation.
    pub fn with_timeout(mut self, d: Duration) -> Vault {
        self.timeout = d;
        self
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.inner.store.backend()
    }

    /// The keychain namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, VaultError> + Send + 'static,
    ) -> Result<T, VaultError> {
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || f(&inner));
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) => Err(VaultError::Timeout {
                timeout: self.timeout,
            }),
            Ok(Err(join)) => Err(VaultError::Backend {
                message: format!("keychain task failed: {join}"),
            }),
            Ok(Ok(result)) => result,
        }
    }

    async fn get_bytes(&self, key: &VaultKey) -> Result<Option<Vec<u8>>, VaultError> {
        let entry = key.entry();
        self.blocking(move |inner| read_chunked(inner, &entry))
            .await
    }

    async fn put_bytes(&self, key: &VaultKey, value: Vec<u8>) -> Result<(), VaultError> {
        let entry = key.entry();
        self.blocking(move |inner| write_chunked(inner, &entry, &value))
            .await
    }

    /// Reads a secret entry.
    #[instrument(skip_all, fields(entry = %key.entry()), err)]
    pub async fn get(&self, key: &VaultKey) -> Result<Option<Secret>, VaultError> {
        match self.get_bytes(key).await? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(|s| Some(Secret::new(s)))
                .map_err(|_| VaultError::Corrupt { entry: key.entry() }),
        }
    }

    /// Writes a secret entry (replacing it).
    #[instrument(skip_all, fields(entry = %key.entry()), err)]
    pub async fn put(&self, key: &VaultKey, value: &Secret) -> Result<(), VaultError> {
        self.put_bytes(key, value.expose().as_bytes().to_vec())
            .await
    }

    /// Deletes an entry and its chunks; absent entries are fine.
    #[instrument(skip_all, fields(entry = %key.entry()), err)]
    pub async fn delete(&self, key: &VaultKey) -> Result<(), VaultError> {
        let entry = key.entry();
        self.blocking(move |inner| delete_chunked(inner, &entry))
            .await
    }

    /// An account's tokens.
    pub async fn load_tokens(&self, account: &str) -> Result<Option<StoredTokens>, VaultError> {
        let key = VaultKey::Tokens {
            account: account.to_owned(),
        };
        let Some(bytes) = self.get_bytes(&key).await? else {
            return Ok(None);
        };
        let wire: TokensWire = serde_json::from_slice(&bytes)
            .map_err(|_| VaultError::Corrupt { entry: key.entry() })?;
        Ok(Some(StoredTokens {
            access_token: Secret::new(wire.access_token),
            refresh_token: wire.refresh_token.map(Secret::new),
            id_token: wire.id_token.map(Secret::new),
            expires_at: wire.expires_at,
            issued_at: wire.issued_at,
            user: wire.user,
            issuer: wire.issuer,
        }))
    }

    /// Stores an account's tokens (replacing them).
    pub async fn save_tokens(
        &self,
        account: &str,
        tokens: &StoredTokens,
    ) -> Result<(), VaultError> {
        let wire = TokensWire {
            access_token: tokens.access_token.expose().to_owned(),
            refresh_token: tokens.refresh_token.as_ref().map(|s| s.expose().to_owned()),
            id_token: tokens.id_token.as_ref().map(|s| s.expose().to_owned()),
            expires_at: tokens.expires_at,
            issued_at: tokens.issued_at,
            user: tokens.user.clone(),
            issuer: tokens.issuer.clone(),
        };
        let key = VaultKey::Tokens {
            account: account.to_owned(),
        };
        self.put_bytes(&key, to_json(&wire, &key)?).await
    }

    /// An account's OAuth client secret, when one was stored.
    pub async fn load_client_secret(&self, account: &str) -> Result<Option<Secret>, VaultError> {
        self.get(&VaultKey::ClientSecret {
            account: account.to_owned(),
        })
        .await
    }

    /// Stores an account's OAuth client secret (replacing it). It survives logout.
    pub async fn save_client_secret(
        &self,
        account: &str,
        secret: &Secret,
    ) -> Result<(), VaultError> {
        self.put(
            &VaultKey::ClientSecret {
                account: account.to_owned(),
            },
            secret,
        )
        .await
    }

    /// Deletes an account's OAuth client secret; absent is fine.
    pub async fn delete_client_secret(&self, account: &str) -> Result<(), VaultError> {
        self.delete(&VaultKey::ClientSecret {
            account: account.to_owned(),
        })
        .await
    }

    /// An account's credentials for one service.
    pub async fn load_credentials(
        &self,
        account: &str,
        service: &str,
    ) -> Result<Option<StoredCredentials>, VaultError> {
        let key = VaultKey::Credentials {
            account: account.to_owned(),
            service: service.to_owned(),
        };
        let Some(bytes) = self.get_bytes(&key).await? else {
            return Ok(None);
        };
        let wire: CredentialsWire = serde_json::from_slice(&bytes)
            .map_err(|_| VaultError::Corrupt { entry: key.entry() })?;
        Ok(Some(StoredCredentials {
            values: wire
                .values
                .into_iter()
                .map(|(k, v)| (k, Secret::new(v)))
                .collect(),
            fetched_at: wire.fetched_at,
            ttl_seconds: wire.ttl_seconds,
        }))
    }

    /// Stores an account's credentials for one service and records the service in the account's
    /// index, so [`Vault::wipe_account`] finds it.
    pub async fn save_credentials(
        &self,
        account: &str,
        service: &str,
        c: &StoredCredentials,
    ) -> Result<(), VaultError> {
        self.add_to_index(account, service).await?;
        let wire = CredentialsWire {
            values: c
                .values
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            fetched_at: c.fetched_at,
            ttl_seconds: c.ttl_seconds,
        };
        let key = VaultKey::Credentials {
            account: account.to_owned(),
            service: service.to_owned(),
        };
        self.put_bytes(&key, to_json(&wire, &key)?).await
    }

    async fn read_index(&self, account: &str) -> Result<Vec<String>, VaultError> {
        let key = VaultKey::AccountIndex {
            account: account.to_owned(),
        };
        match self.get_bytes(&key).await? {
            None => Ok(Vec::new()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|_| VaultError::Corrupt { entry: key.entry() }),
        }
    }

    async fn add_to_index(&self, account: &str, service: &str) -> Result<(), VaultError> {
        let _guard = self.inner.index_lock.lock().await;
        let mut services = self.read_index(account).await?;
        if services.iter().any(|s| s == service) {
            return Ok(());
        }
        services.push(service.to_owned());
        let key = VaultKey::AccountIndex {
            account: account.to_owned(),
        };
        self.put_bytes(&key, to_json(&services, &key)?).await
    }

    /// Deletes an account's tokens and every credential entry it has (found through its index).
    /// The account's client secret is configuration, not session, and stays.
    #[instrument(skip_all, fields(account = %account), err)]
    pub async fn wipe_account(&self, account: &str) -> Result<(), VaultError> {
        let _guard = self.inner.index_lock.lock().await;
        let services = match self.read_index(account).await {
            Ok(s) => s,
            Err(VaultError::Corrupt { .. }) => {
                warn!("account index damaged; deleting what can be found");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        for service in &services {
            self.delete(&VaultKey::Credentials {
                account: account.to_owned(),
                service: service.clone(),
            })
            .await?;
        }
        self.delete(&VaultKey::Tokens {
            account: account.to_owned(),
        })
        .await?;
        self.delete(&VaultKey::AccountIndex {
            account: account.to_owned(),
        })
        .await?;
        debug!(services = services.len(), "account wiped from keychain");
        Ok(())
    }

    /// Writes, reads back and deletes a probe entry.
    pub async fn self_test(&self) -> KeychainHealth {
        let backend = self.backend().to_owned();
        let probe = Secret::new(format!("probe-{}", rand::random::<u64>()));
        let result = async {
            self.put(&VaultKey::Probe, &probe).await?;
            let read = self.get(&VaultKey::Probe).await?;
            self.delete(&VaultKey::Probe).await?;
            if read.as_ref() == Some(&probe) {
                Ok(())
            } else {
                Err(VaultError::Backend {
                    message: "the keychain did not return what was written".to_owned(),
                })
            }
        }
        .await;
        match result {
            Ok(()) => KeychainHealth {
                ok: true,
                backend,
                message: None,
                code: None,
            },
            Err(e) => KeychainHealth {
                ok: false,
                backend,
                message: Some(e.to_string()),
                code: Some(e.code()),
            },
        }
    }
}

fn to_json<T: Serialize>(value: &T, key: &VaultKey) -> Result<Vec<u8>, VaultError> {
    serde_json::to_vec(value).map_err(|_| VaultError::Corrupt { entry: key.entry() })
}

fn chunk_name(entry: &str, i: usize) -> String {
    format!("{entry}#{i}")
}

/// Parses `lk1:{count}:` at the start of `head`; returns the count and the payload offset.
fn parse_header(head: &[u8]) -> Option<(usize, usize)> {
    let rest = head.strip_prefix(HEADER_PREFIX.as_bytes())?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let count: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    (count >= 1).then_some((count, HEADER_PREFIX.len() + colon + 1))
}

fn read_chunked(inner: &Inner, entry: &str) -> Result<Option<Vec<u8>>, VaultError> {
    let ns = &inner.namespace;
    let Some(head) = inner.store.get(ns, entry).map_err(VaultError::from_fault)? else {
        return Ok(None);
    };
    let corrupt = || VaultError::Corrupt {
        entry: entry.to_owned(),
    };
    let (count, offset) = parse_header(&head).ok_or_else(corrupt)?;
    let mut out = head[offset..].to_vec();
    for i in 1..count {
        let part = inner
            .store
            .get(ns, &chunk_name(entry, i))
            .map_err(VaultError::from_fault)?
            .ok_or_else(corrupt)?;
        out.extend_from_slice(&part);
    }
    Ok(Some(out))
}

/// Count of chunks of the value currently stored at `entry` (0 when absent or unreadable).
fn stored_count(inner: &Inner, entry: &str) -> Result<usize, VaultError> {
    let head = inner
        .store
        .get(&inner.namespace, entry)
        .map_err(VaultError::from_fault)?;
    Ok(head
        .as_deref()
        .and_then(parse_header)
        .map_or(0, |(count, _)| count))
}

fn write_chunked(inner: &Inner, entry: &str, value: &[u8]) -> Result<(), VaultError> {
    let ns = &inner.namespace;
    let old = stored_count(inner, entry)?;
    let first_len = value.len().min(CHUNK_LIMIT - HEADER_ROOM);
    let (first, rest) = value.split_at(first_len);
    let parts: Vec<&[u8]> = rest.chunks(CHUNK_LIMIT).collect();
    let count = parts.len() + 1;
    for (i, part) in parts.iter().enumerate() {
        inner
            .store
            .set(ns, &chunk_name(entry, i + 1), part)
            .map_err(VaultError::from_fault)?;
    }
    let mut head = format!("{HEADER_PREFIX}{count}:").into_bytes();
    head.extend_from_slice(first);
    inner
        .store
        .set(ns, entry, &head)
        .map_err(VaultError::from_fault)?;
    for i in count..old {
        inner
            .store
            .delete(ns, &chunk_name(entry, i))
            .map_err(VaultError::from_fault)?;
    }
    Ok(())
}

fn delete_chunked(inner: &Inner, entry: &str) -> Result<(), VaultError> {
    let ns = &inner.namespace;
    let count = stored_count(inner, entry).unwrap_or(0);
    inner
        .store
        .delete(ns, entry)
        .map_err(VaultError::from_fault)?;
    for i in 1..count {
        inner
            .store
            .delete(ns, &chunk_name(entry, i))
            .map_err(VaultError::from_fault)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
