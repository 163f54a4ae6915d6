//! The data the tray window shows, shaped for the UI (snake_case JSON, unix seconds). These are
//! the only types that cross IPC; none holds a secret except [`CreatedClient::token`], shown once.

use serde::{Deserialize, Serialize};

use latchkey_core::Code;
use latchkey_core::credentials::ServiceStatus;
use latchkey_core::session::{RefreshFailure, SessionState};

/// Everything the main window's first screen needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Overview {
    /// Accounts with their session state.
    pub accounts: Vec<AccountView>,
    /// Services with their credential state (never values).
    pub services: Vec<ServiceStatus>,
    /// The proxy.
    pub proxy: ProxyView,
    /// The keychain's health at start.
    pub keychain: KeychainView,
    /// Remote MCP servers Latchkey signs in to (`[[servers]]`), and those being added.
    pub servers: Vec<ServerView>,
    /// Server time, unix seconds, so the UI's countdown does not drift.
    pub now: i64,
    /// The configuration file: missing (first run: show setup), invalid (what to fix, where;
    /// the instance keeps the last valid configuration, or none), or loaded.
    pub config: ConfigView,
    /// Requests the activity log could not record since Latchkey started (the disk was full, the
    /// database failed, or the writer fell behind): requests were served, their rows are missing.
    #[serde(default)]
    pub activity_lost: u64,
}

/// The configuration file's state as the running instance sees it (live: it follows edits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ConfigView {
    /// `missing`, `invalid` or `loaded`.
    pub state: ConfigState,
    /// The file's path.
    pub path: String,
    /// What is wrong, when `invalid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub error: Option<ConfigProblem>,
    /// A change that takes effect only after a restart (a new listen port), when there is one:
    /// "restart Latchkey to listen on port N".
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub restart_needed: Option<String>,
}

/// Whether the configuration file exists and is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ConfigState {
    /// No file yet: nothing is configured (first run).
    Missing,
    /// The file is refused; the last valid configuration (or none) stays in force.
    Invalid,
    /// The file is in force.
    Loaded,
}

/// Why the configuration file is refused: where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ConfigProblem {
    /// 1-based line (0 when the file could not be read at all).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

/// One account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct AccountView {
    /// Account name.
    pub name: String,
    /// Its issuer.
    pub issuer: String,
    /// Session state.
    pub state: SessionState,
    /// Why the last login failed, until the next login starts or one succeeds.
    pub last_login_error: Option<LoginFailure>,
    /// The latest request the proxy refused because this account is not logged in, until a
    /// login succeeds: who asked, for what.
    pub login_requested: Option<LoginRequest>,
    /// Refreshes that failed in a row while the session was kept (the provider unreachable, a
    /// refused token request), until one succeeds or the session ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub refresh_failure: Option<RefreshFailure>,
}

/// A local client asked for a service of an account nobody is logged in to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct LoginRequest {
    /// The local client's name (`latchkey` for the CLI itself).
    pub client: String,
    /// The service it asked for.
    pub service: String,
    /// When, unix seconds.
    pub at: i64,
}

/// Why an account's last login failed: the code to match on, a sentence with the fix, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct LoginFailure {
    /// What to match on (`redirect_uri_not_registered`, `access_denied`, `token_request_failed`,
    /// `jwt_wrong_audience`, `idp_unreachable`, ...).
    pub code: Code,
    /// What happened and what to do.
    pub message: String,
    /// When, unix seconds.
    pub at: i64,
}

impl LoginFailure {
    /// True when the person cancelled (or declined at the provider): worth showing, not an alarm.
    pub fn is_cancel(&self) -> bool {
        self.code.is_cancel()
    }
}

/// A remote MCP server Latchkey is the OAuth client of. No secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ServerView {
    /// Its name: the proxy path `/{name}/...`.
    pub name: String,
    /// The MCP endpoint as given.
    pub url: String,
    /// Where hosts reach it through the proxy (`{proxy}/{name}{url path}`).
    pub proxy_url: String,
    /// The authorization server's issuer, once discovered.
    pub issuer: Option<String>,
    /// Where it stands.
    pub state: latchkey_core::remote::ServerState,
    /// When the access token expires, unix seconds (renewed automatically while `ready`).
    pub expires_at: Option<i64>,
    /// Scopes granted (or asked for).
    pub scopes: Vec<String>,
    /// What to do when not `ready`, or why the last login failed.
    pub message: Option<String>,
    /// Why the last login failed, until the next one starts or one succeeds.
    pub last_login_error: Option<LoginFailure>,
    /// The latest request the proxy refused because this server needs a login (or a step-up),
    /// until a login succeeds: who asked.
    pub login_requested: Option<LoginRequest>,
}

