//! The audit log: record → flush → query, filters, paging, sanitising, retention, live follow,
//! concurrency.

use std::collections::HashSet;
use std::time::Duration;

use latchkey_store::{
    AuditEvent, AuditFilter, AuditKind, AuditLog, AuditOptions, AuditRow, Database, MAX_PAGE,
    Retention, StatusClass,
};

use crate::{contains, disk_bytes, temp_db};

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).expect("fits")
}

fn event(client: &str, service: &str, status: u16, path: &str) -> AuditEvent {
    AuditEvent {
        kind: AuditKind::Client,
        time: now_ms(),
        client: Some(client.into()),
        service: Some(service.into()),
        method: "POST".into(),
        path: path.to_owned(),
        status,
        bytes_in: 12,
        bytes_out: 345,
        duration_ms: 6,
        error_code: (status >= 400).then(|| "upstream_unreachable".to_owned()),
    }
}

fn memory_log() -> AuditLog {
    AuditLog::open(
        &Database::open_in_memory().expect("db"),
        Retention::default(),
    )
    .expect("log")
}

/// Records `n` answered requests of client `a` to service `x`, at `/{prefix}/0`, `/{prefix}/1`, …
fn record_paths(log: &AuditLog, prefix: &str, n: usize) {
    for i in 0..n {
        log.record(event("a", "x", 200, &format!("/{prefix}/{i}")));
    }
}

/// Every row, newest first, by walking pages.
async fn all_rows(log: &AuditLog, mut filter: AuditFilter) -> Vec<AuditRow> {
    filter.limit = MAX_PAGE;
    let mut out = Vec::new();
    loop {
        let page = log.query(&filter).await.expect("query");
        out.extend(page.rows);
        match page.next_before_id {
            Some(id) => filter.before_id = Some(id),
            None => return out,
        }
    }
}

