//! The floor: the least a proxy built from Latchkey's own crates costs per request, run beside
//! Latchkey and nginx so the gap to nginx can be split into what the stack costs and what
//! Latchkey adds on top of it.
//!
//! It is what Latchkey's serving path is without Latchkey: hyper 1's HTTP/1 server connection
//! (keep-alive, the same head deadline and its timer, `TCP_NODELAY`), one serving thread per core
//! (at most 8) each with a current-thread Tokio runtime accepting on a clone of the listener, and
//! per thread a stack of idle hyper client connections to the upstream, as Latchkey's own pool
//! (`crates/proxy/src/upstream/pool.rs`) keeps them; each request gets the same header
//! nginx and Latchkey inject and is forwarded with its body streaming both ways. No gates, no
//! audit, no axum, no connection registry. It runs as its own process (`latchkey-bench
//! floor-proxy <upstream>`) so `/proc` charges it alone, and it exits when its parent closes its
//! standard input.
//!
//! It comes in [`Variant`]s, so the harness's A/B mode can tell what a setting of the stack is
//! worth against nginx before anyone changes Latchkey for it: hyper's default vectored writes
//! or one flattened buffer, hyper-util's pooled client (what Latchkey forwarded with until the
//! pool of its own) or a plain per-thread stack of hyper client connections (what it does now),
//! or one upstream connection driven by each client connection's task.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::targets::HEADER_VALUE;

/// The command-line word that runs this process as the floor proxy.
pub const SUBCOMMAND: &str = "floor-proxy";

/// Latchkey's default head deadline (`[proxy]` limits), armed the same way.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle upstream connections kept per host, as Latchkey's pool.
const MAX_IDLE_PER_HOST: usize = 512;

/// Most serving threads, as Latchkey.
const MAX_WORKERS: usize = 8;

type Upstream = Client<HttpConnector, Incoming>;
type Answer = Response<Either<Incoming, Either<Pooled, Empty<Bytes>>>>;

/// How the floor is built; `conn` is the one that matches Latchkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// hyper-util's pooled client, hyper's default (vectored) writes: Latchkey's stack until it
    /// had a pool of its own.
    HyperUtil,
    /// The same with vectored writes off on both sides (head and body in one buffer).
    Flat,
    /// A per-thread stack of idle `hyper::client::conn::http1` connections in place of
    /// hyper-util's pool (no task per request, no checkout futures): Latchkey's stack now.
    Conn,
    /// One upstream connection per client connection, driven by the client connection's own
    /// task: no wake-up crosses from one task to another on a request's way.
    Pinned,
}

impl Variant {
    /// The word on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::HyperUtil => "hyper-util",
            Self::Flat => "flat",
            Self::Conn => "conn",
            Self::Pinned => "pinned",
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        [Self::HyperUtil, Self::Flat, Self::Conn, Self::Pinned]
            .into_iter()
            .find(|v| v.name() == s)
            .with_context(|| {
                format!("unknown floor variant {s:?} (hyper-util, flat, conn, pinned)")
            })
    }
}

/// Serves on `127.0.0.1:0`, prints the URL on standard output, and runs until standard input
/// closes.
pub fn serve(upstream: SocketAddr, variant: Variant) -> anyhow::Result<()> {
    // The backlog Latchkey's proxy listens with (std's `bind` asks for 128).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(i32::try_from(crate::upstream::LISTEN_BACKLOG)?)?;
    let listener = std::net::TcpListener::from(socket);
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_WORKERS);
    for index in 0..workers {
        let own = listener.try_clone()?;
        std::thread::Builder::new()
            .name(format!("floor-{index}"))
            .spawn(move || {
                if let Err(e) = worker(own, upstream, variant) {
                    eprintln!("floor proxy thread {index} stopped: {e:#}");
                }
            })?;
    }
    println!("floor proxy listening on http://{addr}");
    // The harness holds the other end: when it exits, however it exits, so does this process.
    let mut sink = [0u8; 64];
    while std::io::stdin().read(&mut sink).is_ok_and(|n| n > 0) {}
    Ok(())
}

fn worker(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    variant: Variant,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client: Upstream = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .http1_writev(variant != Variant::Flat)
            .build(http);
        let client = match variant {
            Variant::Conn => Forwarder::Conn(Arc::new(Mutex::new(Vec::new()))),
            Variant::HyperUtil | Variant::Flat | Variant::Pinned => Forwarder::Pool(client),
        };
        let mut server = http1::Builder::new();
        server
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(HEAD_TIMEOUT)
            .writev(variant != Variant::Flat);
        let authority: Arc<str> = Arc::from(upstream.to_string());
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("floor proxy accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            if variant == Variant::Pinned {
                let authority = Arc::clone(&authority);
                let server = server.clone();
                tokio::spawn(async move {
                    let _ = pinned(stream, &server, authority).await;
                });
                continue;
            }
            let client = client.clone();
            let authority = Arc::clone(&authority);
            let service =
                service_fn(move |request| forward(client.clone(), Arc::clone(&authority), request));
            let connection = server.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    })
}

