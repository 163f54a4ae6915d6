//! A first configuration without a text editor (`latchkey config init`, the window's *Set up*):
//! built from an issuer and a client id after the provider answered discovery, or imported from
//! a file or an `https` URL an administrator handed out. Either way the text is validated by the
//! same rules as the file ([`Config::parse`]) and shown as a [`Draft`] before
//! [`write_config`] puts it in place atomically (mode 0600), never over an existing file unless
//! forced (then with a timestamped backup).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use toml_edit::{DocumentMut, Item, Table, value};
use url::Url;

use super::{CONFIG_VERSION, Config, ConfigError};
use crate::Code;
use crate::login::preflight::{self, PreflightError, Verdict};
use crate::login::{self, ClientAuth, LoginError, Provider, ProviderSettings};

/// How long one request to the provider or to an import URL may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest configuration accepted from a file or a URL.
pub const MAX_IMPORT_BYTES: usize = 256 * 1024;

/// The account name a configuration built by [`connect`] uses.
pub const DEFAULT_ACCOUNT: &str = "work";

/// What the person typed in *Connect to your organisation* (or passed to `config init`).
#[derive(Debug, Clone, Default)]
pub struct ConnectRequest {
    /// The OIDC issuer URL.
    pub issuer: String,
    /// The OAuth client id registered for Latchkey.
    pub client_id: String,
    /// The Auth Gateway's URL, when the organisation has one.
    pub gateway_url: Option<String>,
    /// The API the access token is for (`audience`), when the provider needs one.
    pub audience: Option<String>,
    /// Allows plain `http://` on loopback (the sandbox, local test providers), as
    /// `allow_insecure_http` does in the file; never off loopback.
    pub allow_insecure_http: bool,
}

/// A configuration ready to be written, and what it holds, for the person to confirm.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Draft {
    /// The TOML text that [`write_config`] will write.
    pub toml: String,
    /// What the text configures.
    pub summary: Summary,
    /// What discovery found, for a configuration built by [`connect`].
    pub provider: Option<ProviderPreview>,
}

/// The parts of a configuration a person recognises.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Summary {
    /// Accounts: name, issuer and client id.
    pub accounts: Vec<AccountSummary>,
    /// The Auth Gateway URL, if any.
    pub gateway_url: Option<String>,
    /// Services: name, credential source and upstream.
    pub services: Vec<ServiceSummary>,
    /// Names of remote MCP servers.
    pub servers: Vec<String>,
}

/// One account of a [`Summary`].
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct AccountSummary {
    /// Its name.
    pub name: String,
    /// Its issuer.
    pub issuer: String,
    /// Its client id.
    pub client_id: String,
}

/// One service of a [`Summary`].
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ServiceSummary {
    /// Its name (the proxy route).
    pub name: String,
    /// `gateway`, `access_token` or `manual`.
    #[cfg_attr(
        feature = "ts",
        ts(type = "\"gateway\" | \"access_token\" | \"manual\"")
    )]
    pub source: String,
    /// Where requests go.
    pub upstream: String,
}

/// What the provider's discovery document says, checked.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ProviderPreview {
    /// The issuer, as published (equal to the one typed).
    pub issuer: String,
    /// Where the browser signs in.
    pub authorization_endpoint: String,
    /// Where tokens are exchanged.
    pub token_endpoint: String,
    /// The signing keys.
    pub jwks_uri: String,
    /// RFC 7009 revocation, if advertised (logout revokes there).
    pub revocation_endpoint: Option<String>,
    /// The scopes Latchkey will ask for.
    pub scopes: Vec<String>,
    /// PKCE methods the provider advertises (empty when it does not say).
    pub pkce_methods: Vec<String>,
    /// Whether the provider accepted the client id and a loopback redirect URI when asked
    /// (`accepted`), or did not say either way (`inconclusive`).
    #[cfg_attr(feature = "ts", ts(type = "\"accepted\" | \"inconclusive\""))]
    pub client_check: &'static str,
}

