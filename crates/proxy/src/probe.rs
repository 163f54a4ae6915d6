//! OAuth discovery and registration requests aimed at Latchkey itself. An MCP host that got a
//! `401` (a missing or stale Latchkey client token) starts the MCP authorization flow against the
//! proxy: protected-resource and authorization-server metadata under `/.well-known/`, then
//! dynamic registration at `/register`, `/authorize` and `/token` at the root. Latchkey signs in
//! on the person's behalf and the host must never run OAuth against it, so these get a quick JSON
//! `404` that says so, ahead of the client-token gate and without an audit row (a host probing on
//! every connect would flood the log). The `Host` and `Origin` gates still run first.
//!
//! Which paths the proxy answers itself, for every service alike:
//! - any path with a `.well-known` segment followed by `oauth-protected-resource`,
//!   `oauth-authorization-server` or `openid-configuration` (RFC 9728 and RFC 8414 insert the
//!   document before the resource's path, OIDC Discovery appends it after: both spellings, at the
//!   root or under `/{service}/...`). An upstream that speaks OAuth itself is Latchkey's to sign in
//!   to (PROTOCOL §6); its metadata is never the host's business.
//! - exactly `/register`, `/authorize` and `/token` at the root, unless a service has that name.
//!
//! Everything else under `/{service}/` reaches the upstream, including its other `.well-known`
//! documents and its own `/{service}/token`-style API paths.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method};
use tracing::debug;

use crate::error::{ProxyError, json_response};
use crate::gate;
use crate::state::Routes;

/// The discovery documents of RFC 9728, RFC 8414 and OpenID Connect Discovery.
const DISCOVERY_DOCUMENTS: [&str; 3] = [
    "oauth-protected-resource",
    "oauth-authorization-server",
    "openid-configuration",
];

/// The endpoints an MCP client falls back to at the root when no metadata names them.
const ROOT_ENDPOINTS: [&str; 3] = ["register", "authorize", "token"];

/// Whether `path` is an OAuth request the proxy answers itself.
pub(crate) fn is_oauth_request(path: &str, routes: &Routes) -> bool {
    if let Some(name) = path.strip_prefix('/')
        && ROOT_ENDPOINTS.contains(&name)
    {
        return !routes.contains_key(name);
    }
    // Nearly every request is not one: one substring search says so, where splitting the path
    // twice into segments cost about 600 instructions a request.
    if !path.contains(".well-known/") {
        return false;
    }
    path.split('/')
        .zip(path.split('/').skip(1))
        .any(|(segment, next)| segment == ".well-known" && DISCOVERY_DOCUMENTS.contains(&next))
}

/// The answer to such a request: `403 forbidden_origin` for a web page (gate 2), else `404
/// oauth_not_offered`. Neither is audited.
///
/// The `404` body is PROTOCOL §3's with the sentence repeated as RFC 6749's `error_description`:
/// the SDKs read these answers with their OAuth code, and the TypeScript SDK's
/// `parseErrorResponse` (`client/auth.js`) shows only `error_description` of a JSON error (the
/// Python SDK shows the raw body).
pub(crate) fn answer(method: &Method, headers: &HeaderMap) -> Response {
    if let Err(refusal) = gate::check_origin(method, headers) {
        debug!(%method, code = %refusal.code(), "oauth request refused");
        return refusal.into_response();
    }
    let refusal = ProxyError::OAuthNotOffered;
    debug!(%method, code = %refusal.code(), "oauth request answered");
    let message = refusal.to_string();
    let body = serde_json::json!({
        "error": refusal.code(),
        "message": message,
        "error_description": message,
    });
    // Serialising a `Value` cannot fail: its map keys are strings.
    json_response(
        refusal.status(),
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::PreparedRoute;

    fn routes(names: &[&str]) -> Routes {
        names
            .iter()
            .map(|name| {
                let route = crate::Route::new(
                    *name,
                    url::Url::parse("https://api.example.test/").expect("url"),
                    vec![],
                )
                .expect("route");
                ((*name).to_owned(), Arc::new(PreparedRoute::new(&route)))
            })
            .collect()
    }

    #[test]
    fn discovery_documents_are_ours_at_the_root_and_under_any_service() {
        let routes = routes(&["mcp"]);
        for path in [
            "/.well-known/oauth-protected-resource",
            "/.well-known/oauth-protected-resource/mcp/mcp",
            "/.well-known/oauth-authorization-server",
            "/.well-known/oauth-authorization-server/mcp/mcp",
            "/.well-known/openid-configuration",
            "/.well-known/openid-configuration/mcp/mcp",
            "/mcp/.well-known/oauth-protected-resource",
            "/mcp/.well-known/oauth-authorization-server/x",
            "/mcp/mcp/.well-known/openid-configuration",
            "/unknown/.well-known/openid-configuration",
            "/register",
            "/authorize",
            "/token",
        ] {
            assert!(is_oauth_request(path, &routes), "{path}");
        }
    }

    #[test]
    fn other_paths_reach_the_services() {
        let routes = routes(&["mcp", "token"]);
        for path in [
            "/",
            "/mcp/mcp",
            "/mcp/register",
            "/mcp/token",
            "/mcp/authorize",
            "/mcp/.well-known/mcp",
            "/.well-known/security.txt",
            "/mcp/.well-known",
            "/mcp/well-known/openid-configuration",
            "/mcp/.well-known/openid-configuration-x",
            "/mcp/x.well-known/openid-configuration",
            "/mcp/.well-known./openid-configuration",
            "/register/x",
            "/token",
        ] {
            assert!(!is_oauth_request(path, &routes), "{path}");
        }
    }
}
