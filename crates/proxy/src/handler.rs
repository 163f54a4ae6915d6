//! The single entry point of every request: the gates of PROTOCOL §3 in order (Host, head size,
//! Origin, client token, scope, rate limit), then the route — a service, `/v1/status`,
//! `/v1/credentials/{service}` or the control API — and the audit record of the outcome. OAuth
//! discovery and registration requests are answered right after the `Host` and `Origin` gates,
//! unaudited ([`crate::probe`]).

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::Entry;
use http::{HeaderMap, HeaderName, Method, header};
use http_body::Body as HttpBody;
use latchkey_core::secret::ct_eq_str;
use latchkey_store::ClientGrant;
use tower::ServiceExt;
use tracing::info;

use crate::audit::Finish;
use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::state::{Inner, PreparedRoute, ProxyState};
use crate::{gate, managed, native, probe, refusal};

/// The name the control token's requests are recorded under.
const CONTROL_CLIENT: &str = "latchkey";

/// Who is calling.
enum Caller {
    /// The `latchkey` CLI of the same user (the instance's control token): every scope.
    Control,
    /// A registered local client.
    Client(ClientGrant),
}

impl Caller {
    fn name(&self) -> &str {
        match self {
            Self::Control => CONTROL_CLIENT,
            Self::Client(grant) => grant.client.as_str(),
        }
    }

    /// The name as the audit record and the live exchange keep it: shared, not copied.
    fn shared_name(&self) -> Arc<str> {
        static CONTROL: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(CONTROL_CLIENT));
        match self {
            Self::Control => Arc::clone(&CONTROL),
            Self::Client(grant) => grant.client.shared(),
        }
    }

    /// Gate 4.
    fn check_scope(&self, service: &str) -> Result<(), ProxyError> {
        match self {
            Self::Control => Ok(()),
            Self::Client(grant) if grant.allows(service) => Ok(()),
            Self::Client(_) => Err(ProxyError::ForbiddenScope),
        }
    }

    /// Raw credentials (`/v1/credentials/{service}`) leave only through `latchkey exec` (the
    /// control token) or to a client given that right; an access token Latchkey signed in for
    /// (an account's, or a remote MCP server's) never goes to a local client at all.
    fn check_raw_credentials(&self, route: &PreparedRoute) -> Result<(), ProxyError> {
        match self {
            Self::Control => Ok(()),
            Self::Client(_) if route.route.identity_token || route.managed => {
                Err(ProxyError::AccessTokenForbidden)
            }
            Self::Client(grant) if grant.raw_credentials => Ok(()),
            Self::Client(_) => Err(ProxyError::RawCredentialsForbidden),
        }
    }

    /// Gate 5 (the control token is not limited).
    fn check_rate(&self, inner: &Inner) -> Result<(), ProxyError> {
        match self {
            Self::Control => Ok(()),
            Self::Client(grant) => inner
                .limiter
                .acquire(grant.client.as_str(), Instant::now())
                .map_err(|retry_after| ProxyError::RateLimited { retry_after }),
        }
    }
}

/// What the path asks for.
enum Target<'a> {
    Status,
    Credentials(&'a str),
    Control,
    Service(&'a str),
    Other,
}

impl<'a> Target<'a> {
    fn parse(path: &'a str) -> Self {
        let Some(path) = path.strip_prefix('/') else {
            return Self::Other;
        };
        let (first, rest) = path.split_once('/').unwrap_or((path, ""));
        if first == "v1" {
            return match rest.split_once('/').unwrap_or((rest, "")) {
                ("status", "") => Self::Status,
                ("credentials", service) if !service.is_empty() && !service.contains('/') => {
                    Self::Credentials(service)
                }
                ("control", _) => Self::Control,
                _ => Self::Other,
            };
        }
        if first.is_empty() {
            Self::Other
        } else {
            Self::Service(first)
        }
    }
}

/// Request headers whose values are secrets: marked sensitive before anything else sees the
/// request, so no `Debug` of it (a trace, an error) can print them.
static SENSITIVE_REQUEST: [&HeaderName; 4] = [
    &header::AUTHORIZATION,
    &header::PROXY_AUTHORIZATION,
    &header::COOKIE,
    &gate::CLIENT_HEADER,
];

/// Marks every value of `name` in `headers` sensitive.
fn mark_sensitive(headers: &mut HeaderMap, name: &HeaderName) {
    if let Entry::Occupied(mut values) = headers.entry(name) {
        for value in values.iter_mut() {
            value.set_sensitive(true);
        }
    }
}

/// The handler of every path, as the router ([`crate::router`]) and the server
/// ([`crate::serve`], directly) call it: secret headers marked sensitive on the way in (and
/// `Set-Cookie` on the way out), then [`answer`].
pub(crate) async fn handle(State(state): State<ProxyState>, mut req: Request) -> Response {
    mark_request(req.headers_mut());
    let mut response = answer(state, req).await;
    mark_response(response.headers_mut());
    response
}

/// Marks the secret request headers ([`SENSITIVE_REQUEST`]) sensitive: one pass over the
/// headers present, a name comparison each, where looking each secret name up would hash it.
fn mark_request(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if SENSITIVE_REQUEST.contains(&name) {
            value.set_sensitive(true);
        }
    }
}

