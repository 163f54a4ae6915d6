//! Sessions against the real `oidc-provider` configured the way the big providers behave (issue 9):
//! access tokens addressed to an API, with an empty audience or opaque; rotating, static or no
//! refresh tokens; refresh answers without an id token or a refresh token; confidential native
//! clients with `client_secret_basic` and `client_secret_post`. Each runs login → restore →
//! refresh → logout with the real keychain under `scripts/with-keychain`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use latchkey_core::config::Config;
use latchkey_core::login::{LoginError, Provider};
use latchkey_core::secret::Secret;
use latchkey_core::session::{
    Clock, NOT_RENEWABLE_REASON, Session, SessionError, SessionState, system_clock,
};
use latchkey_core::vault::{Vault, VaultKey};
use latchkey_testkit::{
    AccessTokenFormat, Idp, IdpOptions, IdpProfile, LogCapture, RefreshTokens, browser_login,
};

use crate::support::{http, provider_settings, test_vault, unique};

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
    fn set(&self, at: i64) {
        self.0.store(at, Ordering::SeqCst);
    }
}

/// One account as a provider-specific configuration would write it.
struct Account<'a> {
    client_id: &'a str,
    /// `token_endpoint_auth_method`, when written.
    auth_method: Option<&'a str>,
    /// `audience`, when written (mainstream set-ups often have none).
    audience: Option<&'a str>,
    /// `validate_access_token = true` (needs `audience`).
    validate_access_token: bool,
}

fn config(idp: &Idp, name: &str, a: &Account<'_>) -> Config {
    let mut text = format!(
        "version = 1\n\n[[accounts]]\nname = \"{name}\"\nissuer = \"{}\"\nclient_id = \"{}\"\nallow_insecure_http = true\n",
        idp.issuer(),
        a.client_id
    );
    if let Some(m) = a.auth_method {
        text.push_str(&format!("token_endpoint_auth_method = \"{m}\"\n"));
    }
    if let Some(aud) = a.audience {
        text.push_str(&format!("audience = \"{aud}\"\n"));
    }
    if a.validate_access_token {
        text.push_str("validate_access_token = true\n");
    }
    Config::parse(&text, std::path::Path::new("test.toml")).expect("test config is valid")
}

fn session(cfg: &Config, vault: &Vault, clock: Clock) -> Arc<Session> {
    Arc::new(Session::new(
        cfg.accounts[0].clone(),
        vault.clone(),
        http(),
        clock,
    ))
}

async fn log_in(session: &Session) {
    let pending = session.begin_login().await.expect("login starts");
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
    assert_eq!(user.subject, "alice", "the user is the id token's");
    assert_eq!(user.email.as_deref(), Some("alice@example.test"));
}

fn active(state: &SessionState) -> (i64, i64, bool) {
    match state {
        SessionState::Active {
            user,
            expires_at,
            issued_at,
            renewable,
        } => {
            assert_eq!(
                user.email.as_deref(),
                Some("alice@example.test"),
                "{state:?}"
            );
            (*issued_at, *expires_at, *renewable)
        }
        other => panic!("expected an active session, got {other:?}"),
    }
}

/// What a variant expects of the provider.
struct Expect {
    rotates: bool,
    /// The refresh answer carries an id token.
    refresh_id_token: bool,
}

