//! The one canonical form of a forwarded path. Upstreams (and the servers and frameworks in front
//! of them) disagree on what `..;/`, `..\`, `%2e%2e%2f` or a doubly encoded `%252e` mean; some
//! resolve them and climb out of the service's base path. So the proxy decides for them: each
//! segment is percent-decoded until it no longer changes, cut at `;` (path parameters), refused
//! when it then contains `/` or `\` or is `.` or `..`, and re-encoded one way, so the upstream
//! sees one unambiguous spelling of a path that stays under its base.

use std::borrow::Cow;

use crate::error::ProxyError;

/// How many decoding rounds a segment may take before it is refused (`%25` nested this deep is
/// an attack, not a name).
const MAX_DECODE_ROUNDS: usize = 8;

/// The canonical form of `rest`, the part of the request path after `/{service}` (empty, or
/// starting with `/`). Refuses a segment that would climb or split after decoding.
///
/// The proxy itself builds the upstream's target with [`normalise_into`]; this form is the
/// one the tests, the property tests and the fuzz target check.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn normalise(rest: &str) -> Result<String, ProxyError> {
    let mut out = String::with_capacity(rest.len());
    normalise_into(&mut out, rest)?;
    Ok(out)
}

/// [`normalise`], appended to `out` (the forwarded target, after the upstream's base path).
/// On a refusal, `out` may hold part of the path.
pub(crate) fn normalise_into(out: &mut String, rest: &str) -> Result<(), ProxyError> {
    let Some(segments) = rest.strip_prefix('/') else {
        return if rest.is_empty() {
            Ok(())
        } else {
            Err(ProxyError::InvalidPath)
        };
    };
    for segment in segments.split('/') {
        out.push('/');
        let decoded = decode_fully(segment.as_bytes())?;
        let kept = decoded
            .iter()
            .position(|&b| b == b';')
            .map_or(&decoded[..], |cut| &decoded[..cut]);
        if kept == b"." || kept == b".." || kept.iter().any(|&b| b == b'/' || b == b'\\') {
            return Err(ProxyError::InvalidPath);
        }
        encode_into(out, kept);
    }
    Ok(())
}

/// Percent-decodes `segment` until a round changes nothing. A segment without `%` is its own
/// decoding, and is returned as it is (most are; this saves two allocations per segment).
fn decode_fully(segment: &[u8]) -> Result<Cow<'_, [u8]>, ProxyError> {
    if !segment.contains(&b'%') {
        return Ok(Cow::Borrowed(segment));
    }
    let mut current = segment.to_vec();
    for _ in 0..MAX_DECODE_ROUNDS {
        let next = decode_once(&current);
        if next == current {
            return Ok(Cow::Owned(current));
        }
        current = next;
    }
    Err(ProxyError::InvalidPath)
}

/// One round of percent-decoding; a `%` not followed by two hex digits stays as it is.
fn decode_once(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                input.get(i + 1).and_then(|b| hex(*b)),
                input.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `bytes` with everything but RFC 3986 unreserved characters and the sub-delimiters
/// other than `;` (plus `:` and `@`) percent-encoded in upper case.
fn encode_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        let plain = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b);
        if plain {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn climbing_and_splitting_segments_are_refused_in_every_spelling() {
        for attack in [
            "/a/../b",
            "/./b",
            "/..;/admin",
            "/..;x/admin",
            "/..\\admin",
            "/..%5cadmin",
            "/..%5Cadmin",
            "/..%2fadmin",
            "/%2e%2e%2fadmin",
            "/%2E%2E/admin",
            "/%252e%252e/admin",
            "/%25252e%25252e%25252f",
            "/a%2fb",
            "/.%2e/x",
            "/x/..",
        ] {
            assert_eq!(normalise(attack), Err(ProxyError::InvalidPath), "{attack}");
        }
    }

    #[test]
    fn ordinary_paths_keep_their_meaning_in_one_spelling() {
        assert_eq!(normalise("").as_deref(), Ok(""));
        assert_eq!(normalise("/").as_deref(), Ok("/"));
        assert_eq!(normalise("/repos/x/y").as_deref(), Ok("/repos/x/y"));
        assert_eq!(normalise("/a%20b/c%2Dd").as_deref(), Ok("/a%20b/c-d"));
        assert_eq!(normalise("/..b/c.d/...").as_deref(), Ok("/..b/c.d/..."));
        assert_eq!(
            normalise("/items;jsessionid=1/x").as_deref(),
            Ok("/items/x")
        );
        assert_eq!(normalise("/100%").as_deref(), Ok("/100%25"));
        assert_eq!(
            normalise("/%2541").as_deref(),
            Ok("/A"),
            "decoded until stable"
        );
        assert_eq!(normalise("/é").as_deref(), Ok("/%C3%A9"));
        assert_eq!(normalise("/a//b").as_deref(), Ok("/a//b"));
    }

    #[test]
    fn too_deeply_nested_encodings_are_refused() {
        // Each round turns one `%25` back into `%`: this needs more rounds than allowed.
        let deep = format!("/%{}41", "25".repeat(MAX_DECODE_ROUNDS + 2));
        assert_eq!(normalise(&deep), Err(ProxyError::InvalidPath));
        let shallow = format!("/%{}41", "25".repeat(MAX_DECODE_ROUNDS - 3));
        assert_eq!(normalise(&shallow).as_deref(), Ok("/A"));
    }
}
