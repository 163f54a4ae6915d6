//! The running Latchkey instance, shared by the tray app and `latchkey serve`: it claims the
//! single-instance lock, checks the keychain, restores sessions without the network, keeps them
//! fresh, serves the loopback proxy, and answers the UI's questions. The Tauri crate and the CLI
//! only translate to and from this API.

#[cfg(test)]
mod config_props;
pub mod control;
pub mod error;
pub mod instance;
#[cfg(unix)]
pub mod socket;
pub mod tray;
pub mod view;

mod activity;
mod clients;
mod credentials;
pub mod hosts;
mod keychain;
mod login;
mod reload;
mod servers;
mod sessions;
mod source;
mod status;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, instrument, warn};

use latchkey_core::config::Config;
use latchkey_core::paths::Paths;
use latchkey_core::session::{Clock, Session, system_clock};
use latchkey_core::vault::{KeychainHealth, Vault, VaultKey};
use latchkey_proxy::{ConnectionRegistry, ProxyState};
use latchkey_store::{AuditLog, ClientRegistry, Database};

use control::WindowRequest;
pub use control::{Control, ControlClient};
pub use error::RuntimeError;
pub use instance::{InstanceInfo, InstanceLock};
pub use keychain::KEYCHAIN_RETRY;
pub use latchkey_store::{
    ActivityBuckets, AuditKind, AuditPage, AuditRow, ClientOptions, ServiceSeries,
};
pub use servers::{AddServer, AddedServer};
pub use tray::{TrayIcon, TrayStatus};
use view::{LoginFailure, LoginRequest};

/// How to start.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Where files live.
    pub paths: Paths,
    /// Overrides the configured proxy port (the tray's setting).
    pub proxy_port: Option<u16>,
    /// The keychain; `None` uses the platform's.
    pub vault: Option<Vault>,
    /// Serve the loopback proxy (false for one-shot CLI commands that only need sessions).
    pub serve_proxy: bool,
}

struct Inner {
    /// The configuration in force with its sessions and credentials, following the file.
    live: Arc<reload::Live>,
    /// The tray's port setting, which wins over the file's.
    port_override: Option<u16>,
    paths: Paths,
    vault: Vault,
    clock: Clock,
    sessions: reload::LiveSessions,
    credentials: reload::LiveCredentials,
    clients: ClientRegistry,
    audit: AuditLog,
    connections: ConnectionRegistry,
    /// The keychain's health: checked at start, and again every [`KEYCHAIN_RETRY`] while broken.
    keychain: Mutex<KeychainHealth>,
    proxy_addr: Option<SocketAddr>,
    /// The settings read once at start (listener, connection cap, audit retention): a later
    /// edit of them is reported as needing a restart.
    started_with: StartedWith,
    proxy_error: Mutex<Option<String>>,
    changes: watch::Sender<u64>,
    /// Requests to show the window, to the window processes following the instance (each holds
    /// a receiver: the count of receivers is the count of open windows).
    windows: broadcast::Sender<WindowRequest>,
    /// Pending logins by account.
    logins: login::Logins,
    /// The last login failure per account, until its next login starts or succeeds.
    login_errors: Mutex<HashMap<String, LoginFailure>>,
    /// The latest request refused for want of a login, per account, until a login succeeds.
    login_requests: Mutex<HashMap<String, LoginRequest>>,
    /// For the login pre-flight (no cookies, no redirects followed).
    http: reqwest::Client,
    /// Cancelled by [`Latchkey::shutdown`]: every background task stops on it, or on a child
    /// token of it when it can also be stopped alone (a login, a removed account's refresher).
    shutdown: CancellationToken,
    /// Every background task, so that [`Latchkey::shutdown`] can wait for them to end.
    tasks: TaskTracker,
    lock: InstanceLock,
    /// Remote MCP servers (`[[servers]]`) and those being added.
    servers: servers::Servers,
}

/// What the instance started with that it does not follow live.
struct StartedWith {
    proxy: latchkey_core::config::ProxySettings,
    audit: latchkey_core::config::AuditSettings,
}

/// The running instance. Cheap to clone.
#[derive(Clone)]
pub struct Latchkey {
    inner: Arc<Inner>,
}

