//! Remote MCP servers in the running instance (PROTOCOL §6): adding one by URL (discovery,
//! registration and the login, the `[[servers]]` entry written only once the login succeeded),
//! logging in again or stepping up, removing (revocation, keychain wipe, entry removed), each
//! applied to the proxy at once, and the answers the proxy needs when a server refuses a token.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use tokio::task::AbortHandle;
use tracing::{info, warn};
use url::Url;

use latchkey_core::Code;
use latchkey_core::config::{self, Name, ServerSettings};
use latchkey_core::credentials::CredentialValues;
use latchkey_core::remote::{RemoteError, RemoteServer, ServerState};
use latchkey_core::secret::Secret;
use latchkey_proxy::{CredentialError, ProxyState, UpstreamRefusal};

use crate::login::Logins;
use crate::tray::{LOGIN_REQUEST_SHOWN_SECONDS, TrayIcon, TrayStatus};
use crate::view::{LoginFailure, LoginRequest, ServerView};
use crate::{Latchkey, RuntimeError};

/// What adding a server needs besides its URL.
#[derive(Debug, Clone, Default)]
pub struct AddServer {
    /// The proxy name (default: from the URL's host).
    pub name: Option<String>,
    /// A client id registered beforehand at the server's authorization server.
    pub client_id: Option<String>,
    /// That client's secret (a confidential client): kept in the keychain, never in the file.
    pub client_secret: Option<Secret>,
    /// Scopes to ask for instead of the ones the server advertises.
    pub scopes: Option<Vec<String>>,
    /// A fixed loopback callback port, for authorization servers that match redirect URIs
    /// exactly (port included).
    pub callback_port: Option<u16>,
    /// Allow plain `http://` on loopback hosts (local servers, tests).
    pub allow_insecure_loopback: bool,
}

/// A server being added: its name and the page to open.
#[derive(Debug, Clone)]
pub struct AddedServer {
    /// The name chosen (given, or from the URL's host).
    pub name: String,
    /// The authorization URL to open.
    pub authorize_url: Url,
}

/// The instance's remote servers.
#[derive(Default)]
pub(crate) struct Servers {
    /// Configured servers (in the file), by name.
    ready: RwLock<BTreeMap<String, Arc<RemoteServer>>>,
    /// Servers being added: listed, not yet in the file or the proxy.
    adding: RwLock<BTreeMap<String, Arc<RemoteServer>>>,
    /// Pending logins by server name.
    logins: Logins,
    /// The background refresher of each configured server (aborted when it is removed, even
    /// mid-refresh; it stops by itself at shutdown).
    refreshers: Mutex<HashMap<String, AbortHandle>>,
    /// The last login failure per server, until its next login starts or succeeds.
    errors: Mutex<HashMap<String, LoginFailure>>,
    /// The latest request refused for want of a login (or step-up) per server, until a login
    /// succeeds.
    requests: Mutex<HashMap<String, LoginRequest>>,
    /// The proxy, once serving, to add and remove routes.
    pub(crate) proxy: Mutex<Option<ProxyState>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|p| p.into_inner())
}

impl Servers {
    /// The configured server named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<RemoteServer>> {
        read(&self.ready).get(name).cloned()
    }

    /// Whether a configured server has this name.
    pub(crate) fn contains(&self, name: &str) -> bool {
        read(&self.ready).contains_key(name)
    }
}

fn remote_error(e: &RemoteError) -> RuntimeError {
    RuntimeError::new(e.code(), e.to_string())
}

fn unknown_server(name: &str) -> RuntimeError {
    RuntimeError::new(
        Code::UnknownServer,
        format!("no remote MCP server `{name}`: see `latchkey server list`"),
    )
}

/// The proxy route of a server: its origin, with `Authorization: Bearer <access token>`.
fn route(settings: &ServerSettings) -> Result<latchkey_proxy::Route, RuntimeError> {
    let mut origin = settings.url.clone();
    origin.set_path("/");
    origin.set_query(None);
    let injection = latchkey_proxy::Injection {
        credential: latchkey_core::remote::ACCESS_TOKEN.to_owned(),
        target: latchkey_proxy::InjectTarget::header("Authorization", "Bearer ")?,
    };
    Ok(latchkey_proxy::Route::new(
        settings.name.as_str(),
        origin,
        vec![injection],
    )?)
}

