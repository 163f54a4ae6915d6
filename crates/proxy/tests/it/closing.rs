//! Ending what is open: `latchkey connections close` ends a WebSocket tunnel and a request still
//! waiting for its answer (a stream's close is in `streaming.rs`), and stopping the proxy closes
//! idle keep-alive connections and open streams at once instead of after the grace period.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use latchkey_proxy::ConnectionKind;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Proxy, closed_by_server, error_code, eventually, open_tunnel, read_response};

/// How long the proxy's serving threads wait for open connections once it stops, before they
/// abort them (`GRACE` in `server.rs`).
const GRACE: Duration = Duration::from_secs(5);

/// Waits until exactly one exchange of `kind` is live; returns its id.
async fn the_one_live(proxy: &Proxy, kind: ConnectionKind) -> String {
    let listed = eventually(Duration::from_secs(5), || {
        let list = proxy.connections.list();
        list.len() == 1 && list[0].kind == kind
    })
    .await;
    assert!(
        listed,
        "one {kind:?} exchange is live: {:?}",
        proxy.connections.list()
    );
    proxy.connections.list()[0].id.to_string()
}

#[tokio::test]
async fn closing_a_websocket_tunnel_ends_it_for_the_client() {
    let proxy = Proxy::start().await;
    let mut socket = open_tunnel(&proxy).await;
    socket.send(Message::text("ping")).await.expect("send");
    let echo = socket.next().await.expect("a reply").expect("frame");
    assert_eq!(echo, Message::text("echo: ping"), "the tunnel is up");

    let id = the_one_live(&proxy, ConnectionKind::WebSocket).await;
    assert!(proxy.connections.close(&id));
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the client's side of the tunnel ended");
    let gone = eventually(Duration::from_secs(5), || proxy.connections.is_empty()).await;
    assert!(gone, "the closed tunnel left the list");
    proxy.stop().await;
}

#[tokio::test]
async fn closing_a_request_that_waits_for_its_answer_answers_the_client_at_once() {
    let proxy = Proxy::start().await;
    let started = proxy.upstream.upload_started();
    // One chunk, then nothing until the test gives up the upload: the upstream reads the upload
    // to its end before it answers, so the proxy waits for an answer head that never comes.
    let (give_up, given_up) = tokio::sync::oneshot::channel::<()>();
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(
        axum::body::Bytes::from_static(b"first chunk"),
    )])
    .chain(futures_util::stream::once(async {
        let _ = given_up.await;
        Err(std::io::Error::other("the test gave the upload up"))
    }));
    let sending = tokio::spawn(
        proxy
            .client()
            .post(format!("{}/demo/upload", proxy.url))
            .header("x-latchkey-client", &proxy.token)
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the upstream received the first chunk");

    let id = the_one_live(&proxy, ConnectionKind::Http).await;
    assert!(proxy.connections.close(&id));
    let answered = tokio::time::timeout(Duration::from_secs(5), sending)
        .await
        .expect("the client is answered once the exchange is closed")
        .expect("the request task ends")
        .expect("an answer, not a broken connection");
    assert_eq!(answered.status(), 503);
    assert_eq!(error_code(answered).await, "connection_closed");
    let gone = eventually(Duration::from_secs(5), || proxy.connections.is_empty()).await;
    assert!(gone, "the closed exchange left the list");
    // Else the proxy would go on draining the upload until its grace period ends.
    drop(give_up);
    proxy.stop().await;
}

#[tokio::test]
async fn stopping_the_proxy_closes_idle_connections_and_open_streams_at_once() {
    let proxy = Proxy::start().await;
    let mut idle = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("connect");
    let request = format!(
        "GET /demo/first HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-latchkey-client: {}\r\n\r\n",
        proxy.port, proxy.token
    );
    idle.write_all(request.as_bytes()).await.expect("write");
    let (head, _) = read_response(&mut idle).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // An endless stream, on a second connection.
    let stream = proxy
        .get("/demo/sse?n=0&interval_ms=10")
        .send()
        .await
        .expect("send");
    let mut events = stream.bytes_stream();
    events.next().await.expect("an event").expect("an event");

    let began = Instant::now();
    let stopping = tokio::spawn(proxy.stop());
    assert!(
        closed_by_server(&mut idle, Duration::from_secs(2)).await,
        "the idle keep-alive connection is closed when the proxy stops, not when its grace ends"
    );
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = events.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the open stream ended when the proxy stopped"
    );
    tokio::time::timeout(GRACE, stopping)
        .await
        .expect("the proxy stopped before its grace period ran out")
        .expect("the proxy stopped cleanly");
    assert!(
        began.elapsed() < GRACE,
        "nothing waited for the grace period: {:?}",
        began.elapsed()
    );
}
