//! The HTTP side of [`Control`]: the routes of [`Route`] nested at [`PREFIX`](super::PREFIX) on
//! the proxy's port, behind the proxy's Host and Origin gates and accepted only with the
//! instance's control token (kept in the keychain). Each handler is one call to the in-process
//! implementation. The tray app's window, which runs in a process of its own, uses it as the
//! `latchkey` command does.

use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, on};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};

use latchkey_core::secret::{Secret, ct_eq_str};
use latchkey_core::{Class, Code};
use latchkey_store::TokenInfo;

use super::wire;
use super::{
    ActivityEvent, AddedServerView, Control, HostEntry, InstanceEvent, NewClient, NewServer, Route,
    StatusReport,
};
use crate::view::{
    ConnectionView, CreatedClient, HostApplied, HostPreview, HostView, Overview, ServerView,
};
use crate::{Latchkey, RuntimeError};

#[derive(Clone)]
struct ControlState {
    lk: Latchkey,
}

/// The control routes, to be nested at [`PREFIX`](super::PREFIX) behind the proxy's gates.
pub fn router(lk: Latchkey, control_token: Secret) -> Router {
    let routes = Route::ALL
        .into_iter()
        .fold(Router::new(), |routes, route| {
            routes.route(route.endpoint().1, handler(route))
        })
        .with_state(ControlState { lk });
    guarded(routes, control_token)
}

/// The handler of `route`, on its method.
fn handler(route: Route) -> MethodRouter<ControlState> {
    let method = route.endpoint().0.filter();
    match route {
        Route::Status => on(method, status),
        Route::Overview => on(method, overview),
        Route::Events => on(method, events),
        Route::BeginLogin => on(method, begin_login),
        Route::WaitLogin => on(method, wait_login),
        Route::CancelLogin => on(method, cancel_login),
        Route::RefreshNow => on(method, refresh_now),
        Route::Logout => on(method, logout),
        Route::AccessToken => on(method, access_token),
        Route::GatewayKey => on(method, gateway_key),
        Route::ManualSecret => on(method, manual_secret),
        Route::ListClients => on(method, list_clients),
        Route::CreateClient => on(method, create_client),
        Route::RevokeClient => on(method, revoke_client),
        Route::ClientTokens => on(method, client_tokens),
        Route::IssueClientToken => on(method, issue_client_token),
        Route::RevokeClientToken => on(method, revoke_client_token),
        Route::Ephemeral => on(method, ephemeral),
        Route::Activity => on(method, activity),
        Route::ActivityChart => on(method, activity_chart),
        Route::ActivityStream => on(method, activity_stream),
        Route::Connections => on(method, connections),
        Route::CloseConnection => on(method, close_connection),
        Route::DetectHosts => on(method, detect_hosts),
        Route::PreviewHostEntry => on(method, preview_host_entry),
        Route::ApplyHostEntry => on(method, apply_host_entry),
        Route::UndoHostEntry => on(method, undo_host_entry),
        Route::ListServers => on(method, list_servers),
        Route::AddServer => on(method, add_server),
        Route::RemoveServer => on(method, remove_server),
        Route::ServerLogin => on(method, server_login),
        Route::WaitServerLogin => on(method, wait_server_login),
        Route::CancelServerLogin => on(method, cancel_server_login),
    }
}

/// `{ "error", "message" }` for the CLI.
struct ApiError(RuntimeError);