#[tokio::test]
async fn recorded_events_are_queryable_with_each_filter() {
    let log = memory_log();
    // 30 events: clients a/b/c in turn, services x/y alternating, statuses 200/302/404/502 in turn.
    let statuses = [200, 302, 404, 502];
    for i in 0..30usize {
        let client = ["a", "b", "c"][i % 3];
        let service = ["x", "y"][i % 2];
        log.record(event(client, service, statuses[i % 4], &format!("/n/{i}")));
    }
    log.flush().await;

    let all = all_rows(&log, AuditFilter::default()).await;
    assert_eq!(all.len(), 30);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].path, "/n/29");
    assert_eq!(
        (
            all[0].method.as_str(),
            all[0].bytes_in,
            all[0].bytes_out,
            all[0].duration_ms
        ),
        ("POST", 12, 345, 6)
    );

    let by = |f: AuditFilter| async { all_rows(&log, f).await };
    let a = by(AuditFilter {
        client: Some("a".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(a.len(), 10);
    assert!(a.iter().all(|r| r.client.as_deref() == Some("a")));
    let y = by(AuditFilter {
        service: Some("y".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(y.len(), 15);
    assert!(y.iter().all(|r| r.service.as_deref() == Some("y")));
    let ok = by(AuditFilter {
        status: Some(StatusClass::Ok),
        ..Default::default()
    })
    .await;
    assert_eq!(ok.len(), 16, "200 and 302 count as ok");
    let client_err = by(AuditFilter {
        status: Some(StatusClass::ClientError),
        ..Default::default()
    })
    .await;
    assert!(client_err.len() == 7 && client_err.iter().all(|r| r.status == 404));
    let server_err = by(AuditFilter {
        status: Some(StatusClass::ServerError),
        ..Default::default()
    })
    .await;
    assert!(server_err.len() == 7 && server_err.iter().all(|r| r.status == 502));
    assert!(
        server_err
            .iter()
            .all(|r| r.error_code.as_deref() == Some("upstream_unreachable"))
    );
    let combined = by(AuditFilter {
        client: Some("a".into()),
        service: Some("x".into()),
        status: Some(StatusClass::Ok),
        ..Default::default()
    })
    .await;
    // i ≡ 0 (mod 3), i even, i mod 4 ∈ {0, 1}: i ∈ {0, 12, 24}.
    assert_eq!(
        combined.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        ["/n/24", "/n/12", "/n/0"]
    );
    assert!(
        by(AuditFilter {
            client: Some("nobody".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
}

#[tokio::test]
async fn paging_walks_three_pages_without_gaps_or_repeats() {
    let log = memory_log();
    record_paths(&log, "p", 25);
    log.flush().await;
    let mut filter = AuditFilter {
        limit: 10,
        ..Default::default()
    };
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    loop {
        let page = log.query(&filter).await.expect("query");
        sizes.push(page.rows.len());
        ids.extend(page.rows.iter().map(|r| r.id));
        match page.next_before_id {
            Some(next) => {
                assert_eq!(
                    Some(next),
                    page.rows.last().map(|r| r.id),
                    "the cursor is the last id shown"
                );
                filter.before_id = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 25, "no repeats");
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "strictly newest first across pages"
    );

    let exact = memory_log();
    record_paths(&exact, "q", 20);
    exact.flush().await;
    let first = exact
        .query(&AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("page");
    let second = exact
        .query(&AuditFilter {
            limit: 10,
            before_id: first.next_before_id,
            ..Default::default()
        })
        .await
        .expect("page");
    assert_eq!(second.rows.len(), 10);
    assert_eq!(second.next_before_id, None, "no empty trailing page");
    let zero = exact
        .query(&AuditFilter {
            limit: 0,
            ..Default::default()
        })
        .await
        .expect("default page");
    assert_eq!(zero.rows.len(), 20, "limit 0 means the default page size");
}

#[tokio::test]
async fn query_values_are_stripped_before_storage() {
    let log = memory_log();
    log.record(event("a", "x", 200, "/x?token=abc&q=1"));
    log.record(event("a", "x", 200, "/search?q=private+words#frag"));
    log.flush().await;
    let rows = all_rows(&log, AuditFilter::default()).await;
    assert_eq!(rows[1].path, "/x?token=&q=");
    assert_eq!(rows[0].path, "/search?q=");
}

#[tokio::test]
async fn a_canary_in_a_query_never_reaches_the_database_file() {
    const CANARY: &str = "canary-7f3e1b9c-secret";
    let (_dir, path) = temp_db();
    let db = Database::open(&path).expect("open");
    let log = AuditLog::open(&db, Retention::default()).expect("log");
    let mut rx = log.subscribe();
    log.record(event(
        "a",
        "x",
        200,
        &format!("/v1/things?api_key={CANARY}&page=2"),
    ));
    log.record(event("a", "x", 200, &format!("/v1/things?{CANARY}")));
    log.record(event(
        "a",
        "x",
        200,
        &format!("/v1/things?a=1\r\nX: {CANARY}"),
    ));
    log.flush().await;
    for _ in 0..3 {
        let row = rx.recv().await.expect("live row");
        assert!(
            !row.path.contains(CANARY),
            "live rows are sanitised too: {}",
            row.path
        );
    }
    assert!(
        !contains(&disk_bytes(&path), CANARY.as_bytes()),
        "canary found in the database files"
    );
    drop(log);
    drop(db);
    assert!(
        !contains(&disk_bytes(&path), CANARY.as_bytes()),
        "canary found after checkpoint"
    );
}

#[tokio::test]
async fn retention_by_rows_keeps_the_newest_at_open() {
    let (_dir, path) = temp_db();
    {
        let log = AuditLog::open(&Database::open(&path).expect("open"), Retention::default())
            .expect("log");
        record_paths(&log, "r", 25);
        log.flush().await;
    }
    let db = Database::open(&path).expect("reopen");
    let log = AuditLog::open(
        &db,
        Retention {
            max_rows: 10,
            ..Retention::default()
        },
    )
    .expect("log");
    let rows = all_rows(&log, AuditFilter::default()).await;
    assert_eq!(rows.len(), 10);
    assert_eq!(rows.first().map(|r| r.path.as_str()), Some("/r/24"));
    assert_eq!(rows.last().map(|r| r.path.as_str()), Some("/r/15"));
}

#[tokio::test]
async fn retention_by_age_drops_old_rows_at_open() {
    let (_dir, path) = temp_db();
    let day_ms = 86_400_000;
    {
        let log = AuditLog::open(&Database::open(&path).expect("open"), Retention::default())
            .expect("log");
        for days_old in [45, 31, 29, 1, 0] {
            let mut e = event("a", "x", 200, &format!("/age/{days_old}"));
            e.time = now_ms() - days_old * day_ms;
            log.record(e);
        }
        log.flush().await;
        assert_eq!(
            all_rows(&log, AuditFilter::default()).await.len(),
            5,
            "nothing pruned yet"
        );
    }
    let db = Database::open(&path).expect("reopen");
    let log = AuditLog::open(&db, Retention::default()).expect("log with the 30-day default");
    let kept: Vec<String> = all_rows(&log, AuditFilter::default())
        .await
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(kept, ["/age/0", "/age/1", "/age/29"]);
    assert_eq!(
        Retention::default(),
        Retention {
            max_age: Duration::from_secs(30 * 86_400),
            max_rows: 100_000
        }
    );
}

#[tokio::test]
async fn the_writer_enforces_retention_while_running() {
    let log = AuditLog::open_with(
        &Database::open_in_memory().expect("db"),
        Retention {
            max_age: Duration::from_secs(3600),
            max_rows: 50,
        },
        AuditOptions {
            prune_every: 10,
            ..AuditOptions::default()
        },
    )
    .expect("log");
    for i in 0..200 {
        log.record(event("a", "x", 200, &format!("/w/{i}")));
        log.flush().await;
    }
    let rows = all_rows(&log, AuditFilter::default()).await;
    assert!(rows.len() <= 50 + 10, "kept {} rows", rows.len());
    assert_eq!(rows[0].path, "/w/199", "the newest rows are the ones kept");
}

/// With no live view subscribed the writer builds no live rows; the rows are stored all the
/// same, with consecutive ids across the batch's statements, and a view that subscribes
/// afterwards receives only what is recorded after it.
#[tokio::test]
async fn rows_without_a_view_are_stored_and_a_later_view_gets_only_later_rows() {
    let log = memory_log();
    // 37 rows in one batch: statements of 32, 4 and 1 rows.
    record_paths(&log, "before", 37);
    log.flush().await;
    let mut rx = log.subscribe();
    log.record(event("b", "y", 201, "/after"));
    log.flush().await;

    let mut stored = all_rows(&log, AuditFilter::default()).await;
    stored.reverse();
    assert_eq!(stored.len(), 38);
    for (i, row) in stored.iter().take(37).enumerate() {
        assert_eq!(row.path, format!("/before/{i}"), "recorded in order");
    }
    assert!(
        stored.windows(2).all(|w| w[1].id == w[0].id + 1),
        "consecutive ids"
    );
    let live = rx.recv().await.expect("the later row");
    assert_eq!(live, stored[37], "the later row, as stored");
    assert!(rx.try_recv().is_err(), "nothing from before the view");
}

#[tokio::test]
async fn subscribers_receive_committed_rows_with_their_ids() {
    let log = memory_log();
    let mut rx = log.subscribe();
    // 63 rows recorded at once land in one batch, which the writer inserts in statements of
    // 32, 16, 8, 4, 2 and 1 rows: every column of every position in a statement must come back
    // as it was recorded, with the id it was stored under. Each field varies, nulls included.
    const ROWS: u64 = 63;
    let mut recorded = Vec::new();
    for i in 0..ROWS {
        let e = AuditEvent {
            kind: if i % 4 == 3 {
                AuditKind::Control
            } else {
                AuditKind::Client
            },
            time: now_ms() + i64::try_from(i).expect("small"),
            client: (i % 3 != 0).then(|| format!("client-{i}").into()),
            service: (i % 5 != 0).then(|| format!("service-{i}").into()),
            method: ["GET", "POST", "DELETE"][usize::try_from(i % 3).expect("small")].into(),
            path: format!("/s/{i}"),
            status: 200 + u16::try_from(i).expect("small"),
            bytes_in: i * 7,
            bytes_out: i * 11,
            duration_ms: i * 13,
            error_code: (i % 2 == 1).then(|| format!("code_{i}")),
        };
        recorded.push(e.clone());
        log.record(e);
    }
    let mut live = Vec::new();
    for _ in 0..ROWS {
        let row = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a row within 10 s")
            .expect("row");
        live.push(row);
    }
    let mut stored = all_rows(&log, AuditFilter::default()).await;
    stored.reverse();
    assert_eq!(
        live, stored,
        "live rows are exactly the committed rows, ids included"
    );
    assert!(live.iter().all(|r| r.id > 0));
    assert!(
        live.windows(2).all(|w| w[1].id > w[0].id),
        "ids grow in the order of recording"
    );
    for (row, e) in live.iter().zip(&recorded) {
        let as_recorded = AuditRow {
            id: row.id,
            kind: e.kind,
            time: e.time,
            client: e.client.as_deref().map(str::to_owned),
            service: e.service.as_deref().map(str::to_owned),
            method: e.method.to_string(),
            path: e.path.clone(),
            status: e.status,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            duration_ms: e.duration_ms,
            error_code: e.error_code.clone(),
        };
        assert_eq!(row, &as_recorded, "row {} as recorded", e.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_recorders_of_a_thousand_events_all_commit() {
    let log = memory_log();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..1000 {
                    log.record(event(&format!("c{t}"), "x", 200, &format!("/t/{t}/{i}")));
                    if i % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("recorder task");
    }
    log.flush().await;
    assert_eq!(log.dropped(), 0, "the default queue holds 8,000 events");
    let rows = all_rows(&log, AuditFilter::default()).await;
    assert_eq!(rows.len(), 8000);
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<HashSet<_>>().len(),
        8000
    );
    for t in 0..8 {
        let mine = all_rows(
            &log,
            AuditFilter {
                client: Some(format!("c{t}")),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(mine.len(), 1000);
        // One producer's events keep their order.
        let order: Vec<usize> = mine
            .iter()
            .rev()
            .map(|r| {
                r.path
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("index")
            })
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "per-producer order is kept"
        );
    }
}

#[tokio::test]
async fn rows_serialise_in_snake_case() {
    let log = memory_log();
    log.record(event("a", "x", 404, "/j"));
    log.flush().await;
    let page = log.query(&AuditFilter::default()).await.expect("query");
    let json = serde_json::to_value(&page).expect("json");
    let row = &json["rows"][0];
    for key in [
        "id",
        "time",
        "client",
        "service",
        "method",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "error_code",
    ] {
        assert!(row.get(key).is_some(), "missing {key}");
    }
    assert!(json["next_before_id"].is_null());
    let filter: AuditFilter =
        serde_json::from_str(r#"{"status":"server_error","limit":5}"#).expect("filter");
    assert_eq!(filter.status, Some(StatusClass::ServerError));
}

#[tokio::test]
async fn control_calls_are_kept_apart_from_client_traffic() {
    let log = memory_log();
    log.record(event("laptop", "x", 200, "/x/items"));
    log.record(AuditEvent {
        kind: AuditKind::Control,
        ..event("latchkey", "-", 200, "/v1/control/status")
    });
    log.record(event("latchkey", "x", 200, "/v1/credentials/x"));
    log.flush().await;

    let client = all_rows(
        &log,
        AuditFilter {
            kind: Some(AuditKind::Client),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        client.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        ["/v1/credentials/x", "/x/items"],
        "client traffic, credential reads included"
    );
    let control = all_rows(
        &log,
        AuditFilter {
            kind: Some(AuditKind::Control),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(control.len(), 1);
    assert_eq!(control[0].kind, AuditKind::Control);
    assert_eq!(control[0].path, "/v1/control/status");
    assert_eq!(
        all_rows(&log, AuditFilter::default()).await.len(),
        3,
        "no kind filter: everything"
    );
    assert_eq!(
        serde_json::to_value(&control[0]).expect("json")["kind"],
        "control"
    );
}

#[tokio::test]
async fn rows_written_before_kinds_existed_read_as_client_traffic() {
    let (_dir, path) = temp_db();
    {
        // A database as schema version 1 left it, with one audit row.
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE clients (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, last_used_at INTEGER) STRICT;
             CREATE TABLE client_services (client_id INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE, service TEXT NOT NULL, PRIMARY KEY (client_id, service)) STRICT, WITHOUT ROWID;
             CREATE TABLE client_tokens (token_hash BLOB NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32), client_id INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE, label TEXT NOT NULL, created_at INTEGER NOT NULL) STRICT, WITHOUT ROWID;
             CREATE INDEX client_tokens_by_client ON client_tokens(client_id);
             CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, client TEXT, service TEXT, method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL, bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, duration_ms INTEGER NOT NULL, error_code TEXT) STRICT;
             CREATE INDEX audit_by_client  ON audit(client, id);
             CREATE INDEX audit_by_service ON audit(service, id);
             CREATE INDEX audit_by_time    ON audit(time);
             PRAGMA user_version = 1;",
        )
        .expect("v1 schema");
        conn.execute(
            "INSERT INTO audit (time, client, service, method, path, status, bytes_in, bytes_out, duration_ms) VALUES (?1, 'old', 'x', 'GET', '/x/old', 200, 0, 0, 1)",
            [now_ms()],
        )
        .expect("v1 row");
    }
    let db = Database::open(&path).expect("migrate");
    let log = AuditLog::open(&db, Retention::default()).expect("log");
    let rows = all_rows(
        &log,
        AuditFilter {
            kind: Some(AuditKind::Client),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rows.len(), 1, "the old row is client traffic");
    assert_eq!(rows[0].path, "/x/old");
}
