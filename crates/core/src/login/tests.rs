//! Login against a real loopback test provider (axum) signing with an RSA key generated for this
//! test run (no private key lives in the repository): the negative JWT vectors, the callback's
//! `state` rules, a full code exchange with PKCE, the id-token rules at login and at refresh
//! (`aud`, `iss`, `azp`, `sub`), opaque access tokens, and client authentication.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
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
    /// The `Authorization` header of each token request.
    token_auth: Vec<Option<String>>,
    revoke_forms: Vec<HashMap<String, String>>,
    revoke_auth: Vec<Option<String>>,
    jwks_fetches: usize,
    nonce: Option<String>,
    /// Merged over the id token's claims (a `null` removes the claim).
    id_claims: Option<Value>,
    /// Replaces the access token.
    access_token: Option<String>,
    omit_expires_in: bool,
    /// Refresh answers carry no id token / no refresh token.
    refresh_without_id_token: bool,
    refresh_without_refresh_token: bool,
}

fn merged(mut base: Value, overrides: Option<&Value>) -> Value {
    if let (Some(map), Some(Value::Object(over))) = (base.as_object_mut(), overrides) {
        for (k, v) in over {
            if v.is_null() {
                map.remove(k);
            } else {
                map.insert(k.clone(), v.clone());
            }
        }
    }
    base
}

fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
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
    /// PKCS#8 DER, for signing with `ring` (the shipped provider verifies only).
    private_der: Vec<u8>,
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
            private_der: private
                .to_pkcs8_der()
                .expect("private der")
                .as_bytes()
                .to_vec(),
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

/// `base64url(header).base64url(claims)`, the part a JWS signature covers.
fn signing_input(header: &Header, claims: &Value) -> String {
    let header = serde_json::to_vec(header).expect("header json");
    let claims = serde_json::to_vec(claims).expect("claims json");
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

/// Signs like the provider does, with the test key and `ring` (Latchkey's own crypto provider
/// verifies only, so `jsonwebtoken::encode` cannot sign here).
fn sign(header: Header, claims: &Value) -> String {
    use ring::signature::{RSA_PKCS1_SHA256, RSA_PKCS1_SHA384, RSA_PKCS1_SHA512, RsaKeyPair};
    let padding: &dyn ring::signature::RsaEncoding = match header.alg {
        Algorithm::RS384 => &RSA_PKCS1_SHA384,
        Algorithm::RS512 => &RSA_PKCS1_SHA512,
        _ => &RSA_PKCS1_SHA256,
    };
    let input = signing_input(&header, claims);
    let pair = RsaKeyPair::from_pkcs8(&test_key().private_der).expect("test key");
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        padding,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
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
    start_idp_advertising(None).await
}

/// A provider whose discovery lists `auth_methods` as `token_endpoint_auth_methods_supported`
/// (absent when `None`).
async fn start_idp_advertising(auth_methods: Option<&[&str]>) -> TestIdp {
    start_idp_with(auth_methods.map_or_else(
        || json!({}),
        |m| json!({ "token_endpoint_auth_methods_supported": m }),
    ))
    .await
}

/// A provider whose discovery document also carries the members of `extra`.
async fn start_idp_with(extra: Value) -> TestIdp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "code_challenge_methods_supported": ["S256"],
    });
    discovery = merged(discovery, Some(&extra));
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
                      headers: HeaderMap,
                      Form(form): Form<HashMap<String, String>>| {
                    let iss = iss.clone();
                    async move {
                        let s = {
                            let mut s = seen.lock().expect("lock");
                            s.token_forms.push(form.clone());
                            s.token_auth.push(authorization(&headers));
                            (
                                s.nonce.clone(),
                                s.id_claims.clone(),
                                s.access_token.clone(),
                                s.omit_expires_in,
                                s.refresh_without_id_token,
                                s.refresh_without_refresh_token,
                            )
                        };
                        let (nonce, id_claims, access, no_expires_in, no_id, no_refresh) = s;
                        if form.get("refresh_token").is_some_and(|t| t == "revoked") {
                            return (
                                axum::http::StatusCode::BAD_REQUEST,
                                Json(json!({"error": "invalid_grant"})),
                            );
                        }
                        // Answers that are not OAuth error documents: a provider refusing
                        // without saying why (Glewlwyd), and a proxy in front of it failing.
                        if form.get("refresh_token").is_some_and(|t| t == "retired-silently") {
                            return (axum::http::StatusCode::BAD_REQUEST, Json(Value::Null));
                        }
                        if form.get("refresh_token").is_some_and(|t| t == "behind-a-broken-proxy") {
                            return (axum::http::StatusCode::BAD_GATEWAY, Json(json!("Bad Gateway")));
                        }
                        if form.get("client_id").is_some_and(|c| c == "unknown-client") {
                            return (
                                axum::http::StatusCode::UNAUTHORIZED,
                                Json(json!({"error": "invalid_client", "error_description": "client authentication failed"})),
                            );
                        }
                        let refreshing = form.get("grant_type").map(String::as_str) == Some("refresh_token");
                        let mut id = claims(&iss, CLIENT);
                        id["nonce"] = json!(nonce);
                        let id = merged(id, id_claims.as_ref());
                        let mut answer = json!({
                            "access_token": access.unwrap_or_else(|| sign(rs256(), &claims(&iss, AUDIENCE))),
                            "token_type": "Bearer",
                            "expires_in": 600,
                            "refresh_token": if refreshing { "refresh-2" } else { "refresh-1" },
                            "id_token": sign(rs256(), &id),
                        });
                        let map = answer.as_object_mut().expect("object");
                        if no_expires_in {
                            map.remove("expires_in");
                        }
                        if refreshing && no_id {
                            map.remove("id_token");
                        }
                        if refreshing && no_refresh {
                            map.remove("refresh_token");
                        }
                        (axum::http::StatusCode::OK, Json(answer))
                    }
                },
            ),
        )
        .route(
            "/revoke",
            // Like oidc-provider: JWT access tokens are declined, an unknown client is refused.
            post(|State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap, Form(form): Form<HashMap<String, String>>| async move {
                {
                    let mut s = seen.lock().expect("lock");
                    s.revoke_forms.push(form.clone());
                    s.revoke_auth.push(authorization(&headers));
                }
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
        validate_access_token: false,
        auth_method: None,
        audience_parameter: AudienceParameter::Resource,
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
        authorized_party: None,
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
    let confused = {
        let input = signing_input(&hs, &base);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, test_key().public_pem.as_bytes());
        let tag = ring::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    };
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
        assert_eq!(err.code().as_str(), code, "{name}: {err}");
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
        crate::Code::JwtUnknownKey
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
        crate::Code::JwtExpired
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
    assert_eq!(err.code(), crate::Code::ConfigInvalid);
}

async fn callback(url: &str) -> reqwest::StatusCode {
    http()
        .get(url)
        .send()
        .await
        .expect("callback request")
        .status()
}

/// Starts a login at `provider`, answers its callback with `extra` query parameters, and returns
/// how the login ended.
async fn login_answered_with(
    idp: &TestIdp,
    provider: &Provider,
    extra: &str,
) -> Result<TokenSet, LoginError> {
    let attempt = start(provider, 0, ClientAuth::public())
        .await
        .expect("start");
    let q: HashMap<String, String> = attempt.authorize_url().query_pairs().into_owned().collect();
    idp.seen.lock().expect("lock").nonce = Some(q["nonce"].clone());
    let finish = tokio::spawn(attempt.finish());
    assert_eq!(
        callback(&format!(
            "{}?code=c&state={}{extra}",
            q["redirect_uri"], q["state"]
        ))
        .await,
        200
    );
    finish.await.expect("join")
}

#[tokio::test]
async fn a_taken_callback_port_is_reported_as_such_not_as_a_cancel() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let err = start(&provider, port, ClientAuth::public())
        .await
        .expect_err("the port is taken");
    assert_eq!(err.code(), crate::Code::CallbackListenerFailed);
    assert!(err.to_string().contains("callback_port"), "{err}");
}

