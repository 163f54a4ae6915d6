//! Logging in to the identity provider (PROTOCOL §1): OpenID Connect discovery, the
//! authorization-code flow with PKCE S256, `state` and `nonce`, a one-shot loopback callback, the
//! token exchange, refresh and RFC 7009 revocation — with the `oauth2` crate — and validation of
//! the id and access tokens against the provider's JWKS ([`jwt`]).
//!
//! The flow is split so that each shell shows the page its own way: [`start`] returns a
//! [`LoginAttempt`] whose [`authorize_url`](LoginAttempt::authorize_url) the tray opens in a
//! webview and the CLI in the system browser; [`LoginAttempt::finish`] waits for the callback.

pub mod callback;
mod discovery;
pub mod jwt;
pub mod preflight;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, Client, ClientId, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, ExtraTokenFields, PkceCodeChallenge, RedirectUrl, RefreshToken,
    RequestTokenError, RevocationUrl, Scope, StandardRevocableToken, StandardTokenResponse,
    TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::{debug, instrument};
use url::Url;

pub use discovery::Metadata;
pub use jwt::JwtError;

use crate::secret::Secret;

/// Expiry assumed for an opaque access token whose response has no `expires_in`.
pub const DEFAULT_OPAQUE_LIFETIME: Duration = Duration::from_secs(3600);

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The issuer (discovery base); must equal the discovered `issuer` exactly.
    pub issuer: Url,
    /// Public client id.
    pub client_id: String,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// Expected access-token audience (sent as `resource`); the client id when absent.
    pub audience: Option<String>,
    /// Allows an `http://` issuer on loopback (the sandbox).
    pub allow_insecure_http: bool,
    /// Timeout of each request to the provider.
    pub timeout: Duration,
}

/// Which token a revocation is about (RFC 7009 `token_type_hint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenHint {
    /// An access token.
    AccessToken,
    /// A refresh token.
    RefreshToken,
}

/// Who logged in, from the validated id token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// `sub`.
    pub subject: String,
    /// Display name.
    pub name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
}

/// Validated tokens from a login or a refresh.
#[derive(Debug)]
pub struct TokenSet {
    /// The access token.
    pub access_token: Secret,
    /// The refresh token, when issued (rotated on refresh).
    pub refresh_token: Option<Secret>,
    /// The id token, when issued.
    pub id_token: Option<Secret>,
    /// When the access token expires.
    pub expires_at: OffsetDateTime,
    /// When it was issued.
    pub issued_at: OffsetDateTime,
    /// The user.
    pub user: UserInfo,
}

/// Why a login, refresh or revocation failed. Messages say what to do; none contains a token,
/// an authorization code or a PKCE verifier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The refresh token is no longer valid: the person must log in again.
    #[error("the identity provider no longer accepts this session; log in again")]
    InvalidGrant,
    /// Discovery failed.
    #[error("cannot use the identity provider at {issuer}: {reason}")]
    Discovery {
        /// The configured issuer.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
    /// The configured issuer is not acceptable (plain http off loopback).
    #[error(
        "the issuer {issuer} must use https (plain http is only allowed on loopback with `allow_insecure_http = true`)"
    )]
    InsecureIssuer {
        /// The configured issuer.
        issuer: String,
    },
    /// The provider cannot be reached.
    #[error("the identity provider is unreachable ({reason}); check your network and try again")]
    Unreachable {
        /// What went wrong (no URL query, no token).
        reason: String,
    },
    /// A request to the provider timed out.
    #[error("the identity provider did not answer within {0:?}; try again")]
    Timeout(Duration),
    /// The loopback callback listener could not start.
    #[error(
        "cannot listen for the login callback on 127.0.0.1:{port} ({reason}); free the port or set another `callback_port`"
    )]
    CallbackListener {
        /// The port asked for.
        port: u16,
        /// Why.
        reason: String,
    },
    /// The provider redirected back with an error (`access_denied` when the person cancelled).
    #[error("{}", authorization_message(.error, .description.as_deref()))]
    Authorization {
        /// The OAuth `error`.
        error: String,
        /// `error_description`, shortened.
        description: Option<String>,
    },
    /// The callback carried no code.
    #[error("the identity provider's answer had no authorization code; log in again")]
    CallbackMalformed,
    /// The `state` of this login expired (10 minutes) before the callback arrived.
    #[error("the login took more than 10 minutes and expired; log in again")]
    StateExpired,
    /// The login was cancelled before it completed.
    #[error("the login was cancelled")]
    Cancelled,
    /// The provider refused a token request.
    #[error("the identity provider refused the request ({error}){}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    TokenEndpoint {
        /// The OAuth `error`.
        error: String,
        /// `error_description`, shortened.
        description: Option<String>,
    },
    /// A token failed validation.
    #[error("a token from the identity provider was rejected: {0}")]
    Token(#[from] JwtError),
    /// The provider does not advertise what Latchkey needs.
    #[error("the identity provider is misconfigured for Latchkey: {0}")]
    Unsupported(String),
}

