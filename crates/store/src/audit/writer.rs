//! The audit writer thread: drains the queue in batches, one transaction per batch, then
//! publishes the committed rows and answers flush requests; enforces retention as it goes.

use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{AuditEvent, AuditRow, Command, Retention, Shared};

/// Most events committed in one transaction.
const BATCH: usize = 1024;

/// How long the writer lets events gather after the first one arrives, so that under load one
/// transaction (and one WAL commit) carries hundreds of rows instead of a handful, and senders
/// rarely have to wake a parked writer. The price is that a row reaches `subscribe` and `flush`
/// at most this much later.
const LINGER: Duration = Duration::from_millis(10);

/// Wall-clock now, unix milliseconds.
pub(super) fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// The thread body. Returns when every sender is gone and the queue is empty.
pub(super) fn run(
    mut rx: mpsc::Receiver<Command>,
    shared: &Shared,
    retention: Retention,
    prune_every: u64,
) {
    let mut events: Vec<AuditEvent> = Vec::with_capacity(BATCH);
    let mut waiters = Vec::new();
    let mut since_prune = 0u64;
    while let Some(first) = rx.blocking_recv() {
        std::thread::sleep(LINGER);
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Record(event) => events.push(event),
                Command::Flush(done) => waiters.push(done),
            }
            if events.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !events.is_empty() {
            let count = events.len() as u64;
            match shared.db.write(|conn| insert(conn, &mut events)) {
                Ok(rows) => {
                    for row in rows {
                        // No subscriber is not an error.
                        let _ = shared.live.send(row);
                    }
                }
                Err(e) => {
                    events.clear();
                    warn!(error = %e, "audit batch not written");
                    shared.lost(count, "audit events lost in a failed write");
                }
            }
            since_prune += count;
            if since_prune >= prune_every {
                since_prune = 0;
                match shared.db.write(|conn| prune(conn, retention, now_ms())) {
                    Ok(0) => {}
                    Ok(n) => debug!(deleted = n, "audit retention applied"),
                    Err(e) => warn!(error = %e, "audit retention not applied"),
                }
            }
        }
        for done in waiters.drain(..) {
            // The flusher may have given up waiting; nothing to do then.
            let _ = done.send(());
        }
    }
    debug!("audit writer stopped");
}

/// Inserts and drains `events` in one transaction; returns the committed rows.
fn insert(conn: &mut Connection, events: &mut Vec<AuditEvent>) -> rusqlite::Result<Vec<AuditRow>> {
    let tx = conn.transaction()?;
    let mut rows = Vec::with_capacity(events.len());
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO audit (time, client, service, method, path, status, bytes_in, bytes_out, duration_ms, error_code, kind)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for e in events.drain(..) {
            stmt.execute((
                e.time,
                e.client.as_deref(),
                e.service.as_deref(),
                e.method.as_str(),
                e.path.as_str(),
                e.status,
                clamp(e.bytes_in),
                clamp(e.bytes_out),
                clamp(e.duration_ms),
                e.error_code.as_deref(),
                e.kind.as_str(),
            ))?;
            rows.push(AuditRow::new(tx.last_insert_rowid(), e));
        }
    }
    tx.commit()?;
    Ok(rows)
}

/// SQLite integers are signed; counters beyond `i64::MAX` are recorded as `i64::MAX`.
fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Deletes rows older than `max_age` and beyond the newest `max_rows`; returns how many.
///
/// Ids only grow (`AUTOINCREMENT`) and rows only leave from the old end, so "beyond the newest
/// `max_rows`" is `id <= max(id) - max_rows`: two index seeks, where counting back with
/// `OFFSET max_rows` would walk the whole kept range on every prune.
pub(super) fn prune(
    conn: &mut Connection,
    retention: Retention,
    now_ms: i64,
) -> rusqlite::Result<usize> {
    let max_age_ms = i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_ms.saturating_sub(max_age_ms);
    let keep = i64::try_from(retention.max_rows).unwrap_or(i64::MAX);
    let tx = conn.transaction()?;
    let by_age = tx.execute("DELETE FROM audit WHERE time < ?1", [cutoff])?;
    let by_rows = tx.execute(
        "DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?1",
        [keep],
    )?;
    tx.commit()?;
    Ok(by_age + by_rows)
}
