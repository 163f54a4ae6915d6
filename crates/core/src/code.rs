//! Every error code Latchkey emits, declared once. A [`Code`] is what the window, the CLI and the
//! control API match on (never the message), and what crosses every wire as a snake_case string;
//! its [`Class`] is what each surface maps: the control API's HTTP status, the CLI's exit code,
//! the window's tone. Adding a code is one line of the table below.

use std::fmt;

/// Declares [`Code`] from `Variant = "wire_string", Class;` rows, with its wire spelling, its
/// class and the parser, so that the three cannot disagree.
macro_rules! codes {
    ($($variant:ident = $wire:literal, $class:ident;)*) => {
        /// A stable error code: `{ code, message }` over IPC, `{ error, message }` over HTTP.
        /// Serialised as its snake_case wire string; a string this build does not know (sent by a
        /// newer Latchkey) reads as [`Code::Unknown`] rather than failing, so its message is still
        /// shown.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "ts", derive(ts_rs::TS))]
        #[non_exhaustive]
        pub enum Code {
            $(
                #[doc = concat!("`", $wire, "` (", stringify!($class), ")")]
                #[cfg_attr(feature = "ts", ts(rename = $wire))]
                $variant,
            )*
            /// `unknown`: a code this build does not know, read from a newer Latchkey.
            #[cfg_attr(feature = "ts", ts(rename = "unknown"))]
            Unknown,
        }

        impl Code {
            /// Every code, [`Code::Unknown`] last.
            pub const ALL: &[Code] = &[$(Code::$variant,)* Code::Unknown];

            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire,)*
                    Self::Unknown => "unknown",
                }
            }

            /// What kind of failure it is, for the surfaces that map kinds rather than codes.
            pub const fn class(self) -> Class {
                match self {
                    $(Self::$variant => Class::$class,)*
                    Self::Unknown => Class::Failed,
                }
            }

            /// The code spelled `wire`, or [`Code::Unknown`].
            pub fn parse(wire: &str) -> Self {
                match wire {
                    $($wire => Self::$variant,)*
                    _ => Self::Unknown,
                }
            }
        }
    };
}

