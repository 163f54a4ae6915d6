//! One remote MCP server Latchkey is the OAuth client of (PROTOCOL §6): its registration and
//! tokens in the keychain only (loaded at start without the network), the login (discovery,
//! registration, authorization through [`crate::mcp_oauth`]), refresh before expiry (at about
//! 80 % of the lifetime) and once when the server refuses the token, a step-up to the union of
//! scopes after `insufficient_scope`, and removal (RFC 7009 revocation, then every keychain entry
//! wiped). The proxy asks [`RemoteServer::credentials`] for the `access_token` it injects;
//! [`RemoteServer::run_refresher`] refreshes an idle server's token before it expires.

mod stored;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tracing::{info, instrument, warn};
use url::Url;

use crate::clock::unix_seconds;
use crate::config::ServerSettings;
use crate::credentials::CredentialValues;
use crate::mcp_oauth::authorize::{self, AuthorizationAttempt, AuthorizationRequest};
use crate::mcp_oauth::registration::{self, PreRegisteredClient, RegistrationInputs};
use crate::mcp_oauth::tokens::{self, TokenClient, TokenSet};
use crate::mcp_oauth::{self, Fetcher, McpOAuthError, Settings};
use crate::secret::Secret;
use crate::vault::{Vault, VaultError, VaultKey};

pub use stored::{StoredClient, StoredServerTokens};

use crate::Code;

/// The name of the one credential a server's route injects (`Authorization: Bearer <it>`).
pub const ACCESS_TOKEN: &str = "access_token";

/// How long the background refresher waits after a failed refresh before it tries again.
const REFRESH_RETRY: Duration = Duration::from_secs(30);

/// Where a server stands, as the window, the tray and `latchkey status` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Tokens are in hand (refreshed as needed).
    Ready,
    /// Nobody signed in yet, or the refresh token no longer works: `latchkey server login`.
    NeedsLogin,
    /// The server asked for more scopes (`insufficient_scope`): the next login asks for them.
    NeedsStepUp,
    /// A login is waiting for the browser.
    LoggingIn,
    /// The authorization server or the keychain failed; tokens may still work.
    Failing,
}

impl ServerState {
    /// The state's name (`ready`, `needs_login`, `needs_step_up`, `logging_in`, `failing`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::NeedsLogin => "needs_login",
            Self::NeedsStepUp => "needs_step_up",
            Self::LoggingIn => "logging_in",
            Self::Failing => "failing",
        }
    }
}

/// A snapshot of a server for views. No secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    /// The state.
    pub state: ServerState,
    /// The authorization server's issuer, once known.
    pub issuer: Option<String>,
    /// When the access token expires, unix seconds.
    pub expires_at: Option<i64>,
    /// The scopes granted (or asked for, when the server did not say).
    pub scopes: Vec<String>,
    /// What to do, when not ready.
    pub message: Option<String>,
}

/// Why a remote server operation failed. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// Discovery, registration, authorization or the token endpoint refused.
    #[error(transparent)]
    OAuth(#[from] McpOAuthError),
    /// The keychain failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// No usable tokens: the person must sign in to the server.
    #[error(
        "sign in to the MCP server `{server}`: run `latchkey server login {server}` or use Log in in Latchkey's window"
    )]
    LoginRequired {
        /// Server name.
        server: String,
    },
    /// The server wants more scopes than were granted.
    #[error(
        "the MCP server `{server}` needs more permissions ({}): run `latchkey server login {server}` to grant them",
        scopes.join(" ")
    )]
    StepUpRequired {
        /// Server name.
        server: String,
        /// The scopes the next login asks for.
        scopes: Vec<String>,
    },
}

impl RemoteError {
    /// Stable code: the engine's `mcp_oauth_*` codes, the vault's `keychain_*`, or
    /// `server_login_required` / `server_step_up_required`.
    pub fn code(&self) -> Code {
        match self {
            Self::OAuth(McpOAuthError::InvalidGrant) | Self::LoginRequired { .. } => {
                Code::ServerLoginRequired
            }
            Self::OAuth(e) => e.code(),
            Self::Vault(e) => e.code(),
            Self::StepUpRequired { .. } => Code::ServerStepUpRequired,
        }
    }
}

/// A login waiting for the browser: open [`authorize_url`](Self::authorize_url), then
/// [`RemoteServer::complete_login`]. Dropping it stops the loopback listener.
#[derive(Debug)]
pub struct PendingLogin {
    attempt: AuthorizationAttempt,
    client: StoredClient,
    scopes: Vec<String>,
}

