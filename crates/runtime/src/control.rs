//! The control API the `latchkey` CLI uses to reach the running instance: `/v1/control/*` on the
//! proxy's port, behind the proxy's Host and Origin gates and accepted only with the instance's
//! control token (kept in the keychain). The tray UI does not use it: it calls [`Latchkey`]
//! in-process.

use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use latchkey_core::secret::{Secret, ct_eq_str};

use crate::view::{ActivityFilter, ClientView, ConnectionView, CreatedClient, Overview};
use crate::{ClientOptions, Latchkey, RuntimeError};

/// Longest a `latchkey login` waits for the browser.
const LOGIN_WAIT: Duration = Duration::from_secs(600);

#[derive(Clone)]
struct Control {
    lk: Latchkey,
}

/// The control routes, to be nested at `/v1/control` behind the proxy's gates.
pub fn router(lk: Latchkey, control_token: Secret) -> Router {
    let routes = Router::new()
        .route("/status", get(status))
        .route("/login/{account}", post(login))
        .route("/login/{account}/wait", post(login_wait))
        .route("/logout/{account}", post(logout))
        .route("/token/{account}", get(token))
        .route("/gateway-key", post(gateway_key))
        .route("/secret/{service}", post(manual_secret))
        .route("/clients", get(list_clients).post(create_client))
        .route("/clients/{name}", delete(revoke_client))
        .route("/clients/{name}/tokens", get(list_tokens).post(issue_token))
        .route("/clients/{name}/tokens/{label}", delete(revoke_token))
        .route("/ephemeral", post(ephemeral))
        .route("/activity", get(activity))
        .route("/activity/stream", get(activity_stream))
        .route("/connections", get(connections))
        .route("/connections/{id}", delete(close_connection))
        .route("/servers", get(list_servers).post(add_server))
        .route("/servers/{name}", delete(remove_server))
        .route("/servers/{name}/login", post(server_login))
        .route("/servers/{name}/wait", post(server_wait))
        .with_state(Control { lk });
    guarded(routes, control_token)
}

/// `{ "error", "message" }` for the CLI.
struct ApiError(RuntimeError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.code.as_str() {
            "control_unauthorized" | "login_required" | "invalid_grant" => StatusCode::UNAUTHORIZED,
            "unknown_account" | "unknown_service" | "unknown_client" | "unknown_server"
            | "not_found" => StatusCode::NOT_FOUND,
            "invalid_input" | "already_exists" | "client_exists" | "server_exists" => {
                StatusCode::BAD_REQUEST
            }
            // The remote MCP server or its authorization server refused (code and fix in the body).
            c if c.starts_with("mcp_oauth_") => StatusCode::BAD_GATEWAY,
            "keychain_unavailable"
            | "keychain_locked"
            | "keychain_timeout"
            | "gateway_unavailable"
            | "gateway_timeout"
            | "idp_unreachable" => StatusCode::SERVICE_UNAVAILABLE,
            c if c.starts_with("credentials_") || c.starts_with("gateway_") => {
                StatusCode::FAILED_DEPENDENCY
            }
            // A login that ended without a session: the identity provider refused (its answer is
            // in the body), or the person cancelled or took too long.
            "idp_timeout" => StatusCode::SERVICE_UNAVAILABLE,
            "login_cancelled" | "login_timeout" | "login_expired" | "access_denied" => {
                StatusCode::CONFLICT
            }
            "redirect_uri_not_registered"
            | "client_not_registered"
            | "client_auth_failed"
            | "authorization_failed"
            | "token_request_failed"
            | "idp_discovery_failed"
            | "idp_unsupported"
            | "jwks_unavailable"
            | "callback_malformed"
            | "login_failed" => StatusCode::BAD_GATEWAY,
            c if c.starts_with("jwt_") => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({ "error": self.0.code, "message": self.0.message });
        (status, [("cache-control", "no-store")], Json(body)).into_response()
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        Self(e)
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

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
            "control_unauthorized",
            "this endpoint is for the latchkey command of the same user",
        ))
        .into_response()
    }
}

/// `router` behind [`require_control_token`]: every route and the fallback.
fn guarded<S: Clone + Send + Sync + 'static>(router: Router<S>, token: Secret) -> Router<S> {
    router.layer(middleware::from_fn_with_state(token, require_control_token))
}

/// Status plus clients, for `latchkey status`.
#[derive(Serialize)]
struct StatusReport {
    #[serde(flatten)]
    overview: Overview,
    clients: Vec<ClientView>,
}

