//! One session per account: log in, restore from the keychain, refresh before expiry (exactly one
//! refresh in flight however many callers wait), log out. State changes are broadcast on a
//! `watch` channel for the tray, the UI and the proxy.
//!
//! A provider that grants no refresh token (no `offline_access`) gives a session that cannot be
//! renewed: it says so up front (`renewable: false`), serves until the access token expires, and
//! then ends with a reason that says why.

mod state;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tracing::{debug, info, instrument, warn};
use url::Url;

use crate::config::Account;
use crate::login::{
    self, ClientAuth, ClientAuthMethod, LoginError, Provider, ProviderSettings, TokenHint,
    TokenSet, UserInfo,
};
use crate::secret::Secret;
use crate::vault::{StoredTokens, StoredUser, Vault, VaultError};

pub use state::{
    MIN_REFRESH_GAP, MIN_REFRESH_INTERVAL_SECONDS, RefreshFailure, SessionState, refresh_due_at,
    refresher_wait,
};

use crate::Code;

/// Why a session without a refresh token ended.
pub const NOT_RENEWABLE_REASON: &str = "the identity provider issued no refresh token, so the session could not be renewed; log in again";

/// Refresh at this fraction of the access token's lifetime (PROTOCOL §1).
pub const REFRESH_FRACTION: f64 = 0.8;
/// …and at least this many seconds before it expires.
pub const REFRESH_MARGIN_SECONDS: i64 = 10;

/// The current time in unix seconds; injectable so tests can move it.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(crate::clock::unix_seconds)
}

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Nobody is logged in, or the session ended.
    #[error(
        "{account}: not logged in — run `latchkey login --account {account}` or use Log in in the tray"
    )]
    LoginRequired {
        /// The account.
        account: String,
    },
    /// The provider granted no refresh token, so this session cannot be renewed before it ends.
    #[error(
        "{account}: this session cannot be renewed (the identity provider issued no refresh token); it ends when its access token expires — then log in again"
    )]
    NotRenewable {
        /// The account.
        account: String,
    },
    /// The account's client authentication needs a secret that is not in the keychain.
    #[error(
        "{account}: the identity provider requires a client secret ({method}) and none is stored — run `latchkey account set-secret --account {account}` and paste it on stdin"
    )]
    ClientSecretMissing {
        /// The account.
        account: String,
        /// The method that needs it.
        method: &'static str,
    },
    /// A login is already waiting for the browser.
    #[error(
        "a login for {account} is already in progress: finish it in the browser window, or cancel it"
    )]
    LoginInProgress {
        /// The account.
        account: String,
    },
    /// The identity provider refused or could not be reached.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// The keychain failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

impl SessionError {
    /// Stable code for IPC, JSON and exit codes.
    pub fn code(&self) -> Code {
        match self {
            Self::LoginRequired { .. } => Code::LoginRequired,
            Self::NotRenewable { .. } => Code::SessionNotRenewable,
            Self::ClientSecretMissing { .. } => Code::ClientSecretMissing,
            Self::LoginInProgress { .. } => Code::LoginInProgress,
            Self::Login(e) => e.code(),
            Self::Vault(e) => e.code(),
        }
    }
}

/// What logout did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutReport {
    /// The refresh token (or, for a session without one, the access token) was revoked at the
    /// identity provider.
    pub revoked: bool,
    /// Why revocation did not happen, when it did not.
    pub revocation_note: Option<String>,
}

/// Tokens held in memory while a session is active.
struct Live {
    access_token: Secret,
    refresh_token: Option<Secret>,
    id_token: Option<Secret>,
    expires_at: i64,
    issued_at: i64,
    user: UserInfo,
    /// The `iss` of the login's id token (unknown for sessions stored by older versions).
    issuer: Option<String>,
    /// Bumped on every change, so a waiter can tell whether someone else refreshed.
    generation: u64,
}

impl Live {
    fn to_stored(&self) -> StoredTokens {
        StoredTokens {
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.clone(),
            id_token: self.id_token.clone(),
            expires_at: self.expires_at,
            issued_at: self.issued_at,
            user: StoredUser {
                subject: self.user.subject.clone(),
                name: self.user.name.clone(),
                email: self.user.email.clone(),
            },
            issuer: self.issuer.clone(),
        }
    }

    /// A refresh token is held, so the session can be renewed.
    fn renewable(&self) -> bool {
        self.refresh_token.is_some()
    }

