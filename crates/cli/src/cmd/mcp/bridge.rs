//! The client side of MCP Streamable HTTP behind `latchkey mcp-stdio`: newline-delimited JSON-RPC
//! from the host on stdin is POSTed to the proxy, and everything the server sends (answers,
//! request-scoped streams, the standalone `GET` stream, server-to-client requests) comes back on
//! stdout through one writer. Streams that break are resumed with `Last-Event-ID`; the session is
//! ended with `DELETE` when the host goes away.
//!
//! It speaks both transport eras. Servers negotiating `2025-03-26`..`2025-11-25` use sessions,
//! the `GET` stream, server-to-client requests on any stream and resumability. From revision
//! `2026-07-28` on there is none of that: the version travels in each request's `_meta` (mirrored
//! into `MCP-Protocol-Version`, with `Mcp-Method` and `Mcp-Name`), the server never sends a
//! session id, and a request is cancelled by closing its stream instead of posting
//! `notifications/cancelled`. Not done: mirroring `x-mcp-header` tool parameters into
//! `Mcp-Param-*` headers (it needs the tools' schemas from `tools/list`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use latchkey_core::Code;
use latchkey_core::secret::Secret;

use super::sse;

const SESSION: &str = "mcp-session-id";
const PROTOCOL: &str = "mcp-protocol-version";
const LAST_EVENT_ID: &str = "last-event-id";
const CLIENT: &str = "x-latchkey-client";
/// Where a request's protocol version sits from revision 2026-07-28 on (no `initialize`).
const META_PROTOCOL: &str = "io.modelcontextprotocol/protocolVersion";
/// The first revision without sessions, `GET` stream or resumability, where closing a request's
/// stream cancels it.
const STATELESS_REVISION: &str = "2026-07-28";
/// How many event ids per stream are remembered to drop a replayed duplicate.
const SEEN_IDS: usize = 4096;
/// The most of an error body the bridge reads.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Mints a fresh client token when the proxy no longer accepts the current one.
pub trait Mint: Send + Sync + 'static {
    /// A new short-lived token for the bridge's client.
    fn mint(&self) -> impl Future<Output = anyhow::Result<Secret>> + Send;
}

/// Timing and limits of the bridge.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long requests still in flight may finish once stdin closes or SIGTERM arrives.
    pub drain: Duration,
    /// Reconnections tried in a row, without receiving an event, before a stream is given up.
    pub reconnect_attempts: u32,
    /// The first reconnection delay when the server sent no `retry:`.
    pub first_delay: Duration,
    /// The longest reconnection delay.
    pub max_delay: Duration,
    /// Time limit for answers that should come at once: a notification's or response's `202`,
    /// the headers of a `GET` stream, the final `DELETE`.
    pub quick_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            drain: Duration::from_secs(10),
            reconnect_attempts: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            quick_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a message from the host got no answer from the server.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("Latchkey's proxy does not answer ({0}); is Latchkey still running?")]
    Unreachable(String),
    #[error("the proxy did not answer in time")]
    Timeout,
    #[error(
        "the MCP server ended the session (HTTP 404); restart this server in your MCP host to start a new session"
    )]
    SessionExpired,
    #[error("{0}")]
    JsonRpc(String),
    /// Latchkey's own `{error, message}` answer; the code is relayed to the host as the proxy
    /// wrote it (a newer proxy's code included).
    #[error("{message}")]
    Latchkey { code: String, message: String },
    #[error("the MCP server answered HTTP {0}")]
    Status(StatusCode),
    #[error(
        "the answer's stream ended before the answer and could not be resumed; try the request again"
    )]
    StreamEnded,
    #[error("could not get a new client token from Latchkey: {0}")]
    Mint(String),
}

impl Failure {
    /// The JSON-RPC error answer the host gets for request `id`.
    fn answer(&self, id: &Value) -> Value {
        if let Self::JsonRpc(body) = self
            && let Ok(mut v) = serde_json::from_str::<Value>(body)
        {
            // Forwarded as the proxy or server wrote it; only a missing id is filled in, so the
            // host can match the error to its request.
            if v.get("id").is_none_or(Value::is_null) {
                v["id"] = id.clone();
            }
            return v;
        }
        let (code, data) = match self {
            Self::SessionExpired => (-32001, json!({ "latchkey": Code::SessionExpired })),
            Self::Latchkey { code, .. } => (-32000, json!({ "latchkey": code })),
            Self::Status(status) => (-32000, json!({ "http_status": status.as_u16() })),
            _ => (-32000, Value::Null),
        };
        let mut error = json!({ "code": code, "message": format!("Latchkey: {self}") });
        if !data.is_null() {
            error["data"] = data;
        }
        json!({ "jsonrpc": "2.0", "id": id, "error": error })
    }
}

