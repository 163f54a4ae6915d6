//! A failed `latchkey login` says why and what to fix, with its own exit code (8), against the
//! real sandbox IdP: a redirect URI the provider does not know (caught by the pre-flight before
//! any browser opens), a scope the client may not ask for, the person declining at the sign-in
//! page, a token endpoint that refuses the client, a token claim Latchkey refuses (the access
//! token's `aud`, when the account asks for it to be checked), and an unreachable provider. With
//! `latchkey serve` running, `latchkey status` keeps showing the reason until the next login.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use latchkey_e2e::Home;
use latchkey_testkit::{AccessTokenFormat, Idp, IdpOptions, IdpProfile, browser_login};
use url::Url;

use crate::keychain_available;

/// The exit code of a failed login (crates/cli/src/exit.rs `LOGIN_FAILED`).
const LOGIN_FAILED: i32 = 8;

fn home(issuer: &str, client_id: &str) -> Home {
    Home::new(&format!(
        r#"version = 1
[proxy]
listen = "127.0.0.1:47821"

[[accounts]]
name = "sandbox"
issuer = "{issuer}"
client_id = "{client_id}"
allow_insecure_http = true
"#
    ))
    .expect("home")
}

/// `latchkey login --no-browser` as a child; the authorization URL it prints, if any, and a
/// handle to wait for it.
struct LoginRun {
    child: std::process::Child,
    url: Option<Url>,
}

async fn start_login(home: &Home) -> LoginRun {
    let mut child = home
        .command(&["login", "--no-browser"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("latchkey login");
    let stdout = child.stdout.take().expect("stdout");
    let url = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("http://"))
    })
    .await
    .expect("join");
    LoginRun {
        child,
        url: url.map(|u| Url::parse(&u).expect("a URL")),
    }
}

