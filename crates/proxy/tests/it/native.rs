//! The proxy's own endpoints: `/v1/status` and `/v1/credentials/{service}`.

use crate::support::{CANARY_KEY, CANARY_QUERY, Proxy, error_code};

#[tokio::test]
async fn status_needs_a_token_and_shows_no_secrets() {
    let proxy = Proxy::start().await;
    let anonymous = proxy
        .client()
        .get(format!("{}/v1/status", proxy.url))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(error_code(anonymous).await, "client_unauthorized");

    let response = proxy.get("/v1/status").send().await.expect("send");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let status: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        status["user"], "alice@example.test",
        "the credential source's status"
    );
    assert_eq!(status["proxy"]["port"], proxy.port);
    assert!(
        status["proxy"]["services"]
            .as_array()
            .is_some_and(|s| s.iter().any(|v| v == "demo"))
    );
    assert_eq!(status["proxy"]["clients"], 1);
    for secret in [CANARY_KEY, CANARY_QUERY, proxy.token.as_str()] {
        assert!(!text.contains(secret), "no secret in the status");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn credentials_are_served_in_the_gateway_shape_and_never_cached() {
    let proxy = Proxy::start().await;
    let response = proxy
        .get("/v1/credentials/demo")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["data"]["api_key"], CANARY_KEY);
    assert_eq!(body["data"]["query_token"], CANARY_QUERY);
    assert_eq!(proxy.upstream.hits(), 0, "served by the proxy itself");
    proxy.stop().await;
}

#[tokio::test]
async fn credentials_are_scope_checked_like_a_route() {
    let proxy = Proxy::start().await;
    let response = proxy
        .get("/v1/credentials/other")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response).await, "forbidden_scope");
    let response = proxy
        .client()
        .post(format!("{}/v1/credentials/demo", proxy.url))
        .header("x-latchkey-client", &proxy.token)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 405);
    let response = proxy.get("/v1/nothing-here").send().await.expect("send");
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "not_found");
    proxy.stop().await;
}
