//! Local denial of service: a process on the same machine opening connections and sending
//! nothing (or a head a byte at a time) cannot starve the other clients, and the `latchkey`
//! command's control token is still served when every connection slot is busy.

use std::time::{Duration, Instant};

use axum::routing::get;
use latchkey_proxy::Limits;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{Options, Proxy, closed_by_server, error_code, open_tunnel};

/// The control token of these proxies.
const CONTROL: &str = "lk_control_token_for_the_flood_tests_0123456789";

/// Longest a real client may wait while the flood is on.
const SERVED_WITHIN: Duration = Duration::from_secs(5);

async fn proxy_with_cap(max_connections: usize, head_timeout: Duration) -> Proxy {
    let control = axum::Router::new().route("/ping", get(|| async { "pong" }));
    Proxy::start_with(Options {
        limits: Limits {
            max_connections,
            head_timeout,
            ..Limits::default()
        },
        control: Some(control),
        control_token: Some(CONTROL.to_owned()),
        ..Options::default()
    })
    .await
}

/// Opens `n` connections that send nothing.
async fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    let mut flood = Vec::with_capacity(n);
    for _ in 0..n {
        flood.push(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("loopback connect"),
        );
    }
    flood
}

#[tokio::test]
async fn a_flood_of_idle_connections_does_not_starve_a_client_that_sends_its_request() {
    let proxy = proxy_with_cap(16, Duration::from_secs(60)).await;
    // Four times the cap, so without eviction every slot and the control reserve are taken.
    let mut flood = idle_connections(proxy.port, 64).await;

    let started = Instant::now();
    let response = tokio::time::timeout(SERVED_WITHIN, proxy.get("/demo/x").send())
        .await
        .expect("a real client is served while the flood is on")
        .expect("request");
    assert_eq!(response.status(), 200, "the client's request went through");
    assert!(started.elapsed() < SERVED_WITHIN);

    assert!(
        closed_by_server(&mut flood[0], SERVED_WITHIN).await,
        "the oldest idle connection was closed for a newcomer"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn the_control_token_is_served_when_every_slot_has_a_stream_in_flight() {
    let proxy = proxy_with_cap(4, Duration::from_secs(60)).await;
    // Four never-ending SSE streams: four busy slots, none evictable.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let response = proxy
            .get("/demo/sse?n=0&interval_ms=1000")
            .send()
            .await
            .expect("stream opened");
        assert_eq!(response.status(), 200);
        streams.push(response);
    }

    let plain = tokio::time::timeout(SERVED_WITHIN, proxy.get("/v1/status").send())
        .await
        .expect("an answer, not a hang")
        .expect("request");
    assert_eq!(plain.status(), 503, "a client token gets no reserve slot");
    assert_eq!(error_code(plain).await, "too_many_connections");

    let control = tokio::time::timeout(
        SERVED_WITHIN,
        proxy
            .client()
            .get(format!("{}/v1/control/ping", proxy.url))
            .header("x-latchkey-client", CONTROL)
            .send(),
    )
    .await
    .expect("an answer, not a hang")
    .expect("request");
    assert_eq!(
        control.status(),
        200,
        "the control token is served at the cap"
    );
    assert_eq!(control.text().await.expect("body"), "pong");

    drop(streams);
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off_at_the_head_timeout() {
    let head_timeout = Duration::from_millis(300);
    let proxy = proxy_with_cap(16, head_timeout).await;
    let mut slow = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("loopback connect");
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("partial head sent");
    let started = Instant::now();
    assert!(
        closed_by_server(&mut slow, SERVED_WITHIN).await,
        "a head never finished is closed well before the keep-alive idle timeout"
    );
    assert!(
        started.elapsed() >= head_timeout / 2,
        "closed by the timeout, not at once"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn websocket_tunnels_count_against_the_connection_cap() {
    let proxy = proxy_with_cap(3, Duration::from_secs(60)).await;
    let mut tunnels = Vec::new();
    for _ in 0..3 {
        tunnels.push(open_tunnel(&proxy).await);
    }

    // Every slot holds a live tunnel: the next client gets no slot (a tunnel is never evicted),
    // only the control reserve, which answers it `too_many_connections`.
    let plain = tokio::time::timeout(SERVED_WITHIN, proxy.get("/v1/status").send())
        .await
        .expect("an answer, not a hang")
        .expect("request");
    assert_eq!(plain.status(), 503, "the cap holds with tunnels open");
    assert_eq!(error_code(plain).await, "too_many_connections");

    let control = tokio::time::timeout(
        SERVED_WITHIN,
        proxy
            .client()
            .get(format!("{}/v1/control/ping", proxy.url))
            .header("x-latchkey-client", CONTROL)
            .send(),
    )
    .await
    .expect("an answer, not a hang")
    .expect("request");
    assert_eq!(control.status(), 200, "the control token keeps its room");

    // The tunnels still work, and once one closes its slot serves a client again.
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let first = &mut tunnels[0];
        first.send(Message::text("hi")).await.expect("send");
        let reply = first.next().await.expect("a reply").expect("frame");
        assert_eq!(reply, Message::text("echo: hi"));
    }
    let mut closed = tunnels.remove(0);
    closed.close(None).await.expect("close");
    drop(closed);
    let deadline = Instant::now() + SERVED_WITHIN;
    loop {
        let response = proxy.get("/demo/x").send().await.expect("request");
        if response.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed tunnel frees its slot: still {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(tunnels);
    proxy.stop().await;
}