/// The last event ids of one stream, to resume it and to drop what a replay sends twice.
#[derive(Default)]
struct Cursor {
    last_id: Option<String>,
    retry: Option<Duration>,
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Cursor {
    /// Records an event id; false when it was already seen (a replayed duplicate).
    fn note(&mut self, id: &str) -> bool {
        if id.is_empty() {
            self.last_id = None;
            return true;
        }
        if !self.seen.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        if self.order.len() > SEEN_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.last_id = Some(id.to_owned());
        true
    }
}

/// What reading one SSE response yielded.
#[derive(Default)]
struct Pumped {
    answered: bool,
    events: usize,
}

/// A JSON-RPC message from the host, classified.
enum Kind {
    Request { id: Value, method: String },
    Notification { method: String },
    Response,
    Other,
}

fn classify(message: &Value) -> Kind {
    let method = message.get("method").and_then(Value::as_str);
    let id = message.get("id");
    match (method, id) {
        (Some(method), Some(id)) => Kind::Request {
            id: id.clone(),
            method: method.to_owned(),
        },
        (Some(method), None) => Kind::Notification {
            method: method.to_owned(),
        },
        (None, Some(_)) if message.get("result").is_some() || message.get("error").is_some() => {
            Kind::Response
        }
        _ => Kind::Other,
    }
}

/// A request id as a set key (JSON-RPC ids are strings or numbers).
fn key(id: &Value) -> String {
    id.to_string()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The Streamable HTTP client shared by the bridge's tasks.
struct Bridge<M> {
    url: String,
    http: reqwest::Client,
    mint: M,
    settings: Settings,
    token: Mutex<Secret>,
    session: Mutex<Option<String>>,
    protocol: Mutex<Option<String>>,
    initialize: Mutex<Option<String>>,
    expired: AtomicBool,
    /// Ids of the host's requests still waiting for their answer.
    pending: Mutex<HashSet<String>>,
    out: mpsc::Sender<String>,
}

/// Where the bridge forwards to, and how.
pub struct Endpoint {
    /// The MCP endpoint behind the proxy, `http://127.0.0.1:<port>/<service>/<path>`.
    pub url: String,
    /// The HTTP client (no redirects, no system proxy).
    pub http: reqwest::Client,
    /// Timing and limits.
    pub settings: Settings,
}

/// Runs the bridge until `lines` ends (stdin closed) or `shutdown` resolves, then finishes the
/// requests in flight (bounded by [`Settings::drain`]) and ends the session with `DELETE`.
/// Every message for the host goes to `stdout` through one writer, one line each.
pub async fn run<M: Mint>(
    endpoint: Endpoint,
    mint: M,
    token: Secret,
    mut lines: mpsc::Receiver<String>,
    stdout: impl AsyncWrite + Unpin + Send + 'static,
    shutdown: impl Future<Output = ()>,
) {
    let (out, out_rx) = mpsc::channel::<String>(256);
    let writer = tokio::spawn(write_lines(out_rx, stdout));
    let bridge = Arc::new(Bridge {
        url: endpoint.url,
        http: endpoint.http,
        mint,
        settings: endpoint.settings,
        token: Mutex::new(token),
        session: Mutex::new(None),
        protocol: Mutex::new(None),
        initialize: Mutex::new(None),
        expired: AtomicBool::new(false),
        pending: Mutex::new(HashSet::new()),
        out,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut requests = JoinSet::new();
    // Requests in flight whose era cancels by closing the stream (2026-07-28 on), by id.
    let mut closable: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let mut listener: Option<tokio::task::JoinHandle<()>> = None;
    tokio::pin!(shutdown);
    loop {
        let line = tokio::select! {
            line = lines.recv() => line,
            () = &mut shutdown => {
                tracing::info!("signal received, ending the bridge");
                None
            }
        };
        let Some(line) = line else { break };
        while let Some(finished) = requests.try_join_next() {
            if let Ok(done) = finished {
                closable.remove(&done);
            }
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let message: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "the host sent a line that is not JSON");
                let reply = json!({ "jsonrpc": "2.0", "id": null,
                    "error": { "code": -32700, "message": format!("Latchkey: not JSON: {e}") } });
                let _ = bridge.out.send(reply.to_string()).await;
                continue;
            }
        };
        match classify(&message) {
            Kind::Request { id, method } if method == "initialize" => {
                // A new session starts: the initialize exchange must finish before anything
                // else, it yields the session id and the protocol version.
                *lock(&bridge.session) = None;
                *lock(&bridge.protocol) = None;
                bridge.expired.store(false, Ordering::Relaxed);
                *lock(&bridge.initialize) = Some(key(&id));
                bridge.request(text.to_owned(), &message, id, &method).await;
            }
            Kind::Request { id, method } => {
                let done = key(&id);
                let streamed_cancel = bridge.cancels_by_closing(&message);
                let task = {
                    let bridge = bridge.clone();
                    let text = text.to_owned();
                    let done = done.clone();
                    requests.spawn(async move {
                        bridge.request(text, &message, id, &method).await;
                        done
                    })
                };
                if streamed_cancel {
                    closable.insert(done, task);
                }
            }
            Kind::Notification { method }
                if method == "notifications/cancelled"
                    && message["params"]
                        .get("requestId")
                        .is_some_and(|id| closable.contains_key(&key(id))) =>
            {
                // From revision 2026-07-28 on, closing the request's stream is the cancellation;
                // no notification goes to the server.
                if let Some(task) = message["params"]
                    .get("requestId")
                    .and_then(|id| closable.remove(&key(id)))
                {
                    task.abort();
                }
                if let Some(id) = message["params"].get("requestId") {
                    lock(&bridge.pending).remove(&key(id));
                }
                tracing::debug!("request cancelled by closing its stream");
            }
            Kind::Notification { method } => {
                let delivered = bridge.deliver(text, &message, Some(&method)).await;
                if delivered && method == "notifications/initialized" && listener.is_none() {
                    let bridge = bridge.clone();
                    let stop = stop_rx.clone();
                    listener = Some(tokio::spawn(async move { bridge.listen(stop).await }));
                }
            }
            Kind::Response | Kind::Other => {
                bridge.deliver(text, &message, None).await;
            }
        }
    }

    let drained = tokio::time::timeout(bridge.settings.drain, async {
        while requests.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = requests.len(),
            "requests still open when the bridge ended"
        );
        requests.shutdown().await;
    }
    let _ = stop_tx.send(true);
    if let Some(listener) = listener {
        let _ = listener.await;
    }
    bridge.end_session().await;
    drop(bridge);
    let _ = writer.await;
}

/// The one writer of stdout: a line per message, flushed, never interleaved.
async fn write_lines(mut rx: mpsc::Receiver<String>, mut stdout: impl AsyncWrite + Unpin) {
    while let Some(line) = rx.recv().await {
        let written = async {
            stdout.write_all(line.as_bytes()).await?;
            stdout.write_all(b"\n").await?;
            stdout.flush().await
        }
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "stdout closed; dropping messages for the host");
            while rx.recv().await.is_some() {}
            return;
        }
    }
}