/// The request to the upstream with the header added; the answer streamed back, or a bare `502`.
async fn forward(
    client: Forwarder,
    authority: Arc<str>,
    mut request: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let uri = Uri::builder()
        .scheme("http")
        .authority(&*authority)
        .path_and_query(path)
        .build();
    let Ok(uri) = uri else {
        return Ok(bare(StatusCode::BAD_REQUEST));
    };
    *request.uri_mut() = uri;
    request.headers_mut().insert(
        HeaderName::from_static("x-api-key"),
        HeaderValue::from_static(HEADER_VALUE),
    );
    let answer = match client {
        Forwarder::Pool(client) => client
            .request(request)
            .await
            .map(|r| r.map(Either::Left))
            .map_err(anyhow::Error::from),
        Forwarder::Conn(idle) => send(&idle, &authority, request)
            .await
            .map(|r| r.map(|body| Either::Right(Either::Left(body)))),
    };
    Ok(answer.unwrap_or_else(|_| bare(StatusCode::BAD_GATEWAY)))
}

/// Serves one client connection over one upstream connection, both driven by this task.
async fn pinned(
    stream: tokio::net::TcpStream,
    server: &http1::Builder,
    authority: Arc<str>,
) -> anyhow::Result<()> {
    let upstream = tokio::net::TcpStream::connect(&*authority).await?;
    upstream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(upstream)).await?;
    let sender = Arc::new(Mutex::new(sender));
    let service = service_fn(move |mut request: Request<Incoming>| {
        let sender = Arc::clone(&sender);
        async move {
            request.headers_mut().insert(
                HeaderName::from_static("x-api-key"),
                HeaderValue::from_static(HEADER_VALUE),
            );
            std::future::poll_fn(|cx| match sender.lock() {
                Ok(mut s) => s.poll_ready(cx).map_err(anyhow::Error::from),
                Err(_) => Poll::Ready(Err(anyhow::anyhow!("poisoned"))),
            })
            .await
            .ok();
            let sent = match sender.lock() {
                Ok(mut s) => s.send_request(request),
                Err(_) => return Ok::<_, Infallible>(bare(StatusCode::BAD_GATEWAY)),
            };
            Ok(match sent.await {
                Ok(response) => response.map(Either::Left),
                Err(_) => bare(StatusCode::BAD_GATEWAY),
            })
        }
    });
    let serving = server.serve_connection(TokioIo::new(stream), service);
    futures_util::pin_mut!(serving);
    futures_util::pin_mut!(connection);
    let _ = futures_util::future::select(serving, connection).await;
    Ok(())
}

/// How one serving thread reaches the upstream.
#[derive(Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "moved into each request as the floor always did; a box would add an allocation per request to the variant it measures"
)]
enum Forwarder {
    Pool(Upstream),
    /// This thread's idle connections, newest last.
    Conn(Idle),
}

type Idle = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

/// Sends `request` on an idle connection of this thread, or a new one.
async fn send(
    idle: &Idle,
    authority: &str,
    request: Request<Incoming>,
) -> anyhow::Result<Response<Pooled>> {
    let mut sender = loop {
        let popped = idle.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop();
        match popped {
            Some(mut sender) => {
                if sender.ready().await.is_ok() {
                    break sender;
                }
            }
            None => {
                let stream = tokio::net::TcpStream::connect(authority).await?;
                stream.set_nodelay(true)?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                break sender;
            }
        }
    };
    let response = sender.send_request(request).await?;
    Ok(response.map(|body| Pooled {
        body,
        connection: Some((sender, Arc::clone(idle))),
        finished: false,
    }))
}

/// An upstream answer's body that, once read to its end, puts its connection back on its
/// thread's idle stack.
pub struct Pooled {
    body: Incoming,
    connection: Option<(SendRequest<Incoming>, Idle)>,
    finished: bool,
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
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

impl Drop for Pooled {
    fn drop(&mut self) {
        // Read to its end, the connection can carry the next request; cut short, it cannot.
        if (self.finished || self.body.is_end_stream())
            && let Some((sender, idle)) = self.connection.take()
            && let Ok(mut idle) = idle.lock()
        {
            idle.push(sender);
        }
    }
}

fn bare(status: StatusCode) -> Answer {
    let mut answer = Response::new(Either::Right(Either::Right(Empty::new())));
    *answer.status_mut() = status;
    answer
}

/// The floor proxy as a child of the harness.
pub struct Floor {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, for `/proc`.
    pub pid: u32,
    child: Child,
}

impl Floor {
    /// Starts `latchkey-bench floor-proxy <upstream> <variant>` and waits for its address.
    pub fn start(upstream: SocketAddr, variant: Variant) -> anyhow::Result<Self> {
        Self::start_wrapped(upstream, variant, &[])
    }

    /// [`Floor::start`], run by `wrapper` (a program and its arguments, such as valgrind).
    pub fn start_wrapped(
        upstream: SocketAddr,
        variant: Variant,
        wrapper: &[String],
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = crate::targets::wrapped(wrapper, &exe)
            .args([SUBCOMMAND, &upstream.to_string(), variant.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the floor proxy")?;
        let stdout = child.stdout.take().context("floor proxy stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .context("the floor proxy did not say where it listens")?
            .parse()?;
        Ok(Self {
            addr,
            pid: child.id(),
            child,
        })
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // Closing its standard input ends it; wait so no process outlives the run.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
