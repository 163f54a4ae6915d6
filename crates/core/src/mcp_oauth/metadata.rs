//! Finding who issues tokens for an MCP server: the unauthenticated probe, the server's
//! protected-resource metadata (RFC 9728) and its authorization server's metadata (RFC 8414 /
//! OpenID Connect discovery), in the order the MCP authorization specification gives, with the
//! checks that stop a mix-up: the document's `resource` must be the server's URL, the AS
//! metadata's `issuer` the one its URL was built from, and PKCE `S256` must be advertised.

use serde::Deserialize;
use url::Url;

use super::challenge::{self, Challenge};
use super::fetch::{Fetcher, display};
use super::{McpOAuthError, shorten};

/// The MCP protocol revision the probe announces.
pub const PROBE_PROTOCOL_VERSION: &str = "2025-11-25";

/// What the MCP server answered to an unauthenticated `initialize`.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The HTTP status.
    pub status: u16,
    /// Its `Bearer` challenge, when it sent one.
    pub challenge: Option<Challenge>,
}

/// Sends an MCP `initialize` without credentials (what a client does first) and reads the
/// challenge of a `401`/`403`. A `2xx` is [`McpOAuthError::NotProtected`]; a redirect is refused.
#[tracing::instrument(skip_all, fields(server = %display(server)), err)]
pub async fn probe(fetcher: &Fetcher, server: &Url) -> Result<Probe, McpOAuthError> {
    fetcher.check_url("MCP server", server)?;
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROBE_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "latchkey", "version": env!("CARGO_PKG_VERSION") },
        },
    });
    let request = fetcher
        .http()
        .post(server.clone())
        .header(http::header::ACCEPT, "application/json, text/event-stream")
        .json(&body);
    let answer = fetcher.send("MCP server", server, request).await?;
    let status = answer.status();
    if status.is_success() {
        return Err(McpOAuthError::NotProtected {
            server: display(server),
        });
    }
    Ok(Probe {
        status: status.as_u16(),
        challenge: challenge::bearer(answer.headers()),
    })
}

/// An MCP server's protected-resource metadata (RFC 9728 §2), the parts the flow uses.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProtectedResource {
    /// `resource`, as published (checked to match the server URL); sent as RFC 8707 `resource`.
    pub resource: String,
    /// `authorization_servers` (issuer identifiers).
    pub authorization_servers: Vec<String>,
    /// `scopes_supported`, when published.
    pub scopes_supported: Option<Vec<String>>,
    /// Where the document was read.
    pub metadata_url: Url,
}

#[derive(Deserialize)]
struct RawProtectedResource {
    resource: Option<String>,
    #[serde(default)]
    authorization_servers: Option<Vec<String>>,
    #[serde(default)]
    scopes_supported: Option<Vec<String>>,
}

/// The canonical form used to compare a resource with the server URL (MCP authorization,
/// "canonical server URI"; RFC 9728 §3.3): scheme and host lowercased and the default port
/// dropped (as URL parsing does), no fragment, and one trailing slash ignored.
pub fn canonical_resource(url: &Url) -> String {
    let mut url = url.clone();
    url.set_fragment(None);
    let text = url.to_string();
    match text.strip_suffix('/') {
        Some(stripped) if url.query().is_none() => stripped.to_owned(),
        _ => text,
    }
}

/// The well-known protected-resource metadata URIs of `server`, in the specification's order:
/// path-inserted (`/.well-known/oauth-protected-resource/{path}`), then the root.
pub fn resource_metadata_candidates(server: &Url) -> Vec<Url> {
    let mut candidates = Vec::with_capacity(2);
    let path = server.path().trim_end_matches('/');
    let mut root = server.clone();
    root.set_query(None);
    root.set_fragment(None);
    if !path.is_empty() {
        let mut inserted = root.clone();
        inserted.set_path(&format!("/.well-known/oauth-protected-resource{path}"));
        candidates.push(inserted);
    }
    root.set_path("/.well-known/oauth-protected-resource");
    candidates.push(root);
    candidates
}

/// Reads the protected-resource metadata: from the challenge's `resource_metadata` when there
/// is one, else from the well-known URIs in order. Its `resource` must match `server`.
#[tracing::instrument(skip_all, fields(server = %display(server)), err)]
pub async fn protected_resource(
    fetcher: &Fetcher,
    server: &Url,
    challenge: Option<&Challenge>,
) -> Result<ProtectedResource, McpOAuthError> {
    let mut candidates = Vec::new();
    if let Some(location) = challenge.and_then(Challenge::resource_metadata) {
        let url = Url::parse(location).map_err(|_| McpOAuthError::Malformed {
            what: "WWW-Authenticate challenge",
            url: display(server),
            reason: "resource_metadata is not a URL".to_owned(),
        })?;
        candidates.push(url);
    }
    candidates.extend(resource_metadata_candidates(server));
    for url in candidates {
        let Some(raw) = fetcher
            .get_document::<RawProtectedResource>("protected-resource metadata", &url)
            .await?
        else {
            continue;
        };
        return validate_protected_resource(raw, server, url);
    }
    Err(McpOAuthError::ResourceMetadataNotFound {
        server: display(server),
    })
}