    fn from_stored(t: StoredTokens, generation: u64) -> Self {
        Self {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            id_token: t.id_token,
            expires_at: t.expires_at,
            issued_at: t.issued_at,
            user: UserInfo {
                subject: t.user.subject,
                name: t.user.name,
                email: t.user.email,
            },
            issuer: t.issuer,
            generation,
        }
    }
}

/// A login waiting for its callback: show [`PendingLogin::authorize_url`] to the person, then
/// pass it to [`Session::complete_login`]. Dropping it cancels the login.
pub struct PendingLogin {
    attempt: login::LoginAttempt,
    _guard: LoginGuard,
}

impl PendingLogin {
    /// The identity provider page to open (webview or system browser).
    pub fn authorize_url(&self) -> &Url {
        self.attempt.authorize_url()
    }

    /// The provider's token endpoint, which Latchkey must reach to finish the login.
    pub fn token_endpoint(&self) -> &Url {
        self.attempt.token_endpoint()
    }
}

/// Puts the session back to its state before the login if the login does not complete.
struct LoginGuard {
    state: watch::Sender<SessionState>,
    previous: Option<SessionState>,
}

impl Drop for LoginGuard {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            self.state.send_if_modified(|s| {
                if matches!(s, SessionState::LoggingIn) {
                    *s = previous;
                    true
                } else {
                    false
                }
            });
        }
    }
}

/// One account's session.
pub struct Session {
    account: Account,
    vault: Vault,
    http: reqwest::Client,
    clock: Clock,
    timeout: Duration,
    provider: Mutex<Option<Provider>>,
    live: RwLock<Option<Arc<Live>>>,
    state: watch::Sender<SessionState>,
    refresh_lock: Mutex<()>,
    /// Refreshes that ended with the provider unreachable or silent, and the last such error:
    /// callers queued behind one get its answer instead of each waiting out another timeout.
    outages: std::sync::atomic::AtomicU64,
    last_outage: std::sync::Mutex<Option<(u64, LoginError)>>,
    /// The run of failed refreshes since the tokens held were last replaced (none while every
    /// refresh succeeds): cleared whenever the session's tokens change.
    refresh_failure: std::sync::Mutex<Option<RefreshFailure>>,
    /// A refresh whose callers stopped waiting (the provider silent past [`Session::timeout`])
    /// while its request goes on, with the generation it refreshes. A provider that rotates
    /// refresh tokens may still answer it: sending the same refresh token again would be taken
    /// as a replay and end the whole session (reuse detection), so the next refresh of that
    /// generation waits for this one instead.
    inflight: std::sync::Mutex<Option<InFlight>>,
}

/// How long a refresh's request may go on after its callers stopped waiting.
const INFLIGHT_LIMIT: Duration = Duration::from_secs(180);

/// A refresh request that outlived its callers' wait ([`Session::inflight`]).
struct InFlight {
    generation: u64,
    answer: tokio::task::JoinHandle<Result<TokenSet, LoginError>>,
}

impl Drop for InFlight {
    /// A refresh nobody will read (logged out, logged in again) is stopped, not left running.
    fn drop(&mut self) {
        self.answer.abort();
    }
}

/// A copy of an outage error (`LoginError` holds no secret but is not `Clone`).
fn outage_copy(e: &LoginError) -> Option<LoginError> {
    match e {
        LoginError::Unreachable { reason } => Some(LoginError::Unreachable {
            reason: reason.clone(),
        }),
        LoginError::Timeout(d) => Some(LoginError::Timeout(*d)),
        _ => None,
    }
}

impl Session {
    /// A logged-out session for `account`. Call [`Session::restore`] to pick up stored tokens.
    pub fn new(account: Account, vault: Vault, http: reqwest::Client, clock: Clock) -> Self {
        let (state, _) = watch::channel(SessionState::LoggedOut);
        Self {
            account,
            vault,
            http,
            clock,
            timeout: Duration::from_secs(15),
            provider: Mutex::new(None),
            live: RwLock::new(None),
            state,
            refresh_lock: Mutex::new(()),
            outages: std::sync::atomic::AtomicU64::new(0),
            last_outage: std::sync::Mutex::new(None),
            refresh_failure: std::sync::Mutex::new(None),
            inflight: std::sync::Mutex::new(None),
        }
    }

