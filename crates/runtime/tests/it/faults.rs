//! The fault matrix (SECURITY.md, "Fault matrix"), in process: a serving instance against the
//! real sandbox IdP, the gateway double and the demo upstream, with an in-memory keychain whose
//! faults the test turns on mid-run. Each test is one cell: it asserts what a person sees (the
//! proxy's JSON answer, the overview, the `{code, message}` of a call) and that nothing stored is
//! lost (the keychain still holds the session, the cached credential still serves within its
//! TTL, a restarted instance restores the session).

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_core::credentials::CredentialState;
use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;
use latchkey_core::session::SessionState;
use latchkey_core::vault::{MemoryStore, StoreFault, Vault};
use latchkey_runtime::{Latchkey, StartOptions};
use latchkey_testkit::{
    Gateway, Idp, IdpOptions, IdpProfile, RefreshTokens, Upstream, browser_login,
};

const ACCOUNT: &str = "work";
const GATEWAY_KEY: &str = "faults-gateway-key-canary-2b7e";
const DEMO_KEY: &str = "faults-demo-key-canary-9c04";
/// How long a test waits for a condition before it fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// One serving instance, its peers and its keychain.
struct Rig {
    idp: Option<Idp>,
    gateway: Gateway,
    _upstream: Upstream,
    store: Arc<MemoryStore>,
    paths: Paths,
    lk: Option<Latchkey>,
    restarts: u32,
    token: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// What the proxy answered a client.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: serde_json::Value,
}

impl Answer {
    fn served_the_credential(&self) -> bool {
        self.status == 200 && self.body["matches_expected"] == true
    }

    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

fn start_options(paths: &Paths, store: &Arc<MemoryStore>) -> StartOptions {
    StartOptions {
        paths: paths.clone(),
        proxy_port: Some(0),
        vault: Some(
            Vault::new(store.clone() as Arc<dyn latchkey_core::vault::SecretStore>)
                .with_timeout(Duration::from_millis(500)),
        ),
        serve_proxy: true,
    }
}

impl Rig {
    /// Kills the IdP and waits until its port refuses connections.
    async fn kill_idp(&mut self) {
        if let Some(idp) = self.idp.take() {
            idp.kill().await;
        }
    }

    /// A logged-in instance whose service `demo` has a credential TTL of `ttl_seconds`, and a
    /// local client allowed to use it.
    async fn start(idp: IdpOptions, ttl_seconds: u64) -> Rig {
        Rig::start_in(idp, ttl_seconds, tempfile::tempdir().expect("tempdir")).await
    }

    /// As [`Rig::start`], with configuration and data under `dir`.
    async fn start_in(idp: IdpOptions, ttl_seconds: u64, dir: tempfile::TempDir) -> Rig {
        Rig::start_profile(idp, &IdpProfile::default(), ttl_seconds, dir).await
    }

