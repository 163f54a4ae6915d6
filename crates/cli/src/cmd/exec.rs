//! `latchkey exec --service S -- cmd args`: asks the running instance for the services'
//! credentials, maps them to environment variables per each service's `env` table, and replaces
//! itself with the command (so its exit code and signals are the command's own). Everything is
//! checked before the command starts.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;

use latchkey_core::Code;
use latchkey_core::config::Config;
use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;

use super::require_running;
use crate::cli::ExecArgs;
use crate::exit::Coded;

/// Runs `latchkey exec`.
pub async fn run(paths: &Paths, args: ExecArgs) -> anyhow::Result<ExitCode> {
    // Not running is the first thing to say: it is what a host's bare environment runs into.
    let remote = require_running(paths).await?;
    let config = Config::load_from(&paths.config_file()).map_err(|e| Coded {
        code: e.code(),
        message: e.to_string(),
    })?;
    let mut env: BTreeMap<String, (String, Secret)> = BTreeMap::new();
    for name in &args.services {
        let service = config.service(name).ok_or_else(|| Coded {
            code: Code::UnknownService,
            message: format!("no service `{name}` in {}", paths.config_file().display()),
        })?;
        anyhow::ensure!(
            !service.env.is_empty(),
            "service `{name}` has no env table: add e.g. env = {{ API_KEY = \"<credential name>\" }} to it"
        );
        let mut data = remote.credentials(name).await.map_err(Coded::from)?;
        let mut missing = Vec::new();
        for (var, credential) in &service.env {
            let Some(value) = data.remove(credential) else {
                missing.push(credential.clone());
                continue;
            };
            if let Some((other, _)) = env.get(var) {
                anyhow::bail!("services `{other}` and `{name}` both set {var}: rename one mapping");
            }
            env.insert(var.clone(), (name.clone(), value));
        }
        if !missing.is_empty() {
            return Err(Coded {
                code: Code::CredentialsMissing,
                message: format!("`{name}` has no credential named {}: check the service's env table and the Auth Gateway", missing.join(", ")),
            }
            .into());
        }
    }
    let (program, rest) = args
        .command
        .split_first()
        .context("no command given after --")?;
    let mut command = std::process::Command::new(program);
    command.args(rest);
    for (var, (_, value)) in &env {
        command.env(var, value.expose());
    }
    replace_process(command, program)
}

#[cfg(unix)]
fn replace_process(
    mut command: std::process::Command,
    program: &std::ffi::OsStr,
) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    // exec only returns on failure.
    let error = command.exec();
    Err(anyhow::anyhow!(
        "cannot run {}: {error}",
        program.to_string_lossy()
    ))
}

#[cfg(not(unix))]
fn replace_process(
    mut command: std::process::Command,
    program: &std::ffi::OsStr,
) -> anyhow::Result<ExitCode> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    Ok(ExitCode::from(
        u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
    ))
}
