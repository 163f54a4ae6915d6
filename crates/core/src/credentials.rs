//! Per-service credentials, wherever they come from: the Auth Gateway (fetched with the account's
//! access token, cached in memory for their TTL and persisted in the keychain), the account's own
//! access token, or a secret the user typed once. The proxy and `latchkey exec` ask here; nothing
//! on the request path touches the keychain once a credential is in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, instrument, warn};

use crate::Code;
use crate::config::{Config, CredentialSource, Service};
use crate::gateway::{CachedCredentials, CredentialCache, GatewayClient, GatewayError};
use crate::secret::Secret;
use crate::session::{Clock, Session, SessionError, SessionState};
use crate::vault::{StoredCredentials, Vault, VaultError, VaultKey};

/// Credential name → value, for one service.
pub type CredentialValues = BTreeMap<String, Secret>;

/// How fresh a service's credential is, for status output (never the values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    /// Fetched and within its refresh window.
    Fresh,
    /// Served from the cache while the gateway is unavailable, still within its TTL.
    Cached,
    /// Past its refresh point; the next request fetches it again.
    Stale,
    /// The gateway has none for this user, or names are missing.
    Missing,
    /// The user may not use this service.
    Forbidden,
    /// Not asked for yet.
    NotFetched,
    /// The last attempt failed.
    Error,
}

/// Status of one service's credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Its account.
    pub account: String,
    /// Upstream base URL.
    pub upstream: String,
    /// `gateway`, `access_token` or `manual`.
    #[serde(deserialize_with = "source_name")]
    #[cfg_attr(
        feature = "ts",
        ts(type = "\"gateway\" | \"access_token\" | \"manual\"")
    )]
    pub source: SourceName,
    /// Freshness.
    pub state: CredentialState,
    /// When the values were fetched (unix seconds).
    pub fetched_at: Option<i64>,
    /// When they stop being usable (unix seconds).
    pub expires_at: Option<i64>,
    /// The configured TTL in seconds.
    pub ttl_seconds: u64,
    /// What went wrong last, for a person.
    pub message: Option<String>,
}

/// A [`ServiceStatus::source`]: one of [`SOURCE_NAMES`]. (Named so that serde does not read the
/// field as borrowed from the input, which would tie a status read back to its buffer.)
pub type SourceName = &'static str;

/// The names [`ServiceStatus::source`] takes (those of [`CredentialSource::as_str`]).
const SOURCE_NAMES: &[&str] = &["gateway", "access_token", "manual"];

/// Reads [`ServiceStatus::source`] back (the `latchkey` command reads the running instance's
/// status): one of [`SOURCE_NAMES`].
fn source_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let name = String::deserialize(d)?;
    SOURCE_NAMES
        .iter()
        .find(|s| **s == name)
        .copied()
        .ok_or_else(|| serde::de::Error::unknown_variant(&name, SOURCE_NAMES))
}

/// Why a credential could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// No such service in the configuration.
    #[error("unknown service `{service}`: it is not in the configuration")]
    UnknownService {
        /// The name asked for.
        service: String,
    },
    /// The session is not usable.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The gateway refused or failed, and no usable cached value exists.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The keychain failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The gateway API key has not been entered yet.
    #[error(
        "the Auth Gateway API key is not set: run `latchkey gateway set-key` and paste the key your administrator gave you"
    )]
    ApiKeyMissing,
    /// A manual service's secret has not been entered yet.
    #[error("no secret stored for `{service}`: run `latchkey secret set {service}`")]
    ManualMissing {
        /// The service.
        service: String,
    },
    /// `secret set` on a service whose credentials come from elsewhere.
    #[error(
        "`{service}` does not take a typed-in secret: its source is not \"manual\" in the configuration"
    )]
    NotManual {
        /// The service.
        service: String,
    },
    /// The answer lacks names the service maps.
    #[error("credentials of `{service}` lack {}: add them in the Auth Gateway", names.join(", "))]
    Missing {
        /// The service.
        service: String,
        /// Names only, never values.
        names: Vec<String>,
    },
}