    /// As [`Rig::start_in`], with the IdP behaving as `profile` says.
    async fn start_profile(
        idp: IdpOptions,
        profile: &IdpProfile,
        ttl_seconds: u64,
        dir: tempfile::TempDir,
    ) -> Rig {
        let idp = Idp::start_with(idp, profile).await.expect("idp");
        let gateway = Gateway::start_with(
            idp.issuer(),
            GATEWAY_KEY,
            &[("alice", "demo", "api_key", DEMO_KEY)],
        )
        .await
        .expect("gateway");
        let upstream = Upstream::start(DEMO_KEY).await.expect("upstream");
        let paths = Paths::new(dir.path().join("config"), dir.path().join("data"));
        std::fs::create_dir_all(paths.config_dir()).expect("config dir");
        std::fs::write(
            paths.config_file(),
            format!(
                r#"version = 1
[[accounts]]
name = "{ACCOUNT}"
issuer = "{issuer}"
client_id = "latchkey"
audience = "latchkey-gateway"
allow_insecure_http = true

[gateway]
url = "{gateway}"
allow_insecure_http = true
timeout_seconds = 1

[[services]]
name = "demo"
account = "{ACCOUNT}"
gateway_endpoint = "/api/v1/credentials/demo"
upstream = "{upstream}"
allow_loopback_http = true
credentials = [{{ name = "api_key", header = "X-API-Key" }}]
ttl_seconds = {ttl_seconds}
"#,
                issuer = idp.issuer(),
                gateway = gateway.url(),
                upstream = upstream.url(),
            ),
        )
        .expect("config");
        let store = Arc::new(MemoryStore::new());
        let lk = Latchkey::start(start_options(&paths, &store))
            .await
            .expect("start");
        lk.set_gateway_api_key(Secret::new(GATEWAY_KEY))
            .await
            .expect("gateway key");
        let url = lk.begin_login(ACCOUNT).await.expect("login starts");
        let (done, signed_in) = tokio::join!(
            lk.wait_login(ACCOUNT),
            browser_login(&url, "alice", "alice-password")
        );
        signed_in.expect("sign-in page");
        done.expect("login completes");
        let token = lk
            .create_client("faults", &["demo".to_owned()])
            .expect("client")
            .token;
        Rig {
            idp: Some(idp),
            gateway,
            _upstream: upstream,
            store,
            paths,
            lk: Some(lk),
            restarts: 0,
            token,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http"),
            _dir: dir,
        }
    }

    fn idp(&self) -> &Idp {
        self.idp.as_ref().expect("the IdP is running")
    }

    /// A client request through the proxy to the demo upstream.
    async fn request(&self) -> Answer {
        let url = format!("{}/demo/whoami", self.lk().proxy_url());
        let response = self
            .http
            .get(&url)
            .header("x-latchkey-client", &self.token)
            .send()
            .await
            .expect("the proxy answers");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        Answer { status, body }
    }

    fn state(&self) -> SessionState {
        account_state(self.lk())
    }

    fn credential_state(&self) -> (CredentialState, Option<String>) {
        let s = self
            .lk()
            .overview()
            .services
            .into_iter()
            .find(|s| s.name == "demo")
            .expect("service demo");
        (s.state, s.message)
    }

    /// The keychain entries of the account (`<kind>:work[:<service>]`), names only.
    fn stored(&self) -> Vec<String> {
        self.store
            .entry_names()
            .into_iter()
            .map(|(_, entry)| entry)
            .filter(|e| e.split(':').nth(1) == Some(ACCOUNT))
            .collect()
    }

    fn holds_tokens(&self) -> bool {
        self.stored().iter().any(|e| e.starts_with("tokens:"))
    }

    /// Stops this instance and starts another on the same keychain and configuration: what a
    /// person gets after a restart. (A new data directory: the old instance's lock file goes only
    /// with its last handle, and the session lives in the keychain, not there.)
    async fn restart(&mut self) {
        if let Some(old) = self.lk.take() {
            old.shutdown().await;
        }
        self.restarts += 1;
        self.paths = Paths::new(
            self.paths.config_dir().to_path_buf(),
            self._dir.path().join(format!("data-{}", self.restarts)),
        );
        let lk = Latchkey::start(start_options(&self.paths, &self.store))
            .await
            .expect("restart");
        self.lk = Some(lk);
    }

    fn lk(&self) -> &Latchkey {
        self.lk.as_ref().expect("the instance is running")
    }
}

fn account_state(lk: &Latchkey) -> SessionState {
    lk.overview()
        .accounts
        .into_iter()
        .find(|a| a.name == ACCOUNT)
        .map(|a| a.state)
        .expect("account")
}

/// Polls `check` every 50 ms until it holds; fails after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    latchkey_testkit::eventually(what, DEADLINE, Duration::from_millis(50), check).await;
}

fn is_active(state: &SessionState) -> bool {
    matches!(state, SessionState::Active { .. })
}

