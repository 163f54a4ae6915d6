//! The main window, in the window process: created when the process starts, shown again (at an
//! item) when the tray asks, and the process ends when it is closed, so no webview lives while
//! Latchkey sits in the tray. It comes back where the person left it, at the size they gave it
//! (kept in tauri-plugin-store's `settings.json`, beside the preferences).

use serde::{Deserialize, Serialize};
use tauri::{
    AppHandle, Emitter, LogicalPosition, LogicalSize, Manager, WebviewUrl, WebviewWindow,
    WebviewWindowBuilder, WindowEvent,
};
use tauri_plugin_store::StoreExt;

/// Label of the main window (its capability names it).
pub const MAIN: &str = "main";

const FILE: &str = "settings.json";
const KEY: &str = "main_window";
/// The default size: every screen is laid out for it (and checked from 360 px up).
const DEFAULT: (f64, f64) = (440.0, 660.0);
const MIN: (f64, f64) = (360.0, 480.0);

/// Where the main window was and how big, in logical pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// Left edge of the window's frame.
    pub x: f64,
    /// Top edge of the window's frame.
    pub y: f64,
    /// Width of the window's content.
    pub width: f64,
    /// Height of the window's content.
    pub height: f64,
}

/// A monitor's area in logical pixels: `(x, y, width, height)`.
pub type Area = (f64, f64, f64, f64);

impl Geometry {
    /// The stored geometry made safe to use: the size at least the minimum (a corrupt or tiny one
    /// would cut screens), the position dropped unless the window's top-left part lands on one of
    /// `monitors` (a monitor unplugged since would leave the window off screen).
    pub fn restored(self, monitors: &[Area]) -> (Option<(f64, f64)>, (f64, f64)) {
        let finite = [self.x, self.y, self.width, self.height]
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            return (None, DEFAULT);
        }
        let size = (self.width.max(MIN.0), self.height.max(MIN.1));
        let visible = monitors.iter().any(|&(mx, my, mw, mh)| {
            self.x + 40.0 >= mx
                && self.x + 40.0 < mx + mw
                && self.y >= my
                && self.y + 20.0 < my + mh
        });
        (visible.then_some((self.x, self.y)), size)
    }
}

/// Where a tray line opens the window: the window's section and the item in it.
/// It is the `latchkey://open-section` event's payload.
#[derive(Clone, serde::Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub(crate) struct OpenAt<'a> {
    section: &'a str,
    item: &'a str,
}

/// Shows the main window (creating it if needed), at `at` (`<section>/<item>`) when given. An
/// open window gets the `latchkey://open-section` event; a window that is only being created
/// cannot listen yet, so it is sent to the same place through its address
/// (`#open=<section>/<item>`, read by the window when it starts).
pub fn show(app: &AppHandle, at: Option<&str>) {
    let existed = app.get_webview_window(MAIN).is_some();
    show_main(app);
    let Some((section, item)) = at.and_then(|at| at.split_once('/')) else {
        return;
    };
    if existed {
        let _ = app.emit_to(MAIN, "latchkey://open-section", OpenAt { section, item });
        return;
    }
    let Some(window) = app.get_webview_window(MAIN) else {
        return;
    };
    if let Ok(mut url) = window.url() {
        let fragment: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("open", &format!("{section}/{item}"))
            .finish();
        url.set_fragment(Some(&fragment));
        if let Err(e) = window.navigate(url) {
            tracing::debug!(error = %e, "window not sent to the tray line's item");
        }
    }
}

/// Shows (creating if needed) and focuses the main window.
fn show_main(app: &AppHandle) {
    if let Some(w) = app.get_webview_window(MAIN) {
        let _ = w.unminimize();
        let _ = w.show();
        let _ = w.set_focus();
        return;
    }
    let mut builder = WebviewWindowBuilder::new(app, MAIN, WebviewUrl::App("index.html".into()))
        .title("Latchkey")
        .inner_size(DEFAULT.0, DEFAULT.1)
        .min_inner_size(MIN.0, MIN.1)
        .on_page_load(|_, payload| {
            // scripts/measure-app times opening the window up to this line.
            if matches!(payload.event(), tauri::webview::PageLoadEvent::Finished) {
                tracing::info!("window page loaded");
            }
        });
    if let Some(saved) = stored(app) {
        let (position, (width, height)) = saved.restored(&monitors(app));
        builder = builder.inner_size(width, height);
        if let Some((x, y)) = position {
            builder = builder.position(x, y);
        }
    }
    match builder.build() {
        Ok(window) => {
            let w = window.clone();
            window.on_window_event(move |event| {
                if matches!(event, WindowEvent::Moved(_) | WindowEvent::Resized(_)) {
                    remember(&w);
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot open the main window"),
    }
}

/// The geometry kept from last time, if any and readable.
fn stored(app: &AppHandle) -> Option<Geometry> {
    let value = app.store(FILE).ok()?.get(KEY)?;
    serde_json::from_value(value).ok()
}

/// Keeps the window's geometry (the store writes it to disk shortly after, debounced).
fn remember(window: &WebviewWindow) {
    let (Ok(scale), Ok(position), Ok(size)) = (
        window.scale_factor(),
        window.outer_position(),
        window.inner_size(),
    ) else {
        return;
    };
    if window.is_minimized().unwrap_or(false) || window.is_maximized().unwrap_or(false) {
        return;
    }
    let position: LogicalPosition<f64> = position.to_logical(scale);
    let size: LogicalSize<f64> = size.to_logical(scale);
    let geometry = Geometry {
        x: position.x,
        y: position.y,
        width: size.width,
        height: size.height,
    };
    if let (Ok(store), Ok(value)) = (window.store(FILE), serde_json::to_value(geometry)) {
        store.set(KEY, value);
    }
}

/// The monitors' areas in logical pixels.
fn monitors(app: &AppHandle) -> Vec<Area> {
    app.available_monitors()
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let scale = m.scale_factor();
            let at: LogicalPosition<f64> = m.position().to_logical(scale);
            let size: LogicalSize<f64> = m.size().to_logical(scale);
            (at.x, at.y, size.width, size.height)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCREEN: Area = (0.0, 0.0, 1920.0, 1080.0);

    fn at(x: f64, y: f64, width: f64, height: f64) -> Geometry {
        Geometry {
            x,
            y,
            width,
            height,
        }
    }

    #[test]
    fn a_window_on_a_monitor_comes_back_where_it_was() {
        assert_eq!(
            at(600.0, 200.0, 800.0, 700.0).restored(&[SCREEN]),
            (Some((600.0, 200.0)), (800.0, 700.0))
        );
    }

    #[test]
    fn a_window_left_on_an_unplugged_monitor_keeps_its_size_but_not_its_place() {
        let second = (1920.0, 0.0, 1280.0, 1024.0);
        let saved = at(2500.0, 100.0, 500.0, 600.0);
        assert_eq!(saved.restored(&[SCREEN, second]).0, Some((2500.0, 100.0)));
        assert_eq!(saved.restored(&[SCREEN]), (None, (500.0, 600.0)));
    }

    #[test]
    fn a_tiny_or_corrupt_size_is_not_restored() {
        assert_eq!(
            at(10.0, 10.0, 20.0, 30.0).restored(&[SCREEN]).1,
            MIN,
            "never smaller than the layouts are made for"
        );
        assert_eq!(
            at(f64::NAN, 0.0, 500.0, 500.0).restored(&[SCREEN]),
            (None, DEFAULT)
        );
    }
}