async fn status(State(c): State<Control>) -> ApiResult<serde_json::Value> {
    let report = StatusReport {
        overview: c.lk.overview(),
        clients: c.lk.list_clients(),
    };
    Ok(Json(
        serde_json::to_value(report).map_err(|e| RuntimeError::internal(e.to_string()))?,
    ))
}

async fn login(
    State(c): State<Control>,
    Path(account): Path<String>,
) -> ApiResult<serde_json::Value> {
    let url = c.lk.begin_login(&account).await?;
    Ok(Json(serde_json::json!({ "authorize_url": url.as_str() })))
}

async fn login_wait(
    State(c): State<Control>,
    Path(account): Path<String>,
) -> ApiResult<serde_json::Value> {
    match tokio::time::timeout(LOGIN_WAIT, c.lk.wait_login(&account)).await {
        Ok(result) => result?,
        Err(_) => {
            c.lk.cancel_login(&account);
            // Kept as the account's last login failure (instead of the cancel just recorded).
            let e = RuntimeError::new(
                "login_timeout",
                "the login was not completed within 10 minutes; try again",
            );
            return Err(c.lk.login_failed(&account, e).into());
        }
    }
    Ok(Json(
        serde_json::to_value(c.lk.overview()).map_err(|e| RuntimeError::internal(e.to_string()))?,
    ))
}