    /// The account this session belongs to.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn subscribe(&self) -> watch::Receiver<SessionState> {
        self.state.subscribe()
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn current(&self) -> Option<Arc<Live>> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc: the value is intact.
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_live(&self, live: Option<Arc<Live>>) {
        let generation = live.as_ref().map(|l| l.generation);
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = live;
        // New tokens (a refresh, a login) or none (logout, an ended session): the failures were
        // about the tokens replaced, and a refresh still going for them is stopped.
        *self.lock_refresh_failure() = None;
        let mut inflight = self.lock_inflight();
        if inflight
            .as_ref()
            .is_some_and(|f| Some(f.generation) != generation)
        {
            *inflight = None;
        }
    }

    fn lock_refresh_failure(&self) -> std::sync::MutexGuard<'_, Option<RefreshFailure>> {
        // A poisoned lock only means a panic elsewhere while replacing the value: it is intact.
        self.refresh_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The run of refreshes that failed while the session was kept, until one succeeds or the
    /// session ends: whether requests still work is the state's `expires_at`.
    pub fn refresh_failure(&self) -> Option<RefreshFailure> {
        self.lock_refresh_failure().clone()
    }

    /// Counts a failed refresh of the session held (before the state that says so is published).
    fn note_refresh_failure(&self, e: &SessionError) {
        let mut failure = self.lock_refresh_failure();
        *failure = Some(RefreshFailure::after(
            failure.as_ref(),
            e.code(),
            e.to_string(),
            self.now(),
        ));
    }

    fn next_generation(&self) -> u64 {
        self.current().map_or(1, |l| l.generation + 1)
    }

    fn publish_active(&self, live: &Live) {
        self.state.send_replace(SessionState::Active {
            user: live.user.clone(),
            expires_at: live.expires_at,
            issued_at: live.issued_at,
            renewable: live.renewable(),
        });
    }

    /// Picks up tokens stored in the keychain, without any network call. A session whose access
    /// token expired but that has a refresh token comes back as active and refreshes on first use;
    /// one without a refresh token comes back only until its access token expires. A session
    /// logged in with another issuer than the account's is not restored (its refresh token must
    /// never reach another provider).
    #[instrument(skip_all, fields(account = %self.account.name), err)]
    pub async fn restore(&self) -> Result<SessionState, SessionError> {
        match self.vault.load_tokens(self.account.name.as_str()).await {
            Ok(Some(tokens)) => {
                let live = Live::from_stored(tokens, self.next_generation());
                let usable = live.expires_at > self.now() || live.renewable();
                let same_issuer = live.issuer.as_deref().is_none_or(|iss| {
                    iss.trim_end_matches('/') == self.account.issuer.as_str().trim_end_matches('/')
                });
                if !same_issuer {
                    // Never send this session's refresh token to another issuer.
                    self.state.send_replace(SessionState::Expired {
                        user: Some(live.user.clone()),
                        reason: "the account's issuer changed since this login; log in again"
                            .into(),
                    });
                } else if usable {
                    let live = Arc::new(live);
                    self.set_live(Some(live.clone()));
                    self.publish_active(&live);
                    info!("session restored from keychain");
                } else {
                    self.state.send_replace(SessionState::Expired {
                        user: Some(live.user.clone()),
                        reason: NOT_RENEWABLE_REASON.into(),
                    });
                }
            }
            Ok(None) => {
                self.state.send_replace(SessionState::LoggedOut);
            }
            Err(e) => {
                self.state.send_replace(SessionState::Error {
                    code: e.code(),
                    message: e.to_string(),
                });
                return Err(e.into());
            }
        }
        Ok(self.state())
    }

    /// The identity provider, discovered once and cached.
    async fn provider(&self) -> Result<Provider, SessionError> {
        let mut slot = self.provider.lock().await;
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let settings = ProviderSettings {
            issuer: self.account.issuer.clone(),
            client_id: self.account.client_id.clone(),
            scopes: self.account.scopes.clone(),
            audience: self.account.audience.clone(),
            validate_access_token: self.account.validate_access_token,
            auth_method: self.account.token_endpoint_auth_method,
            audience_parameter: self.account.audience_parameter,
            allow_insecure_http: self.account.allow_insecure_http,
            timeout: self.timeout,
        };
        let provider = Provider::discover(self.http.clone(), settings).await?;
        *slot = Some(provider.clone());
        Ok(provider)
    }

