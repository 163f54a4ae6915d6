//! Fuzzes the `Host` and `Origin` gates and the token reader with arbitrary request heads, checking
//! each verdict against a plain restatement of the rule: a pass names the proxy exactly.
//! The target itself is `latchkey_fuzz::gate::run`, shared with the stable runner (`tests/quick.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_fuzz::gate::run(data));
