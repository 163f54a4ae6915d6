//! The tray icon (in the tray instance, which never creates a webview: the window and the menu's
//! logins run in window processes, see [`crate::window_process`]): its image and tooltip show the session state (from the runtime's pure
//! `tray_status`), its menu says who is signed in and until when, and offers log in/out, the
//! window, the proxy URL and Quit. Notifications warn before expiry, when a session ends (and
//! why), when its refresh keeps failing (once per run of failures, saying how long requests still
//! work), and when a login fails (with the reason and its fix; a cancel is not announced). A
//! failed login turns the icon red and the first menu line reads "Login failed: <short reason>".
//! Remote MCP servers get a line each when they need a login or more access (a click starts it,
//! and a notification says so once), the ready ones one summary line.

use latchkey_core::session::SessionState;
use latchkey_runtime::tray::{
    RefreshAnnouncements, ServerLineAction, attention_lines, ended_notice, expiry_notice,
    refresh_notices, server_lines, server_notices, service_lines,
};
use latchkey_runtime::{Latchkey, TrayIcon as Icon, TrayStatus};
use tauri::image::Image;
use tauri::menu::{Menu, MenuBuilder, MenuEvent, MenuItemBuilder};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager, Wry};
use tauri_plugin_clipboard_manager::ClipboardExt;
use tauri_plugin_notification::NotificationExt;
use tauri_plugin_opener::OpenerExt;

const TRAY_ID: &str = "latchkey";

/// The icon's image: `icons/tray-<state>.png`, the file the window's state badges show too.
fn image(icon: Icon) -> Option<Image<'static>> {
    Image::from_bytes(png(icon)).ok()
}

fn png(icon: Icon) -> &'static [u8] {
    match icon {
        Icon::LoggedOut => include_bytes!("../../icons/tray-logged-out.png"),
        Icon::Active => include_bytes!("../../icons/tray-active.png"),
        Icon::Expiring => include_bytes!("../../icons/tray-expiring.png"),
        Icon::Expired => include_bytes!("../../icons/tray-expired.png"),
        Icon::Error => include_bytes!("../../icons/tray-error.png"),
    }
}

fn menu(app: &AppHandle, lk: &Latchkey, status: &TrayStatus) -> tauri::Result<Menu<Wry>> {
    let mut builder = MenuBuilder::new(app)
        .item(
            &MenuItemBuilder::with_id("status", &status.title)
                .enabled(false)
                .build(app)?,
        )
        .separator();
    let overview = lk.overview();
    let attention = attention_lines(overview.config.state, overview.keychain.ok);
    for line in &attention {
        builder = builder.item(&MenuItemBuilder::with_id(line.id, line.label).build(app)?);
    }
    if !attention.is_empty() {
        builder = builder.separator();
    }
    let usable: Vec<&str> = overview
        .accounts
        .iter()
        .filter(|a| a.state.is_usable())
        .map(|a| a.name.as_str())
        .collect();
    let mut lines = service_lines(&overview.services, &usable, overview.now);
    lines.extend(server_lines(&overview.servers, overview.now));
    for account in overview.accounts {
        let usable = account.state.is_usable();
        let pending = matches!(account.state, SessionState::LoggingIn);
        let (id, label) = if usable {
            (
                format!("logout:{}", account.name),
                format!("Log out ({})", account.name),
            )
        } else {
            (
                format!("login:{}", account.name),
                format!("Log in ({})", account.name),
            )
        };
        builder = builder.item(
            &MenuItemBuilder::with_id(id, label)
                .enabled(!pending)
                .build(app)?,
        );
    }
    if !lines.is_empty() {
        builder = builder.separator();
    }
    for (i, line) in lines.into_iter().enumerate() {
        let (id, enabled) = match line.action {
            ServerLineAction::Login(name) => (format!("server-login:{name}"), true),
            ServerLineAction::OpenWindow => {
                (format!("open-item:{}:{}", line.section, line.item), true)
            }
            ServerLineAction::None => (format!("line-info:{i}"), false),
        };
        builder = builder.item(
            &MenuItemBuilder::with_id(id, line.label)
                .enabled(enabled)
                .build(app)?,
        );
    }
    builder
        .separator()
        .item(&MenuItemBuilder::with_id("open", "Open Latchkey").build(app)?)
        .item(&MenuItemBuilder::with_id("copy-proxy", "Copy proxy URL").build(app)?)
        .separator()
        .item(&MenuItemBuilder::with_id("quit", "Quit Latchkey").build(app)?)
        .build()
}

