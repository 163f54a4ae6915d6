//! `latchkey status`: accounts and their sessions, remote MCP servers, services, keychain, proxy
//! and local clients, as text or JSON.

use std::fmt::Write;
use std::process::ExitCode;

use anyhow::Context;

use latchkey_core::paths::Paths;
use latchkey_runtime::Control;
use latchkey_runtime::control::StatusReport;
use latchkey_runtime::tray::{format_remaining, session_line};
use latchkey_runtime::view::{ConfigState, ConfigView};

use super::server::render_servers;
use super::table::{Listing, wire_name};
use super::with_target;
use crate::exit::Coded;

/// `latchkey status`
pub async fn run(paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    let (report, running) = with_target(paths, async |target| {
        let report = target.status().await.map_err(Coded::from)?;
        Ok((report, target.is_running()))
    })
    .await?;
    if json {
        let mut value = serde_json::to_value(&report).context("status")?;
        value["running"] = running.into();
        println!("{}", serde_json::to_string_pretty(&value).context("json")?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&report, running));
    Ok(ExitCode::SUCCESS)
}

/// The configuration file's state, when it is not simply in force: missing, refused (with
/// `file:line`, what is wrong and the fix; the previous configuration stays in force), or
/// changed in a way that needs a restart.
fn config_line(c: &ConfigView) -> String {
    let path = &c.path;
    let mut out = match (c.state, &c.error) {
        (ConfigState::Missing, _) => format!(
            "Configuration: none yet at {path}; set Latchkey up in its window or run `latchkey config init`\n"
        ),
        (ConfigState::Invalid, error) => {
            let (line, message, fix) = error.as_ref().map_or((0, "?", "?"), |e| {
                (e.line, e.message.as_str(), e.fix.as_str())
            });
            format!(
                "Configuration error: {path}:{line}: {message}\n  fix: {fix}\n  (the last valid configuration stays in force until the file is fixed)\n"
            )
        }
        (ConfigState::Loaded, _) => String::new(),
    };
    if let Some(note) = &c.restart_needed {
        let _ = writeln!(out, "Configuration: {note}");
    }
    out
}

