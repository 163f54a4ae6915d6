//! Forwarding one request to its service's upstream: the path joined onto the upstream's base
//! path, the client's credentials, cookies, hop-by-hop and forwarding headers removed, the
//! service's credentials injected, and the answer streamed back as it comes (redirects included,
//! never followed). WebSocket upgrades are handed to [`crate::tunnel`].

use std::cell::RefCell;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, Method, StatusCode, Uri, Version, header};
use http_body::Body as _;
use hyper::upgrade::OnUpgrade;
use latchkey_core::clock::unix_seconds;
use tracing::debug;

use crate::audit::Finish;
use crate::body::{ResponseBody, UploadBody};
use crate::connections::ConnectionKind;
use crate::error::ProxyError;
use crate::signal::Waiter;
use crate::state::{Prepared, PreparedRoute, ProxyState};
use crate::upstream::UpstreamClient;
use crate::{headers, path, query, refusal, tunnel};

thread_local! {
    /// The upstream pool of this serving thread ([`crate::server`]): a pooled connection is
    /// driven by the runtime that opened it, so a thread that reuses only its own never wakes
    /// another thread to talk to the upstream. Threads without one use the shared pool.
    static THREAD_UPSTREAM: RefCell<Option<UpstreamClient>> = const { RefCell::new(None) };
}

/// Makes `client` the upstream pool of requests forwarded on this thread.
pub(crate) fn use_thread_upstream(client: UpstreamClient) {
    THREAD_UPSTREAM.with_borrow_mut(|c| *c = Some(client));
}

/// Forwards `req` (already through every gate) to `route`'s upstream for `client`.
pub(crate) async fn forward(
    state: &ProxyState,
    route: &Arc<PreparedRoute>,
    client: &Arc<str>,
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
    // The upstream's target is built in one buffer: its base path, this path in its one
    // spelling, then the query ([`upstream_uri`]).
    let query_len = parts.uri.query().map_or(0, |q| q.len() + 1);
    let mut target = String::with_capacity(route.base_path.len() + rest.len() + query_len + 1);
    target.push_str(&route.base_path);
    path::normalise_into(&mut target, rest)?;
    // hyper has parsed and checked `Content-Length`: the body's exact size is its value.
    if let (Some(max), Some(len)) = (limits.max_body_bytes, body.size_hint().exact())
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
    parts.uri = upstream_uri(route, target, parts.uri.query(), &prepared)?;
    headers::rewrite_request(&mut parts.headers, route, &prepared, websocket);
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

    let sending = THREAD_UPSTREAM.with_borrow(|own| match own {
        Some(own) => own.request(request),
        None => inner.upstream.request(request),
    });
    let sent = tokio::select! {
        biased;
        () = live.cancelled(Waiter::Connection) => return Err(ProxyError::ConnectionClosed),
        sent = tokio::time::timeout(limits.upstream_timeout, sending) => sent,
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
                route,
                live,
                finish.take(),
            )),
            None => Err(ProxyError::UpstreamUnreachable),
        };
    }

    let (mut parts, body) = response.into_parts();
    headers::rewrite_response(&mut parts.headers, route, false);
    let sse = is_event_stream(&parts.headers);
    if sse {
        live.set_kind(ConnectionKind::Sse);
    }
    finish.set_status(parts.status.as_u16());
    let body = ResponseBody::new(body, Some(live), sse, finish.take());
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// `{upstream base path}{rest}?{client query without injected params}&{injected params}`, where
/// `target` holds the first two.
fn upstream_uri(
    route: &PreparedRoute,
    mut target: String,
    query: Option<&str>,
    prepared: &Prepared,
) -> Result<Uri, ProxyError> {
    let injected = prepared.query.expose();
    if !injected.is_empty() {
        target.reserve(injected.len() + 1);
    }
    if target.is_empty() {
        target.push('/');
    }
    let has_query = match query {
        Some(q) => query::append_filtered(&mut target, q, &route.injected_params),
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

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
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
