//! What the tray shows for a session: which icon, which status line. Pure functions of the
//! session state and the time, so every case is unit-tested without a GUI.

use serde::Serialize;

use latchkey_core::credentials::{CredentialState, ServiceStatus};
use latchkey_core::remote::ServerState;
use latchkey_core::session::SessionState;
use latchkey_core::{Class, Code};

use crate::view::{AccountView, ConfigState, LoginFailure, LoginRequest, ServerView};

/// The tray icon variants: `icons/tray-<state>.png` each (`logged_out` is `tray-logged-out.png`),
/// also drawn by the window's state badges, so a state looks the same in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum TrayIcon {
    /// Nobody logged in.
    LoggedOut,
    /// Logged in, plenty of time left.
    Active,
    /// In the last 10 % of the session or the last 10 minutes.
    Expiring,
    /// The session ended; log in again.
    Expired,
    /// Something needs attention (keychain, identity provider, gateway).
    Error,
}

/// Icon and text for the tray.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrayStatus {
    /// Which icon.
    pub icon: TrayIcon,
    /// The menu's first line, e.g. "Signed in as alice@example.test · expires in 42 min".
    pub title: String,
    /// Tooltip (same information).
    pub tooltip: String,
    /// True when the "expires soon" notification should be shown (once per session).
    pub warn_expiry: bool,
    /// A refresh is in flight: the line says "renewing", which tells nothing new about the
    /// expiry (the "expires soon" warning is not shown again after it).
    pub renewing: bool,
}

/// Seconds before the end at which a session counts as expiring, whatever its length.
pub const EXPIRING_SECONDS: i64 = 600;

/// The session's end as the person sees it: the refresh token usually outlives the access token,
/// so "expires" is the access token's expiry while refresh keeps it going.
pub fn tray_status(state: &SessionState, now: i64) -> TrayStatus {
    let (icon, title) = match state {
        SessionState::LoggedOut => (TrayIcon::LoggedOut, "Not signed in".to_owned()),
        SessionState::LoggingIn => (TrayIcon::LoggedOut, "Signing in…".to_owned()),
        SessionState::Active {
            user,
            expires_at,
            issued_at,
            ..
        } => {
            let left = expires_at - now;
            let lifetime = (expires_at - issued_at).max(1);
            let who = display_name(user);
            if left <= 0 {
                (TrayIcon::Expiring, format!("Signed in as {who} · renewing"))
            } else {
                let expiring = left <= EXPIRING_SECONDS || left * 10 <= lifetime;
                let icon = if expiring {
                    TrayIcon::Expiring
                } else {
                    TrayIcon::Active
                };
                (
                    icon,
                    format!("Signed in as {who} · expires in {}", format_remaining(left)),
                )
            }
        }
        SessionState::Refreshing { user, .. } => (
            TrayIcon::Active,
            format!("Signed in as {} · renewing", display_name(user)),
        ),
        SessionState::Expired { .. } => {
            (TrayIcon::Expired, "Session ended · log in again".to_owned())
        }
        SessionState::Error { message, .. } => (TrayIcon::Error, format!("Attention: {message}")),
    };
    TrayStatus {
        warn_expiry: icon == TrayIcon::Expiring,
        renewing: matches!(state, SessionState::Refreshing { .. }),
        tooltip: format!("Latchkey — {title}"),
        icon,
        title,
    }
}

/// An account's session in one line with what happens next, for `latchkey status` and the end
/// of `latchkey login`: the tray's line ([`tray_status`]) with when and how an active session
/// ends spelled out, and what to run when there is none.
pub fn session_line(state: &SessionState, now: i64) -> String {
    match state {
        SessionState::Active {
            user,
            expires_at,
            renewable,
            ..
        } => {
            let who = display_name(user);
            let left = format_remaining(expires_at - now);
            if *renewable {
                format!(
                    "Signed in as {who} · access token expires in {left} (renewed automatically)"
                )
            } else {
                format!(
                    "Signed in as {who} · session ends in {left} (the identity provider gave no refresh token: log in again then)"
                )
            }
        }
        SessionState::Expired { reason, .. } => format!("Session ended: {reason}"),
        SessionState::LoggedOut => "Not signed in · run `latchkey login`".to_owned(),
        other => tray_status(other, now).title,
    }
}

/// An account's status once its last login failed: "Login failed: <short reason>" with the
/// attention icon and the full message (with its fix) in the tooltip. A cancel (the person closed
/// the window, or declined at the provider) is not an alarm: the status keeps its icon and says
/// so. A session that still works (a failed second login) or a login under way shows as usual.
pub fn with_login_failure(
    status: TrayStatus,
    state: &SessionState,
    failure: Option<&LoginFailure>,
) -> TrayStatus {
    let Some(failure) = failure else {
        return status;
    };
    if state.is_usable() || matches!(state, SessionState::LoggingIn) {
        return status;
    }
    if failure.is_cancel() {
        let title = format!("{} · {}", status.title, short_login_reason(failure.code));
        return TrayStatus {
            tooltip: format!("Latchkey — {title}"),
            title,
            ..status
        };
    }
    let title = format!("Login failed: {}", short_login_reason(failure.code));
    TrayStatus {
        icon: TrayIcon::Error,
        tooltip: format!("Latchkey — Login failed: {}", failure.message),
        title,
        warn_expiry: false,
        renewing: false,
    }
}

