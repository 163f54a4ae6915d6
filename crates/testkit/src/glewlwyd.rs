//! A second identity provider of another make: Glewlwyd 2.7 (Debian's `glewlwyd`, an OpenID
//! Connect server written in C), started on a free loopback port from a fresh scratch directory
//! with its own configuration, SQLite database (from the schema the package ships), RSA signing
//! key, user `alice` and public native client `latchkey`; killed and removed on drop.
//!
//! What this peer shows that the sandbox's `oidc-provider` does not, configured to match what
//! Okta, Auth0, Entra ID, Keycloak and Google do:
//! - The issuer has a path (`http://127.0.0.1:{port}/api/oidc`), as Okta's `/oauth2/default`,
//!   Keycloak's `/realms/{realm}` and Entra's `/{tenant}/v2.0` do.
//! - Access tokens are RFC 9068 JWTs (`typ: at+jwt`) that are not addressed to the client:
//!   `aud` is the granted scope list as one string (Keycloak: `account`; Okta: `api://default`),
//!   with `client_id` and no `azp`. Only the ID token has `aud` = client id and an `azp`.
//! - `sub` is an opaque random identifier, not the login name (as Okta, Entra, Google).
//! - Refresh tokens rotate on every use, with reuse detection that disables the whole chain when
//!   an old one is replayed (Auth0 and Okta rotation).
//! - A refresh answer has no new ID token and carries a non-standard `iat`; `token_type` is a
//!   lowercase `bearer`.
//! - PKCE S256 is required (`require_code_challenge`), as Okta requires for native apps.
//! - Discovery lists only `client_secret_basic`/`client_secret_post` as token endpoint auth
//!   methods although public clients work (as Google's does), and `grant_types_supported` omits
//!   `refresh_token` although refresh works.
//! - Redirect URIs match exactly, port included: RFC 8252 §7.3's "any port" is not honoured, so
//!   the client is registered with the one callback port the test's Latchkey listens on.
//! - RFC 7009 revocation is advertised but needs client authentication
//!   (`revocation_endpoint_auth_methods_supported: ["client_secret_basic"]`): a public client's
//!   request is refused with a bare 401.
//! - A dead refresh token is refused with a 400 and an empty body, not `invalid_grant` JSON.
//! - Sign-in is a JavaScript app over a REST API: the authorization endpoint always sends the
//!   browser to `login.html`; the app posts the password to `/api/auth/`, records consent with
//!   `PUT /api/auth/grant/{client}/`, and then returns to the authorization URL with `g_continue`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{StatusCode, redirect};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha512};
use tokio::process::{Child, Command};
use url::Url;

/// The Debian package that provides everything this module runs.
const PACKAGE_HINT: &str =
    "run scripts/setup (it installs the Debian packages glewlwyd, sqlite3 and openssl)";
/// The SQLite schema and initial data the package ships (used by its own dbconfig set-up).
const SCHEMA: &str = "/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3";
/// Where the package puts its user, client, scheme and plugin modules.
const MODULES: &str = "/usr/lib/glewlwyd";
/// The package's sign-in web app (`login.html` and its assets).
const WEBAPP: &str = "/usr/share/glewlwyd/webapp/";
/// The administrator the shipped schema creates, with its documented default password.
const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "password";
/// Name of the OpenID Connect plugin instance; its endpoints live under `/api/{PLUGIN}`.
const PLUGIN: &str = "oidc";
const READY_DEADLINE: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 3;
const MAX_HOPS: usize = 20;

/// Knobs of the Glewlwyd provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlewlwydOptions {
    /// The port of the client's registered redirect URI
    /// `http://127.0.0.1:{redirect_port}/oauth/callback`; Glewlwyd matches it exactly.
    pub redirect_port: u16,
    /// Lifetime of access tokens, in seconds.
    pub access_ttl: u64,
    /// Lifetime of refresh tokens, in seconds.
    pub refresh_ttl: u64,
}

impl GlewlwydOptions {
    /// Default lifetimes (one hour, one day) for a client redirecting to `redirect_port`.
    pub fn for_redirect_port(redirect_port: u16) -> Self {
        Self {
            redirect_port,
            access_ttl: 3600,
            refresh_ttl: 86400,
        }
    }
}

