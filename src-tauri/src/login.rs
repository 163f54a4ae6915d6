//! "Log in": the instance's authorization URL in a `login` window (no IPC capability) or in the
//! system browser, for an account or a remote MCP server (adding one, logging in again, a
//! step-up). The window closes itself when the login ends; closing it cancels the login. It runs
//! in a window process (the main window's, or one the tray started for its menu's *Log in*),
//! which asks the instance over the control API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use latchkey_core::Code;
use latchkey_core::session::SessionState;
use latchkey_runtime::control::NewServer;
use latchkey_runtime::view::ServerView;
use latchkey_runtime::{Control, RuntimeError};
use tauri::{AppHandle, Emitter, Manager, WebviewUrl, WebviewWindowBuilder, WindowEvent};
use tauri_plugin_opener::OpenerExt;
use url::Url;

use crate::origin::{self, Navigation};
use crate::{Changes, Instance, Pending};

/// Label of the login window.
pub const LOGIN: &str = "login";

/// Starts a login for `account`.
pub async fn start(
    app: &AppHandle,
    lk: &Instance,
    account: &str,
    system_browser: bool,
) -> Result<(), RuntimeError> {
    close_window(app);
    let url = lk.begin_login(account).await?;
    // The login window shares one cookie jar with every later login window, so the identity
    // provider's session would sign the same person in again without asking after "Log out"
    // (anyone at the laptop could). OpenID Connect's `prompt=login` makes the provider ask
    // every time; the system browser, where single sign-on belongs (RFC 8252), is left as is.
    let on_closed = cancel_on_close(app, lk, account, Cancel::Login);
    open_page(app, url, system_browser, true, on_closed)?;
    watch(app.clone(), lk.clone(), account.to_owned());
    Ok(())
}

/// Which pending login closing the window cancels.
#[derive(Clone, Copy)]
enum Cancel {
    Login,
    ServerLogin,
}

/// What closing the login window does: cancel the login (a no-op once it ended), on a task the
/// process waits for before it exits.
fn cancel_on_close(
    app: &AppHandle,
    lk: &Instance,
    name: &str,
    what: Cancel,
) -> impl Fn() + Send + 'static {
    let (app, lk, name) = (app.clone(), lk.clone(), name.to_owned());
    move || {
        let (lk, name) = (lk.clone(), name.clone());
        let task = async move {
            let cancelled = match what {
                Cancel::Login => lk.cancel_login(&name).await,
                Cancel::ServerLogin => lk.cancel_server_login(&name).await,
            };
            if let Err(e) = cancelled {
                tracing::debug!(error = %e, "login not cancelled");
            }
        };
        // On Tauri's runtime (this runs on the UI thread, outside it), tracked when the process
        // keeps a tracker.
        match app.try_state::<Pending>() {
            Some(pending) => {
                tauri::async_runtime::spawn(pending.track_future(task));
            }
            None => {
                tauri::async_runtime::spawn(task);
            }
        }
    }
}

/// Adds a remote MCP server and signs in to it in the login window (or the system browser);
/// returns it once ready. A refusal, a failed sign-in or a closed window leaves nothing behind
/// (the instance writes the server only after its first login), and the error says why.
pub async fn add_server(
    app: &AppHandle,
    lk: &Instance,
    server: &NewServer,
    system_browser: bool,
) -> Result<ServerView, RuntimeError> {
    close_window(app);
    let added = lk.add_server(server).await?;
    let name = added.name;
    let on_closed = cancel_on_close(app, lk, &name, Cancel::ServerLogin);
    let opened = open_page(app, added.authorize_url, system_browser, false, on_closed);
    if let Err(e) = opened {
        let _ = lk.cancel_server_login(&name).await;
        return Err(e);
    }
    let done = lk.wait_server_login(&name).await;
    close_window(app);
    done?.into_iter().find(|s| s.name == name).ok_or_else(|| {
        RuntimeError::new(
            Code::UnknownServer,
            format!("the MCP server `{name}` was removed meanwhile"),
        )
    })
}

/// Signs in to the remote MCP server `name` again, or grants it the scopes a step-up asks for;
/// the login window closes itself when the login ends.
pub async fn start_server(
    app: &AppHandle,
    lk: &Instance,
    name: &str,
    system_browser: bool,
) -> Result<(), RuntimeError> {
    close_window(app);
    let url = lk.server_login(name).await?;
    let on_closed = cancel_on_close(app, lk, name, Cancel::ServerLogin);
    let opened = open_page(app, url, system_browser, false, on_closed);
    if let Err(e) = opened {
        let _ = lk.cancel_server_login(name).await;
        return Err(e);
    }
    let (app, lk, name) = (app.clone(), lk.clone(), name.to_owned());
    tauri::async_runtime::spawn(async move {
        // Its outcome is in the overview (state and last_login_error); only the window is ours.
        let _ = lk.wait_server_login(&name).await;
        close_window(&app);
    });
    Ok(())
}

