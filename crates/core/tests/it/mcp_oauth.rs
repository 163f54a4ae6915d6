//! Latchkey as the OAuth client of a remote MCP server, against real peers: the sandbox's
//! `oidc-provider` authorization server (DCR, resource indicators) and an MCP server from the
//! official TypeScript SDK that verifies its JWTs. The refusals run against a small axum server
//! playing a hostile peer, one knob at a time, each asserting its error code.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use latchkey_core::mcp_oauth::authorize::{self, AuthorizationRequest, STATE_LIFETIME};
use latchkey_core::mcp_oauth::registration::{
    self, ClientRegistration, PreRegisteredClient, RegistrationInputs, RegistrationMethod,
};
use latchkey_core::mcp_oauth::tokens::{self, TokenClient};
use latchkey_core::mcp_oauth::{
    self, Discovery, Fetcher, McpOAuthError, Settings, TokenSet, challenge,
};
use latchkey_core::secret::Secret;
use latchkey_testkit::LogCapture;
use latchkey_testkit::mcp_auth::{McpAuthServer, OAuthMcpServer, SdkAuthServer, sign_in};
use serde_json::{Value, json};
use url::Url;

fn loopback_fetcher() -> Fetcher {
    Fetcher::new(Settings {
        timeout: Duration::from_secs(10),
        allow_insecure_loopback: true,
        ..Settings::default()
    })
    .expect("fetcher")
}

/// Authorizes with `scopes`, signing in as alice like a browser would.
async fn log_in(
    fetcher: &Fetcher,
    discovery: &Discovery,
    client: &ClientRegistration,
    scopes: &[String],
) -> TokenSet {
    log_in_on(fetcher, discovery, client, scopes, 0).await
}

/// [`log_in`] with the callback listening on `callback_port`.
async fn log_in_on(
    fetcher: &Fetcher,
    discovery: &Discovery,
    client: &ClientRegistration,
    scopes: &[String],
    callback_port: u16,
) -> TokenSet {
    let attempt = authorize::start(
        fetcher,
        AuthorizationRequest {
            server: &discovery.authorization_server,
            client,
            resource: &discovery.resource.resource,
            scopes,
            callback_port,
            state_lifetime: STATE_LIFETIME,
        },
    )
    .await
    .expect("start the authorization");
    let url = attempt.authorize_url().clone();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let param = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(param("code_challenge_method"), Some("S256"));
    assert_eq!(
        param("resource"),
        Some(discovery.resource.resource.as_str())
    );
    assert!(
        param("state").is_some_and(|s| s.len() >= 16),
        "a random state"
    );
    let browser = tokio::spawn(async move { sign_in(&url, "alice", "alice-password").await });
    let tokens = attempt.finish().await.expect("the login completes");
    browser
        .await
        .expect("browser task")
        .expect("sign-in page driven");
    tokens
}

