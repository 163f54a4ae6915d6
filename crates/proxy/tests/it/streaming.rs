//! Bodies stream both ways without buffering: SSE events arrive as they are emitted, a client
//! that goes away cancels the upstream stream, many streams run at once, uploads stream, and a
//! closed connection really closes.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use latchkey_proxy::{ConnectionKind, Limits, RateLimit};

use crate::support::{Options, Proxy, error_code, read_events};

fn sent_us(data: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(data).expect("event JSON");
    v["sent_us"].as_u64().expect("emission stamp")
}

#[tokio::test]
async fn sse_events_arrive_as_they_are_emitted() {
    let proxy = Proxy::start().await;
    let response = proxy
        .get("/demo/sse?n=50&interval_ms=10")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = read_events(response, 50).await;
    assert_eq!(events.len(), 50, "every event arrived");

    let mut delays: Vec<u64> = events
        .iter()
        .map(|(arrived, data)| arrived.saturating_sub(sent_us(data)))
        .collect();
    delays.sort_unstable();
    let p50 = delays[delays.len() / 2];
    let p99 = delays[(delays.len() * 99).div_ceil(100) - 1];
    eprintln!(
        "sse delay through the proxy: p50 {p50} µs, p99 {p99} µs, max {} µs",
        delays[delays.len() - 1]
    );
    assert!(p99 < 50_000, "p99 delay {p99} µs must stay under 50 ms");

    let first_arrival = events[0].0;
    let last_emission = sent_us(&events[49].1);
    assert!(
        first_arrival + 300_000 < last_emission,
        "the first event arrived long before the last was emitted (progressive, not buffered)"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_stream() {
    let proxy = Proxy::start().await;
    let response = proxy
        .get("/demo/sse?n=0&interval_ms=10")
        .send()
        .await
        .expect("send");
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("chunk");
    assert!(!first.is_empty());
    assert_eq!(proxy.upstream.streams_dropped(), 0, "the stream is live");
    drop(body);
    assert!(
        proxy
            .upstream
            .wait_streams_dropped(1, Duration::from_secs(5))
            .await,
        "the upstream saw the cancellation within 5 s"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn live_streams_are_listed_and_can_be_closed() {
    let proxy = Proxy::start().await;
    let response = proxy
        .get("/demo/sse?n=0&interval_ms=10")
        .send()
        .await
        .expect("send");
    let mut body = response.bytes_stream();
    let mut received = 0;
    while received < 3 {
        body.next().await.expect("chunk").expect("chunk");
        received += 1;
    }
    let list = proxy.connections.list();
    assert_eq!(list.len(), 1, "{list:?}");
    let live = &list[0];
    assert_eq!(live.kind, ConnectionKind::Sse);
    assert_eq!(
        (live.client.as_str(), live.service.as_str()),
        ("tester", "demo")
    );
    assert!(live.events >= 3 && live.bytes_out > 0, "{live:?}");

    assert!(proxy.connections.close(&live.id.to_string()));
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the client's stream ended after close");
    assert!(
        proxy
            .upstream
            .wait_streams_dropped(1, Duration::from_secs(5))
            .await,
        "and the upstream's"
    );
    assert!(
        proxy.connections.is_empty(),
        "closed exchanges leave the list"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_thousand_concurrent_sse_streams_complete() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let proxy = Proxy::start_with(Options {
        rate_limit: RateLimit {
            per_second: 10_000.0,
            burst: 5_000,
        },
        ..Options::default()
    })
    .await;
    let client = proxy.client();
    let started = Instant::now();
    let streams = (0..1000).map(|_| {
        let request = client
            .get(format!("{}/demo/sse?n=5&interval_ms=20", proxy.url))
            .header("x-latchkey-client", &proxy.token);
        async move {
            let response = request.send().await.expect("send");
            assert_eq!(response.status(), 200);
            read_events(response, 5).await.len()
        }
    });
    let counts = futures_util::future::join_all(streams).await;
    let elapsed = started.elapsed();
    eprintln!(
        "1000 concurrent SSE streams of 5 events: {} ms",
        elapsed.as_millis()
    );
    assert!(
        counts.iter().all(|&n| n == 5),
        "every stream delivered its 5 events"
    );
    assert_eq!(proxy.upstream.hits(), 1000);
    proxy.stop().await;
}

#[tokio::test]
async fn a_chunked_upload_streams_to_the_upstream() {
    let proxy = Proxy::start().await;
    let started = proxy.upstream.upload_started();
    let chunk = bytes_of(16 * 1024);
    // The client sends the rest only after the upstream has the first chunk: a buffering proxy
    // would deadlock here and the deadline below would fail the test.
    let body = futures_util::stream::unfold(0usize, move |i| {
        let started = started.clone();
        let chunk = chunk.clone();
        async move {
            match i {
                0 => Some((Ok::<_, std::io::Error>(chunk), 1)),
                1..64 => {
                    if i == 1 {
                        let waited =
                            tokio::time::timeout(Duration::from_secs(10), started.notified()).await;
                        if waited.is_err() {
                            return Some((
                                Err(std::io::Error::other(
                                    "the upstream never saw the first chunk",
                                )),
                                64,
                            ));
                        }
                    }
                    Some((Ok(chunk), i + 1))
                }
                _ => None,
            }
        }
    });
    let response = proxy
        .client()
        .post(format!("{}/demo/upload", proxy.url))
        .header("x-latchkey-client", &proxy.token)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.expect("json");
    assert_eq!(answer["bytes"], 64 * 16 * 1024, "every byte arrived");
    assert!(
        answer["frames"].as_u64().is_some_and(|f| f > 1),
        "in several frames: {answer}"
    );
    proxy.stop().await;
}

fn bytes_of(n: usize) -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b'x'; n])
}

#[tokio::test]
async fn bodies_over_the_cap_are_413_and_not_forwarded() {
    let limits = Limits {
        max_body_bytes: Some(1024),
        ..Limits::default()
    };
    let proxy = Proxy::start_with(Options {
        limits,
        ..Options::default()
    })
    .await;
    let response = proxy
        .client()
        .post(format!("{}/demo/upload", proxy.url))
        .header("x-latchkey-client", &proxy.token)
        .body(vec![0u8; 4096])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
    assert_eq!(error_code(response).await, "body_too_large");
    assert_eq!(
        proxy.upstream.hits(),
        0,
        "a declared oversized body is refused before forwarding"
    );

    let chunks = futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(bytes_of(512))));
    let response = proxy
        .client()
        .post(format!("{}/demo/upload", proxy.url))
        .header("x-latchkey-client", &proxy.token)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    assert!(
        status == 413 || status == 400,
        "a streamed oversized body is cut off: {status}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_streamed_post_answered_with_an_event_stream_passes_through() {
    // MCP Streamable HTTP's shape: a POST whose answer is text/event-stream.
    let proxy = Proxy::start().await;
    let response = proxy
        .client()
        .post(format!("{}/demo/sse?n=3&interval_ms=5", proxy.url))
        .header("x-latchkey-client", &proxy.token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", "session-1")
        .header("last-event-id", "7")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let events = read_events(response, 3).await;
    assert_eq!(events.len(), 3);
    let seen = proxy.upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.headers["mcp-session-id"], "session-1");
    assert_eq!(seen.headers["last-event-id"], "7");
    assert_eq!(
        seen.headers["accept"],
        "application/json, text/event-stream"
    );
    proxy.stop().await;
}
