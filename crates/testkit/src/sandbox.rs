//! The sandbox servers, each one `node sandbox/serve.js <kind>` child process that dies with its
//! handle (killed on drop, and it exits by itself when its stdin closes).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use url::Url;

const READY_DEADLINE: Duration = Duration::from_secs(15);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the sandbox lives: `$LATCHKEY_SANDBOX_DIR`, else `<repo>/sandbox`.
fn sandbox_dir() -> PathBuf {
    std::env::var_os("LATCHKEY_SANDBOX_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sandbox"),
        PathBuf::from,
    )
}

fn http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("build the test HTTP client")
}

/// One running sandbox server process.
struct Server {
    url: String,
    parsed: Url,
    // Held so the child's stdin stays open; dropping it makes the child exit.
    _stdin: ChildStdin,
    child: Child,
}

#[derive(Deserialize)]
struct Ready {
    url: String,
}

impl Server {
    /// Kills the process and waits until it is gone, so its port takes no more connections
    /// (dropping only sends the signal: a connection made just after could still be accepted
    /// into the dying listener's backlog and then reset, which is not "unreachable").
    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    async fn start(kind: &str, options: serde_json::Value) -> anyhow::Result<Server> {
        let dir = sandbox_dir();
        if !dir.join("node_modules").is_dir() {
            bail!(
                "{}/node_modules is missing: run scripts/setup (or `npm ci` in sandbox/)",
                dir.display()
            );
        }
        let node = std::env::var_os("LATCHKEY_NODE").unwrap_or_else(|| "node".into());
        let mut child = Command::new(node)
            .arg("serve.js")
            .arg(kind)
            .arg(options.to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn `node serve.js {kind}` (is Node 20+ on PATH?)"))?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut stderr = child.stderr.take().context("child stderr")?;
        // Drain stderr so the child never blocks on it; keep it for the error message.
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        tokio::spawn(async move {
            let mut buf = [0_u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut all) = sink.lock() {
                    all.extend_from_slice(&buf[..n]);
                }
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(READY_DEADLINE, lines.next_line()).await;
        let stderr_text = || {
            errors
                .lock()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let line = match line {
            Err(_) => bail!(
                "sandbox {kind} was not ready within {READY_DEADLINE:?}; stderr: {}",
                stderr_text()
            ),
            Ok(Err(e)) => return Err(e).context(format!("read sandbox {kind} stdout")),
            Ok(Ok(None)) => {
                let status = child.wait().await.ok();
                bail!(
                    "sandbox {kind} exited before it was ready ({status:?}); stderr: {}",
                    stderr_text()
                )
            }
            Ok(Ok(Some(line))) => line,
        };
        let ready: Ready = serde_json::from_str(&line)
            .with_context(|| format!("sandbox {kind} printed an unexpected ready line"))?;
        let parsed = Url::parse(&ready.url)
            .with_context(|| format!("sandbox {kind} printed an invalid URL"))?;
        Ok(Server {
            parsed,
            url: ready.url,
            _stdin: stdin,
            child,
        })
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the server process.
    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        send_signal(&self.child, signal)
    }

    async fn post(&self, path: &str) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.url);
        http()?
            .post(&url)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?
            .error_for_status()?;
        Ok(())
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.url);
        let res = http()?
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .error_for_status()?;
        res.json().await.with_context(|| format!("decode {url}"))
    }
}

/// Knobs of the sandbox IdP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdpOptions {
    /// Lifetime of access tokens, in seconds.
    pub access_ttl: u64,
    /// Lifetime of refresh tokens, in seconds.
    pub refresh_ttl: u64,
}

impl Default for IdpOptions {
    fn default() -> Self {
        IdpOptions {
            access_ttl: 3600,
            refresh_ttl: 86400,
        }
    }
}

/// The sandbox IdP's access tokens (`accessTokenFormat` of `sandbox/idp.js`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccessTokenFormat {
    /// A JWT addressed to the API `latchkey-gateway`, never to the client (Okta, Auth0).
    #[default]
    Jwt,
    /// A JWT with `"aud": []`: oidc-provider 9 refuses to sign one with no `aud` at all.
    JwtEmptyAudience,
    /// An opaque string.
    Opaque,
}