impl<M: Mint> Bridge<M> {
    /// True when `request` is cancelled by closing its stream: its era (its own `_meta`
    /// version, else the negotiated one) is 2026-07-28 or later (versions are dates).
    fn cancels_by_closing(&self, request: &Value) -> bool {
        let own = request["params"]["_meta"][META_PROTOCOL].as_str();
        let version = own
            .map(str::to_owned)
            .or_else(|| lock(&self.protocol).clone());
        version.is_some_and(|v| v.as_str() >= STATELESS_REVISION)
    }

    /// Forwards a request and writes its answer (or a JSON-RPC error) for the host.
    async fn request(&self, text: String, message: &Value, id: Value, method: &str) {
        lock(&self.pending).insert(key(&id));
        let result = self.exchange(&text, message, &id, method).await;
        if let Err(failure) = result {
            if matches!(failure, Failure::SessionExpired) {
                self.note_expired();
            } else {
                tracing::warn!(method, error = %failure, "request failed");
            }
            if lock(&self.pending).remove(&key(&id)) {
                let _ = self.out.send(failure.answer(&id).to_string()).await;
            }
        }
        lock(&self.pending).remove(&key(&id));
    }

    async fn exchange(
        &self,
        text: &str,
        message: &Value,
        id: &Value,
        method: &str,
    ) -> Result<(), Failure> {
        let sent_session = lock(&self.session).is_some();
        let response = self
            .send(|token| self.post(token, text, message, Some(method)))
            .await?;
        self.take_session(&response);
        let status = response.status();
        if !status.is_success() {
            return Err(refusal(status, response, sent_session).await);
        }
        if is_event_stream(&response) {
            return self.follow(response, id).await;
        }
        let body = response
            .text()
            .await
            .map_err(|e| Failure::Unreachable(describe(e)))?;
        if body.trim().is_empty() {
            return Err(Failure::Status(status));
        }
        self.emit_data(&body).await;
        if lock(&self.pending).contains(&key(id)) {
            // A JSON answer that is not this request's answer.
            return Err(Failure::Status(status));
        }
        Ok(())
    }

