//! A control router mounted with `ProxyState::with_control` sits behind the Host, Origin and
//! client-token gates (and then does its own authentication: the runtime's wants the control
//! token).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::get;

use crate::support::{Options, Proxy, error_code, raw_request};

/// A proxy whose control router answers `GET /v1/control/ping` and counts its calls.
async fn proxy_with_control() -> (Proxy, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let control = axum::Router::new().route(
        "/ping",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "pong" }
        }),
    );
    let proxy = Proxy::start_with(Options {
        control: Some(control),
        ..Options::default()
    })
    .await;
    (proxy, calls)
}

#[tokio::test]
async fn the_control_router_is_reached_by_a_local_caller_with_a_token_only() {
    let (proxy, calls) = proxy_with_control().await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let anonymous = http
        .get(format!("{}/v1/control/ping", proxy.url))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(error_code(anonymous).await, "client_unauthorized");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "not reached without a token"
    );

    let response = http
        .get(format!("{}/v1/control/ping", proxy.url))
        .bearer_auth(&proxy.token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "pong");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn the_control_router_is_behind_the_host_gate() {
    let (proxy, calls) = proxy_with_control().await;
    let request = format!(
        "GET /v1/control/ping HTTP/1.1\r\nHost: rebind.test:{}\r\nConnection: close\r\n\r\n",
        proxy.port
    );
    let (status, body) = raw_request(proxy.port, &request).await;
    assert_eq!(status, 403);
    assert!(body.contains("\"forbidden_host\""), "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "never reached");
    proxy.stop().await;
}

#[tokio::test]
async fn the_control_router_is_behind_the_origin_gate() {
    let (proxy, calls) = proxy_with_control().await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let from_a_page = http
        .get(format!("{}/v1/control/ping", proxy.url))
        .header("origin", "https://evil.test")
        .send()
        .await
        .expect("request");
    assert_eq!(from_a_page.status(), 403);
    assert!(
        from_a_page
            .headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "no CORS headers"
    );
    assert_eq!(error_code(from_a_page).await, "forbidden_origin");
    let cross_site = http
        .get(format!("{}/v1/control/ping", proxy.url))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("request");
    assert_eq!(cross_site.status(), 403);
    assert_eq!(error_code(cross_site).await, "forbidden_origin");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "never reached");
    proxy.stop().await;
}
