//! Latchkey as the OAuth client of remote MCP servers (MCP authorization, revision 2026-07-28;
//! PROTOCOL §6): probe the server, discover its authorization server ([`metadata`]), obtain a
//! client id ([`registration`]), run the authorization-code flow in a login window
//! ([`authorize`]) and keep tokens fresh ([`tokens`]). Every peer is found by discovery and so
//! untrusted: requests go through [`fetch::Fetcher`] (no redirects, timeouts, size caps, https
//! or explicitly allowed loopback http), and each hostile answer has its own error code
//! ([`McpOAuthError::code`]). Persisting tokens and wiring the proxy are the callers' business.

pub mod authorize;
pub mod challenge;
mod error;
pub mod fetch;
pub mod metadata;
pub mod registration;
pub mod tokens;

use url::Url;

pub use authorize::{AuthorizationAttempt, AuthorizationRequest};
pub use challenge::Challenge;
pub use error::McpOAuthError;
pub(crate) use error::shorten;
pub use fetch::{Fetcher, Settings};
pub use metadata::{AuthorizationServer, ProtectedResource};
pub use registration::{ClientRegistration, RegistrationInputs};
pub use tokens::TokenSet;

/// Everything discovery learnt about one MCP server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Discovery {
    /// The server URL as given.
    pub server: Url,
    /// The challenge of the probe's answer, when it had one.
    pub challenge: Option<Challenge>,
    /// Its protected-resource metadata (`resource` matches `server`).
    pub resource: ProtectedResource,
    /// The chosen authorization server's metadata (the first of `authorization_servers`).
    pub authorization_server: AuthorizationServer,
}

impl Discovery {
    /// The scopes to ask for (MCP authorization, scope selection): the challenge's `scope`,
    /// else the protected-resource metadata's `scopes_supported`, else none.
    pub fn scopes(&self) -> Vec<String> {
        self.challenge
            .as_ref()
            .and_then(Challenge::scopes)
            .or_else(|| self.resource.scopes_supported.clone())
            .unwrap_or_default()
    }
}

/// Probes `server` and discovers its protected-resource and authorization-server metadata.
#[tracing::instrument(skip_all, fields(server = %fetch::display(server)), err)]
pub async fn discover(fetcher: &Fetcher, server: &Url) -> Result<Discovery, McpOAuthError> {
    if server.cannot_be_a_base() || server.host().is_none() {
        return Err(McpOAuthError::InvalidServerUrl {
            url: fetch::display(server),
            reason: "it has no host".to_owned(),
        });
    }
    if server.fragment().is_some() {
        return Err(McpOAuthError::InvalidServerUrl {
            url: fetch::display(server),
            reason: "it has a fragment (#...)".to_owned(),
        });
    }
    let probe = metadata::probe(fetcher, server).await?;
    let resource = metadata::protected_resource(fetcher, server, probe.challenge.as_ref()).await?;
    let issuer = resource
        .authorization_servers
        .first()
        .ok_or(McpOAuthError::NoAuthorizationServer)?;
    let authorization_server = metadata::authorization_server(fetcher, issuer).await?;
    Ok(Discovery {
        server: server.clone(),
        challenge: probe.challenge,
        resource,
        authorization_server,
    })
}
