//! Property tests of the proxy's hostile-input code (issue 10): the `Host` and `Origin` gates and
//! the token reader against a plain restatement of their rules, path normalisation against every
//! spelling of a climbing segment, the header policy against look-alike names and echoed URLs,
//! and the query filter. The fuzz targets in `fuzz/` check the same invariants on raw bytes.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use latchkey_core::secret::Secret;
use proptest::prelude::*;

use crate::config::{InjectTarget, Injection, Route};
use crate::gate::{HostAllowlist, check_origin, presented_token};
use crate::state::PreparedRoute;
use crate::{headers, path, query};

const PORT: u16 = 47821;
const HEADER_SECRET: &str = "hdrSECRET7f3a9c";
const QUERY_SECRET: &str = "qrySECRET2b8e41";

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `s` with each ASCII letter's case chosen by `mask`.
fn recase(s: &str, mask: &[bool]) -> String {
    s.chars()
        .zip(mask.iter().cycle())
        .map(|(c, up)| {
            if *up {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn host_oracle(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    [
        format!("127.0.0.1:{PORT}"),
        format!("localhost:{PORT}"),
        format!("[::1]:{PORT}"),
    ]
    .contains(&v)
}

fn origin_oracle(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
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

fn host_like() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        Just("127.0.0.1".to_owned()),
        Just("localhost".to_owned()),
        Just("[::1]".to_owned()),
        Just("127.0.0.2".to_owned()),
        Just("localhost.evil.test".to_owned()),
        Just("evil.test".to_owned()),
        Just("[::ffff:127.0.0.1]".to_owned()),
        "[a-z0-9.\\[\\]:-]{0,20}",
    ];
    let port = prop_oneof![
        Just(format!(":{PORT}")),
        Just(String::new()),
        Just(format!(":{}", PORT + 1)),
        Just(format!(":0{PORT}")),
        Just(format!(":{PORT}.")),
        "(:[0-9]{0,6})?",
    ];
    (
        base,
        port,
        prop::collection::vec(any::<bool>(), 1..12),
        "(|@|/|\\.| |evil)",
    )
        .prop_map(|(b, p, mask, tail)| format!("{}{p}{tail}", recase(&b, &mask)))
}

fn origin_like() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just("http://"),
        Just("HTTP://"),
        Just("https://"),
        Just(""),
        Just("http:/"),
    ];
    let host = prop_oneof![
        Just("127.0.0.1"),
        Just("localhost"),
        Just("[::1]"),
        Just("LocalHost"),
        Just("127.0.0.2"),
        Just("localhost.evil.test"),
        Just("null"),
    ];
    let tail = prop_oneof![
        Just(String::new()),
        "(:[0-9]{0,7})",
        Just("/".to_owned()),
        Just("/x".to_owned()),
        Just(".evil.test".to_owned()),
        Just("@evil.test".to_owned()),
        Just(":80/".to_owned()),
    ];
    (scheme, host, tail).prop_map(|(s, h, t)| format!("{s}{h}{t}"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_host_gate_passes_exactly_the_three_spellings_of_the_proxy(
        host in host_like(),
        absolute in prop::option::of(("(http|https|HTTP|ws)", host_like())),
    ) {
        let Ok(value) = HeaderValue::from_str(&host) else { return Ok(()) };
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, value);
        let target = absolute.as_ref().map_or("/svc/x".to_owned(), |(s, a)| format!("{s}://{a}/svc/x"));
        let Ok(uri) = target.parse::<Uri>() else { return Ok(()) };
        let ok = HostAllowlist::new(PORT).check(&uri, &headers).is_ok();
        let uri_ok = uri.authority().is_none_or(|a| {
            host_oracle(a.as_str()) && uri.scheme_str().is_none_or(|s| s.eq_ignore_ascii_case("http"))
        });
        prop_assert_eq!(ok, host_oracle(&host) && uri_ok, "Host {:?}, target {:?}", host, target);
    }

    #[test]
    fn a_second_host_header_is_always_refused(a in host_like(), b in host_like()) {
        let (Ok(a), Ok(b)) = (HeaderValue::from_str(&a), HeaderValue::from_str(&b)) else { return Ok(()) };
        let mut headers = HeaderMap::new();
        headers.append(header::HOST, a);
        headers.append(header::HOST, b);
        prop_assert!(HostAllowlist::new(PORT).check(&Uri::from_static("/svc"), &headers).is_err());
    }

    #[test]
    fn the_origin_gate_passes_only_loopback_origins_and_no_preflight(
        origin in prop::option::of(origin_like()),
        site in prop::option::of("(cross-site|same-site|same-origin|none|Cross-Site|SAME-SITE)"),
        method in prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::OPTIONS)],
        preflight in any::<bool>(),
    ) {
        let mut headers = HeaderMap::new();
        if let Some(o) = &origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(o).map_err(|e| TestCaseError::reject(e.to_string()))?);
        }
        if let Some(s) = &site {
            headers.insert("sec-fetch-site", HeaderValue::from_str(s).map_err(|e| TestCaseError::reject(e.to_string()))?);
        }
        if preflight {
            headers.insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("POST"));
        }
        let cross = site.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("cross-site") || s.eq_ignore_ascii_case("same-site"));
        let expected = match &origin {
            Some(o) => origin_oracle(o),
            None => !cross,
        } && !(method == Method::OPTIONS && preflight);
        prop_assert_eq!(check_origin(&method, &headers).is_ok(), expected, "{:?} {:?} {} {}", origin, site, method, preflight);
    }

    #[test]
    fn only_latchkey_tokens_are_read_from_authorization(
        scheme in "(Bearer|bearer|BEARER|Basic|Token|)",
        token in "(lk_|LK_|lk|)[A-Za-z0-9_.-]{0,20}",
        latchkey_header in prop::option::of("[!-~]{0,20}"),
    ) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("{scheme} {token}")) {
            headers.insert(header::AUTHORIZATION, v);
        }
        if let Some(h) = &latchkey_header {
            headers.insert("x-latchkey-client", HeaderValue::from_str(h).map_err(|e| TestCaseError::reject(e.to_string()))?);
        }
        let got = presented_token(&headers);
        match &latchkey_header {
            Some(h) => prop_assert_eq!(got, Some(h.as_str())),
            None => {
                let expected = (scheme.eq_ignore_ascii_case("bearer") && token.starts_with("lk_")).then_some(token.as_str());
                prop_assert_eq!(got, expected);
            }
        }
    }
}