#[tokio::test]
async fn the_callback_iss_must_name_the_provider_before_its_code_is_used() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let mixed_up = login_answered_with(&idp, &provider, "&iss=https%3A%2F%2Fevil.example")
        .await
        .expect_err("another issuer's answer");
    assert_eq!(mixed_up.code(), crate::Code::CallbackIssMismatch);
    assert!(
        idp.seen.lock().expect("lock").token_forms.is_empty(),
        "the code of a mixed-up answer is never exchanged"
    );
    let iss: String = url::form_urlencoded::byte_serialize(idp.issuer.as_bytes()).collect();
    login_answered_with(&idp, &provider, &format!("&iss={iss}"))
        .await
        .expect("the provider's own iss");
    login_answered_with(&idp, &provider, "")
        .await
        .expect("no iss from a provider that does not promise one");

    let promising =
        start_idp_with(json!({ "authorization_response_iss_parameter_supported": true })).await;
    let provider = Provider::discover(http(), settings(&promising.issuer))
        .await
        .expect("discover");
    let missing = login_answered_with(&promising, &provider, "")
        .await
        .expect_err("iss promised, not sent");
    assert_eq!(missing.code(), crate::Code::CallbackIssMissing);
}

#[tokio::test]
async fn auth0_style_audience_goes_on_the_authorization_request_only() {
    let idp = start_idp().await;
    let provider = Provider::discover(
        http(),
        ProviderSettings {
            audience_parameter: AudienceParameter::Audience,
            ..settings(&idp.issuer)
        },
    )
    .await
    .expect("discover");
    let attempt = start(&provider, 0, ClientAuth::public())
        .await
        .expect("start");
    let q: HashMap<String, String> = attempt.authorize_url().query_pairs().into_owned().collect();
    assert_eq!(q["audience"], AUDIENCE, "Auth0 reads `audience`");
    assert!(
        !q.contains_key("resource"),
        "no RFC 8707 parameter beside it"
    );
    idp.seen.lock().expect("lock").nonce = Some(q["nonce"].clone());
    let finish = tokio::spawn(attempt.finish());
    assert_eq!(
        callback(&format!(
            "{}?code=c&state={}",
            q["redirect_uri"], q["state"]
        ))
        .await,
        200
    );
    finish.await.expect("join").expect("login");
    provider
        .refresh(&Secret::new("refresh-1"), &ClientAuth::public(), "alice")
        .await
        .expect("refresh");
    let forms = idp.seen.lock().expect("lock").token_forms.clone();
    assert_eq!(forms.len(), 2);
    for form in forms {
        assert!(
            !form.contains_key("resource") && !form.contains_key("audience"),
            "token requests carry neither: {form:?}"
        );
    }
}