/// One refresh token as the provider records it (its owner's view at `GET /api/oidc/token/`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RefreshTokenRecord {
    /// `{SHA512}` and the unpadded base64url SHA-512 of the token.
    pub token_hash: String,
    /// The client it was issued to.
    pub client_id: String,
    /// Whether the provider still accepts it.
    pub enabled: bool,
    /// When it was issued (unix seconds).
    pub issued_at: i64,
}

impl RefreshTokenRecord {
    /// Whether this record is the one of `token`.
    pub fn is_for(&self, token: &str) -> bool {
        self.token_hash == token_hash(token)
    }
}

/// How Glewlwyd names a token in its records (with `hash_algorithm = "SHA512"`).
fn token_hash(token: &str) -> String {
    format!(
        "{{SHA512}}{}",
        URL_SAFE_NO_PAD.encode(Sha512::digest(token.as_bytes()))
    )
}

/// A running Glewlwyd with the user [`Glewlwyd::USER`] / [`Glewlwyd::PASSWORD`] and the public
/// client [`Glewlwyd::CLIENT_ID`]. Killed, and its scratch directory removed, on drop.
pub struct Glewlwyd {
    base: Url,
    issuer: String,
    dir: PathBuf,
    child: Child,
}

impl Drop for Glewlwyd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Glewlwyd {
    /// The user's login name.
    pub const USER: &'static str = "alice";
    /// The user's password.
    pub const PASSWORD: &'static str = "alice-password";
    /// The user's display name (`name` claim).
    pub const NAME: &'static str = "Alice Example";
    /// The user's e-mail address (`email` claim).
    pub const EMAIL: &'static str = "alice@example.test";
    /// The public native client (no secret, PKCE S256, code and refresh grants).
    pub const CLIENT_ID: &'static str = "latchkey";

