//! The signature checks behind [`super::jwt`]: a `jsonwebtoken` crypto provider built on `ring`,
//! the constant-time library that already secures Latchkey's TLS.
//!
//! Why not `jsonwebtoken`'s own backends: its RustCrypto backend pulls in the `rsa` crate, whose
//! private-key operations are not constant time (RUSTSEC-2023-0071, the Marvin attack), and its
//! aws-lc backend would ship a second C crypto library beside `ring`. Latchkey only ever
//! *verifies* an identity provider's signatures with public keys, so this provider verifies and
//! never signs: with it, no private-key code is in the shipped binaries at all.
//!
//! What it accepts is narrower than the JOSE list, on purpose: RSA keys of 2048 to 8192 bits
//! (PKCS#1 v1.5 and PSS with SHA-256/384/512), ECDSA on P-256 and P-384, Ed25519. HMAC keys are
//! refused here as well as in [`super::jwt`] (a public client has no shared secret with its
//! provider; accepting one is the HS/RS confusion attack).

use std::sync::Once;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result};
use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{self as ring_sig, RsaPublicKeyComponents, UnparsedPublicKey};

/// The provider Latchkey installs for the whole process.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(unsupported()),
        rsa_pub_components_from_public_key: |_| Err(unsupported()),
        ec_pub_components_from_private_key: |_, _| Err(unsupported()),
        ed_pub_components_from_private_key: |_, _| Err(unsupported()),
        compute_digest,
    },
};

/// Installs the provider as the process default. Idempotent; must run before the first
/// `jsonwebtoken::decode` (the key set calls it when it is created).
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Only fails when a provider is already installed, which in this crate can only be ours.
        let _ = PROVIDER.install_default();
    });
}

fn unsupported() -> Error {
    Error::from(ErrorKind::InvalidAlgorithm)
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    // Latchkey verifies the provider's tokens; it never signs one.
    Err(unsupported())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(unsupported()),
    };
    Ok(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

/// The public key of a verifier, in the form `ring` takes.
enum PublicKey {
    /// RSA modulus and exponent (big-endian), from a JWK.
    RsaComponents { n: Vec<u8>, e: Vec<u8> },
    /// DER (PKCS#1 `RSAPublicKey` for RSA), an uncompressed SEC1 point for ECDSA, the raw key for
    /// Ed25519.
    Encoded(Vec<u8>),
}

struct Verifier {
    algorithm: Algorithm,
    key: PublicKey,
    rsa: Option<&'static ring_sig::RsaParameters>,
    other: Option<&'static dyn ring_sig::VerificationAlgorithm>,
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if key.family() != algorithm.family() {
        return Err(Error::from(ErrorKind::InvalidAlgorithm));
    }
    let (rsa, other): (
        Option<&'static ring_sig::RsaParameters>,
        Option<&'static dyn ring_sig::VerificationAlgorithm>,
    ) = match algorithm {
        Algorithm::RS256 => (Some(&ring_sig::RSA_PKCS1_2048_8192_SHA256), None),
        Algorithm::RS384 => (Some(&ring_sig::RSA_PKCS1_2048_8192_SHA384), None),
        Algorithm::RS512 => (Some(&ring_sig::RSA_PKCS1_2048_8192_SHA512), None),
        Algorithm::PS256 => (Some(&ring_sig::RSA_PSS_2048_8192_SHA256), None),
        Algorithm::PS384 => (Some(&ring_sig::RSA_PSS_2048_8192_SHA384), None),
        Algorithm::PS512 => (Some(&ring_sig::RSA_PSS_2048_8192_SHA512), None),
        Algorithm::ES256 => (None, Some(&ring_sig::ECDSA_P256_SHA256_FIXED)),
        Algorithm::ES384 => (None, Some(&ring_sig::ECDSA_P384_SHA384_FIXED)),
        Algorithm::EdDSA => (None, Some(&ring_sig::ED25519)),
        // HMAC (a shared secret) and anything newer than this provider: refused.
        _ => return Err(Error::from(ErrorKind::InvalidAlgorithm)),
    };
    let key = match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } if rsa.is_some() => PublicKey::RsaComponents {
            n: n.clone(),
            e: e.clone(),
        },
        DecodingKeyKind::RsaModulusExponent { .. } => {
            return Err(Error::from(ErrorKind::InvalidKeyFormat));
        }
        DecodingKeyKind::SecretOrDer(bytes) => PublicKey::Encoded(bytes.clone()),
    };
    Ok(Box::new(Verifier {
        algorithm: *algorithm,
        key,
        rsa,
        other,
    }))
}