/// Login → restore in a new session (no network) → refresh past the refresh point → logout, then
/// checks at the provider and in the keychain. `secret` is stored first when the client needs it.
/// Returns every token value the flow handled, for leak checks.
async fn full_cycle(
    idp: &Idp,
    account: &Account<'_>,
    secret: Option<&str>,
    expect: &Expect,
) -> Vec<String> {
    let vault = test_vault();
    let name = unique("provider");
    let cfg = config(idp, &name, account);
    if let Some(secret) = secret {
        vault
            .save_client_secret(&name, &Secret::new(secret))
            .await
            .expect("store the client secret");
    }
    let clock = TestClock::new();

    // Login.
    let first = session(&cfg, &vault, clock.clock());
    log_in(&first).await;
    let (issued_at, expires_at, renewable) = active(&first.state());
    assert!(renewable, "a refresh token was granted");
    let lifetime = expires_at - issued_at;
    assert!(
        (100..=120).contains(&lifetime),
        "the access token's lifetime is the provider's 120 s: {lifetime}"
    );
    let stored = vault
        .load_tokens(&name)
        .await
        .expect("read")
        .expect("stored");
    let first_refresh = stored.refresh_token.clone().expect("refresh token stored");
    let first_id_token = stored.id_token.clone().expect("id token stored");
    assert_eq!(stored.issuer.as_deref(), Some(idp.issuer()));

    // Restore, without the network: a new session from the keychain.
    let restored = session(&cfg, &vault, clock.clock());
    let state = restored.restore().await.expect("restore");
    assert_eq!(active(&state), (issued_at, expires_at, true));

    // Refresh past 80 % of the lifetime: it reaches the provider once.
    let before = idp.stats().await.expect("stats");
    clock.set(issued_at + lifetime * 9 / 10);
    let token = restored.access_token().await.expect("refreshed token");
    let after = idp.stats().await.expect("stats");
    assert_eq!(
        after.refresh_grants - before.refresh_grants,
        1,
        "one refresh at the provider"
    );
    assert_eq!(
        after.refresh_id_tokens - before.refresh_id_tokens,
        u64::from(expect.refresh_id_token),
        "the refresh answer had an id token (or not) as the variant says"
    );
    assert!(!token.ct_eq(&stored.access_token), "a new access token");
    let (_, new_expiry, renewable) = active(&restored.state());
    assert!(renewable);
    assert!(
        new_expiry >= expires_at,
        "the new token lasts at least as long"
    );
    let refreshed = vault
        .load_tokens(&name)
        .await
        .expect("read")
        .expect("stored");
    assert!(
        refreshed.access_token.ct_eq(&token),
        "the keychain has the new token"
    );
    let refresh_token = refreshed
        .refresh_token
        .clone()
        .expect("a refresh token is kept");
    assert_eq!(
        !refresh_token.ct_eq(&first_refresh),
        expect.rotates,
        "the refresh token rotated (or not) as the provider does"
    );
    let id_token = refreshed.id_token.clone().expect("an id token is kept");
    if !expect.refresh_id_token {
        assert!(
            id_token.ct_eq(&first_id_token),
            "without an id token in the refresh answer the login's stays"
        );
    }
    assert_eq!(refreshed.user.subject, "alice", "the user is kept");
    assert_eq!(refreshed.user.email.as_deref(), Some("alice@example.test"));
    let handled: Vec<String> = [
        &stored.access_token,
        &first_refresh,
        &first_id_token,
        &refreshed.access_token,
        &refresh_token,
        &id_token,
    ]
    .iter()
    .map(|t| t.expose().to_owned())
    .collect();

    // Logout: revoked at the provider, nothing of the session left in the keychain.
    let revocations = idp.stats().await.expect("stats").revocations;
    let report = restored.logout().await.expect("logout");
    assert!(report.revoked, "revoked at the provider: {report:?}");
    assert_eq!(restored.state(), SessionState::LoggedOut);
    assert!(idp.stats().await.expect("stats").revocations > revocations);
    assert!(vault.load_tokens(&name).await.expect("read").is_none());
    assert!(
        vault
            .get(&VaultKey::AccountIndex {
                account: name.clone()
            })
            .await
            .expect("read")
            .is_none(),
        "no session entry is left"
    );
    let provider = Provider::discover(http(), provider_settings(&cfg))
        .await
        .expect("discover");
    let auth = provider
        .client_auth(secret.map(Secret::new))
        .expect("client auth");
    let refused = provider.refresh(&refresh_token, &auth, "alice").await;
    assert!(
        matches!(refused, Err(LoginError::InvalidGrant)),
        "the provider refuses the revoked refresh token: {refused:?}"
    );

    // The client secret is configuration: it survives logout until deleted on purpose.
    if let Some(secret) = secret {
        let kept = vault.load_client_secret(&name).await.expect("read");
        assert_eq!(kept.as_ref().map(Secret::expose), Some(secret));
        vault.delete_client_secret(&name).await.expect("delete");
        assert!(
            vault
                .load_client_secret(&name)
                .await
                .expect("read")
                .is_none()
        );
    }
    handled
}

