//! Integration tests of `latchkey-store` through its public API, on real SQLite files.

mod audit;
mod clients;
mod database;

use std::path::{Path, PathBuf};

/// A database path inside a fresh private temporary directory.
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latchkey.db");
    (dir, path)
}

/// Every byte SQLite keeps for `path`: the database and its WAL and shared-memory files.
pub fn disk_bytes(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        if let Ok(bytes) = std::fs::read(&file) {
            out.extend(bytes);
        }
    }
    assert!(!out.is_empty(), "the database file exists");
    out
}

/// True if `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
