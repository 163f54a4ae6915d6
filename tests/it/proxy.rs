//! `latchkey serve` end to end: a real login, a local client, the proxy injecting alice's
//! gateway credential, `latchkey exec` feeding a stdio MCP server, the `mcp-stdio` bridge and
//! `headers` helper — and afterwards, no canary in any log line of the server.

use std::process::Stdio;

use latchkey_e2e::node;
use latchkey_testkit::IdpOptions;

use crate::{DEMO_KEY, GATEWAY_KEY, Stack, keychain_available};

fn fingerprint(value: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(value.as_bytes())[..6])
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn a_local_client_reaches_the_upstream_with_the_injected_credential_only() {
    if !keychain_available() {
        return;
    }
    let stack = Stack::start(IdpOptions::default()).await;
    let serve = stack.home.serve().expect("serve");
    stack.login().await;

    let add = stack
        .home
        .run(&["client", "add", "e2e", "--service", "demo"], "")
        .expect("client add");
    assert_eq!(add.code, 0, "{}", add.stderr);
    let token = add.stdout.trim().to_owned();
    assert!(
        token.starts_with("lk_") && token.len() >= 30,
        "a fresh client token"
    );

    let http = reqwest::Client::new();
    // The client's own Authorization and a look-alike X-API-Key never reach the upstream.
    let answer: serde_json::Value = http
        .get(format!("{}/demo/whoami?q=1", serve.url))
        .header("x-latchkey-client", &token)
        .header("authorization", "Bearer client-supplied")
        .header("x-api-key", "client-supplied")
        .send()
        .await
        .expect("proxied request")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["matches_expected"], true, "{answer:#}");
    assert_eq!(
        answer["received"]["x-api-key_fp"],
        fingerprint(DEMO_KEY),
        "{answer:#}"
    );
    assert!(
        answer["received"]["authorization"].is_null(),
        "client Authorization stripped: {answer:#}"
    );

    let refused = http
        .get(format!("{}/demo/whoami", serve.url))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.expect("json error body");
    assert_eq!(body["error"], "client_unauthorized");

    // latchkey exec gives a stdio MCP server its key; the SDK client calls its tool.
    let exec = node("tests/mcp/client.mjs")
        .args(["--stdio", "--"])
        .arg(latchkey_e2e::bin("latchkey"))
        .args(["exec", "--service", "demo", "--", "node"])
        .arg(latchkey_e2e::workspace().join("tests/mcp/server-stdio.mjs"))
        .envs(
            stack
                .home
                .command(&[])
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .stderr(Stdio::piped())
        .output()
        .expect("client.mjs");
    assert!(
        exec.status.success(),
        "stdio MCP through exec: {}",
        String::from_utf8_lossy(&exec.stderr)
    );
    let stdout = String::from_utf8_lossy(&exec.stdout);
    assert!(
        stdout.contains(&fingerprint(DEMO_KEY)),
        "the server saw alice's key: {stdout}"
    );

    // headers: a short-lived token that works, for Claude Code's headersHelper.
    let headers = stack.home.run(&["headers", "e2e"], "").expect("headers");
    assert_eq!(headers.code, 0, "{}", headers.stderr);
    let headers: serde_json::Value = serde_json::from_str(&headers.stdout).expect("json headers");
    let short = headers["X-Latchkey-Client"]
        .as_str()
        .expect("header")
        .to_owned();
    let ok = http
        .get(format!("{}/demo/whoami", serve.url))
        .header("x-latchkey-client", &short)
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);

    // The audit log saw the requests, without query values.
    let log = stack
        .home
        .run(&["log", "--json", "--service", "demo"], "")
        .expect("log");
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert!(log.stdout.contains("/demo/whoami"), "{}", log.stdout);
    assert!(
        !log.stdout.contains("q=1"),
        "query values are dropped: {}",
        log.stdout
    );

    let logout = stack.home.run(&["logout"], "").expect("logout");
    assert_eq!(logout.code, 0, "{}", logout.stderr);
    let after: serde_json::Value = http
        .get(format!("{}/demo/whoami", serve.url))
        .header("x-latchkey-client", &token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(after["error"], "login_required", "{after:#}");

    let logs = serve.stop().expect("clean stop");
    assert!(
        logs.contains("latchkey ready"),
        "the capture has the server's logs"
    );
    for secret in [DEMO_KEY, GATEWAY_KEY, token.as_str(), short.as_str()] {
        assert!(!logs.contains(secret), "a secret reached the server's logs");
    }
}
