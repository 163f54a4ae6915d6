//! Fuzzes path normalisation: whatever it lets through is canonical (normalising again changes
//! nothing), keeps the segment count, and has no segment that climbs or splits once decoded.
//! The target itself is `latchkey_fuzz::path::run`, shared with the stable runner (`tests/quick.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_fuzz::path::run(data));
