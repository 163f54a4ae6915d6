//! The floor: the least a proxy built from Latchkey's own crates costs per request, run beside
//! Latchkey and nginx so the gap to nginx can be split into what the stack costs and what
//! Latchkey adds on top of it.
//!
//! It is what Latchkey's serving path is without Latchkey: hyper 1's HTTP/1 server connection
//! (keep-alive, the same head deadline and its timer, `TCP_NODELAY`), one serving thread per core
//! (at most 8) each with a current-thread Tokio runtime accepting on a clone of the listener, and
//! per thread a hyper-util pooled client to the upstream; each request gets the same header
//! nginx and Latchkey inject and is forwarded with its body streaming both ways. No gates, no
//! audit, no axum, no connection registry. It runs as its own process (`latchkey-bench
//! floor-proxy <upstream>`) so `/proc` charges it alone, and it exits when its parent closes its
//! standard input.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
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
type Answer = Response<Either<Incoming, Empty<Bytes>>>;

/// Serves on `127.0.0.1:0`, prints the URL on standard output, and runs until standard input
/// closes.
pub fn serve(upstream: SocketAddr) -> anyhow::Result<()> {
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
                if let Err(e) = worker(own, upstream) {
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

fn worker(listener: std::net::TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
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
            .build(http);
        let mut server = http1::Builder::new();
        server
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(HEAD_TIMEOUT);
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
    client: Upstream,
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
    match client.request(request).await {
        Ok(response) => Ok(response.map(Either::Left)),
        Err(_) => Ok(bare(StatusCode::BAD_GATEWAY)),
    }
}

fn bare(status: StatusCode) -> Answer {
    let mut answer = Response::new(Either::Right(Empty::new()));
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
    /// Starts `latchkey-bench floor-proxy <upstream>` and waits for its address.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args([SUBCOMMAND, &upstream.to_string()])
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
