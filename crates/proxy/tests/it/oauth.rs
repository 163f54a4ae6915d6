//! An MCP host that starts OAuth against the proxy (after a `401 client_unauthorized`) gets a
//! quick JSON `404` for every discovery document and for `/register`, `/authorize` and `/token`:
//! before the client-token gate, without an audit row, and still behind the `Host` and `Origin`
//! gates.

use crate::support::{Proxy, raw_request};

const OAUTH_SENTENCE: &str =
    "Latchkey handles sign-in itself; log in to Latchkey, do not configure OAuth for this server.";

/// What the SDKs ask for (root, path-inserted and path-appended spellings).
const PROBES: [(&str, &str); 14] = [
    ("GET", "/.well-known/oauth-protected-resource"),
    ("GET", "/.well-known/oauth-protected-resource/demo/mcp"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("GET", "/.well-known/oauth-authorization-server/demo/mcp"),
    ("GET", "/.well-known/openid-configuration"),
    ("GET", "/.well-known/openid-configuration/demo/mcp"),
    ("GET", "/demo/.well-known/oauth-protected-resource"),
    ("GET", "/demo/.well-known/oauth-authorization-server"),
    ("GET", "/demo/.well-known/openid-configuration"),
    ("GET", "/demo/mcp/.well-known/openid-configuration"),
    ("GET", "/nosuch/.well-known/oauth-protected-resource"),
    ("POST", "/register"),
    ("GET", "/authorize"),
    ("POST", "/token"),
];

#[tokio::test]
async fn oauth_probes_get_a_clear_404_before_the_token_gate_and_are_not_audited() {
    let proxy = Proxy::start().await;
    for (method, path) in PROBES {
        let method: reqwest::Method = method.parse().expect("method");
        // No client token: a host running OAuth has none that works.
        let response = proxy
            .client()
            .request(method, format!("{}{path}?resource=x", proxy.url))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 404, "{path}");
        assert!(
            response.headers().get("www-authenticate").is_none(),
            "{path}: no challenge"
        );
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: serde_json::Value = response.json().await.expect("JSON body");
        assert_eq!(body["error"], "oauth_not_offered", "{path}: {body}");
        assert_eq!(body["message"], OAUTH_SENTENCE, "{path}");
        assert_eq!(
            body["error_description"], OAUTH_SENTENCE,
            "{path}: what OAuth code reads"
        );
    }
    assert_eq!(proxy.upstream.hits(), 0, "no probe reaches an upstream");

    // One ordinary request, so an empty log is not just a slow writer.
    let ok = proxy.get("/demo/echo").send().await.expect("send");
    assert_eq!(ok.status(), 200);
    let _ = ok.bytes().await;
    let recorded =
        crate::support::eventually_async(|| async { !crate::audit::rows(&proxy).await.is_empty() })
            .await;
    assert!(recorded, "the ordinary request is audited");
    let rows = crate::audit::rows(&proxy).await;
    assert_eq!(
        rows.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        ["/demo/echo"],
        "probes leave no audit row"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn probes_from_a_foreign_host_or_a_web_page_are_still_refused_unaudited() {
    let proxy = Proxy::start().await;
    let path = "/.well-known/oauth-authorization-server";
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: evil.test:{}\r\nConnection: close\r\n\r\n",
        proxy.port
    );
    let (status, body) = raw_request(proxy.port, &request).await;
    assert_eq!(status, 403);
    assert!(body.contains("\"forbidden_host\""), "{body}");

    for (name, value) in [
        ("origin", "https://evil.test"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let response = proxy
            .client()
            .get(format!("{}{path}", proxy.url))
            .header(name, value)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 403, "{name}");
        assert!(
            response
                .headers()
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-")),
            "no CORS headers"
        );
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "forbidden_origin", "{name}");
    }
    let response = proxy
        .client()
        .post(format!("{}/register", proxy.url))
        .header("origin", "http://localhost:6274")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.status(),
        404,
        "a local web tool (loopback Origin) gets the same clear answer"
    );

    let ok = proxy.get("/demo/echo").send().await.expect("send");
    assert_eq!(ok.status(), 200);
    let _ = ok.bytes().await;
    let recorded =
        crate::support::eventually_async(|| async { !crate::audit::rows(&proxy).await.is_empty() })
            .await;
    assert!(recorded);
    assert_eq!(
        crate::audit::rows(&proxy).await.len(),
        1,
        "only the ordinary request is audited"
    );
    assert_eq!(proxy.upstream.hits(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn other_well_known_and_token_paths_under_a_service_reach_its_upstream() {
    let proxy = Proxy::start().await;
    for path in [
        "/demo/.well-known/mcp",
        "/demo/token",
        "/demo/register",
        "/demo/authorize",
    ] {
        let response = proxy.get(path).send().await.expect("send");
        assert_eq!(response.status(), 200, "{path}");
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["ok"], true, "{path} answered by the upstream");
    }
    assert_eq!(proxy.upstream.hits(), 4);
    proxy.stop().await;
}