#[tokio::test]
async fn a_full_login_sends_the_pkce_verifier_and_validates_the_tokens() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let attempt = start(&provider, 0, ClientAuth::public())
        .await
        .expect("start");
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
    assert_eq!(
        tokens.user.as_ref().and_then(|u| u.email.as_deref()),
        Some("alice@example.test")
    );
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
    let attempt = start(&provider, 0, ClientAuth::public())
        .await
        .expect("start");
    let q: HashMap<String, String> = attempt.authorize_url().query_pairs().into_owned().collect();
    idp.seen.lock().expect("lock").nonce = Some("another-login".into());
    let finish = tokio::spawn(attempt.finish());
    callback(&format!(
        "{}?code=c&state={}",
        q["redirect_uri"], q["state"]
    ))
    .await;
    let err = finish.await.expect("join").expect_err("nonce mismatch");
    assert_eq!(err.code(), crate::Code::JwtNonceMismatch);
}

#[tokio::test]
async fn access_denied_ends_the_login_cleanly() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let attempt = start(&provider, 0, ClientAuth::public())
        .await
        .expect("start");
    let q: HashMap<String, String> = attempt.authorize_url().query_pairs().into_owned().collect();
    let finish = tokio::spawn(attempt.finish());
    let status = callback(&format!(
        "{}?error=access_denied&error_description=user+cancelled&state={}",
        q["redirect_uri"], q["state"]
    ))
    .await;
    assert_eq!(status, 200);
    let err = finish.await.expect("join").expect_err("denied");
    assert_eq!(err.code(), crate::Code::AccessDenied);
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
    let attempt = start_with_lifetime(&provider, 0, ClientAuth::public(), Duration::ZERO)
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
    assert_eq!(err.code(), crate::Code::LoginExpired);
}

#[tokio::test]
async fn dropping_an_attempt_closes_its_listener() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let attempt = start(&provider, 0, ClientAuth::public())
        .await
        .expect("start");
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
    let public = ClientAuth::public();
    let refresh = provider
        .revoke(&Secret::new("refresh-1"), TokenHint::RefreshToken, &public)
        .await;
    assert!(matches!(refresh, Ok(true)), "revoked: {refresh:?}");
    let access = provider
        .revoke(&Secret::new("a.jwt.token"), TokenHint::AccessToken, &public)
        .await;
    assert!(
        matches!(access, Ok(false)),
        "unsupported_token_type is a decline, not a failure: {access:?}"
    );
    let mut other = settings(&idp.issuer);
    other.client_id = "someone-else".into();
    let stranger = Provider::discover(http(), other).await.expect("discover");
    let refused = stranger
        .revoke(&Secret::new("refresh-1"), TokenHint::RefreshToken, &public)
        .await;
    assert!(
        matches!(&refused, Err(LoginError::ClientRejected { .. })),
        "any other error is one: {refused:?}"
    );
    let message = refused.expect_err("refused").to_string();
    assert!(
        message.contains("latchkey account set-secret"),
        "an invalid_client says what to check: {message}"
    );
}

#[tokio::test]
async fn refresh_maps_invalid_grant_to_log_in_again() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let public = ClientAuth::public();
    let err = provider
        .refresh(&Secret::new("revoked"), &public, "alice")
        .await
        .expect_err("invalid grant");
    assert!(matches!(err, LoginError::InvalidGrant));
    let silent = provider
        .refresh(&Secret::new("retired-silently"), &public, "alice")
        .await
        .expect_err("refused");
    assert!(
        matches!(silent, LoginError::InvalidGrant),
        "a 400 without an OAuth error still means log in again: {silent:?}"
    );
    let transient = provider
        .refresh(&Secret::new("behind-a-broken-proxy"), &public, "alice")
        .await
        .expect_err("bad gateway");
    assert!(
        !matches!(transient, LoginError::InvalidGrant),
        "a 502 that is not an OAuth answer must not end the session: {transient:?}"
    );
    let ok = provider
        .refresh(&Secret::new("refresh-1"), &public, "alice")
        .await
        .expect("refresh");
    assert_eq!(ok.user.map(|u| u.subject).as_deref(), Some("alice"));
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
    assert_eq!(e.code(), crate::Code::TokenRequestFailed);
    assert_eq!(JwtError::Unsigned.code(), crate::Code::JwtUnsigned);
    let f = IdTokenField {
        id_token: Some("eyJsecret".into()),
    };
    assert!(!format!("{f:?}").contains("eyJsecret"));
}

/// One login against `idp` through the loopback callback; the provider's answer is whatever the
/// test configured in `idp.seen`.
async fn log_in(
    idp: &TestIdp,
    provider: &Provider,
    auth: ClientAuth,
) -> Result<TokenSet, LoginError> {
    let attempt = start(provider, 0, auth).await.expect("start");
    let q: HashMap<String, String> = attempt.authorize_url().query_pairs().into_owned().collect();
    idp.seen.lock().expect("lock").nonce = Some(q["nonce"].clone());
    let finish = tokio::spawn(attempt.finish());
    assert_eq!(
        callback(&format!(
            "{}?code=the-code&state={}",
            q["redirect_uri"], q["state"]
        ))
        .await,
        200
    );
    finish.await.expect("join")
}

async fn provider_for(settings: ProviderSettings) -> Provider {
    Provider::discover(http(), settings)
        .await
        .expect("discover")
}

