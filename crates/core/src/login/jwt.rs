//! JWT validation against the identity provider's JWKS (PROTOCOL §1): the algorithm comes from
//! the key, never from the token, so `alg: none` and HS/RS confusion cannot pass; `iss`, `aud`,
//! `azp` (for id tokens), `exp` and `nbf` are checked with at most [`LEEWAY_SECONDS`] of leeway;
//! an unknown `kid` refetches the key set once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use crate::Code;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 60;

/// Least time between two key-set fetches caused by unknown `kid`s (a forged token must not make
/// Latchkey hammer the identity provider).
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Why a token was refused. Each reason has its own code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts with JSON inside.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// `alg: none`: an unsigned token.
    #[error("the token is unsigned (`alg: none`)")]
    Unsigned,
    /// The header's algorithm is not the one of the key that must verify it.
    #[error("the token's algorithm `{header}` does not match its key's algorithm `{key}`")]
    AlgorithmMismatch {
        /// From the token header.
        header: String,
        /// From the key.
        key: String,
    },
    /// The key uses an algorithm Latchkey does not accept (symmetric keys, encryption keys).
    #[error("the identity provider's key uses an unsupported algorithm")]
    UnsupportedKey,
    /// No key with the token's `kid`, even after refetching the key set.
    #[error("the token was signed with a key the identity provider does not publish")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `iss` is not the configured issuer.
    #[error("the token was issued by someone else (wrong `iss`)")]
    WrongIssuer,
    /// `aud` does not include the expected audience.
    #[error("the token is meant for another audience (wrong `aud`)")]
    WrongAudience,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet (`nbf` in the future)")]
    NotYetValid,
    /// A claim is missing.
    #[error("the token lacks the `{0}` claim")]
    MissingClaim(String),
    /// A claim has the wrong type (e.g. a string `exp`).
    #[error("the token's `{0}` claim has the wrong type")]
    BadClaim(String),
    /// The id token's `azp` is not this client, or it names several audiences without `azp`.
    #[error("the id token was issued to another client (wrong or missing `azp`)")]
    WrongAuthorizedParty,
    /// The id token's `nonce` is not the one this login sent.
    #[error("the id token's nonce does not match this login")]
    NonceMismatch,
    /// The key set could not be fetched.
    #[error("cannot fetch the identity provider's keys: {0}")]
    KeysUnavailable(String),
}

impl JwtError {
    /// A stable code for the UI and the tests.
    pub fn code(&self) -> Code {
        match self {
            Self::Malformed => Code::JwtMalformed,
            Self::Unsigned => Code::JwtUnsigned,
            Self::AlgorithmMismatch { .. } => Code::JwtAlgorithmMismatch,
            Self::UnsupportedKey => Code::JwtUnsupportedKey,
            Self::UnknownKey => Code::JwtUnknownKey,
            Self::BadSignature => Code::JwtBadSignature,
            Self::WrongIssuer => Code::JwtWrongIssuer,
            Self::WrongAudience => Code::JwtWrongAudience,
            Self::Expired => Code::JwtExpired,
            Self::NotYetValid => Code::JwtNotYetValid,
            Self::MissingClaim(_) => Code::JwtMissingClaim,
            Self::BadClaim(_) => Code::JwtBadClaim,
            Self::WrongAuthorizedParty => Code::JwtWrongAzp,
            Self::NonceMismatch => Code::JwtNonceMismatch,
            Self::KeysUnavailable(_) => Code::JwksUnavailable,
        }
    }
}

/// What a token must say to be accepted.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// Exact `iss`.
    pub issuer: String,
    /// One of the token's `aud` values.
    pub audience: String,
    /// The id token's `nonce`, when this is a fresh login.
    pub nonce: Option<String>,
    /// For id tokens, the client id: OIDC Core §3.1.3.7 then requires `azp` when `aud` has
    /// several values, and `azp`, when present, to be this client.
    pub authorized_party: Option<String>,
}

/// The claims Latchkey uses from a validated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`.
    pub subject: Option<String>,
    /// `name`, else `preferred_username`.
    pub name: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// `iat`, unix seconds, when present.
    pub issued_at: Option<i64>,
}

/// The identity provider's signing keys, fetched from `jwks_uri` and cached.
#[derive(Clone)]
pub struct KeySet {
    inner: Arc<KeySetInner>,
}

struct KeySetInner {
    http: reqwest::Client,
    uri: Url,
    timeout: Duration,
    cache: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    keys: Option<JwkSet>,
    /// When an unknown `kid` last caused a refetch.
    refetched: Option<Instant>,
}

