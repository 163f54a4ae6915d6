//! Logging in to an account: the pre-flight, the pending login that completes in the background
//! when the provider calls back, cancelling and waiting for it, the last failure per account,
//! and the requests the proxy refused for want of a login.

use std::collections::HashMap;
use std::sync::MutexGuard;

use tokio::sync::broadcast;
use tracing::{info, warn};
use url::Url;

use latchkey_core::login::preflight;

use crate::view::{LoginFailure, LoginRequest};
use crate::{Latchkey, RuntimeError, error};

impl Latchkey {
    /// Starts a login and returns the authorization URL to open. The login completes in the
    /// background when the identity provider redirects to the loopback callback; watch
    /// [`Latchkey::subscribe`]. Starting again replaces a pending login and forgets the last
    /// failure. Before the URL is returned, a pre-flight asks the provider whether it accepts this
    /// client and redirect URI (it shows its own error page otherwise, and never calls back).
    pub async fn begin_login(&self, account: &str) -> Result<Url, RuntimeError> {
        self.cancel_login(account);
        let session = self.session(account)?.clone();
        self.set_login_error(account, None);
        let pending = match session.begin_login().await {
            Ok(p) => p,
            Err(e) => {
                return Err(self.login_failed(account, error::login_failure(session.account(), &e)));
            }
        };
        let url = pending.authorize_url().clone();
        let fixed_port = session.account().callback_port != 0;
        if let Err(e) = preflight::check_login(
            &self.inner.http,
            &url,
            pending.token_endpoint(),
            fixed_port,
            preflight::PREFLIGHT_TIMEOUT,
        )
        .await
        {
            // Dropping the pending login stops its listener and restores the session's state.
            drop(pending);
            return Err(self.login_failed(account, error::preflight_failure(session.account(), &e)));
        }
        let me = self.clone();
        let name = account.to_owned();
        let task = tokio::spawn(async move {
            match session.complete_login(pending).await {
                Ok(user) => {
                    info!(account = %name, subject = %user.subject, "login complete");
                    me.set_login_error(&name, None);
                    me.lock_login_requests().remove(&name);
                }
                Err(e) => {
                    me.login_failed(&name, error::login_failure(session.account(), &e));
                }
            }
            me.inner
                .logins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
            me.changed();
        });
        self.inner
            .logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.to_owned(), task);
        self.changed();
        Ok(url)
    }

    /// The latest request the proxy refused because `account` is not logged in, until a login
    /// succeeds.
    pub fn login_requested(&self, account: &str) -> Option<LoginRequest> {
        self.lock_login_requests().get(account).cloned()
    }

    fn lock_login_requests(&self) -> MutexGuard<'_, HashMap<String, LoginRequest>> {
        self.inner
            .login_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps what the proxy announces about requests refused for want of a login, so that the
    /// tray and the window can say who asked for what.
    pub(crate) fn watch_login_requests(
        &self,
        mut needed: broadcast::Receiver<latchkey_proxy::LoginNeeded>,
    ) {
        let me = self.clone();
        let mut stop = self.inner.shutdown.subscribe();
        let task = tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = needed.recv() => event,
                    _ = stop.changed() => return,
                };
                match event {
                    Ok(event) => {
                        let Some(account) = event.account else {
                            // A remote MCP server's refusal names the server, not an account.
                            if me.server_login_requested(
                                &event.service,
                                event.client,
                                (me.inner.clock)(),
                            ) {
                                me.changed();
                            }
                            continue;
                        };
                        let request = LoginRequest {
                            client: event.client,
                            service: event.service,
                            at: (me.inner.clock)(),
                        };
                        me.lock_login_requests().insert(account, request);
                        me.changed();
                    }
                    // Fell behind a burst: the next event says the same thing.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        self.track(task);
    }

    /// Why the account's last login failed, until its next login starts or one succeeds.
    pub fn last_login_error(&self, account: &str) -> Option<LoginFailure> {
        self.inner
            .login_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .cloned()
    }

    fn set_login_error(&self, account: &str, failure: Option<LoginFailure>) {
        let mut errors = self
            .inner
            .login_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match failure {
            Some(f) => errors.insert(account.to_owned(), f),
            None => errors.remove(account),
        };
    }

    /// Keeps `e` as the account's last login failure (logged by code only) and returns it.
    pub(crate) fn login_failed(&self, account: &str, e: RuntimeError) -> RuntimeError {
        warn!(account, code = %e.code, "login failed");
        self.set_login_error(
            account,
            Some(LoginFailure {
                code: e.code,
                message: e.message.clone(),
                at: (self.inner.clock)(),
            }),
        );
        self.changed();
        e
    }

    /// Cancels a pending login (the person closed the login window); the session returns to
    /// where it was, and the last login error says `login_cancelled` (a cancel, not an alarm).
    pub fn cancel_login(&self, account: &str) {
        let task = self
            .inner
            .logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(account);
        if let Some(task) = task {
            task.abort();
            // Kept like a failure so a waiting `latchkey login` can say so; not an alarm.
            self.set_login_error(
                account,
                Some(LoginFailure {
                    code: latchkey_core::Code::LoginCancelled,
                    message: RuntimeError::login_cancelled(account).message,
                    at: (self.inner.clock)(),
                }),
            );
            self.changed();
        }
    }

    /// Waits for a pending login to finish (the CLI uses this); a failure says why, with the same
    /// code and message as [`Latchkey::last_login_error`].
    pub async fn wait_login(&self, account: &str) -> Result<(), RuntimeError> {
        let session = self.session(account)?;
        // Subscribed before looking, so the end of the login (or its cancel) is never missed;
        // the task stays in `logins`, so `cancel_login` can still stop it while someone waits.
        let mut changes = self.subscribe();
        while self
            .inner
            .logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(account)
        {
            if changes.changed().await.is_err() {
                break;
            }
        }
        match self.last_login_error(account) {
            _ if session.state().is_usable() => Ok(()),
            Some(failure) => Err(RuntimeError::new(failure.code, failure.message)),
            None => Err(RuntimeError::login_failed(account)),
        }
    }
}