/// Each bad id token is refused at login and, with the same claims, in a refresh answer.
#[tokio::test]
async fn id_tokens_with_a_wrong_aud_iss_or_azp_are_refused_at_login_and_at_refresh() {
    let idp = start_idp().await;
    let provider = provider_for(settings(&idp.issuer)).await;
    let cases = [
        (
            "aud is the API, not the client",
            json!({"aud": AUDIENCE}),
            "jwt_wrong_audience",
        ),
        (
            "aud is someone else",
            json!({"aud": "someone-else"}),
            "jwt_wrong_audience",
        ),
        (
            "iss is another issuer",
            json!({"iss": "https://evil.example"}),
            "jwt_wrong_issuer",
        ),
        (
            "azp is another client",
            json!({"azp": "other-client"}),
            "jwt_wrong_azp",
        ),
        (
            "several audiences and no azp",
            json!({"aud": [CLIENT, "other-client"]}),
            "jwt_wrong_azp",
        ),
        (
            "several audiences, azp another client",
            json!({"aud": [CLIENT, "other-client"], "azp": "other-client"}),
            "jwt_wrong_azp",
        ),
        ("azp is not a string", json!({"azp": 7}), "jwt_bad_claim"),
        ("no sub", json!({"sub": null}), "jwt_missing_claim"),
    ];
    for (name, overrides, code) in cases {
        idp.seen.lock().expect("lock").id_claims = Some(overrides);
        let err = log_in(&idp, &provider, ClientAuth::public())
            .await
            .expect_err(name);
        assert_eq!(err.code().as_str(), code, "at login, {name}: {err}");
        let err = provider
            .refresh(&Secret::new("refresh-1"), &ClientAuth::public(), "alice")
            .await
            .expect_err(name);
        assert_eq!(err.code().as_str(), code, "at refresh, {name}: {err}");
    }
    // The same provider accepts a good id token again, and several audiences with azp = client.
    idp.seen.lock().expect("lock").id_claims =
        Some(json!({"aud": [CLIENT, "other-client"], "azp": CLIENT}));
    let tokens = log_in(&idp, &provider, ClientAuth::public())
        .await
        .expect("several audiences with azp = client is fine");
    assert_eq!(tokens.user.map(|u| u.subject).as_deref(), Some("alice"));
    provider
        .refresh(&Secret::new("refresh-1"), &ClientAuth::public(), "alice")
        .await
        .expect("and at refresh");
}

#[tokio::test]
async fn the_access_token_is_opaque_and_the_user_comes_from_the_id_token_only() {
    let idp = start_idp().await;
    // No audience configured, as with Okta's default server or Keycloak.
    let mut s = settings(&idp.issuer);
    s.audience = None;
    let provider = provider_for(s).await;
    let mut stranger = claims("https://another-issuer.example", "api://default");
    stranger["sub"] = json!("mallory");
    stranger["email"] = json!("mallory@example.test");
    let mut no_aud = claims(&idp.issuer, "x");
    no_aud.as_object_mut().expect("object").remove("aud");
    let access_tokens = [
        (
            "a JWT for an API, from elsewhere, about someone else",
            sign(rs256(), &stranger),
        ),
        ("a JWT with no aud", sign(rs256(), &no_aud)),
        (
            "an expired JWT",
            sign(
                rs256(),
                &json!({"exp": now() - 3600, "aud": "api://default"}),
            ),
        ),
        ("an opaque string", "2YotnFZFEjr1zCsicMWpAA".to_owned()),
        (
            "a JWT signed with an unknown key",
            sign(
                Header {
                    kid: Some("elsewhere".into()),
                    ..rs256()
                },
                &stranger,
            ),
        ),
    ];
    for (name, access) in access_tokens {
        idp.seen.lock().expect("lock").access_token = Some(access.clone());
        let tokens = log_in(&idp, &provider, ClientAuth::public())
            .await
            .unwrap_or_else(|e| panic!("{name}: login must not look at it: {e}"));
        let user = tokens.user.expect("user");
        assert_eq!(user.subject, "alice", "{name}: the user is the id token's");
        assert_eq!(user.email.as_deref(), Some("alice@example.test"), "{name}");
        assert_eq!(tokens.access_token.expose(), access, "{name}");
        let lifetime = tokens.expires_at - tokens.issued_at;
        assert_eq!(lifetime.whole_seconds(), 600, "{name}: expires_in rules");
    }
}

#[test]
fn an_access_token_lifetime_comes_from_expires_in_then_a_sane_exp_then_the_default() {
    let now = OffsetDateTime::from_unix_timestamp(now()).expect("now");
    let t = now.unix_timestamp();
    let jwt_exp = |exp: i64| sign(rs256(), &json!({"exp": exp}));
    let lifetime = |access: &str, expires_in: Option<u64>| {
        (access_expiry(access, expires_in.map(Duration::from_secs), now) - now).whole_seconds()
    };
    assert_eq!(
        lifetime(&jwt_exp(t + 900), Some(300)),
        300,
        "expires_in wins"
    );
    assert_eq!(lifetime(&jwt_exp(t + 900), None), 900, "else the JWT's exp");
    assert_eq!(lifetime("opaque", None), 3600, "else the default");
    assert_eq!(
        lifetime(&jwt_exp(t - 10), None),
        3600,
        "an exp in the past is not believed"
    );
    assert_eq!(
        lifetime(&jwt_exp(t + 30 * 86_400), None),
        3600,
        "nor one beyond a day"
    );
    assert_eq!(
        lifetime(&sign(rs256(), &json!({"exp": "soon"})), None),
        3600,
        "nor a string"
    );
}

#[tokio::test]
async fn without_expires_in_a_jwt_access_tokens_exp_is_read_as_information() {
    let idp = start_idp().await;
    let provider = provider_for(settings(&idp.issuer)).await;
    let exp = now() + 900;
    {
        let mut s = idp.seen.lock().expect("lock");
        s.omit_expires_in = true;
        // Not verifiable at all (unknown key, other issuer): only its exp is read.
        s.access_token = Some(sign(
            Header {
                kid: Some("elsewhere".into()),
                ..rs256()
            },
            &json!({"iss": "https://elsewhere.example", "exp": exp}),
        ));
    }
    let tokens = log_in(&idp, &provider, ClientAuth::public())
        .await
        .expect("login");
    assert_eq!(tokens.expires_at.unix_timestamp(), exp);
}

