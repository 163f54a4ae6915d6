//! Logging in to an account: the pre-flight, the pending login that completes in the background
//! when the provider calls back, cancelling and waiting for it, the last failure per account,
//! and the requests the proxy refused for want of a login. [`Logins`] runs the pending logins of
//! accounts and remote servers alike, each stopped by name or with the instance.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::broadcast;
use tokio::task::Id;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use url::Url;

use latchkey_core::login::preflight;

use crate::view::{LoginFailure, LoginRequest};
use crate::{Latchkey, RuntimeError, error};

/// Logins in progress by name (an account, or a remote server), each a background task of the
/// instance that stops when it is cancelled by name or when the instance shuts down.
#[derive(Default)]
pub(crate) struct Logins(Mutex<HashMap<String, PendingLogin>>);

/// One login in progress.
struct PendingLogin {
    /// Its task, to tell it apart from a later login of the same name.
    task: Id,
    /// A child of the instance's shutdown token: cancelled alone by [`Logins::cancel`].
    cancel: CancellationToken,
}

impl Logins {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, PendingLogin>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a login of `name` is in progress.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// Stops the login of `name`: its future is dropped where it waits (which closes a pending
    /// login's callback listener). False when none was in progress.
    pub(crate) fn cancel(&self, name: &str) -> bool {
        // Removed and cancelled under the lock, so its task never mistakes a later login of
        // the same name for its own.
        let mut logins = self.lock();
        let Some(login) = logins.remove(name) else {
            return false;
        };
        login.cancel.cancel();
        true
    }

    /// Forgets the login of `name` if it is still the one run by `task`; true when it was.
    fn forget(&self, name: &str, task: Id) -> bool {
        let mut logins = self.lock();
        if logins.get(name).is_some_and(|l| l.task == task) {
            logins.remove(name);
            true
        } else {
            false
        }
    }
}

impl Latchkey {
    /// Runs `login` as the login `name` in the `logins` of this instance, replacing (and
    /// cancelling) one in progress. It is listed until it ends, is cancelled by name, or the
    /// instance shuts down; the subscribers are told when it ends, except after a cancel by name,
    /// whose caller tells them once it has recorded why.
    pub(crate) fn spawn_login<F>(&self, logins: fn(&Latchkey) -> &Logins, name: &str, login: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.inner.shutdown.child_token();
        let stop = cancel.clone();
        let me = self.clone();
        let key = name.to_owned();
        // Held while spawning: the task looks itself up only once it is listed.
        let mut pending = logins(self).lock();
        let task = self.spawn(async move {
            let ended = stop.run_until_cancelled(login).await.is_some();
            let listed = tokio::task::try_id().is_some_and(|id| logins(&me).forget(&key, id));
            if ended || listed {
                me.changed();
            }
        });
        let replaced = pending.insert(
            name.to_owned(),
            PendingLogin {
                task: task.id(),
                cancel,
            },
        );
        drop(pending);
        if let Some(old) = replaced {
            old.cancel.cancel();
        }
    }

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
        let login = async move {
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
        };
        self.spawn_login(|lk| &lk.inner.logins, account, login);
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
        let stop = self.inner.shutdown.clone();
        self.spawn(async move {
            loop {
                let event = tokio::select! {
                    event = needed.recv() => event,
                    () = stop.cancelled() => return,
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
        if self.inner.logins.cancel(account) {
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
        while self.inner.logins.contains(account) {
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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Duration;

    use latchkey_core::paths::Paths;
    use latchkey_core::vault::{MemoryStore, Vault};
    use tokio::sync::oneshot;

    use super::Logins;
    use crate::{Latchkey, StartOptions};

    /// A one-shot instance with one account, whose provider is never reached.
    async fn idle(dir: &tempfile::TempDir) -> Latchkey {
        let paths = Paths::new(dir.path().join("config"), dir.path().join("data"));
        std::fs::create_dir_all(paths.config_dir()).expect("config dir");
        std::fs::write(
            paths.config_file(),
            "version = 1\n[[accounts]]\nname = \"work\"\nissuer = \"https://idp.invalid\"\nclient_id = \"latchkey\"\n",
        )
        .expect("config");
        Latchkey::start(StartOptions {
            paths,
            proxy_port: None,
            vault: Some(Vault::new(Arc::new(MemoryStore::new()))),
            serve_proxy: false,
        })
        .await
        .expect("start")
    }

    /// A login that never completes, and a receiver that resolves once it has been dropped.
    fn endless_login() -> (
        impl Future<Output = ()> + Send + 'static,
        oneshot::Receiver<()>,
    ) {
        let (held, dropped) = oneshot::channel::<()>();
        let login = async move {
            let _held = held;
            std::future::pending::<()>().await;
        };
        (login, dropped)
    }

    async fn assert_dropped(dropped: oneshot::Receiver<()>, what: &str) {
        let ended = tokio::time::timeout(Duration::from_secs(5), dropped).await;
        assert!(
            matches!(ended, Ok(Err(_))),
            "{what}: its future is dropped, closing its callback listener"
        );
    }

    #[tokio::test]
    async fn a_login_cancelled_by_name_stops_and_a_replaced_one_too_while_the_others_run_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lk = idle(&dir).await;
        let logins: fn(&Latchkey) -> &Logins = |lk| &lk.inner.logins;
        let (first, first_dropped) = endless_login();
        let (other, other_dropped) = endless_login();
        let before = lk.inner.tasks.len();
        lk.spawn_login(logins, "work", first);
        lk.spawn_login(logins, "home", other);
        assert_eq!(
            lk.inner.tasks.len(),
            before + 2,
            "both logins run as tracked tasks"
        );

        assert!(lk.inner.logins.cancel("work"), "a login was pending");
        assert!(!lk.inner.logins.contains("work"));
        assert_dropped(first_dropped, "the cancelled login").await;
        assert!(
            !lk.inner.logins.cancel("work"),
            "nothing is left to cancel twice"
        );

        let (again, again_dropped) = endless_login();
        lk.spawn_login(logins, "home", again);
        assert_dropped(other_dropped, "the replaced login").await;
        assert!(lk.inner.logins.contains("home"), "the new login is listed");

        lk.shutdown().await;
        assert_dropped(again_dropped, "the login pending at shutdown").await;
        assert!(
            !lk.inner.logins.contains("home"),
            "a login stopped by shutdown is no longer listed, so nobody waits for it"
        );
        assert!(lk.inner.tasks.is_empty(), "no login task outlives shutdown");
    }
}
