//! A body declared over the cap is refused from its `Content-Length`, before the service's
//! credentials are fetched (kills the mutant of `forward::content_length` returning `Some(0)`,
//! which left only the streaming cap, met after the fetch; SECURITY.md, "Mutation testing").

use std::sync::Arc;

use latchkey_proxy::{CredentialError, Limits};

use crate::support::{MapSource, Options, Proxy, error_code};

#[tokio::test]
async fn a_declared_oversized_body_is_refused_before_credentials_are_fetched() {
    let source = Arc::new(MapSource::with_canaries());
    // Fetching the credentials would answer `login_required`: a 413 shows no fetch happened.
    source.fail("demo", CredentialError::LoginRequired);
    let proxy = Proxy::start_with(Options {
        limits: Limits {
            max_body_bytes: Some(1024),
            ..Limits::default()
        },
        source,
        ..Options::default()
    })
    .await;
    let response = proxy
        .client()
        .post(format!("{}/demo/upload", proxy.url))
        .header("x-latchkey-client", &proxy.token)
        .body(vec![0u8; 4096])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
    assert_eq!(error_code(response).await, "body_too_large");
    assert_eq!(proxy.upstream.hits(), 0);
    proxy.stop().await;
}

/// The cap is the largest body allowed, not the first refused (kills `len > max` made `>=`).
#[tokio::test]
async fn a_body_of_exactly_the_cap_is_forwarded() {
    let proxy = Proxy::start_with(Options {
        limits: Limits {
            max_body_bytes: Some(1024),
            ..Limits::default()
        },
        ..Options::default()
    })
    .await;
    let response = proxy
        .client()
        .post(format!("{}/demo/upload", proxy.url))
        .header("x-latchkey-client", &proxy.token)
        .body(vec![0u8; 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(proxy.upstream.hits(), 1);
    proxy.stop().await;
}