#[tokio::test]
async fn validate_access_token_checks_the_access_token_against_the_audience() {
    let idp = start_idp().await;
    let mut s = settings(&idp.issuer);
    s.validate_access_token = true;
    let provider = provider_for(s).await;
    // The default answer: a JWT for AUDIENCE from this issuer.
    log_in(&idp, &provider, ClientAuth::public())
        .await
        .expect("a valid access token for the audience");
    idp.seen.lock().expect("lock").access_token =
        Some(sign(rs256(), &claims(&idp.issuer, "another-api")));
    let err = log_in(&idp, &provider, ClientAuth::public())
        .await
        .expect_err("wrong aud");
    assert_eq!(err.code(), crate::Code::JwtWrongAudience);
    idp.seen.lock().expect("lock").access_token = Some("opaque-token".into());
    let err = log_in(&idp, &provider, ClientAuth::public())
        .await
        .expect_err("opaque");
    assert_eq!(err.code(), crate::Code::AccessTokenNotJwt);
    assert!(err.to_string().contains("validate_access_token"), "{err}");
}

#[tokio::test]
async fn a_refresh_answer_may_lack_an_id_token_and_a_refresh_token_but_not_change_the_user() {
    let idp = start_idp().await;
    let provider = provider_for(settings(&idp.issuer)).await;
    let public = ClientAuth::public();
    let full = provider
        .refresh(&Secret::new("refresh-1"), &public, "alice")
        .await
        .expect("refresh");
    assert_eq!(
        full.refresh_token.as_ref().map(Secret::expose),
        Some("refresh-2")
    );
    assert!(full.id_token.is_some());
    {
        let mut s = idp.seen.lock().expect("lock");
        s.refresh_without_id_token = true;
        s.refresh_without_refresh_token = true;
    }
    let bare = provider
        .refresh(&Secret::new("refresh-1"), &public, "alice")
        .await
        .expect("an answer without id token is fine");
    assert!(
        bare.user.is_none(),
        "no id token, no user: the session keeps its own"
    );
    assert!(
        bare.refresh_token.is_none(),
        "the session keeps the previous one"
    );
    assert!(bare.id_token.is_none());

    idp.seen.lock().expect("lock").refresh_without_id_token = false;
    let err = provider
        .refresh(&Secret::new("refresh-1"), &public, "bob")
        .await
        .expect_err("the id token names alice, the session bob");
    assert_eq!(err.code(), crate::Code::IdTokenSubjectChanged);
    // At refresh the original nonce is not checked (oidc-provider repeats it; others omit it).
    idp.seen.lock().expect("lock").id_claims = Some(json!({"nonce": null}));
    provider
        .refresh(&Secret::new("refresh-1"), &public, "alice")
        .await
        .expect("no nonce at refresh");
}

#[tokio::test]
async fn the_client_authentication_method_follows_the_configuration_then_the_discovery() {
    let secret = || Some(Secret::new("canary-client-secret-4f2a"));
    // Configured methods are used as written; a missing secret is a coded error.
    let idp = start_idp_advertising(Some(&["client_secret_post", "none"])).await;
    let mut s = settings(&idp.issuer);
    s.auth_method = Some(ClientAuthMethod::ClientSecretBasic);
    let provider = provider_for(s).await;
    assert_eq!(
        provider.client_auth(secret()).expect("basic").method(),
        ClientAuthMethod::ClientSecretBasic,
        "the configuration wins over the discovery"
    );
    let err = provider.client_auth(None).expect_err("no secret");
    assert_eq!(err.code(), crate::Code::ClientSecretMissing);
    assert!(
        err.to_string().contains("latchkey account set-secret"),
        "{err}"
    );

    // Unset: public without a secret; with one, what the provider advertises, basic first.
    let provider = provider_for(settings(&idp.issuer)).await;
    assert_eq!(
        provider.client_auth(None).expect("none").method(),
        ClientAuthMethod::None
    );
    assert_eq!(
        provider.client_auth(secret()).expect("post").method(),
        ClientAuthMethod::ClientSecretPost,
        "basic is not advertised here"
    );
    let both = start_idp_advertising(Some(&["client_secret_post", "client_secret_basic"])).await;
    let provider = provider_for(settings(&both.issuer)).await;
    assert_eq!(
        provider.client_auth(secret()).expect("basic").method(),
        ClientAuthMethod::ClientSecretBasic
    );
    let silent = start_idp().await;
    let provider = provider_for(settings(&silent.issuer)).await;
    assert_eq!(
        provider.client_auth(secret()).expect("basic").method(),
        ClientAuthMethod::ClientSecretBasic,
        "RFC 8414: no list means client_secret_basic"
    );
    let jwt_only = start_idp_advertising(Some(&["private_key_jwt"])).await;
    let provider = provider_for(settings(&jwt_only.issuer)).await;
    assert_eq!(
        provider
            .client_auth(secret())
            .expect_err("unsupported")
            .code(),
        crate::Code::IdpUnsupported
    );
    let explicit_public = {
        let mut s = settings(&silent.issuer);
        s.auth_method = Some(ClientAuthMethod::None);
        provider_for(s).await
    };
    let auth = explicit_public.client_auth(secret()).expect("none");
    assert_eq!(auth.method(), ClientAuthMethod::None);
    assert!(
        !format!("{auth:?}").contains("canary"),
        "Debug hides the secret"
    );
}