/// The session restores from the keychain in a fresh instance, without the IdP.
async fn assert_restores(rig: &mut Rig) {
    rig.restart().await;
    let state = rig.state();
    assert!(
        state.is_usable() || matches!(state, SessionState::Error { .. }),
        "the restarted instance restores the session from the keychain: {state:?}"
    );
    assert!(
        state.user().and_then(|u| u.email.as_deref()) == Some("alice@example.test"),
        "as alice: {state:?}"
    );
}

#[tokio::test]
async fn idp_down_during_login_says_idp_unreachable_and_keeps_the_stored_session() {
    let mut rig = Rig::start(IdpOptions::default(), 600).await;
    assert!(rig.request().await.served_the_credential());
    rig.kill_idp().await;

    let e = rig
        .lk()
        .begin_login(ACCOUNT)
        .await
        .expect_err("no login without the provider");
    assert_eq!(e.code, latchkey_core::Code::IdpUnreachable, "{e:?}");
    assert!(
        e.message.contains("unreachable") && e.message.contains("try again"),
        "says what happened and what to do: {}",
        e.message
    );
    assert!(rig.holds_tokens(), "the stored session is kept");
    assert!(
        rig.request().await.served_the_credential(),
        "the cached credential still serves"
    );
    assert_restores(&mut rig).await;
}

#[tokio::test]
async fn idp_down_during_refresh_keeps_the_session_and_says_idp_unreachable() {
    let mut rig = Rig::start(IdpOptions::default(), 600).await;
    assert!(rig.request().await.served_the_credential());
    rig.kill_idp().await;

    let e = rig
        .lk()
        .refresh_now(ACCOUNT)
        .await
        .expect_err("no refresh without the provider");
    assert_eq!(e.code, latchkey_core::Code::IdpUnreachable, "{e:?}");
    assert!(
        e.message.contains("try again"),
        "says what to do: {}",
        e.message
    );
    assert!(
        is_active(&rig.state()),
        "the token still valid keeps the session active: {:?}",
        rig.state()
    );
    assert!(rig.holds_tokens(), "the keychain keeps the session");
    assert!(
        rig.request().await.served_the_credential(),
        "the cached credential still serves within its TTL"
    );
    // The failure is kept for the tray's notice and the window, as one run however many retries.
    let failure =
        |lk: &latchkey_runtime::Latchkey| lk.overview().accounts[0].refresh_failure.clone();
    let first = failure(rig.lk()).expect("the failed refresh is recorded");
    assert_eq!(
        (first.code, first.attempts),
        (latchkey_core::Code::IdpUnreachable, 1)
    );
    assert!(
        !first.message.contains("eyJ"),
        "no token in the message: {}",
        first.message
    );
    rig.lk()
        .refresh_now(ACCOUNT)
        .await
        .expect_err("still no provider");
    let second = failure(rig.lk()).expect("still failing");
    assert_eq!(
        (second.since, second.attempts),
        (first.since, 2),
        "a retry continues the run"
    );
    assert_restores(&mut rig).await;
}

/// A logged-in instance with 2 s access tokens whose IdP has died and whose access token has
/// expired after the background refresh failed.
async fn expired_while_the_idp_is_down() -> Rig {
    let mut rig = Rig::start(
        IdpOptions {
            access_ttl: 2,
            refresh_ttl: 3600,
        },
        600,
    )
    .await;
    assert!(rig.request().await.served_the_credential());
    rig.kill_idp().await;
    let lk = rig.lk().clone();
    eventually("the expired session shows the provider's outage", || {
        let state = account_state(&lk);
        async move {
            matches!(
                state,
                SessionState::Error {
                    code: latchkey_core::Code::IdpUnreachable,
                    ..
                }
            )
        }
    })
    .await;
    rig
}