/// One JSON-RPC request to the MCP server with the bearer token; the JSON-RPC answer (JSON or
/// the first SSE `data:` line).
async fn mcp_call(
    url: &Url,
    token: &Secret,
    method: &str,
    params: Value,
) -> (StatusCode, HeaderMap, Value) {
    let answer = reqwest::Client::new()
        .post(url.clone())
        .bearer_auth(token.expose())
        .header(header::ACCEPT, "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}))
        .send()
        .await
        .expect("MCP server reachable");
    let status = answer.status();
    let headers = answer.headers().clone();
    let text = answer.text().await.expect("body");
    let json_text = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or(&text)
        .to_owned();
    (
        status,
        headers,
        serde_json::from_str(&json_text).unwrap_or(Value::Null),
    )
}

fn tool_names(answer: &Value) -> Vec<String> {
    answer["result"]["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn discovery_registration_login_and_refresh_work_against_the_sdk_server_and_oidc_provider() {
    let logs = LogCapture::start();
    let auth = McpAuthServer::start(600)
        .await
        .expect("authorization server");
    let server = OAuthMcpServer::start(auth.issuer())
        .await
        .expect("MCP server");
    let fetcher = loopback_fetcher();

    let discovery = mcp_oauth::discover(&fetcher, server.url())
        .await
        .expect("discovery");
    let challenge = discovery
        .challenge
        .as_ref()
        .expect("the 401 carries a Bearer challenge");
    assert!(challenge.resource_metadata().is_some());
    assert_eq!(discovery.resource.resource, server.url().as_str());
    assert_eq!(discovery.authorization_server.issuer, auth.issuer());
    assert_eq!(
        discovery.authorization_server.metadata_url.path(),
        "/.well-known/oauth-authorization-server",
        "RFC 8414 is tried first for an issuer without a path (oidc-provider 9 serves it)"
    );
    assert!(
        discovery
            .authorization_server
            .authorization_response_iss_parameter_supported,
        "oidc-provider promises iss, so the callback's iss is required and checked"
    );
    assert_eq!(discovery.scopes(), ["mcp:tools"], "the challenge's scope");

    let client = registration::register(
        &fetcher,
        &discovery.authorization_server,
        &RegistrationInputs::default(),
    )
    .await
    .expect("dynamic registration");
    assert_eq!(client.method, RegistrationMethod::Dynamic);
    assert_eq!(auth.stats().await.expect("stats").registrations, 1);

    let tokens = log_in(&fetcher, &discovery, &client, &discovery.scopes()).await;
    assert!(tokens.expires_at > tokens.issued_at + time::Duration::seconds(500));
    let refresh_token = tokens.refresh_token.clone().expect("a refresh token");
    let shown = format!("{tokens:?}");
    assert!(
        !shown.contains(tokens.access_token.expose()) && !shown.contains(refresh_token.expose()),
        "Debug of a TokenSet must not show its tokens"
    );

    let (status, _, listed) =
        mcp_call(server.url(), &tokens.access_token, "tools/list", json!({})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the SDK server accepts the token: {listed}"
    );
    assert!(
        tool_names(&listed).contains(&"whoami".to_owned()),
        "{listed}"
    );
    let (_, _, who) = mcp_call(
        server.url(),
        &tokens.access_token,
        "tools/call",
        json!({"name": "whoami", "arguments": {}}),
    )
    .await;
    let who: Value =
        serde_json::from_str(who["result"]["content"][0]["text"].as_str().unwrap_or("{}"))
            .expect("whoami JSON");
    assert_eq!(who["subject"], "alice", "the token is alice's");

    let target = TokenClient {
        server: &discovery.authorization_server,
        client: &client,
        resource: &discovery.resource.resource,
    };
    let refreshed = tokens::refresh(&fetcher, &target, &refresh_token, None)
        .await
        .expect("refresh");
    assert!(
        !refreshed.access_token.ct_eq(&tokens.access_token),
        "a new access token"
    );
    let rotated = refreshed
        .refresh_token
        .clone()
        .expect("a refresh token after refresh");
    assert!(
        !rotated.ct_eq(&refresh_token),
        "oidc-provider rotates refresh tokens"
    );
    let (status, _, listed) = mcp_call(
        server.url(),
        &refreshed.access_token,
        "tools/list",
        json!({}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the refreshed token works: {listed}"
    );

    let reused = tokens::refresh(&fetcher, &target, &refresh_token, None).await;
    assert_eq!(
        reused.expect_err("a rotated-out refresh token").code(),
        latchkey_core::Code::McpOauthLoginRequired
    );

    let stats = auth.stats().await.expect("stats");
    assert_eq!(stats.refresh_grants, 1);
    assert!(
        !stats.resources.is_empty() && stats.resources.iter().all(|r| r == server.url().as_str()),
        "every token request named the MCP server as resource: {:?}",
        stats.resources
    );
    assert!(
        logs.contains("latchkey_core::mcp_oauth"),
        "the flow was captured, so the absence below means something"
    );
    logs.assert_absent(&[
        tokens.access_token.expose(),
        refresh_token.expose(),
        refreshed.access_token.expose(),
        rotated.expose(),
    ]);
}

#[tokio::test]
async fn insufficient_scope_from_the_sdk_server_steps_up_to_the_union_of_scopes() {
    let auth = McpAuthServer::start(600)
        .await
        .expect("authorization server");
    let server = OAuthMcpServer::start(auth.issuer())
        .await
        .expect("MCP server");
    let fetcher = loopback_fetcher();
    let discovery = mcp_oauth::discover(&fetcher, server.url())
        .await
        .expect("discovery");
    let client = registration::register(
        &fetcher,
        &discovery.authorization_server,
        &RegistrationInputs::default(),
    )
    .await
    .expect("registration");
    let granted = discovery.scopes();
    let tokens = log_in(&fetcher, &discovery, &client, &granted).await;

    let admin = server.url().join("/admin/mcp").expect("admin URL");
    let (status, headers, _) =
        mcp_call(&admin, &tokens.access_token, "tools/list", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let challenge = challenge::bearer(&headers).expect("a Bearer challenge on the 403");
    let wanted =
        challenge::step_up_scopes(&granted, &challenge).expect("an insufficient_scope step-up");
    assert_eq!(wanted, ["mcp:tools", "mcp:admin"]);

    let stepped = log_in(&fetcher, &discovery, &client, &wanted).await;
    let (status, _, listed) =
        mcp_call(&admin, &stepped.access_token, "tools/list", json!({})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the stepped-up token has mcp:admin: {listed}"
    );
}

#[tokio::test]
async fn the_sdk_authorization_server_with_exact_redirect_uris_works_through_a_fixed_callback_port()
{
    let auth = SdkAuthServer::start()
        .await
        .expect("SDK authorization server");
    let server = OAuthMcpServer::start_introspecting(auth.issuer())
        .await
        .expect("MCP server");
    let fetcher = loopback_fetcher();
    let discovery = mcp_oauth::discover(&fetcher, server.url())
        .await
        .expect("discovery");
    assert_eq!(
        discovery.authorization_server.issuer,
        auth.issuer(),
        "the issuer with its trailing slash, exactly as published"
    );
    assert!(
        !discovery
            .authorization_server
            .authorization_response_iss_parameter_supported,
        "the SDK promises no iss, so a callback without one is fine"
    );
    // A port free now; the SDK's demo provider compares redirect URIs exactly.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let inputs = RegistrationInputs {
        callback_port: Some(port),
        ..RegistrationInputs::default()
    };
    let client = registration::register(&fetcher, &discovery.authorization_server, &inputs)
        .await
        .expect("dynamic registration at the SDK");
    assert_eq!(client.method, RegistrationMethod::Dynamic);
    let tokens = log_in_on(&fetcher, &discovery, &client, &discovery.scopes(), port).await;
    let (status, _, listed) =
        mcp_call(server.url(), &tokens.access_token, "tools/list", json!({})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the introspected token is accepted: {listed}"
    );
    assert!(tool_names(&listed).contains(&"echo".to_owned()), "{listed}");
    assert!(
        tokens.refresh_token.is_none(),
        "the SDK's demo issues no refresh token"
    );
}

#[tokio::test]
async fn a_pre_registered_client_id_comes_before_any_registration() {
    let auth = McpAuthServer::start(600)
        .await
        .expect("authorization server");
    let server = OAuthMcpServer::start(auth.issuer())
        .await
        .expect("MCP server");
    let fetcher = loopback_fetcher();
    let discovery = mcp_oauth::discover(&fetcher, server.url())
        .await
        .expect("discovery");
    let client = registration::register(
        &fetcher,
        &discovery.authorization_server,
        &RegistrationInputs {
            pre_registered: Some(PreRegisteredClient {
                client_id: "given-by-the-person".into(),
                client_secret: None,
            }),
            metadata_document_url: Some(
                Url::parse("https://latchkey.example/client-metadata.json").expect("url"),
            ),
            callback_port: None,
        },
    )
    .await
    .expect("registration");
    assert_eq!(client.method, RegistrationMethod::PreRegistered);
    assert_eq!(client.client_id, "given-by-the-person");
    assert_eq!(
        auth.stats().await.expect("stats").registrations,
        0,
        "no DCR call"
    );
}

// ---- A hostile peer: MCP server, protected-resource metadata, AS metadata, registration,
// authorization and token endpoints on one axum server, each answer set by a knob.

/// What the hostile peer answers. Defaults are a well-behaved peer.
#[derive(Clone)]
struct Knobs {
    /// The protected-resource metadata (JSON), with `{base}` replaced.
    prm: Prm,
    /// Merged into the good AS metadata (`null` removes a member).
    as_patch: Value,
    /// The registration answer.
    registration: Value,
    /// The `iss` of the authorization response; `None`: omitted.
    callback_iss: Option<String>,
    /// The MCP server's `WWW-Authenticate` on its 401; empty: it answers 200 (no login needed).
    challenge: String,
    /// Further documents served at these paths (everything else unknown is a 404).
    documents: Vec<(String, Value)>,
    /// The token answer.
    token: Value,
}

#[derive(Clone)]
enum Prm {
    Json(Value),
    Redirect,
    Huge,
    NotJson,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            prm: Prm::Json(json!({"resource": "{base}/mcp", "authorization_servers": ["{base}"]})),
            as_patch: json!({}),
            registration: json!({"client_id": "hostile-client", "token_endpoint_auth_method": "none"}),
            callback_iss: Some("{base}".into()),
            challenge: r#"Bearer resource_metadata="{base}/prm", scope="s1""#.into(),
            documents: Vec::new(),
            token: json!({"access_token": "at-from-hostile", "token_type": "Bearer", "expires_in": 60}),
        }
    }
}

struct Peer {
    knobs: Knobs,
    /// `METHOD /path` of every request, in order.
    seen: std::sync::Mutex<Vec<String>>,
    /// The last registration request's body.
    registered: std::sync::Mutex<Option<Value>>,
    base: String,
}

fn fill(value: &Value, base: &str) -> Value {
    serde_json::from_str(&value.to_string().replace("{base}", base)).expect("JSON")
}

fn json_answer(value: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn record(
    State(p): State<Arc<Peer>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Ok(mut seen) = p.seen.lock() {
        seen.push(format!("{} {}", request.method(), request.uri().path()));
    }
    next.run(request).await
}

async fn hostile(knobs: Knobs) -> (Url, tokio::task::JoinHandle<()>) {
    let (url, task, _) = serve_hostile(knobs).await;
    (url, task)
}

/// The hostile peer on a free port: its MCP endpoint, its task, and its state (request log).
async fn serve_hostile(knobs: Knobs) -> (Url, tokio::task::JoinHandle<()>, Arc<Peer>) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", socket.local_addr().expect("addr"));
    let peer = Arc::new(Peer {
        knobs,
        base: base.clone(),
        seen: std::sync::Mutex::default(),
        registered: std::sync::Mutex::default(),
    });
    let app = Router::new()
        .route(
            "/mcp",
            post(|State(p): State<Arc<Peer>>| async move {
                if p.knobs.challenge.is_empty() {
                    // An MCP server that needs no login.
                    return json_answer(json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
                }
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, p.knobs.challenge.replace("{base}", &p.base))],
                )
                    .into_response()
            }),
        )
        .route(
            "/prm",
            get(|State(p): State<Arc<Peer>>| async move {
                match &p.knobs.prm {
                    Prm::Json(v) => json_answer(fill(v, &p.base)),
                    Prm::Redirect => (StatusCode::FOUND, [(header::LOCATION, "https://elsewhere.example/prm")]).into_response(),
                    Prm::Huge => {
                        // Streamed in chunks without Content-Length: the cap must hold while reading.
                        let chunks = (0..200).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024]));
                        Body::from_stream(futures_util::stream::iter(chunks)).into_response()
                    }
                    Prm::NotJson => "<html>not json</html>".into_response(),
                }
            }),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(|State(p): State<Arc<Peer>>| async move {
                let mut doc = json!({
                    "issuer": "{base}",
                    "authorization_endpoint": "{base}/authorize",
                    "token_endpoint": "{base}/token",
                    "registration_endpoint": "{base}/register",
                    "code_challenge_methods_supported": ["S256"],
                    "response_types_supported": ["code"],
                });
                if let (Some(doc), Some(patch)) = (doc.as_object_mut(), p.knobs.as_patch.as_object()) {
                    for (k, v) in patch {
                        if v.is_null() {
                            doc.remove(k);
                        } else {
                            doc.insert(k.clone(), v.clone());
                        }
                    }
                }
                json_answer(fill(&doc, &p.base))
            }),
        )
        .route(
            "/register",
            post(|State(p): State<Arc<Peer>>, axum::Json(body): axum::Json<Value>| async move {
                if let Ok(mut registered) = p.registered.lock() {
                    *registered = Some(body);
                }
                (StatusCode::CREATED, json_answer(fill(&p.knobs.registration, &p.base)))
            }),
        )
        .route(
            "/authorize",
            get(
                |State(p): State<Arc<Peer>>, Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let mut to = Url::parse(&q["redirect_uri"]).expect("redirect_uri");
                    to.query_pairs_mut()
                        .append_pair("code", "code-from-hostile")
                        .append_pair("state", &q["state"]);
                    if let Some(iss) = &p.knobs.callback_iss {
                        to.query_pairs_mut().append_pair("iss", &iss.replace("{base}", &p.base));
                    }
                    (StatusCode::FOUND, [(header::LOCATION, to.to_string())])
                },
            ),
        )
        .route(
            "/token",
            post(|State(p): State<Arc<Peer>>| async move { json_answer(fill(&p.knobs.token, &p.base)) }),
        )
        .fallback(|State(p): State<Arc<Peer>>, uri: axum::http::Uri| async move {
            match p.knobs.documents.iter().find(|(path, _)| path == uri.path()) {
                Some((_, doc)) => json_answer(fill(doc, &p.base)),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        })
        .layer(axum::middleware::from_fn_with_state(peer.clone(), record))
        .with_state(peer.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(socket, app).await;
    });
    (Url::parse(&format!("{base}/mcp")).expect("url"), task, peer)
}

