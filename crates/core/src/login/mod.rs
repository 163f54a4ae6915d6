//! Logging in to the identity provider (PROTOCOL §1): OpenID Connect discovery, the
//! authorization-code flow with PKCE S256, `state` and `nonce`, a one-shot loopback callback, the
//! token exchange, refresh and RFC 7009 revocation — with the `oauth2` crate — and validation of
//! the id token against the provider's JWKS ([`jwt`]).
//!
//! The access token is opaque (PROTOCOL §1): mainstream providers address it to an API, not to
//! Latchkey, sometimes with no `aud` at all, or make it unverifiable by clients. Who logged in
//! comes from the id token alone; the access token's lifetime from `expires_in`. It is validated
//! only when the account asks for it (`validate_access_token`).
//!
//! The client authenticates as the account says ([`ClientAuth`]): a public client by default, or
//! with a client secret from the keychain (`client_secret_basic` / `client_secret_post`), for the
//! code exchange, refresh and revocation alike.
//!
//! The flow is split so that each shell shows the page its own way: [`start`] returns a
//! [`LoginAttempt`] whose [`authorize_url`](LoginAttempt::authorize_url) the tray opens in a
//! webview and the CLI in the system browser; [`LoginAttempt::finish`] waits for the callback.

pub mod callback;
mod discovery;
mod jws;
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
    AuthType, AuthUrl, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, ExtraTokenFields, PkceCodeChallenge,
    RedirectUrl, RefreshToken, RequestTokenError, RevocationUrl, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::{debug, instrument};
use url::Url;

pub use discovery::Metadata;
pub use jwt::JwtError;

use crate::Code;
pub use crate::config::{AudienceParameter, ClientAuthMethod};
use crate::secret::Secret;

/// Expiry assumed for an opaque access token whose response has no `expires_in`.
pub const DEFAULT_OPAQUE_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest lifetime believed from an unverified JWT access token's `exp` (when the answer
/// has no `expires_in`); beyond it, or in the past, [`DEFAULT_OPAQUE_LIFETIME`] is assumed.
pub const MAX_UNVERIFIED_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The issuer (discovery base); must equal the discovered `issuer` exactly.
    pub issuer: Url,
    /// Client id.
    pub client_id: String,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// The API the access token is for, sent as `resource` (RFC 8707); the expected `aud` when
    /// `validate_access_token` is set.
    pub audience: Option<String>,
    /// Validate the access token as a JWT for `audience` (otherwise it is opaque).
    pub validate_access_token: bool,
    /// The configured client authentication; `None` lets [`Provider::client_auth`] decide.
    pub auth_method: Option<ClientAuthMethod>,
    /// Allows an `http://` issuer on loopback (the sandbox).
    pub allow_insecure_http: bool,
    /// How `audience` is sent (`resource` on every request, or Auth0's `audience` on the
    /// authorization request).
    pub audience_parameter: AudienceParameter,
    /// Timeout of each request to the provider.
    pub timeout: Duration,
}

/// How a request authenticates the client at the token and revocation endpoints, resolved by
/// [`Provider::client_auth`]. `Debug` shows the method, never the secret.
#[derive(Clone)]
pub struct ClientAuth {
    method: ClientAuthMethod,
    secret: Option<Secret>,
}

impl ClientAuth {
    /// A public client: the client id only.
    pub fn public() -> Self {
        Self {
            method: ClientAuthMethod::None,
            secret: None,
        }
    }

    /// The method in use.
    pub fn method(&self) -> ClientAuthMethod {
        self.method
    }

    /// The secret, for the methods that send one.
    fn secret(&self) -> Option<&Secret> {
        self.secret.as_ref().filter(|_| self.method.needs_secret())
    }
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("method", &self.method.as_str())
            .finish_non_exhaustive()
    }
}

