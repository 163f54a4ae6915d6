//! Forwarding to a remote MCP server whose OAuth token Latchkey manages (PROTOCOL §6). The host
//! must never see the server's OAuth: a `401` makes the credential source refresh the token once
//! and the request is sent again with it; a `403` with `error="insufficient_scope"` becomes a
//! step-up for the person (announced like a needed login); neither answer, nor any
//! `WWW-Authenticate`, reaches the host. Every other route goes straight to [`forward::forward`].
//!
//! Sending again needs the request body twice. MCP requests are JSON-RPC messages of a few
//! kilobytes sent whole with a `Content-Length`, and the SDKs do not retry a failed POST, so
//! bodies up to [`MAX_REPLAY_BYTES`] are read before forwarding and replayed: a refresh stays
//! invisible to the host. A larger or length-less upload is streamed as usual; when it meets a
//! `401` the token is still refreshed and the host is asked to send the request again
//! (`retry_request`), which is rare enough not to justify buffering every upload.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};

use crate::audit::Finish;
use crate::credentials::{CredentialError, UpstreamRefusal};
use crate::error::ProxyError;
use crate::forward;
use crate::refusal;
use crate::state::{PreparedRoute, ProxyState};

/// Largest request body read ahead so that it can be sent again after a refresh.
pub(crate) const MAX_REPLAY_BYTES: u64 = 1024 * 1024;

/// How long reading that body may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Forwards `req` to `route`; for a managed route, hides the upstream's OAuth refusals.
pub(crate) async fn forward(
    state: &ProxyState,
    route: &Arc<PreparedRoute>,
    client: &Arc<str>,
    req: Request,
    finish: &mut Finish,
) -> Result<Response, ProxyError> {
    // A WebSocket handshake keeps its upgrade handle, which a replayed copy would lose.
    if !route.managed || req.headers().contains_key(header::UPGRADE) {
        return forward::forward(state, route, client, req, finish).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match read_replayable(&parts, body).await? {
        Ok(bytes) => bytes,
        Err(body) => return forward_once(state, route, client, parts, body, finish).await,
    };
    let source = &state.inner.credentials;
    let mut retried = false;
    loop {
        // The values this attempt uses (the source hands out the same `Arc` while unchanged).
        let used = match source.credentials(&route.service).await {
            Ok(used) => used,
            // `forward` answers the refusal itself.
            Err(_) => {
                let req = rebuild(&parts, Body::from(bytes.clone()));
                return forward::forward(state, route, client, req, finish).await;
            }
        };
        let mut attempt = finish.fork();
        let req = rebuild(&parts, Body::from(bytes.clone()));
        let response = match forward::forward(state, route, client, req, &mut attempt).await {
            Ok(response) => response,
            Err(e) => {
                attempt.discard();
                return Err(e);
            }
        };
        let refusal = match classify(&response) {
            None => {
                finish.discard();
                return Ok(hide_challenges(response));
            }
            Some(refusal) => refusal,
        };
        // The upstream's refusal is recorded under its own status; the host gets ours.
        drop(response);
        let refusal = match refusal {
            UpstreamRefusal::Unauthorized { .. } => UpstreamRefusal::Unauthorized { retried },
            other => other,
        };
        match source
            .upstream_refused(&route.service, &used, refusal)
            .await
        {
            Ok(()) if !retried => retried = true,
            Ok(()) => {
                let e = CredentialError::ServerLoginRequired {
                    server: route.service.to_string(),
                };
                return Ok(refuse(state, route, client, e, &parts, bytes, finish).await);
            }
            Err(e) => return Ok(refuse(state, route, client, e, &parts, bytes, finish).await),
        }
    }
}

/// A request whose body cannot be replayed: forwarded once; a `401` still refreshes the token,
/// and the host is asked to send the request again.
async fn forward_once(
    state: &ProxyState,
    route: &Arc<PreparedRoute>,
    client: &Arc<str>,
    parts: Parts,
    body: Body,
    finish: &mut Finish,
) -> Result<Response, ProxyError> {
    let source = &state.inner.credentials;
    let used = source.credentials(&route.service).await.ok();
    let copy = rebuild(&parts, Body::empty()).into_parts().0;
    let mut attempt = finish.fork();
    let response = match forward::forward(
        state,
        route,
        client,
        Request::from_parts(parts, body),
        &mut attempt,
    )
    .await
    {
        Ok(response) => response,
        Err(e) => {
            attempt.discard();
            return Err(e);
        }
    };
    let (Some(refusal), Some(used)) = (classify(&response), used) else {
        finish.discard();
        return Ok(hide_challenges(response));
    };
    drop(response);
    let e = match source
        .upstream_refused(&route.service, &used, refusal)
        .await
    {
        Ok(()) => CredentialError::ServerTokenRenewed {
            server: route.service.to_string(),
        },
        Err(e) => e,
    };
    Ok(refuse(state, route, client, e, &copy, Bytes::new(), finish).await)
}

async fn refuse(
    state: &ProxyState,
    route: &PreparedRoute,
    client: &str,
    e: CredentialError,
    parts: &Parts,
    bytes: Bytes,
    finish: &mut Finish,
) -> Response {
    let error = ProxyError::Credentials(e);
    refusal::refuse(
        state,
        &route.service,
        client,
        &error,
        parts,
        Body::from(bytes),
        finish,
    )
    .await
}

/// Reads the body when it is small and whole (`Content-Length` up to [`MAX_REPLAY_BYTES`], or no
/// body at all); otherwise gives it back untouched.
async fn read_replayable(parts: &Parts, body: Body) -> Result<Result<Bytes, Body>, ProxyError> {
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let bodiless = length.is_none()
        && !chunked
        && matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
        );
    let replayable = bodiless || (!chunked && length.is_some_and(|n| n <= MAX_REPLAY_BYTES));
    if !replayable {
        return Ok(Err(body));
    }
    let limit = usize::try_from(MAX_REPLAY_BYTES).unwrap_or(usize::MAX);
    match tokio::time::timeout(READ_TIMEOUT, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(Ok(collected.to_bytes())),
        Ok(Err(_)) | Err(_) => Err(ProxyError::BodyTooLarge),
    }
}

