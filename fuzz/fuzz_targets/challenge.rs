//! Fuzzes the `WWW-Authenticate` parser: whatever it reads out of arbitrary text, written back in
//! the canonical form, reads back the same; a step-up never drops a granted scope nor repeats one.
//! The target itself is `latchkey_fuzz::challenge::run`, shared with the stable runner (`tests/quick.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_fuzz::challenge::run(data));