impl PendingLogin {
    /// The page to open (its `http(s)` scheme was checked at discovery).
    pub fn authorize_url(&self) -> &Url {
        self.attempt.authorize_url()
    }

    /// The authorization server's issuer.
    pub fn issuer(&self) -> &str {
        &self.client.issuer
    }
}

struct Tokens {
    stored: StoredServerTokens,
    values: Arc<CredentialValues>,
}

#[derive(Default)]
struct Current {
    client: Option<StoredClient>,
    tokens: Option<Tokens>,
    /// Scopes the server asked for in an `insufficient_scope` answer, until a login grants them.
    step_up: Option<Vec<String>>,
    /// Why the last refresh or login failed (not a login problem), until one succeeds.
    failure: Option<String>,
    /// The refresh token stopped working: log in again.
    login_required: bool,
    logging_in: bool,
}

/// One remote MCP server. Cheap to share behind an `Arc`.
pub struct RemoteServer {
    settings: ServerSettings,
    vault: Vault,
    fetcher: Fetcher,
    current: Mutex<Current>,
    /// Single flight: one refresh at a time; waiters re-check after taking it.
    refreshing: tokio::sync::Mutex<()>,
    /// The secret of a pre-registered confidential client, until the first login keeps it in
    /// the keychain with the registration.
    client_secret: Option<Secret>,
    /// Latchkey's Client ID Metadata Document URL (`client_metadata_url`), when configured.
    metadata_document_url: Option<Url>,
    /// Bumped whenever the tokens change (login, refresh, removal): wakes the refresher.
    tokens_changed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for RemoteServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteServer")
            .field("name", &self.settings.name)
            .field("url", &self.settings.url.as_str())
            .finish_non_exhaustive()
    }
}