/// Marks the response's `Set-Cookie` values sensitive.
fn mark_response(headers: &mut HeaderMap) {
    mark_sensitive(headers, &header::SET_COOKIE);
}

/// The gates, the route and the audit record of one request.
async fn answer(state: ProxyState, req: Request) -> Response {
    let started = Instant::now();
    // Gates 1 and 2 are not audited: a rebinding or cross-origin page must not be able to fill
    // the audit log with paths of its choosing and push real rows out of retention.
    let gates = state
        .inner
        .hosts
        .check(req.uri(), req.headers())
        .and_then(|()| gate::check_origin(req.method(), req.headers()));
    if let Err(e) = gates {
        info!(method = %req.method(), status = e.status().as_u16(), code = %e.code(), "request refused");
        return e.into_response();
    }
    if probe::is_oauth_request(req.uri().path(), &state.inner.routes.snapshot()) {
        return probe::answer(req.method(), req.headers());
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut finish = Finish::start(&state.inner.audit, started, req.method(), path);
    let response = match dispatch(&state, req, &mut finish).await {
        Ok(response) => response,
        Err(e) => {
            finish.set_error(e.code());
            e.into_response()
        }
    };
    complete(response, finish)
}

/// Records the answer of a request whose record was not handed to a streamed body: at once when
/// its length is known, when its body ends otherwise.
fn complete(response: Response, mut finish: Finish) -> Response {
    if !finish.is_armed() {
        return response;
    }
    finish.set_status(response.status().as_u16());
    match response.body().size_hint().exact() {
        Some(len) => {
            finish.add_out(len);
            finish.commit();
            response
        }
        None => response.map(|body| Body::new(ResponseBody::new(body, None, false, finish))),
    }
}

async fn dispatch(
    state: &ProxyState,
    req: Request,
    finish: &mut Finish,
) -> Result<Response, ProxyError> {
    let inner = &state.inner;
    let (parts, body) = req.into_parts();
    gate::check_head_size(&parts, inner.config.limits.max_header_bytes)?;
    gate::check_method(&parts.method)?;
    let caller = authenticate(inner, &parts.headers)?;
    let client = caller.shared_name();
    finish.set_client(Arc::clone(&client));
    if matches!(caller, Caller::Control) {
        finish.set_control_caller();
    }

    match Target::parse(parts.uri.path()) {
        Target::Service(service) => {
            // An authenticated caller learns that a service does not exist before being told
            // that it may not use it (a name it cannot use tells it nothing new).
            let route = route(inner, service, finish)?;
            caller.check_scope(service)?;
            caller.check_rate(inner)?;
            managed::forward(
                state,
                &route,
                &client,
                Request::from_parts(parts, body),
                finish,
            )
            .await
        }
        Target::Status => {
            caller.check_rate(inner)?;
            require_get(&parts.method)?;
            Ok(match &caller {
                Caller::Control => native::status(state),
                Caller::Client(grant) => native::client_status(state, &grant.services),
            })
        }
        Target::Credentials(service) => {
            let route = route(inner, service, finish)?;
            caller.check_scope(service)?;
            caller.check_raw_credentials(&route)?;
            caller.check_rate(inner)?;
            require_get(&parts.method)?;
            match native::credentials(state, &route).await {
                Err(e @ ProxyError::Credentials(_)) => {
                    let client = caller.name();
                    Ok(refusal::refuse(state, service, client, &e, &parts, body, finish).await)
                }
                answer => answer,
            }
        }
        Target::Control => {
            let Some(control) = &state.control else {
                return Err(ProxyError::NotFound);
            };
            let req = Request::from_parts(parts, body);
            Ok(control
                .clone()
                .oneshot(req)
                .await
                .unwrap_or_else(|never| match never {}))
        }
        Target::Other => Err(ProxyError::NotFound),
    }
}

/// The route named `service`, recorded as the request's service (the route's own name, shared);
/// a name that is no route's is recorded as the path gave it, and refused.
fn route(
    inner: &Inner,
    service: &str,
    finish: &mut Finish,
) -> Result<Arc<PreparedRoute>, ProxyError> {
    let Some(route) = inner.routes.get(service) else {
        finish.set_service(service);
        return Err(ProxyError::UnknownService);
    };
    finish.set_route(Arc::clone(&route.service));
    Ok(route)
}

fn require_get(method: &Method) -> Result<(), ProxyError> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(ProxyError::MethodNotAllowed)
    }
}

