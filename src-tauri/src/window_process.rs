//! The tray's side of the window processes: the window (and a login window started from the tray
//! menu) run in a child process of the tray's own executable, so every page WebKit loads, its
//! network process and the memory they touched go away when the window closes. The tray keeps
//! one handle per kind, asks an open window to show itself through the instance (the window
//! follows the instance's events), ends its children when it quits, and reaps them.

use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use latchkey_runtime::Latchkey;
use tauri::async_runtime::JoinHandle;
use tauri::{AppHandle, Manager};
use tokio::sync::oneshot;

use crate::args;

/// How long a child asked to end (its stdin closed) gets before it is killed.
const END_GRACE: Duration = Duration::from_secs(3);

/// A window process the tray started.
struct Child {
    pid: Option<u32>,
    /// Dropped (or sent) to end the child: its stdin is closed, then it is killed if it lingers.
    end: oneshot::Sender<()>,
    /// Resolves once the child exited and was reaped.
    reaped: JoinHandle<()>,
}

impl Child {
    fn running(&self) -> bool {
        !self.reaped.inner().is_finished()
    }
}

/// The tray's window processes: at most one main window and one login window.
#[derive(Default)]
pub struct WindowProcesses {
    main: Mutex<Option<Child>>,
    login: Mutex<Option<Child>>,
}

impl WindowProcesses {
    /// Ends every child (stdin closed, killed after [`END_GRACE`]) and waits until each is
    /// reaped: the tray is quitting.
    pub async fn end_all(&self) {
        let children = [take(&self.main), take(&self.login)];
        for child in children.into_iter().flatten() {
            let _ = child.end.send(());
            let _ = child.reaped.await;
        }
    }
}

fn take(slot: &Mutex<Option<Child>>) -> Option<Child> {
    slot.lock().ok().and_then(|mut slot| slot.take())
}

/// Shows the window, at `at` (`<section>/<item>`) when given: an open window (the tray's child
/// or any other window process following the instance) is asked to show itself; otherwise a
/// window process is started, unless the tray's child is still starting.
pub fn open(app: &AppHandle, at: Option<&str>) {
    let (Some(lk), Some(processes)) = (
        app.try_state::<Latchkey>(),
        app.try_state::<WindowProcesses>(),
    ) else {
        return;
    };
    if lk.show_window(at.map(str::to_owned)) {
        return;
    }
    let Ok(mut slot) = processes.main.lock() else {
        return;
    };
    if slot.as_ref().is_some_and(Child::running) {
        // Started but not following the instance yet: it shows itself once it is up.
        return;
    }
    *slot = start(&args::window(at));
}

/// Opens a login (`args`: [`args::login`] or [`args::server_login`]) in a login window process,
/// ending a previous one.
pub fn login(app: &AppHandle, args: &[String]) {
    let Some(processes) = app.try_state::<WindowProcesses>() else {
        return;
    };
    let previous = take(&processes.login);
    if let Some(previous) = previous {
        // Its window closes, which cancels its login: the new one starts on its own.
        let _ = previous.end.send(());
    }
    let child = start(args);
    if let Ok(mut slot) = processes.login.lock() {
        *slot = child;
    }
}

/// Starts this executable with `args` (and [`args::FROM_TRAY`]): its stdin is a pipe from the
/// tray, closed when the tray ends it or dies, which ends the child too.
fn start(args: &[String]) -> Option<Child> {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::warn!(error = %e, "cannot find this program to start the window");
            return None;
        }
    };
    // The pipes and the wait need the async runtime's reactor.
    let _runtime = tauri::async_runtime::handle().inner().enter();
    let spawned = tokio::process::Command::new(exe)
        .args(args)
        .arg(args::FROM_TRAY)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the window process");
            return None;
        }
    };
    let pid = child.id();
    tracing::debug!(?pid, "window process started");
    let stdin = child.stdin.take();
    let (end, ended) = oneshot::channel::<()>();
    let reaped = tauri::async_runtime::spawn(async move {
        tokio::select! {
            status = child.wait() => {
                tracing::debug!(?pid, ?status, "window process exited");
            }
            _ = ended => {
                // End of its stdin: the child closes its windows and exits.
                drop(stdin);
                if tokio::time::timeout(END_GRACE, child.wait()).await.is_err() {
                    tracing::warn!(?pid, "window process did not exit; killing it");
                    let _ = child.kill().await;
                }
            }
        }
    });
    Some(Child { pid, end, reaped })
}

impl std::fmt::Debug for WindowProcesses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pid = |slot: &Mutex<Option<Child>>| {
            slot.lock()
                .ok()
                .and_then(|s| s.as_ref().and_then(|c| c.pid))
        };
        f.debug_struct("WindowProcesses")
            .field("main", &pid(&self.main))
            .field("login", &pid(&self.login))
            .finish()
    }
}
