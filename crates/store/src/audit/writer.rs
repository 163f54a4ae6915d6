//! The audit writer thread: drains the queue in batches, one transaction per batch, then
//! publishes the committed rows and answers flush requests; enforces retention as it goes.

use std::time::Duration;

use latchkey_core::clock::unix_millis;
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
            match shared.db.write(|conn| insert(conn, &events)) {
                Ok(first) => {
                    // Rows are built only for a live view that is subscribed now: one that
                    // subscribes later reads these from the table, where they already are.
                    if shared.live.receiver_count() > 0 {
                        for (event, id) in events.drain(..).zip(first..) {
                            // A view that went away meanwhile is not an error.
                            let _ = shared.live.send(AuditRow::new(id, event));
                        }
                    }
                    events.clear();
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
                match shared
                    .db
                    .write(|conn| prune(conn, retention, unix_millis()))
                {
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

/// Rows per `INSERT` statement, largest first: a batch goes in as chunks of these sizes, so six
/// statements at most are ever prepared (and cached). One statement of many rows runs its program
/// and updates `sqlite_sequence` (the `AUTOINCREMENT` high-water mark) once for all of them, not
/// once per row.
const CHUNKS: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// Columns bound per row.
const COLUMNS: usize = 11;

/// The `INSERT` of `CHUNKS[i]` rows.
fn insert_sql(i: usize) -> &'static str {
    static SQL: std::sync::OnceLock<[String; CHUNKS.len()]> = std::sync::OnceLock::new();
    &SQL.get_or_init(|| {
        CHUNKS.map(|rows| {
            let one = format!("({})", ["?"; COLUMNS].join(", "));
            format!(
                "INSERT INTO audit (time, client, service, method, path, status, bytes_in, bytes_out, duration_ms, error_code, kind) VALUES {}",
                vec![one; rows].join(", ")
            )
        })
    })[i]
}

/// Inserts `events` in one transaction; returns the id of the first. The rows of a batch take
/// consecutive ids in order: with `AUTOINCREMENT` each new id is one above the largest ever
/// used, and this transaction is the only writer.
fn insert(conn: &mut Connection, events: &[AuditEvent]) -> rusqlite::Result<i64> {
    let tx = conn.transaction()?;
    let mut pending = events;
    for (i, &size) in CHUNKS.iter().enumerate() {
        while pending.len() >= size {
            let (chunk, rest) = pending.split_at(size);
            let mut stmt = tx.prepare_cached(insert_sql(i))?;
            for (row, e) in chunk.iter().enumerate() {
                bind(&mut stmt, row * COLUMNS, e)?;
            }
            stmt.raw_execute()?;
            pending = rest;
        }
    }
    let last = tx.last_insert_rowid();
    tx.commit()?;
    Ok(last - (events.len() as i64 - 1))
}

/// Binds one event's columns, the `row`-th of its statement (parameters from `at + 1`).
fn bind(
    stmt: &mut rusqlite::CachedStatement<'_>,
    at: usize,
    e: &AuditEvent,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(at + 1, e.time)?;
    stmt.raw_bind_parameter(at + 2, e.client.as_deref())?;
    stmt.raw_bind_parameter(at + 3, e.service.as_deref())?;
    stmt.raw_bind_parameter(at + 4, e.method.as_ref())?;
    stmt.raw_bind_parameter(at + 5, e.path.as_str())?;
    stmt.raw_bind_parameter(at + 6, e.status)?;
    stmt.raw_bind_parameter(at + 7, clamp(e.bytes_in))?;
    stmt.raw_bind_parameter(at + 8, clamp(e.bytes_out))?;
    stmt.raw_bind_parameter(at + 9, clamp(e.duration_ms))?;
    stmt.raw_bind_parameter(at + 10, e.error_code.as_deref())?;
    stmt.raw_bind_parameter(at + 11, e.kind.as_str())
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
