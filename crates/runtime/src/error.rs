//! The one error type the tray app and the CLI see: a stable `code` to match on and a sentence
//! for a person. Built from each module's typed error; never carries a secret.

use serde::Serialize;

use latchkey_core::Code;
use latchkey_core::config::Account;
use latchkey_core::login::JwtError;
use latchkey_core::login::LoginError;
use latchkey_core::login::preflight::PreflightError;
use latchkey_core::session::SessionError;

/// An error for the UI (serialised as `{ code, message }`) and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[error("{message}")]
pub struct RuntimeError {
    /// What to match on (its snake_case wire string over IPC and HTTP).
    pub code: Code,
    /// One actionable sentence.
    pub message: String,
}

impl RuntimeError {
    /// An error with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn io(e: std::io::Error) -> Self {
        Self::new(
            Code::Io,
            format!("cannot write Latchkey's data directory: {e}"),
        )
    }

    pub(crate) fn port_taken(port: u16, e: &std::io::Error) -> Self {
        Self::new(
            Code::ProxyPortUnavailable,
            format!(
                "cannot listen on loopback port {port} ({e}): another program uses it; choose another port in Settings or the config file (or set `ipv6 = false` under [proxy] if only [::1] is taken and must stay so)"
            ),
        )
    }

    pub(crate) fn unknown_account(account: &str) -> Self {
        Self::new(
            Code::UnknownAccount,
            format!("no account `{account}` in the configuration"),
        )
    }

    pub(crate) fn unknown_service(service: &str) -> Self {
        Self::new(
            Code::UnknownService,
            format!("no service `{service}` in the configuration"),
        )
    }

    pub(crate) fn unknown_client(client: &str) -> Self {
        Self::new(
            Code::UnknownClient,
            format!("no local client named `{client}`"),
        )
    }

    pub(crate) fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            Code::NotFound,
            format!("no {what} `{id}` (it may have ended already)"),
        )
    }

    pub(crate) fn login_failed(account: &str) -> Self {
        Self::new(
            Code::LoginFailed,
            format!("the login for `{account}` did not complete; try again"),
        )
    }

    pub(crate) fn login_cancelled(account: &str) -> Self {
        Self::new(
            Code::LoginCancelled,
            format!("the login for `{account}` was cancelled"),
        )
    }

    pub(crate) fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidInput, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
}

macro_rules! from_coded {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for RuntimeError {
            fn from(e: $t) -> Self {
                Self::new(e.code(), e.to_string())
            }
        })*
    };
}

from_coded!(
    latchkey_core::config::ConfigError,
    latchkey_core::vault::VaultError,
    latchkey_core::session::SessionError,
    latchkey_core::credentials::CredentialsError,
    latchkey_store::StoreError,
    latchkey_proxy::ConfigError,
    latchkey_hosts::HostError,
    crate::instance::InstanceError,
);

/// Why a login failed, as the person reads it: the core's code, the core's text, and what to do
/// about it for this account's configuration. Never carries a secret (the core's errors do not).
pub(crate) fn login_failure(account: &Account, e: &SessionError) -> RuntimeError {
    match e {
        SessionError::Login(e) => from_login_error(account, e),
        other => RuntimeError::new(other.code(), other.to_string()),
    }
}

/// [`login_failure`] for a refused pre-flight: its messages already name the fix.
pub(crate) fn preflight_failure(account: &Account, e: &PreflightError) -> RuntimeError {
    match e {
        PreflightError::Login(e) => from_login_error(account, e),
        other => RuntimeError::new(other.code(), other.to_string()),
    }
}

