//! `latchkey account set-secret` / `delete-secret`: an account's OAuth client secret (providers
//! such as Google issue one even to desktop apps) goes into the keychain, never the configuration.
//! It is written straight to the keychain: a running instance reads it there before each token
//! request, so no restart is needed. Logout keeps it; only `delete-secret` removes it.

use std::process::ExitCode;

use latchkey_core::Code;
use latchkey_core::config::Config;
use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;
use latchkey_core::vault::{Vault, VaultError};

use super::read_stdin_secret;
use crate::exit::Coded;

/// `latchkey account set-secret [--account A]` (secret on stdin).
pub async fn set_secret(paths: &Paths, account: Option<String>) -> anyhow::Result<ExitCode> {
    let name = account_name(paths, account)?;
    let secret = Secret::new(read_stdin_secret("client secret")?);
    vault()?
        .save_client_secret(&name, &secret)
        .await
        .map_err(coded)?;
    eprintln!(
        "The client secret of account {name} is stored in the keychain (logout keeps it; `latchkey account delete-secret --account {name}` removes it)."
    );
    Ok(ExitCode::SUCCESS)
}

/// `latchkey account delete-secret [--account A]`.
pub async fn delete_secret(paths: &Paths, account: Option<String>) -> anyhow::Result<ExitCode> {
    let name = account_name(paths, account)?;
    vault()?.delete_client_secret(&name).await.map_err(coded)?;
    eprintln!("The client secret of account {name} is deleted from the keychain.");
    Ok(ExitCode::SUCCESS)
}

/// The named account, or the default one, as the configuration defines it.
fn account_name(paths: &Paths, account: Option<String>) -> anyhow::Result<String> {
    let config = Config::load_from(&paths.config_file()).map_err(|e| Coded {
        code: e.code(),
        message: e.to_string(),
    })?;
    let found = match &account {
        Some(name) => config.account(name),
        None => config.default_account(),
    };
    let Some(found) = found else {
        return Err(Coded {
            code: Code::UnknownAccount,
            message: format!(
                "no account `{}` in {}",
                account.unwrap_or_default(),
                paths.config_file().display()
            ),
        }
        .into());
    };
    Ok(found.name.to_string())
}

fn vault() -> anyhow::Result<Vault> {
    Vault::platform().map_err(|e| coded(e).into())
}

fn coded(e: VaultError) -> Coded {
    Coded {
        code: e.code(),
        message: e.to_string(),
    }
}
