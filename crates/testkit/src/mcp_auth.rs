//! The real peers of Latchkey's MCP OAuth client: the sandbox's MCP authorization server
//! (`sandbox/mcp-auth-server.js`, `oidc-provider` with Dynamic Client Registration and resource
//! indicators) and an MCP server from the official TypeScript SDK that requires its tokens
//! (`tests/mcp/server-oauth.mjs`), each a Node child process on a loopback port that dies with
//! its handle; and [`sign_in`], which drives the authorization server's sign-in page. A second
//! make of authorization server, the SDK's own ([`SdkAuthServer`]), behaves otherwise where
//! servers differ (exact redirect URIs, no `iss`, opaque tokens, no refresh). A third,
//! [`CimdAuthServer`] (`sandbox/cimd-auth-server.js`), takes Client ID Metadata Documents: it
//! fetches Latchkey's document over HTTPS from a throwaway self-signed server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use url::Url;

const READY_DEADLINE: Duration = Duration::from_secs(20);

fn repo_dir(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// One Node child process that printed `{"url": ...}` when ready.
struct NodeChild {
    url: Url,
    document: Option<String>,
    // Held so the child's stdin stays open; dropping it makes the child exit.
    _stdin: ChildStdin,
    _child: Child,
}

#[derive(Deserialize)]
struct Ready {
    url: String,
    #[serde(default)]
    document: Option<String>,
}

impl NodeChild {
    async fn start(dir: &Path, args: &[String]) -> anyhow::Result<NodeChild> {
        if !dir.join("node_modules").is_dir() {
            bail!(
                "{}/node_modules is missing: run scripts/setup (or `npm ci` there)",
                dir.display()
            );
        }
        let node = std::env::var_os("LATCHKEY_NODE").unwrap_or_else(|| "node".into());
        let mut child = Command::new(node)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn `node {}` (is Node 20+ on PATH?)", args.join(" ")))?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut stderr = child.stderr.take().context("child stderr")?;
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
        let stderr_text = || {
            errors
                .lock()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(READY_DEADLINE, lines.next_line()).await {
            Err(_) => bail!(
                "`node {}` was not ready within {READY_DEADLINE:?}; stderr: {}",
                args.join(" "),
                stderr_text()
            ),
            Ok(Err(e)) => return Err(e).context("read the child's stdout"),
            Ok(Ok(None)) => {
                let status = child.wait().await.ok();
                bail!(
                    "`node {}` exited before it was ready ({status:?}); stderr: {}",
                    args.join(" "),
                    stderr_text()
                )
            }
            Ok(Ok(Some(line))) => line,
        };
        let ready: Ready =
            serde_json::from_str(&line).context("the child printed an unexpected ready line")?;
        Ok(NodeChild {
            url: Url::parse(&ready.url).context("the child printed an invalid URL")?,
            document: ready.document,
            _stdin: stdin,
            _child: child,
        })
    }
}

/// Counters of the MCP authorization server (`GET {issuer}/__stats`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct McpAuthStats {
    /// Successful Dynamic Client Registrations.
    pub registrations: u64,
    /// Requests to the token endpoint.
    pub token_requests: u64,
    /// Successful `refresh_token` grants.
    pub refresh_grants: u64,
    /// Grants revoked (RFC 7009 revocation of a refresh token revokes its grant).
    #[serde(default)]
    pub grants_revoked: u64,
    /// Every resource indicator a token was asked for, in order.
    pub resources: Vec<String>,
    /// GETs of Latchkey's client metadata document ([`CimdAuthServer`] only).
    #[serde(default)]
    pub document_fetches: u64,
    /// Successful grants whose client sent its secret in an HTTP Basic `Authorization` header
    /// ([`McpAuthServer`] only).
    #[serde(default)]
    pub client_secret_basic: u64,
    /// Successful grants whose client sent its secret in the form body ([`McpAuthServer`] only).
    #[serde(default)]
    pub client_secret_post: u64,
}

async fn stats_of(child: &NodeChild) -> anyhow::Result<McpAuthStats> {
    let url = child.url.join("/__stats").context("stats URL")?;
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(url)
        .send()
        .await
        .context("GET /__stats")?
        .error_for_status()?
        .json()
        .await
        .context("decode /__stats")
}

/// The sandbox MCP authorization server with Client ID Metadata Documents
/// (`sandbox/cimd-auth-server.js`): as [`McpAuthServer`] (DCR stays open too), and it publishes
/// `docs/client-metadata.json` at an `https://127.0.0.1:{port}/client-metadata.json` it alone
/// trusts, its `client_id` set to that URL.
pub struct CimdAuthServer {
    child: NodeChild,
    issuer: String,
    document: Url,
}

impl CimdAuthServer {
    /// Starts one on free loopback ports; `access_ttl` is the access tokens' lifetime (s).
    pub async fn start(access_ttl: u64) -> anyhow::Result<CimdAuthServer> {
        let options = serde_json::json!({ "accessTtl": access_ttl }).to_string();
        let child = NodeChild::start(
            &repo_dir("sandbox"),
            &["cimd-auth-server.js".to_owned(), options],
        )
        .await?;
        let issuer = child.url.as_str().trim_end_matches('/').to_owned();
        let document = Url::parse(child.document.as_deref().context("no document URL")?)
            .context("the child printed an invalid document URL")?;
        Ok(CimdAuthServer {
            child,
            issuer,
            document,
        })
    }

    /// The issuer (`http://127.0.0.1:{port}`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where Latchkey's client metadata document is published (the `client_metadata_url`).
    pub fn document_url(&self) -> &Url {
        &self.document
    }

    /// Its counters.
    pub async fn stats(&self) -> anyhow::Result<McpAuthStats> {
        stats_of(&self.child).await
    }
}

/// The sandbox MCP authorization server: users `alice`/`alice-password` and
/// `bob`/`bob-password`, open DCR, JWT access tokens whose `aud` is the requested (loopback)
/// resource, scopes `mcp:tools` and `mcp:admin`, rotating refresh tokens.
pub struct McpAuthServer {
    child: NodeChild,
    issuer: String,
}

impl McpAuthServer {
    /// Starts one on a free loopback port; `access_ttl` is the access tokens' lifetime (s).
    pub async fn start(access_ttl: u64) -> anyhow::Result<McpAuthServer> {
        Self::spawn(serde_json::json!({ "accessTtl": access_ttl })).await
    }

    /// Starts one that also knows a confidential client registered beforehand: `client_id`
    /// with `client_secret`, redirect URI `http://127.0.0.1/oauth/callback` (any port), and
    /// metadata that advertises only `auth_method` (`client_secret_basic` or
    /// `client_secret_post`) besides `none`. oidc-provider takes a secret sent either way:
    /// [`McpAuthStats::client_secret_basic`] and `client_secret_post` tell which way it came.
    pub async fn start_with_client(
        access_ttl: u64,
        client_id: &str,
        client_secret: &str,
        auth_method: &str,
    ) -> anyhow::Result<McpAuthServer> {
        Self::spawn(serde_json::json!({
            "accessTtl": access_ttl,
            "preRegistered": {
                "client_id": client_id,
                "client_secret": client_secret,
                "redirect_uris": ["http://127.0.0.1/oauth/callback"],
                "token_endpoint_auth_method": auth_method,
            },
        }))
        .await
    }

    async fn spawn(options: serde_json::Value) -> anyhow::Result<McpAuthServer> {
        let options = options.to_string();
        let child = NodeChild::start(
            &repo_dir("sandbox"),
            &["mcp-auth-server.js".to_owned(), options],
        )
        .await?;
        // The issuer exactly as the server names itself (no trailing slash).
        let issuer = child.url.as_str().trim_end_matches('/').to_owned();
        Ok(McpAuthServer { child, issuer })
    }

    /// The issuer (`http://127.0.0.1:{port}`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Its counters.
    pub async fn stats(&self) -> anyhow::Result<McpAuthStats> {
        stats_of(&self.child).await
    }
}

/// The official TypeScript SDK's authorization server (`tests/mcp/auth-server-sdk.mjs`): RFC 8414
/// metadata only, DCR, PKCE, `resource` required; auto-approves; exact redirect URIs; no `iss`;
/// opaque tokens checked by introspection; no refresh.
pub struct SdkAuthServer {
    child: NodeChild,
}

impl SdkAuthServer {
    /// Starts one on a free loopback port.
    pub async fn start() -> anyhow::Result<SdkAuthServer> {
        let child =
            NodeChild::start(&repo_dir("tests/mcp"), &["auth-server-sdk.mjs".to_owned()]).await?;
        Ok(SdkAuthServer { child })
    }

    /// The issuer exactly as the SDK publishes it (`http://127.0.0.1:{port}/`, with the slash).
    pub fn issuer(&self) -> &str {
        self.child.url.as_str()
    }
}

/// The SDK's Streamable HTTP MCP server that requires tokens of an [`McpAuthServer`] (JWTs) or
/// of an [`SdkAuthServer`] (introspected) for its URL.
pub struct OAuthMcpServer {
    child: NodeChild,
}

impl OAuthMcpServer {
    /// Starts one on a free loopback port, trusting the JWTs of `issuer`.
    pub async fn start(issuer: &str) -> anyhow::Result<OAuthMcpServer> {
        Self::spawn(issuer, false).await
    }

    /// Starts one that checks tokens at `issuer`'s introspection endpoint ([`SdkAuthServer`]).
    pub async fn start_introspecting(issuer: &str) -> anyhow::Result<OAuthMcpServer> {
        Self::spawn(issuer, true).await
    }

    async fn spawn(issuer: &str, introspect: bool) -> anyhow::Result<OAuthMcpServer> {
        let mut args = vec![
            "server-oauth.mjs".to_owned(),
            "--issuer".to_owned(),
            issuer.to_owned(),
        ];
        if introspect {
            args.push("--introspect".to_owned());
        }
        let child = NodeChild::start(&repo_dir("tests/mcp"), &args).await?;
        Ok(OAuthMcpServer { child })
    }

    /// Its MCP endpoint and resource identifier (`http://127.0.0.1:{port}/mcp`).
    pub fn url(&self) -> &Url {
        &self.child.url
    }
}

/// Drives the MCP authorization server's sign-in page from `authorize_url` as `user` and
/// delivers the redirect to the loopback callback. The page has the sandbox IdP's form, so this
/// is the sandbox's browser stand-in.
pub async fn sign_in(authorize_url: &Url, user: &str, password: &str) -> anyhow::Result<()> {
    crate::browser_login(authorize_url, user, password).await
}