impl ProviderSettings {
    /// The RFC 8707 `resource` for token requests: the audience, unless it goes to the provider
    /// as Auth0's `audience`, which belongs on the authorization request only.
    fn resource(&self) -> Option<&str> {
        match self.audience_parameter {
            AudienceParameter::Resource => self.audience.as_deref(),
            AudienceParameter::Audience => None,
        }
    }
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
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct UserInfo {
    /// `sub`.
    pub subject: String,
    /// Display name.
    pub name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
}

/// Tokens from a login or a refresh, the id token validated.
#[derive(Debug)]
pub struct TokenSet {
    /// The access token (opaque unless `validate_access_token`).
    pub access_token: Secret,
    /// The refresh token, when issued (rotated on refresh; absent when the provider keeps the
    /// previous one or grants none).
    pub refresh_token: Option<Secret>,
    /// The id token, when issued (always at login; a refresh answer may have none).
    pub id_token: Option<Secret>,
    /// When the access token expires.
    pub expires_at: OffsetDateTime,
    /// When the answer arrived.
    pub issued_at: OffsetDateTime,
    /// The user, from the id token; `None` when a refresh answer carried no id token.
    pub user: Option<UserInfo>,
    /// The issuer whose id token this is (`iss`, the provider's published issuer).
    pub issuer: String,
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
    /// The callback's `iss` (RFC 9207) names another issuer: the answer may come from another
    /// provider the browser was sent to (a mix-up attack).
    #[error(
        "the sign-in answer came from `{found}`, not from this account's identity provider `{expected}`; log in again, and check `issuer` if it happens again"
    )]
    CallbackIssuerMismatch {
        /// The issuer the account expects.
        expected: String,
        /// What the callback said, shortened.
        found: String,
    },
    /// The provider promises `iss` in its answers (RFC 9207), and this answer has none.
    #[error(
        "the sign-in answer lacks the `iss` parameter that `{expected}` promises to send; log in again"
    )]
    CallbackIssuerMissing {
        /// The issuer the account expects.
        expected: String,
    },
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
    /// The account's client authentication needs a secret and none is stored.
    #[error(
        "the identity provider requires a client secret ({method}) and none is stored: run `latchkey account set-secret` and paste the secret on stdin"
    )]
    ClientSecretMissing {
        /// The method that needs it.
        method: &'static str,
    },
    /// The provider refused the client's authentication (`invalid_client`).
    #[error(
        "the identity provider did not accept Latchkey's client authentication (invalid_client){}; check client_id, token_endpoint_auth_method and the stored client secret (`latchkey account set-secret`)",
        .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    ClientRejected {
        /// `error_description`, shortened.
        description: Option<String>,
    },
    /// The session was logged in with another issuer than the account's (OIDC Core §12.2).
    #[error("the account's issuer is not the one this session logged in with; log in again")]
    IssuerChanged,
    /// A refresh answer's id token names another user than the session's (OIDC Core §12.2).
    #[error("the identity provider answered the refresh for another user; log in again")]
    SubjectChanged,
    /// `validate_access_token` is set but the access token is not a JWT.
    #[error(
        "the access token is opaque (not a JWT), so it cannot be validated; remove validate_access_token from the account"
    )]
    AccessTokenNotJwt,
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
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidGrant => Code::LoginRequired,
            Self::Discovery { .. } => Code::IdpDiscoveryFailed,
            Self::InsecureIssuer { .. } => Code::ConfigInvalid,
            Self::Unreachable { .. } => Code::IdpUnreachable,
            Self::Timeout(_) => Code::IdpTimeout,
            Self::CallbackListener { .. } => Code::CallbackListenerFailed,
            Self::Authorization { error, .. } if error == "access_denied" => Code::AccessDenied,
            Self::Authorization { .. } => Code::AuthorizationFailed,
            Self::CallbackMalformed => Code::CallbackMalformed,
            Self::StateExpired => Code::LoginExpired,
            Self::Cancelled => Code::LoginCancelled,
            Self::CallbackIssuerMismatch { .. } => Code::CallbackIssMismatch,
            Self::CallbackIssuerMissing { .. } => Code::CallbackIssMissing,
            Self::TokenEndpoint { .. } => Code::TokenRequestFailed,
            Self::Token(e) => e.code(),
            Self::Unsupported(_) => Code::IdpUnsupported,
            Self::ClientSecretMissing { .. } => Code::ClientSecretMissing,
            Self::ClientRejected { .. } => Code::ClientAuthFailed,
            Self::IssuerChanged => Code::IdTokenIssuerChanged,
            Self::SubjectChanged => Code::IdTokenSubjectChanged,
            Self::AccessTokenNotJwt => Code::AccessTokenNotJwt,
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

    /// How to authenticate the client, given the account's stored client secret (if any): the
    /// configured `token_endpoint_auth_method`; when unset, none without a secret, else the
    /// provider's advertised `client_secret_basic`, else `client_secret_post`.
    pub fn client_auth(&self, secret: Option<Secret>) -> Result<ClientAuth, LoginError> {
        let method = match (self.inner.settings.auth_method, &secret) {
            (Some(m), _) => m,
            (None, None) => ClientAuthMethod::None,
            (None, Some(_)) => self.advertised_secret_method()?,
        };
        if method.needs_secret() && secret.is_none() {
            return Err(LoginError::ClientSecretMissing {
                method: method.as_str(),
            });
        }
        Ok(ClientAuth {
            method,
            secret: secret.filter(|_| method.needs_secret()),
        })
    }

    fn advertised_secret_method(&self) -> Result<ClientAuthMethod, LoginError> {
        let Some(methods) = &self.inner.metadata.token_endpoint_auth_methods_supported else {
            // RFC 8414 §2: absent means client_secret_basic.
            return Ok(ClientAuthMethod::ClientSecretBasic);
        };
        let has = |m: ClientAuthMethod| methods.iter().any(|x| x == m.as_str());
        [
            ClientAuthMethod::ClientSecretBasic,
            ClientAuthMethod::ClientSecretPost,
            ClientAuthMethod::None,
        ]
        .into_iter()
        .find(|m| has(*m))
        .ok_or_else(|| {
            LoginError::Unsupported(
                "it supports neither client_secret_basic nor client_secret_post; set token_endpoint_auth_method for the account".to_owned(),
            )
        })
    }

    /// The `oauth2` client authenticating as `auth` says.
    fn oauth(&self, auth: &ClientAuth) -> OAuthClient {
        let client = self.inner.oauth.clone();
        match (auth.method, auth.secret()) {
            (ClientAuthMethod::ClientSecretBasic, Some(secret)) => client
                .set_client_secret(ClientSecret::new(secret.expose().to_owned()))
                .set_auth_type(AuthType::BasicAuth),
            (ClientAuthMethod::ClientSecretPost, Some(secret)) => client
                .set_client_secret(ClientSecret::new(secret.expose().to_owned()))
                .set_auth_type(AuthType::RequestBody),
            _ => client,
        }
    }

    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, LoginError>>,
    ) -> Result<T, LoginError> {
        self.within(self.inner.settings.timeout, fut).await
    }

    async fn within<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = Result<T, LoginError>>,
    ) -> Result<T, LoginError> {
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| LoginError::Timeout(limit))?
    }

    /// Exchanges a refresh token for the session of `subject`. `invalid_grant` is
    /// [`LoginError::InvalidGrant`]. An id token in the answer is validated (no nonce) and must
    /// name the same `iss` and `sub` (OIDC Core §12.2); an answer without one is fine.
    pub async fn refresh(
        &self,
        refresh_token: &Secret,
        auth: &ClientAuth,
        subject: &str,
    ) -> Result<TokenSet, LoginError> {
        self.refresh_within(refresh_token, auth, subject, self.inner.settings.timeout)
            .await
    }

    /// [`Provider::refresh`], waiting up to `limit` for the token endpoint instead of the
    /// provider's timeout: a session keeps a refresh going after its callers stopped waiting,
    /// since a provider that rotates refresh tokens may still honour it.
    #[instrument(skip_all, fields(auth = auth.method.as_str()), err)]
    pub async fn refresh_within(
        &self,
        refresh_token: &Secret,
        auth: &ClientAuth,
        subject: &str,
        limit: Duration,
    ) -> Result<TokenSet, LoginError> {
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        let oauth = self.oauth(auth);
        let mut request = oauth.exchange_refresh_token(&token);
        if let Some(aud) = self.inner.settings.resource() {
            request = request.add_extra_param("resource", aud.to_owned());
        }
        // `oauth2` drops the status of an answer whose body is not an OAuth error document; keep
        // it, to tell a refusal from a broken answer.
        let recording = StatusRecorder {
            http: &self.inner.http,
            status: std::sync::Mutex::new(None),
            timeout: limit,
        };
        let result = self
            .within(limit, async {
                request.request_async(&recording).await.map_err(token_error)
            })
            .await;
        let status = recording.status;
        let answer = match result {
            // A 400 without an OAuth error body (Glewlwyd answers a retired refresh token so) is
            // still the provider refusing this refresh token: retrying cannot help, only a new
            // login can (RFC 6749 §5.2 says what the body should have been: `invalid_grant`).
            // A 5xx or a proxy's HTML page stays a transient failure.
            Err(LoginError::TokenEndpoint { error, .. })
                if error == INVALID_RESPONSE
                    && *status.lock().unwrap_or_else(|p| p.into_inner())
                        == Some(http::StatusCode::BAD_REQUEST) =>
            {
                tracing::warn!("the provider refused the refresh token without an OAuth error");
                return Err(LoginError::InvalidGrant);
            }
            other => other?,
        };
        self.validate(answer, IdTokenRule::Refresh { subject })
            .await
    }

    /// Revokes `token` (RFC 7009). `Ok(false)` when the provider advertises no revocation
    /// endpoint or declines this kind of token (`unsupported_token_type`, RFC 7009 §2.2.1, as
    /// providers answer for self-contained JWT access tokens, which lapse at their `exp`).
    /// Errors are logged by the caller, which knows whether they matter.
    /// The client authenticates as `auth` says, like at the token endpoint.
    #[instrument(skip_all, fields(auth = auth.method.as_str()), err(level = "debug"))]
    pub async fn revoke(
        &self,
        token: &Secret,
        hint: TokenHint,
        auth: &ClientAuth,
    ) -> Result<bool, LoginError> {
        // RFC 7009 is one form POST; it is sent directly because the `oauth2` crate refuses a
        // plain-http revocation endpoint even where the configuration allows one (loopback).
        let Some(endpoint) = &self.inner.metadata.revocation_endpoint else {
            return Ok(false);
        };
        let hint = match hint {
            TokenHint::AccessToken => "access_token",
            TokenHint::RefreshToken => "refresh_token",
        };
        let client_id = self.inner.settings.client_id.as_str();
        let mut form = vec![("token", token.expose()), ("token_type_hint", hint)];
        let mut request = self.inner.http.post(endpoint.clone());
        match (auth.method, auth.secret()) {
            (ClientAuthMethod::ClientSecretBasic, Some(secret)) => {
                // RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding; reqwest
                // marks the header sensitive.
                let encode = |v: &str| {
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                };
                request = request.basic_auth(encode(client_id), Some(encode(secret.expose())));
            }
            (ClientAuthMethod::ClientSecretPost, Some(secret)) => {
                form.push(("client_id", client_id));
                form.push(("client_secret", secret.expose()));
            }
            _ => form.push(("client_id", client_id)),
        }
        let answer = self
            .timed(async {
                request
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
        let error = body.get("error").and_then(serde_json::Value::as_str);
        if error == Some("unsupported_token_type") {
            return Ok(false);
        }
        if error == Some("invalid_client") {
            return Err(LoginError::ClientRejected {
                description: body
                    .get("error_description")
                    .and_then(serde_json::Value::as_str)
                    .map(shorten),
            });
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

    /// Validates a token response into a [`TokenSet`]: the id token per OIDC Core §3.1.3.7
    /// (required at login, with its nonce; optional on refresh, same `sub`), the access token
    /// only when the account asks for it.
    async fn validate(
        &self,
        answer: OidcTokenResponse,
        rule: IdTokenRule<'_>,
    ) -> Result<TokenSet, LoginError> {
        let now = OffsetDateTime::now_utc();
        // `iss` must be exactly the string the provider published (checked against the
        // configured issuer at discovery).
        let issuer = self.inner.metadata.issuer.clone();
        let client_id = self.inner.settings.client_id.clone();
        let user = match (&answer.extra_fields().id_token, rule) {
            (Some(id_token), rule) => {
                let nonce = match rule {
                    IdTokenRule::Login { nonce } => Some(nonce.to_owned()),
                    IdTokenRule::Refresh { .. } => None,
                };
                let claims = self
                    .inner
                    .keys
                    .validate(
                        id_token,
                        &jwt::Expectations {
                            issuer: issuer.clone(),
                            audience: client_id.clone(),
                            nonce,
                            authorized_party: Some(client_id),
                        },
                    )
                    .await?;
                let subject = claims
                    .subject
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| JwtError::MissingClaim("sub".into()))?;
                if let IdTokenRule::Refresh { subject: original } = rule
                    && subject != original
                {
                    return Err(LoginError::SubjectChanged);
                }
                Some(UserInfo {
                    subject,
                    name: claims.name,
                    email: claims.email,
                })
            }
            (None, IdTokenRule::Login { .. }) => {
                return Err(LoginError::Unsupported(
                    "it returned no id token; request the `openid` scope".to_owned(),
                ));
            }
            (None, IdTokenRule::Refresh { .. }) => None,
        };
        let access = answer.access_token().secret();
        let expires_at = if self.inner.settings.validate_access_token {
            self.validated_access_expiry(access, answer.expires_in(), now)
                .await?
        } else {
            access_expiry(access, answer.expires_in(), now)
        };
        Ok(TokenSet {
            access_token: Secret::new(access.clone()),
            refresh_token: answer
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone())),
            id_token: answer.extra_fields().id_token.clone().map(Secret::new),
            expires_at,
            issued_at: now,
            user,
            issuer,
        })
    }

    /// `validate_access_token`: the access token must be a JWT from this issuer for the
    /// configured audience; its lifetime is `expires_in`, else its verified `exp`.
    async fn validated_access_expiry(
        &self,
        access: &str,
        expires_in: Option<Duration>,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, LoginError> {
        if !jwt::looks_like_jwt(access) {
            return Err(LoginError::AccessTokenNotJwt);
        }
        let Some(audience) = self.inner.settings.audience.clone() else {
            // The configuration refuses validate_access_token without an audience.
            return Err(LoginError::Unsupported(
                "validate_access_token needs an audience".to_owned(),
            ));
        };
        let claims = self
            .inner
            .keys
            .validate(
                access,
                &jwt::Expectations {
                    issuer: self.inner.metadata.issuer.clone(),
                    audience,
                    nonce: None,
                    authorized_party: None,
                },
            )
            .await?;
        match expires_in {
            Some(lifetime) => Ok(now + lifetime),
            None => OffsetDateTime::from_unix_timestamp(claims.expires_at)
                .map_err(|_| JwtError::BadClaim("exp".into()).into()),
        }
    }
}

/// What the id token of an answer must satisfy.
#[derive(Debug, Clone, Copy)]
enum IdTokenRule<'a> {
    /// A login: an id token is required and carries this login's nonce.
    Login {
        /// The nonce sent with the authorization request.
        nonce: &'a str,
    },
    /// A refresh: an id token is optional and, when present, names the same user.
    Refresh {
        /// The session's `sub`.
        subject: &'a str,
    },
}