/// Creates the tray icon.
pub fn install(app: &AppHandle, lk: &Latchkey) -> tauri::Result<()> {
    let status = lk.tray_status();
    let mut builder = TrayIconBuilder::with_id(TRAY_ID)
        .tooltip(&status.tooltip)
        .menu(&menu(app, lk, &status)?)
        .show_menu_on_left_click(false)
        .on_menu_event(on_menu)
        .on_tray_icon_event(|tray: &TrayIcon, event| {
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                crate::window_process::open(tray.app_handle(), None);
            }
        });
    if let Some(icon) = image(status.icon) {
        builder = builder.icon(icon);
    }
    builder.build(app)?;
    Ok(())
}

fn on_menu(app: &AppHandle, event: MenuEvent) {
    let id = event.id().as_ref().to_owned();
    let Some(lk) = app.try_state::<Latchkey>().map(|s| s.inner().clone()) else {
        return;
    };
    match id.as_str() {
        // The window opens on what needs doing: Setup without a configuration, the
        // configuration's mistake, the keychain's explanation.
        "open" | "setup" | "config-invalid" | "keychain-help" => {
            crate::window_process::open(app, None);
        }
        "copy-proxy" => {
            if let Err(e) = app.clipboard().write_text(lk.proxy_url()) {
                tracing::warn!(error = %e, "clipboard unavailable");
            }
        }
        "quit" => crate::quit(app),
        other => {
            if let Some(account) = other.strip_prefix("login:") {
                if !crate::settings::read(app).use_system_browser {
                    crate::window_process::login(app, &crate::args::login(account));
                    return;
                }
                let (app, account) = (app.clone(), account.to_owned());
                tauri::async_runtime::spawn(async move {
                    let opened = match lk.begin_login(&account).await {
                        Ok(url) => open_in_browser(&app, &url),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = opened {
                        // A refused login is kept by the runtime and announced by `refresh`.
                        let kept = lk
                            .last_login_error(&account)
                            .is_some_and(|f| f.code == e.code);
                        if !kept {
                            notify(&app, "Latchkey could not start the login", &e.message);
                        }
                    }
                });
            } else if let Some(server) = other.strip_prefix("server-login:") {
                if !crate::settings::read(app).use_system_browser {
                    crate::window_process::login(app, &crate::args::server_login(server));
                    return;
                }
                let (app, server) = (app.clone(), server.to_owned());
                tauri::async_runtime::spawn(async move {
                    let opened = match lk.server_login(&server).await {
                        Ok(url) => open_in_browser(&app, &url),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = opened {
                        lk.cancel_server_login(&server);
                        notify(
                            &app,
                            &format!("Latchkey could not sign in to {server}"),
                            &e.message,
                        );
                    }
                });
            } else if let Some((section, item)) = other
                .strip_prefix("open-item:")
                .and_then(|target| target.split_once(':'))
            {
                crate::window_process::open(app, Some(&format!("{section}/{item}")));
            } else if let Some(account) = other.strip_prefix("logout:") {
                let (app, account) = (app.clone(), account.to_owned());
                tauri::async_runtime::spawn(async move {
                    if let Err(e) = lk.logout(&account).await {
                        notify(&app, "Latchkey could not log out", &e.message);
                    }
                });
            }
        }
    }
}

/// Opens a sign-in page in the system browser (the preference), through the opener, never a
/// shell; only `http` and `https` pages.
fn open_in_browser(app: &AppHandle, url: &url::Url) -> Result<(), latchkey_runtime::RuntimeError> {
    crate::login::check_scheme(url)?;
    app.opener()
        .open_url(url.as_str(), None::<&str>)
        .map_err(|e| {
            latchkey_runtime::RuntimeError::new(
                latchkey_core::Code::BrowserUnavailable,
                format!("cannot open your browser ({e}); turn off \"Use system browser\""),
            )
        })
}

/// Remembers what was already announced, so each warning is shown once.
#[derive(Default)]
pub struct Notifier {
    /// The "ends soon" warning was shown for the current stretch of expiring.
    warned_for_expiry: bool,
    last_icon: Option<Icon>,
    /// `(account, at)` of login failures already announced.
    announced_failures: Vec<(String, i64)>,
    /// `(account, client, service)` of refused requests, with when each was last announced.
    announced_requests: Vec<((String, String, String), i64)>,
    /// `(server, state)` of remote MCP servers announced as needing a login or more access.
    announced_servers: Vec<(String, latchkey_core::remote::ServerState)>,
    /// Runs of failed refreshes already announced.
    announced_refreshes: RefreshAnnouncements,
}

/// A host that keeps retrying is announced once per this many seconds, not once per request.
const REQUEST_NOTICE_INTERVAL: i64 = 600;

/// Brings the tray up to date with the runtime and sends due notifications.
pub fn refresh(app: &AppHandle, lk: &Latchkey, notifier: &mut Notifier) {
    let status = lk.tray_status();
    if let Some(tray) = app.tray_by_id(TRAY_ID) {
        let _ = tray.set_icon(image(status.icon));
        let _ = tray.set_tooltip(Some(&status.tooltip));
        if let Ok(m) = menu(app, lk, &status) {
            let _ = tray.set_menu(Some(m));
        }
    }
    if !crate::settings::read(app).notifications {
        notifier.last_icon = Some(status.icon);
        return;
    }
    let overview = lk.overview();
    if let Some(notice) = expiry_notice(&mut notifier.warned_for_expiry, &status) {
        notify(app, &notice.title, &notice.body);
    }
    for notice in refresh_notices(
        &mut notifier.announced_refreshes,
        &overview.accounts,
        overview.now,
    ) {
        notify(app, &notice.title, &notice.body);
    }
    // A session whose refresh keeps failing was announced above (it may come back by itself):
    // "log in again" is for a session that ended.
    let renewal_failing = overview
        .accounts
        .iter()
        .any(|a| a.refresh_failure.is_some());
    let ended = ended_notice(&status, &overview.accounts);
    for account in &overview.accounts {
        let Some(asked) = &account.login_requested else {
            continue;
        };
        let key = (
            account.name.clone(),
            asked.client.clone(),
            asked.service.clone(),
        );
        let recent = notifier
            .announced_requests
            .iter()
            .any(|(k, at)| *k == key && asked.at - at < REQUEST_NOTICE_INTERVAL);
        if recent || account.state.is_usable() {
            continue;
        }
        notify(
            app,
            "Log in to Latchkey",
            &format!(
                "{} asked for {}: log in to account {} to let it through",
                asked.client, asked.service, account.name
            ),
        );
        notifier.announced_requests.retain(|(k, _)| *k != key);
        notifier.announced_requests.push((key, asked.at));
    }
    for account in overview.accounts {
        let Some(failure) = account.last_login_error else {
            continue;
        };
        let key = (account.name, failure.at);
        if failure.is_cancel() || notifier.announced_failures.contains(&key) {
            continue;
        }
        notify(app, "Latchkey could not log you in", &failure.message);
        notifier
            .announced_failures
            .retain(|(name, _)| *name != key.0);
        notifier.announced_failures.push(key);
    }
    for notice in server_notices(&mut notifier.announced_servers, &lk.overview().servers) {
        notify(app, &notice.title, &notice.body);
    }
    let was_signed_in = matches!(notifier.last_icon, Some(Icon::Active | Icon::Expiring));
    if was_signed_in && matches!(status.icon, Icon::Expired | Icon::Error) && !renewal_failing {
        notify(app, &ended.title, &ended.body);
    }
    notifier.last_icon = Some(status.icon);
}

fn notify(app: &AppHandle, title: &str, body: &str) {
    if let Err(e) = app.notification().builder().title(title).body(body).show() {
        tracing::debug!(error = %e, "notification not shown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window's badges import `icons/tray-<state>.png` by the state's name
    /// (ui/src/lib/badges.ts): the tray must show the very same files.
    #[test]
    fn each_tray_icon_is_the_file_named_after_its_state() {
        let icons = [
            Icon::LoggedOut,
            Icon::Active,
            Icon::Expiring,
            Icon::Expired,
            Icon::Error,
        ];
        for icon in icons {
            let state = serde_json::to_value(icon).expect("an icon serialises");
            let state = state
                .as_str()
                .expect("as its state's name")
                .replace('_', "-");
            let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../icons/tray-{state}.png"));
            let on_disk = std::fs::read(&file).expect("the icon file exists");
            assert_eq!(png(icon), on_disk.as_slice(), "{}", file.display());
            assert!(image(icon).is_some(), "{state} decodes");
        }
    }
}
