//! What the upstream receives: the service's credentials and nothing of the client's; paths and
//! queries joined as sent; redirects handed back, never followed; unsafe configurations refused.

use latchkey_proxy::{ConfigError, ProxyConfig, ProxyState, Route};
use url::Url;

use crate::support::{
    CANARY_BEARER, CANARY_KEY, CANARY_QUERY, CLIENT_OWN_AUTH, MapSource, Options, Proxy, Upstream,
    error_code,
};

#[tokio::test]
async fn the_client_credentials_never_reach_the_upstream_and_the_mapping_is_injected() {
    let proxy = Proxy::start().await;
    let response = proxy
        .get("/demo/things/a%20b?q=1&token=client-token&z=%2F")
        .header("authorization", format!("Bearer {CLIENT_OWN_AUTH}"))
        .header("x-api-key", "client-api-key")
        .header("cookie", "session=client")
        .header("x-forwarded-for", "10.0.0.1")
        .header("forwarded", "for=10.0.0.1")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-kept", "kept")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("set-cookie").is_none(),
        "upstream cookies are not handed out"
    );
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "no CORS headers"
    );

    let seen = proxy.upstream.last();
    let h = &seen.headers;
    assert_eq!(
        seen.uri,
        format!("/base/things/a%20b?q=1&z=%2F&token={CANARY_QUERY}"),
        "path and query joined"
    );
    assert_eq!(
        h["x-api-key"], CANARY_KEY,
        "the injected header replaces the client's"
    );
    assert_eq!(h.get_all("x-api-key").iter().count(), 1);
    assert!(
        h.get("authorization").is_none(),
        "the client's Authorization is removed"
    );
    assert!(
        h.get("x-latchkey-client").is_none(),
        "the Latchkey token is removed"
    );
    assert!(h.get("cookie").is_none(), "cookies are removed");
    assert!(
        h.get("x-forwarded-for").is_none() && h.get("forwarded").is_none(),
        "no forwarding headers"
    );
    assert!(h.get("proxy-authorization").is_none());
    assert_eq!(h["x-kept"], "kept", "other headers pass through");
    assert_eq!(
        h["host"],
        proxy.upstream.addr.to_string(),
        "Host is the upstream authority"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_injected_authorization_header_replaces_the_clients() {
    let proxy = Proxy::start().await;
    let response = proxy
        .get("/bearer/echo")
        .header("authorization", format!("Bearer {CLIENT_OWN_AUTH}"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let seen = proxy.upstream.last();
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {CANARY_BEARER}")
    );
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn the_query_string_is_kept_when_nothing_is_injected_there() {
    let proxy = Proxy::start().await;
    proxy
        .get("/bearer/search?q=a+b&page=2&token=mine")
        .send()
        .await
        .expect("send");
    assert_eq!(
        proxy.upstream.last().uri,
        "/base/search?q=a+b&page=2&token=mine"
    );
    proxy.get("/bearer").send().await.expect("send");
    assert_eq!(
        proxy.upstream.last().uri,
        "/base",
        "the bare service maps to the base path"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn dot_segments_are_refused() {
    let proxy = Proxy::start().await;
    let request = format!(
        "GET /demo/%2e%2e/admin HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Latchkey-Client: {}\r\nConnection: close\r\n\r\n",
        proxy.port, proxy.token
    );
    let (status, body) = crate::support::raw_request(proxy.port, &request).await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid_path"), "{body}");
    assert_eq!(proxy.upstream.hits(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_credential_with_a_newline_is_refused_not_sent() {
    let proxy = Proxy::start().await;
    let response = proxy.get("/broken/echo").send().await.expect("send");
    assert_eq!(response.status(), 502);
    assert_eq!(error_code(response).await, "credentials_invalid");
    assert_eq!(proxy.upstream.hits(), 0, "nothing was sent");
    proxy.stop().await;
}

#[tokio::test]
async fn credential_failures_map_to_protocol_codes() {
    let source = std::sync::Arc::new(MapSource::with_canaries());
    source.fail("demo", latchkey_proxy::CredentialError::LoginRequired);
    source.fail(
        "bearer",
        latchkey_proxy::CredentialError::GatewayUnavailable,
    );
    source.set("broken", &[("unrelated", "x")]);
    let proxy = Proxy::start_with(Options {
        source,
        ..Options::default()
    })
    .await;

    let response = proxy.get("/demo/echo").send().await.expect("send");
    assert_eq!(
        response.status(),
        424,
        "never 401: MCP clients would start OAuth"
    );
    assert_eq!(error_code(response).await, "login_required");
    let response = proxy.get("/bearer/echo").send().await.expect("send");
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(response).await, "gateway_unavailable");
    let response = proxy.get("/broken/echo").send().await.expect("send");
    assert_eq!(response.status(), 424);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"], "credentials_missing");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("api_key")),
        "names the missing credential"
    );
    assert_eq!(proxy.upstream.hits(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_redirect_is_returned_not_followed() {
    let elsewhere = Upstream::start().await;
    let upstream = Upstream::start_with_redirect(Some(elsewhere.url())).await;
    let proxy = Proxy::start_in_front_of(upstream, Options::default()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = client
        .get(format!("{}/demo/redirect", proxy.url))
        .header("x-latchkey-client", &proxy.token)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        format!("{}/landing", elsewhere.url())
    );
    assert_eq!(proxy.upstream.hits(), 1);
    assert_eq!(elsewhere.hits(), 0, "the proxy did not follow the redirect");
    proxy.stop().await;
}

#[tokio::test]
async fn an_upstream_error_status_passes_through_untouched() {
    let proxy = Proxy::start().await;
    let response = proxy.get("/demo/status/500").send().await.expect("send");
    assert_eq!(response.status(), 500);
    assert_eq!(response.text().await.expect("body"), "upstream broke");
    proxy.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let (proxy, status, body) =
        get_through_one_service("gone", &format!("http://127.0.0.1:{port}/"), vec![], &[]).await;
    assert_eq!(status, 502);
    assert!(body.contains("upstream_unreachable"), "{body}");
    assert!(
        !body.contains(&port.to_string()),
        "a 5xx reveals nothing internal: {body}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_plain_http_upstream_off_this_machine_is_refused_at_construction() {
    let url = Url::parse("http://api.example.com/").expect("url");
    let err = Route::new("remote", url.clone(), vec![]).expect_err("refused by Route::new");
    assert_eq!(err.code(), latchkey_core::Code::InsecureUpstream);

    let sneaked = Route {
        service: "remote".to_owned(),
        upstream: url,
        injections: vec![],
        identity_token: false,
    };
    let config = ProxyConfig {
        services: vec![sneaked],
        ..ProxyConfig::default()
    };
    let dir = tempfile::tempdir().expect("dir");
    let db = latchkey_store::Database::open(&dir.path().join("db")).expect("db");
    let state = ProxyState::new(
        config,
        std::sync::Arc::new(MapSource::default()),
        latchkey_store::ClientRegistry::open(&db).expect("clients"),
        latchkey_store::AuditLog::open(&db, latchkey_store::Retention::default()).expect("audit"),
        latchkey_proxy::ConnectionRegistry::default(),
        None,
    );
    assert!(
        matches!(state, Err(ConfigError::InsecureUpstream { .. })),
        "ProxyState::new validates too"
    );
}

/// An https upstream whose certificate no trusted root signed (a fresh self-signed one, as a
/// machine in the middle would present): the proxy refuses it while connecting, so neither the
/// request nor the credential it would carry is ever sent.
#[tokio::test]
async fn an_upstream_with_an_untrusted_certificate_gets_nothing_and_the_client_a_502() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("self-signed certificate");
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .expect("a PKCS#8 key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (connections, handshakes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (seen, done) = (Arc::clone(&connections), Arc::clone(&handshakes));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            if acceptor.accept(stream).await.is_ok() {
                done.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    let (proxy, status, body) = get_through_one_service(
        "mitm",
        &format!("https://{addr}/"),
        vec![crate::support::header_injection("api_key", "X-API-Key", "")],
        &[("api_key", CANARY_KEY)],
    )
    .await;
    assert_eq!(status, 502);
    assert!(body.contains("upstream_unreachable"), "{body}");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "the proxy did try");
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        0,
        "no TLS session was set up, so no byte of the request (or its credential) was sent"
    );
    proxy.stop().await;
}

/// A proxy with one more service, `name`, to `upstream`, holding `credentials`, and a client
/// scoped to it; that client's `GET /{name}/x`, answered: the proxy (to stop), status and body.
async fn get_through_one_service(
    name: &str,
    upstream: &str,
    injections: Vec<latchkey_proxy::Injection>,
    credentials: &[(&str, &str)],
) -> (Proxy, u16, String) {
    let route = Route::new(name, Url::parse(upstream).expect("url"), injections).expect("route");
    let proxy = Proxy::start_with(Options {
        extra_routes: vec![route],
        ..Options::default()
    })
    .await;
    proxy.source.set(name, credentials);
    let token = crate::support::new_client(
        &proxy.clients,
        &format!("{name}-client"),
        &[name.to_owned()],
    );
    let response = proxy
        .client()
        .get(format!("{}/{name}/x", proxy.url))
        .header("x-latchkey-client", &token)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (proxy, status, response.text().await.expect("body"))
}