/// An opaque access token's expiry: `expires_in`; without it, a JWT's `exp` read as information
/// (unverified, believed only between now and [`MAX_UNVERIFIED_LIFETIME`] ahead); else
/// [`DEFAULT_OPAQUE_LIFETIME`].
fn access_expiry(
    access: &str,
    expires_in: Option<Duration>,
    now: OffsetDateTime,
) -> OffsetDateTime {
    if let Some(lifetime) = expires_in {
        return now + lifetime;
    }
    jwt::unverified_expiry(access)
        .and_then(|exp| OffsetDateTime::from_unix_timestamp(exp).ok())
        .filter(|exp| *exp > now && *exp <= now + MAX_UNVERIFIED_LIFETIME)
        .unwrap_or(now + DEFAULT_OPAQUE_LIFETIME)
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
    auth: ClientAuth,
}

impl std::fmt::Debug for LoginAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAttempt")
            .field("callback", &self.listener.addr)
            .finish_non_exhaustive()
    }
}

/// Starts a login: opens the loopback listener on `callback_port` (0: any free port) and builds
/// the authorization URL with PKCE S256, a random `state` and `nonce`. The code exchange will
/// authenticate the client as `auth` says.
#[instrument(skip_all, err)]
pub async fn start(
    provider: &Provider,
    callback_port: u16,
    auth: ClientAuth,
) -> Result<LoginAttempt, LoginError> {
    start_with_lifetime(provider, callback_port, auth, callback::STATE_LIFETIME).await
}

