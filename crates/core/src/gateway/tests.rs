//! Gateway client tests against a real loopback server (wiremock).

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;

const ENDPOINT: &str = "/api/v1/credentials/github";
const TOKEN: &str = "canary-jwt-0a7e";
const API_KEY: &str = "canary-apikey-93bd";
const VALUE: &str = "canary-value-4c21";

fn client(url: &str, timeout: Duration) -> GatewayClient {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    GatewayClient::new(http, Url::parse(url).expect("url"), timeout)
}

fn required(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// A server answering `response` once to a request carrying both headers.
async fn gateway(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(ENDPOINT))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("x-api-key", API_KEY))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    server
}

async fn fetch(
    server: &MockServer,
    names: &[&str],
) -> Result<BTreeMap<String, Secret>, GatewayError> {
    client(&server.uri(), Duration::from_secs(5))
        .fetch(
            ENDPOINT,
            &Secret::new(TOKEN),
            &Secret::new(API_KEY),
            &required(names),
        )
        .await
}

fn assert_no_secret(err: &GatewayError) {
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("canary"), "no value in error output: {text}");
    }
}

async fn fetch_err(response: ResponseTemplate, names: &[&str]) -> GatewayError {
    let server = gateway(response).await;
    let err = fetch(&server, names).await.expect_err("the fetch fails");
    assert_no_secret(&err);
    err
}

#[tokio::test]
async fn success_returns_values_and_sends_both_headers() {
    let server = gateway(
        ResponseTemplate::new(200).set_body_json(json!({"data": {"token": VALUE, "org": "acme"}})),
    )
    .await;
    let values = fetch(&server, &["token"]).await.expect("credentials");
    assert_eq!(values.get("token").map(Secret::expose), Some(VALUE));
    assert_eq!(values.get("org").map(Secret::expose), Some("acme"));
    assert!(
        !format!("{values:?}").contains("canary"),
        "Debug of values is redacted"
    );
}

#[tokio::test]
async fn bare_object_without_data_is_accepted() {
    let server = gateway(ResponseTemplate::new(200).set_body_json(json!({"token": VALUE}))).await;
    let values = fetch(&server, &["token"]).await.expect("credentials");
    assert_eq!(values.get("token").map(Secret::expose), Some(VALUE));
}

#[tokio::test]
async fn missing_names_are_listed() {
    let err = fetch_err(
        ResponseTemplate::new(200).set_body_json(json!({"data": {"token": VALUE}})),
        &["token", "secret", "user"],
    )
    .await;
    assert_eq!(err.code(), crate::Code::CredentialsMissing);
    match &err {
        GatewayError::MissingCredentials { names } => {
            assert_eq!(names, &required(&["secret", "user"]));
        }
        other => panic!("expected MissingCredentials, got {other:?}"),
    }
    assert!(err.to_string().contains("secret, user"), "{err}");
}

#[tokio::test]
async fn non_object_data_is_an_invalid_answer() {
    let err = fetch_err(
        ResponseTemplate::new(200).set_body_json(json!({"data": [VALUE]})),
        &["token"],
    )
    .await;
    assert_eq!(err.code(), crate::Code::GatewayInvalidAnswer);
    let err = fetch_err(
        ResponseTemplate::new(200).set_body_json(json!({"data": {"token": 42, "x": VALUE}})),
        &["token"],
    )
    .await;
    assert_eq!(err.code(), crate::Code::GatewayInvalidAnswer);
    let err = fetch_err(
        ResponseTemplate::new(200).set_body_string(format!("<html>{VALUE}")),
        &["token"],
    )
    .await;
    assert!(matches!(err, GatewayError::InvalidAnswer { .. }));
}

#[tokio::test]
async fn status_codes_map_to_distinct_errors() {
    let unauthorized = fetch_err(ResponseTemplate::new(401), &[]).await;
    assert!(matches!(unauthorized, GatewayError::Unauthorized));
    assert!(unauthorized.to_string().contains("log in again"));

    let forbidden = fetch_err(ResponseTemplate::new(403), &[]).await;
    assert!(matches!(forbidden, GatewayError::Forbidden { .. }));
    assert!(
        forbidden.to_string().contains("ask your administrator"),
        "{forbidden}"
    );

    let not_configured = fetch_err(ResponseTemplate::new(404), &[]).await;
    assert!(matches!(not_configured, GatewayError::NotConfigured { .. }));
    assert!(
        not_configured.to_string().contains("add them there"),
        "{not_configured}"
    );

    let server_error = fetch_err(
        ResponseTemplate::new(500).set_body_string(format!("trace with {VALUE}")),
        &[],
    )
    .await;
    assert!(matches!(server_error, GatewayError::Unavailable { .. }));
    assert!(server_error.to_string().contains("unavailable"));

    let codes = [
        unauthorized.code(),
        forbidden.code(),
        not_configured.code(),
        server_error.code(),
    ];
    let distinct: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(distinct.len(), codes.len(), "codes are distinct: {codes:?}");
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = client(&format!("http://{addr}"), Duration::from_secs(5))
        .fetch(ENDPOINT, &Secret::new(TOKEN), &Secret::new(API_KEY), &[])
        .await
        .expect_err("nobody listens");
    assert_eq!(err.code(), crate::Code::GatewayUnavailable);
    assert_no_secret(&err);
}

#[tokio::test]
async fn slow_gateway_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": {"token": VALUE}}))
                .set_delay(Duration::from_secs(10)),
        )
        .mount(&server)
        .await;
    let err = client(&server.uri(), Duration::from_millis(200))
        .fetch(ENDPOINT, &Secret::new(TOKEN), &Secret::new(API_KEY), &[])
        .await
        .expect_err("too slow");
    assert!(matches!(err, GatewayError::Timeout), "{err:?}");
    assert_eq!(err.code(), crate::Code::GatewayTimeout);
    assert_no_secret(&err);
}

#[tokio::test]
async fn base_url_with_path_and_trailing_slash_is_joined() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/prefix{ENDPOINT}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {"token": VALUE}})))
        .expect(1)
        .mount(&server)
        .await;
    let values = client(&format!("{}/prefix/", server.uri()), Duration::from_secs(5))
        .fetch(ENDPOINT, &Secret::new(TOKEN), &Secret::new(API_KEY), &[])
        .await
        .expect("credentials");
    assert_eq!(values.len(), 1);
}

#[tokio::test]
async fn malformed_api_key_is_refused_before_sending() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let err = client(&server.uri(), Duration::from_secs(5))
        .fetch(
            ENDPOINT,
            &Secret::new(TOKEN),
            &Secret::new("canary-key\nInjected: header"),
            &[],
        )
        .await
        .expect_err("a key with a newline cannot be sent");
    assert_eq!(err.code(), crate::Code::GatewayApiKeyInvalid);
    assert_no_secret(&err);
}
