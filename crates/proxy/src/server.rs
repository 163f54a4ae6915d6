//! Binding the loopback listeners and serving HTTP/1 on them until shutdown: keep-alive, a short
//! deadline for each request head, `TCP_NODELAY`, upgrades enabled for WebSocket tunnels, a cap
//! on connections with room kept for the control token ([`crate::admission`]), and a graceful
//! stop that closes live streams rather than waiting on them forever.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use latchkey_core::secret::{Secret, ct_eq_str};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::admission::{Admission, Admitted, EVICTED, STOPPING, Slot, Tracked, TunnelEnded};
use crate::error::ProxyError;
use crate::gate::presented_token;
use crate::signal::Waiter;
use crate::state::ProxyState;

/// How long connections get to finish after shutdown is asked for.
const GRACE: Duration = Duration::from_secs(5);

/// How long an evicted connection gets to finish a request that arrived as it was chosen.
const EVICTION_GRACE: Duration = Duration::from_secs(1);

/// hyper's own default read-buffer cap; raised when the configured head limit needs more, so
/// an oversized head reaches our JSON `431` rather than hyper's bare one.
const DEFAULT_MAX_BUF: usize = 400 * 1024;

/// How many free IPv4 ports port 0 tries before giving up when another program holds each on
/// `[::1]`.
const PORT_ZERO_ATTEMPTS: usize = 16;

/// `EAFNOSUPPORT`: the machine has no IPv6 at all.
#[cfg(target_os = "linux")]
const EAFNOSUPPORT: i32 = 97;
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd"
))]
const EAFNOSUPPORT: i32 = 47;
#[cfg(windows)]
const EAFNOSUPPORT: i32 = 10047;
#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    windows
)))]
const EAFNOSUPPORT: i32 = i32::MIN;

/// Binds `127.0.0.1:port` and `[::1]` on the same port: both or none. When `[::1]:port` is taken
/// by another program this fails (kind `AddrInUse`, naming the address) like a taken IPv4 port,
/// since clients that resolve `localhost` to `::1` would hand their token to that program. Only
/// where the machine has no IPv6 loopback at all is `127.0.0.1` served alone. Port 0 picks a
/// port free on both. Never binds anything but loopback. Call it inside a Tokio runtime (the
/// listeners register with its reactor).
pub fn bind_loopback(port: u16) -> io::Result<Vec<TcpListener>> {
    bind_both(port, listen)
}

/// [`bind_loopback`] through `listen`, which the tests wrap to make `[::1]` taken or missing.
fn bind_both(
    port: u16,
    listen: impl Fn(IpAddr, u16) -> io::Result<TcpListener>,
) -> io::Result<Vec<TcpListener>> {
    let attempts = if port == 0 { PORT_ZERO_ATTEMPTS } else { 1 };
    let mut taken = None;
    for _ in 0..attempts {
        let v4 = bind_one(&listen, Ipv4Addr::LOCALHOST.into(), port)?;
        let chosen = v4.local_addr()?.port();
        match listen(Ipv6Addr::LOCALHOST.into(), chosen) {
            Ok(v6) => return Ok(vec![v4, v6]),
            Err(e) if ipv6_unavailable(&e) => {
                info!(kind = ?e.kind(), "no IPv6 loopback on this machine: serving 127.0.0.1 only");
                return Ok(vec![v4]);
            }
            Err(e) => taken = Some(named(e, Ipv6Addr::LOCALHOST.into(), chosen)),
        }
    }
    Err(taken
        .unwrap_or_else(|| io::Error::other("no loopback port free on both 127.0.0.1 and [::1]")))
}

/// Binds `127.0.0.1:port` only (the configuration's `[proxy] ipv6 = false`), inside a Tokio
/// runtime.
pub fn bind_loopback_ipv4(port: u16) -> io::Result<Vec<TcpListener>> {
    Ok(vec![bind_one(&listen, Ipv4Addr::LOCALHOST.into(), port)?])
}

/// Binds one address through `listen`; the error keeps its kind and names the address.
fn bind_one(
    listen: &impl Fn(IpAddr, u16) -> io::Result<TcpListener>,
    ip: IpAddr,
    port: u16,
) -> io::Result<TcpListener> {
    listen(ip, port).map_err(|e| named(e, ip, port))
}

