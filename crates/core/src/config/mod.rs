//! Latchkey's configuration: the TOML file of PROTOCOL §5, parsed raw and then validated into
//! typed values. Every refusal names the file, the line and a fix; secrets never live here.

pub mod edit;
pub mod init;
mod raw;
pub mod rules;
pub mod services;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use url::Url;

use raw::{RawAccount, RawConfig, RawMapping, RawService};

use crate::Code;

/// The configuration format this build understands.
pub const CONFIG_VERSION: u32 = 1;
/// Default proxy address (PROTOCOL §3).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:47821";

/// Client connections the proxy serves at once unless `[proxy] max_connections` says otherwise.
const DEFAULT_MAX_CONNECTIONS: u32 = 2048;

/// Highest `max_connections` accepted (each connection is a file descriptor).
const MAX_CONNECTIONS_CEILING: u32 = 65_536;

/// Default lifetime of gateway credentials in memory (PROTOCOL §2).
pub const DEFAULT_TTL_SECONDS: u64 = 3600;

/// A validated configuration. The default is the empty one a running instance holds while its
/// file is missing or invalid: nothing configured, the proxy on [`DEFAULT_LISTEN`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// Where the proxy listens (always a loopback address).
    pub proxy: ProxySettings,
    /// Identity provider accounts, at least one.
    pub accounts: Vec<Account>,
    /// The organisation's Auth Gateway, required when any service uses it.
    pub gateway: Option<GatewaySettings>,
    /// Services whose credentials Latchkey injects.
    pub services: Vec<Service>,
    /// How long the audit log keeps rows.
    pub audit: AuditSettings,
    /// Remote MCP servers that speak OAuth themselves, Latchkey being their client (`[[servers]]`).
    pub servers: Vec<ServerSettings>,
    /// The HTTPS URL where Latchkey's Client ID Metadata Document (`docs/client-metadata.json`)
    /// is published (top-level `client_metadata_url`): the client id at authorization servers
    /// that fetch such documents, in preference to Dynamic Client Registration.
    pub client_metadata_url: Option<Url>,
}

/// A remote MCP server Latchkey logs in to as an OAuth client (PROTOCOL §6). Its tokens and any
/// client secret live in the keychain; this is only where it is and how to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// The proxy route (`/{name}/...`); unique among servers and services.
    pub name: Name,
    /// The MCP endpoint, as the person gave it.
    pub url: Url,
    /// A client id registered beforehand at the server's authorization server (else Latchkey
    /// registers itself).
    pub client_id: Option<String>,
    /// Scopes to ask for instead of the ones the server advertises.
    pub scopes: Option<Vec<String>>,
    /// Allows plain `http://` on loopback hosts for the server and its authorization server
    /// (local servers and tests); never off loopback.
    pub allow_insecure_loopback: bool,
    /// A fixed loopback port for the login's callback, registered and used by every login, for
    /// authorization servers that match redirect URIs exactly (port included); `None`: any port.
    pub callback_port: Option<u16>,
}

/// Proxy listener and rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// Loopback address and port.
    pub listen: SocketAddr,
    /// Sustained requests per second per client.
    pub rate_limit_per_second: f64,
    /// Burst size per client.
    pub rate_limit_burst: u32,
    /// Most client connections served at once (a few more are kept for the `latchkey`
    /// command).
    pub max_connections: usize,
    /// Serve `[::1]` as well as `127.0.0.1` (default). Both or none: when `[::1]` on the port is
    /// taken, Latchkey refuses to start, as clients that resolve `localhost` to `::1` would hand
    /// their token to whoever holds it. `ipv6 = false` serves IPv4 only, for machines where
    /// another program must keep that port on `[::1]`.
    pub ipv6: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 47821)),
            rate_limit_per_second: 50.0,
            rate_limit_burst: 100,
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            ipv6: true,
        }
    }
}

/// Audit log retention.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditSettings {
    /// Rows older than this are deleted.
    pub retention: Duration,
    /// At most this many rows are kept.
    pub max_rows: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 86_400),
            max_rows: 100_000,
        }
    }
}

