//! The window's commands: each takes the instance, makes one call on the control API (the window
//! runs in a process of its own; the tray instance holds the runtime), and returns its typed
//! result or `{code, message}`. The only secret that crosses IPC is a newly created client's
//! token, once.
//!
//! Tauri runs a plain `#[tauri::command]` on the main (UI) thread: every command here waits on
//! the instance (or a file: the settings store, the autostart entry), so each is an `async fn` or
//! `#[tauri::command(async)]`, which Tauri runs on its async runtime instead.

use latchkey_core::Code;
use latchkey_core::secret::Secret;
use latchkey_runtime::Control;
use latchkey_runtime::RuntimeError;
use latchkey_runtime::control::{HostEntry, NewClient, NewServer};
use latchkey_runtime::view::{
    ActivityFilter, ClientView, ConnectionView, CreatedClient, HostApplied, HostPreview, HostView,
    Overview, ServerView,
};
use serde::Deserialize;
use tauri::{AppHandle, State};

use crate::Instance;
use crate::settings::{self, Settings};

type Result<T> = std::result::Result<T, RuntimeError>;

/// Everything the first screen shows.
#[tauri::command]
pub async fn overview(lk: State<'_, Instance>) -> Result<Overview> {
    lk.overview().await
}

/// Starts a login in a Latchkey window or the system browser.
#[tauri::command]
pub async fn login(
    app: AppHandle,
    lk: State<'_, Instance>,
    account: String,
    system_browser: Option<bool>,
) -> Result<()> {
    let browser = system_browser.unwrap_or_else(|| settings::load(&app).use_system_browser);
    crate::login::start(&app, &lk, &account, browser).await
}

/// Cancels a pending login.
#[tauri::command]
pub async fn cancel_login(app: AppHandle, lk: State<'_, Instance>, account: String) -> Result<()> {
    crate::login::close_window(&app);
    lk.cancel_login(&account).await
}

/// Logs out: revokes, wipes the keychain entries.
#[tauri::command]
pub async fn logout(lk: State<'_, Instance>, account: String) -> Result<()> {
    lk.logout(&account).await
}

/// Refreshes the account's tokens now.
#[tauri::command]
pub async fn refresh_now(lk: State<'_, Instance>, account: String) -> Result<()> {
    lk.refresh_now(&account).await
}

/// Stores the Auth Gateway API key in the keychain. Write-only: nothing reads it back.
#[tauri::command]
pub async fn set_gateway_api_key(lk: State<'_, Instance>, key: String) -> Result<()> {
    lk.set_gateway_api_key(latchkey_core::secret::Secret::new(key))
        .await
}

/// Local clients (no tokens).
#[tauri::command]
pub async fn list_clients(lk: State<'_, Instance>) -> Result<Vec<ClientView>> {
    lk.list_clients().await
}

/// Creates a client (optionally with the right to read its services' raw credentials, off by
/// default); its token is returned this once.
#[tauri::command]
pub async fn create_client(
    lk: State<'_, Instance>,
    name: String,
    services: Vec<String>,
    allow_raw_credentials: Option<bool>,
) -> Result<CreatedClient> {
    let client = NewClient {
        name,
        services,
        allow_raw_credentials: allow_raw_credentials.unwrap_or(false),
    };
    lk.create_client(&client).await
}

/// Revokes a client.
#[tauri::command]
pub async fn revoke_client(lk: State<'_, Instance>, name: String) -> Result<()> {
    lk.revoke_client(&name).await
}

/// A page of the audit log.
#[tauri::command]
pub async fn query_activity(
    lk: State<'_, Instance>,
    filter: ActivityFilter,
) -> Result<latchkey_runtime::AuditPage> {
    lk.query_activity(filter).await
}

/// Requests and errors per service over the last `span` (`hour` or `day`), for the Activity chart.
#[tauri::command]
pub async fn activity_chart(
    lk: State<'_, Instance>,
    span: String,
) -> Result<latchkey_runtime::ActivityBuckets> {
    lk.activity_chart(&span).await
}

/// Live proxied connections.
#[tauri::command]
pub async fn list_connections(lk: State<'_, Instance>) -> Result<Vec<ConnectionView>> {
    lk.list_connections().await
}

/// Closes one (the upstream is cancelled too).
#[tauri::command]
pub async fn close_connection(lk: State<'_, Instance>, id: String) -> Result<()> {
    lk.close_connection(&id).await
}

/// MCP hosts on this machine.
#[tauri::command]
pub async fn detect_hosts(lk: State<'_, Instance>) -> Result<Vec<HostView>> {
    lk.detect_hosts().await
}

/// The entry that would be added.
#[tauri::command]
pub async fn preview_host_entry(
    lk: State<'_, Instance>,
    host: String,
    client: String,
    service: String,
) -> Result<HostPreview> {
    lk.preview_host_entry(&HostEntry {
        host,
        client,
        service,
    })
    .await
}

/// Adds it, with a backup.
#[tauri::command]
pub async fn apply_host_entry(
    lk: State<'_, Instance>,
    host: String,
    client: String,
    service: String,
) -> Result<HostApplied> {
    lk.apply_host_entry(&HostEntry {
        host,
        client,
        service,
    })
    .await
}

/// Restores the host's file from the newest backup.
#[tauri::command]
pub async fn undo_host_entry(lk: State<'_, Instance>, host: String) -> Result<()> {
    lk.undo_host_entry(&host).await
}

