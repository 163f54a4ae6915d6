//! Latchkey's tray app: a thin Tauri 2 shell over `latchkey-runtime`, in two kinds of process.
//! The tray instance (no arguments) starts the runtime (sessions, credentials, the loopback
//! proxy) and shows the state in the tray; it never creates a webview. The window runs in a
//! process of its own (`--window`, started by the tray with its own executable), which serves the
//! window's commands by calling the instance's control API and exits when the window closes, so
//! the memory WebKit took goes with it. Every decision is made in the runtime.

mod args;
mod commands;
#[cfg(test)]
mod ipc_types;
mod login;
mod origin;
mod settings;
mod setup;
mod tray;
mod window;
mod window_process;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use latchkey_core::paths::Paths;
use latchkey_runtime::control::InstanceEvent;
use latchkey_runtime::{AuditKind, Control, ControlClient, Latchkey, StartOptions};
use tauri::{Emitter, Manager, RunEvent};
use tauri_plugin_autostart::MacosLauncher;

use crate::args::{Job, Mode};
use crate::window_process::WindowProcesses;

/// Set by the tray's Quit item: the only way the tray exits.
static QUITTING: AtomicBool = AtomicBool::new(false);

/// The running instance, as the window process reaches it (its control API).
pub(crate) type Instance = Arc<ControlClient>;

/// The window process's view of the instance's "something changed" ticks (from its event stream),
/// for the login window, which waits for a login to end.
pub(crate) type Changes = tokio::sync::watch::Sender<u64>;

/// Work the window process finishes before it exits (cancelling a login whose window closed).
pub(crate) type Pending = tokio_util::task::TaskTracker;

/// Runs the tray until Quit, or a window until it closes, as the arguments say.
pub fn run() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Mode::parse(std::env::args_os().skip(1)) {
        Ok(Mode::Tray) => run_tray(),
        Ok(Mode::Window { job, from_tray }) => run_window(job, from_tray),
        Err(message) => fail(&format!(
            "{message} (usage: latchkey-app [--window [--at <section>/<item>] | --login <account> | --server-login <server>])"
        )),
    }
}

/// The tray instance: runtime, proxy, tray icon and notices. A second launch, the menu and
/// `LATCHKEY_OPEN_WINDOW` open the window in a window process.
fn run_tray() {
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            window_process::open(app, None);
        }))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_opener::init())
        .plugin(tauri_plugin_clipboard_manager::init())
        .setup(|app| {
            let prefs = settings::read(app.handle());
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
            app.manage(WindowProcesses::default());
            tray::install(app.handle(), &runtime)?;
            follow_runtime(app.handle().clone(), runtime);
            if std::env::var_os("LATCHKEY_OPEN_WINDOW").is_some() {
                window_process::open(app.handle(), None);
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
            api.prevent_exit();
        }
        RunEvent::Exit => {
            // The window processes first (they follow the instance), then the instance.
            if let Some(processes) = handle.try_state::<WindowProcesses>() {
                tauri::async_runtime::block_on(processes.end_all());
            }
            if let Some(runtime) = handle.try_state::<Latchkey>() {
                tauri::async_runtime::block_on(runtime.shutdown());
            }
        }
        _ => {}
    });
}

/// A window process: finds the running instance, shows the main window (or a login window) and
/// serves its commands over the control API; exits when its last window closes, when the
/// instance stops, or (started by the tray) when its stdin ends.
fn run_window(job: Job, from_tray: bool) {
    let paths = match Paths::from_env() {
        Ok(p) => p,
        Err(e) => fail(&format!("{e}")),
    };
    let instance = match tauri::async_runtime::block_on(ControlClient::find(&paths)) {
        Ok(Some(client)) => Arc::new(client),
        Ok(None) => fail(
            "its window needs Latchkey running, and it is not: start Latchkey (from your applications menu, or `latchkey-app`) first",
        ),
        Err(e) => fail(&e.message),
    };
    let as_window = matches!(job, Job::Main { .. });
    let (changes, _) = tokio::sync::watch::channel(0u64);
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_store::Builder::default().build())
        .plugin(tauri_plugin_autostart::init(
            MacosLauncher::LaunchAgent,
            None,
        ))
        .plugin(tauri_plugin_opener::init())
        .plugin(tauri_plugin_clipboard_manager::init())
        .manage(instance.clone())
        .manage(changes)
        .manage(Pending::new())
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
        .setup(move |app| {
            follow_instance(app.handle().clone(), instance.clone(), as_window);
            if from_tray {
                end_with_stdin(app.handle().clone());
            }
            match job {
                Job::Main { at } => window::show(app.handle(), at.as_deref()),
                Job::Login(account) => {
                    let (app, lk) = (app.handle().clone(), instance);
                    tauri::async_runtime::spawn(async move {
                        let started = login::start(&app, &lk, &account, false).await;
                        if let Err(e) = started {
                            login_not_started(&app, &lk, &account, e).await;
                        }
                    });
                }
                Job::ServerLogin(name) => {
                    let (app, lk) = (app.handle().clone(), instance);
                    tauri::async_runtime::spawn(async move {
                        if let Err(e) = login::start_server(&app, &lk, &name, false).await {
                            notify(
                                &app,
                                &format!("Latchkey could not sign in to {name}"),
                                &e.message,
                            );
                            app.exit(1);
                        }
                    });
                }
            }
            Ok(())
        })
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(e) => fail(&format!("cannot start the window system: {e}")),
    };
    app.run(|handle, event| {
        if let RunEvent::ExitRequested {
            api, code: None, ..
        } = event
        {
            // The last window closed: finish what its closing started, then exit.
            let Some(pending) = handle.try_state::<Pending>() else {
                return;
            };
            api.prevent_exit();
            let (pending, handle) = (pending.inner().clone(), handle.clone());
            tauri::async_runtime::spawn(async move {
                pending.close();
                pending.wait().await;
                handle.exit(0);
            });
        }
    });
}