/// An identity provider account.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// Name used in the CLI, the tray and the keychain layout.
    pub name: Name,
    /// OIDC issuer (discovery base).
    pub issuer: Url,
    /// OAuth client id (a public client).
    pub client_id: String,
    /// Scopes requested at login.
    pub scopes: Vec<String>,
    /// The API the access token is for, sent as `resource` (RFC 8707); also its expected `aud`
    /// when `validate_access_token` is set.
    pub audience: Option<String>,
    /// Allows an `http://` loopback issuer (the sandbox).
    pub allow_insecure_http: bool,
    /// Port of the loopback redirect listener; 0 picks a free one.
    pub callback_port: u16,
    /// Validate the access token as a JWT for `audience` (off: access tokens are opaque).
    pub validate_access_token: bool,
    /// How Latchkey authenticates at the token and revocation endpoints; `None` (unset) means
    /// no client secret, or, when one is stored, the best method the provider advertises.
    pub token_endpoint_auth_method: Option<ClientAuthMethod>,
    /// How `audience` reaches the provider.
    pub audience_parameter: AudienceParameter,
}

/// How the account's `audience` is named in the requests to the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AudienceParameter {
    /// RFC 8707 `resource`, on the authorization, code-exchange and refresh requests (the
    /// standard; oidc-provider, Okta, Keycloak).
    #[default]
    Resource,
    /// `audience` on the authorization request only (Auth0, which hands out a JWT access token
    /// for an API only when asked so).
    Audience,
}

impl AudienceParameter {
    /// The request parameter's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resource => "resource",
            Self::Audience => "audience",
        }
    }
}

/// OAuth client authentication at the token endpoint (`token_endpoint_auth_method`, RFC 7591).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// A public client: `client_id` in the form, no secret.
    None,
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl ClientAuthMethod {
    /// The registered name (`none`, `client_secret_basic`, `client_secret_post`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }

    /// The method with this registered name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Self::None),
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            _ => None,
        }
    }

    /// True when the method sends a client secret.
    pub fn needs_secret(self) -> bool {
        !matches!(self, Self::None)
    }
}

/// The Auth Gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    /// Base URL; endpoints are appended.
    pub url: Url,
    /// Timeout of one gateway request.
    pub timeout: Duration,
}

/// Where a service's credential comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CredentialSource {
    /// Fetched from the Auth Gateway at this endpoint.
    Gateway {
        /// Path appended to the gateway URL.
        endpoint: String,
    },
    /// The account's own access token (services that speak OAuth themselves).
    AccessToken,
    /// A secret the user typed once, kept in the keychain.
    Manual,
}

impl CredentialSource {
    /// The stable name shown to people: `gateway`, `access_token` or `manual`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Gateway { .. } => "gateway",
            Self::AccessToken => "access_token",
            Self::Manual => "manual",
        }
    }
}

/// A service Latchkey proxies to.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// The first path segment of its proxy route.
    pub name: Name,
    /// The account whose session unlocks it.
    pub account: Name,
    /// Where its credentials come from.
    pub source: CredentialSource,
    /// Base URL requests are forwarded to.
    pub upstream: Url,
    /// How each credential is injected.
    pub credentials: Vec<Mapping>,
    /// Environment variable → credential name, for `latchkey exec`.
    pub env: BTreeMap<String, String>,
    /// How long fetched credentials are kept.
    pub ttl: Duration,
}

impl Service {
    /// The credential names this service needs.
    pub fn required_credentials(&self) -> Vec<String> {
        let mut names: Vec<String> = self.credentials.iter().map(|m| m.name.clone()).collect();
        for name in self.env.values() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }
}

/// How one credential is put on a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Name of the credential in the gateway answer.
    pub name: String,
    /// Where it goes.
    pub target: InjectTarget,
}

/// Header or query parameter injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectTarget {
    /// `header: prefix + value`.
    Header {
        /// Header name, validated by [`rules::injected_header`] (lowercase).
        name: http::HeaderName,
        /// Prepended to the value (e.g. `Bearer `).
        prefix: String,
    },
    /// `?param=value`.
    Query {
        /// Query parameter name.
        param: String,
    },
}

