//! The command line, as clap parses it.

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// One login for every MCP server on this machine.
#[derive(Debug, Parser)]
#[command(name = "latchkey", version, about, propagate_version = true)]
pub struct Cli {
    /// More logging on stderr (-v, -vv); or set LATCHKEY_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in to an account (opens the system browser; prints the URL when it cannot).
    Login {
        /// Account name (default: the first configured).
        #[arg(long)]
        account: Option<String>,
        /// Only print the URL; do not open a browser.
        #[arg(long)]
        no_browser: bool,
    },
    /// Log out: revoke the tokens and delete the account's keychain entries.
    Logout {
        /// Account name (default: the first configured).
        #[arg(long)]
        account: Option<String>,
    },
    /// Who is logged in, until when, each service's credential state, keychain health.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print a valid access token for scripts (refreshed first if needed).
    Token {
        /// Account name (default: the first configured).
        #[arg(long)]
        account: Option<String>,
    },
    /// Check or locate the configuration file.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Store the Auth Gateway API key in the keychain (read from stdin).
    Gateway {
        /// What to do.
        #[command(subcommand)]
        action: GatewayAction,
    },
    /// An account's OAuth client secret, kept in the keychain (read from stdin).
    Account {
        /// What to do.
        #[command(subcommand)]
        action: AccountAction,
    },
    /// Store the secret of a `source = "manual"` service in the keychain.
    Secret {
        /// What to do.
        #[command(subcommand)]
        action: SecretAction,
    },
    /// Run headless: the proxy, sessions and refresh, without the tray (WSL, servers, CI).
    Serve {
        /// Listen on this port instead of the configured one (0 = any free port).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Manage local clients (the tokens MCP hosts use to reach the proxy).
    Client {
        /// What to do.
        #[command(subcommand)]
        action: ClientAction,
    },
    /// Run a command with services' credentials in its environment.
    Exec(ExecArgs),
    /// Show the audit log of proxied requests.
    Log {
        /// Keep printing new rows.
        #[arg(long, short)]
        follow: bool,
        /// Only this client.
        #[arg(long)]
        client: Option<String>,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// How many past rows.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Machine-readable output (one JSON object per line).
        #[arg(long)]
        json: bool,
        /// Also show the latchkey command's own control calls (status, logins, client
        /// management); by default only client traffic and credential reads are shown.
        #[arg(long)]
        control: bool,
    },
    /// List open proxied connections and streams.
    Connections {
        /// Close this connection instead of listing.
        #[arg(long)]
        close: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the headers Claude Code's `headersHelper` expects, with a short-lived token.
    Headers {
        /// Client name.
        client: String,
    },
    /// Remote MCP servers that sign in with OAuth, Latchkey being their client.
    Server {
        /// What to do.
        #[command(subcommand)]
        action: ServerAction,
    },
    /// Print the MCP host configuration that reaches a service through Latchkey.
    McpConfig {
        /// Local client the host authenticates as.
        #[arg(long)]
        client: String,
        /// Service to reach.
        #[arg(long)]
        service: String,
        /// Which host's format.
        #[arg(long, value_enum)]
        host: HostKind,
        /// Path of the MCP endpoint under the service's upstream.
        #[arg(long, default_value = "mcp")]
        path: String,
        /// The token written for the host stops working after this long (`30d`, `12h`, `90m`,
        /// `45s`); without it the token lasts until replaced or revoked.
        #[arg(long, value_parser = parse_lifetime)]
        expires_in: Option<std::time::Duration>,
    },
    /// Speak MCP over stdio and forward to the proxy (for hosts that only run stdio servers).
    McpStdio {
        /// Service to reach.
        service: String,
        /// Local client to authenticate as.
        #[arg(long)]
        client: String,
        /// Path of the MCP endpoint under the service's upstream.
        #[arg(long, default_value = "mcp")]
        path: String,
    },
}

/// `latchkey exec` arguments.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// A service whose `env` mapping to apply (repeatable).
    #[arg(long = "service", required = true)]
    pub services: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

/// `latchkey config …`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the configuration file and report problems with line numbers.
    Check {
        /// A file other than the default.
        #[arg(long)]
        path: Option<std::path::PathBuf>,
    },
    /// Print where the configuration file is.
    Path,
    /// Write a first configuration: from an issuer and a client id (checked by discovery
    /// first), or imported from a file or an https URL; asks interactively on a terminal.
    Init(InitArgs),
}

/// `latchkey config init` flags.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The organisation's OIDC issuer URL.
    #[arg(long, requires = "client_id", conflicts_with = "from")]
    pub issuer: Option<String>,
    /// The OAuth client id registered for Latchkey.
    #[arg(long, requires = "issuer")]
    pub client_id: Option<String>,
    /// The Auth Gateway URL (optional).
    #[arg(long, requires = "issuer")]
    pub gateway_url: Option<String>,
    /// The API the access token is for (optional; some providers need it).
    #[arg(long, requires = "issuer")]
    pub audience: Option<String>,
    /// Import a configuration file or https URL an administrator handed out.
    #[arg(long, value_name = "FILE_OR_URL")]
    pub from: Option<String>,
    /// Allow plain http on loopback addresses (local test providers only).
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// Replace an existing configuration (the old one is kept as a timestamped backup).
    #[arg(long)]
    pub force: bool,
    /// Write this file instead of the default.
    #[arg(long)]
    pub path: Option<std::path::PathBuf>,
}

