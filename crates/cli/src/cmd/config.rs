//! `latchkey config check` (is the file valid?) and `latchkey config init`: a first
//! configuration from a terminal. With flags `init` runs once (scripts, provisioning); on a terminal without them it asks, shows what the provider
//! answered, and asks again after a mistake. Nothing is written before the text is valid and the
//! person (or the flags) said so.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use latchkey_core::Code;
use latchkey_core::config::Config;
use latchkey_core::config::init::{self, ConnectRequest, Draft, InitError};
use latchkey_core::paths::Paths;

use crate::cli::InitArgs;
use crate::exit::Coded;

/// `latchkey config check`
pub fn check(paths: &Paths, path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = path.unwrap_or_else(|| paths.config_file());
    let config = Config::load_from(&path).map_err(|e| Coded {
        code: e.code(),
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

/// `latchkey config init`
pub async fn init(paths: &Paths, args: InitArgs) -> anyhow::Result<ExitCode> {
    let path = args.path.clone().unwrap_or_else(|| paths.config_file());
    if !args.force && path.exists() {
        return Err(coded(InitError::Exists { path }));
    }
    let http = init::http_client().map_err(coded)?;
    let interactive = args.issuer.is_none() && args.from.is_none();
    let draft = if let Some(from) = &args.from {
        init::import(&http, from, args.allow_insecure_http)
            .await
            .map_err(coded)?
    } else if let (Some(issuer), Some(client_id)) = (&args.issuer, &args.client_id) {
        let request = ConnectRequest {
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            gateway_url: args.gateway_url.clone(),
            audience: args.audience.clone(),
            allow_insecure_http: args.allow_insecure_http,
        };
        init::connect(&http, &request).await.map_err(coded)?
    } else if std::io::stdin().is_terminal() {
        match ask(&http, &path, args.allow_insecure_http).await? {
            Some(draft) => draft,
            None => {
                eprintln!("Nothing written.");
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        return Err(Coded {
            code: Code::InvalidInput,
            message: "no terminal to ask on: pass --issuer URL --client-id ID (and optionally --gateway-url URL), or --from FILE_OR_URL".into(),
        }
        .into());
    };
    show(&draft);
    if interactive && !confirm(&format!("Write this configuration to {}?", path.display()))? {
        eprintln!("Nothing written.");
        return Ok(ExitCode::FAILURE);
    }
    let written = init::write_config(&path, &draft.toml, args.force).map_err(coded)?;
    println!("Wrote {}", written.path.display());
    if let Some(backup) = written.backup {
        println!("The previous file is kept as {}", backup.display());
    }
    println!("Next: `latchkey login`");
    if draft.summary.gateway_url.is_some() {
        println!(
            "Then store the Auth Gateway API key: `latchkey gateway set-key` (reads it from stdin)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The prompts: connect or import, then the fields, until the provider (or the file) is
/// acceptable or the person gives up (an empty answer or end of input).
async fn ask(
    http: &reqwest::Client,
    path: &std::path::Path,
    allow_insecure_http: bool,
) -> anyhow::Result<Option<Draft>> {
    eprintln!("Latchkey has no configuration yet ({}).", path.display());
    eprintln!("  1) Connect to your organisation (issuer URL and client id)");
    eprintln!("  2) Import a configuration file or https URL from an administrator");
    let import = loop {
        match prompt("Choose 1 or 2 [1]")?.as_deref() {
            None => return Ok(None),
            Some("" | "1") => break false,
            Some("2") => break true,
            Some(_) => eprintln!("Type 1 or 2."),
        }
    };
    loop {
        let result = if import {
            let Some(source) = prompt("File path or https:// URL")?.filter(|s| !s.is_empty())
            else {
                return Ok(None);
            };
            init::import(http, &source, allow_insecure_http).await
        } else {
            let Some(issuer) = prompt("Issuer URL")?.filter(|s| !s.is_empty()) else {
                return Ok(None);
            };
            let Some(client_id) = prompt("Client ID")? else {
                return Ok(None);
            };
            let gateway_url = prompt("Auth Gateway URL (optional, Enter to skip)")?;
            let request = ConnectRequest {
                issuer,
                client_id,
                gateway_url,
                audience: None,
                allow_insecure_http,
            };
            eprintln!("Checking the identity provider…");
            init::connect(http, &request).await
        };
        match result {
            Ok(draft) => return Ok(Some(draft)),
            Err(e) => eprintln!(
                "error [{}]: {e}\nTry again (an empty answer stops).",
                e.code()
            ),
        }
    }
}

/// Prints what the configuration holds and what the provider answered.
fn show(draft: &Draft) {
    if let Some(p) = &draft.provider {
        println!("Identity provider {} answered:", p.issuer);
        println!("  sign-in:    {}", p.authorization_endpoint);
        println!("  tokens:     {}", p.token_endpoint);
        println!("  keys:       {}", p.jwks_uri);
        if let Some(r) = &p.revocation_endpoint {
            println!("  revocation: {r}");
        }
        if !p.pkce_methods.is_empty() {
            println!("  PKCE:       {}", p.pkce_methods.join(", "));
        }
        println!("  scopes:     {}", p.scopes.join(" "));
        println!("  client id:  {}", p.client_check);
    }
    for a in &draft.summary.accounts {
        println!(
            "Account `{}`: {} (client id `{}`)",
            a.name, a.issuer, a.client_id
        );
    }
    if let Some(g) = &draft.summary.gateway_url {
        println!("Auth Gateway: {g}");
    }
    for s in &draft.summary.services {
        println!("Service `{}`: {} via {}", s.name, s.upstream, s.source);
    }
    for s in &draft.summary.servers {
        println!("MCP server `{s}`");
    }
}

/// One line from stdin after a prompt on stderr; `None` at end of input.
fn prompt(question: &str) -> anyhow::Result<Option<String>> {
    eprint!("{question}: ");
    std::io::stderr().flush().context("writing the prompt")?;
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok((read > 0).then(|| line.trim().to_owned()))
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    Ok(matches!(
        prompt(&format!("{question} [Y/n]"))?.as_deref(),
        Some("" | "y" | "Y" | "yes")
    ))
}

fn coded(e: InitError) -> anyhow::Error {
    Coded {
        code: e.code(),
        message: e.to_string(),
    }
    .into()
}
