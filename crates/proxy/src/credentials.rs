//! Where the proxy gets the credentials it injects. The running instance implements
//! [`CredentialSource`] over its sessions, the Auth Gateway and its cache, so this crate never
//! talks to the keychain or the gateway itself and can be tested with an in-memory source.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use latchkey_core::secret::Secret;

/// A service's credentials by name (the shape of the Auth Gateway's `data` object).
pub type CredentialValues = BTreeMap<String, Secret>;

/// Supplies per-service credentials and the status shown at `GET /v1/status`.
///
/// `credentials` is called once per proxied request: it must answer from memory on the fast path
/// and run at most one refresh per service at a time (single flight) when it has to go out.
pub trait CredentialSource: Send + Sync + 'static {
    /// The credentials of `service`. Returning the same `Arc` while the values are unchanged lets
    /// the proxy reuse the header values it prepared from them.
    fn credentials(
        &self,
        service: &str,
    ) -> BoxFuture<'_, Result<Arc<CredentialValues>, CredentialError>>;

    /// Account, user, session expiry and per-service credential state. Never secrets.
    fn status(&self) -> serde_json::Value;

    /// The name of the account whose login unlocks `service`, named in the "log in" answer and
    /// in [`crate::LoginNeeded`]. `None` (the default) leaves the account out of both.
    fn account(&self, service: &str) -> Option<String> {
        let _ = service;
        None
    }
}

/// Why a service's credentials cannot be had right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// Nobody is logged in to the account that unlocks the service, or the session ended.
    #[error("Log in to Latchkey: click Log in in the tray or run `latchkey login`.")]
    LoginRequired,
    /// The gateway answered without some credentials the service's mapping needs.
    #[error("The Auth Gateway did not return the credentials {} for this service; ask your administrator to add them.", names.join(", "))]
    Missing {
        /// Names of the missing credentials (names only, never values).
        names: Vec<String>,
    },
    /// The user may not use this service.
    #[error("Your account may not use this service; ask your administrator for access.")]
    Forbidden,
    /// The user has no credentials configured for this service.
    #[error(
        "No credentials are configured for this service; add them in the Auth Gateway or with `latchkey secret`."
    )]
    NotConfigured,
    /// The gateway is down, slow or answered with a server error.
    #[error("The Auth Gateway cannot be reached right now; try again in a moment.")]
    GatewayUnavailable,
    /// The OS keychain is locked or not available.
    #[error("The OS keychain is locked or unavailable; unlock it and try again.")]
    KeychainUnavailable,
}

impl CredentialError {
    /// Stable error code (PROTOCOL §3).
    pub fn code(&self) -> &'static str {
        match self {
            Self::LoginRequired => "login_required",
            Self::Missing { .. } | Self::NotConfigured => "credentials_missing",
            Self::Forbidden => "credentials_forbidden",
            Self::GatewayUnavailable => "gateway_unavailable",
            Self::KeychainUnavailable => "keychain_unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_protocol() {
        assert_eq!(CredentialError::LoginRequired.code(), "login_required");
        assert_eq!(CredentialError::NotConfigured.code(), "credentials_missing");
        assert_eq!(
            CredentialError::Missing {
                names: vec!["token".into()]
            }
            .code(),
            "credentials_missing"
        );
        assert_eq!(
            CredentialError::GatewayUnavailable.code(),
            "gateway_unavailable"
        );
    }

    #[test]
    fn missing_names_the_credentials_not_their_values() {
        let e = CredentialError::Missing {
            names: vec!["token".into(), "org".into()],
        };
        assert!(
            e.to_string().contains("token, org"),
            "the message names what is missing"
        );
    }
}
