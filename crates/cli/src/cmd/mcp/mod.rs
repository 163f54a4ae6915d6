//! MCP host helpers: `headers` (Claude Code's `headersHelper`), `mcp-config` (the JSON each host
//! expects) and `mcp-stdio` (a stdio MCP server that forwards to the proxy over MCP Streamable
//! HTTP, for hosts that only launch stdio servers). The stdio bridge and `headers` use short-lived
//! tokens minted by the running instance, so no long-lived token sits in a host's config file.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, mpsc};

use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;

use super::{Target, require_running};
use crate::cli::HostKind;
use crate::exit::Coded;
use crate::remote::Remote;

/// Lifetime of the tokens `headers` and `mcp-stdio` use.
const EPHEMERAL_TTL_SECONDS: u64 = 12 * 3600;

async fn ephemeral(remote: &Remote, client: &str) -> anyhow::Result<Secret> {
    let v: serde_json::Value = remote
        .post(
            "/v1/control/ephemeral",
            &serde_json::json!({ "client": client, "ttl_seconds": EPHEMERAL_TTL_SECONDS }),
        )
        .await?;
    let token = v["token"]
        .as_str()
        .context("no token in Latchkey's answer")?;
    Ok(Secret::new(token))
}

/// `latchkey headers <client>`: prints `{"X-Latchkey-Client": "<short-lived token>"}`.
pub async fn headers(paths: &Paths, client: &str) -> anyhow::Result<ExitCode> {
    let remote = require_running(paths).await?;
    let token = ephemeral(&remote, client).await?;
    let mut headers = serde_json::Map::new();
    headers.insert(
        "X-Latchkey-Client".into(),
        serde_json::Value::String(token.expose().to_owned()),
    );
    println!("{}", serde_json::Value::Object(headers));
    Ok(ExitCode::SUCCESS)
}

/// `latchkey mcp-config`: prints the host's JSON for reaching `service` through the proxy.
pub async fn config(
    paths: &Paths,
    client: &str,
    service: &str,
    host: HostKind,
    path: &str,
) -> anyhow::Result<ExitCode> {
    let target = Target::open(paths).await?;
    let result = config_with(&target, client, service, host, path).await;
    target.close().await;
    let (snippet, hint) = result?;
    println!(
        "{}",
        serde_json::to_string_pretty(&snippet).context("json")?
    );
    eprintln!("{hint}");
    Ok(ExitCode::SUCCESS)
}

async fn config_with(
    target: &Target,
    client: &str,
    service: &str,
    host: HostKind,
    path: &str,
) -> anyhow::Result<(serde_json::Value, String)> {
    let base = match target {
        Target::Remote(r) => r.base().to_owned(),
        Target::Local(lk) => format!("http://{}", lk.config().proxy.listen),
    };
    let host_id = match host {
        HostKind::ClaudeCode => latchkey_hosts::HostId::ClaudeCode,
        HostKind::Cursor => latchkey_hosts::HostId::Cursor,
        HostKind::Vscode => latchkey_hosts::HostId::VsCode,
        HostKind::ClaudeDesktop => latchkey_hosts::HostId::ClaudeDesktop,
    };
    let spec = latchkey_hosts::EntrySpec {
        server_name: format!("latchkey-{service}"),
        service: service.to_owned(),
        client: client.to_owned(),
        proxy_base: base,
        latchkey_program: std::env::current_exe().context("locating the latchkey binary")?,
        mcp_path: path.to_owned(),
    };
    let token = if latchkey_hosts::needs_token(host_id) {
        let label = format!("mcp-config:{}", host_id.as_str());
        let token = match target {
            Target::Remote(r) => {
                let v: serde_json::Value = r
                    .post(
                        &format!("/v1/control/clients/{client}/tokens"),
                        &serde_json::json!({ "label": label }),
                    )
                    .await?;
                Secret::new(
                    v["token"]
                        .as_str()
                        .context("no token in Latchkey's answer")?,
                )
            }
            Target::Local(lk) => Secret::new(
                lk.issue_client_token(client, &label)
                    .map_err(Coded::from)?
                    .expose(),
            ),
        };
        Some(latchkey_hosts::ClientToken::new(token.expose().to_owned()))
    } else {
        None
    };
    let snippet = latchkey_hosts::snippet(host_id, &spec, token.as_ref());
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
    Ok((snippet, hint.to_owned()))
}

/// State shared by the bridge's request tasks.
struct Bridge {
    remote: Remote,
    client: String,
    url: String,
    token: Mutex<Secret>,
    session: Mutex<Option<String>>,
    protocol: Mutex<Option<String>>,
    http: reqwest::Client,
}

