//! Fuzzes the stdio bridge's SSE parser (`crates/cli/src/cmd/mcp/sse.rs`, in a binary crate, so
//! compiled here from its source file): the events do not depend on how the bytes were chunked.
//! The target itself is `latchkey_fuzz::sse::run`, shared with the stable runner (`tests/quick.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_fuzz::sse::run(data));
