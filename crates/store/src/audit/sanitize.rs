//! What the audit log may keep of a request: query *values* are removed (they carry API keys
//! and signatures: `/x?token=abc&q=1` becomes `/x?token=&q=`), a bare query item with no `=` is
//! treated as a value and dropped, the `#fragment` is dropped, control characters (CR/LF
//! included) and Unicode line separators and bidi overrides are removed, and every field is
//! capped in length.
//!
//! Path segments are kept as they are: upstream APIs put resource names there, and Latchkey
//! itself only injects credentials into headers or query parameters, never into the path. A
//! client that puts a secret of its own into a path segment would have it recorded; that is the
//! documented limit of this module.

use std::borrow::Cow;
use std::sync::Arc;

/// Longest path (with its sanitised query) kept, in bytes.
pub(crate) const MAX_PATH: usize = 2048;
/// Longest method kept, in bytes.
pub(crate) const MAX_METHOD: usize = 16;
/// Longest client, service or error code kept, in bytes.
pub(crate) const MAX_NAME: usize = 64;

/// Characters never written: C0/C1 controls (CR, LF, ESC...), line/paragraph separators and
/// bidi embedding/override/isolate marks that could make a log line lie about its content.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Printable ASCII (space to `~`) holds none of [`is_unsafe`]'s characters: nearly every
/// field is all of it, and one pass over the bytes answers without decoding a `char`.
fn printable_ascii(raw: &str) -> bool {
    raw.bytes().all(|b| matches!(b, b' '..=b'~'))
}

/// The request target as the audit log keeps it.
pub(crate) fn path(raw: String) -> String {
    // One pass for the usual target: printable ASCII without a query or fragment.
    let plain = raw
        .bytes()
        .all(|b| matches!(b, b' '..=b'~') && b != b'?' && b != b'#');
    let clean = raw.len() <= MAX_PATH
        && (plain || (!raw.contains(['?', '#']) && !raw.chars().any(is_unsafe)));
    if clean {
        return raw;
    }
    let visible: String = raw.chars().filter(|&c| !is_unsafe(c)).collect();
    let target = visible
        .split_once('#')
        .map_or(visible.as_str(), |(before, _)| before);
    let mut out = String::with_capacity(target.len().min(MAX_PATH));
    match target.split_once('?') {
        None => out.push_str(target),
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, item) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                if let Some((key, _value)) = item.split_once('=') {
                    out.push_str(key);
                    out.push('=');
                }
            }
        }
    }
    truncate(out, MAX_PATH)
}

/// Whether a short field is kept as it is: within `max` bytes and without an unsafe character.
fn clean_field(raw: &str, max: usize) -> bool {
    raw.len() <= max && (printable_ascii(raw) || !raw.chars().any(is_unsafe))
}

/// A short text field (method, client, service, error code): unsafe characters removed, capped.
pub(crate) fn field(raw: String, max: usize) -> String {
    if clean_field(&raw, max) {
        return raw;
    }
    truncate(raw.chars().filter(|&c| !is_unsafe(c)).collect(), max)
}

/// [`field`] for a name shared with the request path: returned as it is (a reference count)
/// when nothing is to be removed, which is nearly always.
pub(crate) fn shared_field(raw: Arc<str>, max: usize) -> Arc<str> {
    if clean_field(&raw, max) {
        return raw;
    }
    Arc::from(field(raw.to_string(), max))
}

