//! Why an MCP server's OAuth flow failed, with one stable code per refusal so that the runtime,
//! the CLI and the window can tell a hostile peer from a network hiccup without reading text.
//! No variant carries a token, an authorization code, a PKCE verifier or a client secret.

use std::time::Duration;

use crate::Code;

/// Why discovering, registering with, authorizing at or getting tokens from an MCP server's
/// authorization server failed. Messages say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpOAuthError {
    /// The MCP server URL given by the person is not usable.
    #[error("the MCP server address {url} is not usable: {reason}; give its full https:// URL")]
    InvalidServerUrl {
        /// The URL as given (no query values).
        url: String,
        /// Why.
        reason: String,
    },
    /// A URL in the chain uses plain `http` (or another scheme) off loopback, or on loopback
    /// without `allow_insecure_loopback`.
    #[error(
        "the {what} {url} does not use https; Latchkey refuses plain http except on loopback with allow_insecure_loopback"
    )]
    InsecureUrl {
        /// Which document or endpoint.
        what: &'static str,
        /// Its origin.
        url: String,
    },
    /// A discovery, registration or token request was answered with a redirect.
    #[error(
        "the {what} at {url} answered with a redirect ({status}); Latchkey does not follow redirects during OAuth discovery, ask the server's operator to publish the document at its address"
    )]
    Redirected {
        /// Which document or endpoint.
        what: &'static str,
        /// The URL asked (origin and path).
        url: String,
        /// The 3xx status.
        status: u16,
    },
    /// An answer is larger than the cap.
    #[error("the {what} from {url} is larger than {limit} bytes; Latchkey refused it")]
    TooLarge {
        /// Which document.
        what: &'static str,
        /// The URL asked (origin and path).
        url: String,
        /// The cap in bytes.
        limit: usize,
    },
    /// An answer is not the JSON document expected.
    #[error(
        "the {what} from {url} is malformed ({reason}); the server's OAuth setup is broken, tell its operator"
    )]
    Malformed {
        /// Which document.
        what: &'static str,
        /// The URL asked (origin and path).
        url: String,
        /// What is wrong (no values of secrets).
        reason: String,
    },
    /// The protected-resource metadata names another resource than the server URL.
    #[error(
        "the protected-resource metadata is for {found}, not for {expected}; Latchkey refused it (it could send your login to another server)"
    )]
    ResourceMismatch {
        /// The server URL.
        expected: String,
        /// The `resource` the document names.
        found: String,
    },
    /// The authorization-server metadata names another issuer than the one it was fetched for.
    #[error(
        "the authorization server metadata says its issuer is {found}, not {expected}; Latchkey refused it"
    )]
    IssuerMismatch {
        /// The issuer the metadata URL was built from.
        expected: String,
        /// The `issuer` it names.
        found: String,
    },
    /// The `authorization_endpoint` is not an `http(s)` URL (it is opened in a browser).
    #[error(
        "the authorization server's authorization_endpoint uses the scheme `{scheme}`; only https (or loopback http when allowed) can be opened"
    )]
    BadAuthorizationEndpoint {
        /// The scheme found.
        scheme: String,
    },
    /// The authorization server does not advertise PKCE with `S256`.
    #[error(
        "the authorization server {issuer} does not advertise PKCE with S256, which MCP requires; Latchkey cannot log in there safely"
    )]
    PkceUnsupported {
        /// Its issuer.
        issuer: String,
    },
    /// No protected-resource metadata was found.
    #[error(
        "the MCP server {server} publishes no OAuth protected-resource metadata (RFC 9728); it may not support MCP authorization"
    )]
    ResourceMetadataNotFound {
        /// The server URL.
        server: String,
    },
    /// The protected-resource metadata names no authorization server.
    #[error("the MCP server's protected-resource metadata names no authorization server")]
    NoAuthorizationServer,
    /// No authorization-server metadata was found at any well-known URI.
    #[error(
        "the authorization server {issuer} publishes no OAuth or OpenID Connect metadata; check the MCP server's configuration"
    )]
    AuthorizationServerMetadataNotFound {
        /// The issuer.
        issuer: String,
    },
    /// The MCP server answered the unauthenticated probe successfully: it needs no login.
    #[error(
        "the MCP server {server} did not ask for authorization; it can be used without logging in"
    )]
    NotProtected {
        /// The server URL.
        server: String,
    },
    /// A peer answered with an unexpected HTTP status.
    #[error(
        "the {what} at {url} answered HTTP {status}; try again later or tell the server's operator"
    )]
    UnexpectedStatus {
        /// Which document or endpoint.
        what: &'static str,
        /// The URL asked (origin and path).
        url: String,
        /// The status.
        status: u16,
    },
    /// A peer could not be reached.
    #[error("the {what} is unreachable ({reason}); check your network and try again")]
    Unreachable {
        /// Which document or endpoint.
        what: &'static str,
        /// What went wrong (host only, no query).
        reason: String,
    },
    /// A request timed out.
    #[error("the {what} did not answer within {timeout:?}; try again")]
    Timeout {
        /// Which document or endpoint.
        what: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// No way to register: no pre-registered client id, no Client ID Metadata Document support,
    /// no Dynamic Client Registration.
    #[error(
        "the authorization server {issuer} offers no automatic client registration{}; register Latchkey there as a public client with the redirect URI http://127.0.0.1/oauth/callback (or http://127.0.0.1:<port>/oauth/callback with --callback-port <port>) and pass its id: `latchkey server add <url> --client-id <id>` (add --client-secret-stdin for a confidential client), or enter it in the window's Add MCP server",
        if *.metadata_document_supported {
            " Latchkey can use (it accepts Client ID Metadata Documents: set `client_metadata_url` in the configuration to where docs/client-metadata.json is published and try again)"
        } else {
            ""
        }
    )]
    ClientIdRequired {
        /// The issuer.
        issuer: String,
        /// It accepts Client ID Metadata Documents, but no `client_metadata_url` is configured.
        metadata_document_supported: bool,
    },
    /// A pre-registered client's secret cannot be sent: the server advertises neither
    /// `client_secret_basic` nor `client_secret_post`.
    #[error(
        "the authorization server {issuer} accepts no client secret at its token endpoint (it offers: {offered}); register a public client there and add the server again without --client-secret-stdin"
    )]
    ClientAuthUnsupported {
        /// The issuer.
        issuer: String,
        /// The methods it advertises.
        offered: String,
    },
    /// Dynamic Client Registration was refused.
    #[error("the authorization server refused to register Latchkey ({error}){}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    RegistrationRefused {
        /// The OAuth error (`invalid_client_metadata`, ... or `http_<status>`).
        error: String,
        /// `error_description`, shortened.
        description: Option<String>,
    },
    /// The registration answer has no `client_id`.
    #[error(
        "the authorization server's registration answer has no client_id; Latchkey cannot use it"
    )]
    RegistrationWithoutClientId,
    /// The callback listener could not start.
    #[error(
        "cannot listen for the login callback on 127.0.0.1:{port} ({reason}); free the port and try again"
    )]
    CallbackListener {
        /// The port asked for.
        port: u16,
        /// Why.
        reason: String,
    },
    /// The authorization server redirected back with an error.
    #[error("{}", authorization_message(.error, .description.as_deref()))]
    Authorization {
        /// The OAuth `error`.
        error: String,
        /// `error_description`, shortened.
        description: Option<String>,
    },
    /// The callback carried no code.
    #[error("the authorization server's answer had no authorization code; log in again")]
    CallbackMalformed,
    /// The callback's `iss` is not the authorization server's issuer (RFC 9207 mix-up).
    #[error(
        "the sign-in answer came from {found}, not from the authorization server {expected}; Latchkey refused it (log in again)"
    )]
    IssuerParameterMismatch {
        /// The issuer expected.
        expected: String,
        /// The `iss` received.
        found: String,
    },
    /// The authorization server promises `iss` in the response, and the callback had none.
    #[error(
        "the sign-in answer has no `iss` although the authorization server {expected} promises one; Latchkey refused it (log in again)"
    )]
    IssuerParameterMissing {
        /// The issuer expected.
        expected: String,
    },
    /// The `state` expired before the callback arrived.
    #[error("the login took more than 10 minutes and expired; log in again")]
    StateExpired,
    /// The login was cancelled before it completed.
    #[error("the login was cancelled")]
    Cancelled,
    /// The refresh token is no longer valid.
    #[error(
        "the MCP server's authorization server no longer accepts this login; log in to the server again"
    )]
    InvalidGrant,
    /// The token endpoint refused a request.
    #[error("the authorization server refused the token request ({error}){}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    TokenEndpoint {
        /// The OAuth `error`, or `http_<status>`.
        error: String,
        /// `error_description`, shortened.
        description: Option<String>,
    },
    /// The token answer says it is for another resource than the MCP server.
    #[error(
        "the authorization server issued a token for {found}, not for the MCP server {expected}; Latchkey refused it"
    )]
    TokenForOtherResource {
        /// The MCP server's resource.
        expected: String,
        /// What the answer names.
        found: String,
    },
}

