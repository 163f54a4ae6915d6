//! The main window, created on demand and destroyed when closed, so no webview lives while
//! Latchkey sits in the tray.

use tauri::{AppHandle, Manager, WebviewUrl, WebviewWindowBuilder};

/// Label of the main window (its capability names it).
pub const MAIN: &str = "main";

/// Shows (creating if needed) and focuses the main window.
pub fn show_main(app: &AppHandle) {
    if let Some(w) = app.get_webview_window(MAIN) {
        let _ = w.unminimize();
        let _ = w.show();
        let _ = w.set_focus();
        return;
    }
    let built = WebviewWindowBuilder::new(app, MAIN, WebviewUrl::App("index.html".into()))
        .title("Latchkey")
        .inner_size(440.0, 660.0)
        .min_inner_size(360.0, 480.0)
        .build();
    if let Err(e) = built {
        tracing::warn!(error = %e, "cannot open the main window");
    }
}
