//! Placeholder: the Tauri shell (being written).