async fn discover_hostile(knobs: Knobs) -> Result<Discovery, McpOAuthError> {
    let (url, _task) = hostile(knobs).await;
    mcp_oauth::discover(&loopback_fetcher(), &url).await
}

/// Runs the whole flow against the hostile peer, following its redirect like a browser.
async fn flow_hostile(knobs: Knobs) -> Result<TokenSet, McpOAuthError> {
    flow_hostile_with(knobs, STATE_LIFETIME).await
}

/// [`flow_hostile`] with another `state` lifetime.
async fn flow_hostile_with(
    knobs: Knobs,
    state_lifetime: Duration,
) -> Result<TokenSet, McpOAuthError> {
    let (url, _task) = hostile(knobs).await;
    let fetcher = loopback_fetcher();
    let discovery = mcp_oauth::discover(&fetcher, &url).await?;
    let client = registration::register(
        &fetcher,
        &discovery.authorization_server,
        &RegistrationInputs::default(),
    )
    .await?;
    let attempt = authorize::start(
        &fetcher,
        AuthorizationRequest {
            server: &discovery.authorization_server,
            client: &client,
            resource: &discovery.resource.resource,
            scopes: &discovery.scopes(),
            callback_port: 0,
            state_lifetime,
        },
    )
    .await?;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(2))
        .build()
        .expect("browser");
    let authorize_url = attempt.authorize_url().clone();
    let visit =
        tokio::spawn(async move { browser.get(authorize_url).send().await.map(|r| r.status()) });
    let outcome = attempt.finish().await;
    let status = visit.await.expect("task").expect("callback delivered");
    assert_eq!(
        status.is_success(),
        !matches!(outcome, Err(McpOAuthError::StateExpired)),
        "the callback page says whether Latchkey took the answer"
    );
    outcome
}