fn options() -> IdpOptions {
    IdpOptions {
        access_ttl: 120,
        refresh_ttl: 3600,
    }
}

#[tokio::test]
async fn okta_like_jwt_access_tokens_for_an_api_and_rotating_refresh_tokens() {
    // The access token is a JWT for `latchkey-gateway` although no audience was asked for.
    let idp = Idp::start_with(options(), &IdpProfile::default())
        .await
        .expect("idp");
    let account = Account {
        client_id: "latchkey",
        auth_method: None,
        audience: None,
        validate_access_token: false,
    };
    full_cycle(
        &idp,
        &account,
        None,
        &Expect {
            rotates: true,
            refresh_id_token: true,
        },
    )
    .await;
}

#[tokio::test]
async fn keycloak_like_jwt_without_audience_static_refresh_token_and_no_id_token_on_refresh() {
    // `aud: []`, no `expires_in` (the lifetime is read from the JWT's exp), the same refresh token
    // every time, and refresh answers without an id token.
    let profile = IdpProfile {
        access_tokens: AccessTokenFormat::JwtEmptyAudience,
        refresh_tokens: RefreshTokens::Static,
        refresh_without_id_token: true,
        without_expires_in: true,
        ..IdpProfile::default()
    };
    let idp = Idp::start_with(options(), &profile).await.expect("idp");
    let account = Account {
        client_id: "latchkey",
        auth_method: None,
        audience: None,
        validate_access_token: false,
    };
    full_cycle(
        &idp,
        &account,
        None,
        &Expect {
            rotates: false,
            refresh_id_token: false,
        },
    )
    .await;
}

#[tokio::test]
async fn a_confidential_client_with_client_secret_post_and_a_checked_access_token() {
    // The account asks for its JWT access tokens to be validated for its audience: oidc-provider's
    // `at+jwt` tokens for `latchkey-gateway` pass, at login and at refresh.
    let secret = latchkey_testkit::canary("post-secret");
    let profile = IdpProfile {
        client_secret: Some(secret.clone()),
        ..IdpProfile::default()
    };
    let idp = Idp::start_with(options(), &profile).await.expect("idp");
    let account = Account {
        client_id: Idp::POST_CLIENT,
        auth_method: Some("client_secret_post"),
        audience: Some("latchkey-gateway"),
        validate_access_token: true,
    };
    full_cycle(
        &idp,
        &account,
        Some(&secret),
        &Expect {
            rotates: true,
            refresh_id_token: true,
        },
    )
    .await;
}

#[tokio::test]
async fn google_like_confidential_client_with_basic_opaque_tokens_and_refresh_answers_without_refresh_token()
 {
    // Method unset: a stored secret picks client_secret_basic from the discovery document. The
    // refresh answer has no refresh token: the one from the login stays in use.
    let logs = LogCapture::start();
    let secret = latchkey_testkit::canary("basic-secret");
    let profile = IdpProfile {
        access_tokens: AccessTokenFormat::Opaque,
        refresh_tokens: RefreshTokens::Static,
        refresh_without_refresh_token: true,
        client_secret: Some(secret.clone()),
        ..IdpProfile::default()
    };
    let idp = Idp::start_with(options(), &profile).await.expect("idp");
    let account = Account {
        client_id: Idp::BASIC_CLIENT,
        auth_method: None,
        audience: None,
        validate_access_token: false,
    };
    let mut secrets = full_cycle(
        &idp,
        &account,
        Some(&secret),
        &Expect {
            rotates: false,
            refresh_id_token: true,
        },
    )
    .await;
    secrets.push(secret);
    logs.assert_absent(&secrets);
    assert!(logs.contains("logged out"), "the capture saw the flow");
}

#[tokio::test]
async fn a_required_client_secret_that_is_missing_stops_the_login_before_the_browser() {
    let idp = Idp::start_with(options(), &IdpProfile::default())
        .await
        .expect("idp");
    let vault = test_vault();
    let name = unique("no-secret");
    let cfg = config(
        &idp,
        &name,
        &Account {
            client_id: Idp::BASIC_CLIENT,
            auth_method: Some("client_secret_basic"),
            audience: None,
            validate_access_token: false,
        },
    );
    let s = session(&cfg, &vault, system_clock());
    let Err(err) = s.begin_login().await else {
        panic!("a login started without the required client secret");
    };
    assert_eq!(err.code(), latchkey_core::Code::ClientSecretMissing);
    let message = err.to_string();
    assert!(
        message.contains(&format!("latchkey account set-secret --account {name}")),
        "the error names the command: {message}"
    );
    assert_eq!(s.state(), SessionState::LoggedOut, "nothing started");
}