    /// POSTs a notification or a response (an answer to a server-to-client request); the
    /// server accepts it with `202`. True when it was accepted.
    async fn deliver(&self, text: &str, message: &Value, method: Option<&str>) -> bool {
        let sent_session = lock(&self.session).is_some();
        let quick = self.settings.quick_timeout;
        let sent = tokio::time::timeout(quick, async {
            let response = self
                .send(|token| self.post(token, text, message, method))
                .await?;
            self.take_session(&response);
            let status = response.status();
            if !status.is_success() {
                return Err(refusal(status, response, sent_session).await);
            }
            Ok(())
        })
        .await
        .unwrap_or(Err(Failure::Timeout));
        match sent {
            Ok(()) => true,
            Err(Failure::SessionExpired) => {
                self.note_expired();
                false
            }
            Err(failure) => {
                tracing::warn!(method = method.unwrap_or("(response)"), error = %failure,
                    "the server did not accept a message from the host");
                false
            }
        }
    }

    fn post(
        &self,
        token: &Secret,
        text: &str,
        message: &Value,
        method: Option<&str>,
    ) -> RequestBuilder {
        let mut request = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(text.to_owned());
        let own_version = message["params"]["_meta"][META_PROTOCOL].as_str();
        request = self.common(request, token, own_version);
        if let Some(method) = method {
            // Request metadata headers (revision 2026-07-28); older servers ignore them.
            request = request.header("mcp-method", header_value(method));
            let name = match method {
                "tools/call" | "prompts/get" => message["params"]["name"].as_str(),
                "resources/read" => message["params"]["uri"].as_str(),
                _ => None,
            };
            if let Some(name) = name {
                request = request.header("mcp-name", header_value(name));
            }
        }
        request
    }

    /// Token, session id and protocol version: on every request after `initialize`.
    fn common(
        &self,
        mut request: RequestBuilder,
        token: &Secret,
        version: Option<&str>,
    ) -> RequestBuilder {
        request = request.header(CLIENT, token.expose());
        if let Some(session) = lock(&self.session).as_deref() {
            request = request.header(SESSION, session);
        }
        let negotiated = lock(&self.protocol).clone();
        if let Some(version) = version.map(str::to_owned).or(negotiated) {
            request = request.header(PROTOCOL, version);
        }
        request
    }

    /// Sends a request with the current token; when the proxy answers `401
    /// client_unauthorized`, mints a new token once and sends it again.
    async fn send(&self, build: impl Fn(&Secret) -> RequestBuilder) -> Result<Response, Failure> {
        let mut reminted = false;
        loop {
            let token = lock(&self.token).clone();
            let response = build(&token)
                .send()
                .await
                .map_err(|e| Failure::Unreachable(describe(e)))?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let body = read_capped(response).await;
            let ours = serde_json::from_str::<Value>(&body).is_ok_and(|v| {
                v["error"].as_str().map(Code::parse) == Some(Code::ClientUnauthorized)
            });
            if !ours || reminted {
                return Err(refusal_of(StatusCode::UNAUTHORIZED, &body, false));
            }
            reminted = true;
            // Another task may have replaced the token meanwhile: use that one first.
            if lock(&self.token).ct_eq(&token) {
                tracing::info!("the proxy no longer accepts the bridge's token, minting a new one");
                let fresh = self
                    .mint
                    .mint()
                    .await
                    .map_err(|e| Failure::Mint(format!("{e:#}")))?;
                *lock(&self.token) = fresh;
            }
        }
    }

