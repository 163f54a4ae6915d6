//! Exit codes, so scripts can tell "log in first" from "Latchkey is not running" from "the login
//! you just tried failed". Each class of error code has one exit code ([`code_for`]).

use latchkey_core::{Class, Code};

/// Anything else.
pub const FAILURE: u8 = 1;
/// Nobody is logged in or the session ended (run `latchkey login`), or a remote MCP server's
/// sign-in ended or needs more access (run `latchkey server login`).
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
    /// What to match on.
    pub code: Code,
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
/// configuration, the instance or what was asked exit with [`LOGIN_FAILED`].
#[derive(Debug)]
pub struct LoginAttempt {
    /// The failure's code, printed with the message so a person can search for it.
    pub code: Code,
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
        .map(|c| c.code)
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
    let login_attempt = e.downcast_ref::<LoginAttempt>().is_some();
    for_class(coded.code.class(), login_attempt)
}

/// The exit code of each class of error code, in a login attempt or not.
fn for_class(class: Class, login_attempt: bool) -> u8 {
    match class {
        // Inside a login, "log in first" is the login itself failing.
        Class::LoginRequired if login_attempt => LOGIN_FAILED,
        Class::LoginRequired => LOGIN_REQUIRED,
        Class::NotRunning => NOT_RUNNING,
        Class::Keychain => KEYCHAIN,
        Class::Config => CONFIG,
        Class::Credentials | Class::GatewayUnavailable => CREDENTIALS,
        Class::Internal => INTERNAL,
        // What was asked is wrong: the login never started.
        Class::NotFound | Class::InvalidInput => FAILURE,
        Class::ProviderRefused
        | Class::Cancelled
        | Class::Expired
        | Class::Unavailable
        | Class::Unauthorized
        | Class::Forbidden
        | Class::Failed => {
            if login_attempt {
                LOGIN_FAILED
            } else {
                FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coded(code: Code) -> anyhow::Error {
        Coded {
            code,
            message: "m".into(),
        }
        .into()
    }

    fn login(code: Code) -> anyhow::Error {
        coded(code).context(LoginAttempt { code })
    }

    /// Every class's exit code, outside a login and in one.
    #[test]
    fn each_class_exits_with_its_own_code() {
        let table = [
            (Class::LoginRequired, LOGIN_REQUIRED, LOGIN_FAILED),
            (Class::NotRunning, NOT_RUNNING, NOT_RUNNING),
            (Class::Keychain, KEYCHAIN, KEYCHAIN),
            (Class::Config, CONFIG, CONFIG),
            (Class::Credentials, CREDENTIALS, CREDENTIALS),
            (Class::GatewayUnavailable, CREDENTIALS, CREDENTIALS),
            (Class::ProviderRefused, FAILURE, LOGIN_FAILED),
            (Class::Cancelled, FAILURE, LOGIN_FAILED),
            (Class::Expired, FAILURE, LOGIN_FAILED),
            (Class::Unavailable, FAILURE, LOGIN_FAILED),
            (Class::NotFound, FAILURE, FAILURE),
            (Class::InvalidInput, FAILURE, FAILURE),
            (Class::Unauthorized, FAILURE, LOGIN_FAILED),
            (Class::Forbidden, FAILURE, LOGIN_FAILED),
            (Class::Failed, FAILURE, LOGIN_FAILED),
            (Class::Internal, INTERNAL, INTERNAL),
        ];
        assert_eq!(
            table.iter().map(|(c, ..)| *c).collect::<Vec<_>>(),
            Class::ALL,
            "every class, once, in declaration order"
        );
        for (class, outside, inside) in table {
            for &code in Code::ALL.iter().filter(|c| c.class() == class) {
                assert_eq!(code_for(&coded(code)), outside, "{code}");
                assert_eq!(code_for(&login(code)), inside, "{code} in a login");
            }
        }
        assert_eq!(
            code_for(&anyhow::anyhow!("no code")),
            FAILURE,
            "an error without a code"
        );
    }

    #[test]
    fn a_failed_login_has_its_own_exit_code_but_keychain_and_config_keep_theirs() {
        for wire in [
            "redirect_uri_not_registered",
            "access_denied",
            "authorization_failed",
            "token_request_failed",
            "jwt_wrong_audience",
            "idp_unreachable",
            "login_failed",
            "login_timeout",
            "mcp_oauth_unreachable",
        ] {
            assert_eq!(code_for(&login(Code::parse(wire))), LOGIN_FAILED, "{wire}");
        }
        assert_eq!(code_for(&login(Code::KeychainLocked)), KEYCHAIN);
        assert_eq!(code_for(&login(Code::ConfigInvalid)), CONFIG);
        assert_eq!(code_for(&login(Code::NotRunning)), NOT_RUNNING);
        assert_eq!(code_for(&login(Code::UnknownAccount)), FAILURE);
        assert_eq!(code_for(&login(Code::InvalidInput)), FAILURE);
        assert_eq!(
            format!("{:#}", login(Code::AccessDenied)),
            "login failed [access_denied]: m"
        );
    }

    #[test]
    fn outside_a_login_nobody_logged_in_is_still_exit_3() {
        assert_eq!(code_for(&coded(Code::LoginRequired)), LOGIN_REQUIRED);
        assert_eq!(code_for(&coded(Code::SessionNotRenewable)), LOGIN_REQUIRED);
        assert_eq!(code_for(&coded(Code::IdpUnreachable)), FAILURE);
    }

    /// A newer instance may answer with a code this build does not know: exit 1, and the
    /// message is printed as it came.
    #[test]
    fn an_unknown_code_from_the_wire_exits_1_with_its_message() {
        let code: Code = serde_json::from_str("\"quota_exceeded\"").expect("any string is a code");
        assert_eq!(code, Code::Unknown);
        let e: anyhow::Error = Coded {
            code,
            message: "you used up this month's requests".into(),
        }
        .into();
        assert_eq!(code_for(&e), FAILURE);
        assert_eq!(format!("{e:#}"), "you used up this month's requests");
    }
}
