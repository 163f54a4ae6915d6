//! The rules every configured value obeys, in one place: the loader applies them with the
//! file's line numbers, and the proxy, the client store and the runtime apply the same functions
//! to values that did not come from the file (remote servers added while running, client names).
//! A configuration the loader accepts therefore never fails at the proxy's start.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue, header};
use url::{Host, Url};

/// Longest name, in bytes (every accepted character is ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// What is wrong with a value and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl Refusal {
    fn new(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// True for 1-64 of `[A-Za-z0-9._-]`, not starting with `.`: the alphabet of account, service,
/// server and client names (safe in a URL path, a keychain key, a file name and a log line).
pub fn is_valid_name(value: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&value.len())
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a name (see [`is_valid_name`]).
pub fn name(value: &str) -> Result<(), Refusal> {
    if is_valid_name(value) {
        Ok(())
    } else {
        Err(Refusal::new(
            format!(
                "`{}` is not a valid name: use 1-64 letters, digits, `.`, `_` or `-`, not starting with `.`",
                value.escape_debug()
            ),
            "rename it, e.g. \"work\" or \"github\"",
        ))
    }
}

/// First path segments the proxy keeps for itself, in any case.
const RESERVED_ROUTES: [&str; 2] = ["v1", "oauth"];

/// Checks the name of a proxy route (a service or a remote MCP server): a valid name, and not
/// one of Latchkey's own path prefixes in any case (`v1`, `oauth`).
pub fn route_name(value: &str) -> Result<(), Refusal> {
    name(value)?;
    if RESERVED_ROUTES
        .iter()
        .any(|r| value.eq_ignore_ascii_case(r))
    {
        return Err(Refusal::new(
            format!("`{value}` is reserved for Latchkey's own endpoints (in any letter case)"),
            "choose another name",
        ));
    }
    Ok(())
}

/// True when the URL's host is a loopback address or `localhost`.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Checks a service's upstream base URL: `https://`, or `http://` to a loopback host when
/// `allow_loopback_http`; a host; no user name, password, query or fragment (requests' own paths
/// and queries are appended to it).
pub fn upstream(url: &Url, allow_loopback_http: bool) -> Result<(), Refusal> {
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(url) && allow_loopback_http => {}
        "http" if is_loopback_host(url) => {
            return Err(Refusal::new(
                "a plain http:// upstream must be allowed explicitly",
                "add allow_loopback_http = true to this service (loopback only), or use https://",
            ));
        }
        _ => {
            return Err(Refusal::new(
                format!("upstream `{url}` is not https://"),
                "use an https:// upstream; plain http is only allowed for a loopback upstream with allow_loopback_http = true",
            ));
        }
    }
    if url.host().is_none() {
        return Err(Refusal::new(
            format!("upstream `{url}` has no host"),
            "write a full URL such as \"https://api.example.com\"",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::new(
            "upstream contains a user name or password",
            "remove the credentials from the URL; secrets never go in this file",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Refusal::new(
            format!("upstream `{url}` has a query string or a fragment"),
            "remove `?...` and `#...`: the upstream is a base URL; inject a fixed parameter with a credential mapping (query_param)",
        ));
    }
    Ok(())
}

/// Headers that describe the connection or the message framing, which the proxy sets itself.
const FRAMING_HEADERS: [HeaderName; 8] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::EXPECT,
];

/// The header a local client's Latchkey token travels in; the proxy removes it.
const CLIENT_HEADER: &str = "x-latchkey-client";

/// Checks a header a credential is injected into and returns it typed: a valid header name that
/// is not one the proxy manages (framing, `Proxy-*`, `X-Latchkey-Client`).
pub fn injected_header(value: &str) -> Result<HeaderName, Refusal> {
    let header = HeaderName::from_bytes(value.as_bytes()).map_err(|_| {
        Refusal::new(
            format!("`{}` is not a valid header name", value.escape_debug()),
            "use a header name such as \"Authorization\" or \"X-API-Key\"",
        )
    })?;
    if FRAMING_HEADERS.contains(&header)
        || header.as_str().starts_with("proxy-")
        || header.as_str() == CLIENT_HEADER
    {
        return Err(Refusal::new(
            format!("`{value}` is managed by the proxy itself and cannot carry a credential"),
            "inject into another header, such as \"Authorization\" or \"X-API-Key\"",
        ));
    }
    Ok(header)
}

/// Checks the text put before an injected header's value: characters allowed in a header value.
pub fn header_prefix(prefix: &str) -> Result<(), Refusal> {
    if HeaderValue::from_str(prefix).is_err() {
        return Err(Refusal::new(
            "the prefix contains a control character",
            "use a plain prefix such as \"Bearer \"",
        ));
    }
    Ok(())
}

/// Checks a query parameter a credential is injected into.
pub fn query_param(param: &str) -> Result<(), Refusal> {
    if param.is_empty() {
        return Err(Refusal::new(
            "query_param is empty",
            "name the query parameter, e.g. \"api_key\"",
        ));
    }
    Ok(())
}

/// The key under which an injected query parameter counts as a duplicate of another.
pub fn query_param_key(param: &str) -> String {
    param.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_routes_are_refused_in_any_case() {
        for bad in ["v1", "V1", "oauth", "OAuth"] {
            assert!(route_name(bad).is_err(), "{bad}");
        }
        assert!(route_name("v2").is_ok());
    }

    #[test]
    fn proxy_managed_headers_cannot_carry_a_credential() {
        for bad in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "Upgrade",
            "Expect",
            "TE",
            "Trailer",
            "Proxy-Authorization",
            "X-Latchkey-Client",
        ] {
            assert!(injected_header(bad).is_err(), "{bad}");
        }
        assert_eq!(
            injected_header("X-Api-Key").expect("valid").as_str(),
            "x-api-key"
        );
    }

    #[test]
    fn upstreams_with_a_query_or_fragment_are_refused() {
        for bad in [
            "https://a.example/?k=v",
            "https://a.example/#f",
            "https://u:p@a.example",
            "http://a.example",
            "ftp://a.example",
        ] {
            let url = Url::parse(bad).expect("test URL");
            assert!(upstream(&url, true).is_err(), "{bad}");
        }
        let local = Url::parse("http://127.0.0.1:9").expect("test URL");
        assert!(upstream(&local, false).is_err());
        assert!(upstream(&local, true).is_ok());
    }

    #[test]
    fn prefixes_must_fit_in_a_header_value() {
        assert!(header_prefix("Bearer ").is_ok());
        assert!(header_prefix("tab\tok").is_ok());
        for bad in ["a\u{7f}b", "a\r\nb", "a\0b"] {
            assert!(header_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
