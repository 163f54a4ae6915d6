//! OpenID Connect discovery (`/.well-known/openid-configuration`), falling back to RFC 8414
//! (`/.well-known/oauth-authorization-server`). The published `issuer` must equal the configured
//! one exactly (a trailing slash aside), or tokens could be accepted from someone else.

use serde::Deserialize;
use url::Url;

use super::{LoginError, ProviderSettings, jwt};

/// The parts of the provider's metadata Latchkey uses.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct Metadata {
    /// The issuer, exactly as published (tokens carry this string in `iss`).
    pub issuer: String,
    /// Where the browser goes.
    pub authorization_endpoint: Url,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: Url,
    /// The signing keys.
    pub jwks_uri: Url,
    /// RFC 7009 revocation, when supported.
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    /// RP-initiated logout, when supported.
    #[serde(default)]
    pub end_session_endpoint: Option<Url>,
    /// PKCE methods, when advertised.
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// The provider puts `iss` in its authorization responses (RFC 9207).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// Client authentication methods of the token endpoint, when advertised (RFC 8414 says
    /// `client_secret_basic` when absent).
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// Fetches and checks the metadata of `settings.issuer`.
pub(super) async fn fetch(
    http: &reqwest::Client,
    settings: &ProviderSettings,
) -> Result<Metadata, LoginError> {
    let configured = settings.issuer.as_str().trim_end_matches('/');
    let oidc = format!("{configured}/.well-known/openid-configuration");
    let path = settings.issuer.path().trim_end_matches('/');
    let rfc8414 = format!(
        "{}/.well-known/oauth-authorization-server{path}",
        settings.issuer.origin().ascii_serialization()
    );
    let discovery_error = |reason: String| LoginError::Discovery {
        issuer: configured.to_owned(),
        reason,
    };
    let mut last = None;
    for url in [oidc, rfc8414] {
        let answer = match http.get(&url).timeout(settings.timeout).send().await {
            Ok(a) => a,
            Err(e) if e.is_timeout() => return Err(LoginError::Timeout(settings.timeout)),
            Err(e) => {
                return Err(LoginError::Unreachable {
                    reason: jwt::without_url(&e),
                });
            }
        };
        if answer.status() == reqwest::StatusCode::NOT_FOUND {
            last = Some(discovery_error(
                "it publishes no OpenID Connect or OAuth metadata (404); check `issuer`".into(),
            ));
            continue;
        }
        if !answer.status().is_success() {
            return Err(discovery_error(format!(
                "its metadata answered {}",
                answer.status()
            )));
        }
        let metadata: Metadata = answer.json().await.map_err(|_| {
            discovery_error("its metadata is not the expected JSON document".into())
        })?;
        if metadata.issuer.trim_end_matches('/') != configured {
            return Err(discovery_error(format!(
                "it says its issuer is `{}`, not the configured one; fix `issuer` in the configuration",
                metadata.issuer.chars().take(200).collect::<String>()
            )));
        }
        return Ok(metadata);
    }
    Err(last.unwrap_or_else(|| discovery_error("no metadata".into())))
}
