//! `latchkey token`: a valid access token for scripts, on stdout.

use std::process::ExitCode;

use latchkey_core::paths::Paths;
use latchkey_runtime::Control;

use super::with_target;
use crate::exit::Coded;

/// `latchkey token`
pub async fn run(paths: &Paths, account: Option<String>) -> anyhow::Result<ExitCode> {
    let token = with_target(paths, async |target| {
        let account = target.account_or_default(account)?;
        Ok(target.access_token(&account).await.map_err(Coded::from)?)
    })
    .await?;
    anyhow::ensure!(!token.is_empty(), "no access token");
    // The one place a token is printed: on purpose, for scripts, to stdout only.
    println!("{}", token.expose());
    Ok(ExitCode::SUCCESS)
}
