//! Routes of remote MCP servers whose OAuth token Latchkey manages, added while the proxy runs:
//! an upstream `401` makes the source refresh once and the request is replayed, body intact; a
//! second `401`, or a `403 insufficient_scope`, becomes Latchkey's own answer naming the server.
//! The host never sees a `401`, a `403` challenge or a `WWW-Authenticate`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::future::BoxFuture;
use latchkey_core::secret::Secret;
use latchkey_proxy::{
    ConnectionRegistry, CredentialError, CredentialSource, CredentialValues, InjectTarget,
    Injection, ProxyConfig, ProxyState, Route, UpstreamRefusal,
};
use latchkey_store::{AuditFilter, AuditLog, ClientRegistry, Database, Retention};
use url::Url;

use crate::support::new_client;

/// A source holding one server's access token; a refresh swaps in `refreshed`.
struct TokenSource {
    current: Mutex<Arc<CredentialValues>>,
    refreshed: &'static str,
    refreshes: AtomicUsize,
    step_ups: Mutex<Vec<Vec<String>>>,
}

fn values(token: &str) -> Arc<CredentialValues> {
    let mut v = CredentialValues::new();
    v.insert("access_token".to_owned(), Secret::new(token));
    Arc::new(v)
}

impl TokenSource {
    fn new(initial: &str, refreshed: &'static str) -> Arc<Self> {
        Arc::new(Self {
            current: Mutex::new(values(initial)),
            refreshed,
            refreshes: AtomicUsize::new(0),
            step_ups: Mutex::new(Vec::new()),
        })
    }
}

impl CredentialSource for TokenSource {
    fn credentials<'a>(
        &'a self,
        _service: &'a str,
    ) -> BoxFuture<'a, Result<Arc<CredentialValues>, CredentialError>> {
        let current = self.current.lock().expect("lock").clone();
        Box::pin(async move { Ok(current) })
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({})
    }

    fn upstream_refused(
        &self,
        service: &str,
        used: &Arc<CredentialValues>,
        refusal: UpstreamRefusal,
    ) -> BoxFuture<'_, Result<(), CredentialError>> {
        let server = service.to_owned();
        let used = used.clone();
        Box::pin(async move {
            match refusal {
                UpstreamRefusal::Unauthorized { retried: false } => {
                    let mut current = self.current.lock().expect("lock");
                    if Arc::ptr_eq(&used, &current) {
                        *current = values(self.refreshed);
                        self.refreshes.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(())
                }
                UpstreamRefusal::InsufficientScope { scopes } => {
                    self.step_ups.lock().expect("lock").push(scopes.clone());
                    Err(CredentialError::ServerStepUpRequired { server, scopes })
                }
                _ => Err(CredentialError::ServerLoginRequired { server }),
            }
        })
    }
}

/// An MCP server double that accepts only `Bearer fresh` and echoes the request body.
struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
}

async fn start_server() -> Server {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let mcp = move |headers: HeaderMap, body: Bytes| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if auth != Some("Bearer fresh") {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(
                        header::WWW_AUTHENTICATE,
                        r#"Bearer error="invalid_token", resource_metadata="http://x/.well-known/oauth-protected-resource""#,
                    )],
                )
                    .into_response();
            }
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            axum::Json(serde_json::json!({
                "jsonrpc": "2.0", "id": request["id"], "result": { "echo": request }
            }))
            .into_response()
        }
    };
    let admin = || async {
        (
            StatusCode::FORBIDDEN,
            [(
                header::WWW_AUTHENTICATE,
                r#"Bearer error="insufficient_scope", scope="mcp:tools mcp:admin""#,
            )],
        )
            .into_response()
    };
    let app = Router::new()
        .route("/mcp", post(mcp))
        .route("/admin/mcp", post(admin));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { url, hits }
}

struct Running {
    url: String,
    token: String,
    state: ProxyState,
    audit: AuditLog,
    _dir: tempfile::TempDir,
}

/// The proxy with no configured service; the server `tracker` is added while it runs.
async fn start_proxy(source: Arc<TokenSource>, upstream: &str) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Database::open(&dir.path().join("latchkey.db")).expect("database");
    let clients = ClientRegistry::open(&db).expect("clients");
    let audit = AuditLog::open(&db, Retention::default()).expect("audit");
    let listeners = latchkey_proxy::bind_loopback(0).expect("bind");
    let port = listeners[0].local_addr().expect("addr").port();
    let config = ProxyConfig {
        port,
        ..ProxyConfig::default()
    };
    let state = ProxyState::new(
        config,
        source,
        clients.clone(),
        audit.clone(),
        ConnectionRegistry::default(),
        None,
    )
    .expect("state");
    tokio::spawn(latchkey_proxy::serve(
        listeners,
        state.clone(),
        std::future::pending(),
    ));
    let route = Route::new(
        "tracker",
        Url::parse(upstream).expect("url"),
        vec![Injection {
            credential: "access_token".to_owned(),
            target: InjectTarget::header("Authorization", "Bearer ").expect("header"),
        }],
    )
    .expect("route");
    state.add_server_route(route).expect("added while running");
    Running {
        url: format!("http://127.0.0.1:{port}"),
        token: new_client(&clients, "host", &["tracker".to_owned()]),
        state,
        audit,
        _dir: dir,
    }
}