/// A name from the URL's host: `mcp.linear.app` → `linear`; an IP address → `mcp`.
fn default_name(url: &Url) -> String {
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        _ => return "mcp".to_owned(),
    };
    let label = host
        .split('.')
        .find(|l| !matches!(*l, "mcp" | "www" | "api"))
        .unwrap_or("mcp");
    let name: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    if name.is_empty() {
        "mcp".to_owned()
    } else {
        name
    }
}

impl Latchkey {
    pub(crate) fn servers(&self) -> &Servers {
        &self.inner.servers
    }

    /// A server with the instance's keychain and Client ID Metadata Document URL.
    fn remote_server(
        &self,
        settings: ServerSettings,
        client_secret: Option<Secret>,
    ) -> Result<RemoteServer, RemoteError> {
        Ok(RemoteServer::new(settings, self.inner.vault.clone())?
            .with_client_secret(client_secret)
            .with_metadata_document_url(self.config().client_metadata_url.clone()))
    }

    /// Starts the background refresher of a configured server (replacing one it had).
    fn start_refresher(&self, server: &Arc<RemoteServer>) {
        let task = self
            .spawn(server.clone().run_refresher(self.shutdown_signal()))
            .abort_handle();
        if let Some(old) = lock(&self.servers().refreshers).insert(server.name().to_owned(), task) {
            old.abort();
        }
    }

