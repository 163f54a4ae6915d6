//! The test harness: a real upstream double (an axum server that records what it received), an
//! in-memory `CredentialSource` holding canary values, a real client registry and audit log in a
//! temporary database, and the proxy served on `127.0.0.1:0`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, stream};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use latchkey_core::secret::Secret;
use latchkey_proxy::{
    ConnectionRegistry, CredentialError, CredentialSource, CredentialValues, InjectTarget,
    Injection, Limits, ProxyConfig, ProxyState, RateLimit, Route,
};
use latchkey_store::{AuditLog, ClientName, ClientOptions, ClientRegistry, Database, Retention};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use url::Url;

/// The API key the gateway would hand out for `demo` (injected as `X-API-Key`).
pub const CANARY_KEY: &str = "canary-key-5f2b9d71c0";
/// The credential injected as the `token` query parameter of `demo`.
pub const CANARY_QUERY: &str = "canary-query-8e41a6";
/// The bearer credential of the `bearer` service.
pub const CANARY_BEARER: &str = "canary-bearer-3c77e0a9";
/// What a client puts in its own `Authorization` (must never reach an upstream).
pub const CLIENT_OWN_AUTH: &str = "client-own-secret-91b2";

/// Every service a client created by the harness may use (not `other`).
pub const SCOPED: [&str; 4] = ["demo", "bearer", "broken", "mcp"];

/// Everything written by `tracing` in this test binary, for the canary checks.
pub fn captured_logs() -> String {
    let buf = log_buffer().lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&buf).into_owned()
}

fn log_buffer() -> &'static Mutex<Vec<u8>> {
    static BUF: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    BUF.get_or_init(|| Mutex::new(Vec::new()))
}

struct BufWriter;

impl Write for BufWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        log_buffer()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a subscriber capturing every level of every target into the buffer.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // `try_init` also routes the `log` records of dependencies (rustls, hyper-util) here.
        // Everything at TRACE except the test's own WebSocket client (tungstenite), which logs
        // the handshake it sends, token included: that is the caller's log, not Latchkey's.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace,tungstenite=off"))
            .with_ansi(false)
            .with_writer(|| BufWriter)
            .try_init()
            .expect("first and only global subscriber");
    });
}

/// Microseconds since the epoch (the SSE double stamps events with it).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

// ---------------------------------------------------------------------------------------------
// Credential source

/// Credentials from a map; services not in it answer `NotConfigured`.
#[derive(Default)]
pub struct MapSource {
    values: Mutex<HashMap<String, Result<Arc<CredentialValues>, CredentialError>>>,
}

impl MapSource {
    pub fn with_canaries() -> Self {
        let source = Self::default();
        source.set(
            "demo",
            &[("api_key", CANARY_KEY), ("query_token", CANARY_QUERY)],
        );
        source.set("bearer", &[("token", CANARY_BEARER)]);
        source.set("broken", &[("api_key", "line\r\nX-Injected: yes")]);
        source.set("other", &[]);
        source
    }

