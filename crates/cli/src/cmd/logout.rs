//! `latchkey logout`: ends an account's session and deletes its keychain entries.

use std::process::ExitCode;

use latchkey_core::paths::Paths;
use latchkey_runtime::Control;

use super::with_target;
use crate::exit::Coded;

/// `latchkey logout`
pub async fn run(paths: &Paths, account: Option<String>) -> anyhow::Result<ExitCode> {
    let account = with_target(paths, async |target| {
        let account = target.account_or_default(account)?;
        target.logout(&account).await.map_err(Coded::from)?;
        Ok(account)
    })
    .await?;
    eprintln!("Logged out of {account}; its keychain entries are deleted.");
    Ok(ExitCode::SUCCESS)
}