    /// Loads the configured servers' registrations and tokens from the keychain (no network),
    /// and starts their background refreshers.
    pub(crate) async fn restore_servers(&self) {
        for settings in &self.config().servers {
            let server = match self.remote_server(settings.clone(), None) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    warn!(server = %settings.name, code = %e.code(), "server not loaded");
                    continue;
                }
            };
            if let Err(e) = server.restore().await {
                warn!(server = %settings.name, code = %e.code(), "server tokens not restored");
            }
            self.start_refresher(&server);
            write(&self.servers().ready).insert(settings.name.to_string(), server);
        }
    }

    /// Adds every configured server's route to a proxy that starts serving.
    pub(crate) fn route_servers(&self, proxy: &ProxyState) -> Result<(), RuntimeError> {
        for server in read(&self.servers().ready).values() {
            proxy.add_server_route(route(server.settings())?)?;
        }
        *lock(&self.servers().proxy) = Some(proxy.clone());
        Ok(())
    }

    /// The servers for the overview.
    pub fn server_views(&self) -> Vec<ServerView> {
        let proxy = self.proxy_url();
        let errors = lock(&self.servers().errors).clone();
        let view = |server: &Arc<RemoteServer>| {
            let status = server.status();
            let settings = server.settings();
            let name = settings.name.to_string();
            let last_login_error = errors.get(&name).cloned();
            let login_requested = lock(&self.servers().requests).get(&name).cloned();
            let message = match (&status.state, &last_login_error) {
                (ServerState::Ready, _) => None,
                (_, Some(failure)) if !failure.is_cancel() => Some(failure.message.clone()),
                _ => status.message.clone(),
            };
            ServerView {
                proxy_url: format!(
                    "{proxy}/{name}{}",
                    settings.url.path().trim_end_matches('/')
                ),
                url: settings.url.to_string(),
                issuer: status.issuer,
                state: status.state,
                expires_at: status.expires_at,
                scopes: status.scopes,
                message,
                last_login_error,
                login_requested,
                name,
            }
        };
        let mut views: Vec<ServerView> = read(&self.servers().ready).values().map(view).collect();
        views.extend(read(&self.servers().adding).values().map(view));
        views
    }

    /// Adds a remote MCP server by URL with default settings; see [`Latchkey::add_server_with`].
    pub async fn add_server(&self, url: &str, name: Option<&str>) -> Result<Url, RuntimeError> {
        let options = AddServer {
            name: name.map(str::to_owned),
            ..AddServer::default()
        };
        self.add_server_with(url, options)
            .await
            .map(|added| added.authorize_url)
    }

    /// Adds a remote MCP server by URL: discovers its authorization server, registers, and
    /// returns the authorization URL to open. The login completes in the background (watch
    /// [`Latchkey::subscribe`], or [`Latchkey::wait_server_login`]); only then is the
    /// `[[servers]]` entry written and the proxy route served. Any refusal stores nothing and
    /// carries the engine's code (`mcp_oauth_*`).
    pub async fn add_server_with(
        &self,
        url: &str,
        options: AddServer,
    ) -> Result<AddedServer, RuntimeError> {
        let url = Url::parse(url.trim()).map_err(|e| {
            RuntimeError::new(
                Code::McpOauthInvalidServerUrl,
                format!("`{url}` is not a URL ({e}); give the MCP server's full https:// URL"),
            )
        })?;
        config::check_server_url(&url, options.allow_insecure_loopback).map_err(
            |(message, fix)| {
                RuntimeError::new(Code::McpOauthInvalidServerUrl, format!("{message}: {fix}"))
            },
        )?;
        let name = options.name.unwrap_or_else(|| default_name(&url));
        let name = Name::parse(&name).map_err(RuntimeError::invalid_input)?;
        self.check_free_name(name.as_str())?;
        let client_id = options.client_id.filter(|c| !c.trim().is_empty());
        if client_id.is_none() && options.client_secret.is_some() {
            return Err(RuntimeError::invalid_input(
                "a client secret needs the client id it belongs to: add --client-id",
            ));
        }
        let scopes = options
            .scopes
            .map(|s| {
                s.into_iter()
                    .filter(|s| !s.trim().is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty());
        if scopes
            .as_ref()
            .is_some_and(|s| s.iter().any(|s| s.contains(char::is_whitespace)))
        {
            return Err(RuntimeError::invalid_input(
                "a scope contains a space: give the scopes separated by spaces, e.g. --scopes \"read write\"",
            ));
        }
        if options.callback_port == Some(0) {
            return Err(RuntimeError::invalid_input(
                "callback port 0 is not a fixed port: leave --callback-port out for any free port",
            ));
        }
        let settings = ServerSettings {
            name: name.clone(),
            url,
            client_id,
            scopes,
            allow_insecure_loopback: options.allow_insecure_loopback,
            callback_port: options.callback_port,
        };
        let server = Arc::new(
            self.remote_server(settings, options.client_secret)
                .map_err(|e| remote_error(&e))?,
        );
        lock(&self.servers().errors).remove(name.as_str());
        let pending = server.begin_login().await.map_err(|e| remote_error(&e))?;
        let authorize_url = pending.authorize_url().clone();
        write(&self.servers().adding).insert(name.to_string(), server.clone());
        let me = self.clone();
        let key = name.to_string();
        let login = async move {
            let result = match server.complete_login(pending).await {
                Ok(()) => me.commit_server(&server).await,
                Err(e) => Err(remote_error(&e)),
            };
            write(&me.servers().adding).remove(&key);
            if let Err(e) = result {
                me.server_login_failed(&key, e);
            }
        };
        self.spawn_login(|lk| &lk.servers().logins, name.as_str(), login);
        self.changed();
        Ok(AddedServer {
            name: name.to_string(),
            authorize_url,
        })
    }

    /// Refuses a name already used by a service, a server, or a server being added.
    fn check_free_name(&self, name: &str) -> Result<(), RuntimeError> {
        let taken = self.config().service(name).is_some()
            || self.servers().contains(name)
            || read(&self.servers().adding).contains_key(name)
            || name.eq_ignore_ascii_case("v1");
        if taken {
            return Err(RuntimeError::new(
                Code::ServerExists,
                format!(
                    "the name `{name}` is taken by a service or another server: choose another with --name"
                ),
            ));
        }
        Ok(())
    }

    /// After a successful first login: the config entry, then the route. A failure wipes the
    /// tokens just stored, so nothing is left of a server that was not added.
    async fn commit_server(&self, server: &Arc<RemoteServer>) -> Result<(), RuntimeError> {
        let path = self.inner.paths.config_file();
        let settings = server.settings().clone();
        let written =
            tokio::task::spawn_blocking(move || config::edit::add_server(&path, &settings))
                .await
                .map_err(|e| RuntimeError::internal(e.to_string()))
                .and_then(|r| r.map_err(RuntimeError::from));
        let routed = written.and_then(|_| {
            if let Some(proxy) = lock(&self.servers().proxy).as_ref() {
                proxy.add_server_route(route(server.settings())?)?;
            }
            Ok(())
        });
        if let Err(e) = routed {
            if let Err(wipe) = server.remove().await {
                warn!(
                    server = server.name(),
                    code = %wipe.code(),
                    "tokens of a server not added were not wiped"
                );
            }
            return Err(e);
        }
        self.start_refresher(server);
        write(&self.servers().ready).insert(server.name().to_owned(), server.clone());
        info!(server = server.name(), "remote MCP server added");
        Ok(())
    }

    fn server_login_failed(&self, name: &str, e: RuntimeError) {
        warn!(server = name, code = %e.code, "server login failed");
        lock(&self.servers().errors).insert(
            name.to_owned(),
            LoginFailure {
                code: e.code,
                message: e.message,
                at: (self.inner.clock)(),
            },
        );
    }

    /// Logs in to a configured server again (after `needs_login`, or to grant the scopes a
    /// step-up asks for). Returns the authorization URL; completes in the background.
    pub async fn server_login(&self, name: &str) -> Result<Url, RuntimeError> {
        let server = self
            .servers()
            .get(name)
            .ok_or_else(|| unknown_server(name))?;
        self.cancel_server_login(name);
        lock(&self.servers().errors).remove(name);
        let pending = server.begin_login().await.map_err(|e| {
            let e = remote_error(&e);
            self.server_login_failed(name, e.clone());
            self.changed();
            e
        })?;
        let authorize_url = pending.authorize_url().clone();
        let me = self.clone();
        let key = name.to_owned();
        let login = async move {
            match server.complete_login(pending).await {
                Ok(()) => {
                    lock(&me.servers().requests).remove(&key);
                }
                Err(e) => me.server_login_failed(&key, remote_error(&e)),
            }
        };
        self.spawn_login(|lk| &lk.servers().logins, name, login);
        self.changed();
        Ok(authorize_url)
    }

    /// Stops a pending server login (the person closed the login window). A server being added
    /// is forgotten; nothing of it was stored.
    pub fn cancel_server_login(&self, name: &str) {
        if self.servers().logins.cancel(name) {
            if let Some(server) = write(&self.servers().adding).remove(name) {
                server.login_ended();
            }
            if let Some(server) = self.servers().get(name) {
                server.login_ended();
            }
            self.server_login_failed(
                name,
                RuntimeError::new(
                    Code::LoginCancelled,
                    format!("the sign-in to the MCP server `{name}` was cancelled"),
                ),
            );
            self.changed();
        }
    }

    /// Waits for a pending server login (add or re-login) to end; an error says why it failed.
    pub async fn wait_server_login(&self, name: &str) -> Result<(), RuntimeError> {
        let mut changes = self.subscribe();
        while self.servers().logins.contains(name) {
            if changes.changed().await.is_err() {
                break;
            }
        }
        let ready = self
            .servers()
            .get(name)
            .is_some_and(|s| s.status().state == ServerState::Ready);
        match lock(&self.servers().errors).get(name) {
            _ if ready => Ok(()),
            Some(failure) => Err(RuntimeError::new(failure.code, failure.message.clone())),
            None => Err(RuntimeError::new(
                Code::LoginFailed,
                format!("the sign-in to the MCP server `{name}` did not complete; try again"),
            )),
        }
    }

    /// Removes a server: revokes its tokens (RFC 7009, where advertised), deletes every keychain
    /// entry of it, stops its route and removes its `[[servers]]` entry. Returns a note when the
    /// tokens could not be revoked.
    pub async fn remove_server(&self, name: &str) -> Result<Option<String>, RuntimeError> {
        self.cancel_server_login(name);
        let server = self
            .servers()
            .get(name)
            .ok_or_else(|| unknown_server(name))?;
        let note = server.remove().await.map_err(|e| remote_error(&e))?;
        if let Some(proxy) = lock(&self.servers().proxy).as_ref() {
            proxy.remove_server_route(name);
        }
        let path = self.inner.paths.config_file();
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || config::edit::remove_server(&path, &owned))
            .await
            .map_err(|e| RuntimeError::internal(e.to_string()))??;
        write(&self.servers().ready).remove(name);
        lock(&self.servers().requests).remove(name);
        if let Some(refresher) = lock(&self.servers().refreshers).remove(name) {
            refresher.abort();
        }
        lock(&self.servers().errors).remove(name);
        info!(
            server = name,
            revoked = note.is_none(),
            "remote MCP server removed"
        );
        self.changed();
        Ok(note)
    }

    /// Keeps a request the proxy refused for want of a login to the server `name`: the window
    /// and the tray say which server needs a login and who asked. False when no such server.
    pub(crate) fn server_login_requested(&self, name: &str, client: String, at: i64) -> bool {
        if !self.servers().contains(name) {
            return false;
        }
        let request = LoginRequest {
            client,
            service: name.to_owned(),
            at,
        };
        lock(&self.servers().requests).insert(name.to_owned(), request);
        true
    }

    /// Tray statuses of servers that a client asked for while they need a login or a step-up
    /// (within [`LOGIN_REQUEST_SHOWN_SECONDS`]).
    pub(crate) fn server_tray_statuses(&self, now: i64) -> Vec<TrayStatus> {
        let requests = lock(&self.servers().requests).clone();
        let mut statuses = Vec::new();
        for (name, request) in requests {
            let Some(server) = self.servers().get(&name) else {
                continue;
            };
            let state = server.status().state;
            if matches!(state, ServerState::Ready | ServerState::LoggingIn)
                || now - request.at > LOGIN_REQUEST_SHOWN_SECONDS
            {
                continue;
            }
            let what = if state == ServerState::NeedsStepUp {
                "grant more access to"
            } else {
                "sign in to"
            };
            statuses.push(TrayStatus {
                icon: TrayIcon::Expired,
                title: format!(
                    "Log in needed: {} asked for MCP server {name}",
                    request.client
                ),
                tooltip: format!(
                    "Latchkey — {} asked for {name}: {what} the MCP server {name} (`latchkey server login {name}`)",
                    request.client
                ),
                warn_expiry: false,
                renewing: false,
            });
        }
        statuses
    }

    /// The token of a server's route, for the proxy.
    pub(crate) async fn server_credentials(
        &self,
        server: &RemoteServer,
    ) -> Result<Arc<CredentialValues>, CredentialError> {
        let result = server.credentials().await;
        if result.is_err() {
            self.changed();
        }
        result.map_err(|e| credential_error(server, &e))
    }

    /// A server refused a token: refresh once, or say what the person must do.
    pub(crate) async fn server_refused(
        &self,
        server: &RemoteServer,
        used: &Arc<CredentialValues>,
        refusal: UpstreamRefusal,
    ) -> Result<(), CredentialError> {
        let result = match refusal {
            UpstreamRefusal::Unauthorized { retried: false } => server.rejected(used).await,
            UpstreamRefusal::InsufficientScope { scopes } => {
                let scopes = server.step_up(&scopes);
                Err(RemoteError::StepUpRequired {
                    server: server.name().to_owned(),
                    scopes,
                })
            }
            _ => {
                server.refused_after_refresh();
                Err(RemoteError::LoginRequired {
                    server: server.name().to_owned(),
                })
            }
        };
        self.changed();
        result.map_err(|e| credential_error(server, &e))
    }
}