impl Bridge {
    async fn post(&self, body: &str) -> anyhow::Result<reqwest::Response> {
        for attempt in 0..2 {
            let token = self.token.lock().await.clone();
            let mut request = self
                .http
                .request(Method::POST, &self.url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("x-latchkey-client", token.expose())
                .body(body.to_owned());
            if let Some(id) = self.session.lock().await.as_deref() {
                request = request.header("mcp-session-id", id);
            }
            if let Some(version) = self.protocol.lock().await.as_deref() {
                request = request.header("mcp-protocol-version", version);
            }
            let response = request
                .send()
                .await
                .context("Latchkey's proxy does not answer")?;
            if response.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                let is_ours = response
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
                if is_ours {
                    // Our short-lived token expired or the instance restarted: mint a new one.
                    *self.token.lock().await = ephemeral(&self.remote, &self.client).await?;
                    continue;
                }
            }
            return Ok(response);
        }
        anyhow::bail!("the proxy refused the bridge's token twice")
    }
}

/// `latchkey mcp-stdio <service> --client C`: newline-delimited JSON-RPC on stdin/stdout.
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
        remote.base(),
        path.trim_start_matches('/')
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("HTTP client")?;
    let bridge = Arc::new(Bridge {
        remote,
        client: client.to_owned(),
        url,
        token: Mutex::new(token),
        session: Mutex::new(None),
        protocol: Mutex::new(None),
        http,
    });

    // One writer owns stdout so messages from concurrent streams never interleave.
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err()
                || stdout.write_all(b"\n").await.is_err()
            {
                break;
            }
            let _ = stdout.flush().await;
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut tasks = tokio::task::JoinSet::new();
    let mut first = true;
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        if line.trim().is_empty() {
            continue;
        }
        let is_initialize = serde_json::from_str::<serde_json::Value>(&line)
            .is_ok_and(|v| v["method"] == "initialize");
        let bridge = bridge.clone();
        let out = out_tx.clone();
        let job = async move {
            if let Err(e) = forward(&bridge, &line, is_initialize, &out).await {
                tracing::warn!(error = %format!("{e:#}"), "bridge request failed");
                if let Some(reply) = error_reply(&line, &format!("{e:#}")) {
                    let _ = out.send(reply).await;
                }
            }
        };
        // The initialize exchange must finish first: it yields the session id.
        if first || is_initialize {
            job.await;
            first = false;
        } else {
            tasks.spawn(job);
        }
    }
    while tasks.join_next().await.is_some() {}
    if let Some(id) = bridge.session.lock().await.clone() {
        let token = bridge.token.lock().await.clone();
        let _ = bridge
            .http
            .delete(&bridge.url)
            .header("mcp-session-id", id)
            .header("x-latchkey-client", token.expose())
            .timeout(Duration::from_secs(2))
            .send()
            .await;
    }
    drop(out_tx);
    let _ = writer.await;
    Ok(ExitCode::SUCCESS)
}

async fn forward(
    bridge: &Bridge,
    line: &str,
    is_initialize: bool,
    out: &mpsc::Sender<String>,
) -> anyhow::Result<()> {
    let response = bridge.post(line).await?;
    let status = response.status();
    if let Some(id) = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        *bridge.session.lock().await = Some(id.to_owned());
    }
    if status == StatusCode::ACCEPTED {
        return Ok(());
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("HTTP {status}"));
        anyhow::bail!("{reason}");
    }
    if content_type.starts_with("text/event-stream") {
        let mut stream = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = stream.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.context("stream")?));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if !data.is_empty() {
                    let message = data.join("\n");
                    if is_initialize {
                        note_protocol(bridge, &message).await;
                    }
                    out.send(message).await.context("stdout closed")?;
                }
            }
        }
    } else {
        let body = response.text().await.context("reading the answer")?;
        if !body.trim().is_empty() {
            if is_initialize {
                note_protocol(bridge, &body).await;
            }
            out.send(body.trim().to_owned())
                .await
                .context("stdout closed")?;
        }
    }
    Ok(())
}

async fn note_protocol(bridge: &Bridge, message: &str) {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(message)
        && let Some(version) = v["result"]["protocolVersion"].as_str()
    {
        *bridge.protocol.lock().await = Some(version.to_owned());
    }
}

/// A JSON-RPC error answer for a request that could not be forwarded (notifications get none).
fn error_reply(line: &str, message: &str) -> Option<String> {
    let request: serde_json::Value = serde_json::from_str(line).ok()?;
    let id = request.get("id")?.clone();
    Some(
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": { "code": -32000, "message": format!("Latchkey bridge: {message}") }
        })
        .to_string(),
    )
}
