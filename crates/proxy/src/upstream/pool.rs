//! The pool of upstream connections: idle HTTP/1 connections kept per scheme and authority,
//! each driven by its own task, handed to one request at a time.
//!
//! hyper-util's pooled client did this before, and spawned a task for every request (to wait
//! for the connection to come free while the answer streams), boxed a checkout future and copied
//! the URI: 14–17 % of the CPU per request of a minimal hyper proxy, 3–5 % of Latchkey's
//! (BENCHMARKS.md, "the upstream pool"). Here the answer's body puts its connection back when it
//! has been read to its end; a body cut short or failed closes it, and after a `101` the
//! connection belongs to the upgrade.
//!
//! What it keeps of hyper-util's client:
//! - a connection carries its next request only once hyper says it is ready for one (its last
//!   exchange is over in both directions), so an answer can never reach another request than
//!   its own, whichever client sent that one;
//! - a request is sent once. When the upstream closes an idle connection just as a request is
//!   written to it (the keep-alive race), that request fails with `502` rather than being sent
//!   again: it may not be idempotent. (hyper-util resent a request only when its connection
//!   failed before writing a byte, which needs another thread to close the connection between
//!   its checkout and its write; each serving thread has a pool of its own, so it cannot
//!   happen here.) A connection hyper has seen close is never handed out;
//! - idle connections expire after `idle_timeout`, and a background task closes expired ones;
//!   at most [`MAX_IDLE_PER_HOST`] idle per host;
//! - requests go out in origin form, with the `Host` header the header policy wrote.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::Service;
use tracing::debug;

use crate::body::UploadBody;

/// Idle upstream connections kept per host.
const MAX_IDLE_PER_HOST: usize = 512;

