//! The control API: what the `latchkey` command asks of an instance. One typed trait,
//! [`Control`], with two implementations: the in-process [`Latchkey`](crate::Latchkey) (when
//! nothing else runs) and [`ControlClient`] (the running tray app or `latchkey serve`, over
//! `/v1/control/*` on the proxy's port with the instance's control token). The router that serves
//! the HTTP side calls the in-process implementation, and both sides take their paths from one
//! table, [`Route`], so the client and the server cannot disagree on a path, a method or a body.

mod client;
mod local;
mod router;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use url::Url;

use latchkey_core::secret::Secret;
/// A client's stored token as listed (no token, no hash).
pub use latchkey_store::TokenInfo;
use latchkey_store::{ActivityBuckets, AuditPage, AuditRow};

use crate::RuntimeError;
use crate::view::{
    ActivityFilter, ClientView, ConnectionView, CreatedClient, HostApplied, HostPreview, HostView,
    Overview, ServerView,
};

pub use client::ControlClient;
pub use router::router;

/// Where the proxy nests the control routes (`latchkey_proxy::ProxyState::with_control`).
pub const PREFIX: &str = "/v1/control";

/// Longest a login started from the command waits for the browser before the instance gives up.
pub const LOGIN_WAIT: Duration = Duration::from_secs(600);

/// What the `latchkey` command can ask of an instance, in-process or over the control API. Every
/// error is the runtime's `{code, message}`, whichever side it comes from.
pub trait Control: Send + Sync {
    /// The overview (accounts, services, servers, proxy, keychain, configuration) and the local
    /// clients: `latchkey status`.
    fn status(&self) -> impl Future<Output = Result<StatusReport, RuntimeError>> + Send;

    /// Accounts, services, servers, proxy, keychain and configuration: the window's first screen.
    fn overview(&self) -> impl Future<Output = Result<Overview, RuntimeError>> + Send;

    /// Changes to the overview and the audit rows, as they happen, until the instance stops:
    /// what a window in another process follows. `as_window`: the follower is an open window,
    /// which also gets the requests to show itself ([`InstanceEvent::ShowWindow`]).
    fn follow_events(
        &self,
        as_window: bool,
    ) -> impl Future<Output = Result<EventStream, RuntimeError>> + Send;

    /// Starts a login to `account`; the page to open in a browser.
    fn begin_login(&self, account: &str) -> impl Future<Output = Result<Url, RuntimeError>> + Send;

    /// Waits (up to [`LOGIN_WAIT`]) for the login to `account` to end; the overview after it.
    fn wait_login(
        &self,
        account: &str,
    ) -> impl Future<Output = Result<Overview, RuntimeError>> + Send;

