//! Raw credential reads count against the client's rate limit like any other request, so a
//! client allowed to read them cannot pull them in a tight loop.

use latchkey_proxy::RateLimit;

use crate::support::{Options, Proxy, SCOPED, error_code, new_raw_client};

#[tokio::test]
async fn raw_credential_reads_are_rate_limited_per_client() {
    let proxy = Proxy::start_with(Options {
        rate_limit: RateLimit {
            per_second: 0.01,
            burst: 2,
        },
        ..Options::default()
    })
    .await;
    let scoped: Vec<String> = SCOPED.iter().map(|s| (*s).to_owned()).collect();
    let token = new_raw_client(&proxy.clients, "reader", &scoped);
    let read = || {
        proxy
            .client()
            .get(format!("{}/v1/credentials/demo", proxy.url))
            .header("x-latchkey-client", &token)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(
            read().await.expect("request").status(),
            200,
            "within the burst"
        );
    }
    let limited = read().await.expect("request");
    assert_eq!(
        limited.status(),
        429,
        "the third read in a row is over the limit"
    );
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(error_code(limited).await, "rate_limited");
    proxy.stop().await;
}
