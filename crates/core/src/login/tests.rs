//! Login against a real loopback test provider (axum) signing with an RSA key generated for this
//! test run (no private key lives in the repository): the negative JWT vectors, the callback's
//! `state` rules, and a full code exchange with PKCE.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::jwt::{Expectations, JwtError, KeySet};
use super::*;

const KID: &str = "test-key-1";
const CLIENT: &str = "latchkey";
const AUDIENCE: &str = "latchkey-gateway";

#[derive(Default)]
struct Seen {
    token_forms: Vec<HashMap<String, String>>,
    jwks_fetches: usize,
    nonce: Option<String>,
}

struct TestIdp {
    issuer: String,
    seen: Arc<Mutex<Seen>>,
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The provider's signing key, made once per test process.
struct TestKey {
    private_pem: String,
    public_pem: String,
    jwks: Value,
}

fn test_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("keygen");
        let public = private.to_public_key();
        let b64u = |n: &rsa::BigUint| URL_SAFE_NO_PAD.encode(n.to_bytes_be());
        TestKey {
            private_pem: private
                .to_pkcs8_pem(LineEnding::LF)
                .expect("private pem")
                .to_string(),
            // SPKI ("BEGIN PUBLIC KEY"), the form a provider publishes and an HS256 forger uses.
            public_pem: public
                .to_public_key_pem(LineEnding::LF)
                .expect("public pem"),
            jwks: json!({"keys": [{
                "kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
                "n": b64u(public.n()), "e": b64u(public.e()),
            }]}),
        }
    })
}

fn sign(header: Header, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(test_key().private_pem.as_bytes()).expect("test key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

fn rs256() -> Header {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(KID.into());
    h
}

fn claims(issuer: &str, aud: &str) -> Value {
    json!({"iss": issuer, "aud": aud, "sub": "alice", "exp": now() + 600, "iat": now(), "email": "alice@example.test", "name": "Alice"})
}

async fn start_idp() -> TestIdp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "code_challenge_methods_supported": ["S256"],
    });
    let iss = issuer.clone();
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route(
            "/jwks",
            get(|State(seen): State<Arc<Mutex<Seen>>>| async move {
                seen.lock().expect("lock").jwks_fetches += 1;
                Json(test_key().jwks.clone())
            }),
        )
        .route(
            "/token",
            post(
                move |State(seen): State<Arc<Mutex<Seen>>>,
                      Form(form): Form<HashMap<String, String>>| {
                    let iss = iss.clone();
                    async move {
                        let nonce = {
                            let mut s = seen.lock().expect("lock");
                            s.token_forms.push(form.clone());
                            s.nonce.clone()
                        };
                        if form.get("refresh_token").is_some_and(|t| t == "revoked") {
                            return (
                                axum::http::StatusCode::BAD_REQUEST,
                                Json(json!({"error": "invalid_grant"})),
                            );
                        }
                        let mut id = claims(&iss, CLIENT);
                        id["nonce"] = json!(nonce);
                        (
                            axum::http::StatusCode::OK,
                            Json(json!({
                                "access_token": sign(rs256(), &claims(&iss, AUDIENCE)),
                                "token_type": "Bearer",
                                "expires_in": 600,
                                "refresh_token": "refresh-1",
                                "id_token": sign(rs256(), &id),
                            })),
                        )
                    }
                },
            ),
        )
        .route(
            "/revoke",
            // Like oidc-provider: JWT access tokens are declined, an unknown client is refused.
            post(|Form(form): Form<HashMap<String, String>>| async move {
                match (
                    form.get("token_type_hint").map(String::as_str),
                    form.get("client_id").map(String::as_str),
                ) {
                    (_, Some(c)) if c != CLIENT => (
                        axum::http::StatusCode::UNAUTHORIZED,
                        Json(json!({"error": "invalid_client"})),
                    ),
                    (Some("access_token"), _) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        Json(json!({"error": "unsupported_token_type"})),
                    ),
                    _ => (axum::http::StatusCode::OK, Json(json!({}))),
                }
            }),
        )
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    TestIdp { issuer, seen }
}

