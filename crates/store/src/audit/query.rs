//! The SQL behind [`super::AuditLog::query`]: filters become indexed `WHERE` terms, newest first,
//! keyset-paged by id.

use rusqlite::Connection;
use rusqlite::types::Value;

use super::{AuditFilter, AuditKind, AuditPage, AuditRow, DEFAULT_PAGE, MAX_PAGE};

const COLUMNS: &str = "SELECT id, time, client, service, method, path, status, bytes_in, bytes_out, duration_ms, error_code, kind FROM audit";

/// One page. Reads one row more than asked to know whether another page follows.
pub(super) fn page(conn: &Connection, filter: &AuditFilter) -> rusqlite::Result<AuditPage> {
    let limit = match filter.limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let mut terms: Vec<&str> = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    if let Some(kind) = filter.kind {
        terms.push("kind = ?");
        params.push(Value::Text(kind.as_str().to_owned()));
    }
    if let Some(client) = &filter.client {
        terms.push("client = ?");
        params.push(Value::Text(client.clone()));
    }
    if let Some(service) = &filter.service {
        terms.push("service = ?");
        params.push(Value::Text(service.clone()));
    }
    if let Some(class) = filter.status {
        let (lo, hi) = class.range();
        terms.push("status BETWEEN ? AND ?");
        params.push(Value::Integer(lo.into()));
        params.push(Value::Integer(hi.into()));
    }
    if let Some(before) = filter.before_id {
        terms.push("id < ?");
        params.push(Value::Integer(before));
    }
    params.push(Value::Integer(i64::from(limit) + 1));
    let mut sql = String::from(COLUMNS);
    if !terms.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&terms.join(" AND "));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");

    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows: Vec<AuditRow> = stmt
        .query_map(rusqlite::params_from_iter(params), |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                time: r.get(1)?,
                client: r.get(2)?,
                service: r.get(3)?,
                method: r.get(4)?,
                path: r.get(5)?,
                status: u16::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
                bytes_in: unsigned(r.get(7)?),
                bytes_out: unsigned(r.get(8)?),
                duration_ms: unsigned(r.get(9)?),
                error_code: r.get(10)?,
                kind: AuditKind::from_stored(&r.get::<_, String>(11)?),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_before_id = if more {
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok(AuditPage {
        rows,
        next_before_id,
    })
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