codes! {
    // Sessions of the accounts Latchkey logs in to.
    LoginRequired = "login_required", LoginRequired;
    SessionNotRenewable = "session_not_renewable", LoginRequired;
    IdTokenIssuerChanged = "id_token_issuer_changed", LoginRequired;
    IdTokenSubjectChanged = "id_token_subject_changed", LoginRequired;
    LoginInProgress = "login_in_progress", InvalidInput;
    ClientSecretMissing = "client_secret_missing", Credentials;
    // A login's end: the person, the clock, or the identity provider.
    AccessDenied = "access_denied", Cancelled;
    LoginCancelled = "login_cancelled", Cancelled;
    LoginExpired = "login_expired", Expired;
    LoginTimeout = "login_timeout", Expired;
    LoginFailed = "login_failed", ProviderRefused;
    AuthorizationFailed = "authorization_failed", ProviderRefused;
    TokenRequestFailed = "token_request_failed", ProviderRefused;
    RedirectUriNotRegistered = "redirect_uri_not_registered", ProviderRefused;
    ClientNotRegistered = "client_not_registered", ProviderRefused;
    ClientAuthFailed = "client_auth_failed", ProviderRefused;
    CallbackMalformed = "callback_malformed", ProviderRefused;
    CallbackIssMismatch = "callback_iss_mismatch", ProviderRefused;
    CallbackIssMissing = "callback_iss_missing", ProviderRefused;
    CallbackListenerFailed = "callback_listener_failed", Failed;
    IdpDiscoveryFailed = "idp_discovery_failed", ProviderRefused;
    IdpUnsupported = "idp_unsupported", ProviderRefused;
    IdpUnreachable = "idp_unreachable", Unavailable;
    IdpTimeout = "idp_timeout", Unavailable;
    IdpUnavailable = "idp_unavailable", Unavailable;
    IssuerMismatch = "issuer_mismatch", ProviderRefused;
    AccessTokenNotJwt = "access_token_not_jwt", ProviderRefused;
    JwksUnavailable = "jwks_unavailable", ProviderRefused;
    JwtMalformed = "jwt_malformed", ProviderRefused;
    JwtUnsigned = "jwt_unsigned", ProviderRefused;
    JwtAlgorithmMismatch = "jwt_algorithm_mismatch", ProviderRefused;
    JwtUnsupportedKey = "jwt_unsupported_key", ProviderRefused;
    JwtUnknownKey = "jwt_unknown_key", ProviderRefused;
    JwtBadSignature = "jwt_bad_signature", ProviderRefused;
    JwtWrongIssuer = "jwt_wrong_issuer", ProviderRefused;
    JwtWrongAudience = "jwt_wrong_audience", ProviderRefused;
    JwtExpired = "jwt_expired", ProviderRefused;
    JwtNotYetValid = "jwt_not_yet_valid", ProviderRefused;
    JwtMissingClaim = "jwt_missing_claim", ProviderRefused;
    JwtBadClaim = "jwt_bad_claim", ProviderRefused;
    JwtWrongAzp = "jwt_wrong_azp", ProviderRefused;
    JwtNonceMismatch = "jwt_nonce_mismatch", ProviderRefused;
    // The keychain.
    KeychainUnavailable = "keychain_unavailable", Keychain;
    KeychainLocked = "keychain_locked", Keychain;
    KeychainTimeout = "keychain_timeout", Keychain;
    KeychainCorrupt = "keychain_corrupt", Keychain;
    KeychainError = "keychain_error", Keychain;
    // The configuration file and first-run setup.
    ConfigInvalid = "config_invalid", Config;
    ConfigNotFound = "config_not_found", Config;
    ConfigUnreadable = "config_unreadable", Config;
    ConfigExists = "config_exists", InvalidInput;
    ConfigUnwritable = "config_unwritable", Failed;
    InvalidField = "invalid_field", InvalidInput;
    ImportUnreachable = "import_unreachable", Unavailable;
    // Per-service credentials and the Auth Gateway.
    CredentialsMissing = "credentials_missing", Credentials;
    CredentialsNotConfigured = "credentials_not_configured", Credentials;
    CredentialsForbidden = "credentials_forbidden", Credentials;
    CredentialsInvalid = "credentials_invalid", Credentials;
    ForbiddenService = "forbidden_service", Credentials;
    GatewayApiKeyMissing = "gateway_api_key_missing", Credentials;
    GatewayApiKeyInvalid = "gateway_api_key_invalid", Credentials;
    GatewayInvalidAnswer = "gateway_invalid_answer", Credentials;
    GatewayError = "gateway_error", Credentials;
    GatewayUnavailable = "gateway_unavailable", GatewayUnavailable;
    GatewayTimeout = "gateway_timeout", GatewayUnavailable;
    // Remote MCP servers Latchkey is the OAuth client of.
    ServerLoginRequired = "server_login_required", LoginRequired;
    ServerStepUpRequired = "server_step_up_required", LoginRequired;
    StepUpRequired = "step_up_required", LoginRequired;
    RetryRequest = "retry_request", Unavailable;
    UnknownServer = "unknown_server", NotFound;
    ServerExists = "server_exists", InvalidInput;
    McpOauthInvalidServerUrl = "mcp_oauth_invalid_server_url", InvalidInput;
    McpOauthInsecureUrl = "mcp_oauth_insecure_url", ProviderRefused;
    McpOauthRedirectRefused = "mcp_oauth_redirect_refused", ProviderRefused;
    McpOauthDocumentTooLarge = "mcp_oauth_document_too_large", ProviderRefused;
    McpOauthDocumentMalformed = "mcp_oauth_document_malformed", ProviderRefused;
    McpOauthResourceMismatch = "mcp_oauth_resource_mismatch", ProviderRefused;
    McpOauthIssuerMismatch = "mcp_oauth_issuer_mismatch", ProviderRefused;
    McpOauthBadAuthorizationEndpoint = "mcp_oauth_bad_authorization_endpoint", ProviderRefused;
    McpOauthPkceUnsupported = "mcp_oauth_pkce_unsupported", ProviderRefused;
    McpOauthResourceMetadataNotFound = "mcp_oauth_resource_metadata_not_found", ProviderRefused;
    McpOauthNoAuthorizationServer = "mcp_oauth_no_authorization_server", ProviderRefused;
    McpOauthAuthorizationServerMetadataNotFound = "mcp_oauth_authorization_server_metadata_not_found", ProviderRefused;
    McpOauthNotRequired = "mcp_oauth_not_required", ProviderRefused;
    McpOauthUnexpectedStatus = "mcp_oauth_unexpected_status", ProviderRefused;
    McpOauthUnreachable = "mcp_oauth_unreachable", Unavailable;
    McpOauthTimeout = "mcp_oauth_timeout", Unavailable;
    McpOauthClientIdRequired = "mcp_oauth_client_id_required", ProviderRefused;
    McpOauthClientAuthUnsupported = "mcp_oauth_client_auth_unsupported", ProviderRefused;
    McpOauthRegistrationRefused = "mcp_oauth_registration_refused", ProviderRefused;
    McpOauthRegistrationWithoutClientId = "mcp_oauth_registration_without_client_id", ProviderRefused;
    McpOauthCallbackListenerFailed = "mcp_oauth_callback_listener_failed", Failed;
    McpOauthAccessDenied = "mcp_oauth_access_denied", Cancelled;
    McpOauthAuthorizationFailed = "mcp_oauth_authorization_failed", ProviderRefused;
    McpOauthCallbackMalformed = "mcp_oauth_callback_malformed", ProviderRefused;
    McpOauthIssMismatch = "mcp_oauth_iss_mismatch", ProviderRefused;
    McpOauthIssMissing = "mcp_oauth_iss_missing", ProviderRefused;
    McpOauthLoginExpired = "mcp_oauth_login_expired", Expired;
    McpOauthLoginCancelled = "mcp_oauth_login_cancelled", Cancelled;
    McpOauthLoginRequired = "mcp_oauth_login_required", LoginRequired;
    McpOauthTokenRequestFailed = "mcp_oauth_token_request_failed", ProviderRefused;
    McpOauthTokenWrongResource = "mcp_oauth_token_wrong_resource", ProviderRefused;
    // The loopback proxy (PROTOCOL §3) and the proxy settings.
    ForbiddenHost = "forbidden_host", Forbidden;
    ForbiddenOrigin = "forbidden_origin", Forbidden;
    ForbiddenScope = "forbidden_scope", Forbidden;
    ForbiddenRawCredentials = "forbidden_raw_credentials", Forbidden;
    ClientUnauthorized = "client_unauthorized", Unauthorized;
    RateLimited = "rate_limited", Unavailable;
    UnknownService = "unknown_service", NotFound;
    NotFound = "not_found", NotFound;
    OauthNotOffered = "oauth_not_offered", NotFound;
    MethodNotAllowed = "method_not_allowed", InvalidInput;
    InvalidPath = "invalid_path", InvalidInput;
    HeadersTooLarge = "headers_too_large", InvalidInput;
    BodyTooLarge = "body_too_large", InvalidInput;
    ConnectionClosed = "connection_closed", Unavailable;
    UpstreamUnreachable = "upstream_unreachable", Unavailable;
    TooManyConnections = "too_many_connections", Unavailable;
    ClientClosed = "client_closed", Cancelled;
    Closed = "closed", Cancelled;
    UpstreamReset = "upstream_reset", Unavailable;
    UpgradeFailed = "upgrade_failed", Unavailable;
    TunnelReset = "tunnel_reset", Unavailable;
    ReservedServiceName = "reserved_service_name", Config;
    DuplicateService = "duplicate_service", Config;
    InsecureUpstream = "insecure_upstream", Config;
    InvalidUpstream = "invalid_upstream", Config;
    InvalidHeaderName = "invalid_header_name", Config;
    ReservedHeader = "reserved_header", Config;
    InvalidPrefix = "invalid_prefix", Config;
    EmptyCredentialName = "empty_credential_name", Config;
    EmptyQueryParam = "empty_query_param", Config;
    DuplicateInjection = "duplicate_injection", Config;
    InvalidRateLimit = "invalid_rate_limit", Config;
    InvalidLimits = "invalid_limits", Config;
    TlsUnavailable = "tls_unavailable", Failed;
    // Local clients, their tokens and the activity log.
    UnknownClient = "unknown_client", NotFound;
    ClientExists = "client_exists", InvalidInput;
    InvalidClientName = "invalid_client_name", InvalidInput;
    InvalidServiceName = "invalid_service_name", InvalidInput;
    InvalidTokenLabel = "invalid_token_label", InvalidInput;
    InvalidTtl = "invalid_ttl", InvalidInput;
    InvalidExpiry = "invalid_expiry", InvalidInput;
    TooManyEphemeralTokens = "too_many_ephemeral_tokens", InvalidInput;
    RandomnessUnavailable = "randomness_unavailable", Failed;
    StoreIo = "store_io", Failed;
    StoreOpen = "store_open", Failed;
    StoreNewerSchema = "store_newer_schema", Failed;
    StoreDatabase = "store_database", Failed;
    StoreInternal = "store_internal", Internal;
    // MCP host configuration files.
    HostConfigMalformed = "host_config_malformed", Failed;
    HostIo = "host_io", Failed;
    HostNoBackup = "host_no_backup", Failed;
    // The running instance, its control API and its control socket.
    NotRunning = "not_running", NotRunning;
    AlreadyRunning = "already_running", InvalidInput;
    InstanceIo = "instance_io", Failed;
    SocketForeignPeer = "socket_foreign_peer", Failed;
    SocketTimeout = "socket_timeout", Failed;
    SocketMalformed = "socket_malformed", Failed;
    SocketIo = "socket_io", Failed;
    ControlUnauthorized = "control_unauthorized", Unauthorized;
    UnexpectedAnswer = "unexpected_answer", Failed;
    ProxyPortUnavailable = "proxy_port_unavailable", Failed;
    UnknownAccount = "unknown_account", NotFound;
    InvalidInput = "invalid_input", InvalidInput;
    Io = "io", Failed;
    Internal = "internal", Internal;
    // The tray app and the CLI's stdio MCP bridge.
    SettingsUnwritable = "settings_unwritable", Failed;
    NoHome = "no_home", Failed;
    BrowserUnavailable = "browser_unavailable", Failed;
    WindowFailed = "window_failed", Failed;
    LoginUrlRefused = "login_url_refused", ProviderRefused;
    SessionExpired = "session_expired", Expired;
}

