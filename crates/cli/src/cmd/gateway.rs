//! `latchkey gateway set-key`: the Auth Gateway API key, read from stdin, into the keychain.

use std::process::ExitCode;

use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;
use latchkey_runtime::Control;

use super::{read_stdin_secret, with_target};
use crate::exit::Coded;

/// `latchkey gateway set-key` (key on stdin)
pub async fn set_key(paths: &Paths) -> anyhow::Result<ExitCode> {
    let key = Secret::new(read_stdin_secret("Auth Gateway API key")?);
    with_target(paths, async |target| {
        Ok(target.set_gateway_api_key(key).await.map_err(Coded::from)?)
    })
    .await?;
    eprintln!("The Auth Gateway API key is stored in the keychain.");
    Ok(ExitCode::SUCCESS)
}