/// Why a setup step failed. Nothing is written when one occurs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// A field the person typed is not acceptable.
    #[error("{message}")]
    Field {
        /// `issuer`, `client_id`, `gateway_url`, `audience` or `source`.
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The provider's discovery failed (unreachable, no metadata, another issuer, no PKCE).
    #[error(transparent)]
    Discovery(LoginError),
    /// The provider refuses the client id or the loopback redirect URI.
    #[error(transparent)]
    Client(PreflightError),
    /// The configuration text is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An import URL could not be read.
    #[error("cannot fetch {url}: {reason}")]
    Fetch {
        /// The URL (no query).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The file exists and overwriting was not asked for.
    #[error(
        "{} already exists; pass --force to replace it (a timestamped backup is kept), or edit it",
        .path.display()
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl InitError {
    /// A stable code for the window, the CLI and the tests.
    pub fn code(&self) -> Code {
        match self {
            Self::Field { .. } => Code::InvalidField,
            Self::Discovery(LoginError::Discovery { reason, .. })
                if reason.starts_with("it says its issuer is") =>
            {
                Code::IssuerMismatch
            }
            Self::Discovery(e) => e.code(),
            Self::Client(e) => e.code(),
            Self::Config(e) => e.code(),
            Self::Fetch { .. } => Code::ImportUnreachable,
            Self::Exists { .. } => Code::ConfigExists,
            Self::Io { .. } => Code::ConfigUnwritable,
        }
    }

    /// The form field the error is about, when it is about one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Field { field, .. } => Some(field),
            Self::Discovery(_) => Some("issuer"),
            Self::Client(_) => Some("client_id"),
            _ => None,
        }
    }
}

/// Builds a configuration for one account from `request`, after the provider answered
/// discovery for it and (when it says either way) accepted its client id with a loopback
/// redirect URI. `http` must not follow redirects.
pub async fn connect(http: &reqwest::Client, request: &ConnectRequest) -> Result<Draft, InitError> {
    let issuer = check_url("issuer", &request.issuer, request.allow_insecure_http)?;
    let client_id = request.client_id.trim();
    if client_id.is_empty() {
        return Err(InitError::Field {
            field: "client_id",
            message: "enter the OAuth client id your identity provider registered for Latchkey"
                .to_owned(),
        });
    }
    let gateway = match request.gateway_url.as_deref().map(str::trim) {
        Some(g) if !g.is_empty() => Some(check_url("gateway_url", g, request.allow_insecure_http)?),
        _ => None,
    };
    let audience = request
        .audience
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());

    let mut doc = DocumentMut::new();
    doc.insert("version", value(i64::from(CONFIG_VERSION)));
    let mut account = Table::new();
    account.insert("name", value(DEFAULT_ACCOUNT));
    account.insert("issuer", value(issuer.as_str().trim_end_matches('/')));
    account.insert("client_id", value(client_id));
    if let Some(aud) = audience {
        account.insert("audience", value(aud));
    }
    if request.allow_insecure_http && issuer.scheme() == "http" {
        account.insert("allow_insecure_http", value(true));
    }
    let mut accounts = toml_edit::ArrayOfTables::new();
    accounts.push(account);
    doc.insert("accounts", Item::ArrayOfTables(accounts));
    if let Some(url) = &gateway {
        let mut table = Table::new();
        table.insert("url", value(url.as_str().trim_end_matches('/')));
        if request.allow_insecure_http && url.scheme() == "http" {
            table.insert("allow_insecure_http", value(true));
        }
        doc.insert("gateway", Item::Table(table));
    }
    let toml = doc.to_string();
    let config = Config::parse(&toml, Path::new("the new configuration"))?;
    let account = config.accounts.first().ok_or_else(|| InitError::Field {
        field: "issuer",
        message: "the configuration has no account".to_owned(),
    })?;

    let settings = ProviderSettings {
        issuer: account.issuer.clone(),
        client_id: account.client_id.clone(),
        scopes: account.scopes.clone(),
        audience: account.audience.clone(),
        validate_access_token: account.validate_access_token,
        auth_method: account.token_endpoint_auth_method,
        audience_parameter: account.audience_parameter,
        allow_insecure_http: account.allow_insecure_http,
        timeout: SETUP_TIMEOUT,
    };
    let provider = Provider::discover(http.clone(), settings)
        .await
        .map_err(|e| match e {
            LoginError::InsecureIssuer { .. } => InitError::Field {
                field: "issuer",
                message: e.to_string(),
            },
            e => InitError::Discovery(e),
        })?;
    // The same question a login asks first: does the provider take this client id and a
    // loopback redirect URI? The attempt is dropped (its listener closes) right after.
    let attempt = login::start(&provider, 0, ClientAuth::public())
        .await
        .map_err(InitError::Discovery)?;
    let verdict = preflight::check(
        http,
        attempt.authorize_url(),
        false,
        preflight::PREFLIGHT_TIMEOUT,
    )
    .await
    .map_err(InitError::Client)?;
    drop(attempt);

    let metadata = provider.metadata();
    let preview = ProviderPreview {
        issuer: metadata.issuer.clone(),
        authorization_endpoint: metadata.authorization_endpoint.to_string(),
        token_endpoint: metadata.token_endpoint.to_string(),
        jwks_uri: metadata.jwks_uri.to_string(),
        revocation_endpoint: metadata.revocation_endpoint.as_ref().map(Url::to_string),
        scopes: account.scopes.clone(),
        pkce_methods: metadata
            .code_challenge_methods_supported
            .clone()
            .unwrap_or_default(),
        client_check: match verdict {
            Verdict::Accepted => "accepted",
            Verdict::Inconclusive => "inconclusive",
        },
    };
    Ok(Draft {
        summary: summarise(&config),
        toml,
        provider: Some(preview),
    })
}

