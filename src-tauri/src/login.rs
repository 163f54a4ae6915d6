//! "Log in": the runtime's authorization URL in a `login` window (no IPC capability) or in the
//! system browser. The window closes itself when the login ends; closing it cancels the login.

use latchkey_core::session::SessionState;
use latchkey_runtime::{Latchkey, RuntimeError};
use tauri::{AppHandle, Emitter, Manager, WebviewUrl, WebviewWindowBuilder, WindowEvent};
use tauri_plugin_opener::OpenerExt;

/// Label of the login window.
pub const LOGIN: &str = "login";

/// Starts a login for `account`.
pub async fn start(
    app: &AppHandle,
    lk: &Latchkey,
    account: &str,
    system_browser: bool,
) -> Result<(), RuntimeError> {
    close_window(app);
    let url = lk.begin_login(account).await?;
    if system_browser {
        app.opener()
            .open_url(url.as_str(), None::<&str>)
            .map_err(|e| {
                RuntimeError::new(
                    "browser_unavailable",
                    format!("cannot open your browser ({e}); turn off \"Use system browser\""),
                )
            })?;
    } else {
        // The login window shares one cookie jar with every later login window, so the identity
        // provider's session would sign the same person in again without asking after "Log out"
        // (anyone at the laptop could). OpenID Connect's `prompt=login` makes the provider ask
        // every time; the system browser, where single sign-on belongs (RFC 8252), is left as is.
        let mut url = url;
        url.query_pairs_mut().append_pair("prompt", "login");
        let window = WebviewWindowBuilder::new(app, LOGIN, WebviewUrl::External(url))
            .title("Sign in — Latchkey")
            .inner_size(520.0, 700.0)
            .build()
            .map_err(|e| {
                RuntimeError::new(
                    "window_failed",
                    format!("cannot open the sign-in window: {e}"),
                )
            })?;
        let rt = lk.clone();
        let name = account.to_owned();
        window.on_window_event(move |event| {
            if matches!(event, WindowEvent::Destroyed) {
                // Closing the window ends a login still waiting for its callback.
                rt.cancel_login(&name);
            }
        });
    }
    watch(app.clone(), lk.clone(), account.to_owned());
    Ok(())
}

/// Closes the login window when the login ends, and tells the window how it ended.
fn watch(app: AppHandle, lk: Latchkey, account: String) {
    let mut changes = lk.subscribe();
    tauri::async_runtime::spawn(async move {
        loop {
            let state = lk
                .overview()
                .accounts
                .into_iter()
                .find(|a| a.name == account)
                .map(|a| a.state);
            match state {
                Some(SessionState::LoggingIn) => {}
                Some(s) if s.is_usable() => {
                    close_window(&app);
                    break;
                }
                other => {
                    close_window(&app);
                    if let Some(SessionState::Error { code, message }) = other {
                        let _ = app.emit(
                            "latchkey://login-failed",
                            serde_json::json!({ "account": account, "code": code, "message": message }),
                        );
                    }
                    break;
                }
            }
            if changes.changed().await.is_err() {
                break;
            }
        }
    });
}

/// Closes the login window if it is open.
pub fn close_window(app: &AppHandle) {
    if let Some(w) = app.get_webview_window(LOGIN) {
        let _ = w.destroy();
    }
}