fn credential_error(server: &RemoteServer, e: &RemoteError) -> CredentialError {
    let name = server.name().to_owned();
    match e {
        RemoteError::StepUpRequired { scopes, .. } => CredentialError::ServerStepUpRequired {
            server: name,
            scopes: scopes.clone(),
        },
        RemoteError::Vault(_) => CredentialError::KeychainUnavailable,
        _ => CredentialError::ServerLoginRequired { server: name },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_name_comes_from_the_host() {
        let name = |u: &str| default_name(&Url::parse(u).expect("url"));
        assert_eq!(name("https://mcp.linear.app/mcp"), "linear");
        assert_eq!(name("https://api.githubcopilot.com/mcp/"), "githubcopilot");
        assert_eq!(name("https://docs.example.com/mcp"), "docs");
        assert_eq!(name("http://127.0.0.1:8080/mcp"), "mcp");
    }

    #[test]
    fn a_server_is_routed_at_its_origin_with_a_bearer_token() {
        let settings = ServerSettings {
            name: Name::parse("linear").expect("name"),
            url: Url::parse("https://mcp.linear.app/mcp").expect("url"),
            client_id: None,
            scopes: None,
            allow_insecure_loopback: false,
            callback_port: None,
        };
        let route = route(&settings).expect("route");
        assert_eq!(route.upstream.as_str(), "https://mcp.linear.app/");
        assert_eq!(route.service, "linear");
    }
}
