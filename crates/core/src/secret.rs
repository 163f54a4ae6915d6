//! Secret values: wrapped so they cannot be logged, printed, serialised or compared in variable
//! time by accident. Everything that holds a token or credential goes through these types.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret string (token, credential, API key). `Debug` and `Display` print `[redacted]`; there is
/// no `Serialize`. Read the value with [`Secret::expose`] only where it leaves the process
/// (an HTTP header, the keychain, an environment variable).
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The value itself. Callers must not log or format it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Length in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// A short, non-reversible fingerprint for logs: the first 8 hex digits of SHA-256.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.expose().as_bytes())
    }

    /// Constant-time comparison with another secret.
    pub fn ct_eq(&self, other: &Secret) -> bool {
        ct_eq_str(self.expose(), other.expose())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

/// A secret arriving in a request (the window's *Add MCP server*, say) is wrapped as it is read,
/// so the type holding it keeps a derived `Debug` that cannot print it. There is still no
/// `Serialize`.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for Secret {}

/// Compares two strings in time that depends only on their lengths.
pub fn ct_eq_str(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A short hash of a secret, safe to put in logs and status output to tell two values apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 4]);

impl Fingerprint {
    /// Fingerprint of raw bytes.
    pub fn of(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        Self([digest[0], digest[1], digest[2], digest[3]])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deserialised_secret_keeps_its_value_and_never_prints_it() {
        let s: Secret = serde_json::from_str("\"canary-d3e5a\"").expect("a JSON string");
        assert_eq!(s.expose(), "canary-d3e5a");
        assert!(!format!("{s:?}").contains("canary"));
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("canary-5f2b9");
        assert_eq!(
            format!("{s:?}"),
            "Secret([redacted])",
            "Debug says a secret was there, and nothing of it"
        );
        assert!(!format!("{:?}", Some(s)).contains("canary"));
    }

    #[test]
    fn fingerprint_is_stable_and_short() {
        let a = Secret::new("value").fingerprint().to_string();
        assert_eq!(a.len(), 8);
        assert_eq!(a, Secret::new("value").fingerprint().to_string());
        assert_ne!(a, Secret::new("value2").fingerprint().to_string());
        assert_eq!(
            format!("{:?}", Secret::new("value").fingerprint()),
            format!("Fingerprint({a})")
        );
    }

    #[test]
    fn emptiness_and_length_are_of_the_value() {
        assert!(Secret::new("").is_empty());
        assert!(!Secret::new("x").is_empty());
        assert_eq!(Secret::new("abc").len(), 3);
    }

    #[test]
    fn constant_time_equality_matches_plain_equality() {
        assert!(ct_eq_str("abc", "abc"));
        assert!(!ct_eq_str("abc", "abd"));
        assert!(!ct_eq_str("abc", "abcd"));
        assert_eq!(Secret::new("x"), Secret::new("x"));
        assert_ne!(
            Secret::new("x"),
            Secret::new("y"),
            "`==` compares the values"
        );
        assert_ne!(Secret::new("x"), Secret::new("xy"));
    }
}