/// Opens an authorization page in the `login` window, or in the system browser through the
/// opener (never a shell). Only `http` and `https` pages are opened, whoever produced the URL.
/// `ask_password` adds OpenID Connect's `prompt=login` in the window (see [`start`]). Closing the
/// window calls `on_closed`, which cancels the login still waiting for its callback.
pub fn open_page(
    app: &AppHandle,
    url: Url,
    system_browser: bool,
    ask_password: bool,
    on_closed: impl Fn() + Send + 'static,
) -> Result<(), RuntimeError> {
    check_scheme(&url)?;
    if system_browser {
        return app
            .opener()
            .open_url(url.as_str(), None::<&str>)
            .map_err(|e| {
                RuntimeError::new(
                    Code::BrowserUnavailable,
                    format!("cannot open your browser ({e}); turn off \"Use system browser\""),
                )
            });
    }
    let mut url = url;
    if ask_password {
        url.query_pairs_mut().append_pair("prompt", "login");
    }
    let first_title = match origin::judge(&url) {
        Navigation::Allow { title } => window_title(&title),
        _ => window_title("Latchkey"),
    };
    // The notice page Latchkey itself navigates to after a refusal; the only `data:` page let
    // through.
    let notice = Arc::new(AtomicBool::new(false));
    let handle = app.clone();
    let window = WebviewWindowBuilder::new(app, LOGIN, WebviewUrl::External(url))
        .title(first_title)
        .inner_size(520.0, 700.0)
        .on_navigation(move |to| allow_navigation(&handle, &notice, to))
        .on_page_load(|window, payload| {
            // Committed (reported as Started) and Finished carry the page actually shown, after
            // any redirects; the title follows it.
            if let Navigation::Allow { title } = origin::judge(payload.url()) {
                let _ = window.set_title(&window_title(&title));
            }
        })
        .build()
        .map_err(|e| {
            RuntimeError::new(
                Code::WindowFailed,
                format!("cannot open the sign-in window: {e}"),
            )
        })?;
    window.on_window_event(move |event| {
        if matches!(event, WindowEvent::Destroyed) {
            on_closed();
        }
    });
    Ok(())
}

/// The login window's navigation policy ([`origin::judge`]): a refused page is replaced by a
/// notice saying why, and the title says it was blocked. Runs on the UI thread, so the
/// replacement is navigated to from a task, after WebKit has its answer.
fn allow_navigation(app: &AppHandle, notice: &AtomicBool, to: &Url) -> bool {
    match origin::judge(to) {
        Navigation::Allow { .. } | Navigation::Blank => true,
        // One `data:` page is let through per refusal: the notice (WebKit may re-serialise its
        // address, so it is not compared byte for byte).
        Navigation::Block { .. }
            if to.scheme() == "data" && notice.swap(false, Ordering::SeqCst) =>
        {
            true
        }
        Navigation::Block { target, message } => {
            tracing::warn!(%target, "login window refused a navigation");
            let Ok(page) = origin::notice_page(&message) else {
                return false;
            };
            notice.store(true, Ordering::SeqCst);
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                if let Some(w) = app.get_webview_window(LOGIN) {
                    let blocked = format!("{} blocked {target}", origin::BLOCKED);
                    let _ = w.set_title(&window_title(&blocked));
                    let _ = w.navigate(page);
                }
            });
            false
        }
    }
}

/// The login window's title: "Sign in — " and where the page comes from (the window has no
/// address bar; this is the one place the person can see which site asks for the password).
fn window_title(origin: &str) -> String {
    format!("Sign in — {origin}")
}

/// Refuses a sign-in address that is not `http(s)` (`javascript:`, `file:`, a custom scheme
/// handed to the desktop): the page is opened only when it is a web page.
pub fn check_scheme(url: &Url) -> Result<(), RuntimeError> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(RuntimeError::new(
            Code::LoginUrlRefused,
            format!(
                "Latchkey does not open a sign-in address with the scheme `{other}:`; only http and https pages are opened"
            ),
        )),
    }
}

/// Closes the login window when the login ends, and tells the window how it ended.
fn watch(app: AppHandle, lk: Instance, account: String) {
    let Some(mut changes) = app.try_state::<Changes>().map(|c| c.subscribe()) else {
        return;
    };
    tauri::async_runtime::spawn(async move {
        loop {
            let state = match lk.overview().await {
                Ok(overview) => overview
                    .accounts
                    .into_iter()
                    .find(|a| a.name == account)
                    .map(|a| a.state),
                // The instance is gone: so is the login.
                Err(_) => None,
            };
            match state {
                Some(SessionState::LoggingIn) => {}
                Some(s) if s.is_usable() => {
                    close_window(&app);
                    break;
                }
                other => {
                    close_window(&app);
                    if let Some(SessionState::Error { code, message }) = other {
                        let failed = LoginFailed {
                            account,
                            code,
                            message,
                        };
                        let _ = app.emit("latchkey://login-failed", failed);
                    }
                    break;
                }
            }
            if changes.changed().await.is_err() {
                close_window(&app);
                break;
            }
        }
    });
}

/// The `latchkey://login-failed` event: an account's login ended in an error.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct LoginFailed {
    /// The account.
    account: String,
    /// The session's error code.
    code: Code,
    /// What happened and what to do.
    message: String,
}

/// Closes the login window if it is open.
pub fn close_window(app: &AppHandle) {
    if let Some(w) = app.get_webview_window(LOGIN) {
        let _ = w.destroy();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_pages_are_opened() {
        for ok in [
            "https://auth.example.com/authorize?x=1",
            "http://127.0.0.1:4000/auth",
        ] {
            let url = Url::parse(ok).expect("a valid URL");
            assert!(check_scheme(&url).is_ok(), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "file:///etc/passwd",
            "vscode://open",
            "data:text/html,x",
        ] {
            let url = Url::parse(bad).expect("a valid URL");
            let e = check_scheme(&url).expect_err(bad);
            assert_eq!(e.code, latchkey_core::Code::LoginUrlRefused, "{bad}");
            assert!(!e.message.contains("passwd"), "the address is not echoed");
        }
    }
}