    /// How the client authenticates for the next request: the client secret is read from the
    /// keychain each time (so `latchkey account set-secret` takes effect at once), unless the
    /// account is explicitly a public client.
    async fn client_auth(&self, provider: &Provider) -> Result<ClientAuth, SessionError> {
        let secret = if self.account.token_endpoint_auth_method == Some(ClientAuthMethod::None) {
            None
        } else {
            self.vault
                .load_client_secret(self.account.name.as_str())
                .await?
        };
        provider.client_auth(secret).map_err(|e| match e {
            LoginError::ClientSecretMissing { method } => SessionError::ClientSecretMissing {
                account: self.account.name.to_string(),
                method,
            },
            other => other.into(),
        })
    }

    /// Starts a login: discovers the identity provider, opens the loopback callback listener and
    /// returns the authorization URL to show. The state is `logging_in` until the returned value
    /// completes or is dropped.
    #[instrument(skip_all, fields(account = %self.account.name), err)]
    pub async fn begin_login(&self) -> Result<PendingLogin, SessionError> {
        let previous = self.state();
        if matches!(previous, SessionState::LoggingIn) {
            return Err(SessionError::LoginInProgress {
                account: self.account.name.to_string(),
            });
        }
        let provider = self.provider().await?;
        // A missing client secret is reported before the person signs in, not after.
        let auth = self.client_auth(&provider).await?;
        let attempt = login::start(&provider, self.account.callback_port, auth).await?;
        self.state.send_replace(SessionState::LoggingIn);
        Ok(PendingLogin {
            attempt,
            _guard: LoginGuard {
                state: self.state.clone(),
                previous: Some(previous),
            },
        })
    }

    /// Waits for the callback of `pending`, stores the tokens in the keychain, and activates the
    /// session. On failure the session returns to where it was before the login.
    #[instrument(skip_all, fields(account = %self.account.name), err)]
    pub async fn complete_login(&self, pending: PendingLogin) -> Result<UserInfo, SessionError> {
        let PendingLogin { attempt, _guard } = pending;
        let tokens = attempt.finish().await?;
        let Some(user) = tokens.user.clone() else {
            // `finish` requires an id token; this is defence in depth.
            return Err(LoginError::Unsupported("it returned no id token".to_owned()).into());
        };
        let live = self.live_from(tokens, user, None);
        self.vault
            .save_tokens(self.account.name.as_str(), &live.to_stored())
            .await?;
        let user = live.user.clone();
        // Memory first, then the broadcast: whoever wakes on the new state (the background
        // refresher) must find the new session, not the one before the login.
        let live = Arc::new(live);
        self.set_live(Some(live.clone()));
        self.publish_active(&live);
        info!(subject = %user.subject, "logged in");
        Ok(user)
    }

    /// The live session after a login (`previous` is `None`) or a refresh: a refresh answer
    /// without a refresh token keeps the previous one (non-rotating providers), one without an
    /// id token keeps the previous id token; `user` is the id token's, or the session's.
    fn live_from(&self, tokens: TokenSet, user: UserInfo, previous: Option<&Live>) -> Live {
        Live {
            access_token: tokens.access_token,
            refresh_token: tokens
                .refresh_token
                .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
            id_token: tokens
                .id_token
                .or_else(|| previous.and_then(|p| p.id_token.clone())),
            expires_at: tokens.expires_at.unix_timestamp(),
            issued_at: tokens.issued_at.unix_timestamp(),
            user,
            issuer: previous
                .and_then(|p| p.issuer.clone())
                .or(Some(tokens.issuer)),
            generation: self.next_generation(),
        }
    }