fn authorization_message(error: &str, description: Option<&str>) -> String {
    if error == "access_denied" {
        return "the sign-in was cancelled or refused at the MCP server's authorization server"
            .to_owned();
    }
    match description {
        Some(d) => format!("the authorization server refused the sign-in ({error}: {d})"),
        None => format!("the authorization server refused the sign-in ({error})"),
    }
}

impl McpOAuthError {
    /// A stable code for the UI, the CLI and the tests.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidServerUrl { .. } => Code::McpOauthInvalidServerUrl,
            Self::InsecureUrl { .. } => Code::McpOauthInsecureUrl,
            Self::Redirected { .. } => Code::McpOauthRedirectRefused,
            Self::TooLarge { .. } => Code::McpOauthDocumentTooLarge,
            Self::Malformed { .. } => Code::McpOauthDocumentMalformed,
            Self::ResourceMismatch { .. } => Code::McpOauthResourceMismatch,
            Self::IssuerMismatch { .. } => Code::McpOauthIssuerMismatch,
            Self::BadAuthorizationEndpoint { .. } => Code::McpOauthBadAuthorizationEndpoint,
            Self::PkceUnsupported { .. } => Code::McpOauthPkceUnsupported,
            Self::ResourceMetadataNotFound { .. } => Code::McpOauthResourceMetadataNotFound,
            Self::NoAuthorizationServer => Code::McpOauthNoAuthorizationServer,
            Self::AuthorizationServerMetadataNotFound { .. } => {
                Code::McpOauthAuthorizationServerMetadataNotFound
            }
            Self::NotProtected { .. } => Code::McpOauthNotRequired,
            Self::UnexpectedStatus { .. } => Code::McpOauthUnexpectedStatus,
            Self::Unreachable { .. } => Code::McpOauthUnreachable,
            Self::Timeout { .. } => Code::McpOauthTimeout,
            Self::ClientIdRequired { .. } => Code::McpOauthClientIdRequired,
            Self::ClientAuthUnsupported { .. } => Code::McpOauthClientAuthUnsupported,
            Self::RegistrationRefused { .. } => Code::McpOauthRegistrationRefused,
            Self::RegistrationWithoutClientId => Code::McpOauthRegistrationWithoutClientId,
            Self::CallbackListener { .. } => Code::McpOauthCallbackListenerFailed,
            Self::Authorization { error, .. } if error == "access_denied" => {
                Code::McpOauthAccessDenied
            }
            Self::Authorization { .. } => Code::McpOauthAuthorizationFailed,
            Self::CallbackMalformed => Code::McpOauthCallbackMalformed,
            Self::IssuerParameterMismatch { .. } => Code::McpOauthIssMismatch,
            Self::IssuerParameterMissing { .. } => Code::McpOauthIssMissing,
            Self::StateExpired => Code::McpOauthLoginExpired,
            Self::Cancelled => Code::McpOauthLoginCancelled,
            Self::InvalidGrant => Code::McpOauthLoginRequired,
            Self::TokenEndpoint { .. } => Code::McpOauthTokenRequestFailed,
            Self::TokenForOtherResource { .. } => Code::McpOauthTokenWrongResource,
        }
    }
}