/// Waits for the session to leave `Active`, returning the state and the wall-clock second at
/// which it was seen.
async fn wait_until_not_active(session: &Session, deadline: Duration) -> (SessionState, i64) {
    let mut changes = session.subscribe();
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let state = changes.borrow_and_update().clone();
        if !matches!(state, SessionState::Active { .. }) {
            return (state, time::OffsetDateTime::now_utc().unix_timestamp());
        }
        tokio::time::timeout_at(until, changes.changed())
            .await
            .expect("the session ends within the deadline")
            .expect("session alive");
    }
}

#[tokio::test]
async fn without_a_refresh_token_the_session_says_so_serves_until_expiry_then_ends_with_the_reason()
{
    // Providers that do not grant offline_access. Short access tokens, so the background part
    // waits a few seconds of real time.
    let profile = IdpProfile {
        access_tokens: AccessTokenFormat::Opaque,
        refresh_tokens: RefreshTokens::None,
        ..IdpProfile::default()
    };
    let idp = Idp::start_with(
        IdpOptions {
            access_ttl: 4,
            refresh_ttl: 3600,
        },
        &profile,
    )
    .await
    .expect("idp");
    let vault = test_vault();
    let name = unique("no-refresh");
    let account = Account {
        client_id: "latchkey",
        auth_method: None,
        audience: None,
        validate_access_token: false,
    };
    let cfg = config(&idp, &name, &account);

    // Login: active, and says up front that it cannot be renewed and when it ends.
    let clock = TestClock::new();
    let first = session(&cfg, &vault, clock.clock());
    log_in(&first).await;
    let (issued_at, expires_at, renewable) = active(&first.state());
    assert!(!renewable, "no refresh token: not renewable");
    let json = serde_json::to_value(first.state()).expect("json");
    assert_eq!(json["renewable"], false, "the status JSON carries it");
    assert_eq!(json["expires_at"], expires_at);
    let stored = vault
        .load_tokens(&name)
        .await
        .expect("read")
        .expect("stored");
    assert!(stored.refresh_token.is_none());

    // Restore keeps it, and past the refresh point nothing is refreshed and nothing ends.
    let restored = session(&cfg, &vault, clock.clock());
    assert_eq!(
        active(&restored.restore().await.expect("restore")),
        (issued_at, expires_at, false)
    );
    let before = idp.stats().await.expect("stats");
    clock.set(expires_at - 1);
    let token = restored.access_token().await.expect("still valid");
    assert!(
        token.ct_eq(&stored.access_token),
        "the same token, not a refresh"
    );
    let err = restored.refresh_now().await.expect_err("cannot renew");
    assert!(matches!(err, SessionError::NotRenewable { .. }), "{err:?}");
    assert!(matches!(restored.state(), SessionState::Active { .. }));
    assert_eq!(
        idp.stats().await.expect("stats").token_requests,
        before.token_requests,
        "nothing was asked of the provider"
    );

    // At expiry: ended, with the reason, and wiped.
    clock.set(expires_at);
    let err = restored.access_token().await.expect_err("expired");
    assert!(matches!(err, SessionError::LoginRequired { .. }), "{err:?}");
    match restored.state() {
        SessionState::Expired { reason, user } => {
            assert_eq!(reason, NOT_RENEWABLE_REASON);
            assert!(reason.contains("no refresh token") && reason.contains("log in again"));
            assert_eq!(user.map(|u| u.subject).as_deref(), Some("alice"));
        }
        other => panic!("expected expired, got {other:?}"),
    }
    assert!(vault.load_tokens(&name).await.expect("read").is_none());

    // The background refresher, on the real clock: it leaves the session alone until the access
    // token expires, then ends it — not before, and without asking the provider for anything.
    let live = session(&cfg, &vault, system_clock());
    log_in(&live).await;
    let (_, expires_at, _) = active(&live.state());
    let requests = idp.stats().await.expect("stats").token_requests;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let refresher = tokio::spawn(live.clone().run_refresher(async {
        let _ = stopped.await;
    }));
    let (state, seen_at) = wait_until_not_active(&live, Duration::from_secs(20)).await;
    assert!(
        seen_at >= expires_at,
        "ended at {seen_at}, before the expiry at {expires_at}"
    );
    assert!(
        matches!(&state, SessionState::Expired { reason, .. } if reason == NOT_RENEWABLE_REASON),
        "{state:?}"
    );
    assert_eq!(
        idp.stats().await.expect("stats").token_requests,
        requests,
        "the refresher never tried to refresh"
    );
    assert!(vault.load_tokens(&name).await.expect("read").is_none());
    let _ = stop.send(());
    refresher.await.expect("the refresher stops on shutdown");

    // Logout of such a session revokes its access token at the provider.
    let last = session(&cfg, &vault, system_clock());
    log_in(&last).await;
    let revocations = idp.stats().await.expect("stats").revocations;
    let report = last.logout().await.expect("logout");
    assert!(report.revoked, "{report:?}");
    assert_eq!(
        idp.stats().await.expect("stats").revocations,
        revocations + 1,
        "one revocation: the access token"
    );
    assert!(vault.load_tokens(&name).await.expect("read").is_none());
}