/// The sandbox IdP's refresh tokens (`refreshTokens` of `sandbox/idp.js`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RefreshTokens {
    /// A new refresh token on every refresh.
    #[default]
    Rotate,
    /// The same refresh token, valid again and again.
    Static,
    /// None at all (the provider does not grant `offline_access`).
    None,
}

/// How the sandbox IdP behaves beyond [`IdpOptions`]: like the big providers do. The default is
/// the sandbox's usual behaviour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdpProfile {
    /// Access token format.
    pub access_tokens: AccessTokenFormat,
    /// Refresh token policy.
    pub refresh_tokens: RefreshTokens,
    /// Refresh answers carry no id token.
    pub refresh_without_id_token: bool,
    /// Refresh answers carry no refresh token (Google; pair with [`RefreshTokens::Static`]).
    pub refresh_without_refresh_token: bool,
    /// Token answers carry no `expires_in`.
    pub without_expires_in: bool,
    /// The secret of the confidential clients [`Idp::BASIC_CLIENT`] and [`Idp::POST_CLIENT`]
    /// (the sandbox's fixed one when `None`).
    pub client_secret: Option<String>,
    /// The token endpoint authentication methods advertised and accepted (oidc-provider's
    /// defaults when `None`).
    pub client_auth_methods: Option<Vec<String>>,
}

/// Counters kept by the sandbox IdP (`GET {issuer}/__stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct IdpStats {
    /// Requests to the token endpoint, whatever the grant or outcome.
    pub token_requests: u64,
    /// Successful `refresh_token` grants.
    pub refresh_grants: u64,
    /// Requests to the revocation endpoint.
    pub revocations: u64,
    /// Refresh answers that carried an id token.
    #[serde(default)]
    pub refresh_id_tokens: u64,
    /// Token requests that arrived while [`Idp::hold_token_requests`] was in force.
    #[serde(default)]
    pub held_token_requests: u64,
    /// Held token requests whose client had gone when they were released: dropped unprocessed.
    #[serde(default)]
    pub abandoned_token_requests: u64,
}

/// The sandbox IdP: a real `oidc-provider` with the public client `latchkey` (PKCE S256,
/// loopback redirect), users `alice`/`alice-password` and `bob`/`bob-password`, and JWT access
/// tokens for the audience `latchkey-gateway`.
pub struct Idp {
    server: Server,
}

impl Idp {
    /// The confidential native client that authenticates with `client_secret_basic`.
    pub const BASIC_CLIENT: &str = "latchkey-basic";
    /// The confidential native client that authenticates with `client_secret_post`.
    pub const POST_CLIENT: &str = "latchkey-post";

    /// Kills the IdP and returns once its process has exited (its port refuses connections).
    pub async fn kill(self) {
        self.server.kill().await;
    }

    /// Start an IdP on a free loopback port.
    pub async fn start(options: IdpOptions) -> anyhow::Result<Idp> {
        let server = Server::start(
            "idp",
            serde_json::json!({
                "accessTtl": options.access_ttl,
                "refreshTtl": options.refresh_ttl,
            }),
        )
        .await?;
        Ok(Idp { server })
    }

    /// Start an IdP that behaves as `profile` says.
    pub async fn start_with(options: IdpOptions, profile: &IdpProfile) -> anyhow::Result<Idp> {
        let mut config = serde_json::json!({
            "accessTtl": options.access_ttl,
            "refreshTtl": options.refresh_ttl,
            "accessTokenFormat": match profile.access_tokens {
                AccessTokenFormat::Jwt => "jwt",
                AccessTokenFormat::JwtEmptyAudience => "jwt-empty-aud",
                AccessTokenFormat::Opaque => "opaque",
            },
            "refreshTokens": match profile.refresh_tokens {
                RefreshTokens::Rotate => "rotate",
                RefreshTokens::Static => "static",
                RefreshTokens::None => "none",
            },
            "refreshIdToken": !profile.refresh_without_id_token,
            "refreshOmitsRefreshToken": profile.refresh_without_refresh_token,
            "omitExpiresIn": profile.without_expires_in,
        });
        if let Some(secret) = &profile.client_secret {
            config["clientSecret"] = serde_json::json!(secret);
        }
        if let Some(methods) = &profile.client_auth_methods {
            config["clientAuthMethods"] = serde_json::json!(methods);
        }
        let server = Server::start("idp", config).await?;
        Ok(Idp { server })
    }

