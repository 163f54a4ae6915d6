//! Local clients, the audit log and live connections.

use std::process::ExitCode;

use anyhow::Context;
use futures_util::StreamExt;
use reqwest::Method;

use latchkey_core::paths::Paths;
use latchkey_runtime::ClientOptions;
use latchkey_runtime::view::ActivityFilter;

use super::table::Listing;
use super::{Target, require_running};
use crate::cli::ClientAction;
use crate::exit::Coded;

/// `latchkey client …`
pub async fn run(paths: &Paths, action: ClientAction) -> anyhow::Result<ExitCode> {
    let target = Target::open(paths).await?;
    let result = client_action(&target, action).await;
    target.close().await;
    result
}

async fn client_action(target: &Target, action: ClientAction) -> anyhow::Result<ExitCode> {
    match action {
        ClientAction::Add {
            name,
            services,
            allow_raw_credentials,
        } => {
            let created: serde_json::Value = match target {
                Target::Remote(r) => {
                    r.post(
                        "/v1/control/clients",
                        &serde_json::json!({
                            "name": name,
                            "services": services,
                            "allow_raw_credentials": allow_raw_credentials,
                        }),
                    )
                    .await?
                }
                Target::Local(lk) => {
                    let mut options = ClientOptions::default();
                    options.allow_raw_credentials = allow_raw_credentials;
                    let created = lk
                        .create_client_with(&name, &services, &options)
                        .map_err(Coded::from)?;
                    serde_json::to_value(created).context("client")?
                }
            };
            if allow_raw_credentials {
                eprintln!(
                    "`{name}` can read raw credentials of {} at /v1/credentials/<service>.",
                    services.join(", ")
                );
            }
            eprintln!(
                "Created client `{name}` for {}. Its token is shown once; store it in your MCP host's configuration:",
                services.join(", ")
            );
            println!("{}", created["token"].as_str().unwrap_or_default());
        }
        ClientAction::List { json } => {
            let clients: serde_json::Value = match target {
                Target::Remote(r) => r.get("/v1/control/clients").await?,
                Target::Local(lk) => serde_json::to_value(lk.list_clients()).context("clients")?,
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&clients).context("json")?
                );
            } else {
                let mut table =
                    Listing::new(&["NAME", "SERVICES", "CREATED", "LAST USED", "RIGHTS"], &[]);
                for c in clients.as_array().into_iter().flatten() {
                    let services: Vec<&str> = c["services"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str())
                        .collect();
                    let rights = if c["raw_credentials"].as_bool() == Some(true) {
                        "can read raw credentials"
                    } else {
                        "proxy only"
                    };
                    table.row(vec![
                        c["name"].as_str().unwrap_or("?").to_owned(),
                        services.join(","),
                        format_time(c["created_at"].as_i64()),
                        format_time(c["last_used_at"].as_i64()),
                        rights.to_owned(),
                    ]);
                }
                print!("{}", table.render());
            }
        }
        ClientAction::Revoke { name } => {
            match target {
                Target::Remote(r) => {
                    r.call::<serde_json::Value>(
                        Method::DELETE,
                        &format!("/v1/control/clients/{name}"),
                        None::<&()>,
                        std::time::Duration::from_secs(10),
                    )
                    .await?;
                }
                Target::Local(lk) => lk.revoke_client(&name).map_err(Coded::from)?,
            }
            eprintln!("Revoked client `{name}`; its tokens no longer work.");
        }
        ClientAction::Tokens { name, json } => {
            let tokens: serde_json::Value = match target {
                Target::Remote(r) => r.get(&format!("/v1/control/clients/{name}/tokens")).await?,
                Target::Local(lk) => {
                    serde_json::to_value(lk.client_tokens(&name).map_err(Coded::from)?)
                        .context("tokens")?
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens).context("json")?);
            } else {
                println!(
                    "{:<32} {:<20} {:<20} EXPIRES",
                    "LABEL", "CREATED", "LAST USED"
                );
                for t in tokens.as_array().into_iter().flatten() {
                    let expires = match t["expires_at"].as_i64() {
                        Some(at) => format_time(Some(at)),
                        None => "never".to_owned(),
                    };
                    println!(
                        "{:<32} {:<20} {:<20} {expires}",
                        t["label"].as_str().unwrap_or("?"),
                        format_time(t["created_at"].as_i64()),
                        format_time(t["last_used_at"].as_i64()),
                    );
                }
            }
        }
        ClientAction::RevokeToken { name, label } => {
            match target {
                Target::Remote(r) => {
                    let label_in_path = path_segment(&label);
                    r.call::<serde_json::Value>(
                        Method::DELETE,
                        &format!("/v1/control/clients/{name}/tokens/{label_in_path}"),
                        None::<&()>,
                        std::time::Duration::from_secs(10),
                    )
                    .await?;
                }
                Target::Local(lk) => lk.revoke_client_token(&name, &label).map_err(Coded::from)?,
            }
            eprintln!(
                "Revoked the token `{label}` of client `{name}`; its other tokens still work."
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `latchkey log`: client traffic, plus the CLI's own control calls with `--control`.
pub async fn log(
    paths: &Paths,
    follow: bool,
    client: Option<String>,
    service: Option<String>,
    limit: u32,
    json: bool,
    control: bool,
) -> anyhow::Result<ExitCode> {
    let target = Target::open(paths).await?;
    let page: anyhow::Result<serde_json::Value> = match &target {
        Target::Remote(r) => {
            let mut q = vec![format!("limit={limit}")];
            if control {
                q.push("control=true".to_owned());
            }
            if let Some(c) = &client {
                q.push(format!(
                    "client={}",
                    url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
                ));
            }
            if let Some(s) = &service {
                q.push(format!(
                    "service={}",
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                ));
            }
            r.get(&format!("/v1/control/activity?{}", q.join("&")))
                .await
        }
        Target::Local(lk) => lk
            .query_activity(ActivityFilter {
                client: client.clone(),
                service: service.clone(),
                status: None,
                before_id: None,
                limit,
                include_control: control,
            })
            .await
            .map_err(|e| Coded::from(e).into())
            .and_then(|p| serde_json::to_value(p).context("page")),
    };
    let follow_from = match (&target, follow) {
        (Target::Remote(_), true) => true,
        (Target::Local(_), true) => {
            target.close().await;
            return Err(require_running(paths)
                .await
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("not running")));
        }
        _ => false,
    };
    let page = page?;
    let mut rows: Vec<serde_json::Value> = page["rows"].as_array().cloned().unwrap_or_default();
    rows.reverse();
    if json {
        for row in &rows {
            print_row(row, json);
        }
    } else {
        let mut table = Listing::new(LOG_HEADERS, LOG_RIGHT);
        for row in &rows {
            table.row(log_cells(row));
        }
        print!("{}", table.render());
    }
    if follow_from && let Target::Remote(r) = &target {
        let response = r
            .request(Method::GET, "/v1/control/activity/stream")
            .send()
            .await
            .context("following the audit log")?;
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.context("audit stream")?));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                for data in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                    if let Ok(row) = serde_json::from_str::<serde_json::Value>(data.trim()) {
                        let matches = (control || row["kind"] != "control")
                            && client.as_deref().is_none_or(|c| row["client"] == c)
                            && service.as_deref().is_none_or(|s| row["service"] == s);
                        if matches {
                            print_row(&row, json);
                        }
                    }
                }
            }
        }
    }
    target.close().await;
    Ok(ExitCode::SUCCESS)
}

