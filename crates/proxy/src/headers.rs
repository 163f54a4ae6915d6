//! The header policy of a proxied exchange, the one place both plain forwarding
//! ([`crate::forward`]) and WebSocket tunnels ([`crate::tunnel`]) take it from.
//!
//! Upstream-bound: the client's own credentials and Latchkey token, cookies, hop-by-hop and
//! forwarding headers and anything named like an injected header are removed, including
//! spellings that differ only in case or `_` for `-` (`X_API_Key`, which WSGI servers merge
//! with `X-API-Key`), then the service's credentials are injected.
//!
//! Client-bound: hop-by-hop, cookie, proxy and CORS headers are removed, and every URL the
//! upstream hands back in `Location`, `Content-Location` or `Link` loses the query parameters
//! the mapping injects; one on the upstream's own origin under its base path is rewritten to
//! the proxy's route (`/{service}/…`), so a client follows it through the proxy instead of
//! calling the upstream without its credential, or another service of the proxy.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use url::Url;

use crate::gate::CLIENT_HEADER;
use crate::query;
use crate::state::{Prepared, PreparedRoute};

/// Request headers never forwarded (besides those `Connection` names and the injected ones).
/// `Host` is not removed but replaced: the route's own is inserted last, which drops every value
/// the client sent.
///
/// The lists are `static`, not `const`: a `const` array of `HeaderName`s is built and dropped
/// again at every use.
static STRIP_REQUEST: [HeaderName; STRIP_REQUEST_COUNT] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::FORWARDED,
    header::EXPECT,
    HeaderName::from_static("keep-alive"),
];

/// How many names [`STRIP_REQUEST`] holds: one bit each in [`rewrite_request`]'s flags.
const STRIP_REQUEST_COUNT: usize = 9;
const _: () = assert!(STRIP_REQUEST_COUNT <= u16::BITS as usize);

/// Request header name prefixes never forwarded.
const STRIP_REQUEST_PREFIXES: [&str; 2] = ["proxy-", "x-forwarded-"];

/// Response headers never passed back. `Set-Cookie` is dropped: the proxy never forwards the
/// client's `Cookie`, so upstream cookies could not work anyway, and every service shares the
/// proxy's one origin, where a browser would otherwise mix (and expose) their cookies.
static STRIP_RESPONSE: [HeaderName; 6] = [
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::SET_COOKIE,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
];

/// Response header name prefixes never passed back.
const STRIP_RESPONSE_PREFIXES: [&str; 2] = ["access-control-", "proxy-"];

/// The headers whose values are URLs an upstream may echo its request URL in.
static URL_HEADERS: [HeaderName; 3] = [header::LOCATION, header::CONTENT_LOCATION, header::LINK];

/// Makes a client's request head fit to send upstream for `route`, with `prepared`'s
/// credentials. `websocket` keeps the handshake's `Connection: upgrade` and `Upgrade`.
///
/// One pass compares each name present (a handful) with the policy; looking every stripped
/// name up in the map instead cost more than the rest of the request's header work.
pub(crate) fn rewrite_request(
    headers: &mut HeaderMap,
    route: &PreparedRoute,
    prepared: &Prepared,
    websocket: bool,
) {
    // What to remove, gathered first (the map cannot change while its names are read): the
    // fixed names as flags, so the usual request (a Latchkey token, perhaps `Connection`)
    // allocates nothing; a name outside them (an injected name the client sent too, a
    // `x-forwarded-*`, one its `Connection` lists) is copied into `doomed`.
    let mut connection = false;
    let mut client_header = false;
    let mut listed = 0u16;
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == CLIENT_HEADER {
            client_header = true;
        } else if let Some(i) = STRIP_REQUEST.iter().position(|s| s == name) {
            listed |= 1 << i;
        } else if strips_from_request(name, route, websocket) {
            doomed.push(name.clone());
        }
    }
    if connection {
        add_connection_named(headers, &mut doomed);
        headers.remove(header::CONNECTION);
    }
    if client_header {
        headers.remove(&CLIENT_HEADER);
    }
    while listed != 0 {
        let i = listed.trailing_zeros() as usize;
        listed &= listed - 1;
        headers.remove(&STRIP_REQUEST[i]);
    }
    for name in doomed {
        headers.remove(name);
    }
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    for (name, value) in &prepared.headers {
        headers.insert(name.clone(), value.clone());
    }
    // Replaces every `Host` the client sent (see `STRIP_REQUEST`).
    headers.insert(header::HOST, route.host.clone());
}