impl KeySet {
    /// Keys at `uri`, fetched on first use.
    pub fn new(http: reqwest::Client, uri: Url, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(KeySetInner {
                http,
                uri,
                timeout,
                cache: Mutex::new(Cached::default()),
            }),
        }
    }

    async fn fetch(&self) -> Result<JwkSet, JwtError> {
        let answer = self
            .inner
            .http
            .get(self.inner.uri.clone())
            .timeout(self.inner.timeout)
            .send()
            .await
            .map_err(|e| JwtError::KeysUnavailable(without_url(&e)))?;
        if !answer.status().is_success() {
            return Err(JwtError::KeysUnavailable(format!(
                "the key set answered {}",
                answer.status()
            )));
        }
        answer
            .json::<JwkSet>()
            .await
            .map_err(|_| JwtError::KeysUnavailable("the key set is not a JWKS document".into()))
    }

    /// The key for `kid` (or the only key when the token names none), refetching the set once
    /// when it is unknown.
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, JwtError> {
        // The lock is a tokio mutex: holding it across the fetch makes concurrent validations
        // share one refetch.
        let mut cache = self.inner.cache.lock().await;
        if cache.keys.is_none() {
            cache.keys = Some(self.fetch().await?);
        }
        if let Some(found) = cache.keys.as_ref().and_then(|set| pick(set, kid)) {
            return Ok(found);
        }
        // One refetch per interval for unknown keys (a key rotation is seen at once, a stream of
        // forged `kid`s does not turn into a stream of requests to the identity provider).
        if cache
            .refetched
            .is_some_and(|at| at.elapsed() < REFETCH_INTERVAL)
        {
            return Err(JwtError::UnknownKey);
        }
        cache.refetched = Some(Instant::now());
        let fresh = self.fetch().await?;
        let found = pick(&fresh, kid);
        cache.keys = Some(fresh);
        found.ok_or(JwtError::UnknownKey)
    }

    /// Validates `token` and returns its claims.
    pub async fn validate(&self, token: &str, expect: &Expectations) -> Result<Claims, JwtError> {
        super::jws::install();
        let (header, payload) = parts(token)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(JwtError::Malformed)?;
        if alg.eq_ignore_ascii_case("none") {
            return Err(JwtError::Unsigned);
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let jwk = self.key(kid).await?;
        let key_alg = key_algorithm(&jwk)?;
        if alg != format!("{key_alg:?}") {
            return Err(JwtError::AlgorithmMismatch {
                header: alg.chars().take(16).collect(),
                key: format!("{key_alg:?}"),
            });
        }
        for claim in ["exp", "nbf", "iat"] {
            if payload.get(claim).is_some_and(|v| !v.is_number()) {
                return Err(JwtError::BadClaim(claim.to_owned()));
            }
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| JwtError::UnsupportedKey)?;
        let mut validation = Validation::new(key_alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&expect.issuer]);
        validation.set_audience(&[&expect.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(map_error)?;
        let claims = data.claims;
        if let Some(client) = &expect.authorized_party {
            check_authorized_party(&claims, client)?;
        }
        if let Some(nonce) = &expect.nonce {
            let got = claims.get("nonce").and_then(Value::as_str);
            let same = got.is_some_and(|g| crate::secret::ct_eq_str(g, nonce));
            if !same {
                return Err(JwtError::NonceMismatch);
            }
        }
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        Ok(Claims {
            subject: text("sub"),
            name: text("name").or_else(|| text("preferred_username")),
            email: text("email"),
            expires_at: claims
                .get("exp")
                .and_then(Value::as_i64)
                .ok_or_else(|| JwtError::MissingClaim("exp".into()))?,
            issued_at: claims.get("iat").and_then(Value::as_i64),
        })
    }
}

/// OIDC Core §3.1.3.7 items 4 and 5: several audiences need an `azp`; an `azp` must be `client`.
fn check_authorized_party(claims: &Value, client: &str) -> Result<(), JwtError> {
    let several = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1);
    match claims.get("azp") {
        None if several => Err(JwtError::WrongAuthorizedParty),
        None => Ok(()),
        Some(Value::String(azp)) if azp == client => Ok(()),
        Some(Value::String(_)) => Err(JwtError::WrongAuthorizedParty),
        Some(_) => Err(JwtError::BadClaim("azp".into())),
    }
}

