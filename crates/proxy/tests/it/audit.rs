//! Every request that passes the `Host` gate leaves exactly one audit event, with its outcome and
//! the bytes counted each way once its body finished.

use latchkey_store::{AuditFilter, AuditRow};

use crate::support::{Proxy, read_events};

/// Every audit row written so far, oldest first.
pub async fn rows(proxy: &Proxy) -> Vec<AuditRow> {
    proxy.audit.flush().await;
    let filter = AuditFilter {
        limit: 500,
        ..AuditFilter::default()
    };
    let mut rows = proxy.audit.query(&filter).await.expect("audit query").rows;
    rows.reverse();
    rows
}

#[tokio::test]
async fn each_request_is_recorded_once_with_its_outcome_and_sizes() {
    let proxy = Proxy::start().await;
    let now_ms = || {
        i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
            .expect("milliseconds")
    };
    let before = now_ms();
    let body = vec![b'x'; 1000];
    let ok = proxy
        .client()
        .post(format!("{}/demo/upload?token=client-value", proxy.url))
        .header("x-latchkey-client", &proxy.token)
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    let answer = ok.bytes().await.expect("body");
    let sse = proxy
        .get("/demo/sse?n=4&interval_ms=5")
        .send()
        .await
        .expect("send");
    let events = read_events(sse, 4).await;
    assert_eq!(events.len(), 4);
    let refused = proxy.get("/other/x").send().await.expect("send");
    assert_eq!(refused.status(), 403);
    let refusal_body = refused.bytes().await.expect("body");
    let after = now_ms();

    let recorded =
        crate::support::eventually_async(|| async { rows(&proxy).await.len() >= 3 }).await;
    assert!(recorded, "three events recorded");
    let rows = self::rows(&proxy).await;
    assert_eq!(rows.len(), 3, "one event per request");
    let find = |prefix: &str| {
        rows.iter()
            .find(|r| r.path.starts_with(prefix))
            .expect("a row for the request")
    };

    let upload = find("/demo/upload");
    assert_eq!((upload.status, upload.method.as_str()), (200, "POST"));
    assert_eq!(upload.service.as_deref(), Some("demo"));
    assert_eq!(upload.client.as_deref(), Some("tester"));
    assert_eq!(upload.bytes_in, 1000, "request body bytes");
    assert_eq!(upload.bytes_out, answer.len() as u64, "response body bytes");
    assert!(upload.path.starts_with("/demo/upload"));
    assert!(
        !upload.path.contains("client-value"),
        "query values never stored"
    );
    assert_eq!(upload.error_code, None);

    let stream = find("/demo/sse");
    assert_eq!(stream.status, 200);
    assert!(stream.bytes_out > 0);

    let refusal = find("/other/x");
    assert_eq!(refusal.status, 403);
    assert_eq!(refusal.error_code.as_deref(), Some("forbidden_scope"));
    assert!(!refusal_body.is_empty());
    assert_eq!(
        refusal.bytes_out,
        refusal_body.len() as u64,
        "the proxy's own answer is counted too"
    );
    for row in &rows {
        assert!(
            (before..=after).contains(&row.time),
            "each row is stamped with its request's time in ms: {} not in {before}..={after}",
            row.time
        );
    }
    assert_eq!(proxy.upstream.hits(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn requests_refused_at_the_host_gate_are_not_recorded() {
    let proxy = Proxy::start().await;
    let request = format!(
        "GET /demo/x HTTP/1.1\r\nHost: evil.test:{}\r\nConnection: close\r\n\r\n",
        proxy.port
    );
    let (status, _) = crate::support::raw_request(proxy.port, &request).await;
    assert_eq!(status, 403);
    assert!(
        rows(&proxy).await.is_empty(),
        "a rebinding page cannot fill the audit log"
    );
    proxy.stop().await;
}

/// The `latchkey` command's and the window's own calls (the control token) are control rows, and
/// only when they change something or are refused: an answered read of the instance's state
/// leaves none, while the same read by a client is client traffic like any other.
#[tokio::test]
async fn the_control_tokens_answered_reads_leave_no_row_and_its_changes_a_control_row() {
    use axum::routing::get;
    use latchkey_store::AuditKind;

    let control =
        axum::Router::new().route("/state", get(|| async { "{}" }).post(|| async { "done" }));
    let control_token = "lkc_control-token-for-the-audit-test".to_owned();
    let proxy = Proxy::start_with(crate::support::Options {
        control: Some(control),
        control_token: Some(control_token.clone()),
        ..crate::support::Options::default()
    })
    .await;
    let call = |method: reqwest::Method, path: &str, token: &str| {
        proxy
            .client()
            .request(method, format!("{}/v1/control/{path}", proxy.url))
            .header("x-latchkey-client", token)
            .send()
    };
    for (method, path, token, status) in [
        (reqwest::Method::GET, "state", &control_token, 200),
        (reqwest::Method::POST, "state", &control_token, 200),
        (reqwest::Method::GET, "state", &proxy.token, 200),
        (reqwest::Method::GET, "nowhere", &control_token, 404),
    ] {
        let answer = call(method.clone(), path, token).await.expect("send");
        assert_eq!(answer.status(), status, "{method} {path}");
    }

    let recorded =
        crate::support::eventually_async(|| async { rows(&proxy).await.len() >= 3 }).await;
    assert!(recorded, "three rows");
    let rows: Vec<(AuditKind, String, String, u16)> = rows(&proxy)
        .await
        .into_iter()
        .map(|r| (r.kind, r.method, r.path, r.status))
        .collect();
    assert_eq!(
        rows,
        [
            (
                AuditKind::Control,
                "POST".into(),
                "/v1/control/state".into(),
                200
            ),
            (
                AuditKind::Client,
                "GET".into(),
                "/v1/control/state".into(),
                200
            ),
            (
                AuditKind::Control,
                "GET".into(),
                "/v1/control/nowhere".into(),
                404
            ),
        ]
    );
    proxy.stop().await;
}

/// The log line of a request says how it went at a level an operator can filter on: a failure
/// (5xx) is a warning, a refusal (4xx) information, the rest debug.
#[tokio::test]
async fn a_requests_log_line_is_a_warning_when_it_failed_and_information_when_refused() {
    let proxy = Proxy::start().await;
    let failed = proxy.get("/demo/status/500").send().await.expect("send");
    assert_eq!(failed.status(), 500);
    let _ = failed.bytes().await;
    let refused = proxy.get("/other/x").send().await.expect("send");
    assert_eq!(refused.status(), 403);
    let _ = refused.bytes().await;
    let fine = proxy.get("/demo/anything").send().await.expect("send");
    assert_eq!(fine.status(), 200);
    let _ = fine.bytes().await;
    let recorded =
        crate::support::eventually_async(|| async { rows(&proxy).await.len() >= 3 }).await;
    assert!(recorded, "three rows");

    let text = crate::support::captured_logs();
    let line = |status: &str| {
        text.lines()
            .find(|l| l.contains(&format!("status={status}")))
            .unwrap_or_else(|| panic!("a line for {status}: {text}"))
            .to_owned()
    };
    let (failed, refused, fine) = (line("500"), line("403"), line("200"));
    assert!(
        failed.contains("WARN") && failed.contains("request failed"),
        "{failed}"
    );
    assert!(
        refused.contains("INFO") && refused.contains("request refused"),
        "{refused}"
    );
    assert!(fine.contains("DEBUG"), "{fine}");
    proxy.stop().await;
}
