//! Sessions against the real `oidc-provider` and, when `LATCHKEY_TEST_KEYCHAIN=1`, the real
//! Secret Service: login through the sign-in page, restore, single-flight refresh, invalid
//! grant, logout with revocation — and credentials from the gateway double on top.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use latchkey_core::config::Config;
use latchkey_core::credentials::{CredentialState, Credentials, CredentialsError};
use latchkey_core::gateway::{GatewayClient, GatewayError};
use latchkey_core::login::{ClientAuth, LoginError, TokenHint};
use latchkey_core::secret::Secret;
use latchkey_core::session::{Clock, Session, SessionError, SessionState};
use latchkey_core::vault::{Vault, VaultKey};
use latchkey_testkit::{Gateway, Idp, IdpOptions, IdpStats, LogCapture, browser_login};

use crate::support::{http, test_vault, unique};

/// A clock the test moves by hand, starting at the real time.
#[derive(Clone)]
struct TestClock(Arc<AtomicI64>);

impl TestClock {
    fn new() -> Self {
        Self(Arc::new(AtomicI64::new(
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )))
    }
    fn clock(&self) -> Clock {
        let inner = self.0.clone();
        Arc::new(move || inner.load(Ordering::SeqCst))
    }
    fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

fn config(idp: &Idp, gateway: Option<&Gateway>, account: &str) -> Config {
    let gateway_table = gateway.map_or_else(String::new, |g| {
        format!(
            "[gateway]\nurl = \"{}\"\nallow_insecure_http = true\ntimeout_seconds = 2\n\n[[services]]\nname = \"demo\"\naccount = \"{account}\"\ngateway_endpoint = \"/api/v1/credentials/demo\"\nupstream = \"http://127.0.0.1:9\"\nallow_loopback_http = true\ncredentials = [{{ name = \"api_key\", header = \"X-API-Key\" }}]\nttl_seconds = 600\n",
            g.url()
        )
    });
    let text = format!(
        "version = 1\n\n[[accounts]]\nname = \"{account}\"\nissuer = \"{}\"\nclient_id = \"latchkey\"\naudience = \"latchkey-gateway\"\nallow_insecure_http = true\n\n{gateway_table}",
        idp.issuer()
    );
    Config::parse(&text, std::path::Path::new("test.toml")).expect("test config is valid")
}

async fn logged_in(
    idp: &Idp,
    vault: &Vault,
    clock: Clock,
    account: &str,
) -> (Arc<Session>, Config) {
    let cfg = config(idp, None, account);
    let session = Arc::new(Session::new(
        cfg.accounts[0].clone(),
        vault.clone(),
        http(),
        clock,
    ));
    let pending = session.begin_login().await.expect("login starts");
    assert_eq!(session.state(), SessionState::LoggingIn);
    let url = pending.authorize_url().clone();
    let (user, ()) = tokio::join!(
        async {
            session
                .complete_login(pending)
                .await
                .expect("login completes")
        },
        async {
            browser_login(&url, "alice", "alice-password")
                .await
                .expect("sign-in page")
        }
    );
    assert_eq!(user.email.as_deref(), Some("alice@example.test"));
    (session, cfg)
}

/// Alice logged in at a provider whose access tokens live 120 s (refresh tokens an hour), on a
/// clock the test moves.
struct Rig {
    idp: Idp,
    vault: Vault,
    clock: TestClock,
    account: String,
    session: Arc<Session>,
    config: Config,
}

impl Rig {
    async fn logged_in(prefix: &str) -> Self {
        let idp = Idp::start(IdpOptions {
            access_ttl: 120,
            refresh_ttl: 3600,
        })
        .await
        .expect("idp");
        let vault = test_vault();
        let clock = TestClock::new();
        let account = unique(prefix);
        let (session, config) = logged_in(&idp, &vault, clock.clock(), &account).await;
        Self {
            idp,
            vault,
            clock,
            account,
            session,
            config,
        }
    }
}

/// Asks `session` for a refresh the provider holds, and checks the caller stops waiting at the
/// session's timeout while the token held is still served.
async fn give_up_on_a_held_refresh(session: &Session) {
    let gave_up = session.refresh_now().await;
    assert!(
        matches!(gave_up, Err(SessionError::Login(LoginError::Timeout(_)))),
        "the caller stops waiting at the session's timeout: {gave_up:?}"
    );
    assert!(
        matches!(session.state(), SessionState::Active { .. }),
        "the token held is still valid: {:?}",
        session.state()
    );
}

/// Waits (up to 10 s) until the provider's counters show `what`, checking `invariant` at every
/// look; returns the counters.
async fn wait_for_stats(
    idp: &Idp,
    what: &str,
    until: impl Fn(&IdpStats) -> bool,
    invariant: impl Fn(&IdpStats),
) -> IdpStats {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = idp.stats().await.expect("stats");
        invariant(&now);
        if until(&now) {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn login_stores_tokens_and_a_new_session_restores_them_without_network() {
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let vault = test_vault();
    let account = unique("restore");
    let (session, cfg) = logged_in(
        &idp,
        &vault,
        latchkey_core::session::system_clock(),
        &account,
    )
    .await;
    assert!(session.state().is_usable());
    let stored = vault
        .load_tokens(&account)
        .await
        .expect("keychain read")
        .expect("tokens stored");
    assert!(
        stored.refresh_token.is_some(),
        "offline_access yields a refresh token"
    );

    // The IdP goes away: restoring must not need it.
    drop(idp);
    let again = Session::new(
        cfg.accounts[0].clone(),
        vault.clone(),
        http(),
        latchkey_core::session::system_clock(),
    );
    let state = again.restore().await.expect("restore");
    assert!(matches!(state, SessionState::Active { .. }), "{state:?}");
    assert_eq!(
        state.user().and_then(|u| u.email.as_deref()),
        Some("alice@example.test")
    );
    vault.wipe_account(&account).await.expect("cleanup");
}

#[tokio::test]
async fn refresh_runs_once_for_a_thousand_concurrent_callers() {
    let Rig {
        idp,
        vault,
        clock,
        account,
        session,
        config: _,
    } = Rig::logged_in("single-flight").await;
    let before = idp.stats().await.expect("stats");
    let first = session.access_token().await.expect("token");

    // Past the refresh point (80 % of 120 s), 1,000 callers at once.
    clock.advance(100);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move { session.access_token().await }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.expect("task").expect("every caller gets a token"));
    }
    let after = idp.stats().await.expect("stats");
    assert_eq!(
        after.refresh_grants - before.refresh_grants,
        1,
        "exactly one refresh reached the IdP"
    );
    assert_eq!(
        after.token_requests - before.token_requests,
        1,
        "exactly one token endpoint call"
    );
    assert!(
        tokens.iter().all(|t| t.ct_eq(&tokens[0])),
        "everyone got the same new token"
    );
    assert!(!tokens[0].ct_eq(&first), "and it is a new one");
    // The rotated refresh token reached the keychain.
    let stored = vault
        .load_tokens(&account)
        .await
        .expect("read")
        .expect("stored");
    assert!(stored.access_token.ct_eq(&tokens[0]));
    vault.wipe_account(&account).await.expect("cleanup");
}

/// A provider that rotates refresh tokens, with reuse detection (a rotated-out refresh token
/// presented again ends the whole grant), answers a refresh only after the session stopped
/// waiting for it, and processes it although nobody may be listening any more. The session keeps
/// that request going and reads its late answer: the refresh token is never sent twice, the
/// rotated one is kept, and the session goes on. (Sending the old token again, as a new refresh
/// after the timeout once did, ended the session with `invalid_grant`.)
#[tokio::test]
async fn a_refresh_answered_after_its_callers_gave_up_is_read_not_sent_again() {
    let Rig {
        idp,
        vault,
        account,
        session,
        ..
    } = Rig::logged_in("late-answer").await;
    let before = idp.stats().await.expect("stats");
    idp.hold_token_requests_processing_abandoned()
        .await
        .expect("hold");
    give_up_on_a_held_refresh(&session).await;

    idp.release_token_requests().await.expect("release");
    // The provider processes the held refresh: the refresh token it carried is rotated out.
    wait_for_stats(
        &idp,
        "the held refresh was processed",
        |now| now.refresh_grants > before.refresh_grants,
        |_| {},
    )
    .await;

    session
        .refresh_now()
        .await
        .expect("the late answer is read, not the old refresh token sent again");
    let after = idp.stats().await.expect("stats");
    assert_eq!(
        after.token_requests - before.token_requests,
        1,
        "one token request for both refreshes"
    );
    assert_eq!(after.refresh_grants - before.refresh_grants, 1);

    // The rotated refresh token is the one kept: the chain goes on.
    session.refresh_now().await.expect("the next refresh");
    let last = idp.stats().await.expect("stats");
    assert_eq!(last.refresh_grants - before.refresh_grants, 2);
    assert!(matches!(session.state(), SessionState::Active { .. }));
    let stored = vault
        .load_tokens(&account)
        .await
        .expect("read")
        .expect("stored");
    assert!(
        stored
            .access_token
            .ct_eq(&session.access_token().await.expect("token"))
    );
    vault.wipe_account(&account).await.expect("cleanup");
}

/// The same late answer, but a refusal: the provider revoked the refresh token while the request
/// waited. The session reads the refusal and ends; it does not send the refused token again.
#[tokio::test]
async fn a_late_refusal_of_a_refresh_ends_the_session_without_a_second_request() {
    let Rig {
        idp,
        vault,
        account,
        session,
        config: cfg,
        ..
    } = Rig::logged_in("late-refusal").await;
    let before = idp.stats().await.expect("stats");
    idp.hold_token_requests_processing_abandoned()
        .await
        .expect("hold");
    give_up_on_a_held_refresh(&session).await;
    let refresh = vault
        .load_tokens(&account)
        .await
        .expect("read")
        .expect("stored")
        .refresh_token
        .expect("refresh token");
    let provider =
        latchkey_core::login::Provider::discover(http(), crate::support::provider_settings(&cfg))
            .await
            .expect("discover");
    assert!(
        provider
            .revoke(&refresh, TokenHint::RefreshToken, &ClientAuth::public())
            .await
            .expect("revoke")
    );
    idp.release_token_requests().await.expect("release");
    wait_for_stats(
        &idp,
        "the held refresh was processed",
        |now| now.token_requests > before.token_requests,
        |_| {},
    )
    .await;

    let err = session
        .refresh_now()
        .await
        .expect_err("the provider refused the held refresh");
    assert!(matches!(err, SessionError::LoginRequired { .. }), "{err:?}");
    assert!(
        matches!(session.state(), SessionState::Expired { .. }),
        "{:?}",
        session.state()
    );
    let after = idp.stats().await.expect("stats");
    assert_eq!(
        after.token_requests - before.token_requests,
        1,
        "the refused refresh token was not sent again"
    );
    assert!(
        vault.load_tokens(&account).await.expect("read").is_none(),
        "the ended session left the keychain"
    );
}

/// Logging out stops a refresh still going for the tokens it wipes: the provider never processes
/// it (a rotation nobody would read, of a grant just revoked).
#[tokio::test]
async fn logging_out_stops_a_refresh_still_going() {
    let Rig { idp, session, .. } = Rig::logged_in("logout-inflight").await;
    let before = idp.stats().await.expect("stats");
    idp.hold_token_requests().await.expect("hold");
    give_up_on_a_held_refresh(&session).await;
    session.logout().await.expect("logout");
    idp.release_token_requests().await.expect("release");

    wait_for_stats(
        &idp,
        "the held refresh's client left",
        |now| now.abandoned_token_requests > before.abandoned_token_requests,
        |now| {
            assert_eq!(
                now.token_requests, before.token_requests,
                "the held refresh reached the provider after logout"
            );
        },
    )
    .await;
    assert!(matches!(session.state(), SessionState::LoggedOut));
}

#[tokio::test]
async fn a_revoked_refresh_token_ends_the_session_with_log_in_again() {
    let Rig {
        idp: _provider_kept_running,
        vault,
        clock,
        account,
        session,
        config: cfg,
    } = Rig::logged_in("invalid-grant").await;
    let stored = vault
        .load_tokens(&account)
        .await
        .expect("read")
        .expect("stored");
    let provider =
        latchkey_core::login::Provider::discover(http(), crate::support::provider_settings(&cfg))
            .await
            .expect("discover");
    let refresh = stored.refresh_token.expect("refresh token");
    assert!(
        provider
            .revoke(&refresh, TokenHint::RefreshToken, &ClientAuth::public())
            .await
            .expect("revoke")
    );

    clock.advance(100);
    let err = session
        .access_token()
        .await
        .expect_err("the IdP refuses the refresh");
    assert!(matches!(err, SessionError::LoginRequired { .. }), "{err:?}");
    assert!(
        matches!(session.state(), SessionState::Expired { .. }),
        "{:?}",
        session.state()
    );
    assert!(
        vault.load_tokens(&account).await.expect("read").is_none(),
        "ended session left the keychain"
    );
}

/// Stands in for an identity provider that went away: takes the port it listened on, counts the
/// connections that arrive and closes each at once (the client sees the provider unreachable).
async fn unreachable_in_place_of(
    idp: Idp,
) -> (
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let port = url::Url::parse(idp.issuer())
        .expect("issuer url")
        .port_or_known_default()
        .expect("issuer port");
    drop(idp);
    let mut bound = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => {
                bound = Some(listener);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let listener = bound.expect("the provider's port is free once it has gone");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (accepted, task)
}

/// Callers queued behind a refresh that found the provider unreachable get that answer (and keep
/// the still-valid token) instead of each trying the provider again and waiting out its failure.
#[tokio::test]
async fn callers_queued_behind_a_refresh_that_found_the_provider_gone_share_its_answer() {
    let Rig {
        idp,
        vault,
        clock,
        account,
        session,
        config: _,
    } = Rig::logged_in("shared-outage").await;
    let first = session.access_token().await.expect("token");
    let (accepted, listener) = unreachable_in_place_of(idp).await;

    // Past the refresh point (80 % of 120 s), before expiry: 20 callers at once.
    clock.advance(100);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move { session.access_token().await }));
    }
    for t in tasks {
        let token = t
            .await
            .expect("task")
            .expect("the token has not expired: every caller is served with it");
        assert!(token.ct_eq(&first), "the token held before the outage");
    }
    // The one attempt may go out on the pooled connection to the provider that has gone (then it
    // fails without reaching the listener), so the listener counts 0 to 2 connections; the
    // session's own record of failed refreshes says how many refreshes were tried.
    let connections = accepted.load(Ordering::SeqCst);
    assert!(
        connections <= 2,
        "one refresh attempt (a retried connection at most) for 20 callers, not one each: {connections}"
    );
    assert_eq!(
        session.refresh_failure().map(|f| f.attempts),
        Some(1),
        "one refresh tried and failed for 20 callers, not one each"
    );
    assert!(
        matches!(session.state(), SessionState::Active { .. }),
        "an outage while the token is valid leaves the session active: {:?}",
        session.state()
    );
    assert!(
        vault.load_tokens(&account).await.expect("read").is_some(),
        "an outage deletes nothing"
    );
    listener.abort();
    vault.wipe_account(&account).await.expect("cleanup");
}

