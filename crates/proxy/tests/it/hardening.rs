//! What a client holding a valid token still cannot do, and what a web page cannot make the proxy
//! write (issue 10; `SECURITY.md`, "What the proxy refuses"): methods that echo or tunnel, paths
//! that climb out of a service's base in any spelling, look-alike spellings of an injected header,
//! redirects that would carry the credential back or lead around the proxy, and audit rows from
//! requests refused at the Host or Origin gate.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use url::Url;

use crate::support::{
    CANARY_KEY, CANARY_QUERY, Options, Proxy, error_code, header_injection, query_injection,
    raw_request,
};

/// A request for `target` with the harness client's token, through a raw socket so the bytes
/// are exactly these (reqwest would normalise the path).
async fn raw_get(proxy: &Proxy, method: &str, target: &str, extra: &str) -> (u16, String) {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Latchkey-Client: {}\r\n{extra}Connection: close\r\n\r\n",
        proxy.port, proxy.token
    );
    raw_request(proxy.port, &request).await
}

#[tokio::test]
async fn trace_track_and_connect_are_refused_before_any_upstream() {
    let proxy = Proxy::start().await;
    for method in ["TRACE", "TRACK", "trace"] {
        let (status, body) = raw_get(&proxy, method, "/demo/echo", "").await;
        assert_eq!(status, 405, "{method}: a TRACE would echo the injected key");
        assert!(body.contains("\"method_not_allowed\""), "{method}: {body}");
    }
    let target = format!("127.0.0.1:{}", proxy.port);
    let (status, _) = raw_get(&proxy, "CONNECT", &target, "").await;
    assert_eq!(status, 405, "CONNECT");
    assert_eq!(proxy.upstream.hits(), 0, "nothing reached the upstream");
    proxy.stop().await;
}

#[tokio::test]
async fn climbing_paths_are_refused_in_every_spelling() {
    let proxy = Proxy::start().await;
    for attack in [
        "/demo/..;/admin",
        "/demo/x/..;jsessionid=1/admin",
        "/demo/..%5cadmin",
        "/demo/..%5Cadmin",
        "/demo/..%2fadmin",
        "/demo/%2e%2e%2fadmin",
        "/demo/%2e%2e/admin",
        "/demo/%252e%252e%252fadmin",
        "/demo/.%2E/admin",
        "/demo/a%2Fb",
    ] {
        let (status, body) = raw_get(&proxy, "GET", attack, "").await;
        assert_eq!(status, 400, "{attack}: {body}");
        assert!(body.contains("\"invalid_path\""), "{attack}: {body}");
    }
    let (status, _) = raw_get(&proxy, "GET", "/demo/..\\admin", "").await;
    assert_eq!(status, 400, "a literal backslash");
    assert_eq!(proxy.upstream.hits(), 0, "no attack reached the upstream");
    proxy.stop().await;
}