fn validate_protected_resource(
    raw: RawProtectedResource,
    server: &Url,
    metadata_url: Url,
) -> Result<ProtectedResource, McpOAuthError> {
    let malformed = |reason: &str| McpOAuthError::Malformed {
        what: "protected-resource metadata",
        url: display(&metadata_url),
        reason: reason.to_owned(),
    };
    let resource = raw
        .resource
        .ok_or_else(|| malformed("it has no `resource`"))?;
    let parsed = Url::parse(&resource).map_err(|_| McpOAuthError::ResourceMismatch {
        expected: canonical_resource(server),
        found: shorten(&resource),
    })?;
    if canonical_resource(&parsed) != canonical_resource(server) {
        return Err(McpOAuthError::ResourceMismatch {
            expected: canonical_resource(server),
            found: shorten(&resource),
        });
    }
    let authorization_servers = raw.authorization_servers.unwrap_or_default();
    if authorization_servers.is_empty() {
        return Err(McpOAuthError::NoAuthorizationServer);
    }
    Ok(ProtectedResource {
        resource,
        authorization_servers,
        scopes_supported: raw.scopes_supported,
        metadata_url,
    })
}

/// An authorization server's metadata (RFC 8414 §2 / OIDC Discovery), the parts the flow uses,
/// validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthorizationServer {
    /// `issuer`, exactly as published (the callback's `iss` must equal it).
    pub issuer: String,
    /// Where the browser goes (`http(s)` only).
    pub authorization_endpoint: Url,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: Url,
    /// RFC 7591 Dynamic Client Registration, when offered.
    pub registration_endpoint: Option<Url>,
    /// RFC 7009 revocation, when offered.
    pub revocation_endpoint: Option<Url>,
    /// PKCE methods (contains `S256`).
    pub code_challenge_methods_supported: Vec<String>,
    /// `client_id_metadata_document_supported`: a URL may serve as the client id.
    pub client_id_metadata_document_supported: bool,
    /// RFC 9207: the authorization response carries `iss`.
    pub authorization_response_iss_parameter_supported: bool,
    /// Token endpoint client authentication methods, when advertised.
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// Where the document was read.
    pub metadata_url: Url,
}