fn code_of<T: std::fmt::Debug>(r: Result<T, McpOAuthError>) -> latchkey_core::Code {
    r.expect_err("the hostile peer must be refused").code()
}

#[tokio::test]
async fn a_well_behaved_double_completes_the_flow_so_each_refusal_below_is_its_knob() {
    let tokens = flow_hostile(Knobs::default())
        .await
        .expect("the default peer is fine");
    assert_eq!(tokens.access_token.expose(), "at-from-hostile");
    assert!(tokens.refresh_token.is_none());
}

#[tokio::test]
async fn without_resource_metadata_the_well_known_uris_are_tried_path_inserted_then_root() {
    let prm = json!({"resource": "{base}/mcp", "authorization_servers": ["{base}"]});
    let (url, _task, peer) = serve_hostile(Knobs {
        challenge: r#"Bearer scope="s1""#.into(),
        documents: vec![("/.well-known/oauth-protected-resource".into(), prm)],
        ..Knobs::default()
    })
    .await;
    let discovery = mcp_oauth::discover(&loopback_fetcher(), &url)
        .await
        .expect("discovery");
    assert_eq!(
        discovery.resource.metadata_url.path(),
        "/.well-known/oauth-protected-resource"
    );
    let seen = peer.seen.lock().expect("log").clone();
    assert_eq!(
        seen,
        [
            "POST /mcp",
            "GET /.well-known/oauth-protected-resource/mcp",
            "GET /.well-known/oauth-protected-resource",
            "GET /.well-known/oauth-authorization-server",
        ]
    );
}