fn authorization_message(error: &str, description: Option<&str>) -> String {
    if error == "access_denied" {
        return "the sign-in was cancelled or refused at the identity provider".to_owned();
    }
    match description {
        Some(d) => format!("the identity provider refused the sign-in ({error}: {d})"),
        None => format!("the identity provider refused the sign-in ({error})"),
    }
}

impl LoginError {
    /// A stable code for the UI, the CLI and the tests.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidGrant => "login_required",
            Self::Discovery { .. } => "idp_discovery_failed",
            Self::InsecureIssuer { .. } => "invalid_config",
            Self::Unreachable { .. } => "idp_unreachable",
            Self::Timeout(_) => "idp_timeout",
            Self::CallbackListener { .. } => "callback_listener_failed",
            Self::Authorization { error, .. } if error == "access_denied" => "access_denied",
            Self::Authorization { .. } => "authorization_failed",
            Self::CallbackMalformed => "callback_malformed",
            Self::StateExpired => "login_expired",
            Self::Cancelled => "login_cancelled",
            Self::TokenEndpoint { .. } => "token_request_failed",
            Self::Token(e) => e.code(),
            Self::Unsupported(_) => "idp_unsupported",
        }
    }
}

/// The `id_token` field of a token response. Its `Debug` hides the token.
#[derive(Clone, Deserialize, Serialize)]
pub struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl std::fmt::Debug for IdTokenField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTokenField")
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl ExtraTokenFields for IdTokenField {}

type OidcTokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;

type OAuthClient = Client<
    BasicErrorResponse,
    OidcTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointSet,
>;

/// A discovered identity provider. Cheap to clone.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<ProviderInner>,
}