    fn take_session(&self, response: &Response) {
        if let Some(id) = response
            .headers()
            .get(SESSION)
            .and_then(|v| v.to_str().ok())
        {
            let mut session = lock(&self.session);
            if session.as_deref() != Some(id) {
                tracing::debug!("session started");
                *session = Some(id.to_owned());
            }
        }
    }

    fn note_expired(&self) {
        if !self.expired.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the MCP server ended the session (HTTP 404); the host gets an error for each request until it reconnects"
            );
        }
    }

    /// Reads a request's SSE answer; when the stream breaks before the answer, resumes it with
    /// `GET` and `Last-Event-ID`.
    async fn follow(&self, response: Response, id: &Value) -> Result<(), Failure> {
        let mut cursor = Cursor::default();
        let mut current = Some(response);
        let mut attempts = 0;
        loop {
            if let Some(response) = current.take() {
                let pumped = self.pump(response, &mut cursor, Some(id), None).await;
                if pumped.answered || !lock(&self.pending).contains(&key(id)) {
                    return Ok(());
                }
                if pumped.events > 0 {
                    attempts = 0;
                }
            }
            let Some(last) = cursor.last_id.clone() else {
                return Err(Failure::StreamEnded);
            };
            if attempts >= self.settings.reconnect_attempts {
                return Err(Failure::StreamEnded);
            }
            tokio::time::sleep(self.delay(cursor.retry, attempts)).await;
            attempts += 1;
            tracing::debug!(attempt = attempts, "resuming a request's stream");
            match self.open_stream(Some(&last)).await {
                Ok(Some(response)) => current = Some(response),
                Ok(None) => return Err(Failure::StreamEnded),
                Err(Failure::SessionExpired) => return Err(Failure::SessionExpired),
                Err(failure) => tracing::warn!(error = %failure, "resuming a stream failed"),
            }
        }
    }

    /// The standalone `GET` stream: server notifications and requests outside any request,
    /// reopened (with `Last-Event-ID`) when it breaks, until `stop`.
    async fn listen(&self, mut stop: watch::Receiver<bool>) {
        let mut cursor = Cursor::default();
        let mut attempts = 0;
        let mut first = true;
        while !*stop.borrow() {
            if !first {
                if attempts >= self.settings.reconnect_attempts {
                    tracing::warn!("the server's event stream keeps failing; no longer listening");
                    return;
                }
                let delay = self.delay(cursor.retry, attempts);
                attempts += 1;
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
            first = false;
            let opened = tokio::select! {
                opened = self.open_stream(cursor.last_id.as_deref()) => opened,
                _ = stop.changed() => return,
            };
            match opened {
                Ok(Some(response)) => {
                    tracing::debug!("listening to the server's event stream");
                    let pumped = self
                        .pump(response, &mut cursor, None, Some(&mut stop))
                        .await;
                    if pumped.events > 0 {
                        attempts = 0;
                    }
                }
                Ok(None) => {
                    tracing::debug!("the server offers no event stream (405)");
                    return;
                }
                Err(Failure::SessionExpired) => {
                    self.note_expired();
                    return;
                }
                Err(failure) => tracing::warn!(error = %failure, "opening the event stream failed"),
            }
        }
    }

    /// `GET` an event stream; `Ok(None)` when the server offers none (`405`).
    async fn open_stream(&self, last_id: Option<&str>) -> Result<Option<Response>, Failure> {
        let sent_session = lock(&self.session).is_some();
        let quick = self.settings.quick_timeout;
        let response = tokio::time::timeout(
            quick,
            self.send(|token| {
                let mut request = self.http.get(&self.url).header(ACCEPT, "text/event-stream");
                request = self.common(request, token, None);
                if let Some(id) = last_id {
                    request = request.header(LAST_EVENT_ID, id);
                }
                request
            }),
        )
        .await
        .map_err(|_| Failure::Timeout)??;
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(refusal(status, response, sent_session).await);
        }
        if !is_event_stream(&response) {
            return Err(Failure::Status(status));
        }
        Ok(Some(response))
    }

    /// Reads one SSE response to its end (or to `want`'s answer, or to `stop`), forwarding every
    /// message once.
    async fn pump(
        &self,
        response: Response,
        cursor: &mut Cursor,
        want: Option<&Value>,
        mut stop: Option<&mut watch::Receiver<bool>>,
    ) -> Pumped {
        let mut parser = sse::Parser::new();
        let mut body = response.bytes_stream();
        let mut pumped = Pumped::default();
        let want = want.map(key);
        loop {
            let chunk = match stop.as_deref_mut() {
                Some(stop) => tokio::select! {
                    chunk = body.next() => chunk,
                    _ = stop.changed() => None,
                },
                None => body.next().await,
            };
            let chunk = match chunk {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    tracing::debug!(error = %e.without_url(), "event stream broke");
                    break;
                }
                None => break,
            };
            let events = match parser.feed(&chunk) {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping the event stream");
                    break;
                }
            };
            if let Some(retry) = parser.retry() {
                cursor.retry = Some(retry);
            }
            for event in events {
                if let Some(id) = &event.id
                    && !cursor.note(id)
                {
                    tracing::debug!("dropped an event the server sent twice");
                    continue;
                }
                pumped.events += 1;
                if event.event.as_deref().is_some_and(|e| e != "message") {
                    continue;
                }
                let Some(data) = event.data else { continue };
                if data.trim().is_empty() {
                    continue; // a priming event: only its id matters
                }
                let answered = self.emit_data(&data).await;
                if let Some(want) = &want
                    && answered.contains(want)
                {
                    pumped.answered = true;
                }
            }
            if pumped.answered {
                break;
            }
        }
        pumped
    }

    /// Forwards the JSON-RPC message(s) in `data` to the host; returns the ids of the host's
    /// requests it answered. Answers to requests already answered are dropped.
    async fn emit_data(&self, data: &str) -> Vec<String> {
        let value: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "the server sent something that is not JSON");
                return Vec::new();
            }
        };
        let messages = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        let mut answered = Vec::new();
        for message in messages {
            if message.get("jsonrpc").is_none() {
                tracing::debug!("dropped a server event that is not a JSON-RPC message");
                continue;
            }
            let is_answer = message.get("method").is_none()
                && (message.get("result").is_some() || message.get("error").is_some());
            if is_answer {
                let Some(id) = message.get("id").map(key) else {
                    continue;
                };
                if !lock(&self.pending).remove(&id) {
                    tracing::debug!("dropped an answer the host already has");
                    continue;
                }
                if lock(&self.initialize).as_deref() == Some(id.as_str())
                    && let Some(version) = message["result"]["protocolVersion"].as_str()
                {
                    *lock(&self.protocol) = Some(version.to_owned());
                }
                answered.push(id);
            }
            if self.out.send(message.to_string()).await.is_err() {
                break;
            }
        }
        answered
    }

    fn delay(&self, retry: Option<Duration>, attempts: u32) -> Duration {
        let base = retry.unwrap_or(self.settings.first_delay);
        let factor = 1.5_f64.powi(i32::try_from(attempts).unwrap_or(i32::MAX));
        base.mul_f64(factor).min(self.settings.max_delay)
    }

    /// `DELETE`s the session, telling the server the host is gone (`405` is fine).
    async fn end_session(&self) {
        if self.expired.load(Ordering::Relaxed) || lock(&self.session).is_none() {
            return;
        }
        let deleted = tokio::time::timeout(
            self.settings.quick_timeout,
            self.send(|token| self.common(self.http.delete(&self.url), token, None)),
        )
        .await;
        match deleted {
            Ok(Ok(response)) => {
                tracing::debug!(status = response.status().as_u16(), "session ended");
            }
            Ok(Err(failure)) => tracing::warn!(error = %failure, "ending the session failed"),
            Err(_) => tracing::warn!("ending the session timed out"),
        }
    }
}

