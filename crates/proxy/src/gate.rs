//! The checks every request passes before anything else happens (PROTOCOL §3, gates 1–3): the
//! `Host` allowlist against DNS rebinding, the browser-origin check, the request-head size, and
//! reading the client token. They look only at the request head and allocate nothing.

use http::request::Parts;
use http::{HeaderMap, HeaderName, Method, Uri, header};

use crate::error::ProxyError;

/// The header a local client may put its token in (instead of `Authorization: Bearer`).
pub(crate) static CLIENT_HEADER: HeaderName = HeaderName::from_static("x-latchkey-client");

/// The three `host:port` spellings the proxy answers to.
#[derive(Debug, Clone)]
pub(crate) struct HostAllowlist {
    allowed: [String; 3],
}

impl HostAllowlist {
    pub(crate) fn new(port: u16) -> Self {
        Self {
            allowed: [
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
            ],
        }
    }

    fn allows(&self, authority: &[u8]) -> bool {
        // Clients write the spelling as given (lower case) nearly always: an exact comparison
        // (one `memcmp`) answers those before the byte-by-byte case folding does the rest.
        self.allowed.iter().any(|a| a.as_bytes() == authority)
            || self
                .allowed
                .iter()
                .any(|a| a.as_bytes().eq_ignore_ascii_case(authority))
    }

    /// Gate 1: exactly one `Host` header naming us, and an absolute-form URI (if any) naming us.
    pub(crate) fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), ProxyError> {
        let mut hosts = headers.get_all(header::HOST).iter();
        let (Some(host), None) = (hosts.next(), hosts.next()) else {
            return Err(ProxyError::ForbiddenHost);
        };
        if !self.allows(host.as_bytes()) {
            return Err(ProxyError::ForbiddenHost);
        }
        if let Some(authority) = uri.authority() {
            let scheme_ok = uri
                .scheme_str()
                .is_none_or(|s| s.eq_ignore_ascii_case("http"));
            if !scheme_ok || !self.allows(authority.as_str().as_bytes()) {
                return Err(ProxyError::ForbiddenHost);
            }
        }
        Ok(())
    }
}

/// Refuses a request head larger than `max` bytes, counted as on the wire (request line plus
/// `name: value\r\n` per header).
pub(crate) fn check_head_size(parts: &Parts, max: usize) -> Result<(), ProxyError> {
    let uri = &parts.uri;
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len());
    let mut total = parts.method.as_str().len() + target + 12;
    // hyper has already bounded the head (its buffer and header count): summing it all is cheap.
    for (name, value) in &parts.headers {
        total += name.as_str().len() + value.len() + 4;
    }
    if total > max {
        return Err(ProxyError::HeadersTooLarge);
    }
    Ok(())
}

/// Gate 2: no requests from web pages of other origins, and no CORS preflights at all.
///
/// An `Origin` header must be loopback (`http://127.0.0.1`, `http://localhost` or `http://[::1]`,
/// any port); `Origin: null` is refused. `Sec-Fetch-Site: cross-site` or `same-site` is refused
/// unless the request also carries such a loopback `Origin` (a local web tool on another port);
/// browsers omit `Origin` on simple GETs such as `<img>`, and `Sec-Fetch-Site` catches those.
pub(crate) fn check_origin(method: &Method, headers: &HeaderMap) -> Result<(), ProxyError> {
    let origin = match headers.get(header::ORIGIN) {
        Some(v) if is_loopback_origin(v.as_bytes()) => Some(()),
        Some(_) => return Err(ProxyError::ForbiddenOrigin),
        None => None,
    };
    if origin.is_none()
        && let Some(site) = headers.get("sec-fetch-site")
        && (site.as_bytes().eq_ignore_ascii_case(b"cross-site")
            || site.as_bytes().eq_ignore_ascii_case(b"same-site"))
    {
        return Err(ProxyError::ForbiddenOrigin);
    }
    if method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return Err(ProxyError::ForbiddenOrigin);
    }
    Ok(())
}