struct ProviderInner {
    settings: ProviderSettings,
    metadata: Metadata,
    oauth: OAuthClient,
    http: reqwest::Client,
    keys: jwt::KeySet,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.inner.metadata.issuer)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Discovers the provider at `settings.issuer`. `http` must not follow redirects (the
    /// runtime's client does not).
    #[instrument(skip_all, fields(issuer = %settings.issuer), err)]
    pub async fn discover(
        http: reqwest::Client,
        settings: ProviderSettings,
    ) -> Result<Self, LoginError> {
        check_scheme(&settings.issuer, settings.allow_insecure_http)?;
        let metadata = discovery::fetch(&http, &settings).await?;
        for endpoint in [
            &metadata.authorization_endpoint,
            &metadata.token_endpoint,
            &metadata.jwks_uri,
        ] {
            check_endpoint(endpoint, &settings)?;
        }
        if let Some(methods) = &metadata.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err(LoginError::Unsupported(
                "it does not support PKCE with S256".to_owned(),
            ));
        }
        let revocation = match &metadata.revocation_endpoint {
            Some(u) => {
                check_endpoint(u, &settings)?;
                Some(RevocationUrl::from_url(u.clone()))
            }
            None => None,
        };
        let oauth = Client::new(ClientId::new(settings.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_auth_uri(AuthUrl::from_url(metadata.authorization_endpoint.clone()))
            .set_token_uri(TokenUrl::from_url(metadata.token_endpoint.clone()))
            .set_revocation_url_option(revocation);
        let keys = jwt::KeySet::new(http.clone(), metadata.jwks_uri.clone(), settings.timeout);
        debug!("identity provider discovered");
        Ok(Self {
            inner: Arc::new(ProviderInner {
                settings,
                metadata,
                oauth,
                http,
                keys,
            }),
        })
    }

    /// The issuer.
    pub fn issuer(&self) -> &Url {
        &self.inner.settings.issuer
    }

    /// The discovered metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// The RP-initiated logout endpoint, when advertised.
    pub fn end_session_endpoint(&self) -> Option<&Url> {
        self.inner.metadata.end_session_endpoint.as_ref()
    }

    /// The signing keys (for callers that validate tokens themselves).
    pub fn keys(&self) -> &jwt::KeySet {
        &self.inner.keys
    }

    fn audience(&self) -> &str {
        self.inner
            .settings
            .audience
            .as_deref()
            .unwrap_or(&self.inner.settings.client_id)
    }

    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, LoginError>>,
    ) -> Result<T, LoginError> {
        tokio::time::timeout(self.inner.settings.timeout, fut)
            .await
            .map_err(|_| LoginError::Timeout(self.inner.settings.timeout))?
    }

    /// Exchanges a refresh token. `invalid_grant` is [`LoginError::InvalidGrant`].
    #[instrument(skip_all, err)]
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<TokenSet, LoginError> {
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        let mut request = self.inner.oauth.exchange_refresh_token(&token);
        if let Some(aud) = &self.inner.settings.audience {
            request = request.add_extra_param("resource", aud.clone());
        }
        let answer = self
            .timed(async {
                request
                    .request_async(&self.inner.http)
                    .await
                    .map_err(token_error)
            })
            .await?;
        self.validate(answer, None).await
    }

    /// Revokes `token` (RFC 7009). `Ok(false)` when the provider advertises no revocation
    /// endpoint or declines this kind of token (`unsupported_token_type`, RFC 7009 §2.2.1, as
    /// providers answer for self-contained JWT access tokens, which lapse at their `exp`).
    /// Errors are logged by the caller, which knows whether they matter.
    #[instrument(skip_all, err(level = "debug"))]
    pub async fn revoke(&self, token: &Secret, hint: TokenHint) -> Result<bool, LoginError> {
        // RFC 7009 is one form POST; it is sent directly because the `oauth2` crate refuses a
        // plain-http revocation endpoint even where the configuration allows one (loopback).
        let Some(endpoint) = &self.inner.metadata.revocation_endpoint else {
            return Ok(false);
        };
        let hint = match hint {
            TokenHint::AccessToken => "access_token",
            TokenHint::RefreshToken => "refresh_token",
        };
        let form = [
            ("token", token.expose()),
            ("token_type_hint", hint),
            ("client_id", self.inner.settings.client_id.as_str()),
        ];
        let answer = self
            .timed(async {
                self.inner
                    .http
                    .post(endpoint.clone())
                    .form(&form)
                    .send()
                    .await
                    .map_err(|e| LoginError::Unreachable {
                        reason: jwt::without_url(&e),
                    })
            })
            .await?;
        if answer.status().is_success() {
            return Ok(true);
        }
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        if body.get("error").and_then(serde_json::Value::as_str) == Some("unsupported_token_type") {
            return Ok(false);
        }
        Err(LoginError::TokenEndpoint {
            error: body
                .get("error")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| format!("http_{}", status.as_u16()), shorten),
            description: body
                .get("error_description")
                .and_then(serde_json::Value::as_str)
                .map(shorten),
        })
    }

    /// Validates a token response into a [`TokenSet`]. `nonce` is the login's nonce (a refresh
    /// has none to check).
    async fn validate(
        &self,
        answer: OidcTokenResponse,
        nonce: Option<&str>,
    ) -> Result<TokenSet, LoginError> {
        let now = OffsetDateTime::now_utc();
        // `iss` must be exactly the string the provider published (checked against the
        // configured issuer at discovery).
        let issuer = self.inner.metadata.issuer.clone();
        let id_claims = match &answer.extra_fields().id_token {
            Some(id_token) => Some(
                self.inner
                    .keys
                    .validate(
                        id_token,
                        &jwt::Expectations {
                            issuer: issuer.clone(),
                            audience: self.inner.settings.client_id.clone(),
                            nonce: nonce.map(str::to_owned),
                        },
                    )
                    .await?,
            ),
            None if nonce.is_some() => {
                return Err(LoginError::Unsupported(
                    "it returned no id token; request the `openid` scope".to_owned(),
                ));
            }
            None => None,
        };
        let access = answer.access_token().secret();
        let (expires_at, access_claims) = if jwt::looks_like_jwt(access) {
            let claims = self
                .inner
                .keys
                .validate(
                    access,
                    &jwt::Expectations {
                        issuer,
                        audience: self.audience().to_owned(),
                        nonce: None,
                    },
                )
                .await?;
            (
                OffsetDateTime::from_unix_timestamp(claims.expires_at)
                    .map_err(|_| JwtError::BadClaim("exp".into()))?,
                Some(claims),
            )
        } else {
            let lifetime = answer.expires_in().unwrap_or(DEFAULT_OPAQUE_LIFETIME);
            (now + lifetime, None)
        };
        let issued_at = access_claims
            .as_ref()
            .and_then(|c| c.issued_at)
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .filter(|t| *t <= expires_at)
            .unwrap_or(now);
        let claims = id_claims.or(access_claims);
        let user = match claims {
            Some(c) => UserInfo {
                subject: c
                    .subject
                    .ok_or_else(|| JwtError::MissingClaim("sub".into()))?,
                name: c.name,
                email: c.email,
            },
            None => UserInfo {
                subject: String::new(),
                name: None,
                email: None,
            },
        };
        Ok(TokenSet {
            access_token: Secret::new(access.clone()),
            refresh_token: answer
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone())),
            id_token: answer.extra_fields().id_token.clone().map(Secret::new),
            expires_at,
            issued_at,
            user,
        })
    }
}

