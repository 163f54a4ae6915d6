//! Fuzzes the `Host` and `Origin` gates and the token reader with arbitrary request heads, checking
//! each verdict against a plain restatement of the rule: a pass names the proxy exactly.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};

const PORT: u16 = 47821;

fn host_oracle(value: &[u8]) -> bool {
    let v = value.to_ascii_lowercase();
    [
        format!("127.0.0.1:{PORT}"),
        format!("localhost:{PORT}"),
        format!("[::1]:{PORT}"),
    ]
    .iter()
    .any(|a| a.as_bytes() == v.as_slice())
}

fn origin_oracle(value: &[u8]) -> bool {
    let v = String::from_utf8_lossy(value).to_ascii_lowercase();
    let Some(rest) = v.strip_prefix("http://") else {
        return false;
    };
    ["127.0.0.1", "localhost", "[::1]"].iter().any(|h| {
        rest.strip_prefix(h).is_some_and(|port| {
            port.is_empty()
                || port.strip_prefix(':').is_some_and(|d| {
                    !d.is_empty() && d.len() <= 5 && d.bytes().all(|b| b.is_ascii_digit())
                })
        })
    })
}

/// One run of the target on `data`: returns, or panics on a broken invariant.
pub fn run(data: &[u8]) {
    // Fields separated by 0xFF: target, Host values..., then `name\0value` extra headers.
    let mut fields = data.split(|b| *b == 0xff);
    let target = fields.next().unwrap_or_default();
    let method = fields.next().unwrap_or_default();
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let method = Method::from_bytes(method).unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    for field in fields {
        let (name, value) = match field.iter().position(|b| *b == 0) {
            Some(i) => (&field[..i], &field[i + 1..]),
            None => (&b"host"[..], field),
        };
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }

    let hosts: Vec<&HeaderValue> = headers.get_all(header::HOST).iter().collect();
    let host_ok = latchkey_proxy::fuzzing::host_allowed(PORT, &uri, &headers);
    let expect_host = hosts.len() == 1
        && host_oracle(hosts[0].as_bytes())
        && uri.authority().is_none_or(|a| {
            host_oracle(a.as_str().as_bytes())
                && uri
                    .scheme_str()
                    .is_none_or(|s| s.eq_ignore_ascii_case("http"))
        });
    assert_eq!(
        host_ok, expect_host,
        "Host gate verdict for {uri} {hosts:?}"
    );

    let origin_ok = latchkey_proxy::fuzzing::origin_allowed(&method, &headers);
    let origin = headers.get(header::ORIGIN);
    if origin_ok {
        assert!(
            origin.is_none_or(|o| origin_oracle(o.as_bytes())),
            "origin {origin:?} passed"
        );
        let preflight = method == Method::OPTIONS
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        assert!(!preflight, "a CORS preflight passed");
        if origin.is_none()
            && let Some(site) = headers.get("sec-fetch-site")
        {
            let s = site.as_bytes().to_ascii_lowercase();
            assert!(
                s != b"cross-site" && s != b"same-site",
                "cross-site without Origin passed"
            );
        }
    } else if origin.is_some_and(|o| origin_oracle(o.as_bytes())) {
        // A loopback Origin is refused only for a preflight.
        assert!(
            headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
                && method == Method::OPTIONS
        );
    }

    if let Some(token) = latchkey_proxy::fuzzing::presented_token(&headers) {
        let from_header = headers
            .get("x-latchkey-client")
            .is_some_and(|v| v.as_bytes() == token.as_bytes());
        assert!(
            from_header || token.starts_with("lk_"),
            "token {token:?} is not a Latchkey token"
        );
    }
}
