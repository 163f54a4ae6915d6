//! The proxy's own endpoints: `/v1/status` and `/v1/credentials/{service}`. Raw credentials
//! leave only through `latchkey exec` (the control token) or to a client given that right, an
//! account's IdP access token never to a local client, and every read is audited.

use url::Url;

use crate::support::{
    CANARY_KEY, CANARY_QUERY, Options, Proxy, SCOPED, error_code, header_injection, new_raw_client,
};

/// The control token the harness's instance accepts (as `latchkey exec` presents it).
const CONTROL_TOKEN: &str = "lk_control_token_for_the_native_tests";

/// A proxy with a control token and an `idp` service whose credential is the account's access
/// token.
async fn proxy_with_exec() -> Proxy {
    let upstream = crate::support::Upstream::start().await;
    let base = Url::parse(&format!("{}/base/", upstream.url())).expect("url");
    let idp = latchkey_proxy::Route::new(
        "idp",
        base,
        vec![header_injection("access_token", "Authorization", "Bearer ")],
    )
    .expect("idp route")
    .with_identity_token();
    let proxy = Proxy::start_in_front_of(
        upstream,
        Options {
            control_token: Some(CONTROL_TOKEN.to_owned()),
            extra_routes: vec![idp],
            ..Options::default()
        },
    )
    .await;
    proxy
        .source
        .set("idp", &[("access_token", "canary-idp-access-token-77a1")]);
    proxy
}

fn scoped_with(extra: &[&str]) -> Vec<String> {
    SCOPED
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect()
}

async fn read(proxy: &Proxy, token: &str, service: &str) -> reqwest::Response {
    proxy
        .client()
        .get(format!("{}/v1/credentials/{service}", proxy.url))
        .header("x-latchkey-client", token)
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn status_needs_a_token_and_shows_no_secrets() {
    let proxy = proxy_with_exec().await;
    let anonymous = proxy
        .client()
        .get(format!("{}/v1/status", proxy.url))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(error_code(anonymous).await, "client_unauthorized");

    let response = proxy
        .client()
        .get(format!("{}/v1/status", proxy.url))
        .header("x-latchkey-client", CONTROL_TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let status: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        status["user"], "alice@example.test",
        "the credential source's whole status, for the latchkey command"
    );
    assert_eq!(status["proxy"]["port"], proxy.port);
    assert_eq!(status["proxy"]["clients"], 1);
    for secret in [CANARY_KEY, CANARY_QUERY, proxy.token.as_str()] {
        assert!(!text.contains(secret), "no secret in the status");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_sees_only_its_own_services_in_the_status_and_not_who_is_logged_in() {
    let proxy = proxy_with_exec().await;
    let response = proxy.get("/v1/status").send().await.expect("send");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let status: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert!(
        !text.contains("alice"),
        "a client is not told the user's name or e-mail: {text}"
    );
    let mut services: Vec<&str> = status["proxy"]["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    services.sort_unstable();
    assert_eq!(
        services,
        ["bearer", "broken", "demo"],
        "its scope, not `other` or `idp` (`mcp` is in its scope but not configured here)"
    );
    assert!(
        status["proxy"].get("clients").is_none() && status["proxy"].get("connections").is_none(),
        "nothing about other clients: {text}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_plain_client_cannot_read_raw_credentials() {
    let proxy = proxy_with_exec().await;
    let response = read(&proxy, &proxy.token, "demo").await;
    assert_eq!(response.status(), 403);
    let text = response.text().await.expect("body");
    assert!(!text.contains(CANARY_KEY) && !text.contains(CANARY_QUERY));
    let body: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["error"], "forbidden_raw_credentials");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("latchkey exec")),
        "the refusal says how to get credentials legitimately: {body}"
    );
    let proxied = proxy.get("/demo/echo").send().await.expect("send");
    assert_eq!(
        proxied.status(),
        200,
        "the same token still works through the proxy"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn credentials_are_served_to_latchkey_exec_and_to_a_client_given_the_right() {
    let proxy = proxy_with_exec().await;
    let trusted = new_raw_client(&proxy.clients, "native", &scoped_with(&[]));
    for token in [CONTROL_TOKEN, trusted.as_str()] {
        let response = read(&proxy, token, "demo").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["data"]["api_key"], CANARY_KEY);
        assert_eq!(body["data"]["query_token"], CANARY_QUERY);
    }
    assert_eq!(proxy.upstream.hits(), 0, "served by the proxy itself");
    proxy.stop().await;
}

#[tokio::test]
async fn an_accounts_access_token_goes_to_latchkey_exec_only() {
    let proxy = proxy_with_exec().await;
    let trusted = new_raw_client(&proxy.clients, "native", &scoped_with(&["idp"]));
    let response = read(&proxy, &trusted, "idp").await;
    assert_eq!(response.status(), 403);
    let text = response.text().await.expect("body");
    assert!(!text.contains("canary-idp-access-token"), "{text}");
    assert!(text.contains("forbidden_raw_credentials"), "{text}");

    let response = read(&proxy, CONTROL_TOKEN, "idp").await;
    assert_eq!(response.status(), 200, "latchkey exec may");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["data"]["access_token"], "canary-idp-access-token-77a1");

    let proxied = proxy
        .client()
        .get(format!("{}/idp/echo", proxy.url))
        .header("x-latchkey-client", &trusted)
        .send()
        .await
        .expect("send");
    assert_eq!(
        proxied.status(),
        200,
        "it is still injected through the proxy"
    );
    assert_eq!(
        proxy.upstream.last().headers["authorization"],
        "Bearer canary-idp-access-token-77a1"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn every_raw_credential_read_and_refusal_is_audited_with_its_caller() {
    let proxy = proxy_with_exec().await;
    let trusted = new_raw_client(&proxy.clients, "native", &scoped_with(&[]));
    assert_eq!(read(&proxy, CONTROL_TOKEN, "demo").await.status(), 200);
    assert_eq!(read(&proxy, &trusted, "demo").await.status(), 200);
    assert_eq!(read(&proxy, &proxy.token, "demo").await.status(), 403);
    let recorded =
        crate::support::eventually_async(|| async { crate::audit::rows(&proxy).await.len() >= 3 })
            .await;
    assert!(recorded, "three reads recorded");
    let rows: Vec<(Option<String>, String, u16)> = crate::audit::rows(&proxy)
        .await
        .into_iter()
        .map(|r| (r.client, r.path, r.status))
        .collect();
    let path = "/v1/credentials/demo".to_owned();
    assert_eq!(
        rows,
        [
            (Some("latchkey".to_owned()), path.clone(), 200),
            (Some("native".to_owned()), path.clone(), 200),
            (Some("tester".to_owned()), path, 403),
        ]
    );
    proxy.stop().await;
}

#[tokio::test]
async fn credentials_are_scope_checked_like_a_route() {
    let proxy = proxy_with_exec().await;
    let trusted = new_raw_client(&proxy.clients, "native", &scoped_with(&[]));
    let response = read(&proxy, &trusted, "other").await;
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response).await, "forbidden_scope");
    let response = proxy
        .client()
        .post(format!("{}/v1/credentials/demo", proxy.url))
        .header("x-latchkey-client", &trusted)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 405);
    let response = proxy.get("/v1/nothing-here").send().await.expect("send");
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "not_found");
    proxy.stop().await;
}
