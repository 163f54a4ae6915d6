//! Latchkey's tray app: a thin Tauri 2 shell over `latchkey-runtime`. It starts the runtime
//! (sessions, credentials, the loopback proxy), shows the state in the tray, and serves the
//! window's commands; every decision is made in the runtime.

mod commands;
#[cfg(test)]
mod ipc_types;
mod login;
mod origin;
mod settings;
mod setup;
mod tray;
mod window;

use std::sync::atomic::{AtomicBool, Ordering};

use latchkey_core::paths::Paths;
use latchkey_runtime::{Latchkey, StartOptions};
use tauri::{Emitter, Manager, RunEvent};
use tauri_plugin_autostart::MacosLauncher;

/// Set by the tray's Quit item: the only way the app exits (closing windows keeps it in the tray).
static QUITTING: AtomicBool = AtomicBool::new(false);

/// Runs the app until Quit.
pub fn run() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let app = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            window::show_main(app);
        }))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_store::Builder::default().build())
        .plugin(tauri_plugin_autostart::init(
            MacosLauncher::LaunchAgent,
            None,
        ))
        .plugin(tauri_plugin_opener::init())
        .plugin(tauri_plugin_clipboard_manager::init())
        .invoke_handler(tauri::generate_handler![
            commands::overview,
            commands::login,
            commands::cancel_login,
            commands::logout,
            commands::refresh_now,
            commands::list_clients,
            commands::create_client,
            commands::revoke_client,
            commands::query_activity,
            commands::activity_chart,
            commands::list_connections,
            commands::close_connection,
            commands::detect_hosts,
            commands::preview_host_entry,
            commands::apply_host_entry,
            commands::undo_host_entry,
            commands::add_server,
            commands::server_login,
            commands::cancel_server_login,
            commands::remove_server,
            commands::get_settings,
            commands::set_settings,
            setup::setup_connect,
            setup::setup_import,
            setup::setup_import_text,
            setup::setup_save,
            setup::service_add,
            setup::service_edit,
            setup::service_remove,
            commands::set_gateway_api_key,
        ])
        .setup(|app| {
            let prefs = settings::load(app.handle());
            let paths = match Paths::from_env() {
                Ok(p) => p,
                Err(e) => fail(&format!("{e}")),
            };
            let started = tauri::async_runtime::block_on(Latchkey::start(StartOptions {
                paths,
                proxy_port: prefs.proxy_port,
                vault: None,
                serve_proxy: true,
            }));
            let runtime = match started {
                Ok(r) => r,
                Err(e) => fail(&e.message),
            };
            app.manage(runtime.clone());
            tray::install(app.handle(), &runtime)?;
            forward_events(app.handle().clone(), runtime);
            if std::env::var_os("LATCHKEY_OPEN_WINDOW").is_some() {
                window::show_main(app.handle());
            }
            Ok(())
        })
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(e) => fail(&format!("cannot start the window system: {e}")),
    };
    app.run(|handle, event| match event {
        RunEvent::ExitRequested { api, .. } if !QUITTING.load(Ordering::SeqCst) => {
            // Closing the last window keeps Latchkey in the tray.
            api.prevent_exit();
        }
        RunEvent::Exit => {
            if let Some(runtime) = handle.try_state::<Latchkey>() {
                tauri::async_runtime::block_on(runtime.shutdown());
            }
        }
        _ => {}
    });
}

/// Quits for real (the tray's Quit).
pub(crate) fn quit(app: &tauri::AppHandle) {
    QUITTING.store(true, Ordering::SeqCst);
    app.exit(0);
}

/// Start-up failures that leave nothing to run (no home directory, no window system): say what
/// where a person sees it — a dialog when one can be shown, a log file in the data directory
/// (`startup.log`), and stderr — then exit, never panic.
fn fail(message: &str) -> ! {
    let text = format!("Latchkey cannot start: {message}");
    eprintln!("{text}");
    let log = Paths::from_env()
        .map(|p| p.data_dir().to_owned())
        .unwrap_or_else(|_| std::env::temp_dir())
        .join("startup.log");
    let logged = std::fs::create_dir_all(log.parent().unwrap_or(std::path::Path::new(".")))
        .and_then(|()| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)?;
            writeln!(
                file,
                "{} {text}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            )
        });
    let shown = match logged {
        Ok(()) => format!("{text}\n\n(Also written to {}.)", log.display()),
        Err(_) => text,
    };
    show_error_dialog(&shown);
    std::process::exit(2);
}