impl CredentialsError {
    /// Stable code for HTTP, IPC and exit codes.
    pub fn code(&self) -> Code {
        match self {
            Self::UnknownService { .. } => Code::UnknownService,
            Self::Session(e) => e.code(),
            Self::Gateway(e) => e.code(),
            Self::Vault(e) => e.code(),
            Self::ApiKeyMissing => Code::GatewayApiKeyMissing,
            Self::ManualMissing { .. } | Self::Missing { .. } => Code::CredentialsMissing,
            Self::NotManual { .. } => Code::InvalidInput,
        }
    }
}

/// Produces credentials for every configured service.
pub struct Credentials {
    config: Arc<Config>,
    sessions: BTreeMap<String, Arc<Session>>,
    gateway: Option<GatewayClient>,
    vault: Vault,
    cache: CredentialCache,
    clock: Clock,
    /// One gateway fetch per service at a time.
    fetch_locks: HashMap<String, Mutex<()>>,
    api_key: Mutex<Option<Secret>>,
    /// Keyed by configured service names only, so the fast hash needs no protection against
    /// chosen keys (every request of a manual service looks its values up here).
    manual: RwLock<HashMap<String, Arc<CredentialValues>, foldhash::fast::RandomState>>,
    statuses: RwLock<BTreeMap<String, ServiceStatus>>,
}

impl Credentials {
    /// Wires the pieces together; `sessions` is keyed by account name.
    pub fn new(
        config: Arc<Config>,
        sessions: BTreeMap<String, Arc<Session>>,
        gateway: Option<GatewayClient>,
        vault: Vault,
        clock: Clock,
    ) -> Self {
        let fetch_locks = config
            .services
            .iter()
            .map(|s| (s.name.to_string(), Mutex::new(())))
            .collect();
        let statuses = config
            .services
            .iter()
            .map(|s| (s.name.to_string(), initial_status(s)))
            .collect();
        Self {
            config,
            sessions,
            gateway,
            vault,
            cache: CredentialCache::new(),
            clock,
            fetch_locks,
            api_key: Mutex::new(None),
            manual: RwLock::new(HashMap::default()),
            statuses: RwLock::new(statuses),
        }
    }

    fn service(&self, name: &str) -> Result<&Service, CredentialsError> {
        self.config
            .service(name)
            .ok_or_else(|| CredentialsError::UnknownService {
                service: name.to_owned(),
            })
    }

    fn session(&self, service: &Service) -> Result<&Arc<Session>, CredentialsError> {
        self.sessions.get(service.account.as_str()).ok_or_else(|| {
            CredentialsError::Session(SessionError::LoginRequired {
                account: service.account.to_string(),
            })
        })
    }

    /// The status of every service, in configuration order.
    pub fn statuses(&self) -> Vec<ServiceStatus> {
        let now = (self.clock)();
        let map = self.statuses.read().unwrap_or_else(|p| p.into_inner());
        self.config
            .services
            .iter()
            .filter_map(|s| map.get(s.name.as_str()).cloned())
            .map(|mut st| {
                if st.state == CredentialState::Fresh && st.expires_at.is_some_and(|e| e <= now) {
                    st.state = CredentialState::Stale;
                }
                st
            })
            .collect()
    }

    fn set_status(&self, service: &Service, f: impl FnOnce(&mut ServiceStatus)) {
        let mut map = self.statuses.write().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(service.name.to_string())
            .or_insert_with(|| initial_status(service));
        f(entry);
    }

    /// Takes over what `previous` (the credentials of the configuration before a reload) holds
    /// in memory for every service whose definition, session and gateway did not change: cached gateway
    /// credentials with their status, manual secrets, the gateway API key. A configuration edit
    /// then neither asks the keychain again for them nor loses the ones only memory holds (a
    /// fetch whose keychain write failed).
    pub async fn carry_over(&self, previous: &Credentials) {
        let same_gateway = self.config.gateway == previous.config.gateway;
        if same_gateway && let Some(key) = previous.api_key.lock().await.clone() {
            *self.api_key.lock().await = Some(key);
        }
        for service in &self.config.services {
            let (account, name) = (service.account.as_str(), service.name.as_str());
            // The same session too: credentials fetched for another sign-in are not taken over.
            let same_session = match (self.sessions.get(account), previous.sessions.get(account)) {
                (Some(now), Some(before)) => Arc::ptr_eq(now, before),
                (None, None) => true,
                _ => false,
            };
            if previous.config.service(name) != Some(service) || !same_session {
                continue;
            }
            match service.source {
                CredentialSource::Gateway { .. } if same_gateway => {
                    if let Some(hit) = previous.cache.get_usable(account, name, (self.clock)()) {
                        self.cache.insert(account, name, hit);
                        if let Some(status) = previous
                            .statuses
                            .read()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(name)
                        {
                            let status = status.clone();
                            self.set_status(service, |st| *st = status);
                        }
                    }
                }
                CredentialSource::Manual => {
                    let held = previous
                        .manual
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(name)
                        .cloned();
                    if let Some(values) = held {
                        self.manual
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(name.to_owned(), values);
                        self.set_status(service, |st| st.state = CredentialState::Fresh);
                    }
                }
                _ => {}
            }
        }
    }