#[tokio::test]
async fn an_issuer_with_a_path_is_looked_up_in_the_specified_order() {
    let prm = json!({"resource": "{base}/mcp", "authorization_servers": ["{base}/tenant"]});
    let metadata = json!({
        "issuer": "{base}/tenant",
        "authorization_endpoint": "{base}/authorize",
        "token_endpoint": "{base}/token",
        "code_challenge_methods_supported": ["S256"],
    });
    let (url, _task, peer) = serve_hostile(Knobs {
        prm: Prm::Json(prm),
        documents: vec![("/tenant/.well-known/openid-configuration".into(), metadata)],
        ..Knobs::default()
    })
    .await;
    let discovery = mcp_oauth::discover(&loopback_fetcher(), &url)
        .await
        .expect("discovery");
    assert!(discovery.authorization_server.issuer.ends_with("/tenant"));
    let seen = peer.seen.lock().expect("log").clone();
    assert_eq!(
        seen,
        [
            "POST /mcp",
            "GET /prm",
            "GET /.well-known/oauth-authorization-server/tenant",
            "GET /.well-known/openid-configuration/tenant",
            "GET /tenant/.well-known/openid-configuration",
        ]
    );
}

#[tokio::test]
async fn plain_http_is_refused_without_the_loopback_setting_and_off_loopback_always() {
    let (url, _task) = hostile(Knobs::default()).await;
    let strict = Fetcher::new(Settings::default()).expect("fetcher");
    assert_eq!(
        code_of(mcp_oauth::discover(&strict, &url).await),
        latchkey_core::Code::McpOauthInsecureUrl
    );

    let off_loopback = Knobs {
        prm: Prm::Json(
            json!({"resource": "{base}/mcp", "authorization_servers": ["http://as.example.test"]}),
        ),
        ..Knobs::default()
    };
    assert_eq!(
        code_of(discover_hostile(off_loopback).await),
        latchkey_core::Code::McpOauthInsecureUrl
    );
    let token_endpoint = Knobs {
        as_patch: json!({"token_endpoint": "http://as.example.test/token"}),
        ..Knobs::default()
    };
    assert_eq!(
        code_of(discover_hostile(token_endpoint).await),
        latchkey_core::Code::McpOauthInsecureUrl
    );
}