/// How many connections the kernel holds for the proxy before it accepts them. Tokio's `bind`
/// asks for 128; a burst above that (a host reconnecting all its streams at once, 1,000 SSE
/// streams in the bench) overflowed the queue, and each connection dropped there waited for the
/// client's SYN retry, a second or more, before it was even seen. nginx asks for 511; the kernel
/// caps the number at `net.core.somaxconn` (4096 on current Linux).
const LISTEN_BACKLOG: u32 = 1024;

/// A listening socket on `ip:port` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR` on Unix, as
/// Tokio's `bind` sets it, so a restart is not refused while old connections linger).
fn listen(ip: IpAddr, port: u16) -> io::Result<TcpListener> {
    let socket = match ip {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(std::net::SocketAddr::new(ip, port))?;
    socket.listen(LISTEN_BACKLOG)
}

/// `e` with the address it is about, its kind kept.
fn named(e: io::Error, ip: IpAddr, port: u16) -> io::Error {
    let addr = std::net::SocketAddr::new(ip, port);
    io::Error::new(e.kind(), format!("{addr}: {e}"))
}

/// Whether binding `[::1]` failed because the machine has no IPv6 loopback (IPv6 disabled, or
/// not in the kernel), as opposed to another program holding the port.
fn ipv6_unavailable(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(EAFNOSUPPORT)
}

/// Raises the soft limit on open files to the hard limit, so that a burst of connections meets
/// the connection cap ([`crate::Limits::max_connections`]) long before `accept` fails with
/// "too many open files" (many desktops start processes with a soft limit of 1024). Returns the
/// limit now in force. Call once at start, before serving.
pub fn raise_open_file_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Most serving threads, however many cores the machine has: a desktop proxy needs a few.
const MAX_WORKERS: usize = 8;

/// Serves the proxy on `listeners` until `shutdown` completes, then stops accepting, closes live
/// exchanges and gives open connections a few seconds to finish.
///
/// Thread per core: each serving thread runs its own single-threaded Tokio runtime and accepts
/// on every listener itself, so a connection, its requests and its upstream connections stay on
/// the thread that accepted it, with no cross-thread wake-up per request. The slot table of the
/// connection cap is shared by all of them.
pub async fn serve(
    listeners: Vec<TcpListener>,
    state: ProxyState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = App::Proxy(state.clone());
    serve_app(listeners, state, app, shutdown).await
}

/// [`serve`] with the proxy's router wrapped by the caller (the tests' request recorder): the
/// same connection handling — cap, head deadline, drained refusals, graceful stop — around it.
pub async fn serve_router(
    listeners: Vec<TcpListener>,
    state: ProxyState,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_app(listeners, state, App::Router(app), shutdown).await
}

/// What answers the requests of admitted connections.
#[derive(Clone)]
enum App {
    /// The proxy's handler, called directly: no router, its layers and their boxed futures
    /// between hyper and the gates ([`serve`]).
    Proxy(ProxyState),
    /// A router around the proxy's ([`serve_router`]).
    Router(Router),
}

impl App {
    async fn call(&self, request: Request<Body>) -> Response {
        match self {
            Self::Proxy(state) => crate::handler::handle(State(state.clone()), request).await,
            Self::Router(router) => router
                .clone()
                .oneshot(request)
                .await
                .unwrap_or_else(|never| match never {}),
        }
    }
}

async fn serve_app(
    listeners: Vec<TcpListener>,
    state: ProxyState,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    if listeners.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no listener to serve on",
        ));
    }
    let limits = state.config().limits;
    let mut builder = http1::Builder::new();
    // hyper arms this deadline whenever it waits for a request head, so it bounds both the first
    // head after connecting and the idle time between requests on a keep-alive connection.
    // hyper's read buffer must hold a head of the configured limit as sent, which is longer than
    // the size gate counts (whitespace around values, which hyper trims), so it gets 16 KiB of
    // slack: the gate, not hyper's bare 431, is what refuses an oversized head.
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(DEFAULT_MAX_BUF.max(limits.max_header_bytes.saturating_add(16 * 1024)));
    let serving = Serving {
        admission: Admission::new(limits.max_connections),
        control_token: state.inner.control_token.clone(),
        builder,
    };

    let mut std_listeners = Vec::with_capacity(listeners.len());
    for listener in listeners {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "proxy listening");
        }
        std_listeners.push(listener.into_std()?);
    }
    let (stop, stopped) = watch::channel(false);
    let connections = state.connections().clone();
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_WORKERS);
    let mut finished = Vec::with_capacity(workers);
    for index in 0..workers {
        let mut own = Vec::with_capacity(std_listeners.len());
        for listener in &std_listeners {
            own.push(listener.try_clone()?);
        }
        let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
        let worker = Worker {
            listeners: own,
            app: app.clone(),
            serving: serving.clone(),
            stopped: stopped.clone(),
            limits,
        };
        std::thread::Builder::new()
            .name(format!("latchkey-proxy-{index}"))
            .spawn(move || {
                worker.run();
                drop(done);
            })?;
        finished.push(finished_rx);
    }
    drop(std_listeners);
    shutdown.await;
    info!("proxy stopping");
    let _ = stop.send(true);
    serving.admission.stop_all();
    connections.close_all();
    // Each receiver resolves when its thread has drained and ended (or died).
    for worker in finished {
        let _ = worker.await;
    }
    Ok(())
}

