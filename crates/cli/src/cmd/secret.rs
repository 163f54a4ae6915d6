//! `latchkey secret set <service>`: a manual service's `name=value` lines, read from stdin, into
//! the keychain.

use std::collections::BTreeMap;
use std::process::ExitCode;

use latchkey_core::paths::Paths;
use latchkey_runtime::Control;

use super::{read_stdin_secret, with_target};
use crate::exit::Coded;

/// `latchkey secret set <service>` (`name=value` lines on stdin)
pub async fn set(paths: &Paths, service: &str) -> anyhow::Result<ExitCode> {
    let text = read_stdin_secret("name=value lines")?;
    let mut values = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("each line must be name=value (the value is not shown here)")
        })?;
        values.insert(name.trim().to_owned(), value.to_owned());
    }
    with_target(paths, async |target| {
        Ok(target
            .set_manual_secret(service, &values)
            .await
            .map_err(Coded::from)?)
    })
    .await?;
    eprintln!(
        "Stored {} value(s) for {service} in the keychain.",
        values.len()
    );
    Ok(ExitCode::SUCCESS)
}