#[tokio::test]
async fn metadata_for_another_resource_is_refused() {
    let knobs = Knobs {
        prm: Prm::Json(
            json!({"resource": "https://evil.example/mcp", "authorization_servers": ["{base}"]}),
        ),
        ..Knobs::default()
    };
    assert_eq!(
        code_of(discover_hostile(knobs).await),
        latchkey_core::Code::McpOauthResourceMismatch
    );
}

#[tokio::test]
async fn authorization_server_metadata_naming_another_issuer_is_refused() {
    let knobs = Knobs {
        as_patch: json!({"issuer": "https://evil.example"}),
        ..Knobs::default()
    };
    assert_eq!(
        code_of(discover_hostile(knobs).await),
        latchkey_core::Code::McpOauthIssuerMismatch
    );
}

#[tokio::test]
async fn an_authorization_endpoint_that_is_not_http_is_refused() {
    let knobs = Knobs {
        as_patch: json!({"authorization_endpoint": "javascript:alert(1)"}),
        ..Knobs::default()
    };
    assert_eq!(
        code_of(discover_hostile(knobs).await),
        latchkey_core::Code::McpOauthBadAuthorizationEndpoint
    );
}

#[tokio::test]
async fn an_authorization_server_without_pkce_s256_is_refused() {
    for methods in [json!(null), json!(["plain"])] {
        let knobs = Knobs {
            as_patch: json!({"code_challenge_methods_supported": methods}),
            ..Knobs::default()
        };
        assert_eq!(
            code_of(discover_hostile(knobs).await),
            latchkey_core::Code::McpOauthPkceUnsupported
        );
    }
}

