//! `latchkey serve`: the instance without the tray (WSL, servers, CI), until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use latchkey_core::paths::Paths;
use latchkey_runtime::{Latchkey, StartOptions};

use crate::exit::Coded;

/// `latchkey serve`
pub async fn run(paths: &Paths, port: Option<u16>) -> anyhow::Result<ExitCode> {
    let lk = Latchkey::start(StartOptions {
        paths: paths.clone(),
        proxy_port: port,
        vault: None,
        serve_proxy: true,
    })
    .await
    .map_err(Coded::from)?;
    println!("Latchkey is serving on {} (Ctrl-C to stop)", lk.proxy_url());
    let overview = lk.overview();
    if !overview.keychain.ok {
        eprintln!(
            "warning: the keychain is not available: {}",
            overview
                .keychain
                .message
                .as_deref()
                .unwrap_or("unknown reason")
        );
    }
    shutdown_signal().await;
    eprintln!("Stopping…");
    lk.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
