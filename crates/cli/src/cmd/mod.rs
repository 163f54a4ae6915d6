//! One function per subcommand. Each decides between the running instance (over the control
//! API) and working in-process (when nothing runs, taking the single-instance lock), then calls
//! one runtime operation and prints the result.

mod account;
mod clients;
mod config;
mod exec;
mod mcp;
mod server;
mod session;
mod table;

use std::process::ExitCode;

use anyhow::Context;

use latchkey_core::paths::Paths;
use latchkey_runtime::{Latchkey, StartOptions};

use crate::cli::{Cli, Command, ConfigAction};
use crate::exit::Coded;
use crate::remote::Remote;

/// Where a command runs.
pub enum Target {
    /// The running tray app or `latchkey serve`.
    Remote(Remote),
    /// This process, holding the instance lock, without a proxy.
    Local(Latchkey),
}

impl Target {
    /// The running instance if there is one, else a local instance without a proxy.
    pub async fn open(paths: &Paths) -> anyhow::Result<Self> {
        if let Some(remote) = Remote::find(paths).await? {
            return Ok(Self::Remote(remote));
        }
        let lk = Latchkey::start(StartOptions {
            paths: paths.clone(),
            proxy_port: None,
            vault: None,
            serve_proxy: false,
        })
        .await
        .map_err(Coded::from)?;
        Ok(Self::Local(lk))
    }

    /// The directories the instance was found through (the ones a host entry must name).
    pub fn paths(&self) -> &Paths {
        match self {
            Self::Remote(r) => r.paths(),
            Self::Local(lk) => lk.paths(),
        }
    }

    /// Releases a local instance cleanly.
    pub async fn close(self) {
        if let Self::Local(lk) = self {
            lk.shutdown().await;
        }
    }
}

/// The running instance, or a clear "not running" error.
pub async fn require_running(paths: &Paths) -> anyhow::Result<Remote> {
    Remote::find(paths).await?.ok_or_else(|| {
        Coded {
            code: "not_running".into(),
            message: "Latchkey is not running: start the tray app or `latchkey serve` first".into(),
        }
        .into()
    })
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().context("locating Latchkey's files")?;
    match cli.command {
        Command::Login {
            account,
            no_browser,
        } => session::login(&paths, account, no_browser).await,
        Command::Logout { account } => session::logout(&paths, account).await,
        Command::Status { json } => session::status(&paths, json).await,
        Command::Token { account } => session::token(&paths, account).await,
        Command::Config { action } => match action {
            ConfigAction::Check { path } => session::config_check(&paths, path),
            ConfigAction::Path => {
                println!("{}", paths.config_file().display());
                Ok(ExitCode::SUCCESS)
            }
            ConfigAction::Init(args) => config::init(&paths, args).await,
        },
        Command::Gateway {
            action: crate::cli::GatewayAction::SetKey,
        } => session::gateway_set_key(&paths).await,
        Command::Secret {
            action: crate::cli::SecretAction::Set { service },
        } => session::secret_set(&paths, &service).await,
        Command::Account { action } => match action {
            crate::cli::AccountAction::SetSecret { account } => {
                account::set_secret(&paths, account).await
            }
            crate::cli::AccountAction::DeleteSecret { account } => {
                account::delete_secret(&paths, account).await
            }
        },
        Command::Serve { port } => session::serve(&paths, port).await,
        Command::Client { action } => clients::run(&paths, action).await,
        Command::Exec(args) => exec::run(&paths, args).await,
        Command::Log {
            follow,
            client,
            service,
            limit,
            json,
            control,
        } => clients::log(&paths, follow, client, service, limit, json, control).await,
        Command::Connections { close, json } => clients::connections(&paths, close, json).await,
        Command::Server { action } => server::run(&paths, action).await,
        Command::Headers { client } => mcp::headers(&paths, &client).await,
        Command::McpConfig {
            client,
            service,
            host,
            path,
            expires_in,
        } => mcp::config(&paths, &client, &service, host, &path, expires_in).await,
        Command::McpStdio {
            service,
            client,
            path,
        } => mcp::stdio(&paths, &service, &client, &path).await,
    }
}

/// Reads stdin to the end, trimmed (for keys and secrets: never argv).
pub fn read_stdin_secret(what: &str) -> anyhow::Result<String> {
    use std::io::{IsTerminal, Read};
    if std::io::stdin().is_terminal() {
        eprintln!("Paste the {what}, then press Enter and Ctrl-D:");
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .with_context(|| format!("reading the {what} from stdin"))?;
    let text = text.trim().to_owned();
    anyhow::ensure!(!text.is_empty(), "no {what} on stdin");
    Ok(text)
}
