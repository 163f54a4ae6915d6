//! Fuzzes the `WWW-Authenticate` parser: whatever it reads out of arbitrary text, written back in
//! the canonical form, reads back the same; a step-up never drops a granted scope nor repeats one.

use latchkey_core::mcp_oauth::challenge::{self, Challenge};

fn render(challenges: &[Challenge]) -> String {
    challenges
        .iter()
        .map(|c| {
            let mut s = c.scheme.clone();
            if let Some(t) = &c.token68 {
                s.push(' ');
                s.push_str(t);
            } else if !c.params.is_empty() {
                s.push(' ');
                let params: Vec<String> = c
                    .params
                    .iter()
                    .map(|(k, v)| {
                        format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                    })
                    .collect();
                s.push_str(&params.join(", "));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One run of the target on `data`: returns, or panics on a broken invariant.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = challenge::parse(text);
    for c in &parsed {
        assert!(!c.scheme.is_empty(), "empty scheme from {text:?}");
        assert!(
            c.params
                .iter()
                .all(|(k, _)| !k.is_empty() && *k == k.to_ascii_lowercase())
        );
    }
    let again = challenge::parse(&render(&parsed));
    assert_eq!(
        again, parsed,
        "canonical form of {text:?} reads back differently"
    );

    let granted = vec!["read".to_owned(), "write".to_owned()];
    for c in &parsed {
        if let Some(union) = challenge::step_up_scopes(&granted, c) {
            assert_eq!(&union[..2], &granted[..], "granted scopes kept first");
            let mut seen = std::collections::HashSet::new();
            assert!(
                union.iter().all(|s| seen.insert(s)),
                "no duplicate in {union:?}"
            );
            assert!(
                c.scopes()
                    .is_some_and(|w| w.iter().all(|s| union.contains(s)))
            );
        }
    }
}
