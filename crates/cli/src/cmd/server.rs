//! `latchkey server add/list/login/remove`: remote MCP servers that sign in with OAuth, managed
//! by the running instance over its control API (the login completes there, on its loopback
//! callback; the configuration entry is written there, only after the login succeeded).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use reqwest::Method;

use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;
use latchkey_runtime::tray::format_remaining;

use super::require_running;
use super::session::open_browser;
use crate::cli::ServerAction;
use crate::exit::{Coded, LoginAttempt};
use crate::remote::Remote;

/// Longest the CLI waits for the browser (the instance gives up after 10 minutes).
const WAIT: Duration = Duration::from_secs(620);

/// Runs one `latchkey server` action.
pub async fn run(paths: &Paths, action: ServerAction) -> anyhow::Result<ExitCode> {
    let remote = require_running(paths).await?;
    match action {
        ServerAction::Add {
            url,
            name,
            client_id,
            client_secret_stdin,
            scopes,
            callback_port,
            no_browser,
            allow_insecure_loopback,
        } => {
            let client_secret = if client_secret_stdin {
                Some(read_secret()?)
            } else {
                None
            };
            let scopes: Option<Vec<&str>> =
                scopes.as_deref().map(|s| s.split_whitespace().collect());
            let body = serde_json::json!({
                "url": url,
                "name": name,
                "client_id": client_id,
                "client_secret": client_secret.as_ref().map(|s| s.expose()),
                "scopes": scopes,
                "callback_port": callback_port,
                "allow_insecure_loopback": allow_insecure_loopback,
            });
            let answer: serde_json::Value = remote
                .post("/v1/control/servers", &body)
                .await
                .map_err(failed_login)?;
            let name = answer["name"].as_str().unwrap_or_default().to_owned();
            let url = answer["authorize_url"].as_str().unwrap_or_default();
            sign_in(&remote, &name, url, no_browser).await?;
            Ok(ExitCode::SUCCESS)
        }
        ServerAction::Login { name, no_browser } => {
            let answer: serde_json::Value = remote
                .post(&format!("/v1/control/servers/{name}/login"), &())
                .await
                .map_err(failed_login)?;
            let url = answer["authorize_url"].as_str().unwrap_or_default();
            sign_in(&remote, &name, url, no_browser).await?;
            Ok(ExitCode::SUCCESS)
        }
        ServerAction::List { json } => {
            let servers: serde_json::Value = remote.get("/v1/control/servers").await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&servers).context("json")?
                );
            } else {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let report = serde_json::json!({ "servers": servers });
                let text = render_servers(&report, now);
                if text.is_empty() {
                    eprintln!("No remote MCP servers. Add one with `latchkey server add <url>`.");
                }
                print!("{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ServerAction::Remove { name } => {
            let answer: serde_json::Value = remote
                .call(
                    Method::DELETE,
                    &format!("/v1/control/servers/{name}"),
                    None::<&()>,
                    Duration::from_secs(60),
                )
                .await?;
            match answer["note"].as_str() {
                None => eprintln!(
                    "Removed `{name}`: its tokens are revoked and its keychain entries deleted."
                ),
                Some(note) => eprintln!(
                    "Removed `{name}` and deleted its keychain entries; the tokens were not revoked: {note}."
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The client secret from standard input (its first line), never echoed or logged.
fn read_secret() -> anyhow::Result<Secret> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("read the client secret from standard input")?;
    let secret = line.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        anyhow::bail!(
            "no client secret on standard input: pipe it in, e.g. `printf %s \"$SECRET\" | latchkey server add <url> --client-id <id> --client-secret-stdin`"
        );
    }
    Ok(Secret::new(secret))
}

/// Opens (or prints) the sign-in page, waits for the login, and says where hosts reach it.
async fn sign_in(remote: &Remote, name: &str, url: &str, no_browser: bool) -> anyhow::Result<()> {
    if no_browser || !open_browser(url) {
        eprintln!("Open this address in your browser to sign in to `{name}`:");
        println!("{url}");
    } else {
        eprintln!("Your browser opened the sign-in page. If it did not, open:\n{url}");
    }
    eprintln!("Waiting for the sign-in to complete (Ctrl-C to cancel)…");
    let servers: serde_json::Value = remote
        .call(
            Method::POST,
            &format!("/v1/control/servers/{name}/wait"),
            Some(&()),
            WAIT,
        )
        .await
        .map_err(failed_login)?;
    let server = servers
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name);
    if let Some(s) = server {
        eprintln!(
            "Signed in to `{name}` ({}). Hosts reach it at {} with their local client token (`latchkey client add <host> --service {name}`).",
            s["issuer"].as_str().unwrap_or("?"),
            s["proxy_url"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

/// A failed add or login exits like a failed `latchkey login`, with its code shown.
fn failed_login(e: anyhow::Error) -> anyhow::Error {
    match e
        .chain()
        .find_map(|c| c.downcast_ref::<Coded>())
        .map(|c| c.code.clone())
    {
        Some(code) => e.context(LoginAttempt { code }),
        None => e,
    }
}

/// The "Remote MCP servers" lines of `latchkey status` and `latchkey server list`.
pub(crate) fn render_servers(report: &serde_json::Value, now: i64) -> String {
    let servers = report["servers"].as_array().cloned().unwrap_or_default();
    if servers.is_empty() {
        return String::new();
    }
    let mut out = "Remote MCP servers\n".to_owned();
    let mut table = super::table::Listing::bare(2);
    for s in servers {
        let state = s["state"].as_str().unwrap_or("?");
        let expiry = match s["expires_at"].as_i64() {
            Some(exp) if state == "ready" => {
                format!("token expires in {}", format_remaining(exp - now))
            }
            _ => "-".to_owned(),
        };
        let mut detail = format!(
            "{} · issuer {}",
            s["url"].as_str().unwrap_or("?"),
            s["issuer"].as_str().unwrap_or("not yet known")
        );
        if let Some(msg) = s["message"].as_str() {
            detail.push_str(&format!(" — {msg}"));
        }
        table.row(vec![
            s["name"].as_str().unwrap_or("?").to_owned(),
            state.to_owned(),
            expiry,
            detail,
        ]);
    }
    out.push_str(&table.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_listed_with_state_expiry_issuer_and_what_to_do() {
        let report = serde_json::json!({ "servers": [
            { "name": "linear", "state": "ready", "expires_at": 4600, "url": "https://mcp.linear.app/mcp",
              "issuer": "https://linear.app", "message": null },
            { "name": "docs", "state": "needs_login", "expires_at": null, "url": "https://docs.example/mcp",
              "issuer": null, "message": "sign in to the MCP server `docs`" },
        ]});
        let text = render_servers(&report, 1000);
        assert!(text.contains("linear"), "{text}");
        assert!(text.contains("token expires in"), "{text}");
        assert!(text.contains("issuer https://linear.app"), "{text}");
        assert!(text.contains("needs_login"), "{text}");
        assert!(text.contains("sign in to the MCP server `docs`"), "{text}");
        assert_eq!(render_servers(&serde_json::json!({}), 0), "");
    }
}