/// How long [`Latchkey::shutdown`] waits for the background tasks to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Latchkey {
    /// Starts everything. Fails when another instance runs or the proxy port is taken; a broken
    /// keychain is reported in the overview, not fatal, so the person can see what to do. A
    /// serving instance (tray or `serve`) also runs with a missing or invalid configuration file,
    /// with nothing configured, shows why in the overview, and follows the file from then on; a
    /// one-shot command refuses such a file.
    ///
    /// Its error is logged at debug level only: every caller reports it to the person (the CLI's
    /// message, the tray's start-up notice, `serve`'s exit), and a command standing back for a
    /// starting instance retries quietly instead of printing an ERROR line per attempt.
    #[instrument(skip_all, err(level = "debug"))]
    pub async fn start(options: StartOptions) -> Result<Self, RuntimeError> {
        let config_path = options.paths.config_file();
        let initial = if options.serve_proxy {
            reload::load_initial(&config_path)
        } else {
            reload::Initial::loaded(Config::load_from(&config_path)?)
        };
        let config = Arc::new(initial.config.clone());
        let lock = InstanceLock::claim(&options.paths, options.serve_proxy).await?;
        let vault = match options.vault {
            Some(v) => v,
            None => Vault::platform()?,
        };
        let keychain = vault.self_test().await;
        if !keychain.ok {
            warn!(backend = %keychain.backend, "keychain self-test failed");
        }
        let clock = system_clock();
        let http = http_client()?;

        let mut sessions = BTreeMap::new();
        for account in &config.accounts {
            let session = Arc::new(Session::new(
                account.clone(),
                vault.clone(),
                http.clone(),
                clock.clone(),
            ));
            if let Err(e) = session.restore().await {
                warn!(account = %account.name, code = %e.code(), "session not restored");
            }
            sessions.insert(account.name.to_string(), session);
        }
        let credentials = reload::credentials_for(&http, &config, &sessions, &vault, &clock);
        credentials.warm_from_keychain().await;

        options.paths.ensure_data_dir().map_err(RuntimeError::io)?;
        let db = Database::open(&options.paths.database_file())?;
        let clients = ClientRegistry::open(&db)?;
        let audit = AuditLog::open(&db, audit_retention(&config))?;
        let connections = ConnectionRegistry::default();

        let (changes, _) = watch::channel(0u64);
        let (windows, _) = broadcast::channel(8);
        let mut proxy = None;
        let proxy_addr = if options.serve_proxy {
            let port = options.proxy_port.unwrap_or(config.proxy.listen.port());
            match latchkey_proxy::raise_open_file_limit() {
                Ok(limit) => debug!(limit, "open file limit"),
                Err(e) => warn!(kind = ?e.kind(), "open file limit not raised"),
            }
            let bound = if config.proxy.ipv6 {
                latchkey_proxy::bind_loopback(port)
            } else {
                latchkey_proxy::bind_loopback_ipv4(port)
            };
            let listeners = bound.map_err(|e| RuntimeError::port_taken(port, &e))?;
            let addr = listeners
                .first()
                .and_then(|l| l.local_addr().ok())
                .ok_or_else(|| {
                    RuntimeError::port_taken(port, &std::io::Error::other("no listener"))
                })?;
            proxy = Some(listeners);
            Some(addr)
        } else {
            None
        };

        let live = Arc::new(reload::Live::new(
            config_path,
            &initial,
            reload::Snapshot {
                config: config.clone(),
                sessions,
                credentials,
            },
        ));
        let inner = Arc::new(Inner {
            live: live.clone(),
            port_override: options.proxy_port,
            paths: options.paths,
            vault,
            clock,
            sessions: reload::LiveSessions(live.clone()),
            credentials: reload::LiveCredentials(live),
            clients,
            audit,
            connections,
            keychain: Mutex::new(keychain),
            proxy_addr,
            started_with: StartedWith {
                proxy: config.proxy.clone(),
                audit: config.audit.clone(),
            },
            proxy_error: Mutex::new(None),
            changes,
            windows,
            logins: login::Logins::default(),
            login_errors: Mutex::new(HashMap::new()),
            login_requests: Mutex::new(HashMap::new()),
            http: http.clone(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            lock,
            servers: servers::Servers::default(),
        });
        let me = Self { inner };
        me.restore_servers().await;
        if let Some(listeners) = proxy
            && let Err(e) = me.serve(listeners).await
        {
            // Tasks already started (servers' refreshers, the control socket) hold the instance:
            // end them, or a failed start would leave them (and the published instance) running.
            me.shutdown().await;
            return Err(e);
        }
        for (name, session) in &me.inner.sessions {
            me.watch_session(&name, session);
        }
        if options.serve_proxy {
            me.watch_config();
        }
        if !me.keychain_health().ok {
            me.spawn(me.clone().retry_keychain());
        }
        info!(proxy = ?me.inner.proxy_addr, accounts = me.inner.sessions.len(), "latchkey ready");
        Ok(me)
    }

    /// Publishes the control token and the port, then serves the proxy (with the control API
    /// for the CLI) until shutdown.
    async fn serve(&self, listeners: Vec<tokio::net::TcpListener>) -> Result<(), RuntimeError> {
        let Some(addr) = self.inner.proxy_addr else {
            return Ok(());
        };
        let control_token = instance::new_control_token();
        if let Err(e) = self
            .inner
            .vault
            .put(&VaultKey::ControlToken, &control_token)
            .await
        {
            // With the keychain unavailable the proxy still runs (answering
            // `keychain_unavailable`) and the CLI gets the token over the socket.
            if cfg!(unix) && !self.keychain_health().ok {
                warn!(code = %e.code(), "control token not kept in the keychain");
            } else {
                return Err(e.into());
            }
        }
        self.inner.lock.publish(&InstanceInfo {
            pid: std::process::id(),
            port: addr.port(),
            started_at: (self.inner.clock)(),
        })?;
        #[cfg(unix)]
        self.serve_socket(&control_token, addr.port());
        let routes = source::proxy_config(&self.config(), addr.port())?;
        let state = ProxyState::new(
            routes,
            Arc::new(source::SessionCredentials::new(self.clone())),
            self.inner.clients.clone(),
            self.inner.audit.clone(),
            self.inner.connections.clone(),
            Some(control_token.clone()),
        )
        .map_err(RuntimeError::from)?
        .with_control(control::router(self.clone(), control_token));
        self.inner.live.set_proxy(state.clone());
        self.route_servers(&state)?;
        self.watch_login_requests(state.login_needed());
        let me = self.clone();
        let shutdown = self.shutdown_signal();
        self.spawn(async move {
            if let Err(e) = latchkey_proxy::serve(listeners, state, shutdown).await {
                warn!(error = %e, "proxy stopped");
                *me.inner
                    .proxy_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                me.changed();
            }
        });
        Ok(())
    }

    /// Runs `task` in the background as one of the instance's tasks: [`Latchkey::shutdown`]
    /// waits for it, so it must end on [`Latchkey::shutdown_signal`] (or a child token of it).
    fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(task)
    }

    /// Resolves when the instance shuts down.
    fn shutdown_signal(&self) -> WaitForCancellationFutureOwned {
        self.inner.shutdown.clone().cancelled_owned()
    }

    /// Tells the subscribers that something in the overview may have changed.
    fn changed(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Bumps whenever anything in the overview may have changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Asks the open windows (processes following the instance as windows) to show themselves,
    /// at `at` (`<section>/<item>`) when given; `false` when no window is open to ask.
    pub fn show_window(&self, at: Option<String>) -> bool {
        self.inner.windows.send(WindowRequest { at }).is_ok()
    }

    /// The requests to show the window, for a window that follows the instance.
    pub(crate) fn subscribe_windows(&self) -> broadcast::Receiver<WindowRequest> {
        self.inner.windows.subscribe()
    }

    /// Audit rows as they are committed.
    pub fn subscribe_activity(&self) -> broadcast::Receiver<AuditRow> {
        self.inner.audit.subscribe()
    }

    /// The configuration in force (it follows the file: hold the `Arc` for a consistent view).
    pub fn config(&self) -> Arc<Config> {
        self.inner.live.get().config.clone()
    }

    /// The proxy's address, when this instance serves it.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.inner.proxy_addr
    }

    /// The proxy's base URL for local clients (the configured one when not serving).
    pub fn proxy_url(&self) -> String {
        format!(
            "http://{}",
            self.inner.proxy_addr.unwrap_or(self.config().proxy.listen)
        )
    }

    /// The session of `account`, or `unknown_account`.
    fn session(&self, account: &str) -> Result<Arc<Session>, RuntimeError> {
        self.inner
            .sessions
            .get(account)
            .ok_or_else(|| RuntimeError::unknown_account(account))
    }

    /// The account used when none is named.
    pub fn default_account(&self) -> Option<String> {
        self.config().default_account().map(|a| a.name.to_string())
    }

    /// Stops the proxy and the background tasks (pending logins included), waits up to five
    /// seconds for them to end, then waits for the audit log to be written. A task still running
    /// after that is logged and left to the runtime, never waited for.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.inner.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                running = self.inner.tasks.len(),
                "background tasks did not stop in time"
            );
        }
        self.inner.audit.flush().await;
    }

    /// The keychain this instance uses.
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// Where files live.
    pub fn paths(&self) -> &Paths {
        &self.inner.paths
    }
}