fn from_login_error(account: &Account, e: &LoginError) -> RuntimeError {
    let client = account.client_id.as_str();
    let name = account.name.as_str();
    let (code, fix) = match e {
        LoginError::Authorization { error, .. } => (e.code(), authorization_fix(account, error)),
        // At the end of a login, `invalid_grant` is the provider refusing the authorization code,
        // not a session that ended: it is a refused token request, not "log in first".
        LoginError::InvalidGrant => {
            return RuntimeError::new(
                Code::TokenRequestFailed,
                "the identity provider refused the request (invalid_grant): it did not accept the authorization code; log in again, and if it keeps failing check this computer's clock and that the redirect URI registered for the client is exactly the one Latchkey sends",
            );
        }
        LoginError::TokenEndpoint { error, .. } => (e.code(), token_fix(client, error)),
        LoginError::Token(jwt) => (e.code(), jwt_fix(account, jwt)),
        LoginError::Unreachable { .. } | LoginError::Timeout(_) => (
            e.code(),
            format!(
                "the provider is `{}` (`issuer` of account `{name}`); if your browser reaches it, check the proxy settings of this computer",
                account.issuer
            ),
        ),
        LoginError::Discovery { .. } => (
            e.code(),
            format!("check `issuer` of account `{name}` in the configuration"),
        ),
        LoginError::Unsupported(_) => (
            e.code(),
            "ask the identity provider's administrator to enable it for this client".to_owned(),
        ),
        // The rest already say what to do.
        _ => return RuntimeError::new(e.code(), e.to_string()),
    };
    RuntimeError::new(code, format!("{e}; {fix}"))
}

fn authorization_fix(account: &Account, error: &str) -> String {
    let client = account.client_id.as_str();
    let name = account.name.as_str();
    match error {
        "access_denied" => format!(
            "log in again when you are ready (if the provider refused you, ask its administrator to give you access to client `{client}`)"
        ),
        "invalid_scope" => format!(
            "the provider does not allow the scopes `{}` for client `{client}`: check `scopes` of account `{name}`, or ask its administrator to allow them",
            account.scopes.join(" ")
        ),
        "unauthorized_client" => format!(
            "the provider does not let client `{client}` use the authorization-code flow: ask its administrator to allow it for a native app, or check `client_id` of account `{name}`"
        ),
        "invalid_client" => format!("check `client_id` of account `{name}` (`{client}`)"),
        "invalid_target" => format!(
            "the provider does not know the audience `{}`: check `audience` of account `{name}`",
            account.audience.as_deref().unwrap_or("")
        ),
        "invalid_request" | "unsupported_response_type" => format!(
            "check `client_id`, `scopes` and `audience` of account `{name}`, and that the provider supports the authorization-code flow with PKCE"
        ),
        "server_error" | "temporarily_unavailable" => {
            "the provider has a problem of its own; try again in a few minutes".to_owned()
        }
        _ => format!(
            "ask the identity provider's administrator what `{error}` means for client `{client}`"
        ),
    }
}

fn token_fix(client: &str, error: &str) -> String {
    match error {
        "invalid_client" => format!(
            "the provider does not accept client `{client}` at its token endpoint: check `client_id`, and how the provider expects the client to authenticate (Latchkey logs in as a public client, PKCE without a secret, unless a client secret is configured)"
        ),
        "unauthorized_client" => format!(
            "the provider does not let client `{client}` use the authorization_code and refresh_token grants: ask its administrator to allow them"
        ),
        "invalid_scope" => "check `scopes` in the configuration".to_owned(),
        "invalid_target" => "check `audience` in the configuration".to_owned(),
        "invalid_response" => {
            "the provider's answer is not a valid token response; ask its administrator".to_owned()
        }
        _ => "try again; if it keeps failing, ask the identity provider's administrator".to_owned(),
    }
}

