//! The proxy's own endpoints for local clients: `GET /v1/status` (what is logged in and what
//! the proxy serves, no secrets; a client sees only its own scope) and
//! `GET /v1/credentials/{service}` (the service's credentials in the Auth Gateway's shape, for
//! `latchkey exec` and clients given that right).

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, header};

use crate::error::ProxyError;
use crate::state::{PreparedRoute, ProxyState};

/// `GET /v1/status` for a local client: only the services of its scope (`services`) and the
/// state of their accounts, without who is logged in, other clients or live connections.
pub(crate) fn client_status(state: &ProxyState, services: &[String]) -> Response {
    let inner = &state.inner;
    let visible: Vec<&str> = inner
        .config
        .services
        .iter()
        .map(|r| r.service.as_str())
        .filter(|name| services.iter().any(|s| s == name))
        .collect();
    let proxy = serde_json::json!({
        "port": inner.config.port,
        "services": visible,
    });
    let body = match inner.credentials.client_status(services) {
        serde_json::Value::Object(mut map) => {
            map.insert("proxy".to_owned(), proxy);
            serde_json::Value::Object(map)
        }
        _ => serde_json::json!({ "proxy": proxy }),
    };
    json(&body)
}

/// `GET /v1/status` for the instance's control token: the credential source's whole status
/// plus the proxy's own.
pub(crate) fn status(state: &ProxyState) -> Response {
    let inner = &state.inner;
    let services: Vec<&str> = inner
        .config
        .services
        .iter()
        .map(|r| r.service.as_str())
        .collect();
    let proxy = serde_json::json!({
        "port": inner.config.port,
        "services": services,
        "clients": inner.clients.list().len(),
        "connections": inner.connections.len(),
    });
    let body = match inner.credentials.status() {
        serde_json::Value::Object(mut map) => {
            map.insert("proxy".to_owned(), proxy);
            serde_json::Value::Object(map)
        }
        serde_json::Value::Null => serde_json::json!({ "proxy": proxy }),
        other => serde_json::json!({ "status": other, "proxy": proxy }),
    };
    json(&body)
}

/// `GET /v1/credentials/{service}`: `{"data": {name: value}}`, never cached.
pub(crate) async fn credentials(
    state: &ProxyState,
    route: &PreparedRoute,
) -> Result<Response, ProxyError> {
    let values = state.inner.credentials.credentials(&route.service).await?;
    let data: serde_json::Map<String, serde_json::Value> = values
        .iter()
        .map(|(name, secret)| {
            (
                name.clone(),
                serde_json::Value::String(secret.expose().to_owned()),
            )
        })
        .collect();
    Ok(json(&serde_json::json!({ "data": data })))
}

fn json(value: &serde_json::Value) -> Response {
    // Serialising a `Value` cannot fail: its map keys are strings.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
