//! The window's commands: each takes the runtime, calls one of its functions, and returns its
//! typed result or `{code, message}`. The only secret that crosses IPC is a newly created
//! client's token, once.

use latchkey_runtime::view::{
    ActivityFilter, ClientView, ConnectionView, CreatedClient, HostApplied, HostPreview, HostView,
    Overview,
};
use latchkey_runtime::{Latchkey, RuntimeError};
use tauri::{AppHandle, State};

use crate::settings::{self, Settings};

type Result<T> = std::result::Result<T, RuntimeError>;

/// Everything the first screen shows.
#[tauri::command]
pub fn overview(lk: State<'_, Latchkey>) -> Overview {
    lk.overview()
}

/// Starts a login in a Latchkey window or the system browser.
#[tauri::command]
pub async fn login(
    app: AppHandle,
    lk: State<'_, Latchkey>,
    account: String,
    system_browser: Option<bool>,
) -> Result<()> {
    let browser = system_browser.unwrap_or_else(|| settings::load(&app).use_system_browser);
    crate::login::start(&app, &lk, &account, browser).await
}

/// Cancels a pending login.
#[tauri::command]
pub fn cancel_login(app: AppHandle, lk: State<'_, Latchkey>, account: String) {
    lk.cancel_login(&account);
    crate::login::close_window(&app);
}

/// Logs out: revokes, wipes the keychain entries.
#[tauri::command]
pub async fn logout(lk: State<'_, Latchkey>, account: String) -> Result<()> {
    lk.logout(&account).await
}

/// Refreshes the account's tokens now.
#[tauri::command]
pub async fn refresh_now(lk: State<'_, Latchkey>, account: String) -> Result<()> {
    lk.refresh_now(&account).await
}

/// Local clients (no tokens).
#[tauri::command]
pub fn list_clients(lk: State<'_, Latchkey>) -> Vec<ClientView> {
    lk.list_clients()
}

/// Creates a client; its token is returned this once.
#[tauri::command]
pub fn create_client(
    lk: State<'_, Latchkey>,
    name: String,
    services: Vec<String>,
) -> Result<CreatedClient> {
    lk.create_client(&name, &services)
}

/// Revokes a client.
#[tauri::command]
pub fn revoke_client(lk: State<'_, Latchkey>, name: String) -> Result<()> {
    lk.revoke_client(&name)
}

/// A page of the audit log.
#[tauri::command]
pub async fn query_activity(
    lk: State<'_, Latchkey>,
    filter: ActivityFilter,
) -> Result<latchkey_runtime::AuditPage> {
    lk.query_activity(filter).await
}

/// Live proxied connections.
#[tauri::command]
pub fn list_connections(lk: State<'_, Latchkey>) -> Vec<ConnectionView> {
    lk.list_connections()
}

/// Closes one (the upstream is cancelled too).
#[tauri::command]
pub fn close_connection(lk: State<'_, Latchkey>, id: String) -> Result<()> {
    lk.close_connection(&id)
}

/// MCP hosts on this machine.
#[tauri::command]
pub fn detect_hosts(lk: State<'_, Latchkey>) -> Result<Vec<HostView>> {
    lk.detect_hosts()
}

/// The entry that would be added.
#[tauri::command]
pub fn preview_host_entry(
    lk: State<'_, Latchkey>,
    host: String,
    client: String,
    service: String,
) -> Result<HostPreview> {
    lk.preview_host_entry(&host, &client, &service)
}

/// Adds it, with a backup.
#[tauri::command]
pub fn apply_host_entry(
    lk: State<'_, Latchkey>,
    host: String,
    client: String,
    service: String,
) -> Result<HostApplied> {
    lk.apply_host_entry(&host, &client, &service)
}

/// Restores the host's file from the newest backup.
#[tauri::command]
pub fn undo_host_entry(lk: State<'_, Latchkey>, host: String) -> Result<()> {
    lk.undo_host_entry(&host)
}

/// Preferences.
#[tauri::command]
pub fn get_settings(app: AppHandle) -> Settings {
    settings::load(&app)
}

/// Stores preferences; start-at-login takes effect at once, the proxy port at the next start.
#[tauri::command]
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
        RuntimeError::new("settings_unwritable", format!("cannot save settings: {m}"))
    })?;
    Ok(settings)
}