/// One spelling of `.` or `..` as an attacker would write it: each dot literal or encoded once,
/// twice or in either case, then perhaps a path parameter.
fn climbing_segment() -> impl Strategy<Value = String> {
    let dot = prop_oneof![
        Just("."),
        Just("%2e"),
        Just("%2E"),
        Just("%252e"),
        Just("%25252E")
    ];
    (
        prop::collection::vec(dot, 1..=2),
        prop_oneof![
            Just(""),
            Just(";"),
            Just(";x=1"),
            Just("%3b"),
            Just("%3Bjsessionid")
        ],
    )
        .prop_map(|(dots, tail)| format!("{}{tail}", dots.concat()))
}

fn any_segment() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-zA-Z0-9._~-]{1,4}",
            Just("%".to_owned()),
            Just("%2f".to_owned()),
            Just("%5C".to_owned()),
            Just("%25".to_owned()),
            Just("%2e".to_owned()),
            Just(";".to_owned()),
            Just("\\".to_owned()),
            Just("é".to_owned()),
            Just("%zz".to_owned()),
            Just("%41".to_owned()),
            Just(" ".to_owned()),
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

fn decode_canonical(segment: &str) -> Result<Vec<u8>, TestCaseError> {
    let b = segment.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = segment
                .get(i + 1..i + 3)
                .ok_or_else(|| TestCaseError::fail(format!("bare % in {segment:?}")))?;
            prop_assert!(
                hex.bytes()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()),
                "{segment:?}"
            );
            out.push(u8::from_str_radix(hex, 16).map_err(|e| TestCaseError::fail(e.to_string()))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_climbing_segment_anywhere_is_refused_in_every_spelling(
        before in prop::collection::vec(any_segment(), 0..3),
        attack in climbing_segment(),
        after in prop::collection::vec(any_segment(), 0..3),
    ) {
        let mut segments = before;
        segments.push(attack);
        segments.extend(after);
        let rest = format!("/{}", segments.join("/"));
        prop_assert!(path::normalise(&rest).is_err(), "{:?} was let through", rest);
    }

    #[test]
    fn a_normalised_path_is_canonical_and_stays_under_its_base(
        segments in prop::collection::vec(any_segment(), 0..6),
    ) {
        let rest = if segments.is_empty() { String::new() } else { format!("/{}", segments.join("/")) };
        let Ok(out) = path::normalise(&rest) else { return Ok(()) };
        prop_assert!(out.is_ascii(), "{:?}", out);
        prop_assert_eq!(out.matches('/').count(), rest.matches('/').count(), "{:?} -> {:?}", rest, out);
        prop_assert!(!out.contains(['?', '#', ';', '\\', ' ']), "{:?}", out);
        for segment in out.split('/').skip(1) {
            let raw = decode_canonical(segment)?;
            prop_assert!(raw != b"." && raw != b"..", "{:?} -> {:?}", rest, out);
            prop_assert!(!raw.contains(&b'/') && !raw.contains(&b'\\'), "{:?} -> {:?}", rest, out);
        }
        prop_assert_eq!(path::normalise(&out).ok(), Some(out.clone()), "not idempotent for {:?}", rest);
    }
}

