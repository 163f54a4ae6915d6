//! The blocking keychain backends behind [`super::Vault`]: the OS keychain through `keyring`, and
//! an in-memory store with fault injection for tests.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// What a backend can report. The [`super::Vault`] turns these into [`super::VaultError`]s with a
/// message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreFault {
    /// No keychain reachable (no D-Bus session, no Secret Service, no default store).
    #[error("keychain unavailable: {message}")]
    Unavailable {
        /// Backend detail (never contains a secret).
        message: String,
    },
    /// The keychain exists but is locked or refused access.
    #[error("keychain locked: {message}")]
    Locked {
        /// Backend detail.
        message: String,
    },
    /// The value is longer than the backend accepts.
    #[error("value of {len} bytes exceeds the keychain limit of {limit} bytes")]
    TooLong {
        /// Bytes offered.
        len: usize,
        /// Bytes accepted.
        limit: usize,
    },
    /// Any other backend failure.
    #[error("keychain failure: {message}")]
    Platform {
        /// Backend detail.
        message: String,
    },
}

/// A blocking key-value keychain: `service` is the namespace, `user` the entry name. Called only
/// from `spawn_blocking` by [`super::Vault`].
pub trait SecretStore: Send + Sync + 'static {
    /// Reads an entry; `Ok(None)` when absent.
    fn get(&self, service: &str, user: &str) -> Result<Option<Vec<u8>>, StoreFault>;
    /// Creates or replaces an entry.
    fn set(&self, service: &str, user: &str, value: &[u8]) -> Result<(), StoreFault>;
    /// Deletes an entry; deleting an absent entry is not an error.
    fn delete(&self, service: &str, user: &str) -> Result<(), StoreFault>;
    /// Name of the backend, for status output.
    fn backend(&self) -> &'static str;
}

/// The OS keychain: Secret Service (GNOME Keyring / KWallet) on Linux through zbus, Keychain
/// Services on macOS, Credential Manager on Windows. `keyring` 4's `v1` API sets the platform
/// store as the process default on first use; a failure to reach it is reported on every call as
/// [`StoreFault::Unavailable`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyringStore(());

impl KeyringStore {
    /// The platform keychain. Cheap: the connection is made on the first call (which the vault
    /// runs off the async runtime), so start-up never blocks.
    pub fn platform() -> Result<Self, super::VaultError> {
        Ok(Self(()))
    }

    fn entry(service: &str, user: &str) -> Result<keyring::Entry, StoreFault> {
        if let Err(e) = keyring::Entry::store_status() {
            return Err(map_keyring_error(e));
        }
        keyring::Entry::new(service, user).map_err(|e| map_keyring_error(&e))
    }
}

/// Maps a `keyring` error to a fault; the text never contains the secret (keyring's `BadEncoding`
/// carries bytes, which are dropped here).
fn map_keyring_error(e: &keyring::Error) -> StoreFault {
    use keyring::Error as K;
    match e {
        K::NoDefaultStore => StoreFault::Unavailable {
            message: "no default store has been set".to_owned(),
        },
        K::PlatformFailure(inner) => StoreFault::Unavailable {
            message: inner.to_string(),
        },
        K::NoStorageAccess(inner) => StoreFault::Unavailable {
            message: inner.to_string(),
        },
        K::TooLong(_, limit) => StoreFault::TooLong {
            len: 0,
            limit: usize::try_from(*limit).unwrap_or(usize::MAX),
        },
        K::BadEncoding(_) | K::BadDataFormat(..) => StoreFault::Platform {
            message: "the keychain returned data in an unexpected format".to_owned(),
        },
        K::Invalid(what, why) => StoreFault::Platform {
            message: format!("invalid {what}: {why}"),
        },
        K::Ambiguous(list) => StoreFault::Platform {
            message: format!("{} matching keychain entries", list.len()),
        },
        other => StoreFault::Platform {
            message: other.to_string(),
        },
    }
}

impl SecretStore for KeyringStore {
    fn get(&self, service: &str, user: &str) -> Result<Option<Vec<u8>>, StoreFault> {
        match Self::entry(service, user)?.get_secret() {
            Ok(bytes) => Ok(Some(bytes)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(map_keyring_error(&e)),
        }
    }

    fn set(&self, service: &str, user: &str, value: &[u8]) -> Result<(), StoreFault> {
        Self::entry(service, user)?
            .set_secret(value)
            .map_err(|e| match map_keyring_error(&e) {
                StoreFault::TooLong { limit, .. } => StoreFault::TooLong {
                    len: value.len(),
                    limit,
                },
                other => other,
            })
    }

    fn delete(&self, service: &str, user: &str) -> Result<(), StoreFault> {
        match Self::entry(service, user)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(map_keyring_error(&e)),
        }
    }

    fn backend(&self) -> &'static str {
        if cfg!(target_os = "macos") {
            "macos-keychain"
        } else if cfg!(windows) {
            "windows-credential-manager"
        } else {
            "secret-service"
        }
    }
}

/// An in-memory store for tests, with optional fault injection: a size limit per value (like
/// Windows' 2,560 bytes), a fault returned by every call, and a delay before every call.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<BTreeMap<(String, String), Vec<u8>>>,
    max_value_len: Option<usize>,
    fault: Mutex<Option<StoreFault>>,
    delay: Mutex<Option<Duration>>,
}

impl MemoryStore {
    /// An empty store without limits or faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses values longer than `limit` bytes with [`StoreFault::TooLong`].
    pub fn with_value_limit(mut self, limit: usize) -> Self {
        self.max_value_len = Some(limit);
        self
    }

    /// Makes every following call fail with `fault` (`None` heals the store).
    pub fn fail_with(&self, fault: Option<StoreFault>) {
        *lock(&self.fault) = fault;
    }

    /// Makes every following call block for `delay` first (`None` removes the delay).
    pub fn delay_each_call(&self, delay: Option<Duration>) {
        *lock(&self.delay) = delay;
    }

    /// Number of entries held, across namespaces.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `(namespace, entry)` names held, for assertions.
    pub fn entry_names(&self) -> Vec<(String, String)> {
        lock(&self.entries).keys().cloned().collect()
    }

    fn inject(&self) -> Result<(), StoreFault> {
        let delay = *lock(&self.delay);
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        match lock(&self.fault).clone() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SecretStore for MemoryStore {
    fn get(&self, service: &str, user: &str) -> Result<Option<Vec<u8>>, StoreFault> {
        self.inject()?;
        Ok(lock(&self.entries)
            .get(&(service.to_owned(), user.to_owned()))
            .cloned())
    }

    fn set(&self, service: &str, user: &str, value: &[u8]) -> Result<(), StoreFault> {
        self.inject()?;
        if let Some(limit) = self.max_value_len
            && value.len() > limit
        {
            return Err(StoreFault::TooLong {
                len: value.len(),
                limit,
            });
        }
        lock(&self.entries).insert((service.to_owned(), user.to_owned()), value.to_vec());
        Ok(())
    }

    fn delete(&self, service: &str, user: &str) -> Result<(), StoreFault> {
        self.inject()?;
        lock(&self.entries).remove(&(service.to_owned(), user.to_owned()));
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
