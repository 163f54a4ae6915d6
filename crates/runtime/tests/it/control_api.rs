//! The real control router on a serving instance: a local client's token opens none of it (an
//! account's access token least of all), and the `latchkey` command issues, lists and revokes a
//! client's labelled tokens through it.

use latchkey_runtime::instance::socket_path;
use latchkey_runtime::socket;
use serde_json::json;

use crate::serving::{paths as serving_paths, start, start_with_client};

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
    use latchkey_runtime::control::NewClient;

    let (_dir, _paths, lk, remote) = start_with_client().await;

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

/// Each route's path with its parameters filled in (`{x}` → `x`).
fn sample_path(route: latchkey_runtime::control::Route) -> String {
    let (_, template) = route.endpoint();
    let filled: Vec<String> = template
        .split('/')
        .map(|part| {
            part.trim_start_matches('{')
                .trim_end_matches('}')
                .to_owned()
        })
        .collect();
    format!("{}{}", latchkey_runtime::control::PREFIX, filled.join("/"))
}

#[tokio::test]
async fn every_route_of_the_table_refuses_a_client_token_and_no_token_before_its_handler() {
    use latchkey_runtime::control::Route;

    let dir = tempfile::tempdir().expect("tempdir");
    let paths = serving_paths(&dir);
    let lk = start(&paths).await.expect("start");
    let port = lk.proxy_addr().expect("serving").port();
    let client = lk
        .create_client("reader", &["demo".to_owned()])
        .expect("client");
    let http = reqwest::Client::new();
    for route in Route::ALL {
        let (verb, _) = route.endpoint();
        let url = format!("http://127.0.0.1:{port}{}", sample_path(route));
        for token in [Some(client.token.as_str()), None] {
            let mut request = http
                .request(verb.method(), &url)
                .header("content-type", "application/json")
                .body("{ not json");
            if let Some(token) = token {
                request = request.header("x-latchkey-client", token);
            }
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            // Without any token the proxy's own gate answers first; a client's token passes it
            // and is refused by the control API's layer.
            let want = if token.is_some() {
                "control_unauthorized"
            } else {
                "client_unauthorized"
            };
            assert_eq!(
                (status, body["error"].as_str()),
                (401, Some(want)),
                "{route:?} ({url}) with {}: refused before its body is read",
                if token.is_some() {
                    "a client token"
                } else {
                    "no token"
                }
            );
        }
    }
    lk.shutdown().await;
}

#[tokio::test]
async fn the_window_routes_answer_over_http_as_the_in_process_calls_do() {
    use latchkey_core::Code;
    use latchkey_runtime::Control;
    use latchkey_runtime::control::HostEntry;

    let (_dir, _paths, lk, remote) = start_with_client().await;

    let over_http = remote.overview().await.expect("overview");
    assert_eq!(
        serde_json::to_value(&over_http.services).expect("json"),
        serde_json::to_value(&lk.overview().services).expect("json"),
        "the same overview"
    );
    assert_eq!(over_http.accounts[0].name, "work");

    let chart = remote.activity_chart("hour").await.expect("chart");
    assert_eq!(chart.bucket_ms, 60_000, "an hour in minutes");
    let bad_span = remote
        .activity_chart("week")
        .await
        .expect_err("no such span");
    assert_eq!(
        bad_span,
        Control::activity_chart(&lk, "week")
            .await
            .expect_err("no such span"),
        "the same code and message either way"
    );
    assert_eq!(bad_span.code, Code::InvalidInput);

    let refresh = remote
        .refresh_now("work")
        .await
        .expect_err("nobody logged in");
    assert_eq!(
        refresh,
        Control::refresh_now(&lk, "work")
            .await
            .expect_err("nobody logged in")
    );
    let unknown = remote
        .refresh_now("nobody")
        .await
        .expect_err("no such account");
    assert_eq!(
        unknown,
        lk.refresh_now("nobody").await.expect_err("no such account"),
        "an unknown account keeps its code: {unknown:?}"
    );

    remote
        .cancel_login("work")
        .await
        .expect("nothing pending is fine");
    remote
        .cancel_server_login("nowhere")
        .await
        .expect("nothing pending is fine");

    let hosts = remote.detect_hosts().await.expect("hosts");
    assert_eq!(
        hosts.iter().map(|h| h.id.clone()).collect::<Vec<_>>(),
        lk.detect_hosts()
            .expect("hosts")
            .iter()
            .map(|h| h.id.clone())
            .collect::<Vec<_>>(),
        "the same hosts"
    );
    let unknown_host = HostEntry {
        host: "notepad".into(),
        client: "cursor".into(),
        service: "demo".into(),
    };
    for e in [
        remote
            .preview_host_entry(&unknown_host)
            .await
            .expect_err("no such host"),
        remote
            .apply_host_entry(&unknown_host)
            .await
            .expect_err("no such host"),
        remote
            .undo_host_entry("notepad")
            .await
            .expect_err("no such host"),
    ] {
        assert_eq!(
            e,
            lk.undo_host_entry("notepad").expect_err("no such host"),
            "refused with the in-process code and message"
        );
    }
    let no_client = HostEntry {
        host: "cursor".into(),
        client: "nobody".into(),
        service: "demo".into(),
    };
    let e = remote
        .preview_host_entry(&no_client)
        .await
        .expect_err("no such client");
    assert_eq!(
        e,
        lk.preview_host_entry("cursor", "nobody", "demo")
            .expect_err("no such client")
    );
    lk.shutdown().await;
}