#[derive(Deserialize)]
struct RawAuthorizationServer {
    issuer: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    #[serde(default)]
    registration_endpoint: Option<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    client_id_metadata_document_supported: Option<bool>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: Option<bool>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// The metadata URIs of an issuer, in the specification's order. With a path
/// (`https://as/tenant`): RFC 8414 path-inserted, OIDC path-inserted, OIDC path-appended.
/// Without: RFC 8414, then OIDC.
pub fn authorization_server_candidates(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut root = issuer.clone();
    root.set_query(None);
    root.set_fragment(None);
    let at = |p: String| {
        let mut u = root.clone();
        u.set_path(&p);
        u
    };
    if path.is_empty() {
        vec![
            at("/.well-known/oauth-authorization-server".to_owned()),
            at("/.well-known/openid-configuration".to_owned()),
        ]
    } else {
        vec![
            at(format!("/.well-known/oauth-authorization-server{path}")),
            at(format!("/.well-known/openid-configuration{path}")),
            at(format!("{path}/.well-known/openid-configuration")),
        ]
    }
}

/// Reads and checks the metadata of `issuer` (an entry of `authorization_servers`).
#[tracing::instrument(skip_all, fields(issuer = %shorten(issuer)), err)]
pub async fn authorization_server(
    fetcher: &Fetcher,
    issuer: &str,
) -> Result<AuthorizationServer, McpOAuthError> {
    let issuer_url = Url::parse(issuer).map_err(|_| McpOAuthError::Malformed {
        what: "protected-resource metadata",
        url: shorten(issuer),
        reason: "an authorization server is not a URL".to_owned(),
    })?;
    fetcher.check_url("authorization server", &issuer_url)?;
    if issuer_url.query().is_some() || issuer_url.fragment().is_some() {
        return Err(McpOAuthError::Malformed {
            what: "protected-resource metadata",
            url: display(&issuer_url),
            reason: "an issuer has a query or fragment (RFC 8414 §2)".to_owned(),
        });
    }
    for url in authorization_server_candidates(&issuer_url) {
        let Some(raw) = fetcher
            .get_document::<RawAuthorizationServer>("authorization server metadata", &url)
            .await?
        else {
            continue;
        };
        return validate_authorization_server(fetcher, raw, issuer, url);
    }
    Err(McpOAuthError::AuthorizationServerMetadataNotFound {
        issuer: display(&issuer_url),
    })
}

fn validate_authorization_server(
    fetcher: &Fetcher,
    raw: RawAuthorizationServer,
    expected_issuer: &str,
    metadata_url: Url,
) -> Result<AuthorizationServer, McpOAuthError> {
    let what = "authorization server metadata";
    let malformed = |reason: String| McpOAuthError::Malformed {
        what,
        url: display(&metadata_url),
        reason,
    };
    let issuer = raw
        .issuer
        .ok_or_else(|| malformed("it has no `issuer`".to_owned()))?;
    // RFC 8414 §3.3: identical to the issuer the URL was built from.
    if issuer != expected_issuer {
        return Err(McpOAuthError::IssuerMismatch {
            expected: shorten(expected_issuer),
            found: shorten(&issuer),
        });
    }
    let endpoint = |name: &'static str, value: Option<String>| -> Result<Url, McpOAuthError> {
        let value = value.ok_or_else(|| malformed(format!("it has no `{name}`")))?;
        Url::parse(&value).map_err(|_| malformed(format!("`{name}` is not a URL")))
    };
    let authorization_endpoint = endpoint("authorization_endpoint", raw.authorization_endpoint)?;
    if !matches!(authorization_endpoint.scheme(), "http" | "https") {
        return Err(McpOAuthError::BadAuthorizationEndpoint {
            scheme: shorten(authorization_endpoint.scheme()),
        });
    }
    fetcher.check_url("authorization endpoint", &authorization_endpoint)?;
    let token_endpoint = endpoint("token_endpoint", raw.token_endpoint)?;
    fetcher.check_url("token endpoint", &token_endpoint)?;
    let registration_endpoint = raw
        .registration_endpoint
        .map(|v| endpoint("registration_endpoint", Some(v)))
        .transpose()?;
    if let Some(u) = &registration_endpoint {
        fetcher.check_url("registration endpoint", u)?;
    }
    let revocation_endpoint = raw
        .revocation_endpoint
        .map(|v| endpoint("revocation_endpoint", Some(v)))
        .transpose()?;
    if let Some(u) = &revocation_endpoint {
        fetcher.check_url("revocation endpoint", u)?;
    }
    // MCP authorization: a client MUST refuse to proceed when S256 is not advertised (absent
    // `code_challenge_methods_supported` included).
    let methods = raw.code_challenge_methods_supported.unwrap_or_default();
    if !methods.iter().any(|m| m == "S256") {
        return Err(McpOAuthError::PkceUnsupported {
            issuer: shorten(&issuer),
        });
    }
    Ok(AuthorizationServer {
        issuer,
        authorization_endpoint,
        token_endpoint,
        registration_endpoint,
        revocation_endpoint,
        code_challenge_methods_supported: methods,
        client_id_metadata_document_supported: raw
            .client_id_metadata_document_supported
            .unwrap_or(false),
        authorization_response_iss_parameter_supported: raw
            .authorization_response_iss_parameter_supported
            .unwrap_or(false),
        token_endpoint_auth_methods_supported: raw.token_endpoint_auth_methods_supported,
        metadata_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    fn strings(urls: Vec<Url>) -> Vec<String> {
        urls.into_iter().map(String::from).collect()
    }

    #[test]
    fn resource_metadata_is_looked_for_path_inserted_then_at_the_root() {
        assert_eq!(
            strings(resource_metadata_candidates(&url(
                "https://mcp.example.com/public/mcp?x=1"
            ))),
            [
                "https://mcp.example.com/.well-known/oauth-protected-resource/public/mcp",
                "https://mcp.example.com/.well-known/oauth-protected-resource",
            ]
        );
        assert_eq!(
            strings(resource_metadata_candidates(&url(
                "https://mcp.example.com/"
            ))),
            ["https://mcp.example.com/.well-known/oauth-protected-resource"]
        );
    }

    #[test]
    fn authorization_server_metadata_follows_the_specified_order() {
        assert_eq!(
            strings(authorization_server_candidates(&url(
                "https://auth.example.com/tenant1"
            ))),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example.com/.well-known/openid-configuration/tenant1",
                "https://auth.example.com/tenant1/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            strings(authorization_server_candidates(&url(
                "https://auth.example.com"
            ))),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn resources_compare_in_canonical_form() {
        let same = [
            ("https://MCP.Example.com/mcp", "https://mcp.example.com/mcp"),
            (
                "https://mcp.example.com:443/mcp",
                "https://mcp.example.com/mcp",
            ),
            (
                "https://mcp.example.com/mcp/",
                "https://mcp.example.com/mcp",
            ),
            (
                "https://mcp.example.com/mcp#frag",
                "https://mcp.example.com/mcp",
            ),
            ("https://mcp.example.com", "https://mcp.example.com/"),
        ];
        for (a, b) in same {
            assert_eq!(
                canonical_resource(&url(a)),
                canonical_resource(&url(b)),
                "{a} vs {b}"
            );
        }
        let different = [
            (
                "https://mcp.example.com/mcp",
                "https://mcp.example.com/other",
            ),
            ("https://mcp.example.com/mcp", "http://mcp.example.com/mcp"),
            (
                "https://mcp.example.com/mcp",
                "https://mcp.example.com:8443/mcp",
            ),
            (
                "https://mcp.example.com/mcp",
                "https://evil.example.com/mcp",
            ),
            ("https://mcp.example.com/", "https://mcp.example.com/mcp"),
        ];
        for (a, b) in different {
            assert_ne!(
                canonical_resource(&url(a)),
                canonical_resource(&url(b)),
                "{a} vs {b}"
            );
        }
    }
}