fn settings(issuer: &str) -> ProviderSettings {
    ProviderSettings {
        issuer: Url::parse(issuer).expect("url"),
        client_id: CLIENT.into(),
        scopes: vec!["openid".into(), "offline_access".into()],
        audience: Some(AUDIENCE.into()),
        allow_insecure_http: true,
        timeout: Duration::from_secs(5),
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn keys(idp: &TestIdp) -> KeySet {
    KeySet::new(
        http(),
        Url::parse(&format!("{}/jwks", idp.issuer)).expect("url"),
        Duration::from_secs(5),
    )
}

fn expect(idp: &TestIdp) -> Expectations {
    Expectations {
        issuer: idp.issuer.clone(),
        audience: AUDIENCE.into(),
        nonce: None,
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

#[tokio::test]
async fn a_valid_token_is_accepted_with_its_claims() {
    let idp = start_idp().await;
    let token = sign(rs256(), &claims(&idp.issuer, AUDIENCE));
    let c = keys(&idp)
        .await
        .validate(&token, &expect(&idp))
        .await
        .expect("valid");
    assert_eq!(c.subject.as_deref(), Some("alice"));
    assert_eq!(c.email.as_deref(), Some("alice@example.test"));
}

#[tokio::test]
async fn negative_jwt_vectors_are_each_rejected_with_their_own_reason() {
    let idp = start_idp().await;
    let keys = keys(&idp).await;
    let ex = expect(&idp);
    let base = claims(&idp.issuer, AUDIENCE);

    // alg: none, unsigned.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": KID})),
        b64(&base)
    );
    // HS256 "signed" with the RSA public key as the HMAC secret (key confusion).
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(KID.into());
    let confused = jsonwebtoken::encode(
        &hs,
        &base,
        &EncodingKey::from_secret(test_key().public_pem.as_bytes()),
    )
    .expect("hs256");
    let mut wrong_iss = base.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    let mut wrong_aud = base.clone();
    wrong_aud["aud"] = json!("someone-else");
    let mut expired = base.clone();
    expired["exp"] = json!(now() - 3600);
    let mut future = base.clone();
    future["nbf"] = json!(now() + 3600);
    let mut string_exp = base.clone();
    string_exp["exp"] = json!((now() + 600).to_string());
    let mut unknown = rs256();
    unknown.kid = Some("rotated-away".into());
    // A valid token whose signature was tampered with.
    let good = sign(rs256(), &base);
    let tampered = format!("{}AAAA", good.trim_end_matches(|c: char| c != '.'));

    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", none, "jwt_unsigned"),
        (
            "HS256 with the RSA public key",
            confused,
            "jwt_algorithm_mismatch",
        ),
        ("wrong iss", sign(rs256(), &wrong_iss), "jwt_wrong_issuer"),
        ("wrong aud", sign(rs256(), &wrong_aud), "jwt_wrong_audience"),
        ("expired", sign(rs256(), &expired), "jwt_expired"),
        (
            "nbf in the future",
            sign(rs256(), &future),
            "jwt_not_yet_valid",
        ),
        ("unknown kid", sign(unknown, &base), "jwt_unknown_key"),
        (
            "string-typed exp",
            sign(rs256(), &string_exp),
            "jwt_bad_claim",
        ),
        ("garbage", "not.a.jwt-at-all".into(), "jwt_malformed"),
        ("two parts", "abc.def".into(), "jwt_malformed"),
        ("bad signature", tampered, "jwt_bad_signature"),
    ];
    let mut codes = Vec::new();
    for (name, token, code) in cases {
        let err = keys.validate(&token, &ex).await.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err}");
        codes.push(code);
    }
    // An unknown kid made exactly one refetch, not one per attempt.
    let fetches = idp.seen.lock().expect("lock").jwks_fetches;
    assert_eq!(
        fetches, 2,
        "initial fetch + one refetch for the unknown kid"
    );
    let again = sign(
        Header {
            kid: Some("another-unknown".into()),
            ..rs256()
        },
        &base,
    );
    assert_eq!(
        keys.validate(&again, &ex)
            .await
            .expect_err("unknown")
            .code(),
        "jwt_unknown_key"
    );
    assert_eq!(
        idp.seen.lock().expect("lock").jwks_fetches,
        2,
        "refetches are rate limited"
    );
}

#[tokio::test]
async fn leeway_is_sixty_seconds_at_most() {
    let idp = start_idp().await;
    let keys = keys(&idp).await;
    let mut within = claims(&idp.issuer, AUDIENCE);
    within["exp"] = json!(now() - 30);
    keys.validate(&sign(rs256(), &within), &expect(&idp))
        .await
        .expect("30 s past exp is within leeway");
    let mut beyond = claims(&idp.issuer, AUDIENCE);
    beyond["exp"] = json!(now() - 90);
    assert_eq!(
        keys.validate(&sign(rs256(), &beyond), &expect(&idp))
            .await
            .expect_err("90 s")
            .code(),
        "jwt_expired"
    );
}

#[tokio::test]
async fn discovery_rejects_an_issuer_mismatch_and_plain_http_off_loopback() {
    let idp = start_idp().await;
    let mut s = settings(&idp.issuer);
    s.issuer = Url::parse(&format!("{}/other", idp.issuer)).expect("url");
    let err = Provider::discover(http(), s).await.expect_err("mismatch");
    assert!(matches!(err, LoginError::Discovery { .. }), "{err}");

    let mut s = settings("http://idp.example.com");
    s.allow_insecure_http = true;
    let err = Provider::discover(http(), s)
        .await
        .expect_err("http off loopback");
    assert_eq!(err.code(), "invalid_config");
}

async fn callback(url: &str) -> reqwest::StatusCode {
    http()
        .get(url)
        .send()
        .await
        .expect("callback request")
        .status()
}

#[tokio::test]
async fn a_full_login_sends_the_pkce_verifier_and_validates_the_tokens() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let attempt = start(&provider, 0).await.expect("start");
    let url = attempt.authorize_url().clone();
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["resource"], AUDIENCE);
    assert!(q["redirect_uri"].starts_with("http://127.0.0.1:"));
    idp.seen.lock().expect("lock").nonce = Some(q["nonce"].clone());
    let redirect = q["redirect_uri"].clone();
    let state = q["state"].clone();

    let finish = tokio::spawn(attempt.finish());
    // Stray requests do not end the login.
    assert_eq!(
        callback(&format!("{redirect}?code=x")).await,
        400,
        "missing state"
    );
    assert_eq!(
        callback(&format!("{redirect}?code=x&state=forged")).await,
        400,
        "mismatched state"
    );
    assert_eq!(
        callback(&format!("{redirect}?code=the-code&state={state}")).await,
        200
    );
    let tokens = finish.await.expect("join").expect("login");
    assert_eq!(tokens.user.email.as_deref(), Some("alice@example.test"));
    assert_eq!(
        tokens.refresh_token.as_ref().map(Secret::expose),
        Some("refresh-1")
    );
    assert!(tokens.expires_at > tokens.issued_at);

    let form = idp.seen.lock().expect("lock").token_forms[0].clone();
    assert_eq!(form["code"], "the-code");
    assert_eq!(form["grant_type"], "authorization_code");
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(form["code_verifier"].as_bytes()));
    assert_eq!(
        challenge, q["code_challenge"],
        "the verifier hashes to the challenge"
    );

    // Replaying the callback fails: the listener is gone (or refuses).
    let replay = http()
        .get(format!("{redirect}?code=the-code&state={state}"))
        .send()
        .await;
    assert!(
        replay.map(|r| r.status() != 200).unwrap_or(true),
        "replay refused"
    );
}

