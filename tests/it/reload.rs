//! Live configuration (issue 11, item 3) against the real binary: `latchkey serve` follows its
//! configuration file. A service added to the file is served without a restart while an SSE
//! stream opened before the edit keeps flowing to its end; an invalid edit keeps the routes in
//! force and `latchkey status` names the file and line until the file is fixed; a removed
//! service's next request gets `unknown_service`.

use std::time::Duration;

use latchkey_testkit::IdpOptions;

use crate::{Stack, keychain_available};

/// How long a change may take to be applied before the test gives up (the target is one
/// second; the measured time is printed).
const DEADLINE: Duration = Duration::from_secs(5);

/// The second service, as appended to the stack's configuration.
fn with_second_service(config: &str, upstream: &str) -> String {
    format!(
        "{config}\n[[services]]\nname = \"demo2\"\naccount = \"sandbox\"\ngateway_endpoint = \"/api/v1/credentials/demo\"\nupstream = \"{upstream}\"\nallow_loopback_http = true\ncredentials = [{{ name = \"api_key\", header = \"X-API-Key\" }}]\n"
    )
}

/// Polls `check` every 20 ms until it holds; returns how long it took, fails after [`DEADLINE`].
async fn until<F, Fut>(what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    latchkey_testkit::eventually(what, DEADLINE, Duration::from_millis(20), check).await
}

async fn error_code(http: &reqwest::Client, url: &str, token: &str) -> Option<String> {
    let response = http
        .get(url)
        .header("x-latchkey-client", token)
        .send()
        .await
        .ok()?;
    if response.status().is_success() {
        return None;
    }
    let body: serde_json::Value = response.json().await.ok()?;
    body["error"].as_str().map(str::to_owned)
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn serve_follows_edits_of_its_configuration_file() {
    if !keychain_available() {
        return;
    }
    let stack = Stack::start(IdpOptions::default()).await;
    let serve = stack.home.serve().expect("serve");
    stack.login().await;
    let config_file = stack.home.config_dir().join("config.toml");
    let original = std::fs::read_to_string(&config_file).expect("config");

    let add = stack
        .home
        .run(&["client", "add", "e2e", "--service", "demo"], "")
        .expect("client add");
    assert_eq!(add.code, 0, "{}", add.stderr);
    let token = add.stdout.trim().to_owned();
    let http = reqwest::Client::new();

    // An SSE stream long enough to still be flowing while the file changes under it.
    const EVENTS: usize = 200_000;
    let mut stream = http
        .get(format!("{}/demo/events?n={EVENTS}", serve.url))
        .header("x-latchkey-client", &token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let mut received =
        String::from_utf8_lossy(&stream.chunk().await.expect("chunk").expect("first chunk"))
            .into_owned();
    assert!(received.starts_with("id: 1\n"), "{received}");

    // A new service, served without a restart.
    let demo2 = format!("{}/demo2/whoami", serve.url);
    assert_eq!(
        error_code(&http, &demo2, &token).await.as_deref(),
        Some("unknown_service")
    );
    std::fs::write(
        &config_file,
        with_second_service(&original, stack.upstream.url().as_str()),
    )
    .expect("edit");
    let took = until("the new service is routed", || async {
        error_code(&http, &demo2, &token).await.as_deref() != Some("unknown_service")
    })
    .await;
    eprintln!("new service routed {took:?} after the edit");
    let add2 = stack
        .home
        .run(&["client", "add", "e2e2", "--service", "demo2"], "")
        .expect("client add");
    assert_eq!(
        add2.code, 0,
        "the new service can be granted: {}",
        add2.stderr
    );
    let token2 = add2.stdout.trim().to_owned();
    let answer: serde_json::Value = http
        .get(&demo2)
        .header("x-latchkey-client", &token2)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        answer["matches_expected"], true,
        "credential injected: {answer:#}"
    );

    // An invalid edit: the routes in force stay, and status says where and how to fix it.
    let bad = with_second_service(&original, "https://api.example.com/?org=x");
    let bad_line = bad
        .lines()
        .position(|l| l.contains("?org=x"))
        .expect("the bad line")
        + 1;
    std::fs::write(&config_file, &bad).expect("bad edit");
    let where_ = format!("config.toml:{bad_line}:");
    until("status reports the invalid edit", || async {
        let out = stack.home.run(&["status"], "").expect("status");
        out.stdout.contains("Configuration error") && out.stdout.contains(&where_)
    })
    .await;
    let answer: serde_json::Value = http
        .get(&demo2)
        .header("x-latchkey-client", &token2)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        answer["matches_expected"], true,
        "old routes still served: {answer:#}"
    );

    // Fixed by removing the service: its next request gets unknown_service, the error clears.
    std::fs::write(&config_file, &original).expect("fix");
    until("the removed service is gone", || async {
        error_code(&http, &demo2, &token2).await.as_deref() == Some("unknown_service")
    })
    .await;
    until("status no longer reports an error", || async {
        let out = stack.home.run(&["status"], "").expect("status");
        !out.stdout.contains("Configuration error")
    })
    .await;

    // The stream opened before the first edit ran to its end.
    while let Some(chunk) = stream.chunk().await.expect("stream kept flowing") {
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events = received.matches("event: tick").count();
    assert_eq!(events, EVENTS, "every event of the open stream arrived");
    assert!(received.contains(&format!("id: {EVENTS}\n")));
    drop(serve);
}