#[tokio::test]
async fn a_redirect_during_discovery_is_refused() {
    let knobs = Knobs {
        prm: Prm::Redirect,
        ..Knobs::default()
    };
    assert_eq!(
        code_of(discover_hostile(knobs).await),
        latchkey_core::Code::McpOauthRedirectRefused
    );
}

#[tokio::test]
async fn an_oversized_document_is_refused_while_reading() {
    let knobs = Knobs {
        prm: Prm::Huge,
        ..Knobs::default()
    };
    assert_eq!(
        code_of(discover_hostile(knobs).await),
        latchkey_core::Code::McpOauthDocumentTooLarge
    );
}

#[tokio::test]
async fn a_malformed_document_is_refused() {
    let knobs = Knobs {
        prm: Prm::NotJson,
        ..Knobs::default()
    };
    assert_eq!(
        code_of(discover_hostile(knobs).await),
        latchkey_core::Code::McpOauthDocumentMalformed
    );
    let no_resource = Knobs {
        prm: Prm::Json(json!({"authorization_servers": ["{base}"]})),
        ..Knobs::default()
    };
    assert_eq!(
        code_of(discover_hostile(no_resource).await),
        latchkey_core::Code::McpOauthDocumentMalformed
    );
}

#[tokio::test]
async fn a_registration_answer_without_client_id_is_refused() {
    let knobs = Knobs {
        registration: json!({"client_name": "Latchkey"}),
        ..Knobs::default()
    };
    assert_eq!(
        code_of(flow_hostile(knobs).await),
        latchkey_core::Code::McpOauthRegistrationWithoutClientId
    );
}

#[tokio::test]
async fn without_any_registration_mechanism_the_person_is_asked_for_a_client_id() {
    let knobs = Knobs {
        as_patch: json!({"registration_endpoint": null}),
        ..Knobs::default()
    };
    assert_eq!(
        code_of(flow_hostile(knobs).await),
        latchkey_core::Code::McpOauthClientIdRequired
    );
}

#[tokio::test]
async fn a_client_id_metadata_document_is_used_when_the_server_supports_it() {
    let (url, _task) = hostile(Knobs {
        as_patch: json!({"client_id_metadata_document_supported": true}),
        ..Knobs::default()
    })
    .await;
    let fetcher = loopback_fetcher();
    let discovery = mcp_oauth::discover(&fetcher, &url)
        .await
        .expect("discovery");
    let document = Url::parse("https://latchkey.example/client-metadata.json").expect("url");
    let client = registration::register(
        &fetcher,
        &discovery.authorization_server,
        &RegistrationInputs {
            pre_registered: None,
            metadata_document_url: Some(document.clone()),
            callback_port: None,
        },
    )
    .await
    .expect("registration");
    assert_eq!(client.method, RegistrationMethod::MetadataDocument);
    assert_eq!(client.client_id, document.as_str());
    let without_document = registration::register(
        &fetcher,
        &discovery.authorization_server,
        &RegistrationInputs::default(),
    )
    .await
    .expect("falls back to DCR");
    assert_eq!(without_document.method, RegistrationMethod::Dynamic);
}

#[tokio::test]
async fn a_token_answer_for_another_resource_is_refused() {
    for named in [
        json!({"resource": "https://evil.example/mcp"}),
        json!({"aud": ["https://evil.example/mcp"]}),
    ] {
        let mut token = Knobs::default().token;
        for (k, v) in named.as_object().expect("object") {
            token[k] = v.clone();
        }
        let knobs = Knobs {
            token,
            ..Knobs::default()
        };
        assert_eq!(
            code_of(flow_hostile(knobs).await),
            latchkey_core::Code::McpOauthTokenWrongResource
        );
    }
}

#[tokio::test]
async fn an_authorization_response_from_another_issuer_is_refused() {
    let knobs = Knobs {
        callback_iss: Some("https://evil.example".into()),
        ..Knobs::default()
    };
    assert_eq!(
        code_of(flow_hostile(knobs).await),
        latchkey_core::Code::McpOauthIssMismatch
    );
}

