//! The one error type of the store. Every variant reads as a sentence a person can act on, and
//! carries a stable [`StoreError::code`] for the UI and the control API to match on.

use std::io;
use std::path::PathBuf;

use crate::clients::ClientName;

use latchkey_core::Code;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory that holds the database could not be created.
    #[error("cannot create the directory {}: {source}; check the permissions of its parent", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },

    /// The database file could not be created or made private.
    #[error("cannot prepare the database file {}: {source}; check that it belongs to you and is writable", path.display())]
    PrepareFile {
        /// The database file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },

    /// SQLite refused to open the file (not a database, locked, unreadable).
    #[error("cannot open the database {}: {source}; if it is damaged, move it aside and restart Latchkey", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },

    /// The file was written by a newer Latchkey whose schema this build does not know.
    #[error(
        "the database uses schema version {found} but this Latchkey only knows up to {supported}; update Latchkey"
    )]
    NewerSchema {
        /// `user_version` found in the file.
        found: i64,
        /// Highest version this build can migrate to.
        supported: i64,
    },

    /// A statement failed.
    #[error(
        "the local database failed to {action}: {source}; if this keeps happening, restart Latchkey"
    )]
    Database {
        /// What was being done, as a verb phrase ("add the client").
        action: &'static str,
        /// What SQLite said.
        source: rusqlite::Error,
    },

    /// A client name broke the naming rule.
    #[error("`{name}` is not a valid client name: use 1 to 64 letters, digits, `.`, `_` or `-`")]
    InvalidClientName {
        /// The rejected name, escaped and shortened for display.
        name: String,
    },

    /// A service name broke the naming rule.
    #[error("`{name}` is not a valid service name: use 1 to 64 letters, digits, `.`, `_` or `-`")]
    InvalidService {
        /// The rejected name, escaped and shortened for display.
        name: String,
    },

    /// A token label was too long or contained control characters.
    #[error(
        "a token label must be at most 64 characters with no control characters; choose a shorter label"
    )]
    InvalidLabel,

    /// `add` was called with a name that is taken.
    #[error(
        "a client named `{0}` already exists; pick another name or revoke the existing client first"
    )]
    AlreadyExists(ClientName),

    /// The named client does not exist.
    #[error("there is no client named `{0}`; list clients with `latchkey client list`")]
    UnknownClient(ClientName),

    /// An ephemeral token lifetime outside the allowed range.
    #[error(
        "an ephemeral token must live between 1 second and 24 hours; pick a lifetime in that range"
    )]
    InvalidTtl,

    /// A stored token's expiry outside the allowed range.
    #[error(
        "a token's expiry must be between 1 second and 10 years from now; pick a lifetime in that range"
    )]
    InvalidExpiry,

    /// Too many ephemeral tokens are alive at once.
    #[error(
        "too many short-lived client tokens are active ({limit}); wait a few minutes for them to expire"
    )]
    TooManyEphemeral {
        /// The limit.
        limit: usize,
    },

    /// The operating system's random number generator failed.
    #[error("the operating system could not supply random bytes for a token ({0}); try again")]
    Randomness(rand::rand_core::OsError),

    /// The audit writer thread could not be started.
    #[error("cannot start the audit log writer: {0}; the system may be out of threads or memory")]
    SpawnWriter(io::Error),

    /// A background database task panicked or was cancelled.
    #[error("a background database task stopped unexpectedly; restart Latchkey")]
    TaskFailed(#[source] tokio::task::JoinError),
}

impl StoreError {
    /// A stable machine-readable code for the UI and the control API.
    pub fn code(&self) -> Code {
        match self {
            Self::CreateDir { .. } | Self::PrepareFile { .. } => Code::StoreIo,
            Self::Open { .. } => Code::StoreOpen,
            Self::NewerSchema { .. } => Code::StoreNewerSchema,
            Self::Database { .. } => Code::StoreDatabase,
            Self::InvalidClientName { .. } => Code::InvalidClientName,
            Self::InvalidService { .. } => Code::InvalidServiceName,
            Self::InvalidLabel => Code::InvalidTokenLabel,
            Self::AlreadyExists(_) => Code::ClientExists,
            Self::UnknownClient(_) => Code::UnknownClient,
            Self::InvalidTtl => Code::InvalidTtl,
            Self::InvalidExpiry => Code::InvalidExpiry,
            Self::TooManyEphemeral { .. } => Code::TooManyEphemeralTokens,
            Self::Randomness(_) => Code::RandomnessUnavailable,
            Self::SpawnWriter(_) | Self::TaskFailed(_) => Code::StoreInternal,
        }
    }

    /// Wraps a SQLite error with the action that failed.
    pub(crate) fn db(action: &'static str) -> impl Fn(rusqlite::Error) -> Self + Copy {
        move |source| Self::Database { action, source }
    }
}

/// Escapes and shortens user input for an error message, so a rejected value cannot inject
/// terminal control sequences or flood the output.
pub(crate) fn for_display(raw: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = raw.chars().take(MAX).flat_map(char::escape_debug).collect();
    if raw.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_of_user_input_is_escaped_and_bounded() {
        assert_eq!(for_display("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        let long = "x".repeat(500);
        let shown = for_display(&long);
        assert!(
            shown.chars().count() <= 81,
            "an error message must not echo unbounded input"
        );
    }

    #[test]
    fn codes_are_stable_snake_case() {
        let e = StoreError::InvalidTtl;
        assert_eq!(e.code(), latchkey_core::Code::InvalidTtl);
        assert!(e.to_string().ends_with("in that range"));
    }
}