fn jwt_fix(account: &Account, e: &JwtError) -> String {
    let client = account.client_id.as_str();
    match e {
        JwtError::WrongAudience => match account.audience.as_deref() {
            Some(aud) if account.validate_access_token && aud != client => format!(
                "the ID token's `aud` must be this client id (`{client}`): check `client_id`; a JWT access token's `aud` must be `{aud}`: check `audience`"
            ),
            _ => format!(
                "the ID token's `aud` is not this client id (`{client}`): check `client_id`"
            ),
        },
        JwtError::WrongIssuer => format!(
            "the token's `iss` is not `{}`: set `issuer` to exactly the issuer the provider names",
            account.issuer
        ),
        JwtError::Expired | JwtError::NotYetValid => {
            "the token's `exp`/`nbf` is more than 60 s off: check this computer's clock".to_owned()
        }
        JwtError::NonceMismatch => {
            "the ID token's `nonce` belongs to another login: start the login again".to_owned()
        }
        JwtError::MissingClaim(claim) | JwtError::BadClaim(claim) => format!(
            "the provider must put a valid `{claim}` claim in its tokens: request the `openid` scope, or ask its administrator"
        ),
        JwtError::KeysUnavailable(_) => {
            "check your network and try again; the keys come from the provider's `jwks_uri`"
                .to_owned()
        }
        _ => format!(
            "the token is not signed by a key the provider publishes: check that `issuer` (`{}`) is the provider that issues tokens for `{client}`",
            account.issuer
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(extra: &str) -> Account {
        let text = format!(
            "version = 1\n[[accounts]]\nname = \"work\"\nissuer = \"https://idp.example.com\"\nclient_id = \"latchkey\"\n{extra}"
        );
        let config = latchkey_core::config::Config::parse(&text, std::path::Path::new("t.toml"))
            .expect("config");
        config.accounts[0].clone()
    }

    fn failure(e: LoginError) -> RuntimeError {
        login_failure(&account(""), &SessionError::Login(e))
    }

    #[test]
    fn a_rejected_id_token_claim_is_named_with_its_fix() {
        let e = failure(LoginError::Token(JwtError::WrongAudience));
        assert_eq!(e.code, Code::JwtWrongAudience);
        assert!(
            e.message.contains(
                "the ID token's `aud` is not this client id (`latchkey`): check `client_id`"
            ),
            "{}",
            e.message
        );
        assert!(
            e.message
                .starts_with("a token from the identity provider was rejected: "),
            "keeps the core's text: {}",
            e.message
        );
        let e = failure(LoginError::Token(JwtError::WrongIssuer));
        assert_eq!(e.code, Code::JwtWrongIssuer);
        assert!(
            e.message
                .contains("`iss` is not `https://idp.example.com/`: set `issuer`"),
            "{}",
            e.message
        );
        let e = failure(LoginError::Token(JwtError::Expired));
        assert!(
            e.message.contains("check this computer's clock"),
            "{}",
            e.message
        );
        let e = failure(LoginError::Token(JwtError::MissingClaim("sub".into())));
        assert_eq!(e.code, Code::JwtMissingClaim);
        assert!(e.message.contains("a valid `sub` claim"), "{}", e.message);
        let e = failure(LoginError::Token(JwtError::NonceMismatch));
        assert!(e.message.contains("start the login again"), "{}", e.message);
    }

    #[test]
    fn a_checked_access_token_audience_names_both_settings() {
        let a = account("audience = \"https://api.example.com\"\nvalidate_access_token = true\n");
        let e = login_failure(
            &a,
            &SessionError::Login(LoginError::Token(JwtError::WrongAudience)),
        );
        assert!(e.message.contains("check `client_id`"), "{}", e.message);
        assert!(
            e.message
                .contains("`aud` must be `https://api.example.com`: check `audience`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn provider_errors_keep_their_code_and_text_and_gain_a_fix() {
        let e = failure(LoginError::Authorization {
            error: "invalid_scope".into(),
            description: Some("requested scope is not allowed".into()),
        });
        assert_eq!(e.code, Code::AuthorizationFailed);
        assert!(e.message.starts_with(
            "the identity provider refused the sign-in (invalid_scope: requested scope is not allowed); "
        ), "{}", e.message);
        assert!(
            e.message.contains("check `scopes` of account `work`"),
            "{}",
            e.message
        );
        let e = failure(LoginError::Authorization {
            error: "access_denied".into(),
            description: None,
        });
        assert_eq!(e.code, Code::AccessDenied);
        assert!(e.code.is_cancel());
        let e = failure(LoginError::TokenEndpoint {
            error: "unauthorized_client".into(),
            description: None,
        });
        assert_eq!(e.code, Code::TokenRequestFailed);
        assert!(
            e.message
                .contains("authorization_code and refresh_token grants"),
            "{}",
            e.message
        );
    }

    #[test]
    fn invalid_grant_at_the_end_of_a_login_is_not_log_in_first() {
        let e = failure(LoginError::InvalidGrant);
        assert_eq!(
            e.code,
            Code::TokenRequestFailed,
            "exit 3 (`login_required`) stays for nobody logged in"
        );
        assert!(e.message.contains("(invalid_grant)"), "{}", e.message);
    }

    #[test]
    fn an_unreachable_provider_names_the_issuer() {
        let e = failure(LoginError::Unreachable {
            reason: "cannot connect".into(),
        });
        assert_eq!(e.code, Code::IdpUnreachable);
        assert!(
            e.message.contains("`https://idp.example.com/`"),
            "{}",
            e.message
        );
        assert!(!e.code.is_cancel());
    }
}
