//! Fuzzes the config loader with arbitrary text: whatever `Config::parse` accepts, the proxy must
//! accept too when built from it the way the runtime builds it (`runtime::source::proxy_config`).
//! Seed it with `fuzz/seeds/config` (valid configs), so mutations stay near the accepted set.
//! The target itself is `latchkey_fuzz::config::run`, shared with the stable runner (`tests/quick.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_fuzz::config::run(data));
