//! The Latchkey tray app.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    latchkey_app::run();
}
