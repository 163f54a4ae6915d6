//! Fuzzes the header policy with arbitrary client and upstream heads: upstream-bound, the injected
//! header carries exactly the credential and nothing the client sent under any spelling of a
//! stripped name survives; client-bound, no URL header carries the injected query credential and
//! no cookie, CORS or proxy header passes.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use latchkey_core::secret::Secret;
use latchkey_proxy::fuzzing::HeaderPolicy;
use latchkey_proxy::{InjectTarget, Injection, Route};

const HEADER_SECRET: &str = "hdr-SECRET-7f3a9c";
const QUERY_SECRET: &str = "qry-SECRET-2b8e41";

const STRIPPED: [&str; 10] = [
    "proxy-authorization",
    "cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "forwarded",
    "expect",
    "keep-alive",
    "x-latchkey-client",
    "authorization",
];

fn canonical(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn pairs(field: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
    field
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let i = line.iter().position(|b| *b == b':')?;
            Some((
                HeaderName::from_bytes(&line[..i]).ok()?,
                HeaderValue::from_bytes(&line[i + 1..]).ok()?,
            ))
        })
        .collect()
}

/// One run of the target on `data`: returns, or panics on a broken invariant.
pub fn run(data: &[u8]) {
    if data.windows(6).any(|w| w == b"SECRET") {
        return;
    }
    let mut fields = data.split(|b| *b == 0xff);
    let (Some(name), Some(flags)) = (fields.next(), fields.next()) else {
        return;
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    let Ok(target) = InjectTarget::header(name, "Bearer ") else {
        return;
    };
    let Ok(upstream) = url::Url::parse("https://api.example.com/base/") else {
        return;
    };
    let route = Route {
        service: "svc".into(),
        upstream,
        injections: vec![
            Injection {
                credential: "h".into(),
                target,
            },
            Injection {
                credential: "q".into(),
                target: InjectTarget::Query {
                    param: "api_key".into(),
                },
            },
        ],
        identity_token: false,
    };
    let values = [("h", HEADER_SECRET), ("q", QUERY_SECRET)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Secret::new(v)))
        .collect();
    let Some(policy) = HeaderPolicy::new(&route, values) else {
        return;
    };
    let injected = policy.injected_headers()[0].clone();
    let websocket = flags.first().is_some_and(|f| f & 1 == 1);

    // Upstream-bound.
    let mut request = HeaderMap::new();
    for (n, v) in pairs(fields.next().unwrap_or_default()) {
        request.append(n, v);
    }
    policy.rewrite_request(&mut request, websocket);
    let values: Vec<_> = request.get_all(&injected).iter().collect();
    assert_eq!(values.len(), 1, "{injected}: {values:?}");
    assert_eq!(
        values[0].as_bytes(),
        format!("Bearer {HEADER_SECRET}").as_bytes()
    );
    assert_eq!(request.get_all(header::HOST).iter().count(), 1);
    assert_eq!(
        request.get(header::HOST).map(HeaderValue::as_bytes),
        Some(&b"api.example.com"[..])
    );
    for (n, v) in &request {
        if *n == injected || *n == header::HOST {
            continue;
        }
        let c = canonical(n.as_str());
        assert_ne!(
            c,
            canonical(injected.as_str()),
            "a look-alike of {injected} survived: {n}"
        );
        assert!(!STRIPPED.contains(&c.as_str()), "{n} survived");
        assert!(
            !c.starts_with("proxy-") && !c.starts_with("x-forwarded-"),
            "{n} survived"
        );
        assert!(
            websocket || *n != header::UPGRADE,
            "Upgrade survived a plain request"
        );
        assert!(
            !String::from_utf8_lossy(v.as_bytes()).contains("SECRET"),
            "{n} holds a secret"
        );
    }

    // Client-bound: the upstream echoes its URL (with the injected credential) in URL headers.
    let (Some(prefix), Some(suffix)) = (fields.next(), fields.next()) else {
        return;
    };
    let prefix = String::from_utf8_lossy(prefix);
    let suffix = String::from_utf8_lossy(suffix);
    if prefix.contains(['?', '#', '&', ';', '<', '>', ',']) || suffix.contains(['#', '<', '>', ','])
    {
        return;
    }
    let echoed = format!("{prefix}?api_key={QUERY_SECRET}&{suffix}");
    let mut response = HeaderMap::new();
    for (n, v) in pairs(fields.next().unwrap_or_default()) {
        response.append(n, v);
    }
    for (name, value) in [
        (header::LOCATION, echoed.clone()),
        (header::CONTENT_LOCATION, echoed.clone()),
        (header::LINK, format!("<{echoed}>; rel=\"next\"")),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.append(name, v);
        }
    }
    policy.rewrite_response(&mut response, flags.first().is_some_and(|f| f & 2 == 2));
    for (n, v) in &response {
        let text = String::from_utf8_lossy(v.as_bytes());
        assert!(
            !text.contains(QUERY_SECRET),
            "{n}: {text:?} from {echoed:?}"
        );
        assert_ne!(*n, header::SET_COOKIE);
        assert!(
            !n.as_str().starts_with("access-control-") && !n.as_str().starts_with("proxy-"),
            "{n}"
        );
    }
}
