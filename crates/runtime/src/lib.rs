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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, instrument, warn};

use latchkey_core::config::Config;
use latchkey_core::paths::Paths;
use latchkey_core::session::{Clock, Session, system_clock};
use latchkey_core::vault::{KeychainHealth, Vault, VaultKey};
use latchkey_proxy::{ConnectionRegistry, ProxyState};
use latchkey_store::{AuditLog, ClientRegistry, Database};

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
    logins: Mutex<HashMap<String, JoinHandle<()>>>,
    /// The last login failure per account, until its next login starts or succeeds.
    login_errors: Mutex<HashMap<String, LoginFailure>>,
    /// The latest request refused for want of a login, per account, until a login succeeds.
    login_requests: Mutex<HashMap<String, LoginRequest>>,
    /// For the login pre-flight (no cookies, no redirects followed).
    http: reqwest::Client,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
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

impl Latchkey {
    /// Starts everything. Fails when another instance runs or the proxy port is taken; a broken
    /// keychain is reported in the overview, not fatal, so the person can see what to do. A
    /// serving instance (tray or `serve`) also runs with a missing or invalid configuration file,
    /// with nothing configured, shows why in the overview, and follows the file from then on; a
    /// one-shot command refuses such a file.
    #[instrument(skip_all, err)]
    pub async fn start(options: StartOptions) -> Result<Self, RuntimeError> {
        let config_path = options.paths.config_file();
        let initial = if options.serve_proxy {
            reload::load_initial(&config_path)
        } else {
            reload::Initial::loaded(Config::load_from(&config_path)?)
        };
        let config = Arc::new(initial.config.clone());
        let lock = acquire_lock(&options.paths, options.serve_proxy).await?;
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
        let (shutdown, _) = watch::channel(false);
        let mut proxy = None;
        let proxy_addr = if options.serve_proxy {
            let port = options.proxy_port.unwrap_or(config.proxy.listen.port());
            match latchkey_proxy::raise_open_file_limit() {
                Ok(limit) => debug!(limit, "open file limit"),
                Err(e) => warn!(kind = ?e.kind(), "open file limit not raised"),
            }
            let bound = if config.proxy.ipv6 {
                latchkey_proxy::bind_loopback(port).await
            } else {
                latchkey_proxy::bind_loopback_ipv4(port).await
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
            logins: Mutex::new(HashMap::new()),
            login_errors: Mutex::new(HashMap::new()),
            login_requests: Mutex::new(HashMap::new()),
            http: http.clone(),
            shutdown,
            tasks: Mutex::new(Vec::new()),
            lock,
            servers: servers::Servers::default(),
        });
        let me = Self { inner };
        me.restore_servers().await;
        if let Some(listeners) = proxy {
            me.serve(listeners).await?;
        }
        for (name, session) in &me.inner.sessions {
            me.watch_session(&name, session);
        }
        if options.serve_proxy {
            me.watch_config();
        }
        if !me.keychain_health().ok {
            let retry = tokio::spawn(me.clone().retry_keychain());
            me.track(retry);
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
        let task = tokio::spawn(async move {
            if let Err(e) = latchkey_proxy::serve(listeners, state, shutdown).await {
                warn!(error = %e, "proxy stopped");
                *me.inner
                    .proxy_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                me.changed();
            }
        });
        self.track(task);
        Ok(())
    }

    fn track(&self, task: JoinHandle<()>) {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.shutdown.subscribe();
        async move {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    /// Tells the subscribers that something in the overview may have changed.
    fn changed(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Bumps whenever anything in the overview may have changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
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

    /// Stops the proxy and the background tasks, and waits for the audit log to be written.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                warn!("a background task did not stop in time");
            }
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

/// Claims the single-instance lock. A long-lived instance (tray or `serve`) waits a few seconds
/// for a one-shot CLI command (`latchkey status` run while nothing serves takes the lock for a
/// moment) but never for another serving instance, which publishes its port.
async fn acquire_lock(paths: &Paths, serving: bool) -> Result<InstanceLock, RuntimeError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match InstanceLock::acquire(paths) {
            Err(instance::InstanceError::AlreadyRunning)
                if serving
                    && instance::running(paths).is_err()
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return Ok(other?),
        }
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