/// [`start`] with another `state` lifetime (tests).
pub async fn start_with_lifetime(
    provider: &Provider,
    callback_port: u16,
    auth: ClientAuth,
    lifetime: Duration,
) -> Result<LoginAttempt, LoginError> {
    let state = CsrfToken::new_random();
    let nonce = CsrfToken::new_random().secret().clone();
    let listener = callback::listen(callback_port, Secret::new(state.secret().clone()), lifetime)
        .await
        .map_err(callback_error)?;
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
        let name = provider.inner.settings.audience_parameter.as_str();
        request = request.add_extra_param(name, aud.clone());
    }
    let (url, _state) = request.url();
    Ok(LoginAttempt {
        provider: provider.clone(),
        url,
        redirect,
        verifier,
        nonce,
        listener,
        auth,
    })
}

impl LoginAttempt {
    /// The page to show the person.
    pub fn authorize_url(&self) -> &Url {
        &self.url
    }

    /// The provider's token endpoint, where this login's code is exchanged.
    pub fn token_endpoint(&self) -> &Url {
        &self.provider.metadata().token_endpoint
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
            auth,
            ..
        } = self;
        let answer = listener.wait().await.map_err(callback_error)?;
        provider.check_callback_issuer(answer.iss.as_deref())?;
        if let Some((error, description)) = answer.error {
            return Err(LoginError::Authorization { error, description });
        }
        let code = answer.code.ok_or(LoginError::CallbackMalformed)?;
        let code = AuthorizationCode::new(code.expose().to_owned());
        let oauth = provider.oauth(&auth);
        let mut request = oauth
            .exchange_code(code)
            .set_pkce_verifier(verifier)
            .set_redirect_uri(Cow::Owned(redirect));
        if let Some(aud) = provider.inner.settings.resource() {
            request = request.add_extra_param("resource", aud.to_owned());
        }
        let answer = provider
            .timed(async {
                request
                    .request_async(&provider.inner.http)
                    .await
                    .map_err(token_error)
            })
            .await?;
        provider
            .validate(answer, IdTokenRule::Login { nonce: &nonce })
            .await
    }
}