/// A transport error with its causes (`error sending request: … connection refused`), without
/// the URL.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

async fn read_capped(response: Response) -> String {
    let mut body = response.bytes_stream();
    let mut bytes = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_ERROR_BODY {
            bytes.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn refusal(status: StatusCode, response: Response, sent_session: bool) -> Failure {
    let body = read_capped(response).await;
    refusal_of(status, &body, sent_session)
}

/// What a non-success answer means for the host.
fn refusal_of(status: StatusCode, body: &str, sent_session: bool) -> Failure {
    let parsed = serde_json::from_str::<Value>(body).ok();
    let latchkey = parsed.as_ref().and_then(|v| {
        Some((
            v.get("error")?.as_str()?.to_owned(),
            v.get("message")?.as_str()?.to_owned(),
        ))
    });
    if let Some((code, message)) = latchkey {
        return Failure::Latchkey { code, message };
    }
    if status == StatusCode::NOT_FOUND && sent_session {
        return Failure::SessionExpired;
    }
    if let Some(v) = &parsed
        && v.get("jsonrpc").is_some()
        && v.get("error").is_some_and(Value::is_object)
    {
        return Failure::JsonRpc(v.to_string());
    }
    Failure::Status(status)
}

/// A header value as revision 2026-07-28 encodes it: plain when it is visible ASCII without
/// surrounding spaces, else `=?base64?…?=`.
fn header_value(value: &str) -> String {
    let plain = !value.is_empty()
        && value.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && value.trim() == value
        && !(value.starts_with("=?base64?") && value.ends_with("?="));
    if plain {
        value.to_owned()
    } else {
        format!("=?base64?{}?=", base64(value.as_bytes()))
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "bridge_tests.rs"]
mod wire_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_plain_or_base64_as_the_spec_says() {
        assert_eq!(header_value("get_weather"), "get_weather");
        assert_eq!(
            header_value("Hello, 世界"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(header_value(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(header_value("line1\nline2"), "=?base64?bGluZTEKbGluZTI=?=");
        assert_eq!(
            header_value("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
    }

    #[test]
    fn latchkeys_own_error_becomes_a_jsonrpc_error_with_its_message() {
        let failure = refusal_of(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"gateway_unavailable","message":"The Auth Gateway does not answer."}"#,
            true,
        );
        let answer = failure.answer(&json!(7));
        assert_eq!(answer["id"], 7);
        assert_eq!(answer["error"]["code"], -32000);
        assert_eq!(
            answer["error"]["message"],
            "Latchkey: The Auth Gateway does not answer."
        );
        assert_eq!(answer["error"]["data"]["latchkey"], "gateway_unavailable");
    }

    #[test]
    fn a_jsonrpc_error_body_is_forwarded_as_is() {
        let body = r#"{"jsonrpc":"2.0","id":"a","error":{"code":-32003,"message":"log in","data":{"error":"login_required"}}}"#;
        let answer = refusal_of(StatusCode::FORBIDDEN, body, true).answer(&json!("a"));
        assert_eq!(answer, serde_json::from_str::<Value>(body).expect("json"));
    }

    #[test]
    fn a_jsonrpc_error_without_id_gets_the_requests_id() {
        let body = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Bad Request"}}"#;
        let answer = refusal_of(StatusCode::BAD_REQUEST, body, true).answer(&json!(3));
        assert_eq!(answer["id"], 3);
        assert_eq!(answer["error"]["message"], "Bad Request");
    }

    #[test]
    fn not_found_with_a_session_means_the_session_expired() {
        let failure = refusal_of(StatusCode::NOT_FOUND, "", true);
        assert!(matches!(failure, Failure::SessionExpired));
        let answer = failure.answer(&json!(1));
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("ended the session")),
            "{answer}"
        );
        assert!(matches!(
            refusal_of(StatusCode::NOT_FOUND, "", false),
            Failure::Status(StatusCode::NOT_FOUND)
        ));
        // Latchkey's own 404 (an unknown service) is not a session ending.
        assert!(matches!(
            refusal_of(
                StatusCode::NOT_FOUND,
                r#"{"error":"unknown_service","message":"No service x."}"#,
                true
            ),
            Failure::Latchkey { .. }
        ));
    }

    #[test]
    fn a_cursor_drops_ids_it_has_seen_and_remembers_the_last() {
        let mut cursor = Cursor::default();
        assert!(cursor.note("1"));
        assert!(cursor.note("2"));
        assert!(!cursor.note("1"));
        assert_eq!(cursor.last_id.as_deref(), Some("2"));
        assert!(cursor.note(""));
        assert_eq!(cursor.last_id, None, "an empty id resets the cursor");
    }

    #[test]
    fn host_messages_are_told_apart() {
        assert!(matches!(
            classify(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})),
            Kind::Request { .. }
        ));
        assert!(matches!(
            classify(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})),
            Kind::Notification { .. }
        ));
        assert!(matches!(
            classify(&json!({"jsonrpc":"2.0","id":"s1","result":{}})),
            Kind::Response
        ));
        assert!(matches!(classify(&json!([1, 2])), Kind::Other));
    }
}
