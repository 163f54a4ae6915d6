//! `latchkey server add/list/login/remove`: remote MCP servers that sign in with OAuth, managed
//! by the running instance over its control API (the login completes there, on its loopback
//! callback; the configuration entry is written there, only after the login succeeded).

use std::process::ExitCode;

use anyhow::Context;
use url::Url;

use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;
use latchkey_runtime::control::NewServer;
use latchkey_runtime::tray::format_remaining;
use latchkey_runtime::view::ServerView;
use latchkey_runtime::{Control, ControlClient};

use super::{browser, print_json, require_running};
use crate::cli::ServerAction;
use crate::exit::{Coded, failed_login};

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
            let server = NewServer {
                url,
                name,
                client_id,
                client_secret,
                scopes: scopes.map(|s| s.split_whitespace().map(str::to_owned).collect()),
                callback_port,
                allow_insecure_loopback,
            };
            let added = remote
                .add_server(&server)
                .await
                .map_err(|e| failed_login(Coded::from(e).into()))?;
            sign_in(&remote, &added.name, &added.authorize_url, no_browser).await?;
            Ok(ExitCode::SUCCESS)
        }
        ServerAction::Login { name, no_browser } => {
            let url = remote
                .server_login(&name)
                .await
                .map_err(|e| failed_login(Coded::from(e).into()))?;
            sign_in(&remote, &name, &url, no_browser).await?;
            Ok(ExitCode::SUCCESS)
        }
        ServerAction::List { json } => {
            let servers = remote.list_servers().await.map_err(Coded::from)?;
            if json {
                print_json(&servers)?;
            } else {
                let now = latchkey_core::clock::unix_seconds();
                let text = render_servers(&servers, now);
                if text.is_empty() {
                    eprintln!("No remote MCP servers. Add one with `latchkey server add <url>`.");
                }
                print!("{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ServerAction::Remove { name } => {
            match remote.remove_server(&name).await.map_err(Coded::from)? {
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
async fn sign_in(
    remote: &ControlClient,
    name: &str,
    url: &Url,
    no_browser: bool,
) -> anyhow::Result<()> {
    if no_browser || !browser::open(url.as_str()) {
        eprintln!("Open this address in your browser to sign in to `{name}`:");
        println!("{url}");
    } else {
        eprintln!("Your browser opened the sign-in page. If it did not, open:\n{url}");
    }
    eprintln!("Waiting for the sign-in to complete (Ctrl-C to cancel)…");
    let servers = remote
        .wait_server_login(name)
        .await
        .map_err(|e| failed_login(Coded::from(e).into()))?;
    if let Some(s) = servers.iter().find(|s| s.name == name) {
        eprintln!(
            "Signed in to `{name}` ({}). Hosts reach it at {} with their local client token (`latchkey client add <host> --service {name}`).",
            s.issuer.as_deref().unwrap_or("?"),
            s.proxy_url,
        );
    }
    Ok(())
}

/// The "Remote MCP servers" lines of `latchkey status` and `latchkey server list`.
pub(crate) fn render_servers(servers: &[ServerView], now: i64) -> String {
    if servers.is_empty() {
        return String::new();
    }
    let mut out = "Remote MCP servers\n".to_owned();
    let mut table = super::table::Listing::bare(2);
    for s in servers {
        let expiry = match s.expires_at {
            Some(exp) if s.state == latchkey_core::remote::ServerState::Ready => {
                format!("token expires in {}", format_remaining(exp - now))
            }
            _ => "-".to_owned(),
        };
        let mut detail = format!(
            "{} · issuer {}",
            s.url,
            s.issuer.as_deref().unwrap_or("not yet known")
        );
        if let Some(msg) = &s.message {
            detail.push_str(&format!(" — {msg}"));
        }
        table.row(vec![
            s.name.clone(),
            s.state.as_str().to_owned(),
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
        let servers: Vec<ServerView> = serde_json::from_value(serde_json::json!([
            { "name": "linear", "state": "ready", "expires_at": 4600, "url": "https://mcp.linear.app/mcp",
              "proxy_url": "http://127.0.0.1:5000/linear/mcp", "issuer": "https://linear.app",
              "scopes": [], "message": null, "last_login_error": null, "login_requested": null },
            { "name": "docs", "state": "needs_login", "expires_at": null, "url": "https://docs.example/mcp",
              "proxy_url": "http://127.0.0.1:5000/docs/mcp", "issuer": null, "scopes": [],
              "message": "sign in to the MCP server `docs`", "last_login_error": null, "login_requested": null },
        ]))
        .expect("servers");
        let text = render_servers(&servers, 1000);
        assert!(text.contains("linear"), "{text}");
        assert!(text.contains("token expires in"), "{text}");
        assert!(text.contains("issuer https://linear.app"), "{text}");
        assert!(text.contains("needs_login"), "{text}");
        assert!(text.contains("sign in to the MCP server `docs`"), "{text}");
        assert_eq!(render_servers(&[], 0), "");
    }
}
