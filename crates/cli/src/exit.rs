//! Exit codes, so scripts can tell "log in first" from "Latchkey is not running".

/// Anything else.
pub const FAILURE: u8 = 1;
/// Nobody is logged in or the session ended: run `latchkey login`.
pub const LOGIN_REQUIRED: u8 = 3;
/// Latchkey is not running (for commands that need it).
pub const NOT_RUNNING: u8 = 4;
/// The keychain is missing or locked.
pub const KEYCHAIN: u8 = 5;
/// The configuration is invalid.
pub const CONFIG: u8 = 6;
/// A credential is missing or the gateway is unavailable.
pub const CREDENTIALS: u8 = 7;
/// Latchkey itself failed.
pub const INTERNAL: u8 = 70;

/// A coded error from the runtime or the control API.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    /// Stable code.
    pub code: String,
    /// For a person.
    pub message: String,
}

impl From<latchkey_runtime::RuntimeError> for Coded {
    fn from(e: latchkey_runtime::RuntimeError) -> Self {
        Self {
            code: e.code,
            message: e.message,
        }
    }
}

/// The exit code for an error chain.
pub fn code_for(e: &anyhow::Error) -> u8 {
    let Some(coded) = e.chain().find_map(|c| c.downcast_ref::<Coded>()) else {
        return FAILURE;
    };
    match coded.code.as_str() {
        "login_required" | "invalid_grant" | "login_failed" => LOGIN_REQUIRED,
        "not_running" => NOT_RUNNING,
        "keychain_unavailable" | "keychain_locked" | "keychain_timeout" => KEYCHAIN,
        "config_invalid" | "config_not_found" | "config_unreadable" => CONFIG,
        c if c.starts_with("credentials_") || c.starts_with("gateway_") => CREDENTIALS,
        "internal" => INTERNAL,
        _ => FAILURE,
    }
}