/// How long a refused request keeps the tray asking for a login: a host that gave up an hour ago
/// is no reason to alarm anyone.
pub const LOGIN_REQUEST_SHOWN_SECONDS: i64 = 30 * 60;

/// An account nobody is logged in to, for which a local client just asked: "Log in needed:
/// cursor asked for github", with the attention icon, so the person learns why their host
/// failed. Shown while the session is not usable (and not while a login is under way), for
/// [`LOGIN_REQUEST_SHOWN_SECONDS`].
pub fn with_login_request(
    status: TrayStatus,
    state: &SessionState,
    account: &str,
    request: Option<&LoginRequest>,
    now: i64,
) -> TrayStatus {
    let Some(request) = request else {
        return status;
    };
    if state.is_usable()
        || matches!(state, SessionState::LoggingIn)
        || now - request.at > LOGIN_REQUEST_SHOWN_SECONDS
    {
        return status;
    }
    let title = format!(
        "Log in needed: {} asked for {}",
        request.client, request.service
    );
    TrayStatus {
        icon: TrayIcon::Expired,
        tooltip: format!(
            "Latchkey — {} asked for {}: log in to account {account}",
            request.client, request.service
        ),
        title,
        warn_expiry: false,
        renewing: false,
    }
}

/// A few words for the tray menu line; the tooltip and the window carry the whole message. The
/// codes a login ends with have their own words; any other falls back on its class.
pub fn short_login_reason(code: Code) -> &'static str {
    match code {
        Code::AccessDenied => "sign-in cancelled or declined",
        Code::LoginCancelled => "sign-in cancelled",
        Code::RedirectUriNotRegistered => "redirect URI not registered at the provider",
        Code::ClientNotRegistered => "client id not accepted by the provider",
        Code::ClientAuthFailed | Code::ClientSecretMissing => "the client's authentication failed",
        Code::AuthorizationFailed => "the provider refused the sign-in",
        Code::TokenRequestFailed => "the provider refused the token request",
        Code::IdpUnreachable => "the identity provider is unreachable",
        Code::IdpTimeout => "the identity provider did not answer",
        Code::IdpDiscoveryFailed | Code::IdpUnsupported => {
            "the identity provider's setup is unusable"
        }
        Code::JwksUnavailable => "cannot fetch the provider's keys",
        Code::LoginExpired | Code::LoginTimeout => "it took more than 10 minutes",
        Code::CallbackListenerFailed => "the callback port is taken",
        Code::JwtMalformed
        | Code::JwtUnsigned
        | Code::JwtAlgorithmMismatch
        | Code::JwtUnsupportedKey
        | Code::JwtUnknownKey
        | Code::JwtBadSignature
        | Code::JwtWrongIssuer
        | Code::JwtWrongAudience
        | Code::JwtExpired
        | Code::JwtNotYetValid
        | Code::JwtMissingClaim
        | Code::JwtBadClaim
        | Code::JwtWrongAzp
        | Code::JwtNonceMismatch
        | Code::AccessTokenNotJwt => "a token from the provider was rejected",
        _ => match code.class() {
            Class::Keychain => "the keychain failed",
            _ => "see the Latchkey window",
        },
    }
}

/// The most telling of several accounts' statuses: errors first, then expired, expiring, active.
pub fn combine(statuses: &[TrayStatus]) -> Option<&TrayStatus> {
    let rank = |s: &TrayStatus| match s.icon {
        TrayIcon::Error => 0,
        TrayIcon::Expired => 1,
        TrayIcon::Expiring => 2,
        TrayIcon::Active => 3,
        TrayIcon::LoggedOut => 4,
    };
    statuses.iter().min_by_key(|s| rank(s))
}

fn display_name(user: &latchkey_core::login::UserInfo) -> &str {
    user.email
        .as_deref()
        .or(user.name.as_deref())
        .unwrap_or(&user.subject)
}

/// "42 min", "1 h 05 min", "50 s".
pub fn format_remaining(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

// Services and remote MCP servers in the tray menu.

/// What clicking a service's or server's tray line does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLineAction {
    /// Starts the named server's login (a first login, a new one, or a step-up).
    Login(String),
    /// Opens the window at the line's section and item.
    OpenWindow,
    /// Nothing: the line only informs.
    None,
}

/// The window's section for services (as the window names it).
pub const SERVICES_SECTION: &str = "Services";
/// The window's section for remote MCP servers (as the window names it).
pub const SERVERS_SECTION: &str = "MCP servers";

/// One tray menu line about a service or a remote MCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    /// The menu item's label, e.g. "linear: ready · token expires in 42 min".
    pub label: String,
    /// What a click does.
    pub action: ServerLineAction,
    /// The window section the line belongs to ([`SERVICES_SECTION`] or [`SERVERS_SECTION`]).
    pub section: &'static str,
    /// The service's or server's name: the item the window opens at.
    pub item: String,
}