/// An account or service name: 1–64 of `[A-Za-z0-9._-]`, safe in URLs, keychain keys and paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    /// Validates a name.
    pub fn parse(value: &str) -> Result<Self, String> {
        rules::name(value).map_err(|r| r.message)?;
        Ok(Self(value.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a configuration was refused. The message says where and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file does not exist.
    #[error(
        "no configuration at {path}: run `latchkey config init` or create it (see README, \"Configuration\")"
    )]
    NotFound {
        /// The path looked at.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}:{line}:{column}: {message}\n  fix: {fix}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// How to fix it.
        fix: String,
    },
}

impl ConfigError {
    /// Stable code for IPC and JSON output.
    pub fn code(&self) -> Code {
        match self {
            Self::NotFound { .. } => Code::ConfigNotFound,
            Self::Io { .. } => Code::ConfigUnreadable,
            Self::Invalid { .. } => Code::ConfigInvalid,
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load_from(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_text(path).map(|(config, _)| config)
    }

    /// [`Config::load_from`], also returning the text it read (to tell a real change from a
    /// rewrite of the same text).
    pub fn load_with_text(path: &Path) -> Result<(Self, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::NotFound {
                    path: path.to_owned(),
                }
            } else {
                ConfigError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let config = Self::parse(&text, path)?;
        Ok((config, text))
    }

    /// Parses and validates `text`; `path` is used in messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let here = Locator { text, path };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let message = e.message().to_owned();
            let fix = if message.contains("unknown field") {
                "remove or rename the key; the accepted keys are listed in the message and in README \"Configuration\"".to_owned()
            } else if message.contains("missing field") {
                "add the missing key".to_owned()
            } else {
                "correct the value's type or TOML syntax".to_owned()
            };
            here.error(offset, message, fix)
        })?;
        validate(raw, &here)
    }

    /// The account with this name.
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name.as_str() == name)
    }

    /// The service with this name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name.as_str() == name)
    }

    /// The remote MCP server with this name.
    pub fn server(&self, name: &str) -> Option<&ServerSettings> {
        self.servers.iter().find(|s| s.name.as_str() == name)
    }

    /// The account used when none is named: the only one, or the first.
    pub fn default_account(&self) -> Option<&Account> {
        self.accounts.first()
    }
}

/// Turns byte offsets into `file:line:column` errors.
struct Locator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Locator<'_> {
    fn error(
        &self,
        offset: usize,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            message: message.into(),
            fix: fix.into(),
        }
    }
}

fn validate(raw: RawConfig, here: &Locator<'_>) -> Result<Config, ConfigError> {
    match &raw.version {
        Some(v) if *v.get_ref() != CONFIG_VERSION => {
            return Err(here.error(
                v.span().start,
                format!("configuration version {} is not supported", v.get_ref()),
                format!("set `version = {CONFIG_VERSION}` or upgrade Latchkey"),
            ));
        }
        _ => {}
    }

    let proxy = validate_proxy(raw.proxy.as_ref(), here)?;

    // Remote MCP servers need no account: a file with only [[servers]] is complete.
    if raw.accounts.is_empty() && raw.servers.is_empty() {
        return Err(here.error(
            0,
            "no [[accounts]] table",
            "add an [[accounts]] table with name, issuer and client_id (or a [[servers]] table for a remote MCP server)",
        ));
    }
    let mut accounts = Vec::new();
    for raw_account in &raw.accounts {
        let account = validate_account(raw_account, here)?;
        if accounts.iter().any(|a: &Account| a.name == account.name) {
            return Err(here.error(
                raw_account.name.span().start,
                format!("account `{}` is defined twice", account.name),
                "give each [[accounts]] table its own name",
            ));
        }
        accounts.push(account);
    }

    let gateway = match &raw.gateway {
        None => None,
        Some(g) => {
            let url = parse_url(&g.url, here, g.allow_insecure_http, "gateway url")?;
            let timeout = g.timeout_seconds.as_ref().map_or(10, |t| *t.get_ref());
            if timeout == 0 {
                return Err(here.error(
                    g.timeout_seconds.as_ref().map_or(0, |t| t.span().start),
                    "timeout_seconds must be at least 1",
                    "use a timeout such as 10",
                ));
            }
            Some(GatewaySettings {
                url,
                timeout: Duration::from_secs(timeout),
            })
        }
    };

    let mut services: Vec<Service> = Vec::new();
    for raw_service in &raw.services {
        let service = validate_service(raw_service, &accounts, gateway.is_some(), here)?;
        if services.iter().any(|s| s.name == service.name) {
            return Err(here.error(
                raw_service.name.span().start,
                format!("service `{}` is defined twice", service.name),
                "give each [[services]] table its own name",
            ));
        }
        services.push(service);
    }

    let audit = AuditSettings {
        retention: Duration::from_secs(
            u64::from(
                raw.audit
                    .as_ref()
                    .and_then(|a| a.retention_days.as_ref())
                    .map_or(30, |d| *d.get_ref()),
            ) * 86_400,
        ),
        max_rows: raw
            .audit
            .as_ref()
            .and_then(|a| a.max_rows.as_ref())
            .map_or(100_000, |r| *r.get_ref()),
    };

    let mut servers: Vec<ServerSettings> = Vec::new();
    for raw_server in &raw.servers {
        let server = validate_server(raw_server, here)?;
        if servers.iter().any(|s| s.name == server.name) {
            return Err(here.error(
                raw_server.name.span().start,
                format!("server `{}` is defined twice", server.name),
                "give each [[servers]] table its own name (or `latchkey server remove` one)",
            ));
        }
        if services.iter().any(|s| s.name == server.name) {
            return Err(here.error(
                raw_server.name.span().start,
                format!("server `{}` has the name of a service", server.name),
                "servers and services share the proxy's paths: rename one of them",
            ));
        }
        servers.push(server);
    }

    let client_metadata_url = raw
        .client_metadata_url
        .as_ref()
        .map(|u| {
            parse_client_metadata_url(u.get_ref())
                .map_err(|(message, fix)| here.error(u.span().start, message, fix))
        })
        .transpose()?;

    Ok(Config {
        proxy,
        accounts,
        gateway,
        services,
        audit,
        servers,
        client_metadata_url,
    })
}

