//! Connection reuse after a request with a body: when the answer is ready before the body was
//! read (a refusal at the gates), the proxy reads and drops the rest of the body instead of
//! closing under it (which reset the connection and lost the answer), and the connection serves
//! on; a body too large to drain ends the connection, and the answer says so; a request whose body
//! was read keeps its connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Proxy, read_response};

fn connection_close(head: &str) -> bool {
    head.lines()
        .filter_map(|l| l.strip_prefix("connection:"))
        .any(|v| v.split(',').any(|t| t.trim() == "close"))
}

/// The head alone, as an MCP host sends it before its JSON body; the stale token is refused at
/// the gate, before anyone reads the body.
fn refused_head(port: u16, length: usize) -> String {
    format!(
        "POST /demo/mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-latchkey-client: lk_stale-token\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// The refused body is read and dropped, so the connection neither resets under the client (which
/// lost the answer: "server disconnected without sending a response") nor ends: the next request
/// on it is served.
#[tokio::test]
async fn a_refusal_before_the_body_was_read_keeps_the_connection_for_the_next_request() {
    refused_body_is_drained_and_the_connection_serves_on(64).await;
}

/// A body of exactly the most the proxy drains (1 MiB) is still drained, not cut off.
#[tokio::test]
async fn a_refused_body_of_exactly_the_drain_limit_is_drained() {
    refused_body_is_drained_and_the_connection_serves_on(1024 * 1024).await;
}

async fn refused_body_is_drained_and_the_connection_serves_on(length: usize) {
    let proxy = Proxy::start().await;
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("connect");
    stream
        .write_all(refused_head(proxy.port, length).as_bytes())
        .await
        .expect("write head");
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(body.contains("client_unauthorized"), "{body}");
    assert!(!connection_close(&head), "the connection is kept: {head}");
    // The body arrives after the answer, is discarded, and the connection serves on.
    stream
        .write_all(&vec![b' '; length])
        .await
        .expect("write body");
    let next = format!(
        "GET /demo/next HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-latchkey-client: {}\r\n\r\n",
        proxy.port, proxy.token
    );
    stream.write_all(next.as_bytes()).await.expect("write");
    let (head, body) = read_response(&mut stream).await;
    assert!(
        head.starts_with("http/1.1 200"),
        "the next request is served: {head}"
    );
    assert!(body.contains("/base/next"), "{body}");
}

/// A refused body declared larger than the proxy drains is not waited for: the answer says the
/// connection ends, and it does.
#[tokio::test]
async fn a_refused_body_too_large_to_drain_ends_the_connection_with_notice() {
    let proxy = Proxy::start().await;
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("connect");
    stream
        .write_all(refused_head(proxy.port, 8 * 1024 * 1024).as_bytes())
        .await
        .expect("write head");
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(connection_close(&head), "the client is told: {head}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the proxy closed the connection: {closed:?}"
    );
}

#[tokio::test]
async fn a_request_whose_body_was_read_keeps_its_connection() {
    let proxy = Proxy::start().await;
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("connect");
    let payload = "x".repeat(3000);
    let upload = format!(
        "POST /demo/upload HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-latchkey-client: {}\r\nContent-Length: {}\r\n\r\n",
        proxy.port,
        proxy.token,
        payload.len()
    );
    stream
        .write_all(upload.as_bytes())
        .await
        .expect("write head");
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream
        .write_all(payload.as_bytes())
        .await
        .expect("write body");
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains("\"bytes\":3000"), "{body}");
    assert!(
        !connection_close(&head),
        "keep-alive after a read body: {head}"
    );

    let again = format!(
        "GET /demo/again HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-latchkey-client: {}\r\n\r\n",
        proxy.port, proxy.token
    );
    stream.write_all(again.as_bytes()).await.expect("write");
    let (head, body) = read_response(&mut stream).await;
    assert!(
        head.starts_with("http/1.1 200"),
        "second request, same connection: {head}"
    );
    assert!(body.contains("/base/again"), "{body}");
}
