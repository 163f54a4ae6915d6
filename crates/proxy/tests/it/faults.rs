//! The fault matrix (SECURITY.md, "Fault matrix"), the proxy's cells: an upstream that resets its
//! connection before answering or mid-stream, one that half-closes in the middle of a chunked
//! SSE body, and a client that reads slowly. Each asserts what the client sees (the proxy's JSON
//! error, or a body that ends in an error rather than a clean end that would pass a cut stream
//! off as complete), that the proxy lets go of both sides, and that nothing is lost: the next
//! request still gets its credential injected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use latchkey_proxy::Route;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use url::Url;

use crate::support::{CANARY_KEY, Options, Proxy, error_code, header_injection, new_client};

const DEADLINE: Duration = Duration::from_secs(10);
/// Bytes the flooding upstream sends: far more than every socket buffer on the way can hold.
const FLOOD_BYTES: usize = 64 * 1024 * 1024;

/// What the raw upstream does after it has read a request head.
#[derive(Clone, Copy)]
enum Fault {
    /// Resets the connection (RST) without answering.
    ResetBeforeAnswer,
    /// Answers `200` with a chunked SSE body, sends one event, waits for `go`, then resets.
    ResetMidStream,
    /// As above, but then half-closes (FIN, no final chunk) and keeps reading.
    HalfCloseMidStream,
    /// Answers [`FLOOD_BYTES`] as fast as the proxy takes them, and signals when a write blocks.
    Flood,
}

/// A TCP server speaking just enough HTTP/1.1 to misbehave on cue.
struct RawUpstream {
    addr: SocketAddr,
    /// Signalled by the test: the first event arrived, now misbehave.
    go: Arc<Notify>,
    /// Signalled when the proxy closed its side of the upstream connection.
    proxy_closed: Arc<Notify>,
    /// Signalled when a write did not complete within 300 ms (the reader holds back).
    blocked: Arc<Notify>,
    written: Arc<AtomicUsize>,
}

const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n";

fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

fn flood_byte(i: usize) -> u8 {
    u8::try_from(i % 251).expect("below 251")
}

impl RawUpstream {
    async fn start(fault: Fault) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = RawUpstream {
            addr,
            go: Arc::new(Notify::new()),
            proxy_closed: Arc::new(Notify::new()),
            blocked: Arc::new(Notify::new()),
            written: Arc::new(AtomicUsize::new(0)),
        };
        let (go, closed, blocked, written) = (
            up.go.clone(),
            up.proxy_closed.clone(),
            up.blocked.clone(),
            up.written.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (go, closed, blocked, written) =
                    (go.clone(), closed.clone(), blocked.clone(), written.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, fault, &go, &closed, &blocked, &written).await;
                });
            }
        });
        up
    }

    fn route(&self) -> Route {
        Route::new(
            "faulty",
            Url::parse(&format!("http://{}/", self.addr)).expect("url"),
            vec![header_injection("api_key", "X-API-Key", "")],
        )
        .expect("route")
    }
}

async fn serve(
    mut stream: TcpStream,
    fault: Fault,
    go: &Notify,
    closed: &Notify,
    blocked: &Notify,
    written: &AtomicUsize,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0_u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    match fault {
        Fault::ResetBeforeAnswer => {
            stream.set_zero_linger()?;
            drop(stream);
        }
        Fault::ResetMidStream | Fault::HalfCloseMidStream => {
            stream
                .write_all(format!("{SSE_HEAD}{}", chunk("data: one\n\n")).as_bytes())
                .await?;
            stream.flush().await?;
            go.notified().await;
            if matches!(fault, Fault::ResetMidStream) {
                stream.set_zero_linger()?;
                drop(stream);
            } else {
                stream.shutdown().await?; // FIN on our write side only
                while stream.read(&mut buf).await? != 0 {}
                closed.notify_one();
            }
        }
        Fault::Flood => {
            stream
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {FLOOD_BYTES}\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await?;
            let piece: Vec<u8> = (0..64 * 1024).map(flood_byte).collect();
            let mut sent = 0;
            let mut told = false;
            while sent < FLOOD_BYTES {
                let write = stream.write_all(&piece);
                tokio::pin!(write);
                let done = if told {
                    write.await
                } else {
                    match tokio::time::timeout(Duration::from_millis(300), &mut write).await {
                        Ok(done) => done,
                        Err(_) => {
                            told = true;
                            blocked.notify_one();
                            write.await
                        }
                    }
                };
                done?;
                sent += piece.len();
                written.store(sent, Ordering::SeqCst);
            }
        }
    }
    Ok(())
}

/// A proxy in front of the standard double and `upstream` (as service `faulty`), and a client
/// token for both.
async fn proxy_with(upstream: &RawUpstream) -> (Proxy, String) {
    let proxy = Proxy::start_with(Options {
        extra_routes: vec![upstream.route()],
        ..Options::default()
    })
    .await;
    proxy.source.set("faulty", &[("api_key", CANARY_KEY)]);
    let token = new_client(
        &proxy.clients,
        "faults",
        &["faulty".to_owned(), "demo".to_owned()],
    );
    (proxy, token)
}

fn get(proxy: &Proxy, token: &str, path: &str) -> reqwest::RequestBuilder {
    proxy
        .client()
        .get(format!("{}{path}", proxy.url))
        .header("x-latchkey-client", token)
        .timeout(DEADLINE)
}

