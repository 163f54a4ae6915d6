//! When Latchkey cannot supply a service's credential (nobody logged in, the gateway refused or is
//! down), MCP clients must show Latchkey's sentence instead of starting OAuth: never `401`, never
//! `WWW-Authenticate`, a JSON-RPC error for a JSON-RPC request, the PROTOCOL §3 body otherwise;
//! and a refused login is announced on the proxy's `login_needed` signal.

use std::sync::Arc;
use std::time::Duration;

use latchkey_proxy::{CredentialError, LoginNeeded};

use crate::support::{MapSource, Options, Proxy, SCOPED, new_raw_client};

const LOGIN_SENTENCE: &str = "Log in to Latchkey (account `work`): click Log in in the tray or run `latchkey login --account work`.";

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":42,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

/// A proxy whose `demo` service needs a login, `bearer`'s gateway is down, `broken` lacks its
/// credential and `other` is refused by the gateway.
async fn logged_out() -> Proxy {
    let source = Arc::new(MapSource::with_canaries());
    source.fail("demo", CredentialError::LoginRequired);
    source.fail("bearer", CredentialError::GatewayUnavailable);
    source.set("broken", &[("unrelated", "x")]);
    Proxy::start_with(Options {
        source,
        ..Options::default()
    })
    .await
}

/// Status, no challenge header, a JSON content type; returns the JSON body.
async fn refused(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert!(
        response.headers().get("www-authenticate").is_none(),
        "never an authorization challenge"
    );
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.expect("a JSON body")
}

fn post_json(proxy: &Proxy, path: &str, body: &str) -> reqwest::RequestBuilder {
    proxy
        .client()
        .post(format!("{}{path}", proxy.url))
        .header("x-latchkey-client", &proxy.token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_owned())
}