/// Declares [`Class`] and [`Class::ALL`] from one list, so that a test iterating `ALL` covers
/// every class.
macro_rules! classes {
    ($($(#[$doc:meta])* $variant:ident,)*) => {
        /// What kind of failure a [`Code`] is: the closed set the surfaces map (the control API's
        /// HTTP status, the CLI's exit code, the window's tone). Deliberately exhaustive: a new
        /// class makes every surface decide.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        #[cfg_attr(feature = "ts", derive(ts_rs::TS))]
        #[cfg_attr(feature = "ts", ts(rename = "CodeClass"))]
        pub enum Class {
            $($(#[$doc])* $variant,)*
        }

        impl Class {
            /// Every class.
            pub const ALL: &[Class] = &[$(Class::$variant,)*];
        }
    };
}

classes! {
    /// Nobody is logged in, or a session (an account's or a remote MCP server's) ended or needs
    /// more access: only a new login helps.
    LoginRequired,
    /// Latchkey is not running.
    NotRunning,
    /// The keychain is missing, locked, slow or failing.
    Keychain,
    /// The configuration file is missing, unreadable or invalid.
    Config,
    /// A service's credential is missing, refused or unusable.
    Credentials,
    /// The Auth Gateway does not answer.
    GatewayUnavailable,
    /// An identity provider, authorization server or remote MCP server refused, or answered
    /// something Latchkey does not accept.
    ProviderRefused,
    /// The person cancelled or declined.
    Cancelled,
    /// A login, or a session with a remote MCP server, took too long or ended.
    Expired,
    /// A provider, server or upstream cannot be reached, or asks to try again later.
    Unavailable,
    /// No account, service, client, server or item of that name.
    NotFound,
    /// What was asked is not valid or conflicts with what exists.
    InvalidInput,
    /// The caller did not present the right token.
    Unauthorized,
    /// The caller may not do this.
    Forbidden,
    /// Something on this computer failed (a file, the database, a port); the message says what.
    Failed,
    /// Latchkey itself failed: a bug to report.
    Internal,
}

impl Code {
    /// True when the person cancelled or declined: shown, but not as an alarm.
    pub const fn is_cancel(self) -> bool {
        matches!(self.class(), Class::Cancelled)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Code {
    type Err = std::convert::Infallible;

    /// Never fails: an unknown string is [`Code::Unknown`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::parse(s))
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Wire;

        impl serde::de::Visitor<'_> for Wire {
            type Value = Code;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an error code string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Code, E> {
                Ok(Code::parse(v))
            }
        }

        deserializer.deserialize_str(Wire)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_string() {
        for &code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), code, "{code:?}");
            assert_eq!(code.to_string(), code.as_str());
            let json = serde_json::to_string(&code).expect("serialise");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: Code = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(back, code, "{json}");
            assert_eq!(code.as_str().parse::<Code>(), Ok(code));
        }
    }

    #[test]
    fn wire_strings_are_unique_snake_case() {
        let mut seen = HashSet::new();
        for &code in Code::ALL {
            let wire = code.as_str();
            assert!(seen.insert(wire), "`{wire}` is the spelling of two codes");
            assert!(
                !wire.is_empty()
                    && wire
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && !wire.starts_with('_')
                    && !wire.ends_with('_')
                    && !wire.contains("__"),
                "`{wire}` is not snake_case"
            );
        }
    }

    #[test]
    fn a_code_from_a_newer_latchkey_reads_as_unknown() {
        let body: serde_json::Value =
            serde_json::json!({ "error": "quota_exceeded_in_2031", "message": "m" });
        let code: Code = serde_json::from_value(body["error"].clone()).expect("never fails");
        assert_eq!(code, Code::Unknown);
        assert_eq!("".parse::<Code>(), Ok(Code::Unknown));
        assert_eq!(Code::Unknown.class(), Class::Failed, "exit 1, not a crash");
        assert!(
            serde_json::from_str::<Code>("42").is_err(),
            "a code is a string"
        );
    }

    #[test]
    fn every_class_has_a_code_and_only_cancels_are_not_alarms() {
        for class in Class::ALL {
            assert!(
                Code::ALL.iter().any(|c| c.class() == *class),
                "{class:?} has no code: remove it"
            );
        }
        let cancels: Vec<&str> = Code::ALL
            .iter()
            .filter(|c| c.is_cancel())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            cancels,
            [
                "access_denied",
                "login_cancelled",
                "mcp_oauth_access_denied",
                "mcp_oauth_login_cancelled",
                "client_closed",
                "closed",
            ]
        );
    }

    /// PROTOCOL §3's codes, byte for byte: local clients match on them.
    #[test]
    fn the_proxy_codes_keep_their_protocol_spelling() {
        for (code, wire) in [
            (Code::LoginRequired, "login_required"),
            (Code::ClientUnauthorized, "client_unauthorized"),
            (Code::ForbiddenHost, "forbidden_host"),
            (Code::ForbiddenOrigin, "forbidden_origin"),
            (Code::ForbiddenScope, "forbidden_scope"),
            (Code::UnknownService, "unknown_service"),
            (Code::RateLimited, "rate_limited"),
            (Code::CredentialsMissing, "credentials_missing"),
            (Code::UpstreamUnreachable, "upstream_unreachable"),
            (Code::GatewayUnavailable, "gateway_unavailable"),
            (Code::KeychainUnavailable, "keychain_unavailable"),
        ] {
            assert_eq!(code.as_str(), wire);
        }
    }
}
