//! A session against a second identity provider of another make: Glewlwyd (Debian's C OpenID
//! Connect server, `latchkey_testkit::glewlwyd`), whose access tokens are JWTs addressed to the
//! granted scopes rather than to Latchkey, whose issuer has a path, whose refresh tokens rotate
//! and which refuses RFC 7009 revocation from a public client. Login through its sign-in app's
//! API, forced refresh, logout — with the real keychain under `scripts/with-keychain`.

use latchkey_core::config::Config;
use latchkey_core::login::Provider;
use latchkey_core::login::UserInfo;
use latchkey_core::session::{Session, SessionError, SessionState, system_clock};
use latchkey_core::vault::Vault;
use latchkey_testkit::glewlwyd::{Glewlwyd, GlewlwydOptions};

use crate::support::{http, provider_settings, test_vault, unique};

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A day-one configuration: the issuer and client id the provider's admin hands out, the default
/// scopes, no `audience`; the callback port is fixed because Glewlwyd matches redirect URIs
/// exactly, port included.
fn config(idp: &Glewlwyd, account: &str, callback_port: u16) -> Config {
    let text = format!(
        "version = 1\n\n[[accounts]]\nname = \"{account}\"\nissuer = \"{}\"\nclient_id = \"{}\"\nallow_insecure_http = true\ncallback_port = {callback_port}\n",
        idp.issuer(),
        Glewlwyd::CLIENT_ID,
    );
    Config::parse(&text, std::path::Path::new("test.toml")).expect("test config is valid")
}

/// A Glewlwyd and a session of a fresh account configured for it (not logged in yet), with the
/// real keychain.
struct Rig {
    idp: Glewlwyd,
    vault: Vault,
    account: String,
    config: Config,
    session: Session,
}

impl Rig {
    async fn start(prefix: &str) -> Self {
        let callback_port = free_port();
        let idp = Glewlwyd::start(GlewlwydOptions::for_redirect_port(callback_port))
            .await
            .expect("Glewlwyd starts (run scripts/setup)");
        let vault = test_vault();
        let account = unique(prefix);
        let config = config(&idp, &account, callback_port);
        let session = Session::new(
            config.accounts[0].clone(),
            vault.clone(),
            http(),
            system_clock(),
        );
        Self {
            idp,
            vault,
            account,
            config,
            session,
        }
    }
}

/// Logs `session` in through Glewlwyd's sign-in app and checks who it says logged in.
async fn log_in(idp: &Glewlwyd, session: &Session) -> UserInfo {
    let pending = session.begin_login().await.expect("login starts");
    let url = pending.authorize_url().clone();
    let (user, ()) = tokio::join!(
        async {
            session
                .complete_login(pending)
                .await
                .expect("login completes (a JWT access token not addressed to Latchkey is fine)")
        },
        async {
            idp.sign_in(&url, Glewlwyd::USER, Glewlwyd::PASSWORD)
                .await
                .expect("sign-in app")
        }
    );
    assert_eq!(user.email.as_deref(), Some(Glewlwyd::EMAIL));
    assert_eq!(user.name.as_deref(), Some(Glewlwyd::NAME));
    assert_ne!(user.subject, Glewlwyd::USER, "sub is opaque, not the login");
    match session.state() {
        SessionState::Active { user: active, .. } => assert_eq!(active, user),
        other => panic!("not active after login: {other:?}"),
    }
    user
}

