//! Where the proxy gets the credentials it injects. The running instance implements
//! [`CredentialSource`] over its sessions, the Auth Gateway and its cache, so this crate never
//! talks to the keychain or the gateway itself and can be tested with an in-memory source.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use latchkey_core::Code;
use latchkey_core::secret::Secret;

/// A service's credentials by name (the shape of the Auth Gateway's `data` object).
pub type CredentialValues = BTreeMap<String, Secret>;

/// Supplies per-service credentials and the status shown at `GET /v1/status`.
///
/// `credentials` is called once per proxied request: it must answer from memory on the fast path
/// and run at most one refresh per service at a time (single flight) when it has to go out.
pub trait CredentialSource: Send + Sync + 'static {
    /// The credentials of `service`. Returning the same `Arc` while the values are unchanged lets
    /// the proxy reuse the header values it prepared from them. The future may borrow `service`
    /// (the route's own name), so the request path copies nothing to ask.
    fn credentials<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Arc<CredentialValues>, CredentialError>>;

    /// Account, user, session expiry and per-service credential state. Never secrets. Shown to
    /// the instance's control token only.
    fn status(&self) -> serde_json::Value;

    /// What a local client whose scope is `services` may see of [`CredentialSource::status`]:
    /// those services and the state of the accounts behind them, never who is logged in. The
    /// default shows nothing.
    fn client_status(&self, services: &[String]) -> serde_json::Value {
        let _ = services;
        serde_json::Value::Null
    }

    /// The name of the account whose login unlocks `service`, named in the "log in" answer and
    /// in [`crate::LoginNeeded`]. `None` (the default) leaves the account out of both.
    fn account(&self, service: &str) -> Option<String> {
        let _ = service;
        None
    }

    /// The upstream of a route whose token Latchkey manages (a remote MCP server added with
    /// [`crate::ProxyState::add_server_route`]) refused the credentials `used`. `Ok(())`: worth
    /// sending the request again (the token was refreshed, once, single flight); `Err`: what to
    /// answer the client instead (log in, step up). The default refuses with
    /// [`CredentialError::LoginRequired`].
    fn upstream_refused(
        &self,
        service: &str,
        used: &Arc<CredentialValues>,
        refusal: UpstreamRefusal,
    ) -> BoxFuture<'_, Result<(), CredentialError>> {
        let _ = (service, used, refusal);
        Box::pin(async { Err(CredentialError::LoginRequired) })
    }
}

/// How a managed route's upstream refused a request (the host never sees these answers).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamRefusal {
    /// `401`: the token is invalid or expired. `retried`: it already was refreshed for this
    /// request, so refreshing again will not help.
    Unauthorized {
        /// A refreshed token was refused too.
        retried: bool,
    },
    /// `403` with `error="insufficient_scope"`, asking for `scopes` (RFC 6750 §3.1).
    InsufficientScope {
        /// The scopes of the challenge (may be empty).
        scopes: Vec<String>,
    },
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
    /// The account's identity provider needs a client secret to renew the sign-in and none is
    /// in the keychain: logging in again would not help, storing the secret does.
    #[error(
        "The identity provider of account `{account}` needs a client secret and none is stored, so Latchkey cannot renew its sign-in: run `latchkey account set-secret --account {account}`, then retry."
    )]
    ClientSecretMissing {
        /// The account.
        account: String,
    },
    /// The session's access token needs renewing and the identity provider cannot be reached
    /// (down, slow, or a server error). The session is kept: no new login is needed.
    #[error(
        "The identity provider `{host}` of account `{account}` cannot be reached, so Latchkey cannot renew its sign-in right now; no new login is needed: try again in {retry_after} seconds."
    )]
    IdpUnavailable {
        /// The account whose session waits for its provider.
        account: String,
        /// The provider's host (from the account's `issuer`).
        host: String,
        /// Whole seconds after which a retry is worth it.
        retry_after: u64,
    },
    /// A remote MCP server has no usable token: the person must sign in to it in Latchkey.
    #[error(
        "Sign in to the MCP server `{server}` in Latchkey: run `latchkey server login {server}` or use Log in next to it in Latchkey's window, then retry."
    )]
    ServerLoginRequired {
        /// The server's name.
        server: String,
    },
    /// A remote MCP server asked for more permissions than were granted.
    #[error(
        "The MCP server `{server}` needs more permissions ({}): run `latchkey server login {server}` or use Log in next to it in Latchkey's window to grant them, then retry.",
        scopes.join(" ")
    )]
    ServerStepUpRequired {
        /// The server's name.
        server: String,
        /// The scopes the next login asks for.
        scopes: Vec<String>,
    },
    /// A remote MCP server refused a token Latchkey then renewed, for a request too large to
    /// send again by itself.
    #[error("Latchkey renewed its sign-in to the MCP server `{server}`; send the request again.")]
    ServerTokenRenewed {
        /// The server's name.
        server: String,
    },
}

impl CredentialError {
    /// Stable error code (PROTOCOL §3).
    pub fn code(&self) -> Code {
        match self {
            Self::LoginRequired => Code::LoginRequired,
            Self::Missing { .. } | Self::NotConfigured | Self::ClientSecretMissing { .. } => {
                Code::CredentialsMissing
            }
            Self::Forbidden => Code::CredentialsForbidden,
            Self::GatewayUnavailable => Code::GatewayUnavailable,
            Self::KeychainUnavailable => Code::KeychainUnavailable,
            Self::IdpUnavailable { .. } => Code::IdpUnavailable,
            Self::ServerLoginRequired { .. } => Code::LoginRequired,
            Self::ServerStepUpRequired { .. } => Code::StepUpRequired,
            Self::ServerTokenRenewed { .. } => Code::RetryRequest,
        }
    }

    /// Seconds after which the same request is worth trying again, when the failure is passing.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::IdpUnavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The remote MCP server a refusal names, if any.
    pub fn server(&self) -> Option<&str> {
        match self {
            Self::ServerLoginRequired { server }
            | Self::ServerStepUpRequired { server, .. }
            | Self::ServerTokenRenewed { server } => Some(server),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_protocol() {
        assert_eq!(
            CredentialError::LoginRequired.code(),
            latchkey_core::Code::LoginRequired
        );
        assert_eq!(
            CredentialError::NotConfigured.code(),
            latchkey_core::Code::CredentialsMissing
        );
        assert_eq!(
            CredentialError::Missing {
                names: vec!["token".into()]
            }
            .code(),
            latchkey_core::Code::CredentialsMissing
        );
        assert_eq!(
            CredentialError::GatewayUnavailable.code(),
            latchkey_core::Code::GatewayUnavailable
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
