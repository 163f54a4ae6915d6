//! The real control router on a serving instance: a local client's token opens none of it (an
//! account's access token least of all), and the `latchkey` command issues, lists and revokes a
//! client's labelled tokens through it.

use latchkey_runtime::instance::socket_path;
use latchkey_runtime::socket;
use serde_json::json;

use crate::serving::{paths as serving_paths, start};

/// `GET path` on the instance with `token`; the status and the JSON body.
async fn get(port: u16, path: &str, token: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("x-latchkey-client", token)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_plain_client_token_reading_an_account_token_gets_control_unauthorized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = serving_paths(&dir);
    let lk = start(&paths).await.expect("start");
    let port = lk.proxy_addr().expect("serving").port();
    let client = lk
        .create_client("reader", &["demo".to_owned()])
        .expect("client");

    for path in [
        "/v1/control/token/work",
        "/v1/control/status",
        "/v1/control/clients",
    ] {
        let (status, body) = get(port, path, &client.token).await;
        assert_eq!(status, 401, "{path}: a client token is refused");
        assert_eq!(
            body["error"], "control_unauthorized",
            "{path}: refused by the control API's own check: {body}"
        );
    }

    let handoff = socket::fetch(&socket_path(&paths)).await.expect("hand-off");
    let (_, body) = get(
        port,
        "/v1/control/token/work",
        handoff.control_token.expose(),
    )
    .await;
    assert_eq!(
        body["error"], "login_required",
        "the control token passes the check (and finds nobody logged in): {body}"
    );
    lk.shutdown().await;
}

#[tokio::test]
async fn tokens_are_issued_listed_and_revoked_one_by_one_through_the_control_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = serving_paths(&dir);
    let lk = start(&paths).await.expect("start");
    let port = lk.proxy_addr().expect("serving").port();
    lk.create_client("cursor", &["demo".to_owned()])
        .expect("client");
    let control = socket::fetch(&socket_path(&paths))
        .await
        .expect("hand-off")
        .control_token;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/v1/control/clients/cursor/tokens");
    let mut issued = Vec::new();
    for _ in 0..2 {
        let body: serde_json::Value = http
            .post(&base)
            .header("x-latchkey-client", control.expose())
            .json(&json!({ "label": "mcp-config:cursor", "expires_in_seconds": 3600 }))
            .send()
            .await
            .expect("issue")
            .json()
            .await
            .expect("json");
        issued.push(body["token"].as_str().expect("a token").to_owned());
    }
    let (old, _) = get(port, "/v1/status", &issued[0]).await;
    assert_eq!(
        old, 401,
        "the host's previous token is revoked by the new one"
    );
    let (new, _) = get(port, "/v1/status", &issued[1]).await;
    assert_eq!(new, 200, "the new one works");

    let (status, tokens) = get(port, "/v1/control/clients/cursor/tokens", control.expose()).await;
    assert_eq!(status, 200);
    let listed = tokens.as_array().expect("a list");
    assert_eq!(listed.len(), 2, "default and one for the host: {tokens}");
    let host = &listed[1];
    assert_eq!(host["label"], "mcp-config:cursor");
    assert_eq!(
        host["expires_at"].as_i64().expect("expiry")
            - host["created_at"].as_i64().expect("created"),
        3600
    );
    assert!(
        !tokens.to_string().contains("lk_"),
        "no token in the listing"
    );

    let revoked = http
        .delete(format!("{base}/mcp-config:cursor"))
        .header("x-latchkey-client", control.expose())
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 200);
    let (after, body) = get(port, "/v1/status", &issued[1]).await;
    assert_eq!(
        (after, body["error"].as_str()),
        (401, Some("client_unauthorized")),
        "refused from the moment it is revoked"
    );
    lk.shutdown().await;
}

#[tokio::test]
async fn the_control_client_reads_the_real_answers_and_errors_as_the_in_process_calls_give_them() {
    use latchkey_runtime::Control;
    use latchkey_runtime::control::{ControlClient, NewClient};

    let dir = tempfile::tempdir().expect("tempdir");
    let paths = serving_paths(&dir);
    let lk = start(&paths).await.expect("start");
    let remote = ControlClient::find(&paths)
        .await
        .expect("found")
        .expect("running");

    let over_http = remote
        .access_token("work")
        .await
        .expect_err("nobody logged in");
    let in_process = Control::access_token(&lk, "work")
        .await
        .expect_err("nobody logged in");
    assert_eq!(
        over_http, in_process,
        "the same code and message either way"
    );

    let created = remote
        .create_client(&NewClient {
            name: "cursor".into(),
            services: vec!["demo".into()],
            allow_raw_credentials: false,
        })
        .await
        .expect("created");
    assert!(created.token.starts_with("lk_"), "its token, once");
    let report = remote.status().await.expect("status");
    let local = Control::status(&lk).await.expect("status");
    assert_eq!(
        serde_json::to_value(&report.overview.accounts).expect("json"),
        serde_json::to_value(&local.overview.accounts).expect("json"),
        "the typed overview reads back what the instance sent"
    );
    assert_eq!(report.clients.len(), 1);
    assert_eq!(report.clients[0].name, "cursor");
    assert_eq!(
        report.overview.services.len(),
        local.overview.services.len()
    );

    let missing = remote
        .revoke_client_token("cursor", "no such label/with a slash")
        .await
        .expect_err("no such token");
    assert_eq!(missing.code, latchkey_core::Code::NotFound, "{missing:?}");
    lk.shutdown().await;
}