    /// Start Glewlwyd on a free loopback port and configure it through its admin API. Fails with
    /// "run scripts/setup" when the package is not installed.
    pub async fn start(options: GlewlwydOptions) -> anyhow::Result<Glewlwyd> {
        for path in [SCHEMA, MODULES, WEBAPP] {
            if !Path::new(path).exists() {
                bail!("{path} is missing: {PACKAGE_HINT}");
            }
        }
        for program in ["glewlwyd", "sqlite3", "openssl"] {
            if !on_path(program) {
                bail!("`{program}` is not on PATH: {PACKAGE_HINT}");
            }
        }
        let dir = scratch_dir()?;
        let started = async {
            let (key, public) = signing_key(&dir).await?;
            create_database(&dir).await?;
            let mut failures = Vec::new();
            for _ in 0..START_ATTEMPTS {
                // The port is free now; Glewlwyd cannot be given port 0, so another process may
                // take it first: then Glewlwyd exits and the next attempt picks another.
                let port = free_port(options.redirect_port)?;
                match launch(&dir, port).await {
                    Ok(child) => {
                        let base = Url::parse(&format!("http://127.0.0.1:{port}/"))
                            .context("the base URL")?;
                        let issuer = format!("http://127.0.0.1:{port}/api/{PLUGIN}");
                        let idp = Glewlwyd {
                            base,
                            issuer,
                            dir: dir.clone(),
                            child,
                        };
                        idp.configure(&options, &key, &public).await?;
                        return Ok(idp);
                    }
                    Err(e) => failures.push(format!("{e:#}")),
                }
            }
            bail!("glewlwyd did not start: {}", failures.join("; "))
        }
        .await;
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    /// The issuer, exactly as the provider names itself (`http://127.0.0.1:{port}/api/oidc`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Freezes the provider (`SIGSTOP`): its port still accepts connections, nothing answers
    /// until [`Glewlwyd::resume`].
    pub fn pause(&self) -> anyhow::Result<()> {
        crate::sandbox::send_signal(&self.child, "STOP")
    }

    /// Thaws a [`Glewlwyd::pause`]d provider (`SIGCONT`): it reads what arrived meanwhile.
    pub fn resume(&self) -> anyhow::Result<()> {
        crate::sandbox::send_signal(&self.child, "CONT")
    }

    /// The client's registered redirect URI for `port`.
    pub fn redirect_uri(port: u16) -> String {
        format!("http://127.0.0.1:{port}/oauth/callback")
    }

    fn api(&self, path: &str) -> anyhow::Result<Url> {
        self.base
            .join(&format!("api/{path}"))
            .with_context(|| format!("the API URL of {path}"))
    }

    /// Creates the scopes, the user, the client and the OpenID Connect plugin instance, as an
    /// administrator would in Glewlwyd's admin app, then waits for discovery to answer.
    async fn configure(
        &self,
        options: &GlewlwydOptions,
        key: &str,
        public: &str,
    ) -> anyhow::Result<()> {
        let admin = browser()?;
        sign_in_api(&admin, &self.api("auth/")?, ADMIN_USER, ADMIN_PASSWORD)
            .await
            .context("sign in as Glewlwyd's administrator")?;
        // `openid` comes with the schema; the others are what Latchkey asks for by default.
        for scope in ["profile", "email", "offline_access"] {
            admin_call(
                admin.post(self.api("scope/")?).json(&json!({
                    "name": scope,
                    "display_name": scope,
                    "description": format!("the {scope} scope"),
                    "password_required": true,
                    "password_max_age": 0,
                    "scheme": {},
                })),
                &format!("create the scope {scope}"),
            )
            .await?;
        }
        admin_call(
            admin.post(self.api("user/")?).json(&json!({
                "username": Self::USER,
                "password": Self::PASSWORD,
                "name": Self::NAME,
                "email": Self::EMAIL,
                "enabled": true,
                // `g_profile` lets the user record consent and see their own tokens.
                "scope": ["openid", "profile", "email", "offline_access", "g_profile"],
            })),
            "create the user",
        )
        .await?;
        admin_call(
            admin.post(self.api("client/")?).json(&json!({
                "client_id": Self::CLIENT_ID,
                "name": "Latchkey",
                "enabled": true,
                "confidential": false,
                "redirect_uri": [Self::redirect_uri(options.redirect_port)],
                "authorization_type": ["code", "refresh_token"],
                "scope": [],
            })),
            "create the client",
        )
        .await?;
        admin_call(
            admin
                .post(self.api("mod/plugin/")?)
                .json(&plugin(&self.issuer, options, key, public)),
            "create the OpenID Connect plugin",
        )
        .await?;
        let discovery = format!("{}/.well-known/openid-configuration", self.issuer);
        let answer = http()?
            .get(&discovery)
            .send()
            .await
            .with_context(|| format!("GET {discovery}"))?;
        if answer.status() != StatusCode::OK {
            bail!(
                "glewlwyd's discovery answered {}; log: {}",
                answer.status(),
                log_tail(&self.dir)
            );
        }
        Ok(())
    }

    /// Drive Glewlwyd's sign-in from `authorize_url` as its login app does in a browser (the same
    /// HTTP calls, with a cookie jar), consent to the requested scopes, then GET the loopback
    /// callback so the waiting Latchkey listener receives the code.
    pub async fn sign_in(
        &self,
        authorize_url: &Url,
        user: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let browser = browser()?;
        let login_page = match follow(&browser, authorize_url.clone()).await? {
            Landing::Callback(url) => return deliver_callback(&browser, &url).await,
            Landing::Page(url) => url,
        };
        if !login_page.path().ends_with("/login.html") {
            bail!(
                "the authorization endpoint led to {} instead of the login page",
                login_page.path()
            );
        }
        let param = |name: &str| {
            login_page
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .with_context(|| format!("the login page's URL has no `{name}`"))
        };
        let client_id = param("client_id")?;
        let scope = param("scope")?;
        let callback = param("callback_url")?;
        // The password form.
        sign_in_api(&browser, &self.api("auth/")?, user, password).await?;
        // The consent screen: read what is granted, then grant every requested scope.
        let grant_path = format!("auth/grant/{client_id}/");
        let granted = browser
            .get(self.api(&grant_path)?.join(&scope.replace(' ', "%20"))?)
            .send()
            .await
            .context("GET the granted scopes")?;
        if !granted.status().is_success() {
            bail!("the consent screen's data answered {}", granted.status());
        }
        let answer = browser
            .put(self.api(&grant_path)?)
            .json(&json!({ "scope": scope }))
            .send()
            .await
            .context("PUT the consent")?;
        if !answer.status().is_success() {
            bail!("recording the consent answered {}", answer.status());
        }
        // "Continue": back to the authorization endpoint, which now redirects to the client.
        let mut resume = Url::parse(&callback).context("the login page's callback_url")?;
        resume.query_pairs_mut().append_key_only("g_continue");
        match follow(&browser, resume).await? {
            Landing::Callback(url) => deliver_callback(&browser, &url).await,
            Landing::Page(url) => bail!(
                "after sign-in and consent the provider showed {} instead of redirecting back",
                url.path()
            ),
        }
    }

    /// The provider's `userinfo` answer for `access_token`, or `None` when it refuses the token.
    pub async fn userinfo(&self, access_token: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let answer = http()?
            .get(self.api(&format!("{PLUGIN}/userinfo"))?)
            .bearer_auth(access_token)
            .send()
            .await
            .context("GET userinfo")?;
        match answer.status() {
            StatusCode::OK => Ok(Some(answer.json().await.context("decode userinfo")?)),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Ok(None),
            other => bail!("userinfo answered {other}"),
        }
    }

    /// The refresh tokens the provider has issued to `user`, as `user` sees them in their profile.
    pub async fn refresh_tokens(
        &self,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Vec<RefreshTokenRecord>> {
        let browser = browser()?;
        sign_in_api(&browser, &self.api("auth/")?, user, password).await?;
        let answer = browser
            .get(self.api(&format!("{PLUGIN}/token/"))?)
            .send()
            .await
            .context("GET the user's refresh tokens")?;
        if !answer.status().is_success() {
            bail!("the user's token list answered {}", answer.status());
        }
        answer.json().await.context("decode the user's token list")
    }

    /// Revoke `token` as its owner does on their Glewlwyd profile page
    /// (`DELETE /api/oidc/token/{hash}`): the provider then refuses it.
    pub async fn revoke_as_user(
        &self,
        user: &str,
        password: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        let browser = browser()?;
        sign_in_api(&browser, &self.api("auth/")?, user, password).await?;
        let mut url = self.api(&format!("{PLUGIN}/token/"))?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("the API URL cannot have a path"))?
            .pop_if_empty()
            .push(&token_hash(token));
        let answer = browser
            .delete(url)
            .send()
            .await
            .context("DELETE the refresh token")?;
        if !answer.status().is_success() {
            bail!("revoking the refresh token answered {}", answer.status());
        }
        Ok(())
    }
}

/// The OpenID Connect plugin's parameters (names as in Glewlwyd's OIDC.md).
fn plugin(issuer: &str, options: &GlewlwydOptions, key: &str, public: &str) -> serde_json::Value {
    json!({
        "module": "oidc",
        "name": PLUGIN,
        "display_name": "OpenID Connect",
        "enabled": true,
        "parameters": {
            "iss": issuer,
            "jwt-type": "rsa",
            "jwt-key-size": "256",
            "key": key,
            "cert": public,
            "access-token-duration": options.access_ttl,
            "refresh-token-duration": options.refresh_ttl,
            "code-duration": 600,
            "refresh-token-rolling": true,
            "refresh-token-one-use": "always",
            "allow-non-oidc": false,
            "auth-type-code-enabled": true,
            "auth-type-refresh-enabled": true,
            "auth-type-token-enabled": false,
            "auth-type-password-enabled": false,
            "auth-type-client-enabled": false,
            "auth-type-device-enabled": false,
            "auth-type-none-enabled": false,
            "auth-type-code-revoke-replayed": true,
            "pkce-allowed": true,
            "pkce-method-plain-allowed": false,
            "pkce-required": true,
            "introspection-revocation-allowed": true,
            "introspection-revocation-allow-target-client": true,
            "name-claim": "on-demand",
            "name-claim-scope": ["profile"],
            "email-claim": "on-demand",
            "email-claim-scope": ["email"],
            "allowed-scope": ["openid", "profile", "email", "offline_access"],
            "subject-type": "public",
            "session-management-allowed": false,
            "register-client-allowed": false,
            "scope": [],
            "claims": [],
        }
    })
}

/// Whether an executable `program` is on `PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// A private scratch directory for one provider's configuration, key, database and log.
fn scratch_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let bytes: [u8; 8] = rand::random();
    let dir = std::env::temp_dir().join(format!("latchkey-glewlwyd-{}", hex::encode(bytes)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// A fresh RSA key pair (PEM) for token signatures, from `openssl`, as Glewlwyd's OIDC.md says.
async fn signing_key(dir: &Path) -> anyhow::Result<(String, String)> {
    let key = dir.join("signing.key");
    let public = dir.join("signing.pub");
    run(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&key),
        "openssl genpkey",
    )
    .await?;
    run(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public),
        "openssl pkey",
    )
    .await?;
    Ok((
        std::fs::read_to_string(&key).context("read the signing key")?,
        std::fs::read_to_string(&public).context("read the public key")?,
    ))
}

/// The database, from the schema and initial data the package ships (the admin user, the
/// `openid` scope, the database user and client backends).
async fn create_database(dir: &Path) -> anyhow::Result<()> {
    let schema = std::fs::File::open(SCHEMA).with_context(|| format!("open {SCHEMA}"))?;
    let mut command = Command::new("sqlite3");
    command.arg(dir.join("glewlwyd.db")).stdin(schema);
    run(&mut command, "sqlite3 (create the database)").await
}

async fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .with_context(|| format!("run {what} ({PACKAGE_HINT})"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A free loopback port other than `reserved` (the client's callback port, free until Latchkey
/// listens on it).
fn free_port(reserved: u16) -> anyhow::Result<u16> {
    loop {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).context("find a free loopback port")?;
        let port = listener.local_addr().context("local address")?.port();
        if port != reserved {
            return Ok(port);
        }
    }
}

/// Writes the configuration for `port` and starts Glewlwyd, then waits until it answers.
async fn launch(dir: &Path, port: u16) -> anyhow::Result<Child> {
    let config = dir.join("glewlwyd.conf");
    std::fs::write(&config, config_file(dir, port)).context("write glewlwyd.conf")?;
    let log = std::fs::File::create(dir.join("glewlwyd.log")).context("create the log file")?;
    let mut child = Command::new("glewlwyd")
        .arg("--config-file")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("log file")?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start glewlwyd: {PACKAGE_HINT}"))?;
    let probe = http()?;
    let url = format!("http://127.0.0.1:{port}/config");
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().context("glewlwyd's status")? {
            bail!(
                "glewlwyd exited on port {port} ({status}); log: {}",
                log_tail(dir)
            );
        }
        if let Ok(answer) = probe.get(&url).send().await
            && answer.status() == StatusCode::OK
        {
            return Ok(child);
        }
        if Instant::now() > deadline {
            bail!(
                "glewlwyd did not answer on port {port} within {READY_DEADLINE:?}; log: {}",
                log_tail(dir)
            );
        }
        // Between two probes of the condition (the HTTP endpoint answering), not a wait for it.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Glewlwyd's configuration (libconfig syntax): loopback only, plain HTTP, no metrics listener,
/// the package's modules and sign-in app, a SQLite database in `dir`, logs to the console.
fn config_file(dir: &Path, port: u16) -> String {
    let db = dir.join("glewlwyd.db");
    format!(
        r#"port={port}
bind_address="127.0.0.1"
external_url="http://127.0.0.1:{port}"
login_url="login.html"
api_prefix="api"
static_files_path="{WEBAPP}"
allow_origin="http://127.0.0.1:{port}"
log_mode="console"
log_level="INFO"
cookie_secure=0
cookie_same_site="lax"
session_key="GLEWLWYD2_SESSION_ID"
metrics_endpoint=false
login_api_enabled=true
admin_scope="g_admin"
profile_scope="g_profile"
user_module_path="{MODULES}/user"
client_module_path="{MODULES}/client"
user_auth_scheme_module_path="{MODULES}/scheme"
plugin_module_path="{MODULES}/plugin"
hash_algorithm="SHA512"
database = {{
  type = "sqlite3"
  path = "{db}"
}};
static_files_mime_types = (
  {{ extension = ".html"; mime_type = "text/html"; }},
  {{ extension = ".css"; mime_type = "text/css"; }},
  {{ extension = ".js"; mime_type = "application/javascript"; }},
  {{ extension = ".json"; mime_type = "application/json"; }},
  {{ extension = ".png"; mime_type = "image/png"; }},
  {{ extension = ".ico"; mime_type = "image/x-icon"; }},
  {{ extension = ".woff2"; mime_type = "font/woff2"; }}
);
"#,
        db = db.display(),
    )
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("glewlwyd.log")).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("Add endpoint"))
        .collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("build the test HTTP client")
}

/// A browser stand-in: a cookie jar, redirects followed by hand.
fn browser() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(redirect::Policy::none())
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("build the browser client")
}

/// `POST /api/auth/` with a login and password, as the login app's password form does.
async fn sign_in_api(
    client: &reqwest::Client,
    url: &Url,
    user: &str,
    password: &str,
) -> anyhow::Result<()> {
    let answer = client
        .post(url.clone())
        .json(&json!({ "username": user, "password": password }))
        .send()
        .await
        .context("POST the password form")?;
    match answer.status() {
        s if s.is_success() => Ok(()),
        StatusCode::UNAUTHORIZED => bail!("the IdP rejected the login or password"),
        other => bail!("signing in answered {other}"),
    }
}

async fn admin_call(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<()> {
    let answer = request.send().await.with_context(|| what.to_owned())?;
    let status = answer.status();
    if !status.is_success() {
        let body = answer.text().await.unwrap_or_default();
        bail!("{what}: the admin API answered {status}: {body}");
    }
    Ok(())
}

enum Landing {
    /// A page of the provider (status 200).
    Page(Url),
    /// A redirect off the provider's origin: the client's callback.
    Callback(Url),
}

/// GETs `url` and follows redirects on the provider's origin.
async fn follow(client: &reqwest::Client, mut url: Url) -> anyhow::Result<Landing> {
    let origin = url.origin();
    for _ in 0..MAX_HOPS {
        let answer = client
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("GET {}", url.path()))?;
        let status = answer.status();
        if status.is_redirection() {
            let location = answer
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .context("a redirect without Location")?;
            url = url.join(location).context("an invalid redirect")?;
            if url.origin() != origin {
                return Ok(Landing::Callback(url));
            }
        } else if status == StatusCode::OK {
            return Ok(Landing::Page(url));
        } else {
            bail!("the IdP answered {status} at {}", url.path());
        }
    }
    bail!("more than {MAX_HOPS} redirects during sign-in")
}

async fn deliver_callback(client: &reqwest::Client, url: &Url) -> anyhow::Result<()> {
    let error = url
        .query_pairs()
        .find(|(k, _)| k == "error")
        .map(|(_, v)| v.into_owned());
    let answer = client
        .get(url.clone())
        .send()
        .await
        .context("GET the loopback redirect URI (is Latchkey's listener up?)")?;
    if let Some(error) = error {
        bail!("the IdP redirected back with error={error}");
    }
    let status = answer.status();
    if status.is_client_error() || status.is_server_error() {
        bail!("the loopback callback answered HTTP {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use url::Url;

    use super::{Glewlwyd, GlewlwydOptions};

    #[test]
    fn token_hashes_are_named_as_glewlwyd_names_them() {
        // `{SHA512}` and the unpadded base64url SHA-512, as Glewlwyd's token list shows them
        // (checked against a running Glewlwyd 2.7.5; this value from Python's hashlib).
        assert_eq!(
            super::token_hash("refresh-token"),
            "{SHA512}CLR6Nun_ogqAOJtD9PO6E9trdc98N9Oj4UJb7j3Ht-I_7JmfIp9KuSH9hjeIZZ88LX5Bya8ci9_Ve9-O2uwVsw"
        );
    }

    /// Accept one request on `listener`, answer 200, and return its request target.
    async fn one_callback(listener: TcpListener) -> String {
        let (mut stream, _) = listener.accept().await.expect("callback connection");
        let mut buf = Vec::new();
        let mut chunk = [0_u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.expect("read callback");
            assert!(n > 0, "the browser hung up before sending a request");
            buf.extend_from_slice(&chunk[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await
            .expect("answer callback");
        let head = String::from_utf8_lossy(&buf).into_owned();
        head.split_whitespace()
            .nth(1)
            .expect("request target")
            .to_owned()
    }

    fn claims(jwt: &str) -> serde_json::Value {
        let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
    }

    async fn token(idp: &Glewlwyd, form: &[(&str, &str)]) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/token", idp.issuer()))
            .form(form)
            .send()
            .await
            .expect("token endpoint")
    }

    /// The peer itself, without Latchkey: sign-in through the login app's API, code exchange,
    /// and the behaviours this module's header promises.
    #[tokio::test]
    async fn the_peer_signs_in_and_behaves_as_documented() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let idp = Glewlwyd::start(GlewlwydOptions::for_redirect_port(port))
            .await
            .expect("Glewlwyd starts (run scripts/setup)");
        let redirect_uri = Glewlwyd::redirect_uri(port);
        let verifier = crate::canary("verifier");
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut authorize = Url::parse(&format!("{}/auth", idp.issuer())).expect("url");
        authorize
            .query_pairs_mut()
            .append_pair("client_id", Glewlwyd::CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("scope", "openid profile email offline_access")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "s1")
            .append_pair("nonce", "n1");
        let callback = tokio::spawn(one_callback(listener));
        idp.sign_in(&authorize, Glewlwyd::USER, Glewlwyd::PASSWORD)
            .await
            .expect("sign-in");
        let target = callback.await.expect("callback");
        let code = Url::parse("http://127.0.0.1")
            .and_then(|u| u.join(&target))
            .expect("callback URL")
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("the callback carries a code");
        let tokens: serde_json::Value = token(
            &idp,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect_uri),
                ("client_id", Glewlwyd::CLIENT_ID),
                ("code_verifier", &verifier),
            ],
        )
        .await
        .json()
        .await
        .expect("token response");
        let id = claims(tokens["id_token"].as_str().expect("an ID token"));
        let access = claims(tokens["access_token"].as_str().expect("an access token"));
        assert_eq!(id["aud"], Glewlwyd::CLIENT_ID);
        assert_eq!(id["azp"], Glewlwyd::CLIENT_ID);
        assert_eq!(id["email"], Glewlwyd::EMAIL);
        assert_eq!(id["iss"], idp.issuer());
        assert_ne!(access["aud"], Glewlwyd::CLIENT_ID, "{access}");
        assert_eq!(access["client_id"], Glewlwyd::CLIENT_ID);
        assert!(access.get("azp").is_none(), "{access}");
        assert_ne!(id["sub"], Glewlwyd::USER, "sub is opaque");

        // Refresh rotates; the answer has no ID token; a replayed refresh token gets an empty 400.
        let first = tokens["refresh_token"].as_str().expect("a refresh token");
        let refreshed: serde_json::Value = token(
            &idp,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", first),
                ("client_id", Glewlwyd::CLIENT_ID),
            ],
        )
        .await
        .json()
        .await
        .expect("refresh response");
        let second = refreshed["refresh_token"]
            .as_str()
            .expect("a rotated refresh token");
        assert_ne!(second, first);
        assert!(
            refreshed.get("id_token").is_none(),
            "{:?}",
            refreshed.get("id_token").map(|_| "present")
        );
        let replay = token(
            &idp,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", first),
                ("client_id", Glewlwyd::CLIENT_ID),
            ],
        )
        .await;
        assert_eq!(replay.status(), reqwest::StatusCode::BAD_REQUEST);
        assert_eq!(
            replay.text().await.expect("body"),
            "",
            "no invalid_grant JSON"
        );
        let records = idp
            .refresh_tokens(Glewlwyd::USER, Glewlwyd::PASSWORD)
            .await
            .expect("records");
        let second = records.iter().find(|r| r.is_for(second)).expect("record");
        assert!(!second.enabled, "a replay disables the whole chain");

        // A public client's RFC 7009 request is refused.
        let revoke = reqwest::Client::new()
            .post(format!("{}/revoke", idp.issuer()))
            .form(&[
                ("token", first),
                ("token_type_hint", "refresh_token"),
                ("client_id", Glewlwyd::CLIENT_ID),
            ])
            .send()
            .await
            .expect("revocation endpoint");
        assert_eq!(revoke.status(), reqwest::StatusCode::UNAUTHORIZED);
    }
}