#[tokio::test]
async fn the_client_secret_goes_where_the_method_says_for_exchange_refresh_and_revocation() {
    let secret = Secret::new("canary/secret:4f2a&x");
    let idp = start_idp().await;
    let provider = provider_for(settings(&idp.issuer)).await;
    for method in [
        ClientAuthMethod::ClientSecretBasic,
        ClientAuthMethod::ClientSecretPost,
    ] {
        let auth = ClientAuth {
            method,
            secret: Some(secret.clone()),
        };
        log_in(&idp, &provider, auth.clone()).await.expect("login");
        provider
            .refresh(&Secret::new("refresh-1"), &auth, "alice")
            .await
            .expect("refresh");
        provider
            .revoke(&Secret::new("refresh-1"), TokenHint::RefreshToken, &auth)
            .await
            .expect("revoke");
        let seen = idp.seen.lock().expect("lock");
        let n = seen.token_forms.len();
        let requests = [
            (
                &seen.token_forms[n - 2],
                &seen.token_auth[n - 2],
                "code exchange",
            ),
            (&seen.token_forms[n - 1], &seen.token_auth[n - 1], "refresh"),
            (
                seen.revoke_forms.last().expect("revoke form"),
                seen.revoke_auth.last().expect("revoke auth"),
                "revocation",
            ),
        ];
        for (form, header, what) in requests {
            match method {
                ClientAuthMethod::ClientSecretBasic => {
                    // RFC 6749 §2.3.1: form-urlencoded, then Basic.
                    let expected = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{CLIENT}:canary%2Fsecret%3A4f2a%26x"))
                    );
                    assert_eq!(header.as_deref(), Some(expected.as_str()), "{what}");
                    assert!(!form.contains_key("client_secret"), "{what}");
                }
                _ => {
                    assert_eq!(header, &None, "{what}");
                    assert_eq!(
                        form.get("client_id").map(String::as_str),
                        Some(CLIENT),
                        "{what}"
                    );
                    assert_eq!(
                        form.get("client_secret").map(String::as_str),
                        Some(secret.expose()),
                        "{what}"
                    );
                }
            }
        }
    }
    // A public client sends its id and nothing else.
    log_in(&idp, &provider, ClientAuth::public())
        .await
        .expect("login");
    let seen = idp.seen.lock().expect("lock");
    assert_eq!(seen.token_auth.last(), Some(&None));
    let form = seen.token_forms.last().expect("form");
    assert_eq!(form.get("client_id").map(String::as_str), Some(CLIENT));
    assert!(!form.contains_key("client_secret"));
}

#[tokio::test]
async fn an_invalid_client_at_the_token_endpoint_says_what_to_check() {
    let idp = start_idp().await;
    let mut s = settings(&idp.issuer);
    s.client_id = "unknown-client".into();
    let provider = provider_for(s).await;
    let err = provider
        .refresh(&Secret::new("refresh-1"), &ClientAuth::public(), "alice")
        .await
        .expect_err("invalid_client");
    assert_eq!(err.code(), crate::Code::ClientAuthFailed);
    assert!(
        err.to_string().contains("latchkey account set-secret"),
        "{err}"
    );
}

/// `text` with its last character replaced: a forgery of the same length.
fn same_length_forgery(text: &str) -> String {
    let mut forged: String = text.chars().take(text.chars().count() - 1).collect();
    forged.push(if text.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(forged.len(), text.len());
    assert_ne!(forged, text);
    forged
}

#[tokio::test]
async fn a_state_forged_to_the_same_length_is_refused() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let attempt = start(&provider, 0, ClientAuth::public())
        .await
        .expect("start");
    let q: HashMap<String, String> = attempt.authorize_url().query_pairs().into_owned().collect();
    idp.seen.lock().expect("lock").nonce = Some(q["nonce"].clone());
    let finish = tokio::spawn(attempt.finish());
    let forged = same_length_forgery(&q["state"]);
    assert_eq!(
        callback(&format!("{}?code=c&state={forged}", q["redirect_uri"])).await,
        400,
        "a state of the right length but another value is not this login's"
    );
    assert_eq!(
        callback(&format!(
            "{}?code=c&state={}",
            q["redirect_uri"], q["state"]
        ))
        .await,
        200,
        "the login is still waiting for its own state"
    );
    finish.await.expect("join").expect("login");
    assert_eq!(
        idp.seen.lock().expect("lock").token_forms.len(),
        1,
        "only the real callback exchanged a code"
    );
}

#[tokio::test]
async fn an_id_token_nonce_forged_to_the_same_length_is_refused() {
    let idp = start_idp().await;
    let provider = Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("discover");
    let attempt = start(&provider, 0, ClientAuth::public())
        .await
        .expect("start");
    let q: HashMap<String, String> = attempt.authorize_url().query_pairs().into_owned().collect();
    idp.seen.lock().expect("lock").nonce = Some(same_length_forgery(&q["nonce"]));
    let finish = tokio::spawn(attempt.finish());
    callback(&format!(
        "{}?code=c&state={}",
        q["redirect_uri"], q["state"]
    ))
    .await;
    let err = finish.await.expect("join").expect_err("nonce mismatch");
    assert_eq!(err.code(), crate::Code::JwtNonceMismatch);
}