/// After the fault, nothing is lost: the proxy lets go of the exchange, and the next request
/// still gets the credential injected.
async fn assert_nothing_lost(proxy: &Proxy, token: &str) {
    let connections = proxy.connections.clone();
    assert!(
        crate::support::eventually(DEADLINE, || connections.is_empty()).await,
        "the broken exchange leaves the live list: {:?}",
        proxy.connections.list()
    );
    let next = get(proxy, token, "/demo/after").send().await.expect("send");
    assert_eq!(next.status(), 200, "the proxy still serves");
    assert_eq!(
        proxy.upstream.last().headers["x-api-key"],
        CANARY_KEY,
        "with the credential injected"
    );
}

/// Reads the rest of a body; `Err` when it ended in an error rather than cleanly.
async fn rest_of(response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = response.bytes_stream();
    let mut all = Vec::new();
    while let Some(chunk) = body.next().await {
        all.extend_from_slice(&chunk?);
    }
    Ok(all)
}

#[tokio::test]
async fn upstream_reset_before_answering_is_a_json_502_that_says_what_happened() {
    let upstream = RawUpstream::start(Fault::ResetBeforeAnswer).await;
    let (proxy, token) = proxy_with(&upstream).await;
    let response = get(&proxy, &token, "/faulty/events")
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 502);
    let code = error_code(response).await;
    assert_eq!(code, "upstream_unreachable");
    assert_nothing_lost(&proxy, &token).await;
    proxy.stop().await;
}

/// Streams one event from `upstream`, then lets it misbehave; returns the rest of the body.
async fn stream_then_fault(
    proxy: &Proxy,
    token: &str,
    upstream: &RawUpstream,
) -> Result<Vec<u8>, reqwest::Error> {
    let response = get(proxy, token, "/faulty/events")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200, "the stream started");
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(DEADLINE, body.next())
        .await
        .expect("the first event in time")
        .expect("a first chunk")
        .expect("chunk");
    assert!(
        String::from_utf8_lossy(&first).contains("data: one"),
        "the first event arrived before the fault"
    );
    upstream.go.notify_one();
    tokio::time::timeout(DEADLINE, async {
        let mut rest = Vec::new();
        while let Some(chunk) = body.next().await {
            rest.extend_from_slice(&chunk?);
        }
        Ok(rest)
    })
    .await
    .expect("the stream ends in time, not hangs")
}

#[tokio::test]
async fn upstream_reset_mid_stream_ends_the_clients_stream_in_an_error_not_a_clean_end() {
    let upstream = RawUpstream::start(Fault::ResetMidStream).await;
    let (proxy, token) = proxy_with(&upstream).await;
    let rest = stream_then_fault(&proxy, &token, &upstream).await;
    assert!(
        rest.is_err(),
        "a cut stream must not look complete to the client: {rest:?}"
    );
    assert_nothing_lost(&proxy, &token).await;
    // The audit row says what happened to the stream it had already answered 200.
    let rows = crate::audit::rows(&proxy).await;
    let cut = rows
        .iter()
        .find(|r| r.path.starts_with("/faulty/events"))
        .unwrap_or_else(|| panic!("the cut stream's row: {rows:#?}"));
    assert_eq!(cut.error_code.as_deref(), Some("upstream_reset"), "{cut:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_half_closed_mid_stream_ends_the_clients_stream_in_an_error_and_is_let_go() {
    let upstream = RawUpstream::start(Fault::HalfCloseMidStream).await;
    let (proxy, token) = proxy_with(&upstream).await;
    let rest = stream_then_fault(&proxy, &token, &upstream).await;
    assert!(
        rest.is_err(),
        "a body cut by a FIN must not look complete to the client: {rest:?}"
    );
    assert!(
        tokio::time::timeout(DEADLINE, upstream.proxy_closed.notified())
            .await
            .is_ok(),
        "the proxy closes its side of the half-closed upstream connection"
    );
    assert_nothing_lost(&proxy, &token).await;
    proxy.stop().await;
}

#[tokio::test]
async fn slow_reader_holds_the_upstream_back_without_buffering_and_gets_every_byte() {
    let upstream = RawUpstream::start(Fault::Flood).await;
    let (proxy, token) = proxy_with(&upstream).await;
    let response = get(&proxy, &token, "/faulty/big")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    // The client reads nothing more: the upstream must be held back (backpressure), long before
    // it has sent everything, so the proxy holds a bounded amount of the body in memory.
    assert!(
        tokio::time::timeout(DEADLINE, upstream.blocked.notified())
            .await
            .is_ok(),
        "the upstream's writes block while the client does not read"
    );
    let written = upstream.written.load(Ordering::SeqCst);
    assert!(
        written < FLOOD_BYTES / 2,
        "the proxy buffered {written} bytes for a reader that reads nothing"
    );
    // The client reads again: every byte arrives, in order.
    let all = rest_of(response).await.expect("the whole body");
    assert_eq!(all.len(), FLOOD_BYTES, "every byte arrived");
    let piece = 64 * 1024;
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, b)| *b == flood_byte(i % piece)),
        "and in order"
    );
    assert_nothing_lost(&proxy, &token).await;
    proxy.stop().await;
}