/// Whether the client's header `name`, which is neither `Connection`, the client header nor one
/// of [`STRIP_REQUEST`] as spelled (the caller compared those), stays behind: compared as a
/// server that folds `_` into `-` and ignores case sees it (`X_API_Key` is `X-API-Key` to WSGI
/// servers).
fn strips_from_request(name: &HeaderName, route: &PreparedRoute, websocket: bool) -> bool {
    if !websocket && name == header::UPGRADE {
        return true;
    }
    let text = name.as_str();
    if text.as_bytes().contains(&b'_') {
        let folded = text.replace('_', "-");
        return strips_folded(&folded, route);
    }
    // No `_`: the name is its own folded form, and equal names are equal `HeaderName`s (the
    // `http` crate stores every standard name in one form), so the fixed lists, which the
    // caller compared already, cannot match it under another spelling.
    route.injected_folded.iter().any(|i| i == text)
        || STRIP_REQUEST_PREFIXES.iter().any(|p| text.starts_with(p))
}

/// [`strips_from_request`] for a name already folded.
fn strips_folded(folded: &str, route: &PreparedRoute) -> bool {
    STRIP_REQUEST.iter().any(|s| s.as_str() == folded)
        || CLIENT_HEADER.as_str() == folded
        // Both sides folded: an injected name spelled with `_` (`X-Api_Key`) is the same header
        // as the client's `x_api_key` to a server that folds them.
        || route.injected_folded.iter().any(|i| i == folded)
        || STRIP_REQUEST_PREFIXES.iter().any(|p| folded.starts_with(p))
}

/// Makes an upstream's answer head fit to pass back to the client (`upgrade` keeps the
/// handshake's `Connection` and `Upgrade`). One pass over the names, as for requests.
pub(crate) fn rewrite_response(headers: &mut HeaderMap, route: &PreparedRoute, upgrade: bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    let (mut connection, mut urls) = (false, false);
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
            doomed.push(name.clone());
        } else if strips_from_response(name, upgrade) {
            doomed.push(name.clone());
        } else if URL_HEADERS.contains(name) {
            urls = true;
        }
    }
    if connection {
        add_connection_named(headers, &mut doomed);
    }
    for name in doomed {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if urls {
        for name in &URL_HEADERS {
            rewrite_url_header(headers, name, route);
        }
    }
}

/// Whether the upstream's header `name` stays behind.
fn strips_from_response(name: &HeaderName, upgrade: bool) -> bool {
    (!upgrade && name == header::UPGRADE)
        || STRIP_RESPONSE.contains(name)
        || STRIP_RESPONSE_PREFIXES
            .iter()
            .any(|p| name.as_str().starts_with(p))
}

/// Adds to `doomed` the names present that a `Connection` header lists: hop-by-hop by
/// declaration, so they are dropped with it. Two options are passed over: `keep-alive` (the
/// header of that name is stripped in both directions anyway; it is the option nearly every
/// upstream sends) and `upgrade` (left to the upgrade rule: kept in a WebSocket handshake,
/// whose `Connection: upgrade` the caller puts back, and dropped anywhere else).
fn add_connection_named(headers: &HeaderMap, doomed: &mut Vec<HeaderName>) {
    let options = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for option in options {
        if option.eq_ignore_ascii_case("keep-alive") || option.eq_ignore_ascii_case("upgrade") {
            continue;
        }
        // Removing a name twice (listed, and stripped by the policy too) is harmless.
        if let Some(name) = headers
            .keys()
            .find(|name| name.as_str().eq_ignore_ascii_case(option))
        {
            doomed.push(name.clone());
        }
    }
}

/// Rewrites every value of `name` that needs it (see [`rewrite_url`]; `Link` values hold their
/// URLs in `<…>`). A value that is not text is dropped when it names an injected parameter.
pub(crate) fn rewrite_url_header(
    headers: &mut HeaderMap,
    name: &HeaderName,
    route: &PreparedRoute,
) {
    if !headers.contains_key(name) {
        return;
    }
    let link = name == header::LINK;
    let mut changed = false;
    let mut values = Vec::new();
    for value in headers.get_all(name) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let rewritten = if link {
            rewrite_link(&text, route)
        } else {
            rewrite_url(&text, route)
        };
        match rewritten {
            Some(new) => {
                changed = true;
                if let Ok(new) = HeaderValue::from_str(&new) {
                    values.push(new);
                }
            }
            None => values.push(value.clone()),
        }
    }
    if changed {
        headers.remove(name);
        for value in values {
            headers.append(name.clone(), value);
        }
    }
}