const LOG_HEADERS: &[&str] = &[
    "TIME", "CLIENT", "SERVICE", "METHOD", "CODE", "BYTES", "MS", "PATH",
];
const LOG_RIGHT: &[usize] = &[4, 5, 6];

/// One row of `latchkey log --follow` as it arrives: JSON, or a line of its own.
fn print_row(row: &serde_json::Value, json: bool) {
    if json {
        println!("{row}");
        return;
    }
    let mut table = Listing::bare(0);
    table.row(log_cells(row));
    print!("{}", table.render());
}

fn log_cells(row: &serde_json::Value) -> Vec<String> {
    let bytes = row["bytes_in"].as_u64().unwrap_or(0) + row["bytes_out"].as_u64().unwrap_or(0);
    let mut path = row["path"].as_str().unwrap_or("").to_owned();
    if let Some(code) = row["error_code"].as_str() {
        path.push_str(&format!("  [{code}]"));
    }
    if row["kind"] == "control" {
        path.push_str("  (control)");
    }
    vec![
        format_time(row["time"].as_i64().map(|ms| ms / 1000)),
        row["client"].as_str().unwrap_or("-").to_owned(),
        row["service"].as_str().unwrap_or("-").to_owned(),
        row["method"].as_str().unwrap_or("?").to_owned(),
        row["status"].as_u64().unwrap_or(0).to_string(),
        bytes.to_string(),
        row["duration_ms"].as_u64().unwrap_or(0).to_string(),
        path,
    ]
}

/// `latchkey connections`
pub async fn connections(
    paths: &Paths,
    close: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let remote = require_running(paths).await?;
    if let Some(id) = close {
        remote
            .call::<serde_json::Value>(
                Method::DELETE,
                &format!("/v1/control/connections/{id}"),
                None::<&()>,
                std::time::Duration::from_secs(10),
            )
            .await?;
        eprintln!("Closed connection {id}.");
        return Ok(ExitCode::SUCCESS);
    }
    let list: serde_json::Value = remote.get("/v1/control/connections").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list).context("json")?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Listing::new(
        &[
            "ID", "CLIENT", "SERVICE", "KIND", "STARTED", "IN", "OUT", "EVENTS",
        ],
        &[5, 6, 7],
    );
    for c in list.as_array().into_iter().flatten() {
        table.row(vec![
            c["id"].as_str().unwrap_or("?").to_owned(),
            c["client"].as_str().unwrap_or("?").to_owned(),
            c["service"].as_str().unwrap_or("?").to_owned(),
            c["kind"].as_str().unwrap_or("?").to_owned(),
            format_time(c["started_at"].as_i64()),
            c["bytes_in"].as_u64().unwrap_or(0).to_string(),
            c["bytes_out"].as_u64().unwrap_or(0).to_string(),
            c["events"].as_u64().unwrap_or(0).to_string(),
        ]);
    }
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

fn format_time(unix: Option<i64>) -> String {
    let Some(t) = unix.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok()) else {
        return "-".to_owned();
    };
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(&format).unwrap_or_else(|_| "-".to_owned())
}

/// `text` percent-encoded as one URL path segment (a label may hold spaces or slashes).
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