/// Why a request did not get an answer from its upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The URI has no scheme or authority (the forwarder always sets both).
    #[error("upstream URI is not absolute")]
    NotAbsolute,
    /// Connecting (TCP, then TLS) failed.
    #[error("connecting to the upstream failed")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP/1 handshake on a new connection failed.
    #[error("HTTP handshake with the upstream failed")]
    Handshake(#[source] hyper::Error),
    /// The request was sent, or could not be, and no answer came.
    #[error("the upstream did not answer")]
    Send(#[source] hyper::Error),
}

impl UpstreamError {
    /// Whether no connection to the upstream could be opened.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

/// An upstream origin, the pool's key. Compared and hashed by its text as written, in one pass:
/// `Authority`'s own `Hash` folds the case of one byte at a time, which cost more than the rest
/// of a lookup (about 360 instructions a hash, twice or three times per request). Two spellings
/// of one host that differ in case get idle lists of their own, which costs a connection at most.
#[derive(Clone)]
struct Key {
    scheme: Scheme,
    authority: Authority,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.scheme.as_str() == other.scheme.as_str()
            && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // `str`'s hash ends each string with a marker byte, so the pair is unambiguous.
        self.scheme.as_str().hash(state);
        self.authority.as_str().hash(state);
    }
}

/// Idle connections by host. Hashed with foldhash rather than SipHash: the keys are the
/// configured upstreams, never chosen by a request, so flooding one bucket is not a concern, and
/// the key is hashed twice per request (checkout, checkin). A host's list stays in the map when
/// it empties (the sweep drops empty lists), so checkout does not hash it a third time to remove
/// it and checkin a fourth to put it back.
type IdleMap = HashMap<Key, Vec<Idle>, foldhash::fast::RandomState>;

/// A connection waiting for its next request.
struct Idle {
    sender: SendRequest<UploadBody>,
    since: Instant,
}

struct Shared {
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<IdleMap>,
    idle_timeout: Duration,
    max_idle_per_host: usize,
    /// Whether the sweeping task runs (started with the first connection, inside a runtime).
    sweeping: std::sync::atomic::AtomicBool,
}

/// The upstream client: cheap to clone, every clone sharing one pool.
#[derive(Clone)]
pub(crate) struct UpstreamClient {
    shared: Arc<Shared>,
}

impl UpstreamClient {
    pub(crate) fn new(connector: HttpsConnector<HttpConnector>, idle_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                connector,
                idle: Mutex::new(IdleMap::default()),
                idle_timeout,
                max_idle_per_host: MAX_IDLE_PER_HOST,
                sweeping: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Sends `request` (an absolute URI) on an idle connection to its host, or a new one. The
    /// future owns what it needs, so it can be polled after `self` is gone.
    pub(crate) fn request(
        &self,
        mut request: Request<UploadBody>,
    ) -> impl Future<Output = Result<Response<PooledBody>, UpstreamError>> + Send + use<> {
        let shared = Arc::clone(&self.shared);
        async move {
            let key = origin_form(request.uri_mut())?;
            let mut sender = match shared.checkout(&key) {
                Some(sender) => sender,
                // Boxed: connecting (TCP, TLS, the handshake) needs a large future, and in
                // place it made this one 2.8 KB, which each caller moved several times per
                // request. A new connection is rare; the box is paid only then.
                None => Box::pin(shared.connect(&key)).await?,
            };
            // Sent once: a connection that fails its request, before writing it or after, fails
            // it for good (a written request may not be idempotent; see the module's notes).
            match sender.send_request(request).await {
                Ok(response) => Ok(PooledBody::wrap(response, sender, &shared, key)),
                Err(e) => Err(UpstreamError::Send(e)),
            }
        }
    }

    /// How many idle connections the pool holds (tests).
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.shared.lock().values().map(Vec::len).sum()
    }

    /// How many hosts have a list in the pool, empty or not (tests).
    #[cfg(test)]
    fn host_count(&self) -> usize {
        self.shared.lock().len()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, IdleMap> {
        // Nothing panics while holding it; a poisoned map is still a valid map.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently used idle connection to `key` that is ready now. Expired and closed
    /// ones are dropped on the way; ones not yet ready (their connection task has not yet seen
    /// the last answer end) stay for a later request.
    fn checkout(&self, key: &Key) -> Option<SendRequest<UploadBody>> {
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        // Oldest first: the expired ones are a prefix.
        let now = Instant::now();
        let expired = list.partition_point(|c| now.duration_since(c.since) >= self.idle_timeout);
        list.drain(..expired);
        let mut found = None;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            if list[i].sender.is_closed() {
                list.remove(i);
            } else if list[i].sender.is_ready() {
                found = Some(list.remove(i).sender);
                break;
            }
        }
        found
    }

    fn checkin(&self, key: Key, sender: SendRequest<UploadBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        let list = idle.entry(key).or_default();
        if list.len() < self.max_idle_per_host {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Drops every expired or closed idle connection.
    fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, list| {
            list.retain(|c| {
                !c.sender.is_closed() && now.duration_since(c.since) < self.idle_timeout
            });
            !list.is_empty()
        });
    }

    async fn connect(
        self: &Arc<Self>,
        key: &Key,
    ) -> Result<SendRequest<UploadBody>, UpstreamError> {
        self.start_sweeping();
        let uri = Uri::builder()
            .scheme(key.scheme.clone())
            .authority(key.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| UpstreamError::NotAbsolute)?;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(UpstreamError::Connect)?;
        let io = connector.call(uri).await.map_err(UpstreamError::Connect)?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            // Upgrades (WebSocket) take the connection over once its 101 is read.
            if let Err(e) = connection.with_upgrades().await {
                debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Starts the task that sweeps expired connections, once, from inside a runtime. It ends
    /// with the last clone of the client.
    fn start_sweeping(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = self
            .idle_timeout
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(shared) => shared.sweep(),
                    None => return,
                }
            }
        });
    }
}