fn audit_retention(config: &Config) -> latchkey_store::Retention {
    latchkey_store::Retention {
        max_age: config.audit.retention,
        max_rows: config.audit.max_rows,
    }
}

/// The HTTP client for the identity provider and the gateway: rustls, no redirects, timeouts.
pub fn http_client() -> Result<reqwest::Client, RuntimeError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .user_agent(concat!("latchkey/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| RuntimeError::internal(format!("cannot build the HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use latchkey_core::paths::Paths;
    use latchkey_core::session::SessionState;
    use latchkey_core::vault::{MemoryStore, SecretStore, StoreFault, Vault};
    use latchkey_testkit::{Idp, IdpOptions};

    use super::{Latchkey, SHUTDOWN_GRACE, StartOptions};

    fn paths(dir: &tempfile::TempDir, config: &str) -> Paths {
        let paths = Paths::new(dir.path().join("config"), dir.path().join("data"));
        std::fs::create_dir_all(paths.config_dir()).expect("config dir");
        std::fs::write(paths.config_file(), config).expect("config");
        paths
    }

    /// Shuts `lk` down and checks that it took less than its grace period (so every task ended
    /// by itself rather than being given up on) and that no tracked task is left.
    async fn shut_down(lk: &Latchkey) {
        let started = tokio::time::Instant::now();
        lk.shutdown().await;
        let took = started.elapsed();
        assert!(
            took < SHUTDOWN_GRACE,
            "shutdown took {took:?}: a background task ignored the shutdown signal"
        );
        assert!(lk.inner.tasks.is_closed(), "no task is accepted as running");
        assert_eq!(
            lk.inner.tasks.len(),
            0,
            "every background task has ended when shutdown returns"
        );
    }

    #[tokio::test]
    async fn shutdown_stops_every_background_task_within_its_grace_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = paths(
            &dir,
            "version = 1\n[[accounts]]\nname = \"work\"\nissuer = \"https://idp.invalid\"\nclient_id = \"latchkey\"\n",
        );
        // A keychain that does not answer, so the retry loop runs too.
        let store = Arc::new(MemoryStore::new());
        store.fail_with(Some(StoreFault::Unavailable {
            message: "org.freedesktop.secrets was not provided by any .service files".into(),
        }));
        let lk = Latchkey::start(StartOptions {
            paths,
            proxy_port: Some(0),
            vault: Some(
                Vault::new(store as Arc<dyn SecretStore>).with_timeout(Duration::from_millis(500)),
            ),
            serve_proxy: true,
        })
        .await
        .expect("start");
        // The proxy, the control socket (unix), the login-request watcher, the configuration
        // watcher, the account's refresher and state watcher, the keychain retry loop.
        let expected = if cfg!(unix) { 7 } else { 6 };
        assert!(
            lk.inner.tasks.len() >= expected,
            "{} background tasks tracked, at least {expected} expected",
            lk.inner.tasks.len()
        );
        let addr = lk.proxy_addr().expect("serving");

        shut_down(&lk).await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the proxy no longer listens"
        );
        // A second call has nothing left to stop and returns at once.
        shut_down(&lk).await;
    }

    #[tokio::test]
    async fn a_login_pending_at_shutdown_ends_with_the_instance_and_its_waiter_returns() {
        let idp = Idp::start(IdpOptions::default()).await.expect("idp");
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = paths(
            &dir,
            &format!(
                "version = 1\n[[accounts]]\nname = \"good\"\nissuer = \"{}\"\nclient_id = \"latchkey\"\nallow_insecure_http = true\n",
                idp.issuer()
            ),
        );
        let lk = Latchkey::start(StartOptions {
            paths,
            proxy_port: None,
            vault: Some(Vault::new(Arc::new(MemoryStore::new()))),
            serve_proxy: false,
        })
        .await
        .expect("start");
        let url = lk.begin_login("good").await.expect("login starts");
        let callback = url
            .query_pairs()
            .find(|(k, _)| k == "redirect_uri")
            .and_then(|(_, v)| url::Url::parse(&v).ok())
            .and_then(|u| u.socket_addrs(|| None).ok())
            .and_then(|a| a.first().copied())
            .expect("a loopback redirect URI");
        assert!(
            tokio::net::TcpStream::connect(callback).await.is_ok(),
            "the login's callback listener is up"
        );
        let waiter = {
            let lk = lk.clone();
            tokio::spawn(async move { lk.wait_login("good").await })
        };

        shut_down(&lk).await;
        assert!(
            !lk.inner.logins.contains("good"),
            "the login is no longer pending"
        );
        // The listener is the login's own task in the core: it closes once the login is gone.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(callback).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the login's callback listener closes once the login is dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            matches!(lk.overview().accounts[0].state, SessionState::LoggedOut),
            "the session is back where it was"
        );
        let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("a waiting `latchkey login` returns once the instance shuts down")
            .expect("join");
        assert!(waited.is_err(), "the login did not complete");
    }
}