/// `latchkey gateway …`
#[derive(Debug, Subcommand)]
pub enum GatewayAction {
    /// Read the API key from stdin and store it in the keychain.
    SetKey,
}

/// `latchkey account …`
#[derive(Debug, Subcommand)]
pub enum AccountAction {
    /// Read the account's OAuth client secret from stdin and store it in the keychain (for
    /// providers that issue one to desktop apps; it survives logout).
    SetSecret {
        /// Account name (default: the first configured).
        #[arg(long)]
        account: Option<String>,
    },
    /// Delete the account's OAuth client secret from the keychain.
    DeleteSecret {
        /// Account name (default: the first configured).
        #[arg(long)]
        account: Option<String>,
    },
}

/// `latchkey secret …`
#[derive(Debug, Subcommand)]
pub enum SecretAction {
    /// Read `name=value` lines from stdin and store them for the service.
    Set {
        /// The service (with `source = "manual"`).
        service: String,
    },
}

/// `latchkey client …`
#[derive(Debug, Subcommand)]
pub enum ClientAction {
    /// Create a client and print its token once.
    Add {
        /// Client name.
        name: String,
        /// Services it may use (repeatable).
        #[arg(long = "service", required = true)]
        services: Vec<String>,
        /// Let it also read its services' raw credentials at `/v1/credentials/<service>` (for an
        /// MCP server that integrates natively). Off by default: its token then works only
        /// through the proxy. An account's own access token is never given out either way.
        #[arg(long)]
        allow_raw_credentials: bool,
    },
    /// List clients.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client and all its tokens.
    Revoke {
        /// Client name.
        name: String,
    },
    /// List a client's tokens: label, created, last used, expiry (never the token itself).
    Tokens {
        /// Client name.
        name: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one token of a client by its label (see `latchkey client tokens`).
    RevokeToken {
        /// Client name.
        name: String,
        /// The token's label, e.g. `mcp-config:claude-code`.
        label: String,
    },
}

/// `latchkey server …`
#[derive(Debug, Subcommand)]
pub enum ServerAction {
    /// Add a remote MCP server by URL: discover its authorization server, register, sign in
    /// (system browser; prints the URL when it cannot), then save it in the configuration.
    Add {
        /// The MCP endpoint, e.g. https://mcp.example.com/mcp.
        url: String,
        /// Its name in Latchkey: hosts reach it at /<name>/... (default: from the host name).
        #[arg(long)]
        name: Option<String>,
        /// A client id registered beforehand at its authorization server (needed when it
        /// offers neither Dynamic Client Registration nor Client ID Metadata Documents).
        #[arg(long)]
        client_id: Option<String>,
        /// Read that client's secret from standard input (a confidential client); it is kept
        /// in the keychain, never in the configuration file.
        #[arg(long, requires = "client_id")]
        client_secret_stdin: bool,
        /// Scopes to ask for instead of the ones the server advertises, e.g. "read write".
        #[arg(long)]
        scopes: Option<String>,
        /// Listen for the sign-in's callback on this fixed loopback port (registered as
        /// http://127.0.0.1:<port>/oauth/callback), for authorization servers that match
        /// redirect URIs exactly; kept for every later login.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        callback_port: Option<u16>,
        /// Only print the URL; do not open a browser.
        #[arg(long)]
        no_browser: bool,
        /// Allow plain http:// on a loopback host (local servers and tests only).
        #[arg(long)]
        allow_insecure_loopback: bool,
    },
    /// List remote servers with their state, token expiry and authorization server.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Sign in to a server again (after it needs a login, or to grant more permissions).
    Login {
        /// Server name.
        name: String,
        /// Only print the URL; do not open a browser.
        #[arg(long)]
        no_browser: bool,
    },
    /// Revoke a server's tokens, delete its keychain entries and remove it from the configuration.
    Remove {
        /// Server name.
        name: String,
    },
}

/// MCP hosts `mcp-config` knows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum HostKind {
    /// Claude Code (`~/.claude.json` or `claude mcp add-json`).
    ClaudeCode,
    /// Cursor (`~/.cursor/mcp.json`).
    Cursor,
    /// VS Code (`mcp.json`).
    Vscode,
    /// Claude Desktop (`claude_desktop_config.json`, stdio only).
    ClaudeDesktop,
}

/// A token lifetime: a whole number followed by `d`, `h`, `m` or `s` (`30d`).
pub fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    let bad =
        || format!("`{text}` is not a lifetime; write a number and a unit, e.g. 30d, 12h, 90m");
    let (split, _) = text.char_indices().last().ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        _ => None,
    }
    .filter(|s| *s > 0)
    .ok_or_else(bad)?;
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod lifetime_tests {
    use super::parse_lifetime;

    #[test]
    fn lifetimes_are_a_number_and_a_unit() {
        assert_eq!(parse_lifetime("30d").map(|d| d.as_secs()), Ok(30 * 86_400));
        assert_eq!(parse_lifetime("12h").map(|d| d.as_secs()), Ok(12 * 3_600));
        assert_eq!(parse_lifetime("90m").map(|d| d.as_secs()), Ok(5_400));
        for bad in ["", "30", "d", "0d", "-1d", "1w", "3é", "99999999999999999d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?} is refused");
        }
    }
}
