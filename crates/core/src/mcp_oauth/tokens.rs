//! The token endpoint of an MCP server's authorization server: the code exchange and refresh,
//! both with the RFC 8707 `resource` of the MCP server. Access tokens are opaque (their lifetime
//! comes from `expires_in`); an answer that says it is for another resource (`resource` or `aud`
//! in the answer, where an authorization server adds them) is refused before anything is kept.

use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;
use url::Url;

use super::fetch::{Fetcher, display, parse_json};
use super::metadata::{AuthorizationServer, canonical_resource};
use super::registration::{ClientAuth, ClientRegistration};
use super::{McpOAuthError, shorten};
use crate::secret::Secret;

/// Lifetime assumed when an answer has no `expires_in`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Tokens for one MCP server. `Debug` never shows a token.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenSet {
    /// The access token, opaque, sent as `Authorization: Bearer` to the MCP server.
    pub access_token: Secret,
    /// The refresh token to keep: the rotated one, or the previous one when a refresh answer
    /// carried none.
    pub refresh_token: Option<Secret>,
    /// When the access token expires (from `expires_in`, else [`DEFAULT_LIFETIME`]).
    pub expires_at: OffsetDateTime,
    /// When the answer arrived.
    pub issued_at: OffsetDateTime,
    /// The granted scopes when the answer lists them (RFC 6749 §5.1), else `None`.
    pub scopes: Option<Vec<String>>,
    /// The resource the tokens are for (the MCP server's `resource`).
    pub resource: String,
}

/// What the token requests of one MCP server need.
#[derive(Debug, Clone)]
pub struct TokenClient<'a> {
    /// The authorization server.
    pub server: &'a AuthorizationServer,
    /// Latchkey's registration there.
    pub client: &'a ClientRegistration,
    /// The MCP server's resource (sent as `resource`, expected in the answer when named).
    pub resource: &'a str,
}

/// The authorization-code exchange (with the PKCE verifier and the resource).
pub(crate) async fn exchange_code(
    fetcher: &Fetcher,
    target: &TokenClient<'_>,
    code: &Secret,
    verifier: &Secret,
    redirect_uri: &str,
) -> Result<TokenSet, McpOAuthError> {
    let form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.expose()),
        ("code_verifier", verifier.expose()),
        ("redirect_uri", redirect_uri),
        ("resource", target.resource),
    ];
    request(fetcher, target, form, None).await
}