/// " · expires in 42 min" when `expires_at` is still ahead, else nothing.
fn expiry(what: &str, expires_at: Option<i64>, now: i64) -> String {
    match expires_at {
        Some(at) if at > now => format!(" · {what} in {}", format_remaining(at - now)),
        _ => String::new(),
    }
}

/// The tray's lines for remote MCP servers, one per server in display order: its state (ready,
/// log in needed, more access needed, signing in, failing) and, when ready, when its token
/// expires. A line that needs a login starts it; the others open the window at the server.
pub fn server_lines(servers: &[ServerView], now: i64) -> Vec<ServerLine> {
    servers
        .iter()
        .map(|server| {
            let name = server.name.as_str();
            let login = || ServerLineAction::Login(name.to_owned());
            let (what, action) = match server.state {
                ServerState::Ready => (
                    format!("ready{}", expiry("token expires", server.expires_at, now)),
                    ServerLineAction::OpenWindow,
                ),
                ServerState::NeedsLogin => ("log in needed".into(), login()),
                ServerState::NeedsStepUp => ("more access needed".into(), login()),
                ServerState::LoggingIn => ("signing in…".into(), ServerLineAction::None),
                ServerState::Failing => {
                    ("failing, see Latchkey".into(), ServerLineAction::OpenWindow)
                }
            };
            ServerLine {
                label: format!("{name}: {what}"),
                action,
                section: SERVERS_SECTION,
                item: name.to_owned(),
            }
        })
        .collect()
}

/// The tray's lines for configured services, one per service: "needs login" while its account
/// has no usable session, "failing" when the credential could not be had (missing, forbidden,
/// an error), else "ready" with when the credential expires. Each opens the window at the
/// service.
pub fn service_lines(
    services: &[ServiceStatus],
    usable_accounts: &[&str],
    now: i64,
) -> Vec<ServerLine> {
    services
        .iter()
        .map(|service| {
            let what = if !usable_accounts.contains(&service.account.as_str()) {
                "needs login".to_owned()
            } else {
                match service.state {
                    CredentialState::Missing
                    | CredentialState::Forbidden
                    | CredentialState::Error => "failing".to_owned(),
                    _ => format!("ready{}", expiry("expires", service.expires_at, now)),
                }
            };
            ServerLine {
                label: format!("{}: {what}", service.name),
                action: ServerLineAction::OpenWindow,
                section: SERVICES_SECTION,
                item: service.name.clone(),
            }
        })
        .collect()
}

/// A desktop notification: what happened in its title, what it means and what to do in its body.
/// Never a secret: built from states, names and the runtime's sentences only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// "Log in to linear", "Latchkey could not renew your session".
    pub title: String,
    /// The runtime's sentence, with what to do.
    pub body: String,
}

/// The notifications due for remote MCP servers: one when a server comes to need a login or more
/// access, not again while it stays so. `announced` holds `(name, state)` already announced and
/// is brought up to date (a server that recovered can be announced again later).
pub fn server_notices(
    announced: &mut Vec<(String, ServerState)>,
    servers: &[ServerView],
) -> Vec<Notice> {
    let needs =
        |state: &ServerState| matches!(state, ServerState::NeedsLogin | ServerState::NeedsStepUp);
    announced.retain(|(name, state)| {
        servers
            .iter()
            .any(|s| s.name == *name && s.state == *state && needs(&s.state))
    });
    let mut notices = Vec::new();
    for server in servers.iter().filter(|s| needs(&s.state)) {
        if announced
            .iter()
            .any(|(n, st)| *n == server.name && *st == server.state)
        {
            continue;
        }
        let title = if server.state == ServerState::NeedsStepUp {
            format!("{} needs more access", server.name)
        } else {
            format!("Log in to {}", server.name)
        };
        let body = server
            .message
            .clone()
            .unwrap_or_else(|| "Open the tray menu to sign in again.".to_owned());
        notices.push(Notice { title, body });
        announced.push((server.name.clone(), server.state));
    }
    notices
}

/// The "session ends soon" notification, once per stretch of expiring: due when the tray turns
/// to expiring, not again while it stays so (its line counts down every minute), nor after the
/// brief "renewing" of a refresh in flight, which says nothing about the expiry. `warned`
/// remembers the stretch; it ends when the tray shows anything else.
pub fn expiry_notice(warned: &mut bool, status: &TrayStatus) -> Option<Notice> {
    if !status.warn_expiry {
        if !status.renewing {
            *warned = false;
        }
        return None;
    }
    if std::mem::replace(warned, true) {
        return None;
    }
    Some(Notice {
        title: "Your Latchkey session ends soon".to_owned(),
        body: status.title.clone(),
    })
}

/// "The identity provider is unreachable": a short reason with a capital, for a sentence.
fn sentence(reason: &str) -> String {
    let mut chars = reason.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect::<String>()
    })
}

/// Failed refreshes already announced, as `(account, since, still usable)`: a run of failures is
/// announced once while the session still works and once more if it stops working before a
/// refresh succeeds; retries are not announced.
pub type RefreshAnnouncements = Vec<(String, i64, bool)>;

