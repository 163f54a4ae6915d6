//! Fuzzes the stdio bridge's SSE parser (`crates/cli/src/cmd/mcp/sse.rs`, in a binary crate, so
//! compiled here from its source file): the events do not depend on how the bytes were chunked.

#[allow(dead_code, missing_docs)]
#[path = "../../crates/cli/src/cmd/mcp/sse.rs"]
mod parser;

fn parse_chunks(chunks: &[&[u8]]) -> Option<(Vec<parser::Event>, Option<std::time::Duration>)> {
    let mut p = parser::Parser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(p.feed(chunk).ok()?);
    }
    Some((events, p.retry()))
}

/// One run of the target on `data`: returns, or panics on a broken invariant.
pub fn run(data: &[u8]) {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole = parse_chunks(&[body]);
    let at = usize::from(cut).min(body.len());
    let (a, b) = body.split_at(at);
    assert_eq!(parse_chunks(&[a, b]), whole, "split at {at}");
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(parse_chunks(&bytes), whole, "byte by byte");
}