/// Spellings a server may fold into `name`: any case, `_` for `-`.
fn look_alike(name: &'static str) -> impl Strategy<Value = String> {
    (
        prop::collection::vec(any::<bool>(), 1..20),
        prop::collection::vec(any::<bool>(), 1..4),
    )
        .prop_map(move |(case, under)| {
            let mut i = 0;
            recase(name, &case)
                .chars()
                .map(|c| {
                    if c == '-' {
                        i += 1;
                        if under[i % under.len()] { '_' } else { '-' }
                    } else {
                        c
                    }
                })
                .collect()
        })
}

fn policy(injected: &str) -> Result<(PreparedRoute, Arc<crate::state::Prepared>), TestCaseError> {
    let fail = |e: String| TestCaseError::fail(e);
    let route = Route::new(
        "svc",
        url::Url::parse("https://api.example.com/base/").map_err(|e| fail(e.to_string()))?,
        vec![
            Injection {
                credential: "h".into(),
                target: InjectTarget::header(injected, "Bearer ")
                    .map_err(|e| fail(e.to_string()))?,
            },
            Injection {
                credential: "q".into(),
                target: InjectTarget::Query {
                    param: "api_key".into(),
                },
            },
        ],
    )
    .map_err(|e| fail(e.to_string()))?;
    let route = PreparedRoute::new(&route);
    let values = [("h", HEADER_SECRET), ("q", QUERY_SECRET)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Secret::new(v)))
        .collect();
    let prepared = route
        .prepare(Arc::new(values))
        .map_err(|e| fail(e.to_string()))?;
    Ok((route, prepared))
}

