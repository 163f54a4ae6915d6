//! Property tests of audit sanitising (issue 10): whatever request target a client sends, the row
//! keeps no query value, no fragment, no character that could forge or hide a log line, and no
//! more than [`MAX_PATH`] bytes; a target with nothing to remove is kept as it is.

use proptest::prelude::*;

use super::sanitize::{MAX_PATH, field, path};

/// Values are drawn from an alphabet (upper case and digits after `SECRET`) that paths and keys
/// (lower case) never use, so finding one in a row means a value leaked.
fn secret() -> impl Strategy<Value = String> {
    "[A-Z0-9]{0,12}".prop_map(|v| format!("SECRET{v}"))
}

fn noise() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-z/._-]{0,6}",
            Just("\r\n".to_owned()),
            Just("\u{2028}".to_owned()),
            Just("\u{202E}".to_owned()),
            Just("\u{1b}[2J".to_owned()),
            Just("é".to_owned()),
            Just("%0d%0a".to_owned()),
        ],
        0..4,
    )
    .prop_map(|parts| parts.concat())
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_query_value_reaches_a_row(
        target in noise(),
        pairs in prop::collection::vec((noise(), prop::option::of(secret())), 0..6),
        fragment in prop::option::of((noise(), secret())),
        long in prop::option::of(0usize..3000),
    ) {
        let mut raw = format!("/{target}");
        if let Some(n) = long {
            raw.push_str(&"a".repeat(n));
        }
        if !pairs.is_empty() {
            raw.push('?');
            let items: Vec<String> = pairs
                .iter()
                .map(|(k, v)| v.as_ref().map_or_else(|| format!("{k}SECRETBARE"), |v| format!("{k}={v}")))
                .collect();
            raw.push_str(&items.join("&"));
        }
        if let Some((f, s)) = &fragment {
            raw.push('#');
            raw.push_str(f);
            raw.push_str(s);
        }
        let row = path(raw.clone());
        prop_assert!(!row.contains("SECRET"), "{:?} -> {:?}", raw, row);
        prop_assert!(!row.contains('#'), "{:?} -> {:?}", raw, row);
        prop_assert!(!row.chars().any(is_unsafe), "{:?} -> {:?}", raw, row);
        prop_assert!(row.len() <= MAX_PATH, "{} bytes", row.len());
    }

    #[test]
    fn any_target_leaves_only_keys_in_the_query(raw in any::<String>()) {
        let row = path(raw.clone());
        prop_assert!(row.len() <= MAX_PATH);
        prop_assert!(!row.contains('#') && !row.chars().any(is_unsafe), "{:?} -> {:?}", raw, row);
        if let Some((_, query)) = row.split_once('?') {
            for item in query.split('&') {
                prop_assert!(
                    item.is_empty() || item.find('=') == Some(item.len() - 1),
                    "{:?} keeps a value in {:?}", raw, item
                );
            }
        }
    }

    #[test]
    fn a_clean_short_target_is_kept_verbatim(raw in "/[a-zA-Z0-9/._~%-]{0,200}") {
        prop_assert_eq!(path(raw.clone()), raw);
    }

    #[test]
    fn short_fields_lose_only_unsafe_characters(raw in any::<String>(), max in 1usize..80) {
        let out = field(raw.clone(), max);
        prop_assert!(out.len() <= max);
        prop_assert!(!out.chars().any(is_unsafe));
        let visible: String = raw.chars().filter(|&c| !is_unsafe(c)).collect();
        prop_assert!(visible.starts_with(&out), "{:?} -> {:?}", raw, out);
    }
}