/// Checks `client_metadata_url`: an `https://` URL with a path, no fragment and no credentials
/// (the Client ID Metadata Document draft's rules for a client id).
pub fn parse_client_metadata_url(text: &str) -> Result<Url, (String, String)> {
    let fix = "give the https:// URL where docs/client-metadata.json is published, such as \"https://example.com/latchkey/client-metadata.json\" (its client_id must be that URL)";
    let url = Url::parse(text).map_err(|e| {
        (
            format!(
                "client_metadata_url `{}` is not a URL: {e}",
                text.escape_debug()
            ),
            fix.to_owned(),
        )
    })?;
    let problem = if url.scheme() != "https" {
        Some("must use https://")
    } else if url.fragment().is_some() {
        Some("has a fragment (#...)")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("contains a user name or password")
    } else if url.host().is_none() || url.path().len() <= 1 {
        Some("needs a host and a path")
    } else {
        None
    };
    match problem {
        Some(problem) => Err((
            format!("client_metadata_url `{url}` {problem}"),
            fix.to_owned(),
        )),
        None => Ok(url),
    }
}

fn validate_server(
    raw: &raw::RawServer,
    here: &Locator<'_>,
) -> Result<ServerSettings, ConfigError> {
    let name = parse_route_name(&raw.name, here)?;
    if let Some(secret) = &raw.client_secret {
        return Err(here.error(
            secret.span().start,
            "a client secret does not belong in this file",
            "remove it; secrets never go in the configuration file",
        ));
    }
    let url = Url::parse(raw.url.get_ref()).map_err(|e| {
        here.error(
            raw.url.span().start,
            format!(
                "server url `{}` is not a URL: {e}",
                raw.url.get_ref().escape_debug()
            ),
            "write the MCP endpoint's full URL, such as \"https://mcp.example.com/mcp\"",
        )
    })?;
    check_server_url(&url, raw.allow_insecure_loopback)
        .map_err(|(message, fix)| here.error(raw.url.span().start, message, fix))?;
    if let Some(id) = &raw.client_id
        && id.get_ref().trim().is_empty()
    {
        return Err(here.error(
            id.span().start,
            "client_id is empty",
            "remove it (Latchkey then registers itself) or give the registered client id",
        ));
    }
    let scopes = match &raw.scopes {
        Some(scopes)
            if scopes
                .get_ref()
                .iter()
                .any(|s| s.is_empty() || s.contains(' ')) =>
        {
            return Err(here.error(
                scopes.span().start,
                "a scope is empty or contains a space",
                "list each scope as its own string, e.g. [\"read\", \"write\"]",
            ));
        }
        Some(scopes) => Some(scopes.get_ref().clone()),
        None => None,
    };
    if let Some(port) = &raw.callback_port
        && *port.get_ref() == 0
    {
        return Err(here.error(
            port.span().start,
            "callback_port is 0",
            "remove it (any free port) or give the port registered at the authorization server",
        ));
    }
    Ok(ServerSettings {
        name,
        url,
        client_id: raw.client_id.as_ref().map(|c| c.get_ref().clone()),
        scopes,
        allow_insecure_loopback: raw.allow_insecure_loopback,
        callback_port: raw.callback_port.as_ref().map(|p| *p.get_ref()),
    })
}