fn callback_error(e: callback::CallbackError) -> LoginError {
    match e {
        callback::CallbackError::Listener { port, reason } => {
            LoginError::CallbackListener { port, reason }
        }
        callback::CallbackError::Expired => LoginError::StateExpired,
        _ => LoginError::Cancelled,
    }
}

impl Provider {
    /// RFC 9207 §2.4: an `iss` in the callback must be this provider's issuer; a provider that
    /// advertises `authorization_response_iss_parameter_supported` must send it. Checked before
    /// the code or the error of the answer is believed.
    fn check_callback_issuer(&self, iss: Option<&str>) -> Result<(), LoginError> {
        let metadata = &self.inner.metadata;
        match iss {
            Some(iss) if iss == metadata.issuer => Ok(()),
            Some(iss) => Err(LoginError::CallbackIssuerMismatch {
                expected: metadata.issuer.clone(),
                found: shorten(iss),
            }),
            None if metadata.authorization_response_iss_parameter_supported => {
                Err(LoginError::CallbackIssuerMissing {
                    expected: metadata.issuer.clone(),
                })
            }
            None => Ok(()),
        }
    }
}

/// An HTTP client for `oauth2` that remembers the status of the answer, which `oauth2` drops when
/// the body is not an OAuth error document.
struct StatusRecorder<'a> {
    http: &'a reqwest::Client,
    status: std::sync::Mutex<Option<http::StatusCode>>,
    /// The request's own time limit, in place of the client's: a refresh may be kept going
    /// longer than the client's other requests ([`Provider::refresh_within`]).
    timeout: Duration,
}