/// One serving thread: its own current-thread runtime, its own upstream connection pool, and
/// an accept loop on each listener.
struct Worker {
    listeners: Vec<std::net::TcpListener>,
    app: App,
    serving: Serving,
    stopped: watch::Receiver<bool>,
    limits: crate::config::Limits,
}

impl Worker {
    fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                warn!(kind = ?e.kind(), "proxy serving thread not started");
                return;
            }
        };
        match crate::upstream::client(&self.limits) {
            Ok(client) => crate::forward::use_thread_upstream(client),
            Err(e) => debug!(error = %e, "shared upstream pool used on this thread"),
        }
        runtime.block_on(async move {
            let mut loops = JoinSet::new();
            for listener in self.listeners {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        loops.spawn(accept_loop(
                            listener,
                            self.app.clone(),
                            self.serving.clone(),
                            self.stopped.clone(),
                        ));
                    }
                    Err(e) => warn!(kind = ?e.kind(), "listener not served on this thread"),
                }
            }
            while loops.join_next().await.is_some() {}
        });
    }
}

/// What every accept loop shares: the slot table, the control token and hyper's settings.
#[derive(Clone)]
struct Serving {
    admission: Arc<Admission>,
    control_token: Option<Secret>,
    builder: http1::Builder,
}

async fn accept_loop(
    listener: TcpListener,
    app: App,
    serving: Serving,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Some(admitted) = serving.admission.admit() else {
                        debug!("connection refused: every slot and the control reserve are taken");
                        continue;
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(kind = ?e.kind(), "TCP_NODELAY not set");
                    }
                    // One allocation per connection; each request clones one `Arc`.
                    let conn = Arc::new(Conn {
                        app: app.clone(),
                        slot: Arc::clone(&admitted.slot),
                        control_token: serving.control_token.clone(),
                    });
                    let service = hyper::service::service_fn(move |request| {
                        answer(Arc::clone(&conn), request)
                    });
                    let connection = serving
                        .builder
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    connections.spawn(serve_connection(connection, admitted));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(kind = ?e.kind(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stop_requested(&mut stopped) => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            open = connections.len(),
            "connections still open after the grace period"
        );
        connections.abort_all();
    }
}

/// What the requests of one admitted connection share.
struct Conn {
    app: App,
    slot: Arc<Slot>,
    control_token: Option<Secret>,
}