/// What *Add MCP server* sends.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(test, ts(optional_fields = nullable))]
pub struct AddServerRequest {
    /// The server's URL.
    pub url: String,
    /// Its proxy name (default: from the URL).
    pub name: Option<String>,
    /// A client id registered beforehand, when the server's authorization server needs one.
    pub client_id: Option<String>,
    /// That client's secret, for a confidential client: it goes to the keychain with the
    /// registration, never to a file, and is never sent back to the window.
    #[cfg_attr(test, ts(as = "Option<String>"))]
    pub client_secret: Option<Secret>,
    /// Scopes to ask for instead of the ones the server advertises.
    pub scopes: Option<Vec<String>>,
    /// A fixed loopback port for the sign-in's callback, for authorization servers that match
    /// redirect URIs exactly (`http://127.0.0.1:<port>/oauth/callback` registered beforehand).
    pub callback_port: Option<u16>,
    /// Plain `http://` on this computer, allowed explicitly (local servers).
    #[serde(default)]
    #[cfg_attr(test, ts(as = "Option<_>", optional))]
    pub allow_insecure_loopback: bool,
}

impl From<AddServerRequest> for NewServer {
    /// Blank optional fields are left out: a form sends what the person left empty.
    fn from(request: AddServerRequest) -> Self {
        let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        Self {
            url: request.url,
            name: given(request.name),
            client_id: given(request.client_id),
            client_secret: request.client_secret.filter(|s| !s.is_empty()),
            scopes: request.scopes.filter(|s| !s.is_empty()),
            callback_port: request.callback_port,
            allow_insecure_loopback: request.allow_insecure_loopback,
        }
    }
}

/// Adds a remote MCP server and signs in; resolves once it is ready, nothing kept on failure.
#[tauri::command]
pub async fn add_server(
    app: AppHandle,
    lk: State<'_, Instance>,
    request: AddServerRequest,
    system_browser: Option<bool>,
) -> Result<ServerView> {
    let browser = system_browser.unwrap_or_else(|| settings::load(&app).use_system_browser);
    let server = NewServer::from(request);
    crate::login::add_server(&app, &lk, &server, browser).await
}

/// Logs in to a remote MCP server again, or grants it more access.
#[tauri::command]
pub async fn server_login(
    app: AppHandle,
    lk: State<'_, Instance>,
    name: String,
    system_browser: Option<bool>,
) -> Result<()> {
    let browser = system_browser.unwrap_or_else(|| settings::load(&app).use_system_browser);
    crate::login::start_server(&app, &lk, &name, browser).await
}

/// Stops a remote MCP server's pending sign-in (one being added is forgotten).
#[tauri::command]
pub async fn cancel_server_login(
    app: AppHandle,
    lk: State<'_, Instance>,
    name: String,
) -> Result<()> {
    crate::login::close_window(&app);
    lk.cancel_server_login(&name).await
}

/// Removes a remote MCP server: revokes its tokens, wipes them, forgets it. Returns a note when
/// the authorization server offers no revocation.
#[tauri::command]
pub async fn remove_server(lk: State<'_, Instance>, name: String) -> Result<Option<String>> {
    lk.remove_server(&name).await
}
/// Preferences.
#[tauri::command(async)]
pub fn get_settings(app: AppHandle) -> Settings {
    settings::load(&app)
}

/// Stores preferences; start-at-login takes effect at once, the proxy port at the next start.
#[tauri::command(async)]
pub fn set_settings(app: AppHandle, settings: Settings) -> Result<Settings> {
    use tauri_plugin_autostart::ManagerExt;
    let autostart = app.autolaunch();
    let applied = if settings.start_at_login {
        autostart.enable()
    } else {
        autostart.disable()
    };
    if let Err(e) = applied {
        tracing::warn!(error = %e, "start at login not changed");
    }
    settings::save(&app, &settings).map_err(|m| {
        RuntimeError::new(
            Code::SettingsUnwritable,
            format!("cannot save settings: {m}"),
        )
    })?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "canary-client-secret-7f3a9c";

    fn request(json: serde_json::Value) -> AddServerRequest {
        serde_json::from_value(json).expect("a request the window sends")
    }

    #[test]
    fn the_client_secret_reaches_the_engine_wrapped_and_is_never_printed() {
        let request = request(serde_json::json!({
            "url": "https://mcp.example.com/mcp",
            "client_id": "latchkey-desktop",
            "client_secret": CANARY,
            "scopes": ["read", "write"],
            "callback_port": 33418,
        }));
        assert!(!format!("{request:?}").contains(CANARY), "{request:?}");
        let server = NewServer::from(request);
        assert!(!format!("{server:?}").contains(CANARY), "{server:?}");
        assert_eq!(
            server.client_secret.as_ref().map(|s| s.expose()),
            Some(CANARY)
        );
        assert_eq!(server.client_id.as_deref(), Some("latchkey-desktop"));
        assert_eq!(
            server.scopes,
            Some(vec!["read".to_owned(), "write".to_owned()])
        );
        assert_eq!(server.callback_port, Some(33418));
        assert!(!server.allow_insecure_loopback);
    }

    #[test]
    fn blank_optional_fields_are_left_out() {
        let server = NewServer::from(request(serde_json::json!({
            "url": "https://mcp.example.com/mcp",
            "name": "  ",
            "client_id": "",
            "client_secret": "",
            "scopes": [],
        })));
        assert!(server.name.is_none());
        assert!(server.client_id.is_none());
        assert!(server.client_secret.is_none());
        assert!(server.scopes.is_none());
        assert!(server.callback_port.is_none());
    }
}