/// Leaves only the path and query in `uri` (origin form, as a request to an origin server
/// is written) and returns where it goes.
fn origin_form(uri: &mut Uri) -> Result<Key, UpstreamError> {
    let parts = std::mem::take(uri).into_parts();
    let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
        return Err(UpstreamError::NotAbsolute);
    };
    let path = parts
        .path_and_query
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *uri = Uri::from(path);
    Ok(Key { scheme, authority })
}

/// An upstream answer's body. Read to its end, it puts its connection back in the pool; dropped
/// before that, the connection closes with it.
pub(crate) struct PooledBody {
    body: Incoming,
    finished: bool,
    back: Option<(SendRequest<UploadBody>, Arc<Shared>, Key)>,
}

impl PooledBody {
    fn wrap(
        response: Response<Incoming>,
        sender: SendRequest<UploadBody>,
        shared: &Arc<Shared>,
        key: Key,
    ) -> Response<Self> {
        // After a 101 the connection belongs to the upgrade: it never returns.
        let back = (response.status() != StatusCode::SWITCHING_PROTOCOLS)
            .then(|| (sender, Arc::clone(shared), key));
        response.map(|body| Self {
            body,
            finished: false,
            back,
        })
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        // A body that failed never gets here, so its connection is not reused.
        if let Poll::Ready(None) = polled {
            self.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if (self.finished || self.body.is_end_stream())
            && let Some((sender, shared, key)) = self.back.take()
        {
            shared.checkin(key, sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body as AxumBody;
    use http_body_util::BodyExt;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::*;
    use crate::config::Limits;
    use crate::connections::ConnectionRegistry;

    /// Connections the upstream accepted, and how many of them have ended.
    #[derive(Default)]
    struct Seen {
        opened: AtomicUsize,
        ended: AtomicUsize,
        requests: AtomicUsize,
    }

    /// A hyper upstream on loopback: `/small` answers 5 bytes, `/large` 256 KiB, `/chunked` 5
    /// bytes in two chunks, `/switch` a `101`; `keep_alive` false answers with `Connection: close`.
    async fn upstream(keep_alive: bool) -> (SocketAddr, Arc<Seen>) {
        serve_upstream(keep_alive, None).await
    }

    /// [`upstream`] behind `tls` when given.
    async fn serve_upstream(
        keep_alive: bool,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> (SocketAddr, Arc<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback listener");
        let addr = listener.local_addr().expect("bound address");
        let seen = Arc::new(Seen::default());
        let counted = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counted.opened.fetch_add(1, Ordering::SeqCst);
                let (tls, counted) = (tls.clone(), Arc::clone(&counted));
                tokio::spawn(async move {
                    match tls {
                        None => answer(TokioIo::new(stream), keep_alive, &counted).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                answer(TokioIo::new(stream), keep_alive, &counted).await;
                            }
                        }
                    }
                    counted.ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (addr, seen)
    }

    /// Serves one connection of [`upstream`].
    async fn answer<I>(io: I, keep_alive: bool, counted: &Seen)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let service = service_fn(|request: Request<Incoming>| {
            counted.requests.fetch_add(1, Ordering::SeqCst);
            let response = match request.uri().path() {
                "/large" => Response::new(AxumBody::from(vec![b'x'; 256 * 1024])),
                // No length known ahead: sent chunked.
                "/chunked" => Response::new(AxumBody::from_stream(futures_util::stream::iter(
                    ["hel", "lo"].map(|part| Ok::<_, std::convert::Infallible>(Bytes::from(part))),
                ))),
                "/switch" => Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .body(AxumBody::empty())
                    .expect("static response"),
                _ => Response::new(AxumBody::from("hello")),
            };
            async { Ok::<_, std::convert::Infallible>(response) }
        });
        let _ = server::Builder::new()
            .keep_alive(keep_alive)
            .serve_connection(io, service)
            .with_upgrades()
            .await;
    }

    fn client(idle_timeout: Duration) -> UpstreamClient {
        let limits = Limits {
            idle_timeout,
            ..Limits::default()
        };
        super::super::client(&limits).expect("TLS roots load")
    }

    fn get(addr: SocketAddr, path: &str) -> Request<UploadBody> {
        get_url(&format!("http://{addr}{path}"), addr)
    }

    fn get_url(url: &str, addr: SocketAddr) -> Request<UploadBody> {
        let live = ConnectionRegistry::default().open(&"client".into(), &"service".into(), 0);
        Request::builder()
            .uri(url)
            .header("host", addr.to_string())
            .body(UploadBody::new(AxumBody::empty(), live, None))
            .expect("valid request")
    }

    async fn read(client: &UpstreamClient, addr: SocketAddr, path: &str) -> Bytes {
        let response = client.request(get(addr, path)).await.expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        response
            .into_body()
            .collect()
            .await
            .expect("whole body")
            .to_bytes()
    }

    /// A keep-alive upstream and a pool (`idle_timeout`) that has had one answer from it read
    /// to its end, its connection now idle in the pool.
    async fn one_answered(idle_timeout: Duration) -> (SocketAddr, Arc<Seen>, UpstreamClient) {
        let (addr, seen) = upstream(true).await;
        let client = client(idle_timeout);
        assert_eq!(read(&client, addr, "/small").await, "hello");
        settle().await;
        (addr, seen, client)
    }

    /// Lets the connection tasks run (they are other tasks of this runtime).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// The request future is moved into the timeout and the forwarding future, several copies
    /// per request; with the connect path in place it was 2.8 KB (656 bytes boxed, rustc 1.95).
    #[tokio::test]
    async fn the_request_future_stays_small() {
        let client = client(Duration::from_secs(90));
        let live = ConnectionRegistry::default().open(&"c".into(), &"s".into(), 0);
        let request = Request::builder()
            .uri("http://127.0.0.1:9/x")
            .body(UploadBody::new(AxumBody::empty(), live, None))
            .expect("request");
        let future = client.request(request);
        let size = std::mem::size_of_val(&future);
        assert!(size <= 1024, "the request future grew to {size} bytes");
    }

    #[tokio::test]
    async fn a_connection_read_to_its_end_carries_the_next_request() {
        let (addr, seen) = upstream(true).await;
        let client = client(Duration::from_secs(90));
        for _ in 0..3 {
            assert_eq!(read(&client, addr, "/small").await, "hello");
            assert_eq!(read(&client, addr, "/large").await.len(), 256 * 1024);
            assert_eq!(read(&client, addr, "/chunked").await, "hello");
            settle().await;
        }
        assert_eq!(
            seen.opened.load(Ordering::SeqCst),
            1,
            "one connection for nine requests, chunked answers included"
        );
        assert_eq!(client.idle_count(), 1);
    }

    #[tokio::test]
    async fn the_request_goes_out_in_origin_form_with_its_own_host() {
        let (addr, heads) = raw_upstream(1, |_| {});
        let client = client(Duration::from_secs(90));
        let mut request = get(addr, "/a/b?c=d");
        request
            .headers_mut()
            .insert("host", http::HeaderValue::from_static("upstream.example"));
        let response = client.request(request).await.expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        let head = &heads.join().expect("upstream thread")[0];
        assert!(head.starts_with("GET /a/b?c=d HTTP/1.1\r\n"), "{head}");
        assert_eq!(
            head.to_ascii_lowercase().matches("host:").count(),
            1,
            "the pool adds no Host of its own: {head}"
        );
        assert!(head.contains("host: upstream.example\r\n"), "{head}");
    }

    #[tokio::test]
    async fn an_answer_dropped_before_its_end_closes_its_connection() {
        let (addr, seen) = upstream(true).await;
        let client = client(Duration::from_secs(90));
        let response = client.request(get(addr, "/large")).await.expect("answered");
        let mut body = response.into_body();
        let first = body.frame().await.expect("a frame").expect("frame read");
        assert!(first.is_data());
        drop(body);
        settle().await;
        assert_eq!(
            client.idle_count(),
            0,
            "a half-read connection is not reused"
        );
        assert_eq!(seen.ended.load(Ordering::SeqCst), 1, "and it is closed");
        assert_eq!(read(&client, addr, "/small").await, "hello");
        assert_eq!(seen.opened.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closes_is_not_reused() {
        let (addr, seen) = upstream(false).await;
        let client = client(Duration::from_secs(90));
        for _ in 0..3 {
            assert_eq!(read(&client, addr, "/small").await, "hello");
        }
        assert_eq!(seen.opened.load(Ordering::SeqCst), 3);
        settle().await;
        assert_eq!(client.idle_count(), 0, "closed connections are dropped");
    }

    #[tokio::test]
    async fn a_switched_connection_never_returns_to_the_pool() {
        let (addr, seen) = upstream(true).await;
        let client = client(Duration::from_secs(90));
        let response = client
            .request(get(addr, "/switch"))
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert!(response.body().is_end_stream());
        drop(response);
        settle().await;
        assert_eq!(client.idle_count(), 0);
        assert_eq!(read(&client, addr, "/small").await, "hello");
        assert_eq!(seen.opened.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_expire_and_are_swept() {
        let (addr, seen, client) = one_answered(Duration::from_millis(100)).await;
        assert_eq!(client.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(read(&client, addr, "/small").await, "hello");
        assert_eq!(
            seen.opened.load(Ordering::SeqCst),
            2,
            "an expired connection is not taken"
        );
        // The sweep (every second at the least) closes the one left idle without a request.
        settle().await;
        assert_eq!(client.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        assert_eq!(client.idle_count(), 0);
        assert_eq!(seen.ended.load(Ordering::SeqCst), 2, "both are closed");
    }

    #[tokio::test]
    async fn the_sweep_keeps_fresh_connections_and_drops_closed_ones() {
        let (addr, seen, client) = one_answered(Duration::from_secs(90)).await;
        client.shared.sweep();
        assert_eq!(client.idle_count(), 1, "a fresh open connection stays");
        assert_eq!(read(&client, addr, "/small").await, "hello");
        assert_eq!(
            seen.opened.load(Ordering::SeqCst),
            1,
            "and carries the next"
        );

        // A connection the upstream closes while it waits in the pool.
        let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
        let (raw, upstream_side) = raw_upstream(1, move |_| {
            let _ = close_rx.recv();
        });
        let response = client.request(get(raw, "/one")).await.expect("answered");
        response.into_body().collect().await.expect("whole body");
        settle().await;
        assert_eq!(client.idle_count(), 2);
        close_tx.send(()).expect("upstream waits");
        upstream_side.join().expect("upstream thread");
        settle().await;
        client.shared.sweep();
        assert_eq!(
            client.idle_count(),
            1,
            "the closed one is dropped, the open one kept"
        );
    }

    #[tokio::test]
    async fn an_answer_without_a_body_returns_its_connection_unread() {
        let (addr, seen) = upstream(true).await;
        let client = client(Duration::from_secs(90));
        let mut head = get(addr, "/small");
        *head.method_mut() = http::Method::HEAD;
        let response = client.request(head).await.expect("answered");
        assert!(response.body().is_end_stream());
        drop(response);
        settle().await;
        assert_eq!(client.idle_count(), 1, "nothing was left to read");
        let response = client.request(get(addr, "/small")).await.expect("answered");
        assert_eq!(
            response.body().size_hint().exact(),
            Some(5),
            "the upstream's length is known ahead, so the client's answer can carry it"
        );
        drop(response);
        assert_eq!(seen.opened.load(Ordering::SeqCst), 1);
    }

    /// A raw HTTP/1 upstream on a thread: on each of `connections` connections it reads one
    /// request and answers `ok` with keep-alive; after the first answer it runs `then` on that
    /// connection, and it keeps every connection open until it has served the last. Joined, it
    /// hands back the request heads it read.
    fn raw_upstream(
        connections: usize,
        then: impl FnOnce(&mut std::net::TcpStream) + Send + 'static,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback listener");
        let addr = listener.local_addr().expect("bound address");
        let served = std::thread::spawn(move || {
            let mut then = Some(then);
            let mut heads = Vec::new();
            let mut kept = Vec::new();
            for _ in 0..connections {
                let (mut stream, _) = listener.accept().expect("accepted");
                let mut buf = vec![0u8; 4096];
                let n = stream.read(&mut buf).expect("request head");
                heads.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .expect("answer written");
                if let Some(then) = then.take() {
                    then(&mut stream);
                }
                kept.push(stream);
            }
            heads
        });
        (addr, served)
    }

    #[tokio::test]
    async fn an_idle_connection_that_receives_an_unasked_answer_is_closed_not_reused() {
        // A raw upstream that answers one request, then sends a second answer nobody asked for
        // while the connection waits in the pool: it must never become the next request's.
        let (unasked_tx, unasked_rx) = std::sync::mpsc::channel::<()>();
        let (addr, served) = raw_upstream(2, move |stream| {
            unasked_rx.recv().expect("told to");
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale")
                .expect("unasked answer written");
        });
        let client = client(Duration::from_secs(90));
        let first = client.request(get(addr, "/one")).await.expect("answered");
        first.into_body().collect().await.expect("whole body");
        settle().await;
        assert_eq!(client.idle_count(), 1);
        unasked_tx.send(()).expect("upstream waits");
        settle().await;
        settle().await;
        let response = client.request(get(addr, "/two")).await.expect("answered");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("whole body")
            .to_bytes();
        assert_eq!(body, "ok", "the unasked answer was not taken for this one");
        let heads = served.join().expect("upstream thread");
        assert!(
            heads[1].starts_with("GET /two "),
            "on a new connection: {heads:?}"
        );
    }

    /// [`upstream`] over TLS with a fresh self-signed certificate for `127.0.0.1`; returns its
    /// certificate too.
    async fn tls_upstream() -> (SocketAddr, CertificateDer<'static>, Arc<Seen>) {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("self-signed certificate");
        let cert = certified.cert.der().clone();
        let key =
            PrivateKeyDer::try_from(certified.signing_key.serialize_der()).expect("a PKCS#8 key");
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (addr, seen) = serve_upstream(true, Some(acceptor)).await;
        (addr, cert, seen)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The client exactly as the proxy builds it, with `cert` as its only trust root.
    fn client_trusting(cert: CertificateDer<'static>) -> UpstreamClient {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("a trust root");
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        super::super::client_with(&Limits::default(), tls)
    }

    #[tokio::test]
    async fn a_tls_upstream_is_reached_over_tls_and_its_connection_reused() {
        let (addr, cert, seen) = tls_upstream().await;
        let client = client_trusting(cert);
        for _ in 0..3 {
            let response = client
                .request(get_url(&format!("https://{addr}/small"), addr))
                .await
                .expect("answered over TLS");
            let body = response.into_body().collect().await.expect("whole body");
            assert_eq!(body.to_bytes(), "hello");
            settle().await;
        }
        assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
        assert_eq!(
            seen.opened.load(Ordering::SeqCst),
            1,
            "one TLS connection for three"
        );
    }

    /// Node's `https` server, another make of TLS upstream: it closes idle keep-alive
    /// connections after its own `keepAliveTimeout` (5 s by default, 300 ms here, plus the
    /// second Node 20 adds), well before the pool's `idle_timeout`. Reuse still works while the connection lives, and the request
    /// after Node closed it goes out on a new connection instead of failing.
    #[tokio::test]
    async fn a_node_https_upstream_that_closes_idle_connections_early_fails_no_request() {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("self-signed certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).expect("cert");
        std::fs::write(
            dir.path().join("key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .expect("key");
        // Answers each request with the client's port, so a new connection shows.
        let script = r#"
            const fs = require('fs'), https = require('https'), dir = process.argv[1];
            const server = https.createServer(
              { cert: fs.readFileSync(dir + '/cert.pem'), key: fs.readFileSync(dir + '/key.pem') },
              (req, res) => res.end(String(req.socket.remotePort)));
            server.keepAliveTimeout = 300;
            server.listen(0, '127.0.0.1', () => console.log(server.address().port));
            process.stdin.on('end', () => process.exit(0)).resume();
        "#;
        let mut node = tokio::process::Command::new("node")
            .args(["-e", script])
            .arg(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node (the sandbox's runtime) starts");
        let stdout = node.stdout.take().expect("node's stdout");
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(stdout), &mut line)
            .await
            .expect("node says its port");
        let port: u16 = line.trim().parse().expect("a port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));

        let client = client_trusting(certified.cert.der().clone());
        let ask = async || {
            let response = client
                .request(get_url(&format!("https://{addr}/port"), addr))
                .await
                .expect("Node answers");
            let body = response.into_body().collect().await.expect("whole body");
            String::from_utf8_lossy(&body.to_bytes()).into_owned()
        };
        let first = ask().await;
        settle().await;
        assert_eq!(ask().await, first, "reused while Node keeps it open");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_ne!(
            ask().await,
            first,
            "Node closed it idle; a new one carried the request"
        );
        drop(node.stdin.take());
    }

    #[tokio::test]
    async fn an_upstream_whose_certificate_no_trusted_root_signed_is_refused() {
        let (addr, _, seen) = tls_upstream().await;
        // The client the proxy uses: the platform's roots and the Mozilla roots.
        let client = client(Duration::from_secs(90));
        let Err(error) = client
            .request(get_url(&format!("https://{addr}/small"), addr))
            .await
        else {
            panic!("a self-signed upstream was trusted");
        };
        assert!(error.is_connect(), "refused while connecting: {error:?}");
        assert_eq!(
            seen.requests.load(Ordering::SeqCst),
            0,
            "no request reached it"
        );
        assert_eq!(client.idle_count(), 0, "and nothing was pooled");
    }

    #[tokio::test]
    async fn at_most_the_cap_of_idle_connections_is_kept_per_host() {
        let (addr, seen) = upstream(true).await;
        let mut client = client(Duration::from_secs(90));
        Arc::get_mut(&mut client.shared)
            .expect("the only clone")
            .max_idle_per_host = 2;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(client.request(get(addr, "/small")).await.expect("answered"));
        }
        assert_eq!(
            seen.opened.load(Ordering::SeqCst),
            3,
            "none was free to reuse"
        );
        for response in held {
            response.into_body().collect().await.expect("whole body");
        }
        settle().await;
        assert_eq!(client.idle_count(), 2);
        assert_eq!(seen.ended.load(Ordering::SeqCst), 1, "the third is closed");
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_connect_error() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback listener");
            listener.local_addr().expect("bound address")
        };
        let client = client(Duration::from_secs(90));
        let Err(error) = client.request(get(addr, "/small")).await else {
            panic!("nothing listens there");
        };
        assert!(error.is_connect(), "{error:?}");
    }

    #[tokio::test]
    async fn a_request_sent_as_the_upstream_closed_its_idle_connection_fails_once_and_is_not_resent()
     {
        // A raw upstream that answers one request with keep-alive, then closes the connection
        // when told to; the next connection answers too.
        let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel();
        let (addr, served) = raw_upstream(2, move |stream| {
            close_rx.recv().expect("told to close");
            stream.shutdown(std::net::Shutdown::Both).expect("closed");
            closed_tx.send(()).expect("test waits");
        });
        let client = client(Duration::from_secs(90));
        let response = client.request(get(addr, "/one")).await.expect("answered");
        assert_eq!(
            response
                .into_body()
                .collect()
                .await
                .expect("whole body")
                .to_bytes(),
            "ok"
        );
        settle().await;
        assert_eq!(client.idle_count(), 1);
        // The upstream closes the idle connection, and this test waits for that without
        // yielding, so the connection task cannot see the close before the next request is
        // written to it: the keep-alive race, made certain.
        close_tx.send(()).expect("upstream waits");
        closed_rx.recv().expect("upstream closed");
        let Err(error) = client.request(get(addr, "/two")).await else {
            panic!("the request went out on a closed connection");
        };
        assert!(!error.is_connect(), "{error:?}");
        // It had been written, so it is not written again (it may not be idempotent); the
        // closed connection is gone and the next request opens a new one.
        assert_eq!(client.idle_count(), 0);
        let response = client
            .request(get(addr, "/three"))
            .await
            .expect("a new connection");
        assert_eq!(
            response
                .into_body()
                .collect()
                .await
                .expect("whole body")
                .to_bytes(),
            "ok"
        );
        let heads = served.join().expect("upstream thread");
        assert!(heads[0].starts_with("GET /one "), "{heads:?}");
        assert!(heads[1].starts_with("GET /three "), "{heads:?}");
    }

    #[tokio::test]
    async fn a_hosts_emptied_list_stays_until_the_sweep() {
        let (addr, _seen, client) = one_answered(Duration::from_secs(90)).await;
        let key = Key {
            scheme: Scheme::HTTP,
            authority: addr.to_string().parse().expect("authority"),
        };
        let taken = client.shared.checkout(&key).expect("the idle connection");
        assert_eq!(client.idle_count(), 0);
        assert_eq!(
            client.host_count(),
            1,
            "the emptied list is kept for checkin"
        );
        client.shared.sweep();
        assert_eq!(client.host_count(), 0, "the sweep drops an empty list");
        client.shared.checkin(key, taken);
        assert_eq!(client.idle_count(), 1, "and checkin makes a new one");
    }

    #[test]
    fn keys_are_equal_and_hash_alike_exactly_when_their_text_is() {
        use std::hash::BuildHasher;
        let hasher = foldhash::fast::RandomState::default();
        let key = |uri: &str| {
            let mut uri: Uri = uri.parse().expect("valid URI");
            origin_form(&mut uri).expect("absolute")
        };
        let a = key("https://api.example:8443/a");
        let same = key("https://api.example:8443/other?q=1");
        // Keys have no `Debug` (nothing prints one), so compared with `==`.
        assert!(a == same);
        assert_eq!(hasher.hash_one(&a), hasher.hash_one(&same));
        for other in [
            "http://api.example:8443/a",
            "https://api.example:8444/a",
            "https://api.example/a",
            "https://api.exampl:8443/a",
            "https://API.example:8443/a",
        ] {
            assert!(a != key(other), "{other}");
        }
    }

    #[test]
    fn origin_form_keeps_the_path_and_query_and_says_where_it_goes() {
        let mut uri: Uri = "https://api.example:8443/a/b?c=d"
            .parse()
            .expect("valid URI");
        let key = origin_form(&mut uri).expect("absolute");
        assert_eq!(key.scheme, Scheme::HTTPS);
        assert_eq!(key.authority.as_str(), "api.example:8443");
        assert_eq!(uri.to_string(), "/a/b?c=d");
        let mut bare: Uri = "http://api.example".parse().expect("valid URI");
        origin_form(&mut bare).expect("absolute");
        assert_eq!(bare.to_string(), "/");
        let mut relative: Uri = "/a".parse().expect("valid URI");
        assert!(matches!(
            origin_form(&mut relative),
            Err(UpstreamError::NotAbsolute)
        ));
    }
}