    /// Gives up the pending login to `account` (nothing happens when none is pending).
    fn cancel_login(&self, account: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Refreshes the tokens of `account` now.
    fn refresh_now(&self, account: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Ends the session of `account` and deletes its keychain entries.
    fn logout(&self, account: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// A valid access token of `account`, refreshed first when due (`latchkey token`).
    fn access_token(
        &self,
        account: &str,
    ) -> impl Future<Output = Result<Secret, RuntimeError>> + Send;

    /// Stores the Auth Gateway API key in the keychain.
    fn set_gateway_api_key(
        &self,
        key: Secret,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stores the named values of a `source = "manual"` service in the keychain.
    fn set_manual_secret(
        &self,
        service: &str,
        values: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The local clients (no tokens).
    fn list_clients(&self) -> impl Future<Output = Result<Vec<ClientView>, RuntimeError>> + Send;

    /// Creates a local client; its token is in the answer, once.
    fn create_client(
        &self,
        client: &NewClient,
    ) -> impl Future<Output = Result<CreatedClient, RuntimeError>> + Send;

    /// Revokes a local client and all its tokens.
    fn revoke_client(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// A client's stored tokens (label, dates; never the token).
    fn client_tokens(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<TokenInfo>, RuntimeError>> + Send;

    /// A stored token for client `name` labelled `label`, replacing its previous token of that
    /// label; with `expires_in` it stops working after that long.
    fn issue_client_token(
        &self,
        name: &str,
        label: &str,
        expires_in: Option<Duration>,
    ) -> impl Future<Output = Result<Secret, RuntimeError>> + Send;

    /// Revokes the token of client `name` labelled `label`.
    fn revoke_client_token(
        &self,
        name: &str,
        label: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// A short-lived, memory-only token for `client` (default one hour, between one minute and
    /// a day).
    fn issue_ephemeral_token(
        &self,
        client: &str,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<EphemeralToken, RuntimeError>> + Send;

    /// One page of the audit log, newest first.
    fn query_activity(
        &self,
        filter: ActivityFilter,
    ) -> impl Future<Output = Result<AuditPage, RuntimeError>> + Send;

    /// Requests and errors per service over the last `span` (`hour` or `day`).
    fn activity_chart(
        &self,
        span: &str,
    ) -> impl Future<Output = Result<ActivityBuckets, RuntimeError>> + Send;

    /// The audit rows written from now on, as they are written.
    fn follow_activity(&self) -> impl Future<Output = Result<ActivityStream, RuntimeError>> + Send;

    /// The live proxied connections.
    fn list_connections(
        &self,
    ) -> impl Future<Output = Result<Vec<ConnectionView>, RuntimeError>> + Send;

    /// Closes one live connection.
    fn close_connection(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The MCP hosts found on this machine (Claude Desktop, Cursor, VS Code, Claude Code).
    fn detect_hosts(&self) -> impl Future<Output = Result<Vec<HostView>, RuntimeError>> + Send;

    /// The entry adding `client`'s access to `service` would put in `host`'s configuration (no
    /// token in it); nothing is written.
    fn preview_host_entry(
        &self,
        entry: &HostEntry,
    ) -> impl Future<Output = Result<HostPreview, RuntimeError>> + Send;

    /// Adds that entry to the host's configuration, with a backup (a token the host needs goes
    /// into the file, never into the answer).
    fn apply_host_entry(
        &self,
        entry: &HostEntry,
    ) -> impl Future<Output = Result<HostApplied, RuntimeError>> + Send;

    /// Restores `host`'s configuration from its newest backup.
    fn undo_host_entry(&self, host: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The remote MCP servers.
    fn list_servers(&self) -> impl Future<Output = Result<Vec<ServerView>, RuntimeError>> + Send;

    /// Starts adding a remote MCP server: its name and the sign-in page (the configuration is
    /// written only once the sign-in succeeds).
    fn add_server(
        &self,
        server: &NewServer,
    ) -> impl Future<Output = Result<AddedServerView, RuntimeError>> + Send;

    /// Removes a remote MCP server; a note when its tokens could not be revoked.
    fn remove_server(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, RuntimeError>> + Send;

    /// Starts a new sign-in to a remote MCP server; the page to open.
    fn server_login(&self, name: &str) -> impl Future<Output = Result<Url, RuntimeError>> + Send;

    /// Waits (up to [`LOGIN_WAIT`]) for the sign-in to `name` to end; the servers after it.
    fn wait_server_login(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<ServerView>, RuntimeError>> + Send;

    /// Stops the pending sign-in to `name` (a server still being added is forgotten).
    fn cancel_server_login(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}

/// How a route is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `DELETE`
    Delete,
}

impl Verb {
    /// The HTTP method.
    pub fn method(self) -> http::Method {
        match self {
            Self::Get => http::Method::GET,
            Self::Post => http::Method::POST,
            Self::Delete => http::Method::DELETE,
        }
    }

    /// The router's filter for it.
    pub(crate) fn filter(self) -> axum::routing::MethodFilter {
        use axum::routing::MethodFilter;
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Delete => MethodFilter::DELETE,
        }
    }
}

/// Every control route: its method, its path under [`PREFIX`] (axum's `{param}` syntax) and how
/// long the command waits for it. The router registers exactly these and the client builds its
/// requests from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // Each variant is the [`Control`] method of the same name.
pub enum Route {
    Status,
    Overview,
    Events,
    BeginLogin,
    WaitLogin,
    CancelLogin,
    RefreshNow,
    Logout,
    AccessToken,
    GatewayKey,
    ManualSecret,
    ListClients,
    CreateClient,
    RevokeClient,
    ClientTokens,
    IssueClientToken,
    RevokeClientToken,
    Ephemeral,
    Activity,
    ActivityChart,
    ActivityStream,
    Connections,
    CloseConnection,
    DetectHosts,
    PreviewHostEntry,
    ApplyHostEntry,
    UndoHostEntry,
    ListServers,
    AddServer,
    RemoveServer,
    ServerLogin,
    WaitServerLogin,
    CancelServerLogin,
}

impl Route {
    /// All routes, for the router and the tests.
    pub const ALL: [Route; 33] = [
        Self::Status,
        Self::Overview,
        Self::Events,
        Self::BeginLogin,
        Self::WaitLogin,
        Self::CancelLogin,
        Self::RefreshNow,
        Self::Logout,
        Self::AccessToken,
        Self::GatewayKey,
        Self::ManualSecret,
        Self::ListClients,
        Self::CreateClient,
        Self::RevokeClient,
        Self::ClientTokens,
        Self::IssueClientToken,
        Self::RevokeClientToken,
        Self::Ephemeral,
        Self::Activity,
        Self::ActivityChart,
        Self::ActivityStream,
        Self::Connections,
        Self::CloseConnection,
        Self::DetectHosts,
        Self::PreviewHostEntry,
        Self::ApplyHostEntry,
        Self::UndoHostEntry,
        Self::ListServers,
        Self::AddServer,
        Self::RemoveServer,
        Self::ServerLogin,
        Self::WaitServerLogin,
        Self::CancelServerLogin,
    ];

    /// Method and path (under [`PREFIX`]).
    pub fn endpoint(self) -> (Verb, &'static str) {
        use Verb::{Delete, Get, Post};
        match self {
            Self::Status => (Get, "/status"),
            Self::Overview => (Get, "/overview"),
            Self::Events => (Get, "/events"),
            Self::BeginLogin => (Post, "/login/{account}"),
            Self::WaitLogin => (Post, "/login/{account}/wait"),
            Self::CancelLogin => (Post, "/login/{account}/cancel"),
            Self::RefreshNow => (Post, "/refresh/{account}"),
            Self::Logout => (Post, "/logout/{account}"),
            Self::AccessToken => (Get, "/token/{account}"),
            Self::GatewayKey => (Post, "/gateway-key"),
            Self::ManualSecret => (Post, "/secret/{service}"),
            Self::ListClients => (Get, "/clients"),
            Self::CreateClient => (Post, "/clients"),
            Self::RevokeClient => (Delete, "/clients/{name}"),
            Self::ClientTokens => (Get, "/clients/{name}/tokens"),
            Self::IssueClientToken => (Post, "/clients/{name}/tokens"),
            Self::RevokeClientToken => (Delete, "/clients/{name}/tokens/{label}"),
            Self::Ephemeral => (Post, "/ephemeral"),
            Self::Activity => (Get, "/activity"),
            Self::ActivityChart => (Get, "/activity/chart"),
            Self::ActivityStream => (Get, "/activity/stream"),
            Self::Connections => (Get, "/connections"),
            Self::CloseConnection => (Delete, "/connections/{id}"),
            Self::DetectHosts => (Get, "/hosts"),
            Self::PreviewHostEntry => (Post, "/hosts/{host}/preview"),
            Self::ApplyHostEntry => (Post, "/hosts/{host}/entries"),
            Self::UndoHostEntry => (Post, "/hosts/{host}/undo"),
            Self::ListServers => (Get, "/servers"),
            Self::AddServer => (Post, "/servers"),
            Self::RemoveServer => (Delete, "/servers/{name}"),
            Self::ServerLogin => (Post, "/servers/{name}/login"),
            Self::WaitServerLogin => (Post, "/servers/{name}/wait"),
            Self::CancelServerLogin => (Post, "/servers/{name}/cancel"),
        }
    }

    /// How long the command waits for the answer: a login waits for the browser (the instance
    /// gives up first), a removal may revoke tokens at a remote server; a stream has no end.
    pub fn timeout(self) -> Option<Duration> {
        match self {
            Self::WaitLogin | Self::WaitServerLogin => Some(LOGIN_WAIT + Duration::from_secs(20)),
            Self::RemoveServer => Some(Duration::from_secs(60)),
            Self::RevokeClient | Self::RevokeClientToken | Self::CloseConnection => {
                Some(Duration::from_secs(10))
            }
            Self::ActivityStream | Self::Events => None,
            _ => Some(Duration::from_secs(30)),
        }
    }
}

/// `latchkey status`: the overview plus the local clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// Accounts, services, servers, proxy, keychain and configuration.
    #[serde(flatten)]
    pub overview: Overview,
    /// The local clients.
    pub clients: Vec<ClientView>,
}

/// A local client to create (`latchkey client add`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewClient {
    /// Its name.
    pub name: String,
    /// The services it may use.
    pub services: Vec<String>,
    /// It may read its services' raw credentials (`--allow-raw-credentials`).
    #[serde(default)]
    pub allow_raw_credentials: bool,
}

/// A remote MCP server to add (`latchkey server add`).
#[derive(Debug, Default)]
pub struct NewServer {
    /// The MCP endpoint.
    pub url: String,
    /// How the proxy names it (default: from the URL's host).
    pub name: Option<String>,
    /// A client id registered beforehand at its authorization server.
    pub client_id: Option<String>,
    /// That client's secret: straight into the keychain with the registration.
    pub client_secret: Option<Secret>,
    /// Scopes to ask for instead of the advertised ones.
    pub scopes: Option<Vec<String>>,
    /// A fixed loopback callback port.
    pub callback_port: Option<u16>,
    /// Allow plain `http://` on loopback hosts.
    pub allow_insecure_loopback: bool,
}

/// A server being added: its name and the page to open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedServerView {
    /// The page to open in a browser.
    pub authorize_url: Url,
    /// The name chosen.
    pub name: String,
}

/// An entry for an MCP host's configuration: `client` reaching `service` through the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// The host: `claude-desktop`, `cursor`, `vscode` or `claude-code`.
    pub host: String,
    /// The local client the host acts as.
    pub client: String,
    /// The service it reaches.
    pub service: String,
}

/// A short-lived token and how long it lasts.
#[derive(Debug)]
pub struct EphemeralToken {
    /// The token.
    pub token: Secret,
    /// Its lifetime.
    pub expires_in: Duration,
}

/// What following the audit log yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivityEvent {
    /// A row, as written.
    Row(Box<AuditRow>),
    /// This many rows went by while the reader was behind.
    Lagged(u64),
}

/// The audit rows as they are written, until the instance stops.
pub type ActivityStream = BoxStream<'static, Result<ActivityEvent, RuntimeError>>;

/// What following the instance yields: what the in-process window gets from
/// [`Latchkey::subscribe`](crate::Latchkey::subscribe) and
/// [`Latchkey::subscribe_activity`](crate::Latchkey::subscribe_activity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceEvent {
    /// Something in the overview may have changed: read it again.
    Changed,
    /// An audit row, as written.
    Activity(Box<AuditRow>),
    /// This many audit rows went by while the reader was behind.
    Lagged(u64),
    /// The window should show itself (the tray's *Open*, a tray line, a second launch), at
    /// `<section>/<item>` when given. Only followers that are windows get it.
    ShowWindow {
        /// Where to open: `<section>/<item>`.
        at: Option<String>,
    },
}

/// A request to show the window, at `<section>/<item>` when given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRequest {
    /// Where to open: `<section>/<item>`.
    pub at: Option<String>,
}

/// The instance's events, until it stops.
pub type EventStream = BoxStream<'static, Result<InstanceEvent, RuntimeError>>;

/// The request and answer bodies that only the wire sees: secrets travel in them as plain
/// strings for the length of one request, so none derives `Debug`.
mod wire {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use crate::view::ActivityFilter;

    /// `{ "ok": true }`: an operation without an answer of its own.
    #[derive(Serialize, Deserialize)]
    pub(super) struct Done {
        pub(super) ok: bool,
    }

    /// `POST /login/{account}`, `POST /servers/{name}/login`.
    #[derive(Serialize, Deserialize)]
    pub(super) struct AuthorizeUrl {
        pub(super) authorize_url: url::Url,
    }

    /// `GET /token/{account}`.
    #[derive(Serialize, Deserialize)]
    pub(super) struct AccessToken {
        pub(super) access_token: String,
    }

    /// `POST /gateway-key`.
    #[derive(Serialize, Deserialize)]
    pub(super) struct Key {
        pub(super) key: String,
    }

    /// `POST /secret/{service}`.
    #[derive(Serialize, Deserialize)]
    pub(super) struct ManualSecret {
        pub(super) values: BTreeMap<String, String>,
    }

    /// `POST /clients/{name}/tokens`.
    #[derive(Serialize, Deserialize)]
    pub(super) struct TokenLabel {
        pub(super) label: String,
        /// The token stops working after this many seconds; absent: never.
        pub(super) expires_in_seconds: Option<u64>,
    }

    /// A token issued once (`POST /clients/{name}/tokens`, `POST /ephemeral`).
    #[derive(Serialize, Deserialize)]
    pub(super) struct Issued {
        pub(super) token: String,
        /// Seconds, for ephemeral tokens.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) expires_in: Option<u64>,
    }

    /// `GET /events?window=`.
    #[derive(Serialize, Deserialize)]
    pub(super) struct EventsQuery {
        #[serde(default)]
        pub(super) window: bool,
    }

    /// `GET /activity/chart?span=`.
    #[derive(Serialize, Deserialize)]
    pub(super) struct ChartQuery {
        pub(super) span: String,
    }

    /// `POST /hosts/{host}/preview`, `POST /hosts/{host}/entries`.
    #[derive(Serialize, Deserialize)]
    pub(super) struct EntryBody {
        pub(super) client: String,
        pub(super) service: String,
    }

    /// `POST /ephemeral`.
    #[derive(Serialize, Deserialize)]
    pub(super) struct EphemeralRequest {
        pub(super) client: String,
        pub(super) ttl_seconds: Option<u64>,
    }

    /// `GET /activity?...`.
    #[derive(Serialize, Deserialize)]
    pub(super) struct ActivityQuery {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) client: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) service: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) status: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) before_id: Option<i64>,
        pub(super) limit: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) control: Option<bool>,
    }