/// Reads a configuration an administrator handed out, from a file path or an `https` URL (at
/// most [`MAX_IMPORT_BYTES`], within [`SETUP_TIMEOUT`]), and validates it like `config check`.
/// `allow_insecure_http` lets a loopback `http://` URL through (tests).
pub async fn import(
    http: &reqwest::Client,
    source: &str,
    allow_insecure_http: bool,
) -> Result<Draft, InitError> {
    let source = source.trim();
    if source.is_empty() {
        return Err(InitError::Field {
            field: "source",
            message: "enter a file path or an https:// URL".to_owned(),
        });
    }
    let text = if source.starts_with("https://") || source.starts_with("http://") {
        let url = check_url("source", source, allow_insecure_http)?;
        fetch(http, &url).await?
    } else {
        read_file(Path::new(source))?
    };
    import_text(&text, source)
}

/// Validates pasted configuration text; `origin` names it in messages.
pub fn import_text(text: &str, origin: &str) -> Result<Draft, InitError> {
    if text.len() > MAX_IMPORT_BYTES {
        return Err(too_large(origin));
    }
    let config = Config::parse(text, Path::new(origin))?;
    Ok(Draft {
        summary: summarise(&config),
        toml: text.to_owned(),
        provider: None,
    })
}

/// Where [`write_config`] put the file, and where the previous one went.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Written {
    /// The configuration file.
    pub path: PathBuf,
    /// The previous file, when one was replaced.
    pub backup: Option<PathBuf>,
}

