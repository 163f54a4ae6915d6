//! MCP host helpers: `headers` (Claude Code's `headersHelper`), `mcp-config` (the JSON each host
//! expects) and `mcp-stdio` (a stdio MCP server that forwards to the proxy over MCP Streamable
//! HTTP, for hosts that only launch stdio servers). The stdio bridge and `headers` use short-lived
//! tokens minted by the running instance, so no long-lived token sits in a host's config file.

mod bridge;
mod sse;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;
use latchkey_runtime::{Control, ControlClient};

use super::{Target, require_running, with_target};
use crate::cli::HostKind;
use crate::exit::Coded;

/// Lifetime of the tokens `headers` and `mcp-stdio` use.
const EPHEMERAL_TTL: Duration = Duration::from_secs(12 * 3600);

async fn ephemeral(remote: &ControlClient, client: &str) -> anyhow::Result<Secret> {
    let issued = remote
        .issue_ephemeral_token(client, Some(EPHEMERAL_TTL))
        .await
        .map_err(Coded::from)?;
    Ok(issued.token)
}

/// `latchkey headers <client>`: prints `{"X-Latchkey-Client": "<short-lived token>"}`.
pub async fn headers(paths: &Paths, client: &str) -> anyhow::Result<ExitCode> {
    let remote = require_running(paths).await?;
    let token = ephemeral(&remote, client).await?;
    let headers = std::collections::BTreeMap::from([("X-Latchkey-Client", token.expose())]);
    println!("{}", serde_json::to_string(&headers).context("json")?);
    Ok(ExitCode::SUCCESS)
}

/// `latchkey mcp-config`: prints the host's JSON for reaching `service` through the proxy. The
/// token it mints replaces the client's previous one for that host, and lasts `expires_in` when
/// given.
pub async fn config(
    paths: &Paths,
    client: &str,
    service: &str,
    host: HostKind,
    path: &str,
    expires_in: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let host_id = match host {
        HostKind::ClaudeCode => latchkey_hosts::HostId::ClaudeCode,
        HostKind::Cursor => latchkey_hosts::HostId::Cursor,
        HostKind::Vscode => latchkey_hosts::HostId::VsCode,
        HostKind::ClaudeDesktop => latchkey_hosts::HostId::ClaudeDesktop,
    };
    let snippet = with_target(paths, async |target| {
        snippet(target, host_id, client, service, path, expires_in).await
    })
    .await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&snippet).context("json")?
    );
    let hint = match host {
        HostKind::ClaudeCode => {
            "Add it with `claude mcp add-json` or merge it into ~/.claude.json (the token is fetched by `latchkey headers` on each connection)."
        }
        HostKind::Cursor => {
            "Merge it into ~/.cursor/mcp.json. It holds a token for this client: keep the file private."
        }
        HostKind::Vscode => {
            "Merge it into your VS Code mcp.json. It holds a token for this client: keep the file private."
        }
        HostKind::ClaudeDesktop => {
            "Merge it into claude_desktop_config.json; Claude Desktop starts `latchkey mcp-stdio`, which needs Latchkey running."
        }
    };
    eprintln!("{hint}");
    Ok(ExitCode::SUCCESS)
}

/// The host's entry (the runtime's, as the window adds it), with a token minted for the hosts
/// that keep one in their file.
async fn snippet(
    target: &Target,
    host_id: latchkey_hosts::HostId,
    client: &str,
    service: &str,
    path: &str,
    expires_in: Option<Duration>,
) -> anyhow::Result<serde_json::Value> {
    let spec = latchkey_runtime::hosts::entry_spec(
        target.proxy_url(),
        client,
        service,
        path,
        target.paths(),
    );
    let token = if latchkey_hosts::needs_token(host_id) {
        let label = format!("mcp-config:{}", host_id.as_str());
        let token = target
            .issue_client_token(client, &label, expires_in)
            .await
            .map_err(Coded::from)?;
        Some(latchkey_hosts::ClientToken::new(token.expose().to_owned()))
    } else {
        None
    };
    Ok(latchkey_hosts::snippet(host_id, &spec, token.as_ref()))
}

/// Mints the bridge's short-lived tokens from the running instance.
struct InstanceMint {
    remote: ControlClient,
    client: String,
}

impl bridge::Mint for InstanceMint {
    async fn mint(&self) -> anyhow::Result<Secret> {
        ephemeral(&self.remote, &self.client).await
    }
}

/// `latchkey mcp-stdio <service> --client C`: newline-delimited JSON-RPC on stdin/stdout,
/// forwarded to the proxy over MCP Streamable HTTP (see [`bridge`]).
pub async fn stdio(
    paths: &Paths,
    service: &str,
    client: &str,
    path: &str,
) -> anyhow::Result<ExitCode> {
    let remote = require_running(paths).await?;
    let token = ephemeral(&remote, client).await?;
    let url = format!(
        "{}/{service}/{}",
        remote.proxy_url(),
        path.trim_start_matches('/')
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("HTTP client")?;
    let endpoint = bridge::Endpoint {
        url,
        http,
        settings: bridge::Settings::default(),
    };
    let mint = InstanceMint {
        remote,
        client: client.to_owned(),
    };
    bridge::run(
        endpoint,
        mint,
        token,
        stdin_lines(),
        tokio::io::stdout(),
        terminated(),
    )
    .await;
    Ok(ExitCode::SUCCESS)
}

/// Stdin's lines, read on a plain thread: a read blocked on a host that neither writes nor
/// closes stdin must not keep the process alive after SIGTERM (tokio's blocking pool would).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(line) => {
                        if tx.blocking_send(line).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading stdin failed; ending the bridge");
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot read stdin");
    }
    rx
}

/// Resolves on SIGTERM or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
