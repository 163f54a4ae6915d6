//! The one error type of the request path. Every refusal and failure becomes the JSON body of
//! PROTOCOL §3, `{"error": code, "message": sentence}`, through [`ProxyError`]'s `IntoResponse`;
//! a 5xx says what to do, never what broke inside.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::credentials::CredentialError;

use latchkey_core::Code;

/// Why the proxy did not (or could not) answer a request with the upstream's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// `Host` (or an absolute-form URI) names another host: DNS rebinding or a misdirected request.
    #[error(
        "This proxy only answers requests addressed to 127.0.0.1, localhost or [::1] on its own port."
    )]
    ForbiddenHost,
    /// A browser page from another origin, or a CORS preflight.
    #[error("Requests from web pages are not accepted; call the proxy from a local MCP client.")]
    ForbiddenOrigin,
    /// No client token, or one that is unknown, revoked or expired.
    #[error(
        "Present a valid Latchkey client token in `X-Latchkey-Client` or `Authorization: Bearer`; create one with `latchkey client add`."
    )]
    ClientUnauthorized,
    /// The client's token does not list this service.
    #[error("This client may not use this service; grant it with `latchkey client add --service`.")]
    ForbiddenScope,
    /// The client went over its request rate.
    #[error("Too many requests from this client; retry after {retry_after} seconds.")]
    RateLimited {
        /// Whole seconds until a request will be accepted.
        retry_after: u64,
    },
    /// A client without the right to read raw credentials asked for them.
    #[error(
        "This client may not read raw credentials; run the program with `latchkey exec`, or create the client with `latchkey client add --allow-raw-credentials`."
    )]
    RawCredentialsForbidden,
    /// A client asked for a service whose credential is an access token Latchkey signed in for
    /// (an account's IdP access token, or a remote MCP server's token).
    #[error(
        "Latchkey never hands an access token it signed in for to a local client; call the service through the proxy, or run the program with `latchkey exec`."
    )]
    AccessTokenForbidden,
    /// No service of that name is configured.
    #[error("No service of that name is configured in Latchkey; check the first path segment.")]
    UnknownService,
    /// A path under `/v1/` that does not exist.
    #[error("There is no such Latchkey endpoint; see the documentation for the paths it serves.")]
    NotFound,
    /// The endpoint exists but not for this method.
    #[error("This endpoint does not accept that method; use GET.")]
    MethodNotAllowed,
    /// `TRACE`, `TRACK` or `CONNECT`: never forwarded (a `TRACE` would echo the injected
    /// credential back to the client).
    #[error("The proxy does not forward TRACE, TRACK or CONNECT requests.")]
    ForbiddenMethod,
    /// A path segment is `.` or `..`, or contains `/` or `\`, once percent-decoded and cut at `;`.
    #[error(
        "The request path contains a `.` or `..` segment or an encoded `/` or `\\`; send a plain path."
    )]
    InvalidPath,
    /// The request head is larger than the configured limit.
    #[error("The request headers are too large; send fewer or shorter headers.")]
    HeadersTooLarge,
    /// The request body is larger than the configured limit.
    #[error("The request body is larger than the proxy accepts; send a smaller body.")]
    BodyTooLarge,
    /// The credential source could not supply the service's credentials.
    #[error("{0}")]
    Credentials(CredentialError),
    /// A credential cannot be sent (a control character in a header value).
    #[error(
        "A credential of this service cannot be sent in a header; ask your administrator to check its value."
    )]
    CredentialsInvalid,
    /// An OAuth discovery, registration or token request aimed at Latchkey (see [`crate::probe`]).
    #[error(
        "Latchkey handles sign-in itself; log in to Latchkey, do not configure OAuth for this server."
    )]
    OAuthNotOffered,
    /// The exchange was closed from Latchkey (the connection list, or shutdown) before it was answered.
    #[error(
        "This request was closed from Latchkey before the service answered; send it again if you still need it."
    )]
    ConnectionClosed,
    /// The upstream refused the connection, timed out or broke the exchange.
    #[error(
        "The service's upstream could not be reached; try again, or check the service's upstream URL."
    )]
    UpstreamUnreachable,
    /// Every connection slot is busy; this connection is kept for the `latchkey` command only.
    #[error(
        "Latchkey has too many open connections; close idle ones (see `latchkey connections`) and try again."
    )]
    TooManyConnections,
}

