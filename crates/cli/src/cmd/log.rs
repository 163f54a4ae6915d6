//! `latchkey log`: the audit log (client traffic, plus the command's own control calls with
//! `--control`), newest last, and with `--follow` the rows as the running instance writes them.

use std::process::ExitCode;

use futures_util::StreamExt;

use latchkey_core::paths::Paths;
use latchkey_runtime::AuditKind;
use latchkey_runtime::control::ActivityEvent;
use latchkey_runtime::view::ActivityFilter;
use latchkey_runtime::{AuditRow, Control};

use super::table::{Listing, format_time};
use super::{Target, require_running};
use crate::exit::Coded;

const LOG_HEADERS: &[&str] = &[
    "TIME", "CLIENT", "SERVICE", "METHOD", "CODE", "BYTES", "MS", "PATH",
];
const LOG_RIGHT: &[usize] = &[4, 5, 6];

/// `latchkey log`
pub async fn run(
    paths: &Paths,
    filter: ActivityFilter,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let target = Target::open(paths).await?;
    let page = target.query_activity(filter.clone()).await;
    if follow && !target.is_running() {
        // Only a running instance writes new rows.
        target.close().await;
        return Err(require_running(paths)
            .await
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("not running")));
    }
    let result = show(&target, page, &filter, follow, json).await;
    target.close().await;
    result
}

async fn show(
    target: &Target,
    page: Result<latchkey_runtime::AuditPage, latchkey_runtime::RuntimeError>,
    filter: &ActivityFilter,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut rows = page.map_err(Coded::from)?.rows;
    rows.reverse();
    if json {
        for row in &rows {
            print_row(row, json);
        }
    } else {
        let mut table = Listing::new(LOG_HEADERS, LOG_RIGHT);
        for row in &rows {
            table.row(cells(row));
        }
        print!("{}", table.render());
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut events = target.follow_activity().await.map_err(Coded::from)?;
    while let Some(event) = events.next().await {
        match event.map_err(Coded::from)? {
            ActivityEvent::Row(row) if matches(&row, filter) => print_row(&row, json),
            ActivityEvent::Row(_) => {}
            ActivityEvent::Lagged(n) => {
                tracing::warn!(missed = n, "the audit stream went on without this reader");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a followed row passes the filter the first page was read with.
fn matches(row: &AuditRow, filter: &ActivityFilter) -> bool {
    (filter.include_control || row.kind != AuditKind::Control)
        && filter
            .client
            .as_deref()
            .is_none_or(|c| row.client.as_deref() == Some(c))
        && filter
            .service
            .as_deref()
            .is_none_or(|s| row.service.as_deref() == Some(s))
}

/// One row of `latchkey log --follow` as it arrives: JSON, or a line of its own.
fn print_row(row: &AuditRow, json: bool) {
    if json {
        match serde_json::to_value(row) {
            Ok(value) => println!("{value}"),
            Err(e) => tracing::warn!(error = %e, "audit row not printable"),
        }
        return;
    }
    let mut table = Listing::bare(0);
    table.row(cells(row));
    print!("{}", table.render());
}

fn cells(row: &AuditRow) -> Vec<String> {
    let mut path = row.path.clone();
    if let Some(code) = &row.error_code {
        path.push_str(&format!("  [{code}]"));
    }
    if row.kind == AuditKind::Control {
        path.push_str("  (control)");
    }
    vec![
        format_time(Some(row.time / 1000)),
        row.client.clone().unwrap_or_else(|| "-".to_owned()),
        row.service.clone().unwrap_or_else(|| "-".to_owned()),
        row.method.clone(),
        row.status.to_string(),
        (row.bytes_in + row.bytes_out).to_string(),
        row.duration_ms.to_string(),
        path,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: AuditKind, client: &str) -> AuditRow {
        AuditRow {
            id: 1,
            kind,
            time: 1_000,
            client: Some(client.to_owned()),
            service: Some("github".to_owned()),
            method: "GET".to_owned(),
            path: "/user".to_owned(),
            status: 200,
            bytes_in: 0,
            bytes_out: 10,
            duration_ms: 3,
            error_code: None,
        }
    }

    #[test]
    fn followed_rows_pass_the_same_filter_as_the_first_page() {
        let filter = ActivityFilter {
            client: Some("cursor".to_owned()),
            limit: 50,
            ..ActivityFilter::default()
        };
        assert!(matches(&row(AuditKind::Client, "cursor"), &filter));
        assert!(
            !matches(&row(AuditKind::Client, "claude"), &filter),
            "another client"
        );
        assert!(
            !matches(&row(AuditKind::Control, "cursor"), &filter),
            "the command's own calls only with --control"
        );
        let with_control = ActivityFilter {
            include_control: true,
            ..filter
        };
        assert!(matches(&row(AuditKind::Control, "cursor"), &with_control));
    }
}