/// Checks a remote MCP server's URL: `https://` (or `http://` on loopback when allowed), no user
/// name or password, no fragment. The error is what is wrong and how to fix it.
pub fn check_server_url(url: &Url, allow_insecure_loopback: bool) -> Result<(), (String, String)> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err((
            "server url contains a user name or password".to_owned(),
            "remove the credentials from the URL; secrets never go in this file".to_owned(),
        ));
    }
    if url.fragment().is_some() || url.query().is_some() || url.host().is_none() {
        return Err((
            format!("server url `{url}` has a query, a fragment or no host"),
            "give the MCP endpoint's URL without `?...` or `#...`".to_owned(),
        ));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_loopback && is_loopback_host(url) => Ok(()),
        "http" if is_loopback_host(url) => Err((
            "server url uses plain http://".to_owned(),
            "use https://, or for a local test server add allow_insecure_loopback = true"
                .to_owned(),
        )),
        _ => Err((
            format!("server url `{url}` must use https://"),
            "use an https:// URL".to_owned(),
        )),
    }
}

fn validate_proxy(
    raw: Option<&raw::RawProxy>,
    here: &Locator<'_>,
) -> Result<ProxySettings, ConfigError> {
    let listen_text = raw
        .and_then(|p| p.listen.as_ref())
        .map_or(DEFAULT_LISTEN, |l| l.get_ref().as_str());
    let offset = raw
        .and_then(|p| p.listen.as_ref())
        .map_or(0, |l| l.span().start);
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        here.error(
            offset,
            format!("`{listen_text}` is not an address and port"),
            format!("use an address such as \"{DEFAULT_LISTEN}\""),
        )
    })?;
    if !listen.ip().is_loopback() {
        return Err(here.error(
            offset,
            format!(
                "the proxy must listen on loopback only, not {}",
                listen.ip()
            ),
            format!("use \"{DEFAULT_LISTEN}\" (any port)"),
        ));
    }
    let rate = raw
        .and_then(|p| p.rate_limit_per_second.as_ref())
        .map_or(50.0, |r| *r.get_ref());
    if !(rate.is_finite() && rate > 0.0) {
        return Err(here.error(
            raw.and_then(|p| p.rate_limit_per_second.as_ref())
                .map_or(0, |r| r.span().start),
            "rate_limit_per_second must be a positive number",
            "use a rate such as 50",
        ));
    }
    let burst = raw
        .and_then(|p| p.rate_limit_burst.as_ref())
        .map_or(100, |b| *b.get_ref());
    if burst == 0 {
        return Err(here.error(
            raw.and_then(|p| p.rate_limit_burst.as_ref())
                .map_or(0, |b| b.span().start),
            "rate_limit_burst must be at least 1",
            "use a burst such as 100",
        ));
    }
    let max_connections = raw.and_then(|p| p.max_connections.as_ref());
    let max = max_connections.map_or(DEFAULT_MAX_CONNECTIONS, |m| *m.get_ref());
    if !(1..=MAX_CONNECTIONS_CEILING).contains(&max) {
        return Err(here.error(
            max_connections.map_or(0, |m| m.span().start),
            format!("max_connections must be between 1 and {MAX_CONNECTIONS_CEILING}"),
            format!("use a cap such as {DEFAULT_MAX_CONNECTIONS}"),
        ));
    }
    Ok(ProxySettings {
        listen,
        rate_limit_per_second: rate,
        rate_limit_burst: burst,
        max_connections: max as usize,
        ipv6: raw.and_then(|p| p.ipv6).unwrap_or(true),
    })
}