async fn call(proxy: &Running, path: &str) -> Response {
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"pad":"kept"}}"#;
    let answer = reqwest::Client::new()
        .post(format!("{}/tracker{path}", proxy.url))
        .header("X-Latchkey-Client", &proxy.token)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .body(body)
        .send()
        .await
        .expect("send");
    let mut response = Response::builder().status(answer.status().as_u16());
    for (k, v) in answer.headers() {
        response = response.header(k.as_str(), v.as_bytes());
    }
    let bytes = answer.bytes().await.expect("body");
    response.body(bytes.into()).expect("response")
}

async fn json(response: Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("JSON")
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_and_the_request_replayed_unseen_by_the_host() {
    let server = start_server().await;
    let source = TokenSource::new("stale", "fresh");
    let proxy = start_proxy(source.clone(), &server.url).await;
    let response = call(&proxy, "/mcp").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    let body = json(response).await;
    assert_eq!(
        body["result"]["echo"]["params"]["pad"], "kept",
        "the replayed request carried the same body: {body}"
    );
    assert_eq!(source.refreshes.load(Ordering::SeqCst), 1, "one refresh");
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        2,
        "refused once, then answered"
    );
    // The next request uses the refreshed token directly.
    assert_eq!(call(&proxy, "/mcp").await.status(), StatusCode::OK);
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    assert_eq!(source.refreshes.load(Ordering::SeqCst), 1);
    // The audit log has the upstream's refusal under its own status, then each answer: one row
    // per attempt sent, none for the host's request beside them.
    proxy.audit.flush().await;
    let rows = proxy
        .audit
        .query(&AuditFilter::default())
        .await
        .expect("audit")
        .rows;
    let statuses: Vec<u16> = rows.iter().rev().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 200, 200], "{rows:#?}");
}

#[tokio::test]
async fn a_token_refused_after_its_refresh_asks_for_a_sign_in_naming_the_server() {
    let server = start_server().await;
    let source = TokenSource::new("stale", "still-refused");
    let proxy = start_proxy(source.clone(), &server.url).await;
    let response = call(&proxy, "/mcp").await;
    assert_eq!(
        response.status(),
        StatusCode::FAILED_DEPENDENCY,
        "never a 401 the host would read as an OAuth challenge"
    );
    assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    let body = json(response).await;
    assert_eq!(
        body["id"], 7,
        "a JSON-RPC error for the host's request: {body}"
    );
    assert_eq!(body["error"]["data"]["latchkey_error"], "login_required");
    assert_eq!(body["error"]["data"]["service"], "tracker");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("latchkey server login tracker")),
        "{body}"
    );
    assert_eq!(
        source.refreshes.load(Ordering::SeqCst),
        1,
        "refreshed once only"
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 2, "not retried again");
}

#[tokio::test]
async fn insufficient_scope_becomes_a_step_up_for_the_person_not_a_403_for_the_host() {
    let server = start_server().await;
    let source = TokenSource::new("fresh", "fresh");
    let proxy = start_proxy(source.clone(), &server.url).await;
    let mut needed = proxy.state.login_needed();
    let response = call(&proxy, "/admin/mcp").await;
    assert_eq!(response.status(), StatusCode::FAILED_DEPENDENCY);
    assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    let body = json(response).await;
    assert_eq!(body["error"]["data"]["latchkey_error"], "step_up_required");
    assert_eq!(
        *source.step_ups.lock().expect("lock"),
        vec![vec!["mcp:tools".to_owned(), "mcp:admin".to_owned()]]
    );
    let event = needed.try_recv().expect("announced like a needed login");
    assert_eq!(event.service, "tracker");
    assert_eq!(event.client, "host");
}

#[tokio::test]
async fn a_server_route_is_removed_while_running_and_configured_names_are_kept() {
    let server = start_server().await;
    let source = TokenSource::new("fresh", "fresh");
    let proxy = start_proxy(source, &server.url).await;
    assert_eq!(call(&proxy, "/mcp").await.status(), StatusCode::OK);
    let duplicate =
        Route::new("tracker", Url::parse(&server.url).expect("url"), vec![]).expect("route");
    assert!(
        proxy.state.add_server_route(duplicate).is_err(),
        "a taken name is refused"
    );
    assert!(proxy.state.remove_server_route("tracker"));
    assert_eq!(call(&proxy, "/mcp").await.status(), StatusCode::NOT_FOUND);
    assert!(!proxy.state.remove_server_route("tracker"));
}
