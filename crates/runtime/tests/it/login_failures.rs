//! The last login failure per account, as the runtime keeps it: set when a login fails (by the
//! pre-flight or after the callback), shown in the overview and the tray, returned by
//! `wait_login`, and cleared when the next login starts or one succeeds. Against the real
//! sandbox IdP, with one account whose client has another redirect URI registered and one that
//! works.

use std::sync::Arc;

use latchkey_core::paths::Paths;
use latchkey_core::session::SessionState;
use latchkey_core::vault::{MemoryStore, Vault};
use latchkey_runtime::{Latchkey, StartOptions, TrayIcon};
use latchkey_testkit::{Idp, IdpOptions, browser_login};

async fn start(idp: &Idp) -> (Latchkey, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = Paths::new(dir.path().join("config"), dir.path().join("data"));
    std::fs::create_dir_all(paths.config_dir()).expect("config dir");
    std::fs::write(
        paths.config_file(),
        format!(
            r#"version = 1
[[accounts]]
name = "good"
issuer = "{issuer}"
client_id = "latchkey"
allow_insecure_http = true

[[accounts]]
name = "bad"
issuer = "{issuer}"
client_id = "latchkey-wrong-redirect"
allow_insecure_http = true
"#,
            issuer = idp.issuer()
        ),
    )
    .expect("config");
    let lk = Latchkey::start(StartOptions {
        paths,
        proxy_port: None,
        vault: Some(Vault::new(Arc::new(MemoryStore::new()))),
        serve_proxy: false,
    })
    .await
    .expect("start");
    (lk, dir)
}

fn account_state(lk: &Latchkey, name: &str) -> SessionState {
    lk.overview()
        .accounts
        .into_iter()
        .find(|a| a.name == name)
        .map(|a| a.state)
        .expect("account")
}

#[tokio::test]
async fn a_refused_pre_flight_is_kept_shown_in_the_tray_and_returned_by_wait_login() {
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let (lk, _dir) = start(&idp).await;

    let e = lk.begin_login("bad").await.expect_err("refused");
    assert_eq!(e.code, latchkey_core::Code::RedirectUriNotRegistered);
    assert!(
        matches!(account_state(&lk, "bad"), SessionState::LoggedOut),
        "the session is back where it was"
    );
    let kept = lk.last_login_error("bad").expect("kept");
    assert_eq!(
        (kept.code.as_str(), kept.message.as_str()),
        (e.code.as_str(), e.message.as_str())
    );
    let view = lk
        .overview()
        .accounts
        .into_iter()
        .find(|a| a.name == "bad")
        .expect("account");
    assert_eq!(view.last_login_error.as_ref(), Some(&kept));
    assert!(
        lk.last_login_error("good").is_none(),
        "one account's failure is its own"
    );

    let tray = lk.tray_status();
    assert_eq!(tray.icon, TrayIcon::Error);
    assert_eq!(
        tray.title,
        "Login failed: redirect URI not registered at the provider"
    );
    assert!(tray.tooltip.contains(&kept.message), "{}", tray.tooltip);

    let waited = lk.wait_login("bad").await.expect_err("no session");
    assert_eq!(waited.code, latchkey_core::Code::RedirectUriNotRegistered);
    lk.shutdown().await;
}

#[tokio::test]
async fn a_declined_sign_in_is_kept_until_the_next_login_starts_and_stays_clear_after_success() {
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let (lk, _dir) = start(&idp).await;

    let url = lk.begin_login("good").await.expect("login starts");
    // The provider's redirect after the person declined, to the loopback listener.
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .expect("param")
    };
    let mut callback = url::Url::parse(&param("redirect_uri")).expect("redirect uri");
    callback
        .query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("state", &param("state"))
        // oidc-provider promises RFC 9207 `iss` in every answer, refusals included.
        .append_pair("iss", idp.issuer());
    reqwest::get(callback).await.expect("callback");
    let e = lk.wait_login("good").await.expect_err("declined");
    assert_eq!(e.code, latchkey_core::Code::AccessDenied);
    assert_eq!(
        lk.last_login_error("good").map(|f| f.code),
        Some(latchkey_core::Code::AccessDenied)
    );
    assert_eq!(
        lk.tray_status().icon,
        TrayIcon::LoggedOut,
        "declining is not an alarm"
    );

    let url = lk.begin_login("good").await.expect("login starts again");
    assert!(
        lk.last_login_error("good").is_none(),
        "starting a login forgets the last failure"
    );
    browser_login(&url, "alice", "alice-password")
        .await
        .expect("sign in");
    lk.wait_login("good").await.expect("logged in");
    assert!(lk.last_login_error("good").is_none());
    assert!(account_state(&lk, "good").is_usable());
    lk.shutdown().await;
}

#[tokio::test]
async fn cancelling_ends_a_waiting_login_with_login_cancelled_and_no_alarm() {
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let (lk, _dir) = start(&idp).await;
    lk.begin_login("good").await.expect("login starts");
    let waiter = {
        let lk = lk.clone();
        tokio::spawn(async move { lk.wait_login("good").await })
    };
    // Whether the waiter is already waiting or not, the cancel decides its answer.
    lk.cancel_login("good");
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
        .await
        .expect("the waiter returns once the login is cancelled")
        .expect("join")
        .expect_err("cancelled");
    assert_eq!(e.code, latchkey_core::Code::LoginCancelled);
    let kept = lk.last_login_error("good").expect("kept");
    assert!(kept.is_cancel());
    assert_eq!(lk.tray_status().icon, TrayIcon::LoggedOut);
    lk.shutdown().await;
}
