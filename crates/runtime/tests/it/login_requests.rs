//! A host that asks for a service while nobody is logged in: the proxy refuses it with
//! `login_required`, and the running instance remembers who asked for what, so the tray can
//! say "Log in needed: cursor asked for demo" instead of leaving the person to guess why their
//! host failed.

use std::time::{Duration, Instant};

use latchkey_runtime::TrayIcon;

use crate::serving::{paths, start};

#[tokio::test]
async fn a_request_refused_for_want_of_a_login_names_its_client_and_service_in_the_tray() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lk = start(&paths(&dir)).await.expect("start");
    let port = lk.proxy_addr().expect("serving").port();
    let cursor = lk
        .create_client("cursor", &["demo".to_owned()])
        .expect("client");
    assert!(lk.login_requested("work").is_none());
    assert_eq!(lk.tray_status().title, "Not signed in");

    let refused = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/demo/whoami"))
        .header("x-latchkey-client", &cursor.token)
        .send()
        .await
        .expect("request");
    assert_eq!(
        refused.status(),
        424,
        "login_required is not an OAuth challenge"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let asked = loop {
        if let Some(asked) = lk.login_requested("work") {
            break asked;
        }
        assert!(
            Instant::now() < deadline,
            "the refusal never reached the runtime"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (asked.client.as_str(), asked.service.as_str()),
        ("cursor", "demo")
    );
    let tray = lk.tray_status();
    assert_eq!(tray.title, "Log in needed: cursor asked for demo");
    assert_eq!(tray.icon, TrayIcon::Expired);
    let account = lk
        .overview()
        .accounts
        .into_iter()
        .find(|a| a.name == "work")
        .expect("account");
    assert_eq!(
        account.login_requested,
        Some(asked),
        "the window sees it too"
    );
    lk.shutdown().await;
}
