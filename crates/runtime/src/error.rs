//! The one error type the tray app and the CLI see: a stable `code` to match on and a sentence
//! for a person. Built from each module's typed error; never carries a secret.

use serde::Serialize;

/// An error for the UI (serialised as `{ code, message }`) and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    /// Stable, snake_case.
    pub code: String,
    /// One actionable sentence.
    pub message: String,
}

impl RuntimeError {
    /// An error with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(e: std::io::Error) -> Self {
        Self::new("io", format!("cannot write Latchkey's data directory: {e}"))
    }

    pub(crate) fn port_taken(port: u16, e: &std::io::Error) -> Self {
        Self::new(
            "proxy_port_unavailable",
            format!(
                "cannot listen on 127.0.0.1:{port} ({e}): another program uses it; choose another port in Settings or the config file"
            ),
        )
    }

    pub(crate) fn unknown_account(account: &str) -> Self {
        Self::new(
            "unknown_account",
            format!("no account `{account}` in the configuration"),
        )
    }

    pub(crate) fn unknown_service(service: &str) -> Self {
        Self::new(
            "unknown_service",
            format!("no service `{service}` in the configuration"),
        )
    }

    pub(crate) fn unknown_client(client: &str) -> Self {
        Self::new(
            "unknown_client",
            format!("no local client named `{client}`"),
        )
    }

    pub(crate) fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            "not_found",
            format!("no {what} `{id}` (it may have ended already)"),
        )
    }

    pub(crate) fn login_failed(account: &str) -> Self {
        Self::new(
            "login_failed",
            format!("the login for `{account}` did not complete; try again"),
        )
    }

    pub(crate) fn invalid_input(message: impl Into<String>) -> Self {
        Self::new("invalid_input", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new("internal", message)
    }
}

macro_rules! from_coded {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for RuntimeError {
            fn from(e: $t) -> Self {
                Self::new(e.code(), e.to_string())
            }
        })*
    };
}

from_coded!(
    latchkey_core::config::ConfigError,
    latchkey_core::vault::VaultError,
    latchkey_core::session::SessionError,
    latchkey_core::credentials::CredentialsError,
    latchkey_store::StoreError,
    latchkey_proxy::ConfigError,
    latchkey_hosts::HostError,
    crate::instance::InstanceError,
);