fn validate_account(raw: &RawAccount, here: &Locator<'_>) -> Result<Account, ConfigError> {
    let name = parse_name(&raw.name, here)?;
    let issuer = parse_url(&raw.issuer, here, raw.allow_insecure_http, "issuer")?;
    if raw.client_id.get_ref().trim().is_empty() {
        return Err(here.error(
            raw.client_id.span().start,
            "client_id is empty",
            "set the OAuth client id your identity provider registered for Latchkey",
        ));
    }
    let scopes = raw.scopes.clone().unwrap_or_else(|| {
        ["openid", "profile", "email", "offline_access"]
            .map(String::from)
            .to_vec()
    });
    if !scopes.iter().any(|s| s == "openid") {
        return Err(here.error(
            raw.name.span().start,
            format!("account `{name}` does not request the `openid` scope"),
            "add \"openid\" to scopes (Latchkey needs an id token)",
        ));
    }
    if let Some(secret) = &raw.client_secret {
        return Err(here.error(
            secret.span().start,
            format!("account `{name}` has a client_secret in the configuration file"),
            format!(
                "remove it and store it in the keychain: `latchkey account set-secret --account {name}` (reads it from stdin); secrets never go in this file"
            ),
        ));
    }
    let validate_access_token = raw
        .validate_access_token
        .as_ref()
        .is_some_and(|v| *v.get_ref());
    if validate_access_token && raw.audience.as_deref().is_none_or(|a| a.trim().is_empty()) {
        return Err(here.error(
            raw.validate_access_token
                .as_ref()
                .map_or(raw.name.span().start, |v| v.span().start),
            format!(
                "account `{name}` sets validate_access_token = true but has no audience to check the access token's `aud` against"
            ),
            "add audience = \"<the aud your provider puts in access tokens>\", or remove validate_access_token (access tokens are then opaque to Latchkey, as most providers expect)",
        ));
    }
    let audience_parameter = match &raw.audience_parameter {
        None => AudienceParameter::default(),
        Some(p) if raw.audience.is_none() => {
            return Err(here.error(
                p.span().start,
                format!("account `{name}` sets audience_parameter but no audience"),
                "add audience = \"<your API's identifier>\", or remove audience_parameter",
            ));
        }
        Some(p) => match p.get_ref().as_str() {
            "resource" => AudienceParameter::Resource,
            "audience" => AudienceParameter::Audience,
            other => {
                return Err(here.error(
                    p.span().start,
                    format!("unknown audience_parameter `{}`", other.escape_debug()),
                    "use \"resource\" (RFC 8707, the default) or \"audience\" (Auth0)",
                ));
            }
        },
    };
    let token_endpoint_auth_method = match &raw.token_endpoint_auth_method {
        None => None,
        Some(m) => Some(ClientAuthMethod::parse(m.get_ref()).ok_or_else(|| {
            here.error(
                m.span().start,
                format!(
                    "unknown token_endpoint_auth_method `{}`",
                    m.get_ref().escape_debug()
                ),
                "use \"none\" (a public client), \"client_secret_basic\" or \"client_secret_post\", or remove the key",
            )
        })?),
    };
    Ok(Account {
        name,
        issuer,
        client_id: raw.client_id.get_ref().clone(),
        scopes,
        audience: raw.audience.clone(),
        allow_insecure_http: raw.allow_insecure_http,
        callback_port: raw.callback_port.as_ref().map_or(0, |p| *p.get_ref()),
        validate_access_token,
        token_endpoint_auth_method,
        audience_parameter,
    })
}