#[tokio::test]
async fn the_id_token_nonce_must_match_the_login() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let attempt = start(&provider, 0).await.expect("start");
    let q: HashMap<String, String> = attempt.authorize_url().query_pairs().into_owned().collect();
    idp.seen.lock().expect("lock").nonce = Some("another-login".into());
    let finish = tokio::spawn(attempt.finish());
    callback(&format!(
        "{}?code=c&state={}",
        q["redirect_uri"], q["state"]
    ))
    .await;
    let err = finish.await.expect("join").expect_err("nonce mismatch");
    assert_eq!(err.code(), "jwt_nonce_mismatch");
}

#[tokio::test]
async fn access_denied_ends_the_login_cleanly() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let attempt = start(&provider, 0).await.expect("start");
    let q: HashMap<String, String> = attempt.authorize_url().query_pairs().into_owned().collect();
    let finish = tokio::spawn(attempt.finish());
    let status = callback(&format!(
        "{}?error=access_denied&error_description=user+cancelled&state={}",
        q["redirect_uri"], q["state"]
    ))
    .await;
    assert_eq!(status, 200);
    let err = finish.await.expect("join").expect_err("denied");
    assert_eq!(err.code(), "access_denied");
    assert!(
        idp.seen.lock().expect("lock").token_forms.is_empty(),
        "no token request"
    );
}