impl<'c> oauth2::AsyncHttpClient<'c> for StatusRecorder<'_> {
    type Error = oauth2::HttpClientError<reqwest::Error>;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<oauth2::HttpResponse, Self::Error>> + Send + Sync + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            // As `oauth2`'s own client for `reqwest` does, with the request's time limit set.
            let mut request = reqwest::Request::try_from(request).map_err(Box::new)?;
            *request.timeout_mut() = Some(self.timeout);
            let mut response = self.http.execute(request).await.map_err(Box::new)?;
            let (status, headers) = (response.status(), std::mem::take(response.headers_mut()));
            let body = response.bytes().await.map_err(Box::new)?;
            let mut answer = http::Response::builder()
                .status(status)
                .body(body.to_vec())?;
            *answer.headers_mut() = headers;
            *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer.status());
            Ok(answer)
        })
    }
}

/// The `error` of a token-endpoint answer that is not an OAuth document of the expected shape.
const INVALID_RESPONSE: &str = "invalid_response";

fn token_error(
    e: RequestTokenError<oauth2::HttpClientError<reqwest::Error>, BasicErrorResponse>,
) -> LoginError {
    match e {
        RequestTokenError::ServerResponse(r)
            if *r.error() == BasicErrorResponseType::InvalidGrant =>
        {
            LoginError::InvalidGrant
        }
        RequestTokenError::ServerResponse(r)
            if *r.error() == BasicErrorResponseType::InvalidClient =>
        {
            LoginError::ClientRejected {
                description: r.error_description().map(|d| shorten(d)),
            }
        }
        RequestTokenError::ServerResponse(r) => LoginError::TokenEndpoint {
            error: r.error().to_string(),
            description: r.error_description().map(|d| shorten(d)),
        },
        RequestTokenError::Request(e) => request_failure(&e),
        RequestTokenError::Parse(..) => LoginError::TokenEndpoint {
            error: INVALID_RESPONSE.into(),
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
