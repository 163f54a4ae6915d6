//! Query strings without the parameters a service's mapping injects: the client's query before
//! it is forwarded (a client must not choose or shadow the credential) and any URL an upstream
//! hands back (`Location`, `Content-Location`, `Link`), which must not carry the credential to
//! the client.

use std::borrow::Cow;

/// Appends `?query` to `out`, without any parameter whose (decoded, case-insensitive) name is in
/// `injected`; the rest is kept verbatim. Returns whether anything was written.
pub(crate) fn append_filtered(out: &mut String, query: &str, injected: &[String]) -> bool {
    if injected.is_empty() {
        if query.is_empty() {
            return false;
        }
        out.push('?');
        out.push_str(query);
        return true;
    }
    let mut first = true;
    for pair in query.split('&') {
        if pair.is_empty() || pair.split(';').any(|part| names_injected(part, injected)) {
            continue;
        }
        out.push(if first { '?' } else { '&' });
        out.push_str(pair);
        first = false;
    }
    !first
}

/// Whether `query` names an injected parameter at all.
pub(crate) fn mentions(query: &str, injected: &[String]) -> bool {
    !injected.is_empty()
        && query
            .split('&')
            .flat_map(|pair| pair.split(';'))
            .any(|part| names_injected(part, injected))
}

fn names_injected(part: &str, injected: &[String]) -> bool {
    let raw = part.split_once('=').map_or(part, |(name, _)| name);
    let name: Cow<'_, str> = if raw.contains(['%', '+']) {
        url::form_urlencoded::parse(raw.as_bytes())
            .next()
            .map_or(Cow::Borrowed(""), |(k, _)| k)
    } else {
        Cow::Borrowed(raw)
    };
    injected.iter().any(|p| p.eq_ignore_ascii_case(name.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_query_params_are_removed_even_when_encoded() {
        let injected = vec!["api_key".to_owned()];
        let mut out = String::new();
        assert!(append_filtered(
            &mut out,
            "q=1&api_key=evil&API%5Fkey=x&a=b;api_key=y&z",
            &injected
        ));
        assert_eq!(out, "?q=1&z");
        assert!(mentions("a=1&Api_Key=2", &injected));
        assert!(!mentions("a=1&api_keys=2", &injected));
    }

    #[test]
    fn the_query_is_kept_verbatim_without_query_injections() {
        let mut out = String::new();
        assert!(append_filtered(&mut out, "a=%20b&c", &[]));
        assert_eq!(out, "?a=%20b&c");
        let mut out = String::new();
        assert!(!append_filtered(&mut out, "", &[]));
    }
}