#[tokio::test]
async fn an_expired_state_is_refused() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let attempt = start_with_lifetime(&provider, 0, Duration::ZERO)
        .await
        .expect("start");
    let q: HashMap<String, String> = attempt.authorize_url().query_pairs().into_owned().collect();
    let finish = tokio::spawn(attempt.finish());
    tokio::time::sleep(Duration::from_millis(5)).await; // past a zero lifetime
    assert_eq!(
        callback(&format!(
            "{}?code=c&state={}",
            q["redirect_uri"], q["state"]
        ))
        .await,
        400
    );
    let err = finish.await.expect("join").expect_err("expired");
    assert_eq!(err.code(), "login_expired");
}

#[tokio::test]
async fn dropping_an_attempt_closes_its_listener() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let attempt = start(&provider, 0).await.expect("start");
    let q: HashMap<String, String> = attempt.authorize_url().query_pairs().into_owned().collect();
    drop(attempt);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if http().get(q["redirect_uri"].as_str()).send().await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener still up after drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn revocation_tells_revoked_declined_and_refused_apart() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let refresh = provider
        .revoke(&Secret::new("refresh-1"), TokenHint::RefreshToken)
        .await;
    assert!(matches!(refresh, Ok(true)), "revoked: {refresh:?}");
    let access = provider
        .revoke(&Secret::new("a.jwt.token"), TokenHint::AccessToken)
        .await;
    assert!(
        matches!(access, Ok(false)),
        "unsupported_token_type is a decline, not a failure: {access:?}"
    );
    let mut other = settings(&idp.issuer);
    other.client_id = "someone-else".into();
    let stranger = Provider::discover(http(), other).await.expect("discover");
    let refused = stranger
        .revoke(&Secret::new("refresh-1"), TokenHint::RefreshToken)
        .await;
    assert!(
        matches!(&refused, Err(LoginError::TokenEndpoint { error, .. }) if error == "invalid_client"),
        "any other error is one: {refused:?}"
    );
}

#[tokio::test]
async fn refresh_maps_invalid_grant_to_log_in_again() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let err = provider
        .refresh(&Secret::new("revoked"))
        .await
        .expect_err("invalid grant");
    assert!(matches!(err, LoginError::InvalidGrant));
    let ok = provider
        .refresh(&Secret::new("refresh-1"))
        .await
        .expect("refresh");
    assert_eq!(ok.user.subject, "alice");
    let form = idp
        .seen
        .lock()
        .expect("lock")
        .token_forms
        .last()
        .cloned()
        .expect("form");
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["resource"], AUDIENCE);
}

#[test]
fn errors_never_show_secrets_and_have_codes() {
    let e = LoginError::TokenEndpoint {
        error: "invalid_request".into(),
        description: Some("bad".into()),
    };
    assert_eq!(e.code(), "token_request_failed");
    assert_eq!(JwtError::Unsigned.code(), "jwt_unsigned");
    let f = IdTokenField {
        id_token: Some("eyJsecret".into()),
    };
    assert!(!format!("{f:?}").contains("eyJsecret"));
}