/// A blocking error dialog without the window system Latchkey failed to start: the desktop's own
/// dialog tool (zenity on GNOME, kdialog on KDE, xmessage elsewhere), whichever is installed.
fn show_error_dialog(text: &str) {
    if cfg!(target_os = "linux")
        && std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        return;
    }
    let attempts: [(&str, Vec<&str>); 3] = [
        (
            "zenity",
            vec!["--error", "--title=Latchkey", "--no-markup", "--text", text],
        ),
        ("kdialog", vec!["--title", "Latchkey", "--error", text]),
        ("xmessage", vec!["-center", text]),
    ];
    for (program, args) in attempts {
        if std::process::Command::new(program)
            .args(&args)
            .status()
            .is_ok()
        {
            return;
        }
    }
}

/// Runtime changes become window events; the tray follows them too.
fn forward_events(app: tauri::AppHandle, runtime: Latchkey) {
    let mut changes = runtime.subscribe();
    let app_changes = app.clone();
    let rt = runtime.clone();
    tauri::async_runtime::spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(15));
        let mut notifier = tray::Notifier::default();
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() { break; }
                    let _ = app_changes.emit("latchkey://changed", ());
                }
                _ = ticker.tick() => {}
            }
            tray::refresh(&app_changes, &rt, &mut notifier);
        }
    });
    let mut activity = runtime.subscribe_activity();
    tauri::async_runtime::spawn(async move {
        loop {
            match activity.recv().await {
                Ok(row) => {
                    let _ = app.emit("latchkey://activity", row);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The names between `generate_handler![` and `]` in this file (`commands::x`, `setup::y`).
    fn handled() -> BTreeSet<String> {
        let source = include_str!("lib.rs");
        let start = source
            .find("generate_handler![")
            .expect("lib.rs registers its commands");
        let list = &source[start..];
        let list = &list[..list.find(']').expect("the list ends")];
        list.split(',')
            .filter_map(|item| item.trim().rsplit("::").next())
            .filter(|name| !name.is_empty() && !name.contains('['))
            .map(str::to_owned)
            .collect()
    }

    /// The commands Tauri may run on the main (UI) thread: they only read or change the runtime's
    /// memory (and close the login window). Every other command touches SQLite, a file or the
    /// keychain, and must be an `async fn` or `#[tauri::command(async)]`.
    const ON_THE_MAIN_THREAD: [&str; 6] = [
        "overview",
        "cancel_login",
        "list_clients",
        "list_connections",
        "close_connection",
        "cancel_server_login",
    ];

    /// A plain `#[tauri::command] fn` blocks the window while it runs; one that waits on SQLite,
    /// the disk or the keychain freezes it. A new command runs off the main thread unless it is
    /// added to [`ON_THE_MAIN_THREAD`] on purpose.
    #[test]
    fn only_memory_only_commands_run_on_the_main_thread() {
        let sources = [
            include_str!("commands.rs"),
            include_str!("setup.rs"),
            include_str!("settings.rs"),
            include_str!("login.rs"),
        ];
        let mut plain = BTreeSet::new();
        for source in sources {
            let mut lines = source.lines();
            while let Some(line) = lines.next() {
                if line.trim() != "#[tauri::command]" {
                    continue;
                }
                let signature = lines.next().unwrap_or_default().trim();
                if let Some(rest) = signature.strip_prefix("pub fn ") {
                    let name = rest.split('(').next().unwrap_or_default();
                    plain.insert(name.to_owned());
                }
            }
        }
        let allowed: BTreeSet<String> =
            ON_THE_MAIN_THREAD.iter().map(|s| (*s).to_owned()).collect();
        let handled = handled();
        assert!(
            allowed.is_subset(&handled),
            "ON_THE_MAIN_THREAD names a command that is not registered: {:?}",
            allowed.difference(&handled).collect::<Vec<_>>()
        );
        assert_eq!(
            plain, allowed,
            "plain (main-thread) commands differ from ON_THE_MAIN_THREAD: make a command that \
             touches SQLite, a file or the keychain `#[tauri::command(async)]`"
        );
    }

    /// A command registered but missing from the app manifest (build.rs) or the main window's
    /// capability is refused in the real window ("not allowed"), which the mocked-IPC tests
    /// cannot see: the activity chart and the first-run setup were both shipped that way.
    #[test]
    fn every_registered_command_is_in_the_manifest_and_allowed_in_the_main_window() {
        let commands = handled();
        assert!(commands.len() > 20, "parsed the handler list: {commands:?}");
        let manifest = include_str!("../build.rs");
        let capability = include_str!("../capabilities/main.json");
        for command in &commands {
            assert!(
                manifest.contains(&format!("\"{command}\"")),
                "{command} is registered but missing from build.rs's app manifest"
            );
            let permission = format!("\"allow-{}\"", command.replace('_', "-"));
            assert!(
                capability.contains(&permission),
                "{command} is registered but capabilities/main.json lacks {permission}"
            );
        }
    }
}