#[tokio::test]
async fn discovery_refuses_an_http_endpoint_off_loopback_and_pkce_without_s256() {
    for (extra, why) in [
        (
            json!({ "token_endpoint": "http://idp.example.test/token" }),
            "a token endpoint over plain http",
        ),
        (
            json!({ "authorization_endpoint": "http://idp.example.test/auth" }),
            "an authorization endpoint over plain http",
        ),
        (
            json!({ "jwks_uri": "http://idp.example.test/jwks" }),
            "keys over plain http",
        ),
        (
            json!({ "revocation_endpoint": "http://idp.example.test/revoke" }),
            "a revocation endpoint over plain http",
        ),
        (
            json!({ "code_challenge_methods_supported": ["plain"] }),
            "PKCE with plain only",
        ),
    ] {
        let idp = start_idp_with(extra).await;
        let result = Provider::discover(http(), settings(&idp.issuer)).await;
        assert!(result.is_err(), "{why} is refused");
    }
    let idp =
        start_idp_with(json!({ "code_challenge_methods_supported": ["plain", "S256"] })).await;
    Provider::discover(http(), settings(&idp.issuer))
        .await
        .expect("S256 among others is fine");
}

/// Serves `jwks` on a loopback port; the key set reads it from there.
async fn jwks_at(jwks: Value) -> KeySet {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
    let app = Router::new().route("/jwks", get(move || async move { Json(jwks.clone()) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    KeySet::new(
        http(),
        Url::parse(&url).expect("url"),
        Duration::from_secs(5),
    )
}

/// `header.claims.signature` for the `alg` named, signed by `sign`.
fn token_signed(alg: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let header = b64(&json!({"alg": alg, "kid": "k", "typ": "JWT"}));
    let input = format!("{header}.{}", b64(&claims("https://idp.test", AUDIENCE)));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn expect_idp_test() -> Expectations {
    Expectations {
        issuer: "https://idp.test".into(),
        audience: AUDIENCE.into(),
        nonce: None,
        authorized_party: None,
    }
}

/// Every asymmetric algorithm a provider may publish verifies, whether the key names its `alg`
/// or only its type (RSA → RS256, P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA): Okta, Entra ID
/// and Keycloak sign RS256, but a realm or tenant may be set to PS256, ES256 or EdDSA.
#[tokio::test]
async fn every_asymmetric_algorithm_verifies_with_the_key_published_for_it() {
    use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
    let rng = ring::rand::SystemRandom::new();
    let rsa = RsaKeyPair::from_pkcs8(&test_key().private_der).expect("test key");
    let rsa_jwk = |alg: Option<&str>| {
        let mut k = test_key().jwks["keys"][0].clone();
        k["kid"] = json!("k");
        match alg {
            Some(a) => k["alg"] = json!(a),
            None => {
                k.as_object_mut().expect("object").remove("alg");
            }
        }
        k
    };
    let rsa_signer = |padding: &'static dyn sig::RsaEncoding| {
        let rsa = &rsa;
        let rng = &rng;
        move |m: &[u8]| {
            let mut s = vec![0; rsa.public().modulus_len()];
            rsa.sign(padding, rng, m, &mut s).expect("sign");
            s
        }
    };
    let mut cases: Vec<(String, Value, String)> = Vec::new();
    for (alg, padding) in [
        (
            "RS256",
            &sig::RSA_PKCS1_SHA256 as &'static dyn sig::RsaEncoding,
        ),
        ("RS384", &sig::RSA_PKCS1_SHA384),
        ("RS512", &sig::RSA_PKCS1_SHA512),
        ("PS256", &sig::RSA_PSS_SHA256),
        ("PS384", &sig::RSA_PSS_SHA384),
        ("PS512", &sig::RSA_PSS_SHA512),
    ] {
        cases.push((
            alg.into(),
            rsa_jwk(Some(alg)),
            token_signed(alg, rsa_signer(padding)),
        ));
    }
    cases.push((
        "RSA key without alg".into(),
        rsa_jwk(None),
        token_signed("RS256", rsa_signer(&sig::RSA_PKCS1_SHA256)),
    ));
    for (alg, crv, signing, published) in [
        (
            "ES256",
            "P-256",
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            Some("ES256"),
        ),
        (
            "ES384",
            "P-384",
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            None,
        ),
    ] {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("pair");
        let point = pair.public_key().as_ref();
        let half = (point.len() - 1) / 2;
        let mut jwk = json!({
            "kty": "EC", "crv": crv, "kid": "k", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..=half]),
            "y": URL_SAFE_NO_PAD.encode(&point[1 + half..]),
        });
        if let Some(a) = published {
            jwk["alg"] = json!(a);
        }
        let token = token_signed(alg, |m| pair.sign(&rng, m).expect("sign").as_ref().to_vec());
        cases.push((format!("{alg} ({crv})"), jwk, token));
    }
    for published in [Some("EdDSA"), None] {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        let mut jwk = json!({
            "kty": "OKP", "crv": "Ed25519", "kid": "k", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        });
        if let Some(a) = published {
            jwk["alg"] = json!(a);
        }
        let token = token_signed("EdDSA", |m| pair.sign(m).as_ref().to_vec());
        cases.push((format!("EdDSA, alg {published:?}"), jwk, token));
    }
    for (name, jwk, token) in cases {
        let keys = jwks_at(json!({ "keys": [jwk] })).await;
        let claims = keys
            .validate(&token, &expect_idp_test())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e} ({})", e.code()));
        assert_eq!(claims.subject.as_deref(), Some("alice"), "{name}");
    }
}

/// A key published for another family than its own (an RSA key labelled ES256) verifies
/// nothing and says why: the key, not a bad signature.
#[tokio::test]
async fn a_key_labelled_with_another_familys_algorithm_is_an_unsupported_key() {
    let mut jwk = test_key().jwks["keys"][0].clone();
    jwk["kid"] = json!("k");
    jwk["alg"] = json!("ES256");
    let keys = jwks_at(json!({ "keys": [jwk] })).await;
    let token = token_signed("ES256", |_| vec![7; 64]);
    let err = keys
        .validate(&token, &expect_idp_test())
        .await
        .expect_err("nothing verifies with it");
    assert_eq!(err.code(), crate::Code::JwtUnsupportedKey, "{err}");
}