/// A refresh that fails at the very second the token expires: nothing is served, the session shows
/// the provider's error (not "active"), and the stored session stays for when the provider is back.
#[tokio::test]
async fn a_refresh_failing_at_the_instant_of_expiry_serves_nothing_and_shows_the_outage() {
    let Rig {
        idp,
        vault,
        clock,
        account,
        session,
        config: _,
    } = Rig::logged_in("outage-at-expiry").await;
    let SessionState::Active { expires_at, .. } = session.state() else {
        panic!("logged in: {:?}", session.state());
    };
    let (_accepted, listener) = unreachable_in_place_of(idp).await;
    let now = (clock.clock())();
    clock.advance(expires_at - now);
    assert_eq!(
        (clock.clock())(),
        expires_at,
        "the clock stands at the expiry"
    );

    let err = session
        .access_token()
        .await
        .expect_err("an expired token is not served");
    assert_eq!(err.code(), latchkey_core::Code::IdpUnreachable, "{err:?}");
    match session.state() {
        SessionState::Error { code, .. } => assert_eq!(code, latchkey_core::Code::IdpUnreachable),
        other => panic!("the session shows the outage, not {other:?}"),
    }
    assert!(
        vault.load_tokens(&account).await.expect("read").is_some(),
        "an outage deletes nothing"
    );
    listener.abort();
    vault.wipe_account(&account).await.expect("cleanup");
}

