//! In-memory cache of gateway credentials, keyed by account, then service.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::secret::Secret;

/// Credentials held in memory. `Debug` shows names only.
#[derive(Clone)]
pub struct CachedCredentials {
    /// Credential name → value.
    pub values: Arc<BTreeMap<String, Secret>>,
    /// When they were fetched (unix seconds).
    pub fetched_at: i64,
    /// When they stop being usable (unix seconds).
    pub expires_at: i64,
}

impl CachedCredentials {
    /// Fresh: before 80% of the TTL has passed.
    pub fn is_fresh(&self, now: i64) -> bool {
        let ttl = self.expires_at.saturating_sub(self.fetched_at).max(0);
        now < self.fetched_at.saturating_add(ttl.saturating_mul(4) / 5)
    }

    /// Usable: before expiry.
    pub fn is_usable(&self, now: i64) -> bool {
        now < self.expires_at
    }
}

impl fmt::Debug for CachedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedCredentials")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .field("fetched_at", &self.fetched_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A map keyed by configured names (accounts, services): nothing a request sends is ever
/// inserted, so the fast hash needs no protection against chosen keys.
type Names<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Thread-safe credential cache. No lock is held across an `.await` (all methods are sync).
///
/// Keyed by account, then service, so a lookup (every proxied request of a gateway service)
/// borrows both names: a `(String, String)` key had to be built, two allocations, to look up.
#[derive(Debug, Default)]
pub struct CredentialCache {
    entries: Mutex<Names<Names<CachedCredentials>>>,
}

impl CredentialCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Names<Names<CachedCredentials>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores (or replaces) an entry.
    pub fn insert(&self, account: &str, service: &str, credentials: CachedCredentials) {
        let mut entries = self.lock();
        let services = match entries.get_mut(account) {
            Some(services) => services,
            None => entries.entry(account.to_owned()).or_default(),
        };
        services.insert(service.to_owned(), credentials);
    }

    fn get_if(
        &self,
        account: &str,
        service: &str,
        keep: impl FnOnce(&CachedCredentials) -> bool,
    ) -> Option<CachedCredentials> {
        self.lock()
            .get(account)
            .and_then(|services| services.get(service))
            .filter(|c| keep(c))
            .cloned()
    }

    /// The entry if fresh (`now < fetched_at + 80% of TTL`).
    pub fn get_fresh(&self, account: &str, service: &str, now: i64) -> Option<CachedCredentials> {
        self.get_if(account, service, |c| c.is_fresh(now))
    }

    /// The entry if still usable (`now < expires_at`).
    pub fn get_usable(&self, account: &str, service: &str, now: i64) -> Option<CachedCredentials> {
        self.get_if(account, service, |c| c.is_usable(now))
    }

    /// Forgets one entry.
    pub fn remove(&self, account: &str, service: &str) {
        let mut entries = self.lock();
        if let Some(services) = entries.get_mut(account) {
            services.remove(service);
            if services.is_empty() {
                entries.remove(account);
            }
        }
    }

    /// Forgets every entry of `account`.
    pub fn clear_account(&self, account: &str) {
        self.lock().remove(account);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(fetched_at: i64, ttl: i64) -> CachedCredentials {
        let mut values = BTreeMap::new();
        values.insert("token".to_owned(), Secret::new("canary-cache-7781"));
        CachedCredentials {
            values: Arc::new(values),
            fetched_at,
            expires_at: fetched_at + ttl,
        }
    }

    #[test]
    fn fresh_until_eighty_percent_of_ttl_usable_until_expiry() {
        let cache = CredentialCache::new();
        cache.insert("work", "github", creds(1000, 100));
        assert!(
            cache.get_fresh("work", "github", 1079).is_some(),
            "79% is fresh"
        );
        assert!(
            cache.get_fresh("work", "github", 1080).is_none(),
            "80% is stale"
        );
        assert!(
            cache.get_usable("work", "github", 1099).is_some(),
            "before expiry is usable"
        );
        assert!(
            cache.get_usable("work", "github", 1100).is_none(),
            "expiry is the end"
        );
        assert!(
            cache.get_fresh("other", "github", 1000).is_none(),
            "keyed by account"
        );
    }

    #[test]
    fn remove_and_clear_account_forget_entries() {
        let cache = CredentialCache::new();
        cache.insert("work", "github", creds(0, 100));
        cache.insert("work", "jira", creds(0, 100));
        cache.insert("home", "github", creds(0, 100));
        assert_eq!(cache.len(), 3);
        cache.remove("work", "jira");
        assert!(cache.get_usable("work", "jira", 1).is_none());
        assert!(
            cache.get_usable("work", "github", 1).is_some(),
            "the account's other services stay"
        );
        assert_eq!(cache.len(), 2);
        cache.remove("work", "github");
        cache.remove("nobody", "github");
        assert_eq!(cache.len(), 1);
        cache.insert("work", "github", creds(0, 100));
        cache.clear_account("work");
        assert!(cache.get_usable("work", "github", 1).is_none());
        assert!(
            cache.get_usable("home", "github", 1).is_some(),
            "other accounts stay"
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn debug_shows_names_not_values() {
        let text = format!("{:?}", creds(0, 1));
        assert!(text.contains("token"));
        assert!(
            !text.contains("canary"),
            "Debug must not show values: {text}"
        );
    }
}
