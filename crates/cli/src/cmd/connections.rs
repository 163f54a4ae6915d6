//! `latchkey connections`: the live proxied connections of the running instance, or close one.

use std::process::ExitCode;

use latchkey_core::paths::Paths;
use latchkey_runtime::Control;

use super::table::{Listing, format_time};
use super::{print_json, require_running};
use crate::exit::Coded;

/// `latchkey connections [--close ID] [--json]`
pub async fn run(paths: &Paths, close: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let remote = require_running(paths).await?;
    if let Some(id) = close {
        remote.close_connection(&id).await.map_err(Coded::from)?;
        eprintln!("Closed connection {id}.");
        return Ok(ExitCode::SUCCESS);
    }
    let list = remote.list_connections().await.map_err(Coded::from)?;
    if json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Listing::new(
        &[
            "ID", "CLIENT", "SERVICE", "KIND", "STARTED", "IN", "OUT", "EVENTS",
        ],
        &[5, 6, 7],
    );
    for c in list {
        table.row(vec![
            c.id,
            c.client,
            c.service,
            c.kind.as_str().to_owned(),
            format_time(Some(c.started_at)),
            c.bytes_in.to_string(),
            c.bytes_out.to_string(),
            c.events.to_string(),
        ]);
    }
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}