/// `<url>; rel=…, <url>; …` with each `url` rewritten; `None` when nothing changed.
fn rewrite_link(value: &str, route: &PreparedRoute) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut changed = false;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>').map(|c| open + c) else {
            break;
        };
        out.push_str(&rest[..=open]);
        let target = &rest[open + 1..close];
        match rewrite_url(target, route) {
            Some(new) => {
                changed = true;
                out.push_str(&new);
            }
            None => out.push_str(target),
        }
        rest = &rest[close..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// A URL an upstream handed back, as the client should see it; `None` when it stays as it is.
///
/// - On the upstream's origin (absolute, scheme-relative or path-absolute) and under its base
///   path: the proxy route `/{service}{rest}`.
/// - Path-absolute but outside the base path: the upstream's absolute URL (resolved against the
///   proxy it would name another service).
/// - Anything else keeps its form.
///
/// In every case the query loses the parameters the mapping injects.
pub(crate) fn rewrite_url(value: &str, route: &PreparedRoute) -> Option<String> {
    let value = value.trim();
    let (before_fragment, fragment) = match value.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (value, None),
    };
    let (target, query) = match before_fragment.split_once('?') {
        Some((t, q)) => (t, Some(q)),
        None => (before_fragment, None),
    };
    let upstream = &route.route.upstream;
    let injected = &route.injected_params;
    let absolute = if target.starts_with("//") {
        Url::parse(&format!("{}:{before_fragment}", upstream.scheme())).ok()
    } else if has_scheme(target) {
        Url::parse(before_fragment).ok()
    } else {
        None
    };
    let on_origin_path = match &absolute {
        Some(url) if same_origin(url, upstream) => Some(url.path()),
        Some(_) => None,
        None if target.starts_with('/') => Some(target),
        None => None,
    };
    let query = absolute.as_ref().map_or(query, Url::query);
    let mut out = String::with_capacity(value.len() + route.service.len() + 1);
    if let Some(path) = on_origin_path {
        match under_base(path, &route.base_path) {
            Some(rest) => {
                out.push('/');
                out.push_str(&route.service);
                out.push_str(rest);
            }
            None if absolute.is_none() => {
                out.push_str(upstream.origin().ascii_serialization().as_str());
                out.push_str(path);
            }
            None => push_without_query(&mut out, absolute.as_ref(), target),
        }
    } else if query.is_some_and(|q| query::mentions(q, injected)) {
        push_without_query(&mut out, absolute.as_ref(), target);
    } else {
        return None;
    }
    if let Some(query) = query {
        query::append_filtered(&mut out, query, injected);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Some(out)
}

/// The URL up to (not including) its query: the parsed absolute URL, or the raw relative target.
fn push_without_query(out: &mut String, absolute: Option<&Url>, target: &str) {
    match absolute {
        Some(url) => {
            let mut url = url.clone();
            url.set_query(None);
            url.set_fragment(None);
            out.push_str(url.as_str());
        }
        None => out.push_str(target),
    }
}

/// `scheme:` at the start (RFC 3986 §3.1), as opposed to a relative reference.
fn has_scheme(target: &str) -> bool {
    let Some((scheme, _)) = target.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme().eq_ignore_ascii_case(b.scheme())
        && a.host() == b.host()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The part of `path` after `base` (`""` for the root), when `path` is `base` or below it.
fn under_base<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(base)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InjectTarget, Injection, Route};

    fn route(upstream: &str) -> PreparedRoute {
        let route = Route::new(
            "svc",
            Url::parse(upstream).expect("url"),
            vec![
                Injection {
                    credential: "key".into(),
                    target: InjectTarget::header("X-API-Key", "").expect("header"),
                },
                Injection {
                    credential: "q".into(),
                    target: InjectTarget::Query {
                        param: "api_key".into(),
                    },
                },
            ],
        )
        .expect("route");
        PreparedRoute::new(&route)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn redirects_on_the_upstreams_origin_come_back_through_the_proxy() {
        let r = route("https://api.example.test/base");
        let cases = [
            ("https://api.example.test/base/next?a=1", "/svc/next?a=1"),
            ("https://API.example.test:443/base", "/svc"),
            ("//api.example.test/base/x#top", "/svc/x#top"),
            ("/base/x?api_key=SECRET&b=2", "/svc/x?b=2"),
            ("/login", "https://api.example.test/login"),
            (
                "https://api.example.test/other?api_key=SECRET",
                "https://api.example.test/other",
            ),
            // An absolute URL outside the base keeps its own form, userinfo included (found by
            // mutation testing: rebuilding it from the upstream's origin dropped that).
            (
                "https://user@api.example.test/other?api_key=SECRET",
                "https://user@api.example.test/other",
            ),
        ];
        for (from, to) in cases {
            assert_eq!(rewrite_url(from, &r).as_deref(), Some(to), "{from}");
        }
    }

    #[test]
    fn foreign_redirects_keep_their_target_but_lose_injected_parameters() {
        let r = route("https://api.example.test/base");
        assert_eq!(rewrite_url("https://elsewhere.test/x?a=1", &r), None);
        assert_eq!(
            rewrite_url("http://api.example.test/base/x", &r),
            None,
            "another scheme"
        );
        assert_eq!(rewrite_url("next?a=1", &r), None);
        assert_eq!(
            rewrite_url("https://elsewhere.test/cb?API_KEY=SECRET&state=s#f", &r).as_deref(),
            Some("https://elsewhere.test/cb?state=s#f")
        );
        assert_eq!(
            rewrite_url("next?api%5Fkey=SECRET", &r).as_deref(),
            Some("next")
        );
    }

    #[test]
    fn link_headers_are_rewritten_url_by_url() {
        let r = route("https://api.example.test/");
        let mut h = headers(&[
            (
                "link",
                "<https://api.example.test/items?page=2&api_key=SECRET>; rel=\"next\", <https://docs.test/>; rel=\"help\"",
            ),
            (
                "content-location",
                "https://api.example.test/items?api_key=SECRET",
            ),
            ("location", "https://api.example.test/items/1"),
        ]);
        rewrite_response(&mut h, &r, false);
        assert_eq!(
            h["link"],
            "</svc/items?page=2>; rel=\"next\", <https://docs.test/>; rel=\"help\""
        );
        assert_eq!(h["content-location"], "/svc/items");
        assert_eq!(h["location"], "/svc/items/1");
    }

    #[test]
    fn hop_by_hop_and_named_headers_are_dropped_from_answers() {
        let r = route("https://api.example.test/");
        let mut h = headers(&[
            ("connection", "close, x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "s=1"),
            ("access-control-allow-origin", "*"),
            ("content-type", "text/plain"),
            ("location", "https://elsewhere.test/"),
        ]);
        rewrite_response(&mut h, &r, false);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "location"]);
        assert_eq!(h["location"], "https://elsewhere.test/");
    }

    #[test]
    fn look_alike_spellings_of_stripped_headers_are_removed() {
        let r = route("https://api.example.test/");
        let prepared = r
            .prepare(std::sync::Arc::new(
                [
                    ("key".to_owned(), latchkey_core::secret::Secret::new("K")),
                    ("q".to_owned(), latchkey_core::secret::Secret::new("Q")),
                ]
                .into_iter()
                .collect(),
            ))
            .expect("prepared");
        let mut h = headers(&[
            ("x_api_key", "client-chosen"),
            ("x_api-key", "client-chosen"),
            ("x-api-key", "client-chosen"),
            ("x_latchkey_client", "lk_token"),
            ("x_forwarded_for", "1.2.3.4"),
            ("proxy_authorization", "Basic x"),
            ("x-api-keys", "kept"),
        ]);
        rewrite_request(&mut h, &r, &prepared, false);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-api-key", "x-api-keys"]);
        assert_eq!(h.get_all("x-api-key").iter().count(), 1);
        assert_eq!(h["x-api-key"], "K", "only the injected value");
    }

    /// Found by the `header_policy` fuzz target: an injected header whose configured name has an
    /// underscore let the client's hyphenated or underscored look-alike through.
    #[test]
    fn look_alikes_of_an_injected_name_with_an_underscore_are_removed() {
        let route = Route::new(
            "svc",
            Url::parse("https://api.example.test/").expect("url"),
            vec![Injection {
                credential: "key".into(),
                target: InjectTarget::header("X-Api_Key", "").expect("header"),
            }],
        )
        .expect("route");
        let r = PreparedRoute::new(&route);
        let prepared = r
            .prepare(std::sync::Arc::new(
                [("key".to_owned(), latchkey_core::secret::Secret::new("K"))]
                    .into_iter()
                    .collect(),
            ))
            .expect("prepared");
        let mut h = headers(&[
            ("x-api-key", "client-chosen"),
            ("x_api_key", "client-chosen"),
            ("x-api_key", "client-chosen"),
        ]);
        rewrite_request(&mut h, &r, &prepared, false);
        let left: Vec<(&str, &[u8])> = h
            .iter()
            .filter(|(n, _)| *n != "host")
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(
            left,
            [("x-api_key", &b"K"[..])],
            "only the injected header and value"
        );
    }
}