async fn logout(
    State(c): State<Control>,
    Path(account): Path<String>,
) -> ApiResult<serde_json::Value> {
    c.lk.logout(&account).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

async fn token(
    State(c): State<Control>,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    let token = c.lk.access_token(&account).await?;
    let body = serde_json::json!({ "access_token": token.expose() });
    Ok((StatusCode::OK, [("cache-control", "no-store")], Json(body)).into_response())
}

#[derive(Deserialize)]
struct KeyBody {
    key: String,
}

async fn gateway_key(
    State(c): State<Control>,
    Json(body): Json<KeyBody>,
) -> ApiResult<serde_json::Value> {
    c.lk.set_gateway_api_key(Secret::new(body.key)).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

#[derive(Deserialize)]
struct SecretBody {
    values: std::collections::BTreeMap<String, String>,
}

async fn manual_secret(
    State(c): State<Control>,
    Path(service): Path<String>,
    Json(body): Json<SecretBody>,
) -> ApiResult<serde_json::Value> {
    c.lk.set_manual_secret(&service, &body.values).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

async fn list_clients(State(c): State<Control>) -> ApiResult<Vec<ClientView>> {
    Ok(Json(c.lk.list_clients()))
}

#[derive(Deserialize)]
struct NewClient {
    name: String,
    services: Vec<String>,
    /// `latchkey client add --allow-raw-credentials`.
    #[serde(default)]
    allow_raw_credentials: bool,
}

async fn create_client(
    State(c): State<Control>,
    Json(body): Json<NewClient>,
) -> Result<Response, ApiError> {
    let mut options = ClientOptions::default();
    options.allow_raw_credentials = body.allow_raw_credentials;
    let created: CreatedClient =
        c.lk.create_client_with(&body.name, &body.services, &options)?;
    Ok((
        StatusCode::CREATED,
        [("cache-control", "no-store")],
        Json(created),
    )
        .into_response())
}

async fn revoke_client(
    State(c): State<Control>,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    c.lk.revoke_client(&name)?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

#[derive(Deserialize)]
struct TokenLabel {
    label: String,
    /// The token stops working after this many seconds; absent: never.
    expires_in_seconds: Option<u64>,
}

async fn issue_token(
    State(c): State<Control>,
    Path(name): Path<String>,
    Json(body): Json<TokenLabel>,
) -> Result<Response, ApiError> {
    let expires_in = body.expires_in_seconds.map(Duration::from_secs);
    let token =
        c.lk.issue_client_token_expiring(&name, &body.label, expires_in)?;
    let body = serde_json::json!({ "token": token.expose() });
    Ok((
        StatusCode::CREATED,
        [("cache-control", "no-store")],
        Json(body),
    )
        .into_response())
}

async fn list_tokens(
    State(c): State<Control>,
    Path(name): Path<String>,
) -> ApiResult<Vec<latchkey_store::TokenInfo>> {
    Ok(Json(c.lk.client_tokens(&name)?))
}

async fn revoke_token(
    State(c): State<Control>,
    Path((name, label)): Path<(String, String)>,
) -> ApiResult<serde_json::Value> {
    c.lk.revoke_client_token(&name, &label)?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

#[derive(Deserialize)]
struct EphemeralRequest {
    client: String,
    ttl_seconds: Option<u64>,
}

async fn ephemeral(
    State(c): State<Control>,
    Json(body): Json<EphemeralRequest>,
) -> Result<Response, ApiError> {
    let ttl = Duration::from_secs(body.ttl_seconds.unwrap_or(3600).clamp(60, 86_400));
    let token = c.lk.issue_ephemeral_token(&body.client, ttl)?;
    let body = serde_json::json!({ "token": token.expose(), "expires_in": ttl.as_secs() });
    Ok((
        StatusCode::CREATED,
        [("cache-control", "no-store")],
        Json(body),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ActivityQuery {
    client: Option<String>,
    service: Option<String>,
    status: Option<String>,
    before_id: Option<i64>,
    limit: Option<u32>,
    control: Option<bool>,
}

async fn activity(
    State(c): State<Control>,
    Query(q): Query<ActivityQuery>,
) -> ApiResult<serde_json::Value> {
    let page =
        c.lk.query_activity(ActivityFilter {
            client: q.client,
            service: q.service,
            status: q.status,
            before_id: q.before_id,
            limit: q.limit.unwrap_or(50),
            include_control: q.control.unwrap_or(false),
        })
        .await?;
    Ok(Json(
        serde_json::to_value(page).map_err(|e| RuntimeError::internal(e.to_string()))?,
    ))
}

async fn activity_stream(
    State(c): State<Control>,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    use tokio::sync::broadcast::error::RecvError;
    let rows = c.lk.subscribe_activity();
    // Lagging readers are told how many rows they missed, then carry on.
    let stream = futures_util::stream::unfold(rows, |mut rows| async move {
        let event = match rows.recv().await {
            Ok(row) => Event::default().json_data(row).ok()?,
            Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), rows))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn connections(State(c): State<Control>) -> ApiResult<Vec<ConnectionView>> {
    Ok(Json(c.lk.list_connections()))
}

async fn close_connection(
    State(c): State<Control>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    c.lk.close_connection(&id)?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// `POST /servers`: what `latchkey server add` sends.
#[derive(Deserialize)]
struct AddServerBody {
    url: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    /// A confidential client's secret: straight into the keychain with the registration.
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    callback_port: Option<u16>,
    #[serde(default)]
    allow_insecure_loopback: bool,
}

async fn list_servers(State(c): State<Control>) -> ApiResult<Vec<crate::view::ServerView>> {
    Ok(Json(c.lk.server_views()))
}

async fn add_server(
    State(c): State<Control>,
    Json(body): Json<AddServerBody>,
) -> ApiResult<serde_json::Value> {
    let options = crate::AddServer {
        name: body.name,
        client_id: body.client_id,
        client_secret: body
            .client_secret
            .filter(|s| !s.is_empty())
            .map(latchkey_core::secret::Secret::new),
        scopes: body.scopes,
        callback_port: body.callback_port,
        allow_insecure_loopback: body.allow_insecure_loopback,
    };
    let added = c.lk.add_server_with(&body.url, options).await?;
    Ok(Json(serde_json::json!({
        "authorize_url": added.authorize_url.as_str(),
        "name": added.name,
    })))
}

async fn server_login(
    State(c): State<Control>,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    let url = c.lk.server_login(&name).await?;
    Ok(Json(serde_json::json!({ "authorize_url": url.as_str() })))
}

async fn server_wait(
    State(c): State<Control>,
    Path(name): Path<String>,
) -> ApiResult<Vec<crate::view::ServerView>> {
    if tokio::time::timeout(LOGIN_WAIT, c.lk.wait_server_login(&name))
        .await
        .is_err()
    {
        c.lk.cancel_server_login(&name);
        return Err(RuntimeError::new(
            "login_timeout",
            "the sign-in was not completed within 10 minutes; try again",
        )
        .into());
    }
    c.lk.wait_server_login(&name).await?;
    Ok(Json(c.lk.server_views()))
}

async fn remove_server(
    State(c): State<Control>,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    let note = c.lk.remove_server(&name).await?;
    Ok(Json(
        serde_json::json!({ "ok": true, "revoked": note.is_none(), "note": note }),
    ))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    /// A route that would answer `422` for a malformed body if it were reached.
    fn guarded_echo() -> Router {
        let routes = Router::new().route(
            "/echo",
            post(|Json(body): Json<KeyBody>| async move { body.key }),
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