const ALWAYS_STRIPPED: [&str; 9] = [
    "proxy-authorization",
    "cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "forwarded",
    "expect",
    "keep-alive",
    "x-latchkey-client",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_injected_header_arrives_once_whatever_the_client_sent(
        injected in prop_oneof![Just("x-api-key"), Just("authorization"), Just("private-token"), Just("x-goog-api-key")],
        sent in prop::collection::vec((
            prop_oneof![
                look_alike("x-api-key"), look_alike("authorization"), look_alike("private-token"),
                look_alike("x-latchkey-client"), look_alike("proxy-authorization"), look_alike("x-forwarded-for"),
                look_alike("cookie"), look_alike("transfer-encoding"), look_alike("connection"), look_alike("upgrade"),
                "[a-z][a-z0-9_-]{0,12}",
            ],
            "[ -~]{0,16}",
        ), 0..10),
        websocket in any::<bool>(),
    ) {
        let (route, prepared) = policy(injected)?;
        let mut request = HeaderMap::new();
        for (n, v) in &sent {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v)) {
                request.append(n, v);
            }
        }
        headers::rewrite_request(&mut request, &route, &prepared, websocket);
        let values: Vec<_> = request.get_all(injected).iter().map(HeaderValue::as_bytes).collect();
        let expected = format!("Bearer {HEADER_SECRET}");
        prop_assert_eq!(values, vec![expected.as_bytes()]);
        prop_assert_eq!(request.get(header::HOST).map(HeaderValue::as_bytes), Some(&b"api.example.com"[..]));
        for name in request.keys() {
            if name.as_str() == injected || *name == header::HOST {
                continue;
            }
            let canonical = name.as_str().replace('_', "-");
            prop_assert_ne!(&canonical, injected, "a look-alike survived: {}", name);
            prop_assert!(!ALWAYS_STRIPPED.contains(&canonical.as_str()), "{} survived", name);
            prop_assert!(!canonical.starts_with("proxy-") && !canonical.starts_with("x-forwarded-"), "{} survived", name);
            prop_assert!(websocket || *name != header::UPGRADE, "Upgrade survived a plain request");
        }
    }

    #[test]
    fn no_url_the_upstream_hands_back_carries_the_query_credential(
        form in prop_oneof![
            Just("https://api.example.com/base"),
            Just("https://API.example.com:443/base"),
            Just("//api.example.com/base"),
            Just("/base"),
            Just("/elsewhere"),
            Just("https://other.example/base"),
            Just("relative"),
            Just(""),
        ],
        tail in "(/[a-z0-9%.]{0,6}){0,3}",
        name in look_alike("api_key").prop_map(|n| n.replace('-', "_")),
        encode in any::<bool>(),
        before in prop::collection::vec("[a-z]{1,3}=[a-z0-9]{0,3}", 0..3),
        after in prop::collection::vec("[a-z]{1,3}=[a-z0-9]{0,3}", 0..3),
        fragment in prop::option::of("[a-z]{0,4}"),
        link in any::<bool>(),
    ) {
        let (route, _) = policy("x-api-key")?;
        let name = if encode { name.replace('_', "%5F") } else { name };
        let mut pairs = before;
        pairs.push(format!("{name}={QUERY_SECRET}"));
        pairs.extend(after);
        let mut url = format!("{form}{tail}?{}", pairs.join("&"));
        if let Some(f) = fragment {
            url.push('#');
            url.push_str(&f);
        }
        let (header_name, value) = if link {
            (header::LINK, format!("<{url}>; rel=\"next\""))
        } else {
            (header::LOCATION, url.clone())
        };
        let mut response = HeaderMap::new();
        response.insert(header_name.clone(), HeaderValue::from_str(&value).map_err(|e| TestCaseError::fail(e.to_string()))?);
        response.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        response.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        headers::rewrite_response(&mut response, &route, false);
        for (n, v) in &response {
            let text = String::from_utf8_lossy(v.as_bytes());
            prop_assert!(!text.contains(QUERY_SECRET), "{}: {:?} from {:?}", n, text, value);
        }
        prop_assert!(!response.contains_key(header::SET_COOKIE));
        prop_assert!(!response.contains_key("access-control-allow-origin"));
        prop_assert!(response.contains_key(header_name), "the URL header itself is kept");
    }

    #[test]
    fn the_query_filter_drops_injected_names_and_keeps_the_rest_in_order(
        pairs in prop::collection::vec(prop_oneof![
            "[a-z]{1,4}=[a-z0-9]{0,4}",
            look_alike("api_key").prop_map(|n| format!("{}=x", n.replace('-', "_"))),
            Just("api%5Fkey=x".to_owned()),
            Just("API_KEY".to_owned()),
            Just(" api_key =x".to_owned()),
            Just("a=1;api_key=x".to_owned()),
            Just(String::new()),
        ], 0..8),
    ) {
        let injected = vec!["api_key".to_owned()];
        let query = pairs.join("&");
        let mut out = String::new();
        let wrote = query::append_filtered(&mut out, &query, &injected);
        prop_assert_eq!(wrote, !out.is_empty());
        let kept: Vec<&str> = out.strip_prefix('?').map_or(Vec::new(), |q| q.split('&').collect());
        let expected: Vec<&str> = pairs
            .iter()
            .map(String::as_str)
            .filter(|p| {
                !p.is_empty()
                    && !p.split(';').any(|part| {
                        let raw = part.split_once('=').map_or(part, |(n, _)| n).replace("%5F", "_");
                        raw.trim().eq_ignore_ascii_case("api_key")
                    })
            })
            .collect();
        prop_assert_eq!(kept, expected, "{:?}", query);
        prop_assert!(!query::mentions(out.trim_start_matches('?'), &injected), "{:?}", out);
    }
}