/// One audience written as an array of one needs no `azp` (OIDC Core §3.1.3.7 asks for it only
/// with several audiences).
#[tokio::test]
async fn one_audience_in_an_array_needs_no_authorized_party() {
    let idp = start_idp().await;
    let ex = Expectations {
        authorized_party: Some(CLIENT.into()),
        ..expect(&idp)
    };
    let mut one = claims(&idp.issuer, AUDIENCE);
    one["aud"] = json!([AUDIENCE]);
    keys(&idp)
        .await
        .validate(&sign(rs256(), &one), &ex)
        .await
        .expect("one audience in an array, no azp: valid");
    let mut two = claims(&idp.issuer, AUDIENCE);
    two["aud"] = json!([AUDIENCE, "another-api"]);
    let err = keys(&idp)
        .await
        .validate(&sign(rs256(), &two), &ex)
        .await
        .expect_err("two audiences and no azp");
    assert_eq!(err.code(), crate::Code::JwtWrongAzp);
}

/// A provider that takes the connection and never answers is a timeout after the configured
/// time; a port nobody listens on is unreachable, and the reason says so (without the URL).
#[tokio::test]
async fn discovery_tells_a_silent_provider_from_an_absent_one() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", silent.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let mut s = settings(&issuer);
    s.timeout = Duration::from_millis(300);
    let err = Provider::discover(http(), s)
        .await
        .expect_err("nothing answers");
    assert!(
        matches!(err, LoginError::Timeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    held.abort();

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = Provider::discover(http(), settings(&format!("http://127.0.0.1:{closed}")))
        .await
        .expect_err("nobody listens");
    match &err {
        LoginError::Unreachable { reason } => {
            assert!(reason.contains("cannot connect"), "{reason}");
            assert!(
                !reason.contains("well-known"),
                "no URL in the reason: {reason}"
            );
        }
        other => panic!("unreachable, not {other:?}"),
    }
}

/// A claim the protocol requires that is missing, or present with the wrong JSON type, is named
/// in the refusal (`jwt_missing_claim`, `jwt_bad_claim`), never reported as a malformed token.
#[tokio::test]
async fn a_missing_or_mistyped_required_claim_is_named() {
    let idp = start_idp().await;
    let keys = keys(&idp).await;
    for claim in ["exp", "iss", "aud"] {
        let mut c = claims(&idp.issuer, AUDIENCE);
        c.as_object_mut().expect("object").remove(claim);
        let err = keys
            .validate(&sign(rs256(), &c), &expect(&idp))
            .await
            .expect_err(claim);
        assert_eq!(err.code(), crate::Code::JwtMissingClaim, "{claim}: {err}");
        assert!(err.to_string().contains(claim), "names `{claim}`: {err}");
    }
    // `iss` or `aud` of another JSON type count as absent (the JWT library's reading), `exp` of
    // another type is refused by Latchkey's own check first.
    for (claim, value, code) in [
        ("iss", json!(42), "jwt_missing_claim"),
        ("aud", json!(42), "jwt_missing_claim"),
        ("exp", json!("soon"), "jwt_bad_claim"),
    ] {
        let mut c = claims(&idp.issuer, AUDIENCE);
        c[claim] = value;
        let err = keys
            .validate(&sign(rs256(), &c), &expect(&idp))
            .await
            .expect_err(claim);
        assert_eq!(err.code().as_str(), code, "{claim}: {err}");
        assert!(err.to_string().contains(claim), "names `{claim}`: {err}");
    }
}

/// A provider that signs without `kid` and publishes one signing key is understood; with two
/// keys and no `kid` nothing is guessed.
#[tokio::test]
async fn a_token_without_kid_uses_the_only_key_and_never_guesses_between_two() {
    let mut header = rs256();
    header.kid = None;
    let token = sign(header, &claims("https://idp.test", AUDIENCE));
    let mut key = test_key().jwks["keys"][0].clone();
    key.as_object_mut().expect("object").remove("kid");
    let one = jwks_at(json!({ "keys": [key.clone()] })).await;
    one.validate(&token, &expect_idp_test())
        .await
        .expect("the only key verifies a token without kid");
    let mut other = key.clone();
    other["n"] = json!(URL_SAFE_NO_PAD.encode([0xC5u8; 256]));
    let two = jwks_at(json!({ "keys": [key, other] })).await;
    let err = two
        .validate(&token, &expect_idp_test())
        .await
        .expect_err("two keys, no kid");
    assert_eq!(err.code(), crate::Code::JwtUnknownKey, "{err}");
}

/// The issuer and every advertised endpoint must be `https`, or loopback `http` when the account
/// allows it; anything else is refused.
#[test]
fn only_https_or_allowed_loopback_http_is_accepted() {
    let url = |u: &str| Url::parse(u).expect("url");
    for (u, allow, ok) in [
        ("https://login.example.com/realms/work", false, true),
        ("https://login.example.com/", true, true),
        ("http://login.example.com/", true, false),
        ("http://127.0.0.1:47900/", true, true),
        ("http://localhost:47900/", true, true),
        ("http://[::1]:47900/", true, true),
        ("http://127.0.0.1:47900/", false, false),
        ("ftp://login.example.com/", true, false),
    ] {
        assert_eq!(
            check_scheme(&url(u), allow).is_ok(),
            ok,
            "{u} (allow http: {allow})"
        );
    }
}