#[tokio::test]
async fn a_glewlwyd_session_logs_in_refreshes_with_rotation_and_logs_out() {
    let Rig {
        idp,
        vault,
        account,
        config: cfg,
        session,
    } = Rig::start("glewlwyd").await;

    // Discovery: the issuer has a path; revocation is advertised.
    let provider = Provider::discover(http(), provider_settings(&cfg))
        .await
        .expect("discovery of an issuer with a path");
    assert_eq!(provider.metadata().issuer, idp.issuer());
    assert!(
        provider.metadata().revocation_endpoint.is_some(),
        "Glewlwyd advertises RFC 7009 revocation"
    );

    // Login through the sign-in app's API.
    let user = log_in(&idp, &session).await;
    let first = vault
        .load_tokens(&account)
        .await
        .expect("keychain read")
        .expect("tokens stored");
    let first_refresh = first.refresh_token.clone().expect("a refresh token");
    let seen = idp
        .userinfo(first.access_token.expose())
        .await
        .expect("userinfo")
        .expect("the provider honours the stored access token");
    assert_eq!(seen["sub"].as_str(), Some(user.subject.as_str()));

    // Refresh, forced: a new access token that the provider honours, a rotated refresh token in
    // the keychain, and the same person.
    session.refresh_now().await.expect("refresh");
    let second = session.access_token().await.expect("access token");
    assert!(
        !second.ct_eq(&first.access_token),
        "the refresh gave a new access token"
    );
    match session.state() {
        SessionState::Active { user: active, .. } => assert_eq!(
            active, user,
            "a refresh answer without an ID token keeps the person who logged in"
        ),
        other => panic!("not active after refresh: {other:?}"),
    }
    let seen = idp
        .userinfo(second.expose())
        .await
        .expect("userinfo")
        .expect("the provider honours the refreshed access token");
    assert_eq!(seen["sub"].as_str(), Some(user.subject.as_str()));
    let stored = vault
        .load_tokens(&account)
        .await
        .expect("keychain read")
        .expect("tokens stored");
    assert!(stored.access_token.ct_eq(&second));
    let rotated = stored.refresh_token.clone().expect("a refresh token");
    assert!(
        !rotated.ct_eq(&first_refresh),
        "the rotated refresh token reached the keychain"
    );
    let records = idp
        .refresh_tokens(Glewlwyd::USER, Glewlwyd::PASSWORD)
        .await
        .expect("the provider's records");
    let record = |token: &latchkey_core::secret::Secret| {
        records
            .iter()
            .find(|r| r.is_for(token.expose()))
            .cloned()
            .expect("the provider issued this refresh token")
    };
    assert!(
        !record(&first_refresh).enabled,
        "the provider retired the refresh token Latchkey used"
    );
    assert!(record(&rotated).enabled, "and issued the one it stored");

    // Logout: Glewlwyd refuses RFC 7009 from a public client (it wants client authentication),
    // so the report must say the tokens were not revoked — and the keychain is emptied anyway.
    let report = session.logout().await.expect("logout");
    assert_eq!(session.state(), SessionState::LoggedOut);
    assert!(
        vault
            .load_tokens(&account)
            .await
            .expect("keychain read")
            .is_none(),
        "logout left tokens in the keychain"
    );
    let records = idp
        .refresh_tokens(Glewlwyd::USER, Glewlwyd::PASSWORD)
        .await
        .expect("the provider's records");
    let still_enabled = records
        .iter()
        .find(|r| r.is_for(rotated.expose()))
        .expect("the provider's record of the last refresh token")
        .enabled;
    assert_eq!(
        report.revoked, !still_enabled,
        "the logout report says what the provider did: {report:?}"
    );
    assert!(
        !report.revoked && report.revocation_note.is_some(),
        "Glewlwyd answers a public client's revocation with 401; the report must say so: {report:?}"
    );
}

#[tokio::test]
async fn a_refresh_token_retired_at_glewlwyd_ends_the_session_with_log_in_again() {
    let Rig {
        idp,
        vault,
        account,
        session,
        ..
    } = Rig::start("glewlwyd-retired").await;
    log_in(&idp, &session).await;
    let stored = vault
        .load_tokens(&account)
        .await
        .expect("keychain read")
        .expect("tokens stored");
    let refresh = stored.refresh_token.expect("a refresh token");
    // The person signs Latchkey out on their Glewlwyd profile page.
    idp.revoke_as_user(Glewlwyd::USER, Glewlwyd::PASSWORD, refresh.expose())
        .await
        .expect("revoked at the provider");

    let err = session
        .refresh_now()
        .await
        .expect_err("the provider refuses the refresh");
    assert!(
        matches!(err, SessionError::LoginRequired { .. }),
        "a refresh token the provider retired means log in again: {err:?}"
    );
    assert!(
        matches!(session.state(), SessionState::Expired { .. }),
        "{:?}",
        session.state()
    );
    assert!(
        vault
            .load_tokens(&account)
            .await
            .expect("keychain read")
            .is_none(),
        "the ended session left the keychain"
    );
}

/// Glewlwyd rotates refresh tokens and disables the whole chain when a rotated-out one comes
/// back. Frozen while a refresh is on its way, it reads that request once thawed, after the
/// session stopped waiting; the session keeps the request going and reads its answer (or, when
/// the connection did not survive, sends the refresh anew), and goes on without a new login.
#[tokio::test]
async fn a_glewlwyd_that_stalls_during_a_refresh_does_not_end_the_session() {
    let Rig {
        idp,
        vault,
        account,
        session,
        ..
    } = Rig::start("glewlwyd-stall").await;
    log_in(&idp, &session).await;

    idp.pause().expect("SIGSTOP");
    let gave_up = session.refresh_now().await;
    idp.resume().expect("SIGCONT");
    assert!(
        matches!(
            gave_up,
            Err(SessionError::Login(
                latchkey_core::login::LoginError::Timeout(_)
            ))
        ),
        "the caller stops waiting at the session's timeout: {gave_up:?}"
    );

    session
        .refresh_now()
        .await
        .expect("the stalled refresh's answer (or a new one) renews the session");
    session
        .refresh_now()
        .await
        .expect("and the refresh token kept is the live one: the chain goes on");
    let token = session.access_token().await.expect("access token");
    assert!(
        idp.userinfo(token.expose())
            .await
            .expect("userinfo")
            .is_some(),
        "the provider honours the access token after the stall"
    );
    assert!(matches!(session.state(), SessionState::Active { .. }));
    vault.wipe_account(&account).await.expect("cleanup");
}
