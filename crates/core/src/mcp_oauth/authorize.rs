//! The authorization-code flow with an MCP server's authorization server: PKCE S256, a random
//! `state`, the RFC 8707 `resource`, the loopback redirect, and the RFC 9207 `iss` check on the
//! way back. Shaped like the identity provider's login (`login::start` /
//! `LoginAttempt::finish`): [`start`] returns the URL to open, [`AuthorizationAttempt::finish`]
//! completes on the callback with the tokens.

use std::time::Duration;

use oauth2::{CsrfToken, PkceCodeChallenge};
use url::Url;

use super::fetch::Fetcher;
use super::metadata::AuthorizationServer;
use super::registration::ClientRegistration;
use super::tokens::{self, TokenClient, TokenSet};
use super::{McpOAuthError, shorten};
use crate::login::callback::{self, CALLBACK_PATH, CallbackError};
use crate::secret::Secret;

/// How long a `state` stays valid.
pub const STATE_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// What to authorize.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest<'a> {
    /// The authorization server.
    pub server: &'a AuthorizationServer,
    /// Latchkey's registration there.
    pub client: &'a ClientRegistration,
    /// The MCP server's resource (RFC 8707 `resource`).
    pub resource: &'a str,
    /// The scopes to ask for (see [`super::Discovery::scopes`]); none: no `scope` parameter.
    pub scopes: &'a [String],
    /// The loopback port to listen on (0: any free port).
    pub callback_port: u16,
    /// How long the `state` stays valid ([`STATE_LIFETIME`] unless a test shortens it).
    pub state_lifetime: Duration,
}

/// A login waiting for the browser: open [`authorize_url`](Self::authorize_url), then
/// [`finish`](Self::finish). Dropping it stops the callback listener. `Debug` shows no secret.
pub struct AuthorizationAttempt {
    fetcher: Fetcher,
    server: AuthorizationServer,
    client: ClientRegistration,
    resource: String,
    url: Url,
    redirect_uri: String,
    verifier: Secret,
    listener: callback::Listener,
}

impl std::fmt::Debug for AuthorizationAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationAttempt")
            .field("issuer", &self.server.issuer)
            .field("callback", &self.listener.addr)
            .finish_non_exhaustive()
    }
}

/// Starts a login: opens the loopback listener and builds the authorization URL.
#[tracing::instrument(skip_all, fields(issuer = %shorten(&request.server.issuer)), err)]
pub async fn start(
    fetcher: &Fetcher,
    request: AuthorizationRequest<'_>,
) -> Result<AuthorizationAttempt, McpOAuthError> {
    let state = CsrfToken::new_random();
    let listener = callback::listen(
        request.callback_port,
        Secret::new(state.secret().clone()),
        request.state_lifetime,
    )
    .await
    .map_err(callback_error)?;
    let redirect_uri = format!("http://127.0.0.1:{}{CALLBACK_PATH}", listener.addr.port());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut url = request.server.authorization_endpoint.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &request.client.client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("state", state.secret())
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", request.resource);
        if !request.scopes.is_empty() {
            query.append_pair("scope", &request.scopes.join(" "));
        }
    }
    Ok(AuthorizationAttempt {
        fetcher: fetcher.clone(),
        server: request.server.clone(),
        client: request.client.clone(),
        resource: request.resource.to_owned(),
        url,
        redirect_uri,
        verifier: Secret::new(verifier.secret().clone()),
        listener,
    })
}

impl AuthorizationAttempt {
    /// The page to open (an `http(s)` URL, checked at discovery).
    pub fn authorize_url(&self) -> &Url {
        &self.url
    }

    /// The loopback redirect URI of this attempt.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits for the callback, checks its `iss` (RFC 9207: equal to the issuer when present;
    /// required when the server advertises `authorization_response_iss_parameter_supported`),
    /// then exchanges the code for tokens.
    #[tracing::instrument(skip_all, err)]
    pub async fn finish(self) -> Result<TokenSet, McpOAuthError> {
        let Self {
            fetcher,
            server,
            client,
            resource,
            redirect_uri,
            verifier,
            listener,
            ..
        } = self;
        let answer = listener.wait().await.map_err(callback_error)?;
        check_issuer(&server, answer.iss.as_deref())?;
        if let Some((error, description)) = answer.error {
            return Err(McpOAuthError::Authorization { error, description });
        }
        let code = answer.code.ok_or(McpOAuthError::CallbackMalformed)?;
        let target = TokenClient {
            server: &server,
            client: &client,
            resource: &resource,
        };
        tokens::exchange_code(&fetcher, &target, &code, &verifier, &redirect_uri).await
    }
}

fn callback_error(e: CallbackError) -> McpOAuthError {
    match e {
        CallbackError::Listener { port, reason } => {
            McpOAuthError::CallbackListener { port, reason }
        }
        CallbackError::Expired => McpOAuthError::StateExpired,
        _ => McpOAuthError::Cancelled,
    }
}

/// RFC 9207 §2.4.
fn check_issuer(server: &AuthorizationServer, iss: Option<&str>) -> Result<(), McpOAuthError> {
    match iss {
        Some(iss) if iss == server.issuer => Ok(()),
        Some(iss) => Err(McpOAuthError::IssuerParameterMismatch {
            expected: shorten(&server.issuer),
            found: shorten(iss),
        }),
        None if server.authorization_response_iss_parameter_supported => {
            Err(McpOAuthError::IssuerParameterMissing {
                expected: shorten(&server.issuer),
            })
        }
        None => Ok(()),
    }
}
