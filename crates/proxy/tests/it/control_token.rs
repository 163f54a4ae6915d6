//! The instance's control token (the `latchkey` command's) is recognised by a constant-time
//! comparison of the whole value: it opens every service, and nothing else does, not even a
//! forgery of the same length.

use crate::support::{Options, Proxy, error_code};

const CONTROL: &str = "lk_the_instance_control_token_4f1c9a2e7b";

#[tokio::test]
async fn only_the_exact_control_token_opens_every_service() {
    let proxy = Proxy::start_with(Options {
        control_token: Some(CONTROL.to_owned()),
        ..Options::default()
    })
    .await;
    let call = |token: String| {
        let request = proxy
            .client()
            .get(format!("{}/other/x", proxy.url))
            .header("x-latchkey-client", token);
        async move { request.send().await.expect("request") }
    };
    assert_eq!(
        call(CONTROL.to_owned()).await.status(),
        200,
        "the control token reaches a service no client was granted"
    );

    let mut forged = CONTROL[..CONTROL.len() - 1].to_owned();
    forged.push('X');
    for token in [
        forged,
        "lk_unknown".to_owned(),
        String::new(),
        CONTROL[..CONTROL.len() - 1].to_owned(),
    ] {
        let refused = call(token.clone()).await;
        assert_eq!(refused.status(), 401, "{} chars refused", token.len());
        assert_eq!(error_code(refused).await, "client_unauthorized");
    }
    assert_eq!(
        proxy.upstream.hits(),
        1,
        "only the control token's request reached the upstream"
    );
    proxy.stop().await;
}