    pub fn set(&self, service: &str, pairs: &[(&str, &str)]) {
        let values: CredentialValues = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Secret::new(*v)))
            .collect();
        self.lock().insert(service.to_owned(), Ok(Arc::new(values)));
    }

    pub fn fail(&self, service: &str, error: CredentialError) {
        self.lock().insert(service.to_owned(), Err(error));
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Result<Arc<CredentialValues>, CredentialError>>>
    {
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CredentialSource for MapSource {
    fn credentials<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Arc<CredentialValues>, CredentialError>> {
        let answer = self
            .lock()
            .get(service)
            .cloned()
            .unwrap_or(Err(CredentialError::NotConfigured));
        Box::pin(async move { answer })
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({ "account": "work", "user": "alice@example.test" })
    }

    fn account(&self, _service: &str) -> Option<String> {
        Some("work".to_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream double

/// What the upstream double saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct Recorder {
    hits: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    streams_dropped: AtomicUsize,
    stream_dropped: Notify,
    upload_started: Arc<Notify>,
}

/// A real HTTP server recording every request; see `app` for its endpoints.
pub struct Upstream {
    pub addr: SocketAddr,
    rec: Arc<Recorder>,
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_with_redirect(None).await
    }

    /// `redirect_to`: where `/redirect` points.
    pub async fn start_with_redirect(redirect_to: Option<String>) -> Self {
        let rec = Arc::new(Recorder::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let app = app(rec.clone(), redirect_to);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            rec,
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.rec.hits.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.rec
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received a request")
    }

    pub fn streams_dropped(&self) -> usize {
        self.rec.streams_dropped.load(Ordering::SeqCst)
    }

    /// Waits until `n` SSE streams of the double have been dropped (the proxy let go of them).
    pub async fn wait_streams_dropped(&self, n: usize, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, async {
            loop {
                let notified = self.rec.stream_dropped.notified();
                if self.streams_dropped() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    /// Notified (one permit) when the double receives the first chunk of an upload.
    pub fn upload_started(&self) -> Arc<Notify> {
        self.rec.upload_started.clone()
    }
}

struct DropSignal(Arc<Recorder>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.streams_dropped.fetch_add(1, Ordering::SeqCst);
        self.0.stream_dropped.notify_waiters();
    }
}

fn app(rec: Arc<Recorder>, redirect_to: Option<String>) -> Router {
    Router::new().fallback(move |req: Request| {
        let rec = rec.clone();
        let redirect_to = redirect_to.clone();
        async move { handle(rec, redirect_to, req).await }
    })
}

fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn handle(rec: Arc<Recorder>, redirect_to: Option<String>, req: Request) -> Response {
    rec.hits.fetch_add(1, Ordering::SeqCst);
    rec.seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Seen {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
        });
    let path = req.uri().path().to_owned();
    let tail = path.strip_prefix("/base").unwrap_or(&path).to_owned();
    match tail.as_str() {
        "/redirect" => Response::builder()
            .status(StatusCode::FOUND)
            .header(
                header::LOCATION,
                format!("{}/landing", redirect_to.unwrap_or_default()),
            )
            .body(Body::empty())
            .expect("response"),
        "/sse" => sse(rec, req.uri()),
        "/upload" => upload(rec, req).await,
        "/ws" => ws(req).await,
        "/status/500" => (StatusCode::INTERNAL_SERVER_ERROR, "upstream broke").into_response(),
        _ => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::SET_COOKIE, "session=upstream; Path=/")
            .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
            .body(Body::from(
                serde_json::json!({ "ok": true, "path": path }).to_string(),
            ))
            .expect("response"),
    }
}

/// `n` events (or forever with `n=0`), one every `interval_ms`, each stamped with its emission
/// time; the stream signals when the proxy drops it.
fn sse(rec: Arc<Recorder>, uri: &http::Uri) -> Response {
    let n: u64 = query_param(uri, "n")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let interval = Duration::from_millis(
        query_param(uri, "interval_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
    );
    let guard = Arc::new(DropSignal(rec));
    let events = stream::unfold((0u64, guard), move |(i, guard)| async move {
        if n != 0 && i >= n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let event = format!("id: {i}\ndata: {{\"i\":{i},\"sent_us\":{}}}\n\n", now_us());
        Some((Ok::<_, Infallible>(Bytes::from(event)), (i + 1, guard)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .expect("response")
}

async fn upload(rec: Arc<Recorder>, req: Request) -> Response {
    let mut body = req.into_body();
    let (mut bytes, mut frames) = (0usize, 0usize);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (StatusCode::BAD_REQUEST, "upload broke").into_response();
        };
        if let Some(data) = frame.data_ref() {
            if frames == 0 {
                rec.upload_started.notify_one();
            }
            bytes += data.len();
            frames += 1;
        }
    }
    axum::Json(serde_json::json!({ "bytes": bytes, "frames": frames })).into_response()
}

async fn ws(req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade.on_upgrade(|mut socket| async move {
            while let Some(Ok(msg)) = socket.recv().await {
                let reply = match msg {
                    Message::Text(t) => Message::Text(format!("echo: {}", t.as_str()).into()),
                    Message::Binary(b) => Message::Binary(b),
                    Message::Close(_) => break,
                    _ => continue,
                };
                if socket.send(reply).await.is_err() {
                    break;
                }
            }
        }),
        Err(rejection) => rejection.into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy under test

/// Knobs for one proxy.
pub struct Options {
    pub rate_limit: RateLimit,
    pub limits: Limits,
    pub extra_routes: Vec<Route>,
    pub source: Arc<MapSource>,
    /// A control router to mount under `/v1/control/` (as the runtime does).
    pub control: Option<axum::Router>,
    /// The instance's control token (every scope, as the `latchkey` command's).
    pub control_token: Option<String>,
    /// Records the method and path of every request that reaches the proxy, audited or not
    /// ([`Proxy::requests`]). The proxy is then served by `axum::serve` on its IPv4 listener.
    pub record_requests: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rate_limit: RateLimit {
                per_second: 1000.0,
                burst: 5000,
            },
            limits: Limits::default(),
            extra_routes: Vec::new(),
            source: Arc::new(MapSource::with_canaries()),
            control: None,
            control_token: None,
            record_requests: false,
        }
    }
}

/// A running proxy in front of an upstream double.
pub struct Proxy {
    pub url: String,
    pub port: u16,
    pub token: String,
    pub upstream: Upstream,
    pub clients: ClientRegistry,
    pub audit: AuditLog,
    pub connections: ConnectionRegistry,
    pub source: Arc<MapSource>,
    /// The proxy's state (for its `login_needed` signal).
    pub state: ProxyState,
    requests: Arc<Mutex<Vec<(String, String)>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

pub fn header_injection(credential: &str, name: &str, prefix: &str) -> Injection {
    Injection {
        credential: credential.to_owned(),
        target: InjectTarget::header(name, prefix).expect("valid header"),
    }
}

pub fn query_injection(credential: &str, param: &str) -> Injection {
    Injection {
        credential: credential.to_owned(),
        target: InjectTarget::Query {
            param: param.to_owned(),
        },
    }
}

/// The harness's standard routes, all to the double under `/base/`.
pub fn standard_routes(upstream: &str) -> Vec<Route> {
    let base = Url::parse(&format!("{upstream}/base/")).expect("upstream URL");
    vec![
        Route::new(
            "demo",
            base.clone(),
            vec![
                header_injection("api_key", "X-API-Key", ""),
                query_injection("query_token", "token"),
            ],
        )
        .expect("demo route"),
        Route::new(
            "bearer",
            base.clone(),
            vec![header_injection("token", "Authorization", "Bearer ")],
        )
        .expect("bearer route"),
        Route::new(
            "broken",
            base.clone(),
            vec![header_injection("api_key", "X-API-Key", "")],
        )
        .expect("broken route"),
        Route::new("other", base, vec![]).expect("other route"),
    ]
}

impl Proxy {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        Self::start_in_front_of(Upstream::start().await, options).await
    }

    pub async fn start_in_front_of(upstream: Upstream, options: Options) -> Self {
        capture_logs();
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::open(&dir.path().join("latchkey.db")).expect("database");
        let clients = ClientRegistry::open(&db).expect("client registry");
        let audit = AuditLog::open(&db, Retention::default()).expect("audit log");
        let connections = ConnectionRegistry::default();

        let listeners = latchkey_proxy::bind_loopback(0).expect("bind proxy");
        let port = listeners[0].local_addr().expect("addr").port();
        let mut services = standard_routes(&upstream.url());
        services.extend(options.extra_routes);
        let config = ProxyConfig {
            port,
            services,
            rate_limit: options.rate_limit,
            limits: options.limits,
        };
        let state = ProxyState::new(
            config,
            options.source.clone(),
            clients.clone(),
            audit.clone(),
            connections.clone(),
            options.control_token.map(Secret::new),
        )
        .expect("valid proxy config");
        let state = match options.control {
            Some(control) => state.with_control(control),
            None => state,
        };

        let scoped: Vec<String> = SCOPED.iter().map(|s| (*s).to_owned()).collect();
        let token = new_client(&clients, "tester", &scoped);
        let (stop, stopped) = oneshot::channel::<()>();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let task = if options.record_requests {
            let log = requests.clone();
            let app = latchkey_proxy::router(state.clone()).layer(axum::middleware::from_fn(
                move |req: Request, next: axum::middleware::Next| {
                    log.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((req.method().to_string(), req.uri().path().to_owned()));
                    next.run(req)
                },
            ));
            // The product's own server around the recording router (axum's plain server handles
            // refused bodies differently, so a test through it would not test the proxy).
            tokio::spawn(latchkey_proxy::serve_router(
                listeners,
                state.clone(),
                app,
                async {
                    let _ = stopped.await;
                },
            ))
        } else {
            tokio::spawn(latchkey_proxy::serve(listeners, state.clone(), async {
                let _ = stopped.await;
            }))
        };
        Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            token,
            upstream,
            clients,
            audit,
            connections,
            source: options.source,
            state,
            requests,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Stops the proxy and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let served = tokio::time::timeout(Duration::from_secs(10), task).await;
            assert!(
                matches!(served, Ok(Ok(Ok(())))),
                "the proxy stops cleanly: {served:?}"
            );
        }
    }

    /// Method and path of every request received so far (with `Options::record_requests`).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A client with the harness's default scopes.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client()
            .get(format!("{}{path}", self.url))
            .header("x-latchkey-client", &self.token)
    }
}

/// Registers a client and returns its token.
pub fn new_client(clients: &ClientRegistry, name: &str, services: &[String]) -> String {
    let name = ClientName::parse(name).expect("client name");
    let (_, token) = clients.add(&name, services).expect("client added");
    token.expose().to_owned()
}

/// Registers a client that may also read raw credentials and returns its token.
pub fn new_raw_client(clients: &ClientRegistry, name: &str, services: &[String]) -> String {
    let name = ClientName::parse(name).expect("client name");
    let mut options = ClientOptions::default();
    options.allow_raw_credentials = true;
    let (_, token) = clients
        .add_with(&name, services, &options)
        .expect("client added");
    token.expose().to_owned()
}

/// Reads an error body and returns its `error` code.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a message for a person: {body}"
    );
    body["error"].as_str().unwrap_or_default().to_owned()
}

/// A raw HTTP/1.1 exchange (for requests reqwest will not send: foreign Host, absolute-form).
/// Returns the status and the body.
pub async fn raw_request(port: u16, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    status_and_body(&buf)
}

/// The status and the body of a raw HTTP/1.1 answer (status 0 when there is none).
pub fn status_and_body(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Collects a streamed response body's SSE events as they arrive: (arrival µs, data).
pub async fn read_events(response: reqwest::Response, max: usize) -> Vec<(u64, String)> {
    let mut events = Vec::new();
    let mut pending = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        let arrived = now_us();
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or_default()
                .to_owned();
            events.push((arrived, data));
            if events.len() >= max {
                return events;
            }
        }
    }
    events
}

/// Polls `condition` until it holds or `deadline` passes; true when it held.
pub async fn eventually(deadline: Duration, condition: impl Fn() -> bool) -> bool {
    let give_up = tokio::time::Instant::now() + deadline;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= give_up {
            return false;
        }
        tick.tick().await;
    }
}

/// Polls an async `condition` every few milliseconds for up to five seconds.
pub async fn eventually_async<F, Fut>(condition: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= give_up {
            return false;
        }
        tick.tick().await;
    }
}

/// Reads one response (head and a `Content-Length` body); returns the lowercased head and the body.
pub async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "the connection closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length");
    while buf.len() < head_end + length {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("the body in time")
            .expect("read");
        assert!(n > 0, "the connection closed inside the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    (head, body)
}

/// Reads until the server closes `stream` (or `deadline` passes); true when it closed.
pub async fn closed_by_server(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A client's WebSocket through the proxy.
pub type Tunnel = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket tunnel through `proxy` (with its client token) to the upstream's echo;
/// the handshake must be answered `101` within 10 s.
pub async fn open_tunnel(proxy: &Proxy) -> Tunnel {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{}/demo/ws", proxy.port)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "x-latchkey-client",
        proxy.token.parse().expect("header value"),
    );
    let (socket, response) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    assert_eq!(response.status(), 101);
    socket
}