    /// The issuer, exactly as the IdP names itself (`http://127.0.0.1:{port}`, no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.server.url
    }

    /// The IdP's counters of token requests, refresh grants and revocations.
    pub async fn stats(&self) -> anyhow::Result<IdpStats> {
        self.server.get_json("/__stats").await
    }

    /// Freezes the IdP process (`SIGSTOP`): its port still accepts connections, nothing answers.
    /// A slow or hung provider, for fault tests; [`Idp::resume`] thaws it.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.server.signal("STOP")
    }

    /// Thaws a [`Idp::pause`]d IdP (`SIGCONT`).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.server.signal("CONT")
    }

    /// Holds every token request from now on unanswered (counted in
    /// [`IdpStats::held_token_requests`]) until [`Idp::release_token_requests`]: the rest of the
    /// IdP answers. A refresh can so be caught in flight.
    pub async fn hold_token_requests(&self) -> anyhow::Result<()> {
        self.server.post("/__hold-token").await
    }

    /// As [`Idp::hold_token_requests`], but a held request whose client has gone is processed all
    /// the same once released, as a slow provider that never notices does: its refresh token is
    /// rotated and the answer goes nowhere.
    pub async fn hold_token_requests_processing_abandoned(&self) -> anyhow::Result<()> {
        self.server.post("/__hold-token?abandoned=process").await
    }

    /// Lets held token requests go on; one whose client has gone is dropped unprocessed, so its
    /// refresh token is not rotated.
    pub async fn release_token_requests(&self) -> anyhow::Result<()> {
        self.server.post("/__release-token").await
    }
}

/// The Auth Gateway double (PROTOCOL §2), verifying JWTs against an [`Idp`].
pub struct Gateway {
    server: Server,
}

#[derive(Deserialize)]
struct GatewayStats {
    requests: u64,
}

impl Gateway {
    /// Start a gateway trusting `issuer`, requiring `api_key`, and holding `credentials` as
    /// `(user, service, name, value)` rows.
    pub async fn start_with(
        issuer: &str,
        api_key: &str,
        credentials: &[(&str, &str, &str, &str)],
    ) -> anyhow::Result<Gateway> {
        let credentials: Vec<_> = credentials
            .iter()
            .map(|(user, service, name, value)| {
                serde_json::json!({ "user": user, "service": service, "name": name, "value": value })
            })
            .collect();
        let server = Server::start(
            "gateway",
            serde_json::json!({ "issuer": issuer, "apiKey": api_key, "credentials": credentials }),
        )
        .await?;
        Ok(Gateway { server })
    }

    /// The gateway's base URL.
    ///
    pub fn url(&self) -> Url {
        self.server.parsed.clone()
    }

    /// Serve `responses` (`{status, body?, delay_ms?, raw?, content_type?}`, one per request;
    /// `raw` is sent as it is, for a malformed answer) for `service` before
    /// normal behaviour resumes.
    pub async fn script(
        &self,
        service: &str,
        responses: &[serde_json::Value],
    ) -> anyhow::Result<()> {
        let url = format!("{}/__script/{service}", self.server.url);
        http()?
            .post(&url)
            .json(responses)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?
            .error_for_status()?;
        Ok(())
    }

    /// How many credential requests the gateway has answered so far.
    pub async fn requests(&self) -> anyhow::Result<u64> {
        let stats: GatewayStats = self.server.get_json("/__stats").await?;
        Ok(stats.requests)
    }
}

/// The demo upstream API (`/whoami` fingerprints the credential it received, `/events` is SSE).
pub struct Upstream {
    server: Server,
}

impl Upstream {
    /// Start an upstream that reports whether it received `expect_key`.
    pub async fn start(expect_key: &str) -> anyhow::Result<Upstream> {
        let server =
            Server::start("upstream", serde_json::json!({ "expectKey": expect_key })).await?;
        Ok(Upstream { server })
    }

    /// The upstream's base URL.
    ///
    pub fn url(&self) -> Url {
        self.server.parsed.clone()
    }
}

/// Sends `signal` (`STOP`, `CONT`, …) to `child` with `kill(1)`: a peer frozen (`STOP`) still
/// accepts connections, and answers nothing until thawed (`CONT`).
pub(crate) fn send_signal(child: &Child, signal: &str) -> anyhow::Result<()> {
    let pid = child.id().context("the process has exited")?;
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("run kill")?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}
