//! Fuzzes the splice of Latchkey's entry into a host's config file (`latchkey_hosts::apply`) with
//! arbitrary existing files: a file the scanner accepts is always spliced, the result scans again,
//! names the entry, and keeps every other member byte for byte.
//! The target itself is `latchkey_fuzz::jsonc::run`, shared with the stable runner (`tests/quick.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_fuzz::jsonc::run(data));