/// A login waiting for the browser: show [`authorize_url`](Self::authorize_url), then
/// [`finish`](Self::finish). Dropping it stops the callback listener.
pub struct LoginAttempt {
    provider: Provider,
    url: Url,
    redirect: RedirectUrl,
    verifier: oauth2::PkceCodeVerifier,
    nonce: String,
    listener: callback::Listener,
}

impl std::fmt::Debug for LoginAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAttempt")
            .field("callback", &self.listener.addr)
            .finish_non_exhaustive()
    }
}

/// Starts a login: opens the loopback listener on `callback_port` (0: any free port) and builds
/// the authorization URL with PKCE S256, a random `state` and `nonce`.
#[instrument(skip_all, err)]
pub async fn start(provider: &Provider, callback_port: u16) -> Result<LoginAttempt, LoginError> {
    start_with_lifetime(provider, callback_port, callback::STATE_LIFETIME).await
}

/// [`start`] with another `state` lifetime (tests).
pub async fn start_with_lifetime(
    provider: &Provider,
    callback_port: u16,
    lifetime: Duration,
) -> Result<LoginAttempt, LoginError> {
    let state = CsrfToken::new_random();
    let nonce = CsrfToken::new_random().secret().clone();
    let listener = callback::listen(callback_port, state.secret().clone(), lifetime).await?;
    let redirect = RedirectUrl::new(format!(
        "http://127.0.0.1:{}{}",
        listener.addr.port(),
        callback::CALLBACK_PATH
    ))
    .map_err(|_| LoginError::CallbackMalformed)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = provider
        .inner
        .oauth
        .authorize_url(move || state)
        .set_pkce_challenge(challenge)
        .set_redirect_uri(Cow::Owned(redirect.clone()))
        .add_extra_param("nonce", nonce.clone())
        .add_scopes(
            provider
                .inner
                .settings
                .scopes
                .iter()
                .cloned()
                .map(Scope::new),
        );
    if let Some(aud) = &provider.inner.settings.audience {
        request = request.add_extra_param("resource", aud.clone());
    }
    let (url, _state) = request.url();
    Ok(LoginAttempt {
        provider: provider.clone(),
        url,
        redirect,
        verifier,
        nonce,
        listener,
    })
}