/// The proxy listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ProxyView {
    /// Base URL local clients use.
    pub url: String,
    /// Whether it is serving.
    pub listening: bool,
    /// Why not, when it is not.
    pub error: Option<String>,
}

/// Keychain self-test result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct KeychainView {
    /// The probe entry round-tripped.
    pub ok: bool,
    /// Which store (e.g. "secret-service").
    pub backend: String,
    /// What to do when not ok.
    pub message: Option<String>,
}

/// A local client (no token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ClientView {
    /// Name.
    pub name: String,
    /// Services it may use.
    pub services: Vec<String>,
    /// Created, unix seconds.
    pub created_at: i64,
    /// Last request, unix seconds.
    pub last_used_at: Option<i64>,
    /// It may read its services' raw credentials (`latchkey client add
    /// --allow-raw-credentials`); shown as "can read raw credentials".
    pub raw_credentials: bool,
}

/// A new client and its token, shown exactly once.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct CreatedClient {
    /// The client.
    pub client: ClientView,
    /// The token. This is the one secret that crosses IPC, once, so the person can copy it.
    pub token: String,
}

impl std::fmt::Debug for CreatedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedClient")
            .field("client", &self.client)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// Which audit rows to show.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "ts", ts(optional_fields = nullable))]
pub struct ActivityFilter {
    /// Only this client.
    pub client: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// `ok`, `client_error` or `server_error`.
    pub status: Option<String>,
    /// Rows older than this id (paging).
    pub before_id: Option<i64>,
    /// Page size (capped at 500).
    pub limit: u32,
    /// Also the `latchkey` command's own control calls (left out by default).
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(as = "Option<_>", optional))]
    pub include_control: bool,
}

/// A live proxied connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ConnectionView {
    /// Opaque id for closing it.
    pub id: String,
    /// Client name.
    pub client: String,
    /// Service name.
    pub service: String,
    /// Request/response, event stream or WebSocket tunnel.
    pub kind: latchkey_proxy::ConnectionKind,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds.
    pub last_activity_at: i64,
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
    /// SSE events forwarded.
    pub events: u64,
}

/// A detected MCP host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct HostView {
    /// `claude-desktop`, `cursor`, `vscode` or `claude-code`.
    #[cfg_attr(
        feature = "ts",
        ts(type = "\"claude-desktop\" | \"cursor\" | \"vscode\" | \"claude-code\"")
    )]
    pub id: String,
    /// Display name.
    pub name: String,
    /// Its config file.
    pub config_path: String,
    /// Whether the host seems installed.
    pub installed: bool,
    /// `ok`, `missing` or `malformed`.
    #[cfg_attr(feature = "ts", ts(type = "\"ok\" | \"missing\" | \"malformed\""))]
    pub status: String,
    /// What is wrong with a malformed file.
    pub error: Option<String>,
    /// Server names already configured.
    pub servers: Vec<String>,
    /// A backup exists to undo the last change.
    pub can_undo: bool,
}

/// The entry Latchkey would add to a host's config (token never shown).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct HostPreview {
    /// Host id.
    #[cfg_attr(
        feature = "ts",
        ts(type = "\"claude-desktop\" | \"cursor\" | \"vscode\" | \"claude-code\"")
    )]
    pub host: String,
    /// Config file.
    pub config_path: String,
    /// Server name the entry gets.
    pub server_name: String,
    /// The entry, pretty JSON, with a placeholder where a token will go.
    pub entry_json: String,
    /// An entry of that name is already there and will be replaced.
    pub replaces_existing: bool,
}

/// What adding an entry did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct HostApplied {
    /// Host id.
    #[cfg_attr(
        feature = "ts",
        ts(type = "\"claude-desktop\" | \"cursor\" | \"vscode\" | \"claude-code\"")
    )]
    pub host: String,
    /// Config file written.
    pub config_path: String,
    /// Backup of the previous file.
    pub backup_path: Option<String>,
    /// Server name added.
    pub server_name: String,
}

#[cfg(test)]
mod tests {
    use latchkey_core::login::UserInfo;

    use super::*;

    #[test]
    fn an_account_view_says_whether_its_session_can_be_renewed_and_when_it_ends() {
        let view = AccountView {
            name: "work".into(),
            issuer: "https://idp.example.com".into(),
            state: SessionState::Active {
                user: UserInfo {
                    subject: "alice".into(),
                    name: None,
                    email: None,
                },
                expires_at: 4600,
                issued_at: 1000,
                renewable: false,
            },
            last_login_error: None,
            login_requested: None,
            refresh_failure: None,
        };
        let json = serde_json::to_value(&view).expect("serialise");
        assert_eq!(json["state"]["kind"], "active");
        assert_eq!(
            json["state"]["renewable"], false,
            "status and the window show that this session cannot be renewed"
        );
        assert_eq!(json["state"]["expires_at"], 4600, "and when it ends");
    }
}
