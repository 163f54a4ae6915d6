//! `latchkey login`: starts a login, opens (or prints) the sign-in page and waits for it.

use std::process::ExitCode;

use latchkey_core::paths::Paths;
use latchkey_runtime::Control;
use latchkey_runtime::tray::session_line;

use super::{Target, browser};
use crate::exit::{Coded, failed_login};

/// `latchkey login`
pub async fn run(
    paths: &Paths,
    account: Option<String>,
    no_browser: bool,
) -> anyhow::Result<ExitCode> {
    let target = Target::open(paths).await?;
    let result = login(&target, account, no_browser).await;
    target.close().await;
    result
}

async fn login(
    target: &Target,
    account: Option<String>,
    no_browser: bool,
) -> anyhow::Result<ExitCode> {
    let account = target.account_or_default(account)?;
    let url = target
        .begin_login(&account)
        .await
        .map_err(|e| failed_login(Coded::from(e).into()))?;
    if no_browser || !browser::open(url.as_str()) {
        eprintln!("Open this address in your browser to sign in:");
        println!("{url}");
    } else {
        eprintln!("Your browser opened the sign-in page. If it did not, open:\n{url}");
    }
    eprintln!("Waiting for the sign-in to complete (Ctrl-C to cancel)…");
    let overview = target
        .wait_login(&account)
        .await
        .map_err(|e| failed_login(Coded::from(e).into()))?;
    if let Some(a) = overview.accounts.iter().find(|a| a.name == account) {
        eprintln!("{}", session_line(&a.state, overview.now));
    }
    Ok(ExitCode::SUCCESS)
}
