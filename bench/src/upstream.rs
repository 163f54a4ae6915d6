//! A minimal hyper upstream: a fixed-size echo answer, an SSE endpoint whose events carry their
//! emission time, and an idle SSE endpoint that stays open.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::targets::HEADER_VALUE;

/// Time zero shared by the upstream and the load generator (same process).
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The running upstream.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    with_header: Arc<AtomicU64>,
}

impl Upstream {
    /// Requests that arrived carrying the injected header value.
    pub fn requests_with_header(&self) -> u64 {
        self.with_header.load(Ordering::Relaxed)
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// The backlog of the harness's listeners, as Latchkey's proxy listens: a proxy opens 1,000
/// connections to the upstream at once in the SSE phase, and with Tokio's 128 the rest waited a
/// second or more for a SYN retry.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Starts the upstream on 127.0.0.1:0.
pub async fn start(body_bytes: usize) -> anyhow::Result<Upstream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], 0).into())?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    let addr = listener.local_addr()?;
    let answer = Bytes::from(vec![b'x'; body_bytes]);
    let with_header = Arc::new(AtomicU64::new(0));
    let counter = with_header.clone();
    let _ = epoch();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let answer = answer.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, answer.clone(), counter.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Upstream { addr, with_header })
}

async fn handle(
    req: Request<Incoming>,
    answer: Bytes,
    counter: Arc<AtomicU64>,
) -> Result<Response<Body>, Infallible> {
    if req
        .headers()
        .get("x-api-key")
        .is_some_and(|v| v.as_bytes() == HEADER_VALUE.as_bytes())
    {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let param = |name: &str, default: u64| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(default)
    };
    let response = match path.as_str() {
        "/sse" => {
            let count = param("count", 20);
            let interval = Duration::from_millis(param("interval_ms", 50));
            // A stream's phase: its events come `offset_us` later than the interval alone says.
            let offset = Duration::from_micros(param("offset_us", 0));
            let stream = futures_util::stream::unfold(0u64, move |i| async move {
                if i >= count {
                    return None;
                }
                let wait = if i == 0 { interval + offset } else { interval };
                tokio::time::sleep(wait).await;
                let t = epoch().elapsed().as_nanos();
                let frame = Frame::data(Bytes::from(format!("data: {{\"i\":{i},\"t\":{t}}}\n\n")));
                Some((Ok::<_, Infallible>(frame), i + 1))
            });
            sse(BodyExt::boxed(StreamBody::new(stream)))
        }
        "/idle" => {
            let opening = futures_util::stream::once(async {
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b": open\n\n")))
            });
            let stream = opening.chain(futures_util::stream::pending());
            sse(BodyExt::boxed(StreamBody::new(stream)))
        }
        _ => {
            // Drain the request body, then answer with the fixed body.
            let _ = req.into_body().collect().await;
            Response::new(Full::new(answer).boxed())
        }
    };
    Ok(response)
}

fn sse(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    response
}
