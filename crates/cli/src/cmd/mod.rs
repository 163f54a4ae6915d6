//! One file per subcommand, dispatched from the clap enum. Each opens a [`Target`] (the running
//! instance over the control API, or this process holding the single-instance lock when nothing
//! runs), makes one typed [`Control`] call and prints the result.

mod account;
mod browser;
mod client;
mod config;
mod connections;
mod exec;
mod gateway;
mod log;
mod login;
mod logout;
mod mcp;
mod secret;
mod serve;
mod server;
mod status;
mod table;
mod token;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use url::Url;

use latchkey_core::Code;
use latchkey_core::config::Config;
use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;
use latchkey_runtime::control::{
    ActivityStream, AddedServerView, EphemeralToken, EventStream, HostEntry, NewClient, NewServer,
    StatusReport, TokenInfo,
};
use latchkey_runtime::view::{
    ActivityFilter, ClientView, ConnectionView, CreatedClient, HostApplied, HostPreview, HostView,
    Overview, ServerView,
};
use latchkey_runtime::{
    ActivityBuckets, AuditPage, Control, ControlClient, Latchkey, RuntimeError, StartOptions,
};

use crate::cli::{Cli, Command, ConfigAction};
use crate::exit::Coded;

/// Where a command runs. Both sides answer the same [`Control`] calls with the same errors.
pub enum Target {
    /// The running tray app or `latchkey serve`.
    Remote(ControlClient),
    /// This process, holding the instance lock, without a proxy.
    Local(Latchkey),
}

/// Longest a command waits for an instance that is starting, or for another command's local
/// instance, before it says Latchkey is busy.
const BUSY_WAIT: Duration = Duration::from_secs(5);

impl Target {
    /// The running instance if there is one, else a local instance without a proxy.
    /// An instance that is starting (or another command's local instance) holds the data
    /// directory for a moment: the command waits up to [`BUSY_WAIT`] for it, then uses the
    /// running instance or starts its own.
    pub async fn open(paths: &Paths) -> anyhow::Result<Self> {
        let deadline = tokio::time::Instant::now() + BUSY_WAIT;
        loop {
            if let Some(remote) = ControlClient::find(paths).await.map_err(Coded::from)? {
                return Ok(Self::Remote(remote));
            }
            let started = Latchkey::start(StartOptions {
                paths: paths.clone(),
                proxy_port: None,
                vault: None,
                serve_proxy: false,
            })
            .await;
            match started {
                Ok(lk) => return Ok(Self::Local(lk)),
                Err(e)
                    if e.code == Code::AlreadyRunning && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(Coded::from(e).into()),
            }
        }
    }

    /// True when this is the running instance (with its proxy).
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Remote(_))
    }

    /// The directories the instance was found through (the ones a host entry must name).
    pub fn paths(&self) -> &Paths {
        match self {
            Self::Remote(r) => r.paths(),
            Self::Local(lk) => lk.paths(),
        }
    }

    /// The proxy's base URL (the configured one when nothing serves it).
    pub fn proxy_url(&self) -> String {
        match self {
            Self::Remote(r) => r.proxy_url().to_owned(),
            Self::Local(lk) => lk.proxy_url(),
        }
    }

    /// `account`, or the configuration's default account.
    pub fn account_or_default(&self, account: Option<String>) -> anyhow::Result<String> {
        if let Some(a) = account {
            return Ok(a);
        }
        let default = match self {
            Self::Local(lk) => lk.default_account(),
            Self::Remote(r) => Config::load_from(&r.paths().config_file())
                .ok()
                .and_then(|c| c.default_account().map(|a| a.name.to_string())),
        };
        default.ok_or_else(|| anyhow::anyhow!("no account configured"))
    }

    /// Releases a local instance cleanly.
    pub async fn close(self) {
        if let Self::Local(lk) = self {
            lk.shutdown().await;
        }
    }
}

/// [`Control`] for [`Target`]: each call goes to the side it holds.
macro_rules! delegate {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl Control for Target {
            $(async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, RuntimeError> {
                match self {
                    Self::Remote(r) => r.$name($($arg),*).await,
                    Self::Local(lk) => Control::$name(lk $(, $arg)*).await,
                }
            })*
        }
    };
}