#[tokio::test]
async fn the_upstream_sees_one_canonical_spelling_of_a_path() {
    let proxy = Proxy::start().await;
    let cases = [
        ("/demo/a%20b/%7Euser/%41", "/base/a%20b/~user/A"),
        ("/demo/items;jsessionid=1/x", "/base/items/x"),
        ("/demo/%2541", "/base/A"),
        ("/demo/caf%c3%a9", "/base/caf%C3%A9"),
    ];
    for (sent, seen) in cases {
        let (status, body) = raw_get(&proxy, "GET", sent, "").await;
        assert_eq!(status, 200, "{sent}: {body}");
        let uri = proxy.upstream.last().uri;
        let path = uri.split('?').next().unwrap_or_default();
        assert_eq!(path, seen, "{sent}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn look_alike_spellings_of_an_injected_header_never_reach_the_upstream() {
    let proxy = Proxy::start().await;
    let extra = format!(
        "X_API_Key: client-chosen-1\r\nx_api-key: client-chosen-2\r\nX-Api-Key: client-chosen-3\r\nX_Latchkey_Client: {}\r\nX_Forwarded_For: 10.0.0.1\r\n",
        proxy.token
    );
    let (status, body) = raw_get(&proxy, "GET", "/demo/echo", &extra).await;
    assert_eq!(status, 200, "{body}");
    let seen = proxy.upstream.last().headers;
    let values: Vec<&str> = seen
        .iter()
        .filter(|(name, _)| name.as_str().replace('_', "-") == "x-api-key")
        .filter_map(|(_, v)| v.to_str().ok())
        .collect();
    assert_eq!(
        values,
        [CANARY_KEY],
        "only the injected key, under its own name (a WSGI server would merge the others)"
    );
    for (name, value) in &seen {
        let canonical = name.as_str().replace('_', "-");
        assert!(
            canonical != "x-latchkey-client" && !canonical.starts_with("x-forwarded-"),
            "{name} reached the upstream"
        );
        assert!(
            !value
                .as_bytes()
                .windows(proxy.token.len())
                .any(|w| w == proxy.token.as_bytes()),
            "the client token reached the upstream in {name}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn refusals_at_the_host_and_origin_gates_are_never_audited() {
    let proxy = Proxy::start().await;
    for (name, value) in [
        ("origin", "https://evil.test"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let response = proxy
            .get("/demo/chosen-by-the-page")
            .header(name, value)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 403, "{name}: {value}");
        assert_eq!(error_code(response).await, "forbidden_origin");
    }
    let foreign_host = format!(
        "GET /demo/chosen-by-the-page HTTP/1.1\r\nHost: evil.test:{}\r\nX-Latchkey-Client: {}\r\nConnection: close\r\n\r\n",
        proxy.port, proxy.token
    );
    let (status, _) = raw_request(proxy.port, &foreign_host).await;
    assert_eq!(status, 403);
    let ok = proxy.get("/demo/echo").send().await.expect("send");
    assert_eq!(ok.status(), 200);
    let _ = ok.bytes().await;
    let recorded =
        crate::support::eventually_async(|| async { !crate::audit::rows(&proxy).await.is_empty() })
            .await;
    assert!(recorded, "the legitimate request is recorded");
    let paths: Vec<String> = crate::audit::rows(&proxy)
        .await
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(
        paths,
        ["/demo/echo"],
        "a page cannot write rows of its choosing into the audit log"
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Redirects

/// An upstream that answers redirects built from the URL it was asked for, injected query
/// parameter included, as real APIs do.
struct Redirector {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Redirector {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app =
            axum::Router::new().fallback(move |req: Request| async move { redirect(addr, req) });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self { addr, _stop: stop }
    }
}

fn redirect(addr: SocketAddr, req: Request) -> Response {
    let query = req.uri().query().unwrap_or_default().to_owned();
    let own = format!("http://{addr}");
    let location = match req.uri().path() {
        "/base/old" => format!("{own}/base/new?{query}"),
        "/base/relative" => format!("/base/new?{query}"),
        "/base/outside" => format!("/login?{query}"),
        "/base/away" => format!("https://elsewhere.test/cb?{query}"),
        _ => return (StatusCode::OK, "landed").into_response(),
    };
    Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header(header::LOCATION, location)
        .header(header::CONTENT_LOCATION, format!("{own}/base/old?{query}"))
        .header(
            header::LINK,
            format!("<{own}/base/items?page=2&{query}>; rel=\"next\", <https://docs.test/>; rel=\"help\""),
        )
        .body(axum::body::Body::empty())
        .expect("response")
}

#[tokio::test]
async fn redirects_come_back_through_the_proxy_without_the_injected_parameter() {
    let redirector = Redirector::start().await;
    let base = Url::parse(&format!("http://{}/base/", redirector.addr)).expect("url");
    let route = latchkey_proxy::Route::new(
        "redir",
        base,
        vec![
            header_injection("api_key", "X-API-Key", ""),
            query_injection("query_token", "token"),
        ],
    )
    .expect("route");
    let proxy = Proxy::start_with(Options {
        extra_routes: vec![route],
        ..Options::default()
    })
    .await;
    proxy.source.set(
        "redir",
        &[("api_key", CANARY_KEY), ("query_token", CANARY_QUERY)],
    );
    let scoped = ["redir".to_owned()];
    let token = crate::support::new_client(&proxy.clients, "follower", &scoped);
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let own = format!("http://{}", redirector.addr);
    let cases = [
        ("/redir/old?x=1", "/redir/new?x=1".to_owned()),
        ("/redir/relative?x=1", "/redir/new?x=1".to_owned()),
        ("/redir/outside?x=1", format!("{own}/login?x=1")),
        (
            "/redir/away?x=1",
            "https://elsewhere.test/cb?x=1".to_owned(),
        ),
    ];
    for (path, expected) in cases {
        let response = http
            .get(format!("{}{path}", proxy.url))
            .header("x-latchkey-client", &token)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 301, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers[header::LOCATION], expected.as_str(), "{path}");
        assert_eq!(
            headers[header::CONTENT_LOCATION],
            "/redir/old?x=1",
            "{path}"
        );
        assert_eq!(
            headers[header::LINK],
            "</redir/items?page=2&x=1>; rel=\"next\", <https://docs.test/>; rel=\"help\"",
            "{path}"
        );
        for (name, value) in &headers {
            let value = value.to_str().unwrap_or_default();
            assert!(
                !value.contains(CANARY_QUERY) && !value.contains(CANARY_KEY),
                "{path}: the credential came back in {name}: {value}"
            );
        }
    }
    proxy.stop().await;
}

#[tokio::test]
async fn both_loopback_listeners_or_none() {
    let Ok(squatter) = std::net::TcpListener::bind("[::1]:0") else {
        // No IPv6 loopback on this machine ("unavailable", not "taken"): IPv4 alone.
        let listeners = latchkey_proxy::bind_loopback(0).expect("ipv4");
        assert_eq!(listeners.len(), 1);
        return;
    };
    let port = squatter.local_addr().expect("addr").port();
    let err =
        latchkey_proxy::bind_loopback(port).expect_err("another program holds [::1] on the port");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(
        err.to_string().contains("[::1]"),
        "names the address: {err}"
    );
    let v4 =
        latchkey_proxy::bind_loopback_ipv4(port).expect("IPv4 only when the configuration says so");
    assert_eq!(v4.len(), 1);
    drop(v4);
    let both = latchkey_proxy::bind_loopback(0).expect("port 0 finds a port free on both");
    assert_eq!(both.len(), 2, "127.0.0.1 and [::1]");
    let ports: Vec<u16> = both
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    assert_eq!(ports[0], ports[1], "the same port on both");
}