#[tokio::test]
async fn logout_revokes_at_the_idp_and_leaves_nothing_in_the_keychain() {
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let vault = test_vault();
    let account = unique("logout");
    let (session, cfg) = logged_in(
        &idp,
        &vault,
        latchkey_core::session::system_clock(),
        &account,
    )
    .await;
    let stored = vault
        .load_tokens(&account)
        .await
        .expect("read")
        .expect("stored");
    vault
        .save_credentials(
            &account,
            "demo",
            &latchkey_core::vault::StoredCredentials {
                values: BTreeMap::from([("api_key".to_owned(), Secret::new("x"))]),
                fetched_at: 0,
                ttl_seconds: 60,
            },
        )
        .await
        .expect("seed a credential");

    let report = session.logout().await.expect("logout");
    assert!(report.revoked, "the sandbox IdP advertises revocation");
    assert_eq!(session.state(), SessionState::LoggedOut);
    assert!(vault.load_tokens(&account).await.expect("read").is_none());
    assert!(
        vault
            .load_credentials(&account, "demo")
            .await
            .expect("read")
            .is_none()
    );

    let provider =
        latchkey_core::login::Provider::discover(http(), crate::support::provider_settings(&cfg))
            .await
            .expect("discover");
    let refused = provider
        .refresh(
            &stored.refresh_token.expect("refresh"),
            &ClientAuth::public(),
            &stored.user.subject,
        )
        .await;
    assert!(
        matches!(refused, Err(LoginError::InvalidGrant)),
        "revoked refresh token still works: {refused:?}"
    );
}

