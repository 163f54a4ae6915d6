//! Exit codes, so scripts can tell "log in first" from "Latchkey is not running" from "the login
//! you just tried failed".

/// Anything else.
pub const FAILURE: u8 = 1;
/// Nobody is logged in or the session ended: run `latchkey login`.
pub const LOGIN_REQUIRED: u8 = 3;
/// Latchkey is not running (for commands that need it).
pub const NOT_RUNNING: u8 = 4;
/// The keychain is missing or locked.
pub const KEYCHAIN: u8 = 5;
/// The configuration is invalid.
pub const CONFIG: u8 = 6;
/// A credential is missing or the gateway is unavailable.
pub const CREDENTIALS: u8 = 7;
/// `latchkey login` did not end in a session: the identity provider refused (redirect URI,
/// client id, scopes, a token claim), could not be reached, or the person cancelled. The message
/// says why and what to fix.
pub const LOGIN_FAILED: u8 = 8;
/// Latchkey itself failed.
pub const INTERNAL: u8 = 70;

/// A coded error from the runtime or the control API.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    /// Stable code.
    pub code: String,
    /// For a person.
    pub message: String,
}

impl From<latchkey_runtime::RuntimeError> for Coded {
    fn from(e: latchkey_runtime::RuntimeError) -> Self {
        Self {
            code: e.code,
            message: e.message,
        }
    }
}

/// Context of an error from `latchkey login`: its failures that are not about the keychain, the
/// configuration or the instance exit with [`LOGIN_FAILED`].
#[derive(Debug)]
pub struct LoginAttempt {
    /// The failure's code, printed with the message so a person can search for it.
    pub code: String,
}

impl std::fmt::Display for LoginAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "login failed [{}]", self.code)
    }
}

/// Marks an error of a login (`latchkey login`, `server add`, `server login`) as a failed login:
/// its own exit code, and the code printed next to the message, which says what to fix.
pub fn failed_login(e: anyhow::Error) -> anyhow::Error {
    match e
        .chain()
        .find_map(|c| c.downcast_ref::<Coded>())
        .map(|c| c.code.clone())
    {
        Some(code) => e.context(LoginAttempt { code }),
        None => e,
    }
}

/// The exit code for an error chain.
pub fn code_for(e: &anyhow::Error) -> u8 {
    let Some(coded) = e.chain().find_map(|c| c.downcast_ref::<Coded>()) else {
        return FAILURE;
    };
    let by_code = for_code(&coded.code);
    let login_attempt = e.downcast_ref::<LoginAttempt>().is_some();
    match by_code {
        FAILURE | LOGIN_REQUIRED
            if login_attempt
                && !matches!(coded.code.as_str(), "unknown_account" | "invalid_input") =>
        {
            LOGIN_FAILED
        }
        other => other,
    }
}

fn for_code(code: &str) -> u8 {
    match code {
        // The session ended or cannot be renewed: only a new login helps.
        "login_required"
        | "invalid_grant"
        | "session_not_renewable"
        | "id_token_subject_changed"
        | "id_token_issuer_changed" => LOGIN_REQUIRED,
        "not_running" => NOT_RUNNING,
        "keychain_unavailable" | "keychain_locked" | "keychain_timeout" => KEYCHAIN,
        "config_invalid" | "config_not_found" | "config_unreadable" => CONFIG,
        c if c.starts_with("credentials_") || c.starts_with("gateway_") => CREDENTIALS,
        "internal" => INTERNAL,
        _ => FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coded(code: &str) -> anyhow::Error {
        Coded {
            code: code.into(),
            message: "m".into(),
        }
        .into()
    }

    #[test]
    fn a_failed_login_has_its_own_exit_code_but_keychain_and_config_keep_theirs() {
        let login = |code: &str| {
            coded(code).context(LoginAttempt {
                code: code.to_owned(),
            })
        };
        for code in [
            "redirect_uri_not_registered",
            "access_denied",
            "authorization_failed",
            "token_request_failed",
            "jwt_wrong_audience",
            "idp_unreachable",
            "login_failed",
            "login_timeout",
        ] {
            assert_eq!(code_for(&login(code)), LOGIN_FAILED, "{code}");
        }
        assert_eq!(code_for(&login("keychain_locked")), KEYCHAIN);
        assert_eq!(code_for(&login("config_invalid")), CONFIG);
        assert_eq!(code_for(&login("not_running")), NOT_RUNNING);
        assert_eq!(code_for(&login("unknown_account")), FAILURE);
        assert_eq!(
            format!("{:#}", login("access_denied")),
            "login failed [access_denied]: m"
        );
    }

    #[test]
    fn outside_a_login_nobody_logged_in_is_still_exit_3() {
        assert_eq!(code_for(&coded("login_required")), LOGIN_REQUIRED);
        assert_eq!(code_for(&coded("idp_unreachable")), FAILURE);
    }
}
