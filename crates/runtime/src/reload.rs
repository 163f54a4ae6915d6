//! Live configuration (issue 11, item 3): the running instance watches its configuration file
//! and applies a valid change within a second, with no restart. What a change touches (the
//! configuration, the sessions by account and the credentials built from both) is one
//! [`Snapshot`], swapped whole, so a request sees the old set or the new one, never a mix; the
//! proxy's routes and rate limit are swapped the same way ([`ProxyState::reconfigure`]), and an
//! exchange already under way keeps the route it started with. An invalid edit, or a missing
//! file, changes nothing and is shown in the overview, the tray and `latchkey status` until it
//! is fixed. Only the listen address needs a restart, and says so.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use latchkey_core::config::{Config, ConfigError};
use latchkey_core::credentials::Credentials;
use latchkey_core::gateway::GatewayClient;
use latchkey_core::session::Session;
use latchkey_proxy::ProxyState;

use crate::Latchkey;
use crate::tray::{TrayIcon, TrayStatus};
use crate::view::{ConfigProblem, ConfigState, ConfigView};

/// How long the file must stay quiet after a change before it is read: editors write a file in
/// several steps (truncate and write, or write a copy and rename it over).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What one version of the configuration file puts in force.
pub(crate) struct Snapshot {
    pub(crate) config: Arc<Config>,
    /// By account name.
    pub(crate) sessions: BTreeMap<String, Arc<Session>>,
    pub(crate) credentials: Arc<Credentials>,
}

/// The configuration in force and the file's state, shared by the instance's handles.
pub(crate) struct Live {
    path: PathBuf,
    current: RwLock<Arc<Snapshot>>,
    view: Mutex<ConfigView>,
    /// The text last applied, so a write that changes nothing (or a change this instance made
    /// and applied itself, such as `[[servers]]` added from the window) is not applied twice.
    applied_text: Mutex<Option<String>>,
    /// Stops the refresher and state watcher of each account's session: a child of the
    /// instance's shutdown token, cancelled alone when the account leaves the configuration.
    session_stops: Mutex<HashMap<String, CancellationToken>>,
    /// The proxy whose routes follow the file, once it serves.
    proxy: Mutex<Option<ProxyState>>,
    /// One reload at a time (the watcher, and a caller that asks for one).
    reloading: tokio::sync::Mutex<()>,
}

/// The configuration file read at start: what to run with, and what to show.
pub(crate) struct Initial {
    pub(crate) config: Config,
    text: Option<String>,
    view: ConfigView,
}

impl Initial {
    /// A configuration already loaded (a one-shot command, which refuses a bad file).
    pub(crate) fn loaded(config: Config) -> Self {
        Self {
            config,
            text: None,
            view: ConfigView {
                state: ConfigState::Loaded,
                path: String::new(),
                error: None,
                restart_needed: None,
            },
        }
    }
}

/// Reads the file at start. A missing or invalid file is not fatal: the instance runs with
/// nothing configured and shows why, and picks the file up once it is there and valid.
pub(crate) fn load_initial(path: &Path) -> Initial {
    match Config::load_with_text(path) {
        Ok((config, text)) => Initial {
            config,
            text: Some(text),
            view: view(path, ConfigState::Loaded, None),
        },
        Err(e) => {
            let (state, problem) = describe(&e);
            warn!(code = %e.code(), "configuration not loaded");
            Initial {
                config: Config::default(),
                text: None,
                view: view(path, state, problem),
            }
        }
    }
}