/// Gate 3: the control token (constant-time) or a registered client token.
fn authenticate(inner: &Inner, headers: &http::HeaderMap) -> Result<Caller, ProxyError> {
    let token = gate::presented_token(headers).ok_or(ProxyError::ClientUnauthorized)?;
    if let Some(control) = &inner.control_token
        && ct_eq_str(token, control.expose())
    {
        return Ok(Caller::Control);
    }
    // `verify` records the use (the client's "last used") on the entry it found.
    inner
        .clients
        .verify(token)
        .map(Caller::Client)
        .ok_or(ProxyError::ClientUnauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Every value of a secret header is marked, so `Debug` of the headers (in a trace or an
    /// error) prints `Sensitive` instead; other headers are left as they are.
    #[test]
    fn secret_headers_are_marked_sensitive_in_both_directions() {
        let canary = "canary-7f3a9c";
        let mut request = HeaderMap::new();
        for name in SENSITIVE_REQUEST {
            request.append(
                name,
                HeaderValue::from_str(&format!("{canary}-1")).expect("ascii"),
            );
            request.append(
                name,
                HeaderValue::from_str(&format!("{canary}-2")).expect("ascii"),
            );
        }
        request.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        mark_request(&mut request);
        for name in SENSITIVE_REQUEST {
            assert_eq!(request.get_all(name).iter().count(), 2, "{name} kept");
            assert!(
                request.get_all(name).iter().all(HeaderValue::is_sensitive),
                "{name} marked"
            );
        }
        assert!(!request[header::ACCEPT].is_sensitive(), "others untouched");
        let printed = format!("{request:?}");
        assert!(!printed.contains(canary), "no secret in Debug: {printed}");
        assert!(printed.contains("text/event-stream"), "{printed}");

        let mut response = HeaderMap::new();
        response.append(
            header::SET_COOKIE,
            HeaderValue::from_str(&format!("session={canary}")).expect("ascii"),
        );
        response.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        mark_response(&mut response);
        assert!(response[header::SET_COOKIE].is_sensitive());
        assert!(!response[header::CONTENT_TYPE].is_sensitive());
        assert!(!format!("{response:?}").contains(canary));
    }

    #[test]
    fn paths_are_classified_by_their_first_segments() {
        assert!(matches!(Target::parse("/v1/status"), Target::Status));
        assert!(matches!(
            Target::parse("/v1/credentials/github"),
            Target::Credentials("github")
        ));
        assert!(matches!(
            Target::parse("/v1/credentials/github/x"),
            Target::Other
        ));
        assert!(matches!(Target::parse("/v1/credentials/"), Target::Other));
        assert!(matches!(
            Target::parse("/v1/control/status"),
            Target::Control
        ));
        assert!(matches!(Target::parse("/v1/other"), Target::Other));
        assert!(matches!(
            Target::parse("/github/repos/x"),
            Target::Service("github")
        ));
        assert!(matches!(
            Target::parse("/github"),
            Target::Service("github")
        ));
        assert!(matches!(Target::parse("/"), Target::Other));
        assert!(matches!(Target::parse("*"), Target::Other));
    }
}