fn validate_service(
    raw: &RawService,
    accounts: &[Account],
    has_gateway: bool,
    here: &Locator<'_>,
) -> Result<Service, ConfigError> {
    let name = parse_route_name(&raw.name, here)?;
    let account = parse_name(&raw.account, here)?;
    if !accounts.iter().any(|a| a.name == account) {
        let known: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
        return Err(here.error(
            raw.account.span().start,
            format!("service `{name}` names unknown account `{account}`"),
            format!("use one of: {}", known.join(", ")),
        ));
    }

    let source_text = raw
        .source
        .as_ref()
        .map_or("gateway", |s| s.get_ref().as_str());
    let source_offset = raw
        .source
        .as_ref()
        .map_or(raw.name.span().start, |s| s.span().start);
    let source = match source_text {
        "gateway" => {
            let Some(endpoint) = &raw.gateway_endpoint else {
                return Err(here.error(
                    raw.name.span().start,
                    format!("service `{name}` has no gateway_endpoint"),
                    "add gateway_endpoint = \"/api/v1/credentials/<service>\", or set source = \"access_token\" or \"manual\"",
                ));
            };
            if !endpoint.get_ref().starts_with('/') {
                return Err(here.error(
                    endpoint.span().start,
                    "gateway_endpoint must be a path starting with `/`",
                    "write it like \"/api/v1/credentials/github\"",
                ));
            }
            if !has_gateway {
                return Err(here.error(
                    source_offset,
                    format!(
                        "service `{name}` uses the Auth Gateway but there is no [gateway] table"
                    ),
                    "add [gateway] with url = \"https://...\"",
                ));
            }
            CredentialSource::Gateway {
                endpoint: endpoint.get_ref().clone(),
            }
        }
        "access_token" => CredentialSource::AccessToken,
        "manual" => CredentialSource::Manual,
        other => {
            return Err(here.error(
                source_offset,
                format!("unknown credential source `{other}`"),
                "use \"gateway\", \"access_token\" or \"manual\"",
            ));
        }
    };

    let upstream = Url::parse(raw.upstream.get_ref()).map_err(|e| {
        here.error(
            raw.upstream.span().start,
            format!(
                "upstream `{}` is not a URL: {e}",
                raw.upstream.get_ref().escape_debug()
            ),
            "write a full URL such as \"https://api.example.com\"",
        )
    })?;
    rules::upstream(&upstream, raw.allow_loopback_http)
        .map_err(|r| here.error(raw.upstream.span().start, r.message, r.fix))?;

    let mappings: &[RawMapping] = raw.credentials.as_ref().map_or(&[], |c| c.get_ref());
    let mut credentials: Vec<Mapping> = Vec::new();
    for m in mappings {
        let mapping = validate_mapping(m, &name, here)?;
        let twice = credentials
            .iter()
            .any(|c| match (&c.target, &mapping.target) {
                (InjectTarget::Header { name: a, .. }, InjectTarget::Header { name: b, .. }) => {
                    a == b
                }
                (InjectTarget::Query { param: a }, InjectTarget::Query { param: b }) => {
                    rules::query_param_key(a) == rules::query_param_key(b)
                }
                _ => false,
            });
        if twice {
            let (offset, target) = match (&m.header, &m.query_param) {
                (Some(h), _) => (h.span().start, h.get_ref()),
                (_, Some(q)) => (q.span().start, q.get_ref()),
                _ => (m.name.span().start, m.name.get_ref()),
            };
            return Err(here.error(
                offset,
                format!(
                    "service `{name}` injects `{}` twice (names are compared ignoring letter case)",
                    target.escape_debug()
                ),
                "inject each header or query parameter once: remove or rename one of the mappings",
            ));
        }
        credentials.push(mapping);
    }
    let env: BTreeMap<String, String> = raw
        .env
        .as_ref()
        .map(|e| e.get_ref().clone())
        .unwrap_or_default();
    let env_offset = raw
        .env
        .as_ref()
        .map_or(raw.name.span().start, |e| e.span().start);
    for (var, cred) in &env {
        let valid_var = !var.is_empty()
            && !var.starts_with(|c: char| c.is_ascii_digit())
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_var {
            return Err(here.error(
                env_offset,
                format!(
                    "`{}` is not a valid environment variable name",
                    var.escape_debug()
                ),
                "use letters, digits and `_`, not starting with a digit",
            ));
        }
        if cred.is_empty() {
            return Err(here.error(
                env_offset,
                format!("environment variable `{var}` maps to no credential"),
                "map it to a credential name, e.g. GITHUB_TOKEN = \"token\"",
            ));
        }
    }
    if credentials.is_empty() && env.is_empty() {
        return Err(here.error(
            raw.name.span().start,
            format!("service `{name}` injects no credential"),
            "add credentials = [{ name = \"token\", header = \"Authorization\", prefix = \"Bearer \" }] or an env table",
        ));
    }
    if matches!(source, CredentialSource::AccessToken) {
        for m in &credentials {
            if m.name != "access_token" {
                return Err(here.error(
                    raw.name.span().start,
                    format!("service `{name}` uses source = \"access_token\", whose only credential is `access_token`, not `{}`", m.name),
                    "name the credential \"access_token\"",
                ));
            }
        }
    }

    let ttl = raw
        .ttl_seconds
        .as_ref()
        .map_or(DEFAULT_TTL_SECONDS, |t| *t.get_ref());
    if ttl == 0 {
        return Err(here.error(
            raw.ttl_seconds.as_ref().map_or(0, |t| t.span().start),
            "ttl_seconds must be at least 1",
            format!("use the default {DEFAULT_TTL_SECONDS} or remove the key"),
        ));
    }

    Ok(Service {
        name,
        account,
        source,
        upstream,
        credentials,
        env,
        ttl: Duration::from_secs(ttl),
    })
}

