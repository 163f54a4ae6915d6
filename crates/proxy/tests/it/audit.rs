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
    let _ = refused.bytes().await;

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
