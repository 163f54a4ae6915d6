//! Forwarding one request to its service's upstream: the path joined onto the upstream's base
//! path, the client's credentials, cookies, hop-by-hop and forwarding headers removed, the
//! service's credentials injected, and the answer streamed back as it comes (redirects included,
//! never followed). WebSocket upgrades are handed to [`crate::tunnel`].

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};
use hyper::upgrade::OnUpgrade;
use tracing::debug;

use crate::audit::Finish;
use crate::body::{ResponseBody, UploadBody};
use crate::connections::{ConnectionKind, unix_seconds};
use crate::error::ProxyError;
use crate::gate::CLIENT_HEADER;
use crate::state::{Prepared, PreparedRoute, ProxyState};
use crate::{refusal, tunnel};

/// Request headers never forwarded (besides those `Connection` names and the injected ones).
const STRIP_REQUEST: [HeaderName; 10] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::HOST,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::FORWARDED,
    header::EXPECT,
    HeaderName::from_static("keep-alive"),
];

/// Response headers never passed back. `Set-Cookie` is dropped: the proxy never forwards the
/// client's `Cookie`, so upstream cookies could not work anyway, and every service shares the
/// proxy's one origin, where a browser would otherwise mix (and expose) their cookies.
const STRIP_RESPONSE: [HeaderName; 6] = [
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::SET_COOKIE,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
];

/// Forwards `req` (already through every gate) to `route`'s upstream for `client`.
pub(crate) async fn forward(
    state: &ProxyState,
    route: &Arc<PreparedRoute>,
    client: &str,
    req: Request,
    finish: &mut Finish,
) -> Result<Response, ProxyError> {
    let inner = &state.inner;
    let limits = &inner.config.limits;
    let (mut parts, body) = req.into_parts();

    let rest = parts
        .uri
        .path()
        .get(1 + route.service.len()..)
        .unwrap_or_default();
    if has_dot_segment(rest) {
        return Err(ProxyError::InvalidPath);
    }
    if let (Some(max), Some(len)) = (limits.max_body_bytes, content_length(&parts.headers))
        && len > max
    {
        return Err(ProxyError::BodyTooLarge);
    }

    let prepared = match inner.credentials.credentials(&route.service).await {
        Ok(values) => route.prepare(values),
        Err(e) => Err(e.into()),
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(e @ (ProxyError::Credentials(_) | ProxyError::CredentialsInvalid)) => {
            let service = &route.service;
            return Ok(refusal::refuse(state, service, client, &e, &parts, body, finish).await);
        }
        Err(e) => return Err(e),
    };

    let websocket = is_websocket_upgrade(&parts.method, parts.version, &parts.headers);
    parts.uri = upstream_uri(route, rest, parts.uri.query(), &prepared)?;
    rewrite_request_headers(&mut parts.headers, route, &prepared, websocket);
    let client_upgrade = if websocket {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    parts.extensions = http::Extensions::new();
    parts.version = Version::HTTP_11;

    let live = inner
        .connections
        .open(client, &route.service, unix_seconds());
    finish.track(&inner.connections, live.clone());
    let request = Request::from_parts(
        parts,
        UploadBody::new(body, live.clone(), limits.max_body_bytes),
    );

    let sent = tokio::select! {
        biased;
        () = live.cancel.cancelled() => return Err(ProxyError::ConnectionClosed),
        sent = tokio::time::timeout(limits.upstream_timeout, inner.upstream.request(request)) => sent,
    };
    let response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(e)) if live.is_over_limit() => {
            debug!(connect = e.is_connect(), "upload over the limit");
            return Err(ProxyError::BodyTooLarge);
        }
        Ok(Err(e)) => {
            debug!(connect = e.is_connect(), "upstream request failed");
            return Err(ProxyError::UpstreamUnreachable);
        }
        Err(_) => {
            debug!("upstream timed out");
            return Err(ProxyError::UpstreamUnreachable);
        }
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return match client_upgrade {
            Some(client_upgrade) => Ok(tunnel::splice(
                client_upgrade,
                response,
                live,
                finish.take(),
            )),
            None => Err(ProxyError::UpstreamUnreachable),
        };
    }

    let (mut parts, body) = response.into_parts();
    rewrite_response_headers(&mut parts.headers, false);
    let sse = is_event_stream(&parts.headers);
    if sse {
        live.set_kind(ConnectionKind::Sse);
    }
    finish.set_status(parts.status.as_u16());
    let body = ResponseBody::new(body, Some(live), sse, finish.take());
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// `{upstream base path}{rest}?{client query without injected params}&{injected params}`.
fn upstream_uri(
    route: &PreparedRoute,
    rest: &str,
    query: Option<&str>,
    prepared: &Prepared,
) -> Result<Uri, ProxyError> {
    let injected = prepared.query.expose();
    let capacity =
        route.base_path.len() + rest.len() + query.map_or(0, str::len) + injected.len() + 3;
    let mut target = String::with_capacity(capacity);
    target.push_str(&route.base_path);
    target.push_str(rest);
    if target.is_empty() {
        target.push('/');
    }
    let has_query = match query {
        Some(q) => append_query(&mut target, q, &route.injected_params),
        None => false,
    };
    if !injected.is_empty() {
        target.push(if has_query { '&' } else { '?' });
        target.push_str(injected);
    }
    let path_and_query = PathAndQuery::from_maybe_shared(Bytes::from(target))
        .map_err(|_| ProxyError::InvalidPath)?;
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(route.scheme.clone());
    uri.authority = Some(route.authority.clone());
    uri.path_and_query = Some(path_and_query);
    Uri::from_parts(uri).map_err(|_| ProxyError::InvalidPath)
}