/// The notifications due for sessions whose refresh keeps failing (the identity provider
/// unreachable or silent, a refused token request, the keychain): one when a run of failures
/// starts, saying whether requests still work and until when, and one when the access token runs
/// out before a refresh succeeded. `announced` is brought up to date (a run that ended is
/// forgotten, so the next one is announced again).
pub fn refresh_notices(
    announced: &mut RefreshAnnouncements,
    accounts: &[AccountView],
    now: i64,
) -> Vec<Notice> {
    announced.retain(|(name, since, _)| {
        accounts.iter().any(|a| {
            a.name == *name
                && a.refresh_failure
                    .as_ref()
                    .is_some_and(|f| f.since == *since)
        })
    });
    let mut notices = Vec::new();
    for account in accounts {
        let Some(failure) = &account.refresh_failure else {
            continue;
        };
        let left = account
            .state
            .expires_at()
            .map(|at| at - now)
            .filter(|left| *left > 0);
        let usable = left.is_some();
        let key = (account.name.clone(), failure.since, usable);
        if announced.contains(&key) {
            continue;
        }
        announced.push(key);
        let reason = sentence(short_login_reason(failure.code));
        let name = &account.name;
        notices.push(match left {
            Some(left) => Notice {
                title: "Latchkey could not renew your session".to_owned(),
                body: format!(
                    "{reason}. Requests keep working for {} more, until the access token of {name} expires; Latchkey keeps trying meanwhile.",
                    format_remaining(left)
                ),
            },
            None => Notice {
                title: "Latchkey cannot renew your session".to_owned(),
                body: format!(
                    "{reason} and the access token of {name} has expired: requests that need it fail. Latchkey keeps trying; if this lasts, open Latchkey to see why."
                ),
            },
        });
    }
    notices
}

/// The notification when a session that worked has ended: the title says to log in again, the
/// body why it ended (the identity provider ended it, no refresh token was granted, ...), from
/// the first ended account, or the tray's status line when none has a reason.
pub fn ended_notice(status: &TrayStatus, accounts: &[AccountView]) -> Notice {
    let reason = accounts.iter().find_map(|a| match &a.state {
        SessionState::Expired { reason, .. } if !reason.is_empty() => {
            Some(format!("{} (account {}).", sentence(reason), a.name))
        }
        _ => None,
    });
    Notice {
        title: "Latchkey needs you to log in again".to_owned(),
        body: reason.unwrap_or_else(|| status.title.clone()),
    }
}

/// A tray menu line that needs the person before anything else works, and the window it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionLine {
    /// The menu item's id.
    pub id: &'static str,
    /// What the menu says.
    pub label: &'static str,
}