impl Live {
    pub(crate) fn new(path: PathBuf, initial: &Initial, snapshot: Snapshot) -> Self {
        Self {
            path,
            current: RwLock::new(Arc::new(snapshot)),
            view: Mutex::new(initial.view.clone()),
            applied_text: Mutex::new(initial.text.clone()),
            session_stops: Mutex::new(HashMap::new()),
            proxy: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The snapshot in force (a clone of its `Arc`: no lock is held afterwards).
    pub(crate) fn get(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, snapshot: Snapshot) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
    }

    /// The file's state for the overview.
    pub(crate) fn view(&self) -> ConfigView {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_view(&self, next: ConfigView) -> bool {
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let changed = *view != next;
        *view = next;
        changed
    }

    /// Remembers the proxy whose routes follow the file.
    pub(crate) fn set_proxy(&self, state: ProxyState) {
        *self.proxy.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }

    fn proxy(&self) -> Option<ProxyState> {
        self.proxy.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The sessions of the running instance, looked up in the snapshot in force.
pub(crate) struct LiveSessions(pub(crate) Arc<Live>);

impl LiveSessions {
    /// The session of `account`.
    pub(crate) fn get(&self, account: &str) -> Option<Arc<Session>> {
        self.0.get().sessions.get(account).cloned()
    }

    /// How many accounts there are.
    pub(crate) fn len(&self) -> usize {
        self.0.get().sessions.len()
    }

    /// Every session with its account name.
    pub(crate) fn iter(&self) -> std::vec::IntoIter<(String, Arc<Session>)> {
        self.0
            .get()
            .sessions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
            .into_iter()
    }
}

impl IntoIterator for &LiveSessions {
    type Item = (String, Arc<Session>);
    type IntoIter = std::vec::IntoIter<(String, Arc<Session>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The credentials of the running instance, as built for the snapshot in force.
pub(crate) struct LiveCredentials(pub(crate) Arc<Live>);

impl LiveCredentials {
    /// The credentials in force (hold the `Arc` across an await, never a lock).
    pub(crate) fn current(&self) -> Arc<Credentials> {
        self.0.get().credentials.clone()
    }

    /// See [`Credentials::get`].
    pub(crate) async fn get(
        &self,
        service: &str,
    ) -> Result<
        Arc<latchkey_core::credentials::CredentialValues>,
        latchkey_core::credentials::CredentialsError,
    > {
        self.current().get(service).await
    }

    /// See [`Credentials::statuses`].
    pub(crate) fn statuses(&self) -> Vec<latchkey_core::credentials::ServiceStatus> {
        self.current().statuses()
    }

    /// See [`Credentials::warm_from_keychain`].
    pub(crate) async fn warm_from_keychain(&self) {
        self.current().warm_from_keychain().await;
    }

    /// See [`Credentials::forget_account`].
    pub(crate) fn forget_account(&self, account: &str) {
        self.current().forget_account(account);
    }

    /// See [`Credentials::set_api_key`].
    pub(crate) async fn set_api_key(
        &self,
        key: latchkey_core::secret::Secret,
    ) -> Result<(), latchkey_core::credentials::CredentialsError> {
        self.current().set_api_key(key).await
    }

    /// See [`Credentials::set_manual`].
    pub(crate) async fn set_manual(
        &self,
        service: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<(), latchkey_core::credentials::CredentialsError> {
        self.current().set_manual(service, values).await
    }
}

fn describe(e: &ConfigError) -> (ConfigState, Option<ConfigProblem>) {
    match e {
        ConfigError::NotFound { .. } => (ConfigState::Missing, None),
        ConfigError::Invalid {
            line,
            column,
            message,
            fix,
            ..
        } => (
            ConfigState::Invalid,
            Some(ConfigProblem {
                line: *line,
                column: *column,
                message: message.clone(),
                fix: fix.clone(),
            }),
        ),
        other => (
            ConfigState::Invalid,
            Some(ConfigProblem {
                line: 0,
                column: 0,
                message: other.to_string(),
                fix: "make the file readable by this user".to_owned(),
            }),
        ),
    }
}

fn view(path: &Path, state: ConfigState, error: Option<ConfigProblem>) -> ConfigView {
    ConfigView {
        state,
        path: path.display().to_string(),
        error,
        restart_needed: None,
    }
}

/// The tray's line while the file is missing ("Set up Latchkey…") or invalid (file, line and
/// fix), or needs a restart; otherwise `status` as it is.
pub(crate) fn with_config_state(status: TrayStatus, config: &ConfigView) -> TrayStatus {
    match (&config.state, &config.error) {
        (ConfigState::Missing, _) => TrayStatus {
            icon: TrayIcon::LoggedOut,
            title: "Set up Latchkey…".to_owned(),
            tooltip: format!("No configuration yet ({})", config.path),
            warn_expiry: false,
            renewing: false,
        },
        (ConfigState::Invalid, Some(problem)) => TrayStatus {
            icon: TrayIcon::Error,
            title: format!(
                "Configuration error at {}:{}: {}",
                config.path, problem.line, problem.message
            ),
            tooltip: format!("fix: {}", problem.fix),
            warn_expiry: false,
            renewing: false,
        },
        _ => match &config.restart_needed {
            Some(note) => TrayStatus {
                tooltip: format!("{} · {note}", status.tooltip),
                ..status
            },
            None => status,
        },
    }
}

/// Builds the credentials for `config` over `sessions`.
pub(crate) fn credentials_for(
    lk_http: &reqwest::Client,
    config: &Arc<Config>,
    sessions: &BTreeMap<String, Arc<Session>>,
    vault: &latchkey_core::vault::Vault,
    clock: &latchkey_core::session::Clock,
) -> Arc<Credentials> {
    let gateway = config
        .gateway
        .as_ref()
        .map(|g| GatewayClient::new(lk_http.clone(), g.url.clone(), g.timeout));
    Arc::new(Credentials::new(
        config.clone(),
        sessions.clone(),
        gateway,
        vault.clone(),
        clock.clone(),
    ))
}

impl Latchkey {
    /// Starts the refresher and the state watcher of `session`, stopped at shutdown or when its
    /// account leaves the configuration.
    pub(crate) fn watch_session(&self, account: &str, session: Arc<Session>) {
        let stop = self.inner.shutdown.child_token();
        if let Some(old) = self
            .inner
            .live
            .session_stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.to_owned(), stop.clone())
        {
            old.cancel();
        }
        self.spawn(
            session
                .clone()
                .run_refresher(stop.clone().cancelled_owned()),
        );
        let me = self.clone();
        let mut rx = session.subscribe();
        self.spawn(async move {
            loop {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    () = stop.cancelled() => return,
                }
                me.changed();
            }
        });
    }

    /// Watches the configuration file's directory (editors replace the file by renaming a copy
    /// over it) and reloads after each burst of changes.
    pub(crate) fn watch_config(&self) {
        let path = self.inner.live.path.clone();
        let Some(dir) = path.parent().map(Path::to_owned) else {
            return;
        };
        if let Err(e) = std::fs::create_dir_all(&dir) {
            warn!(kind = ?e.kind(), "configuration directory not created; edits are not watched");
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let file_name = path.file_name().map(std::ffi::OsStr::to_owned);
        let handler = move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(event) => event
                    .paths
                    .iter()
                    .any(|p| p.file_name() == file_name.as_deref()),
                // Lost events: read the file again to be sure.
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "configuration file not watched");
                return;
            }
        };
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            warn!(error = %e, "configuration file not watched");
            return;
        }
        let me = self.clone();
        let stop = self.inner.shutdown.clone();
        self.spawn(async move {
            // Owned by the task: dropping it stops the OS watch.
            let _watcher = watcher;
            loop {
                tokio::select! {
                    event = rx.recv() => if event.is_none() { return },
                    () = stop.cancelled() => return,
                }
                // Debounce: wait for the burst to end.
                loop {
                    tokio::select! {
                        more = tokio::time::timeout(DEBOUNCE, rx.recv()) => match more {
                            Ok(Some(())) => continue,
                            Ok(None) => return,
                            Err(_) => break,
                        },
                        () = stop.cancelled() => return,
                    }
                }
                me.reload_config().await;
            }
        });
    }

    /// Reads the configuration file again and applies it when it is valid and changed; an
    /// invalid or missing file changes nothing and is reported in the overview.
    pub async fn reload_config(&self) {
        let live = &self.inner.live;
        let _one = live.reloading.lock().await;
        let path = live.path.clone();
        let read = tokio::task::spawn_blocking(move || Config::load_with_text(&path)).await;
        let (config, text) = match read {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => {
                let (state, problem) = describe(&e);
                if let Some(p) = &problem {
                    warn!(
                        line = p.line,
                        "configuration edit refused; the previous one stays"
                    );
                }
                let mut next = view(&live.path, state, problem);
                next.restart_needed = live.view().restart_needed;
                if live.set_view(next) {
                    self.changed();
                }
                return;
            }
            Err(_) => return,
        };
        let unchanged = live
            .applied_text
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            == Some(text.as_str());
        if !unchanged {
            self.apply(config).await;
            *live.applied_text.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
        }
        let mut next = view(&live.path, ConfigState::Loaded, None);
        next.restart_needed = self.restart_note();
        if live.set_view(next) || !unchanged {
            self.changed();
        }
    }

    /// What the file asks for that only a restart applies, as one sentence ("restart Latchkey
    /// to listen on …; …"): the listen address (unless the tray's port setting wins), the
    /// connection cap and `[::1]` of a serving instance, and the activity log's retention, all
    /// read once at start. `None` when the file and the running instance agree.
    fn restart_note(&self) -> Option<String> {
        let config = self.config();
        let started = &self.inner.started_with;
        let mut needs = Vec::new();
        if let Some(served) = self.inner.proxy_addr {
            let wanted = config.proxy.listen;
            if self.inner.port_override.is_none()
                && (wanted.port() != served.port() || wanted.ip() != served.ip())
            {
                needs.push(format!("listen on {wanted} (it still listens on {served})"));
            }
            if config.proxy.max_connections != started.proxy.max_connections {
                needs.push(format!(
                    "serve up to {} connections (it still serves up to {})",
                    config.proxy.max_connections, started.proxy.max_connections
                ));
            }
            if config.proxy.ipv6 != started.proxy.ipv6 {
                needs.push(if config.proxy.ipv6 {
                    "listen on [::1] as well (it still listens on IPv4 only)".to_owned()
                } else {
                    "stop listening on [::1] (it still listens there)".to_owned()
                });
            }
        }
        if config.audit != started.audit {
            needs.push(format!(
                "keep the activity log for {} days or {} rows (it still keeps {} days or {} rows)",
                config.audit.retention.as_secs() / 86_400,
                config.audit.max_rows,
                started.audit.retention.as_secs() / 86_400,
                started.audit.max_rows
            ));
        }
        (!needs.is_empty()).then(|| format!("restart Latchkey to {}", needs.join("; ")))
    }

    /// Puts `config` in force: sessions for new or changed accounts restored from the keychain,
    /// removed accounts' sessions dropped from memory (their tokens stay in the keychain), the
    /// credentials rebuilt, then one swap, then the proxy's routes and rate limit.
    async fn apply(&self, config: Config) {
        let config = Arc::new(config);
        let live = &self.inner.live;
        let old = live.get();
        let mut sessions = BTreeMap::new();
        let mut started = Vec::new();
        for account in &config.accounts {
            let name = account.name.to_string();
            match old.sessions.get(&name) {
                Some(s) if s.account() == account => {
                    sessions.insert(name, s.clone());
                }
                _ => {
                    let session = Arc::new(Session::new(
                        account.clone(),
                        self.inner.vault.clone(),
                        self.inner.http.clone(),
                        self.inner.clock.clone(),
                    ));
                    if let Err(e) = session.restore().await {
                        warn!(account = %name, code = %e.code(), "session not restored");
                    }
                    started.push((name.clone(), session.clone()));
                    sessions.insert(name, session);
                }
            }
        }
        let credentials = credentials_for(
            &self.inner.http,
            &config,
            &sessions,
            &self.inner.vault,
            &self.inner.clock,
        );
        credentials.carry_over(&old.credentials).await;
        credentials.warm_from_keychain().await;
        let gone: Vec<String> = old
            .sessions
            .keys()
            .filter(|k| !sessions.contains_key(*k) || started.iter().any(|(n, _)| n == *k))
            .cloned()
            .collect();
        live.set(Snapshot {
            config: config.clone(),
            sessions,
            credentials,
        });
        for name in gone {
            if let Some(stop) = live
                .session_stops
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name)
            {
                stop.cancel();
            }
        }
        for (name, session) in started {
            self.watch_session(&name, session);
        }
        if let Some(proxy) = live.proxy() {
            let applied = crate::source::proxy_config(&config, 0).and_then(|routes| {
                proxy
                    .reconfigure(routes.services, routes.rate_limit)
                    .map_err(crate::RuntimeError::from)
            });
            if let Err(e) = applied {
                warn!(code = %e.code, "proxy routes not reloaded");
            }
        }
        info!(
            services = config.services.len(),
            accounts = config.accounts.len(),
            "configuration reloaded"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use latchkey_core::paths::Paths;
    use latchkey_core::vault::{MemoryStore, Vault};

    use crate::view::ConfigState;
    use crate::{Latchkey, StartOptions};

    const ACCOUNT: &str = "version = 1\n\n[[accounts]]\nname = \"work\"\nissuer = \"https://idp.example.com\"\nclient_id = \"latchkey\"\n";

    fn with_service(name: &str) -> String {
        format!(
            "{ACCOUNT}\n[[services]]\nname = \"{name}\"\naccount = \"work\"\nsource = \"manual\"\nupstream = \"http://127.0.0.1:9\"\nallow_loopback_http = true\ncredentials = [{{ name = \"key\", header = \"X-Api-Key\" }}]\n"
        )
    }

    /// Waits (on the instance's change signal, with a deadline) until `check` holds.
    async fn until(lk: &Latchkey, what: &str, check: impl Fn(&Latchkey) -> bool) {
        let mut changes = lk.subscribe();
        let wait = async {
            while !check(lk) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(5), wait)
                .await
                .is_ok(),
            "{what} within 5 s"
        );
    }

    async fn refusal(lk: &Latchkey, token: &str, service: &str) -> String {
        let addr = lk.proxy_addr().expect("serving");
        let response = reqwest::Client::new()
            .get(format!("http://{addr}/{service}/x"))
            .header("x-latchkey-client", token)
            .send()
            .await
            .expect("request");
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        body["error"].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn a_missing_file_starts_empty_and_later_edits_are_applied_or_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = Paths::new(dir.path().join("config"), dir.path().join("data"));
        let lk = Latchkey::start(StartOptions {
            paths: paths.clone(),
            proxy_port: Some(0),
            vault: Some(Vault::new(Arc::new(MemoryStore::new()))),
            serve_proxy: true,
        })
        .await
        .expect("starts without a configuration file");
        let overview = lk.overview();
        assert_eq!(overview.config.state, ConfigState::Missing);
        assert_eq!(lk.tray_status().title, "Set up Latchkey…");
        let json = serde_json::to_value(&overview).expect("json");
        assert_eq!(json["config"]["state"], "missing", "{json}");

        // An invalid file: reported with its line, nothing configured.
        std::fs::write(paths.config_file(), with_service("V1")).expect("write");
        until(&lk, "the invalid file is reported", |lk| {
            lk.overview().config.state == ConfigState::Invalid
        })
        .await;
        let config = lk.overview().config;
        let problem = config.error.expect("error");
        assert_eq!(problem.line, 9, "{problem:?}");
        assert!(problem.message.contains("reserved"), "{problem:?}");
        assert!(lk.tray_status().title.contains("config.toml:9"));
        assert!(lk.config().accounts.is_empty());

        // Fixed: applied, the service is routed.
        std::fs::write(paths.config_file(), with_service("svc")).expect("write");
        until(&lk, "the fixed file is applied", |lk| {
            lk.overview().config.state == ConfigState::Loaded
        })
        .await;
        assert!(lk.config().service("svc").is_some());
        assert_eq!(lk.overview().accounts.len(), 1, "the new account's session");
        let token = lk
            .create_client("t", &["svc".to_owned()])
            .expect("client")
            .token;
        assert_ne!(refusal(&lk, &token, "svc").await, "unknown_service");

        // An invalid edit keeps the routes in force.
        std::fs::write(paths.config_file(), with_service("OAuth")).expect("write");
        until(&lk, "the invalid edit is reported", |lk| {
            lk.overview().config.state == ConfigState::Invalid
        })
        .await;
        assert_ne!(refusal(&lk, &token, "svc").await, "unknown_service");

        // Renamed: the old name is unknown, the new one routed.
        std::fs::write(paths.config_file(), with_service("svc2")).expect("write");
        until(&lk, "the rename is applied", |lk| {
            lk.config().service("svc2").is_some()
        })
        .await;
        assert_eq!(refusal(&lk, &token, "svc").await, "unknown_service");
        assert_eq!(lk.overview().config.state, ConfigState::Loaded);
        lk.shutdown().await;
    }
}