/// Validates `text` and writes it to `path` atomically (a temporary file in the same directory,
/// mode 0600, then a rename). An existing file is refused unless `force`, and then kept as
/// `<name>.<UTC timestamp>.bak` beside it.
pub fn write_config(path: &Path, text: &str, force: bool) -> Result<Written, InitError> {
    Config::parse(text, path)?;
    let io = |source| InitError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let exists = path.try_exists().map_err(io)?;
    if exists && !force {
        return Err(InitError::Exists {
            path: path.to_owned(),
        });
    }
    let name = path.file_name().map_or_else(
        || "config.toml".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let temp = dir.join(format!(".{name}.{}.init.tmp", std::process::id()));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io(e));
    }
    let backup = if exists {
        let backup = dir.join(format!("{name}.{}.bak", timestamp()));
        if let Err(e) = std::fs::copy(path, &backup) {
            let _ = std::fs::remove_file(&temp);
            return Err(io(e));
        }
        Some(backup)
    } else {
        None
    };
    std::fs::rename(&temp, path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        io(e)
    })?;
    Ok(Written {
        path: path.to_owned(),
        backup,
    })
}

/// A client for setup requests: no redirects followed, a timeout on each request.
pub fn http_client() -> Result<reqwest::Client, InitError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(SETUP_TIMEOUT)
        .build()
        .map_err(|e| InitError::Fetch {
            url: String::new(),
            reason: e.to_string(),
        })
}

fn summarise(config: &Config) -> Summary {
    Summary {
        accounts: config
            .accounts
            .iter()
            .map(|a| AccountSummary {
                name: a.name.to_string(),
                issuer: a.issuer.to_string(),
                client_id: a.client_id.clone(),
            })
            .collect(),
        gateway_url: config.gateway.as_ref().map(|g| g.url.to_string()),
        services: config
            .services
            .iter()
            .map(|s| ServiceSummary {
                name: s.name.to_string(),
                source: s.source.as_str().to_owned(),
                upstream: s.upstream.to_string(),
            })
            .collect(),
        servers: config.servers.iter().map(|s| s.name.to_string()).collect(),
    }
}

/// Parses a URL a person typed: `https`, or `http` on loopback with the explicit allowance.
fn check_url(field: &'static str, text: &str, allow_insecure_http: bool) -> Result<Url, InitError> {
    let bad = |message: String| InitError::Field { field, message };
    let text = text.trim();
    if text.is_empty() {
        return Err(bad(format!("enter the {} (an https:// URL)", label(field))));
    }
    let url = Url::parse(text).map_err(|e| {
        bad(format!(
            "`{}` is not a URL ({e}); enter the {} as https://host/...",
            text.escape_debug(),
            label(field)
        ))
    })?;
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return Err(bad(format!(
            "`{}` has no host; enter the {} as https://host/...",
            text.escape_debug(),
            label(field)
        )));
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure_http && super::is_loopback_host(&url) => {}
        "http" if super::is_loopback_host(&url) => {
            return Err(bad(format!(
                "the {} must use https; plain http is allowed only on this machine's loopback with `allow_insecure_http` (--allow-insecure-http, or *Allow plain http on this machine*)",
                label(field)
            )));
        }
        "http" => {
            return Err(bad(format!(
                "the {} must use https (plain http is only allowed on loopback addresses)",
                label(field)
            )));
        }
        other => {
            return Err(bad(format!(
                "the {} must be an https:// URL, not `{other}:`",
                label(field)
            )));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(format!(
            "the {} must not have a query or a fragment",
            label(field)
        )));
    }
    Ok(url)
}

fn label(field: &str) -> &'static str {
    match field {
        "issuer" => "issuer URL",
        "gateway_url" => "Auth Gateway URL",
        "source" => "configuration URL",
        _ => "URL",
    }
}