fn render(r: &StatusReport, running: bool) -> String {
    let o = &r.overview;
    let now = o.now;
    let mut out = config_line(&o.config);
    for a in &o.accounts {
        let _ = writeln!(out, "Account {} ({})", a.name, a.issuer);
        let _ = writeln!(out, "  {}", session_line(&a.state, now));
        if let Some(failure) = &a.last_login_error {
            let _ = writeln!(
                out,
                "  Last login failed [{}]: {}",
                failure.code, failure.message
            );
        }
        if let Some(failure) = &a.refresh_failure {
            let attempts = match failure.attempts {
                1 => "1 attempt".to_owned(),
                n => format!("{n} attempts"),
            };
            let _ = writeln!(
                out,
                "  Renewal failing for {} ({attempts}) [{}]: {}; requests keep working until the session expires, and Latchkey keeps trying",
                format_remaining(now - failure.since),
                failure.code,
                failure.message
            );
        }
    }
    out.push_str(&render_servers(&o.servers, now));
    if !o.services.is_empty() {
        let _ = writeln!(out, "Services");
        let mut table = Listing::bare(2);
        for s in &o.services {
            let mut source = s.source.to_owned();
            if let Some(exp) = s.expires_at {
                let _ = write!(source, ", usable for {}", format_remaining(exp - now));
            }
            if let Some(msg) = &s.message {
                let _ = write!(source, " — {msg}");
            }
            table.row(vec![s.name.clone(), wire_name(s.state), source]);
        }
        out.push_str(&table.render());
    }
    let k = &o.keychain;
    let _ = writeln!(
        out,
        "Keychain: {} ({}){}",
        if k.ok { "ok" } else { "NOT AVAILABLE" },
        k.backend,
        k.message
            .as_deref()
            .map(|m| format!(" — {m}"))
            .unwrap_or_default()
    );
    if running {
        let _ = writeln!(out, "Proxy: {} (running)", o.proxy.url);
    } else {
        let _ = writeln!(
            out,
            "Proxy: not running (start the tray app or `latchkey serve`)"
        );
    }
    let _ = writeln!(out, "Local clients: {}", r.clients.len());
    if o.activity_lost > 0 {
        let _ = writeln!(
            out,
            "Activity log: {} request{} since start not recorded (served, but the log could not be written: a full disk or a database error)",
            o.activity_lost,
            if o.activity_lost == 1 { "" } else { "s" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(accounts: serde_json::Value) -> StatusReport {
        serde_json::from_value(serde_json::json!({
            "now": 100,
            "accounts": accounts,
            "services": [],
            "servers": [],
            "proxy": { "url": "http://127.0.0.1:5000", "listening": true, "error": null },
            "keychain": { "ok": true, "backend": "secret-service", "message": null },
            "config": { "state": "loaded", "path": "/c/config.toml" },
            "clients": [],
        }))
        .expect("a status report")
    }

    #[test]
    fn status_says_when_the_activity_log_lost_rows() {
        let mut r = report(serde_json::json!([]));
        assert!(
            !render(&r, true).contains("Activity log"),
            "nothing lost, nothing said"
        );
        r.overview.activity_lost = 3;
        let text = render(&r, true);
        assert!(
            text.contains("Activity log: 3 requests since start not recorded"),
            "{text}"
        );
    }

    #[test]
    fn status_says_when_renewal_keeps_failing_and_that_the_session_still_works() {
        let account = |failure: serde_json::Value| {
            serde_json::json!([{
                "name": "work", "issuer": "https://idp.example.com/",
                "state": { "kind": "active", "user": { "subject": "u1", "name": null, "email": null }, "expires_at": 1900, "issued_at": 0, "renewable": true },
                "last_login_error": null, "login_requested": null, "refresh_failure": failure,
            }])
        };
        let text = render(&report(account(serde_json::Value::Null)), true);
        assert!(
            !text.contains("Renewal failing"),
            "no failure, no line: {text}"
        );
        let text = render(
            &report(account(serde_json::json!({
                "code": "idp_unreachable",
                "message": "the identity provider is unreachable (request failed (127.0.0.1)); check your network and try again",
                "since": 40, "at": 95, "attempts": 3,
            }))),
            true,
        );
        assert!(
            text.contains("  Renewal failing for 1 min (3 attempts) [idp_unreachable]: the identity provider is unreachable"),
            "{text}"
        );
        assert!(
            text.contains("requests keep working until the session expires"),
            "{text}"
        );
    }

    #[test]
    fn status_shows_why_the_last_login_failed_with_its_code() {
        let text = render(
            &report(serde_json::json!([{
                "name": "work",
                "issuer": "https://idp.example.com",
                "state": { "kind": "logged_out" },
                "last_login_error": {
                    "code": "redirect_uri_not_registered",
                    "message": "the identity provider refuses the redirect URI `http://127.0.0.1:5000/oauth/callback`; register it",
                    "at": 90
                },
                "login_requested": null
            }])),
            true,
        );
        assert!(
            text.contains("Last login failed [redirect_uri_not_registered]: the identity provider refuses the redirect URI `http://127.0.0.1:5000/oauth/callback`; register it"),
            "{text}"
        );
        let without = report(serde_json::json!([{
            "name": "work", "issuer": "i", "state": { "kind": "logged_out" },
            "last_login_error": null, "login_requested": null
        }]));
        let text = render(&without, false);
        assert!(!text.contains("Last login failed"), "{text}");
        assert!(
            text.contains("Not signed in · run `latchkey login`"),
            "{text}"
        );
        assert!(text.contains("Proxy: not running"), "{text}");
    }
}
