//! The one-shot loopback listener the identity provider redirects the browser to
//! (`http://127.0.0.1:{port}/oauth/callback`, RFC 8252 §7.3). It accepts exactly one callback
//! with the right `state`: a request without `state` or with another one is answered and ignored
//! (a stray tab must not end the login); once a valid callback arrived, any further one is refused.

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

use super::LoginError;
use crate::secret::{Secret, ct_eq_str};

/// How long a `state` stays valid.
pub const STATE_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The callback path of the redirect URI.
pub const CALLBACK_PATH: &str = "/oauth/callback";

type Outcome = Result<Secret, LoginError>;

struct Shared {
    state: String,
    created: Instant,
    lifetime: Duration,
    /// Taken by the first callback with the right state; `None` afterwards (replays).
    done: Mutex<Option<oneshot::Sender<Outcome>>>,
}

/// A running listener; dropping it stops it.
pub struct Listener {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Resolves with the authorization code, or why there is none.
    outcome: oneshot::Receiver<Outcome>,
    _stop: oneshot::Sender<()>,
}

impl Listener {
    /// Waits for the callback's outcome, then stops the listener (a replay finds nobody).
    pub async fn wait(self) -> Outcome {
        let Self { outcome, _stop, .. } = self;
        let result = outcome.await.map_err(|_| LoginError::Cancelled)?;
        drop(_stop);
        result
    }
}

/// Binds `127.0.0.1:{port}` (0: any free port) and serves until one valid callback arrived or
/// the returned [`Listener`] is dropped.
pub async fn listen(port: u16, state: String, lifetime: Duration) -> Result<Listener, LoginError> {
    let socket = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| LoginError::CallbackListener {
            port,
            reason: e.kind().to_string(),
        })?;
    let addr = socket
        .local_addr()
        .map_err(|e| LoginError::CallbackListener {
            port,
            reason: e.kind().to_string(),
        })?;
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
            // Resolves when the login finished (or was cancelled) and the Listener was dropped.
            let _ = stopped.await;
        });
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "login callback listener failed");
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
            "This sign-in answer has no state parameter; Latchkey ignored it. Finish signing in in the window Latchkey opened.",
        );
    };
    if !ct_eq_str(state, &shared.state) {
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
        let _ = sender.send(Err(LoginError::StateExpired));
        return page(
            StatusCode::BAD_REQUEST,
            "This login took longer than 10 minutes and expired. Start a new login from Latchkey.",
        );
    }
    if let Some(error) = query.get("error") {
        let description = query
            .get("error_description")
            .map(|d| d.chars().take(300).collect::<String>());
        let denied = error == "access_denied";
        let _ = sender.send(Err(LoginError::Authorization {
            error: error.chars().take(64).collect(),
            description,
        }));
        return page(
            StatusCode::OK,
            if denied {
                "Sign-in was cancelled. You can close this window."
            } else {
                "The identity provider refused the sign-in. Latchkey shows why; you can close this window."
            },
        );
    }
    let Some(code) = query.get("code").filter(|c| !c.is_empty()) else {
        let _ = sender.send(Err(LoginError::CallbackMalformed));
        return page(
            StatusCode::BAD_REQUEST,
            "The identity provider's answer had no authorization code. Start a new login from Latchkey.",
        );
    };
    let _ = sender.send(Ok(Secret::new(code.clone())));
    page(
        StatusCode::OK,
        "You are signed in to Latchkey. You can close this window.",
    )
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
