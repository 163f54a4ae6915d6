//! Unit tests of the writer's queueing behaviour; filters, paging and retention are covered by
//! the integration tests.

use std::sync::mpsc as std_mpsc;

use super::*;

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        kind: AuditKind::Client,
        time: latchkey_core::clock::unix_millis(),
        client: Some("cli".into()),
        service: Some("github".into()),
        method: "GET".into(),
        path: format!("/items/{i}"),
        status: 200,
        bytes_in: 0,
        bytes_out: i,
        duration_ms: 1,
        error_code: None,
    }
}

fn count(db: &Database) -> i64 {
    db.read(|c| c.query_row("SELECT count(*) FROM audit", [], |r| r.get(0)))
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let db = Database::open_in_memory().expect("db");
    let log = AuditLog::open_with(
        &db,
        Retention::default(),
        AuditOptions {
            queue_capacity: 4,
            prune_every: 1000,
        },
    )
    .expect("log");
    const TOTAL: u64 = 1000;

    // Stall the writer: it cannot commit while the test holds the connection. At most one
    // batch (256) can sit in the writer and 4 in the queue, so at least 740 must be dropped.
    let guard = db.writer();
    let (done_tx, done_rx) = std_mpsc::channel();
    let producer = log.clone();
    std::thread::spawn(move || {
        for i in 0..TOTAL {
            producer.record(event(i));
        }
        let _ = done_tx.send(());
    });
    let finished = done_rx.recv_timeout(std::time::Duration::from_secs(30));
    assert!(
        finished.is_ok(),
        "record() blocked while the writer was stalled"
    );
    assert!(
        log.dropped() >= TOTAL - 4 - 256,
        "dropped {} of {TOTAL}",
        log.dropped()
    );
    drop(guard);

    log.flush().await;
    let committed = u64::try_from(count(&db)).expect("non-negative");
    assert_eq!(
        committed + log.dropped(),
        TOTAL,
        "every event is either committed or counted as dropped"
    );
}

#[tokio::test]
async fn flush_waits_for_earlier_records_and_returns_when_idle() {
    let db = Database::open_in_memory().expect("db");
    let log = AuditLog::open(&db, Retention::default()).expect("log");
    log.flush().await;
    for i in 0..300 {
        log.record(event(i));
    }
    log.flush().await;
    assert_eq!(
        count(&db),
        300,
        "more than one batch, all committed before flush returns"
    );
    assert_eq!(log.dropped(), 0);
}

#[tokio::test]
async fn the_writer_prunes_every_n_inserts() {
    let db = Database::open_in_memory().expect("db");
    let retention = Retention {
        max_age: Duration::from_secs(3600),
        max_rows: 10,
    };
    let log = AuditLog::open_with(
        &db,
        retention,
        AuditOptions {
            queue_capacity: 64,
            prune_every: 5,
        },
    )
    .expect("log");
    for i in 0..40 {
        log.record(event(i));
        if i % 7 == 0 {
            log.flush().await;
        }
    }
    log.flush().await;
    assert!(
        count(&db) <= 10 + 5,
        "retention keeps the table near max_rows, found {}",
        count(&db)
    );
}

#[test]
fn the_writer_thread_stops_when_the_last_handle_is_dropped() {
    let db = Database::open_in_memory().expect("db");
    let log = AuditLog::open(&db, Retention::default()).expect("log");
    log.record(event(1));
    let weak = Arc::downgrade(&log.shared);
    drop(log);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while weak.strong_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "writer thread kept running"
        );
        std::thread::yield_now();
    }
    assert_eq!(
        count(&db),
        1,
        "the queue was drained before the writer stopped"
    );
}

#[test]
fn status_classes_cover_their_ranges() {
    assert_eq!(StatusClass::of(101), Some(StatusClass::Ok));
    assert_eq!(StatusClass::of(302), Some(StatusClass::Ok));
    assert_eq!(StatusClass::of(499), Some(StatusClass::ClientError));
    assert_eq!(StatusClass::of(503), Some(StatusClass::ServerError));
    assert_eq!(StatusClass::of(99), None);
    assert_eq!(
        serde_json::to_string(&StatusClass::ClientError).expect("json"),
        "\"client_error\""
    );
}

#[test]
fn record_sanitises_before_queueing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let db = Database::open_in_memory().expect("db");
    let log = AuditLog::open(&db, Retention::default()).expect("log");
    let mut e = event(1);
    e.path = "/x?token=abc\r\n&q=1".to_owned();
    e.method = "GET\n".into();
    e.error_code = Some("x".repeat(500));
    log.record(e);
    rt.block_on(log.flush());
    let (path, method, code): (String, String, String) = db
        .read(|c| {
            c.query_row("SELECT path, method, error_code FROM audit", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
        .expect("row");
    assert_eq!(path, "/x?token=&q=");
    assert_eq!(method, "GET");
    assert_eq!(code.len(), sanitize::MAX_NAME);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_count_requests_and_errors_per_service_per_minute() {
    let db = Database::open_in_memory().expect("db");
    let log = AuditLog::open(&db, Retention::default()).expect("log");
    let minute = 60_000;
    let now = latchkey_core::clock::unix_millis();
    let at = |ago_minutes: i64, service: &str, status: u16| AuditEvent {
        time: now - ago_minutes * minute,
        service: Some(service.into()),
        status,
        ..event(0)
    };
    // This minute: 2 github (1 error), 1 linear; 2 minutes ago: 1 github error; 90 minutes
    // ago: outside the hour; a control call: not client traffic.
    for e in [
        at(0, "github", 200),
        at(0, "github", 502),
        at(0, "linear", 200),
        at(2, "github", 401),
        at(90, "github", 200),
        AuditEvent {
            kind: AuditKind::Control,
            ..at(0, "github", 500)
        },
    ] {
        log.record(e);
    }
    log.flush().await;
    let got = log
        .buckets(now, Duration::from_secs(60), 60)
        .await
        .expect("buckets");
    assert_eq!(got.bucket_ms, minute);
    assert_eq!(got.start_ms % minute, 0, "buckets align to whole minutes");
    assert!(got.start_ms <= now - 59 * minute && now < got.start_ms + 60 * minute);
    let names: Vec<_> = got.series.iter().map(|s| s.service.as_deref()).collect();
    assert_eq!(
        names,
        [Some("github"), Some("linear")],
        "one series per service, by name"
    );
    let github = &got.series[0];
    assert_eq!(
        github.requests.len(),
        60,
        "a count for every minute of the hour"
    );
    assert_eq!(
        (github.requests[59], github.errors[59]),
        (2, 1),
        "this minute"
    );
    assert_eq!(
        (github.requests[57], github.errors[57]),
        (1, 1),
        "two minutes ago"
    );
    assert_eq!(
        github.requests.iter().sum::<u64>(),
        3,
        "the request 90 minutes ago and the control call are left out"
    );
    assert_eq!(got.series[1].requests[59], 1);
    assert_eq!(got.series[1].errors.iter().sum::<u64>(), 0);
}