/// Whether `token` looks like a JWT (three parts, a JSON header with `alg`). Anything else is an
/// opaque access token.
pub fn looks_like_jwt(token: &str) -> bool {
    parts(token).is_ok_and(|(h, _)| h.get("alg").is_some())
}

/// The `exp` of a JWT read *without* verifying anything, as information only (an access token's
/// lifetime when the token response has no `expires_in`). `None` for anything else.
pub fn unverified_expiry(token: &str) -> Option<i64> {
    let (_, payload) = parts(token).ok()?;
    payload.get("exp").and_then(Value::as_i64)
}

fn parts(token: &str) -> Result<(Value, Value), JwtError> {
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(_s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(JwtError::Malformed);
    };
    let decode = |part: &str| -> Result<Value, JwtError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| JwtError::Malformed)?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
        if value.is_object() {
            Ok(value)
        } else {
            Err(JwtError::Malformed)
        }
    };
    Ok((decode(h)?, decode(p)?))
}

fn pick(set: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    let signing = |k: &&Jwk| {
        !matches!(
            k.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        )
    };
    match kid {
        Some(kid) => set.find(kid).filter(|k| signing(k)).cloned(),
        None => {
            let mut candidates = set.keys.iter().filter(signing);
            match (candidates.next(), candidates.next()) {
                (Some(only), None) => Some(only.clone()),
                _ => None,
            }
        }
    }
}

/// The algorithm a key verifies: its `alg` when published, else the usual one for its type.
/// Symmetric keys are never accepted: a public client cannot share a secret with the IdP.
/// A published `alg` must fit the key's own type (an RSA key labelled `ES256` verifies nothing).
fn key_algorithm(jwk: &Jwk) -> Result<Algorithm, JwtError> {
    if let Some(alg) = jwk.common.key_algorithm {
        let fits = match (&jwk.algorithm, alg) {
            (
                AlgorithmParameters::RSA(_),
                KeyAlgorithm::RS256
                | KeyAlgorithm::RS384
                | KeyAlgorithm::RS512
                | KeyAlgorithm::PS256
                | KeyAlgorithm::PS384
                | KeyAlgorithm::PS512,
            ) => true,
            (AlgorithmParameters::EllipticCurve(ec), KeyAlgorithm::ES256) => {
                ec.curve == EllipticCurve::P256
            }
            (AlgorithmParameters::EllipticCurve(ec), KeyAlgorithm::ES384) => {
                ec.curve == EllipticCurve::P384
            }
            (AlgorithmParameters::OctetKeyPair(_), KeyAlgorithm::EdDSA) => true,
            _ => false,
        };
        if !fits {
            return Err(JwtError::UnsupportedKey);
        }
        return match alg {
            KeyAlgorithm::RS256 => Ok(Algorithm::RS256),
            KeyAlgorithm::RS384 => Ok(Algorithm::RS384),
            KeyAlgorithm::RS512 => Ok(Algorithm::RS512),
            KeyAlgorithm::PS256 => Ok(Algorithm::PS256),
            KeyAlgorithm::PS384 => Ok(Algorithm::PS384),
            KeyAlgorithm::PS512 => Ok(Algorithm::PS512),
            KeyAlgorithm::ES256 => Ok(Algorithm::ES256),
            KeyAlgorithm::ES384 => Ok(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Ok(Algorithm::EdDSA),
            _ => Err(JwtError::UnsupportedKey),
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Ok(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Ok(Algorithm::ES256),
            EllipticCurve::P384 => Ok(Algorithm::ES384),
            _ => Err(JwtError::UnsupportedKey),
        },
        AlgorithmParameters::OctetKeyPair(_) => Ok(Algorithm::EdDSA),
        _ => Err(JwtError::UnsupportedKey),
    }
}

fn map_error(e: jsonwebtoken::errors::Error) -> JwtError {
    match e.kind() {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => JwtError::BadClaim(c.clone()),
        ErrorKind::InvalidAlgorithm => JwtError::AlgorithmMismatch {
            header: "?".into(),
            key: "?".into(),
        },
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => JwtError::UnsupportedKey,
        _ => JwtError::Malformed,
    }
}

/// A reqwest error's text without its URL (which may carry query values).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_decode() {
        "unreadable answer"
    } else {
        "request failed"
    };
    match e.url().and_then(|u| u.host_str().map(str::to_owned)) {
        Some(host) => format!("{kind} ({host})"),
        None => kind.to_owned(),
    }
}