impl RemoteServer {
    /// A server with nothing loaded (see [`RemoteServer::restore`]).
    pub fn new(settings: ServerSettings, vault: Vault) -> Result<Self, RemoteError> {
        let fetcher = Fetcher::new(Settings {
            allow_insecure_loopback: settings.allow_insecure_loopback,
            ..Settings::default()
        })?;
        Ok(Self {
            settings,
            vault,
            fetcher,
            current: Mutex::new(Current::default()),
            refreshing: tokio::sync::Mutex::new(()),
            client_secret: None,
            metadata_document_url: None,
            tokens_changed: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The secret of the pre-registered client (`client_id` in the settings), given once when
    /// the server is added; the first login keeps it in the keychain, never in the file.
    #[must_use]
    pub fn with_client_secret(mut self, secret: Option<Secret>) -> Self {
        self.client_secret = secret;
        self
    }

    /// The HTTPS URL of Latchkey's Client ID Metadata Document, used as the client id where
    /// the authorization server fetches such documents (before Dynamic Client Registration).
    #[must_use]
    pub fn with_metadata_document_url(mut self, url: Option<Url>) -> Self {
        self.metadata_document_url = url;
        self
    }

    fn tokens_changed(&self) {
        self.tokens_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Its configuration.
    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.settings.name.as_str()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the registration and tokens from the keychain (no network).
    #[instrument(skip_all, fields(server = %self.settings.name), err)]
    pub async fn restore(&self) -> Result<(), RemoteError> {
        let client = stored::load_client(&self.vault, self.name()).await?;
        let tokens = stored::load_tokens(&self.vault, self.name()).await?;
        {
            let mut current = self.lock();
            current.client = client;
            current.tokens = tokens.map(Tokens::new);
        }
        self.tokens_changed();
        Ok(())
    }

    /// A snapshot for views.
    pub fn status(&self) -> ServerStatus {
        let current = self.lock();
        let name = self.name();
        let issuer = current.client.as_ref().map(|c| c.issuer.clone());
        let expires_at = current.tokens.as_ref().map(|t| t.stored.expires_at);
        let scopes = current
            .tokens
            .as_ref()
            .map(|t| t.stored.scopes.clone())
            .unwrap_or_default();
        let usable = current.tokens.as_ref().is_some_and(|t| {
            t.stored.expires_at > unix_seconds() || t.stored.refresh_token.is_some()
        });
        let (state, message) = if current.logging_in {
            (
                ServerState::LoggingIn,
                Some("waiting for the sign-in in the browser".to_owned()),
            )
        } else if let Some(scopes) = &current.step_up {
            let e = RemoteError::StepUpRequired {
                server: name.to_owned(),
                scopes: scopes.clone(),
            };
            (ServerState::NeedsStepUp, Some(e.to_string()))
        } else if current.login_required || !usable {
            let e = RemoteError::LoginRequired {
                server: name.to_owned(),
            };
            (ServerState::NeedsLogin, Some(e.to_string()))
        } else if let Some(failure) = &current.failure {
            (ServerState::Failing, Some(failure.clone()))
        } else {
            (ServerState::Ready, None)
        };
        ServerStatus {
            state,
            issuer,
            expires_at,
            scopes,
            message,
        }
    }

    /// The scopes a login asks for: the configured ones, else the server's; plus what was
    /// granted before and what a step-up asked for (the union, order kept).
    fn login_scopes(&self, discovered: Vec<String>) -> Vec<String> {
        let current = self.lock();
        let base = self.settings.scopes.clone().unwrap_or(discovered);
        let granted = current
            .tokens
            .as_ref()
            .map(|t| t.stored.scopes.clone())
            .unwrap_or_default();
        let step_up = current.step_up.clone().unwrap_or_default();
        let mut union = Vec::new();
        for scope in base.into_iter().chain(granted).chain(step_up) {
            if !union.contains(&scope) {
                union.push(scope);
            }
        }
        union
    }

    /// Starts a login: discovers the authorization server, registers (reusing a registration
    /// kept for the same issuer), and opens the loopback listener. Nothing is stored until
    /// [`RemoteServer::complete_login`] succeeds.
    #[instrument(skip_all, fields(server = %self.settings.name), err)]
    pub async fn begin_login(&self) -> Result<PendingLogin, RemoteError> {
        let discovery = mcp_oauth::discover(&self.fetcher, &self.settings.url).await?;
        let server = &discovery.authorization_server;
        let kept = self.lock().client.clone().filter(|c| {
            c.issuer == server.issuer
                && c.client_id_matches(&self.settings)
                && (c.method != "metadata_document"
                    || self
                        .metadata_document_url
                        .as_ref()
                        .is_some_and(|u| u.as_str() == c.client_id))
        });
        let client = match kept {
            Some(mut kept) => {
                kept.refresh_metadata(server, &discovery.resource.resource);
                kept
            }
            None => {
                let inputs = RegistrationInputs {
                    pre_registered: self.settings.client_id.clone().map(|client_id| {
                        PreRegisteredClient {
                            client_id,
                            client_secret: self.client_secret.clone(),
                        }
                    }),
                    metadata_document_url: self.metadata_document_url.clone(),
                    callback_port: self.settings.callback_port,
                };
                let registration = registration::register(&self.fetcher, server, &inputs).await?;
                StoredClient::new(server, &registration, &discovery.resource.resource)
            }
        };
        let scopes = self.login_scopes(discovery.scopes());
        let attempt = authorize::start(
            &self.fetcher,
            AuthorizationRequest {
                server,
                client: &client.registration(),
                resource: &client.resource,
                scopes: &scopes,
                callback_port: self.settings.callback_port.unwrap_or(0),
                state_lifetime: authorize::STATE_LIFETIME,
            },
        )
        .await?;
        self.lock().logging_in = true;
        Ok(PendingLogin {
            attempt,
            client,
            scopes,
        })
    }

    /// Marks a pending login as over without tokens (cancelled, failed or dropped).
    pub fn login_ended(&self) {
        self.lock().logging_in = false;
    }

    /// Waits for the callback, exchanges the code, and stores the registration and tokens in
    /// the keychain (registration first, so tokens never exist without their client).
    #[instrument(skip_all, fields(server = %self.settings.name), err)]
    pub async fn complete_login(&self, pending: PendingLogin) -> Result<(), RemoteError> {
        let PendingLogin {
            attempt,
            client,
            scopes,
        } = pending;
        let result = attempt.finish().await;
        let tokens = match result {
            Ok(tokens) => tokens,
            Err(e) => {
                self.login_ended();
                return Err(e.into());
            }
        };
        let stored = StoredServerTokens::from_set(&tokens, &scopes);
        let saved = async {
            stored::save_client(&self.vault, self.name(), &client).await?;
            stored::save_tokens(&self.vault, self.name(), &stored).await
        }
        .await;
        let mut current = self.lock();
        current.logging_in = false;
        saved?;
        current.client = Some(client);
        current.tokens = Some(Tokens::new(stored));
        current.step_up = None;
        current.failure = None;
        current.login_required = false;
        drop(current);
        self.tokens_changed();
        info!(server = %self.settings.name, "signed in to the MCP server");
        Ok(())
    }

    /// The `access_token` to inject, refreshed first at about 80 % of its lifetime. The same
    /// `Arc` is handed out while the token is unchanged.
    pub async fn credentials(&self) -> Result<Arc<CredentialValues>, RemoteError> {
        if let Some(values) = self.fresh_values()? {
            return Ok(values);
        }
        self.refresh(None).await
    }

    /// The current values when no refresh is due; an error when there is nothing to refresh.
    fn fresh_values(&self) -> Result<Option<Arc<CredentialValues>>, RemoteError> {
        let current = self.lock();
        if let Some(scopes) = &current.step_up {
            return Err(RemoteError::StepUpRequired {
                server: self.name().to_owned(),
                scopes: scopes.clone(),
            });
        }
        let login = || RemoteError::LoginRequired {
            server: self.name().to_owned(),
        };
        if current.login_required {
            return Err(login());
        }
        let tokens = current.tokens.as_ref().ok_or_else(login)?;
        if !tokens.stored.refresh_due(unix_seconds()) {
            return Ok(Some(tokens.values.clone()));
        }
        if tokens.stored.refresh_token.is_none() {
            // Nothing to refresh with: usable until it expires.
            return if tokens.stored.expires_at > unix_seconds() {
                Ok(Some(tokens.values.clone()))
            } else {
                Err(login())
            };
        }
        Ok(None)
    }

    /// The server refused `used` (a `401`): refresh once, unless another caller already did.
    pub async fn rejected(&self, used: &Arc<CredentialValues>) -> Result<(), RemoteError> {
        self.refresh(Some(used)).await.map(|_| ())
    }

    /// Refreshes (single flight). With `used`, only when those values are still current (else
    /// someone refreshed meanwhile); without, only when a refresh is still due.
    async fn refresh(
        &self,
        used: Option<&Arc<CredentialValues>>,
    ) -> Result<Arc<CredentialValues>, RemoteError> {
        let _flight = self.refreshing.lock().await;
        let (client, refresh_token, scopes) = {
            let current = self.lock();
            let login = || RemoteError::LoginRequired {
                server: self.name().to_owned(),
            };
            let tokens = current.tokens.as_ref().ok_or_else(login)?;
            let stale = match used {
                Some(used) => Arc::ptr_eq(used, &tokens.values),
                None => tokens.stored.refresh_due(unix_seconds()),
            };
            if !stale && !current.login_required {
                return Ok(tokens.values.clone());
            }
            let refresh_token = tokens.stored.refresh_token.clone().ok_or_else(login)?;
            let client = current.client.clone().ok_or_else(login)?;
            (client, refresh_token, tokens.stored.scopes.clone())
        };
        let server = client.authorization_server()?;
        let registration = client.registration();
        let target = TokenClient {
            server: &server,
            client: &registration,
            resource: &client.resource,
        };
        match tokens::refresh(&self.fetcher, &target, &refresh_token, None).await {
            Ok(set) => {
                let stored = StoredServerTokens::from_set(&set, &scopes);
                // The rotated refresh token is in the keychain before the access token is used.
                stored::save_tokens(&self.vault, self.name(), &stored).await?;
                let tokens = Tokens::new(stored);
                let values = tokens.values.clone();
                {
                    let mut current = self.lock();
                    current.tokens = Some(tokens);
                    current.failure = None;
                    current.login_required = false;
                }
                self.tokens_changed();
                info!(server = %self.settings.name, "refreshed the MCP server's token");
                Ok(values)
            }
            Err(McpOAuthError::InvalidGrant) => {
                warn!(server = %self.settings.name, "refresh token refused: sign in again");
                self.lock().login_required = true;
                Err(RemoteError::LoginRequired {
                    server: self.name().to_owned(),
                })
            }
            Err(e) => {
                warn!(server = %self.settings.name, code = %e.code(), "refresh failed");
                let mut current = self.lock();
                current.failure = Some(e.to_string());
                // A token that has not expired yet still serves while the server is down.
                match current.tokens.as_ref() {
                    Some(t) if t.stored.expires_at > unix_seconds() && used.is_none() => {
                        Ok(t.values.clone())
                    }
                    _ => Err(e.into()),
                }
            }
        }
    }

    /// The server refused a token that was just refreshed: only a new login helps.
    pub fn refused_after_refresh(&self) {
        warn!(server = %self.settings.name, "a refreshed token was refused: sign in again");
        self.lock().login_required = true;
    }

    /// The server answered `403` with `error="insufficient_scope"` asking for `wanted`: the
    /// next login asks for the union with what was granted. Returns the union.
    pub fn step_up(&self, wanted: &[String]) -> Vec<String> {
        let mut current = self.lock();
        let granted = current
            .tokens
            .as_ref()
            .map(|t| t.stored.scopes.clone())
            .unwrap_or_default();
        let mut union = current.step_up.take().unwrap_or(granted);
        for scope in wanted {
            if !union.contains(scope) {
                union.push(scope.clone());
            }
        }
        current.step_up = Some(union.clone());
        info!(server = %self.settings.name, scopes = %union.join(" "), "step-up needed");
        union
    }

    /// Revokes the tokens where the authorization server advertises RFC 7009 revocation, then
    /// deletes every keychain entry of the server. Returns a note when revocation was not done.
    #[instrument(skip_all, fields(server = %self.settings.name))]
    pub async fn remove(&self) -> Result<Option<String>, RemoteError> {
        let (client, tokens) = {
            let current = self.lock();
            (
                current.client.clone(),
                current.tokens.as_ref().map(|t| t.stored.clone()),
            )
        };
        let note = match (client, tokens) {
            (Some(client), Some(tokens)) => stored::revoke(&self.fetcher, &client, &tokens).await,
            _ => None,
        };
        if let Some(note) = &note {
            warn!(server = %self.settings.name, note = %note, "not revoked");
        }
        for key in [
            VaultKey::ServerTokens {
                server: self.name().to_owned(),
            },
            VaultKey::ServerClient {
                server: self.name().to_owned(),
            },
        ] {
            self.vault.delete(&key).await?;
        }
        *self.lock() = Current::default();
        self.tokens_changed();
        Ok(note)
    }

    /// How long until the next refresh is due, or `None` when there is nothing to refresh
    /// (no tokens, no refresh token, or a login or step-up is needed first).
    fn next_refresh_in(&self) -> Option<Duration> {
        let current = self.lock();
        if current.login_required || current.step_up.is_some() {
            return None;
        }
        let tokens = current.tokens.as_ref()?;
        tokens.stored.refresh_token.as_ref()?;
        let due = tokens.stored.refresh_at();
        Some(Duration::from_secs(
            u64::try_from(due.saturating_sub(unix_seconds())).unwrap_or(0),
        ))
    }

    /// Refreshes the token when it is due (at about 80 % of its lifetime) even when no request
    /// comes, so that an idle server stays signed in; runs until `shutdown`. It shares the
    /// single flight of the proxy's refreshes (a due refresh happens once, whoever asks), and a
    /// rotated refresh token is in the keychain before the new access token is used. A failed
    /// refresh is tried again after [`REFRESH_RETRY`] (or at once when the tokens change).
    pub async fn run_refresher(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let mut changes = self.tokens_changed.subscribe();
        tokio::pin!(shutdown);
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            changes.borrow_and_update();
            let due = self.next_refresh_in().map(|wait| {
                let at = tokio::time::Instant::now() + wait;
                retry_at.map_or(at, |retry| at.max(retry))
            });
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    retry_at = None;
                    continue;
                }
                () = sleep => {}
            }
            // A failure that leaves the unexpired token serving still answers `Ok`.
            let failed = match self.refresh(None).await {
                Ok(_) => self.lock().failure.is_some(),
                Err(e) => {
                    warn!(server = %self.settings.name, code = %e.code(), "background refresh failed");
                    true
                }
            };
            retry_at = failed.then(|| tokio::time::Instant::now() + REFRESH_RETRY);
        }
    }
}

impl Tokens {
    fn new(stored: StoredServerTokens) -> Self {
        let mut values = BTreeMap::new();
        values.insert(ACCESS_TOKEN.to_owned(), stored.access_token.clone());
        Self {
            stored,
            values: Arc::new(values),
        }
    }
}

impl StoredServerTokens {
    fn from_set(set: &TokenSet, asked: &[String]) -> Self {
        Self {
            access_token: set.access_token.clone(),
            refresh_token: set.refresh_token.clone(),
            expires_at: set.expires_at.unix_timestamp(),
            issued_at: set.issued_at.unix_timestamp(),
            scopes: set.scopes.clone().unwrap_or_else(|| asked.to_vec()),
            resource: set.resource.clone(),
        }
    }

    /// Past about 80 % of the lifetime.
    fn refresh_due(&self, now: i64) -> bool {
        now >= self.refresh_at()
    }

    /// When a refresh is due (unix seconds): at about 80 % of the lifetime.
    fn refresh_at(&self) -> i64 {
        let lifetime = (self.expires_at - self.issued_at).max(0);
        self.issued_at + lifetime * 4 / 5
    }
}

#[cfg(test)]
mod tests;