impl ProxyError {
    /// Stable error code (PROTOCOL §3).
    pub fn code(&self) -> Code {
        match self {
            Self::ForbiddenHost => Code::ForbiddenHost,
            Self::ForbiddenOrigin => Code::ForbiddenOrigin,
            Self::ClientUnauthorized => Code::ClientUnauthorized,
            Self::ForbiddenScope => Code::ForbiddenScope,
            Self::RawCredentialsForbidden | Self::AccessTokenForbidden => {
                Code::ForbiddenRawCredentials
            }
            Self::RateLimited { .. } => Code::RateLimited,
            Self::UnknownService => Code::UnknownService,
            Self::NotFound => Code::NotFound,
            Self::MethodNotAllowed | Self::ForbiddenMethod => Code::MethodNotAllowed,
            Self::InvalidPath => Code::InvalidPath,
            Self::HeadersTooLarge => Code::HeadersTooLarge,
            Self::BodyTooLarge => Code::BodyTooLarge,
            Self::Credentials(e) => e.code(),
            Self::CredentialsInvalid => Code::CredentialsInvalid,
            Self::ConnectionClosed => Code::ConnectionClosed,
            Self::UpstreamUnreachable => Code::UpstreamUnreachable,
            Self::OAuthNotOffered => Code::OauthNotOffered,
            Self::TooManyConnections => Code::TooManyConnections,
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ForbiddenHost
            | Self::ForbiddenOrigin
            | Self::ForbiddenScope
            | Self::RawCredentialsForbidden
            | Self::AccessTokenForbidden => StatusCode::FORBIDDEN,
            Self::ClientUnauthorized => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UnknownService | Self::NotFound | Self::OAuthNotOffered => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed | Self::ForbiddenMethod => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidPath => StatusCode::BAD_REQUEST,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            // Nobody logged in to Latchkey is `424`, never `401`: MCP clients read a `401` on an MCP
            // endpoint as the server asking them to run OAuth against it. What the official SDKs
            // do with each status (read 2026-12-01):
            // - TypeScript SDK 1.32.2, `dist/esm/client/streamableHttp.js` `send()`: a `401` with an
            //   `authProvider` calls `auth()` (`client/auth.js`: protected-resource and
            //   authorization-server discovery under `/.well-known/...`, then dynamic registration
            //   at `/register`, then `redirectToAuthorization`); a `403` runs the same flow only
            //   when `WWW-Authenticate` says `error="insufficient_scope"`. Any other non-2xx throws
            //   `StreamableHTTPError(status, "Error POSTing to endpoint: " + body)`: the body text,
            //   our sentence in it, is what the host shows. No status is retried; the GET stream
            //   treats `405` as "no stream" and other non-2xx as an error, also not retried.
            // - Python SDK `mcp` 2.3.0, `mcp/client/auth/oauth2.py` `_auth_flow`: OAuth on `401`,
            //   or on `403` whose `WWW-Authenticate` has `error="insufficient_scope"`; nothing
            //   else. `mcp/client/streamable_http.py` `_handle_post_request`: for a request
            //   answered `>= 400` with `application/json`, a JSON-RPC error body is delivered as
            //   the request's error (`MCPError`, our `message`); otherwise a stand-in "Server
            //   returned an error response" (or "Not Found" for a `404` before a session). The
            //   POST is not retried; the GET stream, opened only once a session exists, is retried
            //   at most twice on any error.
            // So: never `401`, never `WWW-Authenticate` (a plain `403` is safe, a 4xx that is
            // neither is safest), no 5xx for what only the person can fix, and a JSON-RPC error
            // body for JSON-RPC requests ([`crate::refusal`]). `424 Failed Dependency` says what
            // happened: the credential this request depends on could not be had. Both SDKs are
            // run against a logged-out proxy in `tests/it/mcp_login.rs`.
            Self::Credentials(e) => match e {
                CredentialError::LoginRequired
                | CredentialError::Missing { .. }
                | CredentialError::NotConfigured
                | CredentialError::ClientSecretMissing { .. } => StatusCode::FAILED_DEPENDENCY,
                // Without `WWW-Authenticate: ... insufficient_scope` neither SDK reads a `403` as
                // a challenge (see above); it stays `403` like the gateway's own refusal.
                CredentialError::Forbidden => StatusCode::FORBIDDEN,
                CredentialError::GatewayUnavailable
                | CredentialError::KeychainUnavailable
                | CredentialError::IdpUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                // A remote MCP server's own refusal is never passed on as `401`/`403` (the host
                // would start OAuth against Latchkey): what only the person can fix is `424`.
                CredentialError::ServerLoginRequired { .. }
                | CredentialError::ServerStepUpRequired { .. } => StatusCode::FAILED_DEPENDENCY,
                CredentialError::ServerTokenRenewed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            },
            Self::CredentialsInvalid | Self::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            Self::ConnectionClosed | Self::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl ProxyError {
    /// Seconds for `Retry-After`, when the refusal passes by itself.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            Self::Credentials(e) => e.retry_after(),
            _ => None,
        }
    }
}

impl From<CredentialError> for ProxyError {
    fn from(e: CredentialError) -> Self {
        Self::Credentials(e)
    }
}

#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: Code,
    message: &'a str,
}