#[tokio::test]
async fn a_stored_session_is_not_restored_for_another_issuer() {
    // OIDC Core §12.2: a session stays with its issuer; its refresh token never goes elsewhere.
    let idp = Idp::start_with(options(), &IdpProfile::default())
        .await
        .expect("idp");
    let vault = test_vault();
    let name = unique("issuer-moved");
    let account = Account {
        client_id: "latchkey",
        auth_method: None,
        audience: None,
        validate_access_token: false,
    };
    let cfg = config(&idp, &name, &account);
    log_in(&session(&cfg, &vault, system_clock())).await;
    let text = format!(
        "version = 1\n\n[[accounts]]\nname = \"{name}\"\nissuer = \"http://127.0.0.1:9/elsewhere\"\nclient_id = \"latchkey\"\nallow_insecure_http = true\n"
    );
    let moved = Config::parse(&text, std::path::Path::new("test.toml")).expect("valid");
    let restored = session(&moved, &vault, system_clock());
    match restored.restore().await.expect("restore") {
        SessionState::Expired { reason, .. } => {
            assert!(reason.contains("issuer changed"), "{reason}");
        }
        other => panic!("a session of another issuer was restored: {other:?}"),
    }
    let err = restored.access_token().await.expect_err("not usable");
    assert!(matches!(err, SessionError::LoginRequired { .. }), "{err:?}");
    vault.wipe_account(&name).await.expect("cleanup");
}

#[tokio::test]
async fn validate_access_token_refuses_an_opaque_access_token_with_a_fix() {
    // Asked to validate what the provider makes opaque, the login fails and says what to change.
    let profile = IdpProfile {
        access_tokens: AccessTokenFormat::Opaque,
        ..IdpProfile::default()
    };
    let idp = Idp::start_with(options(), &profile).await.expect("idp");
    let vault = test_vault();
    let name = unique("opaque-checked");
    let cfg = config(
        &idp,
        &name,
        &Account {
            client_id: "latchkey",
            auth_method: None,
            audience: Some("latchkey-gateway"),
            validate_access_token: true,
        },
    );
    let s = session(&cfg, &vault, system_clock());
    let pending = s.begin_login().await.expect("login starts");
    let url = pending.authorize_url().clone();
    let (result, ()) = tokio::join!(s.complete_login(pending), async {
        browser_login(&url, "alice", "alice-password")
            .await
            .expect("sign-in page")
    });
    let err = result.expect_err("an opaque token cannot be validated");
    assert_eq!(err.code(), latchkey_core::Code::AccessTokenNotJwt);
    assert!(
        err.to_string().contains("remove validate_access_token"),
        "{err}"
    );
    assert!(
        vault.load_tokens(&name).await.expect("read").is_none(),
        "nothing stored"
    );
}
