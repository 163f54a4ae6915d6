//! Local client tokens: `lk_` followed by 32 base62 characters from the operating system's
//! random number generator (32 × log2 62 ≈ 190.5 bits).
//!
//! Only the SHA-256 of a token is ever stored. A slow password hash (Argon2, scrypt) buys
//! nothing here: it exists to slow down guessing of *low-entropy* secrets chosen by people,
//! whereas these tokens are uniformly random with ~190 bits, so even a leaked hash leaves 2^190
//! candidates to try. A fast hash also keeps [`crate::ClientRegistry::verify`] cheap on every
//! proxied request.

use std::fmt;

use latchkey_core::secret::Secret;
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

use crate::error::StoreError;

/// Every client token starts with this, so it is recognisable in a config file or a leak scan.
pub const TOKEN_PREFIX: &str = "lk_";

/// Random characters after the prefix.
pub(crate) const TOKEN_RANDOM_CHARS: usize = 32;

/// Longest string [`crate::ClientRegistry::verify`] will hash; anything longer is not a token.
pub(crate) const MAX_PRESENTED_LEN: usize = 256;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Largest multiple of 62 that fits in a byte; bytes at or above it are rejected so every
/// character is equally likely.
const REJECT_AT: u8 = 62 * 4;

/// SHA-256 of a token, the only form in which it is stored.
pub(crate) type TokenHash = [u8; 32];

/// A local client token. `Debug` is redacted and there is no `Serialize`; read it with
/// [`ClientToken::expose`] only to hand it to the user or write it into a host's config.
#[derive(Clone)]
pub struct ClientToken(Secret);

impl ClientToken {
    /// Draws a fresh token from the operating system's random number generator.
    pub(crate) fn generate() -> Result<Self, StoreError> {
        let mut out = String::with_capacity(TOKEN_PREFIX.len() + TOKEN_RANDOM_CHARS);
        out.push_str(TOKEN_PREFIX);
        let mut pool = [0u8; 64];
        while out.len() < TOKEN_PREFIX.len() + TOKEN_RANDOM_CHARS {
            OsRng
                .try_fill_bytes(&mut pool)
                .map_err(StoreError::Randomness)?;
            for &b in pool.iter().filter(|&&b| b < REJECT_AT) {
                if out.len() == TOKEN_PREFIX.len() + TOKEN_RANDOM_CHARS {
                    break;
                }
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
        pool.fill(0);
        Ok(Self(Secret::new(out)))
    }

    /// The token itself. Callers must not log or format it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The token as a [`Secret`], for code that stores secrets generically.
    pub fn into_secret(self) -> Secret {
        self.0
    }

    /// The stored form.
    pub(crate) fn hash(&self) -> TokenHash {
        hash_token(self.expose())
    }
}

impl fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientToken([redacted])")
    }
}

/// SHA-256 of a presented string.
pub(crate) fn hash_token(presented: &str) -> TokenHash {
    Sha256::digest(presented.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn tokens_are_prefix_plus_32_base62_characters() {
        let t = ClientToken::generate().expect("rng");
        let s = t.expose();
        assert!(s.starts_with(TOKEN_PREFIX));
        assert_eq!(s.len(), 35);
        assert!(
            s[3..].bytes().all(|b| b.is_ascii_alphanumeric()),
            "base62 only: {}",
            s.len()
        );
    }

    #[test]
    fn tokens_carry_at_least_190_bits() {
        let bits = TOKEN_RANDOM_CHARS as f64 * 62f64.log2();
        assert!(bits >= 190.0, "{bits} bits");
    }

    #[test]
    fn ten_thousand_tokens_are_distinct() {
        let set: HashSet<String> = (0..10_000)
            .map(|_| ClientToken::generate().expect("rng").expose().to_owned())
            .collect();
        assert_eq!(set.len(), 10_000);
    }

    #[test]
    fn every_character_is_about_equally_likely() {
        // 320,000 characters: each of 62 expected ~5,161 times (σ ≈ 71). ±15% is > 10σ, so this
        // only fails for a real bias such as a modulo without rejection.
        let mut counts = [0u32; 62];
        for _ in 0..10_000 {
            let t = ClientToken::generate().expect("rng");
            for b in t.expose()[3..].bytes() {
                let i = ALPHABET.iter().position(|&a| a == b).expect("alphabet");
                counts[i] += 1;
            }
        }
        let expected = 320_000.0 / 62.0;
        for (i, &c) in counts.iter().enumerate() {
            let dev = (f64::from(c) - expected).abs() / expected;
            assert!(
                dev < 0.15,
                "character {} seen {c} times",
                ALPHABET[i] as char
            );
        }
    }

    #[test]
    fn debug_is_redacted() {
        let t = ClientToken::generate().expect("rng");
        let shown = format!("{t:?} {:?}", Some(t.clone()));
        assert!(
            !shown.contains(&t.expose()[3..]),
            "Debug must not show the token"
        );
    }

    #[test]
    fn hash_is_sha256_of_the_whole_token() {
        let h = hash_token("lk_abc");
        let expected: [u8; 32] = Sha256::digest(b"lk_abc").into();
        assert_eq!(h, expected);
        assert_ne!(hash_token("lk_abc"), hash_token("lk_abd"));
    }
}