impl signature::Verifier<Vec<u8>> for Verifier {
    fn verify(&self, message: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let checked = match (&self.key, self.rsa, self.other) {
            (PublicKey::RsaComponents { n, e }, Some(params), _) => {
                RsaPublicKeyComponents { n, e }.verify(params, message, sig)
            }
            (PublicKey::Encoded(der), Some(params), _) => {
                UnparsedPublicKey::new(params, der).verify(message, sig)
            }
            (PublicKey::Encoded(raw), None, Some(algorithm)) => {
                UnparsedPublicKey::new(algorithm, raw).verify(message, sig)
            }
            _ => Err(ring::error::Unspecified),
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Verifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// `header.claims.signature`, signed by `sign`.
    fn token(alg: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        let claims = b64(br#"{"sub":"alice","exp":4102444800}"#);
        let input = format!("{header}.{claims}");
        let sig = sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    fn verifies(token: &str, alg: Algorithm, key: &DecodingKey) -> bool {
        install();
        let (input, sig) = token.rsplit_once('.').expect("three parts");
        jsonwebtoken::crypto::verify(sig, input.as_bytes(), key, alg).unwrap_or(false)
    }

    fn tampered(token: &str) -> String {
        // Flip the subject: same header and signature, other claims.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = b64(br#"{"sub":"mallory","exp":4102444800}"#);
        parts.join(".")
    }

    #[test]
    fn rsa_pkcs1_and_pss_signatures_verify_from_a_jwk_or_der_and_tampering_fails() {
        use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
        use rsa::traits::PublicKeyParts as _;

        let rng = SystemRandom::new();
        let private = rsa::RsaPrivateKey::new(&mut rand_core_rng(), 2048).expect("rsa key");
        let pair =
            ring_sig::RsaKeyPair::from_der(private.to_pkcs1_der().expect("pkcs1").as_bytes())
                .expect("ring key pair");
        let public = private.to_public_key();
        let from_jwk = DecodingKey::from_rsa_raw_components(
            &public.n().to_bytes_be(),
            &public.e().to_bytes_be(),
        );
        let from_der = DecodingKey::from_rsa_der(public.to_pkcs1_der().expect("der").as_bytes());
        for (alg, padding, name) in [
            (
                Algorithm::RS256,
                &ring_sig::RSA_PKCS1_SHA256 as &dyn ring_sig::RsaEncoding,
                "RS256",
            ),
            (Algorithm::RS512, &ring_sig::RSA_PKCS1_SHA512, "RS512"),
            (Algorithm::PS256, &ring_sig::RSA_PSS_SHA256, "PS256"),
        ] {
            let good = token(name, |m| {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, m, &mut sig).expect("sign");
                sig
            });
            for key in [&from_jwk, &from_der] {
                assert!(
                    verifies(&good, alg, key),
                    "{name}: a good signature verifies"
                );
                assert!(
                    !verifies(&tampered(&good), alg, key),
                    "{name}: changed claims must not verify"
                );
            }
        }
    }

    /// The `rsa` crate's key generation wants a `rand_core` 0.6 generator.
    fn rand_core_rng() -> impl rsa::rand_core::CryptoRngCore {
        rsa::rand_core::OsRng
    }

    #[test]
    fn es256_and_es384_signatures_verify_and_tampering_fails() {
        let rng = SystemRandom::new();
        for (alg, ring_alg, name) in [
            (
                Algorithm::ES256,
                &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                "ES256",
            ),
            (
                Algorithm::ES384,
                &ring_sig::ECDSA_P384_SHA384_FIXED_SIGNING,
                "ES384",
            ),
        ] {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(ring_alg, &rng).expect("key");
            let pair = EcdsaKeyPair::from_pkcs8(ring_alg, pkcs8.as_ref(), &rng).expect("pair");
            let point = pair.public_key().as_ref();
            let half = (point.len() - 1) / 2;
            let key =
                DecodingKey::from_ec_components(&b64(&point[1..=half]), &b64(&point[1 + half..]))
                    .expect("jwk components");
            let good = token(name, |m| {
                pair.sign(&rng, m).expect("sign").as_ref().to_vec()
            });
            assert!(
                verifies(&good, alg, &key),
                "{name}: a good signature verifies"
            );
            assert!(
                !verifies(&tampered(&good), alg, &key),
                "{name}: changed claims must not verify"
            );
        }
    }

    #[test]
    fn ed25519_signatures_verify_and_tampering_fails() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        let key = DecodingKey::from_ed_components(&b64(pair.public_key().as_ref()))
            .expect("jwk components");
        let good = token("EdDSA", |m| pair.sign(m).as_ref().to_vec());
        assert!(verifies(&good, Algorithm::EdDSA, &key));
        assert!(!verifies(&tampered(&good), Algorithm::EdDSA, &key));
    }

    #[test]
    fn a_key_of_another_family_is_refused_before_any_check() {
        install();
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        let ed = DecodingKey::from_ed_components(&b64(pair.public_key().as_ref())).expect("key");
        assert!(
            verifier(&Algorithm::RS256, &ed).is_err(),
            "an Ed25519 key must not verify an RS256 token"
        );
        let secret = DecodingKey::from_secret(b"shared");
        assert!(
            verifier(&Algorithm::HS256, &secret).is_err(),
            "HMAC is never verified: a public client has no shared secret"
        );
    }

    #[test]
    fn latchkey_never_signs() {
        install();
        let key = EncodingKey::from_secret(b"anything");
        assert!(
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &"{}", &key).is_err(),
            "the shipped provider has no signer"
        );
    }
}