/// The header policy as it was written before the single-pass version: a map lookup for every
/// stripped name, the names compared as folded strings. Kept as the oracle the faster version
/// must match exactly, header for header and value for value.
mod reference {
    use std::borrow::Cow;

    use http::{HeaderMap, HeaderName, HeaderValue, header};

    use crate::config::InjectTarget;
    use crate::gate::CLIENT_HEADER;
    use crate::headers;
    use crate::state::{Prepared, PreparedRoute};

    const STRIP_REQUEST: [&str; 10] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "te",
        "trailer",
        "transfer-encoding",
        "forwarded",
        "expect",
        "keep-alive",
    ];
    const STRIP_RESPONSE: [&str; 6] = [
        "te",
        "trailer",
        "transfer-encoding",
        "set-cookie",
        "proxy-authenticate",
        "keep-alive",
    ];

    fn canonical(name: &str) -> Cow<'_, str> {
        if name.contains('_') {
            Cow::Owned(name.replace('_', "-"))
        } else {
            Cow::Borrowed(name)
        }
    }

    pub(super) fn rewrite_request(
        headers: &mut HeaderMap,
        route: &PreparedRoute,
        prepared: &Prepared,
        websocket: bool,
    ) {
        remove_connection_named(headers, websocket);
        let injected: Vec<String> = route
            .route
            .injections
            .iter()
            .filter_map(|i| match &i.target {
                InjectTarget::Header { name, .. } => Some(canonical(name.as_str()).into_owned()),
                InjectTarget::Query { .. } => None,
            })
            .collect();
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                let canonical = canonical(name.as_str());
                let canonical = canonical.as_ref();
                STRIP_REQUEST.contains(&canonical)
                    || CLIENT_HEADER.as_str() == canonical
                    || injected.iter().any(|i| i == canonical)
                    || ["proxy-", "x-forwarded-"]
                        .iter()
                        .any(|p| canonical.starts_with(p))
            })
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
        if websocket {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        } else {
            headers.remove(header::UPGRADE);
        }
        for (name, value) in &prepared.headers {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(header::HOST, route.host.clone());
    }

    pub(super) fn rewrite_response(headers: &mut HeaderMap, route: &PreparedRoute, upgrade: bool) {
        remove_connection_named(headers, upgrade);
        for name in STRIP_RESPONSE {
            headers.remove(name);
        }
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        } else {
            headers.remove(header::UPGRADE);
        }
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                ["access-control-", "proxy-"]
                    .iter()
                    .any(|p| k.as_str().starts_with(p))
            })
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
        for name in [header::LOCATION, header::CONTENT_LOCATION, header::LINK] {
            headers::rewrite_url_header(headers, &name, route);
        }
    }

    fn remove_connection_named(headers: &mut HeaderMap, upgrade: bool) {
        if !headers.contains_key(header::CONNECTION) {
            return;
        }
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !(upgrade && t.eq_ignore_ascii_case("upgrade")))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
}