    /// A valid access token, refreshed first when it is past its refresh point. Concurrent
    /// callers share one refresh.
    pub async fn access_token(&self) -> Result<Secret, SessionError> {
        let live = self.current().ok_or_else(|| self.login_required())?;
        if !live.renewable() {
            // Nothing to refresh with: serve until expiry, then end with the reason.
            if self.now() < live.expires_at {
                return Ok(live.access_token.clone());
            }
            return Err(self.expire_unrenewable(&live).await);
        }
        let due = refresh_due_at(
            live.issued_at,
            live.expires_at,
            REFRESH_FRACTION,
            REFRESH_MARGIN_SECONDS,
        );
        if self.now() < due {
            return Ok(live.access_token.clone());
        }
        let refreshed = self.refresh_from(live.generation).await;
        match refreshed {
            Ok(live) => Ok(live.access_token.clone()),
            // The refresh failed but the token we hold has not expired: keep serving with it. (A
            // session the provider ended never gets here: `refresh_from` ends it and answers
            // `LoginRequired`, and `current()` is empty by then.)
            Err(ref e @ (SessionError::Login(_) | SessionError::ClientSecretMissing { .. })) => {
                if let Some(current) = self.current().filter(|l| l.expires_at > self.now()) {
                    warn!(code = %e.code(), "refresh failed; current token still valid");
                    Ok(current.access_token.clone())
                } else {
                    Err(refreshed.err().unwrap_or_else(|| self.login_required()))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Refreshes now, whatever the token's age (the tray's "Refresh now"). A session without a
    /// refresh token is left as it is: [`SessionError::NotRenewable`].
    pub async fn refresh_now(&self) -> Result<(), SessionError> {
        let live = self.current().ok_or_else(|| self.login_required())?;
        if !live.renewable() {
            return Err(SessionError::NotRenewable {
                account: self.account.name.to_string(),
            });
        }
        self.refresh_from(live.generation).await.map(|_| ())
    }

    /// The gateway answered 401 to `rejected`: refresh unless someone already replaced it. A
    /// session that cannot be renewed has no better token: log in again.
    pub async fn refresh_after_rejection(&self, rejected: &Secret) -> Result<Secret, SessionError> {
        let live = self.current().ok_or_else(|| self.login_required())?;
        if !live.access_token.ct_eq(rejected) {
            return Ok(live.access_token.clone());
        }
        if !live.renewable() {
            return Err(self.login_required());
        }
        Ok(self
            .refresh_from(live.generation)
            .await?
            .access_token
            .clone())
    }

    /// Single-flight refresh: the first caller refreshes; the others wait on the lock and then
    /// find a newer generation.
    async fn refresh_from(&self, seen_generation: u64) -> Result<Arc<Live>, SessionError> {
        let outages_before = self.outages.load(std::sync::atomic::Ordering::Acquire);
        let _one_at_a_time = self.refresh_lock.lock().await;
        let live = self.current().ok_or_else(|| self.login_required())?;
        if live.generation != seen_generation {
            return Ok(live);
        }
        // The refresh this caller queued behind found the provider down: same answer, now.
        if self.outages.load(std::sync::atomic::Ordering::Acquire) != outages_before
            && let Some(e) = self
                .last_outage
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .filter(|(generation, _)| *generation == live.generation)
                .and_then(|(_, e)| outage_copy(e))
        {
            return Err(e.into());
        }
        let Some(refresh_token) = live.refresh_token.clone() else {
            // Callers check first; a session without a refresh token is never "refreshed" away.
            return Err(SessionError::NotRenewable {
                account: self.account.name.to_string(),
            });
        };
        self.state.send_replace(SessionState::Refreshing {
            user: live.user.clone(),
            expires_at: live.expires_at,
        });
        let result = async {
            let provider = self.provider().await?;
            // OIDC Core §12.2: the refreshed session must stay with the original issuer.
            if let Some(original) = &live.issuer
                && original != &provider.metadata().issuer
            {
                return Err(SessionError::Login(LoginError::IssuerChanged));
            }
            let auth = self.client_auth(&provider).await?;
            Ok::<_, SessionError>(
                self.refresh_request(&provider, &live, &refresh_token, &auth)
                    .await?,
            )
        }
        .await;
        match result {
            Ok(tokens) => {
                let user = tokens.user.clone().unwrap_or_else(|| live.user.clone());
                let next = self.live_from(tokens, user, Some(&live));
                // The rotated refresh token reaches the keychain before the new access token is
                // handed to anyone; if the keychain fails, nothing new is used.
                if let Err(e) = self
                    .vault
                    .save_tokens(self.account.name.as_str(), &next.to_stored())
                    .await
                {
                    let e = SessionError::from(e);
                    self.note_refresh_failure(&e);
                    self.state.send_replace(SessionState::Error {
                        code: e.code(),
                        message: e.to_string(),
                    });
                    return Err(e);
                }
                let next = Arc::new(next);
                self.set_live(Some(next.clone()));
                self.publish_active(&next);
                info!(expires_at = next.expires_at, "session refreshed");
                Ok(next)
            }
            Err(SessionError::Login(LoginError::InvalidGrant)) => Err(self
                .end_session(
                    &live,
                    "the identity provider ended the session; log in again",
                )
                .await),
            Err(SessionError::Login(
                e @ (LoginError::SubjectChanged | LoginError::IssuerChanged),
            )) => Err(self.end_session(&live, &e.to_string()).await),
            Err(e) => {
                if let SessionError::Login(login) = &e
                    && let Some(copy) = outage_copy(login)
                {
                    *self.last_outage.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((live.generation, copy));
                    self.outages
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                self.note_refresh_failure(&e);
                if live.expires_at > self.now() {
                    self.publish_active(&live);
                } else {
                    self.state.send_replace(SessionState::Error {
                        code: e.code(),
                        message: e.to_string(),
                    });
                }
                Err(e)
            }
        }
    }

    /// Sends the refresh of `live` (or joins the one already sent for it, whose callers stopped
    /// waiting) and waits up to the session's timeout for its answer. A request still
    /// unanswered then is kept going (up to [`INFLIGHT_LIMIT`]) for the next refresh to read.
    async fn refresh_request(
        &self,
        provider: &Provider,
        live: &Live,
        refresh_token: &Secret,
        auth: &ClientAuth,
    ) -> Result<TokenSet, LoginError> {
        let sent_before = self
            .lock_inflight()
            .take()
            .filter(|f| f.generation == live.generation);
        if let Some(inflight) = sent_before {
            debug!("waiting for the refresh sent before, not sending the refresh token again");
            match self.wait_for(inflight).await {
                // It failed without an answer (the provider unreachable, the connection lost):
                // nothing was refreshed that we know of, so a new request is the only way on.
                Some(Err(e)) if outage_copy(&e).is_some() => {}
                Some(answer) => return answer,
                None => return Err(LoginError::Timeout(self.timeout)),
            }
        }
        let (provider, token, auth, subject) = (
            provider.clone(),
            refresh_token.clone(),
            auth.clone(),
            live.user.subject.clone(),
        );
        let sent = InFlight {
            generation: live.generation,
            answer: tokio::spawn(async move {
                provider
                    .refresh_within(&token, &auth, &subject, INFLIGHT_LIMIT)
                    .await
            }),
        };
        self.wait_for(sent)
            .await
            .unwrap_or(Err(LoginError::Timeout(self.timeout)))
    }

    /// Waits up to the session's timeout for `inflight`'s answer. `None`: still unanswered, and
    /// kept (up to [`INFLIGHT_LIMIT`]) for the next refresh to read.
    async fn wait_for(&self, mut inflight: InFlight) -> Option<Result<TokenSet, LoginError>> {
        match tokio::time::timeout(self.timeout, &mut inflight.answer).await {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(join)) => Some(Err(LoginError::Unreachable {
                reason: format!("the refresh stopped: {join}"),
            })),
            Err(_) => {
                *self.lock_inflight() = Some(inflight);
                None
            }
        }
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, Option<InFlight>> {
        // A poisoned lock only means a panic elsewhere while replacing the value: it is intact.
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends a session without a refresh token whose access token expired.
    async fn expire_unrenewable(&self, live: &Live) -> SessionError {
        let _one_at_a_time = self.refresh_lock.lock().await;
        // Someone may have logged in again meanwhile: only end the session we looked at.
        if self
            .current()
            .is_some_and(|current| current.generation == live.generation)
        {
            info!("session without refresh token expired");
            return self.end_session(live, NOT_RENEWABLE_REASON).await;
        }
        self.login_required()
    }

    /// Ends a session the identity provider no longer honours: tokens leave memory and keychain.
    async fn end_session(&self, live: &Live, reason: &str) -> SessionError {
        self.set_live(None);
        if let Err(e) = self.vault.wipe_account(self.account.name.as_str()).await {
            warn!(
                code = %e.code(),
                "could not delete ended session from keychain"
            );
        }
        self.state.send_replace(SessionState::Expired {
            user: Some(live.user.clone()),
            reason: reason.into(),
        });
        self.login_required()
    }

    fn login_required(&self) -> SessionError {
        SessionError::LoginRequired {
            account: self.account.name.to_string(),
        }
    }

    /// Revokes the refresh and access tokens where the identity provider supports it, then
    /// deletes every keychain entry of the account. Local data is wiped even when revocation
    /// fails (the report says so).
    #[instrument(skip_all, fields(account = %self.account.name), err)]
    pub async fn logout(&self) -> Result<LogoutReport, SessionError> {
        let _no_refresh_meanwhile = self.refresh_lock.lock().await;
        let live = self.current();
        let mut report = LogoutReport {
            revoked: false,
            revocation_note: None,
        };
        if let Some(live) = &live {
            match self.revoke(live).await {
                Ok(true) => report.revoked = true,
                Ok(false) => {
                    report.revocation_note =
                        Some("the identity provider does not revoke these tokens".into());
                }
                Err(e) => {
                    warn!(
                        code = %e.code(),
                        "revocation failed; wiping local tokens anyway"
                    );
                    report.revocation_note = Some(e.to_string());
                }
            }
        }
        self.set_live(None);
        self.vault.wipe_account(self.account.name.as_str()).await?;
        self.state.send_replace(SessionState::LoggedOut);
        info!(revoked = report.revoked, "logged out");
        Ok(report)
    }

    async fn revoke(&self, live: &Live) -> Result<bool, SessionError> {
        let provider = self.provider().await?;
        let auth = self.client_auth(&provider).await?;
        let mut revoked = false;
        if let Some(refresh) = &live.refresh_token {
            revoked = provider
                .revoke(refresh, TokenHint::RefreshToken, &auth)
                .await?;
        }
        if revoked || live.refresh_token.is_none() {
            // The access token too, where supported; a failure here changes nothing for the user.
            // A provider that declines (JWT access tokens) answers Ok(false): the token lapses
            // at its `exp`, minutes away. Without a refresh token, the access token is what the
            // session holds at the provider, so its revocation is the report's.
            match provider
                .revoke(&live.access_token, TokenHint::AccessToken, &auth)
                .await
            {
                Ok(done) if live.refresh_token.is_none() => revoked = done,
                Ok(_) => {}
                Err(e) => warn!(code = %e.code(), "access token revocation failed"),
            }
        }
        Ok(revoked)
    }

    /// Seconds until the next refresh is due, when a renewable session is active.
    pub fn seconds_until_refresh(&self) -> Option<i64> {
        let live = self.current().filter(|l| l.renewable())?;
        let due = refresh_due_at(
            live.issued_at,
            live.expires_at,
            REFRESH_FRACTION,
            REFRESH_MARGIN_SECONDS,
        );
        Some((due - self.now()).max(0))
    }

    /// Seconds until the background refresher has something to do: the refresh point of a
    /// renewable session, the expiry of one that cannot be renewed.
    fn seconds_until_due(&self) -> Option<i64> {
        let live = self.current()?;
        if live.renewable() {
            self.seconds_until_refresh()
        } else {
            Some((live.expires_at - self.now()).max(0))
        }
    }

    /// Keeps the session fresh in the background: sleeps until the refresh point, refreshes, and
    /// repeats until `shutdown` resolves. Failed refreshes back off up to a minute. A session
    /// without a refresh token is left alone until its access token expires, then ended with
    /// [`NOT_RENEWABLE_REASON`].
    pub async fn run_refresher(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut changes = self.subscribe();
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_secs(1);
        // When the loop last asked the provider, and the backoff owed when that attempt failed.
        let mut last_attempt: Option<tokio::time::Instant> = None;
        let mut owed: Option<Duration> = None;
        loop {
            let due_in = match self.seconds_until_due() {
                Some(s) => Duration::from_secs(u64::try_from(s).unwrap_or(0)),
                None => Duration::from_secs(3600),
            };
            let wait = refresher_wait(due_in, last_attempt.map(|at| at.elapsed()), owed);
            tokio::select! {
                () = &mut shutdown => return,
                changed = changes.changed() => {
                    if changed.is_err() { return; }
                    continue;
                }
                () = tokio::time::sleep(wait) => {}
            }
            let Some(live) = self.current() else {
                continue;
            };
            if self.seconds_until_due().is_some_and(|s| s > 0) {
                continue;
            }
            if !live.renewable() {
                // At (or past) expiry: end it; the state change wakes the loop, which then
                // finds no session and sleeps.
                self.expire_unrenewable(&live).await;
                continue;
            }
            last_attempt = Some(tokio::time::Instant::now());
            match self.refresh_from(live.generation).await {
                Ok(_) | Err(SessionError::LoginRequired { .. }) => {
                    backoff = Duration::from_secs(1);
                    owed = None;
                }
                Err(e) => {
                    warn!(code = %e.code(), "background refresh failed");
                    owed = Some(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}
