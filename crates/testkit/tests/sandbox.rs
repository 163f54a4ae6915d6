//! The kit end to end: a real IdP, a browser_login into a tiny loopback callback listener, a code
//! exchange, the gateway double and the IdP counters.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_testkit::{Gateway, Idp, IdpOptions, Upstream, browser_login, canary};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

/// Accept one request on `listener`, answer 200, and return its request target.
async fn one_callback(listener: TcpListener) -> String {
    let (mut stream, _) = listener.accept().await.expect("callback connection");
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.expect("read callback");
        assert!(n > 0, "the browser hung up before sending a request");
        buf.extend_from_slice(&chunk[..n]);
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .await
        .expect("answer callback");
    let head = String::from_utf8_lossy(&buf).into_owned();
    head.split_whitespace()
        .nth(1)
        .expect("request target")
        .to_owned()
}

fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

/// Log in as `user` through the sign-in page and exchange the code; returns the token response.
async fn login(idp: &Idp, user: &str, password: &str) -> anyhow::Result<serde_json::Value> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let redirect_uri = format!(
        "http://127.0.0.1:{}/oauth/callback",
        listener.local_addr()?.port()
    );
    let verifier = canary("verifier");
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut authorize = Url::parse(&format!("{}/auth", idp.issuer()))?;
    authorize
        .query_pairs_mut()
        .append_pair("client_id", "latchkey")
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", "openid profile email offline_access")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "s1")
        .append_pair("prompt", "consent")
        .append_pair("resource", "latchkey-gateway");
    let callback = tokio::spawn(one_callback(listener));
    if let Err(e) = browser_login(&authorize, user, password).await {
        callback.abort();
        return Err(e);
    }
    let target = callback.await?;
    let callback = Url::parse("http://127.0.0.1")?.join(&target)?;
    let code = callback
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("the callback carries a code");
    let tokens: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("client_id", "latchkey"),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(tokens)
}

#[tokio::test]
async fn browser_login_reaches_the_loopback_callback_and_the_code_buys_a_gateway_jwt() {
    let idp = Idp::start(IdpOptions {
        access_ttl: 120,
        refresh_ttl: 600,
    })
    .await
    .expect("idp");
    let before = idp.stats().await.expect("stats");
    let tokens = login(&idp, "alice", "alice-password").await.expect("login");
    let access = tokens["access_token"].as_str().expect("access token");
    let c = claims(access);
    assert_eq!(c["aud"], "latchkey-gateway", "the JWT is for the gateway");
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["iss"], idp.issuer());
    let lifetime = c["exp"].as_u64().expect("exp") - c["iat"].as_u64().expect("iat");
    assert_eq!(lifetime, 120, "the access TTL option reaches the IdP");
    assert!(
        tokens["refresh_token"].is_string(),
        "offline_access gives a refresh token"
    );
    let after = idp.stats().await.expect("stats");
    assert_eq!(after.token_requests, before.token_requests + 1);
    assert_eq!(after.refresh_grants, 0);

    // The gateway double trusts that token.
    let key = canary("gw-key");
    let value = canary("demo");
    let gateway = Gateway::start_with(idp.issuer(), &key, &[("alice", "demo", "api_key", &value)])
        .await
        .expect("gateway");
    let url = gateway.url().join("/api/v1/credentials/demo").expect("url");
    let http = reqwest::Client::new();
    let ok: serde_json::Value = http
        .get(url.clone())
        .header("X-API-Key", &key)
        .bearer_auth(access)
        .send()
        .await
        .expect("gateway")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .expect("json");
    assert_eq!(ok["data"]["api_key"], value.as_str());
    gateway
        .script("demo", &[serde_json::json!({"status": 503})])
        .await
        .expect("script");
    let scripted = http.get(url.clone()).send().await.expect("gateway");
    assert_eq!(scripted.status(), 503, "the scripted answer comes first");
    let unauth = http
        .get(url)
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("gateway");
    assert_eq!(
        unauth.status(),
        401,
        "no bearer token, normal behaviour resumed"
    );
    assert_eq!(gateway.requests().await.expect("stats"), 3);
}

#[tokio::test]
async fn a_wrong_password_fails_browser_login() {
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let err = login(&idp, "bob", "not-bobs-password")
        .await
        .expect_err("a wrong password must not log in");
    assert!(
        format!("{err:#}").contains("rejected"),
        "the error says why: {err:#}"
    );
}

#[tokio::test]
async fn the_upstream_reports_a_fingerprint_not_the_value() {
    let key = canary("upstream");
    let upstream = Upstream::start(&key).await.expect("upstream");
    let body: serde_json::Value = reqwest::Client::new()
        .get(upstream.url().join("/whoami").expect("url"))
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("whoami")
        .json()
        .await
        .expect("json");
    assert_eq!(body["matches_expected"], true);
    assert!(
        !body.to_string().contains(&key),
        "the value is never echoed"
    );
}
