//! Login, logout, status, token, configuration check, keys, and the headless server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use reqwest::Method;

use latchkey_core::config::Config;
use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;
use latchkey_runtime::tray::format_remaining;
use latchkey_runtime::{Latchkey, StartOptions};

use super::{Target, read_stdin_secret};
use crate::exit::{Coded, LoginAttempt};

/// Marks an error of `latchkey login` as a failed login (its own exit code; the code is printed
/// next to the message, which says what to fix).
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

fn account_or_default(
    target: &Target,
    paths: &Paths,
    account: Option<String>,
) -> anyhow::Result<String> {
    if let Some(a) = account {
        return Ok(a);
    }
    let from_local = match target {
        Target::Local(lk) => lk.default_account(),
        Target::Remote(_) => Config::load_from(&paths.config_file())
            .ok()
            .and_then(|c| c.default_account().map(|a| a.name.to_string())),
    };
    from_local.ok_or_else(|| anyhow::anyhow!("no account configured"))
}

/// `latchkey login`
pub async fn login(
    paths: &Paths,
    account: Option<String>,
    no_browser: bool,
) -> anyhow::Result<ExitCode> {
    let target = Target::open(paths).await?;
    let account = account_or_default(&target, paths, account)?;
    let url = match &target {
        Target::Remote(r) => r
            .post::<serde_json::Value>(&format!("/v1/control/login/{account}"), &())
            .await
            .map(|v| v["authorize_url"].as_str().unwrap_or_default().to_owned()),
        Target::Local(lk) => lk
            .begin_login(&account)
            .await
            .map(|u| u.to_string())
            .map_err(|e| Coded::from(e).into()),
    };
    let url = match url {
        Ok(url) => url,
        Err(e) => {
            target.close().await;
            return Err(failed_login(e));
        }
    };
    if no_browser || !open_browser(&url) {
        eprintln!("Open this address in your browser to sign in:");
        println!("{url}");
    } else {
        eprintln!("Your browser opened the sign-in page. If it did not, open:\n{url}");
    }
    eprintln!("Waiting for the sign-in to complete (Ctrl-C to cancel)…");
    let result = match &target {
        Target::Remote(r) => r
            .call::<serde_json::Value>(
                Method::POST,
                &format!("/v1/control/login/{account}/wait"),
                Some(&()),
                Duration::from_secs(620),
            )
            .await
            .map(|_| ()),
        Target::Local(lk) => lk
            .wait_login(&account)
            .await
            .map_err(|e| Coded::from(e).into()),
    };
    let overview = match &target {
        Target::Local(lk) => serde_json::to_value(lk.overview()).ok(),
        Target::Remote(r) => r.get::<serde_json::Value>("/v1/control/status").await.ok(),
    };
    target.close().await;
    result.map_err(failed_login)?;
    if let Some(line) = overview.as_ref().and_then(|o| session_line(o, &account)) {
        eprintln!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `latchkey logout`
pub async fn logout(paths: &Paths, account: Option<String>) -> anyhow::Result<ExitCode> {
    let target = Target::open(paths).await?;
    let account = account_or_default(&target, paths, account)?;
    let result = match &target {
        Target::Remote(r) => r
            .post::<serde_json::Value>(&format!("/v1/control/logout/{account}"), &())
            .await
            .map(|_| ()),
        Target::Local(lk) => lk.logout(&account).await.map_err(|e| Coded::from(e).into()),
    };
    target.close().await;
    result?;
    eprintln!("Logged out of {account}; its keychain entries are deleted.");
    Ok(ExitCode::SUCCESS)
}

/// `latchkey status`
pub async fn status(paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    let target = Target::open(paths).await?;
    let running = matches!(target, Target::Remote(_));
    let report: serde_json::Value = match &target {
        Target::Remote(r) => r.get("/v1/control/status").await?,
        Target::Local(lk) => {
            let mut v = serde_json::to_value(lk.overview()).context("status")?;
            v["clients"] = serde_json::to_value(lk.list_clients()).context("clients")?;
            v
        }
    };
    target.close().await;
    let mut report = report;
    report["running"] = serde_json::Value::Bool(running);
    if json {
        println!("{}", serde_json::to_string_pretty(&report).context("json")?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render_status(&report));
    Ok(ExitCode::SUCCESS)
}

fn session_line(overview: &serde_json::Value, account: &str) -> Option<String> {
    let now = overview["now"].as_i64()?;
    let accounts = overview["accounts"].as_array()?;
    let a = accounts.iter().find(|a| a["name"] == account)?;
    Some(describe_state(&a["state"], now))
}

fn describe_state(state: &serde_json::Value, now: i64) -> String {
    let who = |s: &serde_json::Value| {
        let u = &s["user"];
        u["email"]
            .as_str()
            .or(u["name"].as_str())
            .or(u["subject"].as_str())
            .unwrap_or("?")
            .to_owned()
    };
    match state["kind"].as_str().unwrap_or_default() {
        "active" => {
            let left = state["expires_at"].as_i64().unwrap_or(now) - now;
            if state["renewable"].as_bool() == Some(false) {
                format!(
                    "Signed in as {} · session ends in {} (the identity provider gave no refresh token: log in again then)",
                    who(state),
                    format_remaining(left)
                )
            } else {
                format!(
                    "Signed in as {} · access token expires in {} (renewed automatically)",
                    who(state),
                    format_remaining(left)
                )
            }
        }
        "refreshing" => format!("Signed in as {} · renewing", who(state)),
        "logging_in" => "Signing in…".to_owned(),
        "expired" => format!(
            "Session ended: {}",
            state["reason"].as_str().unwrap_or("log in again")
        ),
        "error" => format!(
            "Attention: {}",
            state["message"].as_str().unwrap_or("unknown error")
        ),
        _ => "Not signed in · run `latchkey login`".to_owned(),
    }
}

/// The configuration file's state, when it is not simply in force: missing, refused (with
/// `file:line`, what is wrong and the fix; the previous configuration stays in force), or
/// changed in a way that needs a restart.
fn config_line(c: &serde_json::Value) -> String {
    let path = c["path"].as_str().unwrap_or("the configuration file");
    let mut out = match c["state"].as_str() {
        Some("missing") => format!(
            "Configuration: none yet at {path}; set Latchkey up in its window or run `latchkey config init`\n"
        ),
        Some("invalid") => {
            let e = &c["error"];
            format!(
                "Configuration error: {path}:{}: {}\n  fix: {}\n  (the last valid configuration stays in force until the file is fixed)\n",
                e["line"].as_u64().unwrap_or(0),
                e["message"].as_str().unwrap_or("?"),
                e["fix"].as_str().unwrap_or("?"),
            )
        }
        _ => String::new(),
    };
    if let Some(note) = c["restart_needed"].as_str() {
        out.push_str(&format!("Configuration: {note}\n"));
    }
    out
}

fn render_status(r: &serde_json::Value) -> String {
    use std::fmt::Write;
    let now = r["now"].as_i64().unwrap_or_default();
    let mut out = String::new();
    out.push_str(&config_line(&r["config"]));
    for a in r["accounts"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "Account {} ({})",
            a["name"].as_str().unwrap_or("?"),
            a["issuer"].as_str().unwrap_or("?")
        );
        let _ = writeln!(out, "  {}", describe_state(&a["state"], now));
        let failure = &a["last_login_error"];
        if let (Some(code), Some(message)) = (failure["code"].as_str(), failure["message"].as_str())
        {
            let _ = writeln!(out, "  Last login failed [{code}]: {message}");
        }
    }
    out.push_str(&super::server::render_servers(r, now));
    let services = r["services"].as_array().cloned().unwrap_or_default();
    if !services.is_empty() {
        let _ = writeln!(out, "Services");
        let mut table = super::table::Listing::bare(2);
        for s in services {
            let mut source = s["source"].as_str().unwrap_or("?").to_owned();
            if let Some(exp) = s["expires_at"].as_i64() {
                let _ = write!(source, ", usable for {}", format_remaining(exp - now));
            }
            if let Some(msg) = s["message"].as_str() {
                let _ = write!(source, " — {msg}");
            }
            table.row(vec![
                s["name"].as_str().unwrap_or("?").to_owned(),
                s["state"].as_str().unwrap_or("?").to_owned(),
                source,
            ]);
        }
        out.push_str(&table.render());
    }
    let k = &r["keychain"];
    let _ = writeln!(
        out,
        "Keychain: {} ({}){}",
        if k["ok"].as_bool() == Some(true) {
            "ok"
        } else {
            "NOT AVAILABLE"
        },
        k["backend"].as_str().unwrap_or("?"),
        k["message"]
            .as_str()
            .map(|m| format!(" — {m}"))
            .unwrap_or_default()
    );
    if r["running"].as_bool() == Some(true) {
        let _ = writeln!(
            out,
            "Proxy: {} (running)",
            r["proxy"]["url"].as_str().unwrap_or("?")
        );
    } else {
        let _ = writeln!(
            out,
            "Proxy: not running (start the tray app or `latchkey serve`)"
        );
    }
    let clients = r["clients"].as_array().map_or(0, Vec::len);
    let _ = writeln!(out, "Local clients: {clients}");
    out
}

/// `latchkey token`
pub async fn token(paths: &Paths, account: Option<String>) -> anyhow::Result<ExitCode> {
    let target = Target::open(paths).await?;
    let account = account_or_default(&target, paths, account)?;
    let token: anyhow::Result<Secret> = match &target {
        Target::Remote(r) => {
            let v: serde_json::Value = r.get(&format!("/v1/control/token/{account}")).await?;
            Ok(Secret::new(v["access_token"].as_str().unwrap_or_default()))
        }
        Target::Local(lk) => lk
            .access_token(&account)
            .await
            .map_err(|e| Coded::from(e).into()),
    };
    target.close().await;
    let token = token?;
    anyhow::ensure!(!token.is_empty(), "no access token");
    // The one place a token is printed: on purpose, for scripts, to stdout only.
    println!("{}", token.expose());
    Ok(ExitCode::SUCCESS)
}

/// `latchkey config check`
pub fn config_check(paths: &Paths, path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = path.unwrap_or_else(|| paths.config_file());
    let config = Config::load_from(&path).map_err(|e| Coded {
        code: e.code().into(),
        message: e.to_string(),
    })?;
    println!(
        "{}: ok — {} account(s), {} service(s), proxy on {}",
        path.display(),
        config.accounts.len(),
        config.services.len(),
        config.proxy.listen
    );
    Ok(ExitCode::SUCCESS)
}

/// `latchkey gateway set-key` (key on stdin)
pub async fn gateway_set_key(paths: &Paths) -> anyhow::Result<ExitCode> {
    let key = read_stdin_secret("Auth Gateway API key")?;
    let target = Target::open(paths).await?;
    let result = match &target {
        Target::Remote(r) => r
            .post::<serde_json::Value>(
                "/v1/control/gateway-key",
                &serde_json::json!({ "key": key }),
            )
            .await
            .map(|_| ()),
        Target::Local(lk) => lk
            .set_gateway_api_key(Secret::new(key))
            .await
            .map_err(|e| Coded::from(e).into()),
    };
    target.close().await;
    result?;
    eprintln!("The Auth Gateway API key is stored in the keychain.");
    Ok(ExitCode::SUCCESS)
}

/// `latchkey secret set <service>` (`name=value` lines on stdin)
pub async fn secret_set(paths: &Paths, service: &str) -> anyhow::Result<ExitCode> {
    let text = read_stdin_secret("name=value lines")?;
    let mut values = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("each line must be name=value (the value is not shown here)")
        })?;
        values.insert(name.trim().to_owned(), value.to_owned());
    }
    let target = Target::open(paths).await?;
    let result = match &target {
        Target::Remote(r) => r
            .post::<serde_json::Value>(
                &format!("/v1/control/secret/{service}"),
                &serde_json::json!({ "values": values }),
            )
            .await
            .map(|_| ()),
        Target::Local(lk) => lk
            .set_manual_secret(service, &values)
            .await
            .map_err(|e| Coded::from(e).into()),
    };
    target.close().await;
    result?;
    eprintln!(
        "Stored {} value(s) for {service} in the keychain.",
        values.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `latchkey serve`
pub async fn serve(paths: &Paths, port: Option<u16>) -> anyhow::Result<ExitCode> {
    let lk = Latchkey::start(StartOptions {
        paths: paths.clone(),
        proxy_port: port,
        vault: None,
        serve_proxy: true,
    })
    .await
    .map_err(Coded::from)?;
    println!("Latchkey is serving on {} (Ctrl-C to stop)", lk.proxy_url());
    let overview = lk.overview();
    if !overview.keychain.ok {
        eprintln!(
            "warning: the keychain is not available: {}",
            overview
                .keychain
                .message
                .as_deref()
                .unwrap_or("unknown reason")
        );
    }
    shutdown_signal().await;
    eprintln!("Stopping…");
    lk.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Opens `url` in the system browser; false when no browser could be started.
pub(crate) fn open_browser(url: &str) -> bool {
    use std::process::{Command, Stdio};
    #[cfg(target_os = "macos")]
    let mut cmd = {
        let mut c = Command::new("open");
        c.arg(url);
        c
    };
    #[cfg(target_os = "windows")]
    let mut cmd = {
        let mut c = Command::new("rundll32");
        c.args(["url.dll,FileProtocolHandler", url]);
        c
    };
    #[cfg(all(unix, not(target_os = "macos")))]
    let mut cmd = {
        if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
            return false;
        }
        let mut c = Command::new("xdg-open");
        c.arg(url);
        c
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_why_the_last_login_failed_with_its_code() {
        let report = serde_json::json!({
            "now": 100,
            "accounts": [{
                "name": "work",
                "issuer": "https://idp.example.com",
                "state": { "kind": "logged_out" },
                "last_login_error": {
                    "code": "redirect_uri_not_registered",
                    "message": "the identity provider refuses the redirect URI `http://127.0.0.1:5000/oauth/callback`; register it",
                    "at": 90
                }
            }],
            "keychain": { "ok": true, "backend": "secret-service" },
        });
        let text = render_status(&report);
        assert!(
            text.contains("Last login failed [redirect_uri_not_registered]: the identity provider refuses the redirect URI `http://127.0.0.1:5000/oauth/callback`; register it"),
            "{text}"
        );
        let without = serde_json::json!({
            "now": 100,
            "accounts": [{ "name": "work", "issuer": "i", "state": { "kind": "logged_out" }, "last_login_error": null }],
        });
        assert!(!render_status(&without).contains("Last login failed"));
    }

    #[test]
    fn status_says_when_a_session_without_a_refresh_token_ends() {
        let user = serde_json::json!({ "subject": "a", "email": "alice@example.test" });
        let state = |renewable: bool| serde_json::json!({ "kind": "active", "user": user, "issued_at": 0, "expires_at": 3_000, "renewable": renewable });
        let once = describe_state(&state(false), 600);
        assert!(
            once.contains("session ends in 40 min") && once.contains("log in again then"),
            "{once}"
        );
        assert!(describe_state(&state(true), 600).contains("renewed automatically"));
    }
}