#[tokio::test]
async fn a_missing_iss_is_refused_only_when_the_server_promises_one() {
    let promised = Knobs {
        callback_iss: None,
        as_patch: json!({"authorization_response_iss_parameter_supported": true}),
        ..Knobs::default()
    };
    assert_eq!(
        code_of(flow_hostile(promised).await),
        latchkey_core::Code::McpOauthIssMissing
    );
    let not_promised = Knobs {
        callback_iss: None,
        ..Knobs::default()
    };
    flow_hostile(not_promised)
        .await
        .expect("iss is optional when not advertised");
}

#[test]
fn a_client_secret_never_shows_in_debug_output() {
    let pre = PreRegisteredClient {
        client_id: "c".into(),
        client_secret: Some(Secret::new("canary-client-secret")),
    };
    let shown = format!("{pre:?}");
    assert!(
        !shown.contains("canary"),
        "Debug must redact the secret: {shown}"
    );
}

#[tokio::test]
async fn a_callback_after_the_state_expired_is_refused() {
    let outcome = flow_hostile_with(Knobs::default(), Duration::ZERO).await;
    assert_eq!(code_of(outcome), latchkey_core::Code::McpOauthLoginExpired);
}

#[tokio::test]
async fn a_refused_token_answer_leaves_no_trace_of_its_token() {
    let logs = LogCapture::start();
    let canary = latchkey_testkit::canary("mcp-access-token");
    let knobs = Knobs {
        token: json!({"access_token": canary, "token_type": "Bearer", "resource": "https://evil.example/mcp"}),
        ..Knobs::default()
    };
    let error = flow_hostile(knobs).await.expect_err("another resource");
    assert_eq!(
        error.code(),
        latchkey_core::Code::McpOauthTokenWrongResource
    );
    assert!(
        !format!("{error} {error:?}").contains(&canary),
        "the refusal must not carry the token"
    );
    assert!(
        logs.contains("mcp_oauth_token_wrong_resource")
            || logs.contains("latchkey_core::mcp_oauth"),
        "the flow was captured, so the absence below means something"
    );
    logs.assert_absent(&[&canary]);
}

#[tokio::test]
async fn dynamic_registration_asks_for_a_native_public_client_with_loopback_redirects() {
    let (url, _task, peer) = serve_hostile(Knobs::default()).await;
    let fetcher = loopback_fetcher();
    let discovery = mcp_oauth::discover(&fetcher, &url)
        .await
        .expect("discovery");
    let inputs = RegistrationInputs {
        callback_port: Some(47_999),
        ..RegistrationInputs::default()
    };
    let client = registration::register(&fetcher, &discovery.authorization_server, &inputs)
        .await
        .expect("registration");
    assert_eq!(client.client_id, "hostile-client");
    let body = peer
        .registered
        .lock()
        .expect("lock")
        .clone()
        .expect("a registration request");
    assert_eq!(body["application_type"], "native");
    assert_eq!(body["token_endpoint_auth_method"], "none");
    assert_eq!(
        body["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(
        body["redirect_uris"],
        json!([
            "http://127.0.0.1/oauth/callback",
            "http://127.0.0.1:47999/oauth/callback"
        ]),
        "any port (RFC 8252) and the fixed port for exact-matching servers"
    );
}

#[tokio::test]
async fn without_a_scope_in_the_challenge_the_metadata_scopes_are_asked_for() {
    let knobs = Knobs {
        challenge: r#"Bearer resource_metadata="{base}/prm""#.into(),
        prm: Prm::Json(json!({
            "resource": "{base}/mcp",
            "authorization_servers": ["{base}"],
            "scopes_supported": ["files:read", "files:write"],
        })),
        ..Knobs::default()
    };
    let discovery = discover_hostile(knobs).await.expect("discovery");
    assert_eq!(discovery.scopes(), ["files:read", "files:write"]);
    let with_scope = discover_hostile(Knobs::default()).await.expect("discovery");
    assert_eq!(
        with_scope.scopes(),
        ["s1"],
        "the challenge's scope comes first"
    );
}

#[tokio::test]
async fn a_server_that_answers_without_credentials_needs_no_login() {
    let knobs = Knobs {
        challenge: String::new(),
        ..Knobs::default()
    };
    assert_eq!(
        code_of(discover_hostile(knobs).await),
        latchkey_core::Code::McpOauthNotRequired
    );
}
