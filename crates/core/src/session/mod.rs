//! One session per account: log in, restore from the keychain, refresh before expiry (exactly one
//! refresh in flight however many callers wait), log out. State changes are broadcast on a
//! `watch` channel for the tray, the UI and the proxy.

mod state;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tracing::{info, instrument, warn};
use url::Url;

use crate::config::Account;
use crate::login::{self, LoginError, Provider, ProviderSettings, TokenHint, TokenSet, UserInfo};
use crate::secret::Secret;
use crate::vault::{StoredTokens, StoredUser, Vault, VaultError};

pub use state::{SessionState, refresh_due_at};

/// Refresh at this fraction of the access token's lifetime (PROTOCOL §1).
pub const REFRESH_FRACTION: f64 = 0.8;
/// …and at least this many seconds before it expires.
pub const REFRESH_MARGIN_SECONDS: i64 = 10;

/// The current time in unix seconds; injectable so tests can move it.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| time::OffsetDateTime::now_utc().unix_timestamp())
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
    pub fn code(&self) -> &'static str {
        match self {
            Self::LoginRequired { .. } => "login_required",
            Self::LoginInProgress { .. } => "login_in_progress",
            Self::Login(e) => e.code(),
            Self::Vault(e) => e.code(),
        }
    }
}

/// What logout did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutReport {
    /// The refresh token was revoked at the identity provider.
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
        }
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
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = live;
    }

    fn next_generation(&self) -> u64 {
        self.current().map_or(1, |l| l.generation + 1)
    }

    fn publish_active(&self, live: &Live) {
        self.state.send_replace(SessionState::Active {
            user: live.user.clone(),
            expires_at: live.expires_at,
            issued_at: live.issued_at,
        });
    }

    /// Picks up tokens stored in the keychain, without any network call. A session whose access
    /// token expired but that has a refresh token comes back as active and refreshes on first use.
    #[instrument(skip_all, fields(account = %self.account.name), err)]
    pub async fn restore(&self) -> Result<SessionState, SessionError> {
        match self.vault.load_tokens(self.account.name.as_str()).await {
            Ok(Some(tokens)) => {
                let live = Live::from_stored(tokens, self.next_generation());
                let usable = live.expires_at > self.now() || live.refresh_token.is_some();
                if usable {
                    self.publish_active(&live);
                    self.set_live(Some(Arc::new(live)));
                    info!("session restored from keychain");
                } else {
                    self.state.send_replace(SessionState::Expired {
                        user: Some(live.user.clone()),
                        reason: "the session ended; log in again".into(),
                    });
                }
            }
            Ok(None) => {
                self.state.send_replace(SessionState::LoggedOut);
            }
            Err(e) => {
                self.state.send_replace(SessionState::Error {
                    code: e.code().into(),
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
            allow_insecure_http: self.account.allow_insecure_http,
            timeout: self.timeout,
        };
        let provider = Provider::discover(self.http.clone(), settings).await?;
        *slot = Some(provider.clone());
        Ok(provider)
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
        let attempt = login::start(&provider, self.account.callback_port).await?;
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
        let live = self.live_from(tokens, None);
        self.vault
            .save_tokens(self.account.name.as_str(), &live.to_stored())
            .await?;
        let user = live.user.clone();
        self.publish_active(&live);
        self.set_live(Some(Arc::new(live)));
        info!(subject = %user.subject, "logged in");
        Ok(user)
    }

    fn live_from(&self, tokens: TokenSet, previous_refresh: Option<Secret>) -> Live {
        Live {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token.or(previous_refresh),
            id_token: tokens.id_token,
            expires_at: tokens.expires_at.unix_timestamp(),
            issued_at: tokens.issued_at.unix_timestamp(),
            user: tokens.user,
            generation: self.next_generation(),
        }
    }

    /// A valid access token, refreshed first when it is past its refresh point. Concurrent
    /// callers share one refresh.
    pub async fn access_token(&self) -> Result<Secret, SessionError> {
        let live = self.current().ok_or_else(|| self.login_required())?;
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
            // The refresh failed but the token we hold has not expired: keep serving with it.
            Err(SessionError::Login(ref e)) if !matches!(e, LoginError::InvalidGrant) => {
                if let Some(current) = self.current().filter(|l| l.expires_at > self.now()) {
                    warn!(code = e.code(), "refresh failed; current token still valid");
                    Ok(current.access_token.clone())
                } else {
                    Err(refreshed.err().unwrap_or_else(|| self.login_required()))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Refreshes now, whatever the token's age (the tray's "Refresh now").
    pub async fn refresh_now(&self) -> Result<(), SessionError> {
        let live = self.current().ok_or_else(|| self.login_required())?;
        self.refresh_from(live.generation).await.map(|_| ())
    }

    /// The gateway answered 401 to `rejected`: refresh unless someone already replaced it.
    pub async fn refresh_after_rejection(&self, rejected: &Secret) -> Result<Secret, SessionError> {
        let live = self.current().ok_or_else(|| self.login_required())?;
        if !live.access_token.ct_eq(rejected) {
            return Ok(live.access_token.clone());
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
        let _one_at_a_time = self.refresh_lock.lock().await;
        let live = self.current().ok_or_else(|| self.login_required())?;
        if live.generation != seen_generation {
            return Ok(live);
        }
        let Some(refresh_token) = live.refresh_token.clone() else {
            return Err(self
                .end_session(&live, "no refresh token was issued; log in again")
                .await);
        };
        self.state.send_replace(SessionState::Refreshing {
            user: live.user.clone(),
            expires_at: live.expires_at,
        });
        let result = async {
            let provider = self.provider().await?;
            Ok::<_, SessionError>(provider.refresh(&refresh_token).await?)
        }
        .await;
        match result {
            Ok(tokens) => {
                let next = self.live_from(tokens, Some(refresh_token));
                // The rotated refresh token reaches the keychain before the new access token is
                // handed to anyone; if the keychain fails, nothing new is used.
                if let Err(e) = self
                    .vault
                    .save_tokens(self.account.name.as_str(), &next.to_stored())
                    .await
                {
                    self.state.send_replace(SessionState::Error {
                        code: e.code().into(),
                        message: e.to_string(),
                    });
                    return Err(e.into());
                }
                let next = Arc::new(next);
                self.publish_active(&next);
                self.set_live(Some(next.clone()));
                info!(expires_at = next.expires_at, "session refreshed");
                Ok(next)
            }
            Err(SessionError::Login(LoginError::InvalidGrant)) => Err(self
                .end_session(
                    &live,
                    "the identity provider ended the session; log in again",
                )
                .await),
            Err(e) => {
                if live.expires_at > self.now() {
                    self.publish_active(&live);
                } else {
                    self.state.send_replace(SessionState::Error {
                        code: e.code().into(),
                        message: e.to_string(),
                    });
                }
                Err(e)
            }
        }
    }

    /// Ends a session the identity provider no longer honours: tokens leave memory and keychain.
    async fn end_session(&self, live: &Live, reason: &str) -> SessionError {
        self.set_live(None);
        if let Err(e) = self.vault.wipe_account(self.account.name.as_str()).await {
            warn!(
                code = e.code(),
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
                        code = e.code(),
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
        let mut revoked = false;
        if let Some(refresh) = &live.refresh_token {
            revoked = provider.revoke(refresh, TokenHint::RefreshToken).await?;
        }
        if revoked || live.refresh_token.is_none() {
            // The access token too, where supported; a failure here changes nothing for the user.
            // A provider that declines (JWT access tokens) answers Ok(false): the token lapses
            // at its `exp`, minutes away.
            if let Err(e) = provider
                .revoke(&live.access_token, TokenHint::AccessToken)
                .await
            {
                warn!(code = e.code(), "access token revocation failed");
            }
        }
        Ok(revoked)
    }

    /// Seconds until the next refresh is due, when a session is active.
    pub fn seconds_until_refresh(&self) -> Option<i64> {
        let live = self.current()?;
        let due = refresh_due_at(
            live.issued_at,
            live.expires_at,
            REFRESH_FRACTION,
            REFRESH_MARGIN_SECONDS,
        );
        Some((due - self.now()).max(0))
    }

    /// Keeps the session fresh in the background: sleeps until the refresh point, refreshes, and
    /// repeats until `shutdown` resolves. Failed refreshes back off up to a minute.
    pub async fn run_refresher(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut changes = self.subscribe();
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_secs(1);
        loop {
            let wait = match self.seconds_until_refresh() {
                Some(s) => Duration::from_secs(u64::try_from(s).unwrap_or(0)),
                None => Duration::from_secs(3600),
            };
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
            if self.seconds_until_refresh().is_some_and(|s| s > 0) {
                continue;
            }
            match self.refresh_from(live.generation).await {
                Ok(_) => backoff = Duration::from_secs(1),
                Err(SessionError::LoginRequired { .. }) => {}
                Err(e) => {
                    warn!(code = e.code(), "background refresh failed");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}
