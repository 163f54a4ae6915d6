//! The bounded HTTP that every request of the MCP OAuth flow goes through: a client that never
//! follows redirects (a `3xx` is an error), a timeout per request, answers read incrementally up
//! to a size cap, and the scheme rule (https, or http on loopback only when the caller allows
//! it explicitly). Peers here are found by discovery, so each one is treated as untrusted.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use super::McpOAuthError;

/// The default cap on any document or answer (64 KiB).
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// The default timeout of each request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// How requests of the flow are made.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Timeout of each request.
    pub timeout: Duration,
    /// The most bytes read from any answer.
    pub max_document_bytes: usize,
    /// Allows `http://` on loopback hosts (local servers, tests); never off loopback.
    pub allow_insecure_loopback: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            allow_insecure_loopback: false,
        }
    }
}

/// The HTTP client of the flow: no redirects, timeouts, size caps. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    settings: Settings,
}

impl Fetcher {
    /// A fetcher with its own non-redirecting client.
    pub fn new(settings: Settings) -> Result<Self, McpOAuthError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("latchkey/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| McpOAuthError::Unreachable {
                what: "HTTP client",
                reason: e.to_string(),
            })?;
        Ok(Self { http, settings })
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Refuses a URL that is not `https` (or loopback `http` when allowed).
    pub fn check_url(&self, what: &'static str, url: &Url) -> Result<(), McpOAuthError> {
        check_scheme(what, url, self.settings.allow_insecure_loopback)
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request built on the non-redirecting client, with the timeout; a `3xx` answer is
    /// [`McpOAuthError::Redirected`].
    pub(crate) async fn send(
        &self,
        what: &'static str,
        url: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<Response, McpOAuthError> {
        let answer = tokio::time::timeout(self.settings.timeout, request.send())
            .await
            .map_err(|_| McpOAuthError::Timeout {
                what,
                timeout: self.settings.timeout,
            })?
            .map_err(|e| self.transport_error(what, &e))?;
        if answer.status().is_redirection() {
            return Err(McpOAuthError::Redirected {
                what,
                url: display(url),
                status: answer.status().as_u16(),
            });
        }
        Ok(answer)
    }

    /// GETs a JSON document: `Ok(None)` on `404` (the caller tries the next location), the
    /// document on `2xx`, an error otherwise.
    pub(crate) async fn get_document<T: DeserializeOwned>(
        &self,
        what: &'static str,
        url: &Url,
    ) -> Result<Option<T>, McpOAuthError> {
        self.check_url(what, url)?;
        let request = self
            .http
            .get(url.clone())
            .header(http::header::ACCEPT, "application/json");
        let answer = self.send(what, url, request).await?;
        let status = answer.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(McpOAuthError::UnexpectedStatus {
                what,
                url: display(url),
                status: status.as_u16(),
            });
        }
        let body = self.read_capped(what, url, answer).await?;
        parse_json(what, url, &body).map(Some)
    }

    /// Reads an answer's body chunk by chunk, refusing it as soon as it passes the cap (a
    /// `Content-Length` over the cap is refused before reading).
    pub(crate) async fn read_capped(
        &self,
        what: &'static str,
        url: &Url,
        mut answer: Response,
    ) -> Result<Vec<u8>, McpOAuthError> {
        let limit = self.settings.max_document_bytes;
        let too_large = || McpOAuthError::TooLarge {
            what,
            url: display(url),
            limit,
        };
        if answer.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        loop {
            let chunk = tokio::time::timeout(self.settings.timeout, answer.chunk())
                .await
                .map_err(|_| McpOAuthError::Timeout {
                    what,
                    timeout: self.settings.timeout,
                })?
                .map_err(|e| self.transport_error(what, &e))?;
            let Some(chunk) = chunk else {
                return Ok(body);
            };
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
    }

    fn transport_error(&self, what: &'static str, e: &reqwest::Error) -> McpOAuthError {
        if e.is_timeout() {
            return McpOAuthError::Timeout {
                what,
                timeout: self.settings.timeout,
            };
        }
        let kind = if e.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        let reason = match e.url().and_then(|u| u.host_str().map(str::to_owned)) {
            Some(host) => format!("{kind} to {host}"),
            None => kind.to_owned(),
        };
        McpOAuthError::Unreachable { what, reason }
    }
}

/// Decodes a JSON body, naming the document in the error (never echoing the body).
pub(crate) fn parse_json<T: DeserializeOwned>(
    what: &'static str,
    url: &Url,
    body: &[u8],
) -> Result<T, McpOAuthError> {
    serde_json::from_slice(body).map_err(|e| McpOAuthError::Malformed {
        what,
        url: display(url),
        reason: format!("not the expected JSON: {}", e.classify_name()),
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "a field is missing or of the wrong type",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// A URL for messages: scheme, host, port and path; no query, no fragment, no userinfo.
pub(crate) fn display(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// True for `127.0.0.0/8`, `::1` and `localhost`.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The scheme rule of PROTOCOL §6: `https`, or `http` on loopback only when allowed.
pub(crate) fn check_scheme(
    what: &'static str,
    url: &Url,
    allow_insecure_loopback: bool,
) -> Result<(), McpOAuthError> {
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if allow_insecure_loopback && is_loopback(url) => Ok(()),
        _ => Err(McpOAuthError::InsecureUrl {
            what,
            url: url.origin().ascii_serialization(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    #[test]
    fn plain_http_is_allowed_only_on_loopback_and_only_when_asked() {
        assert!(check_scheme("x", &url("https://mcp.example.com/mcp"), false).is_ok());
        assert!(check_scheme("x", &url("http://127.0.0.1:9/mcp"), true).is_ok());
        assert!(check_scheme("x", &url("http://localhost:9/mcp"), true).is_ok());
        assert!(check_scheme("x", &url("http://[::1]:9/mcp"), true).is_ok());
        for (u, allow) in [
            ("http://127.0.0.1:9/mcp", false),
            ("http://mcp.example.com/mcp", true),
            ("http://10.0.0.1/mcp", true),
            ("ftp://127.0.0.1/x", true),
        ] {
            let e = check_scheme("x", &url(u), allow).expect_err(u);
            assert_eq!(e.code(), crate::Code::McpOauthInsecureUrl, "{u}");
        }
    }

    #[test]
    fn messages_never_show_query_values() {
        assert_eq!(
            display(&url("https://u:p@a.example/p?code=secret#f")),
            "https://a.example/p"
        );
    }
}