/// The PROTOCOL §3 body `{"error": code, "message": message}`.
pub(crate) fn error_body(code: Code, message: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody {
        error: code,
        message,
    })
    .unwrap_or_else(|_| br#"{"error":"internal","message":"Latchkey could not answer."}"#.to_vec())
}

/// A JSON answer of Latchkey's own: never cached, never sniffed, never a `WWW-Authenticate`.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let body = error_body(self.code(), &self.to_string());
        let mut response = json_response(self.status(), body);
        if let Some(retry_after) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn json(e: ProxyError) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let response = e.into_response();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).expect("json body"),
        )
    }

    #[tokio::test]
    async fn errors_are_json_with_code_and_message() {
        let (status, headers, body) = json(ProxyError::ForbiddenHost).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "forbidden_host");
        assert!(body["message"].as_str().is_some_and(|m| m.ends_with('.')));
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    }

    #[tokio::test]
    async fn unauthorized_never_carries_www_authenticate() {
        let (status, headers, _) = json(ProxyError::ClientUnauthorized).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            headers.get(header::WWW_AUTHENTICATE).is_none(),
            "no browser auth prompt"
        );
    }

    #[tokio::test]
    async fn rate_limited_says_when_to_retry() {
        let (status, headers, body) = json(ProxyError::RateLimited { retry_after: 3 }).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "3");
        assert_eq!(body["error"], "rate_limited");
    }

    #[test]
    fn credential_errors_map_to_protocol_statuses() {
        let cases = [
            (CredentialError::LoginRequired, 424),
            (CredentialError::Forbidden, 403),
            (CredentialError::NotConfigured, 424),
            (
                CredentialError::ClientSecretMissing {
                    account: "work".into(),
                },
                424,
            ),
            (CredentialError::GatewayUnavailable, 503),
            (CredentialError::KeychainUnavailable, 503),
            (
                CredentialError::IdpUnavailable {
                    account: "work".into(),
                    host: "idp.example.com".into(),
                    retry_after: 30,
                },
                503,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(ProxyError::from(e).status().as_u16(), status);
        }
    }

    #[tokio::test]
    async fn an_unreachable_identity_provider_is_not_a_login_and_says_when_to_retry() {
        let (status, headers, body) = json(ProxyError::from(CredentialError::IdpUnavailable {
            account: "work".into(),
            host: "idp.example.com".into(),
            retry_after: 30,
        }))
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "30");
        assert_eq!(body["error"], "idp_unavailable");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("`idp.example.com`") && message.contains("`work`"),
            "names the provider and the account: {message}"
        );
        assert!(message.contains("no new login"), "{message}");
    }
}