#[tokio::test]
async fn the_event_stream_delivers_a_change_and_an_activity_row() {
    use futures_util::StreamExt;
    use latchkey_runtime::Control;
    use latchkey_runtime::control::InstanceEvent;

    let (_dir, _paths, lk, remote) = start_with_client().await;
    let mut events = remote.follow_events(false).await.expect("following");

    // A change made through the control API (which audits the call): a login that cannot
    // reach its provider is recorded as the account's last login failure.
    let failed = remote.begin_login("work").await.expect_err("idp.invalid");
    assert_eq!(
        lk.last_login_error("work").map(|f| f.code),
        Some(failed.code),
        "kept, so the overview changed"
    );

    let (mut changed, mut row) = (false, None);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(changed && row.is_some()) {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("a change and a row within 10 s")
            .expect("the stream goes on while the instance runs")
            .expect("no error");
        match event {
            InstanceEvent::Changed => changed = true,
            InstanceEvent::Activity(r) => row = Some(r),
            InstanceEvent::Lagged(n) => panic!("nothing to lag behind on: {n}"),
            InstanceEvent::ShowWindow { .. } => panic!("not following as a window"),
        }
    }
    let row = row.expect("a row");
    assert_eq!(
        row.path, "/v1/control/login/work",
        "the call's audit row: {row:?}"
    );
    assert!(row.status >= 400, "audited as refused: {row:?}");

    // Ended with the instance: the stream ends (or reports that it ended), never hangs.
    lk.shutdown().await;
    let rest = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while let Some(event) = events.next().await {
            if event.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        rest.is_ok(),
        "the stream ends when the instance stops, without waiting for the server's grace period"
    );
    let _ = Control::status(&remote).await.expect_err("stopped");
}

#[tokio::test]
async fn a_request_to_show_the_window_reaches_the_windows_following_and_only_them() {
    use futures_util::StreamExt;
    use latchkey_runtime::Control;
    use latchkey_runtime::control::InstanceEvent;

    let (_dir, _paths, lk, remote) = start_with_client().await;
    assert!(
        !lk.show_window(None),
        "no window follows yet: the tray starts one instead"
    );

    let mut not_a_window = remote.follow_events(false).await.expect("following");
    let mut window = remote.follow_events(true).await.expect("following");
    // The window counts as open once its stream is served (the answer's head is sent after the
    // stream is set up, so this holds from the first event on; poll briefly for the head).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !lk.show_window(Some("services/demo".into())) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the window's stream counts as an open window"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let shown = loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), window.next())
            .await
            .expect("the request within 10 s")
            .expect("the stream goes on")
            .expect("no error");
        if let InstanceEvent::ShowWindow { at } = event {
            break at;
        }
    };
    assert_eq!(shown.as_deref(), Some("services/demo"));

    // The other follower saw the audit row of a control call (a refused revocation: an
    // answered read leaves none) but no request.
    Control::revoke_client(&remote, "nobody")
        .await
        .expect_err("no such client");
    let mut saw_rows = false;
    while let Ok(Some(event)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), not_a_window.next()).await
    {
        let event = event.expect("no error");
        assert!(
            !matches!(event, InstanceEvent::ShowWindow { .. }),
            "only windows are asked to show themselves"
        );
        saw_rows |= matches!(event, InstanceEvent::Activity(_));
    }
    assert!(saw_rows, "it follows the instance all the same");

    drop(window);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while lk.show_window(None) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed window's stream no longer counts"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    lk.shutdown().await;
}

#[tokio::test]
async fn a_followed_activity_log_ends_with_the_instance_and_does_not_hold_up_its_shutdown() {
    use futures_util::StreamExt;
    use latchkey_runtime::Control;
    use latchkey_runtime::control::ActivityEvent;

    let (_dir, _paths, lk, remote) = start_with_client().await;
    let mut rows = remote.follow_activity().await.expect("following");
    // The stream is live: a control call made now arrives as a row. A read of the state that
    // was answered (status) leaves none, so the first row is the refused revocation after it.
    let _ = Control::status(&remote).await.expect("status");
    Control::revoke_client(&remote, "nobody")
        .await
        .expect_err("no such client");
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), rows.next())
        .await
        .expect("a row within 10 s")
        .expect("the stream goes on while the instance runs")
        .expect("no error");
    assert!(
        matches!(&first, ActivityEvent::Row(row) if row.path == "/v1/control/clients/nobody" && row.status == 404),
        "the refused revocation's audit row, not the status read's: {first:?}"
    );

    // `latchkey log --follow` left open: shutdown does not wait out the server's grace period
    // (5 s) for it, and the follower sees its stream end.
    let started = std::time::Instant::now();
    lk.shutdown().await;
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(3),
        "shutdown waited {took:?} for an open activity stream"
    );
    let rest = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while let Some(event) = rows.next().await {
            if event.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(rest.is_ok(), "the follower's stream ends with the instance");
}