/// A header map as a comparable value: each name with its values in order (the order of names
/// is not part of HTTP's meaning, and removals reorder a `HeaderMap`).
fn contents(headers: &HeaderMap) -> std::collections::BTreeMap<String, Vec<Vec<u8>>> {
    headers
        .keys()
        .map(|name| {
            let values = headers.get_all(name).iter().map(|v| v.as_bytes().to_vec());
            (name.as_str().to_owned(), values.collect())
        })
        .collect()
}

/// A header name a client or an upstream might send: look-alikes of every name the policy
/// treats specially, the URL headers, and anything else.
fn any_policy_name() -> impl Strategy<Value = String> {
    prop_oneof![
        look_alike("x-api-key"),
        look_alike("authorization"),
        look_alike("x-latchkey-client"),
        look_alike("proxy-authorization"),
        look_alike("proxy-authenticate"),
        look_alike("x-forwarded-for"),
        look_alike("cookie"),
        look_alike("set-cookie"),
        look_alike("transfer-encoding"),
        look_alike("keep-alive"),
        look_alike("access-control-allow-origin"),
        look_alike("connection"),
        look_alike("upgrade"),
        look_alike("host"),
        look_alike("te"),
        look_alike("trailer"),
        look_alike("forwarded"),
        look_alike("expect"),
        Just("location".to_owned()),
        Just("content-location".to_owned()),
        Just("link".to_owned()),
        Just("close".to_owned()),
        "[a-z][a-z0-9_-]{0,12}",
    ]
}

/// A value: a `Connection` list naming other headers, a URL carrying the query credential, or
/// anything printable.
fn any_policy_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any_policy_name(), 0..4).prop_map(|names| names.join(", ")),
        Just(format!(
            "https://api.example.com/base/x?api_key={QUERY_SECRET}&b=1"
        )),
        Just(format!("</base/next?api_key={QUERY_SECRET}>; rel=\"next\"")),
        "[ -~]{0,16}",
    ]
}

/// `sent`, with a WebSocket handshake's `Connection` and `Upgrade` when `handshake` (random
/// names alone would rarely put the two together). Its `Connection` also lists the options
/// nearly every peer sends, and `close`, which names a header when there is one of that name.
fn with_handshake(mut sent: Vec<(String, String)>, handshake: bool) -> Vec<(String, String)> {
    if handshake {
        sent.push((
            "Connection".to_owned(),
            "Upgrade, keep-alive, close".to_owned(),
        ));
        sent.push(("Upgrade".to_owned(), "websocket".to_owned()));
    }
    sent
}

fn header_map(sent: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in sent {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.append(n, v);
        }
    }
    map
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_single_pass_request_policy_matches_the_reference(
        injected in prop_oneof![Just("x-api-key"), Just("X-Api_Key"), Just("authorization"), Just("private-token")],
        sent in prop::collection::vec((any_policy_name(), any_policy_value()), 0..10),
        websocket in any::<bool>(),
        handshake in any::<bool>(),
    ) {
        let (route, prepared) = policy(injected)?;
        let mut fast = header_map(&with_handshake(sent, handshake));
        let mut slow = fast.clone();
        headers::rewrite_request(&mut fast, &route, &prepared, websocket);
        reference::rewrite_request(&mut slow, &route, &prepared, websocket);
        prop_assert_eq!(contents(&fast), contents(&slow));
    }

    #[test]
    fn the_single_pass_response_policy_matches_the_reference(
        sent in prop::collection::vec((any_policy_name(), any_policy_value()), 0..10),
        upgrade in any::<bool>(),
        handshake in any::<bool>(),
    ) {
        let (route, _) = policy("x-api-key")?;
        let mut fast = header_map(&with_handshake(sent, handshake));
        let mut slow = fast.clone();
        headers::rewrite_response(&mut fast, &route, upgrade);
        reference::rewrite_response(&mut slow, &route, upgrade);
        prop_assert_eq!(contents(&fast), contents(&slow));
    }
}