    /// Loads credentials persisted in the keychain into memory (at start, off the request path),
    /// so a restart does not need the gateway. Entries past their TTL are ignored, and so are
    /// services memory already holds (taken over at a reload).
    #[instrument(skip_all)]
    pub async fn warm_from_keychain(&self) {
        let now = (self.clock)();
        for service in &self.config.services {
            if !matches!(service.source, CredentialSource::Gateway { .. })
                || self
                    .cache
                    .get_usable(service.account.as_str(), service.name.as_str(), now)
                    .is_some()
            {
                continue;
            }
            match self
                .vault
                .load_credentials(service.account.as_str(), service.name.as_str())
                .await
            {
                Ok(Some(stored)) => {
                    let expires_at = stored.fetched_at + ttl_secs(stored.ttl_seconds);
                    if expires_at > now {
                        self.remember(
                            service,
                            stored.values,
                            stored.fetched_at,
                            expires_at,
                            CredentialState::Fresh,
                            None,
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(service = %service.name, code = %e.code(), "could not read cached credentials")
                }
            }
        }
    }

    fn remember(
        &self,
        service: &Service,
        values: CredentialValues,
        fetched_at: i64,
        expires_at: i64,
        state: CredentialState,
        message: Option<String>,
    ) -> Arc<CredentialValues> {
        let values = Arc::new(values);
        self.cache.insert(
            service.account.as_str(),
            service.name.as_str(),
            CachedCredentials {
                values: values.clone(),
                fetched_at,
                expires_at,
            },
        );
        self.set_status(service, |st| {
            st.state = state;
            st.fetched_at = Some(fetched_at);
            st.expires_at = Some(expires_at);
            st.message = message;
        });
        values
    }

    /// The credentials of `service`. Served from memory while fresh; otherwise fetched (one
    /// fetch per service at a time), falling back to a cached value while the gateway is down,
    /// never past its TTL.
    pub async fn get(&self, service_name: &str) -> Result<Arc<CredentialValues>, CredentialsError> {
        let service = self.service(service_name)?;
        // The slow paths (a refresh, a keychain read, a fetch) are boxed: in place, their
        // futures made this one large, and the proxy moves it on every request, when nearly
        // every request is answered from memory.
        match &service.source {
            CredentialSource::AccessToken => {
                let token = Box::pin(self.session(service)?.access_token()).await?;
                let mut values = CredentialValues::new();
                values.insert("access_token".to_owned(), token);
                Ok(Arc::new(values))
            }
            CredentialSource::Manual => match self.manual_in_memory(service) {
                Some(hit) => Ok(hit),
                None => Box::pin(self.manual_from_keychain(service)).await,
            },
            CredentialSource::Gateway { endpoint } => self.via_gateway(service, endpoint).await,
        }
    }

    async fn via_gateway(
        &self,
        service: &Service,
        endpoint: &str,
    ) -> Result<Arc<CredentialValues>, CredentialsError> {
        let session = self.session(service)?;
        // A logged-out or ended session serves nothing, even from cache. One that only failed to
        // renew (the provider unreachable, the keychain locked) is still the person's session:
        // its cached credentials serve within their TTL (PROTOCOL §2), as during a gateway outage.
        let state = session.state();
        if !(state.is_usable() || matches!(state, SessionState::Error { .. })) {
            return Err(SessionError::LoginRequired {
                account: service.account.to_string(),
            }
            .into());
        }
        let account = service.account.as_str();
        let name = service.name.as_str();
        let now = (self.clock)();
        if let Some(hit) = self.cache.get_fresh(account, name, now) {
            return Ok(hit.values);
        }
        Box::pin(self.refill(service, endpoint, session)).await
    }

    /// [`Self::via_gateway`] once the cache had nothing fresh: one fetch per service at a time,
    /// a cached value while the gateway is down, never past its TTL.
    async fn refill(
        &self,
        service: &Service,
        endpoint: &str,
        session: &Arc<Session>,
    ) -> Result<Arc<CredentialValues>, CredentialsError> {
        let account = service.account.as_str();
        let name = service.name.as_str();
        let lock = self
            .fetch_locks
            .get(name)
            .ok_or_else(|| CredentialsError::UnknownService {
                service: name.to_owned(),
            })?;
        let _one_fetch = lock.lock().await;
        let now = (self.clock)();
        if let Some(hit) = self.cache.get_fresh(account, name, now) {
            return Ok(hit.values);
        }
        match self.fetch(service, endpoint, session).await {
            Ok(values) => {
                let fetched_at = (self.clock)();
                let stored = StoredCredentials {
                    values: values.clone(),
                    fetched_at,
                    ttl_seconds: service.ttl.as_secs(),
                };
                if let Err(e) = self.vault.save_credentials(account, name, &stored).await {
                    warn!(
                        service = name,
                        code = %e.code(),
                        "credentials kept in memory only: keychain write failed"
                    );
                }
                info!(service = name, count = values.len(), "credentials fetched");
                Ok(self.remember(
                    service,
                    values,
                    fetched_at,
                    fetched_at + ttl_secs(service.ttl.as_secs()),
                    CredentialState::Fresh,
                    None,
                ))
            }
            Err(e) => {
                // A garbled answer is a gateway failure like a 5xx, not a refusal: it must not
                // take away a cached credential that is still within its TTL.
                let unavailable = matches!(
                    &e,
                    CredentialsError::Gateway(
                        GatewayError::Unavailable { .. }
                            | GatewayError::Timeout
                            | GatewayError::InvalidAnswer { .. }
                    )
                );
                if unavailable && let Some(hit) = self.cache.get_usable(account, name, now) {
                    warn!(
                        service = name,
                        "gateway unavailable; serving cached credentials"
                    );
                    let message = e.to_string();
                    self.set_status(service, |st| {
                        st.state = CredentialState::Cached;
                        st.message = Some(message);
                    });
                    return Ok(hit.values);
                }
                let state = match &e {
                    CredentialsError::Gateway(GatewayError::Forbidden { .. }) => {
                        CredentialState::Forbidden
                    }
                    CredentialsError::Gateway(GatewayError::NotConfigured { .. })
                    | CredentialsError::Missing { .. } => CredentialState::Missing,
                    _ => CredentialState::Error,
                };
                if !unavailable {
                    // The gateway answered with a refusal: a cached value must not outlive it.
                    self.cache.remove(account, name);
                }
                let message = e.to_string();
                self.set_status(service, |st| {
                    st.state = state;
                    st.message = Some(message);
                });
                Err(e)
            }
        }
    }

    async fn fetch(
        &self,
        service: &Service,
        endpoint: &str,
        session: &Session,
    ) -> Result<CredentialValues, CredentialsError> {
        let gateway = self
            .gateway
            .as_ref()
            .ok_or(CredentialsError::ApiKeyMissing)?;
        let api_key = self.api_key().await?;
        let required = service.required_credentials();
        let token = session.access_token().await?;
        let answer = match gateway.fetch(endpoint, &token, &api_key, &required).await {
            Err(GatewayError::Unauthorized) => {
                // PROTOCOL §2: refresh once, retry once, then the person must log in again.
                let token = session.refresh_after_rejection(&token).await?;
                match gateway.fetch(endpoint, &token, &api_key, &required).await {
                    Err(GatewayError::Unauthorized) => {
                        return Err(SessionError::LoginRequired {
                            account: service.account.to_string(),
                        }
                        .into());
                    }
                    other => other,
                }
            }
            other => other,
        };
        match answer {
            Ok(values) => Ok(values),
            Err(GatewayError::MissingCredentials { names }) => Err(CredentialsError::Missing {
                service: service.name.to_string(),
                names,
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn api_key(&self) -> Result<Secret, CredentialsError> {
        let mut slot = self.api_key.lock().await;
        if let Some(key) = slot.as_ref() {
            return Ok(key.clone());
        }
        let key = self
            .vault
            .get(&VaultKey::GatewayApiKey)
            .await?
            .ok_or(CredentialsError::ApiKeyMissing)?;
        *slot = Some(key.clone());
        Ok(key)
    }

    /// Stores the gateway API key in the keychain and uses it from now on.
    pub async fn set_api_key(&self, key: Secret) -> Result<(), CredentialsError> {
        self.vault.put(&VaultKey::GatewayApiKey, &key).await?;
        *self.api_key.lock().await = Some(key);
        Ok(())
    }

    /// A manual service's values when they are in memory (read from the keychain before).
    fn manual_in_memory(&self, service: &Service) -> Option<Arc<CredentialValues>> {
        self.manual
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service.name.as_str())
            .cloned()
    }

    /// A manual service's values read from the keychain (the first request after a start or a
    /// change), then kept in memory.
    async fn manual_from_keychain(
        &self,
        service: &Service,
    ) -> Result<Arc<CredentialValues>, CredentialsError> {
        let key = VaultKey::ManualSecret {
            service: service.name.to_string(),
        };
        let secret =
            self.vault
                .get(&key)
                .await?
                .ok_or_else(|| CredentialsError::ManualMissing {
                    service: service.name.to_string(),
                })?;
        let values = Arc::new(decode_manual(&secret, service)?);
        self.manual
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service.name.to_string(), values.clone());
        self.set_status(service, |st| st.state = CredentialState::Fresh);
        Ok(values)
    }

    /// Stores the secrets of a `source = "manual"` service in the keychain, checking first that
    /// every credential the service maps is present.
    pub async fn set_manual(
        &self,
        service_name: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<(), CredentialsError> {
        let service = self.service(service_name)?;
        if service.source != CredentialSource::Manual {
            return Err(CredentialsError::NotManual {
                service: service_name.to_owned(),
            });
        }
        let secret = encode_manual(values);
        let decoded = Arc::new(decode_manual(&secret, service)?);
        let key = VaultKey::ManualSecret {
            service: service.name.to_string(),
        };
        self.vault.put(&key, &secret).await?;
        self.manual
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service.name.to_string(), decoded);
        self.set_status(service, |st| st.state = CredentialState::Fresh);
        Ok(())
    }

    /// Forgets everything held in memory for `account` (after logout).
    pub fn forget_account(&self, account: &str) {
        self.cache.clear_account(account);
        for service in self
            .config
            .services
            .iter()
            .filter(|s| s.account.as_str() == account)
        {
            self.set_status(service, |st| *st = initial_status(service));
        }
    }
}

/// Encodes the named values of a manual service for the keychain.
fn encode_manual(values: &BTreeMap<String, String>) -> Secret {
    // A map of strings always serialises.
    Secret::new(serde_json::to_string(values).unwrap_or_default())
}

fn decode_manual(secret: &Secret, service: &Service) -> Result<CredentialValues, CredentialsError> {
    let map: BTreeMap<String, String> =
        serde_json::from_str(secret.expose()).map_err(|_| CredentialsError::ManualMissing {
            service: service.name.to_string(),
        })?;
    let values: CredentialValues = map.into_iter().map(|(k, v)| (k, Secret::new(v))).collect();
    let missing: Vec<String> = service
        .required_credentials()
        .into_iter()
        .filter(|n| !values.contains_key(n))
        .collect();
    if missing.is_empty() {
        Ok(values)
    } else {
        Err(CredentialsError::Missing {
            service: service.name.to_string(),
            names: missing,
        })
    }
}

fn ttl_secs(ttl: u64) -> i64 {
    i64::try_from(ttl).unwrap_or(i64::MAX / 2)
}

fn initial_status(service: &Service) -> ServiceStatus {
    ServiceStatus {
        name: service.name.to_string(),
        account: service.account.to_string(),
        upstream: service.upstream.to_string(),
        source: service.source.as_str(),
        state: CredentialState::NotFetched,
        fetched_at: None,
        expires_at: None,
        ttl_seconds: service.ttl.as_secs(),
        message: None,
    }
}
