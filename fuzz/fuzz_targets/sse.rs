//! Fuzzes the stdio bridge's SSE parser (`crates/cli/src/cmd/mcp/sse.rs`, in a binary crate, so
//! compiled here from its source file): the events do not depend on how the bytes were chunked.
#![no_main]

#[allow(dead_code, missing_docs)]
#[path = "../../crates/cli/src/cmd/mcp/sse.rs"]
mod sse;

use libfuzzer_sys::fuzz_target;

fn run(chunks: &[&[u8]]) -> Option<(Vec<sse::Event>, Option<std::time::Duration>)> {
    let mut p = sse::Parser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(p.feed(chunk).ok()?);
    }
    Some((events, p.retry()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole = run(&[body]);
    let at = usize::from(cut).min(body.len());
    let (a, b) = body.split_at(at);
    assert_eq!(run(&[a, b]), whole, "split at {at}");
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "byte by byte");
});
