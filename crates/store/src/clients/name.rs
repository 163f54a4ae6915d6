//! Client and service names: short, printable, safe in a URL, a file name and a log line.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::error::{StoreError, for_display};

/// The configuration's name rule ([`latchkey_core::config::rules::is_valid_name`]), shared by
/// client and service names so that every configured service can be granted.
fn is_valid_name(raw: &str) -> bool {
    latchkey_core::config::rules::is_valid_name(raw)
}

/// The name of a local client (an MCP host or tool holding a Latchkey token): 1-64 characters of
/// `[A-Za-z0-9._-]`, not starting with `.`. Cloning is a reference-count increment, so a grant can carry it without
/// allocating on the request path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientName(Arc<str>);

impl ClientName {
    /// Validates a name.
    pub fn parse(raw: &str) -> Result<Self, StoreError> {
        if is_valid_name(raw) {
            Ok(Self(Arc::from(raw)))
        } else {
            Err(StoreError::InvalidClientName {
                name: for_display(raw),
            })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as shared text (a reference count, no copy): what an audit record carries.
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

impl fmt::Display for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientName({:?})", &*self.0)
    }
}

impl AsRef<str> for ClientName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets a `HashMap<ClientName, _>` be searched with a `&str`. Sound because `Hash` and `Eq` of
/// `Arc<str>` are those of `str`.
impl Borrow<str> for ClientName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ClientName {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ClientName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Validates, de-duplicates and sorts a list of service names.
pub(crate) fn normalise_services(services: &[String]) -> Result<Vec<String>, StoreError> {
    if let Some(bad) = services.iter().find(|s| !is_valid_name(s)) {
        return Err(StoreError::InvalidService {
            name: for_display(bad),
        });
    }
    let mut out = services.to_vec();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet_up_to_64_characters() {
        for ok in [
            "a",
            "claude-desktop",
            "Cursor_2.1",
            "x".repeat(64).as_str(),
            "0.-_",
        ] {
            assert!(ClientName::parse(ok).is_ok(), "{ok:?} follows the rule");
        }
    }

    #[test]
    fn rejects_empty_long_spaces_slashes_and_non_ascii() {
        let long = "x".repeat(65);
        for bad in [
            "",
            long.as_str(),
            "a b",
            "a/b",
            "é",
            "a\nb",
            "a:b",
            "../x",
            ".hidden",
        ] {
            let err = ClientName::parse(bad).expect_err("must be rejected");
            assert_eq!(
                err.code(),
                latchkey_core::Code::InvalidClientName,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejected_names_are_escaped_in_the_message() {
        let err = ClientName::parse("evil\u{1b}]0;pwned\u{7}").expect_err("rejected");
        assert!(
            !err.to_string().contains('\u{1b}'),
            "no raw escape sequences in messages"
        );
    }

    #[test]
    fn serialises_as_a_plain_string_and_displays_itself() {
        let name = ClientName::parse("cursor").expect("valid");
        assert_eq!(serde_json::to_string(&name).expect("json"), "\"cursor\"");
        assert_eq!(name.to_string(), "cursor");
        assert_eq!(name.as_str(), "cursor");
    }

    #[test]
    fn services_are_validated_sorted_and_deduplicated() {
        let list = vec!["b".to_owned(), "a".to_owned(), "b".to_owned()];
        assert_eq!(normalise_services(&list).expect("valid"), vec!["a", "b"]);
        let err = normalise_services(&["ok".to_owned(), "no way".to_owned()]).expect_err("invalid");
        assert_eq!(err.code(), latchkey_core::Code::InvalidServiceName);
    }
}