/// A copy of the request head with `body` (extensions other than the upgrade are not needed
/// upstream; a replayed request is never a WebSocket handshake).
fn rebuild(parts: &Parts, body: Body) -> Request {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// The upstream's OAuth refusal, if the answer is one.
fn classify(response: &Response) -> Option<UpstreamRefusal> {
    match response.status() {
        StatusCode::UNAUTHORIZED => Some(UpstreamRefusal::Unauthorized { retried: false }),
        StatusCode::FORBIDDEN => {
            let challenge = latchkey_core::mcp_oauth::challenge::bearer(response.headers())?;
            (challenge.error() == Some("insufficient_scope")).then(|| {
                UpstreamRefusal::InsufficientScope {
                    scopes: challenge.scopes().unwrap_or_default(),
                }
            })
        }
        _ => None,
    }
}

/// No `WWW-Authenticate` from a managed server reaches the host: it would read it as a request
/// to run OAuth against Latchkey.
fn hide_challenges(mut response: Response) -> Response {
    strip_challenges(response.headers_mut());
    response
}

fn strip_challenges(headers: &mut HeaderMap) {
    headers.remove(header::WWW_AUTHENTICATE);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, challenge: Option<&'static str>) -> Response {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::from_u16(status).expect("status");
        if let Some(c) = challenge {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static(c));
        }
        r
    }

    #[test]
    fn only_401_and_403_insufficient_scope_are_oauth_refusals() {
        assert_eq!(
            classify(&answer(401, None)),
            Some(UpstreamRefusal::Unauthorized { retried: false })
        );
        assert_eq!(
            classify(&answer(
                403,
                Some(r#"Bearer error="insufficient_scope", scope="mcp:admin read""#)
            )),
            Some(UpstreamRefusal::InsufficientScope {
                scopes: vec!["mcp:admin".into(), "read".into()]
            })
        );
        assert_eq!(classify(&answer(403, None)), None, "a plain 403 passes");
        assert_eq!(
            classify(&answer(403, Some(r#"Bearer error="invalid_token""#))),
            None
        );
        assert_eq!(classify(&answer(200, None)), None);
    }

    #[test]
    fn answers_lose_their_challenges() {
        let r = hide_challenges(answer(404, Some(r#"Bearer resource_metadata="x""#)));
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[tokio::test]
    async fn small_whole_bodies_are_read_and_streams_are_given_back() {
        let post = |len: Option<&str>, chunked: bool| {
            let mut b = http::Request::builder().method(Method::POST).uri("/s/mcp");
            if let Some(len) = len {
                b = b.header(header::CONTENT_LENGTH, len);
            }
            if chunked {
                b = b.header(header::TRANSFER_ENCODING, "chunked");
            }
            b.body(()).expect("request").into_parts().0
        };
        let read = read_replayable(&post(Some("2"), false), Body::from("{}"))
            .await
            .expect("read");
        assert_eq!(read.ok().as_deref(), Some(&b"{}"[..]));
        let big = (MAX_REPLAY_BYTES + 1).to_string();
        assert!(
            read_replayable(&post(Some(&big), false), Body::empty())
                .await
                .expect("ok")
                .is_err(),
            "too large to keep"
        );
        assert!(
            read_replayable(&post(None, true), Body::empty())
                .await
                .expect("ok")
                .is_err(),
            "a stream is not kept"
        );
        let get = http::Request::builder()
            .uri("/s/mcp")
            .body(())
            .expect("request")
            .into_parts()
            .0;
        let read = read_replayable(&get, Body::empty()).await.expect("read");
        assert_eq!(read.ok().map(|b| b.len()), Some(0));
    }
}