    impl From<ActivityFilter> for ActivityQuery {
        fn from(f: ActivityFilter) -> Self {
            Self {
                client: f.client,
                service: f.service,
                status: f.status,
                before_id: f.before_id,
                limit: Some(f.limit),
                control: f.include_control.then_some(true),
            }
        }
    }

    impl From<ActivityQuery> for ActivityFilter {
        fn from(q: ActivityQuery) -> Self {
            Self {
                client: q.client,
                service: q.service,
                status: q.status,
                before_id: q.before_id,
                limit: q.limit.unwrap_or(50),
                include_control: q.control.unwrap_or(false),
            }
        }
    }

    /// `POST /servers`.
    #[derive(Serialize, Deserialize)]
    pub(super) struct AddServer {
        pub(super) url: String,
        #[serde(default)]
        pub(super) name: Option<String>,
        #[serde(default)]
        pub(super) client_id: Option<String>,
        /// A confidential client's secret.
        #[serde(default)]
        pub(super) client_secret: Option<String>,
        #[serde(default)]
        pub(super) scopes: Option<Vec<String>>,
        #[serde(default)]
        pub(super) callback_port: Option<u16>,
        #[serde(default)]
        pub(super) allow_insecure_loopback: bool,
    }

    /// `DELETE /servers/{name}`.
    #[derive(Serialize, Deserialize)]
    pub(super) struct RemovedServer {
        pub(super) ok: bool,
        pub(super) revoked: bool,
        pub(super) note: Option<String>,
    }
}
