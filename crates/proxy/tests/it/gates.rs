//! Every gate of PROTOCOL §3 refuses with its code, and a refused request never reaches the
//! upstream.

use latchkey_proxy::RateLimit;
use latchkey_store::ClientName;

use crate::support::{Options, Proxy, error_code, new_client, raw_request, status_and_body};

async fn assert_refused(proxy: &Proxy, response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status().as_u16(), status, "status for {code}");
    assert!(
        response.headers().get("www-authenticate").is_none(),
        "never a browser auth prompt"
    );
    assert!(
        response
            .headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "no CORS headers, ever"
    );
    assert_eq!(error_code(response).await, code);
    assert_eq!(
        proxy.upstream.hits(),
        0,
        "the upstream received nothing for {code}"
    );
}

#[tokio::test]
async fn a_foreign_host_is_refused_before_anything_else() {
    let proxy = Proxy::start().await;
    let request = format!(
        "GET /demo/echo HTTP/1.1\r\nHost: evil.test:{}\r\nX-Latchkey-Client: {}\r\nConnection: close\r\n\r\n",
        proxy.port, proxy.token
    );
    let (status, body) = raw_request(proxy.port, &request).await;
    assert_eq!(status, 403);
    assert!(body.contains("\"forbidden_host\""), "{body}");
    assert_eq!(proxy.upstream.hits(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn an_absolute_form_uri_naming_another_host_is_refused() {
    let proxy = Proxy::start().await;
    let request = format!(
        "GET http://evil.test/demo/echo HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Latchkey-Client: {}\r\nConnection: close\r\n\r\n",
        proxy.port, proxy.token
    );
    let (status, body) = raw_request(proxy.port, &request).await;
    assert_eq!(status, 403);
    assert!(body.contains("\"forbidden_host\""), "{body}");
    assert_eq!(proxy.upstream.hits(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn localhost_and_ipv6_spellings_of_the_host_are_accepted() {
    let proxy = Proxy::start().await;
    for host in [
        format!("localhost:{}", proxy.port),
        format!("[::1]:{}", proxy.port),
    ] {
        let request = format!(
            "GET /demo/echo HTTP/1.1\r\nHost: {host}\r\nX-Latchkey-Client: {}\r\nConnection: close\r\n\r\n",
            proxy.token
        );
        let (status, _) = raw_request(proxy.port, &request).await;
        assert_eq!(status, 200, "Host {host}");
    }
    assert_eq!(proxy.upstream.hits(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_is_refused() {
    let proxy = Proxy::start().await;
    let response = proxy
        .get("/demo/echo")
        .header("origin", "https://evil.test")
        .send()
        .await
        .expect("send");
    assert_refused(&proxy, response, 403, "forbidden_origin").await;
    proxy.stop().await;
}

#[tokio::test]
async fn origin_null_is_refused() {
    let proxy = Proxy::start().await;
    let response = proxy
        .get("/demo/echo")
        .header("origin", "null")
        .send()
        .await
        .expect("send");
    assert_refused(&proxy, response, 403, "forbidden_origin").await;
    proxy.stop().await;
}

#[tokio::test]
async fn cross_site_fetch_metadata_is_refused() {
    let proxy = Proxy::start().await;
    let response = proxy
        .get("/demo/echo")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("send");
    assert_refused(&proxy, response, 403, "forbidden_origin").await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_cors_preflight_is_refused_and_gets_no_cors_headers() {
    let proxy = Proxy::start().await;
    let response = proxy
        .client()
        .request(reqwest::Method::OPTIONS, format!("{}/demo/echo", proxy.url))
        .header("origin", "https://evil.test")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-latchkey-client")
        .send()
        .await
        .expect("send");
    assert_refused(&proxy, response, 403, "forbidden_origin").await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_without_a_token_is_unauthorized() {
    let proxy = Proxy::start().await;
    let response = proxy
        .client()
        .get(format!("{}/demo/echo", proxy.url))
        .send()
        .await
        .expect("send");
    assert_refused(&proxy, response, 401, "client_unauthorized").await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized_in_either_header() {
    let proxy = Proxy::start().await;
    let response = proxy
        .client()
        .get(format!("{}/demo/echo", proxy.url))
        .header("x-latchkey-client", "lk_not_a_real_token_000000000000")
        .send()
        .await
        .expect("send");
    assert_refused(&proxy, response, 401, "client_unauthorized").await;
    let response = proxy
        .client()
        .get(format!("{}/demo/echo", proxy.url))
        .bearer_auth("lk_not_a_real_token_000000000000")
        .send()
        .await
        .expect("send");
    assert_refused(&proxy, response, 401, "client_unauthorized").await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_bearer_client_token_is_accepted_and_not_forwarded() {
    let proxy = Proxy::start().await;
    let response = proxy
        .client()
        .get(format!("{}/demo/echo", proxy.url))
        .bearer_auth(&proxy.token)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let seen = proxy.upstream.last();
    assert!(
        seen.headers.get("authorization").is_none(),
        "the Latchkey token stays in the proxy"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_revoked_token_is_unauthorized() {
    let proxy = Proxy::start().await;
    let token = new_client(&proxy.clients, "short-lived", &["demo".to_owned()]);
    let ok = proxy
        .client()
        .get(format!("{}/demo/echo", proxy.url))
        .header("x-latchkey-client", &token)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200, "the token works before it is revoked");
    let name = ClientName::parse("short-lived").expect("name");
    assert!(
        proxy.clients.revoke(&name).expect("revoke"),
        "the client existed"
    );

    let before = proxy.upstream.hits();
    let response = proxy
        .client()
        .get(format!("{}/demo/echo", proxy.url))
        .header("x-latchkey-client", &token)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
    assert_eq!(error_code(response).await, "client_unauthorized");
    assert_eq!(
        proxy.upstream.hits(),
        before,
        "nothing more reached the upstream"
    );
    proxy.stop().await;
}

/// The tray's and `latchkey client list`'s "last used" comes from the proxy: a request with a
/// client's token marks that client, and only that one; a refused token marks no one.
#[tokio::test]
async fn a_request_marks_its_own_client_used_and_a_refused_one_marks_no_one() {
    let proxy = Proxy::start().await;
    let other = new_client(&proxy.clients, "other", &["demo".to_owned()]);
    let last_used = |client: &str| {
        let name = ClientName::parse(client).expect("name");
        proxy.clients.get(&name).expect("listed").last_used_at
    };
    assert_eq!((last_used("tester"), last_used("other")), (None, None));

    let refused = proxy
        .client()
        .get(format!("{}/demo/echo", proxy.url))
        .header("x-latchkey-client", format!("{other}x"))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 401);
    assert_eq!((last_used("tester"), last_used("other")), (None, None));

    let ok = proxy.get("/demo/echo").send().await.expect("send");
    assert_eq!(ok.status(), 200);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let at = last_used("tester").expect("the client that made the request is marked");
    assert!(
        (now - at).abs() < 60,
        "unix seconds, now: {at} against {now}"
    );
    assert_eq!(last_used("other"), None, "another client is not");
    proxy.stop().await;
}

#[tokio::test]
async fn a_service_outside_the_tokens_scope_is_forbidden() {
    let proxy = Proxy::start().await;
    let response = proxy.get("/other/echo").send().await.expect("send");
    assert_refused(&proxy, response, 403, "forbidden_scope").await;
    proxy.stop().await;
}

#[tokio::test]
async fn an_unknown_service_is_not_found_only_after_authentication() {
    let proxy = Proxy::start().await;
    let anonymous = proxy
        .client()
        .get(format!("{}/nope/x", proxy.url))
        .send()
        .await
        .expect("send");
    assert_refused(&proxy, anonymous, 401, "client_unauthorized").await;
    let scoped = new_client(&proxy.clients, "wide", &["nope".to_owned()]);
    let response = proxy
        .client()
        .get(format!("{}/nope/x", proxy.url))
        .header("x-latchkey-client", &scoped)
        .send()
        .await
        .expect("send");
    assert_refused(&proxy, response, 404, "unknown_service").await;
    proxy.stop().await;
}

#[tokio::test]
async fn over_the_rate_limit_is_429_with_retry_after() {
    let proxy = Proxy::start_with(Options {
        rate_limit: RateLimit {
            per_second: 0.5,
            burst: 2,
        },
        ..Options::default()
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            proxy.get("/demo/echo").send().await.expect("send").status(),
            200
        );
    }
    let hits = proxy.upstream.hits();
    let response = proxy.get("/demo/echo").send().await.expect("send");
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!(
        (1..=2).contains(&retry_after),
        "ceil((1 - tokens) / 0.5) = {retry_after}"
    );
    assert_eq!(error_code(response).await, "rate_limited");
    assert_eq!(
        proxy.upstream.hits(),
        hits,
        "the refused request did not reach the upstream"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let proxy = Proxy::start().await;
    let response = proxy
        .get("/demo/echo")
        .header("x-filler", "a".repeat(40 * 1024))
        .send()
        .await
        .expect("send");
    assert_refused(&proxy, response, 431, "headers_too_large").await;
    proxy.stop().await;
}

/// A raw request head that the head-size gate counts as exactly `counted` bytes (request line and
/// headers as hyper hands them over: names, trimmed values, two bytes of separator and two of line
/// end each), sent with 60 spaces of whitespace before every filler value, which hyper trims and
/// the gate does not see. The client token is stale, so a head that passes the size gate is
/// refused by the next one, authentication, before anything is forwarded.
fn head_counted_as(port: u16, counted: usize) -> String {
    let (method, target) = ("GET", "/demo/echo");
    let fixed = [
        ("host", format!("127.0.0.1:{port}")),
        ("x-latchkey-client", "lk_stale-token".to_owned()),
        ("connection", "close".to_owned()),
    ];
    let fillers = 50;
    let mut total = method.len() + target.len() + 12;
    total += fixed
        .iter()
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum::<usize>();
    total += (0..fillers)
        .map(|i| format!("x-fill-{i:02}").len() + 4)
        .sum::<usize>();
    let value_bytes = counted - total;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in &fixed {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    for i in 0..fillers {
        let len = value_bytes / fillers + usize::from(i < value_bytes % fillers);
        head.push_str(&format!(
            "x-fill-{i:02}:{}{}\r\n",
            " ".repeat(60),
            "v".repeat(len)
        ));
    }
    head.push_str("\r\n");
    head
}

/// Sends `head` in two writes with a pause between, the first ending `at` bytes in, so the proxy
/// has read the first part (and found the head incomplete) before the rest arrives, as from a
/// slow network; returns the status and the body of the answer.
async fn send_in_two_parts(port: u16, head: &str, at: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(&head.as_bytes()[..at])
        .await
        .expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The proxy may already have answered and closed (a refusal): the rest then fails to send.
    let _ = stream.write_all(&head.as_bytes()[at..]).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("an answer in time");
    status_and_body(&answer)
}

/// With the limit raised above hyper's default buffer (about 400 KiB), a head of exactly the
/// limit reaches the gate and passes it, even when the client pads it with whitespace the gate
/// does not count and it arrives in pieces; one byte more is refused by the gate with its own
/// code, not by hyper's bare 431 (hyper's buffer is sized from the limit, with room for padding).
#[tokio::test]
async fn a_head_at_a_raised_limit_passes_the_size_gate_and_one_byte_more_is_431() {
    let limit = 1024 * 1024;
    let proxy = Proxy::start_with(Options {
        limits: latchkey_proxy::Limits {
            max_header_bytes: limit,
            ..latchkey_proxy::Limits::default()
        },
        ..Options::default()
    })
    .await;
    let at_limit = head_counted_as(proxy.port, limit);
    assert!(
        at_limit.len() > limit + 2048 + 512,
        "the padding is more than a little slack"
    );
    // hyper checks its buffer only while the head is incomplete: the first part stops 2 KiB past
    // the limit, inside the padding's share, with the head's end still to come.
    let (status, body) = send_in_two_parts(proxy.port, &at_limit, limit + 2048).await;
    assert_eq!(
        status, 401,
        "past the size gate, refused by the next: {body}"
    );
    assert!(body.contains("\"client_unauthorized\""), "{body}");

    let (status, body) = raw_request(proxy.port, &head_counted_as(proxy.port, limit + 1)).await;
    assert_eq!(status, 431, "{body}");
    assert!(body.contains("\"headers_too_large\""), "{body}");
    assert_eq!(proxy.upstream.hits(), 0);
    proxy.stop().await;
}