/// A login the tray's menu asked for could not start: say so, unless the instance kept the
/// failure (the tray announces those), and exit.
async fn login_not_started(
    app: &tauri::AppHandle,
    lk: &Instance,
    account: &str,
    e: latchkey_runtime::RuntimeError,
) {
    let kept = lk.overview().await.is_ok_and(|o| {
        o.accounts.iter().any(|a| {
            a.name == account
                && a.last_login_error
                    .as_ref()
                    .is_some_and(|f| f.code == e.code)
        })
    });
    if !kept {
        notify(app, "Latchkey could not start the login", &e.message);
    }
    app.exit(1);
}

fn notify(app: &tauri::AppHandle, title: &str, body: &str) {
    use tauri_plugin_notification::NotificationExt;
    if let Err(e) = app.notification().builder().title(title).body(body).show() {
        tracing::debug!(error = %e, "notification not shown");
    }
}

/// Started by the tray: its stdin is a pipe from the tray, which closes it to end this process
/// (Quit) or dies with it; either way the window goes.
fn end_with_stdin(app: tauri::AppHandle) {
    let spawned = std::thread::Builder::new()
        .name("tray-pipe".into())
        .spawn(move || {
            // Nothing is sent on it; a read returns only at its end.
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            tracing::debug!("the tray ended this window process");
            app.exit(0);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the tray's pipe");
    }
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

/// The tray follows the runtime: its icon, menu and notices.
fn follow_runtime(app: tauri::AppHandle, runtime: Latchkey) {
    let mut changes = runtime.subscribe();
    tauri::async_runtime::spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(15));
        let mut notifier = tray::Notifier::default();
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() { break; }
                }
                _ = ticker.tick() => {}
            }
            tray::refresh(&app, &runtime, &mut notifier);
        }
    });
}

/// The window process follows the instance: its changes and audit rows become the window's
/// `latchkey://changed` and `latchkey://activity` events, its requests to show the window are
/// carried out, and when it stops (the tray quit), this process ends.
fn follow_instance(app: tauri::AppHandle, instance: Instance, as_window: bool) {
    tauri::async_runtime::spawn(async move {
        let mut events = match instance.follow_events(as_window).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow Latchkey");
                app.exit(1);
                return;
            }
        };
        while let Some(event) = events.next().await {
            match event {
                Ok(InstanceEvent::Changed) => {
                    if let Some(changes) = app.try_state::<Changes>() {
                        changes.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    let _ = app.emit("latchkey://changed", ());
                }
                // Client traffic, as the Activity screen lists it: the control calls (this
                // window's own among them) stay out of its live rows too.
                Ok(InstanceEvent::Activity(row)) if row.kind == AuditKind::Client => {
                    let _ = app.emit("latchkey://activity", row);
                }
                Ok(InstanceEvent::Activity(_)) => {}
                Ok(InstanceEvent::ShowWindow { at }) => {
                    let handle = app.clone();
                    let _ = app.run_on_main_thread(move || window::show(&handle, at.as_deref()));
                }
                Ok(InstanceEvent::Lagged(_)) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "the instance's events ended");
                    break;
                }
            }
        }
        tracing::info!("latchkey stopped; closing its window");
        app.exit(0);
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

    /// The commands Tauri may run on the main (UI) thread: none, since every command asks the
    /// instance over HTTP (or touches a file). A command must be an `async fn` or
    /// `#[tauri::command(async)]`.
    const ON_THE_MAIN_THREAD: [&str; 0] = [];

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