/// Answers one request on an admitted connection: counted as in flight until its response body
/// ends; on a control-only slot, anything but the control token is refused and the connection
/// closed.
async fn answer(
    conn: Arc<Conn>,
    request: Request<Incoming>,
) -> Result<Response<Tracked>, Infallible> {
    let slot = &conn.slot;
    let in_flight = slot.begin();
    if slot.control_only && !is_control_caller(&request, conn.control_token.as_ref()) {
        drop(in_flight);
        let mut refused = ProxyError::TooManyConnections.into_response();
        refused
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(refused.map(Tracked::finished));
    }
    // A request whose body is still unread when its answer is ready (a refusal at the gates, an
    // upstream that answers early): closing the connection then would reset it under the bytes
    // the client is still sending, and the client may lose the answer ("server disconnected").
    // So the rest of the body is read and dropped ([`ReadToEnd`]'s `Drop`, as nginx discards a
    // refused body) and the connection stays usable; a body declared larger than that is not
    // waited for, and the answer says `Connection: close` (RFC 9112 §9.6).
    // hyper has parsed and checked `Content-Length`: the body's size hint is its value.
    let too_large_to_drain = http_body::Body::size_hint(request.body()).lower() > DRAIN_BYTES;
    let body_read = (!http_body::Body::is_end_stream(request.body()))
        .then(|| Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let request = match &body_read {
        None => request.map(Body::new),
        Some(read) => request.map(|body| Body::new(ReadToEnd::new(body, Arc::clone(read)))),
    };
    let mut response = conn.app.call(request).await;
    if too_large_to_drain
        && body_read.is_some_and(|read| !read.load(std::sync::atomic::Ordering::Acquire))
    {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(TunnelEnded(ended)) = response.extensions_mut().remove::<TunnelEnded>() {
        slot.hold_for_tunnel(ended);
    }
    Ok(response.map(|body| Tracked::new(body, in_flight)))
}

/// Most of a refused request body read and dropped to keep its connection usable.
const DRAIN_BYTES: u64 = 1024 * 1024;

/// Longest a refused request body is waited for.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A request body that records when it was read to its end, and when dropped before that, has
/// the rest read and discarded in the background (at most [`DRAIN_BYTES`] within
/// [`DRAIN_TIME`]) so hyper can keep the connection instead of resetting it.
struct ReadToEnd {
    inner: Option<Incoming>,
    read: Arc<std::sync::atomic::AtomicBool>,
}

impl ReadToEnd {
    fn new(inner: Incoming, read: Arc<std::sync::atomic::AtomicBool>) -> Self {
        Self {
            inner: Some(inner),
            read,
        }
    }
}

impl Drop for ReadToEnd {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if self.read.load(std::sync::atomic::Ordering::Acquire)
            || http_body::Body::is_end_stream(&body)
            || http_body::Body::size_hint(&body).lower() > DRAIN_BYTES
        {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(discard(body));
        }
    }
}

/// Reads `body` to its end and drops what it holds, within the drain limits.
async fn discard(mut body: Incoming) {
    use http_body_util::BodyExt as _;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len() as u64);
                if seen > DRAIN_BYTES {
                    debug!("refused request body too large to drain; the connection closes");
                    return;
                }
            }
        }
    })
    .await;
}

impl http_body::Body for ReadToEnd {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let polled = std::pin::Pin::new(&mut *inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None))
            || (matches!(polled, std::task::Poll::Ready(Some(Ok(_)))) && inner.is_end_stream())
        {
            self.read.store(true, std::sync::atomic::Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map_or_else(
            || http_body::SizeHint::with_exact(0),
            http_body::Body::size_hint,
        )
    }
}

/// The request presents the instance's control token (compared in constant time).
fn is_control_caller(request: &Request<Incoming>, control_token: Option<&Secret>) -> bool {
    match (control_token, presented_token(request.headers())) {
        (Some(control), Some(token)) => ct_eq_str(token, control.expose()),
        _ => false,
    }
}

/// Serves one client connection; on shutdown, or when evicted for a newcomer, finishes the
/// request in flight and closes. The slot is freed when this returns.
async fn serve_connection<C>(connection: C, admitted: Admitted)
where
    C: Future<Output = hyper::Result<()>> + GracefulConnection,
{
    let closing = &admitted.slot.closing;
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        biased;
        served = connection.as_mut() => served,
        raised = closing.wait(EVICTED | STOPPING, Waiter::Connection) => {
            connection.as_mut().shutdown_gracefully();
            if raised & STOPPING != 0 {
                connection.await
            } else {
                debug!("idle connection closed for a newcomer");
                tokio::time::timeout(EVICTION_GRACE, connection).await.unwrap_or(Ok(()))
            }
        }
    };
    // An upgraded connection keeps its slot while its tunnel lives.
    if let Some(tunnel) = admitted.slot.tunnel() {
        tokio::select! {
            () = tunnel.cancelled() => {}
            _ = closing.wait(STOPPING, Waiter::Connection) => {}
        }
    }
    drop(admitted);
    if let Err(e) = served {
        debug!(error = %e, "client connection ended with an error");
    }
}