fn validate_mapping(
    raw: &RawMapping,
    service: &Name,
    here: &Locator<'_>,
) -> Result<Mapping, ConfigError> {
    let name = raw.name.get_ref().trim();
    if name.is_empty() {
        return Err(here.error(
            raw.name.span().start,
            format!("a credential mapping of service `{service}` names no credential"),
            "set name = \"<credential name from the gateway answer>\"",
        ));
    }
    let target = match (&raw.header, &raw.query_param) {
        (Some(header), None) => {
            let name = rules::injected_header(header.get_ref())
                .map_err(|r| here.error(header.span().start, r.message, r.fix))?;
            let prefix = raw.prefix.clone().unwrap_or_default();
            rules::header_prefix(&prefix)
                .map_err(|r| here.error(header.span().start, r.message, r.fix))?;
            InjectTarget::Header { name, prefix }
        }
        (None, Some(param)) => {
            rules::query_param(param.get_ref())
                .map_err(|r| here.error(param.span().start, r.message, r.fix))?;
            InjectTarget::Query {
                param: param.get_ref().clone(),
            }
        }
        _ => {
            return Err(here.error(
                raw.name.span().start,
                format!("credential `{name}` of service `{service}` needs exactly one of header or query_param"),
                "add header = \"...\" (with an optional prefix) or query_param = \"...\"",
            ));
        }
    };
    Ok(Mapping {
        name: name.to_owned(),
        target,
    })
}

fn parse_name(raw: &toml::Spanned<String>, here: &Locator<'_>) -> Result<Name, ConfigError> {
    Name::parse(raw.get_ref()).map_err(|message| {
        here.error(
            raw.span().start,
            message,
            "rename it, e.g. \"work\" or \"github\"",
        )
    })
}

fn parse_route_name(raw: &toml::Spanned<String>, here: &Locator<'_>) -> Result<Name, ConfigError> {
    rules::route_name(raw.get_ref()).map_err(|r| here.error(raw.span().start, r.message, r.fix))?;
    Ok(Name(raw.get_ref().clone()))
}

fn parse_url(
    raw: &toml::Spanned<String>,
    here: &Locator<'_>,
    allow_loopback_http: bool,
    what: &str,
) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.get_ref()).map_err(|e| {
        here.error(
            raw.span().start,
            format!(
                "{what} `{}` is not a URL: {e}",
                raw.get_ref().escape_debug()
            ),
            "write a full URL such as \"https://idp.example.com\"",
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(here.error(
            raw.span().start,
            format!("{what} contains a user name or password"),
            "remove the credentials from the URL; secrets never go in this file",
        ));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_loopback_http && is_loopback_host(&url) => Ok(url),
        "http" if is_loopback_host(&url) => Err(here.error(
            raw.span().start,
            format!("{what} uses plain http://"),
            "use https://, or for a local test identity provider/gateway add allow_insecure_http = true",
        )),
        _ => Err(here.error(
            raw.span().start,
            format!("{what} `{url}` must use https://"),
            "use an https:// URL",
        )),
    }
}

pub use rules::is_loopback_host;

#[cfg(test)]
mod tests;