/// The status of each class of error code. The CLI reads the body's code, not the status; the
/// status is for everything else that may read the answer (a log, a proxy, a person with curl).
fn status_of(class: Class) -> StatusCode {
    match class {
        Class::LoginRequired | Class::Unauthorized => StatusCode::UNAUTHORIZED,
        Class::Forbidden => StatusCode::FORBIDDEN,
        Class::NotFound => StatusCode::NOT_FOUND,
        Class::InvalidInput => StatusCode::BAD_REQUEST,
        // A login that ended without a session because the person cancelled or took too long.
        Class::Cancelled | Class::Expired => StatusCode::CONFLICT,
        Class::Credentials => StatusCode::FAILED_DEPENDENCY,
        // The identity provider, an authorization server or a remote MCP server refused (its
        // answer and the fix are in the body).
        Class::ProviderRefused => StatusCode::BAD_GATEWAY,
        Class::Keychain | Class::GatewayUnavailable | Class::Unavailable | Class::NotRunning => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Class::Config | Class::Failed | Class::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.0.code, "message": self.0.message });
        let status = status_of(self.0.code.class());
        (status, [("cache-control", "no-store")], Json(body)).into_response()
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        Self(e)
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// `200` with `{ "ok": true }`.
fn done() -> Json<wire::Done> {
    Json(wire::Done { ok: true })
}

/// `status` with a body that holds a secret shown once: never stored by a cache.
fn once<T: serde::Serialize>(status: StatusCode, body: T) -> Response {
    (status, [("cache-control", "no-store")], Json(body)).into_response()
}

/// Refuses every request without the instance's control token, before its handler runs and so
/// before any extractor reads the body: one layer over the whole router, so a route added later
/// cannot forget the check.
async fn require_control_token(State(token): State<Secret>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get("x-latchkey-client")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ct_eq_str(presented, token.expose()) {
        next.run(req).await
    } else {
        ApiError(RuntimeError::new(
            Code::ControlUnauthorized,
            "this endpoint is for the latchkey command of the same user",
        ))
        .into_response()
    }
}

/// `router` behind [`require_control_token`]: every route and the fallback.
fn guarded<S: Clone + Send + Sync + 'static>(router: Router<S>, token: Secret) -> Router<S> {
    router.layer(middleware::from_fn_with_state(token, require_control_token))
}

async fn status(State(c): State<ControlState>) -> ApiResult<StatusReport> {
    Ok(Json(Control::status(&c.lk).await?))
}

async fn overview(State(c): State<ControlState>) -> ApiResult<Overview> {
    Ok(Json(Control::overview(&c.lk).await?))
}

/// An error event of a stream: the `{error, message}` body the client reads as the runtime's
/// error.
fn error_event(e: &RuntimeError) -> Option<Event> {
    Event::default()
        .event("error")
        .json_data(serde_json::json!({ "error": e.code, "message": e.message }))
        .ok()
}