async fn fetch(http: &reqwest::Client, url: &Url) -> Result<String, InitError> {
    use futures_util::StreamExt;
    let shown = {
        let mut u = url.clone();
        u.set_query(None);
        u.to_string()
    };
    let failed = |reason: String| InitError::Fetch {
        url: shown.clone(),
        reason,
    };
    let answer = http
        .get(url.clone())
        .timeout(SETUP_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            failed(if e.is_timeout() {
                format!("no answer within {} s", SETUP_TIMEOUT.as_secs())
            } else {
                "unreachable; check the URL and your network".to_owned()
            })
        })?;
    let status = answer.status();
    if status.is_redirection() {
        let to = answer
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("elsewhere")
            .chars()
            .take(200)
            .collect::<String>();
        return Err(failed(format!(
            "it redirects ({status}) to {to}; use that URL directly"
        )));
    }
    if !status.is_success() {
        return Err(failed(format!("it answered {status}")));
    }
    if answer
        .content_length()
        .is_some_and(|n| n > MAX_IMPORT_BYTES as u64)
    {
        return Err(too_large(&shown));
    }
    let mut body = Vec::new();
    let mut stream = answer.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| failed("the answer broke off".to_owned()))?;
        if body.len() + chunk.len() > MAX_IMPORT_BYTES {
            return Err(too_large(&shown));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| failed("the answer is not UTF-8 text".to_owned()))
}

fn read_file(path: &Path) -> Result<String, InitError> {
    let io = |source| InitError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(|e| InitError::Field {
        field: "source",
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    if meta.len() > MAX_IMPORT_BYTES as u64 {
        return Err(too_large(&path.display().to_string()));
    }
    std::fs::read_to_string(path).map_err(io)
}

fn too_large(origin: &str) -> InitError {
    InitError::Field {
        field: "source",
        message: format!(
            "{origin} is larger than {} KiB; a Latchkey configuration is a few KiB — check that it is the right file",
            MAX_IMPORT_BYTES / 1024
        ),
    }
}

/// `YYYYMMDDTHHMMSSZ`, for backup names.
fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "version = 1\n[[accounts]]\nname = \"work\"\nissuer = \"https://idp.example.com\"\nclient_id = \"latchkey\"\n";

    #[test]
    fn urls_must_be_https_except_loopback_with_the_allowance() {
        let e = check_url("issuer", "http://idp.example.com", true).expect_err("off loopback");
        assert!(e.to_string().contains("must use https"), "{e}");
        let e = check_url("issuer", "http://127.0.0.1:3000", false).expect_err("no allowance");
        assert!(e.to_string().contains("allow_insecure_http"), "{e}");
        assert!(check_url("issuer", "http://127.0.0.1:3000", true).is_ok());
        assert!(check_url("issuer", "https://idp.example.com/realms/x", false).is_ok());
        let e = check_url("issuer", "idp.example.com", false).expect_err("no scheme");
        assert_eq!(e.field(), Some("issuer"));
    }

    #[test]
    fn write_refuses_an_existing_file_and_keeps_a_backup_when_forced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("config.toml");
        let first = write_config(&path, VALID, false).expect("first write");
        assert!(first.backup.is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the file is private");
        }
        let second = VALID.replace("latchkey\"", "other\"");
        let e = write_config(&path, &second, false).expect_err("exists");
        assert_eq!(e.code(), crate::Code::ConfigExists);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            VALID,
            "file unchanged"
        );
        let forced = write_config(&path, &second, true).expect("forced");
        let backup = forced.backup.expect("a backup");
        assert_eq!(std::fs::read_to_string(backup).expect("backup"), VALID);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), second);
    }

    #[test]
    fn invalid_text_is_refused_with_its_line_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        let e = write_config(&path, "version = 1\n[[accounts]]\nname = \"w\"\nissuer = \"http://idp.example.com\"\nclient_id = \"x\"\n", false)
            .expect_err("http issuer");
        assert_eq!(e.code(), crate::Code::ConfigInvalid);
        assert!(e.to_string().contains(":4:"), "names the line: {e}");
        assert!(!path.exists(), "nothing written");
        let e = import_text("version = 1\nbogus = 2\n", "pasted").expect_err("unknown key");
        assert!(e.to_string().contains("pasted:2"), "{e}");
    }

    #[test]
    fn imported_text_is_summarised() {
        let draft = import_text(VALID, "pasted").expect("valid");
        assert_eq!(draft.summary.accounts[0].client_id, "latchkey");
        assert_eq!(draft.toml, VALID);
    }
}
