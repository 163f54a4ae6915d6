//! Fuzzes path normalisation: whatever it lets through is canonical (normalising again changes
//! nothing), keeps the segment count, and has no segment that climbs or splits once decoded.

fn decode(segment: &str) -> Vec<u8> {
    let b = segment.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            assert!(i + 2 < b.len(), "{segment:?}: a bare %");
            let h = u8::from_str_radix(&segment[i + 1..i + 3], 16).expect("encoder writes hex");
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// One run of the target on `data`: returns, or panics on a broken invariant.
pub fn run(data: &[u8]) {
    let Ok(rest) = std::str::from_utf8(data) else {
        return;
    };
    let Some(out) = latchkey_proxy::fuzzing::normalise_path(rest) else {
        return;
    };
    assert!(out.is_ascii(), "{out:?} is not ASCII");
    assert_eq!(out.is_empty(), rest.is_empty(), "{rest:?} -> {out:?}");
    assert_eq!(
        out.matches('/').count(),
        rest.matches('/').count(),
        "segments of {rest:?} -> {out:?}"
    );
    assert!(
        !out.bytes()
            .any(|b| matches!(b, b'?' | b'#' | b';' | b'\\' | b' ') || b.is_ascii_control()),
        "{out:?} keeps a delimiter"
    );
    for segment in out.split('/').skip(1) {
        let raw = decode(segment);
        assert!(
            raw != b"." && raw != b"..",
            "{rest:?} -> climbing segment {segment:?}"
        );
        assert!(
            !raw.contains(&b'/') && !raw.contains(&b'\\'),
            "{rest:?} -> splitting {segment:?}"
        );
    }
    assert_eq!(
        latchkey_proxy::fuzzing::normalise_path(&out).as_deref(),
        Some(out.as_str()),
        "not idempotent for {rest:?}"
    );
}