/// hyper's `graceful_shutdown`, named so [`serve_connection`] can take any service's connection.
trait GracefulConnection {
    fn shutdown_gracefully(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConnection for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Resolves once shutdown was asked for (or the sender is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rlimit::Resource;

    use super::*;

    /// [`listen`], with `[::1]` answering `fault` to its first `times` binds; counts them.
    fn v6_failing(
        times: usize,
        fault: fn() -> io::Error,
        v6_binds: &AtomicUsize,
    ) -> impl Fn(IpAddr, u16) -> io::Result<TcpListener> + '_ {
        move |ip, port| {
            if ip.is_ipv6() && v6_binds.fetch_add(1, Ordering::SeqCst) < times {
                return Err(fault());
            }
            listen(ip, port)
        }
    }

    fn in_use() -> io::Error {
        io::Error::from(io::ErrorKind::AddrInUse)
    }

    /// Port 0 picks another port when another program holds the chosen one on `[::1]`, and
    /// serves both addresses on the port it finds.
    #[tokio::test]
    async fn port_zero_moves_on_while_the_chosen_port_is_taken_on_ipv6() {
        let v6_binds = AtomicUsize::new(0);
        let listeners = bind_both(0, v6_failing(3, in_use, &v6_binds)).expect("a free pair");
        assert_eq!(
            v6_binds.load(Ordering::SeqCst),
            4,
            "three taken, the fourth bound"
        );
        let [v4, v6] = listeners.as_slice() else {
            panic!("both addresses: {listeners:?}");
        };
        let (v4, v6) = (v4.local_addr().expect("v4"), v6.local_addr().expect("v6"));
        assert!(v4.ip().is_loopback() && v4.is_ipv4() && v6.ip().is_loopback() && v6.is_ipv6());
        assert_eq!(v4.port(), v6.port());

        let v6_binds = AtomicUsize::new(0);
        let err = bind_both(0, v6_failing(usize::MAX, in_use, &v6_binds))
            .expect_err("never free on [::1]");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(v6_binds.load(Ordering::SeqCst), PORT_ZERO_ATTEMPTS);
    }

    /// A port asked for by number is that port or nothing: taken on `[::1]`, it fails at once,
    /// naming the address.
    #[tokio::test]
    async fn a_fixed_port_taken_on_ipv6_fails_at_once_naming_it() {
        let port = {
            let free = bind_loopback_ipv4(0).expect("a free port").remove(0);
            free.local_addr().expect("address").port()
        };
        let v6_binds = AtomicUsize::new(0);
        let err = bind_both(port, v6_failing(usize::MAX, in_use, &v6_binds)).expect_err("taken");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&format!("[::1]:{port}")), "{err}");
        assert_eq!(v6_binds.load(Ordering::SeqCst), 1, "tried once");
    }

    /// A machine without an IPv6 loopback (disabled, or not in the kernel) is served on
    /// 127.0.0.1 alone, whichever way its kernel says so.
    #[tokio::test]
    async fn without_an_ipv6_loopback_ipv4_is_served_alone() {
        for fault in [
            (|| io::Error::from_raw_os_error(EAFNOSUPPORT)) as fn() -> io::Error,
            || io::Error::from(io::ErrorKind::AddrNotAvailable),
        ] {
            let v6_binds = AtomicUsize::new(0);
            let listeners =
                bind_both(0, v6_failing(usize::MAX, fault, &v6_binds)).expect("served on IPv4");
            assert_eq!(listeners.len(), 1, "{listeners:?}");
            assert!(listeners[0].local_addr().expect("v4").is_ipv4());
            assert_eq!(v6_binds.load(Ordering::SeqCst), 1);
        }
    }

    /// A burst of connections the proxy has not accepted yet is queued by the kernel, not
    /// dropped: with Tokio's default backlog (128) every connection past it waited a second or
    /// more for the client's SYN retry.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_burst_of_connections_is_queued_not_dropped() {
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        let burst = 600.min(somaxconn);
        let listener = bind_loopback_ipv4(0).expect("bind").remove(0);
        let addr = listener.local_addr().expect("address");
        let connects = (0..burst).map(|_| async move {
            tokio::time::timeout(
                std::time::Duration::from_millis(700),
                tokio::net::TcpStream::connect(addr),
            )
            .await
        });
        let results = futures_util::future::join_all(connects).await;
        let queued = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(
            queued, burst,
            "every connection of the burst was queued at once"
        );
        drop(listener);
    }

    #[test]
    fn the_soft_open_file_limit_is_raised_to_the_hard_limit() {
        let (soft, hard) = Resource::NOFILE.get().expect("read the limit");
        // Start from a low soft limit, as a desktop session gives (nextest runs each test in its
        // own process, so no other test sees it).
        let low = soft.min(hard).min(256);
        Resource::NOFILE
            .set(low, hard)
            .expect("lower the soft limit");
        let raised = raise_open_file_limit().expect("raise the limit");
        let (now, _) = Resource::NOFILE.get().expect("read the limit");
        assert_eq!(now, hard, "the soft limit is the hard limit after start");
        assert_eq!(raised, hard);
    }
}