/// The lines shown above everything else: no configuration yet (*Set up Latchkey…*), a
/// configuration with a mistake, an unavailable keychain (*Keychain unavailable — how to fix*).
/// Each opens the window, which says the rest.
pub fn attention_lines(config: ConfigState, keychain_ok: bool) -> Vec<AttentionLine> {
    let mut lines = Vec::new();
    match config {
        ConfigState::Missing => lines.push(AttentionLine {
            id: "setup",
            label: "Set up Latchkey…",
        }),
        ConfigState::Invalid => lines.push(AttentionLine {
            id: "config-invalid",
            label: "Configuration has a mistake — show",
        }),
        ConfigState::Loaded => {}
    }
    if !keychain_ok {
        lines.push(AttentionLine {
            id: "keychain-help",
            label: "Keychain unavailable — how to fix",
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_core::login::UserInfo;

    fn alice() -> UserInfo {
        UserInfo {
            subject: "sub-1".into(),
            name: Some("Alice Example".into()),
            email: Some("alice@example.test".into()),
        }
    }

    fn active(issued_at: i64, expires_at: i64) -> SessionState {
        SessionState::Active {
            user: alice(),
            expires_at,
            issued_at,
            renewable: true,
        }
    }

    #[test]
    fn a_refused_request_names_the_client_and_service_until_a_session_is_usable_or_it_is_old() {
        let asked = LoginRequest {
            client: "cursor".into(),
            service: "github".into(),
            at: 1_000,
        };
        let logged_out = SessionState::LoggedOut;
        let shown = with_login_request(
            tray_status(&logged_out, 1_010),
            &logged_out,
            "work",
            Some(&asked),
            1_010,
        );
        assert_eq!(shown.title, "Log in needed: cursor asked for github");
        assert_eq!(
            shown.icon,
            TrayIcon::Expired,
            "it needs the person's attention"
        );
        assert!(
            shown.tooltip.contains("log in to account work"),
            "{}",
            shown.tooltip
        );

        let old = 1_000 + LOGIN_REQUEST_SHOWN_SECONDS + 1;
        let faded = with_login_request(
            tray_status(&logged_out, old),
            &logged_out,
            "work",
            Some(&asked),
            old,
        );
        assert_eq!(
            faded.title, "Not signed in",
            "a request from long ago is no alarm"
        );

        for state in [active(0, 3_600), SessionState::LoggingIn] {
            let status = tray_status(&state, 1_010);
            assert_eq!(
                with_login_request(status.clone(), &state, "work", Some(&asked), 1_010),
                status,
                "a usable session or a login under way is shown as it is"
            );
        }
    }

    #[test]
    fn active_session_shows_user_and_minutes_left() {
        let s = tray_status(&active(0, 3600), 1080);
        assert_eq!(s.icon, TrayIcon::Active);
        assert_eq!(
            s.title,
            "Signed in as alice@example.test · expires in 42 min"
        );
        assert!(s.tooltip.contains(&s.title));
        assert!(!s.warn_expiry);
    }

    #[test]
    fn last_ten_minutes_is_expiring() {
        // A one-hour session: its last 10 % (6 min) is shorter than 10 minutes, so the
        // ten-minute rule decides.
        let s = tray_status(&active(0, 3600), 3600 - 599);
        assert_eq!(s.icon, TrayIcon::Expiring);
        assert!(s.warn_expiry);
        assert_eq!(
            tray_status(&active(0, 3600), 3600 - 601).icon,
            TrayIcon::Active
        );
    }

    #[test]
    fn last_tenth_of_a_long_session_is_expiring() {
        // A ten-hour session: its last 10 % (1 h) starts well before the last ten minutes.
        assert_eq!(
            tray_status(&active(0, 36_000), 36_000 - 3_599).icon,
            TrayIcon::Expiring
        );
        assert_eq!(
            tray_status(&active(0, 36_000), 36_000 - 3_601).icon,
            TrayIcon::Active
        );
    }

    #[test]
    fn last_ten_percent_of_a_short_session_is_expiring() {
        // 5-minute token: the 10-minute rule already covers it.
        assert_eq!(tray_status(&active(0, 300), 10).icon, TrayIcon::Expiring);
        // 10-hour token: 10 % is an hour.
        assert_eq!(
            tray_status(&active(0, 36_000), 32_500).icon,
            TrayIcon::Expiring
        );
        assert_eq!(
            tray_status(&active(0, 36_000), 32_300).icon,
            TrayIcon::Active
        );
    }

    #[test]
    fn past_expiry_while_active_reads_renewing() {
        let s = tray_status(&active(0, 100), 150);
        assert_eq!(s.icon, TrayIcon::Expiring);
        assert!(s.title.ends_with("renewing"), "{}", s.title);
    }

    #[test]
    fn other_states_map_to_their_icons() {
        assert_eq!(
            tray_status(&SessionState::LoggedOut, 0).icon,
            TrayIcon::LoggedOut
        );
        assert_eq!(
            tray_status(&SessionState::LoggingIn, 0).title,
            "Signing in…"
        );
        let expired = SessionState::Expired {
            user: Some(alice()),
            reason: "x".into(),
        };
        assert_eq!(tray_status(&expired, 0).icon, TrayIcon::Expired);
        let error = SessionState::Error {
            code: Code::KeychainUnavailable,
            message: "No keychain is available".into(),
        };
        let s = tray_status(&error, 0);
        assert_eq!(s.icon, TrayIcon::Error);
        assert!(s.title.contains("No keychain"), "{}", s.title);
        let refreshing = SessionState::Refreshing {
            user: alice(),
            expires_at: 10,
        };
        assert_eq!(tray_status(&refreshing, 0).icon, TrayIcon::Active);
    }

    #[test]
    fn user_without_email_shows_name_then_subject() {
        let mut user = alice();
        user.email = None;
        let s = tray_status(
            &SessionState::Active {
                user: user.clone(),
                expires_at: 7200,
                issued_at: 0,
                renewable: true,
            },
            0,
        );
        assert!(s.title.contains("Alice Example"), "{}", s.title);
        user.name = None;
        let s = tray_status(
            &SessionState::Active {
                user,
                expires_at: 7200,
                issued_at: 0,
                renewable: true,
            },
            0,
        );
        assert!(s.title.contains("sub-1"), "{}", s.title);
    }

    fn failure(code: Code) -> LoginFailure {
        LoginFailure {
            code,
            message: format!("the message of {code}; the fix"),
            at: 0,
        }
    }

    #[test]
    fn a_failed_login_turns_the_tray_red_with_a_short_reason() {
        let state = SessionState::LoggedOut;
        let f = failure(Code::RedirectUriNotRegistered);
        let s = with_login_failure(tray_status(&state, 0), &state, Some(&f));
        assert_eq!(s.icon, TrayIcon::Error);
        assert_eq!(
            s.title,
            "Login failed: redirect URI not registered at the provider"
        );
        assert!(s.tooltip.contains(&f.message), "{}", s.tooltip);
        assert!(!s.warn_expiry);
        let jwt = failure(Code::JwtWrongAudience);
        let s = with_login_failure(tray_status(&state, 0), &state, Some(&jwt));
        assert_eq!(
            s.title,
            "Login failed: a token from the provider was rejected"
        );
    }

    #[test]
    fn a_code_without_words_of_its_own_falls_back_on_its_class() {
        assert_eq!(
            short_login_reason(Code::KeychainCorrupt),
            "the keychain failed"
        );
        assert_eq!(
            short_login_reason(Code::JwtWrongAzp),
            "a token from the provider was rejected"
        );
        assert_eq!(short_login_reason(Code::Unknown), "see the Latchkey window");
    }

    #[test]
    fn a_cancelled_login_is_not_an_alarm() {
        let state = SessionState::LoggedOut;
        for code in [Code::AccessDenied, Code::LoginCancelled] {
            let s = with_login_failure(tray_status(&state, 0), &state, Some(&failure(code)));
            assert_eq!(s.icon, TrayIcon::LoggedOut, "{code}");
            assert!(
                s.title.starts_with("Not signed in · sign-in cancelled"),
                "{}",
                s.title
            );
        }
    }

    #[test]
    fn a_working_session_or_a_login_under_way_hides_an_old_failure() {
        let f = failure(Code::IdpUnreachable);
        let active = active(0, 36_000);
        let s = with_login_failure(tray_status(&active, 0), &active, Some(&f));
        assert_eq!(s.icon, TrayIcon::Active);
        let s = with_login_failure(
            tray_status(&SessionState::LoggingIn, 0),
            &SessionState::LoggingIn,
            Some(&f),
        );
        assert_eq!(s.title, "Signing in…");
        let combined = [
            with_login_failure(
                tray_status(&SessionState::LoggedOut, 0),
                &SessionState::LoggedOut,
                Some(&f),
            ),
            tray_status(&active, 0),
        ];
        assert_eq!(
            combine(&combined).map(|s| s.icon),
            Some(TrayIcon::Error),
            "a failed login of one account outranks another's active session"
        );
    }

    #[test]
    fn the_status_line_says_when_a_session_without_a_refresh_token_ends() {
        let state = |renewable| SessionState::Active {
            user: alice(),
            expires_at: 3_000,
            issued_at: 0,
            renewable,
        };
        let once = session_line(&state(false), 600);
        assert!(
            once.contains("session ends in 40 min") && once.contains("log in again then"),
            "{once}"
        );
        assert!(session_line(&state(true), 600).contains("renewed automatically"));
        assert_eq!(
            session_line(&SessionState::LoggedOut, 0),
            "Not signed in · run `latchkey login`"
        );
        let error = SessionState::Error {
            code: Code::KeychainLocked,
            message: "unlock the keychain".into(),
        };
        assert_eq!(
            session_line(&error, 0),
            tray_status(&error, 0).title,
            "the tray's words where there is nothing to add"
        );
    }

    #[test]
    fn remaining_time_formats() {
        assert_eq!(format_remaining(50), "50 s");
        assert_eq!(format_remaining(42 * 60 + 5), "42 min");
        assert_eq!(format_remaining(3600 + 5 * 60), "1 h 05 min");
        assert_eq!(format_remaining(-5), "0 s");
    }

    #[test]
    fn combine_prefers_what_needs_attention() {
        let a = tray_status(&active(0, 36_000), 0);
        let e = tray_status(&SessionState::LoggedOut, 0);
        let x = tray_status(
            &SessionState::Expired {
                user: None,
                reason: String::new(),
            },
            0,
        );
        assert_eq!(
            combine(&[a.clone(), e.clone()]).map(|s| s.icon),
            Some(TrayIcon::Active)
        );
        assert_eq!(combine(&[a, x, e]).map(|s| s.icon), Some(TrayIcon::Expired));
        assert!(combine(&[]).is_none());
    }
}

#[cfg(test)]
mod server_tests {
    use latchkey_core::remote::ServerState;

    use super::*;

    fn labels(lines: &[ServerLine]) -> Vec<&str> {
        lines.iter().map(|l| l.label.as_str()).collect()
    }

    fn servers(list: &[(&str, ServerState)]) -> Vec<ServerView> {
        list.iter()
            .map(|(name, state)| ServerView {
                name: (*name).to_owned(),
                url: format!("https://mcp.{name}.example/mcp"),
                proxy_url: format!("http://127.0.0.1:47821/{name}/mcp"),
                issuer: Some(format!("https://auth.{name}.example")),
                state: *state,
                expires_at: Some(4_600),
                scopes: vec!["read".to_owned()],
                message: None,
                last_login_error: None,
                login_requested: None,
            })
            .collect()
    }

    #[test]
    fn a_server_that_needs_a_login_or_more_access_gets_a_line_that_starts_its_login() {
        let lines = server_lines(
            &servers(&[
                ("linear", ServerState::NeedsLogin),
                ("stripe", ServerState::NeedsStepUp),
            ]),
            1_000,
        );
        assert_eq!(
            labels(&lines),
            ["linear: log in needed", "stripe: more access needed"]
        );
        assert_eq!(
            lines[0].action,
            ServerLineAction::Login("linear".into()),
            "clicking starts that server's login"
        );
        assert_eq!(
            lines[1].action,
            ServerLineAction::Login("stripe".into()),
            "a step-up is a new login for the union of scopes"
        );
    }

    #[test]
    fn every_server_has_its_own_line_and_a_ready_one_says_when_its_token_expires() {
        let lines = server_lines(
            &servers(&[
                ("docs", ServerState::Ready),
                ("linear", ServerState::NeedsLogin),
                ("notion", ServerState::Ready),
            ]),
            1_000,
        );
        assert_eq!(
            labels(&lines),
            [
                "docs: ready · token expires in 1 h 00 min",
                "linear: log in needed",
                "notion: ready · token expires in 1 h 00 min"
            ]
        );
        assert_eq!(lines[0].action, ServerLineAction::OpenWindow);
        assert_eq!(
            (lines[2].section, lines[2].item.as_str()),
            (SERVERS_SECTION, "notion"),
            "a click opens the window at that server"
        );
        assert_eq!(
            labels(&server_lines(
                &servers(&[("docs", ServerState::Ready)]),
                5_000
            )),
            ["docs: ready"],
            "an expiry in the past is not announced as ahead"
        );
    }

    #[test]
    fn a_login_under_way_is_shown_without_a_second_login_and_a_failure_opens_the_window() {
        let lines = server_lines(
            &servers(&[
                ("linear", ServerState::LoggingIn),
                ("sentry", ServerState::Failing),
            ]),
            1_000,
        );
        assert_eq!(
            labels(&lines),
            ["linear: signing in…", "sentry: failing, see Latchkey"]
        );
        assert_eq!(lines[0].action, ServerLineAction::None);
        assert_eq!(lines[1].action, ServerLineAction::OpenWindow);
    }

    #[test]
    fn no_servers_no_lines() {
        assert!(server_lines(&[], 0).is_empty());
        assert!(service_lines(&[], &[], 0).is_empty());
    }

    fn service(name: &str, account: &str, state: CredentialState) -> ServiceStatus {
        ServiceStatus {
            name: name.to_owned(),
            account: account.to_owned(),
            upstream: format!("https://api.{name}.example"),
            source: "gateway",
            state,
            fetched_at: Some(900),
            expires_at: Some(1_000 + 42 * 60),
            ttl_seconds: 3_600,
            message: None,
        }
    }

    #[test]
    fn every_service_has_a_line_ready_needs_login_or_failing_with_its_expiry() {
        let services = [
            service("github", "work", CredentialState::Fresh),
            service("jira", "work", CredentialState::Error),
            service("home-api", "home", CredentialState::Fresh),
            service("wiki", "work", CredentialState::Forbidden),
            service("docs", "work", CredentialState::NotFetched),
        ];
        let lines = service_lines(&services, &["work"], 1_000);
        assert_eq!(
            labels(&lines),
            [
                "github: ready · expires in 42 min",
                "jira: failing",
                "home-api: needs login",
                "wiki: failing",
                "docs: ready · expires in 42 min",
            ]
        );
        assert!(
            lines
                .iter()
                .all(|l| l.action == ServerLineAction::OpenWindow && l.section == SERVICES_SECTION),
            "each opens the window at the Services section"
        );
        assert_eq!(lines[2].item, "home-api");
    }

    #[test]
    fn a_server_that_comes_to_need_a_login_is_announced_once_until_it_recovers() {
        let mut announced = Vec::new();
        let mut list = servers(&[
            ("linear", ServerState::NeedsLogin),
            ("notion", ServerState::Ready),
        ]);
        list[0].message = Some("sign in to the MCP server `linear`".to_owned());
        let first = server_notices(&mut announced, &list);
        assert_eq!(
            first,
            [Notice {
                title: "Log in to linear".to_owned(),
                body: "sign in to the MCP server `linear`".to_owned(),
            }]
        );
        assert!(
            server_notices(&mut announced, &list).is_empty(),
            "not again on the next refresh"
        );

        let stepped = servers(&[("linear", ServerState::NeedsStepUp)]);
        let step_up = server_notices(&mut announced, &stepped);
        assert_eq!(step_up.len(), 1, "a new state is news");
        assert_eq!(step_up[0].title, "linear needs more access");

        assert!(
            server_notices(&mut announced, &servers(&[("linear", ServerState::Ready)])).is_empty()
        );
        assert!(announced.is_empty(), "a server that recovered is forgotten");
        assert_eq!(
            server_notices(
                &mut announced,
                &servers(&[("linear", ServerState::NeedsLogin)])
            )
            .len(),
            1,
            "and announced again when it needs the person again"
        );
    }
}

#[cfg(test)]
mod notice_tests {
    use latchkey_core::login::UserInfo;
    use latchkey_core::session::RefreshFailure;

    use super::*;

    fn account(state: SessionState, failure: Option<(Code, i64, i64)>) -> AccountView {
        AccountView {
            name: "work".to_owned(),
            issuer: "https://idp.example.com".to_owned(),
            state,
            last_login_error: None,
            login_requested: None,
            refresh_failure: failure.map(|(code, since, at)| RefreshFailure {
                code,
                message: format!("{code}: the message"),
                since,
                at,
                attempts: 1,
            }),
        }
    }

    fn active(expires_at: i64) -> SessionState {
        SessionState::Active {
            user: UserInfo {
                subject: "alice".to_owned(),
                name: None,
                email: Some("alice@example.test".to_owned()),
            },
            expires_at,
            issued_at: 0,
            renewable: true,
        }
    }

    #[test]
    fn a_failed_refresh_is_announced_once_with_how_long_the_session_still_works() {
        let mut announced = Vec::new();
        let down = [account(
            active(1_300),
            Some((Code::IdpUnreachable, 1_000, 1_000)),
        )];
        let notices = refresh_notices(&mut announced, &down, 1_000);
        assert_eq!(
            notices,
            [Notice {
                title: "Latchkey could not renew your session".to_owned(),
                body: "The identity provider is unreachable. Requests keep working for 5 min more, until the access token of work expires; Latchkey keeps trying meanwhile.".to_owned(),
            }]
        );
        let retried = [account(
            active(1_300),
            Some((Code::IdpTimeout, 1_000, 1_060)),
        )];
        assert!(
            refresh_notices(&mut announced, &retried, 1_060).is_empty(),
            "a retry of the same run is not announced again"
        );
    }

    #[test]
    fn a_run_that_outlasts_the_access_token_is_announced_once_more_then_forgotten_when_it_ends() {
        let mut announced = Vec::new();
        let down = |expires_at| {
            [account(
                active(expires_at),
                Some((Code::IdpUnreachable, 1_000, 1_000)),
            )]
        };
        assert_eq!(
            refresh_notices(&mut announced, &down(1_300), 1_000).len(),
            1
        );
        let lapsed = [account(
            SessionState::Error {
                code: Code::IdpUnreachable,
                message: "the identity provider is unreachable".to_owned(),
            },
            Some((Code::IdpUnreachable, 1_000, 1_400)),
        )];
        let notices = refresh_notices(&mut announced, &lapsed, 1_400);
        assert_eq!(notices.len(), 1, "the session stopped working: news");
        assert_eq!(notices[0].title, "Latchkey cannot renew your session");
        assert!(
            notices[0]
                .body
                .contains("has expired: requests that need it fail"),
            "{}",
            notices[0].body
        );
        assert!(refresh_notices(&mut announced, &lapsed, 1_460).is_empty());

        let renewed = [account(active(5_000), None)];
        assert!(refresh_notices(&mut announced, &renewed, 1_500).is_empty());
        assert!(announced.is_empty(), "a run that ended is forgotten");
        let again = [account(
            active(5_000),
            Some((Code::IdpTimeout, 4_000, 4_000)),
        )];
        assert_eq!(
            refresh_notices(&mut announced, &again, 4_000).len(),
            1,
            "and the next run is announced"
        );
    }

    #[test]
    fn an_access_token_past_its_expiry_does_not_count_as_working() {
        let mut announced = Vec::new();
        let renewing = [account(
            active(1_000),
            Some((Code::IdpUnreachable, 990, 990)),
        )];
        let notices = refresh_notices(&mut announced, &renewing, 1_000);
        assert_eq!(notices[0].title, "Latchkey cannot renew your session");
    }

    #[test]
    fn the_expiry_warning_is_shown_once_per_stretch_even_across_a_refresh_in_flight() {
        let mut warned = false;
        let expiring = |left: i64| tray_status(&active(1_000 + left), 1_000);
        let first = expiry_notice(&mut warned, &expiring(300)).expect("due");
        assert_eq!(first.title, "Your Latchkey session ends soon");
        assert_eq!(
            first.body,
            "Signed in as alice@example.test · expires in 5 min"
        );
        assert_eq!(expiry_notice(&mut warned, &expiring(240)), None);
        let renewing = tray_status(
            &SessionState::Refreshing {
                user: UserInfo {
                    subject: "alice".to_owned(),
                    name: None,
                    email: None,
                },
                expires_at: 1_240,
            },
            1_000,
        );
        assert_eq!(expiry_notice(&mut warned, &renewing), None);
        assert_eq!(
            expiry_notice(&mut warned, &expiring(230)),
            None,
            "a refresh that failed leaves the same stretch: not warned twice"
        );
        let renewed = tray_status(&active(1_000 + 7_200), 1_000);
        assert_eq!(expiry_notice(&mut warned, &renewed), None);
        assert!(
            expiry_notice(&mut warned, &expiring(300)).is_some(),
            "a new stretch after the session was renewed for long"
        );
    }

    #[test]
    fn an_ended_session_says_why_and_to_log_in_again() {
        let status = tray_status(
            &SessionState::Expired {
                user: None,
                reason: String::new(),
            },
            0,
        );
        let ended = [account(
            SessionState::Expired {
                user: None,
                reason: "the identity provider ended the session; log in again".to_owned(),
            },
            None,
        )];
        assert_eq!(
            ended_notice(&status, &ended),
            Notice {
                title: "Latchkey needs you to log in again".to_owned(),
                body: "The identity provider ended the session; log in again (account work)."
                    .to_owned(),
            }
        );
        assert_eq!(
            ended_notice(&status, &[]).body,
            "Session ended · log in again",
            "the tray's line when no account says more"
        );
    }
}

#[cfg(test)]
mod attention_tests {
    use super::*;

    #[test]
    fn a_first_run_and_a_broken_keychain_each_get_a_line_that_opens_the_window() {
        assert_eq!(attention_lines(ConfigState::Loaded, true), vec![]);
        let labels = |c, k| {
            attention_lines(c, k)
                .into_iter()
                .map(|l| l.label)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(ConfigState::Missing, true), ["Set up Latchkey…"]);
        assert_eq!(
            labels(ConfigState::Loaded, false),
            ["Keychain unavailable — how to fix"]
        );
        assert_eq!(
            labels(ConfigState::Invalid, false),
            [
                "Configuration has a mistake — show",
                "Keychain unavailable — how to fix"
            ]
        );
    }
}