#[tokio::test]
async fn idp_down_when_the_access_token_expires_shows_idp_unreachable_and_keeps_the_session() {
    let mut rig = expired_while_the_idp_is_down().await;
    let SessionState::Error { message, .. } = rig.state() else {
        unreachable!("checked by the set-up")
    };
    assert!(message.contains("try again"), "says what to do: {message}");
    let tray = rig.lk().tray_status();
    assert!(
        !format!("{tray:?}").to_lowercase().contains("log in"),
        "the tray does not ask for a login the provider cannot give: {tray:?}"
    );
    assert!(rig.holds_tokens(), "the keychain keeps the session");
    assert_restores(&mut rig).await;
}

#[tokio::test]
async fn idp_down_when_the_access_token_expires_still_serves_cached_credentials() {
    let rig = expired_while_the_idp_is_down().await;
    let answer = rig.request().await;
    assert_ne!(answer.error(), "login_required", "{answer:?}");
    assert!(
        answer.served_the_credential(),
        "the cached credential serves within its TTL: {answer:?}"
    );
}

/// With no cached credential, an access token past its expiry and the provider not answering,
/// the proxy says the provider is unavailable (who, where, when to retry), not "log in": a new
/// login would need the same provider, and the stored session is fine. Once the provider answers
/// again, the next request refreshes and is served.
#[tokio::test]
async fn idp_down_with_the_token_expired_and_nothing_cached_says_idp_unavailable_not_login_required()
 {
    let mut rig = Rig::start(
        IdpOptions {
            access_ttl: 2,
            refresh_ttl: 3600,
        },
        600,
    )
    .await;
    // No request yet: no credential is cached. The provider freezes (`SIGSTOP`): its port takes
    // connections and nothing answers, so a refresh times out.
    rig.idp().pause().expect("SIGSTOP the IdP");
    let lk = rig.lk().clone();
    eventually("the access token has expired", || {
        let o = lk.overview();
        let state = account_state(&lk);
        let expired = matches!(state, SessionState::Error { .. })
            || state.expires_at().is_some_and(|e| e <= o.now);
        async move { expired }
    })
    .await;

    // The refresh in flight times out at the session's 15 s; the request waits for it.
    let patient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(45))
        .build()
        .expect("http");
    let response = patient
        .get(format!("{}/demo/whoami", rig.lk().proxy_url()))
        .header("x-latchkey-client", &rig.token)
        .send()
        .await
        .expect("the proxy answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        body["error"], "idp_unavailable",
        "not login_required: {body}"
    );
    assert_eq!(status, 503, "a passing outage: {body}");
    assert!(
        retry_after.is_some_and(|s| s > 0),
        "Retry-After says when: {retry_after:?}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    let host = url::Url::parse(rig.idp().issuer())
        .expect("issuer")
        .host_str()
        .map(str::to_owned)
        .expect("host");
    assert!(
        message.contains(&format!("`{host}`")) && message.contains(&format!("`{ACCOUNT}`")),
        "names the provider's host and the account: {message}"
    );
    assert!(
        message.contains("no new login"),
        "tells the person not to log in again: {message}"
    );
    assert!(rig.holds_tokens(), "the keychain keeps the session");
    assert!(
        !matches!(
            rig.state(),
            SessionState::Expired { .. } | SessionState::LoggedOut
        ),
        "the session is not ended: {:?}",
        rig.state()
    );

    // The provider back: the next request refreshes on demand and is served.
    rig.idp().resume().expect("SIGCONT the IdP");
    let answer = rig.request().await;
    assert!(
        answer.served_the_credential(),
        "served once the provider answers: {answer:?}"
    );
    assert!(is_active(&rig.state()), "{:?}", rig.state());
    assert_restores(&mut rig).await;
}