#[tokio::test]
async fn login_required_is_a_424_with_the_protocol_body_and_no_challenge() {
    let proxy = logged_out().await;
    let body = refused(proxy.get("/demo/mcp").send().await.expect("send"), 424).await;
    assert_eq!(
        body,
        serde_json::json!({"error": "login_required", "message": LOGIN_SENTENCE}),
        "the PROTOCOL §3 body, naming the account"
    );
    assert_eq!(proxy.upstream.hits(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_json_rpc_request_gets_a_json_rpc_error_with_its_own_id() {
    let proxy = logged_out().await;
    let body = refused(
        post_json(&proxy, "/demo/mcp", INITIALIZE)
            .send()
            .await
            .expect("send"),
        424,
    )
    .await;
    assert_eq!(
        body,
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": 42,
            "error": {
                "code": latchkey_proxy::JSONRPC_CREDENTIALS_UNAVAILABLE,
                "message": LOGIN_SENTENCE,
                "data": {"latchkey_error": "login_required", "service": "demo", "account": "work"},
            },
        })
    );
    assert_eq!(latchkey_proxy::JSONRPC_CREDENTIALS_UNAVAILABLE, -32050);

    let call = r#"{"jsonrpc":"2.0","id":"call-7","method":"tools/call","params":{"name":"x"}}"#;
    let body = refused(
        post_json(&proxy, "/demo/mcp", call)
            .send()
            .await
            .expect("send"),
        424,
    )
    .await;
    assert_eq!(
        body["id"], "call-7",
        "a string id comes back as it was sent"
    );

    let notification = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let body = refused(
        post_json(&proxy, "/demo/mcp", notification)
            .send()
            .await
            .expect("send"),
        424,
    )
    .await;
    assert_eq!(
        body["error"], "login_required",
        "a notification has no id to answer: the PROTOCOL §3 body"
    );
    assert_eq!(proxy.upstream.hits(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn every_credential_failure_answers_json_rpc_with_its_protocol_code() {
    let proxy = logged_out().await;
    proxy.source.fail("other", CredentialError::Forbidden);
    let scoped = crate::support::new_client(
        &proxy.clients,
        "wide",
        &["other".to_owned(), "demo".to_owned()],
    );
    let cases = [
        (
            "/bearer/mcp",
            proxy.token.as_str(),
            503,
            "gateway_unavailable",
        ),
        (
            "/broken/mcp",
            proxy.token.as_str(),
            424,
            "credentials_missing",
        ),
        ("/other/mcp", scoped.as_str(), 403, "credentials_forbidden"),
    ];
    for (path, token, status, code) in cases {
        let body = refused(
            proxy
                .client()
                .post(format!("{}{path}", proxy.url))
                .header("x-latchkey-client", token)
                .header("content-type", "application/json")
                .body(INITIALIZE)
                .send()
                .await
                .expect("send"),
            status,
        )
        .await;
        assert_eq!(body["id"], 42, "{code}: {body}");
        assert_eq!(body["error"]["data"]["latchkey_error"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.ends_with('.') && !m.contains("Log in")),
            "{code}: its own sentence: {body}"
        );
        let plain = refused(
            proxy
                .client()
                .get(format!("{}{path}", proxy.url))
                .header("x-latchkey-client", token)
                .send()
                .await
                .expect("send"),
            status,
        )
        .await;
        assert_eq!(plain["error"], code, "{plain}");
    }
    assert_eq!(proxy.upstream.hits(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_refused_login_is_announced_with_account_service_and_client() {
    let proxy = logged_out().await;
    let mut login_needed = proxy.state.login_needed();

    let response = post_json(&proxy, "/demo/mcp", INITIALIZE)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 424);
    let event = tokio::time::timeout(Duration::from_secs(5), login_needed.recv())
        .await
        .expect("announced in time")
        .expect("an event");
    assert_eq!(
        event,
        LoginNeeded {
            account: Some("work".to_owned()),
            service: "demo".to_owned(),
            client: "tester".to_owned(),
        }
    );

    let scoped: Vec<String> = SCOPED.iter().map(|s| (*s).to_owned()).collect();
    let native = proxy
        .client()
        .get(format!("{}/v1/credentials/demo", proxy.url))
        .header(
            "x-latchkey-client",
            new_raw_client(&proxy.clients, "native", &scoped),
        )
        .send()
        .await
        .expect("send");
    let body = refused(native, 424).await;
    assert_eq!(body["error"], "login_required");
    assert_eq!(body["message"], LOGIN_SENTENCE);
    let event = tokio::time::timeout(Duration::from_secs(5), login_needed.recv())
        .await
        .expect("announced in time")
        .expect("an event");
    assert_eq!(event.service, "demo", "a native credential read too");

    let down = proxy.get("/bearer/mcp").send().await.expect("send");
    assert_eq!(down.status(), 503);
    let _ = down.bytes().await;
    assert!(
        login_needed.try_recv().is_err(),
        "only a needed login is announced, not a gateway outage"
    );

    let rows = crate::audit::rows(&proxy).await;
    let login_rows: Vec<_> = rows
        .iter()
        .filter(|r| r.error_code.as_deref() == Some("login_required"))
        .collect();
    assert_eq!(
        login_rows.len(),
        2,
        "each refusal is audited once: {rows:?}"
    );
    assert!(login_rows.iter().all(|r| r.status == 424));
    proxy.stop().await;
}

#[tokio::test]
async fn an_unknown_service_is_404_for_a_known_client_and_401_for_anyone_else() {
    let proxy = Proxy::start().await;
    let known = refused(proxy.get("/nosuch/mcp").send().await.expect("send"), 404).await;
    assert_eq!(known["error"], "unknown_service", "not forbidden_scope");
    let native = refused(
        proxy
            .get("/v1/credentials/nosuch")
            .send()
            .await
            .expect("send"),
        404,
    )
    .await;
    assert_eq!(native["error"], "unknown_service");

    let anonymous = proxy
        .client()
        .get(format!("{}/nosuch/mcp", proxy.url))
        .send()
        .await
        .expect("send");
    let body = refused(anonymous, 401).await;
    assert_eq!(
        body["error"], "client_unauthorized",
        "a stranger learns nothing about services"
    );
    let bad_token = proxy
        .client()
        .get(format!("{}/demo/mcp", proxy.url))
        .header("x-latchkey-client", "lk_not-a-real-token")
        .send()
        .await
        .expect("send");
    let body = refused(bad_token, 401).await;
    assert_eq!(
        body["error"], "client_unauthorized",
        "a bad local token stays 401"
    );

    let out_of_scope = refused(proxy.get("/other/x").send().await.expect("send"), 403).await;
    assert_eq!(
        out_of_scope["error"], "forbidden_scope",
        "a configured service outside the token's scope"
    );
    assert_eq!(proxy.upstream.hits(), 0);
    proxy.stop().await;
}