impl LoginRun {
    async fn finish(self) -> latchkey_e2e::Output {
        let out = tokio::task::spawn_blocking(move || self.child.wait_with_output())
            .await
            .expect("join")
            .expect("wait");
        latchkey_e2e::Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The failure line `latchkey login` ends with: `latchkey: login failed [<code>]: <message>`.
fn failure_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("latchkey: login failed ["))
        .unwrap_or_else(|| panic!("no failure line in:\n{stderr}"))
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn an_unregistered_redirect_uri_is_named_before_the_browser_opens_and_kept_in_status() {
    if !keychain_available() {
        return;
    }
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let home = home(idp.issuer(), "latchkey-wrong-redirect");
    let serve = home.serve().expect("serve");

    let run = start_login(&home).await;
    assert!(
        run.url.is_none(),
        "no sign-in page is offered when the provider refuses the redirect URI"
    );
    let out = run.finish().await;
    assert_eq!(out.code, LOGIN_FAILED, "{}", out.stderr);
    let line = failure_line(&out.stderr);
    assert!(
        line.starts_with("latchkey: login failed [redirect_uri_not_registered]: "),
        "{line}"
    );
    assert!(
        line.contains("client id `latchkey-wrong-redirect`"),
        "{line}"
    );
    assert!(
        line.contains("(invalid_redirect_uri)"),
        "the provider's own code: {line}"
    );
    assert!(
        line.contains("register `http://127.0.0.1/oauth/callback`"),
        "the URI to register: {line}"
    );
    assert!(line.contains("any port on 127.0.0.1"), "{line}");
    let sent = line
        .split('`')
        .find(|s| s.starts_with("http://127.0.0.1:") && s.ends_with("/oauth/callback"))
        .unwrap_or_else(|| panic!("the exact redirect URI sent: {line}"));
    assert!(
        Url::parse(sent).expect("uri").port().is_some(),
        "the exact URI names its port: {sent}"
    );

    // The running instance keeps the reason, for `status` and the tray.
    let status = home.run(&["status", "--json"], "").expect("status");
    assert_eq!(status.code, 0, "{}", status.stderr);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    let failure = &json["accounts"][0]["last_login_error"];
    assert_eq!(failure["code"], "redirect_uri_not_registered", "{json:#}");
    assert!(
        failure["message"]
            .as_str()
            .is_some_and(|m| m.contains("register `http://127.0.0.1/oauth/callback`")),
        "{json:#}"
    );
    let text = home.run(&["status"], "").expect("status");
    assert!(
        text.stdout
            .contains("Last login failed [redirect_uri_not_registered]: the identity provider refuses the redirect URI"),
        "{}",
        text.stdout
    );
    let logs = serve.stop().expect("stop");
    assert!(
        logs.lines()
            .any(|l| l.contains("login failed") && l.contains("redirect_uri_not_registered")),
        "the instance logs the failure by its code: {logs}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn a_scope_the_client_may_not_ask_for_fails_with_the_providers_code_and_the_scopes_to_check()
{
    if !keychain_available() {
        return;
    }
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let home = home(idp.issuer(), "latchkey-narrow-scope");
    let run = start_login(&home).await;
    assert!(run.url.is_none(), "refused before the browser opens");
    let out = run.finish().await;
    assert_eq!(out.code, LOGIN_FAILED, "{}", out.stderr);
    let line = failure_line(&out.stderr);
    assert!(
        line.starts_with("latchkey: login failed [authorization_failed]: the identity provider refused the sign-in (invalid_scope: requested scope is not allowed)"),
        "the core's text for the provider's error: {line}"
    );
    assert!(
        line.contains("check `scopes` of account `sandbox`"),
        "{line}"
    );
    assert!(line.contains("client `latchkey-narrow-scope`"), "{line}");
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn declining_at_the_sign_in_page_is_access_denied_and_status_shows_it_until_the_next_login() {
    if !keychain_available() {
        return;
    }
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let home = home(idp.issuer(), "latchkey");
    let serve = home.serve().expect("serve");

    let run = start_login(&home).await;
    let url = run
        .url
        .clone()
        .expect("login printed the authorization URL");
    decline_at_sign_in(&url).await.expect("decline");
    let out = run.finish().await;
    assert_eq!(out.code, LOGIN_FAILED, "{}", out.stderr);
    let line = failure_line(&out.stderr);
    assert!(
        line.starts_with(
            "latchkey: login failed [access_denied]: the sign-in was cancelled or refused at the identity provider; log in again when you are ready"
        ),
        "{line}"
    );
    let status = home.run(&["status", "--json"], "").expect("status");
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!(
        json["accounts"][0]["last_login_error"]["code"], "access_denied",
        "{json:#}"
    );

    // The next login clears it, and its success keeps it cleared.
    let run = start_login(&home).await;
    let url = run.url.clone().expect("authorization URL");
    let status = home.run(&["status", "--json"], "").expect("status");
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert!(
        json["accounts"][0]["last_login_error"].is_null(),
        "a new login forgets the last failure: {json:#}"
    );
    browser_login(&url, "alice", "alice-password")
        .await
        .expect("sign in");
    let out = run.finish().await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let status = home.run(&["status", "--json"], "").expect("status");
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!(json["accounts"][0]["state"]["kind"], "active", "{json:#}");
    assert!(
        json["accounts"][0]["last_login_error"].is_null(),
        "{json:#}"
    );

    // The pre-flight and the failure never put the login's secrets in a log line.
    let logs = serve.stop().expect("stop");
    for (name, value) in url.query_pairs() {
        if matches!(name.as_ref(), "state" | "nonce" | "code_challenge") {
            assert!(
                !logs.contains(value.as_ref()),
                "{name} leaked into the logs"
            );
        }
    }
    assert!(logs.contains("login pre-flight accepted"), "{logs}");
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn a_token_endpoint_that_refuses_the_client_says_invalid_client_and_what_to_check() {
    if !keychain_available() {
        return;
    }
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    // A confidential client of the sandbox, configured here without its secret: the sign-in
    // works, the code exchange does not.
    let home = home(idp.issuer(), "latchkey-basic");
    let run = start_login(&home).await;
    let url = run.url.clone().expect("authorization URL");
    browser_login(&url, "alice", "alice-password")
        .await
        .expect("sign in");
    let out = run.finish().await;
    assert_eq!(out.code, LOGIN_FAILED, "{}", out.stderr);
    let line = failure_line(&out.stderr);
    // The core's own code and text for a client the token endpoint does not authenticate.
    assert!(
        line.starts_with("latchkey: login failed [client_auth_failed]: "),
        "{line}"
    );
    assert!(
        line.contains("(invalid_client)"),
        "the provider's code: {line}"
    );
    assert!(
        line.contains("check client_id, token_endpoint_auth_method and the stored client secret"),
        "what to check: {line}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn a_refused_token_claim_is_named_with_the_settings_to_check() {
    if !keychain_available() {
        return;
    }
    // The provider signs a correct id token but an access token with `"aud": []`; the account
    // asks Latchkey to check the access token's audience.
    let idp = Idp::start_with(
        IdpOptions::default(),
        &IdpProfile {
            access_tokens: AccessTokenFormat::JwtEmptyAudience,
            ..IdpProfile::default()
        },
    )
    .await
    .expect("idp");
    let home = Home::new(&format!(
        r#"version = 1
[[accounts]]
name = "sandbox"
issuer = "{issuer}"
client_id = "latchkey"
audience = "latchkey-gateway"
validate_access_token = true
allow_insecure_http = true
"#,
        issuer = idp.issuer()
    ))
    .expect("home");
    let run = start_login(&home).await;
    let url = run.url.clone().expect("authorization URL");
    browser_login(&url, "alice", "alice-password")
        .await
        .expect("sign in");
    let out = run.finish().await;
    assert_eq!(out.code, LOGIN_FAILED, "{}", out.stderr);
    let line = failure_line(&out.stderr);
    assert!(
        line.starts_with("latchkey: login failed [jwt_wrong_audience]: a token from the identity provider was rejected: "),
        "the core's code and text: {line}"
    );
    assert!(
        line.contains("a JWT access token's `aud` must be `latchkey-gateway`: check `audience`"),
        "{line}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn an_unreachable_provider_fails_fast_with_its_own_code() {
    if !keychain_available() {
        return;
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let issuer = format!(
        "http://127.0.0.1:{}",
        closed.local_addr().expect("addr").port()
    );
    drop(closed);
    let home = home(&issuer, "latchkey");
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || home.run(&["login", "--no-browser"], ""))
        .await
        .expect("join")
        .expect("login");
    assert_eq!(out.code, LOGIN_FAILED, "{}", out.stderr);
    let line = failure_line(&out.stderr);
    assert!(
        line.starts_with(
            "latchkey: login failed [idp_unreachable]: the identity provider is unreachable"
        ),
        "{line}"
    );
    assert!(
        line.contains(&format!("`{issuer}/`")),
        "names the issuer: {line}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "fails fast, not after the 10-minute login wait"
    );
}

/// A person pressing "Cancel" on the sandbox sign-in page: the provider calls back with
/// `access_denied`. Cookies are carried by hand from hop to hop, as a browser would.
async fn decline_at_sign_in(authorize_url: &Url) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()?;
    let mut cookies: Vec<String> = Vec::new();
    let mut remember = |r: &reqwest::Response| {
        for c in r.headers().get_all(reqwest::header::SET_COOKIE) {
            if let Some(pair) = c.to_str().ok().and_then(|v| v.split(';').next()) {
                cookies.push(pair.to_owned());
            }
        }
        cookies.join("; ")
    };
    let first = http.get(authorize_url.clone()).send().await?;
    let jar = remember(&first);
    let interaction = location(authorize_url, &first)?;
    if !interaction.path().starts_with("/interaction/") {
        bail!("expected the sign-in page, got {}", interaction.path());
    }
    let abort = interaction.join(&format!("{}/abort", interaction.path()))?;
    let aborted = http
        .post(abort)
        .header(reqwest::header::COOKIE, &jar)
        .send()
        .await?;
    let jar = remember(&aborted);
    let mut next = location(authorize_url, &aborted)?;
    for _ in 0..5 {
        if next.origin() != authorize_url.origin() {
            // The loopback callback, with `error=access_denied`.
            http.get(next)
                .send()
                .await
                .context("deliver the callback")?;
            return Ok(());
        }
        let r = http
            .get(next.clone())
            .header(reqwest::header::COOKIE, &jar)
            .send()
            .await?;
        next = location(&next, &r)?;
    }
    bail!("the provider did not call back")
}

fn location(base: &Url, r: &reqwest::Response) -> anyhow::Result<Url> {
    let l = r
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .with_context(|| format!("no redirect (HTTP {})", r.status()))?;
    Ok(base.join(l)?)
}
