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

pub mod hosts;
mod reload;
mod servers;
mod source;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, instrument, warn};
use url::Url;

use latchkey_core::config::Config;
use latchkey_core::login::preflight;
use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;
use latchkey_core::session::{Clock, Session, system_clock};
use latchkey_core::vault::{KeychainHealth, Vault, VaultKey};
use latchkey_proxy::{ConnectionRegistry, ProxyState};
use latchkey_store::{
    AuditFilter, AuditLog, ClientName, ClientRegistry, ClientToken, Database, StatusClass,
    TokenInfo,
};

pub use control::{Control, ControlClient};
pub use error::RuntimeError;
pub use instance::{InstanceInfo, InstanceLock};
pub use latchkey_store::{
    ActivityBuckets, AuditKind, AuditPage, AuditRow, ClientOptions, ServiceSeries,
};
pub use servers::{AddServer, AddedServer};
pub use tray::{TrayIcon, TrayStatus};
use view::{
    AccountView, ActivityFilter, ClientView, ConnectionView, CreatedClient, KeychainView,
    LoginFailure, LoginRequest, Overview, ProxyView,
};

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

/// How often a broken keychain is asked again.
pub const KEYCHAIN_RETRY: Duration = Duration::from_secs(5);

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

    fn keychain_health(&self) -> KeychainHealth {
        self.inner
            .keychain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the keychain again until it answers (unlocked, or its service started), then
    /// restores the sessions and cached credentials it holds: no restart needed.
    async fn retry_keychain(self) {
        let mut stop = self.inner.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(KEYCHAIN_RETRY) => {}
                _ = stop.changed() => return,
            }
            let health = self.inner.vault.self_test().await;
            if !health.ok {
                continue;
            }
            info!(backend = %health.backend, "keychain available again");
            *self
                .inner
                .keychain
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = health;
            for (name, session) in &self.inner.sessions {
                if let Err(e) = session.restore().await {
                    warn!(account = %name, code = %e.code(), "session not restored");
                }
            }
            self.inner.credentials.warm_from_keychain().await;
            self.changed();
            return;
        }
    }

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

    /// Everything the window's first screen shows.
    pub fn overview(&self) -> Overview {
        let accounts = self
            .config()
            .accounts
            .iter()
            .filter_map(|a| {
                let session = self.inner.sessions.get(a.name.as_str())?;
                Some(AccountView {
                    name: a.name.to_string(),
                    issuer: a.issuer.to_string(),
                    state: session.state(),
                    last_login_error: self.last_login_error(a.name.as_str()),
                    login_requested: self.login_requested(a.name.as_str()),
                })
            })
            .collect();
        Overview {
            accounts,
            services: self.inner.credentials.statuses(),
            proxy: ProxyView {
                url: self.proxy_url(),
                listening: self.inner.proxy_addr.is_some()
                    && self
                        .inner
                        .proxy_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_none(),
                error: self
                    .inner
                    .proxy_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            },
            keychain: KeychainView {
                ok: self.keychain_health().ok,
                backend: self.keychain_health().backend,
                message: self.keychain_health().message,
            },
            servers: self.server_views(),
            now: (self.inner.clock)(),
            config: self.inner.live.view(),
            activity_lost: self.inner.audit.dropped(),
        }
    }

    /// Icon and status line for the tray, across all accounts.
    pub fn tray_status(&self) -> TrayStatus {
        let now = (self.inner.clock)();
        let statuses: Vec<TrayStatus> = self
            .inner
            .sessions
            .iter()
            .map(|(name, s)| {
                let name = name.as_str();
                let state = s.state();
                let asked = tray::with_login_request(
                    tray::tray_status(&state, now),
                    &state,
                    name,
                    self.login_requested(name).as_ref(),
                    now,
                );
                tray::with_login_failure(asked, &state, self.last_login_error(name).as_ref())
            })
            .chain(self.server_tray_statuses(now))
            .collect();
        let status = tray::combine(&statuses).cloned().unwrap_or_else(|| {
            tray::tray_status(&latchkey_core::session::SessionState::LoggedOut, now)
        });
        reload::with_config_state(status, &self.inner.live.view())
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

    fn lock_login_requests(&self) -> std::sync::MutexGuard<'_, HashMap<String, LoginRequest>> {
        self.inner
            .login_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps what the proxy announces about requests refused for want of a login, so that the
    /// tray and the window can say who asked for what.
    fn watch_login_requests(&self, mut needed: broadcast::Receiver<latchkey_proxy::LoginNeeded>) {
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
    fn login_failed(&self, account: &str, e: RuntimeError) -> RuntimeError {
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

    /// Revokes and wipes the account's tokens and cached credentials.
    pub async fn logout(&self, account: &str) -> Result<(), RuntimeError> {
        self.cancel_login(account);
        let report = self.session(account)?.logout().await?;
        self.inner.credentials.forget_account(account);
        if let Some(note) = report.revocation_note {
            info!(account, note = %note, "logged out without revocation");
        }
        self.changed();
        Ok(())
    }

    /// Refreshes the account's tokens now.
    pub async fn refresh_now(&self, account: &str) -> Result<(), RuntimeError> {
        self.session(account)?.refresh_now().await?;
        self.changed();
        Ok(())
    }

    /// Credentials of a service (used by the in-process CLI paths and tests).
    pub async fn credentials(
        &self,
        service: &str,
    ) -> Result<Arc<latchkey_core::credentials::CredentialValues>, RuntimeError> {
        let values = self.inner.credentials.get(service).await;
        self.changed();
        Ok(values?)
    }

    /// Stores the Auth Gateway API key in the keychain.
    pub async fn set_gateway_api_key(&self, key: Secret) -> Result<(), RuntimeError> {
        self.inner.credentials.set_api_key(key).await?;
        Ok(())
    }

    /// Local clients.
    pub fn list_clients(&self) -> Vec<ClientView> {
        self.inner
            .clients
            .list()
            .into_iter()
            .map(client_view)
            .collect()
    }

    /// Creates a client and returns its token once.
    pub fn create_client(
        &self,
        name: &str,
        services: &[String],
    ) -> Result<CreatedClient, RuntimeError> {
        self.create_client_with(name, services, &ClientOptions::default())
    }

    /// [`Latchkey::create_client`] with `options` (for example the right to read raw
    /// credentials).
    pub fn create_client_with(
        &self,
        name: &str,
        services: &[String],
        options: &ClientOptions,
    ) -> Result<CreatedClient, RuntimeError> {
        for s in services {
            if self.config().service(s).is_none() && !self.servers().contains(s) {
                return Err(RuntimeError::unknown_service(s));
            }
        }
        let name = ClientName::parse(name)?;
        let (info, token) = self.inner.clients.add_with(&name, services, options)?;
        Ok(CreatedClient {
            client: client_view(info),
            token: token.expose().to_owned(),
        })
    }

    /// Revokes a client and all its tokens.
    pub fn revoke_client(&self, name: &str) -> Result<(), RuntimeError> {
        let name = ClientName::parse(name)?;
        if self.inner.clients.revoke(&name)? {
            Ok(())
        } else {
            Err(RuntimeError::unknown_client(name.as_str()))
        }
    }

    /// A page of the audit log, newest first.
    pub async fn query_activity(&self, filter: ActivityFilter) -> Result<AuditPage, RuntimeError> {
        let status = match filter.status.as_deref() {
            None | Some("") => None,
            Some("ok") => Some(StatusClass::Ok),
            Some("client_error") => Some(StatusClass::ClientError),
            Some("server_error") => Some(StatusClass::ServerError),
            Some(other) => {
                return Err(RuntimeError::invalid_input(format!(
                    "unknown status filter `{other}`"
                )));
            }
        };
        let filter = AuditFilter {
            kind: (!filter.include_control).then_some(latchkey_store::AuditKind::Client),
            client: filter.client.filter(|c| !c.is_empty()),
            service: filter.service.filter(|s| !s.is_empty()),
            status,
            before_id: filter.before_id,
            limit: filter.limit.clamp(1, 500),
        };
        Ok(self.inner.audit.query(&filter).await?)
    }

    /// Requests and errors per service for the activity chart: the last `span` (`hour`, in
    /// minutes, or `day`, in hours), from the audit log's client traffic.
    pub async fn activity_chart(&self, span: &str) -> Result<ActivityBuckets, RuntimeError> {
        let (bucket, count) = match span {
            "hour" => (Duration::from_secs(60), 60),
            "day" => (Duration::from_secs(3600), 24),
            other => {
                return Err(RuntimeError::invalid_input(format!(
                    "unknown activity span `{other}`; use `hour` or `day`"
                )));
            }
        };
        let now_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(i64::MAX);
        Ok(self.inner.audit.buckets(now_ms, bucket, count).await?)
    }

    /// Open proxied connections and streams.
    pub fn list_connections(&self) -> Vec<ConnectionView> {
        self.inner
            .connections
            .list()
            .into_iter()
            .map(|c| ConnectionView {
                id: c.id.to_string(),
                client: c.client,
                service: c.service,
                kind: c.kind.as_str().to_owned(),
                started_at: c.started_at,
                last_activity_at: c.last_activity_at,
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                events: c.events,
            })
            .collect()
    }

    /// Closes one connection (and its upstream request).
    pub fn close_connection(&self, id: &str) -> Result<(), RuntimeError> {
        if self.inner.connections.close(id) {
            Ok(())
        } else {
            Err(RuntimeError::not_found("connection", id))
        }
    }

    /// A valid access token for scripts (`latchkey token`), refreshed first when due.
    pub async fn access_token(&self, account: &str) -> Result<Secret, RuntimeError> {
        let token = self.session(account)?.access_token().await?;
        self.changed();
        Ok(token)
    }

    /// Stores the named secrets of a `source = "manual"` service in the keychain.
    pub async fn set_manual_secret(
        &self,
        service: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.inner.credentials.set_manual(service, values).await?;
        self.changed();
        Ok(())
    }

    /// An additional token for an existing client (e.g. written into a host's config file).
    pub fn issue_client_token(
        &self,
        client: &str,
        label: &str,
    ) -> Result<ClientToken, RuntimeError> {
        let name = ClientName::parse(client)?;
        Ok(self.inner.clients.issue_token(&name, label)?)
    }

    /// A stored token for an existing client labelled `label`, replacing the client's previous
    /// token of that label; with `expires_in` it stops working after that long.
    pub fn issue_client_token_expiring(
        &self,
        client: &str,
        label: &str,
        expires_in: Option<Duration>,
    ) -> Result<ClientToken, RuntimeError> {
        let name = ClientName::parse(client)?;
        Ok(self
            .inner
            .clients
            .issue_token_expiring(&name, label, expires_in)?)
    }

    /// A client's stored tokens: label, created, last used, expiry (never the token).
    pub fn client_tokens(&self, client: &str) -> Result<Vec<TokenInfo>, RuntimeError> {
        let name = ClientName::parse(client)?;
        Ok(self.inner.clients.tokens(&name)?)
    }

    /// Revokes one stored token of a client, by label; its other tokens keep working.
    pub fn revoke_client_token(&self, client: &str, label: &str) -> Result<(), RuntimeError> {
        let name = ClientName::parse(client)?;
        if self.inner.clients.revoke_token(&name, label)? {
            Ok(())
        } else {
            Err(RuntimeError::not_found("token labelled", label))
        }
    }

    /// A short-lived, memory-only token for a client (`latchkey headers`, `latchkey mcp-stdio`).
    pub fn issue_ephemeral_token(
        &self,
        client: &str,
        ttl: Duration,
    ) -> Result<ClientToken, RuntimeError> {
        let name = ClientName::parse(client)?;
        Ok(self.inner.clients.issue_ephemeral(&name, ttl)?)
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

fn client_view(info: latchkey_store::ClientInfo) -> ClientView {
    ClientView {
        name: info.name.to_string(),
        services: info.services,
        created_at: info.created_at,
        last_used_at: info.last_used_at,
        raw_credentials: info.raw_credentials,
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