/// [`field`] for the method, capped at [`MAX_METHOD`]: a standard method's `'static` name is
/// kept as it is.
pub(crate) fn method(raw: Cow<'static, str>) -> Cow<'static, str> {
    match raw {
        Cow::Borrowed(name) if clean_field(name, MAX_METHOD) => raw,
        other => Cow::Owned(field(other.into_owned(), MAX_METHOD)),
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        path(s.to_owned())
    }

    #[test]
    fn query_values_are_removed_and_keys_kept() {
        assert_eq!(p("/x?token=abc&q=1"), "/x?token=&q=");
        assert_eq!(p("/x?a=1=2&b="), "/x?a=&b=");
        assert_eq!(p("/repos/o/r/issues"), "/repos/o/r/issues");
    }

    #[test]
    fn bare_query_items_count_as_values() {
        assert_eq!(p("/x?sekrit&q=1"), "/x?&q=");
        assert_eq!(p("/x?"), "/x?");
        // Nothing but the delimiters: the one-pass check must not take them for a plain path.
        assert_eq!(p("??"), "?");
    }

    #[test]
    fn fragments_are_dropped_even_before_a_query() {
        assert_eq!(p("/x#frag?token=abc"), "/x");
        assert_eq!(p("/x?k=v#frag"), "/x?k=");
        assert_eq!(p("##"), "");
    }

    #[test]
    fn crlf_and_other_controls_cannot_forge_lines() {
        assert_eq!(p("/a\r\nX-Injected: 1"), "/aX-Injected: 1");
        assert_eq!(p("/a?k=v\r\n&t=secret\n"), "/a?k=&t=");
        assert_eq!(field("GET\r\n".to_owned(), MAX_METHOD), "GET");
        assert_eq!(field("svc\u{202E}txt".to_owned(), MAX_NAME), "svctxt");
        assert_eq!(field("x\u{2028}y\u{1b}".to_owned(), MAX_NAME), "xy");
    }

    #[test]
    fn lengths_are_capped_on_character_boundaries() {
        let long = format!("/{}", "é".repeat(MAX_PATH));
        let out = p(&long);
        assert!(out.len() <= MAX_PATH);
        assert!(out.starts_with("/é"));
        assert_eq!(field("a".repeat(100), MAX_NAME).len(), MAX_NAME);
    }

    #[test]
    fn clean_input_is_returned_unchanged() {
        assert_eq!(p("/v1/items/42"), "/v1/items/42");
        assert_eq!(
            field("client_unauthorized".to_owned(), MAX_NAME),
            "client_unauthorized"
        );
    }

    /// The byte check is a shortcut of the character check, never a looser one: every ASCII
    /// character it passes is safe, and it passes no control (DEL included).
    #[test]
    fn the_printable_ascii_shortcut_passes_only_safe_characters() {
        for b in 0u8..=127 {
            let c = char::from(b);
            let text = c.to_string();
            if printable_ascii(&text) {
                assert!(!is_unsafe(c), "{b:#04x} passed but unsafe");
            }
            assert_eq!(printable_ascii(&text), !c.is_control(), "{b:#04x}");
        }
        assert!(!printable_ascii("caf\u{e9}"), "non-ASCII goes the long way");
        assert_eq!(field("a\u{7f}b".to_owned(), MAX_NAME), "ab");
    }

    /// A shared name goes through the same rules as an owned one: unsafe characters removed,
    /// capped (the registry and the configuration only let safe names through, but the audit
    /// log does not rely on that).
    #[test]
    fn shared_names_are_sanitised_like_owned_ones() {
        let forged: Arc<str> = Arc::from("cli\r\nX: forged\u{202E}");
        assert_eq!(&*shared_field(forged, MAX_NAME), "cliX: forged");
        let long: Arc<str> = Arc::from("a".repeat(MAX_NAME + 10));
        assert_eq!(shared_field(long, MAX_NAME).len(), MAX_NAME);
        assert_eq!(method(Cow::Owned("PO\u{1b}ST".to_owned())), "POST");
        assert_eq!(method(Cow::Borrowed("GET\n")), "GET");
        assert_eq!(method(Cow::Owned("X".repeat(40))).len(), MAX_METHOD);
    }

    /// The fast paths are the point of these functions: a clean value, ASCII or not, comes back
    /// as the same allocation (a standard method as the same `'static` name), not rebuilt.
    #[test]
    fn clean_values_come_back_as_they_are_not_rebuilt() {
        for text in ["/v1/items/42", "/caf\u{e9}/\u{65e5}\u{672c}"] {
            let raw = text.to_owned();
            let at = raw.as_ptr();
            let kept = path(raw);
            assert_eq!(kept.as_ptr(), at, "{text}");
        }
        for text in ["client-1", "caf\u{e9}"] {
            let raw = text.to_owned();
            let at = raw.as_ptr();
            let kept = field(raw, MAX_NAME);
            assert_eq!(kept.as_ptr(), at, "{text}");
            let shared: Arc<str> = Arc::from(text);
            assert!(
                Arc::ptr_eq(&shared_field(Arc::clone(&shared), MAX_NAME), &shared),
                "{text}"
            );
        }
        assert!(matches!(method(Cow::Borrowed("GET")), Cow::Borrowed("GET")));
    }
}
