//! A full mix of traffic with every log level of every crate captured: no credential and no
//! client token appears in any log line.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    CANARY_BEARER, CANARY_KEY, CANARY_QUERY, CLIENT_OWN_AUTH, Proxy, SCOPED, captured_logs,
    new_raw_client, open_tunnel, read_events,
};

#[tokio::test]
async fn no_canary_credential_or_client_token_reaches_the_logs() {
    let proxy = Proxy::start().await;
    let client = proxy.client();

    // Proxied with header + query injection, the client's own secrets stripped.
    let ok = proxy
        .get("/demo/echo?token=client-token&q=1")
        .header("authorization", format!("Bearer {CLIENT_OWN_AUTH}"))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        proxy
            .get("/bearer/echo")
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    // Streams, refusals, failures and the native endpoints.
    let sse = proxy
        .get("/demo/sse?n=3&interval_ms=5")
        .send()
        .await
        .expect("send");
    assert_eq!(read_events(sse, 3).await.len(), 3);
    assert_eq!(
        proxy
            .get("/broken/echo")
            .send()
            .await
            .expect("send")
            .status(),
        502
    );
    assert_eq!(
        proxy
            .get("/other/echo")
            .send()
            .await
            .expect("send")
            .status(),
        403
    );
    let wrong = client
        .get(format!("{}/demo/echo", proxy.url))
        .header("x-latchkey-client", format!("{}x", proxy.token))
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    let scoped: Vec<String> = SCOPED.iter().map(|s| (*s).to_owned()).collect();
    let raw = new_raw_client(&proxy.clients, "native", &scoped);
    assert_eq!(
        client
            .get(format!("{}/v1/credentials/demo", proxy.url))
            .header("x-latchkey-client", &raw)
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    assert_eq!(
        proxy.get("/v1/status").send().await.expect("send").status(),
        200
    );
    // A WebSocket exchange.
    let mut socket = open_tunnel(&proxy).await;
    socket.send(Message::text("ping")).await.expect("send");
    assert!(socket.next().await.is_some());
    socket.close(None).await.expect("close");
    let token = proxy.token.clone();
    proxy.stop().await;

    let logs = captured_logs();
    if std::env::var_os("LATCHKEY_SHOW_LOGS").is_some() {
        eprintln!("{logs}");
    }
    assert!(
        logs.contains("request"),
        "the capture saw the proxy's request logs"
    );
    let wrong_token = format!("{token}x");
    for secret in [
        CANARY_KEY,
        CANARY_QUERY,
        CANARY_BEARER,
        CLIENT_OWN_AUTH,
        token.as_str(),
        wrong_token.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}
