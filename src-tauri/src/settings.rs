//! Preferences (never a secret) in tauri-plugin-store's `settings.json`.

use serde::{Deserialize, Serialize};
use tauri::AppHandle;
use tauri_plugin_store::StoreExt;

const FILE: &str = "settings.json";
const KEY: &str = "preferences";

/// What the Settings screen edits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(default)]
pub struct Settings {
    /// Proxy port override (`None`: the configuration's).
    pub proxy_port: Option<u16>,
    /// Log in through the system browser instead of a Latchkey window (RFC 8252's preference).
    pub use_system_browser: bool,
    /// Desktop notifications before expiry and on refresh failures.
    pub notifications: bool,
    /// Start Latchkey when the person logs in.
    pub start_at_login: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            proxy_port: None,
            use_system_browser: false,
            notifications: true,
            start_at_login: false,
        }
    }
}

/// The stored preferences, defaults when absent or unreadable.
pub fn load(app: &AppHandle) -> Settings {
    app.store(FILE)
        .ok()
        .and_then(|s| s.get(KEY))
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// Stores `settings`.
pub fn save(app: &AppHandle, settings: &Settings) -> Result<(), String> {
    let store = app.store(FILE).map_err(|e| e.to_string())?;
    store.set(
        KEY,
        serde_json::to_value(settings).map_err(|e| e.to_string())?,
    );
    store.save().map_err(|e| e.to_string())
}