/// `changed` events (the data is only there because an event needs some), `activity` events
/// carrying an audit row, `lagged` with how many rows were missed; with `?window=true`, also
/// `show-window` requests.
async fn events(
    State(c): State<ControlState>,
    Query(q): Query<wire::EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let events = Control::follow_events(&c.lk, q.window).await?;
    let stream = events.filter_map(|event| async move {
        let event = match event {
            Ok(InstanceEvent::Changed) => Event::default().event("changed").data("1"),
            Ok(InstanceEvent::Activity(row)) => {
                Event::default().event("activity").json_data(row).ok()?
            }
            Ok(InstanceEvent::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
            Ok(InstanceEvent::ShowWindow { at }) => Event::default()
                .event("show-window")
                .json_data(super::WindowRequest { at })
                .ok()?,
            Err(e) => error_event(&e)?,
        };
        Some(Ok(event))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn cancel_login(
    State(c): State<ControlState>,
    Path(account): Path<String>,
) -> ApiResult<wire::Done> {
    Control::cancel_login(&c.lk, &account).await?;
    Ok(done())
}

async fn refresh_now(
    State(c): State<ControlState>,
    Path(account): Path<String>,
) -> ApiResult<wire::Done> {
    Control::refresh_now(&c.lk, &account).await?;
    Ok(done())
}

async fn begin_login(
    State(c): State<ControlState>,
    Path(account): Path<String>,
) -> ApiResult<wire::AuthorizeUrl> {
    let authorize_url = Control::begin_login(&c.lk, &account).await?;
    Ok(Json(wire::AuthorizeUrl { authorize_url }))
}

async fn wait_login(
    State(c): State<ControlState>,
    Path(account): Path<String>,
) -> ApiResult<Overview> {
    Ok(Json(Control::wait_login(&c.lk, &account).await?))
}

async fn logout(
    State(c): State<ControlState>,
    Path(account): Path<String>,
) -> ApiResult<wire::Done> {
    Control::logout(&c.lk, &account).await?;
    Ok(done())
}

async fn access_token(
    State(c): State<ControlState>,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    let token = Control::access_token(&c.lk, &account).await?;
    let body = wire::AccessToken {
        access_token: token.expose().to_owned(),
    };
    Ok(once(StatusCode::OK, body))
}

async fn gateway_key(
    State(c): State<ControlState>,
    Json(body): Json<wire::Key>,
) -> ApiResult<wire::Done> {
    Control::set_gateway_api_key(&c.lk, Secret::new(body.key)).await?;
    Ok(done())
}

async fn manual_secret(
    State(c): State<ControlState>,
    Path(service): Path<String>,
    Json(body): Json<wire::ManualSecret>,
) -> ApiResult<wire::Done> {
    Control::set_manual_secret(&c.lk, &service, &body.values).await?;
    Ok(done())
}

async fn list_clients(State(c): State<ControlState>) -> ApiResult<Vec<crate::view::ClientView>> {
    Ok(Json(Control::list_clients(&c.lk).await?))
}

async fn create_client(
    State(c): State<ControlState>,
    Json(body): Json<NewClient>,
) -> Result<Response, ApiError> {
    let created: CreatedClient = Control::create_client(&c.lk, &body).await?;
    Ok(once(StatusCode::CREATED, created))
}

async fn revoke_client(
    State(c): State<ControlState>,
    Path(name): Path<String>,
) -> ApiResult<wire::Done> {
    Control::revoke_client(&c.lk, &name).await?;
    Ok(done())
}

async fn client_tokens(
    State(c): State<ControlState>,
    Path(name): Path<String>,
) -> ApiResult<Vec<TokenInfo>> {
    Ok(Json(Control::client_tokens(&c.lk, &name).await?))
}

async fn issue_client_token(
    State(c): State<ControlState>,
    Path(name): Path<String>,
    Json(body): Json<wire::TokenLabel>,
) -> Result<Response, ApiError> {
    let expires_in = body.expires_in_seconds.map(Duration::from_secs);
    let token = Control::issue_client_token(&c.lk, &name, &body.label, expires_in).await?;
    let body = wire::Issued {
        token: token.expose().to_owned(),
        expires_in: None,
    };
    Ok(once(StatusCode::CREATED, body))
}

async fn revoke_client_token(
    State(c): State<ControlState>,
    Path((name, label)): Path<(String, String)>,
) -> ApiResult<wire::Done> {
    Control::revoke_client_token(&c.lk, &name, &label).await?;
    Ok(done())
}

async fn ephemeral(
    State(c): State<ControlState>,
    Json(body): Json<wire::EphemeralRequest>,
) -> Result<Response, ApiError> {
    let ttl = body.ttl_seconds.map(Duration::from_secs);
    let issued = Control::issue_ephemeral_token(&c.lk, &body.client, ttl).await?;
    let body = wire::Issued {
        token: issued.token.expose().to_owned(),
        expires_in: Some(issued.expires_in.as_secs()),
    };
    Ok(once(StatusCode::CREATED, body))
}

async fn activity(
    State(c): State<ControlState>,
    Query(q): Query<wire::ActivityQuery>,
) -> ApiResult<latchkey_store::AuditPage> {
    Ok(Json(Control::query_activity(&c.lk, q.into()).await?))
}

async fn activity_stream(
    State(c): State<ControlState>,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let events = Control::follow_activity(&c.lk).await?;
    let stream = events.filter_map(|event| async move {
        let event = match event {
            Ok(ActivityEvent::Row(row)) => Event::default().json_data(row).ok()?,
            Ok(ActivityEvent::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
            Err(e) => error_event(&e)?,
        };
        Some(Ok(event))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn activity_chart(
    State(c): State<ControlState>,
    Query(q): Query<wire::ChartQuery>,
) -> ApiResult<latchkey_store::ActivityBuckets> {
    Ok(Json(Control::activity_chart(&c.lk, &q.span).await?))
}

async fn connections(State(c): State<ControlState>) -> ApiResult<Vec<ConnectionView>> {
    Ok(Json(Control::list_connections(&c.lk).await?))
}

async fn close_connection(
    State(c): State<ControlState>,
    Path(id): Path<String>,
) -> ApiResult<wire::Done> {
    Control::close_connection(&c.lk, &id).await?;
    Ok(done())
}

async fn detect_hosts(State(c): State<ControlState>) -> ApiResult<Vec<HostView>> {
    Ok(Json(Control::detect_hosts(&c.lk).await?))
}

fn host_entry(host: String, body: wire::EntryBody) -> HostEntry {
    HostEntry {
        host,
        client: body.client,
        service: body.service,
    }
}

async fn preview_host_entry(
    State(c): State<ControlState>,
    Path(host): Path<String>,
    Json(body): Json<wire::EntryBody>,
) -> ApiResult<HostPreview> {
    let entry = host_entry(host, body);
    Ok(Json(Control::preview_host_entry(&c.lk, &entry).await?))
}

async fn apply_host_entry(
    State(c): State<ControlState>,
    Path(host): Path<String>,
    Json(body): Json<wire::EntryBody>,
) -> ApiResult<HostApplied> {
    let entry = host_entry(host, body);
    Ok(Json(Control::apply_host_entry(&c.lk, &entry).await?))
}

async fn undo_host_entry(
    State(c): State<ControlState>,
    Path(host): Path<String>,
) -> ApiResult<wire::Done> {
    Control::undo_host_entry(&c.lk, &host).await?;
    Ok(done())
}

async fn list_servers(State(c): State<ControlState>) -> ApiResult<Vec<ServerView>> {
    Ok(Json(Control::list_servers(&c.lk).await?))
}

async fn add_server(
    State(c): State<ControlState>,
    Json(body): Json<wire::AddServer>,
) -> ApiResult<AddedServerView> {
    let server = NewServer {
        url: body.url,
        name: body.name,
        client_id: body.client_id,
        client_secret: body.client_secret.map(Secret::new),
        scopes: body.scopes,
        callback_port: body.callback_port,
        allow_insecure_loopback: body.allow_insecure_loopback,
    };
    Ok(Json(Control::add_server(&c.lk, &server).await?))
}

async fn server_login(
    State(c): State<ControlState>,
    Path(name): Path<String>,
) -> ApiResult<wire::AuthorizeUrl> {
    let authorize_url = Control::server_login(&c.lk, &name).await?;
    Ok(Json(wire::AuthorizeUrl { authorize_url }))
}

async fn wait_server_login(
    State(c): State<ControlState>,
    Path(name): Path<String>,
) -> ApiResult<Vec<ServerView>> {
    Ok(Json(Control::wait_server_login(&c.lk, &name).await?))
}

async fn cancel_server_login(
    State(c): State<ControlState>,
    Path(name): Path<String>,
) -> ApiResult<wire::Done> {
    Control::cancel_server_login(&c.lk, &name).await?;
    Ok(done())
}

async fn remove_server(
    State(c): State<ControlState>,
    Path(name): Path<String>,
) -> ApiResult<wire::RemovedServer> {
    let note = Control::remove_server(&c.lk, &name).await?;
    Ok(Json(wire::RemovedServer {
        ok: true,
        revoked: note.is_none(),
        note,
    }))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    /// Every class of error code answers its status, a few codes are checked by their wire
    /// spelling (so a code moved to another class shows here), the body keeps the code and
    /// message, and no answer may be cached.
    #[tokio::test]
    async fn each_error_code_class_answers_its_own_status() {
        let table = [
            (Class::LoginRequired, 401),
            (Class::NotRunning, 503),
            (Class::Keychain, 503),
            (Class::Config, 500),
            (Class::Credentials, 424),
            (Class::GatewayUnavailable, 503),
            (Class::ProviderRefused, 502),
            (Class::Cancelled, 409),
            (Class::Expired, 409),
            (Class::Unavailable, 503),
            (Class::NotFound, 404),
            (Class::InvalidInput, 400),
            (Class::Unauthorized, 401),
            (Class::Forbidden, 403),
            (Class::Failed, 500),
            (Class::Internal, 500),
        ];
        assert_eq!(
            table.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            Class::ALL,
            "every class, once, in declaration order"
        );
        for (class, want) in table {
            for code in Code::ALL.iter().filter(|c| c.class() == class) {
                assert_eq!(status_of(class).as_u16(), want, "{class:?} ({code})");
                assert_answers(*code, want).await;
            }
        }
        for (wire, want) in [
            ("control_unauthorized", 401),
            ("login_required", 401),
            ("session_not_renewable", 401),
            ("unknown_server", 404),
            ("not_found", 404),
            ("invalid_input", 400),
            ("server_exists", 400),
            ("invalid_client_name", 400),
            ("mcp_oauth_registration_refused", 502),
            ("mcp_oauth_access_denied", 409),
            ("keychain_locked", 503),
            ("gateway_timeout", 503),
            ("idp_unreachable", 503),
            ("idp_timeout", 503),
            ("credentials_missing", 424),
            ("gateway_api_key_invalid", 424),
            ("login_cancelled", 409),
            ("login_timeout", 409),
            ("access_denied", 409),
            ("redirect_uri_not_registered", 502),
            ("login_failed", 502),
            ("jwt_wrong_audience", 502),
            ("config_invalid", 500),
            ("internal", 500),
            ("something_new", 500),
        ] {
            assert_answers(Code::parse(wire), want).await;
        }
    }

    async fn assert_answers(code: Code, want: u16) {
        let message = format!("what to do about {code}");
        let response = ApiError(RuntimeError::new(code, message.clone())).into_response();
        assert_eq!(response.status().as_u16(), want, "{code}");
        assert_eq!(
            response
                .headers()
                .get("cache-control")
                .map(|v| v.as_bytes()),
            Some(&b"no-store"[..]),
            "{code}"
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            body,
            serde_json::json!({ "error": code.as_str(), "message": message })
        );
    }

    /// A route that would answer `422` for a malformed body if it were reached.
    fn guarded_echo() -> Router {
        let routes = Router::new().route(
            "/echo",
            axum::routing::post(|Json(body): Json<wire::Key>| async move { body.key }),
        );
        guarded(routes, Secret::new("lk_control_token".to_owned()))
    }

    async fn send(token: Option<&str>, body: &'static str) -> (StatusCode, serde_json::Value) {
        let mut req = axum::http::Request::post("/echo").header("content-type", "application/json");
        if let Some(token) = token {
            req = req.header("x-latchkey-client", token);
        }
        let response = guarded_echo()
            .oneshot(req.body(Body::from(body)).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn the_control_token_is_checked_before_the_body_is_read() {
        for token in [None, Some("lk_a_plain_client_token"), Some("")] {
            let (status, body) = send(token, "{ not json").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
            assert_eq!(
                body["error"], "control_unauthorized",
                "refused for the token, not for the malformed body"
            );
        }
        let (status, _) = send(Some("lk_control_token"), "{ not json").await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "with the control token the body is read (and found malformed)"
        );
    }

    #[tokio::test]
    async fn a_route_without_its_own_check_is_still_guarded() {
        let (status, body) = send(Some("lk_wrong"), r#"{"key":"k"}"#).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "control_unauthorized");
    }
}