delegate! {
    fn status(&self) -> StatusReport;
    fn overview(&self) -> Overview;
    fn follow_events(&self, as_window: bool) -> EventStream;
    fn begin_login(&self, account: &str) -> Url;
    fn wait_login(&self, account: &str) -> Overview;
    fn cancel_login(&self, account: &str) -> ();
    fn refresh_now(&self, account: &str) -> ();
    fn logout(&self, account: &str) -> ();
    fn access_token(&self, account: &str) -> Secret;
    fn set_gateway_api_key(&self, key: Secret) -> ();
    fn set_manual_secret(&self, service: &str, values: &BTreeMap<String, String>) -> ();
    fn list_clients(&self) -> Vec<ClientView>;
    fn create_client(&self, client: &NewClient) -> CreatedClient;
    fn revoke_client(&self, name: &str) -> ();
    fn client_tokens(&self, name: &str) -> Vec<TokenInfo>;
    fn issue_client_token(&self, name: &str, label: &str, expires_in: Option<Duration>) -> Secret;
    fn revoke_client_token(&self, name: &str, label: &str) -> ();
    fn issue_ephemeral_token(&self, client: &str, ttl: Option<Duration>) -> EphemeralToken;
    fn query_activity(&self, filter: ActivityFilter) -> AuditPage;
    fn activity_chart(&self, span: &str) -> ActivityBuckets;
    fn follow_activity(&self) -> ActivityStream;
    fn list_connections(&self) -> Vec<ConnectionView>;
    fn close_connection(&self, id: &str) -> ();
    fn detect_hosts(&self) -> Vec<HostView>;
    fn preview_host_entry(&self, entry: &HostEntry) -> HostPreview;
    fn apply_host_entry(&self, entry: &HostEntry) -> HostApplied;
    fn undo_host_entry(&self, host: &str) -> ();
    fn list_servers(&self) -> Vec<ServerView>;
    fn add_server(&self, server: &NewServer) -> AddedServerView;
    fn remove_server(&self, name: &str) -> Option<String>;
    fn server_login(&self, name: &str) -> Url;
    fn wait_server_login(&self, name: &str) -> Vec<ServerView>;
    fn cancel_server_login(&self, name: &str) -> ();
}

/// Runs `command` on `target`, then releases a local instance whatever the outcome.
pub async fn with_target<T, F>(paths: &Paths, command: F) -> anyhow::Result<T>
where
    F: AsyncFnOnce(&Target) -> anyhow::Result<T>,
{
    let target = Target::open(paths).await?;
    let result = command(&target).await;
    target.close().await;
    result
}

/// The running instance, or a clear "not running" error.
pub async fn require_running(paths: &Paths) -> anyhow::Result<ControlClient> {
    ControlClient::find(paths)
        .await
        .map_err(Coded::from)?
        .ok_or_else(|| {
            Coded {
                code: Code::NotRunning,
                message: "Latchkey is not running: start the tray app or `latchkey serve` first"
                    .into(),
            }
            .into()
        })
}

/// Prints `value` as pretty JSON (keys in order, as the instance's answers always were).
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let value = serde_json::to_value(value).context("json")?;
    println!("{}", serde_json::to_string_pretty(&value).context("json")?);
    Ok(())
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().context("locating Latchkey's files")?;
    match cli.command {
        Command::Login {
            account,
            no_browser,
        } => login::run(&paths, account, no_browser).await,
        Command::Logout { account } => logout::run(&paths, account).await,
        Command::Status { json } => status::run(&paths, json).await,
        Command::Token { account } => token::run(&paths, account).await,
        Command::Config { action } => match action {
            ConfigAction::Check { path } => config::check(&paths, path),
            ConfigAction::Path => {
                println!("{}", paths.config_file().display());
                Ok(ExitCode::SUCCESS)
            }
            ConfigAction::Init(args) => config::init(&paths, args).await,
        },
        Command::Gateway {
            action: crate::cli::GatewayAction::SetKey,
        } => gateway::set_key(&paths).await,
        Command::Secret {
            action: crate::cli::SecretAction::Set { service },
        } => secret::set(&paths, &service).await,
        Command::Account { action } => match action {
            crate::cli::AccountAction::SetSecret { account } => {
                account::set_secret(&paths, account).await
            }
            crate::cli::AccountAction::DeleteSecret { account } => {
                account::delete_secret(&paths, account).await
            }
        },
        Command::Serve { port } => serve::run(&paths, port).await,
        Command::Client { action } => client::run(&paths, action).await,
        Command::Exec(args) => exec::run(&paths, args).await,
        Command::Log {
            follow,
            client,
            service,
            limit,
            json,
            control,
        } => {
            let filter = ActivityFilter {
                client,
                service,
                status: None,
                before_id: None,
                limit,
                include_control: control,
            };
            log::run(&paths, filter, follow, json).await
        }
        Command::Connections { close, json } => connections::run(&paths, close, json).await,
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