/// A token that lives 2 s is refreshed about once a second, not back-to-back: the refresh point
/// of a token shorter than the 10 s margin used to be its issue time, so every refresh was due
/// again the moment it landed.
#[tokio::test]
async fn a_short_lived_token_is_refreshed_at_a_bounded_rate() {
    let rig = Rig::start(
        IdpOptions {
            access_ttl: 2,
            refresh_ttl: 3600,
        },
        600,
    )
    .await;
    let before = rig.idp().stats().await.expect("stats").refresh_grants;
    // The observation window, not a synchronisation: count what the refresher does in it.
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let granted = rig.idp().stats().await.expect("stats").refresh_grants - before;
    assert!(
        granted >= 2,
        "the background refresher keeps a 2 s token fresh: {granted} refreshes in {window:?}"
    );
    assert!(
        granted <= 6,
        "at most about one refresh a second: {granted} refreshes in {window:?}"
    );
    assert!(is_active(&rig.state()), "{:?}", rig.state());
    assert!(rig.request().await.served_the_credential());
}

#[tokio::test]
async fn idp_slow_during_refresh_times_out_and_keeps_the_session() {
    // A refresh token that stays valid: with a rotating one, the frozen provider may still
    // complete the request Latchkey gave up on once it runs again, consuming the token Latchkey
    // kept (reuse then ends the session, as a real provider would). Whether it does depends on
    // what the provider reads first after SIGCONT, the request or the closed connection, which
    // made this cell fail about one run in five. (With rotation, a provider that completes a
    // refresh after the client's timeout ends the session through its reuse detection; only a
    // longer timeout would avoid that, at the cost of a longer hang when it is really down.)
    let profile = IdpProfile {
        refresh_tokens: RefreshTokens::Static,
        ..IdpProfile::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rig = Rig::start_profile(IdpOptions::default(), &profile, 600, dir).await;
    assert!(rig.request().await.served_the_credential());
    rig.idp().pause().expect("SIGSTOP the IdP");
    let started = Instant::now();
    let result = rig.lk().refresh_now(ACCOUNT).await;
    let took = started.elapsed();
    rig.idp().resume().expect("SIGCONT the IdP");
    let e = result.expect_err("a frozen provider gives no token");
    assert_eq!(e.code, latchkey_core::Code::IdpTimeout, "{e:?}");
    assert!(took < Duration::from_secs(20), "bounded: {took:?}");
    assert!(is_active(&rig.state()), "{:?}", rig.state());
    assert!(rig.holds_tokens(), "the keychain keeps the session");
    assert!(rig.request().await.served_the_credential());

    assert_eq!(
        rig.lk().overview().accounts[0]
            .refresh_failure
            .as_ref()
            .map(|f| f.code),
        Some(latchkey_core::Code::IdpTimeout),
        "the silent provider is recorded"
    );

    // The provider back, the next refresh succeeds with the kept refresh token.
    rig.lk().refresh_now(ACCOUNT).await.expect("refresh after");
    assert_eq!(
        rig.lk().overview().accounts[0].refresh_failure,
        None,
        "a refresh that succeeds ends the run"
    );
    assert_restores(&mut rig).await;
}

/// Waits until the cached credential is past its refresh point (80 % of the TTL) but still
/// usable, so the next request asks the gateway again.
async fn wait_until_stale(rig: &Rig) {
    let lk = rig.lk().clone();
    eventually("the cached credential is past its refresh point", || {
        let o = lk.overview();
        let stale = o.services.iter().any(|s| {
            s.name == "demo"
                && s.fetched_at
                    .zip(s.expires_at)
                    .is_some_and(|(f, e)| o.now >= f + (e - f) * 4 / 5 && o.now < e)
        });
        async move { stale }
    })
    .await;
}

/// Shared by the gateway cells: with no cached credential the proxy answers `error_code` with a
/// message that says what to do; with one, it serves it while the gateway misbehaves, until the
/// TTL ends; the session and the keychain are untouched; the gateway healed, all is well again.
async fn gateway_fault_cell(fault: serde_json::Value, error_code: &str) {
    // TTL 3 s: fresh for 2.4 s, usable until 3 s.
    let mut rig = Rig::start(IdpOptions::default(), 3).await;

    // No cached credential yet.
    rig.gateway
        .script("demo", std::slice::from_ref(&fault))
        .await
        .expect("script");
    let answer = rig.request().await;
    assert_eq!(answer.error(), error_code, "{answer:?}");
    assert!(answer.status >= 500, "{answer:?}");
    assert!(
        answer.message().contains("try again"),
        "says what to do: {answer:?}"
    );
    let (state, message) = rig.credential_state();
    assert_eq!(state, CredentialState::Error, "the overview shows it");
    assert!(message.is_some_and(|m| !m.is_empty()));
    assert!(is_active(&rig.state()), "the session is untouched");

    // Healed: fetched and cached.
    let answer = rig.request().await;
    assert!(answer.served_the_credential(), "{answer:?}");
    assert!(
        rig.stored().iter().any(|e| e.starts_with("credentials:")),
        "the credential is in the keychain: {:?}",
        rig.stored()
    );

    // Misbehaving again while a cached credential is usable: it serves, and the overview says so.
    rig.gateway
        .script("demo", &vec![fault; 10])
        .await
        .expect("script");
    wait_until_stale(&rig).await;
    let answer = rig.request().await;
    assert!(
        answer.served_the_credential(),
        "the cached credential serves within its TTL: {answer:?}"
    );
    assert_eq!(
        rig.credential_state().0,
        CredentialState::Cached,
        "the overview says it is the cached one"
    );
    assert!(rig.holds_tokens(), "the keychain keeps the session");
    assert!(
        rig.stored().iter().any(|e| e.starts_with("credentials:")),
        "and the credential: {:?}",
        rig.stored()
    );
    assert!(is_active(&rig.state()), "{:?}", rig.state());
    assert_restores(&mut rig).await;
}

#[tokio::test]
async fn gateway_5xx_says_gateway_unavailable_and_serves_the_cached_credential() {
    gateway_fault_cell(serde_json::json!({"status": 503}), "gateway_unavailable").await;
}

#[tokio::test]
async fn gateway_timeout_says_gateway_unavailable_and_serves_the_cached_credential() {
    gateway_fault_cell(
        serde_json::json!({"status": 200, "delay_ms": 2500, "body": {"data": {"api_key": "late"}}}),
        "gateway_unavailable",
    )
    .await;
}

#[tokio::test]
async fn gateway_malformed_answer_is_an_error_and_keeps_the_cached_credential() {
    gateway_fault_cell(
        serde_json::json!({"status": 200, "raw": "<html>captive portal</html>", "content_type": "text/html"}),
        "gateway_unavailable",
    )
    .await;
}

/// Shared by the keychain cells: with the keychain failing mid-run, a refresh reports `code`
/// with what to do, the proxy keeps serving what it holds in memory, and once the keychain is
/// back the session refreshes and restores — nothing stored was lost.
async fn keychain_fault_cell(fault: Option<StoreFault>, delay: Option<Duration>, code: &str) {
    let mut rig = Rig::start(IdpOptions::default(), 600).await;
    assert!(rig.request().await.served_the_credential());
    let before = rig.stored();

    rig.store.fail_with(fault);
    rig.store.delay_each_call(delay);
    let e = rig
        .lk()
        .refresh_now(ACCOUNT)
        .await
        .expect_err("a refresh cannot store its tokens");
    assert_eq!(e.code.as_str(), code, "{e:?}");
    assert!(
        e.message.to_lowercase().contains("keychain"),
        "names the keychain: {}",
        e.message
    );
    let answer = rig.request().await;
    assert!(
        answer.served_the_credential() || answer.error() == "keychain_unavailable",
        "either the credential in memory, or the keychain's own error: {answer:?}"
    );
    if !answer.served_the_credential() {
        assert!(answer.message().contains("unlock"), "{answer:?}");
    }

    rig.store.fail_with(None);
    rig.store.delay_each_call(None);
    assert_eq!(rig.stored(), before, "nothing stored was deleted");
    rig.lk()
        .refresh_now(ACCOUNT)
        .await
        .expect("the keychain back, the session refreshes");
    assert!(rig.request().await.served_the_credential());
    assert_restores(&mut rig).await;
    assert!(
        rig.lk().refresh_now(ACCOUNT).await.is_ok(),
        "the restored refresh token is the current one"
    );
}

#[tokio::test]
async fn keychain_locked_mid_run_says_keychain_locked_and_loses_nothing() {
    keychain_fault_cell(
        Some(StoreFault::Locked {
            message: "collection is locked".into(),
        }),
        None,
        "keychain_locked",
    )
    .await;
}

#[tokio::test]
async fn keychain_missing_mid_run_says_keychain_unavailable_and_loses_nothing() {
    keychain_fault_cell(
        Some(StoreFault::Unavailable {
            message: "the Secret Service is not running".into(),
        }),
        None,
        "keychain_unavailable",
    )
    .await;
}

#[tokio::test]
async fn keychain_slow_mid_run_says_keychain_timeout_and_loses_nothing() {
    keychain_fault_cell(None, Some(Duration::from_millis(1500)), "keychain_timeout").await;
}

/// A gateway refusal (`403`, `404`) evicts the cached credential: once the gateway has said no,
/// an outage right after it must not bring the old credential back from the cache.
#[tokio::test]
async fn a_gateway_refusal_evicts_the_cached_credential() {
    for (refusal, shown) in [
        (403, CredentialState::Forbidden),
        (404, CredentialState::Missing),
    ] {
        // TTL 3 s: fresh for 2.4 s, usable until 3 s.
        let rig = Rig::start(IdpOptions::default(), 3).await;
        assert!(rig.request().await.served_the_credential(), "cached first");
        let mut script = vec![serde_json::json!({ "status": refusal })];
        script.extend(vec![serde_json::json!({ "status": 503 }); 10]);
        rig.gateway.script("demo", &script).await.expect("script");
        wait_until_stale(&rig).await;

        let refused = rig.request().await;
        assert!(!refused.served_the_credential(), "{refusal}: {refused:?}");
        let (state, message) = rig.credential_state();
        assert_eq!(state, shown, "{refusal}: the overview says which refusal");
        assert!(message.is_some_and(|m| !m.is_empty()), "{refusal}");
        let outage = rig.request().await;
        assert!(
            !outage.served_the_credential(),
            "{refusal} then an outage: the refused credential is gone from the cache: {outage:?}"
        );
        assert_eq!(outage.error(), "gateway_unavailable", "{outage:?}");
    }
}

/// A session the provider ended (`invalid_grant` at refresh: here its refresh token expired) is
/// not served from the credential cache, though the cached credential is far from its TTL.
#[tokio::test]
async fn a_session_the_provider_ended_is_not_served_from_the_credential_cache() {
    let rig = Rig::start(
        IdpOptions {
            access_ttl: 2,
            refresh_ttl: 2,
        },
        600,
    )
    .await;
    assert!(rig.request().await.served_the_credential(), "cached first");
    let lk = rig.lk().clone();
    eventually("the provider refuses the refresh", || {
        let lk = lk.clone();
        async move { lk.refresh_now(ACCOUNT).await.is_err() }
    })
    .await;
    let answer = rig.request().await;
    assert!(
        !answer.served_the_credential(),
        "an ended session serves nothing, not even the cached credential: {answer:?}"
    );
    assert_eq!(answer.error(), "login_required", "{answer:?}");
}

/// A small tmpfs mounted over a directory for one test, lazily unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts `size` (as `mount -o size=`) over `dir`; `None` where mounting is not allowed.
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `path` until a write fails with "no space left".
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let block = vec![0_u8; 64 * 1024];
    loop {
        match file.write_all(&block).and_then(|()| file.sync_all()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => return, // ENOSPC
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
}

#[tokio::test]
async fn disk_full_while_writing_the_audit_log_keeps_serving_and_resumes_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(_tmpfs) = Tmpfs::mount(dir.path(), "8m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let rig = Rig::start_in(IdpOptions::default(), 600, dir).await;
    assert!(rig.request().await.served_the_credential());
    let filler = rig.paths.data_dir().join("filler");
    fill(&filler);

    for _ in 0..20 {
        let answer = rig.request().await;
        assert!(
            answer.served_the_credential(),
            "a full disk never stops the proxy: {answer:?}"
        );
    }
    assert!(rig.holds_tokens(), "the keychain keeps the session");
    assert!(is_active(&rig.state()), "{:?}", rig.state());
    // The person is told that rows are missing (the window's Activity screen, `status`).
    let lk = rig.lk().clone();
    eventually("the overview counts the requests the log lost", || {
        let lk = lk.clone();
        async move { lk.overview().activity_lost > 0 }
    })
    .await;

    // Space again: the log records the next requests.
    std::fs::remove_file(&filler).expect("free the disk");
    let rows = |lk: Latchkey| async move {
        lk.query_activity(latchkey_runtime::view::ActivityFilter {
            limit: 500,
            ..Default::default()
        })
        .await
        .map_or(0, |page| page.rows.len())
    };
    let freed = rows(rig.lk().clone()).await;
    let lk = rig.lk().clone();
    let rig = &rig;
    eventually("the audit log records again", || {
        let lk = lk.clone();
        async move {
            assert!(rig.request().await.served_the_credential());
            rows(lk).await > freed
        }
    })
    .await;
}

/// A configuration edit does not throw away what memory holds: with the keychain failing (so
/// nothing can be read back from it) and the gateway down, the service is still served after
/// the reload with the credential fetched before it.
#[tokio::test]
async fn a_configuration_edit_keeps_the_credentials_memory_holds() {
    let rig = Rig::start(IdpOptions::default(), 600).await;
    assert!(rig.request().await.served_the_credential(), "fetched");
    rig.store.fail_with(Some(StoreFault::Locked {
        message: "locked for the test".into(),
    }));
    rig.gateway
        .script("demo", &vec![serde_json::json!({ "status": 503 }); 10])
        .await
        .expect("script");
    let file = rig.paths.config_file();
    let text = std::fs::read_to_string(&file).expect("config");
    std::fs::write(
        &file,
        format!("{text}\n# edited while the keychain is locked\n"),
    )
    .expect("edit");
    rig.lk().reload_config().await;
    assert!(
        rig.lk().overview().config.error.is_none(),
        "the edit is valid"
    );

    let answer = rig.request().await;
    assert!(
        answer.served_the_credential(),
        "the credential in memory survives the reload: {answer:?}"
    );
    let (state, _) = rig.credential_state();
    assert_eq!(state, CredentialState::Fresh, "and its status with it");
    rig.store.fail_with(None);
}

/// Credentials are taken over at a reload only for the same sign-in: when the edit moves the
/// account to another identity provider, the credential fetched for the old one is not served.
#[tokio::test]
async fn a_reload_that_changes_the_account_does_not_take_over_its_credentials() {
    let rig = Rig::start(IdpOptions::default(), 600).await;
    assert!(rig.request().await.served_the_credential(), "fetched");
    let file = rig.paths.config_file();
    let text = std::fs::read_to_string(&file).expect("config");
    let issuer = text
        .lines()
        .find_map(|l| l.strip_prefix("issuer = "))
        .expect("issuer line")
        .to_owned();
    std::fs::write(
        &file,
        text.replace(
            &format!("issuer = {issuer}"),
            "issuer = \"https://idp.invalid\"",
        ),
    )
    .expect("edit");
    rig.lk().reload_config().await;
    assert!(
        rig.lk().overview().config.error.is_none(),
        "the edit is valid"
    );

    let answer = rig.request().await;
    assert!(
        !answer.served_the_credential(),
        "another provider's session has not fetched this credential: {answer:?}"
    );
    assert_eq!(answer.error(), "login_required", "{answer:?}");
}