/// Refreshes the access token (with the resource, and `scopes` when given: a refresh may ask for
/// fewer scopes, never more). `invalid_grant` is [`McpOAuthError::InvalidGrant`].
#[tracing::instrument(skip_all, err)]
pub async fn refresh(
    fetcher: &Fetcher,
    target: &TokenClient<'_>,
    refresh_token: &Secret,
    scopes: Option<&[String]>,
) -> Result<TokenSet, McpOAuthError> {
    let scope = scopes.map(|s| s.join(" "));
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose()),
        ("resource", target.resource),
    ];
    if let Some(scope) = scope.as_deref().filter(|s| !s.is_empty()) {
        form.push(("scope", scope));
    }
    request(fetcher, target, form, Some(refresh_token)).await
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> Vec<&str> {
        match self {
            Self::One(v) => vec![v.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(u64),
    Text(String),
}

// No `Debug`: it holds tokens.
#[derive(Deserialize)]
struct RawTokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<Seconds>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    resource: Option<OneOrMany>,
    #[serde(default)]
    aud: Option<OneOrMany>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

async fn request(
    fetcher: &Fetcher,
    target: &TokenClient<'_>,
    mut form: Vec<(&str, &str)>,
    previous_refresh: Option<&Secret>,
) -> Result<TokenSet, McpOAuthError> {
    let what = "token endpoint";
    let endpoint: &Url = &target.server.token_endpoint;
    fetcher.check_url(what, endpoint)?;
    let client_id = target.client.client_id.as_str();
    let mut request = fetcher.http().post(endpoint.clone());
    match &target.client.auth {
        ClientAuth::ClientSecretBasic(secret) => {
            // RFC 6749 §2.3.1: both parts form-urlencoded before the Basic encoding.
            let encode =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            request = request.basic_auth(encode(client_id), Some(encode(secret.expose())));
        }
        ClientAuth::ClientSecretPost(secret) => {
            form.push(("client_id", client_id));
            form.push(("client_secret", secret.expose()));
        }
        ClientAuth::None => form.push(("client_id", client_id)),
    }
    let request = request
        .header(http::header::ACCEPT, "application/json")
        .form(&form);
    let answer = fetcher.send(what, endpoint, request).await?;
    let status = answer.status();
    let bytes = fetcher.read_capped(what, endpoint, answer).await?;
    let now = OffsetDateTime::now_utc();
    if !status.is_success() {
        let parsed: Option<ErrorAnswer> = serde_json::from_slice(&bytes).ok();
        let (error, description) = parsed
            .map(|e| (e.error, e.error_description))
            .unwrap_or_default();
        if error.as_deref() == Some("invalid_grant") {
            return Err(McpOAuthError::InvalidGrant);
        }
        return Err(McpOAuthError::TokenEndpoint {
            error: error.map_or_else(|| format!("http_{}", status.as_u16()), |e| shorten(&e)),
            description: description.map(|d| shorten(&d)),
        });
    }
    let raw: RawTokenAnswer = parse_json("token answer", endpoint, &bytes)?;
    let malformed = |reason: &str| McpOAuthError::Malformed {
        what: "token answer",
        url: display(endpoint),
        reason: reason.to_owned(),
    };
    check_resource(target.resource, raw.resource.as_ref())?;
    check_resource(target.resource, raw.aud.as_ref())?;
    if let Some(kind) = &raw.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(malformed(&format!(
            "the token type is `{}`, not Bearer",
            shorten(kind)
        )));
    }
    let access_token = raw
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("it has no access_token"))?;
    let lifetime = match raw.expires_in {
        None => DEFAULT_LIFETIME,
        Some(Seconds::Number(n)) => Duration::from_secs(n),
        Some(Seconds::Text(t)) => t
            .trim()
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| malformed("expires_in is not a number of seconds"))?,
    };
    let refresh_token = raw
        .refresh_token
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .or_else(|| previous_refresh.cloned());
    Ok(TokenSet {
        access_token: Secret::new(access_token),
        refresh_token,
        expires_at: now + lifetime,
        issued_at: now,
        scopes: raw.scope.map(|s| {
            s.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }),
        resource: target.resource.to_owned(),
    })
}

/// RFC 8707 §2.2 lets the answer name what the token is for; when it does, the MCP server's
/// resource must be among the values.
fn check_resource(expected: &str, named: Option<&OneOrMany>) -> Result<(), McpOAuthError> {
    let Some(named) = named else {
        return Ok(());
    };
    let values = named.values();
    let canonical =
        |v: &str| Url::parse(v).map_or_else(|_| v.to_owned(), |u| canonical_resource(&u));
    let expected_canonical = canonical(expected);
    if values.iter().any(|v| canonical(v) == expected_canonical) {
        return Ok(());
    }
    Err(McpOAuthError::TokenForOtherResource {
        expected: shorten(expected),
        found: shorten(&values.join(" ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_naming_another_resource_is_refused() {
        let mine = "https://mcp.example.com/mcp";
        assert!(check_resource(mine, None).is_ok());
        assert!(
            check_resource(
                mine,
                Some(&OneOrMany::One("https://mcp.example.com/mcp/".into()))
            )
            .is_ok()
        );
        assert!(
            check_resource(
                mine,
                Some(&OneOrMany::Many(vec!["api://x".into(), mine.into()]))
            )
            .is_ok()
        );
        let e = check_resource(
            mine,
            Some(&OneOrMany::One("https://evil.example/mcp".into())),
        )
        .expect_err("another resource");
        assert_eq!(e.code(), crate::Code::McpOauthTokenWrongResource);
    }
}