/// `TRACE` and `TRACK` (the upstream would echo the request, injected credential included,
/// back to the client) and `CONNECT` (a tunnel to anywhere) are never served.
pub(crate) fn check_method(method: &Method) -> Result<(), ProxyError> {
    let name = method.as_str();
    if ["TRACE", "TRACK", "CONNECT"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(name))
    {
        Err(ProxyError::ForbiddenMethod)
    } else {
        Ok(())
    }
}

/// `http://127.0.0.1[:port]`, `http://localhost[:port]` or `http://[::1][:port]`, nothing after.
fn is_loopback_origin(origin: &[u8]) -> bool {
    let Some(rest) = strip_prefix_ignore_case(origin, b"http://") else {
        return false;
    };
    let port = [&b"127.0.0.1"[..], b"localhost", b"[::1]"]
        .iter()
        .find_map(|host| strip_prefix_ignore_case(rest, host));
    match port {
        Some([]) => true,
        Some([b':', digits @ ..]) => {
            !digits.is_empty() && digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// The client token presented: `X-Latchkey-Client`, else `Authorization: Bearer lk_…`. A bearer
/// token without the `lk_` prefix is the client's own upstream credential, not a Latchkey token.
pub(crate) fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(&CLIENT_HEADER) {
        return v.to_str().ok();
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && token.starts_with("lk_")).then_some(token)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    /// The head as it goes on the wire: request line, then `name: value` per header, each line
    /// ending in CRLF (the blank line that ends the head is not counted).
    fn wire_size(method: &str, target: &str, headers: &[(&str, &str)]) -> (Parts, usize) {
        let mut builder = http::Request::builder().method(method).uri(target);
        let mut wire = format!("{method} {target} HTTP/1.1\r\n");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
            wire.push_str(&format!("{name}: {value}\r\n"));
        }
        let (parts, ()) = builder.body(()).expect("request").into_parts();
        (parts, wire.len())
    }

    #[test]
    fn the_head_size_is_counted_as_on_the_wire_to_the_byte() {
        for (method, target, headers) in [
            (
                "GET",
                "/demo/v1/items?page=2",
                vec![("host", "127.0.0.1:47821"), ("x-latchkey-client", "lk_abc")],
            ),
            (
                "POST",
                "http://127.0.0.1:47821/demo/mcp",
                vec![
                    ("host", "127.0.0.1:47821"),
                    ("content-type", "application/json"),
                ],
            ),
            ("OPTIONS", "/", vec![("host", "localhost:1")]),
        ] {
            let (parts, size) = wire_size(method, target, &headers);
            assert!(
                check_head_size(&parts, size).is_ok(),
                "{method} {target}: a head of exactly the limit ({size} bytes) passes"
            );
            assert!(
                matches!(
                    check_head_size(&parts, size - 1),
                    Err(ProxyError::HeadersTooLarge)
                ),
                "{method} {target}: one byte over the limit is refused"
            );
        }
    }

    #[test]
    fn a_head_without_headers_is_measured_too() {
        let long = format!("/demo/{}", "a".repeat(200));
        let (parts, size) = wire_size("GET", &long, &[]);
        assert!(check_head_size(&parts, size).is_ok());
        assert!(
            check_head_size(&parts, size - 1).is_err(),
            "the request line alone counts"
        );
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn host_must_name_the_proxy_and_its_port() {
        let gate = HostAllowlist::new(4000);
        let uri = Uri::from_static("/svc/x");
        for ok in [
            "127.0.0.1:4000",
            "localhost:4000",
            "LOCALHOST:4000",
            "[::1]:4000",
        ] {
            assert!(gate.check(&uri, &headers(&[("host", ok)])).is_ok(), "{ok}");
        }
        for bad in [
            "evil.test:4000",
            "127.0.0.1:4001",
            "127.0.0.1",
            "localhost.evil.test:4000",
            "",
        ] {
            assert_eq!(
                gate.check(&uri, &headers(&[("host", bad)])),
                Err(ProxyError::ForbiddenHost),
                "{bad}"
            );
        }
        assert_eq!(
            gate.check(&uri, &HeaderMap::new()),
            Err(ProxyError::ForbiddenHost),
            "missing Host"
        );
        let two = headers(&[("host", "127.0.0.1:4000"), ("host", "evil.test:4000")]);
        assert_eq!(
            gate.check(&uri, &two),
            Err(ProxyError::ForbiddenHost),
            "two Hosts"
        );
    }

    #[test]
    fn absolute_form_uris_must_name_the_proxy_too() {
        let gate = HostAllowlist::new(4000);
        let h = headers(&[("host", "127.0.0.1:4000")]);
        assert!(
            gate.check(&Uri::from_static("http://127.0.0.1:4000/svc"), &h)
                .is_ok()
        );
        assert!(
            gate.check(&Uri::from_static("http://evil.test/svc"), &h)
                .is_err()
        );
        assert!(
            gate.check(&Uri::from_static("https://127.0.0.1:4000/svc"), &h)
                .is_err()
        );
    }

    #[test]
    fn only_loopback_origins_pass() {
        let get = Method::GET;
        assert!(
            check_origin(&get, &HeaderMap::new()).is_ok(),
            "no Origin: a local tool"
        );
        for ok in [
            "http://127.0.0.1:5173",
            "http://localhost",
            "http://[::1]:80",
        ] {
            assert!(
                check_origin(&get, &headers(&[("origin", ok)])).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "null",
            "https://127.0.0.1:5173",
            "http://127.0.0.2:80",
            "http://localhost.evil.test",
            "http://localhost:80/x",
            "http://evil.test",
        ] {
            assert_eq!(
                check_origin(&get, &headers(&[("origin", bad)])),
                Err(ProxyError::ForbiddenOrigin),
                "{bad}"
            );
        }
    }

    #[test]
    fn cross_site_fetch_metadata_without_a_loopback_origin_is_refused() {
        let get = Method::GET;
        for site in ["cross-site", "same-site"] {
            let h = headers(&[("sec-fetch-site", site)]);
            assert_eq!(
                check_origin(&get, &h),
                Err(ProxyError::ForbiddenOrigin),
                "{site}"
            );
        }
        let h = headers(&[("sec-fetch-site", "same-origin")]);
        assert!(check_origin(&get, &h).is_ok());
        let h = headers(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://localhost:6274"),
        ]);
        assert!(
            check_origin(&get, &h).is_ok(),
            "a local web tool on another port"
        );
    }

    #[test]
    fn preflights_are_refused_even_from_loopback() {
        let h = headers(&[
            ("origin", "http://localhost:3000"),
            ("access-control-request-method", "POST"),
        ]);
        assert_eq!(
            check_origin(&Method::OPTIONS, &h),
            Err(ProxyError::ForbiddenOrigin)
        );
    }

    #[test]
    fn the_token_comes_from_the_latchkey_header_first() {
        let h = headers(&[
            ("x-latchkey-client", "lk_a"),
            ("authorization", "Bearer lk_b"),
        ]);
        assert_eq!(presented_token(&h), Some("lk_a"));
        let h = headers(&[("authorization", "bearer lk_b")]);
        assert_eq!(presented_token(&h), Some("lk_b"));
        let h = headers(&[("authorization", "Bearer upstream-token")]);
        assert_eq!(
            presented_token(&h),
            None,
            "the client's own upstream credential is not ours"
        );
        assert_eq!(presented_token(&HeaderMap::new()), None);
    }

    #[test]
    fn oversized_heads_are_refused() {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.headers.insert(
            "x-big",
            HeaderValue::from_str(&"a".repeat(2000)).expect("value"),
        );
        assert!(check_head_size(&parts, 4096).is_ok());
        assert_eq!(
            check_head_size(&parts, 1024),
            Err(ProxyError::HeadersTooLarge)
        );
    }
}
