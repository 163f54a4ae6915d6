//! The Latchkey tray app.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    #[cfg(target_os = "linux")]
    software_rendering_unless_asked();
    latchkey_app::run();
}

/// GTK 3 on X11 opens an OpenGL context as soon as it connects to the display, to choose visuals,
/// which loads the Mesa driver (under Xvfb, llvmpipe and all of LLVM): about 50 MiB of the tray's
/// resident memory while no window is even open (BENCHMARKS.md). Latchkey's window is a small
/// form that WebKit draws well in software, so GTK's GL is switched off unless the person set
/// `GDK_GL` themselves or asks for it with `LATCHKEY_GL=1`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn software_rendering_unless_asked() {
    let gl_asked = std::env::var("LATCHKEY_GL").is_ok_and(|v| !v.is_empty() && v != "0");
    if gl_asked || std::env::var_os("GDK_GL").is_some() {
        return;
    }
    // SAFETY: the first statement of `main`, before any thread exists (the tracing subscriber,
    // Tauri, GTK and Tokio all start later), so nothing can read the environment concurrently.
    unsafe { std::env::set_var("GDK_GL", "disable") };
}