impl LoginAttempt {
    /// The page to show the person.
    pub fn authorize_url(&self) -> &Url {
        &self.url
    }

    /// The loopback redirect URI of this attempt.
    pub fn redirect_uri(&self) -> &str {
        self.redirect.as_str()
    }

    /// Waits for the callback, exchanges the code and validates the tokens.
    #[instrument(skip_all, err)]
    pub async fn finish(self) -> Result<TokenSet, LoginError> {
        let Self {
            provider,
            redirect,
            verifier,
            nonce,
            listener,
            ..
        } = self;
        let code = listener.wait().await?;
        let code = AuthorizationCode::new(code.expose().to_owned());
        let mut request = provider
            .inner
            .oauth
            .exchange_code(code)
            .set_pkce_verifier(verifier)
            .set_redirect_uri(Cow::Owned(redirect));
        if let Some(aud) = &provider.inner.settings.audience {
            request = request.add_extra_param("resource", aud.clone());
        }
        let answer = provider
            .timed(async {
                request
                    .request_async(&provider.inner.http)
                    .await
                    .map_err(token_error)
            })
            .await?;
        provider.validate(answer, Some(&nonce)).await
    }
}

fn token_error(
    e: RequestTokenError<oauth2::HttpClientError<reqwest::Error>, BasicErrorResponse>,
) -> LoginError {
    match e {
        RequestTokenError::ServerResponse(r)
            if *r.error() == BasicErrorResponseType::InvalidGrant =>
        {
            LoginError::InvalidGrant
        }
        RequestTokenError::ServerResponse(r) => LoginError::TokenEndpoint {
            error: r.error().to_string(),
            description: r.error_description().map(|d| shorten(d)),
        },
        RequestTokenError::Request(e) => request_failure(&e),
        RequestTokenError::Parse(..) => LoginError::TokenEndpoint {
            error: "invalid_response".into(),
            description: Some("the token response is not valid JSON of the expected shape".into()),
        },
        RequestTokenError::Other(_) => LoginError::TokenEndpoint {
            error: "invalid_response".into(),
            description: None,
        },
    }
}

fn request_failure(e: &oauth2::HttpClientError<reqwest::Error>) -> LoginError {
    match e {
        oauth2::HttpClientError::Reqwest(inner) => LoginError::Unreachable {
            reason: jwt::without_url(inner),
        },
        _ => LoginError::Unreachable {
            reason: "request failed".into(),
        },
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(200).collect()
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn check_scheme(url: &Url, allow_insecure_http: bool) -> Result<(), LoginError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http && is_loopback(url) => Ok(()),
        _ => Err(LoginError::InsecureIssuer {
            issuer: url.to_string(),
        }),
    }
}

fn check_endpoint(url: &Url, settings: &ProviderSettings) -> Result<(), LoginError> {
    check_scheme(url, settings.allow_insecure_http).map_err(|_| LoginError::Discovery {
        issuer: settings.issuer.to_string(),
        reason: format!(
            "it advertises a non-https endpoint ({})",
            url.origin().ascii_serialization()
        ),
    })
}
