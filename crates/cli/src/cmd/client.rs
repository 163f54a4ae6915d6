//! `latchkey client add/list/revoke/tokens/revoke-token`: local clients, the tokens MCP hosts use
//! to reach the proxy.

use std::process::ExitCode;

use latchkey_core::paths::Paths;
use latchkey_runtime::Control;
use latchkey_runtime::control::NewClient;

use super::table::{Listing, format_time};
use super::{print_json, with_target};
use crate::cli::ClientAction;
use crate::exit::Coded;

/// `latchkey client …`
pub async fn run(paths: &Paths, action: ClientAction) -> anyhow::Result<ExitCode> {
    with_target(paths, async |target| action_on(target, action).await).await
}

async fn action_on(target: &impl Control, action: ClientAction) -> anyhow::Result<ExitCode> {
    match action {
        ClientAction::Add {
            name,
            services,
            allow_raw_credentials,
        } => {
            let new = NewClient {
                name,
                services,
                allow_raw_credentials,
            };
            let created = target.create_client(&new).await.map_err(Coded::from)?;
            let (name, services) = (&new.name, new.services.join(", "));
            if allow_raw_credentials {
                eprintln!(
                    "`{name}` can read raw credentials of {services} at /v1/credentials/<service>."
                );
            }
            eprintln!(
                "Created client `{name}` for {services}. Its token is shown once; store it in your MCP host's configuration:"
            );
            println!("{}", created.token);
        }
        ClientAction::List { json } => {
            let clients = target.list_clients().await.map_err(Coded::from)?;
            if json {
                print_json(&clients)?;
            } else {
                let mut table =
                    Listing::new(&["NAME", "SERVICES", "CREATED", "LAST USED", "RIGHTS"], &[]);
                for c in clients {
                    let rights = if c.raw_credentials {
                        "can read raw credentials"
                    } else {
                        "proxy only"
                    };
                    table.row(vec![
                        c.name,
                        c.services.join(","),
                        format_time(Some(c.created_at)),
                        format_time(c.last_used_at),
                        rights.to_owned(),
                    ]);
                }
                print!("{}", table.render());
            }
        }
        ClientAction::Revoke { name } => {
            target.revoke_client(&name).await.map_err(Coded::from)?;
            eprintln!("Revoked client `{name}`; its tokens no longer work.");
        }
        ClientAction::Tokens { name, json } => {
            let tokens = target.client_tokens(&name).await.map_err(Coded::from)?;
            if json {
                print_json(&tokens)?;
            } else {
                println!(
                    "{:<32} {:<20} {:<20} EXPIRES",
                    "LABEL", "CREATED", "LAST USED"
                );
                for t in tokens {
                    let expires = match t.expires_at {
                        Some(at) => format_time(Some(at)),
                        None => "never".to_owned(),
                    };
                    println!(
                        "{:<32} {:<20} {:<20} {expires}",
                        t.label,
                        format_time(Some(t.created_at)),
                        format_time(t.last_used_at),
                    );
                }
            }
        }
        ClientAction::RevokeToken { name, label } => {
            target
                .revoke_client_token(&name, &label)
                .await
                .map_err(Coded::from)?;
            eprintln!(
                "Revoked the token `{label}` of client `{name}`; its other tokens still work."
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
