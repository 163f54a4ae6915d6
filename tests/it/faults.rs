//! The fault matrix (SECURITY.md, "Fault matrix"), across processes: `latchkey serve` killed with
//! `SIGKILL` while its refresh waits at the identity provider, then started again, against the
//! real sandbox IdP (which rotates refresh tokens) and the real Secret Service. The session must
//! restore, the next refresh succeed, and the refresh token it rotates must reach the keychain.

use std::time::Duration;

use latchkey_testkit::IdpOptions;

use crate::{Stack, keychain_available};

const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every 100 ms (some checks run the CLI) until it holds; fails after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    latchkey_testkit::eventually(what, DEADLINE, Duration::from_millis(100), check).await;
}

/// `latchkey token` in the background (it waits while the refresh is held).
fn ask_for_a_token(stack: &Stack) -> std::process::Child {
    stack
        .home
        .command(&["token"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("latchkey token")
}

/// What `latchkey status --json` shows.
fn status(stack: &Stack) -> serde_json::Value {
    let out = stack.home.run(&["status", "--json"], "").expect("status");
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).expect("json")
}

/// The account's state as `latchkey status --json` shows it.
fn state(stack: &Stack) -> serde_json::Value {
    status(stack)["accounts"][0]["state"].clone()
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn sigkill_mid_refresh_then_restart_restores_the_session_and_keeps_the_rotated_refresh_token()
{
    if !keychain_available() {
        return;
    }
    // Access tokens of 4 s: the background refresh is due 2 s after each token arrives.
    let stack = Stack::start(IdpOptions {
        access_ttl: 4,
        refresh_ttl: 3600,
    })
    .await;
    let serve = stack.home.serve().expect("serve");
    let s = &stack;
    eventually("the CLI finds the running instance", || async move {
        status(s)["running"] == true
    })
    .await;
    stack.login().await;
    let entries = stack.keychain_entries();
    assert!(entries >= 1, "the session is in the keychain");

    // The next token request is held at the IdP: the refresh is in flight when the kill lands.
    stack.idp.hold_token_requests().await.expect("hold");
    let before = stack.idp.stats().await.expect("stats");
    // `latchkey token` asks the instance for a token, which is due for a refresh.
    let mut asking = ask_for_a_token(&stack);
    eventually("the refresh reaches the IdP", || async move {
        s.idp.stats().await.expect("stats").held_token_requests > 0
    })
    .await;
    assert_eq!(
        state(&stack)["kind"],
        "refreshing",
        "status shows the refresh in flight"
    );
    drop(serve); // `Child::kill`: SIGKILL, no chance to clean up
    let _ = asking.wait();
    stack.idp.release_token_requests().await.expect("release");
    assert_eq!(
        stack.idp.stats().await.expect("stats").refresh_grants,
        before.refresh_grants,
        "the killed refresh was never granted"
    );
    assert_eq!(
        stack.keychain_entries(),
        entries,
        "the keychain still holds the session"
    );

    // Restarted: the session restores and the next refresh succeeds.
    let serve = stack.home.serve().expect("serve again");
    let restored = state(&stack);
    assert!(
        ["active", "refreshing"].contains(&restored["kind"].as_str().unwrap_or_default()),
        "the session restores from the keychain: {restored:#}"
    );
    assert_eq!(restored["user"]["email"], "alice@example.test");
    eventually("the restarted instance refreshes", || async move {
        s.idp.stats().await.expect("stats").refresh_grants > before.refresh_grants
    })
    .await;
    let token = stack.home.run(&["token"], "").expect("token");
    assert_eq!(
        token.code, 0,
        "a valid token after the restart: {}",
        token.stderr
    );

    // Killed again, mid-refresh again, and restarted: the refresh token the last completed
    // refresh rotated was kept, so the refresh after this restart succeeds too (the IdP refuses
    // a rotated-away one, and ends the whole grant for it).
    stack.idp.hold_token_requests().await.expect("hold");
    let held = stack.idp.stats().await.expect("stats").held_token_requests;
    let mut asking = ask_for_a_token(&stack);
    eventually("the next refresh reaches the IdP", || async move {
        s.idp.stats().await.expect("stats").held_token_requests > held
    })
    .await;
    drop(serve); // SIGKILL
    let _ = asking.wait();
    stack.idp.release_token_requests().await.expect("release");
    let granted = stack.idp.stats().await.expect("stats").refresh_grants;
    let serve = stack.home.serve().expect("serve a third time");
    eventually(
        "the refresh after the second restart succeeds",
        || async move { s.idp.stats().await.expect("stats").refresh_grants > granted },
    )
    .await;
    let now = state(&stack);
    assert!(
        ["active", "refreshing"].contains(&now["kind"].as_str().unwrap_or_default()),
        "the session lives on: {now:#}"
    );
    let logs = serve.stop().expect("clean stop");
    assert!(
        !logs.contains("invalid_grant"),
        "no refresh was refused: {logs}"
    );
}

/// `latchkey login` through a running `latchkey serve` arms that instance's background refresh:
/// with 4 s access tokens, refresh grants reach the IdP with no request asking for a token. (The
/// refresher woke on the login's state change before the session was in memory, found none, and
/// slept for an hour.)
#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn a_login_through_a_running_instance_is_refreshed_in_the_background() {
    if !keychain_available() {
        return;
    }
    let stack = Stack::start(IdpOptions {
        access_ttl: 4,
        refresh_ttl: 3600,
    })
    .await;
    let serve = stack.home.serve().expect("serve");
    let s = &stack;
    eventually("the CLI finds the running instance", || async move {
        status(s)["running"] == true
    })
    .await;
    let before = stack.idp.stats().await.expect("stats").refresh_grants;
    stack.login().await;
    // Nothing asks for a token: only the instance's own refresher can make these.
    eventually("two background refreshes reach the IdP", || async move {
        s.idp.stats().await.expect("stats").refresh_grants >= before + 2
    })
    .await;
    let now = state(&stack);
    assert!(
        ["active", "refreshing"].contains(&now["kind"].as_str().unwrap_or_default()),
        "the session lives on: {now:#}"
    );
    serve.stop().expect("clean stop");
}
