//! Fuzzes the header policy with arbitrary client and upstream heads: upstream-bound, the injected
//! header carries exactly the credential and nothing the client sent under any spelling of a
//! stripped name survives; client-bound, no URL header carries the injected query credential and
//! no cookie, CORS or proxy header passes.
//! The target itself is `latchkey_fuzz::header_policy::run`, shared with the stable runner (`tests/quick.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_fuzz::header_policy::run(data));
