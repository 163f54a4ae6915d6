//! The fuzz targets of the parsers and rewriters that see hostile input (SECURITY.md, "Fuzzing"),
//! one module each with `run(data)`: it returns, or panics when an invariant breaks. Two drivers
//! share them: libFuzzer through cargo-fuzz (`fuzz_targets/`, nightly, coverage-guided, by hand)
//! and the stable runner `tests/quick.rs` (seeds, corpus and mutated inputs for a fixed time, in
//! `scripts/test`).

pub mod challenge;
pub mod config;
pub mod gate;
pub mod header_policy;
pub mod jsonc;
pub mod path;
pub mod sse;

/// A target: its name and its `run`.
pub type Target = (&'static str, fn(&[u8]));

/// Every target by name, in the order the runners take them.
pub const TARGETS: [Target; 7] = [
    ("challenge", challenge::run),
    ("config", config::run),
    ("gate", gate::run),
    ("header_policy", header_policy::run),
    ("jsonc", jsonc::run),
    ("path", path::run),
    ("sse", sse::run),
];
