//! The one-shot loopback listener a provider redirects the browser to
//! (`http://127.0.0.1:{port}/oauth/callback`, RFC 8252 §7.3), shared by the account login and the
//! login to a remote MCP server's authorization server. It accepts exactly one callback with the
//! right `state` (compared in constant time): a request without `state` or with another one is
//! answered and ignored (a stray tab must not end the login); once a valid callback arrived, any
//! further one is refused. It hands back the code, or the provider's error, together with the
//! `iss` parameter (RFC 9207), which the caller checks against the issuer it expects before it
//! believes either.

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

use crate::secret::{Secret, ct_eq_str};

/// How long a `state` stays valid.
pub const STATE_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The callback path of the redirect URI.
pub const CALLBACK_PATH: &str = "/oauth/callback";

/// What the provider sent back with the right `state`. `Debug` shows no code.
#[derive(Debug)]
pub struct Callback {
    /// The authorization code, on success.
    pub code: Option<Secret>,
    /// The provider's `error` and `error_description` (shortened), on failure.
    pub error: Option<(String, Option<String>)>,
    /// The `iss` parameter (RFC 9207), when the provider sent one.
    pub iss: Option<String>,
}

/// Why no callback came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackError {
    /// The loopback port could not be bound.
    #[error("cannot listen on 127.0.0.1:{port} ({reason})")]
    Listener {
        /// The port asked for (0: any).
        port: u16,
        /// The OS error kind.
        reason: String,
    },
    /// The valid callback arrived after the `state` expired.
    #[error("the login took longer than allowed and expired")]
    Expired,
    /// The listener was stopped before a callback arrived.
    #[error("the login was cancelled")]
    Cancelled,
}

type Outcome = Result<Callback, CallbackError>;

struct Shared {
    state: Secret,
    created: Instant,
    lifetime: Duration,
    /// Taken by the first callback with the right state; `None` afterwards (replays).
    done: Mutex<Option<oneshot::Sender<Outcome>>>,
}

/// A running listener; dropping it stops it.
pub struct Listener {
    /// Where it listens.
    pub addr: SocketAddr,
    outcome: oneshot::Receiver<Outcome>,
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Waits for the callback, then stops the listener (a replay finds nobody).
    pub async fn wait(self) -> Outcome {
        let Self { outcome, _stop, .. } = self;
        let result = outcome.await.map_err(|_| CallbackError::Cancelled)?;
        drop(_stop);
        result
    }
}

/// Binds `127.0.0.1:{port}` (0: any free port) and serves until one valid callback arrived or
/// the returned [`Listener`] is dropped.
pub async fn listen(
    port: u16,
    state: Secret,
    lifetime: Duration,
) -> Result<Listener, CallbackError> {
    let failed = |e: std::io::Error| CallbackError::Listener {
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
        let _ = sender.send(Err(CallbackError::Expired));
        return page(
            StatusCode::BAD_REQUEST,
            "This login took too long and expired. Start a new login from Latchkey.",
        );
    }
    let error = query.get("error").map(|e| {
        (
            e.chars().take(64).collect::<String>(),
            query
                .get("error_description")
                .map(|d| d.chars().take(300).collect::<String>()),
        )
    });
    let message = match &error {
        Some((e, _)) if e == "access_denied" => "Sign-in was cancelled. You can close this window.",
        Some(_) => "The sign-in was refused. Latchkey shows why; you can close this window.",
        // The code still has to be exchanged and the tokens checked: Latchkey says how that went.
        None => "Latchkey received your sign-in. You can close this window and return to Latchkey.",
    };
    let _ = sender.send(Ok(Callback {
        code: query
            .get("code")
            .filter(|c| !c.is_empty())
            .map(|c| Secret::new(c.clone())),
        error,
        iss: query.get("iss").cloned(),
    }));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_lives_the_ten_minutes_the_protocol_gives_it() {
        assert_eq!(STATE_LIFETIME, Duration::from_secs(600));
    }

    #[tokio::test]
    async fn the_page_tells_a_cancel_from_a_refusal_and_hands_back_the_error() {
        for (error, page_says) in [("access_denied", "cancelled"), ("invalid_scope", "refused")] {
            let listener = listen(0, Secret::new("s"), STATE_LIFETIME)
                .await
                .expect("listen");
            let url = format!(
                "http://{}{CALLBACK_PATH}?state=s&error={error}&iss=https%3A%2F%2Fidp",
                listener.addr
            );
            let body = reqwest::get(url)
                .await
                .expect("callback")
                .text()
                .await
                .expect("page");
            assert!(body.contains(page_says), "{error}: {body}");
            let answer = listener.wait().await.expect("answer");
            assert_eq!(answer.error.map(|(e, _)| e).as_deref(), Some(error));
            assert_eq!(answer.iss.as_deref(), Some("https://idp"));
            assert!(answer.code.is_none());
        }
    }
}
