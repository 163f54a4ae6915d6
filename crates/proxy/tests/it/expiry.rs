//! A stored client token that carries an expiry is refused as `client_unauthorized` from then
//! on, like an unknown one.

use std::time::{Duration, Instant};

use latchkey_store::ClientName;

use crate::support::{Proxy, error_code};

/// Long enough that the first request is answered inside it on a loaded machine (expiry is kept
/// in whole seconds, so a 1 s token may be over before the first request arrives).
const LIFETIME: Duration = Duration::from_secs(4);

#[tokio::test]
async fn an_expired_client_token_is_refused_as_client_unauthorized() {
    let proxy = Proxy::start().await;
    let client = ClientName::parse("tester").expect("name");
    let token = proxy
        .clients
        .issue_token_expiring(&client, "brief", Some(LIFETIME))
        .expect("expiring token");
    let call = || {
        proxy
            .client()
            .get(format!("{}/demo/x", proxy.url))
            .header("x-latchkey-client", token.expose())
            .send()
    };
    assert_eq!(
        call().await.expect("request").status(),
        200,
        "valid at first"
    );

    let deadline = Instant::now() + LIFETIME + Duration::from_secs(5);
    let refused = loop {
        let response = call().await.expect("request");
        if response.status() != 200 {
            break response;
        }
        assert!(
            Instant::now() < deadline,
            "still served 5 s after the token's expiry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.status(), 401);
    assert_eq!(error_code(refused).await, "client_unauthorized");
    let hits = proxy.upstream.hits();
    assert_eq!(
        call().await.expect("request").status(),
        401,
        "and stays refused"
    );
    assert_eq!(proxy.upstream.hits(), hits, "nothing reaches the upstream");
    proxy.stop().await;
}