#[tokio::test]
async fn gateway_credentials_follow_the_protocol_and_never_reach_the_logs() {
    let logs = LogCapture::start();
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let api_key = latchkey_testkit::canary("gateway-key");
    let credential = latchkey_testkit::canary("demo-credential");
    let gateway = Gateway::start_with(
        idp.issuer(),
        &api_key,
        &[("alice", "demo", "api_key", credential.as_str())],
    )
    .await
    .expect("gateway");
    let vault = test_vault();
    let clock = TestClock::new();
    let account = unique("gateway");
    let cfg = Arc::new(config(&idp, Some(&gateway), &account));
    let session = Arc::new(Session::new(
        cfg.accounts[0].clone(),
        vault.clone(),
        http(),
        clock.clock(),
    ));
    let pending = session.begin_login().await.expect("login");
    let url = pending.authorize_url().clone();
    let ((), ()) = tokio::join!(
        async {
            session
                .complete_login(pending)
                .await
                .expect("login completes");
        },
        async {
            browser_login(&url, "alice", "alice-password")
                .await
                .expect("sign-in")
        }
    );
    let stored_tokens = vault
        .load_tokens(&account)
        .await
        .expect("read")
        .expect("stored");
    let stored_refresh = stored_tokens
        .refresh_token
        .as_ref()
        .map(|t| t.expose().to_owned())
        .unwrap_or_default();
    let sessions = BTreeMap::from([(account.clone(), session.clone())]);
    let g = cfg.gateway.as_ref().expect("gateway table");
    let creds = Credentials::new(
        cfg.clone(),
        sessions,
        Some(GatewayClient::new(http(), g.url.clone(), g.timeout)),
        vault.clone(),
        clock.clock(),
    );

    // No API key yet: an actionable error.
    let err = creds.get("demo").await.expect_err("no key");
    assert_eq!(err.code(), latchkey_core::Code::GatewayApiKeyMissing);
    creds
        .set_api_key(Secret::new(api_key.clone()))
        .await
        .expect("store key");

    // 200: the credential, cached and persisted.
    let values = creds.get("demo").await.expect("credentials");
    assert_eq!(
        values.get("api_key").map(Secret::expose),
        Some(credential.as_str())
    );
    assert_eq!(creds.statuses()[0].state, CredentialState::Fresh);
    assert!(
        vault
            .load_credentials(&account, "demo")
            .await
            .expect("read")
            .is_some()
    );

    // A 401 is followed by exactly one refresh and one retry.
    gateway
        .script("demo", &[serde_json::json!({"status": 401})])
        .await
        .expect("script");
    let before = idp.stats().await.expect("stats");
    creds.forget_account(&account);
    let values = creds.get("demo").await.expect("retry after refresh");
    assert!(values.contains_key("api_key"));
    let after = idp.stats().await.expect("stats");
    assert_eq!(
        after.refresh_grants - before.refresh_grants,
        1,
        "one refresh for the 401"
    );

    // Gateway down: the cached value serves until its TTL, never after.
    gateway
        .script("demo", &vec![serde_json::json!({"status": 503}); 4])
        .await
        .expect("script");
    clock.advance(500); // past the refresh point of the 600 s TTL, within it
    let values = creds
        .get("demo")
        .await
        .expect("cached while the gateway is down");
    assert!(values.contains_key("api_key"));
    assert_eq!(creds.statuses()[0].state, CredentialState::Cached);
    clock.advance(200); // past the TTL
    let err = creds
        .get("demo")
        .await
        .expect_err("expired cache must not serve");
    assert!(
        matches!(
            err,
            CredentialsError::Gateway(GatewayError::Unavailable { .. })
        ),
        "{err:?}"
    );

    // 403 and 404 have their own errors; nothing stored is lost by them.
    gateway
        .script("demo", &[serde_json::json!({"status": 403})])
        .await
        .expect("script");
    let err = creds.get("demo").await.expect_err("403");
    assert_eq!(err.code(), latchkey_core::Code::ForbiddenService);
    gateway
        .script("demo", &[serde_json::json!({"status": 404})])
        .await
        .expect("script");
    let err = creds.get("demo").await.expect_err("404");
    assert_eq!(err.code(), latchkey_core::Code::CredentialsNotConfigured);
    assert!(
        vault.load_tokens(&account).await.expect("read").is_some(),
        "the session survives gateway errors"
    );

    session.logout().await.expect("logout");
    let stored_key = vault.get(&VaultKey::GatewayApiKey).await.expect("read");
    assert!(
        stored_key.is_some(),
        "the gateway API key is not the account's and stays"
    );
    vault
        .delete(&VaultKey::GatewayApiKey)
        .await
        .expect("cleanup");

    // Neither the canaries nor the real tokens of this login appear in any log line.
    let tokens = [
        stored_tokens.access_token.expose().to_owned(),
        stored_refresh,
    ];
    let mut secrets: Vec<&str> = vec![api_key.as_str(), credential.as_str()];
    secrets.extend(tokens.iter().map(String::as_str));
    logs.assert_absent(&secrets);
    assert!(
        logs.contains("credentials fetched"),
        "the capture saw the flow"
    );
}
