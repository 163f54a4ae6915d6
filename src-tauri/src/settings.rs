//! Preferences (never a secret) in tauri-plugin-store's `settings.json`. The window process is
//! its one writer (through the store, which also writes the file when the process exits); the
//! tray only reads the file, afresh each time, so it follows what the window saved.

use serde::{Deserialize, Serialize};
use tauri::{AppHandle, Manager};
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

/// The preferences in the file as last saved, defaults when absent or unreadable: for the tray,
/// which never opens the store (it would write its stale copy back when it exits).
pub fn read(app: &AppHandle) -> Settings {
    app.path()
        .app_data_dir()
        .ok()
        .and_then(|dir| std::fs::read(dir.join(FILE)).ok())
        .map(|bytes| from_file(&bytes))
        .unwrap_or_default()
}

/// The preferences in the bytes of `settings.json`, defaults when absent or unreadable.
fn from_file(bytes: &[u8]) -> Settings {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|mut file| file.get_mut(KEY).map(serde_json::Value::take))
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// The stored preferences, defaults when absent or unreadable: for the window process, the
/// file's writer.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tray_reads_the_preferences_the_store_wrote_beside_the_window_geometry() {
        let file = br#"{"main_window":{"x":1.0,"y":2.0,"width":500.0,"height":600.0},"preferences":{"proxy_port":48000,"use_system_browser":true,"notifications":false,"start_at_login":false}}"#;
        assert_eq!(
            from_file(file),
            Settings {
                proxy_port: Some(48000),
                use_system_browser: true,
                notifications: false,
                start_at_login: false,
            }
        );
        assert_eq!(
            from_file(b"{ torn"),
            Settings::default(),
            "unreadable: defaults"
        );
        assert_eq!(
            from_file(br#"{"main_window":{}}"#),
            Settings::default(),
            "never saved: defaults"
        );
    }
}