/// Appends `?query`, without any parameter whose (decoded) name an injection uses. Returns
/// whether anything was written.
fn append_query(out: &mut String, query: &str, injected: &[String]) -> bool {
    if injected.is_empty() {
        if query.is_empty() {
            return false;
        }
        out.push('?');
        out.push_str(query);
        return true;
    }
    let mut first = true;
    for pair in query.split('&') {
        if pair.is_empty() || pair.split(';').any(|part| names_injected(part, injected)) {
            continue;
        }
        out.push(if first { '?' } else { '&' });
        out.push_str(pair);
        first = false;
    }
    !first
}

fn names_injected(part: &str, injected: &[String]) -> bool {
    let raw = part.split_once('=').map_or(part, |(name, _)| name);
    let name: Cow<'_, str> = if raw.contains(['%', '+']) {
        url::form_urlencoded::parse(raw.as_bytes())
            .next()
            .map_or(Cow::Borrowed(""), |(k, _)| k)
    } else {
        Cow::Borrowed(raw)
    };
    injected.iter().any(|p| p.eq_ignore_ascii_case(name.trim()))
}

/// `.` or `..` segments, literal or percent-encoded: they could climb out of the base path.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| match segment {
        "." | ".." => true,
        s if s.contains('%') => {
            let decoded = s.to_ascii_lowercase().replace("%2e", ".");
            decoded == "." || decoded == ".."
        }
        _ => false,
    })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn is_websocket_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    method == Method::GET
        && version == Version::HTTP_11
        && has_token(headers, &header::UPGRADE, "websocket")
        && has_token(headers, &header::CONNECTION, "upgrade")
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..17)
                .is_some_and(|p| p.eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Removes the headers `Connection` names (hop-by-hop by declaration), keeping `Upgrade` for a
/// WebSocket handshake.
fn remove_connection_named(headers: &mut HeaderMap, upgrade: bool) {
    if !headers.contains_key(header::CONNECTION) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !(upgrade && t.eq_ignore_ascii_case("upgrade")))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    headers.remove(header::CONNECTION);
}

fn remove_prefixed(headers: &mut HeaderMap, prefixes: &[&str]) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| prefixes.iter().any(|p| k.as_str().starts_with(p)))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

fn rewrite_request_headers(
    headers: &mut HeaderMap,
    route: &PreparedRoute,
    prepared: &Prepared,
    websocket: bool,
) {
    remove_connection_named(headers, websocket);
    for name in &STRIP_REQUEST {
        headers.remove(name);
    }
    headers.remove(&CLIENT_HEADER);
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    remove_prefixed(headers, &["proxy-", "x-forwarded-"]);
    for name in &route.injected_headers {
        headers.remove(name);
    }
    for (name, value) in &prepared.headers {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(header::HOST, route.host.clone());
}

/// Hop-by-hop, cookie and CORS headers out of an upstream answer (`upgrade` keeps the
/// handshake's `Connection` and `Upgrade`).
pub(crate) fn rewrite_response_headers(headers: &mut HeaderMap, upgrade: bool) {
    remove_connection_named(headers, upgrade);
    for name in &STRIP_RESPONSE {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    remove_prefixed(headers, &["access-control-", "proxy-"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn injected_query_params_are_removed_even_when_encoded() {
        let injected = vec!["api_key".to_owned()];
        let mut out = String::new();
        assert!(append_query(
            &mut out,
            "q=1&api_key=evil&API%5Fkey=x&a=b;api_key=y&z",
            &injected
        ));
        assert_eq!(out, "?q=1&z");
    }

    #[test]
    fn the_query_is_kept_verbatim_without_query_injections() {
        let mut out = String::new();
        assert!(append_query(&mut out, "a=%20b&c", &[]));
        assert_eq!(out, "?a=%20b&c");
        let mut out = String::new();
        assert!(!append_query(&mut out, "", &[]));
    }

    #[test]
    fn dot_segments_are_detected_literal_or_encoded() {
        assert!(has_dot_segment("/a/../b"));
        assert!(has_dot_segment("/a/%2E%2e/b"));
        assert!(has_dot_segment("/./b"));
        assert!(!has_dot_segment("/a/..b/c.d"));
        assert!(!has_dot_segment(""));
    }

    #[test]
    fn hop_by_hop_and_named_headers_are_dropped_from_answers() {
        let mut h = headers(&[
            ("connection", "close, x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "s=1"),
            ("access-control-allow-origin", "*"),
            ("content-type", "text/plain"),
            ("location", "https://elsewhere.test/"),
        ]);
        rewrite_response_headers(&mut h, false);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type", "location"]);
    }

    #[test]
    fn websocket_handshakes_are_recognised() {
        let h = headers(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
        ]);
        assert!(is_websocket_upgrade(&Method::GET, Version::HTTP_11, &h));
        assert!(!is_websocket_upgrade(&Method::POST, Version::HTTP_11, &h));
        let h = headers(&[("upgrade", "h2c"), ("connection", "upgrade")]);
        assert!(!is_websocket_upgrade(&Method::GET, Version::HTTP_11, &h));
    }

    #[test]
    fn event_streams_are_recognised_by_content_type() {
        assert!(is_event_stream(&headers(&[(
            "content-type",
            "text/event-stream; charset=utf-8"
        )])));
        assert!(!is_event_stream(&headers(&[(
            "content-type",
            "application/json"
        )])));
        assert!(!is_event_stream(&HeaderMap::new()));
    }
}