/// Shortens peer-supplied text before it goes into an error message.
pub(crate) fn shorten(text: &str) -> String {
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_own_code() {
        let all = [
            McpOAuthError::InsecureUrl {
                what: "x",
                url: "http://a".into(),
            },
            McpOAuthError::Redirected {
                what: "x",
                url: "u".into(),
                status: 302,
            },
            McpOAuthError::TooLarge {
                what: "x",
                url: "u".into(),
                limit: 1,
            },
            McpOAuthError::Malformed {
                what: "x",
                url: "u".into(),
                reason: "r".into(),
            },
            McpOAuthError::ResourceMismatch {
                expected: "a".into(),
                found: "b".into(),
            },
            McpOAuthError::IssuerMismatch {
                expected: "a".into(),
                found: "b".into(),
            },
            McpOAuthError::BadAuthorizationEndpoint {
                scheme: "javascript".into(),
            },
            McpOAuthError::PkceUnsupported { issuer: "i".into() },
            McpOAuthError::RegistrationWithoutClientId,
            McpOAuthError::TokenForOtherResource {
                expected: "a".into(),
                found: "b".into(),
            },
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(McpOAuthError::code).collect();
        assert_eq!(
            codes.len(),
            all.len(),
            "two refusals share a code: {codes:?}"
        );
    }
}
