//! The one-shot loopback listener of an MCP server login (`http://127.0.0.1:{port}/oauth/callback`,
//! RFC 8252 §7.3). Same rules as the identity provider's listener in `login::callback` (one
//! valid callback, a wrong or missing `state` is answered and ignored, replays refused, `state`
//! expires), but it also hands back the `iss` parameter (RFC 9207), which that listener drops:
//! the caller checks it against the authorization server before using the code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;

use super::{McpOAuthError, shorten};
use crate::secret::{Secret, ct_eq_str};

/// The callback path of the redirect URI.
pub const CALLBACK_PATH: &str = "/oauth/callback";

/// What the authorization server sent back, `state` already checked.
#[derive(Debug)]
pub(crate) struct Callback {
    /// The code, on success.
    pub(crate) code: Option<Secret>,
    /// `error` and `error_description`, on failure.
    pub(crate) error: Option<(String, Option<String>)>,
    /// `iss`, when sent.
    pub(crate) iss: Option<String>,
}

type Outcome = Result<Callback, McpOAuthError>;

struct Shared {
    state: Secret,
    created: Instant,
    lifetime: Duration,
    done: Mutex<Option<oneshot::Sender<Outcome>>>,
}

/// A running listener; dropping it stops it.
pub(crate) struct Listener {
    pub(crate) addr: SocketAddr,
    outcome: oneshot::Receiver<Outcome>,
    _stop: oneshot::Sender<()>,
}

impl Listener {
    /// Waits for the callback, then stops the listener.
    pub(crate) async fn wait(self) -> Outcome {
        let Self { outcome, _stop, .. } = self;
        outcome.await.map_err(|_| McpOAuthError::Cancelled)?
    }
}

/// Binds `127.0.0.1:{port}` (0: any free port).
pub(crate) async fn listen(
    port: u16,
    state: Secret,
    lifetime: Duration,
) -> Result<Listener, McpOAuthError> {
    let failed = |e: std::io::Error| McpOAuthError::CallbackListener {
        port,
        reason: e.kind().to_string(),
    };
    let socket = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(failed)?;
    let addr = socket.local_addr().map_err(failed)?;
    let (tx, outcome) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let shared = Arc::new(Shared {
        state,
        created: Instant::now(),
        lifetime,
        done: Mutex::new(Some(tx)),
    });
    let app = Router::new()
        .route(CALLBACK_PATH, get(callback))
        .with_state(shared);
    tokio::spawn(async move {
        let server = axum::serve(socket, app).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "mcp login callback listener failed");
        }
    });
    Ok(Listener {
        addr,
        outcome,
        _stop: stop,
    })
}

async fn callback(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(state) = query.get("state") else {
        return page(
            StatusCode::BAD_REQUEST,
            "This sign-in answer has no state parameter; Latchkey ignored it.",
        );
    };
    if !ct_eq_str(state, shared.state.expose()) {
        return page(
            StatusCode::BAD_REQUEST,
            "This sign-in answer belongs to another login; Latchkey ignored it.",
        );
    }
    let sender = match shared.done.lock() {
        Ok(mut slot) => slot.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    let Some(sender) = sender else {
        return page(
            StatusCode::BAD_REQUEST,
            "This sign-in answer was already used. Start a new login from Latchkey.",
        );
    };
    if shared.created.elapsed() > shared.lifetime {
        let _ = sender.send(Err(McpOAuthError::StateExpired));
        return page(
            StatusCode::BAD_REQUEST,
            "This login expired. Start a new login from Latchkey.",
        );
    }
    let iss = query.get("iss").cloned();
    let error = query.get("error").map(|e| {
        (
            e.chars().take(64).collect::<String>(),
            query.get("error_description").map(|d| shorten(d)),
        )
    });
    let code = query
        .get("code")
        .filter(|c| !c.is_empty())
        .map(|c| Secret::new(c.clone()));
    let message = if error.is_some() {
        "The server refused the sign-in. Latchkey shows why; you can close this window."
    } else {
        "Latchkey received the sign-in answer. You can close this window."
    };
    let _ = sender.send(Ok(Callback { code, error, iss }));
    page(StatusCode::OK, message)
}

fn page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Latchkey</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>Latchkey</h1><p>{message}</p></body></html>"
    );
    let mut response = (status, Html(body)).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response.headers_mut().insert(
        axum::http::header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("no-referrer"),
    );
    response
}
